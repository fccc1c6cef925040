"""A model file is untrusted input: its metadata is checked against a schema and against the graph's own
shapes when it is opened. Tiny real ONNX graphs (built with onnx.helper, no torch) carry honest metadata
and then every kind of lie; each lie is one line naming the file and the field, exit 2, from `predict`
and from `serve` (which does not start)."""

from __future__ import annotations

import json
import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from chiquito_or_not.core.errors import ChiquitoError  # noqa: E402
from chiquito_or_not.core.model_loader import load_model  # noqa: E402

SIDE, CLASSES = 32, 2
PRE = {"resize": "squish", "size_wh": [SIDE, SIDE], "scale": 1 / 255, "mean": [0.5] * 3, "std": [0.25] * 3}
CLASSIFIER = {"task": "classify", "classes": ["cat", "dog"], "preprocess": PRE}
DETECTOR = {
    "task": "detect",
    "labels": ["animal", "food"],
    "size": SIDE,
    "mean": [0.5] * 3,
    "std": [0.25] * 3,
    "postprocess": {"score_thresh": 0.01, "nms_iou": 0.5, "topk_candidates": 300, "detections_per_img": 100},
    "score_threshold": 0.3,
}


def _save(graph, path, meta: dict) -> None:
    from onnx import helper

    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    m.ir_version = 9
    for k, v in meta.items():
        p = m.metadata_props.add()
        p.key, p.value = k, v if isinstance(v, str) else json.dumps(v)
    onnx.checker.check_model(m)
    onnx.save(m, str(path))


def classifier_file(path, meta=CLASSIFIER, side=SIDE, classes=CLASSES):
    """Mean colour → a linear layer → softmax: a real classifier of `classes` outputs on `side` px."""
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.linspace(-1, 1, 3 * classes, dtype=np.float32).reshape(3, classes), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1),
    ]
    g = helper.make_graph(
        nodes,
        "classifier",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, side, side])],
        [helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, ["batch", classes])],
        [w],
    )
    _save(g, path, meta)
    return path


def detector_file(path, meta=DETECTOR, side=SIDE, labels=2):
    """Four fixed anchors and scores from the mean colour: the boxes/scores outputs an export has."""
    from onnx import TensorProto, helper, numpy_helper

    anchors = np.array([[0, 0, 16, 16], [16, 0, 32, 16], [0, 16, 16, 32], [16, 16, 32, 32]], np.float32)
    w = numpy_helper.from_array(np.linspace(-1, 1, 3 * 4 * labels, dtype=np.float32).reshape(3, 4 * labels), "w")
    nodes = [
        helper.make_node("GlobalAveragePool", ["input"], ["pooled"]),
        helper.make_node("Flatten", ["pooled"], ["flat"]),
        helper.make_node("MatMul", ["flat", "w"], ["logits"]),
        helper.make_node("Sigmoid", ["logits"], ["flat_scores"]),
        helper.make_node("Constant", [], ["shape"], value=numpy_helper.from_array(np.array([-1, 4, labels]), "s")),
        helper.make_node("Reshape", ["flat_scores", "shape"], ["scores"]),
        helper.make_node("Constant", [], ["anchors"], value=numpy_helper.from_array(anchors[None], "a")),
        helper.make_node("Shape", ["input"], ["in_shape"], end=1),
        helper.make_node("Constant", [], ["one_four"], value=numpy_helper.from_array(np.array([4, 4]), "o")),
        helper.make_node("Concat", ["in_shape", "one_four"], ["tile_shape"], axis=0),
        helper.make_node("Expand", ["anchors", "tile_shape"], ["boxes"]),
    ]
    g = helper.make_graph(
        nodes,
        "detector",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", 3, side, side])],
        [
            helper.make_tensor_value_info("boxes", TensorProto.FLOAT, ["batch", 4, 4]),
            helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 4, labels]),
        ],
        [w],
    )
    _save(g, path, meta)
    return path


def _one_line_error(path, field: str):
    with pytest.raises(ChiquitoError) as e:
        load_model(path)
    msg = str(e.value)
    assert "\n" not in msg and str(path) in msg and field in msg, msg
    return msg


def test_honest_files_open_and_predict(tmp_path):
    from PIL import Image

    im = Image.new("RGB", (50, 40), (200, 30, 30))
    c = load_model(classifier_file(tmp_path / "c.onnx"))
    p = c.probabilities([im, im.convert("L")])
    assert p.shape == (2, 2) and np.allclose(p.sum(1), 1)
    d = load_model(detector_file(tmp_path / "d.onnx"))
    boxes, scores = d.run(np.stack([d.preprocess(im)]))
    assert boxes.shape == (1, 4, 4) and scores.shape == (1, 4, 2)


# every lie the battery found, each with the field its error must name
LIES = [
    ({"classes": "[]"}, "classes"),
    ({"classes": ["cat"]}, "classes"),
    ({"classes": ["cat", "dog", "owl"]}, "classes"),  # 3 declared for a 2-output graph
    ({"classes": ["cat", "cat"]}, "classes"),
    ({"classes": "not json"}, "classes"),
    ({"preprocess": "crop"}, "preprocess"),
    ({"preprocess": PRE | {"size_wh": [0, 0]}}, "preprocess.size_wh"),
    ({"preprocess": PRE | {"size_wh": [100000, 100000]}}, "preprocess.size_wh"),
    ({"preprocess": PRE | {"size_wh": [96, 96]}}, "input"),  # a 96 px input declared for a 32 px graph
    ({"preprocess": {k: v for k, v in PRE.items() if k != "size_wh"}}, "preprocess.size_wh"),
    ({"preprocess": PRE | {"std": [0, 1, 1]}}, "preprocess.std"),
    ({"preprocess": PRE | {"resize": "pad"}}, "preprocess.resize"),
    ({"preprocess": PRE | {"mean": [0.5, 0.5]}}, "preprocess.mean"),
    ({"faces": "blazeface"}, "faces"),
    ({"faces": {"detector": "haar", "min_score": 0.5, "margin": 0.2, "min_face": 32, "size": 224}}, "faces.detector"),
    (
        {"faces": {"detector": "lbp", "min_score": 0.5, "margin": 0.2, "min_face": 32, "size": 224, "whole": ["owl"]}},
        "faces",
    ),
]


@pytest.mark.parametrize("change,field", LIES, ids=[f for _, f in LIES])
def test_a_classifier_file_that_lies_is_one_line_naming_the_field(tmp_path, change, field):
    _one_line_error(classifier_file(tmp_path / "c.onnx", CLASSIFIER | change), field)


DET_LIES = [
    ({"labels": []}, "labels"),
    ({"labels": ["animal", "food", "flower"]}, "labels"),  # 3 declared for a 2-label graph
    ({"size": 16}, "input size"),  # a detector declared 16 px for a 32 px graph
    ({"size": "half"}, "size"),
    ({"postprocess": DETECTOR["postprocess"] | {"nms_iou": "half"}}, "postprocess.nms_iou"),
    ({"postprocess": DETECTOR["postprocess"] | {"keep": 3}}, "postprocess.keep"),
    ({"postprocess": {}}, "postprocess.score_thresh"),
    ({"score_threshold": 2}, "score_threshold"),
    ({"mean": "NaN"}, "mean"),
]


@pytest.mark.parametrize("change,field", DET_LIES, ids=[f for _, f in DET_LIES])
def test_a_detector_file_that_lies_is_one_line_naming_the_field(tmp_path, change, field):
    meta = DETECTOR | change
    _one_line_error(detector_file(tmp_path / "d.onnx", meta), field)


def test_a_missing_detector_field_is_named(tmp_path):
    meta = {k: v for k, v in DETECTOR.items() if k != "size"}
    assert "missing" in _one_line_error(detector_file(tmp_path / "d.onnx", meta), "size")


HOSTILE = st.one_of(
    st.just(math.nan),
    st.just(math.inf),
    st.just(-math.inf),
    st.integers(min_value=-(10**12), max_value=-1),
    st.integers(min_value=10**6, max_value=10**12),
    st.floats(allow_nan=True, allow_infinity=True, min_value=None, max_value=None).filter(lambda v: not 0 <= v <= 1),
    st.text(alphabet="abcxyz -", max_size=8),  # no text that is JSON for a number
    st.none(),
    st.booleans(),
    st.lists(st.text(max_size=2), max_size=3),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
NUMERIC_FIELDS = [
    ("preprocess", "scale"),
    ("preprocess", "size_wh"),
    ("preprocess", "mean"),
    ("preprocess", "std"),
    ("postprocess", "score_thresh"),
    ("postprocess", "nms_iou"),
    ("postprocess", "topk_candidates"),
    ("postprocess", "detections_per_img"),
    ("", "size"),
    ("", "score_threshold"),
]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(where=st.sampled_from(NUMERIC_FIELDS), value=HOSTILE)
def test_generated_hostile_metadata_values_are_refused_in_one_line(tmp_path, where, value):
    group, key = where
    if group == "preprocess":
        meta, make = CLASSIFIER | {"preprocess": PRE | {key: value}}, classifier_file
    elif group == "postprocess":
        meta, make = DETECTOR | {"postprocess": DETECTOR["postprocess"] | {key: value}}, detector_file
    else:
        meta, make = DETECTOR | {key: value}, detector_file
    path = make(tmp_path / "m.onnx", json.loads(json.dumps(meta)))  # NaN and inf are written as JSON allows
    _one_line_error(path, key)


def test_predict_and_serve_refuse_a_lying_file_with_exit_2(tmp_path):
    from PIL import Image

    bad = classifier_file(tmp_path / "bad.onnx", CLASSIFIER | {"classes": ["a", "b", "c"]})
    Image.new("RGB", (40, 40)).save(tmp_path / "x.png")
    chiquito = [sys.executable, "-m", "chiquito_or_not"]
    for args in (["predict", str(bad), str(tmp_path / "x.png")], ["serve", str(bad), "--port", "8765"]):
        r = subprocess.run(chiquito + args, capture_output=True, text=True, timeout=120)
        err = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(err) == 1 and "bad.onnx" in err[0] and "classes" in err[0], (args, r.stderr)


def test_predict_answers_every_good_file_beside_bad_ones_on_the_command_line(tmp_path):
    import os

    from PIL import Image

    model = classifier_file(tmp_path / "m.onnx")
    Image.new("RGB", (40, 40), (10, 200, 10)).save(tmp_path / "a.png")
    Image.new("RGB", (40, 40)).save(tmp_path / "-x.png")
    (tmp_path / "junk.png").write_bytes(b"not an image")
    os.mkfifo(tmp_path / "pipe.png")
    chiquito = [sys.executable, "-m", "chiquito_or_not", "predict", str(model)]
    names = ["a.png", "missing.png", "junk.png", "pipe.png"]
    r = subprocess.run(chiquito + names, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 1 and r.stdout.startswith("a.png\t"), (r.stdout, r.stderr)
    errors = r.stderr.strip().splitlines()
    assert [e.split(":")[1].strip() for e in errors[:-1]] == names[1:] and "3 of 4" in errors[-1], errors
    # a name that looks like an option: one line that says how to pass it
    r = subprocess.run(chiquito + ["a.png", "-x.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "`--`" in r.stderr, r.stderr
    r = subprocess.run(chiquito + ["--", "a.png", "-x.png"], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0 and len(r.stdout.splitlines()) == 2, r.stderr


def test_predict_out_streams_json_lines_and_a_rerun_predicts_only_what_is_missing(tmp_path):
    from PIL import Image

    model = classifier_file(tmp_path / "m.onnx")
    pics = tmp_path / "pics"
    pics.mkdir()
    for i in range(7):
        Image.new("RGB", (40, 40), (30 * i, 200 - 20 * i, 10)).save(pics / f"{i}.png")
    (pics / "junk.png").write_bytes(b"not an image")
    out = tmp_path / "res" / "out.jsonl"
    chiquito = [sys.executable, "-m", "chiquito_or_not", "predict", str(model), str(pics), "--out", str(out)]
    r = subprocess.run(chiquito + ["--bs", "2"], capture_output=True, text=True, timeout=120)
    assert r.returncode == 1 and "7 predicted now, 1 failed" in r.stderr and r.stdout == "", r.stderr
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert len(lines) == 8 and sum("error" in x for x in lines) == 1
    assert all(abs(sum(x["probabilities"].values()) - 1) < 1e-5 for x in lines if "error" not in x)
    # an interrupted run: the last line torn, two answers lost; the rerun asks only for what is missing
    kept = [x for x in out.read_text().splitlines() if "error" not in x][:5]
    out.write_text("\n".join(kept) + "\n" + kept[-1][:20])
    r = subprocess.run(chiquito, capture_output=True, text=True, timeout=120)
    assert "2 predicted now, 1 failed" in r.stderr and "5 already there" in r.stderr, r.stderr
    answered = [json.loads(x)["path"] for x in out.read_text().splitlines()[:5] + out.read_text().splitlines()[6:]]
    assert sorted(p for p in answered if not p.endswith("junk.png")) == sorted(str(p) for p in pics.glob("[0-9].png"))
    # the same answers as without --out
    r2 = subprocess.run(chiquito[:-2] + ["--json"], capture_output=True, text=True, timeout=120)
    plain = {x["path"]: x for x in json.loads(r2.stdout) if "error" not in x}
    streamed = {}
    for x in out.read_text().splitlines():
        try:
            rec = json.loads(x)
        except ValueError:
            continue
        if "error" not in rec:
            streamed[rec["path"]] = rec
    assert streamed == plain
    # a folder where the file should be: one line, exit 2, before any work
    r = subprocess.run(chiquito[:-1] + [str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "not a regular file" in r.stderr


def test_predict_out_killed_mid_run_loses_nothing_and_the_rerun_finishes(tmp_path):
    """A real kill (SIGKILL, no cleanup) while `predict --out` is streaming: every line it had synced stays
    as it was, and the same command again answers exactly the paths that were not answered yet."""
    import re
    import time

    from PIL import Image

    model = classifier_file(tmp_path / "m.onnx")
    pics = tmp_path / "pics"
    pics.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1500):  # big enough to decode and resize for a few seconds in all
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).resize((480, 480)).save(pics / f"{i}.jpg")
    out = tmp_path / "out.jsonl"
    chiquito = [sys.executable, "-m", "chiquito_or_not", "predict", str(model), str(pics), "--out", str(out)]
    proc = subprocess.Popen(chiquito + ["--bs", "1"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and proc.poll() is None:
        if out.is_file() and out.stat().st_size and len(out.read_bytes().splitlines()) >= 256:
            break
        time.sleep(0.01)
    assert proc.poll() is None, "the run ended before it could be killed: give it more images"
    proc.kill()
    proc.wait()
    had = out.read_bytes()
    n_had = len([x for x in had.splitlines() if x.endswith(b"}")])
    assert 256 <= n_had < 1500
    r = subprocess.run(chiquito, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert out.read_bytes().startswith(had)  # nothing synced before the kill was rewritten
    done = int(re.search(r"(\d+) already there", r.stderr).group(1))
    assert done == n_had and f"{1500 - n_had} predicted now" in r.stderr, r.stderr
    answered = [json.loads(x)["path"] for x in out.read_text().splitlines() if x.endswith("}")]
    assert sorted(answered) == sorted(str(p) for p in pics.glob("*.jpg"))  # each path once, none missing
