"""Nothing the user has is lost: a failing or interrupted finetune leaves the previous run loadable and
unchanged; hostile files given to predict get one line each; a full disk is one line."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app
from chiquito_or_not.core.errors import ChiquitoError

from .helpers import save_crops, write_recipe

pytestmark = [pytest.mark.slow, pytest.mark.registry]


def _digest(folder: Path) -> dict:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _probs(model: Path, images: list[Path]):
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.predict import predict_paths

    return [r.probabilities for r in predict_paths(load_model(model, notice=lambda m: None), images)]


@pytest.fixture
def own_run(tiny_run, tmp_path, monkeypatch, shared_roots):
    """A copy of the tiny run in a runs root of this test's own, beside the shared dataset."""
    recipe, result = tiny_run
    runs = tmp_path / "runs"
    shutil.copytree(result.run, runs / recipe.name)
    monkeypatch.setenv("CHIQUITO_RUNS", str(runs))
    monkeypatch.setenv("CHIQUITO_DATA", str(shared_roots[0]))
    return recipe, runs / recipe.name


def test_failing_finetunes_leave_the_previous_run_as_it_was(own_run, tmp_path, shared_roots):
    from chiquito_or_not.stages.finetune import finetune

    recipe, run = own_run
    images = sorted((shared_roots[0] / recipe.name / "valid").rglob("*.jpg"))[:6]
    before, probs = _digest(run), _probs(run / "model.pkl", images)
    text = tmp_path / "weights.pth"
    text.write_text("version https://git-lfs.github.com/spec/v1\noid sha256:0\nsize 1\n")
    f = recipe.finetune
    variants = {
        "missing weights file": (replace(recipe, finetune=replace(f, weights=str(tmp_path / "nope.pth"))), {}),
        "weights file is text": (replace(recipe, finetune=replace(f, weights=str(text))), {}),
        "no weights offline": (
            replace(
                recipe, finetune=replace(f, backbone="resnet18", weights="http://127.0.0.1:9/resnet18-f37072fd.pth")
            ),
            {},
        ),
        "dataset never built": (recipe, {"data_root": tmp_path / "no-dataset"}),
        "fp16 on a CPU": (replace(recipe, finetune=replace(f, precision="fp16")), {}),
        "nothing to resume": (recipe, {"resume": True}),
    }
    for what, (r, kw) in variants.items():
        with pytest.raises(ChiquitoError) as e:
            finetune(r, log=lambda *_: None, **kw)
        assert "\n" not in str(e.value), what
        assert _digest(run) == before, what
        assert not run.with_name(run.name + ".partial").exists(), what
    assert _probs(run / "model.pkl", images) == probs


def test_interrupted_then_damaged_then_resumed(own_run, shared_roots):
    """Ctrl-C in stage 2 keeps the previous run; a damaged state or checkpoint is one line; --resume finishes
    and only then replaces the previous run."""
    from chiquito_or_not.stages.finetune import finetune

    recipe, run = own_run
    partial = run.with_name(run.name + ".partial")
    before = _digest(run)
    images = sorted((shared_roots[0] / recipe.name / "valid").rglob("*.jpg"))[:6]
    probs = _probs(run / "model.pkl", images)
    (run / "leaderboard.csv").write_text("backbone,accuracy\nx,1\n")  # compare's file: a new run keeps it
    before = _digest(run)

    def interrupt(msg):
        if str(msg).startswith("stage 2/3"):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        finetune(recipe, log=interrupt)
    assert _digest(run) == before and _probs(run / "model.pkl", images) == probs
    state = json.loads((partial / "state.json").read_text())
    assert state["done"] == ["frozen"] and (partial / "checkpoints" / "stage-frozen.pth").is_file()

    ckpt = partial / "checkpoints" / "stage-frozen.pth"
    good_ckpt, good_state = ckpt.read_bytes(), (partial / "state.json").read_text()
    for damage, fix in (
        (lambda: ckpt.write_bytes(good_ckpt[: len(good_ckpt) // 3]), "damaged"),
        (lambda: ckpt.write_bytes(b"not a checkpoint"), "damaged"),
        (lambda: ckpt.unlink(), "missing"),
        (lambda: (partial / "state.json").write_text(good_state[:20]), "damaged"),
    ):
        damage()
        with pytest.raises(ChiquitoError) as e:
            finetune(recipe, resume=True, log=lambda *_: None)
        assert fix in str(e.value) and "without --resume" in str(e.value) and "\n" not in str(e.value)
        assert _digest(run) == before
        ckpt.write_bytes(good_ckpt)
        (partial / "state.json").write_text(good_state)

    res = finetune(recipe, resume=True, log=lambda *_: None)
    assert res.run == run and not partial.exists()
    assert (run / "leaderboard.csv").is_file() and json.loads((run / "metrics.json").read_text())["model"] == str(
        run / "model.pkl"
    )
    assert json.loads((run / "state.json").read_text())["done"] == ["frozen", "augmented", "unfrozen"]
    assert _digest(run) != before
    assert len(_probs(run / "model.pkl", images)) == len(images)
    r = CliRunner().invoke(app, ["finetune", str(recipe.path), "--resume"])
    assert r.exit_code == 2 and "finished run" in r.output and "Traceback" not in r.output


def test_predict_hostile_files_one_line_each(tiny_run, tmp_path):
    _, result = tiny_run
    model = result.run / "model.pkl"
    good = save_crops(tmp_path / "imgs", "coffee", 1)[0]
    fifo = tmp_path / "pipe.jpg"
    os.mkfifo(fifo)
    odd = tmp_path / "two\nlines\t.jpg"
    shutil.copy(good, odd)
    args = [str(model), str(fifo), "/dev/zero", str(good), str(odd), str(tmp_path / "gone.jpg"), str(tmp_path)]
    p = subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "predict", *args], capture_output=True, text=True, timeout=120
    )
    out, err = p.stdout.splitlines(), p.stderr.splitlines()
    assert p.returncode == 1, p.stderr
    assert any(line.startswith(str(good) + "\t") for line in out)
    assert sum(json.dumps(str(odd)) in line for line in out) == 2  # given directly, and inside the folder
    assert all(len(line.split("\t")) == 3 for line in out)  # path, label, probability: nothing split
    assert any("pipe.jpg" in e and "named pipe" in e for e in err)
    assert any("/dev/zero" in e and "device" in e for e in err)
    assert any("gone.jpg" in e and "missing" in e for e in err)
    assert any("is a pickle" in e for e in err) and "Traceback" not in p.stderr


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("mount"), reason="mounting a tiny tmpfs needs root")
def test_disk_full_during_dataset_is_one_line(tmp_path):
    small = tmp_path / "small"
    small.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=300k", "tmpfs", str(small)]).returncode:
        pytest.skip("cannot mount a tmpfs here")
    try:
        src = tmp_path / "src"
        for cls, name in (("a", "coffee"), ("b", "chelsea")):
            save_crops(src / cls, name, 12, size=160, seed=3)
        recipe = write_recipe(
            tmp_path,
            f'''
[classes.a]
sources = [{{kind = "folder", path = "{src / "a"}"}}]
[classes.b]
sources = [{{kind = "folder", path = "{src / "b"}"}}]
''',
        )
        p = subprocess.run(
            [sys.executable, "-m", "chiquito_or_not", "--data-root", str(small), "dataset", str(recipe)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert p.returncode == 2, p.stdout + p.stderr
        err = p.stderr.strip().splitlines()
        assert len(err) == 1 and "no space left" in err[0] and str(small) in err[0] and " MB" in err[0], err
        assert not list(small.rglob(".*.part"))  # no half-written file
        assert len(list(src.rglob("*.jpg"))) == 24  # the sources are untouched
    finally:
        subprocess.run(["umount", str(small)])
