"""Every registered task is a few typed roles, each role complete, and each role runs on tiny data: a new task is
tested the day it is registered (as timm's tests run over list_models())."""

from __future__ import annotations

import inspect
import typing
from pathlib import Path

import pytest

from chiquito_or_not.core import task_registry as reg
from chiquito_or_not.core.task_registry import CAPABILITIES, ROLES, TASKS, get_task

from .helpers import save_crops, write_recipe


def _members(protocol) -> list[str]:
    names = [n for n, v in vars(protocol).items() if inspect.isfunction(v) and not n.startswith("_")]
    return names + list(getattr(protocol, "__annotations__", {}))


def _protocol(name: str):
    hints = typing.get_type_hints(reg.Task)
    return next(a for a in typing.get_args(hints[name]) if a is not type(None)) if name in CAPABILITIES else hints[name]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_every_role_of_every_task_has_all_its_members(name):
    task = get_task(name)
    assert isinstance(task, reg.Task) and task.name == name
    for role in ROLES:
        members = _members(_protocol(role))
        assert members, role
        assert [m for m in members if not hasattr(getattr(task, role), m)] == [], role
    for cap in CAPABILITIES:  # a capability is declared whole, or not at all (None): never a member that raises
        obj = getattr(task, cap)
        if obj is not None:
            assert [m for m in _members(_protocol(cap)) if not hasattr(obj, m)] == [], cap
    assert set(task.evaluation.rank) <= set(task.evaluation.scores) and task.model.history_metrics


def _classify_recipe(tmp: Path) -> Path:
    for lab, photo in (("cat", "chelsea"), ("rocket", "rocket")):
        save_crops(tmp / "src" / lab, photo, 12, size=80, seed=len(lab))
    text = (
        f'[[classes.cat.sources]]\nkind = "folder"\npath = "{tmp / "src" / "cat"}"\n'
        f'[[classes.rocket.sources]]\nkind = "folder"\npath = "{tmp / "src" / "rocket"}"\n'
    )
    return write_recipe(tmp, text + "[dataset]\nmin_size = 32\nvalid = 0.34\n" + _FINETUNE, "roles.toml")


def _detect_recipe(tmp: Path) -> Path:
    from chiquito_or_not.tasks.detect.box_formats import Box, write_voc

    folder = tmp / "src"
    files = save_crops(folder, "chelsea", 12, size=96, seed=1) + save_crops(folder, "astronaut", 12, size=96, seed=2)
    for i, p in enumerate(files):
        x0 = 8 + (i * 7) % 40
        write_voc(p.with_suffix(".xml"), p.name, 96, 96, [Box("thing", x0, 12, x0 + 40, 70)])
    text = (
        'task = "detect"\n[detect]\nlabels = ["thing"]\n[[detect.sources]]\nformat = "voc"\n'
        f'[detect.sources.images]\nkind = "folder"\npath = "{folder}"\n'
    )
    # the SSD head's extra layers need maps larger than 1 x 1: 128 px at least
    finetune = _FINETUNE.replace("size = 64", "size = 128").replace("bs = 4", "bs = 8")
    return write_recipe(tmp, text + "[dataset]\nmin_size = 32\nvalid = 0.25\n" + finetune, "roles.toml")


_FINETUNE = '[finetune]\nbackbone = "efficientnet_lite0"\nsize = 64\nbs = 4\n'
TINY = {"classify": _classify_recipe, "detect": _detect_recipe}


@pytest.mark.slow  # one epoch of a real model per task: a few seconds each
@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_role_runs_on_tiny_data(name, roots, tmp_path):
    import torch

    from chiquito_or_not.core.model_loader import load_model
    from chiquito_or_not.core.paths import Roots
    from chiquito_or_not.core.recipe import load_recipe
    from chiquito_or_not.stages.dataset import build_dataset
    from chiquito_or_not.train.fit import export_learner
    from chiquito_or_not.train.learner import make_learner

    assert name in TINY, f"add a tiny recipe for task {name!r} to this test"
    recipe = load_recipe(TINY[name](tmp_path))
    task = get_task(recipe.task)
    build_dataset(recipe, log=lambda *_: None)  # data role: dataset_parts
    root = Roots.from_env().dataset(recipe.name)
    task.data.check_dataset(recipe, root)
    dls = task.data.dataloaders(recipe, root, augment=False)
    learn = make_learner(recipe, task, dls, tmp_path / "run", root)  # model role: adapt_body, model_parts
    learn.fit(1, 1e-3)
    assert all(bool(torch.isfinite(p).all()) for p in learn.model.parameters())

    model = load_model(export_learner(learn, tmp_path / "model.pkl"), notice=lambda _: None)  # inference role
    valid = sorted((root / "valid").rglob("*.jpg"))
    results = task.inference.predict_files(model, valid, bs=4, workers=0)
    assert len(results) == len(valid) and not any(r.error for r in results)
    metrics = task.evaluation.evaluate_set(model, "valid", root / "valid", tmp_path, "", 1, lambda *_: None, split=True)
    assert set(task.evaluation.scores) <= set(metrics) and task.evaluation.headline(metrics)

    module, example = task.export.onnx_graph(model)  # export role: what ONNX export traces
    with torch.no_grad():
        outputs = module(example)
    assert len(outputs if isinstance(outputs, (tuple, list)) else [outputs]) == len(task.export.onnx_outputs)
    assert task.export.onnx_metadata(model) and set(task.export.input_spec(model)) >= {"size_wh", "mean", "std"}

    roots = Roots.from_env()
    n_images = sum(1 for _ in (root / "train").rglob("*.jpg")) + len(valid)
    if task.review is not None:  # capabilities: typed results, each image once
        found = task.review.suspects(recipe, roots, root, None, 2, lambda *_: None)
        assert isinstance(found, reg.Suspects) and len(found.items) == n_images and found.folds == 2
        assert len({it["sha256"] for it in found.items}) == n_images and found.root == root
        assert len(found.lines(recipe.name, found.items[:3])) >= 4
        said = found.to_json(recipe.name, found.items[:3])
        assert [it["sha256"] for it in said["items"]] == [it["sha256"] for it in found.items[:3]]
        assert said["name"] == recipe.name and said["issues"] == found.issues
    if task.label is not None:
        listing = task.label.items(recipe, roots, root, lambda *_: None, True)
        assert isinstance(listing, reg.LabelItems) and len(listing.items) == n_images
        assert set(listing.files) == {it["sha256"] for it in listing.items}
        page = task.label.suspects_page(found, 5)
        assert isinstance(page, reg.LabelItems) and page.items == found.items[:5]
