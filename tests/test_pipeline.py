"""End to end on real data and real pretrained weights: dataset → finetune → evaluate → predict, export, resume."""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from chiquito_or_not.cli import app
from chiquito_or_not.tasks.classify.class_inference import predict_images

from .helpers import TINY_RECIPE, predict_without_the_package, subprocess_env, write_recipe


def test_finetune_writes_every_output(tiny_run):
    recipe, res = tiny_run
    run = res.run
    for name in (
        "recipe.json",
        "lr_find.png",
        "lr_find.json",
        "history.csv",
        "loss_curve.png",
        "model.pkl",
        "confusion_matrix.png",
        "confusion_matrix.csv",
        "top_losses.png",
        "metrics.json",
        "state.json",
    ):
        assert (run / name).is_file() and (run / name).stat().st_size > 0, name
    state = json.loads((run / "state.json").read_text())
    assert state["done"] == ["frozen", "augmented", "unfrozen"]
    history = (run / "history.csv").read_text().splitlines()
    assert history[0] == "stage,epoch,train_loss,valid_loss,accuracy"
    assert [ln.split(",")[0] for ln in history[1:]] == ["frozen", "augmented", "unfrozen"]
    m = json.loads((run / "metrics.json").read_text())["valid"]
    assert set(m["per_class"]) == {"face", "not_face"}
    assert sum(map(sum, m["confusion_matrix"]["rows_actual_cols_predicted"])) == m["counts"]["n"]
    # real pretrained features separate portraits from scenes even at 64 px after a few epochs
    assert m["accuracy"] >= 0.8, m
    lr = json.loads((run / "lr_find.json").read_text())
    assert lr["chosen"] > 0 and lr["points"] >= 10


def test_three_layer_groups_get_discriminative_rates(tiny_run):
    _, res = tiny_run
    learn = res.learn
    assert len(learn.opt.param_groups) == 3
    # the last schedule was SGDR at lrs (1e-4, 1e-3, 1e-2): the groups' learning rates keep that ratio
    lrs = [h["lr"] for h in learn.opt.hypers]
    assert lrs[0] < lrs[1] < lrs[2]


def test_exported_model_loads_without_the_package(tiny_run, tmp_path):
    """model.pkl loads with plain fastai in a process where chiquito_or_not cannot be imported."""
    recipe, res = tiny_run
    valid = sorted((Path(json.loads((res.run / "state.json").read_text())["dataset"]) / "valid").rglob("*.jpg"))
    from PIL import Image

    expected = predict_images(res.learn, [Image.open(p).convert("RGB") for p in valid]).numpy()
    vocab, probs = predict_without_the_package(res.run / "model.pkl", valid, tmp_path)
    assert vocab == ["face", "not_face"]
    np.testing.assert_allclose(probs, expected, atol=1e-5)


def test_evaluate_reloads_the_exported_model(tiny_run, env_roots, tmp_path):
    recipe, res = tiny_run
    data = Path(json.loads((res.run / "state.json").read_text())["dataset"]) / "valid"
    out = tmp_path / "eval"
    r = CliRunner().invoke(app, ["evaluate", str(res.run), "--data", str(data), "--out", str(out)])
    assert r.exit_code == 0, r.output
    m = json.loads((out / "metrics.json").read_text())["data"]
    saved = json.loads((res.run / "metrics.json").read_text())["valid"]
    assert m["accuracy"] == saved["accuracy"] and (out / "confusion_matrix.png").is_file()
    assert "accuracy" in r.output

    bad = tmp_path / "bad"
    (bad / "cat").mkdir(parents=True)
    r = CliRunner().invoke(app, ["evaluate", str(res.run), "--data", str(bad)])
    assert r.exit_code == 2 and "class folder(s) cat are not classes of the model" in r.output


def test_predict_cli_batches_and_reports_bad_files(tiny_run, tmp_path):
    recipe, res = tiny_run
    valid = Path(json.loads((res.run / "state.json").read_text())["dataset"]) / "valid"
    (tmp_path / "notes.jpg").write_text("this is not a picture")
    model = str(res.run / "model.pkl")
    r = CliRunner().invoke(app, ["predict", model, str(valid), str(tmp_path / "notes.jpg")])
    assert r.exit_code == 1
    lines = r.stdout.strip().splitlines()
    n_valid = len(list(valid.rglob("*.jpg")))
    assert len(lines) == n_valid
    for ln in lines:
        path, label, prob = ln.split("\t")
        assert label in ("face", "not_face") and 0.5 <= float(prob) <= 1.0
    assert "notes.jpg: not_an_image" in r.stderr and "1 of" in r.stderr

    r = CliRunner().invoke(app, ["predict", model, str(valid), "--json"])
    assert r.exit_code == 0
    doc = json.loads(r.stdout)
    assert len(doc) == n_valid and all(abs(sum(d["probabilities"].values()) - 1) < 1e-4 for d in doc)
    right = sum(d["label"] == Path(d["path"]).parent.name for d in doc)
    saved = json.loads((res.run / "metrics.json").read_text())["valid"]
    assert right == saved["counts"]["n"] - saved["errors"]

    r = CliRunner().invoke(app, ["predict", str(tmp_path / "nope.pkl"), str(valid)])
    assert r.exit_code == 2 and "no such model file" in r.output


def test_interrupted_finetune_resumes_after_the_last_finished_stage(shared_roots, tiny_run, tmp_path):
    data, runs = shared_roots
    path = write_recipe(tmp_path, TINY_RECIPE.format(name="resume", aug_cycles=6), "resume.toml")
    env = subprocess_env(CHIQUITO_DATA=str(data), CHIQUITO_RUNS=str(runs))
    cmd = [sys.executable, "-m", "chiquito_or_not"]
    assert subprocess.run(cmd + ["dataset", str(path)], env=env, capture_output=True, timeout=300).returncode == 0
    state = runs / "resume.partial" / "state.json"  # a run is built beside the last finished one
    # a shell's background job starts with SIGINT ignored, and Python then never raises KeyboardInterrupt:
    # give the child the default disposition, as a terminal would
    proc = subprocess.Popen(
        cmd + ["finetune", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if state.is_file() and "frozen" in state.read_text():
            proc.send_signal(signal.SIGINT)  # Ctrl-C in the middle of the augmented stage
            break
        time.sleep(0.05)
    out = proc.communicate(timeout=120)[0].decode()
    assert proc.returncode == 130, out[-2000:]
    assert "--resume" in out.strip().splitlines()[-1]
    assert json.loads(state.read_text())["done"] == ["frozen"]
    assert not (runs / "resume" / "model.pkl").exists()

    original = path.read_text()
    path.write_text(original.replace("seed = 7", "seed = 8"))
    r = subprocess.run(cmd + ["finetune", str(path), "--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "the recipe changed since this run started" in r.stderr
    path.write_text(original)

    r = subprocess.run(cmd + ["finetune", str(path), "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "resumed after stage 'frozen'" in r.stdout and "stage 1/3" not in r.stdout
    stages = [ln.split(",")[0] for ln in (runs / "resume" / "history.csv").read_text().splitlines()[1:]]
    assert stages == ["frozen"] + ["augmented"] * 6 + ["unfrozen"]
    assert (runs / "resume" / "model.pkl").is_file() and not (runs / "resume.partial").exists()


def test_dataset_rerun_downloads_nothing_and_changes_nothing(tiny_run, env_roots, monkeypatch, tmp_path):
    from chiquito_or_not.stages.dataset import build_dataset

    recipe, _ = tiny_run
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))  # no npm, no apt-get: any download would fail
    s = build_dataset(recipe, log=lambda *_: None)
    assert s.changes == {"added": 0, "removed": 0}


def test_lr_find_command_agrees_with_finetune(tiny_run, env_roots):
    """`chiquito lr-find` builds the learner finetune builds (seed, class weights, feature cache): the
    curve and the rate it chooses are the ones finetune chose for the same recipe."""
    recipe, result = tiny_run
    r = CliRunner().invoke(app, ["lr-find", recipe.path])
    assert r.exit_code == 0, r.output
    run = env_roots[1] / recipe.name
    info = json.loads((run / "lr_find.json").read_text())
    assert f"chosen {info['chosen']:.2e}" in r.output and (run / "lr_find.png").stat().st_size > 1000
    assert result.lr["points"] == info["points"] and result.lr["chosen_by"] == info["chosen_by"]
    assert abs(info["chosen"] - result.lr["chosen"]) <= 1e-6 * result.lr["chosen"], (info, result.lr)
