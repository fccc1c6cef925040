"""An exported model.onnx as a classifier on onnxruntime, numpy and Pillow only: no torch, no fastai.

The preprocessing is read from the file's metadata and reproduces fastai's validation pipeline
exactly: a centred crop of the largest square (for "crop"), a bilinear Pillow resize, /255, then
(x - mean) / std, channels first.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ...core.errors import ChiquitoError
from ...core.model_loader import RuntimeModel
from ...core.onnxfile import onnx_session

__all__ = ["OnnxClassifier", "LiteClassifier", "preprocess_image", "resized_image"]


def resized_image(im, spec: dict) -> np.ndarray:
    """One Pillow image → the uint8 H x W x 3 RGB array of the model's input size, as fastai's validation
    transforms make it: centred crop of the largest box of the target shape ("crop"), bilinear resize.
    What a phone app feeds a .tflite file; `preprocess_image` normalises it for the other runtimes."""
    from PIL import Image

    W, H = spec["size_wh"]
    if im.mode != "RGB":
        im = im.convert("RGB")
    w, h = im.size
    if spec["resize"] == "crop":
        m = w / W if w / W < h / H else h / H
        cw, ch = int(m * W), int(m * H)
        left, top = int(0.5 * (w - cw)), int(0.5 * (h - ch))
        if (cw, ch) != (w, h):
            im = im.crop((max(left, 0), max(top, 0), min(left + cw, w), min(top + ch, h)))
    elif spec["resize"] != "squish":
        raise ChiquitoError(f"resize method {spec['resize']!r} is not supported")
    return np.asarray(im.resize((W, H), Image.Resampling.BILINEAR), dtype=np.uint8)


def preprocess_image(im, spec: dict) -> np.ndarray:
    """One Pillow image → a float32 3 x H x W array, exactly as fastai's validation transforms make it:
    `resized_image`, /255, normalise, channels first."""
    mean = np.asarray(spec["mean"], dtype=np.float32).reshape(3, 1, 1)
    std = np.asarray(spec["std"], dtype=np.float32).reshape(3, 1, 1)
    x = resized_image(im, spec).astype(np.float32).transpose(2, 0, 1) * np.float32(spec["scale"])
    return (x - mean) / std


class OnnxClassifier(RuntimeModel):
    """An ONNX file from `chiquito export` as a classifier: RuntimeModel's surface and `probabilities(images)`."""

    task = "classify"

    def __init__(self, path: str | Path, threads: int = 0, session=None):
        """Open `path` on onnxruntime's CPU provider, or use an already opened `session` of it."""
        self.path = Path(path)
        if session is None:
            session = onnx_session(self.path, threads)  # checks, with one-line errors
        self.session = session
        meta = self.session.get_modelmeta().custom_metadata_map
        if "classes" not in meta or "preprocess" not in meta:
            raise ChiquitoError(
                f"{self.path}: no class names or preprocessing in its metadata; "
                "export it with `chiquito export RUN --format onnx`"
            )
        self.vocab = json.loads(meta["classes"])
        self.spec = json.loads(meta["preprocess"])
        self.faces = json.loads(meta["faces"]) if "faces" in meta else None  # trained on face crops
        self.input = self.session.get_inputs()[0].name

    def preprocess(self, im) -> np.ndarray:
        """One Pillow image → the float32 3 x H x W array the model takes."""
        return preprocess_image(im, self.spec)

    def run(self, x: np.ndarray) -> np.ndarray:
        """Probabilities for a preprocessed N x 3 x H x W batch."""
        return self.session.run(None, {self.input: x})[0]

    def probabilities(self, images: list, bs: int = 64) -> np.ndarray:
        """Class probabilities (N x C) for Pillow images, `bs` at a time."""
        out = [np.zeros((0, len(self.vocab)), dtype=np.float32)]
        for i in range(0, len(images), bs):
            x = np.stack([self.preprocess(im) for im in images[i : i + bs]])
            out.append(self.run(x))
        return np.concatenate(out)


class LiteClassifier(OnnxClassifier):
    """The same interface for a .tflite file from `chiquito export --format tflite` on the LiteRT
    interpreter (core.litefile.LiteSession): it takes the resized RGB pixels, channels last, and
    normalises inside its graph, as a phone app feeds it."""

    def __init__(self, path: str | Path, session):
        self.path, self.session = Path(path), session
        meta = session.metadata
        if "classes" not in meta or "preprocess" not in meta or "probabilities" not in session.output_names:
            raise ChiquitoError(
                f"{self.path}: not a classifier from `chiquito export --format tflite` "
                "(no classes, preprocessing or probabilities output); export it again"
            )
        self.vocab, self.spec = list(meta["classes"]), dict(meta["preprocess"])
        self.faces = meta.get("faces")

    def preprocess(self, im) -> np.ndarray:
        """One Pillow image → the uint8 H x W x 3 pixels the file takes."""
        return resized_image(im, self.spec)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(x)["probabilities"]
