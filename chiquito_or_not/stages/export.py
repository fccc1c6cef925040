"""Export: a run's model.pkl as one ONNX file, checked against PyTorch before it is kept.

The file has a dynamic batch dimension; its metadata holds the task and what a runtime without this
package needs (for a classifier: class names and preprocessing, so `OnnxClassifier`, numpy +
onnxruntime, or a phone app can feed it). The run's task checks the file against PyTorch on the run's
validation images (a classifier: every argmax agrees, every probability within 1e-4), or the export fails
and no file is left behind. `int8=True` adds a dynamically quantised copy and reports how it differs.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import contextmanager
from pathlib import Path

from ..core.errors import ChiquitoError, ExportError
from ..core.files import atomic_write_text
from ..core.images import IMAGE_EXTS
from ..core.layout import RunFolder
from ..core.model_loader import load_model
from ..core.onnxfile import onnx_session
from ..core.paths import Roots
from ..core.task_registry import task_of_model
from ..data.face_crops import copy_detector
from .report import write_report

__all__ = ["export_onnx", "onnx_missing", "run_model", "ExportError"]


def _split_files(run: Path, split: str, limit: int) -> list[Path]:
    """The images of one split of the run's dataset (state.json names it), at most `limit` (0: all)."""
    state = RunFolder(run).state
    root = Path(json.loads(state.read_text())["dataset"]) if state.is_file() else None
    if root is None or not (root / split).is_dir():
        raise ExportError(
            f"{run}: cannot find the {split} images for the check (state.json names the dataset); "
            "rebuild it with `chiquito dataset RECIPE`"
        )
    files = sorted(p for p in (root / split).rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    return files[:limit] if limit else files


def _torch_export(model, x, path: Path, outputs=("probabilities",)) -> str:
    import warnings

    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = {"input_names": ["input"], "output_names": list(outputs), "opset_version": 18}
        try:
            torch.onnx.export(
                model,
                (x,),
                str(path),
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                dynamo=True,
                verbose=False,
                **names,
            )
            return "torch.export"
        except Exception:  # noqa: BLE001 - fall back to the TorchScript exporter on any failure
            batch = {"input": {0: "batch"}, **{o: {0: "batch"} for o in outputs}}
            torch.onnx.export(model, (x,), str(path), dynamic_axes=batch, dynamo=False, **names)
            return "torchscript"


def _set_metadata(path: Path, meta: dict) -> None:
    import onnx

    m = onnx.load(str(path), load_external_data=True)
    del m.metadata_props[:]
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v if isinstance(v, str) else json.dumps(v)
    onnx.save(m, str(path))  # one file: weights inline (an EfficientNet-Lite0 is ~14 MB)
    for extra in path.parent.glob(path.name + ".data"):
        extra.unlink()


@contextmanager
def _kept_if_checked(tmp: Path, out: Path):
    """The block checks `tmp`; it replaces `out` only when the block succeeds, else it is deleted."""
    try:
        yield
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)


def onnx_missing() -> str:
    """What the ONNX export lacks ("" when onnx and onnxruntime are installed)."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return "ONNX export needs onnx and onnxruntime: pip install 'chiquito-or-not[onnx]'"
    return ""


def run_model(run, roots: Roots | None) -> tuple:
    """(run folder path, its RunFolder, its model.pkl loaded, the model's task): what each export starts from."""
    folder = RunFolder(Path(run))
    model = load_model(folder.model, roots=roots)
    return folder.root, folder, model, task_of_model(model)


def export_onnx(
    run: str | Path,
    int8: bool = False,
    out: Path | None = None,
    parity_limit: int = 0,
    log=print,
    roots: Roots | None = None,
) -> dict:
    """Write RUN/model.onnx (and model.int8.onnx); returns the report also written as export.json."""
    if problem := onnx_missing():
        raise ChiquitoError(problem)

    run, folder, model, task = run_model(run, roots)
    meta = task.export.onnx_metadata(model)
    out = Path(out) if out else folder.onnx
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    graph, example = task.export.onnx_graph(model)
    t = time.time()
    exporter = _torch_export(graph, example, tmp, task.export.onnx_outputs)
    _set_metadata(
        tmp, {**meta, "source": str(folder.model.resolve()), "producer": "chiquito_or_not", "exporter": exporter}
    )
    t_export = time.time() - t

    files = _split_files(run, "valid", parity_limit)
    with _kept_if_checked(tmp, out):
        check = task.export.parity(model, task.inference.onnx_model(tmp, onnx_session(tmp)), files, "ONNX")
    summary = check.pop("summary")
    report = {
        "onnx": str(out),
        "bytes": out.stat().st_size,
        "exporter": exporter,
        "export_s": round(t_export, 1),
        **check,
    }
    log(f"wrote {out} ({report['bytes'] / 1e6:.1f} MB, {exporter}); {summary}")
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = out.with_name(out.stem + ".int8.onnx")
        qtmp = q.with_name(f".{q.name}.part")
        import logging

        with _kept_if_checked(qtmp, q):
            logging.disable(logging.WARNING)  # it advises pre-processing through the root logger
            try:
                quantize_dynamic(str(out), str(qtmp), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            _set_metadata(
                qtmp,
                {
                    **meta,
                    "producer": "chiquito_or_not",
                    "exporter": exporter,
                    "quantization": "dynamic int8 (onnxruntime)",
                },
            )
            diff = task.export.compare(
                task.inference.onnx_model(out, onnx_session(out)),
                task.inference.onnx_model(qtmp, onnx_session(qtmp)),
                files,
            )
        summary = diff.pop("summary")
        report["int8"] = {"onnx": str(q), "bytes": q.stat().st_size, **diff}
        log(f"wrote {q} ({report['int8']['bytes'] / 1e6:.1f} MB); {summary}")

    if det := copy_detector(model.faces, out.parent, model.raw):
        report["face_detector"] = str(det)  # a model trained on face crops travels with its detector
        log(f"wrote {det} (the face detector predict and serve crop with)")
    atomic_write_text(out.with_name(folder.export_report.name), json.dumps(report, indent=1) + "\n")
    if out.parent.resolve() == folder.root.resolve():  # the run's own export: its page shows it
        write_report(folder.root, log=log)
    return report
