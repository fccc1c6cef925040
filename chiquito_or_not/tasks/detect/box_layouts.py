"""Where a source's boxes are: every common dataset layout, found from the files themselves.

- voc: one XML per image, beside it, in a VOC devkit's `Annotations/` beside `JPEGImages/`, or in any folder,
  matched by stem and by the XML's `<filename>`; `ImageSets/Main/{train,val,test}.txt` give the splits.
- yolo: one txt per image, beside it or in `labels/…` mirroring `images/…`; class names from the recipe,
  `data.yaml` (`names` a list or a mapping; `path`, `train`, `val`, `test` folders or lists) or `classes.txt`.
- coco, csv, cvat, labelstudio: one file for many images (Roboflow: one `_annotations.coco.json` per split
  folder), its entries matched to images by path, then by unique file name.

format = "auto" reads every candidate file's content and takes the one layout it sees; seeing none or
several is one line naming them. Each image ends with its annotation (or None), the split its layout puts it
in ('' when none) and, when two annotations claim it, a problem; each annotation no image took is a stray.
"""

from __future__ import annotations

import os
import re
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from ...core.errors import SourceError
from ...core.files import IMAGE_EXTS, NotRegular, read_regular
from ...core.reasons import Reason
from .box_formats import Annotation, read_coco, read_csv, read_cvat, read_labelstudio, read_voc, read_yolo, sniff

__all__ = ["LAYOUTS", "Pair", "Paired", "pair_source", "split_word"]

LAYOUTS = ("voc", "yolo", "coco", "csv", "cvat", "labelstudio")
TABLES = {"coco": (".json", read_coco), "csv": (".csv", read_csv), "cvat": (".xml", read_cvat)}
TABLES["labelstudio"] = (".json", read_labelstudio)
SPLIT_WORDS = {"train": "train", "training": "train", "val": "valid", "valid": "valid", "validation": "valid"}
SPLIT_WORDS |= {"test": "test", "testing": "test"}
NOT_LABELS = re.compile(r"^(classes|readme.*|license.*|notes?)\.txt$", re.I)
MAX_CONFIG_BYTES = 2**20


@dataclass
class Pair:
    image: object  # data.sources.RawFile
    ann: Annotation | None
    ann_path: str = ""
    split: str = ""  # the split the layout gives this image ('' when it gives none)
    problem: tuple[str, str] | None = None  # (reason, detail) when the image cannot take its annotation


@dataclass
class Paired:
    layout: str
    pairs: list[Pair]
    strays: list[tuple[str, str, str]] = field(default_factory=list)  # (path, annotation file, detail)
    notes: list[str] = field(default_factory=list)
    names: list[str] = field(default_factory=list)  # yolo: the class names in id order the boxes were read with


def split_word(name: str) -> str:
    """'train', 'valid' or 'test' when `name` (a file or folder name) names exactly one split, else ''."""
    words = {SPLIT_WORDS[t] for t in re.findall(r"[a-z]+", name.lower()) if t in SPLIT_WORDS}
    return words.pop() if len(words) == 1 else ""


def _folder_split(path: Path, root: Path) -> str:
    """The split a folder between `root` and `path` is named for (images/train/…, train/images/…)."""
    try:
        parts = Path(path).relative_to(root).parts
    except ValueError:
        return ""
    return next((SPLIT_WORDS[p.lower()] for p in parts if p.lower() in SPLIT_WORDS), "")


def _root(files: list) -> Path:
    parents = [os.path.normpath(f.path.parent) for f in files]
    return Path(os.path.commonpath(parents)) if parents else Path(".")


def _rel(p: Path, root: Path) -> str:
    try:
        return Path(p).relative_to(root).as_posix()
    except ValueError:
        return str(p)


# ---------------------------------------------------------------- which layout


YOLO_CONFIG_NAMES = ("data.yaml", "data.yml", "dataset.yaml", "dataset.yml")


def _is_yolo_config(p: Path, where: str = "") -> bool:
    """A YAML file with `names`; data.yaml itself must parse (any other YAML may be something else)."""
    return bool(_yaml(p, strict=bool(where) and p.name.lower() in YOLO_CONFIG_NAMES, where=where).get("names"))


def _evidence(f, image_stems: set, root: Path) -> str:
    p = f.path
    ext = p.suffix.lower()
    if ext in (".xml", ".json", ".csv"):
        return sniff(p)
    if ext in (".yaml", ".yml"):
        return "yolo" if _is_yolo_config(p) else ""
    if ext == ".txt" and not (p.parent.name == "Main" and p.parent.parent.name == "ImageSets"):
        if p.name == "classes.txt" or (not NOT_LABELS.match(p.name) and "labels" in Path(_rel(p.parent, root)).parts):
            return "yolo"
        return "yolo" if p.with_suffix("") in image_stems and not NOT_LABELS.match(p.name) else ""
    return ""


def _found(files: list, images: list, root: Path) -> dict[str, list[Path]]:
    stems = {f.path.with_suffix("") for f in images}
    found: dict[str, list[Path]] = defaultdict(list)
    for f in files:
        if kind := _evidence(f, stems, root):
            found[kind].append(f.path)
    return found


def _describe(found: dict, root: Path) -> str:
    return ", ".join(
        f"{k} ({len(v)} file{'s' if len(v) > 1 else ''}, e.g. {_rel(sorted(v)[0], root)})"
        for k, v in sorted(found.items())
    )


def _choose(asrc, files: list, images: list, root: Path, where: str) -> str:
    if asrc.format != "auto":
        return asrc.format
    if asrc.annotations:
        p = _find_annotation_file(asrc.annotations, files, where)
        kind = sniff(p) or ("yolo" if _is_yolo_config(p) else "")
        if not kind:
            raise SourceError(f"{where}: {p} is none of the annotation layouts read here; set 'format'")
        return kind
    found = _found(files, images, root)
    if len(found) == 1:
        return next(iter(found))
    if not found:
        raise SourceError(
            f"{where}: no box annotations among the source's {len(files)} files (looked for VOC or CVAT .xml, "
            "COCO or Label Studio .json, YOLO labels/*.txt, data.yaml or classes.txt, the tutorial's .csv); "
            "add them, or set 'format' and 'annotations'"
        )
    raise SourceError(
        f"{where}: format = \"auto\" saw several layouts: {_describe(found, root)}; set 'format' to the one "
        "that holds the boxes"
    )


# ---------------------------------------------------------------- one file per image: VOC


def _voc_image_sets(files: list) -> dict[tuple[str, str], str]:
    """(devkit folder, image id) -> split, from a VOC devkit's ImageSets/Main/{train,val,test}.txt."""
    out: dict[tuple[str, str], str] = {}
    for f in files:
        p = f.path
        if p.suffix == ".txt" and p.parent.name == "Main" and p.parent.parent.name == "ImageSets":
            if p.stem in ("train", "val", "test"):
                devkit = os.path.normpath(p.parent.parent.parent)
                for line in _text(p).splitlines():
                    if line.split():
                        out.setdefault((devkit, line.split()[0]), SPLIT_WORDS[p.stem])
    return out


def _voc_match(f, beside: dict, by_stem: dict, by_filename: dict, anns: dict) -> list[Path]:
    """The XML files that may be image `f`'s: beside it; else of its stem (narrowed by <filename>, then by
    the devkit's JPEGImages/Annotations mirror); else naming it in <filename>."""
    if (p := beside.get(f.path.with_suffix(""))) is not None:
        return [p]
    cands = by_stem.get(f.path.stem, [])
    if len(cands) > 1:
        cands = [p for p in cands if Path(anns[p].filename).name == f.path.name] or cands
    if len(cands) > 1:
        cands = [p for p in cands if p.parent.parent == f.path.parent.parent] or cands
    return cands or by_filename.get(f.path.name, [])


def _voc_pair(pair: Pair, cands: list, anns: dict, used: dict, root: Path) -> None:
    """Give `pair` its one candidate XML file, or the reason it has none (several, or another image's)."""
    if len(cands) > 1:
        pair.problem = (Reason.AMBIGUOUS_ANNOTATION, "several XML files: " + ", ".join(_rel(p, root) for p in cands))
    elif cands and cands[0] in used:
        pair.problem = (Reason.AMBIGUOUS_ANNOTATION, f"{_rel(cands[0], root)} is {used[cands[0]].name}'s already")
    elif cands:
        used[cands[0]] = pair.image.path
        pair.ann, pair.ann_path = anns[cands[0]], str(cands[0])


def _pair_voc(files: list, images: list, root: Path) -> Paired:
    xmls = sorted(f.path for f in files if f.path.suffix.lower() == ".xml")
    anns = {p: read_voc(p) for p in xmls}
    beside = {p.with_suffix(""): p for p in xmls}
    by_stem, by_filename = defaultdict(list), defaultdict(list)
    for p, a in anns.items():
        by_stem[p.stem].append(p)
        if a.filename:
            by_filename[Path(a.filename).name].append(p)
    sets, used, pairs = _voc_image_sets(files), {}, []
    for f in images:
        split = (
            sets.get((os.path.normpath(f.path.parent.parent), f.path.stem), "") if sets else _folder_split(f.path, root)
        )
        pair = Pair(f, None, "", split)
        _voc_pair(pair, _voc_match(f, beside, by_stem, by_filename, anns), anns, used, root)
        pairs.append(pair)
    strays = [
        (str(p), str(p), f"no image named {p.stem}.* or {anns[p].filename or '-'}") for p in xmls if p not in used
    ]
    notes = [f"splits from {len({k[0] for k in sets})} VOC ImageSets/Main folder(s)"] if sets else []
    return Paired("voc", pairs, strays, notes)


# ---------------------------------------------------------------- one file per image: YOLO


def _text(p: Path) -> str:
    try:
        return read_regular(p, MAX_CONFIG_BYTES).decode("utf-8-sig")
    except (NotRegular, OSError, UnicodeDecodeError):
        return ""


def _yaml(p: Path, strict: bool = True, where: str = "") -> dict:
    import yaml

    try:
        doc = yaml.safe_load(read_regular(p, MAX_CONFIG_BYTES))
    except (NotRegular, OSError, yaml.YAMLError, RecursionError, ValueError) as e:
        if strict:
            raise SourceError(f"{where}: {p}: not a readable YAML file ({type(e).__name__}); fix it") from None
        return {}
    return doc if isinstance(doc, dict) else {}


def _names(value, p: Path, where: str) -> list[str]:
    """data.yaml's names: a list, or a mapping of class id to name (gaps stay unnamed)."""
    if isinstance(value, list) and all(isinstance(v, (str, int)) for v in value):
        return [str(v) for v in value]
    if isinstance(value, dict):
        try:
            ids = {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            ids = {}
        if ids and min(ids) >= 0 and max(ids) < 10_000:
            return [ids.get(i, f"class id {i}") for i in range(max(ids) + 1)]
    raise SourceError(f"{where}: {p}: 'names' must be a list of names or a mapping of class id to name")


def _inside(p: str, root: Path) -> bool:
    return p == str(root) or p.startswith(str(root).rstrip(os.sep) + os.sep)


def _yaml_target(entry: str, base: Path, cfg: Path, root: Path, what: str) -> Path:
    """A data.yaml split entry as a path inside the dataset (Roboflow's `../train/images`, written for a
    yaml one folder down, is also tried from the yaml's folder)."""
    if not isinstance(entry, str) or not entry.strip():
        raise SourceError(f"{what} must be a folder or a list file, not {entry!r}")
    tries = [os.path.normpath(base / entry)]
    if entry.startswith("../"):
        tries.append(os.path.normpath(cfg.parent / re.sub(r"^(\.\./)+", "", entry)))
    for t in tries:
        if _inside(t, root) and os.path.exists(t):
            return Path(t)
    if not _inside(tries[0], root):
        raise SourceError(f"{what} = {entry!r} points outside the dataset folder {root}; fix data.yaml")
    raise SourceError(f"{what} = {entry!r}: no such folder or file under {root}; fix data.yaml")


def _yolo_splits(doc: dict, cfg: Path, root: Path, where: str) -> tuple[dict[str, str], set[Path]]:
    """image path (normalised) or folder + os.sep -> split, from data.yaml's train/val/test; the list files."""
    base = doc.get("path") or ""
    base = Path(os.path.normpath(cfg.parent / str(base)))
    if not _inside(str(base), root):
        base = cfg.parent  # an Ultralytics `path` of the machine it was made on: the yaml's folder
    out, lists = {}, set()
    for key, split in (("train", "train"), ("val", "valid"), ("test", "test")):
        entries = doc.get(key) or []
        for entry in entries if isinstance(entries, list) else [entries]:
            t = _yaml_target(entry, base, cfg, root, f"{where}: {cfg} '{key}'")
            if t.is_dir():
                out[str(t) + os.sep] = split
                continue
            lists.add(t)
            for line in _text(t).splitlines():
                if line.strip():
                    out[os.path.normpath(t.parent / line.strip())] = split
    return out, lists


def _yolo_config(files: list, root: Path, where: str) -> tuple[list[str], dict, set]:
    """(class names, split map, list files) from data.yaml (the top-most with `names`) or classes.txt."""
    cfgs = sorted(
        (f.path for f in files if f.path.suffix.lower() in (".yaml", ".yml") and _is_yolo_config(f.path, where)),
        key=lambda p: (len(p.parts), str(p)),
    )
    if cfgs:
        top = [c for c in cfgs if len(c.parts) == len(cfgs[0].parts)]
        if len(top) > 1:
            raise SourceError(
                f"{where}: several YOLO configs ({', '.join(_rel(c, root) for c in top)}); keep one, or name "
                "it in 'annotations'"
            )
        doc = _yaml(cfgs[0], where=where)
        splits, lists = _yolo_splits(doc, cfgs[0], root, where)
        return _names(doc["names"], cfgs[0], where), splits, lists | {cfgs[0]}
    classes = sorted((f.path for f in files if f.path.name == "classes.txt"), key=lambda p: len(p.parts))
    names = [n.strip() for n in _text(classes[0]).splitlines() if n.strip()] if classes else []
    return names, {}, set(classes)


def _yolo_label_paths(p: Path) -> list[Path]:
    """Where image `p`'s label file may be: labels/… mirroring the last images/ folder, then beside it."""
    parts = list(p.parts)
    out = []
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        out.append(Path(*parts[:i], "labels", *parts[i + 1 :]).with_suffix(".txt"))
    return out + [p.with_suffix(".txt")]


def _yaml_split(p: Path, splits: dict) -> str:
    norm = os.path.normpath(p)
    if norm in splits:
        return splits[norm]
    return next((s for d, s in splits.items() if d.endswith(os.sep) and norm.startswith(d)), "")


def _yolo_label_files(files: list, special: set) -> set:
    """The .txt files that may be YOLO labels: not the dataset's config, not a VOC ImageSets list."""
    txts = {
        f.path
        for f in files
        if f.path.suffix.lower() == ".txt" and f.path not in special and not NOT_LABELS.match(f.path.name)
    }
    return txts - {f.path for f in files if f.path.parent.name == "Main" and f.path.parent.parent.name == "ImageSets"}


def _pair_yolo(asrc, files: list, images: list, labels: list[str], root: Path, where: str) -> Paired:
    names, splits, special = _yolo_config(files, root, where)
    names = list(asrc.names or names or labels)
    txts = _yolo_label_files(files, special)
    used, pairs = set(), []
    for f in images:
        split = _yaml_split(f.path, splits) if splits else _folder_split(f.path, root)
        lp = next((c for c in _yolo_label_paths(f.path) if c in txts), None)
        pair = Pair(f, None, "", split)
        if lp is not None and lp in used:
            pair.problem = (Reason.AMBIGUOUS_ANNOTATION, f"{_rel(lp, root)} is another image's already")
        elif lp is not None:
            used.add(lp)
            pair.ann, pair.ann_path = read_yolo(lp, names), str(lp)
        pairs.append(pair)
    strays = [(str(p), str(p), f"no image named {p.stem}.* for it") for p in sorted(txts - used)]
    notes = [f"class ids 0..{len(names) - 1} are {', '.join(names)}"]
    return Paired("yolo", pairs, strays, notes, names)


# ---------------------------------------------------------------- one file for many images


def _find_annotation_file(name: str, files: list, where: str) -> Path:
    """The one-file annotations of a source: a path on disk, or the source file whose path ends with `name`."""
    p = Path(name).expanduser()
    if p.is_absolute() and p.is_file():
        return p
    hits = [f.path for f in files if f.path.as_posix().endswith("/" + name.lstrip("/"))]
    if len(hits) == 1:
        return hits[0]
    if p.is_file():
        return p
    raise SourceError(
        f"{where}: annotations file {name!r} is not among the source's files ({len(hits)} match) "
        "nor on disk; fix 'annotations' (a path relative to the source, or an absolute path)"
    )


class _Images:
    """The images a table may name, by normalised path and by file name."""

    def __init__(self, images: list):
        self.by_path = {os.path.normpath(f.path): f for f in images}
        self.by_name = defaultdict(list)
        for f in images:
            self.by_name[f.path.name].append(f)

    def find(self, name: str, table: Path, layout: str):
        """The image entry `name` of `table` is: its path from the table's folder (or its images/), else
        the one image of that file name, else the one whose path ends with it."""
        for base in (table.parent, table.parent / "images"):
            if (f := self.by_path.get(os.path.normpath(base / name))) is not None:
                return f
        stem = Path(name).name
        cands = self.by_name.get(stem, [])
        if len(cands) > 1:
            cands = [f for f in cands if f.path.as_posix().endswith("/" + name.lstrip("./"))]
        if not cands and layout == "labelstudio":  # an upload's file name has an 8-hex prefix added
            cands = self.by_name.get(re.sub(r"^[0-9a-f]{8}-", "", stem), [])
        return cands[0] if len(cands) == 1 else None


def _table_paths(asrc, layout: str, files: list, where: str) -> list[Path]:
    if asrc.annotations:
        return [_find_annotation_file(asrc.annotations, files, where)]
    ext = TABLES[layout][0]
    return sorted(f.path for f in files if f.path.suffix.lower() == ext and sniff(f.path) == layout)


def _pair_tables(asrc, layout: str, files: list, images: list, root: Path, where: str) -> Paired:
    claimed: dict[Path, Pair] = {}
    strays, paths = [], _table_paths(asrc, layout, files, where)
    for path in paths:
        table, problem = TABLES[layout][1](path)
        if problem:
            raise SourceError(f"{where}: {path}: {problem[0]}: {problem[1]}; fix the file")
        scope = [f for f in images if Path(path).parent in f.path.parents] or images
        index, table_split = _Images(scope), split_word(Path(path).stem) or _folder_split(Path(path).parent, root)
        for name, ann in table.items():
            f = index.find(name, Path(path), layout)
            if f is None:
                strays.append((f"{path}#{name}", str(path), f"{layout} entry {name!r} has no image in the source"))
            elif f.path in claimed:
                other = claimed[f.path]
                other.problem = (Reason.AMBIGUOUS_ANNOTATION, f"named by {other.ann_path} and {path}#{name}")
            else:
                split = SPLIT_WORDS.get(ann.split.lower(), "") or table_split or _folder_split(f.path, root)
                claimed[f.path] = Pair(f, ann, f"{path}#{name}", split)
    pairs = [claimed.get(f.path) or Pair(f, None, "", _folder_split(f.path, root)) for f in images]
    return Paired(layout, pairs, strays, [f"{len(paths)} {layout} file(s)"] if len(paths) > 1 else [])


def pair_source(asrc, files: list, labels: list[str], where: str) -> Paired:
    """Every image of a source with its annotation, in the layout `asrc.format` names or `auto` finds."""
    images = [f for f in files if f.path.suffix.lower() in IMAGE_EXTS]
    root = _root(files)
    layout = _choose(asrc, files, images, root, where)
    if layout == "voc":
        paired = _pair_voc(files, images, root)
    elif layout == "yolo":
        paired = _pair_yolo(asrc, files, images, labels, root, where)
    else:
        paired = _pair_tables(asrc, layout, files, images, root, where)
    if images and not any(p.ann is not None or p.problem for p in paired.pairs) and not paired.strays:
        seen = _found(files, images, root)
        raise SourceError(
            f"{where}: format = {layout!r} but none of the {len(images)} images has a {layout} annotation"
            + (f"; the source holds {_describe(seen, root)}" if seen else "")
            + "; set 'format' (or \"auto\")"
        )
    return paired
