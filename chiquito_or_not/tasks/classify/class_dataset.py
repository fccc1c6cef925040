"""Classification's side of the dataset stage: a label is a class, each class's sources are fetched,
cleaned, de-duplicated (face-cropped when the recipe asks), balanced and split per class; review.csv's
decisions are applied after the split."""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, replace
from pathlib import Path

from ...core.errors import DataError, SourceError
from ...core.files import write_csv
from ...core.reasons import UNUSED_DETAIL, Reason, Status
from ...core.recipe import FolderSource, Recipe
from ...data.clean import Record, clean_files, drop_near_duplicates
from ...data.dataset_parts import DatasetSummary, sample_per_label
from ...data.face_crops import crop_faces
from ...data.review_log import apply_review, read_decisions
from ...data.sources import fetch_face_detector, fetch_source
from ...data.split import SPLITS, assign_splits
from .class_recipe import ClassSpec

__all__ = ["ClassDataset"]


def _class_folders(recipe: Recipe) -> dict:
    """Classes from `class_folders`: one folder source per sub-folder."""
    cf = recipe.class_folders
    if not cf.path:
        return {}
    top = Path(cf.path).expanduser()
    if not top.is_dir():
        raise SourceError(
            f"{recipe.path}: class_folders.path {str(top)!r} does not exist; put one sub-folder "
            "per class there (e.g. Kaggle's simpsons_dataset), or fix the path"
        )
    return {
        d.name: ClassSpec(sources=(FolderSource(path=str(d), include=cf.include, exclude=cf.exclude),))
        for d in sorted(top.iterdir())
        if d.is_dir() and not d.name.startswith(".")
    }


def _drop_small_classes(recs: list, minimum: int) -> dict[str, int]:
    """Reject every image of a class with fewer than `minimum` kept images; returns {class: count}."""
    kept = Counter(r.label for r in recs if r.status == Status.KEPT)
    small = {lab: n for lab, n in kept.items() if n < minimum}
    for r in recs:
        if r.label in small and r.status == Status.KEPT:
            r.status, r.reason = Status.REJECTED, Reason.CLASS_BELOW_MIN_IMAGES
            r.detail = f"class {r.label!r} has {small[r.label]} clean images < {minimum}"
    return small


def _fetch(label: str, src, where: str, seed: int, log, roots, retry_failed: bool = False) -> list:
    files = fetch_source(src, where, seed, log, retry_failed, roots=roots)
    if src.kind == "composite":  # a class of composites: the images; the boxes beside them are detection's
        files = [f for f in files if f.path.suffix.lower() != ".xml"]
    log(f"  {label:<12} {src.kind:<7} {len(files):>5} files  ({files[0].source if files else 'none'})")
    return [(label, f) for f in files]


class ClassDataset:
    """One classification dataset build (data.dataset_parts.DatasetParts)."""

    def __init__(self, recipe: Recipe, folder, roots, log, use_review: bool):
        self.recipe, self.folder, self.roots, self.log = recipe, folder, roots, log
        self.decisions, self.problems = {}, []
        if use_review:  # read first: a review file that is not one stops the stage before anything is written
            self.decisions, self.problems = read_decisions(folder.review)
        self.specs = {**_class_folders(recipe), **recipe.classes}
        self.deferred: list = []
        self.classes: list[str] = []
        self.review: dict = {}
        self.n_kept = 0
        self.face_weights = None  # BlazeFace's file, fetched first thing in gather
        self.given: dict[str, str] = {}  # raw path → the split its folder source gives (dataset.split = "given")

    def gather(self, retry_failed: bool) -> list:
        r, raw = self.recipe, []
        if r.dataset.faces.detector:  # before the long downloads: a missing face detector is found first
            self.face_weights = fetch_face_detector(r.dataset.faces.detector, self.roots, log=self.log)
        for label in sorted(self.specs):
            for i, src in enumerate(self.specs[label].sources):
                where = f"{r.path}: classes.{label}.sources[{i}]"
                if src.kind == "lfw" and src.count == 0:  # "as many as the positives": known after cleaning
                    self.deferred.append((label, where, src))
                    continue
                raw += _fetch(label, src, where, r.seed, self.log, self.roots, retry_failed)
        if r.dataset.sample:
            raw = sample_per_label(raw, r.dataset.sample, r.seed)
            self.log(f"  sample: at most {r.dataset.sample} input files per class ({len(raw)} in all)")
        self.given = {str(f.path): f.split for _, f in raw if f.split}
        return raw

    def _fill_deferred(self, raw: list, recs: list) -> list:
        """The lfw sources with count = 0, as many as the largest other class has clean images."""
        kept = Counter(r.label for r in recs if r.status == Status.KEPT)
        n = max(kept.values(), default=0)
        if not n:  # say what the other classes lack first: that is what to fix, not the lfw count
            self._nothing_to_match(raw)
        fetched = Counter()
        for label, where, src in self.deferred:
            more = _fetch(label, replace(src, count=n), where, self.recipe.seed, self.log, self.roots)
            fetched[label] += len(more)
            raw += more
        recs = clean_files(raw, self.recipe.dataset, self.folder.clean)  # cached: the first files are not decoded again
        for label, _, _ in self.deferred:
            got = sum(1 for r in recs if r.label == label and r.status == Status.KEPT)
            if got < n:
                self._say_short(label, got, n, fetched[label])
        return recs

    def _nothing_to_match(self, raw: list) -> None:
        others = sorted({lab for lab in self.specs} - {lab for lab, _, _ in self.deferred})
        got = Counter(label for label, _ in raw)
        why = ", ".join(
            f"{lab}: {got[lab]} input file(s), none clean" if got[lab] else f"{lab}: no input file" for lab in others
        )
        raise DataError(
            f"{self.recipe.path}: no clean image in the other classes ({why}), so the lfw source with "
            "count = 0 has nothing to match; fix those sources (a failed download says why above and is "
            "retried by `--retry-failed`, or by itself once a changed `proxy`/`verify` fixes it)"
        )

    def _say_short(self, label: str, got: int, n: int, fetched: int) -> None:
        short = [f"{n - fetched} more than the source holds"] if fetched < n else []
        rejected = fetched - got
        why = short + ([f"cleaning rejected {rejected}, see manifest.csv"] if rejected > 0 else [])
        self.log(
            f"  {label}: {got} clean of the {n} asked for (count = 0: as many as the largest other "
            f"class); {', '.join(why) or 'see manifest.csv'}"
        )

    def clean(self, raw: list) -> list:
        spec, specs = self.recipe.dataset, self.specs
        recs: list[Record] = clean_files(raw, spec, self.folder.clean)
        if self.deferred:
            recs = self._fill_deferred(raw, recs)
        for label in sorted(specs):
            if not any(r.label == label for r in recs):
                raise DataError(f"class {label!r} has no input files; check its sources in {self.recipe.path}")
        if spec.faces.detector:  # the same detector and crop for every class that uses faces
            recs = crop_faces(
                recs,
                spec.faces,
                {lab for lab in specs if specs[lab].faces},
                self.folder.clean,
                self.log,
                weights=self.face_weights or fetch_face_detector(spec.faces.detector, self.roots, log=self.log),
            )
            drop_near_duplicates([r for r in recs if r.box], spec.near_duplicate_distance)
        self._keep_classes(recs)
        return recs

    def _keep_classes(self, recs: list) -> None:
        """The classes with enough clean images (min_images_per_class); refused when fewer than two are left."""
        spec = self.recipe.dataset
        dropped = _drop_small_classes(recs, spec.min_images_per_class)
        for label, n in dropped.items():
            self.log(f"  dropped class {label!r}: {n} clean images < min_images_per_class {spec.min_images_per_class}")
        self.classes = sorted(set(self.specs) - set(dropped))
        if len(self.classes) < 2:
            raise DataError(
                f"only {len(self.classes)} class(es) left after dropping small ones; lower "
                "'dataset.min_images_per_class' or add images"
            )
        kept = [r for r in recs if r.status == Status.KEPT]
        for label in self.classes:
            if not any(r.label == label for r in kept):
                self.write_manifest(recs)
                raise DataError(
                    f"class {label!r} has no usable image after cleaning; see the reasons in {self.folder.manifest}"
                )

    def split(self, recs: list) -> list[dict]:
        spec = self.recipe.dataset
        kept = [r for r in recs if r.status == Status.KEPT]
        self.n_kept = len(kept)
        unused: dict = {}
        given = {r.clean_path: self.given.get(r.raw_path, "") for r in kept} if spec.split == "given" else None
        rows = assign_splits(kept, spec, self.recipe.seed, unused, given=given)  # per class (the record's label)
        # the review's decisions apply to the split made on the sources' labels: no other image moves
        for d in [d for d in self.decisions.values() if d.decision == "relabel" and d.label not in self.classes]:
            self.problems.append(f"{d.sha256[:12]}: relabel to {d.label!r}, not a class of this dataset")
            del self.decisions[d.sha256]
        self.review = apply_review(rows, recs, self.decisions)
        rows.sort(key=lambda x: (SPLITS.index(x["split"]), x["label"], x["file"]))
        for r in kept:  # the manifest says which clean images the splits left out, and why
            if r.clean_path in unused:
                r.status, r.reason = Status.UNUSED, unused[r.clean_path]
                r.detail = UNUSED_DETAIL[r.reason].format(per_class=spec.per_class, train=spec.train)
        return rows

    def write_manifest(self, recs: list) -> None:
        write_csv(self.folder.manifest, [asdict(r) for r in recs], list(Record.__dataclass_fields__))

    def write_split_files(self, rows: list[dict]) -> None:
        """A class split is its images, one folder per class: nothing beside them."""

    def labels(self) -> list[str]:
        return self.classes

    def summary(self, recs: list, rows: list[dict], changes: dict) -> DatasetSummary:
        counts: dict = {}
        for r in rows:
            counts.setdefault(r["split"], Counter())[r["label"]] += 1
        review = self.review
        return DatasetSummary(
            root=self.folder.root,
            inputs=len(recs),
            kept=self.n_kept - review["excluded"],
            rejected=Counter(r.reason for r in recs if r.status == Status.REJECTED),
            unused=Counter(r.reason for r in recs if r.status == Status.UNUSED),
            counts={s: dict(c) for s, c in counts.items()},
            changes=changes,
            review={**review, "problems": self.problems} if self.decisions or self.problems else {},
        )
