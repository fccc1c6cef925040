"""Split: balance the classes and place each image in train/valid/test from the seed and its content."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.errors import DataError
from ..core.reasons import Reason
from .clean import Record
from .dedup import near_duplicate_clusters, unit_hash

if TYPE_CHECKING:  # annotations only: the schema is not needed to run
    from ..core.recipe import DatasetSpec

__all__ = ["SPLITS", "assign_splits", "split_units", "materialize"]

SPLITS = ("train", "valid", "test")


def _balanced(kept: list[Record], spec: DatasetSpec, seed: int, unused: dict, key) -> dict[str, list]:
    """label → its images that take part, lowest content hash first (adding images rarely changes the
    pick); the others go to `unused` with the reason (balancing or the per-class cap)."""
    labels = sorted({key(r) for r in kept})
    by_label = {
        lab: sorted((r for r in kept if key(r) == lab), key=lambda r: unit_hash(seed, "keep", r.sha256))
        for lab in labels
    }
    target = min(len(v) for v in by_label.values()) if spec.balance == "downsample" else None
    if spec.per_class:
        target = min(target or spec.per_class, spec.per_class)
    if target is None:
        return by_label
    why = Reason.PER_CLASS_CAP if spec.per_class and target == spec.per_class else Reason.BALANCED_OUT
    for v in by_label.values():
        for r in v[target:]:
            unused[r.clean_path] = why
    return {lab: v[:target] for lab, v in by_label.items()}


def _place_by_fraction(rs: list, spec: DatasetSpec, seed: int, key_of: dict, split_of: dict) -> None:
    """Fractions: each unit's hash alone decides its split, so adding images moves none of the others."""
    for r in rs:
        u = unit_hash(seed, "split", key_of[id(r)])
        split_of[id(r)] = "test" if u < spec.test else "valid" if u < spec.test + spec.valid else "train"


def _place_by_count(rs: list, spec: DatasetSpec, key_of: dict, split_of: dict) -> None:
    """Counts per class: whole units are placed in hash order until each count is reached."""
    n = len(rs)
    want = {
        s: (int(v) if isinstance(v, int) else round(v * n)) for s, v in (("test", spec.test), ("valid", spec.valid))
    }
    have = {"test": 0, "valid": 0}
    placed: dict[str, str] = {}
    for r in rs:
        k = key_of[id(r)]
        if k not in placed:
            placed[k] = next((s for s in ("test", "valid") if have[s] < want[s]), "train")
        split_of[id(r)] = placed[k]
        if placed[k] != "train":
            have[placed[k]] += 1


def _rows(by_label: dict, spec: DatasetSpec, seed: int, key_of: dict, split_of: dict, unused: dict) -> list[dict]:
    """split.csv's rows; train images past the recipe's `train` cap per class go to `unused`."""
    rows = []
    for lab, rs in by_label.items():
        train_seen = 0
        for r in sorted(rs, key=lambda r: unit_hash(seed, "split", key_of[id(r)])):
            s = split_of[id(r)]
            if s == "train":
                train_seen += 1
                if spec.train and train_seen > spec.train:
                    unused[r.clean_path] = Reason.TRAIN_CAP
                    continue  # the recipe caps train images per class
            rows.append(
                dict(
                    split=s,
                    label=lab,
                    file=f"{s}/{r.clean_path}",
                    sha256=r.sha256,
                    group=key_of[id(r)][:16],
                    clean_path=r.clean_path,
                )
            )
    return rows


def assign_splits(
    kept: list[Record],
    spec: DatasetSpec,
    seed: int,
    unused: dict | None = None,
    key=lambda r: r.label,
    given: dict[str, str] | None = None,
) -> list[dict]:
    """Rows (split, label, clean_path, sha256, group) for the images that take part in the dataset;
    `unused` gets clean_path -> reason for each kept image left out (balancing, per_class, train caps).
    `key` is what is balanced and stratified on (default: the class); `given`: clean_path → the split its
    source gives it, kept as it is (dataset.split = "given")."""
    unused = {} if unused is None else unused
    by_label = _balanced(kept, spec, seed, unused, key)
    chosen = [r for rs in by_label.values() for r in rs]
    # near-duplicate groups stay in one split: the group's key (its smallest sha) decides for all
    key_of = {id(r): k for r, k in zip(chosen, split_units(chosen, spec.group_distance))}
    split_of: dict[int, str] = {}
    for rs in by_label.values():
        rs = sorted(rs, key=lambda r: (unit_hash(seed, "split", key_of[id(r)]), r.sha256))
        if given is not None:
            split_of |= {id(r): given.get(r.clean_path) or "train" for r in rs}
        elif isinstance(spec.valid, float) and isinstance(spec.test, float):
            _place_by_fraction(rs, spec, seed, key_of, split_of)
        else:
            _place_by_count(rs, spec, key_of, split_of)
    rows = _rows(by_label, spec, seed, key_of, split_of, unused)
    _every_class_in_each_split(rows, list(by_label), spec, given is not None)
    return sorted(rows, key=lambda x: (SPLITS.index(x["split"]), x["label"], x["file"]))


def _every_class_in_each_split(rows: list[dict], labels: list, spec: DatasetSpec, given: bool = False) -> None:
    has_test = any(x["split"] == "test" for x in rows) if given else spec.test
    for s in ("train", "valid") + (("test",) if has_test else ()):
        missing = [lab for lab in labels if not any(x["split"] == s and x["label"] == lab for x in rows)]
        if missing and given:
            raise DataError(
                f"the given split '{s}' has no image of class {', '.join(missing)}; add pictures to its "
                f'{s}/{missing[0]}/ folder, or remove dataset.split = "given" to split by content hash'
            )
        if missing:
            raise DataError(
                f"split '{s}' has no image of class {', '.join(missing)}; add images, "
                f"or change 'dataset.{s if s != 'train' else 'valid'}' in the recipe"
            )


def split_units(recs: list, distance: int) -> list[str]:
    """The unit key of each record (its unit's smallest sha256), each unit kept in one split, for both
    tasks: images a source says belong together (a composite's group: the same cut-outs, e.g. people,
    pasted into several scenes) are one unit; the others are linked by near-duplicate hashes (phash within
    `distance`; composites are not: sharing a scene would chain every group into one); then every crop
    cut from one source image joins its source's unit."""
    from scipy.cluster.hierarchy import DisjointSet

    n = len(recs)
    units = DisjointSet(range(n))
    first: dict[tuple, int] = {}
    loose = [i for i, r in enumerate(recs) if not getattr(r, "group", "")]
    for i, c in zip(loose, near_duplicate_clusters([recs[i].phash for i in loose], distance)):
        units.merge(i, first.setdefault(("near", c), i))
    for i, r in enumerate(recs):
        for k in (
            ("group", r.source, getattr(r, "label", ""), getattr(r, "group", "")),
            ("crop", getattr(r, "source_sha256", "")),
        ):
            if k[-1]:
                units.merge(i, first.setdefault(k, i))
    key: dict[int, str] = {}
    for members in units.subsets():
        key.update(dict.fromkeys(members, min(recs[i].sha256 for i in members)))
    return [key[i] for i in range(n)]


def _link(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)
    except OSError:  # another filesystem, or links not allowed
        shutil.copyfile(src, dst)


def materialize(rows: list[dict], clean_root: Path, out_root: Path) -> dict[str, int]:
    """Make `out_root/<split>/<label>/` hold exactly the rows' files; returns counts added/removed."""
    wanted = {out_root / r["file"]: clean_root / r["clean_path"] for r in rows}
    removed = 0
    for s in SPLITS:
        d = out_root / s
        if d.is_dir():
            for p in sorted(d.rglob("*")):
                if p.is_file() and p not in wanted:
                    p.unlink()
                    removed += 1
            for p in sorted(d.rglob("*"), reverse=True):  # drop class folders left empty
                if p.is_dir() and not any(p.iterdir()):
                    p.rmdir()
            if not any(d.iterdir()):
                d.rmdir()
    added = 0
    for dst, src in wanted.items():
        if not dst.is_file():
            _link(src, dst)
            added += 1
    return {"added": added, "removed": removed}
