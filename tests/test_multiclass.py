"""Any number of classes: three real-photo classes, a held-out test split, top-k, sanity, a CNN from scratch."""

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app

from .helpers import save_crops, write_recipe

pytestmark = pytest.mark.slow

RECIPE = """
name = "three"
seed = 5
[dataset]
min_size = 32
near_duplicate_distance = 0
group_distance = 0
balance = "downsample"
valid = 4
test = 4
[finetune]
backbone = "{backbone}"
size = 64
bs = 8
lr_find = false
[finetune.frozen]
epochs = {frozen}
[finetune.augmented]
cycles = 0
[finetune.unfrozen]
cycles = 1
lrs = [{lr}, {lr}, {lr}]
"""


def make(tmp_path, backbone="efficientnet_lite0", frozen=2, lr="1e-3"):
    text = RECIPE.format(backbone=backbone, frozen=frozen, lr=lr)
    for i, name in enumerate(("chelsea", "coffee", "rocket")):
        save_crops(tmp_path / "in" / name, name, 16, size=64, seed=i)
        text += f'[[classes.{name}.sources]]\nkind = "folder"\npath = "{tmp_path / "in" / name}"\n'
    return write_recipe(tmp_path / "r", text)


def test_three_classes_end_to_end(roots, tmp_path):
    recipe = make(tmp_path)
    runner = CliRunner()
    r = runner.invoke(app, ["dataset", str(recipe)])
    assert r.exit_code == 0, r.output
    assert "test   chelsea 4  coffee 4  rocket 4" in r.output
    r = runner.invoke(app, ["finetune", str(recipe)])
    assert r.exit_code == 0, r.output
    m = json.loads((roots / "runs" / "three" / "metrics.json").read_text())
    assert set(m) == {"valid", "test", "model", "kept", "environment"}  # the test split is reported apart
    assert m["kept"]["chosen_on"] == "valid" and "test split" in m["kept"]["note"]  # which did not choose it
    for split in ("valid", "test"):
        cm = m[split]["confusion_matrix"]["rows_actual_cols_predicted"]
        assert len(cm) == 3 and all(len(row) == 3 for row in cm) and sum(map(sum, cm)) == 12
        assert set(m[split]["per_class"]) == {"chelsea", "coffee", "rocket"}
        off = sum(cm[i][j] for i in range(3) for j in range(3) if i != j)
        assert sum(c["count"] for c in m[split]["most_confused"]) == off
    # three real photos told apart from crops: on the 24 held-out images (valid + test), better than
    # chance (1/3) with 95 % confidence, i.e. the Wilson interval's lower end above 1/3
    from chiquito_or_not.core.stats import wilson

    right = sum(m[s]["counts"]["n"] - m[s]["errors"] for s in ("valid", "test"))
    assert m["test"]["accuracy_ci95"] == list(wilson(12 - m["test"]["errors"], 12))
    assert wilson(right, 24)[0] > 1 / 3 and right >= 16, (right, m["valid"]["accuracy"], m["test"]["accuracy"])
    assert (roots / "runs" / "three" / "confusion_matrix_test.png").is_file()

    r = runner.invoke(
        app,
        [
            "predict",
            str(roots / "runs" / "three" / "model.pkl"),
            str(roots / "data" / "three" / "test"),
            "--top-k",
            "3",
            "--json",
        ],
    )
    assert r.exit_code == 0, r.output
    doc = json.loads(r.stdout)
    assert len(doc) == 12 and all(len(d["top"]) == 3 for d in doc)
    assert all(d["top"][0][1] >= d["top"][1][1] >= d["top"][2][1] for d in doc)

    r = runner.invoke(app, ["sanity", str(recipe), "--images", "12"])
    assert r.exit_code == 0 and "sanity: PASS" in r.output, r.output


def test_simple_cnn_from_scratch_can_memorise(roots, tmp_path):
    recipe = make(tmp_path, backbone="simple_cnn", frozen=0, lr="3e-3")
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", str(recipe)]).exit_code == 0
    r = runner.invoke(app, ["sanity", str(recipe), "--images", "12", "--max-epochs", "80"])
    assert r.exit_code == 0 and "sanity: PASS" in r.output, r.output
    r = runner.invoke(app, ["sanity", str(recipe), "--images", "12", "--max-epochs", "1"])
    assert r.exit_code == 1 and "sanity: FAIL" in r.output  # one epoch from scratch is not enough


def test_compare_writes_a_leaderboard(roots, tmp_path):
    import csv

    recipe = make(tmp_path, frozen=1)
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", str(recipe)]).exit_code == 0
    r = runner.invoke(app, ["compare", str(recipe), "--backbones", "efficientnet_lite0,simple_cnn"])
    assert r.exit_code == 0, r.output
    with open(roots / "runs" / "three" / "leaderboard.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(x["backbone"] for x in rows) == ["efficientnet_lite0", "simple_cnn"]
    assert all(x["split"] == "test" for x in rows)
    bal = [float(x["balanced_accuracy"]) for x in rows]
    assert bal == sorted(bal, reverse=True)  # best first
    for x in rows:  # each row is its run's own test metrics
        m = json.loads((Path(x["run"]) / "metrics.json").read_text())["test"]
        assert float(x["accuracy"]) == round(m["accuracy"], 4) and float(x["balanced_accuracy"]) == round(
            m["balanced_accuracy"], 4
        )
        lo, hi = m["accuracy_ci95"]
        assert float(x["accuracy_low"]) == round(lo, 4) and float(x["accuracy_high"]) == round(hi, 4)
        assert lo <= m["accuracy"] <= hi and hi - lo > 0.05  # a few dozen test images: a wide interval
    # the best against the next on the same test images: McNemar on the two runs' per-image outcomes
    from chiquito_or_not.core.stats import mcnemar

    o = [json.loads((Path(x["run"]) / "metrics.json").read_text())["test"]["outcomes"] for x in rows]
    p_value = mcnemar([c == "1" for c in o[0]], [c == "1" for c in o[1]])["p"]
    assert float(rows[0]["vs_next_p"]) == round(p_value, 4) and rows[1]["vs_next_p"] == ""
    assert rows[0]["distinguishable_from_next"] == str(p_value < 0.05)
    assert f"McNemar p = {p_value:.3f} on {len(o[0])} test images" in r.output
    sizes = {x["backbone"]: int(x["params"]) for x in rows}
    assert sizes["efficientnet_lite0"] > 3_000_000 > sizes["simple_cnn"]
    assert float(rows[0]["balanced_accuracy"]) >= float(rows[1]["balanced_accuracy"])  # sorted best first
    assert (roots / "runs" / "three" / "leaderboard.png").stat().st_size > 5000
    assert (roots / "runs" / "three--simple_cnn" / "model.pkl").is_file()
    table = r.stdout.splitlines()[-3:-1]  # the two backbones' rows, then where the leaderboard went
    assert "efficientnet_lite0" in "".join(table) and "simple_cnn" in "".join(table)
    assert r.stdout.splitlines()[-1] == f"wrote {roots / 'runs' / 'three'}/leaderboard.csv and leaderboard.png"

    r = runner.invoke(app, ["compare", str(recipe), "--backbones", "resnet43"])
    assert r.exit_code == 2 and "'resnet43' is not a backbone" in r.output


def test_tensorboard_logs_losses_metrics_and_inputs(roots, tmp_path):
    pytest.importorskip("tensorboard", reason="needs the tensorboard extra: pip install 'chiquito-or-not[tensorboard]'")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    recipe = make(tmp_path, frozen=1)
    recipe.write_text(recipe.read_text().replace("lr_find = false", "lr_find = false\ntensorboard = true"))
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", str(recipe)]).exit_code == 0
    r = runner.invoke(app, ["finetune", str(recipe)])
    assert r.exit_code == 0, r.output
    tb = roots / "runs" / "three" / "tensorboard"
    frozen = EventAccumulator(str(tb / "frozen")).Reload()
    assert {"train_loss", "valid_loss", "accuracy"} <= set(frozen.Tags()["scalars"])
    assert len(frozen.Scalars("train_loss")) >= 2
    inputs = EventAccumulator(str(tb / "inputs")).Reload()
    assert inputs.Tags()["images"]


def test_sweep_chooses_on_validation_and_reports_one_test_score(roots, tmp_path):
    import csv

    recipe = make(tmp_path, frozen=1)
    runner = CliRunner()
    assert runner.invoke(app, ["dataset", str(recipe)]).exit_code == 0
    r = runner.invoke(app, ["sweep", str(recipe), "--freeze", "0,2,0.5"])
    assert r.exit_code == 0, r.output
    assert "2 layer group(s) frozen" in r.output and "6 of 11 body blocks frozen" in r.output
    with open(roots / "runs" / "three" / "sweep.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [float(x["keep_frozen"]) for x in rows] == [0.0, 2.0, 0.5]
    chosen = [x for x in rows if x["chosen"] == "True"]
    assert len(chosen) == 1 and chosen[0]["test_accuracy"] != ""
    assert all(x["test_accuracy"] == "" for x in rows if x["chosen"] != "True")
    best_valid = max(float(x["valid_accuracy"]) for x in rows)
    assert float(chosen[0]["valid_accuracy"]) == best_valid
    assert all(
        float(x["valid_accuracy_low"]) <= float(x["valid_accuracy"]) <= float(x["valid_accuracy_high"]) for x in rows
    )
    assert float(chosen[0]["test_accuracy_low"]) <= float(chosen[0]["test_accuracy"])
    noise = chosen[0]["choice_within_noise"] == "True"
    assert "chose keep_frozen" in r.output and ("(the choice is within noise)" in r.output) == noise
    assert ("within noise" in r.output.splitlines()[-1]) == noise
    assert (roots / "runs" / "three" / "sweep.png").is_file()
    r = runner.invoke(app, ["sweep", str(recipe), "--freeze", "3"])
    assert r.exit_code == 2 and "--freeze" in r.output
