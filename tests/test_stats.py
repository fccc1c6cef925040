"""Intervals and the paired test against independent references (scipy) and known values."""

import math

import numpy as np
import pytest
from scipy.stats import binomtest

from chiquito_or_not.core.stats import balanced_interval, mcnemar, mean_spread, recall_intervals, versus, wilson
from chiquito_or_not.tasks.classify.class_metrics import compute_metrics, headline


def test_wilson_known_values():
    """scipy computes it (binomtest's Wilson interval): the values by hand from the score formula."""
    assert wilson(45, 45) == pytest.approx((0.92135, 1.0), abs=1e-5)  # "100 %" of 45 reaches down to 92 %
    assert wilson(104, 131) == pytest.approx((0.71673, 0.85431), abs=1e-5)
    assert wilson(0, 10) == pytest.approx((0.0, 0.27753), abs=1e-5)
    assert wilson(0, 0) == (0.0, 1.0)  # no images: nothing is known


def test_balanced_interval_is_seeded_and_matches_the_beta_posterior():
    from scipy.stats import beta

    y = np.repeat([0], 10)
    right = np.arange(10) < 5  # one class, 5/10: a symmetric posterior, so the shortest interval is the central one
    lo, hi = balanced_interval(y, right, 1, seed=0)
    ref = beta(5.5, 5.5).ppf([0.025, 0.975])  # Jeffreys' posterior
    assert lo == pytest.approx(ref[0], abs=1e-2) and hi == pytest.approx(ref[1], abs=1e-2)  # simulation noise
    y = np.array([0] * 29 + [1] * 16)  # the default recipe's 45/45: neither 1.000-1.000 nor one that excludes 1
    right = np.ones(45, dtype=bool)
    lo, hi = balanced_interval(y, right, 2, seed=0)
    assert 0.92 < lo < 0.94 and hi == 1.0
    assert balanced_interval(y, right, 2, seed=0) == (lo, hi)
    assert abs(balanced_interval(y, right, 2, seed=1)[0] - lo) < 2e-3  # enough draws: the seed barely matters

    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], [40, 30, 10])
    right = rng.random(80) < np.where(y == 2, 0.5, 0.9)
    recalls = [right[y == c].mean() for c in range(3)]
    blo, bhi = balanced_interval(y, right, 4, seed=3)  # class 3 has no images: left out
    assert blo < np.mean(recalls) < bhi
    per = recall_intervals(y, right, 4)
    for c in range(3):
        assert per[c] == wilson(int(right[y == c].sum()), int((y == c).sum()))
    assert per[2][1] - per[2][0] > per[0][1] - per[0][0]  # 10 images: a wider interval than 40
    assert all(math.isnan(x) for x in per[3])


def test_mcnemar_exact():
    a = [True] * 10 + [False] * 2 + [True] * 50
    b = [False] * 10 + [True] * 2 + [True] * 50
    t = mcnemar(a, b)
    assert (t["only_first_right"], t["only_second_right"], t["n"]) == (10, 2, 62)
    assert t["p"] == pytest.approx(binomtest(10, 12, 0.5).pvalue) and t["p"] == pytest.approx(0.03857, abs=1e-4)
    assert mcnemar(a, a)["p"] == 1.0
    with pytest.raises(ValueError, match="not the same images"):
        mcnemar(a, b[:-1])


def test_metrics_carry_intervals_and_outcomes():
    y = np.array([0] * 70 + [1] * 61)
    pred = y.copy()
    pred[:15] = 1  # 15 of class 0 wrong
    pred[70:82] = 0  # 12 of class 1 wrong: 104/131 right
    m = compute_metrics(y, pred, ["a", "b"])
    assert m["accuracy_ci95"] == pytest.approx(list(wilson(104, 131)))
    lo, hi = m["balanced_accuracy_ci95"]
    assert lo < m["balanced_accuracy"] < hi
    assert m["per_class"]["a"]["recall_ci95"][0] < 55 / 70 < m["per_class"]["a"]["recall_ci95"][1]
    assert m["outcomes"] == "0" * 15 + "1" * 55 + "0" * 12 + "1" * 49
    assert "104/131, 95 % CI 0.717-0.854" in headline(m)


def test_versus_and_spread():
    m1 = {"outcomes": "1" * 100, "accuracy_ci95": [0.96, 1.0]}
    m2 = {"outcomes": "1" * 98 + "00", "accuracy_ci95": [0.93, 0.99]}
    v = versus(m1, m2, "accuracy")
    assert v["test"] == "McNemar" and not v["distinguishable"] and v["p"] == pytest.approx(0.5)
    m3 = {"outcomes": "0" * 30 + "1" * 70, "accuracy_ci95": [0.6, 0.78]}
    assert versus(m1, m3, "accuracy")["distinguishable"]
    assert versus({"accuracy_ci95": [0.9, 1.0]}, {"accuracy_ci95": [0.5, 0.7]}, "accuracy")["distinguishable"]
    s = mean_spread([0.8, 0.9, 1.0])
    assert s["mean"] == pytest.approx(0.9) and s["std"] == pytest.approx(0.1) and s["n"] == 3
