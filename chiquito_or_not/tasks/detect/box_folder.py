"""A folder as a detection recipe (`chiquito train FOLDER`): the layout its boxes are in, their labels, and
whether the layout gives the splits, read from the files themselves (box_layouts, format = "auto")."""

from __future__ import annotations

from pathlib import Path

from ...core.errors import DataError, SourceError
from ...core.files import IMAGE_EXTS
from ...core.recipe_schema import FolderSource
from ...core.task_registry import FolderRecipe
from ...data.sources import RawFile
from .box_layouts import pair_source
from .box_recipe import AnnotatedSource

__all__ = ["folder_recipe"]

# what says "no boxes here" (then the folder may be another task's); any other SourceError is this folder's
NO_BOXES = "no box annotations among"


def _files(folder: Path) -> list[RawFile]:
    return [
        RawFile(p, f"folder:{folder}")
        for p in sorted(folder.rglob("*"))
        if p.is_file() and not any(part.startswith(".") for part in p.relative_to(folder).parts)
    ]


def folder_recipe(folder: Path) -> FolderRecipe | None:
    """The detection recipe for `folder` when it holds box annotations in one layout; None when it holds
    none; DataError (one line) when its boxes cannot make a recipe."""
    files = _files(folder)
    where = str(folder)
    asrc = AnnotatedSource(images=FolderSource(path=str(folder)))
    try:
        paired = pair_source(asrc, files, [], where)
    except SourceError as e:
        if NO_BOXES in str(e):
            return None
        raise DataError(str(e)) from None
    _refuse_mixed(paired, folder)
    labels = _labels(paired, where)
    if not labels:
        raise DataError(f"{where}: its {paired.layout} annotations hold no box; draw boxes first (chiquito label)")
    images = sum(1 for f in files if f.path.suffix.lower() in IMAGE_EXTS)
    annotated = sum(1 for p in paired.pairs if p.ann is not None and p.ann.boxes)
    given = sorted({p.split for p in paired.pairs if p.split})
    data = {
        "task": "detect",
        "detect": {
            "labels": labels,
            "sources": [{"format": "auto", "images": {"kind": "folder", "path": str(folder)}}],
        },
    }
    if {"train", "valid"} <= set(given):
        data["dataset"] = {"split": "given"}
    said = [
        f"task: detect ({paired.layout} boxes, {annotated} of {images} images with boxes)",
        f"labels: {', '.join(labels)}",
        "splits: "
        + (f"as the layout gives them ({', '.join(given)})" if "dataset" in data else "by content hash (valid 20 %)"),
    ]
    return FolderRecipe("detect", data, said)


def _labels(paired, where: str) -> list[str]:
    """The labels: YOLO's class names in id order (what its boxes were read with), else those the boxes use."""
    if paired.layout != "yolo":
        return sorted({b.label for p in paired.pairs if p.ann is not None for b in p.ann.boxes})
    if not paired.names:
        raise DataError(
            f"{where}: YOLO labels without class names; add a data.yaml with `names`, or a classes.txt with one "
            "name per line (class id 0 first)"
        )
    return list(paired.names)


def _refuse_mixed(paired, folder: Path) -> None:
    """DataError when some top-level sub-folders' pictures have annotations and others' have none at all: class
    folders with a few annotation files among them, not a detection set."""
    top: dict[str, list[bool]] = {}
    for p in paired.pairs:
        rel = p.image.path.relative_to(folder).parts
        if len(rel) > 1:
            top.setdefault(rel[0], []).append(p.ann is not None)
    with_boxes = sorted(k for k, v in top.items() if any(v))
    without = sorted(k for k, v in top.items() if not any(v))
    if with_boxes and without:
        raise DataError(
            f"{folder}: its sub-folders mix pictures with box annotations ({', '.join(with_boxes[:3])}) and "
            f"pictures with none ({', '.join(without[:3])}); for a classification set remove the annotation "
            "files, for a detection set give every folder's pictures their boxes (chiquito label draws them)"
        )
