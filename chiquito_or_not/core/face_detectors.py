"""Face detectors whose weights ship in registry packages, behind one call: detector(PIL image) →
[Face(box in image pixels, score)], best first.

  mtcnn            PyPI facenet-pytorch (MTCNN's three small nets; needs torch)
  blazeface        MediaPipe's full-range BlazeFace .tflite (npm @mediapipe/face_detection), in LiteRT
  lbp              scikit-image's LBP frontal-face cascade
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .boxes import box_iou
from .errors import ChiquitoError, ImageRefused
from .files import sha256_file
from .litefile import quiet
from .paths import npm_artifact

__all__ = [
    "Face",
    "DETECTORS",
    "get_detector",
    "BLAZEFACE",
    "DETECTOR_FILE",
    "face_meta",
    "usable_faces",
    "crop_face",
    "face_step",
    "find_weights",
]

# MediaPipe's full-range BlazeFace (Apache-2.0), inside the pinned npm @mediapipe/face_detection tarball
BLAZEFACE = {
    "package": "@mediapipe/face_detection",
    "version": "0.4.1657300184",
    "sha256": "a118cde74923dc4435257fbfbb613464a0f58d115dff6314d4ff96c8aebf6419",
    "member": "package/face_detection_full_range.tflite",
    "member_sha256": "99bf9494d84f50acc6617d89873f71bf6635a841ea699c17cb3377f9507cfec3",
}
DETECTOR_FILE = "face_detector.tflite"  # beside a run's model files


def face_meta(recipe) -> dict | None:
    """What a model trained on crops carries (learner attribute, ONNX and LiteRT metadata). `whole`: the
    classes trained on whole pictures (faces = false): a picture without a face is then theirs to answer."""
    spec = recipe.dataset.faces
    if not spec.detector:
        return None
    meta = {
        "detector": spec.detector,
        "min_score": spec.min_score,
        "margin": spec.margin,
        "min_face": spec.min_face,
        "size": spec.size,
        "face_px": spec.face_px,
        "several": "largest",
        "whole": sorted(lab for lab, c in recipe.classes.items() if not c.faces),
    }
    if spec.detector == "blazeface":
        meta["weights_sha256"] = BLAZEFACE["member_sha256"]
    return meta


@dataclass(frozen=True)
class Face:
    box: tuple  # x0, y0, x1, y1 in the image's pixels
    score: float

    @property
    def side(self) -> float:
        """The box's longer side in pixels: the face's size as the crop and the size checks see it."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])


def _mtcnn(weights=None):
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        raise ChiquitoError(
            "the mtcnn face detector needs facenet-pytorch, installed without its outdated pins: "
            "pip install --no-deps facenet-pytorch==2.6.0"
        ) from None

    net = MTCNN(keep_all=True, device="cpu", min_face_size=20, post_process=False)

    def detect(im):
        boxes, probs = net.detect(im.convert("RGB"))
        if boxes is None:
            return []
        return sorted(
            (Face(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs)), key=lambda f: -f.score
        )

    return detect


def _lbp(weights=None, max_side: int = 512):
    import skimage.data
    from skimage.feature import Cascade

    cascade = Cascade(skimage.data.lbp_frontal_face_cascade_filename())

    def detect(im):
        s = min(1.0, max_side / max(im.size))
        small = im.convert("L").resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
        g = np.asarray(small, dtype=np.float64) / 255.0
        found = cascade.detect_multi_scale(
            img=g,
            scale_factor=1.2,
            step_ratio=1,
            min_size=(24, 24),
            max_size=(min(g.shape), min(g.shape)),
            min_neighbor_number=4,
        )
        return [
            Face((d["c"] / s, d["r"] / s, (d["c"] + d["width"]) / s, (d["r"] + d["height"]) / s), 1.0)
            for d in sorted(found, key=lambda d: -d["width"] * d["height"])
        ]

    return detect


def _ssd_anchors(size: int, strides: list[int], per_location: int) -> np.ndarray:
    """MediaPipe's SsdAnchorsCalculator with fixed-size anchors: (cx, cy) per anchor, in 0..1."""
    out = []
    for stride in sorted(set(strides)):
        n = strides.count(stride) * per_location
        grid = int(np.ceil(size / stride))
        for y in range(grid):
            for x in range(grid):
                out += [((x + 0.5) / grid, (y + 0.5) / grid)] * n
    return np.array(out, dtype=np.float32)


def _weighted_nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[tuple]:
    """MediaPipe's weighted non-maximum suppression: overlapping boxes are averaged by score."""
    order, out = list(np.argsort(-scores)), []
    while order:
        i = order[0]
        ov = box_iou(boxes[order[:1]], boxes[order], eps=1e-9)[0]
        group = [order[k] for k in np.nonzero(ov > iou)[0]]
        w = scores[group]
        out.append((tuple((boxes[group] * w[:, None]).sum(0) / w.sum()), float(scores[i])))
        order = [j for j in order if j not in group]
    return out


def _blazeface(model: Path, full: bool = True, min_score: float = 0.5):
    """MediaPipe's BlazeFace in LiteRT: the picture letterboxed to the model's square input, its SSD
    anchors decoded, weighted NMS as MediaPipe does; `full`: the full-range model (48 x 48 anchors)."""
    from PIL import Image

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise ChiquitoError(
            "the blazeface face detector runs in LiteRT: pip install 'chiquito-or-not[faces]'"
        ) from None
    with quiet():
        it = Interpreter(model_path=str(model), num_threads=2)
        it.allocate_tensors()
    inp = it.get_input_details()[0]
    size = int(inp["shape"][1])
    outs = {int(o["shape"][-1]): o["index"] for o in it.get_output_details()}  # 16 regressors, 1 score
    anchors = _ssd_anchors(size, [4] if full else [8, 16, 16, 16], 1 if full else 2)

    def detect(im):
        w, h = im.size
        side = max(w, h)
        canvas = Image.new("RGB", (side, side))
        ox, oy = (side - w) // 2, (side - h) // 2
        canvas.paste(im.convert("RGB"), (ox, oy))
        x = np.asarray(canvas.resize((size, size), Image.BILINEAR), dtype=np.float32) / 127.5 - 1.0
        it.set_tensor(inp["index"], x[None])
        it.invoke()
        reg, logit = it.get_tensor(outs[16])[0], it.get_tensor(outs[1])[0, :, 0]
        score = 1 / (1 + np.exp(-np.clip(logit, -80, 80)))
        keep = score >= min_score
        if not keep.any():
            return []
        r, a = reg[keep], anchors[keep]
        cx, cy = r[:, 0] / size + a[:, 0], r[:, 1] / size + a[:, 1]
        bw, bh = r[:, 2] / size, r[:, 3] / size
        boxes = np.stack([cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2], 1) * side
        boxes -= np.array([ox, oy, ox, oy], dtype=np.float32)
        boxes = np.clip(boxes, 0, [w, h, w, h])
        return [Face(tuple(float(v) for v in b), s) for b, s in _weighted_nms(boxes, score[keep], 0.3)]

    return detect


DETECTORS = {"blazeface": _blazeface, "mtcnn": _mtcnn, "lbp": _lbp}


def get_detector(name: str, weights: Path | None = None):
    """The detector registered under `name`, loaded (`weights`: the model file, for blazeface)."""
    if name not in DETECTORS:
        raise ValueError(f"unknown face detector {name!r}; choose one of {', '.join(DETECTORS)}")
    return DETECTORS[name](weights)


def usable_faces(faces: list[Face], min_score: float, min_face: int) -> list[Face]:
    """The faces that count, largest first."""
    ok = [f for f in faces if f.score >= min_score and min(f.box[2] - f.box[0], f.box[3] - f.box[1]) >= min_face]
    return sorted(ok, key=lambda f: -(f.box[2] - f.box[0]) * (f.box[3] - f.box[1]))


def crop_face(im, face: Face, margin: float, size: int, face_px: int = 0):
    """The square around the face, `margin` of its side added on every side, resized to size x size.
    The square always lies inside the picture: moved in where it would stick out, and no larger than the
    picture's shorter side. (Black padding where a close-up's square left the picture was a framing cue of
    its own: a model learned "black border = the tightly framed class".) `face_px` > 0: the face is first
    resampled to at most that many pixels across, so every crop carries the same detail whether the
    photo was a close-up or a distant shot (sharpness would otherwise tell them apart). Returns (crop,
    the square's box in image pixels)."""
    import math

    from PIL import Image

    x0, y0, x1, y1 = face.box
    f = face.side
    w, h = im.size
    side = max(1, min(int(round(f * (1 + 2 * margin))), w, h))
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    left = min(max(0, math.floor(cx - side / 2 + 0.5)), w - side)
    top = min(max(0, math.floor(cy - side / 2 + 0.5)), h - side)
    box = (left, top, left + side, top + side)
    crop = im.convert("RGB").crop(box)
    if face_px and f > face_px:
        r = max(1, round(crop.width * face_px / f))
        crop = crop.resize((r, r), Image.BILINEAR)
    return crop.resize((size, size), Image.BILINEAR), box


def find_weights(meta: dict, beside: Path | None = None, raw: Path | None = None) -> Path:
    """The BlazeFace file a model trained on crops needs: beside the model (export puts it there), or
    where `chiquito dataset` fetched it under the data root's `raw` folder; checked by sha256. Never
    downloaded here."""
    places = [beside / DETECTOR_FILE] if beside else []
    if raw is not None:
        fetched = raw / npm_artifact(BLAZEFACE["package"], BLAZEFACE["version"]).removesuffix(".tgz")
        places.append(fetched / BLAZEFACE["member"])
    for p in places:
        if p.is_file() and sha256_file(p) == meta.get("weights_sha256", BLAZEFACE["member_sha256"]):
            return p
    raise ChiquitoError(
        f"this model crops faces with BlazeFace: put {DETECTOR_FILE} (sha256 "
        f"{BLAZEFACE['member_sha256'][:12]}...) beside it, as `chiquito export` does, or run "
        "`chiquito dataset` on its recipe once to fetch it"
    )


def face_step(meta: dict, beside: Path | None = None, raw: Path | None = None):
    """For a model trained on crops (its `meta`): image → (crop, box, faces found), the same detector
    and crop as the dataset stage (the largest face). Without a face: the whole picture (box None) when
    some classes were trained on whole pictures, else ImageRefused."""
    import threading

    weights = find_weights(meta, beside, raw) if meta["detector"] == "blazeface" else None
    detector = get_detector(meta["detector"], weights)
    lock = threading.Lock()  # one interpreter, many threads

    def step(im):
        with lock:
            found = detector(im)
        faces = usable_faces(found, meta["min_score"], meta["min_face"])
        if not faces and meta.get("whole"):  # classes trained on whole pictures answer this one
            return im, None, 0
        if not faces:
            raise ImageRefused(
                f"no face found ({meta['detector']}: none of at least {meta['min_face']} px "
                f"with score >= {meta['min_score']}); this model answers about faces only"
            )
        crop, box = crop_face(im, faces[0], meta["margin"], meta["size"], meta.get("face_px", 0))
        return crop, box, len(faces)

    return step
