"""An exported model.onnx as a classifier on onnxruntime, numpy and Pillow only: no torch, no fastai.

The preprocessing is read from the file's metadata and reproduces fastai's validation pipeline
exactly: a centred crop of the largest square (for "crop"), a bilinear Pillow resize, /255, then
(x - mean) / std, channels first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import ConfigDict, Field, model_validator

from ...core.errors import ChiquitoError
from ...core.model_loader import RuntimeModel
from ...core.model_meta import (
    LITE_FIX,
    ONNX_FIX,
    FacesMeta,
    Finite,
    MetaModel,
    PositiveRgb,
    Rgb,
    Side,
    check_shape,
    decode_json_fields,
    unique_names,
    validated,
)
from ...core.onnxfile import onnx_session

__all__ = ["OnnxClassifier", "LiteClassifier", "ClassifierMeta", "preprocess_image", "resized_image"]


class PreprocessMeta(MetaModel):
    """class_inference.preprocess_spec as a schema."""

    resize: Literal["crop", "squish"]
    size_wh: Annotated[list[Side], Field(min_length=2, max_length=2)]
    scale: Annotated[Finite, Field(gt=0, le=1)]
    mean: Rgb
    std: PositiveRgb
    resample: Literal["bilinear"] = "bilinear"
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    channels: Literal["RGB"] = "RGB"


class ClassifierMeta(MetaModel):
    """A classifier file's metadata (class_export.onnx_metadata, plus the .tflite file's descriptions)."""

    model_config = ConfigDict(extra="ignore")  # format, producer, source, input, outputs: descriptions

    task: Literal["classify"] = "classify"
    classes: unique_names(2)
    preprocess: PreprocessMeta
    faces: FacesMeta | None = None

    @model_validator(mode="after")
    def _whole_are_classes(self):
        if self.faces and not set(self.faces.whole) <= set(self.classes):
            raise ValueError("faces.whole names a class the model does not have")
        return self


def _spec(m: ClassifierMeta) -> tuple[list, dict, dict | None]:
    return list(m.classes), m.preprocess.model_dump(), m.faces.model_dump(exclude_none=True) if m.faces else None


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
        meta = decode_json_fields(meta, ("classes", "preprocess", "faces"), self.path, ONNX_FIX)
        self.vocab, self.spec, self.faces = _spec(validated(ClassifierMeta, meta, self.path, ONNX_FIX))
        (inp,), out = self.session.get_inputs(), self.session.get_outputs()
        w, h = self.spec["size_wh"]
        if len(inp.shape) != 4 or len(out[0].shape) != 2:
            raise ChiquitoError(
                f"{self.path}: input {inp.shape}, output {out[0].shape}: not an image classifier; {ONNX_FIX}"
            )
        check_shape(self.path, "input (channels, height, width)", [3, h, w], inp.shape[1:], ONNX_FIX)
        check_shape(self.path, "classes", [len(self.vocab)], out[0].shape[1:], ONNX_FIX)
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
        self.vocab, self.spec, self.faces = _spec(validated(ClassifierMeta, meta, self.path, LITE_FIX))
        w, h = self.spec["size_wh"]
        check_shape(self.path, "input (height, width, channels)", [h, w, 3], session.input_shape[1:], LITE_FIX)
        check_shape(self.path, "classes", [len(self.vocab)], session.output_shapes["probabilities"][1:], LITE_FIX)

    def preprocess(self, im) -> np.ndarray:
        """One Pillow image → the uint8 H x W x 3 pixels the file takes."""
        return resized_image(im, self.spec)

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(x)["probabilities"]
