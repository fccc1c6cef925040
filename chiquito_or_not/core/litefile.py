"""Opening an exported .tflite file in the LiteRT interpreter (PyPI `ai-edge-litert`; no torch), as a phone
would: batch 1, channels last (N x H x W x 3), the resized RGB pixels as uint8 or float32 0..255, outputs
told apart by their names in the file's signature. What predict, serve and the export's parity check share.

The file's metadata (labels, input, normalisation, post-processing) is the JSON written beside it,
`model.tflite.json`; export also embeds the same JSON in the file (flatbuffer metadata "chiquito") and
this reader prefers the embedded copy, so a lone .tflite file still works.
"""

from __future__ import annotations

import json
import os
from contextlib import contextmanager
from pathlib import Path

from .errors import ChiquitoError

__all__ = ["LiteSession", "META_NAME", "sidecar", "read_embedded_metadata", "quiet"]

META_NAME = "chiquito"  # the flatbuffer metadata entry that holds the JSON


@contextmanager
def quiet():
    """LiteRT's C++ layers (and litert-torch's converter) print to the process's stdout and stderr: keep
    that out of a command's output, whose lines are its answer (failures are reported in one line)."""
    import sys
    import tempfile

    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            os.close(saved[0])
            os.close(saved[1])


def sidecar(p: Path) -> Path:
    """The JSON written beside a .tflite file."""
    return p.with_name(p.name + ".json")


def read_embedded_metadata(p: Path) -> dict | None:
    """The JSON embedded in the file's flatbuffer metadata under META_NAME, or None."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return None
    try:
        buf = p.read_bytes()
        model = schema.Model.GetRootAsModel(buf, 0)
        for i in range(model.MetadataLength()):
            m = model.Metadata(i)
            if m.Name() and m.Name().decode() == META_NAME:
                data = model.Buffers(m.Buffer()).DataAsNumpy()
                return json.loads(bytes(data).decode())
    except Exception:  # noqa: BLE001 - a damaged file: the interpreter's own error says more
        return None
    return None


class LiteSession:
    """The LiteRT interpreter on one .tflite file: `metadata`, `input_name`, `input_dtype`, `input_shape`,
    `output_names`, `output_shapes` and `run(batch)` → {output name: array}, one image at a time (the file
    has batch 1)."""

    def __init__(self, p: Path, threads: int = 0):
        import numpy as np

        try:
            from ai_edge_litert.interpreter import Interpreter
        except ImportError:
            raise ChiquitoError(
                ".tflite models need the LiteRT interpreter: pip install 'chiquito-or-not[litert]'"
            ) from None
        p = Path(p)
        if not p.is_file():
            raise ChiquitoError(f"{p}: no such model file; write one with `chiquito export RUN --format tflite`")
        meta = read_embedded_metadata(p)
        if meta is None and sidecar(p).is_file():
            try:
                meta = json.loads(sidecar(p).read_text())
            except (OSError, ValueError) as e:
                raise ChiquitoError(f"{sidecar(p)}: unreadable ({e}); export the model again") from None
        if not isinstance(meta, dict) or "task" not in meta:
            raise ChiquitoError(
                f"{p}: no chiquito metadata in the file or beside it ({sidecar(p).name}); "
                "export it with `chiquito export RUN --format tflite`"
            )
        try:
            with quiet():  # "INFO: Created TensorFlow Lite XNNPACK delegate for CPU."
                self.interpreter = Interpreter(model_path=str(p), num_threads=threads or None)
                sigs = self.interpreter.get_signature_list()
                self.signature = next(iter(sigs))
                self.runner = self.interpreter.get_signature_runner(self.signature)
                self.runner(
                    **{
                        n: np.zeros(d["shape"], d["dtype"])  # the delegate is set up on the first run
                        for n, d in self.runner.get_input_details().items()
                    }
                )
        except Exception as e:  # noqa: BLE001 - LiteRT raises ValueError/RuntimeError with long texts
            raise ChiquitoError(
                f"{p}: not a readable LiteRT model ({str(e).splitlines()[0][:120]}); "
                "export it again with `chiquito export RUN --format tflite`"
            ) from None
        inputs = self.runner.get_input_details()
        if len(inputs) != 1:
            raise ChiquitoError(f"{p}: {len(inputs)} inputs, expected one image; export it again")
        ((self.input_name, detail),) = inputs.items()
        self.input_dtype, self.input_shape = detail["dtype"], tuple(int(v) for v in detail["shape"])
        outputs = self.runner.get_output_details()
        self.output_names = sorted(outputs)
        self.output_shapes = {n: tuple(int(v) for v in d["shape"]) for n, d in outputs.items()}
        self.path, self.metadata = p, meta

    def run(self, x) -> dict:
        """{output name: N x ... array} for an N x H x W x 3 batch of resized RGB pixels (0..255)."""
        import numpy as np

        x = np.asarray(x)
        if x.dtype != self.input_dtype:
            x = np.clip(np.rint(x), 0, 255) if self.input_dtype == np.uint8 else x
            x = x.astype(self.input_dtype)
        outs = [self.runner(**{self.input_name: x[i : i + 1]}) for i in range(len(x))]
        return {k: np.concatenate([o[k] for o in outs]) if outs else np.zeros((0,)) for k in self.output_names}
