"""Figures a run writes: LR finder, loss curves, confusion matrix, worst mistakes."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plot_lr_find", "plot_history", "plot_confusion", "plot_top_losses", "plot_leaderboard", "plot_sweep"]


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_lr_find(lrs, losses, suggestions: dict, chosen: float | None, path: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    ax.plot(lrs, losses)
    ax.set_xscale("log")
    ax.set_xlabel("learning rate (log)")
    ax.set_ylabel("smoothed training loss")
    for (name, lr), color in zip(suggestions.items(), ("C1", "C2", "C3", "C4")):
        i = int(np.argmin(np.abs(np.log(np.asarray(lrs)) - np.log(lr))))
        ax.plot(lrs[i], losses[i], "o", color=color, label=f"{name} {lr:.1e}")
    if chosen is not None:
        ax.axvline(chosen, color="k", ls="--", lw=1, label=f"chosen {chosen:.1e}")
    ax.legend(loc="best", fontsize=8)
    ax.set_title("LR finder (frozen body)")
    return _save(fig, path)


def plot_history(rows: list[dict], path: Path) -> Path:
    """Train/valid loss and accuracy per epoch, with the stages shaded."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(1, len(rows) + 1)
    ax1.plot(x, [float(r["train_loss"]) for r in rows], "o-", label="train loss")
    ax1.plot(x, [float(r["valid_loss"]) for r in rows], "o-", label="valid loss")
    ax2.plot(x, [float(r["accuracy"]) for r in rows], "o-", color="C2", label="valid accuracy")
    stages = [r["stage"] for r in rows]
    for ax in (ax1, ax2):
        start = 0
        for i in range(1, len(stages) + 1):
            if i == len(stages) or stages[i] != stages[start]:
                ax.axvspan(start + 0.5, i + 0.5, alpha=0.08, color=f"C{start % 7}")
                ax.text((start + i + 1) / 2, 1.0, stages[start], transform=ax.get_xaxis_transform(),
                        ha="center", va="bottom", fontsize=8)
                start = i
        ax.set_xlabel("epoch")
        ax.legend(loc="best", fontsize=8)
    ax1.set_ylabel("loss")
    ax2.set_ylabel("accuracy")
    fig.tight_layout()
    return _save(fig, path)


def plot_confusion(cm: np.ndarray, classes: list[str], path: Path, title: str) -> Path:
    k = len(classes)
    fig, ax = plt.subplots(figsize=(1.2 * k + 2.5, 1.2 * k + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(k):
        for j in range(k):
            ax.text(j, i, str(cm[i, j]), ha="center", va="center",
                    color="white" if cm[i, j] > cm.max() / 2 else "black", fontsize=12)
    ax.set_xticks(range(k), classes, rotation=45, ha="right")
    ax.set_yticks(range(k), classes)
    ax.set_xlabel("predicted")
    ax.set_ylabel("actual")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)


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
        ax.set_title(f"{it['predicted']} / {it['actual']}\n"
                     f"loss {max(it['loss'], 0.0):.2f}  p(actual) {it['prob_actual']:.2f}",
                     fontsize=9, color="red" if wrong else "black")
    fig.suptitle(f"{title}: predicted / actual, worst first")
    fig.tight_layout()
    return _save(fig, path)


def plot_leaderboard(rows: list[dict], path: Path, title: str) -> Path:
    """Accuracy and balanced accuracy per backbone, with training time and CPU cost in the labels."""
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 3, 4))
    x = np.arange(len(rows))
    ax.bar(x - 0.2, [r["accuracy"] for r in rows], 0.4, label="accuracy")
    ax.bar(x + 0.2, [r["balanced_accuracy"] for r in rows], 0.4, label="balanced accuracy")
    for i, r in enumerate(rows):
        ax.text(i, 0.02, f"{r['train_seconds']:.0f} s train\n{r['cpu_ms_per_image']:.1f} ms/img\n"
                f"{r['params'] / 1e6:.2f} M params", ha="center", va="bottom", fontsize=7, color="white")
    ax.set_xticks(x, [r["backbone"] + ("" if r["weights"] == "default" else f":{r['weights']}") for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return _save(fig, path)


def plot_sweep(rows: list[dict], path: Path, title: str) -> Path:
    """Validation accuracy per amount frozen; the chosen one marked with its test accuracy."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels = [f"{r['keep_frozen']:g}" for r in rows]
    ax.bar(labels, [r["valid_accuracy"] for r in rows], color=["C2" if r["chosen"] else "C0" for r in rows])
    for i, r in enumerate(rows):
        note = f"valid {r['valid_accuracy']:.3f}" + (f"\ntest {r['test_accuracy']:.3f}" if r["chosen"] else "")
        ax.text(i, r["valid_accuracy"] + 0.01, note, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("kept frozen (layer groups, or share of body blocks)")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    fig.tight_layout()
    return _save(fig, path)
