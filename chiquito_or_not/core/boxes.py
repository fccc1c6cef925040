"""Box geometry in numpy, for every place that compares boxes (x0 y0 x1 y1): non-maximum suppression in the
detector's postprocessing and the face detector, matching in the detection metrics, the composite generator's
overlap limit.

Numpy, not torchvision.ops: an exported detector (.onnx, .tflite) predicts without torch, through this very
code, so a .pkl and its export answer alike. Training, which has torch, matches anchors with
torchvision.ops.box_iou (tasks/detect/ssd.py); `box_iou` follows its definition.
"""

from __future__ import annotations

import numpy as np

__all__ = ["areas", "intersections", "box_iou"]


def areas(boxes: np.ndarray) -> np.ndarray:
    """N x 4 → N areas."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def intersections(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """N x 4, M x 4 → N x M areas each pair has in common (0 where they do not meet)."""
    w = np.clip(np.minimum(a[:, None, 2], b[None, :, 2]) - np.maximum(a[:, None, 0], b[None, :, 0]), 0, None)
    h = np.clip(np.minimum(a[:, None, 3], b[None, :, 3]) - np.maximum(a[:, None, 1], b[None, :, 1]), 0, None)
    return w * h


def box_iou(a: np.ndarray, b: np.ndarray, eps: float = 1e-12) -> np.ndarray:
    """N x 4, M x 4 → N x M intersection over union (torchvision.ops.box_iou; `eps` keeps an empty union at 0)."""
    inter = intersections(a, b)
    return inter / np.maximum(areas(a)[:, None] + areas(b)[None, :] - inter, eps)
