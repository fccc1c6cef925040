"""How sure a score is: 95 % intervals and a paired test, shared by every task's metrics.

- `wilson`: the Wilson score interval of a proportion (accuracy = correct / n). Unlike the normal
  approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n: 45/45 gives 0.921–1.
- per-class recall is a proportion too: Wilson, within the class.
- `balanced_interval`: balanced accuracy from its posterior (each class's recall Beta-distributed),
  simulated with a fixed seed; a percentile bootstrap was tried first and collapsed to 1.000-1.000 on
  45/45 (every resample of an all-right class is all right).
- `mcnemar`: the exact McNemar test of two models on the same images (only the images where exactly one
  of them is right count); `p >= 0.05` means the data cannot tell them apart.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "LEVEL",
    "DRAWS",
    "wilson",
    "balanced_interval",
    "recall_intervals",
    "mcnemar",
    "mean_spread",
    "score_cells",
    "score_columns",
    "versus",
    "says",
]

LEVEL = 0.95
DRAWS = 100_000  # posterior draws for balanced accuracy: its interval ends move by about 0.001 between seeds


def wilson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials (scipy's binomtest), (0, 1) when n is 0."""
    if n <= 0:
        return 0.0, 1.0
    from scipy.stats import binomtest

    ci = binomtest(k, n).proportion_ci(confidence_level=level, method="wilson")
    return max(0.0, float(ci.low)), min(1.0, float(ci.high))


def balanced_interval(
    y, correct, n_classes: int, seed: int = 0, draws: int = DRAWS, level: float = LEVEL
) -> tuple[float, float]:
    """The interval of balanced accuracy (the mean of per-class recalls) from its posterior, simulated with
    a fixed seed (after Brodersen et al., "The balanced accuracy and its posterior distribution", ICPR
    2010): each class's recall is Beta(k + 1/2, n - k + 1/2) given k of its n images right (Jeffreys'
    prior, whose intervals for one proportion have close to nominal coverage), and the interval is the
    shortest one holding `level` of the draws, so it keeps the observed value when a class is all right
    (a percentile bootstrap collapsed to 1.000-1.000 on 45/45; a central interval excluded 1.0). Classes
    without images are left out, as sklearn's balanced_accuracy_score does."""
    rng = np.random.default_rng(seed)
    y, correct = np.asarray(y), np.asarray(correct, dtype=bool)
    present = [c for c in range(n_classes) if (y == c).any()]
    if not present:
        return math.nan, math.nan
    recalls = np.stack(
        [rng.beta(correct[y == c].sum() + 0.5, (~correct[y == c]).sum() + 0.5, size=draws) for c in present], axis=1
    )
    bal = np.sort(recalls.mean(axis=1))
    m = int(math.ceil(level * draws))
    i = int(np.argmin(bal[m - 1 :] - bal[: draws - m + 1]))  # the shortest window of m draws
    observed = float(np.mean([correct[y == c].mean() for c in present]))
    return min(float(bal[i]), observed), max(float(bal[i + m - 1]), observed)


def recall_intervals(y, correct, n_classes: int) -> list[tuple[float, float]]:
    """Each class's recall (a proportion of its images) with its Wilson interval; (nan, nan) without images."""
    y, correct = np.asarray(y), np.asarray(correct, dtype=bool)
    return [
        wilson(int(correct[y == c].sum()), int((y == c).sum())) if (y == c).any() else (math.nan, math.nan)
        for c in range(n_classes)
    ]


def mcnemar(a_correct, b_correct) -> dict:
    """Exact two-sided McNemar test: a and b are right/wrong per image, on the same images in the same
    order. Returns the discordant counts and p."""
    from scipy.stats import binomtest

    a, b = np.asarray(a_correct, dtype=bool), np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"paired outcomes differ in length ({a.size} vs {b.size}): not the same images")
    only_a, only_b = int((a & ~b).sum()), int((~a & b).sum())
    p = 1.0 if only_a + only_b == 0 else float(binomtest(only_a, only_a + only_b, 0.5).pvalue)
    return {"n": int(a.size), "only_first_right": only_a, "only_second_right": only_b, "p": p}


def mean_spread(values: list[float]) -> dict:
    """Mean, sample standard deviation, min and max of a figure across runs."""
    v = np.asarray(values, dtype=np.float64)
    return {
        "mean": float(v.mean()),
        "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
        "min": float(v.min()),
        "max": float(v.max()),
        "n": int(v.size),
    }


def score_cells(m: dict, scores: tuple[str, ...], digits: int = 4) -> dict:
    """A split's scores for a table row, each with its interval as `<score>_low` and `<score>_high`."""
    out = {}
    for k in scores:
        out[k] = round(m[k], digits)
        lo, hi = m.get(f"{k}_ci95", (math.nan, math.nan))
        out[f"{k}_low"], out[f"{k}_high"] = round(lo, digits), round(hi, digits)
    return out


def score_columns(scores: tuple[str, ...]) -> list[str]:
    return [c for k in scores for c in (k, f"{k}_low", f"{k}_high")]


def versus(m_a: dict, m_b: dict, key: str) -> dict:
    """Can two runs' metrics of one split be told apart? McNemar on their per-image outcomes when both
    have them (same images), else whether the intervals of `key` are disjoint."""
    a, b = m_a.get("outcomes"), m_b.get("outcomes")
    if isinstance(a, str) and isinstance(b, str) and len(a) == len(b) and a:
        t = mcnemar([c == "1" for c in a], [c == "1" for c in b])
        return {**t, "test": "McNemar", "distinguishable": t["p"] < 1 - LEVEL}
    (a0, a1), (b0, b1) = m_a[f"{key}_ci95"], m_b[f"{key}_ci95"]
    return {"test": "interval overlap", "p": math.nan, "distinguishable": a1 < b0 or b1 < a0}


def says(first: str, second: str, v: dict, split: str) -> str:
    """One line: whether `first` is distinguishable from `second` on `split`."""
    if v["test"] == "McNemar":
        how = (
            f"McNemar p = {v['p']:.3f} on {v['n']} {split} images ({v['only_first_right']} only {first} "
            f"got right, {v['only_second_right']} only {second})"
        )
    else:
        how = f"their 95 % intervals on {split} {'do not overlap' if v['distinguishable'] else 'overlap'}"
    verdict = "distinguishable" if v["distinguishable"] else "NOT distinguishable: the order between them is noise"
    return f"{first} vs {second}: {how}: {verdict}"
