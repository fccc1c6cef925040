"""Clean: decode every raw image fully, reject what cannot be trained on, normalise the rest to RGB."""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

from .files import NotRegular, atomic_write_bytes, atomic_write_text, read_regular
from .recipe import DatasetSpec

__all__ = ["Record", "clean_one", "clean_files", "near_duplicate_clusters", "hamming"]

# Bump when the cleaning code changes what it writes, so cached results are recomputed.
CLEAN_VERSION = 1


@dataclass
class Record:
    """What happened to one raw input."""
    label: str
    source: str
    raw_path: str
    sha256: str = ""
    status: str = "rejected"  # or "kept"
    reason: str = ""
    detail: str = ""
    width: int = 0
    height: int = 0
    phash: str = ""
    clean_path: str = ""


def _clean_params(spec: DatasetSpec) -> str:
    keys = dict(v=CLEAN_VERSION, min_size=spec.min_size, max_pixels=spec.max_pixels, max_side=spec.max_side,
                formats=list(spec.formats), background=list(spec.background), center_crop=spec.center_crop)
    return hashlib.sha256(json.dumps(keys, sort_keys=True).encode()).hexdigest()[:16]


def _to_rgb(im, background):
    """Any PIL mode to 8-bit RGB; transparency is composited on `background`."""
    import numpy as np
    from PIL import Image

    if im.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(im, dtype=np.float64)
        lo, hi = (0.0, 65535.0) if im.mode.startswith("I;16") else (float(arr.min()), float(arr.max()))
        arr = np.clip((arr - lo) * 255.0 / max(hi - lo, 1e-12), 0, 255).astype(np.uint8)
        im = Image.fromarray(arr, "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = im.convert("RGBA")
        bg = Image.new("RGBA", rgba.size, tuple(background) + (255,))
        return Image.alpha_composite(bg, rgba).convert("RGB")
    return im.convert("RGB")


def _bomb_warnings_are_errors() -> None:
    """Make PIL's DecompressionBombWarning an exception, process-wide, unless it already is. A
    catch_warnings() block per call is not thread-safe (it swaps the global filter list): with decoding
    in worker threads the warning leaked onto the terminal in the middle of the progress line."""
    from PIL import Image

    if not any(f[0] == "error" and f[2] is Image.DecompressionBombWarning for f in warnings.filters):
        warnings.filterwarnings("error", category=Image.DecompressionBombWarning)


def clean_one(raw: Path | bytes, spec: DatasetSpec) -> tuple[str, str, object | None]:
    """Decode one file (or its bytes): (reason, detail, RGB image) where reason is "" when it is kept."""
    from PIL import Image, ImageOps, UnidentifiedImageError

    try:
        data = raw if isinstance(raw, bytes) else read_regular(raw)
    except NotRegular as e:
        return e.reason, e.detail, None
    except OSError as e:
        return "unreadable", e.strerror or str(e), None
    if not data:
        return "empty_file", "0 bytes", None
    _bomb_warnings_are_errors()
    try:
        im = Image.open(io.BytesIO(data))
    except UnidentifiedImageError:
        return "not_an_image", "no known image format", None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "decompression_bomb", str(e).split(".")[0], None
    except (OSError, SyntaxError, ValueError) as e:
        return "corrupt", str(e), None
    w, h = im.size
    if w * h > spec.max_pixels:
        return "decompression_bomb", f"{w}x{h} = {w * h} pixels > max_pixels {spec.max_pixels}", None
    if getattr(im, "is_animated", False) or getattr(im, "n_frames", 1) > 1:
        return "animated", f"{im.format} with {getattr(im, 'n_frames', '?')} frames", None
    if im.format not in spec.formats:
        return "format_not_allowed", f"{im.format} (allowed: {', '.join(spec.formats)})", None
    try:
        im.load()  # the full decode: truncated and corrupt files fail here, not at training time
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        return "decompression_bomb", str(e).split(".")[0], None
    except (OSError, SyntaxError, ValueError, EOFError) as e:
        return "truncated_or_corrupt", str(e), None
    if min(w, h) < spec.min_size:
        return "too_small", f"{w}x{h}, min_size is {spec.min_size}", None
    try:
        im = ImageOps.exif_transpose(im)
    except (OSError, SyntaxError, ValueError, KeyError, TypeError) as e:
        return "corrupt_exif", str(e), None
    im = _to_rgb(im, spec.background)
    if spec.center_crop < 1.0:  # the same crop for every class, e.g. so web photos look like LFW's face crops
        side = max(1, round(min(im.size) * spec.center_crop))
        left, top = (im.width - side) // 2, (im.height - side) // 2
        im = im.crop((left, top, left + side, top + side))
    if spec.max_side and max(im.size) > spec.max_side:
        im.thumbnail((spec.max_side, spec.max_side), Image.Resampling.LANCZOS)
    return "", "", im


def _process(rec: Record, spec: DatasetSpec, clean_root: Path, cache: dict) -> Record:
    import imagehash

    path = Path(rec.raw_path)
    try:
        rec.sha256 = hashlib.sha256(path.read_bytes()).hexdigest()
    except OSError as e:
        rec.reason, rec.detail = "unreadable", str(e)
        return rec
    hit = cache.get(f"{rec.label}/{rec.sha256}")
    if hit and (hit["status"] != "kept" or (clean_root / hit["clean_path"]).is_file()):
        return replace(rec, **{k: hit[k] for k in ("status", "reason", "detail", "width", "height",
                                                   "phash", "clean_path")})
    reason, detail, im = clean_one(path, spec)
    if reason:
        rec.reason, rec.detail = reason, detail
        return rec
    buf = io.BytesIO()
    im.save(buf, "JPEG", quality=95)
    rel = f"{rec.label}/{rec.sha256[:16]}.jpg"
    if not (clean_root / rel).is_file():
        atomic_write_bytes(clean_root / rel, buf.getvalue())
    rec.status, rec.width, rec.height = "kept", im.width, im.height
    rec.phash, rec.clean_path = str(imagehash.phash(im)), rel
    return rec


def _size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError:
        return 0


def hamming(a: str, b: str) -> int:
    return bin(int(a, 16) ^ int(b, 16)).count("1")


def near_duplicate_clusters(phashes: list[str], distance: int) -> list[int]:
    """Cluster id per hash: hashes within `distance` bits are linked (transitively)."""
    import numpy as np

    n = len(phashes)
    parent = list(range(n))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        bits = np.unpackbits(np.array([[int(h, 16)] for h in phashes], dtype=">u8").view(np.uint8), axis=1)
        for i in range(n - 1):
            d = (bits[i + 1:] != bits[i]).sum(axis=1)
            for j in np.nonzero(d <= distance)[0]:
                a, b = find(i), find(i + 1 + int(j))
                if a != b:
                    parent[max(a, b)] = min(a, b)
    return [find(i) for i in range(n)]


def clean_files(raw: list[tuple[str, "object"]], spec: DatasetSpec, clean_root: Path) -> list[Record]:
    """Clean `(label, RawFile)` pairs into `clean_root/<label>/`; one Record per input, in input order."""
    index_path = clean_root / ".index.json"
    params = _clean_params(spec)
    cache = {}
    if index_path.is_file():
        try:
            stored = json.loads(index_path.read_text())
            cache = stored["records"] if stored.get("params") == params else {}
        except (json.JSONDecodeError, KeyError, TypeError):
            cache = {}  # a damaged index only costs a re-decode
    recs = [Record(label=label, source=rf.source, raw_path=str(rf.path)) for label, rf in raw]
    pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2)
    try:
        recs = list(pool.map(lambda r: _process(r, spec, clean_root, cache), recs))
    finally:  # Ctrl-C: the queued files are dropped, not decoded first (a `with` block would wait for all)
        pool.shutdown(wait=True, cancel_futures=True)
    # cache each file's own outcome, before the duplicate passes that depend on the whole set
    fields = ("status", "reason", "detail", "width", "height", "phash", "clean_path")
    per_file = {f"{r.label}/{r.sha256}": {k: getattr(r, k) for k in fields} for r in recs if r.sha256}

    # exact duplicates: same bytes twice; the same bytes in two classes is a labelling conflict
    first: dict[str, Record] = {}
    labels_of: dict[str, set] = {}
    for r in recs:
        if r.sha256:
            labels_of.setdefault(r.sha256, set()).add(r.label)
    for r in recs:
        if r.status != "kept":
            continue
        if len(labels_of[r.sha256]) > 1:
            r.status, r.reason = "rejected", "in_several_classes"
            r.detail = f"same file in classes {', '.join(sorted(labels_of[r.sha256]))}"
        elif r.sha256 in first:
            r.status, r.reason, r.detail = "rejected", "exact_duplicate", f"same bytes as {first[r.sha256].raw_path}"
        else:
            first[r.sha256] = r

    # near duplicates: keep the largest image of each cluster
    kept = [r for r in recs if r.status == "kept"]
    clusters: dict[int, list[Record]] = {}
    for r, c in zip(kept, near_duplicate_clusters([r.phash for r in kept], spec.near_duplicate_distance)):
        clusters.setdefault(c, []).append(r)
    for members in clusters.values():
        if len(members) == 1:
            continue
        if len({m.label for m in members}) > 1:
            for m in members:
                m.status, m.reason = "rejected", "near_duplicate_in_several_classes"
                m.detail = f"looks like images in classes {', '.join(sorted({x.label for x in members}))}"
            continue
        # the largest image; at equal size the larger file (less compressed: a q40 copy loses to its original)
        best = max(members, key=lambda m: (m.width * m.height, _size(m.raw_path), m.sha256))
        for m in members:
            if m is not best:
                m.status, m.reason = "rejected", "near_duplicate"
                m.detail = f"perceptual hash within {spec.near_duplicate_distance} bits of {best.raw_path}"

    clean_root.mkdir(parents=True, exist_ok=True)
    atomic_write_text(index_path, json.dumps({"params": params, "records": per_file}))
    return recs
