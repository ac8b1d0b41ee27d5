from dataclasses import asdict
from fractions import Fraction
from types import SimpleNamespace

import numpy as np
import pytest

from edgerob.device import failures
from edgerob.device.bench import compare_samples
from edgerob.analysis.compare import failure_summary
from edgerob.analysis.cost import Workload, attacker_side
from edgerob.errors import EdgerobError
from edgerob.device.failures import km_median, margin, p_selection, patch_side, square_attack
from edgerob.device.profilers import PowerTrace, Profiler
from edgerob.store import Store


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


class Scripted:
    """A runtime answering call k (0: the clean pass) with logits [m, 0] per row, m from
    `margins(k, rows)`: label 0 then has margin m. Records its inputs; each call takes `dt`
    seconds on a fake clock."""

    name = "scripted"

    def __init__(self, margins, dt=0.5):
        self.margins, self.dt = margins, dt
        self.seen, self.now = [], 0.0

    def run(self, x):
        m = np.asarray(self.margins(len(self.seen), len(x)), dtype=np.float32)
        self.seen.append(x.copy())
        self.now += self.dt
        return np.stack([m, np.zeros_like(m)], axis=1)

    def info(self):
        return {}


class ConstantPower(Profiler):
    """10 W whenever it is read, on the runtime's fake clock."""

    name = "constant"
    watts = 10.0

    def __init__(self, clock):
        self.clock = clock

    @classmethod
    def available(cls):
        return True, ""

    def start(self):
        self.t0 = self.clock()

    def stop(self):
        d = self.clock() - self.t0
        return PowerTrace(timestamps_s=[0.0, d], total_w=[self.watts] * 2,
                          energy_j=self.watts * d, duration_s=d, sensor_period_s=d)


def data(n=12, seed=0, shape=(1, 4, 4)):
    rng = np.random.default_rng(seed)
    x = rng.random((n, *shape), dtype=np.float32)
    w = rng.normal(size=(int(np.prod(shape)), 3)).astype(np.float32)
    y = (x.reshape(n, -1) @ w).argmax(1)  # the model is right on every clean sample
    return x, y, w


def test_margin():
    logits = np.array([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    np.testing.assert_allclose(margin(logits, np.array([0, 2])), [1.0, -4.0])


def test_queries_stay_in_the_eps_ball_and_full_batches():
    x, y, w = data(10)
    rt = LinearRuntime(w)
    cell = square_attack(rt, x, y, np.arange(100, 110), eps=0.05, budget_queries=30,
                         batch_size=4)
    assert [r.sample_id for r in cell.records] == list(range(100, 110))
    assert cell.n_available == 10 and cell.n_clean_wrong == 0 and cell.n_attacked == 10
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
                         batch_size=4, seed=1).records
    events = [r for r in recs if r.event]
    censored = [r for r in recs if not r.event]
    assert events and censored
    for r in recs:
        assert 1 <= r.queries <= 50 and r.budget_queries == 50
        assert 0 < r.duration_share_s <= r.duration_s
        assert r.energy_j is None and r.energy_share_j is None  # no profiler, no energy
    for r in censored:
        assert r.queries == 50
    # within one batch, more queries means more attacker time on the target
    for b in range(4):
        batch = sorted(recs[4 * b:4 * b + 4], key=lambda r: r.queries)
        durations = [r.duration_s for r in batch]
        assert durations == sorted(durations)


# --- Square as the official code (max-andr/square-attack, square_attack_linf) ------------------

def test_no_query_is_spent_on_a_candidate_equal_to_the_current_best():
    """16x16 grey images, small patches: without the official resampling about half the
    candidates equal the current best image (the patch repeats the stripe's sign)."""
    x, y, w = data(4, seed=3, shape=(1, 16, 16))
    rt = LinearRuntime(w)
    square_attack(rt, x, y, np.arange(4), eps=0.02, budget_queries=300, batch_size=4,
                  p_init=0.05)
    clean, init, *queries = rt.seen
    np.testing.assert_array_equal(clean, x)
    best, m_best = init.copy(), margin(init.reshape(4, -1) @ w, y)
    checked = 0
    for cand in queries:
        m = margin(cand.reshape(4, -1) @ w, y)
        for i in np.flatnonzero(m_best > 0):  # still attacked
            assert not np.all(np.abs(cand[i] - best[i]) < 1e-7), "a query spent on a no-op"
            checked += 1
        better = (m_best > 0) & (m < m_best)
        best[better], m_best[better] = cand[better], m[better]
    assert checked > 500


def _changed_box(a, b):
    """(rows, columns) spanned by the pixels where images a and b (C x H x W) differ."""
    rows, cols = np.nonzero(np.any(a != b, axis=0))
    return (rows.min(), rows.max() + 1, cols.min(), cols.max() + 1) if len(rows) else None


@pytest.mark.parametrize("script", [
    # margins answered to queries 1.. (query 1: the stripes); expected best after each query
    ([1.0, 1.0, 0.5, 0.5, 0.75, 0.25, 1.0, 0.25, 0.2, 1.0],
     [1, 1, 3, 3, 3, 6, 6, 6, 9, 9]),
])
def test_acceptance_only_on_a_strictly_lower_margin(script):
    margins, best_after = script
    x = np.full((1, 1, 16, 16), 0.5, dtype=np.float32)
    rt = Scripted(lambda k, n: [1.0] * n if k == 0 else [margins[k - 1]] * n)
    square_attack(rt, x, np.zeros(1, int), np.arange(1), eps=0.1, budget_queries=len(margins),
                  batch_size=1, p_init=0.05, seed=2)
    assert len(rt.seen) == 1 + len(margins)
    for q in range(2, len(margins) + 1):
        best = rt.seen[best_after[q - 2]]
        box = _changed_box(rt.seen[q][0], best[0])
        # each candidate is the best so far with (part of) one s x s window changed
        s = patch_side(p_selection(0.05, q - 2, len(margins)), 1, 16, 16)
        assert box is not None and box[1] - box[0] <= s and box[3] - box[2] <= s, q


def test_stripe_initialisation():
    """Query 1 is x + eps x (one sign per column and channel), clipped to [0, 1]."""
    x, y, w = data(6, seed=5, shape=(3, 8, 8))
    eps = np.float32(0.3)
    rt = LinearRuntime(w)
    square_attack(rt, x, y, np.arange(6), eps=0.3, budget_queries=2, batch_size=6)
    init = rt.seen[1]
    assert ((x < eps) | (x > 1 - eps)).any()  # some pixels are clipped
    signs = np.zeros((6, 3, 8))
    for i in range(6):
        for ch in range(3):
            for col in range(8):
                column = init[i, ch, :, col]
                pixels = x[i, ch, :, col]
                up, down = np.clip(pixels + eps, 0, 1), np.clip(pixels - eps, 0, 1)
                assert np.array_equal(column, up) != np.array_equal(column, down)
                signs[i, ch, col] = 1 if np.array_equal(column, up) else -1
    assert (signs[:, 0] != signs[:, 1]).any() and (signs[:, :, 0] != signs[:, :, 1]).any()


def test_p_selection_is_the_official_schedule():
    official = {  # (it, n_iters): p_init / value, from max-andr/square-attack p_selection
        (0, 10000): 1, (10, 10000): 1, (11, 10000): 2, (50, 10000): 2, (51, 10000): 4,
        (200, 10000): 4, (201, 10000): 8, (500, 10000): 8, (501, 10000): 16,
        (1000, 10000): 16, (1001, 10000): 32, (2000, 10000): 32, (2001, 10000): 64,
        (4000, 10000): 64, (4001, 10000): 128, (6000, 10000): 128, (6001, 10000): 256,
        (8000, 10000): 256, (8001, 10000): 512, (9999, 10000): 512,
        # rescaled: it -> int(it / n_iters * 10000)
        (1, 1000): 1, (2, 1000): 2, (5, 1000): 2, (6, 1000): 4, (20, 1000): 4, (21, 1000): 8,
        (51, 1000): 16, (101, 1000): 32, (999, 1000): 512,
        (5, 5000): 1, (6, 5000): 2, (25, 5000): 2, (26, 5000): 4,
        (1, 300): 2, (2, 300): 4, (6, 300): 4, (7, 300): 8, (16, 300): 16, (299, 300): 512,
    }
    for (it, n), div in official.items():
        assert p_selection(0.8, it, n) == 0.8 / div, (it, n)


def test_patch_side():
    assert patch_side(0.8, 1, 16, 16) == 14
    assert patch_side(0.05, 1, 16, 16) == 4  # sqrt(12.8) = 3.58
    assert patch_side(0.05, 3, 32, 32) == 7  # channels do not count: sqrt(0.05 x 32 x 32)
    assert patch_side(1.0, 1, 16, 16) == 15  # at most side - 1
    assert patch_side(1e-4, 3, 32, 32) == 1  # at least 1


def test_patch_sizes_follow_the_schedule_in_the_attack():
    """Nothing is ever accepted (constant margin), so query q differs from the stripes in
    exactly s(q) rows: the window of side p_selection(p_init, q - 2, budget)."""
    x = np.full((1, 1, 16, 16), 0.5, dtype=np.float32)
    rt = Scripted(lambda k, n: [1.0] * n)
    square_attack(rt, x, np.zeros(1, int), np.arange(1), eps=0.1, budget_queries=1000,
                  batch_size=1, p_init=0.8)
    assert len(rt.seen) == 1001
    init = rt.seen[1]
    side = {0: 14, 1: 14, 2: 10, 5: 10, 6: 7, 20: 7, 21: 5, 50: 5, 51: 4, 100: 4, 101: 3,
            200: 3, 201: 2, 400: 2, 401: 1, 998: 1}  # iteration q - 2 -> side
    for it, s in side.items():
        r0, r1, c0, c1 = _changed_box(rt.seen[it + 2][0], init[0])
        assert r1 - r0 == s and c1 - c0 <= s, it
    # official window positions: randint(0, h - s), so the last row and column never move
    assert all(np.array_equal(b[..., -1, :], init[..., -1, :])
               and np.array_equal(b[..., -1], init[..., -1]) for b in rt.seen[2:])


# --- clean-misclassified samples are not attacked ------------------------------------------------

def test_clean_misclassified_samples_are_counted_not_attacked():
    x, y, w = data(8)
    wrong = np.array([1, 4, 5])
    y_bad = y.copy()
    y_bad[wrong] = (y[wrong] + 1) % 3
    rt = LinearRuntime(w)
    cell = square_attack(rt, x, y_bad, np.arange(8), 0.1, 20, 4)
    assert cell.n_available == 8 and cell.n_clean_wrong == 3 and cell.n_attacked == 5
    assert [r.sample_id for r in cell.records] == [0, 2, 3, 6, 7]
    # two clean batches (8 samples), then the 5 attacked ones: 4, then 1 padded with 3 copies
    for batch in rt.seen[2:]:
        for row in batch:
            assert all(np.abs(row - x[i]).max() > 0.1 + 1e-6 for i in wrong)
    everyone_wrong = square_attack(LinearRuntime(w), x, (y + 1) % 3, np.arange(8), 0.1, 20, 3)
    assert everyone_wrong.n_clean_wrong == 8 and everyone_wrong.records == []
    tie = Scripted(lambda k, n: [0.0, 1.0, 1.0][:n])  # a clean tie is not a correct answer
    assert square_attack(tie, x[:3], np.zeros(3, int), np.arange(3), 0.1, 5, 3).n_clean_wrong == 1


def test_never_wrong_is_censored():
    x, y, w = data(6)
    never = Scripted(lambda k, n: [1.0] * n)
    recs = square_attack(never, x, np.zeros(6, int), np.arange(6), 0.1, 20, 3).records
    assert all(r.event == 0 and r.queries == 20 for r in recs)


# --- time and energy on one basis -----------------------------------------------------------------

def test_wall_time_energy_and_shares_exactly(monkeypatch):
    """3 samples in a batch of 4 (one padding row): they fail at queries 1 and 3 and survive 5.
    Each query takes 0.5 s at 10 W; the share divides it among the samples still attacked."""
    fails_at = [1, 3, None, None]  # the fourth row is padding
    # a margin of 0 is a failure: the official code attacks while margin > 0
    rt = Scripted(lambda k, n: [1.0] * n if k == 0 else
                  [0.0 if f is not None and k >= f else 1.0 for f in fails_at])
    monkeypatch.setattr(failures, "clock", lambda: rt.now)
    x = np.full((3, 1, 8, 8), 0.5, dtype=np.float32)
    cell = square_attack(rt, x, np.zeros(3, int), np.arange(3), eps=0.1, budget_queries=5,
                         batch_size=4, profiler=ConstantPower(lambda: rt.now))
    assert len(rt.seen) == 1 + 5  # the clean pass is not a query of the attack
    a, b, c = cell.records
    assert [(r.queries, r.event) for r in (a, b, c)] == [(1, 1), (3, 1), (5, 0)]
    # wall time: the queries each took part in, whole
    assert [r.duration_s for r in (a, b, c)] == [0.5, 1.5, 2.5]
    assert [r.energy_j for r in (a, b, c)] == [5.0, 15.0, 25.0]
    # share: query 1 has 3 samples, queries 2-3 two, queries 4-5 one (padding never counts)
    shares = [Fraction(1, 2) / 3, Fraction(1, 6) + Fraction(1, 4) * 2,
              Fraction(1, 6) + Fraction(1, 4) * 2 + Fraction(1, 2) * 2]
    for r, share in zip((a, b, c), shares):
        assert r.duration_share_s == pytest.approx(float(share), rel=1e-12)
        assert r.energy_share_j == pytest.approx(10 * float(share), rel=1e-12)
    assert sum(r.duration_share_s for r in (a, b, c)) == pytest.approx(2.5)  # the batch's time
    # a failed sample is no longer attacked: its row is sent as it failed; padding as it is
    for later in rt.seen[2:]:
        np.testing.assert_array_equal(later[0], rt.seen[1][0])
        np.testing.assert_array_equal(later[3], x[0])
    np.testing.assert_array_equal(rt.seen[4][1], rt.seen[3][1])

    # net of the target's idle power (4 W of the 10 W), the basis of energy per inference
    rt = Scripted(lambda k, n: [1.0] * n if k == 0 else
                  [0.0 if f is not None and k >= f else 1.0 for f in fails_at])
    monkeypatch.setattr(failures, "clock", lambda: rt.now)
    net = square_attack(rt, x, np.zeros(3, int), np.arange(3), eps=0.1, budget_queries=5,
                        batch_size=4, profiler=ConstantPower(lambda: rt.now), idle_w=4.0)
    assert [r.energy_j for r in net.records] == [3.0, 9.0, 15.0]
    for r, share in zip(net.records, shares):
        assert r.energy_share_j == pytest.approx(6 * float(share), rel=1e-12)


def test_attacker_usd_and_joules_agree_whatever_the_batch(monkeypatch):
    """USD from the time share and J from the energy share: their ratio is price / 3600 / W at
    every batch size (time per batch and energy per batch size disagreed by the batch size)."""
    x, y, w = data(8)
    price = SimpleNamespace(cloud_usd_per_h=2.0, purchase_usd=None)
    target = SimpleNamespace(name="fake", price=price)
    ratios = []
    for batch in (1, 4, 8):
        rt = LinearRuntime(w)
        clock = [0.0]
        run = rt.run

        def timed(b, run=run):
            clock[0] += 0.25
            return run(b)

        rt.run = timed
        monkeypatch.setattr(failures, "clock", lambda: clock[0])
        cell = square_attack(rt, x, y, np.arange(8), 0.3, 60, batch, seed=1,
                             profiler=ConstantPower(lambda: clock[0]))
        row = failure_summary([asdict(r) for r in cell.records])
        assert row["median_time_share_to_failure_s"] is not None
        side = attacker_side(target, {**row, "failure_attack": "square@0.3"}, Workload())
        assert side["attacker_s_to_failure"] == row["median_time_share_to_failure_s"]
        assert side["attacker_kwh_to_failure"] == pytest.approx(side["attacker_j_to_failure"]
                                                                / 3.6e6)
        ratios.append(side["attacker_usd_to_failure"] / side["attacker_j_to_failure"])
    assert ratios == pytest.approx([2.0 / 3600 / 10.0] * 3, rel=1e-9)


@pytest.mark.parametrize("kw", [dict(eps=0), dict(eps=1.5), dict(eps=1e-8),
                                dict(budget_queries=1)])
def test_bad_arguments(kw):
    x, y, w = data(4)
    args = dict(eps=0.1, budget_queries=10, batch_size=2) | kw
    with pytest.raises(EdgerobError):
        square_attack(LinearRuntime(w), x, y, np.arange(4), **args)


# --- store: a cell's counts and records in one transaction ---------------------------------------

def _store_with_run(path):
    """A store with one run; the key of an fp32 query-attack cell in it; one failure record."""
    store = Store(f"sqlite:///{path}")
    run_id, _ = store.begin_run(target="cpu", profile="p", model="m", model_sha256="0",
                                runtime="rt", host="h", versions={})
    key = dict(run_id=run_id, target="cpu", precision="fp32", batch_size=4, attack="square",
               eps=0.1)
    rec = dict(key, sample_id=3, label=1, queries=7, budget_queries=20, duration_s=1.0,
               energy_j=None, event=1, duration_share_s=0.5, energy_share_j=None)
    return store, run_id, key, rec


def test_attack_cell_row_and_records_in_one_transaction(tmp_path):
    store, run_id, key, rec = _store_with_run(tmp_path / "s.db")
    cell = dict(key, n_available=5, n_clean_wrong=4, n_attacked=1)
    assert store.add_failures([rec], cell=cell)
    assert not store.add_failures([rec], cell=cell)  # the same cell again: refused whole
    assert len(store.failures()) == 1 and len(store.attack_cells()) == 1
    other = dict(cell, precision="int8")
    assert not store.add_failures([rec, rec], cell=other)  # a bad record: no cell row either
    assert store.attack_cells(precision="int8") == []
    assert store.add_attack_cell(dict(other, n_clean_wrong=5, n_attacked=0))  # nothing attacked
    assert store.failure_cells(run_id) == {("fp32", 4, "square", 0.1, None),
                                           ("int8", 4, "square", 0.1, None)}
    assert [c["n_clean_wrong"] for c in store.attack_cells(run_id=run_id)] == [4, 5]


# --- Kaplan-Meier median --------------------------------------------------------------------------

def test_km_median():
    assert km_median([1, 2, 3, 4], [1, 1, 1, 1]) == 2  # S(2) = 0.5
    assert km_median([1, 2, 3, 4], [1, 0, 0, 0]) is None  # S never reaches 0.5
    # censoring at 1 removes a sample from the risk set: S(2)=2/3, S(3)=1/3
    assert km_median([1, 2, 3, 4], [0, 1, 1, 0]) == 3


def _records(groups):
    """[(time, deaths, censored), ...] -> durations, events."""
    t, e = [], []
    for time, d, c in groups:
        t += [time] * (d + c)
        e += [1] * d + [0] * c
    return t, e


def test_km_median_is_exact_where_survival_reaches_one_half():
    # 24 records: S(1) = 13/24, S(2) = 13/24 x 12/13 = 1/2 exactly (in floats 0.5000000000000001)
    assert km_median(*_records([(1, 11, 0), (2, 1, 0), (3, 12, 0)])) == 2
    # ties with censoring: S(1) = 12/18, S(2) = 2/3 x 9/10, S(3) = 3/5 x 5/6 = 1/2
    assert km_median(*_records([(1, 6, 2), (2, 1, 3), (3, 1, 0), (4, 2, 3)])) == 3
    # S(1) = 19/26, S(2) = 19/26 x 13/19 = 1/2, with censoring tied at the median time
    assert km_median(*_records([(1, 7, 0), (2, 6, 3), (3, 7, 3)])) == 2
    # S(1) = 21/24, S(2) = 7/8 x 16/20, S(3) = 7/10 x 10/14 = 1/2 (float factors give more)
    assert km_median(*_records([(1, 3, 1), (2, 4, 2), (3, 4, 2), (4, 6, 2)])) == 3
    # durations in seconds (floats), the same counts
    assert km_median(*_records([(0.1, 11, 0), (0.2, 1, 0), (0.3, 12, 0)])) == 0.2


def _exact_survival(t, e):
    s, at_risk, out = Fraction(1), len(t), []
    for time in sorted(set(t)):
        d = sum(1 for ti, ei in zip(t, e) if ti == time and ei)
        if d:
            s *= Fraction(at_risk - d, at_risk)
            out.append(s)
        at_risk -= sum(1 for ti in t if ti == time)
    return out


def test_km_median_matches_lifelines_on_tied_data():
    lifelines = pytest.importorskip("lifelines")
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(60):
        n = int(rng.integers(5, 40))
        t = rng.integers(1, 6, size=n).tolist()  # many ties
        e = (rng.random(n) < 0.7).astype(int).tolist()
        if Fraction(1, 2) in _exact_survival(t, e):
            continue  # at exactly 1/2 a float curve may land on either side: tested above
        ours = km_median(t, e)
        theirs = lifelines.KaplanMeierFitter().fit(t, e).median_survival_time_
        assert (ours is None and theirs == np.inf) or ours == theirs, (t, e)
        compared += 1
    assert compared >= 40


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


def test_ingest_copies_attack_cells_with_their_records(tmp_path):
    from edgerob.fleet.bundle import ingest

    device, _, key, rec = _store_with_run(tmp_path / "device.db")
    device.add_failures([rec], cell=dict(key, n_available=2, n_clean_wrong=1, n_attacked=1))
    device.add_attack_cell(dict(key, precision="int8", n_available=2, n_clean_wrong=2,
                                n_attacked=0))
    host = Store(f"sqlite:///{tmp_path}/host.db")
    assert ingest(tmp_path / "device.db", host)["failures"] == 1
    assert [(c["precision"], c["n_clean_wrong"]) for c in host.attack_cells()] == [
        ("fp32", 1), ("int8", 2)]
    assert ingest(tmp_path / "device.db", host)["failures"] == 0
    assert len(host.attack_cells()) == 2 and len(host.failures()) == 1


def test_ingest_keeps_each_power_mode_of_a_query_attack_cell(tmp_path):
    """Two modes of one cell (a sweep over modes) travel as two cells, each with its counts."""
    from edgerob.fleet.bundle import ingest

    device, _, key, rec = _store_with_run(tmp_path / "device.db")
    for mode, wrong in (("MAXN", 1), ("MODE_15W", 0)):
        k = dict(key, power_mode=mode)
        assert device.add_failures([dict(rec, **k)],
                                   cell=dict(k, n_available=2, n_clean_wrong=wrong, n_attacked=1))
    host = Store(f"sqlite:///{tmp_path}/host.db")
    assert ingest(tmp_path / "device.db", host)["failures"] == 2
    assert sorted((c["power_mode"], c["n_clean_wrong"]) for c in host.attack_cells()) == [
        ("MAXN", 1), ("MODE_15W", 0)]
    assert sorted(f["power_mode"] for f in host.failures()) == ["MAXN", "MODE_15W"]
    assert ingest(tmp_path / "device.db", host) == {"runs": 0, "measurements": 0, "failures": 0,
                                                     "skipped": 2}
