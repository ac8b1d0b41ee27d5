import numpy as np
import pytest

from edgerob.device.bench import (Measurement, TimingRules, latency_summary, make_batches, measure,
                           timed_loop)
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


class ConstantPower(Profiler):
    """A sensor reading `watts` every `period` seconds (a stand-in with known answers)."""

    name = "constant"
    watts = [3.0, 10.0]  # first window idle, second busy

    def __init__(self):
        self.windows = 0

    @classmethod
    def available(cls):
        return True, "test sensor"

    def start(self):
        import time
        self.t0 = time.perf_counter()

    def stop(self):
        import time
        dur = time.perf_counter() - self.t0
        w = self.watts[min(self.windows, 1)]
        self.windows += 1
        n = 10
        return PowerTrace(timestamps_s=list(np.linspace(0, dur, n)), total_w=[w] * n,
                          energy_j=w * dur, duration_s=dur, sensor_period_s=dur / n)


def test_energy_per_inference_is_net_of_idle():
    x = np.zeros((16, 1, 2, 2), np.float32)
    m = measure(CountingRuntime(), x, np.zeros(16, int), 4, FAST, profiler=ConstantPower(),
                profiler_name="constant")
    assert m.power_idle_w == pytest.approx(3.0)
    assert m.power_mean_w == pytest.approx(10.0)
    assert m.power_samples == 10
    assert m.energy_per_inference_j > 0 and m.power_note is None


class Recorder:
    """A runtime and a profiler writing one shared log, with windows of known energy and span:
    the idle window is 2 s at 1.5 W, the timed window 10 J over 4 s."""

    name = "recorder"

    def __init__(self):
        self.log = []
        self.windows = 0

    def run(self, x):  # the runtime
        self.log.append("run")
        return np.zeros((len(x), 10), np.float32)

    def start(self):  # the profiler
        self.log.append("start")

    def stop(self):
        self.log.append("stop")
        self.windows += 1
        if self.windows == 1:
            return PowerTrace([0.0], [1.5], energy_j=3.0, duration_s=2.0, sensor_period_s=0.1)
        return PowerTrace([0.0] * 8, [2.5] * 8, energy_j=10.0, duration_s=4.0,
                          sensor_period_s=0.1)


def test_idle_before_warmup_and_net_energy_over_the_profiler_window():
    rec = Recorder()
    rules = TimingRules(warmup_s=0.01, min_duration_s=0.01, min_iterations=3, idle_s=0.0)

    def state():
        rec.log.append("state")
        return {}

    m = measure(rec, np.zeros((8, 1, 2, 2), np.float32), None, 4, rules, profiler=rec,
                profiler_name="rec", state=state)
    log = rec.log
    # idle window, then the accuracy pass and warm-up, then state, the timed window, state
    assert log[:2] == ["start", "stop"]
    second = log.index("start", 2)
    assert log[2:second - 1] == ["run"] * (second - 3) and second - 3 >= 2 + 1
    assert log[second - 1] == "state" and log[-2:] == ["stop", "state"]
    assert log[second + 1:-2] == ["run"] * m.iterations
    assert m.power_idle_w == 1.5 and m.energy_j == 10.0
    # net = 10 J - 1.5 W x 4 s (the window the energy covers), per inference over samples run
    assert m.energy_per_inference_j == (10.0 - 1.5 * 4.0) / (m.iterations * 4)


def test_too_few_power_samples_is_flagged():
    class Sparse(ConstantPower):
        def stop(self):
            t = super().stop()
            return PowerTrace(total_w=t.total_w[:1], timestamps_s=t.timestamps_s[:1],
                              energy_j=t.energy_j, duration_s=t.duration_s, sensor_period_s=0.1)

    m = measure(CountingRuntime(), np.zeros((4, 1, 2, 2), np.float32), None, 2, FAST,
                profiler=Sparse(), profiler_name="sparse")
    assert "only 1 power samples" in m.power_note
    assert m.accuracy is None


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
