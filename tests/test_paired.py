"""The paired comparison's statistics against scipy and against their definitions."""

import itertools

import numpy as np
import pytest
from scipy import stats

from edgerob.device.paired import hodges_lehmann, paired_ratio, signed_rank_test


@pytest.mark.parametrize("n", [6, 7, 10, 13])
def test_signed_rank_p_is_scipys_exact_p_without_ties(n):
    rng = np.random.default_rng(n)
    for _ in range(5):
        d = rng.normal(0.2, 1.0, n)
        p, _ = signed_rank_test(d)
        assert p == pytest.approx(stats.wilcoxon(d, method="exact").pvalue, rel=1e-12)


def test_signed_rank_p_with_ties_is_the_exact_sign_flip_distribution():
    d = np.array([1, 1, 2, -2, 3, 3, 3, -1, 4, 5, 0.0])  # ties and a zero (dropped)
    p, effect = signed_rank_test(d)
    nz = d[d != 0]
    ranks = stats.rankdata(np.abs(nz))
    observed = ranks[nz > 0].sum()
    t_plus = [sum(r for r, s in zip(ranks, signs) if s)
              for signs in itertools.product([0, 1], repeat=len(nz))]
    t_plus = np.array(t_plus)
    low, high = np.mean(t_plus <= observed + 1e-9), np.mean(t_plus >= observed - 1e-9)
    assert p == pytest.approx(min(1.0, 2 * min(low, high)))
    total = ranks.sum()
    assert effect == pytest.approx((2 * observed - total) / total)


def test_rank_biserial_signs_and_bounds():
    assert signed_rank_test([1, 2, 3, 4, 5, 6])[1] == 1.0
    assert signed_rank_test([-1, -2, -3, -4, -5, -6])[1] == -1.0
    assert signed_rank_test([0, 0, 0]) == (1.0, 0.0)
    # T+ = 1 + 2 + 4 = 7 of 21: (7 - 14) / 21
    assert signed_rank_test([0.1, 0.2, -0.3, 0.4, -0.5, -0.6])[1] == pytest.approx(-1 / 3)


def test_hodges_lehmann_is_the_median_of_walsh_averages():
    d = np.array([0.0, 0.1, 0.2, 0.3, 2.0, 2.1, 2.2])  # median 0.3, Walsh median 1.1
    walsh = [(d[i] + d[j]) / 2 for i in range(7) for j in range(i, 7)]
    est, low, high, achieved = hodges_lehmann(d)
    assert est == pytest.approx(np.median(walsh)) == pytest.approx(1.1)
    assert low <= est <= high and 0.95 <= achieved < 1


@pytest.mark.parametrize("n", [6, 9, 12, 20])
def test_interval_is_the_set_of_shifts_the_exact_test_does_not_reject(n):
    """Inverting the test: a shift just inside either end is not rejected at 5%, one just
    outside is (the definition of the Walsh-average interval)."""
    rng = np.random.default_rng(100 + n)
    d = rng.normal(0.0, 1.0, n)
    _, low, high, _ = hodges_lehmann(d, 0.95)
    tiny = 1e-9

    def p_at(shift):
        return signed_rank_test(d - shift)[0]

    assert p_at(low + tiny) > 0.05 and p_at(high - tiny) > 0.05
    assert p_at(low - tiny) <= 0.05 and p_at(high + tiny) <= 0.05


def test_interval_coverage_is_exact_at_least_the_level():
    """Over many samples of a known shift the 95% interval holds it at least 95% of the time
    (exact, not approximately): 4000 draws, seeded; the binomial noise at 0.95 is 0.0035."""
    rng = np.random.default_rng(7)
    held = 0
    for _ in range(4000):
        d = rng.standard_t(3, 10) + 0.3
        _, low, high, achieved = hodges_lehmann(d, 0.95)
        held += low <= 0.3 <= high
    assert achieved == pytest.approx(1 - 2 * 25 / 1024)  # n = 10: P(T+ <= 8) = 25/1024
    assert held / 4000 >= 0.94


def test_too_few_pairs_give_an_unbounded_interval():
    est, low, high, achieved = hodges_lehmann([0.1, 0.2, 0.3, 0.4, 0.5], 0.95)
    assert (low, high, achieved) == (-np.inf, np.inf, 1.0)


def test_paired_ratio_on_log_scale_and_input_checks():
    r = paired_ratio([2, 4, 8, 16, 32, 64], [1, 2, 4, 8, 16, 32])
    assert r.ratio == pytest.approx(2.0) and r.low == pytest.approx(2.0) == r.high
    assert r.rounds == 6 and r.effect == 1.0
    with pytest.raises(ValueError):
        paired_ratio([1, 2], [1, 2, 3])
    with pytest.raises(ValueError):
        paired_ratio([1, 0, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1])
