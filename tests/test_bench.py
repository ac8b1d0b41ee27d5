import numpy as np
import pytest

from edgerob.device.bench import (Measurement, TimingRules, idle_baseline, latency_summary,
                                  make_batches, measure, measure_sets, timed_loop)
from edgerob.device.profilers import NoProfiler, PowerTrace, Profiler, profiler_class
from edgerob.errors import EdgerobError

from conftest import FAST


class CountingRuntime:
    """A runtime whose 'logits' are one-hot of the first pixel, so accuracy is known."""

    name = "fake"

    def __init__(self):
        self.calls = []

    def run(self, x):
        self.calls.append(x.shape[0])
        out = np.zeros((len(x), 10), np.float32)
        out[np.arange(len(x)), x[:, 0, 0, 0].astype(int)] = 1
        return out

    def info(self):
        return {"runtime": self.name}


def test_make_batches_wraps_and_is_contiguous():
    x = np.arange(10, dtype=np.float32).reshape(10, 1, 1, 1)
    batches = make_batches(x, 4)
    assert [b.shape[0] for b in batches] == [4, 4, 4]
    assert batches[2][:, 0, 0, 0].tolist() == [8, 9, 0, 1]
    assert all(b.flags["C_CONTIGUOUS"] and b.dtype == np.float32 for b in batches)


def test_latency_summary_matches_numpy():
    rng = np.random.default_rng(0)
    lat = rng.exponential(0.002, 1000)
    s = latency_summary(lat)
    ms = lat * 1e3
    for p in (50, 90, 95, 99):
        assert s[f"latency_p{p}_ms"] == pytest.approx(np.percentile(ms, p))
    assert s["latency_mean_ms"] == pytest.approx(ms.mean())
    assert s["latency_std_ms"] == pytest.approx(ms.std(ddof=1))
    assert s["latency_min_ms"] <= s["latency_p50_ms"] <= s["latency_p99_ms"] <= s["latency_max_ms"]


def test_timed_loop_meets_both_minimums():
    x = [np.zeros(1)]
    lat, wall = timed_loop(lambda b: None, x, min_duration_s=0.05, min_iterations=3)
    assert wall >= 0.05 and len(lat) >= 3
    import time
    lat, wall = timed_loop(lambda b: time.sleep(0.01), x, min_duration_s=0.001, min_iterations=7)
    assert len(lat) == 7 and min(lat) >= 0.01


def test_measure_accuracy_throughput_and_null_power():
    x = np.zeros((20, 1, 2, 2), np.float32)
    x[:, 0, 0, 0] = np.arange(20) % 10
    labels = np.arange(20) % 10
    labels[:5] = (labels[:5] + 1) % 10  # 5 of 20 wrong
    rt = CountingRuntime()
    m = measure(rt, x, labels, 8, FAST, profiler=None, profiler_note="no sensor")
    assert m.accuracy == pytest.approx(0.75)
    assert m.n_samples == 20 and m.batch_size == 8
    assert m.iterations >= FAST.min_iterations and m.duration_s >= FAST.min_duration_s
    assert m.throughput_sps == pytest.approx(m.iterations * 8 / m.duration_s)
    assert len(m.latencies_ms) == m.iterations
    assert m.power_mean_w is None and m.energy_per_inference_j is None
    assert m.power_note == "no sensor"
    assert set(rt.calls) == {8}  # every call is a full batch


class LoadPower(Profiler):
    """A sensor that reads `busy_w` over a window in which the runtime ran and `idle_w` over one
    in which it did not (a stand-in with known answers); 10 samples per window."""

    name = "load"
    resolution = None

    def __init__(self, runtime, idle_w=3.0, busy_w=10.0):
        self.runtime, self.idle_w, self.busy_w = runtime, idle_w, busy_w
        self.windows = []

    @classmethod
    def available(cls):
        return True, "test sensor"

    def resolution_s(self):
        return self.resolution

    def start(self):
        import time
        self.t0, self.calls0 = time.perf_counter(), len(self.runtime.calls)

    def stop(self):
        import time
        dur = time.perf_counter() - self.t0
        w = self.busy_w if len(self.runtime.calls) > self.calls0 else self.idle_w
        self.windows.append(dur)
        return PowerTrace(timestamps_s=list(np.linspace(0, dur, 10)), total_w=[w] * 10,
                          energy_j=w * dur, duration_s=dur, sensor_period_s=dur / 10)


def test_energy_per_inference_is_net_of_idle_over_the_profiler_windows():
    x = np.zeros((16, 1, 2, 2), np.float32)
    rt = CountingRuntime()
    sensor = LoadPower(rt)
    m = measure(rt, x, np.zeros(16, int), 4, FAST, profiler=sensor, profiler_name="load")
    assert m.power_idle_w == pytest.approx(3.0)
    assert m.power_mean_w == pytest.approx(10.0)
    assert m.power_samples == 10 * FAST.rounds  # one window per round's block
    span = sum(sensor.windows[-FAST.rounds:])  # the blocks' windows (idle ones come first)
    assert m.energy_j == pytest.approx(10.0 * span)
    assert m.energy_per_inference_j == pytest.approx((10.0 - 3.0) * span / (m.iterations * 4))
    # each round's energy per inference, net of idle over that round's own window
    for r, window in zip(m.rounds, sensor.windows[-FAST.rounds:]):
        assert r["energy_j"] == pytest.approx(10.0 * window)
        assert r["energy_per_inference_j"] == pytest.approx(
            (10.0 - 3.0) * window / (r["iterations"] * 4))
    assert len(m.rounds) == FAST.rounds
    assert m.power_note is None


class Recorder:
    """A runtime and a profiler writing one shared log; idle windows of 1.5 W over 2 s, block
    windows of 1 J over 0.25 s."""

    name = "recorder"

    def __init__(self):
        self.log = []

    def run(self, x):  # the runtime
        self.log.append("run")
        return np.zeros((len(x), 10), np.float32)

    def start(self):  # the profiler
        self.log.append("start")
        self.at = len(self.log)

    def resolution_s(self):
        return None

    def stop(self):
        ran = "run" in self.log[self.at:]
        self.log.append("stop")
        if not ran:
            return PowerTrace([0.0], [1.5], energy_j=3.0, duration_s=2.0, sensor_period_s=0.1)
        return PowerTrace([0.0] * 8, [4.0] * 8, energy_j=1.0, duration_s=0.25,
                          sensor_period_s=0.1)


def test_order_settled_idle_then_accuracy_warmup_then_one_window_per_block():
    rec = Recorder()
    rules = TimingRules(warmup_s=0.01, min_duration_s=0.01, min_iterations=3, idle_s=0.0,
                        rounds=6)

    def state():
        rec.log.append("state")
        return {}

    m = measure(rec, np.zeros((8, 1, 2, 2), np.float32), None, 4, rules, profiler=rec,
                profiler_name="rec", state=state)
    log = rec.log
    # two idle windows (the second agrees with the first: settled), then the accuracy pass and
    # warm-up, then state, one profiler window around each block, state
    assert log[:4] == ["start", "stop", "start", "stop"]
    first_state = log.index("state")
    assert set(log[4:first_state]) == {"run"} and first_state - 4 >= 2 + 1
    blocks = log[first_state + 1:-1]
    assert log[-1] == "state" and blocks.count("start") == blocks.count("stop") == 6
    assert all(b == ["start", *["run"] * (len(b) - 2), "stop"] and len(b) > 2
               for b in _split_blocks(blocks))
    assert m.power_idle_w == 1.5 and m.energy_j == pytest.approx(6 * 1.0)
    # net = 6 J - 1.5 W x 6 x 0.25 s (the windows the energy covers), per inference run
    assert m.energy_per_inference_j == pytest.approx((6.0 - 1.5 * 1.5) / (m.iterations * 4))


def _split_blocks(log):
    out, cur = [], []
    for e in log:
        cur.append(e)
        if e == "stop":
            out.append(cur)
            cur = []
    return out


def test_too_few_power_samples_is_flagged():
    class Sparse(LoadPower):
        def stop(self):
            t = super().stop()
            return PowerTrace(total_w=[], timestamps_s=[], energy_j=t.energy_j,
                              duration_s=t.duration_s, sensor_period_s=0.1)

    rt = CountingRuntime()
    m = measure(rt, np.zeros((4, 1, 2, 2), np.float32), None, 2, FAST,
                profiler=Sparse(rt), profiler_name="sparse")
    assert "only 0 power samples" in m.power_note
    assert m.accuracy is None


class Decaying(Profiler):
    """Idle windows whose mean power falls as a device cools after load: `watts` in turn."""

    name = "decaying"

    def __init__(self, watts, window_s=1.0):
        self.watts, self.window_s, self.i = list(watts), window_s, 0

    @classmethod
    def available(cls):
        return True, ""

    def start(self):
        pass

    def stop(self):
        w = self.watts[min(self.i, len(self.watts) - 1)]
        self.i += 1
        return PowerTrace([0.0], [w], energy_j=w * self.window_s, duration_s=self.window_s)


def test_idle_waits_until_power_settles():
    rules = TimingRules(idle_s=1.0, settle_tolerance=0.05, settle_max_s=30)
    # 20 -> 12 -> 9 -> 8.2 -> 8.0: the first pair within 5% is (8.2, 8.0)
    trace, note = idle_baseline(Decaying([20, 12, 9, 8.2, 8.0, 7.9]), rules, sleep=lambda s: None)
    assert trace.mean_w == 8.0 and note is None
    # a 6% step is not settled at 5%: it goes on to the next pair
    trace, _ = idle_baseline(Decaying([10, 9.4, 9.39]), rules, sleep=lambda s: None)
    assert trace.mean_w == 9.39


def test_idle_that_never_settles_is_flagged_after_the_limit():
    rules = TimingRules(idle_s=1.0, settle_tolerance=0.05, settle_max_s=3)
    sensor = Decaying([40, 30, 20, 10, 5])
    trace, note = idle_baseline(sensor, rules, sleep=lambda s: None)
    assert sensor.i == 3 and trace.mean_w == 20  # three 1 s windows reach the 3 s limit
    assert "had not settled" in note and "30 W, 20 W" in note


def test_idle_window_is_long_enough_for_the_sensor_resolution():
    slept = []

    class Coarse(Decaying):
        def resolution_s(self):
            return 0.05  # e.g. an energy counter updated every 50 ms

    idle_baseline(Coarse([5, 5]), TimingRules(idle_s=0.1), sleep=slept.append)
    assert slept == [pytest.approx(5.0)] * 2  # 0.05 s / 1% error


def test_timing_rules_validate():
    with pytest.raises(ValueError):
        TimingRules(min_duration_s=0)
    with pytest.raises(ValueError):
        TimingRules(min_iterations=0)


def test_profiler_registry():
    assert profiler_class("none") is NoProfiler
    ok, reason = NoProfiler.available()
    assert not ok and "none" in reason
    with pytest.raises(EdgerobError, match="unknown profiler"):
        profiler_class("magic")


class DriftingRuntime:
    """A runtime on a fake clock: each call advances it by its latency, which grows with time
    (the machine warming up or getting busier) and is `factor[set]` times longer for images
    of a set (the first pixel tells which). Records the set of every call."""

    def __init__(self, drift_per_s=0.5, factor=(1.0, 1.0)):
        self.now, self.drift, self.factor = 0.0, drift_per_s, factor
        self.sets, self.batches = [], []

    def clock(self):
        return self.now

    def run(self, x):
        which = int(x[0, 0, 0, 0])
        self.sets.append(which)
        self.batches.append(int(x[0, 0, 0, 1]))  # the batch's first sample
        self.now += 1e-3 * (1 + self.drift * self.now) * self.factor[which]
        return np.zeros((len(x), 10), np.float32)


def _two_sets(n=8):
    a = np.zeros((n, 1, 2, 2), np.float32)
    a[:, 0, 0, 1] = np.arange(n)  # which sample
    b = a.copy()
    b[:, 0, 0, 0] = 1  # which set
    return {"clean": (a, None), "adv": (b, None)}


RULES = TimingRules(warmup_s=0.01, min_duration_s=0.5, min_iterations=10, idle_s=0, rounds=10)


def test_sets_alternate_in_rotating_blocks(monkeypatch):
    import edgerob.device.bench as bench

    rt = DriftingRuntime()
    monkeypatch.setattr(bench, "clock", rt.clock)
    ms = measure_sets(rt, _two_sets(), 4, RULES)
    timed = rt.sets[-(ms["clean"].iterations + ms["adv"].iterations):]
    runs = [k for i, k in enumerate(timed) if i == 0 or timed[i - 1] != k]
    # round r runs clean then adv for even r, adv then clean for odd r (AB BA AB ...): the
    # blocks of one set meet at round boundaries, 20 blocks in 11 runs
    assert runs == [0, 1] * 5 + [0]
    n_timed = len(timed)
    for k, name in enumerate(("clean", "adv")):
        m = ms[name]
        assert len(m.rounds) == 10 and sum(r["iterations"] for r in m.rounds) == m.iterations
        # each block lasts its share of min_duration_s (1 ms calls: at most one call over)
        assert all(0.05 <= r["wall_s"] < 0.05 + 0.003 for r in m.rounds)
        assert RULES.min_duration_s <= m.duration_s < 1.1 * RULES.min_duration_s
        # blocks go on through the set where the last one stopped (batches of 4 of 8 images)
        firsts = [b for s_, b in zip(timed, rt.batches[-n_timed:]) if s_ == k]
        assert firsts == [0, 4] * (len(firsts) // 2) + [0] * (len(firsts) % 2)

    # a minimum count is shared among the rounds too: 60 iterations in 6 rounds, 10 per block
    few = TimingRules(warmup_s=0, min_duration_s=1e-6, min_iterations=60, idle_s=0, rounds=6)
    ms = measure_sets(rt, _two_sets(), 4, few)
    assert [r["iterations"] for r in ms["adv"].rounds] == [10] * 6


def test_paired_rounds_cancel_drift_that_sequential_cells_read_as_an_effect(monkeypatch):
    """Latency doubling over the session is the same for both sets: measured one after the
    other the second set looks much slower; in alternating rounds the paired ratio is 1."""
    import edgerob.device.bench as bench
    from edgerob.device.paired import paired_ratio
    from edgerob.device.sweep import versus_clean

    rt = DriftingRuntime(drift_per_s=1.0)
    monkeypatch.setattr(bench, "clock", rt.clock)
    sets = _two_sets()
    first = measure(rt, *sets["clean"], 4, RULES)
    second = measure(rt, *sets["adv"], 4, RULES)
    assert second.latency_p50_ms / first.latency_p50_ms > 1.3  # the drift, not the inputs

    ms = measure_sets(rt, sets, 4, RULES)
    cols = versus_clean(ms["adv"], ms["clean"])
    assert cols["latency_vs_clean_ratio"] == pytest.approx(1.0, abs=0.01)
    assert cols["latency_vs_clean_low"] <= 1.0 <= cols["latency_vs_clean_high"]
    assert cols["latency_vs_clean_p"] > 0.05 and cols["vs_clean_rounds"] == 10
    assert "energy_vs_clean_ratio" not in cols  # no sensor, no energy comparison

    # a real 20% slowdown of the adversarial set, under the same drift, is found
    rt.factor = (1.0, 1.2)
    ms = measure_sets(rt, sets, 4, RULES)
    cols = versus_clean(ms["adv"], ms["clean"])
    assert cols["latency_vs_clean_ratio"] == pytest.approx(1.2, rel=0.02)
    assert 1.0 < cols["latency_vs_clean_low"] <= 1.2 <= cols["latency_vs_clean_high"]
    assert cols["latency_vs_clean_p"] == pytest.approx(2 / 2 ** 10)  # every round: adv slower
    assert cols["latency_vs_clean_effect"] == 1.0
    assert paired_ratio([2.0] * 6, [1.0] * 6).ratio == pytest.approx(2.0)


def test_energy_ratio_paired_per_round_and_null_when_the_sensor_cannot_tell(monkeypatch):
    from edgerob.device.sweep import versus_clean

    rt = CountingRuntime()
    x = np.zeros((8, 1, 2, 2), np.float32)
    sets = {"clean": (x, None), "adv": (x.copy(), None)}
    ms = measure_sets(rt, sets, 4, FAST, profiler=LoadPower(rt), profiler_name="load")
    for m in ms.values():  # same power and time: per-inference energies alike
        m.rounds = [{**r, "energy_per_inference_j": 1.0} for r in m.rounds]
    ms["adv"].rounds = [{**r, "energy_per_inference_j": 1.5} for r in ms["adv"].rounds]
    cols = versus_clean(ms["adv"], ms["clean"])
    assert cols["energy_vs_clean_ratio"] == pytest.approx(1.5)
    assert cols["energy_vs_clean_low"] == cols["energy_vs_clean_high"] == pytest.approx(1.5)
    ms["clean"].rounds[3]["energy_per_inference_j"] = -0.01  # idle-level noise
    assert "energy_vs_clean_ratio" not in versus_clean(ms["adv"], ms["clean"])


def test_timing_rules_need_enough_rounds_for_an_exact_interval():
    with pytest.raises(ValueError, match="rounds"):
        TimingRules(rounds=5)
    assert TimingRules(rounds=6).rounds == 6
