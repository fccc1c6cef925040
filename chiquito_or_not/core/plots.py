"""Figures every task's runs share: LR finder, loss curves, leaderboard, sweep (a task draws its own
evaluation figures with `save`)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

__all__ = ["plt", "save", "plot_confusion", "plot_lr_find", "plot_history", "plot_leaderboard", "plot_sweep"]


def save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.part{path.suffix}")
    fig.savefig(tmp, dpi=110, bbox_inches="tight")
    plt.close(fig)
    tmp.replace(path)
    return path


def plot_confusion(
    cm: np.ndarray, rows: list[str], path: Path, title: str, cols: list[str] | None = None, axes=("actual", "predicted")
) -> Path:
    """A count matrix, rows x cols (cols: the same names as rows unless given), each cell written in."""
    cols = rows if cols is None else cols
    fig, ax = plt.subplots(figsize=(1.2 * len(cols) + 2.5, 1.2 * len(rows) + 2))
    ax.imshow(cm, cmap="Blues")
    for i in range(len(rows)):
        for j in range(len(cols)):
            colour = "white" if cm[i, j] > cm.max() / 2 else "black"
            ax.text(j, i, str(cm[i, j]), ha="center", va="center", color=colour, fontsize=12)
    ax.set_xticks(range(len(cols)), cols, rotation=45, ha="right")
    ax.set_yticks(range(len(rows)), rows)
    ax.set_ylabel(axes[0])
    ax.set_xlabel(axes[1])
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)


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
    return save(fig, path)


def plot_history(rows: list[dict], path: Path, metric: str = "accuracy") -> Path:
    """Train/valid loss and the task's first metric per epoch, with the stages shaded."""
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 3.8))
    x = np.arange(1, len(rows) + 1)
    ax1.plot(x, [float(r["train_loss"]) for r in rows], "o-", label="train loss")
    ax1.plot(x, [float(r["valid_loss"]) for r in rows], "o-", label="valid loss")
    ax2.plot(x, [float(r[metric]) for r in rows], "o-", color="C2", label=f"valid {metric.replace('_', ' ')}")
    stages = [r["stage"] for r in rows]
    for ax in (ax1, ax2):
        start = 0
        for i in range(1, len(stages) + 1):
            if i == len(stages) or stages[i] != stages[start]:
                ax.axvspan(start + 0.5, i + 0.5, alpha=0.08, color=f"C{start % 7}")
                ax.text(
                    (start + i + 1) / 2,
                    1.0,
                    stages[start],
                    transform=ax.get_xaxis_transform(),
                    ha="center",
                    va="bottom",
                    fontsize=8,
                )
                start = i
        ax.set_xlabel("epoch")
        ax.legend(loc="best", fontsize=8)
    ax1.set_ylabel("loss")
    ax2.set_ylabel(metric.replace("_", " "))
    fig.tight_layout()
    return save(fig, path)


def plot_leaderboard(
    rows: list[dict], path: Path, title: str, scores: tuple[str, ...] = ("accuracy", "balanced_accuracy")
) -> Path:
    """The task's scores per backbone (side by side), with training time and CPU cost in the labels."""
    fig, ax = plt.subplots(figsize=(1.8 * len(rows) + 3, 4))
    x = np.arange(len(rows))
    width = 0.8 / len(scores)
    for k, name in enumerate(scores):
        vals = [r[name] for r in rows]
        err = None
        if all(f"{name}_low" in r for r in rows):  # the 95 % interval as an error bar
            err = [
                [v - r[f"{name}_low"] for v, r in zip(vals, rows)],
                [r[f"{name}_high"] - v for v, r in zip(vals, rows)],
            ]
        ax.bar(
            x - 0.4 + width * (k + 0.5),
            vals,
            width,
            yerr=err,
            capsize=3,
            label=name.replace("_", " ") + (" (95 % CI)" if err else ""),
        )
    for i, r in enumerate(rows):
        ax.text(
            i,
            0.02,
            f"{r['train_seconds']:.0f} s train\n{r['cpu_ms_per_image']:.1f} ms/img\n{r['params'] / 1e6:.2f} M params",
            ha="center",
            va="bottom",
            fontsize=7,
            color="white",
        )
    ax.set_xticks(x, [r["backbone"] + ("" if r["weights"] == "default" else f":{r['weights']}") for r in rows])
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("score")
    ax.set_title(title)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    return save(fig, path)


def plot_sweep(rows: list[dict], path: Path, title: str, score: str = "accuracy") -> Path:
    """The validation score per amount frozen; the chosen one marked with its test score."""
    fig, ax = plt.subplots(figsize=(6, 3.8))
    labels = [f"{r['keep_frozen']:g}" for r in rows]
    v, t = f"valid_{score}", f"test_{score}"
    err = None
    if all(f"{v}_low" in r for r in rows):
        err = [[r[v] - r[f"{v}_low"] for r in rows], [r[f"{v}_high"] - r[v] for r in rows]]
    ax.bar(labels, [r[v] for r in rows], yerr=err, capsize=3, color=["C2" if r["chosen"] else "C0" for r in rows])
    for i, r in enumerate(rows):
        note = f"valid {r[v]:.3f}" + (f"\ntest {r[t]:.3f}" if r["chosen"] else "")
        ax.text(i, r.get(f"{v}_high", r[v]) + 0.01, note, ha="center", va="bottom", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_xlabel("kept frozen (layer groups, or share of body blocks)")
    ax.set_ylabel(f"validation {score.replace('_', ' ')}")
    ax.set_title(title)
    fig.tight_layout()
    return save(fig, path)
