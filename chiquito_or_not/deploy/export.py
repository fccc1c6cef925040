"""Export: a run's model.pkl as one ONNX file (probabilities out), checked against PyTorch before it is kept.

The file has a dynamic batch dimension; its metadata holds the class names and the preprocessing
(resize, size, mean, std), so `onnxmodel.OnnxClassifier` (numpy + onnxruntime, no torch) or a phone app
can feed it. The parity check runs the run's validation images through PyTorch with fastai's own
preprocessing and through onnxruntime with ours: every argmax must agree and every probability be
within 1e-4, or the export fails and no file is left behind. `int8=True` adds a dynamically quantised
copy and reports its accuracy against the float model's.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..core.errors import ChiquitoError
from ..core.images import IMAGE_EXTS
from .predict import load_model, preprocess_spec

__all__ = ["export_onnx", "preprocess_spec", "ExportError", "PARITY_ATOL"]

PARITY_ATOL = 1e-4


class ExportError(ChiquitoError):
    """The exported file does not reproduce the model."""


def _valid_files(run: Path, limit: int) -> list[Path]:
    state = run / "state.json"
    root = Path(json.loads(state.read_text())["dataset"]) if state.is_file() else None
    if root is None or not (root / "valid").is_dir():
        raise ExportError(f"{run}: cannot find the validation images for the parity check "
                          "(state.json names the dataset); rebuild it with `chiquito dataset RECIPE`")
    files = sorted(p for p in (root / "valid").rglob("*") if p.suffix.lower() in IMAGE_EXTS)
    return files[:limit] if limit else files


def _torch_export(model, path: Path, size_wh) -> str:
    import warnings

    import torch

    x = torch.zeros(2, 3, size_wh[1], size_wh[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["probabilities"],
                              dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=18, dynamo=True,
                              verbose=False)
            return "torch.export"
        except Exception:  # noqa: BLE001 - fall back to the TorchScript exporter on any failure
            torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["probabilities"],
                              dynamic_axes={"input": {0: "batch"}, "probabilities": {0: "batch"}},
                              opset_version=18, dynamo=False)
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


def export_onnx(run: str | Path, int8: bool = False, out: Path | None = None, parity_limit: int = 0,
                log=print) -> dict:
    """Write RUN/model.onnx (and model.int8.onnx); returns the report also written as export.json."""
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        raise ChiquitoError("ONNX export needs onnx and onnxruntime: pip install 'chiquito-or-not[onnx]'") from None
    import numpy as np
    import torch

    from ..tasks.classify.onnxmodel import OnnxClassifier
    from .predict import predict_images

    run = Path(run)
    learn = load_model(run / "model.pkl")
    vocab = [str(v) for v in learn.dls.vocab]
    spec = preprocess_spec(learn)
    out = Path(out) if out else run / "model.onnx"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    model = torch.nn.Sequential(learn.model, torch.nn.Softmax(dim=1)).eval()
    t = time.time()
    exporter = _torch_export(model, tmp, spec["size_wh"])
    _set_metadata(tmp, {"classes": vocab, "preprocess": spec, "source": str((run / "model.pkl").resolve()),
                        "producer": "chiquito_or_not", "exporter": exporter})
    t_export = time.time() - t

    files = _valid_files(run, parity_limit)
    try:
        onnx_model = OnnxClassifier(tmp)
        from PIL import Image
        images = [Image.open(f).convert("RGB") for f in files]
        p_torch = predict_images(learn, images).numpy()  # fastai's preprocessing, PyTorch
        p_onnx = onnx_model.probabilities(images)  # ours, onnxruntime
        diff = float(np.abs(p_torch - p_onnx).max()) if len(files) else 0.0
        agree = int((p_torch.argmax(1) == p_onnx.argmax(1)).sum())
        if agree != len(files) or diff > PARITY_ATOL:
            raise ExportError(f"ONNX parity check failed on {len(files)} validation images: {agree} argmax agree, "
                              f"largest probability difference {diff:.2e} (limit {PARITY_ATOL:.0e}); "
                              "the export was not kept")
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    os.replace(tmp, out)
    labels = np.array([vocab.index(f.parent.name) if f.parent.name in vocab else -1 for f in files])
    report = {"onnx": str(out), "bytes": out.stat().st_size, "exporter": exporter, "export_s": round(t_export, 1),
              "parity": {"images": len(files), "argmax_agree": agree, "max_abs_diff": diff, "atol": PARITY_ATOL},
              "valid_accuracy": float((p_onnx.argmax(1) == labels).mean()) if len(files) else None}
    log(f"wrote {out} ({report['bytes'] / 1e6:.1f} MB, {exporter}); parity on {len(files)} validation images: "
        f"{agree}/{len(files)} argmax agree, max |p_torch - p_onnx| = {diff:.1e}")
    if int8:
        from onnxruntime.quantization import QuantType, quantize_dynamic

        q = out.with_name(out.stem + ".int8.onnx")
        qtmp = q.with_name(f".{q.name}.part")
        import logging

        try:
            logging.disable(logging.WARNING)  # it advises pre-processing through the root logger
            try:
                quantize_dynamic(str(out), str(qtmp), weight_type=QuantType.QInt8)
            finally:
                logging.disable(logging.NOTSET)
            _set_metadata(qtmp, {"classes": vocab, "preprocess": spec, "producer": "chiquito_or_not",
                                 "exporter": exporter, "quantization": "dynamic int8 (onnxruntime)"})
            p_q = OnnxClassifier(qtmp).probabilities(images)
        except BaseException:
            qtmp.unlink(missing_ok=True)
            raise
        os.replace(qtmp, q)
        acc_q = float((p_q.argmax(1) == labels).mean()) if len(files) else None
        report["int8"] = {"onnx": str(q), "bytes": q.stat().st_size, "valid_accuracy": acc_q,
                          "argmax_agree_with_float": int((p_q.argmax(1) == p_onnx.argmax(1)).sum()),
                          "max_abs_diff": float(np.abs(p_q - p_onnx).max()) if len(files) else 0.0}
        log(f"wrote {q} ({report['int8']['bytes'] / 1e6:.1f} MB); validation accuracy {acc_q:.4f} "
            f"vs {report['valid_accuracy']:.4f} in float ({acc_q - report['valid_accuracy']:+.4f}), "
            f"{report['int8']['argmax_agree_with_float']}/{len(files)} same predictions")
    from ..core.files import atomic_write_text
    atomic_write_text(out.with_name("export.json"), json.dumps(report, indent=1) + "\n")
    return report
