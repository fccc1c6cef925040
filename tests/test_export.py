"""ONNX export of the tiny run's real model: parity, metadata, int8, torch-free predict, serving it."""

import json
import subprocess
import sys

import pytest

pytest.importorskip("onnxruntime", reason="needs the onnx extra: pip install 'chiquito-or-not[onnx]'")
pytest.importorskip("onnx", reason="needs the onnx extra: pip install 'chiquito-or-not[onnx]'")

from chiquito_or_not.core.errors import ChiquitoError
from chiquito_or_not.core.model_loader import load_model
from chiquito_or_not.core.paths import Roots
from chiquito_or_not.stages.export import ExportError, export_onnx
from chiquito_or_not.stages.predict import expand_paths, predict_paths
from chiquito_or_not.tasks.classify.class_runtime import OnnxClassifier

from .helpers import subprocess_env
from .httpserver import jpeg_bytes

pytestmark = [pytest.mark.slow, pytest.mark.registry]

NO_TORCH = """
import sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("torch", "fastai", "torchvision", "timm"):
            raise ImportError("blocked: " + name)
sys.meta_path.insert(0, Block())
from chiquito_or_not.cli import app
try:
    app(sys.argv[1:], prog_name="chiquito", standalone_mode=False)
finally:
    print("TORCH_LOADED", "torch" in sys.modules, file=sys.stderr)
"""


@pytest.fixture(scope="module")
def exported(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx") / "model.onnx"
    report = export_onnx(tiny_run[1].run, int8=True, out=out, log=lambda *_: None)
    return out, report


def test_export_passes_parity_and_carries_its_metadata(tiny_run, exported):
    out, report = exported
    p = report["parity"]
    assert p["images"] > 0 and p["argmax_agree"] == p["images"] and p["max_abs_diff"] <= 1e-4
    assert json.loads((out.parent / "export.json").read_text())["parity"] == p
    m = OnnxClassifier(out)
    assert m.vocab == ["face", "not_face"]
    assert m.spec["size_wh"] == [64, 64] and m.spec["resize"] == "crop" and len(m.spec["mean"]) == 3
    assert m.session.get_inputs()[0].shape[0] == "batch"  # dynamic batch dimension
    q = report["int8"]
    assert q["bytes"] < report["bytes"] / 2
    # accuracy can only move by the share of images whose prediction the int8 copy changed
    changed = (p["images"] - q["argmax_agree_with_float"]) / p["images"]
    assert abs(q["valid_accuracy"] - report["valid_accuracy"]) <= changed + 1e-9
    assert not list(out.parent.glob(".*part"))


def test_onnx_predictions_match_the_pkl_on_other_images(tiny_run, exported, tmp_path):
    from PIL import Image

    from .helpers import save_crops

    files = save_crops(tmp_path, "astronaut", 5, size=150) + save_crops(tmp_path, "coffee", 5, size=90)
    Image.open(files[0]).resize((200, 120)).save(files[0])  # not square: the crop matters
    model = load_model(tiny_run[1].run / "model.pkl")
    pkl = predict_paths(model, files, bs=3)  # our preprocessing, batched, in worker threads
    onx = predict_paths(load_model(exported[0]), files)
    for f, a, b in zip(files, pkl, onx):
        assert a.label == b.label and not a.error and not b.error
        assert all(abs(a.probabilities[k] - b.probabilities[k]) < 1e-4 for k in a.probabilities)
        label, _, probs = model.learn.predict(f)  # fastai's own pipeline, one image at a time
        assert a.label == str(label) and max(abs(x - y) for x, y in zip(a.probabilities.values(), probs)) < 1e-5


def test_a_mismatch_fails_the_export_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from chiquito_or_not.tasks.classify import class_inference

    real = class_inference.preprocess_spec

    def wrong_mean(learn):  # a preprocessing that does not match the model's: the check must catch it
        spec = real(learn)
        spec["mean"] = [m + 0.5 for m in spec["mean"]]  # inputs shifted and doubled: even a sure model moves
        spec["std"] = [s * 0.5 for s in spec["std"]]
        return spec

    monkeypatch.setattr(class_inference, "preprocess_spec", wrong_mean)  # what the exported metadata carries
    with pytest.raises(ExportError, match="parity check failed"):
        export_onnx(tiny_run[1].run, out=tmp_path / "bad.onnx", log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_predict_onnx_runs_without_torch(tiny_run, exported, env_roots):
    valid = Roots.from_env().dataset(tiny_run[0].name) / "valid"
    files = expand_paths([valid])
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "predict", str(exported[0]), str(valid), "--json"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=120,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert "TORCH_LOADED False" in r.stderr
    got = json.loads(r.stdout)
    want = predict_paths(load_model(tiny_run[1].run / "model.pkl"), files)
    assert [g["label"] for g in got] == [w.label for w in want] and len(got) == len(files) > 0


def test_bad_onnx_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(ChiquitoError, match="not a readable ONNX model"):
        OnnxClassifier(tmp_path / "junk.onnx")
    with pytest.raises(ChiquitoError, match="no such model file"):
        OnnxClassifier(tmp_path / "missing.onnx")


def test_the_app_serves_the_onnx_model(exported):
    from fastapi.testclient import TestClient

    from chiquito_or_not.stages.serve import create_app

    client = TestClient(create_app(exported[0]))
    assert client.get("/healthz").json()["classes"] == ["face", "not_face"]
    r = client.post("/api/predict", files={"file": ("x.jpg", jpeg_bytes(3), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert abs(sum(r.json()["probabilities"].values()) - 1) < 1e-4
