"""Face crops (`[dataset.faces]`): each cleaned image of a class that uses them goes through one face
detector; the chosen face, with a margin, made square, becomes the cleaned image the splits use. The raw
and the whole cleaned image stay as they were. What predict and serve do to a picture first, for a model
trained on crops, is the same `crop_face`.
"""

from __future__ import annotations

import hashlib
import io
import json
from dataclasses import replace
from pathlib import Path

from ..core.face_detectors import BLAZEFACE, DETECTOR_FILE, Face, crop_face, find_weights, get_detector, usable_faces
from ..core.files import atomic_write_bytes, atomic_write_text
from ..core.reasons import Reason, Status

__all__ = ["crop_faces", "copy_detector", "face_size_hint"]


def _cache_key(spec) -> str:  # the detections' cache: crop settings do not change what was detected
    return f"{spec.detector}:{BLAZEFACE['member_sha256'][:12] if spec.detector == 'blazeface' else 'v1'}"


def _detections_ok(dets) -> bool:
    """A cached entry is a list of [x0, y0, x1, y1, score] of finite numbers (else it is detected again)."""
    import math

    return isinstance(dets, list) and all(
        isinstance(d, list)
        and len(d) == 5
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in d)
        for d in dets
    )


def _read_detections(index: Path, key: str) -> tuple[dict, dict]:
    """(the whole index, the detections cached under `key`): {detector key: {sha256: detections}}; a damaged
    index only costs detecting again."""
    try:
        stored = json.loads(index.read_text()) if index.is_file() else {}
    except (OSError, ValueError, RecursionError):
        stored = {}
    if not isinstance(stored, dict):
        stored = {}
    cache = stored.get(key) if isinstance(stored.get(key), dict) else {}
    stored[key] = cache = {sha: dets for sha, dets in cache.items() if _detections_ok(dets)}
    return stored, cache


def _no_usable_face(r, faces: list, spec) -> bool:
    """Reject record `r` when its faces cannot be cropped (none, or several with several = "drop")."""
    if not faces:
        r.status, r.reason = Status.REJECTED, Reason.NO_FACE
        r.detail = f"no face of at least {spec.min_face} px with score >= {spec.min_score} ({spec.detector})"
        return True
    if len(faces) > 1 and spec.several == "drop":
        r.status, r.reason = Status.REJECTED, Reason.SEVERAL_FACES
        r.detail = f'{len(faces)} faces; dataset.faces.several = "drop"'
        return True
    return False


def _crop_record(r, im, f, k: int, n_faces: int, spec, clean_root: Path, crop_key: str):
    """Face `f` (the k-th of n_faces) of record `r`'s image cut out, written once, as a new record."""
    import imagehash

    crop, box = crop_face(im, f, spec.margin, spec.size, spec.face_px)
    buf = io.BytesIO()
    crop.save(buf, "JPEG", quality=95)
    data = buf.getvalue()
    rel = f"{r.label}/{r.sha256[:16]}-face{k}-{crop_key}.jpg"  # named by the crop settings too
    if not (clean_root / rel).is_file():
        atomic_write_bytes(clean_root / rel, data)
    return replace(
        r,
        sha256=hashlib.sha256(data).hexdigest(),
        source_sha256=r.sha256,
        clean_path=rel,
        width=spec.size,
        height=spec.size,
        phash=str(imagehash.phash(crop)),
        box=" ".join(str(v) for v in box),
        detail=f"face {k + 1} of {n_faces}, score {f.score:.2f}",
    )


def _say_faces(out: list, crop_labels: set, spec, found: int, examined: int, sides: dict, log) -> None:
    lost = [
        f"{n} {what}"
        for reason, what in ((Reason.NO_FACE, "without a usable face"), (Reason.SEVERAL_FACES, "with several, dropped"))
        if (n := sum(1 for r in out if r.reason == reason and r.label in crop_labels))
    ]
    log(
        f"  faces ({spec.detector}): {found} crops from the {examined} clean images that reached the face step"
        + (f" ({', '.join(lost)})" if lost else "")
    )
    hint = face_size_hint(sides, spec.face_px)
    if hint:
        log(f"  note: {hint}")


def crop_faces(recs: list, spec, crop_labels: set, clean_root: Path, log=print, weights: Path | None = None) -> list:
    """Records after the face step: for each kept record of a class in `crop_labels`, its crop(s) as new
    records (clean_path, box, source_sha256; sha256 of the crop's file), or the record rejected with
    reason no_face / several_faces. Detections are cached per cleaned image in clean/.faces.json.
    `weights`: the detector's model file (BlazeFace's, fetched by the dataset stage)."""
    from PIL import Image

    index = clean_root / ".faces.json"
    stored, cache = _read_detections(index, _cache_key(spec))
    detector, out, found, sides, examined = None, [], 0, {}, 0
    crop_key = hashlib.sha256(json.dumps([spec.margin, spec.size, spec.face_px, "inside"]).encode()).hexdigest()[:8]
    for r in recs:
        if r.status != Status.KEPT or r.label not in crop_labels:
            out.append(r)
            continue
        examined += 1
        im = Image.open(clean_root / r.clean_path)
        im.load()
        if r.sha256 not in cache:
            detector = detector or get_detector(spec.detector, weights)
            cache[r.sha256] = [[*f.box, f.score] for f in detector(im)]
        faces = usable_faces([Face(tuple(d[:4]), d[4]) for d in cache[r.sha256]], spec.min_score, spec.min_face)
        if _no_usable_face(r, faces, spec):
            out.append(r)
            continue
        for k, f in enumerate(faces if spec.several == "each" else faces[:1]):
            sides.setdefault(r.label, []).append(f.side)
            out.append(_crop_record(r, im, f, k, len(faces), spec, clean_root, crop_key))
            found += 1
    atomic_write_text(index, json.dumps(stored))
    _say_faces(out, crop_labels, spec, found, examined, sides, log)
    return out


def face_size_hint(sides: dict[str, list[float]], face_px: int, ratio: float = 1.5) -> str | None:
    """When one class's faces are much smaller than another's (median side, px), after `face_px` evened
    them out if set: a crop model can tell the classes apart by the faces' detail alone (a 70-px face
    enlarged to the crop looks unlike a 200-px one; README: Face crops, bench_framing --scale 1). Says
    which `face_px` gives every crop the detail of the smaller faces; None when nothing needs saying."""
    import statistics

    med = {lab: statistics.median(v) for lab, v in sides.items() if v}
    if len(med) < 2:
        return None
    small, large = min(med, key=med.get), max(med, key=med.get)

    def seen(m):  # the face's side once face_px has resampled it
        return min(m, face_px) if face_px else m

    if seen(med[large]) < ratio * seen(med[small]):
        return None
    return (
        f"faces in '{small}' are {med[large] / med[small]:.1f}x smaller than in '{large}' (median "
        f"{med[small]:.0f} vs {med[large]:.0f} px): their detail alone can tell the classes apart; "
        f"set dataset.faces.face_px = {round(med[small])} to give every crop the same detail, or add "
        f"larger photos of '{small}'"
    )


def copy_detector(meta: dict | None, folder: Path, raw: Path | None = None) -> Path | None:
    """Put the face detector's weights beside an exported model, so the model works where it is copied."""
    import shutil

    if not meta or meta["detector"] != "blazeface":
        return None
    dst = Path(folder) / DETECTOR_FILE
    src = find_weights(meta, Path(folder), raw)
    if src != dst:
        shutil.copyfile(src, dst)
    return dst
