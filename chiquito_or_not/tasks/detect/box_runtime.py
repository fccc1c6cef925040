"""An exported detector (model.onnx) on onnxruntime, numpy and Pillow only: no torch.

The file holds body, head and box decoding (outputs `boxes` N x A x 4 in input pixels and `scores`
N x A x C); its metadata holds labels, input size, normalisation and the post-processing parameters,
which postprocess.py applies (the same code that serves the PyTorch model)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import numpy as np
from pydantic import ConfigDict, Field, StrictInt

from ...core.errors import ChiquitoError
from ...core.model_loader import RuntimeModel
from ...core.model_meta import (
    LITE_FIX,
    ONNX_FIX,
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
from .box_postprocess import preprocess, resized

__all__ = ["OnnxDetector", "LiteDetector", "DetectorMeta"]

JSON_FIELDS = ("labels", "size", "mean", "std", "postprocess", "score_threshold")
Share = Annotated[Finite, Field(ge=0, le=1)]


class PostMeta(MetaModel):
    """box_postprocess.postprocess's keywords, nothing else."""

    score_thresh: Share
    nms_iou: Share
    topk_candidates: Annotated[StrictInt, Field(ge=1, le=100_000)]
    detections_per_img: Annotated[StrictInt, Field(ge=1, le=10_000)]


class DetectorMeta(MetaModel):
    """A detector file's metadata (box_export.onnx_metadata, plus the .tflite file's descriptions)."""

    model_config = ConfigDict(extra="ignore")  # format, producer, source, input, outputs: descriptions

    task: Literal["detect"]
    labels: unique_names(1)
    size: Side
    mean: Rgb
    std: PositiveRgb
    postprocess: PostMeta
    score_threshold: Share


def _spec(path, meta: dict, fix: str) -> dict:
    m = validated(DetectorMeta, meta, path, fix)
    return {
        "labels": list(m.labels),
        "size": m.size,
        "mean": list(m.mean),
        "std": list(m.std),
        "post": m.postprocess.model_dump(),
        "score_threshold": float(m.score_threshold),
    }


def _check_graph(path, spec: dict, image_hw, boxes_shape, scores_shape, fix: str) -> None:
    """The declared size and label count against the graph's own input and output shapes."""
    s, n = spec["size"], len(spec["labels"])
    check_shape(path, "input size (height, width)", [s, s], image_hw, fix)
    if len(boxes_shape) != 3 or len(scores_shape) != 3:
        raise ChiquitoError(
            f"{path}: outputs of shapes {list(boxes_shape)} and {list(scores_shape)}, expected "
            f"N x anchors x 4 and N x anchors x labels; {fix}"
        )
    check_shape(path, "box coordinates", [4], boxes_shape[2:], fix)
    check_shape(path, "labels", [n], scores_shape[2:], fix)


class OnnxDetector(RuntimeModel):
    """An ONNX file from `chiquito export` as a detector: RuntimeModel's surface, `spec` its input and
    post-processing."""

    task = "detect"

    def __init__(self, path, session):
        self.path, self.session = Path(path), session
        meta = decode_json_fields(session.get_modelmeta().custom_metadata_map, JSON_FIELDS, self.path, ONNX_FIX)
        self.spec = _spec(self.path, meta, ONNX_FIX)
        self.vocab = self.spec["labels"]
        self.input = session.get_inputs()[0].name
        names = [o.name for o in session.get_outputs()]
        if names != ["boxes", "scores"]:
            raise ChiquitoError(f"{path}: outputs {names}, expected boxes and scores; export it again")
        (inp,), (boxes, scores) = session.get_inputs(), session.get_outputs()
        if len(inp.shape) != 4:
            raise ChiquitoError(f"{path}: input {inp.shape}: not an image detector; {ONNX_FIX}")
        check_shape(self.path, "input channels", [3], inp.shape[1:2], ONNX_FIX)
        _check_graph(self.path, self.spec, inp.shape[2:], boxes.shape, scores.shape, ONNX_FIX)

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
        meta = decode_json_fields(session.metadata, ("size", "score_threshold"), self.path, LITE_FIX)
        self.spec = _spec(self.path, meta, LITE_FIX)  # the .tflite JSON keeps the ONNX strings of these two
        self.vocab = self.spec["labels"]
        if session.output_names != ["boxes", "scores"]:
            raise ChiquitoError(f"{path}: outputs {session.output_names}, expected boxes and scores; export it again")
        shapes = session.output_shapes
        check_shape(self.path, "input channels", [3], session.input_shape[3:], LITE_FIX)
        _check_graph(self.path, self.spec, session.input_shape[1:3], shapes["boxes"], shapes["scores"], LITE_FIX)

    def preprocess(self, im) -> np.ndarray:
        """One PIL image → the uint8 size x size x 3 pixels the file takes."""
        return resized(im, self.spec["size"])

    def run(self, x: np.ndarray):
        out = self.session.run(x)
        return out["boxes"], out["scores"]
