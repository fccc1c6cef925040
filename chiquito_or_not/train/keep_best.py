"""Keep the best epoch of a run, whichever stage it came from (fastai's SaveModelCallback, across stages).

After every epoch the task's validation metric (its first history metric, higher is better; ties: the lower
validation loss) is compared with the run's best so far; a better epoch's weights are copied (in memory, and
to checkpoints/best.pth when its stage ends, so --resume keeps them). With `patience`, a stage after the
first ends early once that many epochs in a row did not beat the run's best (fastai's EarlyStoppingCallback,
against the whole run). At the end the best weights go back into the model that is exported and evaluated.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from pathlib import Path

from fastai.callback.core import Callback, CancelFitException

from ..core.errors import DAMAGED_FILE, RunError

__all__ = ["BestEpoch", "KeepBest"]


@dataclass
class BestEpoch:
    """The run's best epoch so far: where it was, its metric and validation loss, and its weights."""

    metric: str
    stage: str = ""
    epoch: int = 0  # the epoch's number in the run (history.csv's `epoch`)
    value: float = -math.inf
    valid_loss: float = math.inf
    weights: dict | None = field(default=None, repr=False)

    def better(self, value: float, valid_loss: float) -> bool:
        if not math.isfinite(value):
            return False
        return value > self.value or (value == self.value and valid_loss < self.valid_loss)

    def offer(self, model, stage: str, epoch: int, value: float, valid_loss: float) -> bool:
        """Take this epoch if it beats the best; whether it did."""
        if not self.better(value, valid_loss):
            return False
        self.stage, self.epoch, self.value, self.valid_loss = stage, epoch, value, valid_loss
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return True

    def state(self) -> dict:
        """What state.json keeps of it (the weights go to a file)."""
        return {"metric": self.metric, "stage": self.stage, "epoch": self.epoch, "value": self.value}

    def save(self, path: Path) -> None:
        import torch

        if self.weights is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            torch.save(self.weights, tmp)
            tmp.replace(path)

    @classmethod
    def restored(cls, saved: dict | None, path: Path, metric: str) -> BestEpoch:
        """The best epoch state.json and checkpoints/best.pth kept (a tensor-only file: no pickle is run)."""
        import torch

        best = cls(metric)
        if not saved or not path.is_file():
            return best
        try:
            weights = torch.load(path, map_location="cpu", weights_only=True)
        except DAMAGED_FILE as e:
            raise RunError(f"{path} is damaged ({type(e).__name__}); run finetune again without --resume") from None
        if not isinstance(saved.get("value"), (int, float)) or not isinstance(weights, dict):
            raise RunError(f"{path}: state.json's best epoch is unreadable; run finetune again without --resume")
        best.stage, best.epoch, best.value = str(saved.get("stage", "")), int(saved.get("epoch", 0)), saved["value"]
        best.weights = weights
        return best

    def load_into(self, model) -> None:
        if self.weights is not None:
            model.load_state_dict(copy.deepcopy(self.weights))


class KeepBest(Callback):
    """Offer each epoch of a stage to `best`; with `patience` > 0, end the stage after that many epochs in a
    row without a new best. `model`: the whole model (the frozen stage may train a head learner that shares
    its head); `first_epoch`: the run's epoch number before this stage."""

    order = 66  # after the Recorder has the epoch's metrics

    def __init__(self, best: BestEpoch, stage: str, model, first_epoch: int, patience: int = 0):
        self.best, self.stage, self.whole, self.first = best, stage, model, first_epoch
        self.patience, self.since = patience, 0

    def after_epoch(self):
        names = list(self.recorder.metric_names[1:-1])  # train_loss, valid_loss, metrics...
        vals = self.recorder.values[-1] if self.recorder.values else []
        row = dict(zip(names, vals))
        if self.best.metric not in row:
            return
        epoch = self.first + self.epoch + 1
        if self.best.offer(self.whole, self.stage, epoch, float(row[self.best.metric]), float(row["valid_loss"])):
            self.since = 0
            return
        self.since += 1
        if self.patience and self.since >= self.patience:
            raise CancelFitException()
