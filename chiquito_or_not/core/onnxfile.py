"""Opening an exported .onnx file on onnxruntime (no torch): what predict, serve and every task's ONNX
runtime side share."""

from __future__ import annotations

from pathlib import Path

from .errors import ChiquitoError

__all__ = ["onnx_session"]


def onnx_session(p: Path, threads: int = 0):
    """An onnxruntime CPU session on the file, or a one-line ChiquitoError (missing, unreadable, no extra)."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise ChiquitoError("ONNX models need onnxruntime: pip install 'chiquito-or-not[onnx]'") from None
    if not p.is_file():
        raise ChiquitoError(f"{p}: no such model file; write one with `chiquito export RUN --format onnx`")
    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(str(p), opts, providers=["CPUExecutionProvider"])
    except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise ChiquitoError(
            f"{p}: not a readable ONNX model ({str(e).splitlines()[0][:120]}); "
            "export it again with `chiquito export RUN --format onnx`"
        ) from None
