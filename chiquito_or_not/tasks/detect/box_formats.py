"""Box annotations in the four formats people draw them in: Pascal VOC XML (labelImg), the tutorial's CSV
(`filename,width,height,class,xmin,ymin,xmax,ymax`), COCO JSON and YOLO txt; and the checks every box
goes through. A reader never raises on bad input: a file it cannot use becomes a Problem (a
core.reasons.Reason and a detail) that the dataset stage writes into the manifest.

VOC XML is parsed with defusedxml (entities, DTDs and external references refused), never with the bare
standard-library parser.
"""

from __future__ import annotations

import csv
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path

from ...core.files import NotRegular, read_regular
from ...core.reasons import Reason
from ...data.voc import Box, write_voc  # noqa: F401  (re-exported: the VOC writer and reader meet here)
from .box_postprocess import require_detect_extra

__all__ = [
    "Box",
    "Annotation",
    "read_voc",
    "read_yolo",
    "read_csv",
    "read_coco",
    "write_voc",
    "check_boxes",
    "ANNOTATION_EXTS",
]

ANNOTATION_EXTS = {"voc": ".xml", "yolo": ".txt"}  # one file per image, beside it
MAX_ANNOTATION_BYTES = 64 * 2**20


@dataclass
class Annotation:
    """One image's boxes as a file gives them. `normalized`: YOLO's 0..1 centre/size, in x0 y0 x1 y1
    order here, converted once the image size is known. `problem` = (reason, detail) when unusable."""

    boxes: list[Box] = field(default_factory=list)
    width: int | None = None
    height: int | None = None
    normalized: bool = False
    problem: tuple[str, str] | None = None
    group: str = ""  # the split unit, when the annotation names one (our composites' <group>)


def _read(path: Path) -> tuple[bytes | None, tuple[str, str] | None]:
    try:
        return read_regular(Path(path), MAX_ANNOTATION_BYTES), None
    except NotRegular as e:
        return None, (e.reason, e.detail)
    except OSError as e:
        return None, (Reason.UNREADABLE, e.strerror or str(e))


def _number(text, what: str) -> float:
    try:
        v = float(str(text).strip())
    except (TypeError, ValueError):
        raise ValueError(f"{what} is {text!r}, not a number") from None
    if not math.isfinite(v):
        raise ValueError(f"{what} is {text!r}, not a finite number")
    return v


def read_voc(path: Path) -> Annotation:
    """A Pascal VOC / labelImg .xml file."""
    from xml.etree.ElementTree import ParseError

    require_detect_extra()
    import defusedxml
    from defusedxml.ElementTree import fromstring

    data, problem = _read(path)
    if problem:
        return Annotation(problem=problem)
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as e:
        return Annotation(problem=(Reason.UNSAFE_ANNOTATION, f"refused unread: {type(e).__name__}"))
    except (ParseError, ValueError) as e:
        return Annotation(problem=(Reason.BAD_ANNOTATION, f"not well-formed XML ({e})"))
    if root.tag != "annotation":
        return Annotation(problem=(Reason.BAD_ANNOTATION, f"root element <{root.tag}>, not <annotation>"))
    ann = Annotation(group=(root.findtext("group") or "").strip())
    try:
        size = root.find("size")
        if size is not None and size.findtext("width") is not None:
            ann.width = int(_number(size.findtext("width"), "size/width"))
            ann.height = int(_number(size.findtext("height"), "size/height"))
        for i, obj in enumerate(root.findall("object")):
            bb = obj.find("bndbox")
            name = (obj.findtext("name") or "").strip()
            if bb is None or not name:
                raise ValueError(f"object {i} has no {'<bndbox>' if bb is None else '<name>'}")
            ann.boxes.append(
                Box(name, *(_number(bb.findtext(k), f"object {i} {k}") for k in ("xmin", "ymin", "xmax", "ymax")))
            )
    except ValueError as e:
        return Annotation(problem=(Reason.BAD_ANNOTATION, str(e)))
    return ann


def read_yolo(path: Path, names: list[str]) -> Annotation:
    """A YOLO .txt: one `class cx cy w h` line per box, all relative to the image size (0..1)."""
    data, problem = _read(path)
    if problem:
        return Annotation(problem=problem)
    ann = Annotation(normalized=True)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return Annotation(problem=(Reason.BAD_ANNOTATION, "not UTF-8 text"))
    for n, line in enumerate(text.splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 5:
            return Annotation(problem=(Reason.BAD_ANNOTATION, f"line {n} has {len(parts)} fields, YOLO needs 5"))
        try:
            cid = int(parts[0])
            cx, cy, w, h = (_number(v, f"line {n} field {k}") for k, v in enumerate(parts[1:], 2))
        except ValueError as e:
            return Annotation(problem=(Reason.BAD_ANNOTATION, f"line {n}: {e}"))
        label = names[cid] if 0 <= cid < len(names) else f"class id {cid}"
        ann.boxes.append(Box(label, cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2))
    return ann


CSV_COLUMNS = ("filename", "width", "height", "class", "xmin", "ymin", "xmax", "ymax")


def read_csv(path: Path) -> tuple[dict[str, Annotation], tuple[str, str] | None]:
    """The tutorial's CSV (labelImg XML converted): one row per box. ({filename: Annotation}, problem)."""
    data, problem = _read(path)
    if problem:
        return {}, problem
    try:
        rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    except (UnicodeDecodeError, csv.Error) as e:
        return {}, (Reason.BAD_ANNOTATION, f"not a readable CSV ({e})")
    missing = [c for c in CSV_COLUMNS if rows and c not in rows[0]]
    if missing or not rows:
        return {}, (
            Reason.BAD_ANNOTATION,
            f"columns {', '.join(missing) or 'and rows'} missing; the header must be {','.join(CSV_COLUMNS)}",
        )
    out: dict[str, Annotation] = {}
    for n, row in enumerate(rows, 2):
        name = (row["filename"] or "").strip()
        ann = out.setdefault(name, Annotation())
        if ann.problem:
            continue
        try:
            w, h = int(_number(row["width"], "width")), int(_number(row["height"], "height"))
            if ann.width is not None and (ann.width, ann.height) != (w, h):
                raise ValueError(f"width/height {w}x{h} differ from an earlier row's {ann.width}x{ann.height}")
            ann.width, ann.height = w, h
            label = (row["class"] or "").strip()
            if not label:  # a row with no class: an image with no boxes (how some tools write negatives)
                continue
            ann.boxes.append(Box(label, *(_number(row[k], k) for k in ("xmin", "ymin", "xmax", "ymax"))))
        except ValueError as e:
            out[name] = Annotation(problem=(Reason.BAD_ANNOTATION, f"{Path(path).name} line {n}: {e}"))
    return out, None


def read_coco(path: Path) -> tuple[dict[str, Annotation], tuple[str, str] | None]:
    """A COCO JSON file: images, categories and annotations with `bbox` = [x, y, width, height]."""
    data, problem = _read(path)
    if problem:
        return {}, problem
    try:
        doc = json.loads(data)
        cats = {c["id"]: str(c["name"]) for c in doc["categories"]}
        images = {im["id"]: im for im in doc["images"]}
        anns = doc.get("annotations", [])
        if not isinstance(anns, list):
            raise TypeError("'annotations' is not a list")
    except (ValueError, KeyError, TypeError, RecursionError) as e:
        return {}, (Reason.BAD_ANNOTATION, f"not a COCO file ({type(e).__name__}: {e})")
    out: dict[str, Annotation] = {}
    by_id: dict = {}
    for im in images.values():
        try:
            a = Annotation(width=int(_number(im["width"], "width")), height=int(_number(im["height"], "height")))
            name = str(im["file_name"])
        except (KeyError, TypeError, ValueError) as e:
            return {}, (Reason.BAD_ANNOTATION, f"image {im.get('id')!r}: {e}")
        out[name] = by_id[im["id"]] = a
    for i, a in enumerate(anns):
        try:
            img = by_id[a["image_id"]]
            x, y, w, h = (_number(v, f"annotation {i} bbox") for v in a["bbox"])
            label = cats.get(a["category_id"], f"category id {a['category_id']}")
        except (KeyError, TypeError, ValueError) as e:
            return {}, (Reason.BAD_ANNOTATION, f"annotation {i}: {type(e).__name__} {e}")
        img.boxes.append(Box(label, x, y, x + w, y + h))
    return out, None


def check_boxes(
    ann: Annotation, width: int, height: int, labels: list[str], tolerance: float, min_box: float
) -> tuple[list[Box], list[tuple[int, str, str]]]:
    """The usable boxes of an annotation against the image's real size (`width` x `height`, as stored),
    and the problems of the others as (box index, reason, detail). A box past the edge by at most
    `tolerance` px is clipped; further out it is rejected; narrower or lower than `min_box` is empty."""
    good, bad = [], []
    for i, b in enumerate(ann.boxes):
        x0, y0, x1, y1 = b.x0, b.y0, b.x1, b.y1
        if ann.normalized:
            x0, x1, y0, y1 = x0 * width, x1 * width, y0 * height, y1 * height
        if b.label not in labels:
            bad.append((i, Reason.UNKNOWN_LABEL, f"box {i}: label {b.label!r} is not one of {', '.join(labels)}"))
            continue
        if x1 - x0 < min_box or y1 - y0 < min_box:
            bad.append(
                (i, Reason.EMPTY_BOX, f"box {i} ({b.label}): {x1 - x0:g} x {y1 - y0:g} px (min_box {min_box:g})")
            )
            continue
        if x0 < -tolerance or y0 < -tolerance or x1 > width + tolerance or y1 > height + tolerance:
            bad.append(
                (
                    i,
                    Reason.BOX_OUTSIDE_IMAGE,
                    f"box {i} ({b.label}): ({x0:g}, {y0:g}, {x1:g}, {y1:g}) outside the {width}x{height} image "
                    f"by more than {tolerance:g} px",
                )
            )
            continue
        good.append(Box(b.label, max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)))
    return good, bad
