"""The LR finder stage: a mock training on the frozen learner, a plot, and robust suggestions."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from fastai.callback.schedule import minimum, slide, steep, valley

from ..core.files import atomic_write_text
from ..core.layout import RunFolder
from ..core.plots import plot_lr_find

__all__ = ["find_lr", "suggest", "FALLBACK_LR"]

FALLBACK_LR = 1e-3  # used for lr = "auto" only when the finder recorded no finite loss at all
PREFERENCE = ("valley", "minimum", "steep", "slide")


def suggest(lrs: list[float], losses: list[float], num_it: int) -> tuple[dict, dict]:
    """fastai's four suggestions, each kept only if it works on this curve: (suggestions, errors)."""
    lo = num_it // 10
    lr_t, loss_t = torch.tensor(lrs[lo:-5]), torch.tensor(losses[lo:-5])
    nan = torch.nonzero(torch.isnan(loss_t.view(-1)))
    if len(nan):
        lr_t, loss_t = lr_t[: int(nan.min())], loss_t[: int(nan.min())]
    found, errors = {}, {}
    for fn in (valley, minimum, steep, slide):
        name = fn.__name__
        try:  # valley raises IndexError when the loss diverges within a few batches
            lr = float(fn(lr_t, loss_t, num_it)[0])
        except (IndexError, ValueError, RuntimeError) as e:
            errors[name] = f"{type(e).__name__}: {e}"
            continue
        if math.isfinite(lr) and lr > 0:
            found[name] = lr
        else:
            errors[name] = f"gave {lr}"
    return found, errors


def find_lr(learn, out_dir: Path, num_it: int = 100, write: bool = True) -> dict:
    """Run fastai's LR finder (weights are restored after), save lr_find.png/json, return the JSON."""
    learn.lr_find(num_it=num_it, suggest_funcs=None, show_plot=False)
    lrs = [float(x) for x in learn.recorder.lrs]
    losses = [float(x) for x in learn.recorder.losses]
    found, errors = suggest(lrs, losses, num_it)
    chosen_by = next((n for n in PREFERENCE if n in found), None)
    chosen = found[chosen_by] if chosen_by else None
    if chosen is None:  # too short to trim: a tenth of the lr at the lowest loss seen, as fastai's `minimum`
        finite = [(loss, lr) for lr, loss in zip(lrs, losses) if math.isfinite(loss)]
        chosen, chosen_by = (
            (min(finite)[1] / 10, "short curve: lowest loss / 10") if finite else (FALLBACK_LR, "fallback")
        )
    info = dict(
        suggestions=found, errors=errors, chosen=chosen, chosen_by=chosen_by, points=len(lrs), lrs=lrs, losses=losses
    )
    if write:
        plot_lr_find(np.array(lrs), np.array(losses), found, chosen, RunFolder(out_dir).lr_find_png)
        atomic_write_text(RunFolder(out_dir).lr_find_json, json.dumps(info, indent=1) + "\n")
    return info
