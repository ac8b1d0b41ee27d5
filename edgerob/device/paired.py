"""Paired comparison of two input sets measured in alternating rounds of one session.

Drift in load, clocks and temperature moves both sides of a round alike, so the unit of analysis
is the round: each round gives one paired difference d = log(a) - log(b) of the two sides'
values (per-round median latency, or energy per inference). On those differences:

- the estimate is the Hodges-Lehmann shift, the median of the Walsh averages (d_i + d_j) / 2,
  i <= j, reported as a ratio exp(HL): the paired ratio of medians;
- its interval is the exact distribution-free one that goes with it: the Walsh averages'
  order statistics at the signed-rank critical values (Hollander, Wolfe & Chicken, Nonparametric
  Statistical Methods, 3rd ed., section 3.3; R's `wilcox.test(conf.int = TRUE, exact = TRUE)`);
- the p-value is the exact Wilcoxon signed-rank test (zeros dropped, mid-ranks for ties, the
  conditional null distribution enumerated over sign flips), rounds as the unit;
- the effect size is the matched-pairs rank-biserial correlation (Kerby 2014):
  (T+ - T-) / (T+ + T-), in [-1, 1], 0 when the rounds go either way alike.

No test here treats consecutive iterations as independent: they are not (caches, clocks).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# The exact two-sided 95% interval exists from 6 pairs on (at 5, the most extreme of 2^5 sign
# patterns already has probability 2/32 > 0.05).
MIN_ROUNDS = 6


@dataclass(frozen=True)
class PairedRatio:
    ratio: float  # exp(Hodges-Lehmann estimate of the per-round log ratio)
    low: float
    high: float
    confidence: float  # the interval's guaranteed coverage (>= the level asked)
    p_value: float  # exact Wilcoxon signed-rank, two-sided
    effect: float  # matched-pairs rank-biserial correlation
    rounds: int


def _null_counts(doubled_ranks: list[int]) -> np.ndarray:
    """Counts of each value of 2*T+ over the 2^n sign patterns, T+ the sum of the ranks with a
    positive sign (ranks doubled so that mid-ranks are integers)."""
    counts = np.zeros(sum(doubled_ranks) + 1, dtype=object)  # exact: Python ints
    counts[0] = 1
    for r in doubled_ranks:
        shifted = np.zeros_like(counts)
        shifted[r:] = counts[:len(counts) - r]
        counts = counts + shifted
    return counts


def _signed_ranks(d: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Doubled mid-ranks of |d| (zeros dropped) and the signs of the nonzero d."""
    d = d[d != 0]
    a = np.abs(d)
    order = np.argsort(a, kind="mergesort")
    ranks = np.empty(len(a))
    ranks[order] = np.arange(1, len(a) + 1)
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return np.rint(2 * ranks).astype(int), np.sign(d)


def signed_rank_test(d) -> tuple[float, float]:
    """(two-sided exact p-value, rank-biserial correlation) of the Wilcoxon signed-rank test of
    median 0 on the paired differences `d`."""
    ranks2, signs = _signed_ranks(np.asarray(d, dtype=np.float64))
    if len(ranks2) == 0:
        return 1.0, 0.0
    t_plus2 = int(ranks2[signs > 0].sum())
    total2 = int(ranks2.sum())
    counts = _null_counts(ranks2.tolist())
    n_patterns = 2 ** len(ranks2)
    low = sum(counts[:t_plus2 + 1])
    high = sum(counts[t_plus2:])
    p = min(1.0, 2 * min(low, high) / n_patterns)
    effect = (2 * t_plus2 - total2) / total2  # (T+ - T-) / (T+ + T-)
    return float(p), float(effect)


def hodges_lehmann(d, confidence: float = 0.95) -> tuple[float, float, float, float]:
    """(estimate, low, high, achieved confidence) of the location shift of `d`: the median of
    the Walsh averages and its exact signed-rank interval. With too few pairs for the level
    asked the interval is (-inf, inf)."""
    d = np.asarray(d, dtype=np.float64)
    n = len(d)
    if n == 0:
        raise ValueError("no paired differences")
    i, j = np.triu_indices(n)
    walsh = np.sort((d[i] + d[j]) / 2)
    m = len(walsh)  # n (n + 1) / 2
    counts = _null_counts([2 * r for r in range(1, n + 1)])[::2]  # untied: T+ = 0..m
    cdf = np.cumsum(counts.astype(float)) / 2 ** n
    alpha = 1 - confidence
    # k: the largest count of Walsh averages cut from each end with P(T+ <= k - 1) <= alpha / 2
    k = int(np.searchsorted(cdf, alpha / 2, side="right"))
    estimate = float(np.median(walsh))
    if k == 0:
        return estimate, -math.inf, math.inf, 1.0
    achieved = 1 - 2 * float(cdf[k - 1])
    return estimate, float(walsh[k - 1]), float(walsh[m - k]), achieved


def paired_ratio(treated, control, confidence: float = 0.95) -> PairedRatio:
    """Paired ratio treated / control from per-round values (both positive), rounds as pairs."""
    a = np.asarray(treated, dtype=np.float64)
    b = np.asarray(control, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError("treated and control need one value per round each")
    if np.any(a <= 0) or np.any(b <= 0):
        raise ValueError("a ratio needs positive values on both sides")
    d = np.log(a) - np.log(b)
    est, low, high, achieved = hodges_lehmann(d, confidence)
    p, effect = signed_rank_test(d)
    return PairedRatio(ratio=math.exp(est), low=math.exp(low), high=math.exp(high),
                       confidence=achieved, p_value=p, effect=effect, rounds=len(d))
