"""What a dataset folder and a run folder hold: every file name of both, spelled once.

datasets/NAME/                       runs/NAME/
  recipe.json   the resolved recipe    recipe.json     the resolved recipe
  manifest.csv  every input, its fate  state.json      stages done, timings, dataset, task
  split.csv     split/label/file/hash  history.csv     loss and metrics per epoch
  classes.json  the classes kept       checkpoints/    stage-*.pth (weights + optimizer), best.pth
  clean/        decoded RGB images     lr_find.json/.png, loss_curve.png
  train/ valid/ test/  the splits      model.pkl       the exported fastai learner
                                       metrics.json    evaluate's numbers (+ the task's figures)
                                       model.onnx, export.json   after `chiquito export`
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["DatasetFolder", "RunFolder", "RESOLVED_RECIPE"]

RESOLVED_RECIPE = "recipe.json"  # the recipe with every default spelled out, in both folders


@dataclass(frozen=True)
class DatasetFolder:
    """One recipe's dataset folder (Roots.dataset)."""

    root: Path

    @property
    def recipe(self) -> Path:
        return self.root / RESOLVED_RECIPE

    @property
    def manifest(self) -> Path:
        return self.root / "manifest.csv"

    @property
    def split_csv(self) -> Path:
        return self.root / "split.csv"

    @property
    def classes(self) -> Path:
        return self.root / "classes.json"

    @property
    def review(self) -> Path:
        """The user's decisions from `chiquito review` (append-only; dataset applies them)."""
        return self.root / "review.csv"

    @property
    def box_labels(self) -> Path:
        """The boxes drawn in `chiquito label` (append-only; dataset applies them by content hash)."""
        return self.root / "box_labels.csv"

    @property
    def clean(self) -> Path:
        return self.root / "clean"

    def split(self, name: str) -> Path:
        """train/, valid/ or test/."""
        return self.root / name


@dataclass(frozen=True)
class RunFolder:
    """One run folder (Roots.run, or its .partial twin while it is built)."""

    root: Path

    recipe = property(lambda self: self.root / RESOLVED_RECIPE)
    model = property(lambda self: self.root / "model.pkl")
    onnx = property(lambda self: self.root / "model.onnx")
    export_report = property(lambda self: self.root / "export.json")
    metrics = property(lambda self: self.root / "metrics.json")
    state = property(lambda self: self.root / "state.json")
    history = property(lambda self: self.root / "history.csv")
    checkpoints = property(lambda self: self.root / "checkpoints")
    lr_find_json = property(lambda self: self.root / "lr_find.json")
    best_weights = property(lambda self: self.checkpoints / "best.pth")  # the kept epoch's weights (keep = "best")
    lr_find_png = property(lambda self: self.root / "lr_find.png")
    loss_curve = property(lambda self: self.root / "loss_curve.png")
    tensorboard = property(lambda self: self.root / "tensorboard")
    leaderboard_csv = property(lambda self: self.root / "leaderboard.csv")
    leaderboard_png = property(lambda self: self.root / "leaderboard.png")
    sweep_csv = property(lambda self: self.root / "sweep.csv")
    sweep_png = property(lambda self: self.root / "sweep.png")
    seeds_csv = property(lambda self: self.root / "seeds.csv")
    seeds_json = property(lambda self: self.root / "seeds.json")

    def checkpoint(self, stage: str) -> Path:
        return self.checkpoints / f"stage-{stage}.pth"

    def eval_dir(self, data: Path) -> Path:
        """Where `evaluate --data FOLDER` writes by default."""
        return self.root / f"eval-{Path(data).name}"

    def kept_across_runs(self) -> tuple[Path, ...]:
        """Written by `compare`, `sweep` and `finetune --seeds`, not by one finetune: a new run keeps them."""
        return (
            self.leaderboard_csv,
            self.leaderboard_png,
            self.sweep_csv,
            self.sweep_png,
            self.seeds_csv,
            self.seeds_json,
        )
