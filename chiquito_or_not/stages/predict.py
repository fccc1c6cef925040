"""The predict stage: the files to predict, and the model's task's batched inference on them (core.model_loader
loads the model, whatever its format)."""

from __future__ import annotations

from pathlib import Path

from ..core.files import IMAGE_EXTS
from ..core.task_registry import task_of_model

__all__ = ["expand_paths", "predict_paths"]


def expand_paths(paths: list[str | Path]) -> list[Path]:
    """Files as given, folders recursively (image extensions only), in a stable order."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out += sorted(x for x in p.rglob("*") if x.is_file() and x.suffix.lower() in IMAGE_EXTS)
        else:
            out.append(p)
    return out


def predict_paths(model, paths: list[Path], bs: int = 64, workers: int = 2, threshold: float | None = None) -> list:
    """The model's task's predictions for every file; a file that is not a usable image gets an error
    and the others go on. `threshold`: a detector's lowest score."""
    return task_of_model(model).predict_files(model, paths, bs=bs, workers=workers, threshold=threshold)
