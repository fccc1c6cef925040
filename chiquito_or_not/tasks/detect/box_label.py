"""What `chiquito label` lists: the images whose boxes are missing or have problems, with their given (or
last drawn) boxes; the journal they are saved to is box_journal.py's."""

from __future__ import annotations

import hashlib
from pathlib import Path

from ...core.errors import DataError
from ...core.files import NotRegular, read_csv_rows, read_regular
from ...core.layout import DatasetFolder
from ...core.reasons import Reason, Status
from ...core.task_registry import LabelItems
from .box_dataset import BoxDataset, _stored_size
from .box_journal import read_box_journal

__all__ = ["label_items", "LISTED"]
# the manifest reasons of an image the page lists: its boxes are missing or wrong
LISTED = {
    Reason.NO_ANNOTATION,
    Reason.BAD_ANNOTATION,
    Reason.SIZE_MISMATCH,
    Reason.BOX_OUTSIDE_IMAGE,
    Reason.EMPTY_BOX,
    Reason.UNKNOWN_LABEL,
    Reason.NO_BOXES,
    Reason.AMBIGUOUS_ANNOTATION,
    Reason.ROTATED_BOX,
}


def _given_boxes(pair, w: int, h: int) -> list[list]:
    ann = pair.ann
    if ann is None or ann.problem:
        return []
    sx, sy = (w, h) if ann.normalized else (1, 1)
    return [[b.label, b.x0 * sx, b.y0 * sy, b.x1 * sx, b.y1 * sy] for b in ann.boxes]


def _listed(row: dict, everything: bool, saved: bool) -> bool:
    if everything or saved:
        return True
    if row.get("status") == Status.KEPT:
        return int(row.get("boxes_dropped") or 0) > 0
    return row.get("reason") in LISTED


def label_items(recipe, roots, root: Path, log, everything: bool = False) -> LabelItems:
    """What `chiquito label` lists: every image of the recipe's sources whose boxes are missing or have
    problems in the last `chiquito dataset` (with `everything`, all of them), its given (or last saved)
    boxes in stored pixels and why it is listed."""
    folder = DatasetFolder(root)
    if not folder.manifest.is_file():
        raise DataError(f"{root}: no manifest.csv; run `chiquito dataset {recipe.path}` first")
    manifest = {r["raw_path"]: r for r in read_csv_rows(folder.manifest)}
    saved, problems = read_box_journal(folder.box_labels)
    items, files = [], {}
    for pair in BoxDataset(recipe, folder, roots, log, use_review=False).gather(retry_failed=False):
        try:
            data = read_regular(pair.image.path)
        except (NotRegular, OSError):
            continue
        sha, size = hashlib.sha256(data).hexdigest(), _stored_size(data)
        row = manifest.get(str(pair.image.path), {})
        if size is None or sha in files or not _listed(row, everything, sha in saved):
            continue
        boxes = [[b.label, b.x0, b.y0, b.x1, b.y1] for b in saved[sha].boxes] if sha in saved else None
        items.append(
            dict(
                sha256=sha,
                path=str(pair.image.path),
                width=size[0],
                height=size[1],
                reason=row.get("reason", "") or ("boxes dropped" if row.get("boxes_dropped", "0") != "0" else ""),
                detail=row.get("detail", ""),
                boxes=boxes if boxes is not None else _given_boxes(pair, *size),
                saved=sha in saved,
            )
        )
        files[sha] = pair.image.path
    return LabelItems(folder.root, tuple(recipe.detect.labels), items, files, problems)
