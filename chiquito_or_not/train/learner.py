"""DataLoaders and Learner for a recipe: the pieces lr-find and finetune share (imports torch/fastai)."""

from __future__ import annotations

import json
import sys
import time
from collections import Counter
from functools import partial
from pathlib import Path

import torch
import torch.nn as nn
from fastai.callback.core import Callback
from fastcore.basics import noop
from fastai.callback.progress import ProgressCallback
from fastai.optimizer import SGD, Adam
from fastai.vision.all import (CrossEntropyLossFlat, Dihedral, ImageDataLoaders, Learner, Normalize, Resize, accuracy,
                               apply_init, aug_transforms, create_head)

from .backbones import body_splitter, create_body, get_backbone, num_features
from ..core.errors import DataError
from ..core.paths import dataset_dir
from ..core.images import IMAGE_EXTS
from ..core.recipe import Recipe

__all__ = ["make_dls", "make_learner", "LogProgress", "class_weights", "keep_frozen",
           "BodyBatchNormEval"]


def _count(root: Path, split: str, classes: list[str]) -> Counter:
    c = Counter()
    for lab in classes:
        d = root / split / lab
        c[lab] = sum(1 for p in d.iterdir() if p.suffix.lower() in IMAGE_EXTS) if d.is_dir() else 0
    return c


def dataset_classes(recipe: Recipe, root: Path | None = None) -> list[str]:
    """The classes the dataset stage kept (classes.json), else the recipe's."""
    f = (Path(root) if root else dataset_dir(recipe.name)) / "classes.json"
    return json.loads(f.read_text()) if f.is_file() else recipe.class_names


def make_dls(recipe: Recipe, augment: bool, root: Path | None = None):
    """fastai DataLoaders over `<root>/train` and `<root>/valid`, with or without augmentation."""
    root = Path(root) if root else dataset_dir(recipe.name)
    classes = dataset_classes(recipe, root)
    for split in ("train", "valid"):
        counts = _count(root, split, classes)
        empty = [lab for lab in classes if not counts[lab]]
        if empty:
            raise DataError(f"{root / split}: no images for class {', '.join(empty)}; "
                            f"run `chiquito dataset {recipe.path}` first")
    n_train = sum(_count(root, "train", classes).values())
    f, b = recipe.finetune, get_backbone(recipe.finetune.backbone)
    a = f.augment
    tfms = aug_transforms(max_rotate=a.max_rotate, max_zoom=a.max_zoom, do_flip=a.flip,
                          max_lighting=a.max_lighting, max_warp=a.max_warp) if augment else []
    if augment and a.rotate90:
        tfms.append(Dihedral(p=0.75))
    return ImageDataLoaders.from_folder(
        root, train="train", valid="valid", vocab=classes, seed=recipe.seed,
        item_tfms=Resize(f.size), batch_tfms=[*tfms, Normalize.from_stats(b.mean, b.std)],
        bs=min(f.bs, n_train), num_workers=f.workers)


def class_weights(recipe: Recipe, root: Path | None = None) -> list[float] | None:
    """Loss weights n_samples / (n_classes * count) when the recipe balances by weights, else None."""
    if recipe.dataset.balance != "weights":
        return None
    classes = dataset_classes(recipe, root)
    counts = _count(Path(root) if root else dataset_dir(recipe.name), "train", classes)
    n, k = sum(counts.values()), len(counts)
    return [n / (k * counts[lab]) for lab in classes]


def make_learner(recipe: Recipe, dls, path: Path, weights: list[float] | None = None):
    """A frozen Learner: pretrained body + fastai head, three layer groups, accuracy metric."""
    f = recipe.finetune
    body = create_body(f.backbone, f.weights)
    if get_backbone(f.backbone).head == "dense":  # flatten a 4x4 map, Dense(512), ReLU, dropout, Dense(classes)
        nf = num_features(body)
        head = nn.Sequential(nn.AdaptiveMaxPool2d(4), nn.Flatten(), nn.Linear(nf * 16, 512), nn.ReLU(inplace=True),
                             nn.Dropout(0.5), nn.Linear(512, dls.c))
    else:
        head = create_head(num_features(body), dls.c)
    apply_init(head, nn.init.kaiming_normal_)
    loss = CrossEntropyLossFlat(weight=torch.tensor(weights, dtype=torch.float32) if weights else None)
    # the tutorial (fastai 0.7) trained with SGD and momentum 0.9; fastai 2 defaults to Adam
    opt_func = partial(SGD, mom=0.9) if f.opt == "sgd" else Adam
    # batchnorm "frozen": BatchNorm in frozen layer groups does not train either (BodyBatchNormEval keeps
    # the body's statistics); fastai reads train_bn when it creates the optimizer
    learn = Learner(dls, nn.Sequential(body, head), loss_func=loss, metrics=[accuracy], opt_func=opt_func,
                    splitter=body_splitter(f.backbone, body),
                    path=path, model_dir="checkpoints", train_bn=f.batchnorm == "train")
    learn.remove_cb(ProgressCallback)  # LogProgress prints instead: readable in a terminal and a CI log
    learn.logger = noop  # the Recorder would print raw lists otherwise
    learn.freeze()
    return learn


class BodyBatchNormEval(Callback):
    """Keep the body's BatchNorm layers in eval mode while training: pretrained statistics, no updates
    (fastai's Learner puts every module in train mode at the start of each epoch)."""
    order = 1  # after TrainEvalCallback (order -10) has called model.train()

    def before_train(self):
        model = getattr(self.learn.model, "module", self.learn.model)  # DistributedDataParallel wraps it
        for m in model[0].modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.eval()


def _blocks(body) -> list:
    """The body's blocks, in order: a Sequential's children, or a timm body's parameter groups (as the
    modules that own those parameters)."""
    from .portable import TimmBody

    if not isinstance(body, TimmBody):
        return list(body.children())
    owner = {}
    for mod_name, mod in body.model.named_modules():
        for p_name, _ in mod.named_parameters(recurse=False):
            owner[f"{mod_name}.{p_name}" if mod_name else p_name] = mod
    return [nn.ModuleList(list({id(owner[n]): owner[n] for n in g}.values())) for g in body.groups]


def keep_frozen(learn, amount: float) -> str:
    """Unfreeze, then freeze `amount`: whole layer groups (1, 2) or a share of the body's blocks (0 < x < 1)."""
    learn.unfreeze()
    if amount >= 1:
        learn.freeze_to(int(amount))
        return f"{int(amount)} layer group(s) frozen"
    if amount > 0:
        body = learn.model[0]
        blocks = _blocks(body)
        n = round(len(blocks) * amount)
        for block in blocks[:n]:
            for m in block.modules():  # BatchNorm stays trainable, as in fastai's freeze (train_bn)
                if not isinstance(m, nn.modules.batchnorm._BatchNorm):
                    for p in m.parameters(recurse=False):
                        p.requires_grad_(False)
        return f"{n} of {len(blocks)} body blocks frozen"
    return "nothing frozen"


class LogProgress(Callback):
    """One line per epoch, plus a live bar when stdout is a terminal; readable in a CI log."""
    order = 65  # after the Recorder has computed the epoch's metrics

    def __init__(self, stage: str, out=None):
        self.stage, self.out = stage, out

    def before_epoch(self):
        self.t_epoch, self.n_batches = time.time(), len(self.dls.train)

    def after_batch(self):
        stream = self.out or sys.stdout
        if self.training and stream.isatty():
            done = self.iter + 1
            bar = "#" * int(30 * done / self.n_batches)
            stream.write(f"\r  {self.stage:<9} epoch {self.epoch + 1}/{self.n_epoch} [{bar:<30}] "
                         f"{done}/{self.n_batches} loss {self.smooth_loss.item():.4f}")
            stream.flush()

    def after_epoch(self):
        stream = self.out or sys.stdout
        names = self.recorder.metric_names[1:-1]
        vals = self.recorder.values[-1] if self.recorder.values else []
        cols = "  ".join(f"{n} {v:.4f}" for n, v in zip(names, vals))
        pre = "\r" + " " * 90 + "\r" if stream.isatty() else ""
        stream.write(f"{pre}  {self.stage:<9} epoch {self.epoch + 1}/{self.n_epoch}  {cols}  "
                     f"{time.time() - self.t_epoch:.1f}s\n")
        stream.flush()
