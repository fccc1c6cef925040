"""The Learner for a recipe, whatever its task: body from the backbone, head/loss/metrics from the task;
and the callbacks and freezing every task trains with (imports torch/fastai)."""

from __future__ import annotations

import os
import sys
import time
from functools import partial
from pathlib import Path

import torch.nn as nn
from fastai.callback.core import Callback
from fastai.callback.progress import ProgressCallback
from fastai.learner import Learner
from fastai.optimizer import SGD, Adam
from fastcore.basics import noop

from ..core.face_detectors import face_meta
from ..core.recipe import Recipe
from .backbones import body_splitter, create_body, num_features

__all__ = ["make_learner", "LogProgress", "keep_frozen", "BodyBatchNormEval"]


def make_learner(recipe: Recipe, task, dls, path: Path, root: Path | None = None):
    """A frozen Learner: pretrained body + the task's head, loss and metrics, three layer groups. `task` is
    the recipe's (core.task_registry.get_task); `root` is the dataset folder the task reads training
    statistics from (a classifier's class weights)."""
    f = recipe.finetune
    body = task.model.adapt_body(recipe, create_body(f.backbone, f.weights))
    head, loss, metrics = task.model.model_parts(recipe, body, num_features(body), dls, root)
    # the tutorial (fastai 0.7) trained with SGD and momentum 0.9; fastai 2 defaults to Adam
    opt_func = partial(SGD, mom=0.9) if f.opt == "sgd" else Adam
    # batchnorm "frozen": BatchNorm in frozen layer groups does not train either (BodyBatchNormEval keeps
    # the body's statistics); fastai reads train_bn when it creates the optimizer
    learn = Learner(
        dls,
        nn.Sequential(body, head),
        loss_func=loss,
        metrics=metrics,
        opt_func=opt_func,
        splitter=body_splitter(f.backbone, body),
        path=path,
        model_dir="checkpoints",
        train_bn=f.batchnorm == "train",
    )
    learn.chiquito_task = task.name  # exported with the learner: predict, evaluate and serve read it
    learn.chiquito_faces = face_meta(recipe)  # trained on face crops: predict crops the same way
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
        # under torchrun / accelerate launch only the first process prints
        self.quiet = os.environ.get("RANK", "0") not in ("", "0")

    def before_epoch(self):
        self.t_epoch, self.n_batches = time.time(), len(self.dls.train)

    def after_batch(self):
        stream = self.out or sys.stdout
        if self.training and not self.quiet and stream.isatty():
            done = self.iter + 1
            bar = "#" * int(30 * done / self.n_batches)
            stream.write(
                f"\r  {self.stage:<9} epoch {self.epoch + 1}/{self.n_epoch} [{bar:<30}] "
                f"{done}/{self.n_batches} loss {self.smooth_loss.item():.4f}"
            )
            stream.flush()

    def after_epoch(self):
        if self.quiet:
            return
        stream = self.out or sys.stdout
        names = self.recorder.metric_names[1:-1]
        vals = self.recorder.values[-1] if self.recorder.values else []
        cols = "  ".join(f"{n} {v:.4f}" for n, v in zip(names, vals))
        pre = "\r" + " " * 90 + "\r" if stream.isatty() else ""
        stream.write(
            f"{pre}  {self.stage:<9} epoch {self.epoch + 1}/{self.n_epoch}  {cols}  {time.time() - self.t_epoch:.1f}s\n"
        )
        stream.flush()
