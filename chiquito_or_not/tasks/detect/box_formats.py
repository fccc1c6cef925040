"""Box annotations in the formats people draw them in: Pascal VOC XML (labelImg), the tutorial's CSV
(`filename,width,height,class,xmin,ymin,xmax,ymax`), COCO JSON, YOLO txt, CVAT for images 1.1 XML and
Label Studio's JSON export; and the checks every box
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
    "read_cvat",
    "read_labelstudio",
    "sniff",
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
    filename: str = ""  # the image the annotation names (VOC's <filename>), when it names one
    split: str = ""  # the split the annotation puts the image in (CVAT's subset), when it says
    skipped: list = field(default_factory=list)  # (reason, detail) of boxes left out on purpose (COCO iscrowd)


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


def _parse_xml(path: Path, root_tag: str):
    """(root element, None) of a well-formed, safe XML file whose root is <root_tag>, or (None, problem)."""
    from xml.etree.ElementTree import ParseError

    require_detect_extra()
    import defusedxml
    from defusedxml.ElementTree import fromstring

    data, problem = _read(path)
    if problem:
        return None, problem
    try:
        root = fromstring(data, forbid_dtd=True, forbid_entities=True, forbid_external=True)
    except defusedxml.DefusedXmlException as e:
        return None, (Reason.UNSAFE_ANNOTATION, f"refused unread: {type(e).__name__}")
    except (ParseError, ValueError, LookupError) as e:  # LookupError: an encoding Python does not know
        return None, (Reason.BAD_ANNOTATION, f"not well-formed XML ({type(e).__name__}: {e})")
    if root.tag != root_tag:
        hint = {"annotations": ' (a CVAT file? set format = "cvat")', "annotation": ' (a VOC file? set format = "voc")'}
        return None, (Reason.BAD_ANNOTATION, f"root element <{root.tag}>, not <{root_tag}>{hint.get(root.tag, '')}")
    return root, None


def read_voc(path: Path) -> Annotation:
    """A Pascal VOC / labelImg .xml file."""
    root, problem = _parse_xml(path, "annotation")
    if problem:
        return Annotation(problem=problem)
    ann = Annotation(group=(root.findtext("group") or "").strip(), filename=(root.findtext("filename") or "").strip())
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
            _add_csv_row(ann, row)
        except ValueError as e:
            out[name] = Annotation(problem=(Reason.BAD_ANNOTATION, f"{Path(path).name} line {n}: {e}"))
    return out, None


def _add_csv_row(ann: Annotation, row: dict) -> None:
    """One CSV row into its image's annotation: the size (the same on every row) and the box, if it has one."""
    w, h = int(_number(row["width"], "width")), int(_number(row["height"], "height"))
    if ann.width is not None and (ann.width, ann.height) != (w, h):
        raise ValueError(f"width/height {w}x{h} differ from an earlier row's {ann.width}x{ann.height}")
    ann.width, ann.height = w, h
    label = (row["class"] or "").strip()
    if label:  # a row with no class: an image with no boxes (how some tools write negatives)
        ann.boxes.append(Box(label, *(_number(row[k], k) for k in ("xmin", "ymin", "xmax", "ymax"))))


def _coco_box(a: dict, i: int) -> tuple[float, float, float, float]:
    bbox = a.get("bbox")
    if not isinstance(bbox, list) or len(bbox) != 4 or any(isinstance(v, (bool, str)) for v in bbox):
        raise ValueError(f"annotation {i}: bbox {str(bbox)[:40]!r} is not [x, y, width, height]")
    x, y, w, h = (_number(v, f"annotation {i} bbox") for v in bbox)
    return x, y, x + w, y + h


def _coco_images(doc: dict) -> dict:
    """image id -> (file name, Annotation with its size)."""
    out = {}
    for im in doc["images"]:
        a = Annotation(width=int(_number(im["width"], "width")), height=int(_number(im["height"], "height")))
        out[im["id"]] = (str(im["file_name"]), a)
    return out


def read_coco(path: Path) -> tuple[dict[str, Annotation], tuple[str, str] | None]:
    """A COCO JSON file: images, categories and annotations with `bbox` = [x, y, width, height]. Category
    ids need not be contiguous; an image without annotations is a background image; an `iscrowd` region
    is left out (noted in `skipped`), as COCO's own evaluation ignores it; a bad annotation marks its image."""
    data, problem = _read(path)
    if problem:
        return {}, problem
    try:
        doc = json.loads(data)
        cats = {c["id"]: str(c["name"]) for c in doc["categories"]}
        images = _coco_images(doc)
        anns = doc.get("annotations", [])
        if not isinstance(anns, list):
            raise TypeError("'annotations' is not a list")
    except (ValueError, KeyError, TypeError, RecursionError, AttributeError) as e:
        return {}, (Reason.BAD_ANNOTATION, f"not a COCO file ({type(e).__name__}: {e})")
    for i, a in enumerate(anns):
        try:
            name, img = images[a["image_id"]]
        except (KeyError, TypeError):
            return {}, (Reason.BAD_ANNOTATION, f"annotation {i}: no image with id {str(a)[:60]}")
        if img.problem:
            continue
        try:
            label = cats.get(a.get("category_id"), f"category id {a.get('category_id')}")
            box = Box(label, *_coco_box(a, i))
        except (ValueError, TypeError, AttributeError) as e:
            img.problem = (Reason.BAD_ANNOTATION, f"{Path(path).name}: {e}")
            continue
        if a.get("iscrowd"):
            img.skipped.append((Reason.CROWD_BOX, f"annotation {i} ({label}): iscrowd = 1, left out"))
        else:
            img.boxes.append(box)
    return {name: ann for name, ann in images.values()}, None


def _cvat_image(el, i: int) -> tuple[str, Annotation]:
    name = (el.get("name") or "").strip()
    if not name:
        raise ValueError(f"<image> {i} has no name")
    ann = Annotation(
        width=int(_number(el.get("width"), f"{name} width")),
        height=int(_number(el.get("height"), f"{name} height")),
        split=(el.get("subset") or "").strip(),
    )
    for k, b in enumerate(el.findall("box")):
        label = (b.get("label") or "").strip()
        coords = [_number(b.get(c), f"{name} box {k} {c}") for c in ("xtl", "ytl", "xbr", "ybr")]
        if abs(_number(b.get("rotation") or 0, f"{name} box {k} rotation")) > 1e-6:
            ann.problem = (Reason.ROTATED_BOX, f"box {k} ({label}) is rotated by {b.get('rotation')} degrees")
            return name, ann
        ann.boxes.append(Box(label, *coords))
    return name, ann


def read_cvat(path: Path) -> tuple[dict[str, Annotation], tuple[str, str] | None]:
    """CVAT for images 1.1 XML: <image name width height [subset]> with <box label xtl ytl xbr ybr>
    (polygons, points and tags are not boxes and are left out)."""
    root, problem = _parse_xml(path, "annotations")
    if problem:
        return {}, problem
    images = root.findall("image")
    if not images and root.findall("track"):
        return {}, (Reason.BAD_ANNOTATION, "a CVAT for video file (<track>); export as CVAT for images 1.1")
    out: dict[str, Annotation] = {}
    for i, el in enumerate(images):
        try:
            name, ann = _cvat_image(el, i)
        except ValueError as e:
            return {}, (Reason.BAD_ANNOTATION, str(e))
        out[name] = ann
    return out, None


def _ls_image_name(data) -> str:
    """The file a Label Studio task shows: `data.image` (or its only string), as a path: local-storage
    URLs (`/data/local-files/?d=dir/a.jpg`) give dir/a.jpg, uploads (`/data/upload/3/8f3e2a1b-a.jpg`) their
    file name, prefix kept (the matcher also tries it without)."""
    from urllib.parse import parse_qs, unquote, urlsplit

    if not isinstance(data, dict):
        raise ValueError("'data' is not an object")
    value = data.get("image")
    if not isinstance(value, str):
        strings = [v for v in data.values() if isinstance(v, str)]
        if len(strings) != 1:
            raise ValueError("'data' has no 'image' URL")
        value = strings[0]
    url = urlsplit(value)
    if "d" in parse_qs(url.query):
        return unquote(parse_qs(url.query)["d"][0])
    return unquote(url.path).rsplit("/", 1)[-1]


def _ls_result(task: dict) -> list:
    """The boxes of a task's last annotation that was not cancelled (older exports: 'completions')."""
    anns = [a for a in (task.get("annotations") or task.get("completions") or []) if not a.get("was_cancelled")]
    return anns[-1].get("result") or [] if anns else []


def _ls_task(task: dict, n: int) -> tuple[str, Annotation]:
    name = _ls_image_name(task.get("data"))
    ann = Annotation(normalized=True)
    for k, r in enumerate(_ls_result(task)):
        if r.get("type") != "rectanglelabels":
            continue  # polygons, keypoints, choices: not boxes
        v = r["value"]
        labels = v.get("rectanglelabels") or [""]
        if abs(_number(v.get("rotation", 0), f"task {n} box {k} rotation")) > 1e-6:
            ann.problem = (Reason.ROTATED_BOX, f"box {k} ({labels[0]}) is rotated by {v['rotation']} degrees")
            break
        if "original_width" in r:
            ann.width = int(_number(r["original_width"], f"task {n} original_width"))
            ann.height = int(_number(r["original_height"], f"task {n} original_height"))
        x, y, w, h = (_number(v.get(c), f"task {n} box {k} {c}") / 100 for c in ("x", "y", "width", "height"))
        ann.boxes.append(Box(str(labels[0]), x, y, x + w, y + h))
    return name, ann


def read_labelstudio(path: Path) -> tuple[dict[str, Annotation], tuple[str, str] | None]:
    """Label Studio's JSON export: a list of tasks, each with `data.image` and annotations whose
    `rectanglelabels` results give x, y, width, height in percent of the image."""
    data, problem = _read(path)
    if problem:
        return {}, problem
    try:
        tasks = json.loads(data)
        if not isinstance(tasks, list):
            raise TypeError("not a list of tasks")
        out: dict[str, Annotation] = {}
        for n, task in enumerate(tasks):
            name, ann = _ls_task(task, n)
            out[name] = ann
    except (ValueError, KeyError, TypeError, AttributeError, RecursionError, IndexError) as e:
        return {}, (Reason.BAD_ANNOTATION, f"not a Label Studio JSON export ({type(e).__name__}: {e})")
    return out, None


def sniff(path: Path) -> str:
    """The annotation layout a file is written in, from its content ('' when it is none of them):
    voc and cvat (the XML's root element), coco and labelstudio (the JSON's shape), csv (the header)."""
    data, problem = _read(path)
    if problem or not data:
        return ""
    sniffer = _SNIFFERS.get(Path(path).suffix.lower())
    return sniffer(data) if sniffer else ""


def _sniff_xml(data: bytes) -> str:
    import re

    m = re.search(rb"<\s*([A-Za-z_][\w.-]*)", re.sub(rb"<[?!][^>]*>", b"", data[:4096]))
    return {b"annotation": "voc", b"annotations": "cvat"}.get(m.group(1) if m else b"", "")


def _sniff_csv(data: bytes) -> str:
    head = data[:4096].decode("utf-8-sig", "replace").splitlines()[:1]
    return "csv" if head and set(CSV_COLUMNS) <= {c.strip() for c in head[0].split(",")} else ""


def _sniff_json(data: bytes) -> str:
    try:
        doc = json.loads(data)
    except (ValueError, RecursionError):
        return ""
    if isinstance(doc, dict) and "images" in doc and "categories" in doc:
        return "coco"
    if isinstance(doc, list) and doc and isinstance(doc[0], dict) and "data" in doc[0]:
        return "labelstudio"
    return ""


_SNIFFERS = {".xml": _sniff_xml, ".csv": _sniff_csv, ".json": _sniff_json}


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
