"""Detection's side of the dataset stage: annotated sources → checked boxes → clean images whose boxes moved with
their pixels → train/valid/test by group, each split a folder of images and one COCO annotations.json.

    datasets/NAME/
      manifest.csv      every input image (and stray annotation file): kept or rejected, why, its boxes
      box_problems.csv  every box dropped or that got its image dropped: file, box, reason, detail
      split.csv         split, labels, file, sha256, group
      classes.json      the labels, in the recipe's order (category id = position + 1)
      clean/            decoded RGB JPEGs
      train/ valid/ test/   images/*.jpg + annotations.json (COCO)
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from ...core.errors import DataError
from ...core.files import NotRegular, atomic_write_bytes, atomic_write_text, read_regular, write_csv
from ...core.images import clean_with_boxes
from ...core.layout import DatasetFolder
from ...core.reasons import Reason, Status
from ...data.dataset_parts import DatasetSummary, sample_per_label
from ...data.dedup import near_pairs, unit_hash
from ...data.sources import fetch_source
from ...data.split import SPLITS, split_units
from .box_formats import Annotation, Box, check_boxes
from .box_journal import read_box_journal
from .box_layouts import Pair, pair_source
from .box_postprocess import require_detect_extra
from .box_splits import SPLIT_ANNOTATIONS

__all__ = ["DetRecord", "BoxDataset"]


@dataclass
class DetRecord:
    """What happened to one input image (or one annotation without an image)."""

    source: str
    raw_path: str
    annotation: str = ""
    sha256: str = ""
    status: str = Status.REJECTED
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    boxes: int = 0  # kept
    boxes_dropped: int = 0
    group: str = ""
    given_split: str = ""  # the split the dataset's own layout puts it in ('' when it gives none)
    clean_path: str = ""
    phash: str = ""
    kept_boxes: list = field(default_factory=list, repr=False)  # [label, x0, y0, x1, y1] in clean pixels


def _stored_size(data: bytes) -> tuple[int, int] | None:
    """The size in the file's header (the pixels as stored, before EXIF orientation); None when it cannot be
    read (then clean_with_boxes says why)."""
    from PIL import Image

    try:
        with Image.open(io.BytesIO(data)) as im:
            return im.size
    except Exception:  # noqa: BLE001 - clean_with_boxes reports the exact reason
        return None


def _stray(source: str, raw_path: str, annotation: str, detail: str) -> DetRecord:
    return DetRecord(
        source=source, raw_path=raw_path, annotation=annotation, reason=Reason.ANNOTATION_WITHOUT_IMAGE, detail=detail
    )


def _checked_boxes(rec: DetRecord, rf, ann: Annotation, size, d, problems: list) -> list[Box] | None:
    """The annotation's good boxes against the image's real size (None: the image is rejected, `rec` says
    why); every bad box goes to `problems`."""
    if not size:
        return []  # not an image: clean_with_boxes says why
    w, h = size
    if ann.width is not None and (abs(ann.width - w) > d.size_tolerance or abs(ann.height - h) > d.size_tolerance):
        rec.reason = Reason.SIZE_MISMATCH
        rec.detail = f"annotation says {ann.width}x{ann.height}, the image is {w}x{h}"
        return None
    good, bad = check_boxes(ann, w, h, list(d.labels), d.box_tolerance, d.min_box)
    action = "image dropped" if d.bad_boxes == "drop_image" else "box dropped"
    for i, reason, detail in bad:
        problems.append({"file": str(rf.path), "box": i, "reason": reason, "detail": detail, "action": action})
    rec.boxes_dropped = len(bad)
    if bad and d.bad_boxes == "drop_image":
        rec.reason, rec.detail = bad[0][1], bad[0][2] + (f" (+{len(bad) - 1} more)" if len(bad) > 1 else "")
        return None
    return good


def _read_annotated(rec: DetRecord, rf, ann: Annotation | None) -> bytes | None:
    """The image's bytes when it has a usable annotation (None: rejected, `rec` says why)."""
    if ann is None:
        rec.reason, rec.detail = (
            Reason.NO_ANNOTATION,
            "no annotation for this image; draw its boxes (or an empty annotation for a background image)",
        )
        return None
    if ann.problem:
        rec.reason, rec.detail = ann.problem
        return None
    rec.group = rec.group or ann.group
    try:  # read once, as every stage does: regular files only, a bounded read (a pipe never blocks)
        return read_regular(rf.path)
    except NotRegular as e:
        rec.reason, rec.detail = e.reason, e.detail
    except OSError as e:
        rec.reason, rec.detail = Reason.UNREADABLE, e.strerror or str(e)
    return None


def _clean(pair, recipe, clean_root: Path, problems: list) -> DetRecord:
    """Decode one image, check its boxes against its real size, move them through cleaning."""
    d, spec, rf, ann = recipe.detect, recipe.dataset, pair.image, pair.ann
    rec = DetRecord(
        source=rf.source, raw_path=str(rf.path), annotation=pair.ann_path, group=rf.group, given_split=pair.split
    )
    if pair.problem:
        rec.reason, rec.detail = pair.problem
        return rec
    data = _read_annotated(rec, rf, ann)
    if data is None:
        return rec
    for reason, detail in ann.skipped:
        problems.append({"file": str(rf.path), "box": "", "reason": reason, "detail": detail, "action": "left out"})
    good = _checked_boxes(rec, rf, ann, _stored_size(data), d, problems)
    if good is None:
        return rec
    reason, detail, im, moved = clean_with_boxes(data, spec, [[b.x0, b.y0, b.x1, b.y1] for b in good])
    if reason:
        rec.reason, rec.detail = reason, detail
        return rec
    kept = [
        [b.label, *(round(float(v), 2) for v in m)]
        for b, m in zip(good, moved)
        if m[2] - m[0] >= d.min_box and m[3] - m[1] >= d.min_box
    ]  # a centre crop can cut a box away
    rec.boxes_dropped += len(good) - len(kept)
    if not kept and not d.background_images:
        rec.reason, rec.detail = Reason.NO_BOXES, "no box, and detect.background_images is false"
        return rec
    _keep(rec, data, im, kept, clean_root)
    return rec


def _keep(rec: DetRecord, data: bytes, im, kept: list, clean_root: Path) -> None:
    """Record `rec` kept: its cleaned image written once (named by the raw bytes' hash), its boxes and hash."""
    import imagehash

    rec.sha256 = hashlib.sha256(data).hexdigest()
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    rec.clean_path = f"{rec.sha256[:16]}.jpg"
    if not (clean_root / rec.clean_path).is_file():
        atomic_write_bytes(clean_root / rec.clean_path, buf.getvalue())
    rec.status, rec.width, rec.height, rec.boxes = Status.KEPT, im.width, im.height, len(kept)
    rec.kept_boxes, rec.phash = kept, str(imagehash.phash(im))
    rec.detail = rec.detail or (
        f"{rec.boxes_dropped} box(es) dropped, see box_problems.csv" if rec.boxes_dropped else ""
    )


def _units(kept: list[DetRecord], distance: int) -> dict[int, str]:
    """id(record) -> its split unit's key (data.split.split_units, as classification splits): records
    sharing a named group are one unit; records without one are grouped by near-duplicate clusters."""
    return {id(r): k for r, k in zip(kept, split_units(kept, distance))}


def _assign(kept: list[DetRecord], spec, seed: int) -> dict[int, str]:
    """Split whole units in content-hash order: test, then valid, are filled up to their share (a fraction
    of the images, at least one when non-zero, or a count), the rest is train. Adding images moves few."""
    unit = _units(kept, spec.group_distance)
    keys = sorted(set(unit.values()), key=lambda k: (unit_hash(seed, "split", k), k))
    n, size = len(kept), Counter(unit.values())
    want = {
        s: (int(v) if isinstance(v, int) else max(1 if v else 0, round(v * n)))
        for s, v in (("test", spec.test), ("valid", spec.valid))
    }
    have, split_of = {"test": 0, "valid": 0}, {}
    for k in keys:
        split_of[k] = next((s for s in ("test", "valid") if have[s] < want[s]), "train")
        if split_of[k] != "train":
            have[split_of[k]] += size[k]
    return {id(r): split_of[unit[id(r)]] for r in kept}


def _named_splits(kept: list[DetRecord]) -> list[DetRecord]:
    """The records whose layout names their split; the others are unused, with the reason."""
    for r in kept:
        if not r.given_split:
            r.status, r.reason = Status.UNUSED, Reason.NOT_IN_GIVEN_SPLIT
            r.detail = 'split = "given", and the dataset\'s layout puts this image in no split'
    return [r for r in kept if r.given_split]


def _given(kept: list[DetRecord], spec, seed: int) -> tuple[dict[int, str], list[str]]:
    """split = "given": each image in the split its layout names; one the layout does not name is unused.
    A split the layout lacks (valid; test when dataset.test asks for one) is cut from its train by the
    content-hash rule. Returns (id(record) -> split, the splits so cut)."""
    named = _named_splits(kept)
    have = {r.given_split for r in named}
    cut = [s for s in ("valid", "test") if s not in have and (s == "valid" or spec.test)]
    split_of = {id(r): r.given_split for r in named}
    if cut:
        train = [r for r in named if r.given_split == "train"]
        sub = replace(spec, valid=spec.valid if "valid" in cut else 0, test=spec.test if "test" in cut else 0)
        split_of.update(_assign(train, sub, seed))
    return split_of, cut


def _leaks(by_split: dict, dups: list, distance: int) -> list[dict]:
    """Images in two given splits: the same bytes (`dups`: (rejected copy, kept one)), or near duplicates
    (perceptual hashes within `distance` bits)."""
    out = [
        dict(kind="exact", split_a=k.given_split, file_a=k.raw_path, split_b=r.given_split, file_b=r.raw_path, bits=0)
        for r, k in dups
        if r.given_split and k.given_split and r.given_split != k.given_split
    ]
    recs = [(s, r) for s in SPLITS for r in by_split[s]]
    for i, j, bits in near_pairs([r.phash for _, r in recs], distance):
        (sa, a), (sb, b) = recs[i], recs[j]
        if sa != sb:
            out.append(dict(kind="near", split_a=sa, file_a=a.raw_path, split_b=sb, file_b=b.raw_path, bits=bits))
    return out


def _coco(records: list[DetRecord], labels: list[str], split: str) -> dict:
    images, anns = [], []
    for i, r in enumerate(sorted(records, key=lambda r: r.clean_path), 1):
        images.append(
            {
                "id": i,
                "file_name": f"images/{r.clean_path}",
                "width": r.width,
                "height": r.height,
                "sha256": r.sha256,
                "group": r.group,
                "source": r.raw_path,
            }
        )
        for lab, x0, y0, x1, y1 in r.kept_boxes:
            anns.append(
                {
                    "id": len(anns) + 1,
                    "image_id": i,
                    "category_id": labels.index(lab) + 1,
                    "bbox": [x0, y0, round(x1 - x0, 2), round(y1 - y0, 2)],
                    "area": round((x1 - x0) * (y1 - y0), 2),
                    "iscrowd": 0,
                }
            )
    return {
        "info": {"description": f"chiquito_or_not detection dataset, {split} split"},
        "categories": [{"id": k + 1, "name": lab} for k, lab in enumerate(labels)],
        "images": images,
        "annotations": anns,
    }


class BoxDataset:
    """One detection dataset build (data.dataset_parts.DatasetParts): annotated sources → checked boxes →
    clean images, split by unit, one COCO annotations.json per split. review.csv is classification's:
    a detection review's decisions go to box_labels.csv (box_journal), applied with the label page's."""

    def __init__(self, recipe, folder: DatasetFolder, roots, log, use_review: bool):
        require_detect_extra()
        self.recipe, self.folder, self.roots, self.log = recipe, folder, roots, log
        self.strays: list[DetRecord] = []  # annotations without an image
        self.problems: list[dict] = []  # box_problems.csv
        self.records: list[DetRecord] = []
        self.by_split: dict = {}
        self.dups: list[tuple[DetRecord, DetRecord]] = []  # (rejected copy, the kept one)
        self.leaks: list[dict] = []  # split = "given": images in two splits
        self.cut: list[str] = []  # split = "given": the splits cut from the layout's train
        self.drawn: dict = {}  # sha256 -> Annotation: the boxes drawn in `chiquito label`
        self.drawn_used = 0
        if use_review:
            self.drawn, problems = read_box_journal(folder.box_labels)
            for p in problems:
                log(f"  {folder.box_labels.name}: skipped {p}")

    def gather(self, retry_failed: bool) -> list:
        r, labels, pairs = self.recipe, list(self.recipe.detect.labels), []
        for i, asrc in enumerate(r.detect.sources):
            where = f"{r.path}: detect.sources[{i}]"
            files = fetch_source(asrc.images, f"{where}.images", r.seed, self.log, retry_failed, roots=self.roots)
            paired = pair_source(asrc, files, labels, where)
            strays = [_stray(files[0].source, *s) for s in paired.strays]
            self.log(
                f"  detect.sources[{i}] {asrc.images.kind:<9} {len(paired.pairs):>5} images, {paired.layout} "
                "annotations" + (f", {len(strays)} without image" if strays else "")
            )
            for note in paired.notes:
                self.log(f"    {note}")
            pairs += paired.pairs
            self.strays += strays
        if r.dataset.sample:
            keep = {id(x[1]) for x in sample_per_label([("", p.image) for p in pairs], r.dataset.sample, r.seed)}
            pairs = [p for p in pairs if id(p.image) in keep]
            self.log(f"  sample: at most {r.dataset.sample} input images ({len(pairs)})")
        if not pairs:
            raise DataError(f"{r.path}: the detection sources gave no images; check detect.sources")
        return pairs

    def _drawn(self, pair: Pair) -> Pair:
        """The pair with the boxes drawn for its image in `chiquito label`, when there are some."""
        if not self.drawn:
            return pair
        try:
            sha = hashlib.sha256(read_regular(pair.image.path)).hexdigest()
        except (NotRegular, OSError):
            return pair  # _clean says why
        if (ann := self.drawn.get(sha)) is None:
            return pair
        self.drawn_used += 1
        return Pair(pair.image, ann, f"{self.folder.box_labels}#{sha[:16]}", pair.split)

    def clean(self, pairs: list) -> list:
        pairs = [self._drawn(p) for p in pairs]
        pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
        try:
            cleaned = list(pool.map(lambda p: _clean(p, self.recipe, self.folder.clean, self.problems), pairs))
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
        seen: dict[str, DetRecord] = {}
        for r in cleaned:  # the same bytes twice: the first is kept
            if r.status == Status.KEPT:
                if r.sha256 in seen:
                    r.status, r.reason = Status.REJECTED, Reason.EXACT_DUPLICATE
                    r.detail = f"same bytes as {seen[r.sha256].raw_path}"
                    self.dups.append((r, seen[r.sha256]))
                else:
                    seen[r.sha256] = r
        self.records = cleaned + self.strays
        if not any(r.status == Status.KEPT for r in self.records):
            self.write_manifest(self.records)
            raise DataError(f"no usable image: every input was rejected; see the reasons in {self.folder.manifest}")
        return self.records

    def _missing(self, split: str, records: list) -> list[str]:
        """The labels split `split` lacks: train needs a box of every label, valid and test a box at all."""
        labels = list(self.recipe.detect.labels)
        have = Counter(b[0] for r in records for b in r.kept_boxes)
        return [lab for lab in labels if not have[lab]] if split == "train" else ([] if have else labels)

    def _split_of(self, records: list, kept: list) -> tuple[dict, list]:
        """({id(record): split}, the records that have one): the layout's own splits, or by content hash."""
        spec = self.recipe.dataset
        if spec.split != "given":
            return _assign(kept, spec, self.recipe.seed), kept
        split_of, self.cut = _given(kept, spec, self.recipe.seed)
        kept = [r for r in kept if id(r) in split_of]
        if not kept:
            self.write_manifest(records)
            raise DataError(
                f'split = "given", but the dataset\'s layout names no split for any image; set '
                f'dataset.split = "hash" (see {self.folder.manifest})'
            )
        return split_of, kept

    def _every_label_in_each_split(self, records: list, by_split: dict) -> None:
        for s in ("train", "valid") + (("test",) if self.recipe.dataset.test else ()):
            if missing := self._missing(s, by_split[s]):
                self.write_manifest(records)
                raise DataError(
                    f"split '{s}' has no box of label {', '.join(missing)} ({len(by_split[s])} images); "
                    f"add images, or change 'dataset.{s if s != 'train' else 'valid'}' in the recipe"
                )

    def split(self, records: list) -> list[dict]:
        spec = self.recipe.dataset
        split_of, kept = self._split_of(records, [r for r in records if r.status == Status.KEPT])
        by_split = self.by_split = {s: [r for r in kept if split_of[id(r)] == s] for s in SPLITS}
        if spec.split == "given":
            self.leaks = _leaks(by_split, self.dups, spec.near_duplicate_distance)
        self._every_label_in_each_split(records, by_split)
        return [
            dict(
                split=s,
                label="+".join(sorted({b[0] for b in r.kept_boxes})) or "(background)",
                file=f"{s}/images/{r.clean_path}",
                sha256=r.sha256,
                group=r.group or r.sha256[:16],
                clean_path=r.clean_path,
            )
            for s in SPLITS
            for r in sorted(by_split[s], key=lambda r: r.clean_path)
        ]

    def write_manifest(self, records: list) -> None:
        columns = [k for k in DetRecord.__dataclass_fields__ if k != "kept_boxes"]
        write_csv(
            self.folder.manifest, [{k: v for k, v in asdict(r).items() if k != "kept_boxes"} for r in records], columns
        )
        write_csv(self.folder.root / "box_problems.csv", self.problems, ["file", "box", "reason", "detail", "action"])
        if self.recipe.dataset.split == "given":
            write_csv(
                self.folder.root / "leaks.csv", self.leaks, ["kind", "split_a", "file_a", "split_b", "file_b", "bits"]
            )

    def write_split_files(self, rows: list[dict]) -> None:
        labels = list(self.recipe.detect.labels)
        for s in SPLITS:
            if self.by_split[s]:
                atomic_write_text(
                    self.folder.root / s / SPLIT_ANNOTATIONS, json.dumps(_coco(self.by_split[s], labels, s)) + "\n"
                )

    def labels(self) -> list[str]:
        return list(self.recipe.detect.labels)

    def summary(self, records: list, rows: list[dict], changes: dict) -> DatasetSummary:
        by_split = self.by_split
        counts = {s: dict(Counter(b[0] for r in by_split[s] for b in r.kept_boxes)) for s in SPLITS if by_split[s]}
        for s in counts:
            counts[s]["images"] = len(by_split[s])
        bad = Counter(p["reason"] for p in self.problems)
        return DatasetSummary(
            root=self.folder.root,
            inputs=len(records),
            kept=sum(1 for r in records if r.status in (Status.KEPT, Status.UNUSED)),
            rejected=Counter(r.reason for r in records if r.status == Status.REJECTED),
            unused=Counter(r.reason for r in records if r.status == Status.UNUSED),
            counts=counts,
            changes=changes,
            notes=[f"bad box  {n:>5}  {reason}  (box_problems.csv)" for reason, n in bad.most_common()]
            + self._split_notes(),
        )

    def _split_notes(self) -> list[str]:
        drawn = [
            f"drawn    {self.drawn_used:>5}  image(s) with boxes from {self.folder.box_labels.name} (chiquito label)"
        ]
        if self.recipe.dataset.split != "given":
            return drawn if self.drawn_used else []
        kinds = Counter(x["kind"] for x in self.leaks)
        notes = [
            "split    given: the dataset's own splits"
            + (f"; {', '.join(self.cut)} cut from its train" if self.cut else "")
        ]
        if self.leaks:
            notes.append(
                f"leak     {kinds['exact']} exact and {kinds['near']} near-duplicate image pair(s) across the given "
                "splits (leaks.csv): a test score on them is optimistic"
            )
        return (drawn if self.drawn_used else []) + notes
