"""How sure a score is: 95 % intervals and a paired test, shared by every task's metrics.

- `wilson`: the Wilson score interval of a proportion (accuracy = correct / n). Unlike the normal
  approximation it stays inside [0, 1] and is not zero-width at 0/n or n/n: 45/45 gives 0.921–1.
- `bootstrap_recalls`: per-class recall and balanced accuracy from a seeded, class-stratified percentile
  bootstrap (each resample keeps every class's count, as the split fixed it).
- `mcnemar`: the exact McNemar test of two models on the same images (only the images where exactly one
  of them is right count); `p >= 0.05` means the data cannot tell them apart.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["LEVEL", "Z", "RESAMPLES", "wilson", "bootstrap_recalls", "mcnemar", "mean_spread", "score_cells",
           "score_columns", "versus", "says"]

LEVEL = 0.95
Z = 1.959963984540054  # the normal quantile for a two-sided 95 % interval
RESAMPLES = 2000


def wilson(k: int, n: int, z: float = Z) -> tuple[float, float]:
    """The Wilson score interval of k successes in n trials ((0, 1) when n is 0)."""
    if n <= 0:
        return 0.0, 1.0
    p, z2 = k / n, z * z
    denom = 1 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return max(0.0, center - half), min(1.0, center + half)


def bootstrap_recalls(y: np.ndarray, correct: np.ndarray, n_classes: int, seed: int = 0,
                      resamples: int = RESAMPLES, level: float = LEVEL) -> tuple[tuple[float, float], list]:
    """(balanced accuracy interval, [recall interval per class]) from a class-stratified bootstrap;
    a class without images gets (nan, nan) and is left out of the balanced accuracy, as sklearn does."""
    rng = np.random.default_rng(seed)
    y, correct = np.asarray(y), np.asarray(correct, dtype=np.float64)
    recalls = np.full((resamples, n_classes), np.nan)
    for c in range(n_classes):
        hits = correct[y == c]
        if len(hits):
            recalls[:, c] = hits[rng.integers(0, len(hits), size=(resamples, len(hits)))].mean(axis=1)
    lo, hi = (1 - level) / 2 * 100, (1 + level) / 2 * 100
    present = [c for c in range(n_classes) if (y == c).any()]
    balanced = recalls[:, present].mean(axis=1) if present else np.full(resamples, np.nan)
    per_class = [(float(np.percentile(recalls[:, c], lo)), float(np.percentile(recalls[:, c], hi)))
                 if c in present else (math.nan, math.nan) for c in range(n_classes)]
    return (float(np.percentile(balanced, lo)), float(np.percentile(balanced, hi))), per_class


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
    return {"mean": float(v.mean()), "std": float(v.std(ddof=1)) if v.size > 1 else 0.0,
            "min": float(v.min()), "max": float(v.max()), "n": int(v.size)}


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
        how = (f"McNemar p = {v['p']:.3f} on {v['n']} {split} images ({v['only_first_right']} only {first} "
               f"got right, {v['only_second_right']} only {second})")
    else:
        how = f"their 95 % intervals on {split} {'do not overlap' if v['distinguishable'] else 'overlap'}"
    verdict = "distinguishable" if v["distinguishable"] else "NOT distinguishable: the order between them is noise"
    return f"{first} vs {second}: {how}: {verdict}"
