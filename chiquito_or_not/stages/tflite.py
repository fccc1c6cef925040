"""Export for phones: a run's model.pkl as a LiteRT (.tflite) file, kept only if the LiteRT interpreter
loaded it and it reproduced PyTorch on the run's validation images.

The graph takes what a camera frame becomes after a resize: batch 1, channels last (1 x H x W x 3),
RGB pixel values 0..255 as float32 (or uint8 with `uint8=True`); the normalisation is inside the graph.
Outputs are named in the file's signature (`probabilities`; a detector's `boxes` and `scores`). The
metadata (labels, input, normalisation, post-processing) is embedded in the file and written beside it
as JSON. Conversion is litert-torch's (PyPI `litert-torch`, no TensorFlow); `int8=True` adds a copy
quantised after training (PT2E, static int8, calibrated on the run's training images) and reports its
accuracy or mAP beside the float file's. Any failure: exit 2, one line, no file left behind.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from ..core.errors import ChiquitoError, ExportError
from ..core.files import atomic_write_text
from ..core.litefile import META_NAME, LiteSession, quiet, sidecar
from ..core.paths import Roots
from ..data.face_crops import copy_detector
from .export import _kept_if_checked, _split_files, run_model
from .report import write_report

__all__ = ["export_tflite", "embed_metadata"]

CALIBRATION_IMAGES = 64  # training images through the observers before int8 conversion


def _lowerable(model):
    """A copy of `model` with the layers LiteRT has no lowering for replaced by equal plain ops: fastai's
    head pools with AdaptiveMaxPool2d(1), which becomes a max over the spatial axes."""
    import copy

    import torch

    class GlobalMax(torch.nn.Module):
        def forward(self, x):
            return x.amax(dim=(2, 3), keepdim=True)

    model = copy.deepcopy(model)
    for name, m in list(model.named_modules()):
        if isinstance(m, torch.nn.AdaptiveMaxPool2d) and m.output_size in (1, (1, 1)):
            parent = model.get_submodule(name.rsplit(".", 1)[0]) if "." in name else model
            setattr(parent, name.rsplit(".", 1)[-1], GlobalMax())
    return model


def _phone_graph(model, spec: dict, outputs: tuple, uint8: bool):
    """The task's export graph behind a phone input: N x H x W x 3 pixels (0..255) → normalised
    N x 3 x H x W inside the graph; outputs as a dict, so the file's signature names them."""
    import torch

    model = _lowerable(model)

    class PhoneInput(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model
            self.register_buffer("mean", torch.tensor(spec["mean"]).view(1, 3, 1, 1) / spec["scale"])
            self.register_buffer("std", torch.tensor(spec["std"]).view(1, 3, 1, 1) / spec["scale"])

        def forward(self, pixels):
            x = (pixels.permute(0, 3, 1, 2).float() - self.mean) / self.std
            out = self.model(x)
            return dict(zip(outputs, out if isinstance(out, tuple) else (out,)))

    w, h = spec["size_wh"]
    example = torch.zeros(1, h, w, 3, dtype=torch.uint8 if uint8 else torch.float32)
    return PhoneInput().eval(), example


def embed_metadata(path: Path, meta: dict) -> bool:
    """Add the JSON as the flatbuffer metadata entry META_NAME (LiteRT ignores entries it does not know).
    False when the schema module is not available (the JSON beside the file still holds it)."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        return False
    m = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(path.read_bytes(), 0))
    buf = schema.BufferT()
    buf.data = list(json.dumps(meta).encode())
    m.buffers.append(buf)
    entry = schema.MetadataT()
    entry.name, entry.buffer = META_NAME, len(m.buffers) - 1
    m.metadata = [e for e in (m.metadata or []) if e.name not in (META_NAME, b"chiquito")] + [entry]
    b = flatbuffers.Builder(1024)
    b.Finish(m.Pack(b), file_identifier=b"TFL3")
    path.write_bytes(bytes(b.Output()))
    return True


def _convert(module, example, calibration=None):
    """litert-torch conversion; with `calibration` (example batches), static int8 PT2E quantisation."""
    import warnings

    import litert_torch

    with warnings.catch_warnings(), quiet():
        warnings.simplefilter("ignore")
        kw = {"pixels": example}  # the input's name in the signature
        if calibration is None:
            return litert_torch.convert(module, sample_kwargs=kw)
        import torch
        from litert_torch.quantize.pt2e_quantizer import PT2EQuantizer, get_symmetric_quantization_config
        from litert_torch.quantize.quant_config import QuantConfig
        from torchao.quantization.pt2e.quantize_pt2e import convert_pt2e, prepare_pt2e

        quantizer = PT2EQuantizer().set_global(get_symmetric_quantization_config(is_per_channel=True, is_dynamic=False))
        m = torch.export.export(module, (), kw).module()
        m = prepare_pt2e(m, quantizer)
        with torch.no_grad():
            for x in calibration:
                m(pixels=x)
        m = convert_pt2e(m, fold_quantize=False)
        return litert_torch.convert(m, sample_kwargs=kw, quant_config=QuantConfig(pt2e_quantizer=quantizer))


def _write(edge, tmp: Path, meta: dict) -> bool:
    with quiet():
        edge.export(str(tmp))
    return embed_metadata(tmp, meta)


def _calibration(run: Path, model, limit: int, uint8: bool):
    import numpy as np
    import torch
    from PIL import Image

    files = _split_files(run, "train", 0)
    step = max(1, len(files) // limit)
    out = []
    for f in files[::step][:limit]:  # spread over the sorted list: every class, not the first folder only
        with Image.open(f) as im:
            x = model.preprocess(im.convert("RGB"))
        out.append(torch.from_numpy(np.array(x[None])).to(torch.uint8 if uint8 else torch.float32))
    return out


def export_tflite(
    run: str | Path,
    int8: bool = False,
    uint8: bool = False,
    out: Path | None = None,
    parity_limit: int = 0,
    log=print,
    roots: Roots | None = None,
) -> dict:
    """Write RUN/model.tflite (+ .json beside it; and model.int8.tflite); returns the report also
    written beside it as export_tflite.json."""
    try:
        with quiet():  # torch logs a deprecation from torchao's import
            import litert_torch  # noqa: F401
            from ai_edge_litert.interpreter import Interpreter  # noqa: F401
    except ImportError:
        raise ChiquitoError("TFLite export needs litert-torch: pip install 'chiquito-or-not[tflite]'") from None

    run, folder, model, task = run_model(run, roots)
    spec = task.export.input_spec(model)
    w, h = spec["size_wh"]
    meta = {
        **task.export.onnx_metadata(model),
        "format": "tflite",
        "producer": "chiquito_or_not",
        "source": str(folder.model.resolve()),
        "input": {
            "name": "pixels",
            "shape": [1, h, w, 3],
            "layout": "NHWC",
            "channels": "RGB",
            "dtype": "uint8" if uint8 else "float32",
            "range": [0, 255],
            "resize": "as the preprocess/size entries say (the normalisation is inside the graph)",
            "normalisation_inside": {"mean": spec["mean"], "std": spec["std"], "scale": spec["scale"]},
        },
        "outputs": list(task.export.onnx_outputs),
    }
    out = Path(out) if out else run / "model.tflite"
    out.parent.mkdir(parents=True, exist_ok=True)
    if "preprocess" in meta:  # a classifier's resize entries hold for the file; its layout is channels last
        meta["preprocess"] = {**meta["preprocess"], "layout": "NHWC"}
    files = _split_files(run, "valid", parity_limit)

    def one(path: Path, calibration=None, reference=None) -> dict:
        tmp, tmp_json = path.with_name(f".{path.name}.part"), sidecar(path.with_name(f".{path.name}.part"))
        m = {**meta, "quantization": "static int8 (PT2E), calibrated on training images" if calibration else "none"}
        module, example = _phone_graph(task.export.onnx_graph(model)[0], spec, task.export.onnx_outputs, uint8)
        t = time.time()
        try:
            edge = _convert(module, example, calibration)
            embedded = _write(edge, tmp, m)
        except Exception as e:  # noqa: BLE001 - the converter raises many types; one line, no file
            tmp.unlink(missing_ok=True)
            first = (str(e).strip().splitlines() or [type(e).__name__])[0][:160]
            raise ExportError(f"LiteRT conversion failed ({type(e).__name__}: {first}); no file was kept") from None
        secs = time.time() - t
        atomic_write_text(tmp_json, json.dumps(m, indent=1) + "\n")
        try:
            with _kept_if_checked(tmp, path):
                try:
                    session = LiteSession(tmp)
                except ChiquitoError as e:
                    raise ExportError(
                        f"the LiteRT interpreter cannot run the converted file ({e}); no file was kept"
                    ) from None
                exported = task.inference.lite_model(tmp, session)
                check = (
                    task.export.parity(model, exported, files, "LiteRT")
                    if calibration is None
                    else task.export.compare(reference, exported, files)
                )
                os.replace(tmp_json, sidecar(path))  # the JSON first: the model never stands without it
        finally:
            tmp_json.unlink(missing_ok=True)
        return {
            "tflite": str(path),
            "bytes": path.stat().st_size,
            "convert_s": round(secs, 1),
            "metadata_embedded": embedded,
            **check,
        }

    report = one(out)
    log(f"wrote {out} ({report['bytes'] / 1e6:.1f} MB) and {sidecar(out).name}; {report.pop('summary')}")
    if int8:
        reference = task.inference.lite_model(out, LiteSession(out))
        q = out.with_name(out.stem + ".int8.tflite")
        rep = one(q, _calibration(run, reference, CALIBRATION_IMAGES, uint8), reference)
        log(f"wrote {q} ({rep['bytes'] / 1e6:.1f} MB); {rep.pop('summary')}")
        report["int8"] = rep

    if det := copy_detector(model.faces, out.parent, model.raw):
        report["face_detector"] = str(det)  # a model trained on face crops travels with its detector
        log(f"wrote {det} (the face detector predict and serve crop with)")
    atomic_write_text(out.with_name("export_tflite.json"), json.dumps(report, indent=1) + "\n")
    if out.parent.resolve() == folder.root.resolve():  # the run's own export: its page shows it
        write_report(folder.root, log=log)
    return report
