"""The dataset stage: sources → raw → clean → train/valid/test folders, with manifests."""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from .clean import Record, clean_files, drop_near_duplicates
from .faces import crop_faces
from ..core.errors import DataError
from ..core.files import atomic_write_text, write_csv
from ..core.layout import DatasetFolder
from ..core.paths import dataset_dir
from ..core.reasons import Reason, Status, UNUSED_DETAIL
from ..core.recipe import Recipe, write_resolved
from ..tasks import get_task
from .sources import fetch_face_detector, fetch_source
from .review import apply_review, read_decisions
from .split import SPLITS, assign_splits, materialize

__all__ = ["DatasetSummary", "build_dataset", "build_class_dataset"]


@dataclass
class DatasetSummary:
    """What `dataset` did, for the CLI to print."""
    root: Path
    inputs: int = 0
    kept: int = 0
    rejected: Counter = field(default_factory=Counter)
    counts: dict = field(default_factory=dict)  # split -> label -> n
    changes: dict = field(default_factory=dict)
    unused: Counter = field(default_factory=Counter)  # kept (clean) but left out of the splits, by reason
    box_problems: Counter = field(default_factory=Counter)  # detection: boxes dropped (or dropping their image)
    review: dict = field(default_factory=dict)  # review.csv applied: excluded / relabelled counts, problems


def _class_folders(recipe: Recipe) -> dict:
    """Classes from `class_folders`: one folder source per sub-folder."""
    from ..core.errors import SourceError
    from ..core.recipe import ClassSpec, FolderSource

    cf = recipe.class_folders
    if not cf.path:
        return {}
    top = Path(cf.path).expanduser()
    if not top.is_dir():
        raise SourceError(f"{recipe.path}: class_folders.path {str(top)!r} does not exist; put one sub-folder "
                          "per class there (e.g. Kaggle's simpsons_dataset), or fix the path")
    return {d.name: ClassSpec(sources=(FolderSource(path=str(d), include=cf.include, exclude=cf.exclude),))
            for d in sorted(top.iterdir()) if d.is_dir() and not d.name.startswith(".")}


def _drop_small_classes(recs: list, minimum: int) -> dict[str, int]:
    """Reject every image of a class with fewer than `minimum` kept images; returns {class: count}."""
    kept = Counter(r.label for r in recs if r.status == Status.KEPT)
    small = {lab: n for lab, n in kept.items() if n < minimum}
    for r in recs:
        if r.label in small and r.status == Status.KEPT:
            r.status, r.reason = Status.REJECTED, Reason.CLASS_BELOW_MIN_IMAGES
            r.detail = f"class {r.label!r} has {small[r.label]} clean images < {minimum}"
    return small


def _sample(raw: list, n: int, seed: int) -> list:
    """At most n (label, file) pairs per label, the same ones on every run with this seed."""
    import hashlib

    def rank(item):
        return hashlib.sha256(f"{seed}:{item[1].source}:{item[1].path.name}".encode()).hexdigest()
    out = []
    for label in sorted({lab for lab, _ in raw}):
        out += sorted((x for x in raw if x[0] == label), key=rank)[:n]
    return out


def _fetch(label: str, src, where: str, seed: int, log, retry_failed: bool = False) -> list:
    files = fetch_source(src, where, seed, log, retry_failed)
    if src.kind == "composite":  # a class of composites: the images; the boxes beside them are detection's
        files = [f for f in files if f.path.suffix.lower() != ".xml"]
    log(f"  {label:<12} {src.kind:<7} {len(files):>5} files  ({files[0].source if files else 'none'})")
    return [(label, f) for f in files]


def build_dataset(recipe: Recipe, root: Path | None = None, log=print, retry_failed: bool = False,
                  use_review: bool = True) -> DatasetSummary:
    """Fetch, clean and split the recipe's images into `root` (default: the data root) the way its task
    reads them; `retry_failed` fetches again the downloads that failed for reasons that may pass;
    `use_review` applies the decisions in `root/review.csv` (chiquito review)."""
    root = Path(root) if root else dataset_dir(recipe.name)
    return get_task(recipe.task).build_dataset(recipe, root, log, retry_failed, use_review)


def build_class_dataset(recipe: Recipe, root: Path, log=print, retry_failed: bool = False,
                        use_review: bool = True) -> DatasetSummary:
    """Classification: one folder per class; cleaned, de-duplicated, balanced, split per class."""
    folder = DatasetFolder(root)
    decisions, problems = {}, []
    if use_review:  # read first: a review file that is not one stops the stage before anything is written
        decisions, problems = read_decisions(folder.review)
    specs = {**_class_folders(recipe), **recipe.classes}
    raw, deferred = [], []
    for label in sorted(specs):
        for i, src in enumerate(specs[label].sources):
            where = f"{recipe.path}: classes.{label}.sources[{i}]"
            if src.kind == "lfw" and src.count == 0:  # "as many as the positives": known after cleaning
                deferred.append((label, where, src))
                continue
            raw += _fetch(label, src, where, recipe.seed, log, retry_failed)
    if recipe.dataset.sample:
        raw = _sample(raw, recipe.dataset.sample, recipe.seed)
        log(f"  sample: at most {recipe.dataset.sample} input files per class ({len(raw)} in all)")

    recs: list[Record] = clean_files(raw, recipe.dataset, folder.clean)
    if deferred:
        kept = Counter(r.label for r in recs if r.status == Status.KEPT)
        n = max(kept.values(), default=0)
        if not n:
            raise DataError(f"{recipe.path}: an lfw source with count = 0 takes as many images as the other "
                            "classes have, and they have none; fix their sources or set 'count'")
        for label, where, src in deferred:
            raw += _fetch(label, replace(src, count=n), where, recipe.seed, log)
        recs = clean_files(raw, recipe.dataset, folder.clean)  # cached: the first files are not decoded again
        for label, _, _ in deferred:
            got = sum(1 for r in recs if r.label == label and r.status == Status.KEPT)
            if got < n:
                log(f"  {label}: {got} clean of the {n} asked for (count = 0: as many as the largest other "
                    f"class); cleaning rejected {n - got}, see manifest.csv")
    for label in sorted(specs):
        if not any(r.label == label for r in recs):
            raise DataError(f"class {label!r} has no input files; check its sources in {recipe.path}")
    if recipe.dataset.faces.detector:  # the same detector and crop for every class that uses faces
        recs = crop_faces(recs, recipe.dataset.faces, {lab for lab in specs if specs[lab].faces}, folder.clean, log,
                          weights=fetch_face_detector(recipe.dataset.faces.detector))
        drop_near_duplicates([r for r in recs if r.box], recipe.dataset.near_duplicate_distance)
    dropped = _drop_small_classes(recs, recipe.dataset.min_images_per_class)
    for label, n in dropped.items():
        log(f"  dropped class {label!r}: {n} clean images < min_images_per_class "
            f"{recipe.dataset.min_images_per_class}")
    classes = sorted(set(specs) - set(dropped))
    if len(classes) < 2:
        raise DataError(f"only {len(classes)} class(es) left after dropping small ones; lower "
                        "'dataset.min_images_per_class' or add images")
    kept = [r for r in recs if r.status == Status.KEPT]
    for label in classes:
        if not any(r.label == label for r in kept):
            write_csv(folder.manifest, [asdict(r) for r in recs], list(Record.__dataclass_fields__))
            raise DataError(f"class {label!r} has no usable image after cleaning; "
                            f"see the reasons in {folder.manifest}")
    unused: dict = {}
    rows = assign_splits(kept, recipe.dataset, recipe.seed, unused)  # per class (the record's label)
    # the review's decisions apply to the split made on the sources' labels: no other image moves
    for d in [d for d in decisions.values() if d.decision == "relabel" and d.label not in classes]:
        problems.append(f"{d.sha256[:12]}: relabel to {d.label!r}, not a class of this dataset")
        del decisions[d.sha256]
    review = apply_review(rows, recs, decisions)
    rows.sort(key=lambda x: (SPLITS.index(x["split"]), x["label"], x["file"]))
    for r in kept:  # the manifest says which clean images the splits left out, and why
        if r.clean_path in unused:
            r.status, r.reason = Status.UNUSED, unused[r.clean_path]
            r.detail = UNUSED_DETAIL[r.reason].format(per_class=recipe.dataset.per_class, train=recipe.dataset.train)
    write_csv(folder.manifest, [asdict(r) for r in recs], list(Record.__dataclass_fields__))
    write_csv(folder.split_csv, rows, ["split", "label", "file", "sha256", "group"])
    changes = materialize(rows, folder.clean, root)
    write_resolved(recipe, root)
    atomic_write_text(folder.classes, json.dumps(classes) + "\n")

    counts: dict = {}
    for r in rows:
        counts.setdefault(r["split"], Counter())[r["label"]] += 1
    return DatasetSummary(root=root, inputs=len(recs), kept=len(kept) - review["excluded"],
                          rejected=Counter(r.reason for r in recs if r.status == Status.REJECTED),
                          unused=Counter(r.reason for r in recs if r.status == Status.UNUSED),
                          counts={s: dict(c) for s, c in counts.items()}, changes=changes,
                          review={**review, "problems": problems} if decisions or problems else {})
