"""The classifier's evaluation figures: its worst mistakes (the confusion matrix is core.plots')."""

from __future__ import annotations

from pathlib import Path

from ...core.plots import plt, save

__all__ = ["plot_top_losses"]


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
