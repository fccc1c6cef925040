"""A detection split folder as the dataset stage writes it: images/ and one COCO annotations.json."""

from __future__ import annotations

import json
from pathlib import Path

from ...core.errors import DataError
from .box_formats import read_coco

__all__ = ["SPLIT_ANNOTATIONS", "read_split"]

SPLIT_ANNOTATIONS = "annotations.json"


def read_split(folder: Path, labels: list[str] | None = None) -> tuple[list[Path], list[list], list[str]]:
    """(image paths, boxes [[label, x0, y0, x1, y1], ...] per image, labels) of a split folder written here
    (or any folder holding a COCO annotations.json beside its images)."""
    folder = Path(folder)
    f = folder / SPLIT_ANNOTATIONS
    if not f.is_file():
        raise DataError(
            f"{folder}: no {SPLIT_ANNOTATIONS}; pass a split folder written by `chiquito dataset` "
            "(or a folder with a COCO annotations.json beside its images)"
        )
    table, problem = read_coco(f)
    if problem:
        raise DataError(f"{f}: {problem[0]}: {problem[1]}")
    doc = json.loads(f.read_text())
    names = [c["name"] for c in sorted(doc["categories"], key=lambda c: c["id"])]
    labels = labels or names
    unknown = sorted({b.label for a in table.values() for b in a.boxes} - set(labels))
    if unknown:
        raise DataError(f"{f}: label(s) {', '.join(unknown)} are not the model's ({', '.join(labels)})")
    paths, boxes = [], []
    for name in sorted(table):
        p = folder / name
        if not p.is_file():
            raise DataError(f"{f}: image {name} is missing; rebuild with `chiquito dataset RECIPE`")
        paths.append(p)
        boxes.append([[b.label, b.x0, b.y0, b.x1, b.y1] for b in table[name].boxes])
    return paths, boxes, labels
