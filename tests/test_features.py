"""The feature cache on the tiny run's real data and real EfficientNet-Lite0 body."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from chiquito_or_not.core.paths import Roots
from chiquito_or_not.core.task_registry import get_task
from chiquito_or_not.train.features import FeatureCache, cached_features, head_split, learner_key, model_key
from chiquito_or_not.train.learner import make_learner

pytestmark = pytest.mark.slow


def _learner(recipe, size=None):
    if size:
        recipe = replace(recipe, finetune=replace(recipe.finetune, size=size))
    task = get_task(recipe.task)
    root = Roots.from_env().dataset(recipe.name)  # the tiny run's dataset (env_roots points there)
    return make_learner(recipe, task, task.data.dataloaders(recipe, root, augment=False), Path("unused"))


def _key(learn, backbone="efficientnet_lite0"):
    dls, head = learn.dls, learn.model[1]
    resize = next(t for t in dls.after_item if type(t).__name__ == "Resize")
    norm = next(t for t in dls.after_batch if type(t).__name__ == "Normalize")
    return model_key(
        backbone,
        learn.model[0],
        head[: head_split(head)],
        tuple(resize.size),
        norm.mean.flatten().tolist(),
        norm.std.flatten().tolist(),
    )


def test_vectors_equal_the_body_computed_directly_then_hit_then_rebuild(tiny_run, env_roots, tmp_path):
    recipe, _ = tiny_run
    learn = _learner(recipe)
    files = sorted((Roots.from_env().dataset(recipe.name) / "valid").rglob("*.jpg"))
    cache = FeatureCache(tmp_path / "features", _key(learn))

    x1, c1 = cached_features(learn, files, cache)
    assert c1 == {"hit": 0, "computed": len(files), "rebuilt": 0}
    body, head = learn.model
    body.eval(), head.eval()
    with torch.no_grad():
        xb = torch.cat([b[0] for b in learn.dls.test_dl(files, bs=4)])
        direct = head[:2](body(xb))
    assert x1.shape == direct.shape and torch.allclose(x1, direct, atol=1e-5)

    x2, c2 = cached_features(learn, files, cache)
    assert c2 == {"hit": len(files), "computed": 0, "rebuilt": 0} and torch.equal(x1, x2)

    stored = sorted(cache.folder.rglob("*.f32"))
    assert len(stored) == len(files)
    stored[0].write_bytes(stored[0].read_bytes()[:-7])  # truncated
    raw = bytearray(stored[1].read_bytes())
    raw[-1] ^= 0xFF  # one flipped byte: same length, wrong checksum
    stored[1].write_bytes(bytes(raw))
    x3, c3 = cached_features(learn, files, cache)
    assert c3 == {"hit": len(files) - 2, "computed": 0, "rebuilt": 2}
    assert torch.allclose(x3, x1, atol=1e-5)
    assert cached_features(learn, files, cache)[1]["hit"] == len(files)  # rewritten good


def test_every_part_of_the_key_changes_it(tiny_run, env_roots):
    recipe, _ = tiny_run
    learn = _learner(recipe)
    base = _key(learn)
    assert _key(learn) == base  # stable
    assert _key(_learner(recipe, size=72)) != base  # image size
    assert _key(learn, backbone="other") != base  # backbone name
    with torch.no_grad():
        learn.model[0][0].weight[0, 0, 0, 0] += 1e-3  # the weights
    assert _key(learn) != base
    learn = _learner(recipe)
    learn.model[0][1].running_mean[0] += 1e-3  # the BatchNorm statistics
    assert _key(learn) != base
    learn = _learner(recipe)
    norm = next(t for t in learn.dls.after_batch if type(t).__name__ == "Normalize")
    norm.mean = norm.mean + 0.01  # the preprocessing
    assert _key(learn) != base


def test_finetune_trained_the_frozen_stage_from_the_cache(tiny_run, env_roots):
    recipe, result = tiny_run
    # the tiny run's own folder, found by its model key: other tests' runs share this cache root
    folder = Roots.from_env().cache / "features" / learner_key(_learner(recipe), recipe.finetune.backbone)
    n_images = sum(1 for _ in Roots.from_env().dataset(recipe.name).glob("[tv][ra]*/*/*.jpg"))
    assert folder.is_dir() and len(list(folder.rglob("*.f32"))) == n_images
    frozen = [r for r in (result.run / "history.csv").read_text().splitlines()[1:] if r.startswith("frozen,")]
    assert len(frozen) == recipe.finetune.frozen.epochs


def test_the_recipe_can_turn_the_cache_off(tiny_run, env_roots, tmp_path, monkeypatch):
    from chiquito_or_not.stages.finetune import finetune

    recipe, _ = tiny_run
    monkeypatch.setenv("CHIQUITO_RUNS", str(tmp_path / "runs"))
    f = recipe.finetune
    off = replace(
        recipe,
        finetune=replace(
            f,
            lr_find=False,
            frozen=replace(f.frozen, feature_cache=False),
            augmented=replace(f.augmented, cycles=0, lr=1e-3),
            unfrozen=replace(f.unfrozen, cycles=0),
        ),
    )
    before = sorted(p.relative_to(Roots.from_env().cache) for p in (Roots.from_env().cache / "features").rglob("*"))
    lines = []
    res = finetune(off, log=lines.append, data_root=Roots.from_env().dataset(recipe.name))
    assert (
        sorted(p.relative_to(Roots.from_env().cache) for p in (Roots.from_env().cache / "features").rglob("*"))
        == before
    )
    assert not any("feature cache" in str(x) or "cached body features" in str(x) for x in lines)
    assert "features" not in res.timings and res.timings["frozen"] > 0


@pytest.mark.parametrize("batchnorm", ["frozen", "train"])
def test_batchnorm_frozen_keeps_the_pretrained_statistics_train_updates_them(
    tiny_run, env_roots, tmp_path, monkeypatch, batchnorm
):
    from chiquito_or_not.stages.finetune import finetune
    from chiquito_or_not.train.backbones import create_body

    recipe, _ = tiny_run
    monkeypatch.setenv("CHIQUITO_RUNS", str(tmp_path / "runs"))
    f = recipe.finetune
    r = replace(
        recipe,
        finetune=replace(
            f, batchnorm=batchnorm, lr_find=False, keep="last", augmented=replace(f.augmented, cycles=1, lr=1e-3)
        ),
    )
    res = finetune(r, log=lambda *_: None, data_root=Roots.from_env().dataset(recipe.name))
    trained, pretrained = res.learn.model[0], create_body(f.backbone)
    bn = [(name, m) for name, m in trained.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    ref = dict(pretrained.named_modules())
    assert len(bn) > 40
    same_stats = [
        torch.equal(m.running_mean, ref[n].running_mean) and torch.equal(m.running_var, ref[n].running_var)
        for n, m in bn
    ]
    convs_moved = any(
        not torch.equal(m.weight, ref[n].weight) for n, m in trained.named_modules() if isinstance(m, torch.nn.Conv2d)
    )
    assert convs_moved  # the unfrozen stage trained the body either way
    if batchnorm == "frozen":
        assert all(same_stats)
    else:
        assert not any(same_stats)
