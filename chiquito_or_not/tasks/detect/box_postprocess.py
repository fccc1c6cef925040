"""From a detector's decoded outputs to detection lists, in numpy only: what predict, evaluate, serve and the
exported runner all use, so a .pkl and its .onnx answer through the very same code.

It follows torchvision's SSD.postprocess_detections: per class, scores above `score_thresh`, the
`topk_candidates` best; then non-maximum suppression per class (class-offset boxes, one pass) and the
`detections_per_img` best overall.
"""

from __future__ import annotations

import numpy as np

from ...core.boxes import box_iou
from ...core.errors import ChiquitoError

__all__ = ["nms", "postprocess", "preprocess", "resized", "POST_DEFAULTS"]

POST_DEFAULTS = {"score_thresh": 0.01, "nms_iou": 0.5, "topk_candidates": 300, "detections_per_img": 100}


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, best score first (ties: the lower index first,
    as torchvision's stable sort)."""
    order = np.argsort(-scores, kind="stable")
    keep = []
    while order.size:
        i = order[0]
        keep.append(i)
        rest = order[1:]
        order = rest[box_iou(boxes[i : i + 1], boxes[rest])[0] <= iou]
    return np.asarray(keep, dtype=np.int64)


def postprocess(
    boxes: np.ndarray,
    scores: np.ndarray,
    score_thresh: float = 0.01,
    nms_iou: float = 0.5,
    topk_candidates: int = 300,
    detections_per_img: int = 100,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """One image: boxes A x 4 (x0 y0 x1 y1), scores A x C (C object classes, no background) →
    (boxes K x 4, scores K, class indices K), best first."""
    all_b, all_s, all_c = [], [], []
    for c in range(scores.shape[1]):
        s = scores[:, c]
        idx = np.nonzero(s > score_thresh)[0]
        if idx.size > topk_candidates:
            idx = idx[np.argsort(-s[idx], kind="stable")[:topk_candidates]]
        all_b.append(boxes[idx])
        all_s.append(s[idx])
        all_c.append(np.full(idx.size, c, dtype=np.int64))
    b, s, c = np.concatenate(all_b), np.concatenate(all_s), np.concatenate(all_c)
    if not s.size:
        return np.zeros((0, 4), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64)
    offset = (c.astype(boxes.dtype) * (float(boxes.max()) + 1))[:, None]  # classes never suppress each other
    keep = nms(b + offset, s, nms_iou)[:detections_per_img]
    return b[keep], s[keep], c[keep]


def resized(im, size: int) -> np.ndarray:
    """One PIL image → the uint8 size x size x 3 RGB array the detector sees: a bilinear resize to the
    square (boxes scale per axis). What a phone app feeds a .tflite file; `preprocess` normalises it."""
    from PIL import Image

    if im.mode != "RGB":
        im = im.convert("RGB")
    return np.asarray(im.resize((size, size), Image.Resampling.BILINEAR), dtype=np.uint8)


def preprocess(im, size: int, mean, std) -> np.ndarray:
    """One PIL image → 3 x size x size float32: `resized`, /255, (x - mean) / std."""
    x = resized(im, size).astype(np.float32).transpose(2, 0, 1) / 255.0
    return (x - np.asarray(mean, np.float32).reshape(3, 1, 1)) / np.asarray(std, np.float32).reshape(3, 1, 1)


DETECT_EXTRA = "object detection needs the detect extra: pip install 'chiquito-or-not[detect]'"


def require_detect_extra() -> None:
    """ChiquitoError naming the extra unless detection's libraries are installed (checked before any work)."""
    import importlib.util

    if not all(importlib.util.find_spec(m) for m in ("defusedxml", "torchmetrics", "pycocotools")):
        raise ChiquitoError(DETECT_EXTRA)


def mean_average_precision(**kw):
    """torchmetrics' MeanAveragePrecision on the COCO reference implementation (pycocotools)."""
    require_detect_extra()
    from torchmetrics.detection import MeanAveragePrecision

    return MeanAveragePrecision(backend="pycocotools", **kw)
