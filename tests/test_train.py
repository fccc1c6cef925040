"""`chiquito train PATH` and `chiquito new`: a folder read as a recipe (class folders, split folders, boxes),
what is inferred said in a few lines, bad folders and bad KEY=VALUE refused in one line through the CLI,
recipe paths resolved against the recipe's folder, `epochs=N`; and (slow) a real run from a folder, its best
epoch kept and said in metrics.json."""

from __future__ import annotations

import csv
import json
import tomllib
from pathlib import Path

import pytest
from typer.testing import CliRunner

from chiquito_or_not.cli import app

from .helpers import save_crops, write_recipe


def _cli(*args, cwd: Path | None = None, monkeypatch=None):
    if cwd is not None:
        monkeypatch.chdir(cwd)
    return CliRunner().invoke(app, [str(a) for a in args])


def _one_line_error(res) -> str:
    assert res.exit_code == 2, res.output
    lines = [x for x in res.output.splitlines() if x.strip()]
    assert lines and lines[-1].startswith("error: ") and "Traceback" not in res.output, res.output
    return lines[-1]


def _class_folders(root: Path, n: int = 6) -> Path:
    save_crops(root / "cat", "chelsea", n, size=80, seed=1)
    save_crops(root / "rocket", "rocket", n, size=80, seed=2)
    return root


def _voc_folder(root: Path, n: int = 6, given: bool = False) -> Path:
    from chiquito_or_not.tasks.detect.box_formats import Box, write_voc

    files = save_crops(root / "JPEGImages", "chelsea", n, size=96, seed=1)
    (root / "Annotations").mkdir()
    for i, p in enumerate(files):
        write_voc(
            root / "Annotations" / f"{p.stem}.xml", p.name, 96, 96, [Box("cat" if i % 2 else "dog", 8, 8, 60, 70)]
        )
    if given:
        (root / "ImageSets" / "Main").mkdir(parents=True)
        stems = [p.stem for p in files]
        (root / "ImageSets" / "Main" / "train.txt").write_text("\n".join(stems[:-2]) + "\n")
        (root / "ImageSets" / "Main" / "val.txt").write_text("\n".join(stems[-2:]) + "\n")
    return root


def test_a_folder_of_class_folders_is_a_classification_recipe(tmp_path, roots):
    from chiquito_or_not.stages.train import plan_training

    plan = plan_training(_class_folders(tmp_path / "My Photos"), ["finetune.size=96"])
    r = plan.recipe
    assert r.task == "classify" and sorted(r.classes) == ["cat", "rocket"] and r.name == "my-photos"
    assert r.finetune.size == 96 and r.dataset.split == "hash" and r.dataset.balance == "weights"
    assert [s.kind for s in r.classes["cat"].sources] == ["folder"]
    assert Path(r.classes["cat"].sources[0].path).is_absolute()  # the recipe works from any folder
    assert any("2 classes" in line for line in plan.said) and any("cat 6" in line for line in plan.said)
    # the defaults fit a user's folders: rates from the LR finder, the best epoch kept
    assert (r.finetune.frozen.lr, r.finetune.augmented.lr, r.finetune.unfrozen.lrs) == ("auto", "auto", "auto")
    assert r.finetune.keep == "best"


def test_split_folders_keep_their_splits(tmp_path, roots):
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.train import plan_training

    root = tmp_path / "set"
    for split, n, seed in (("train", 6, 0), ("val", 3, 10)):
        save_crops(root / split / "cat", "chelsea", n, size=80, seed=seed + 1)
        save_crops(root / split / "rocket", "rocket", n, size=80, seed=seed + 2)
    plan = plan_training(root)
    assert plan.recipe.dataset.split == "given" and any("as given" in line for line in plan.said)
    s = build_dataset(plan.recipe, log=lambda *_: None)
    assert s.counts["train"] == {"cat": 6, "rocket": 6} and s.counts["valid"] == {"cat": 3, "rocket": 3}
    rows = list(csv.DictReader(open(s.root / "split.csv")))
    assert len(rows) == 18
    # each picture is in the split of the folder it came from
    raw = {r["clean_path"]: r["raw_path"] for r in csv.DictReader(open(s.root / "manifest.csv")) if r["clean_path"]}
    for r in rows:
        src = Path(raw[r["file"].split("/", 1)[1]])
        assert {"train": "train", "val": "valid"}[src.parent.parent.name] == r["split"], (src, r)
    # a recipe file that says split = "given" without folder splits is refused in one line
    bad = write_recipe(
        tmp_path,
        f'[dataset]\nsplit = "given"\n[[classes.a.sources]]\nkind = "folder"\npath = "{root}"\n'
        f'[[classes.b.sources]]\nkind = "folder"\npath = "{root}"\n',
    )
    with pytest.raises(Exception, match="every source must be a folder with 'split'"):
        load_recipe(bad)


def test_a_voc_devkit_folder_is_a_detection_recipe(tmp_path, roots):
    from chiquito_or_not.stages.train import plan_training

    plan = plan_training(_voc_folder(tmp_path / "boxes", given=True))
    r = plan.recipe
    assert r.task == "detect" and list(r.detect.labels) == ["cat", "dog"] and r.dataset.split == "given"
    assert r.detect.sources[0].format == "auto"
    assert any("voc boxes, 6 of 6 images" in line for line in plan.said), plan.said


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda t: save_crops(t / "only" / "cat", "chelsea", 3) and t / "only", "one class ('cat')"),
        (
            lambda t: (_class_folders(t / "e"), (t / "e" / "empty").mkdir()) and t / "e",
            "class folder 'empty' has no pictures",
        ),
        (lambda t: (_class_folders(t / "loose"), save_crops(t / "loose", "coffee", 2)) and t / "loose", "lie beside"),
        (lambda t: (_class_folders(t / "mix"), _voc_folder(t / "mix" / "cat" / "sub")) and t / "mix", "mix pictures"),
        (lambda t: (t / "nothing").mkdir() or t / "nothing", "no pictures to train on"),
        (lambda t: save_crops(t, "coffee", 1)[0], "not a recipe (.toml)"),
        (lambda t: t / "missing", "no such file or folder"),
    ],
)
def test_bad_folders_are_one_line_and_change_nothing(tmp_path, roots, monkeypatch, make, expected):
    path = make(_mk(tmp_path / "in"))
    before = sorted(p for p in (tmp_path / "in").rglob("*"))
    line = _one_line_error(_cli("train", path))
    assert expected in line, line
    assert sorted(p for p in (tmp_path / "in").rglob("*")) == before  # nothing written beside the pictures
    assert not (tmp_path / "runs").exists() and not (tmp_path / "data").exists()


def _mk(p: Path) -> Path:
    p.mkdir(parents=True, exist_ok=True)
    return p


@pytest.mark.parametrize(
    "override, expected",
    [
        ("finetune.sise=160", "did you mean 'finetune.size'"),
        ("finetune.size=big", "finetune.size"),
        ("epochs=two", "epochs='two': give a whole number"),
        ("finetune", "is not KEY=VALUE"),
    ],
)
def test_bad_overrides_are_one_line(tmp_path, roots, override, expected):
    line = _one_line_error(_cli("train", _class_folders(tmp_path / "pics"), override))
    assert expected in line, line


def test_epochs_scales_the_whole_schedule(tmp_path):
    from chiquito_or_not.core.recipe import load_recipe

    p = write_recipe(
        tmp_path,
        '[classes.a]\nsources = [{kind = "folder", path = "."}]\n'
        '[classes.b]\nsources = [{kind = "folder", path = "."}]\n',
    )
    for n in (3, 13, 40):
        f = load_recipe(p, [f"epochs={n}"]).finetune
        total = f.frozen.epochs + f.augmented.cycles + f.unfrozen.cycles
        assert total == n and min(f.frozen.epochs, f.augmented.cycles, f.unfrozen.cycles) >= 1
        assert f.augmented.cycle_mult == f.unfrozen.cycle_mult == 1


def test_recipe_paths_resolve_against_the_recipe_folder(tmp_path, monkeypatch):
    from chiquito_or_not.core.recipe import load_recipe

    _class_folders(tmp_path / "proj" / "pics")
    text = (
        '[classes.cat]\nsources = [{kind = "folder", path = "pics/cat"}]\n'
        '[classes.rocket]\nsources = [{kind = "folder", path = "pics/rocket"}]\n'
    )
    p = write_recipe(tmp_path / "proj", text)
    monkeypatch.chdir(tmp_path)  # elsewhere: the recipe's own folder is what counts
    notes = []
    r = load_recipe(p, notes=notes)
    assert Path(r.classes["cat"].sources[0].path) == tmp_path / "proj" / "pics" / "cat" and notes == []
    # a path that exists only from the current folder still works, with a note saying how to write it
    monkeypatch.chdir(tmp_path / "proj")
    q = write_recipe(tmp_path / "proj" / "recipes", text)
    r = load_recipe(q, notes=notes)
    assert r.classes["cat"].sources[0].path == "pics/cat" and len(notes) == 2 and "../pics/cat" in notes[0]


def test_new_writes_a_commented_recipe_that_trains(tmp_path, roots, monkeypatch):
    from chiquito_or_not.core.recipe import load_recipe

    pics = _class_folders(tmp_path / "pics")
    res = _cli("new", "pets", pics / "cat", pics / "rocket", cwd=tmp_path, monkeypatch=monkeypatch)
    assert res.exit_code == 0, res.output
    text = (tmp_path / "pets.toml").read_text()
    assert text.startswith("# pets: written by `chiquito new`") and 'path = "pics/cat"' in text
    r = load_recipe(tmp_path / "pets.toml")
    assert sorted(r.classes) == ["cat", "rocket"] and r.name == "pets"
    assert "exists" in _one_line_error(_cli("new", "pets", pics, cwd=tmp_path, monkeypatch=monkeypatch))
    res = _cli("new", "web", "--search", "red fox", "--search", "grey wolf", cwd=tmp_path, monkeypatch=monkeypatch)
    assert res.exit_code == 0, res.output
    data = tomllib.loads((tmp_path / "web.toml").read_text())
    assert data["classes"]["red_fox"]["sources"][0] == {"kind": "image_search", "query": "red fox"}
    assert "one per class" in _one_line_error(_cli("new", "x", "--search", "a", cwd=tmp_path, monkeypatch=monkeypatch))


@pytest.mark.slow  # a real model trained from a folder: about a minute
def test_train_a_folder_end_to_end_keeps_the_best_epoch(tmp_path, roots, monkeypatch):
    from chiquito_or_not.core.recipe import load_recipe

    pics = tmp_path / "pics"
    save_crops(pics / "cat", "chelsea", 16, size=80, seed=1)
    save_crops(pics / "rocket", "rocket", 16, size=80, seed=2)
    res = _cli("train", pics, "finetune.size=64", "finetune.bs=8", "finetune.lr_find_iters=12", "epochs=5")
    assert res.exit_code == 0, res.output
    out = res.output
    assert "task: classify, 2 classes" in out and "lr_find:" in out and "auto" in out
    assert "a share near 0.90 (accuracy, recall) on" in out and "few training pictures: cat" in out
    run = tmp_path / "runs" / "pics"
    m = json.loads((run / "metrics.json").read_text())
    kept = m["kept"]
    history = list(csv.DictReader(open(run / "history.csv")))
    best = max(float(h["accuracy"]) for h in history)
    assert kept["metric"] == "accuracy" and kept["best"] == pytest.approx(best) and kept["value"] == kept["best"]
    assert kept["chosen_on"] == "valid" and "optimistic" in kept["note"]
    # the model exported and evaluated is the kept epoch's: evaluate's accuracy on valid is that epoch's
    assert m["valid"]["accuracy"] == pytest.approx(kept["value"], abs=1e-6)
    assert m["valid"]["accuracy"] >= 0.75  # it learned: cats from rockets
    # the resolved recipe is a reusable file, and the ONNX export is there
    again = load_recipe(run / "recipe.toml")
    assert sorted(again.classes) == ["cat", "rocket"] and again.finetune.size == 64
    assert (run / "model.onnx").is_file() and (run / "model.pkl").is_file()
    assert f"open: {run / 'metrics.json'}" in out


@pytest.mark.slow  # a real (tiny) fastai training
def test_keep_best_restores_an_earlier_better_epoch(tmp_path):
    import torch
    from fastai.callback.core import Callback
    from fastai.data.core import DataLoaders
    from fastai.learner import Learner
    from fastai.metrics import accuracy
    from torch.utils.data import TensorDataset

    from chiquito_or_not.train.keep_best import BestEpoch, KeepBest

    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 2, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    dls = DataLoaders.from_dsets(TensorDataset(x[:300], y[:300]), TensorDataset(x[300:], y[300:]), bs=50)
    model = torch.nn.Linear(2, 2)

    class SpoilTheLastEpoch(Callback):  # what a learning rate too hot does to a late epoch
        def before_validate(self):
            if self.epoch == self.n_epoch - 1:
                with torch.no_grad():
                    self.model.weight.neg_()

    learn = Learner(dls, model, loss_func=torch.nn.CrossEntropyLoss(), metrics=accuracy, path=tmp_path)
    best = BestEpoch("accuracy")
    learn.fit(4, 0.1, cbs=[KeepBest(best, "s", model, first_epoch=10), SpoilTheLastEpoch()])
    accs = [float(v[2]) for v in learn.recorder.values]
    assert accs[-1] < 0.5 < max(accs[:-1]) and best.value == max(accs[:-1]) and best.epoch in (11, 12, 13)
    best.load_into(model)
    assert float(learn.validate()[1]) == pytest.approx(best.value)  # the model is the kept epoch's again
    # and it survives a resume: written, read back
    best.save(tmp_path / "best.pth")
    again = BestEpoch.restored(best.state(), tmp_path / "best.pth", "accuracy")
    assert again.epoch == best.epoch and all(torch.equal(again.weights[k], best.weights[k]) for k in best.weights)
    # patience ends a stage that no longer beats the run's best
    learn2 = Learner(dls, torch.nn.Linear(2, 2), loss_func=torch.nn.CrossEntropyLoss(), metrics=accuracy, path=tmp_path)
    high = BestEpoch("accuracy", value=1.01)  # nothing can beat it
    learn2.fit(10, 0.1, cbs=[KeepBest(high, "s", learn2.model, 0, patience=2)])
    assert len(learn2.recorder.values) == 2


def test_a_mosaic_holds_four_images_boxes_in_their_quadrants(tmp_path):
    import torch
    from PIL import Image
    from torchvision.transforms import v2

    from chiquito_or_not.tasks.detect.box_data import DetSet

    paths, boxes = [], []
    for k, colour in enumerate(((255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0))):
        p = tmp_path / f"{k}.png"
        im = Image.new("RGB", (100, 80), (0, 0, 0))
        im.paste(colour, (20, 10, 60, 50))  # one object, its box below
        im.save(p)
        paths.append(p)
        boxes.append([["thing", 20, 10, 60, 50]])
    resize = v2.Compose([v2.Resize((64, 64), antialias=True)])
    plain = DetSet(paths, boxes, ["thing"], 64, [0, 0, 0], [1, 1, 1], resize)
    ds = DetSet(paths, boxes, ["thing"], 64, [0, 0, 0], [1, 1, 1], resize, mosaic=1.0)
    torch.manual_seed(0)
    x, b = ds[0]
    assert x.shape == (3, 64, 64) and b.shape == (4, 5) and plain[0][1].shape == (1, 5)
    for k, row in enumerate(b):  # each box in its quadrant, half the size the image alone gives it
        oy, ox = (k // 2) * 32, (k % 2) * 32
        assert ox <= row[1] < row[3] <= ox + 32 and oy <= row[2] < row[4] <= oy + 32
        assert float(row[3] - row[1]) == pytest.approx(40 * 64 / 100 / 2, abs=0.5)
        # the pixels under the box are its object's (not black)
        cx, cy = int((row[1] + row[3]) / 2), int((row[2] + row[4]) / 2)
        assert float(x[:, cy, cx].sum()) > 0.5
    assert DetSet(paths, boxes, ["thing"], 64, [0, 0, 0], [1, 1, 1], None, mosaic=1.0)[0][1].shape == (1, 5)


def test_version_and_short_help():
    from chiquito_or_not import __version__

    res = _cli("--version")
    assert res.exit_code == 0 and res.output.strip() == f"chiquito_or_not {__version__}"
    res = _cli("train", "-h")
    assert res.exit_code == 0 and "KEY=VALUE" in res.output and "epochs=N" in res.output


def test_export_lists_its_formats_and_refuses_another(tmp_path):
    res = _cli("export", "-h")
    assert res.exit_code == 0 and "onnx|tflite" in res.output
    import subprocess
    import sys

    r = subprocess.run(
        [sys.executable, "-m", "chiquito_or_not", "export", str(tmp_path), "--format", "pdf"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "'pdf' is not one of 'onnx', 'tflite'" in lines[0], r.stderr
