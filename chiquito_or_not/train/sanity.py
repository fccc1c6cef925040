"""Sanity: can the model learn at all? Train on a couple of batches until they are memorised."""

from __future__ import annotations

import tempfile
from pathlib import Path

from fastai.data.block import CategoryBlock, DataBlock
from fastai.data.transforms import parent_label
from fastai.torch_core import set_seed
from fastai.vision.all import ImageBlock, Normalize, Resize

from .backbones import get_backbone
from ..core.errors import DataError
from .learner import LogProgress, dataset_classes, make_learner
from ..core.paths import dataset_dir
from ..core.images import IMAGE_EXTS
from ..core.recipe import Recipe
from ..data.split import unit_hash

__all__ = ["sanity_check"]


def _same_items(items):
    """Train and validate on the same items: validation accuracy is then memorisation."""
    idx = list(range(len(items)))
    return idx, idx


def sanity_check(recipe: Recipe, n_images: int = 16, max_epochs: int = 60, target: float = 0.99,
                 lr: float = 3e-3, log=print) -> dict:
    """Train the recipe's model, unfrozen and without augmentation, on n_images training images (two
    batches) until it classifies them all; `passed` says whether it got to `target` accuracy."""
    set_seed(recipe.seed, reproducible=True)
    root = dataset_dir(recipe.name) / "train"
    classes = dataset_classes(recipe)
    per_class = max(1, n_images // len(classes))
    items = []
    for lab in classes:
        files = sorted((p for p in (root / lab).glob("*") if p.suffix.lower() in IMAGE_EXTS),
                       key=lambda p: unit_hash(recipe.seed, "sanity", p.name)) if (root / lab).is_dir() else []
        if not files:
            raise DataError(f"{root / lab}: no training images; run `chiquito dataset {recipe.path}` first")
        items += files[:per_class]
    b = get_backbone(recipe.finetune.backbone)
    block = DataBlock(blocks=(ImageBlock, CategoryBlock(vocab=classes)), get_y=parent_label,
                      splitter=_same_items, item_tfms=Resize(recipe.finetune.size),
                      batch_tfms=[Normalize.from_stats(b.mean, b.std)])
    dls = block.dataloaders(items, bs=max(1, len(items) // 2), num_workers=0, drop_last=False)
    with tempfile.TemporaryDirectory() as tmp:
        learn = make_learner(recipe, dls, Path(tmp))
        learn.unfreeze()
        epochs, acc = 0, 0.0
        while epochs < max_epochs and acc < target:
            step = min(10, max_epochs - epochs)
            learn.fit_one_cycle(step, lr, cbs=[LogProgress("sanity")])
            epochs += step
            acc = float(learn.recorder.values[-1][2])
    res = {"images": len(items), "epochs": epochs, "accuracy": acc, "target": target, "passed": acc >= target}
    log(f"sanity: {'PASS' if res['passed'] else 'FAIL'}: training accuracy {acc:.3f} on {len(items)} images "
        f"after {epochs} epochs (target {target:.2f})")
    return res
