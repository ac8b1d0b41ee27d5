import numpy as np
import pytest

from edgerob.device.bench import compare_samples
from edgerob.errors import EdgerobError
from edgerob.device.failures import margin, square_attack
from edgerob.device.profilers import PowerTrace, Profiler


class LinearRuntime:
    """A deployed 'model' with known weights; records every batch it is queried with."""

    name = "linear"

    def __init__(self, w):
        self.w = w
        self.seen = []

    def run(self, x):
        self.seen.append(x.copy())
        return x.reshape(len(x), -1) @ self.w

    def info(self):
        return {}


def data(n=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, 1, 4, 4), dtype=np.float32)
    w = rng.normal(size=(16, 3)).astype(np.float32)
    y = (x.reshape(n, -1) @ w).argmax(1)  # the model is right on every clean sample
    return x, y, w


def test_margin():
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    np.testing.assert_allclose(margin(logits, np.array([0, 2])), [1.0, -4.0])


def test_queries_stay_in_the_eps_ball_and_full_batches():
    x, y, w = data(10)
    rt = LinearRuntime(w)
    recs = square_attack(rt, x, y, np.arange(100, 110), eps=0.05, budget_queries=30,
                         batch_size=4)
    assert [r.sample_id for r in recs] == list(range(100, 110))
    assert all(b.shape[0] == 4 for b in rt.seen)
    # batches 0-3, 4-7, then 8, 9, 0, 1 (wrapped padding)
    originals = [x[[0, 1, 2, 3]], x[[4, 5, 6, 7]], x[[8, 9, 0, 1]]]
    for b in rt.seen:
        diffs = [np.abs(b - o).max() for o in originals]
        assert min(diffs) <= 0.05 + 1e-6
        assert b.min() >= 0 and b.max() <= 1


def test_events_censoring_and_durations():
    x, y, w = data(16)
    recs = square_attack(LinearRuntime(w), x, y, np.arange(16), eps=0.3, budget_queries=50,
                         batch_size=4, seed=1)
    events = [r for r in recs if r.event]
    censored = [r for r in recs if not r.event]
    assert events, "a linear model at eps 0.3 should fail on some samples"
    for r in recs:
        assert 1 <= r.queries <= 50 and r.budget_queries == 50 and r.duration_s > 0
        assert r.energy_j is None  # no profiler, no energy
    for r in censored:
        assert r.queries == 50
    # within one batch, more queries means more attacker time on the target
    for b in range(4):
        batch = sorted(recs[4 * b:4 * b + 4], key=lambda r: r.queries)
        durations = [r.duration_s for r in batch]
        assert durations == sorted(durations)


def test_always_wrong_fails_at_first_query_and_never_wrong_is_censored():
    x, y, w = data(6)
    wrong = square_attack(LinearRuntime(w), x, (y + 1) % 3, np.arange(6), 0.1, 20, 3)
    assert all(r.event == 1 and r.queries == 1 for r in wrong)
    never = LinearRuntime(np.zeros((16, 3), np.float32))  # all logits tie at 0 ...
    never.run = lambda b: np.tile([[1.0, 0.0, 0.0]], (len(b), 1))  # ... and class 0 always wins
    recs = square_attack(never, x, np.zeros(6, int), np.arange(6), 0.1, 20, 3)
    assert all(r.event == 0 and r.queries == 20 for r in recs)


class TenWatts(Profiler):
    name = "ten"

    @classmethod
    def available(cls):
        return True, ""

    def start(self):
        import time
        self.t0 = time.perf_counter()

    def stop(self):
        import time
        d = time.perf_counter() - self.t0
        return PowerTrace(timestamps_s=[0.0, d], total_w=[10.0, 10.0], energy_j=10 * d,
                          duration_s=d, sensor_period_s=d)


def test_energy_is_the_batch_share_of_query_energy():
    x, y, w = data(8)
    recs = square_attack(LinearRuntime(w), x, y, np.arange(8), 0.3, 40, 4, profiler=TenWatts())
    for r in recs:
        assert r.energy_j == pytest.approx(10 * r.duration_s / 4, rel=1e-6)


@pytest.mark.parametrize("kw", [dict(eps=0), dict(eps=1.5), dict(budget_queries=1)])
def test_bad_arguments(kw):
    x, y, w = data(4)
    args = dict(eps=0.1, budget_queries=10, batch_size=2) | kw
    with pytest.raises(EdgerobError):
        square_attack(LinearRuntime(w), x, y, np.arange(4), **args)


def test_compare_samples_matches_scipy():
    from scipy.stats import mannwhitneyu

    rng = np.random.default_rng(0)
    a = rng.normal(1.0, 0.1, 300).round(2)  # rounding makes ties
    b = rng.normal(1.05, 0.1, 200).round(2)
    s = compare_samples(a, b)
    ref = mannwhitneyu(a, b, use_continuity=False, method="asymptotic")
    assert s["p_value"] == pytest.approx(ref.pvalue, rel=1e-9)
    assert s["cliffs_delta"] == pytest.approx(2 * ref.statistic / (300 * 200) - 1)
    assert s["ratio_p50"] == pytest.approx(np.median(a) / np.median(b))
    same = compare_samples(a, a)
    assert same["p_value"] == pytest.approx(1.0) and same["cliffs_delta"] == pytest.approx(0.0)
    apart = compare_samples(a + 10, a)
    assert apart["p_value"] < 1e-12 and apart["cliffs_delta"] == pytest.approx(1.0)


def test_km_median():
    from edgerob.device.failures import km_median

    assert km_median([1, 2, 3, 4], [1, 1, 1, 1]) == 2  # S(2) = 0.5
    assert km_median([1, 2, 3, 4], [1, 0, 0, 0]) is None  # S never reaches 0.5
    # censoring at 1 removes a sample from the risk set: S(2)=2/3, S(3)=1/3
    assert km_median([1, 2, 3, 4], [0, 1, 1, 0]) == 3
