"""datasets/NAME/box_labels.csv, the boxes drawn in the browser (`chiquito label`): one line per save: the
image's sha256 (of its bytes as the source has them), its path, its stored size, its boxes as JSON
([[label, x0, y0, x1, y1], ...] in stored pixels, as an annotation file gives them; [] for an image with
no object) and the time. The last line of an image wins. `chiquito dataset` takes these boxes in place of
the image's annotation, so the user's files are never modified; a line it cannot read (a crash's torn
line) is skipped and named.
"""

from __future__ import annotations

import json
import math
from datetime import datetime, timezone
from pathlib import Path

from ...data.review_log import Journal, journal_rows, valid_sha
from .box_formats import Annotation, Box

__all__ = ["BOX_COLUMNS", "BoxJournal", "read_box_journal", "check_boxes_json"]

BOX_COLUMNS = ["sha256", "path", "width", "height", "boxes", "time"]
MAX_BOXES = 1000


def check_boxes_json(boxes, labels: list[str], width: int, height: int) -> list[list]:
    """The boxes a page sent, checked: a list of [label, x0, y0, x1, y1], labels among `labels`, finite
    numbers inside the image (x0 < x1, y0 < y1). ValueError names the first that is not."""
    if not isinstance(boxes, list) or len(boxes) > MAX_BOXES:
        raise ValueError(f"boxes must be a list of at most {MAX_BOXES} [label, x0, y0, x1, y1]")
    out = []
    for i, b in enumerate(boxes):
        if not (isinstance(b, list) and len(b) == 5 and isinstance(b[0], str)):
            raise ValueError(f"box {i} is not [label, x0, y0, x1, y1]")
        if b[0] not in labels:
            raise ValueError(f"box {i}: label {b[0]!r} is not one of {', '.join(labels)}")
        xy = b[1:]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in xy):
            raise ValueError(f"box {i}: coordinates must be finite numbers")
        x0, y0, x1, y1 = (round(float(v), 2) for v in xy)
        if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
            raise ValueError(f"box {i}: ({x0}, {y0}, {x1}, {y1}) is not inside the {width}x{height} image")
        out.append([b[0], x0, y0, x1, y1])
    return out


class BoxJournal(Journal):
    """box_labels.csv's one writer (the label page)."""

    columns = BOX_COLUMNS
    what = "label page"

    def check(self) -> None:
        read_box_journal(self.path)

    def write(self, sha256: str, path: str, width: int, height: int, boxes: list[list]) -> str:
        if not valid_sha(sha256):
            raise ValueError(f"not a sha256: {sha256!r}")
        time = datetime.now(timezone.utc).isoformat(timespec="seconds")
        self.append_row([sha256, path, width, height, json.dumps(boxes), time])
        return time


def _row_annotation(row: list) -> Annotation:
    sha, _, w, h, boxes, _ = row
    if not valid_sha(sha):
        raise ValueError("not a sha256")
    data = json.loads(boxes)
    if not isinstance(data, list) or len(data) > MAX_BOXES:
        raise ValueError("boxes is not a list")
    ann = Annotation(width=int(w), height=int(h))
    for b in data:
        if not (isinstance(b, list) and len(b) == 5 and isinstance(b[0], str)):
            raise ValueError("a box is not [label, x0, y0, x1, y1]")
        ann.boxes.append(Box(b[0], *(float(v) for v in b[1:])))
    return ann


def read_box_journal(path: Path) -> tuple[dict[str, Annotation], list[str]]:
    """({sha256: the boxes of its last line}, problems): a line that cannot be read is left out and named."""
    rows, problems = journal_rows(path, BOX_COLUMNS, "box journal")
    out = {}
    for n, row in rows:
        try:
            out[row[0]] = _row_annotation(row)
        except (ValueError, TypeError, RecursionError) as e:
            problems.append(f"line {n}: {str(e)[:80]}")
    return out, problems
