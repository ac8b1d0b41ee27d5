"""NVML and RAPL profilers without their hardware: a fake `pynvml` module and fake sysfs trees.

Energies are checked exactly (counter differences, wraparound), watts from mW and uJ units.
"""

from __future__ import annotations

import itertools
import os
import sys
import time
import types
from pathlib import Path

import pytest

from edgerob.device.clocks import throttled_between
from edgerob.errors import EdgerobError
from edgerob.device.profilers import profiler_class
from edgerob.device.profilers import min_window_s
from edgerob.device.profilers import nvml as nvml_module
from edgerob.device.profilers import rapl as rapl_module
from edgerob.device.profilers.nvml import NvmlProfiler, decode_reasons
from edgerob.device.profilers.rapl import RaplProfiler, counter_delta, discover
from test_profilers import FakeClock

NOT_SUPPORTED = 3

# -- a fake pynvml -------------------------------------------------------------------------------


_SERIAL = itertools.count(1)


class FakeGpu:
    """One GPU: None for a reading means NotSupported. UUID and PCI bus id default to distinct
    values in creation order; `violations` maps nvmlPerfPolicyType values to violation ns. With
    `update_ms`, the energy counter also adds `step_mj` every `update_ms` of the fake module's
    clock (as the real one updates at a coarse interval); without, it moves only when a test
    changes `energy_mj`."""

    def __init__(self, name="NVIDIA H100 80GB HBM3", energy_mj=None, instant_mw=None,
                 usage_mw=None, sm_mhz=1980, mem_mhz=2619, temp_c=41, limit_mw=700_000,
                 reasons=0x1, uuid=None, pci=None, violations=None, memory_gib=80,
                 update_ms=None, step_mj=7_000):
        n = next(_SERIAL)
        self.uuid = uuid or f"GPU-{n:08x}-1111-2222-3333-444444444444"
        self.pci = pci or f"00000000:{n % 256:02X}:00.0"
        self.violations = violations or {}
        self.name, self.energy_mj, self.instant_mw, self.usage_mw = (name, energy_mj,
                                                                     instant_mw, usage_mw)
        self.sm_mhz, self.mem_mhz, self.temp_c, self.limit_mw = sm_mhz, mem_mhz, temp_c, limit_mw
        self.reasons = reasons
        self.memory_bytes = int(memory_gib * 2**30)
        self.fail_reads = False  # every power reading raises from now on
        self.update_ms, self.step_mj = update_ms, step_mj
        self.energy_reads = 0


def fake_pynvml(gpus, init_error: str | None = None, field_api=True, event_api=True,
                throttle_api=True):
    m = types.ModuleType("pynvml")
    m.calls = {"init": 0, "shutdown": 0}
    m.clock = FakeClock()  # the time the energy counters update on (see FakeGpu)

    class NVMLError(Exception):
        def __init__(self, value=999):
            super().__init__(value)
            self.value = value

        def __str__(self):
            return {NOT_SUPPORTED: "Not Supported", 9: "Driver Not Loaded",
                    2: "Invalid Argument"}.get(self.value, f"Unknown Error {self.value}")

    def subclass(name, value):
        return type(name, (NVMLError,), {"__init__": lambda self: NVMLError.__init__(self, value)})

    m.NVMLError = NVMLError
    m.NVMLError_NotSupported = subclass("NVMLError_NotSupported", NOT_SUPPORTED)
    m.NVMLError_DriverNotLoaded = subclass("NVMLError_DriverNotLoaded", 9)
    m.NVMLError_InvalidArgument = subclass("NVMLError_InvalidArgument", 2)
    m.NVML_SUCCESS = 0
    m.NVML_ERROR_NOT_SUPPORTED = NOT_SUPPORTED
    m.NVML_FI_DEV_POWER_INSTANT = 186
    m.NVML_VALUE_TYPE_UNSIGNED_INT = 1
    m.NVML_CLOCK_SM, m.NVML_CLOCK_MEM, m.NVML_TEMPERATURE_GPU = 1, 2, 0

    def init():
        if init_error:
            raise m.NVMLError_DriverNotLoaded()
        m.calls["init"] += 1

    def shutdown():
        assert m.calls["shutdown"] < m.calls["init"], "nvmlShutdown without nvmlInit"
        m.calls["shutdown"] += 1

    def need(value):
        if value is None:
            raise m.NVMLError_NotSupported()
        return value

    def handle(i):
        if not 0 <= i < len(gpus):
            raise m.NVMLError_InvalidArgument()
        return gpus[i]

    def field_values(gpu, ids):
        out = []
        for fid in ids:
            ok = fid == 186 and gpu.instant_mw is not None and not gpu.fail_reads
            out.append(types.SimpleNamespace(
                fieldId=fid, scopeId=0, nvmlReturn=0 if ok else NOT_SUPPORTED, valueType=1,
                value=types.SimpleNamespace(uiVal=gpu.instant_mw if ok else 0, dVal=0.0)))
        return out

    def usage(gpu):
        if gpu.fail_reads:
            raise m.NVMLError(999)
        return need(gpu.usage_mw)

    def clock(gpu, kind):
        return {1: gpu.sm_mhz, 2: gpu.mem_mhz}[kind]

    def energy(gpu):
        mj = need(gpu.energy_mj)
        gpu.energy_reads += 1
        if gpu.update_ms is None:
            return mj
        return mj + gpu.step_mj * (m.clock.us // (gpu.update_ms * 1000))

    m.nvmlInit, m.nvmlShutdown = init, shutdown
    m.nvmlDeviceGetCount = lambda: len(gpus)
    m.nvmlDeviceGetHandleByIndex = handle
    m.nvmlDeviceGetName = lambda gpu: gpu.name
    m.nvmlDeviceGetUUID = lambda gpu: gpu.uuid
    m.nvmlDeviceGetMemoryInfo = lambda gpu: types.SimpleNamespace(total=gpu.memory_bytes)
    m.nvmlDeviceGetPciInfo = lambda gpu: types.SimpleNamespace(busId=gpu.pci.encode())
    m.nvmlDeviceGetViolationStatus = lambda gpu, policy: types.SimpleNamespace(
        referenceTime=0, violationTime=need(gpu.violations.get(policy)))
    m.nvmlDeviceGetTotalEnergyConsumption = energy
    m.nvmlDeviceGetPowerUsage = usage
    m.nvmlDeviceGetClockInfo = clock
    m.nvmlDeviceGetTemperature = lambda gpu, sensor: need(gpu.temp_c)
    m.nvmlDeviceGetEnforcedPowerLimit = lambda gpu: need(gpu.limit_mw)
    if field_api:
        m.nvmlDeviceGetFieldValues = field_values
    if event_api:
        m.nvmlDeviceGetCurrentClocksEventReasons = lambda gpu: need(gpu.reasons)
    if throttle_api:
        m.nvmlDeviceGetCurrentClocksThrottleReasons = lambda gpu: need(gpu.reasons)
    return m


@pytest.fixture
def nvml(monkeypatch):
    """Install a fake pynvml for the given GPUs; returns the module. Counter periods measured in
    other tests are forgotten (the fake GPUs' UUIDs repeat across tests)."""
    monkeypatch.setattr(nvml_module, "_COUNTER_PERIODS", {})

    def install(gpus, **kw):
        mod = fake_pynvml(gpus, **kw)
        monkeypatch.setitem(sys.modules, "pynvml", mod)
        return mod

    return install


def profiler(mod, **options) -> NvmlProfiler:
    """An NvmlProfiler that measures its energy counter's period on the fake module's clock."""
    return NvmlProfiler(clock=mod.clock, sleep=mod.clock.sleep, **options)


def balanced(mod) -> bool:
    return mod.calls["init"] == mod.calls["shutdown"]


# -- NVML: energy and power ----------------------------------------------------------------------


def test_registry_names_both_classes():
    assert profiler_class("nvml") is NvmlProfiler
    assert profiler_class("rapl") is RaplProfiler


def test_volta_window_energy_is_exactly_the_counter_difference(nvml):
    other = FakeGpu(name="GPU zero", energy_mj=5, instant_mw=1_000)
    gpu = FakeGpu(energy_mj=987_654_321_000, instant_mw=250_000, usage_mw=180_000)
    mod = nvml([other, gpu])
    p = profiler(mod, interval_s=30, gpu_index=1)  # the sampler waits: only the start reading
    p.start()
    gpu.energy_mj += 1_234_567  # mJ during the window
    other.energy_mj += 99_999
    trace = p.stop()
    assert trace.energy_j == 1234.567  # J, not the readings' integral (250 W x microseconds)
    assert trace.total_w == [250.0]  # 250000 mW from the instant field, not the average
    assert (p.power_source, p.energy_source, p.gpu_name) == ("instant", "counter", gpu.name)
    assert "total-energy counter" in p.note
    assert balanced(mod) and mod.calls["init"] == 1


def test_two_windows_reuse_nothing_stale(nvml):
    gpu = FakeGpu(energy_mj=10_000, instant_mw=60_000)
    mod = nvml([gpu])
    p = profiler(mod, interval_s=30)
    for added in (500, 2_750):
        p.start()
        gpu.energy_mj += added
        assert p.stop().energy_j == added / 1000
    assert mod.calls == {"init": 2, "shutdown": 2}


def test_pre_volta_energy_integrates_the_readings(nvml):
    gpu = FakeGpu(name="Tesla P100", energy_mj=None, instant_mw=80_000)
    mod = nvml([gpu])
    p = NvmlProfiler(interval_s=0.01)
    p.start()
    time.sleep(0.06)
    trace = p.stop()
    assert p.energy_source == "integrated" and "integrated" in p.note
    assert trace.samples >= 2 and set(trace.total_w) == {80.0}
    # sample-and-hold over the whole window at a constant 80 W
    assert trace.energy_j == pytest.approx(80.0 * trace.duration_s, rel=1e-9)
    assert trace.mean_w == pytest.approx(80.0, rel=1e-9)
    assert balanced(mod)


@pytest.mark.parametrize("field_api", [True, False], ids=["field-unsupported", "no-field-api"])
def test_no_instant_field_falls_back_to_power_usage_and_says_so(nvml, field_api):
    gpu = FakeGpu(name="NVIDIA A10", energy_mj=1_000, instant_mw=None, usage_mw=123_456)
    mod = nvml([gpu], field_api=field_api)
    p = profiler(mod, interval_s=30)
    p.start()
    gpu.energy_mj += 4_000
    trace = p.stop()
    assert p.power_source == "average"
    assert trace.total_w == [123.456]  # mW -> W
    assert trace.energy_j == 4.0  # the counter still gives the energy
    assert "1-second average" in p.note and "instantaneous power field" in p.note
    assert p.state()["power_source"] == "average"


def test_failed_readings_are_dropped_and_counted(nvml):
    gpu = FakeGpu(energy_mj=0, instant_mw=100_000)
    mod = nvml([gpu])
    p = profiler(mod, interval_s=30)
    p.start()
    gpu.fail_reads = True
    assert p.read().total_w is None and p.read_errors == 1
    gpu.fail_reads = False
    assert p.read().total_w == 100.0
    p.stop()
    assert balanced(mod)


def test_nvml_resolution_is_the_counters_measured_period_once_per_gpu(nvml):
    h100 = FakeGpu(energy_mj=1_000, instant_mw=300_000, update_ms=100)
    l4 = FakeGpu(name="NVIDIA L4", energy_mj=5_000, instant_mw=40_000, update_ms=20)
    mod = nvml([h100, l4])
    p = profiler(mod, interval_s=30)
    assert p.resolution_s() == pytest.approx(0.1, abs=1e-9)
    assert min_window_s(p.resolution_s()) == pytest.approx(10.0)
    assert balanced(mod)  # opened for it and closed again
    # recorded where the measurement's fingerprint and power note pick it up
    assert p.identity["energy_counter_period_s"] == pytest.approx(0.1, abs=1e-9)
    assert "energy counter updates every 100 ms" in p.note
    spent_us, reads = mod.clock.us, h100.energy_reads
    p.start()
    h100.energy_mj += 2_500
    assert p.stop().energy_j == 2.5  # still the counter's difference
    again = profiler(mod, interval_s=30)
    assert again.resolution_s() == pytest.approx(0.1, abs=1e-9)
    assert mod.clock.us == spent_us  # measured once per GPU per process: no more polling
    assert h100.energy_reads - reads < 10  # the probes and the window's two ends only
    other = profiler(mod, gpu_index=1)  # another GPU is measured on its own
    assert other.resolution_s() == pytest.approx(0.02, abs=1e-9)
    assert other.identity["energy_counter_period_s"] == pytest.approx(0.02, abs=1e-9)


def test_nvml_counter_that_never_moves_has_no_resolution(nvml):
    gpu = FakeGpu(energy_mj=5, instant_mw=90_000)  # no update within the bound
    mod = nvml([gpu])
    p = profiler(mod, interval_s=0.05)
    assert p.resolution_s() is None  # unknown: the energy is the counter's, not the readings'
    assert p.identity["energy_counter_period_s"] is None
    assert "update period unknown: it changed 0 time(s) in 2.00 s" in p.note
    assert mod.clock.us == pytest.approx(2e6, abs=2000)  # it gave up at the bound


@pytest.mark.parametrize("instant_mw, expected", [(80_000, 0.25), (None, None)])
def test_nvml_resolution_without_a_counter_is_the_polling_interval(nvml, instant_mw, expected):
    gpu = FakeGpu(name="Tesla P100", energy_mj=None, instant_mw=instant_mw)
    mod = nvml([gpu])
    p = profiler(mod, interval_s=0.25)
    assert p.resolution_s() == expected  # no readings at all: nothing to know
    assert p.identity["energy_counter_period_s"] is None and mod.clock.us == 0  # nothing polled
    assert balanced(mod)


def test_options_are_checked():
    with pytest.raises(ValueError, match="gpu_index"):
        NvmlProfiler(gpu_index=-1)
    with pytest.raises(ValueError, match="takes no options"):
        NvmlProfiler(gpu=1)


# -- NVML: availability --------------------------------------------------------------------------


def test_available_without_pynvml(monkeypatch):
    monkeypatch.setitem(sys.modules, "pynvml", None)  # import pynvml raises ImportError
    ok, why = NvmlProfiler.available()
    assert not ok and "pip install nvidia-ml-py" in why


def test_available_without_driver(nvml):
    mod = nvml([FakeGpu(energy_mj=0, instant_mw=1)], init_error="driver")
    ok, why = NvmlProfiler.available()
    assert not ok and "Driver Not Loaded" in why and "no NVIDIA driver" in why
    assert mod.calls == {"init": 0, "shutdown": 0}  # no shutdown after a failed init
    with pytest.raises(EdgerobError, match="NVML could not initialise"):
        NvmlProfiler().start()


def test_available_gpu_index_out_of_range(nvml):
    mod = nvml([FakeGpu(energy_mj=0, instant_mw=1), FakeGpu(energy_mj=0, instant_mw=1)])
    ok, why = NvmlProfiler.available(gpu_index=2)
    assert not ok and "gpu_index 2 is out of range" in why and "2 GPU(s)" in why
    assert mod.calls == {"init": 1, "shutdown": 1}
    with pytest.raises(EdgerobError, match="gpu_index 2 is out of range"):
        NvmlProfiler(gpu_index=2).start()
    assert balanced(mod)


def test_available_no_gpu_and_no_power_reading(nvml):
    mod = nvml([])
    assert NvmlProfiler.available() == (False, "NVML sees no GPU")
    mod = nvml([FakeGpu(name="Odd GPU")])  # no counter, no field, no usage
    ok, why = NvmlProfiler.available()
    assert not ok and "Odd GPU" in why and "no power or energy reading" in why
    assert balanced(mod)


def test_available_says_what_it_will_use(nvml):
    mod = nvml([FakeGpu(name="NVIDIA L4", energy_mj=0, usage_mw=30_000)])
    ok, why = NvmlProfiler.available()
    assert ok and "NVIDIA L4" in why and "1-second average" in why and "counter" in why
    assert balanced(mod)


# -- NVML: clocks and throttling -----------------------------------------------------------------


def test_decode_reasons():
    assert decode_reasons(0) == []
    assert decode_reasons(0x1 | 0x4 | 0x40 | 0x80 | 0x400) == [
        "gpu_idle", "sw_power_cap", "hw_thermal_slowdown", "hw_power_brake_slowdown",
        "unknown_0x400"]
    assert decode_reasons(0x8 | 0x20 | 0x2 | 0x100 | 0x10) == [
        "applications_clocks_setting", "hw_slowdown", "sync_boost", "sw_thermal_slowdown",
        "display_clock_setting"]


@pytest.mark.parametrize("names, expected", [
    ([], False),
    (["gpu_idle"], False),
    (["gpu_idle", "applications_clocks_setting", "display_clock_setting"], False),
    (["sw_power_cap"], True),
    (["gpu_idle", "hw_slowdown"], True),
    (["sw_thermal_slowdown"], True),
    (["hw_power_brake_slowdown"], True),
    (["unknown_0x400"], True),  # an unknown limiter is flagged, not hidden
])
def test_throttled_ignores_benign_reasons(names, expected):
    assert NvmlProfiler.throttled(names) is expected


@pytest.mark.parametrize("event_api", [True, False], ids=["event-reasons", "throttle-reasons"])
def test_state_reads_clocks_and_decodes_reasons(nvml, event_api):
    gpu = FakeGpu(energy_mj=0, instant_mw=1, sm_mhz=1755, mem_mhz=2619, temp_c=83,
                  limit_mw=350_000, reasons=0x1 | 0x4 | 0x40)
    mod = nvml([gpu], event_api=event_api)
    p = profiler(mod)
    s = p.state()
    assert (s["sm_clock_mhz"], s["mem_clock_mhz"], s["temperature_c"]) == (1755, 2619, 83)
    assert s["power_limit_w"] == 350.0  # mW -> W
    assert s["clock_event_mask"] == 0x45
    assert s["clock_event_reasons"] == ["gpu_idle", "sw_power_cap", "hw_thermal_slowdown"]
    assert s["throttle_reasons"] == ["sw_power_cap", "hw_thermal_slowdown"]
    assert balanced(mod)

    gpu.reasons = 0x1 | 0x2  # idle at application clocks: not throttled
    cool = p.state()
    assert cool["throttle_reasons"] == []
    assert throttled_between(cool, cool) == (False, None)
    flag, why = throttled_between(cool, s)
    assert flag is True and "end: sw_power_cap, hw_thermal_slowdown" in why


def test_state_during_a_window_keeps_the_session(nvml):
    gpu = FakeGpu(energy_mj=100, instant_mw=1)
    mod = nvml([gpu])
    p = profiler(mod, interval_s=30)
    p.start()
    p.state()
    gpu.energy_mj += 7
    assert p.stop().energy_j == 0.007  # the base was not reset by state()
    assert mod.calls == {"init": 1, "shutdown": 1}


def test_state_without_readable_reasons_is_unknown_not_unthrottled(nvml):
    mod = nvml([FakeGpu(energy_mj=0, instant_mw=1, reasons=None, temp_c=None, limit_mw=None)])
    s = profiler(mod).state()
    assert "throttle_reasons" not in s and s["clock_event_reasons"] is None
    assert s["temperature_c"] is None and s["power_limit_w"] is None
    assert throttled_between(s, s)[0] is None
    mod = nvml([FakeGpu(energy_mj=0, instant_mw=1)], event_api=False, throttle_api=False)
    assert "throttle_reasons" not in profiler(mod).state()


# -- NVML: the GPU the runtime runs on -----------------------------------------------------------


def _four_gpus():
    """NVML's index order is not PCI order here (NVML does not promise it): index 0 is bus 0x41,
    index 1 bus 0x01, index 2 bus 0x81, index 3 bus 0x21. The PCI order is 1, 3, 0, 2."""
    buses = [0x41, 0x01, 0x81, 0x21]
    names = ["NVIDIA A100-SXM4-80GB", "NVIDIA A100-SXM4-80GB", "NVIDIA L4", "NVIDIA A100-SXM4-80GB"]
    return [FakeGpu(name=n, energy_mj=0, instant_mw=1, pci=f"00000000:{b:02X}:00.0",
                    uuid=f"GPU-{b:02x}aaaaaa-0000-0000-0000-00000000{i:04d}")
            for i, (b, n) in enumerate(zip(buses, names))]


PCI = "PCI_BUS_ID"


@pytest.mark.parametrize("env, cuda_device, nvml_index", [
    ({"CUDA_DEVICE_ORDER": PCI}, 0, 1),  # CUDA 0 is the lowest bus, not NVML index 0
    ({"CUDA_DEVICE_ORDER": PCI}, 3, 2),
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "2,0"}, 0, 0),  # PCI #2 = bus 0x41
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "2,0"}, 1, 1),
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "3, 1"}, 1, 3),
    # UUIDs, full or a unique prefix, in any order; no order needed with UUIDs only
    ({"CUDA_VISIBLE_DEVICES": "GPU-81aaaaaa-0000-0000-0000-000000000002,GPU-21"}, 0, 2),
    ({"CUDA_VISIBLE_DEVICES": "GPU-81aaaaaa-0000-0000-0000-000000000002,GPU-21"}, 1, 3),
    # CUDA stops at the first entry it cannot use: 7 and the ambiguous 'GPU-' hide what follows
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "1,7,0"}, 0, 3),
])
def test_cuda_device_maps_to_its_nvml_gpu(nvml, env, cuda_device, nvml_index):
    from edgerob.device.profilers.nvml import resolve_gpu

    mod = nvml(_four_gpus())
    gpu = resolve_gpu(mod, cuda_device=cuda_device, env=env)
    assert gpu["nvml_index"] == nvml_index


@pytest.mark.parametrize("env, cuda_device, match", [
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "1,7,0"}, 1, "1 visible"),
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "GPU-,0"}, 0, "0 visible"),
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": "0,0"}, 1, "1 visible"),
    ({"CUDA_DEVICE_ORDER": PCI, "CUDA_VISIBLE_DEVICES": ""}, 0, "0 visible"),
    ({}, 0, "fastest first"),  # CUDA's default order is unspecified for several GPUs
    ({"CUDA_VISIBLE_DEVICES": "1"}, 0, "fastest first"),
    ({"CUDA_VISIBLE_DEVICES": "MIG-1234"}, 0, "MIG"),
])
def test_unmappable_cuda_devices_are_refused(nvml, env, cuda_device, match):
    from edgerob.device.profilers.nvml import resolve_gpu

    mod = nvml(_four_gpus())
    with pytest.raises(EdgerobError, match=match):
        resolve_gpu(mod, cuda_device=cuda_device, env=env)


def test_profiler_reads_the_runtimes_gpu_and_records_it(nvml, monkeypatch):
    mod = nvml(_four_gpus())
    monkeypatch.setenv("CUDA_DEVICE_ORDER", PCI)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3,2")
    p = profiler(mod, cuda_device=1)  # PCI #2: bus 0x41, NVML index 0
    s = p.state()
    assert s["gpu_index"] == 0 and s["gpu_pci_bus_id"] == "00000000:41:00.0"
    assert s["gpu_uuid"] == "GPU-41aaaaaa-0000-0000-0000-000000000000"
    assert p.identity == {"gpu_uuid": s["gpu_uuid"], "gpu_name": "NVIDIA A100-SXM4-80GB",
                          "gpu_pci_bus_id": "00000000:41:00.0", "nvml_index": 0,
                          "energy_counter_period_s": None}  # the fake counter stands still
    # torch's UUID has no 'GPU-' prefix; a PCI bus id with a 4-digit domain is the same bus
    assert profiler(mod, gpu_uuid="81AAAAAA-0000-0000-0000-000000000002").state()[
        "gpu_index"] == 2
    assert profiler(mod, pci_bus_id="0000:21:00.0").state()["gpu_index"] == 3
    # the target's NVML index and the runtime's device must be the same GPU
    assert profiler(mod, gpu_index=0, cuda_device=1).state()["gpu_index"] == 0
    with pytest.raises(EdgerobError, match="must read the GPU the runtime runs on"):
        NvmlProfiler(gpu_index=0, cuda_device=0).start()
    ok, why = NvmlProfiler.available(gpu_index=1, cuda_device=1)
    assert not ok and "CUDA device 1 is NVIDIA A100-SXM4-80GB at 00000000:41:00.0" in why
    assert balanced(mod)


def test_violation_counters_flag_throttling_the_reason_bits_miss(nvml):
    gpu = FakeGpu(energy_mj=0, instant_mw=1, reasons=0x1, violations={0: 500, 1: 0, 4: 10})
    mod = nvml([gpu])
    p = profiler(mod)
    before = p.state()
    assert before["throttle_counts"] == {"gpu:power_violation_ns": 500,
                                         "gpu:thermal_violation_ns": 0}
    gpu.violations[4] = 99_999  # low utilisation is idleness, not throttling
    assert throttled_between(before, p.state()) == (False, None)
    gpu.violations[0] = 2_000_500  # power-capped for 2 ms inside the window
    after = p.state()
    assert before["throttle_reasons"] == after["throttle_reasons"] == []  # clear at both ends
    flag, why = throttled_between(before, after)
    assert flag is True and "gpu:power_violation_ns" in why


# -- RAPL: fake sysfs ----------------------------------------------------------------------------

MAX_RANGE = 262_143_328_850  # a real Intel package's max_energy_range_uj


def set_uj(root: Path, zone: str, value: int) -> None:
    """Write a counter atomically (a sampler thread may be reading it)."""
    tmp = root / zone / "energy_uj.tmp"
    tmp.write_text(f"{value}\n")
    os.replace(tmp, root / zone / "energy_uj")


def get_uj(root: Path, zone: str) -> int:
    return int((root / zone / "energy_uj").read_text())


def add_uj(root: Path, zone: str, delta: int, max_range: int = MAX_RANGE) -> None:
    """Advance a counter, wrapping as the hardware does."""
    set_uj(root, zone, (get_uj(root, zone) + delta) % max_range)


def zone(root: Path, name: str, label: str, uj: int = 0, max_range: int = MAX_RANGE) -> None:
    d = root / name
    d.mkdir(parents=True)
    (d / "name").write_text(f"{label}\n")
    (d / "max_energy_range_uj").write_text(f"{max_range}\n")
    set_uj(root, name, uj)


def rapl_tree(root: Path, packages: int = 2, max_range: int = MAX_RANGE) -> Path:
    """/sys/class/powercap as on a two-socket server, plus zones that must not be counted."""
    (root / "intel-rapl").mkdir(parents=True)  # the control type: no energy_uj
    (root / "intel-rapl" / "enabled").write_text("1\n")
    for p in range(packages):
        zone(root, f"intel-rapl:{p}", f"package-{p}", 1_000_000 * (p + 1), max_range)
        zone(root, f"intel-rapl:{p}:0", "core", 5, max_range)
        zone(root, f"intel-rapl:{p}:1", "dram", 7 * (p + 1), max_range)
    zone(root, f"intel-rapl:{packages}", "psys", 3)  # platform: includes the packages
    zone(root, "intel-rapl-mmio:0", "package-0", 11)  # MMIO duplicate of package-0
    return root


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def sleep(self, seconds):
        self.t += seconds


def test_counter_delta_and_wraparound():
    assert counter_delta(100, 150, 1000) == 50
    assert counter_delta(150, 150, 1000) == 0
    assert counter_delta(990, 10, 1000) == 20  # wrapped once: 10 + (1000 - 990)
    assert counter_delta(MAX_RANGE - 1_000, 500, MAX_RANGE) == 1_500


def test_discover_packages_and_dram_only(tmp_path):
    root = rapl_tree(tmp_path)
    assert [d.rail for d in discover(root)] == ["package-0", "dram-0", "package-1", "dram-1"]
    assert all(d.max_range_uj == MAX_RANGE for d in discover(root))


def test_discover_orders_numerically_and_accepts_amd_names(tmp_path):
    for i in (0, 2, 10):
        zone(tmp_path, f"intel-rapl:{i}", f"package-{i}")
    assert [d.rail for d in discover(tmp_path)] == ["package-0", "package-2", "package-10"]
    amd = tmp_path / "amd"
    zone(amd, "amd-rapl:0", "package-0")
    zone(amd, "amd-rapl:0:0", "core")
    assert [d.rail for d in discover(amd)] == ["package-0"]


def test_rapl_watts_and_exact_window_energy_with_wraparound(tmp_path):
    root = rapl_tree(tmp_path)
    set_uj(root, "intel-rapl:0", MAX_RANGE - 1_000_000)  # 1 J before package-0 wraps
    clock = Clock()
    p = RaplProfiler(interval_s=30, root=root, clock=clock, sleep=clock.sleep)
    p.start()
    assert p.rails == ["package-0", "dram-0", "package-1", "dram-1"]

    add_uj(root, "intel-rapl:0", 2_000_000)  # wraps: the file now reads 1000000
    assert get_uj(root, "intel-rapl:0") == 1_000_000
    add_uj(root, "intel-rapl:0:1", 500_000)
    add_uj(root, "intel-rapl:1", 1_000_000)
    add_uj(root, "intel-rapl:1:1", 250_000)
    add_uj(root, "intel-rapl:0:0", 9_000_000)  # core: inside package-0, not counted again
    add_uj(root, "intel-rapl:2", 9_000_000)  # psys: not counted
    clock.t += 0.5
    r = p.read()
    assert r.rails_w == {"package-0": 4.0, "dram-0": 1.0, "package-1": 2.0, "dram-1": 0.5}
    assert r.total_w == 7.5

    clock.t += 0.25
    add_uj(root, "intel-rapl:0", 500_000)
    assert p.read().rails_w["package-0"] == 2.0
    clock.t += 0.001  # too short a span: no reading, and the next one spans from the last kept
    add_uj(root, "intel-rapl:1", 100_000)
    assert p.read().total_w is None
    clock.t += 0.049
    assert p.read().total_w == pytest.approx(2.0)  # 0.1 J over 0.05 s

    trace = p.stop()
    assert trace.energy_j == 4.35  # 2 + 0.5 + 1 + 0.25 + 0.5 + 0.1 J, the wrap included


def test_rapl_counter_wrapping_between_every_read(tmp_path):
    """A small range wrapped at each read still sums exactly (at most one wrap per read)."""
    root = tmp_path
    zone(root, "intel-rapl:0", "package-0", uj=0, max_range=1_000_000_000)
    clock = Clock()
    p = RaplProfiler(interval_s=0.1, root=root, clock=clock, sleep=clock.sleep)
    p.start()
    total = 0
    for step in (900_000_000, 300_000_000, 999_999_999, 1):
        add_uj(root, "intel-rapl:0", step, max_range=1_000_000_000)
        total += step
        clock.t += 1.0
        assert p.read().total_w == step / 1e6
    assert p.stop().energy_j == total / 1e6 == 2200.0


def test_rapl_sampler_thread_with_the_real_clock(tmp_path):
    root = rapl_tree(tmp_path, packages=1)
    p = RaplProfiler(interval_s=0.01, root=root)
    p.start()
    time.sleep(0.03)
    add_uj(root, "intel-rapl:0", 1_000_000)
    add_uj(root, "intel-rapl:0:1", 234_567)
    time.sleep(0.03)
    trace = p.stop()
    assert trace.energy_j == 1.234567
    assert trace.samples >= 2 and set(trace.rails_w) == {"package-0", "dram-0"}
    # readings span the whole window after the first skipped one: their energy is the counter's
    assert sum(trace.total_w) > 0


def test_rapl_interval_must_be_shorter_than_a_wrap(tmp_path):
    zone(tmp_path, "intel-rapl:0", "package-0", max_range=1_000_000)  # 1 J: 1 ms at 1 kW
    with pytest.raises(ValueError, match="wrap"):
        RaplProfiler(interval_s=0.05, root=tmp_path).start()


def test_rapl_available(tmp_path):
    ok, why = RaplProfiler.available(root=rapl_tree(tmp_path / "sys"))
    assert ok and "package-0" in why and "dram-1" in why
    ok, why = RaplProfiler.available(root=tmp_path / "missing")
    assert not ok and why.startswith("no RAPL domains under") and "VM/container" in why
    (tmp_path / "empty").mkdir()
    assert not RaplProfiler.available(root=tmp_path / "empty")[0]
    only_psys = tmp_path / "laptop"
    zone(only_psys, "intel-rapl:0", "psys")
    assert not RaplProfiler.available(root=only_psys)[0]


def test_rapl_unreadable_counter_names_the_fix(tmp_path, monkeypatch):
    root = rapl_tree(tmp_path)
    original = Path.read_text

    def read_text(self, *args, **kwargs):
        if self.name == "energy_uj" and self.parent.name == "intel-rapl:1:1":
            raise PermissionError(13, "Permission denied", str(self))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Path, "read_text", read_text)
    ok, why = RaplProfiler.available(root=root)
    assert not ok
    assert "intel-rapl:1:1" in why and "root" in why and "CVE-2020-8694" in why
    assert f"sudo chmod a+r {root}/intel-rapl:*/energy_uj" in why
    with pytest.raises(EdgerobError, match="chmod a\\+r"):
        RaplProfiler(root=root).start()


def ticking_rapl(root: Path, zone_name: str, period_us: int = 1000):
    """A fake clock whose sleep also advances a RAPL counter by 61 uJ every `period_us`."""
    clock = FakeClock()
    base = get_uj(root, zone_name)

    def sleep(seconds):
        clock.sleep(seconds)
        value = base + 61 * (clock.us // period_us)
        if value != get_uj(root, zone_name):  # a write per update only: writes are slow here
            set_uj(root, zone_name, value)

    return clock, sleep


def test_rapl_resolution_is_the_counters_measured_period(tmp_path, monkeypatch):
    monkeypatch.setattr(rapl_module, "_COUNTER_PERIODS", {})
    root = rapl_tree(tmp_path, packages=1)
    clock, sleep = ticking_rapl(root, "intel-rapl:0")
    p = RaplProfiler(interval_s=30, root=root, clock=clock, sleep=sleep)
    assert p.resolution_s() == pytest.approx(0.001, abs=1e-9)  # before any window
    assert min_window_s(p.resolution_s()) == pytest.approx(0.1)
    assert p.identity == {"energy_counter_period_s": p.resolution_s()}
    assert "energy counter updates every 1 ms" in p.note
    spent_us = clock.us
    p.start()  # the window records it too, from the same measurement
    assert p.stop() is not None and clock.us == spent_us
    slow_root = rapl_tree(tmp_path / "slow", packages=1)
    clock, sleep = ticking_rapl(slow_root, "intel-rapl:0", period_us=5000)
    slow = RaplProfiler(interval_s=30, root=slow_root, clock=clock, sleep=sleep)
    slow.start()
    slow.stop()
    assert slow.identity["energy_counter_period_s"] == pytest.approx(0.005, abs=1e-9)  # by start()
    assert slow.resolution_s() == pytest.approx(0.005, abs=1e-9)


def test_rapl_counter_that_never_moves_has_no_resolution(tmp_path):
    clock = Clock()
    p = RaplProfiler(root=rapl_tree(tmp_path), clock=clock, sleep=clock.sleep)
    assert p.resolution_s() is None and "changed 0 time(s)" in p.note
