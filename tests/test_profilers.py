"""The profiler protocol, energy integration, and clock/throttle state."""

import time

import pytest

from edgerob.device.clocks import cpu_state, throttled_between
from edgerob.device.profilers import (NoProfiler, PollingProfiler, Reading, integrate_power,
                               profiler_class)


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
