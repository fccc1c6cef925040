"""An exported detector (model.onnx) on onnxruntime, numpy and Pillow only: no torch.

The file holds body, head and box decoding (outputs `boxes` N x A x 4 in input pixels and `scores`
N x A x C); its metadata holds labels, input size, normalisation and the post-processing parameters,
which postprocess.py applies (the same code that serves the PyTorch model)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...core.errors import ChiquitoError
from ...core.model_loader import RuntimeModel
from .box_postprocess import preprocess, resized

__all__ = ["OnnxDetector", "LiteDetector"]


class OnnxDetector(RuntimeModel):
    """An ONNX file from `chiquito export` as a detector: RuntimeModel's surface, `spec` its input and
    post-processing."""

    task = "detect"

    def __init__(self, path, session):
        self.path, self.session = Path(path), session
        meta = session.get_modelmeta().custom_metadata_map
        try:
            self.spec = {
                "labels": json.loads(meta["labels"]),
                "size": int(meta["size"]),
                "mean": json.loads(meta["mean"]),
                "std": json.loads(meta["std"]),
                "post": json.loads(meta["postprocess"]),
                "score_threshold": float(meta["score_threshold"]),
            }
        except (KeyError, ValueError) as e:
            raise ChiquitoError(
                f"{path}: not a detector exported by `chiquito export` (metadata {e} missing or bad); export it again"
            ) from None
        self.vocab = self.spec["labels"]
        self.input = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        if names != ["boxes", "scores"]:
            raise ChiquitoError(f"{path}: outputs {names}, expected boxes and scores; export it again")

    def preprocess(self, im) -> np.ndarray:
        """One PIL image → the normalised 3 x size x size float32 array the file takes."""
        s = self.spec
        return preprocess(im, s["size"], s["mean"], s["std"])

    def run(self, x: np.ndarray):
        boxes, scores = self.session.run(["boxes", "scores"], {self.input: x.astype(np.float32, copy=False)})
        return boxes, scores


class LiteDetector(OnnxDetector):
    """The same interface for a .tflite detector on the LiteRT interpreter (core.litefile.LiteSession):
    it takes the resized RGB pixels, channels last, normalises inside its graph, and names its outputs
    `boxes` and `scores` in its signature (they can have the same shape: never told apart by shape)."""

    def __init__(self, path, session):
        self.path, self.session = Path(path), session
        meta = session.metadata
        try:
            self.spec = {
                "labels": list(meta["labels"]),
                "size": int(meta["size"]),
                "mean": list(meta["mean"]),
                "std": list(meta["std"]),
                "post": dict(meta["postprocess"]),
                "score_threshold": float(meta["score_threshold"]),
            }
        except (KeyError, TypeError, ValueError) as e:
            raise ChiquitoError(
                f"{path}: not a detector exported by `chiquito export --format tflite` "
                f"(metadata {e} missing or bad); export it again"
            ) from None
        self.vocab = self.spec["labels"]
        if session.output_names != ["boxes", "scores"]:
            raise ChiquitoError(f"{path}: outputs {session.output_names}, expected boxes and scores; export it again")

    def preprocess(self, im) -> np.ndarray:
        """One PIL image → the uint8 size x size x 3 pixels the file takes."""
        return resized(im, self.spec["size"])

    def run(self, x: np.ndarray):
        out = self.session.run(x)
        return out["boxes"], out["scores"]
