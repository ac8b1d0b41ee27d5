"""The profiler protocol, energy integration, and clock/throttle state."""

import time

import pytest

from edgerob.device.clocks import cpu_state, throttled_between
from edgerob.device.profilers import (NoProfiler, PollingProfiler, Reading, counter_period_s,
                                      integrate_power, min_window_s, profiler_class)


def test_integrate_constant_power_exactly():
    ts = [0.0, 0.1, 0.25, 0.4]
    assert integrate_power(ts, [5.0] * 4, end_s=0.5) == pytest.approx(2.5, abs=1e-12)


def test_integrate_step_power_exactly():
    ts = [float(t) for t in range(10)]
    watts = [5.0] * 5 + [10.0] * 5  # 5 W for 5 s, then 10 W for 5 s
    assert integrate_power(ts, watts, end_s=10.0) == pytest.approx(75.0, abs=1e-12)


def test_integrate_needs_samples():
    with pytest.raises(ValueError):
        integrate_power([], [], 1.0)


class Constant(PollingProfiler):
    name = "constant"

    def __init__(self, watts=7.0, counter=None, **kw):
        super().__init__(**kw)
        self.watts, self.counter = watts, counter

    @classmethod
    def available(cls):
        return True, "test"

    def read(self):
        return Reading(self.watts, {"rail_a": self.watts * 0.75, "rail_b": self.watts * 0.25})

    def energy_counter_j(self):
        return None if self.counter is None else self.counter()


def test_polling_integrates_readings():
    p = Constant(interval_s=0.01)
    p.start()
    time.sleep(0.12)
    trace = p.stop()
    assert trace.samples >= 5  # one at start, then every 10 ms
    assert trace.timestamps_s == sorted(trace.timestamps_s) and trace.timestamps_s[0] < 0.01
    assert trace.energy_j == pytest.approx(7.0 * trace.duration_s, rel=1e-9)
    assert trace.mean_w == pytest.approx(7.0)
    assert trace.rails_w["rail_a"] == [5.25] * trace.samples
    assert trace.sensor_period_s == 0.01


def test_polling_prefers_the_hardware_counter():
    ticks = iter([1000.0, 1012.5])
    p = Constant(interval_s=0.01, counter=lambda: next(ticks))
    p.start()
    time.sleep(0.03)
    trace = p.stop()
    assert trace.energy_j == 12.5  # the counter difference, not the integral of 7 W readings
    assert trace.samples >= 2


def test_profiler_options_are_checked():
    with pytest.raises(ValueError):
        NoProfiler(interval_s=1)
    with pytest.raises(ValueError):
        Constant(interval_s=0)


@pytest.mark.parametrize("name", ["none", "tegrastats", "jtop", "ina3221", "nvml", "rapl"])
def test_every_registered_profiler_answers_available(name):
    ok, reason = profiler_class(name).available()
    assert isinstance(ok, bool) and reason  # here (no Jetson, GPU or RAPL) each says why not


def fake_sysfs(root, counts=(3, 0), freq_khz=2400000, temps=(45000, -273000)):
    cpu = root / "sys/devices/system/cpu"
    for i in range(2):
        (cpu / f"cpu{i}/cpufreq").mkdir(parents=True)
        (cpu / f"cpu{i}/cpufreq/scaling_cur_freq").write_text(f"{freq_khz}\n")
        (cpu / f"cpu{i}/thermal_throttle").mkdir()
        (cpu / f"cpu{i}/thermal_throttle/core_throttle_count").write_text(f"{counts[i]}\n")
    for i, t in enumerate(temps):
        zone = root / f"sys/class/thermal/thermal_zone{i}"
        zone.mkdir(parents=True)
        (zone / "temp").write_text(f"{t}\n")
        (zone / "type").write_text("x86_pkg_temp\n" if i == 0 else "absent\n")


def test_cpu_state_reads_sysfs(tmp_path):
    fake_sysfs(tmp_path)
    s = cpu_state(tmp_path)
    assert s["clocks_mhz"] == {"cpu0": 2400.0, "cpu1": 2400.0}
    assert s["temps_c"] == {"x86_pkg_temp:0": 45.0}  # the absent sensor is dropped
    assert s["throttle_counts"] == {"cpu0/core": 3, "cpu1/core": 0}


def test_throttle_flag(tmp_path):
    fake_sysfs(tmp_path / "a", counts=(3, 0))
    fake_sysfs(tmp_path / "b", counts=(3, 2))
    fake_sysfs(tmp_path / "c", counts=(3, 0), freq_khz=800000)
    a, b, c = (cpu_state(tmp_path / x) for x in "abc")
    assert throttled_between(a, b) == (True, "throttle counters grew: cpu1/core")
    # a lower clock alone is not throttling (governors idle cores down)
    assert throttled_between(a, c) == (False, None)
    flag, note = throttled_between({"throttle_reasons": []}, {"throttle_reasons": ["sw_thermal"]})
    assert flag and "end: sw_thermal" in note
    assert throttled_between(cpu_state(tmp_path / "nothing"), {}) == (
        None, "no throttle counter readable here")


def test_first_reading_holds_from_the_window_start():
    assert integrate_power([0.2, 1.0], [4.0, 8.0], end_s=2.0, start_s=0.0) == pytest.approx(
        4.0 * 1.0 + 8.0 * 1.0)


# -- the sensor's time granularity and the window it asks for -------------------------------------


class FakeClock:
    """Fake time in whole microseconds, so sums of it are exact: only `sleep` moves it, by the time
    asked plus `delays_us[k]` on the k-th sleep (a poll the scheduler held up)."""

    def __init__(self, delays_us=None):
        self.us, self.sleeps, self.delays_us = 0, 0, delays_us or {}

    def __call__(self) -> float:
        return self.us / 1e6

    def sleep(self, seconds: float) -> None:
        self.us += round(seconds * 1e6) + self.delays_us.get(self.sleeps, 0)
        self.sleeps += 1


def stepping(clock, period_ms=100, first_ms=70):
    """A counter that steps every `period_ms` of fake time, first at `first_ms`: the polling starts
    part-way through an update cycle."""
    return lambda: (clock.us + (period_ms - first_ms) * 1000) // (period_ms * 1000)


def test_counter_period_is_the_gap_between_changes():
    clock = FakeClock()
    period, how = counter_period_s(stepping(clock), clock, clock.sleep)
    assert period == pytest.approx(0.1, abs=1e-9)
    assert "median of 5 gaps" in how and "100 ms" in how
    assert clock.us == 570_000  # six changes (70 ms, then every 100 ms) and not one poll more


def test_counter_period_ignores_the_time_before_the_first_change():
    clock = FakeClock()  # two changes (70 and 170 ms) before the bound: one gap, 100 ms
    period, _ = counter_period_s(stepping(clock), clock, clock.sleep, timeout_s=0.25)
    assert period == pytest.approx(0.1, abs=1e-9)  # not the median of 70 and 100 ms


@pytest.mark.parametrize("timeout_s, changes", [(0.15, 1), (2.0, 0)])
def test_counter_period_unknown_without_two_changes(timeout_s, changes):
    clock = FakeClock()
    read = stepping(clock) if changes else (lambda: 42)
    period, why = counter_period_s(read, clock, clock.sleep, timeout_s=timeout_s)
    assert period is None and f"changed {changes} time(s) in {timeout_s:.2f} s" in why
    assert clock.us == pytest.approx(timeout_s * 1e6, abs=1000)  # it gives up at the bound


@pytest.mark.parametrize("delays_us, gaps_ms", [
    # the poll due at 270 ms runs 40 ms late and sees that update at 310 ms: gaps 100, 140, 60,
    # 100, 100 (the minimum, 60, is wrong; the mean is right only as the two errors cancel)
    ({269: 40_000}, [100, 140, 60, 100, 100]),
    # a 150 ms stall from 149 ms merges the 170 and 270 ms updates into one change: gaps 230, 70,
    # 100, 100, 100 (the mean, 120, is wrong)
    ({149: 150_000}, [230, 70, 100, 100, 100]),
])
def test_counter_period_stands_a_late_poll(delays_us, gaps_ms):
    clock = FakeClock(delays_us)
    counter, seen = stepping(clock), []

    def read():
        value = counter()
        if not seen or value != seen[-1][1]:
            seen.append((clock.us, value))
        return value

    period, _ = counter_period_s(read, clock, clock.sleep)
    assert period == pytest.approx(0.1, abs=1e-9)
    changes_us = [t for t, _ in seen[1:]]
    assert [(b - a) // 1000 for a, b in zip(changes_us, changes_us[1:])] == gaps_ms  # as described


def test_min_window_formula():
    assert min_window_s(0.1) == pytest.approx(10.0)  # 1% of 10 s is one 100 ms period
    assert min_window_s(0.02, max_error=0.05) == pytest.approx(0.4)
    assert min_window_s(None) == 0.0  # granularity unknown: nothing to lengthen for
    for bad in (0, 1, -0.01):
        with pytest.raises(ValueError):
            min_window_s(0.1, max_error=bad)
    with pytest.raises(ValueError):
        min_window_s(-0.1)


def worst_error(window_us: int, period_us: int) -> float:
    """The largest relative error, over where the window starts in the counter's cycle, of a
    counter updated every `period_us` and read at both ends of a window at constant power."""
    errors = []
    for t0 in range(period_us - 1, -1, -997):  # from 1 us before an update, back over a cycle
        updates = (t0 + window_us) // period_us - t0 // period_us
        errors.append(abs(updates * period_us - window_us) / window_us)
    return max(errors)


@pytest.mark.parametrize("period_s", [0.1, 0.02, 0.001])
def test_min_window_bounds_the_counter_error_and_is_tight(period_s):
    period_us = round(period_s * 1e6)
    window_us = round(min_window_s(period_s) * 1e6)
    for stretch in range(0, window_us // 2, window_us // 37):  # the window and longer ones
        assert worst_error(window_us + stretch, period_us) < 0.01
    # 10% shorter (just over a whole number of periods), a window can be off by more than 1%
    assert worst_error(round(0.9 * window_us) + 10, period_us) > 0.01


def test_resolution_of_readings_is_the_polling_interval():
    assert Constant(interval_s=0.04).resolution_s() == 0.04
    assert NoProfiler().resolution_s() is None
    assert min_window_s(NoProfiler().resolution_s()) == 0.0
