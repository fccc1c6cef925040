"""Clean: decode every raw image fully, reject what cannot be trained on, normalise the rest to RGB."""

from __future__ import annotations

import hashlib
import io
import json
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from ..core.files import NotRegular, atomic_write_bytes, atomic_write_text, read_regular
from ..core.images import clean_one
from ..core.reasons import Reason, Status
from .dedup import near_duplicate_clusters

if TYPE_CHECKING:  # annotations only: the schema is not needed to run
    from ..core.recipe import DatasetSpec

__all__ = ["Record", "clean_files", "drop_near_duplicates"]

# Bump when the cleaning code changes what it writes, so cached results are recomputed.
CLEAN_VERSION = 1


@dataclass
class Record:
    """What happened to one raw input."""

    label: str
    source: str
    raw_path: str
    sha256: str = ""
    status: str = Status.REJECTED  # or KEPT, or (set by the dataset stage) UNUSED
    reason: str = ""  # a core.reasons.Reason
    detail: str = ""
    width: int = 0
    height: int = 0
    phash: str = ""
    clean_path: str = ""
    box: str = ""  # a face crop: the square cut from the cleaned source image (x0 y0 x1 y1, its pixels)
    source_sha256: str = ""  # a face crop: the sha256 of the raw image it was cut from
    group: str = ""  # the unit its source keeps in one split (a composite's group of cut-outs), if any


def _clean_params(spec: DatasetSpec) -> str:
    keys = dict(
        v=CLEAN_VERSION,
        min_size=spec.min_size,
        max_pixels=spec.max_pixels,
        max_side=spec.max_side,
        formats=list(spec.formats),
        background=list(spec.background),
        center_crop=spec.center_crop,
    )
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _process(rec: Record, spec: DatasetSpec, clean_root: Path, cache: dict) -> Record:
    import imagehash

    if rec.reason:  # it never arrived (a failed URL): rejected as its source said
        return rec
    try:  # read once: the same bytes are hashed and decoded
        data = read_regular(Path(rec.raw_path))
    except NotRegular as e:
        rec.reason, rec.detail = e.reason, e.detail
        return rec
    except OSError as e:
        rec.reason, rec.detail = Reason.UNREADABLE, str(e)
        return rec
    rec.sha256 = hashlib.sha256(data).hexdigest()
    hit = cache.get(f"{rec.label}/{rec.sha256}")
    if hit and (hit["status"] != Status.KEPT or (clean_root / hit["clean_path"]).is_file()):
        return replace(
            rec, **{k: hit[k] for k in ("status", "reason", "detail", "width", "height", "phash", "clean_path")}
        )
    reason, detail, im = clean_one(data, spec)
    if reason:
        rec.reason, rec.detail = reason, detail
        return rec
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    rel = f"{rec.label}/{rec.sha256[:16]}.jpg"
    if not (clean_root / rel).is_file():
        atomic_write_bytes(clean_root / rel, buf.getvalue())
    rec.status, rec.width, rec.height = Status.KEPT, im.width, im.height
    rec.phash, rec.clean_path = str(imagehash.phash(im)), rel
    return rec


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def drop_near_duplicates(recs: list[Record], distance: int) -> None:
    """Near duplicates among the kept records: keep the largest of each cluster of one class; a cluster
    that spans classes is a labelling conflict, every member rejected."""
    kept = [r for r in recs if r.status == Status.KEPT]
    clusters: dict[int, list[Record]] = {}
    for r, c in zip(kept, near_duplicate_clusters([r.phash for r in kept], distance)):
        clusters.setdefault(c, []).append(r)
    for members in clusters.values():
        if len(members) == 1:
            continue
        if len({m.label for m in members}) > 1:
            for m in members:
                m.status, m.reason = Status.REJECTED, Reason.NEAR_DUPLICATE_IN_SEVERAL_CLASSES
                m.detail = f"looks like images in classes {', '.join(sorted({x.label for x in members}))}"
            continue
        # the largest image; at equal size the larger file (less compressed: a q40 copy loses to its original)
        best = max(members, key=lambda m: (m.width * m.height, _size(m.raw_path), m.sha256))
        for m in members:
            if m is not best:
                m.status, m.reason = Status.REJECTED, Reason.NEAR_DUPLICATE
                m.detail = f"perceptual hash within {distance} bits of {best.raw_path}" + (
                    f" ({best.detail})" if best.box else ""
                )


def _read_index(index_path: Path, params: dict) -> dict:
    """The cached outcome of each file cleaned before with the same settings (a damaged index only costs a
    re-decode)."""
    if not index_path.is_file():
        return {}
    try:
        stored = json.loads(index_path.read_text())
        return stored["records"] if stored.get("params") == params else {}
    except (json.JSONDecodeError, KeyError, TypeError):
        return {}


def _drop_exact_duplicates(recs: list[Record]) -> None:
    """Exact duplicates: the same bytes twice are kept once; the same bytes in two classes is a labelling
    conflict, and neither is kept."""
    first: dict[str, Record] = {}
    labels_of: dict[str, set] = {}
    for r in recs:
        if r.sha256:
            labels_of.setdefault(r.sha256, set()).add(r.label)
    for r in recs:
        if r.status != Status.KEPT:
            continue
        if len(labels_of[r.sha256]) > 1:
            r.status, r.reason = Status.REJECTED, Reason.IN_SEVERAL_CLASSES
            r.detail = f"same file in classes {', '.join(sorted(labels_of[r.sha256]))}"
        elif r.sha256 in first:
            r.status, r.reason = Status.REJECTED, Reason.EXACT_DUPLICATE
            r.detail = f"same bytes as {first[r.sha256].raw_path}"
        else:
            first[r.sha256] = r


def clean_files(raw: list[tuple[str, "object"]], spec: DatasetSpec, clean_root: Path) -> list[Record]:
    """Clean `(label, RawFile)` pairs into `clean_root/<label>/`; one Record per input, in input order."""
    index_path = clean_root / ".index.json"
    params = _clean_params(spec)
    cache = _read_index(index_path, params)
    recs = [
        Record(
            label=label,
            source=rf.source,
            raw_path="" if rf.reason else str(rf.path),  # it never arrived: its source says why
            group=rf.group,
            reason=rf.reason,
            detail=rf.detail,
        )
        for label, rf in raw
    ]
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    try:
        recs = list(pool.map(lambda r: _process(r, spec, clean_root, cache), recs))
    finally:  # Ctrl-C: the queued files are dropped, not decoded first (a `with` block would wait for all)
        pool.shutdown(wait=True, cancel_futures=True)
    # cache each file's own outcome, before the duplicate passes that depend on the whole set
    fields = ("status", "reason", "detail", "width", "height", "phash", "clean_path")
    per_file = {f"{r.label}/{r.sha256}": {k: getattr(r, k) for k in fields} for r in recs if r.sha256}

    _drop_exact_duplicates(recs)
    drop_near_duplicates(recs, spec.near_duplicate_distance)

    clean_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index_path, json.dumps({"params": params, "records": per_file}))
    return recs
