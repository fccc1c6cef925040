"""TFLite (LiteRT) export of the tiny run's real classifier: a file exists only if the LiteRT interpreter
ran it and it reproduced PyTorch; metadata in and beside it; int8; torch-free predict; serving it."""

import json
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("litert_torch", reason="needs the tflite extra: pip install 'chiquito-or-not[tflite]'")
pytest.importorskip("ai_edge_litert", reason="needs the tflite extra: pip install 'chiquito-or-not[tflite]'")

from chiquito_or_not.core.errors import ChiquitoError, ExportError
from chiquito_or_not.core.litefile import LiteSession, read_embedded_metadata, sidecar
from chiquito_or_not.core.model_loader import load_model
from chiquito_or_not.core.paths import Roots
from chiquito_or_not.stages.predict import expand_paths, predict_paths
from chiquito_or_not.stages.tflite import export_tflite

from .helpers import subprocess_env
from .httpserver import jpeg_bytes
from .test_export import NO_TORCH

pytestmark = [pytest.mark.slow, pytest.mark.registry]


@pytest.fixture(scope="module")
def lite(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("tflite") / "model.tflite"
    report = export_tflite(tiny_run[1].run, int8=True, out=out, log=lambda *_: None)
    return out, report


def test_export_passes_parity_and_carries_its_metadata(tiny_run, lite):
    out, report = lite
    p = report["parity"]
    assert p["images"] > 0 and p["argmax_agree"] == p["images"] and p["max_abs_diff"] <= 1e-4
    s = LiteSession(out)
    assert s.input_shape == (1, 64, 64, 3) and s.input_dtype == np.float32  # a camera frame: NHWC, batch 1
    assert s.output_names == ["probabilities"]
    embedded, beside = read_embedded_metadata(out), json.loads(sidecar(out).read_text())
    assert embedded == beside and beside["classes"] == ["face", "not_face"]
    assert beside["input"]["layout"] == "NHWC" and beside["input"]["shape"] == [1, 64, 64, 3]
    assert len(beside["input"]["normalisation_inside"]["mean"]) == 3
    q = report["int8"]
    assert q["bytes"] < report["bytes"] / 2  # weights in int8
    changed = (p["images"] - q["argmax_agree_with_float"]) / p["images"]
    assert abs(q["valid_accuracy"] - q["valid_accuracy_float"]) <= changed + 1e-9
    assert q["valid_accuracy"] >= 0.75  # a quantised model that still answers (the float one: 1.0 here)
    assert not list(out.parent.glob(".*part"))


def test_tflite_predictions_match_the_pkl_on_other_images(tiny_run, lite, tmp_path):
    from PIL import Image

    from .helpers import save_crops

    files = save_crops(tmp_path, "astronaut", 4, size=150) + save_crops(tmp_path, "coffee", 4, size=90)
    Image.open(files[0]).resize((200, 120)).save(files[0])  # not square: the crop matters
    pkl = predict_paths(load_model(tiny_run[1].run / "model.pkl"), files)
    tfl = predict_paths(load_model(lite[0]), files)
    for a, b in zip(pkl, tfl):
        assert a.label == b.label and not a.error and not b.error
        assert all(abs(a.probabilities[k] - b.probabilities[k]) < 1e-4 for k in a.probabilities)


def test_uint8_input_and_a_lone_file_without_its_json(tiny_run, tmp_path):
    out = tmp_path / "u8.tflite"
    report = export_tflite(tiny_run[1].run, uint8=True, out=out, log=lambda *_: None)
    assert report["parity"]["argmax_agree"] == report["parity"]["images"]
    assert LiteSession(out).input_dtype == np.uint8
    sidecar(out).unlink()  # the copy embedded in the file is enough
    assert load_model(out).vocab == ["face", "not_face"]


def test_a_mismatch_fails_the_export_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from chiquito_or_not.tasks.classify.class_task import ClassExport

    real = ClassExport.input_spec

    def wrong_mean(self, learn):  # a graph that normalises differently from training: the check must catch it
        spec = real(self, learn)
        return {**spec, "mean": [m + 0.5 for m in spec["mean"]], "std": [s * 0.5 for s in spec["std"]]}

    monkeypatch.setattr(ClassExport, "input_spec", wrong_mean)
    with pytest.raises(ExportError, match="LiteRT parity check failed"):
        export_tflite(tiny_run[1].run, out=tmp_path / "bad.tflite", log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_a_conversion_error_is_one_line_and_leaves_nothing(tiny_run, tmp_path, monkeypatch):
    from chiquito_or_not.stages import tflite

    # fastai's head pools with AdaptiveMaxPool2d, which LiteRT cannot lower; the export swaps it for an
    # equal max over the spatial axes. Without that swap the real converter fails: the error must say so
    monkeypatch.setattr(tflite, "_lowerable", lambda model: model)
    with pytest.raises(ExportError, match=r"^LiteRT conversion failed \(.*adaptive_max_pool2d.*\); no file was kept$"):
        export_tflite(tiny_run[1].run, out=tmp_path / "m.tflite", log=lambda *_: None)
    assert list(tmp_path.iterdir()) == []


def test_predict_tflite_runs_without_torch(tiny_run, lite, env_roots):
    valid = Roots.from_env().dataset(tiny_run[0].name) / "valid"
    files = expand_paths([valid])
    r = subprocess.run(
        [sys.executable, "-c", NO_TORCH, "predict", str(lite[0]), str(valid), "--json"],
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


def test_the_app_loads_the_tflite_model_without_torch(lite):
    script = NO_TORCH.split("from chiquito_or_not.cli")[0] + (
        "from fastapi.testclient import TestClient\n"
        "from chiquito_or_not.stages.serve import create_app\n"
        "c = TestClient(create_app(sys.argv[1]))\n"
        "print(c.get('/healthz').json()['classes'], 'torch' in sys.modules)\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(lite[0])], capture_output=True, text=True, env=subprocess_env(), timeout=120
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.split() == ["['face',", "'not_face']", "False"]


def test_bad_tflite_files_are_one_line_errors(tmp_path):
    (tmp_path / "junk.tflite").write_bytes(b"not a flatbuffer at all")
    with pytest.raises(ChiquitoError, match="no chiquito metadata"):
        load_model(tmp_path / "junk.tflite")
    (tmp_path / "junk.tflite.json").write_text(json.dumps({"task": "classify"}))
    with pytest.raises(ChiquitoError, match="not a readable LiteRT model"):
        load_model(tmp_path / "junk.tflite")
    with pytest.raises(ChiquitoError, match="no such model file"):
        load_model(tmp_path / "missing.tflite")


@pytest.mark.parametrize(
    "change,field",
    [
        ({"classes": ["face", "not_face", "owl"]}, "classes"),  # 3 declared for a 2-output graph
        ({"classes": ["face"]}, "classes"),
        ({"preprocess": {"size_wh": [96, 96]}}, "input"),  # LiteRT would resize its input to what this says
        ({"preprocess": {"size_wh": [100000, 100000]}}, "preprocess.size_wh"),
        ({"preprocess": "crop"}, "preprocess"),
        ({"faces": "blazeface"}, "faces"),
    ],
)
def test_a_tflite_file_whose_metadata_lies_is_one_line_and_serve_does_not_start(lite, tmp_path, change, field):
    from chiquito_or_not.stages.tflite import embed_metadata

    meta = read_embedded_metadata(lite[0])
    for k, v in change.items():
        meta[k] = {**meta[k], **v} if isinstance(v, dict) else v
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(lite[0].read_bytes())
    assert embed_metadata(bad, meta)
    with pytest.raises(ChiquitoError) as e:
        load_model(bad)
    msg = str(e.value)
    assert "\n" not in msg and str(bad) in msg and field in msg, msg
    from chiquito_or_not.stages.serve import create_app

    with pytest.raises(ChiquitoError):
        create_app(bad)


def test_the_app_serves_the_tflite_model(lite):
    from fastapi.testclient import TestClient

    from chiquito_or_not.stages.serve import create_app

    client = TestClient(create_app(lite[0]))
    assert client.get("/healthz").json()["classes"] == ["face", "not_face"]
    r = client.post("/api/predict", files={"file": ("x.jpg", jpeg_bytes(3), "image/jpeg")})
    assert r.status_code == 200, r.text
    assert abs(sum(r.json()["probabilities"].values()) - 1) < 1e-4


def test_the_readme_phone_code_uses_the_names_the_file_has(lite):
    import re
    from pathlib import Path

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    kotlin = re.search(r"```kotlin\n(.*?)```", readme, re.S).group(1)
    call = re.search(r'runSignature\(mapOf\("(\w+)" to \w+\), mapOf\("(\w+)" to \w+\), "(\w+)"\)', kotlin)
    assert call, "the README's Kotlin no longer calls runSignature(inputs, outputs, signature)"
    s = LiteSession(lite[0])
    assert call.groups() == (s.input_name, s.output_names[0], s.signature)
    assert "4 * size * size * 3" in kotlin and s.input_shape[1] == s.input_shape[2]  # float32, square, RGB
