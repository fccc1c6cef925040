"""The classifier's evaluation figures: confusion matrix and worst mistakes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...core.plots import plt, save

__all__ = ["plot_confusion", "plot_top_losses"]


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                str(cm[i, j]),
                ha="center",
                va="center",
                color="white" if cm[i, j] > cm.max() / 2 else "black",
                fontsize=12,
            )
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


def plot_top_losses(items: list[dict], path: Path, title: str) -> Path:
    """Grid of the worst predictions: each item has path, actual, predicted, prob_actual, loss."""
    from PIL import Image

    n = max(len(items), 1)
    cols = min(n, 4)
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(3 * cols, 3.3 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    if not items:
        axes[0, 0].text(0.5, 0.5, "no validation images", ha="center", va="center")
    for ax, it in zip(axes.flat, items):
        with Image.open(it["path"]) as im:
            im = im.convert("RGB")
            im.thumbnail((256, 256))
            ax.imshow(im)
        wrong = it["predicted"] != it["actual"]
        ax.set_title(
            f"{it['predicted']} / {it['actual']}\nloss {max(it['loss'], 0.0):.2f}  p(actual) {it['prob_actual']:.2f}",
            fontsize=9,
            color="red" if wrong else "black",
        )
    fig.suptitle(f"{title}: predicted / actual, worst first")
    fig.tight_layout()
    return save(fig, path)
