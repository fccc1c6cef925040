"""A model file's metadata is untrusted input: schemas for what `chiquito export` writes, checked when a
file is opened, and the check of the declared input size and class count against the graph's own shapes.

A `.onnx` file keeps its metadata as strings (JSON inside); a `.tflite` file as one JSON object (embedded,
or `model.tflite.json` beside it). Both arrive here as one dict; each task's runtime (its `*_runtime.py`)
names its schema. Every disagreement is a ChiquitoError of one line naming the file and the field.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StrictFloat, StrictInt, StrictStr, ValidationError

from .errors import ChiquitoError

__all__ = [
    "MetaModel",
    "Finite",
    "Side",
    "Label",
    "Rgb",
    "PositiveRgb",
    "ONNX_FIX",
    "LITE_FIX",
    "FacesMeta",
    "unique_names",
    "validated",
    "decode_json_fields",
    "check_shape",
    "MIN_SIDE",
    "MAX_SIDE",
]

MIN_SIDE, MAX_SIDE = 16, 4096  # an input side outside these is no exported model (and would be GBs of memory)


def _finite(v: float) -> float:
    if not math.isfinite(v):
        raise ValueError("not a finite number")
    return v


# an int is a number too (JSON writes 1.0 as 1 in some writers); bool is refused by Strict*
Finite = Annotated[StrictFloat | StrictInt, AfterValidator(lambda v: _finite(float(v)))]
Side = Annotated[StrictInt, Field(ge=MIN_SIDE, le=MAX_SIDE)]
Label = Annotated[StrictStr, Field(min_length=1, max_length=200)]
Rgb = Annotated[list[Finite], Field(min_length=3, max_length=3)]
PositiveRgb = Annotated[list[Annotated[Finite, Field(gt=0)]], Field(min_length=3, max_length=3)]  # a std

ONNX_FIX = "export it again with `chiquito export RUN --format onnx`"
LITE_FIX = "export it again with `chiquito export RUN --format tflite`"


def unique_names(least: int):
    """A list of at least `least` distinct labels."""

    def check(v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError("names repeat")
        return v

    return Annotated[list[Label], Field(min_length=least, max_length=10_000), AfterValidator(check)]


class MetaModel(BaseModel):
    """Strict: no unknown keys, no coercion of strings into numbers."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class FacesMeta(MetaModel):
    """What a model trained on face crops carries (core.face_detectors.face_meta)."""

    detector: Literal["blazeface", "mtcnn", "lbp"]
    min_score: Annotated[Finite, Field(ge=0, le=1)]
    margin: Annotated[Finite, Field(ge=0, le=2)]
    min_face: Annotated[StrictInt, Field(ge=1, le=10_000)]
    size: Side
    face_px: Annotated[StrictInt, Field(ge=0, le=MAX_SIDE)] = 0
    several: Literal["largest"] = "largest"
    whole: list[Label] = []
    weights_sha256: Annotated[StrictStr, Field(pattern=r"^[0-9a-f]{64}$")] | None = None


_BRANCHES = {"float", "int", "str", "list", "dict", "bool", "none"}  # a union's branch names in pydantic's loc


def _where(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"] if not (isinstance(p, str) and (p in _BRANCHES or "[" in p)))


def validated(schema: type[MetaModel], meta, path: Path, fix: str) -> MetaModel:
    """`meta` (a dict read from the file) as `schema`, or a one-line ChiquitoError naming `path`, the first
    bad field and `fix`."""
    if not isinstance(meta, dict):
        raise ChiquitoError(f"{path}: its metadata is a {type(meta).__name__}, not an object; {fix}")
    try:
        return schema.model_validate(meta)
    except ValidationError as e:
        err = e.errors()[0]
        shown = repr(err.get("input"))
        shown = shown if len(shown) <= 60 else shown[:57] + "..."
        msg = err["msg"].removeprefix("Value error, ")
        if not (where := _where(err)):  # a check across fields
            raise ChiquitoError(f"{path}: metadata: {msg}; {fix}") from None
        what = "missing" if err["type"] == "missing" else f"= {shown}: {msg[:1].lower() + msg[1:]}"
        raise ChiquitoError(f"{path}: metadata field '{where}' {what}; {fix}") from None


def decode_json_fields(meta: dict, fields: tuple[str, ...], path: Path, fix: str) -> dict:
    """Metadata whose values are strings with JSON inside (an ONNX file's metadata_props; a detector's
    size and score_threshold in a .tflite file's JSON) → values: each of `fields` that is a string is
    JSON-decoded (a one-line error names the one that is not JSON); the others are kept as they are."""
    out = dict(meta)
    for k in fields:
        if isinstance(out.get(k), str):
            try:
                out[k] = json.loads(out[k])  # NaN and Infinity decode as floats: the schema refuses them
            except (ValueError, RecursionError):
                raise ChiquitoError(f"{path}: metadata field '{k}' is not JSON ({out[k][:40]!r}); {fix}") from None
    return out


def check_shape(path: Path, what: str, declared, graph, fix: str) -> None:
    """The graph's own dimension(s) `graph` must equal the metadata's `declared` wherever the graph fixes
    them (an ONNX dimension given by name is free); the ranks must agree."""
    graph = list(graph)
    if len(graph) != len(declared) or any(isinstance(g, int) and g > 0 and g != d for d, g in zip(declared, graph)):
        raise ChiquitoError(f"{path}: metadata says {what} {list(declared)}, the graph's own shape is {graph}; {fix}")
