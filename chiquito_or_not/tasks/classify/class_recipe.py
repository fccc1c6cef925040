"""The classification recipe's own section: `[classes.NAME]` with their sources, or `class_folders`."""

from __future__ import annotations

from dataclasses import field

from ...core.errors import RecipeError
from ...core.recipe_schema import Bool, Source, Str, schema

__all__ = ["ClassSpec", "ClassFolders", "FIELDS", "PATHS", "class_names", "sources", "check"]


@schema
class ClassSpec:
    """Where the images of one class come from."""

    sources: tuple[Source, ...]
    faces: Bool = True  # with [dataset.faces]: crop this class's faces (false: keep its images whole)


@schema
class ClassFolders:
    """Classes found at dataset time: one per sub-folder of `path` (e.g. Kaggle's Simpsons characters)."""

    path: Str = ""
    include: tuple[Str, ...] = ("**/*",)
    exclude: tuple[Str, ...] = ()


# the fields of this section's classes that name a folder, resolved against the recipe's folder (core.recipe)
PATHS = ((ClassFolders, ("path",)),)

# (key, type, default) of each top-level key this task adds to the recipe
FIELDS = (
    ("classes", dict[str, ClassSpec], field(default_factory=dict)),
    ("class_folders", ClassFolders, field(default=ClassFolders())),
)


def class_names(recipe) -> list[str]:
    """The labels the model answers with: the classes, sorted."""
    return sorted(recipe.classes)


def sources(recipe) -> list[tuple[str, object]]:
    """(key, source) of every source this section names."""
    return [(f"classes.{n}", s) for n, c in recipe.classes.items() for s in c.sources]


def _all_given(recipe) -> bool:
    """Whether every source is a folder that names its split (and no class comes from class_folders)."""
    srcs = [s for _, s in sources(recipe)]
    return bool(srcs) and not recipe.class_folders.path and all(getattr(s, "split", "") for s in srcs)


def check(recipe, where: str, foreign: list[str]) -> None:
    """What the schema cannot say: at least two classes with plain names and sources, a hash split.
    `foreign`: the keys of other tasks' sections that the recipe sets."""
    if foreign:
        raise RecipeError(
            f"{where}: a classification recipe takes its classes from 'classes' or 'class_folders'; remove "
            + " / ".join(f"'{k}'" for k in foreign)
            + ' (or set task = "detect")'
        )
    if recipe.dataset.split == "given" and not _all_given(recipe):
        raise RecipeError(
            f"{where}: 'dataset.split' = \"given\" keeps the splits the sources give: in a classification recipe "
            "every source must be a folder with 'split' (train, valid or test); set them, or remove "
            "'dataset.split' to split by content hash"
        )
    if len(recipe.classes) < 2 and not recipe.class_folders.path:
        raise RecipeError(
            f"{where}: 'classes' needs at least two classes, got {len(recipe.classes)} "
            "(or set 'class_folders.path' to a folder with one sub-folder per class)"
        )
    for name, spec in recipe.classes.items():
        if not name or "/" in name or name.startswith("."):
            raise RecipeError(f"{where}: class name {name!r} must be a plain folder name")
        if not spec.sources:
            raise RecipeError(f"{where}: 'classes.{name}.sources' is empty; add at least one source")
