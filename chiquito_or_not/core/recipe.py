"""Recipes: TOML files validated against one schema, the shared parts (core/recipe_schema.py) and each registered
task's own section, into frozen objects; `KEY=VALUE` overrides go through the same schema."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from pathlib import Path

import tomli_w
from pydantic import TypeAdapter, ValidationError

from .backbone_table import backbone_name_problem
from .errors import RecipeError
from .layout import RESOLVED_RECIPE
from .recipe_messages import schema_error_message
from .recipe_schema import (
    SOURCE_KINDS,
    ArchiveSource,
    AugmentedStage,
    AugmentSpec,
    CompositeSource,
    CutoutSpec,
    DatasetSpec,
    DebSource,
    FacesSpec,
    FinetuneSpec,
    FolderSource,
    FrozenStage,
    ImageSearchSource,
    Int,
    LfwSource,
    NpmSource,
    PythonSource,
    Str,
    UnfrozenStage,
    UrlListSource,
    bounded,
    keep_frozen_problem,
    schema,
)
from .task_registry import DEFAULT_TASK, TASKS, task_name_problem, task_section

__all__ = [
    "Recipe",
    "DatasetSpec",
    "FacesSpec",
    "FinetuneSpec",
    "FrozenStage",
    "AugmentedStage",
    "UnfrozenStage",
    "AugmentSpec",
    "SOURCE_KINDS",
    "FolderSource",
    "NpmSource",
    "CompositeSource",
    "CutoutSpec",
    "DebSource",
    "ArchiveSource",
    "PythonSource",
    "ImageSearchSource",
    "LfwSource",
    "UrlListSource",
    "keep_frozen_problem",
    "load_recipe",
    "load_resolved",
    "recipe_from_data",
    "parse_overrides",
    "recipe_with_overrides",
    "with_epochs",
    "resolve_paths",
    "recipe_json_schema",
    "recipe_to_dict",
    "recipe_toml",
    "write_resolved",
]


class _RecipeBase:
    """One experiment: its task, its task's section (classes, or a detector's labels and sources), dataset
    policy, model and schedule."""

    @property
    def class_names(self) -> list[str]:
        """The labels the model answers with (the task's section decides: sorted classes, a detector's labels)."""
        return task_section(self.task).class_names(self)


def _recipe_fields() -> list[tuple]:
    """The recipe's top-level keys: the shared ones with every registered task's section among them."""
    shared_head = [("task", Str, dataclasses.field(default=DEFAULT_TASK))]
    sections = [f for name in TASKS for f in task_section(name).FIELDS]
    shared_tail = [
        ("name", Str, dataclasses.field(default="")),
        ("description", Str, dataclasses.field(default="")),
        ("seed", Int, bounded(0, 2**32 - 1, default=42)),
        ("dataset", DatasetSpec, dataclasses.field(default=DatasetSpec())),
        ("finetune", FinetuneSpec, dataclasses.field(default=FinetuneSpec())),
        ("path", Str, dataclasses.field(default="")),  # the file it was loaded from; set by load_recipe
    ]
    return shared_head + sections + shared_tail


Recipe = schema(dataclasses.make_dataclass("Recipe", _recipe_fields(), bases=(_RecipeBase,), frozen=True))
Recipe.__module__ = __name__
Recipe.__doc__ = _RecipeBase.__doc__
_ADAPTER = TypeAdapter(Recipe)


# ---------------------------------------------------------------- loading and checking


def recipe_from_data(data: dict, where: str) -> Recipe:
    """A validated Recipe from plain data (TOML or JSON); RecipeError names `where`, the key and the fix."""
    try:
        recipe = _ADAPTER.validate_python(data)
    except ValidationError as e:
        raise RecipeError(f"{where}: {schema_error_message(e.errors(), Recipe, data)}") from None
    _check_recipe(recipe, where)
    return recipe


def _read_toml(p: Path) -> dict:
    if not p.is_file():
        hint = ", ".join(sorted(x.name for x in p.parent.glob("*.toml"))) if p.parent.is_dir() else ""
        raise RecipeError(f"{p}: no such recipe file" + (f"; recipes there: {hint}" if hint else ""))
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise RecipeError(f"{p}: not valid TOML ({e}); fix the syntax at that line") from None
    if "path" in data:
        raise RecipeError(f"{p}: key 'path' is reserved (set by the loader); remove it")
    return data


def load_recipe(path: str | Path, overrides: list[str] | tuple[str, ...] = (), notes: list | None = None) -> Recipe:
    """Read and validate a recipe file, with `KEY=VALUE` overrides applied first (see parse_overrides); its
    relative paths resolved against the recipe's folder (see resolve_paths; `notes` gets what to say)."""
    p = Path(path)
    data = _read_toml(p)
    data.setdefault("name", p.stem)
    data["path"] = str(p)
    recipe = recipe_with_overrides(data, overrides, str(p))
    resolved, said = resolve_paths(recipe, p.parent)
    if notes is not None:
        notes += said
    return resolved


def recipe_with_overrides(data: dict, overrides, where: str) -> Recipe:
    """A validated Recipe from plain data and `KEY=VALUE` overrides (`epochs=N` among them: with_epochs)."""
    where = f"{where} with {' '.join(overrides)}" if overrides else where
    epochs = None
    for keys, value in parse_overrides(overrides, where):
        if keys == ["epochs"]:
            epochs = value
        else:
            _set(data, keys, value, where)
    recipe = recipe_from_data(data, where)
    return recipe if epochs is None else with_epochs(recipe, epochs, where)


def with_epochs(r: Recipe, n, where: str) -> Recipe:
    """`epochs=N`, the one knob for the whole schedule: about N epochs in all, the frozen stage about 15 % of
    them, the augmented about 30 %, the unfrozen the rest, as one-epoch SGDR cycles (a restart each epoch)."""
    if not isinstance(n, int) or isinstance(n, bool) or not 3 <= n <= 3000:
        raise RecipeError(f"{where}: epochs={n!r}: give a whole number of epochs from 3 to 3000, e.g. epochs=12")
    frozen, augmented = max(1, round(n * 0.15)), max(1, round(n * 0.3))
    f = r.finetune
    return dataclasses.replace(
        r,
        finetune=dataclasses.replace(
            f,
            frozen=dataclasses.replace(f.frozen, epochs=frozen),
            augmented=dataclasses.replace(f.augmented, cycles=augmented, cycle_len=1, cycle_mult=1),
            unfrozen=dataclasses.replace(f.unfrozen, cycles=max(1, n - frozen - augmented), cycle_len=1, cycle_mult=1),
        ),
    )


# (source class, its fields that name a file or folder) for resolve_paths
_PATH_FIELDS = ((FolderSource, ("path",)), (UrlListSource, ("path",)), (LfwSource, ("archive", "folder")))


def resolve_paths(r: Recipe, base: Path) -> tuple[Recipe, list[str]]:
    """The recipe with each relative source path resolved against `base` (the recipe's folder) where it
    exists there; one that exists only from the current folder is kept as it is, with a note saying so, and
    one that exists in neither is kept as written (its source's error names it). The task's section names
    its own path fields (PATHS)."""
    notes: list[str] = []
    kinds = _PATH_FIELDS + tuple(getattr(task_section(r.task), "PATHS", ()))

    def fix(obj):
        if isinstance(obj, tuple):
            return tuple(fix(x) for x in obj)
        if isinstance(obj, dict):
            return {k: fix(v) for k, v in obj.items()}
        if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
            return obj
        changes = {f.name: fix(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
        for kind, names in kinds:
            if isinstance(obj, kind):
                changes |= {n: _resolved(getattr(obj, n), base, notes) for n in names}
        changes = {k: v for k, v in changes.items() if v is not getattr(obj, k)}
        return dataclasses.replace(obj, **changes) if changes else obj

    return fix(r), notes


def _resolved(value: str, base: Path, notes: list) -> str:
    p = Path(value)
    if not value or p.is_absolute() or base in (Path(""), Path(".")) or "://" in value:
        return value
    if (base / p).exists():
        return str(base / p)
    if p.exists():  # the current folder's
        notes.append(
            f"{value} found from the current folder, not from the recipe's folder {base}: write it relative "
            f"to the recipe ({os.path.relpath(p.resolve(), base.resolve())}) so the recipe works from anywhere"
        )
        return value
    return value


def load_resolved(path: str | Path) -> Recipe:
    """A resolved recipe (recipe.json, as every dataset and run folder holds), validated like a file."""
    p = Path(path)
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise RecipeError(f"{p}: cannot read the resolved recipe ({e}); run the stage that wrote it again") from None
    return recipe_from_data(data, str(p))


# ---------------------------------------------------------------- KEY=VALUE overrides


def parse_overrides(items, where: str) -> list[tuple[list[str], object]]:
    """`finetune.size=160` → (["finetune", "size"], 160): the value read as a TOML value (a number, true,
    a list, a quoted string), or else taken as a plain string (`finetune.backbone=resnet18`)."""
    out = []
    for item in items:
        key, eq, text = item.partition("=")
        keys = key.strip().split(".")
        if not eq or not all(k.strip() for k in keys):
            raise RecipeError(
                f"{where}: override {item!r} is not KEY=VALUE; e.g. finetune.size=160 or dataset.balance=weights"
            )
        try:
            value = tomllib.loads(f"v = {text.strip()}")["v"]
        except tomllib.TOMLDecodeError:
            value = text.strip()
        out.append(([k.strip() for k in keys], value))
    return out


def _set(data: dict, keys: list[str], value, where: str) -> None:
    """Put `value` at `keys` in the recipe's data, making the tables on the way (the schema checks the keys)."""
    at = data
    for i, k in enumerate(keys[:-1]):
        at = at.setdefault(k, {})
        if not isinstance(at, dict):
            key = ".".join(keys[: i + 1])
            raise RecipeError(f"{where}: override {'.'.join(keys)}: '{key}' is not a table; give a key inside a table")
    if keys[-1] == "path" and len(keys) == 1:
        raise RecipeError(f"{where}: key 'path' is reserved (set by the loader); remove it")
    at[keys[-1]] = value


# ---------------------------------------------------------------- what the schema cannot say


def _check_recipe(r: Recipe, where: str) -> None:
    if problem := task_name_problem(r.task):
        raise RecipeError(f"{where}: 'task' = {problem}")
    foreign = [n for name in TASKS if name != r.task for n, _, _ in task_section(name).FIELDS if _is_set(r, n)]
    task_section(r.task).check(r, where, foreign)
    if problem := backbone_name_problem(r.finetune.backbone):
        raise RecipeError(f"{where}: 'finetune.backbone' = {problem}")
    _check_split(r.dataset, where)
    for key, s in task_section(r.task).sources(r):
        if isinstance(s, CompositeSource):
            _check_composite(s, where, key)
    _check_rates(r.finetune, where)


def _is_set(r: Recipe, key: str) -> bool:
    """Whether the recipe gives top-level key `key` a value other than its default."""
    f = Recipe.__dataclass_fields__[key]
    default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
    return getattr(r, key) != default


def _check_split(d: DatasetSpec, where: str) -> None:
    for key in ("valid", "test"):
        v = getattr(d, key)
        if isinstance(v, float) and not 0.0 <= v < 1.0:
            raise RecipeError(f"{where}: 'dataset.{key}' = {v} must be a fraction in [0, 1) or a count")
    if isinstance(d.valid, float) and isinstance(d.test, float) and d.valid + d.test >= 1.0:
        raise RecipeError(
            f"{where}: 'dataset.valid' + 'dataset.test' = {d.valid + d.test} leaves "
            "nothing to train on; make them sum below 1"
        )
    if d.valid == 0:
        raise RecipeError(f"{where}: 'dataset.valid' is 0; a validation split is required")
    if d.group_distance < d.near_duplicate_distance:
        raise RecipeError(
            f"{where}: 'dataset.group_distance' ({d.group_distance}) must be >= "
            f"'dataset.near_duplicate_distance' ({d.near_duplicate_distance})"
        )


def _check_composite(s: CompositeSource, where: str, key: str) -> None:
    """A composite source's scale and counts in order, `identity` a regular expression."""
    import re

    lo, hi = s.scale
    if not 0 < lo <= hi <= 1:
        raise RecipeError(
            f"{where}: '{key}' composite 'scale' = [{lo}, {hi}]: give [low, high] with 0 < low <= high <= 1 "
            "(an object's longer side as a share of the image's shorter side)"
        )
    if not s.objects:
        raise RecipeError(f"{where}: '{key}' composite 'objects' is empty; add a label with cut-out sources")
    for name, (lo, hi), bound in (("per_image", s.per_image, 1), ("distractors_per_image", s.distractors_per_image, 0)):
        if not (bound <= lo <= hi <= 50):
            raise RecipeError(
                f"{where}: '{key}' composite '{name}' = [{lo}, {hi}]: give [low, high] with "
                f"{bound} <= low <= high <= 50"
            )
    if s.identity:
        try:
            re.compile(s.identity)
        except re.error as e:
            raise RecipeError(
                f"{where}: '{key}' composite 'identity' = {s.identity!r} is not a regular "
                f'expression ({e}); e.g. "^[a-z]+" (the file name\'s leading letters)'
            ) from None


def _check_rates(f: FinetuneSpec, where: str) -> None:
    rates = [("finetune.frozen.lr", f.frozen.lr), ("finetune.augmented.lr", f.augmented.lr)]
    if f.unfrozen.lrs != "auto":
        rates += [(f"finetune.unfrozen.lrs[{i}]", v) for i, v in enumerate(f.unfrozen.lrs)]
    for key, v in rates:
        if v != "auto" and not 0 < v <= 10:
            raise RecipeError(f"{where}: '{key}' = {v}: a learning rate is above 0 and at most 10, e.g. 1e-3")
    if problem := keep_frozen_problem(f.unfrozen.keep_frozen):
        raise RecipeError(f"{where}: 'finetune.unfrozen.keep_frozen' = {f.unfrozen.keep_frozen}: {problem}")


# ---------------------------------------------------------------- writing and describing


def recipe_to_dict(r) -> dict:
    """The recipe as plain data, every default filled in."""
    return json.loads(json.dumps(dataclasses.asdict(r)))


def recipe_toml(r) -> str:
    """The resolved recipe as a recipe file (every default spelled out; the loader's `path` left out), which
    loads back to the same recipe."""
    data = recipe_to_dict(r)
    data.pop("path", None)
    return tomli_w.dumps(data)


def recipe_json_schema() -> dict:
    """The recipe's JSON Schema (what editors such as Taplo / Even Better TOML complete and check with)."""
    out = _ADAPTER.json_schema()
    out.setdefault("properties", {}).pop("path", None)  # set by the loader, refused in a file
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **out, "title": "chiquito_or_not recipe"}


def write_resolved(r: Recipe, folder: Path) -> Path:
    """Save the resolved recipe (all defaults spelled out) as JSON into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / RESOLVED_RECIPE
    out.write_text(json.dumps(recipe_to_dict(r), indent=2) + "\n", encoding="utf-8")
    return out
