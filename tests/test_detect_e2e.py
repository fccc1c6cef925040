"""A tiny real detection run: composites of real photo cut-outs → dataset → finetune (real pretrained body,
untrained SSD head) → evaluate → ONNX export with parity → predict (with and without torch) → the web
page in headless Chromium drawing the boxes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import subprocess_env, write_recipe
from .test_detect_data import COMPOSITE, cutouts

pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]

TRAIN = """
[finetune]
backbone = "efficientnet_lite0"
size = 128
bs = 8
lr_find = false
[finetune.frozen]
epochs = 10
lr = 1e-2
feature_cache = false
[finetune.augmented]
cycles = 1
lr = 3e-3
[finetune.unfrozen]
cycles = 1
lrs = [1e-5, 1e-4, 1e-3]
"""


@pytest.fixture(scope="module")
def det_run(tmp_path_factory):
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune

    base = tmp_path_factory.mktemp("detect")
    mp = pytest.MonkeyPatch()
    mp.setenv("CHIQUITO_DATA", str(base / "data"))
    mp.setenv("CHIQUITO_RUNS", str(base / "runs"))
    try:
        cutouts(base / "cut")
        text = COMPOSITE.format(cut=base / "cut").replace("count = 40", "count = 64") + TRAIN
        recipe = load_recipe(write_recipe(base, text, "tinydet.toml"))
        build_dataset(recipe, log=lambda *_: None)
        result = finetune(recipe, log=lambda *_: None)
        yield recipe, result, base
    finally:
        mp.undo()


def test_detector_learns_and_reports_coco_metrics(det_run):
    _, res, _ = det_run
    m = json.loads((res.run / "metrics.json").read_text())
    # 16 validation images, two labels: an untrained head scores ~0 (checked: 0.00-0.02 on this set)
    assert m["valid"]["map_50"] >= 0.5, m["valid"]
    assert set(m["valid"]["ap50_per_class"]) == {"cat", "cup"}
    assert 0 <= m["valid"]["map"] <= m["valid"]["map_50"]
    assert m["test"]["images"] == 8 or m["test"]["images"] >= 6
    for f in ("pr_curves.png", "worst.png", "pr_curves_test.png", "loss_curve.png"):
        assert (res.run / f).stat().st_size > 1000, f
    v = m["valid"]
    assert set(v["ap_by_size"]) == {"small", "medium", "large"} and sum(v["boxes_by_size"].values()) == v["boxes"]
    cm = v["confusion"]
    assert cm["rows"] == ["cat", "cup", "false alarm"] and cm["cols"] == ["cat", "cup", "missed"]
    rows = cm["rows_true_cols_detected"]
    assert sum(map(sum, rows[:2])) == v["boxes"]  # every true box is matched once or missed
    assert rows[0][0] + rows[1][1] >= v["boxes"] / 2  # a trained detector finds most boxes with their label
    assert rows[2][2] == 0 and (res.run / "detection_confusion.png").stat().st_size > 1000
    hist = (res.run / "history.csv").read_text().splitlines()
    assert hist[0].endswith("map_50") and len(hist) == 1 + 10 + 1 + 1


def test_export_parity_and_predict_without_torch(det_run, tmp_path):
    from chiquito_or_not.stages.export import export_onnx

    _, res, base = det_run
    rep = export_onnx(res.run, log=lambda *_: None)
    assert rep["identical_detection_lists"] == rep["images"] >= 8
    assert rep["raw_max_abs_box_px"] <= 1e-3 and rep["map_50_onnx"] == rep["map_50_torch"]
    onnx = res.run / "model.onnx"
    # the file itself scored on the splits: the same detections, so the same figures as model.pkl's
    from chiquito_or_not.stages.evaluate import evaluate

    before = (res.run / "metrics.json").read_bytes()
    got = evaluate(res.run, model_file=onnx, log=lambda *_: None)
    pkl_m = json.loads(before)
    for split in ("valid", "test"):
        assert got[split]["map_50"] == pkl_m[split]["map_50"] and got[split]["confusion"] == pkl_m[split]["confusion"]
    assert json.loads((res.run / "eval-model.onnx" / "metrics.json").read_text())["model"] == str(onnx)
    assert (res.run / "metrics.json").read_bytes() == before  # model.pkl's figures are left as they were
    valid = sorted((base / "data" / "tinydet" / "valid" / "images").glob("*.jpg"))[:4]
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None\n"
        "from chiquito_or_not.cli import app\n"
        "app(sys.argv[1:], prog_name='chiquito')\n"
    )
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            script,
            "predict",
            str(onnx),
            *map(str, valid),
            "--json",
            "--threshold",
            "0.2",
            "--draw",
            str(tmp_path / "drawn"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout)
    assert len(got) == 4 and all(b["score"] >= 0.2 and b["label"] in ("cat", "cup") for r in got for b in r["boxes"])
    assert sum(len(r["boxes"]) for r in got) >= 2
    assert len(list((tmp_path / "drawn").glob("*.jpg"))) == 4
    # the same files through the .pkl (PyTorch) give the same boxes
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.predict import predict_paths

    pkl = predict_paths(load_model(res.run / "model.pkl", notice=lambda _: None), valid, threshold=0.2)
    for a, b in zip(pkl, got):
        assert [x["label"] for x in a.boxes] == [x["label"] for x in b["boxes"]]
        for x, y in zip(a.boxes, b["boxes"]):
            assert max(abs(p - q) for p, q in zip(x["box"], y["box"])) < 1e-3
    # --draw never writes into a folder that holds files
    again = subprocess.run(
        [
            sys.executable,
            "-m",
            "chiquito_or_not",
            "predict",
            str(onnx),
            str(valid[0]),
            "--draw",
            str(tmp_path / "drawn"),
        ],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert again.returncode == 2 and "not a new or empty folder" in again.stderr


def test_tflite_detector_matches_pytorch_and_runs_without_torch(det_run, tmp_path):
    pytest.importorskip("litert_torch", reason="needs the tflite extra: pip install 'chiquito-or-not[tflite]'")
    from chiquito_or_not.core.litefile import LiteSession
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.predict import predict_paths
    from chiquito_or_not.stages.tflite import export_tflite

    _, res, base = det_run
    out = tmp_path / "det.tflite"
    rep = export_tflite(res.run, int8=True, out=out, log=lambda *_: None)
    assert rep["identical_detection_lists"] == rep["images"] >= 8
    assert rep["raw_max_abs_box_px"] <= 1e-3 and rep["map_50_litert"] == rep["map_50_torch"]
    s = LiteSession(out)
    assert s.input_shape == (1, 128, 128, 3) and s.output_names == ["boxes", "scores"]
    assert s.metadata["labels"] == ["cat", "cup"] and s.metadata["postprocess"]["nms_iou"] == 0.5
    q = rep["int8"]
    assert q["bytes"] < rep["bytes"] / 2 and 0 <= q["map_50"] <= 1 and "map_50_reference" in q
    valid = sorted((base / "data" / "tinydet" / "valid" / "images").glob("*.jpg"))[:4]
    script = (
        "import sys; sys.modules['torch'] = None; sys.modules['fastai'] = None\n"
        "from chiquito_or_not.cli import app\n"
        "app(sys.argv[1:], prog_name='chiquito')\n"
    )
    r = subprocess.run(
        [sys.executable, "-c", script, "predict", str(out), *map(str, valid), "--json", "--threshold", "0.2"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    got = json.loads(r.stdout)
    pkl = predict_paths(load_model(res.run / "model.pkl", notice=lambda _: None), valid, threshold=0.2)
    assert sum(len(x.boxes) for x in pkl) >= 2
    for a, b in zip(pkl, got):
        assert sorted(x["label"] for x in a.boxes) == sorted(x["label"] for x in b["boxes"])
        for x in a.boxes:
            assert min(max(abs(p - q) for p, q in zip(x["box"], y["box"])) for y in b["boxes"]) < 1e-2

    # the same file with metadata that lies about the graph: one line naming the field, never a wrong answer
    from chiquito_or_not.core.errors import ChiquitoError
    from chiquito_or_not.core.litefile import read_embedded_metadata
    from chiquito_or_not.stages.tflite import embed_metadata

    for change, field in (
        ({"labels": ["cat", "cup", "owl"]}, "labels"),
        ({"size": "64"}, "input size"),  # a 64 px detector declared for the 128 px graph
        ({"size": "100000"}, "size"),
        ({"postprocess": {"nms_iou": "half"}}, "postprocess.nms_iou"),
        ({"postprocess": {"keep": 3}}, "postprocess.keep"),
    ):
        meta = read_embedded_metadata(out)
        for k, v in change.items():
            meta[k] = {**meta[k], **v} if isinstance(v, dict) else v
        bad = tmp_path / "bad.tflite"
        bad.write_bytes(out.read_bytes())
        assert embed_metadata(bad, meta)
        with pytest.raises(ChiquitoError) as e:
            load_model(bad)
        assert "\n" not in str(e.value) and str(bad) in str(e.value) and field in str(e.value), str(e.value)


def test_cli_prints_boxes_in_image_pixels(det_run):
    _, res, base = det_run
    f = sorted((base / "data" / "tinydet" / "valid" / "images").glob("*.jpg"))[0]
    out = subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "predict", str(res.run / "model.pkl"), str(f), "--threshold", "0.05"],
        capture_output=True,
        text=True,
        env=subprocess_env(),
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-1500:]
    from PIL import Image

    w, h = Image.open(f).size
    for line in out.stdout.splitlines():
        path, label, score, *box = line.split("\t")
        assert path == str(f) and label in ("cat", "cup") and 0.05 <= float(score) <= 1
        x0, y0, x1, y1 = map(float, box)
        assert 0 <= x0 < x1 <= w + 0.01 and 0 <= y0 < y1 <= h + 0.01


def test_browser_draws_the_boxes(chromium, det_run, tmp_path):
    from fastapi.testclient import TestClient
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from chiquito_or_not.stages.serve import create_app

    from .httpserver import app_in_chromium

    _, res, base = det_run
    app = create_app(res.run / "model.pkl")
    picture = sorted((base / "data" / "tinydet" / "valid" / "images").glob("*.jpg"))[0]
    api = TestClient(app).post("/api/predict", files={"file": ("a.jpg", picture.read_bytes(), "image/jpeg")}).json()
    assert api["width"] > 0 and isinstance(api["boxes"], list)
    with app_in_chromium(app, tmp_path / "profile", "480,900") as (browser, url):
        browser.get(f"{url}/")
        browser.find_element(By.ID, "file").send_keys(str(picture))
        verdict = WebDriverWait(browser, 60).until(lambda b: b.find_element(By.ID, "verdict").text or None)
        boxes = browser.find_elements(By.CSS_SELECTOR, "#stage .box")
        assert len(boxes) == len(api["boxes"]) and ("object" in verdict or "no objects" in verdict)
        if boxes:  # drawn over the picture, where the API put it
            img = browser.find_element(By.ID, "preview").rect
            r, b0 = boxes[0].rect, api["boxes"][0]
            assert abs(r["x"] - img["x"] - b0["box"][0] / api["width"] * img["width"]) < 4
            assert boxes[0].text.startswith(b0["label"])
        browser.save_screenshot(str(tmp_path / "detect.png"))
        assert Path(tmp_path / "detect.png").stat().st_size > 5000
