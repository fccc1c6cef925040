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

__all__ = ["Face", "DETECTORS", "get_detector"]


@dataclass(frozen=True)
class Face:
    box: tuple  # x0, y0, x1, y1 in the image's pixels
    score: float


def _mtcnn(weights=None):
    try:
        from facenet_pytorch import MTCNN
    except ImportError:
        from .errors import ChiquitoError

        raise ChiquitoError("the mtcnn face detector needs facenet-pytorch, installed without its outdated pins: "
                            "pip install --no-deps facenet-pytorch==2.6.0") from None

    net = MTCNN(keep_all=True, device="cpu", min_face_size=20, post_process=False)

    def detect(im):
        boxes, probs = net.detect(im.convert("RGB"))
        if boxes is None:
            return []
        return sorted((Face(tuple(float(v) for v in b), float(p)) for b, p in zip(boxes, probs)),
                      key=lambda f: -f.score)
    return detect


def _lbp(weights=None, max_side: int = 512):
    import skimage.data
    from skimage.feature import Cascade

    cascade = Cascade(skimage.data.lbp_frontal_face_cascade_filename())

    def detect(im):
        s = min(1.0, max_side / max(im.size))
        small = im.convert("L").resize((max(1, round(im.width * s)), max(1, round(im.height * s))))
        g = np.asarray(small, dtype=np.float64) / 255.0
        found = cascade.detect_multi_scale(img=g, scale_factor=1.2, step_ratio=1, min_size=(24, 24),
                                           max_size=(min(g.shape), min(g.shape)), min_neighbor_number=4)
        return [Face((d["c"] / s, d["r"] / s, (d["c"] + d["width"]) / s, (d["r"] + d["height"]) / s), 1.0)
                for d in sorted(found, key=lambda d: -d["width"] * d["height"])]
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
        b = boxes[order]
        xx0, yy0 = np.maximum(b[:, 0], b[0, 0]), np.maximum(b[:, 1], b[0, 1])
        xx1, yy1 = np.minimum(b[:, 2], b[0, 2]), np.minimum(b[:, 3], b[0, 3])
        inter = np.clip(xx1 - xx0, 0, None) * np.clip(yy1 - yy0, 0, None)
        area = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
        ov = inter / np.maximum(area + area[0] - inter, 1e-9)
        group = [order[k] for k in np.nonzero(ov > iou)[0]]
        w = scores[group]
        out.append((tuple((boxes[group] * w[:, None]).sum(0) / w.sum()), float(scores[i])))
        order = [j for j in order if j not in group]
    return out


def _blazeface(model: Path, full: bool = True, min_score: float = 0.5):
    """MediaPipe's BlazeFace in LiteRT: the picture letterboxed to the model's square input, its SSD
    anchors decoded, weighted NMS as MediaPipe does; `full`: the full-range model (48 x 48 anchors)."""
    from PIL import Image

    from .litefile import quiet

    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        from .errors import ChiquitoError

        raise ChiquitoError("the blazeface face detector runs in LiteRT: pip install 'chiquito-or-not[faces]'") \
            from None
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
