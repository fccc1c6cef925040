"""Sanity: can the model learn at all? Train on a couple of batches until they are memorised."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastai.torch_core import set_seed

from ..core.paths import Roots
from ..core.recipe import Recipe
from ..core.task_registry import get_task
from ..train.learner import LogProgress, make_learner

__all__ = ["sanity_check"]


def sanity_check(
    recipe: Recipe,
    n_images: int = 16,
    max_epochs: int = 60,
    target: float = 0.99,
    lr: float = 3e-3,
    log=print,
    roots: Roots | None = None,
) -> dict:
    """Train the recipe's model, unfrozen and without augmentation, on n_images training images (two
    batches, validated on themselves) until it has memorised them; `passed` says whether its first
    metric (a classifier's accuracy) got to `target`."""
    set_seed(recipe.seed, reproducible=True)
    task = get_task(recipe.task)
    dls, items = task.data.memorise_dls(recipe, (roots or Roots.from_env()).dataset(recipe.name), n_images)
    with tempfile.TemporaryDirectory() as tmp:
        learn = make_learner(recipe, task, dls, Path(tmp))
        learn.unfreeze()
        epochs, acc = 0, 0.0
        while epochs < max_epochs and acc < target:
            step = min(10, max_epochs - epochs)
            learn.fit_one_cycle(step, lr, cbs=[LogProgress("sanity")])
            epochs += step
            acc = float(learn.recorder.values[-1][2])  # train loss, valid loss, then the task's metrics
    res = {"images": len(items), "epochs": epochs, "accuracy": acc, "target": target, "passed": acc >= target}
    log(
        f"sanity: {'PASS' if res['passed'] else 'FAIL'}: training accuracy {acc:.3f} on {len(items)} images "
        f"after {epochs} epochs (target {target:.2f})"
    )
    return res
