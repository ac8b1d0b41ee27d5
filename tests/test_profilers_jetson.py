"""Jetson power profilers: the tegrastats parser and process, INA3221 sysfs, jtop.

No Jetson is needed: tegrastats lines are real (../shared/samples/tegrastats.txt) or written
here from the formats in the wild; a fake tegrastats script runs as the subprocess; INA3221 trees
are built under tmp_path; jtop is a fake module put in sys.modules.
"""

from __future__ import annotations

import gc
import os
import stat
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest

from edgerob.errors import EdgerobError
from edgerob.device.profilers import integrate_power, profiler_class
from edgerob.device.profilers import ina3221 as ina_mod
from edgerob.device.profilers import jtop as jtop_mod
from edgerob.device.profilers.ina3221 import (Ina3221Profiler, find_rails, is_not_connected,
                                       module_total_w)
from edgerob.device.profilers.jtop import JtopProfiler, power_reading
from edgerob.device.profilers.tegrastats import TegrastatsProfiler, parse_line

SAMPLES = Path(__file__).resolve().parents[2] / "shared/samples/tegrastats.txt"


def wait_until(predicate, timeout_s=5.0):
    """Poll until `predicate()` holds: sleeps alone flake on a loaded two-core machine."""
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.005)


def test_registry_names_these_classes():
    assert profiler_class("tegrastats") is TegrastatsProfiler
    assert profiler_class("jtop") is JtopProfiler
    assert profiler_class("ina3221") is Ina3221Profiler


# ---------------------------------------------------------------------------------------------
# tegrastats: the real lines

# Written out by hand from the sample file's lines, in file order.
REAL = [
    dict(board="Jetson Nano, JetPack 4.6.1",
         rails_w={"POM_5V_IN": 1.750, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.366},
         total_w=1.750, gpu_util=0.0, gpu_freq_mhz=76.0, ram_used_mb=1923, timestamp=None,
         temps_c={"PLL": 37.0, "CPU": 40.0, "PMIC": 50.0, "GPU": 40.0, "AO": 45.0,
                  "thermal": 40.0}),
    dict(board="Xavier NX, JetPack 5.1.2",
         rails_w={"VDD_IN": 2.763, "VDD_CPU_GPU_CV": 0.650, "VDD_SOC": 0.650},
         total_w=2.763, gpu_util=0.0, gpu_freq_mhz=114.0, ram_used_mb=3168,
         timestamp="07-09-2024 13:31:31",
         temps_c={"AUX": 45.0, "CPU": 46.5, "thermal": 45.6, "AO": 45.0, "GPU": 45.5,
                  "PMIC": 50.0}),
    dict(board="AGX Orin, JetPack 7.2 (no input rail: sum of rails)",
         rails_w={"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.500},
         total_w=5.139 + 3.268 + 5.500, gpu_util=12.0, gpu_freq_mhz=1300.0, ram_used_mb=20642,
         timestamp="07-25-2026 09:08:28",
         temps_c={"cpu": 52.968, "soc2": 48.406, "soc0": 49.531, "gpu": 47.625}),
]


def real_lines() -> list[str]:
    if not SAMPLES.exists():
        pytest.skip(f"shared sample file {SAMPLES} not present (it lives outside the repo)")
    return [ln for ln in SAMPLES.read_text().splitlines() if ln.strip() and not ln.startswith("#")]


def check(sample, want: dict) -> None:
    assert sample.rails_w == pytest.approx(want["rails_w"], abs=1e-9)
    assert list(sample.rails_w) == list(want["rails_w"])  # no extra rail, none missing
    if want["total_w"] is None:
        assert sample.total_w is None
    else:
        assert sample.total_w == pytest.approx(want["total_w"], abs=1e-9)
    assert sample.gpu_util == want["gpu_util"]
    assert sample.gpu_freq_mhz == want["gpu_freq_mhz"]
    assert sample.ram_used_mb == want["ram_used_mb"]
    assert sample.timestamp == want["timestamp"]
    if "temps_c" in want:
        assert sample.temps_c == pytest.approx(want["temps_c"])


def test_every_real_sample_line_parses_exactly():
    lines = real_lines()
    assert len(lines) == len(REAL), "the sample file changed: write out the new lines' values"
    for line, want in zip(lines, REAL):
        check(parse_line(line), want)


def test_real_totals_use_the_input_rail_never_the_average():
    nano, nx, orin = (parse_line(ln) for ln in real_lines())
    assert nano.input_rail == "POM_5V_IN" and nano.total_w == 1.750  # not 1.628 (avg)
    assert nx.input_rail == "VDD_IN" and nx.total_w == 2.763  # not 2.846 (avg), not a sum
    assert orin.input_rail is None  # AGX Orin has no input rail


# ---------------------------------------------------------------------------------------------
# tegrastats: synthetic lines for every format variant

CPU6 = "CPU [2%@345,off,off,1%@345,0%@345,2%@345]"
SYNTHETIC = {
    # JetPack 4, TX2: cur/avg without unit, VDD_IN is the total; avg differs from cur
    "tx2_jp4_unitless": (
        f"RAM 1686/7851MB (lfb 1053x4MB) SWAP 0/3925MB (cached 0MB) {CPU6} EMC_FREQ 0%@1866 "
        "GR3D_FREQ 0%@114 APE 150 PLL@39C MCPU@39C PMIC@100C Tboard@33C GPU@36.5C BCPU@39C "
        "thermal@38.4C Tdiode@37.5C VDD_SYS_GPU 152/140 VDD_SYS_SOC 687/700 VDD_4V0_WIFI 0/0 "
        "VDD_IN 3679/3012 VDD_SYS_CPU 229/300 VDD_SYS_DDR 1096/1000",
        dict(rails_w={"VDD_SYS_GPU": 0.152, "VDD_SYS_SOC": 0.687, "VDD_4V0_WIFI": 0.0,
                      "VDD_IN": 3.679, "VDD_SYS_CPU": 0.229, "VDD_SYS_DDR": 1.096},
             total_w=3.679, gpu_util=0.0, gpu_freq_mhz=114.0, ram_used_mb=1686, timestamp=None)),
    # JetPack 4, AGX Xavier: no input rail -> sum; GR3D without a clock; a rail and a
    # temperature both named GPU
    "agx_xavier_jp4_sum": (
        "RAM 2110/15692MB (lfb 3271x4MB) SWAP 0/7846MB (cached 0MB) CPU [1%@1190,0%@1190,"
        "0%@1190,0%@1190,off,off,off,off] EMC_FREQ 0% GR3D_FREQ 0% AO@37.5C GPU@37.5C "
        "Tdiode@39.5C PMIC@100C AUX@37C CPU@38.5C thermal@37.6C Tboard@37C GPU 0/12 CPU 154/200 "
        "SOC 1078/1100 CV 0/0 VDDRQ 154/160 SYS5V 1393/1400",
        dict(rails_w={"GPU": 0.0, "CPU": 0.154, "SOC": 1.078, "CV": 0.0, "VDDRQ": 0.154,
                      "SYS5V": 1.393},
             total_w=0.154 + 1.078 + 0.154 + 1.393, gpu_util=0.0, gpu_freq_mhz=None,
             ram_used_mb=2110, timestamp=None,
             temps_c={"AO": 37.5, "GPU": 37.5, "Tdiode": 39.5, "PMIC": 100.0, "AUX": 37.0,
                      "CPU": 38.5, "thermal": 37.6, "Tboard": 37.0})),
    # JetPack 5, AGX Xavier: timestamp, mW, GPU power-gated, absent sensors at -256C
    "agx_xavier_jp5_gr3d_off_absent_sensors": (
        "08-02-2023 10:11:12 RAM 3021/31002MB (lfb 6588x4MB) SWAP 0/15501MB (cached 0MB) "
        "CPU [0%@1190,0%@1190] EMC_FREQ 0%@2133 GR3D_FREQ off VIC_FREQ 115 APE 150 CV0@-256C "
        "CPU@38.5C Tboard@37C SOC2@35.812C Tdiode@37.5C SOC0@36.406C CV1@-256C GPU@-256C "
        "tj@38.5C SOC1@35.437C CV2@-256C GPU 0mW/0mW CPU 311mW/311mW SOC 1245mW/1400mW "
        "CV 0mW/0mW VDDRQ 311mW/311mW SYS5V 1582mW/1582mW",
        dict(rails_w={"GPU": 0.0, "CPU": 0.311, "SOC": 1.245, "CV": 0.0, "VDDRQ": 0.311,
                      "SYS5V": 1.582},
             total_w=0.311 + 1.245 + 0.311 + 1.582, gpu_util=0.0, gpu_freq_mhz=None,
             ram_used_mb=3021, timestamp="08-02-2023 10:11:12",
             temps_c={"CPU": 38.5, "Tboard": 37.0, "SOC2": 35.812, "Tdiode": 37.5,
                      "SOC0": 36.406, "tj": 38.5, "SOC1": 35.437})),
    # JetPack 7, Orin NX: three values (cur/avg/peak) with an input rail
    "orin_nx_jp7_three_values": (
        "01-02-2026 03:04:05 RAM 3000/15656MB (lfb 2x4MB) SWAP 0/7828MB (cached 0MB) "
        "CPU [45%@1984,40%@1984,38%@1984,50%@1984] EMC_FREQ 12%@3199 GR3D_FREQ 45%@[918] "
        "cpu@55.1C/55.1C gpu@53.2C/53.2C VDD_IN 12345mW/8000mW/15000mW "
        "VDD_CPU_GPU_CV 5000mW/3000mW/7000mW VDD_SOC 2500mW/2000mW/3000mW",
        dict(rails_w={"VDD_IN": 12.345, "VDD_CPU_GPU_CV": 5.0, "VDD_SOC": 2.5}, total_w=12.345,
             gpu_util=45.0, gpu_freq_mhz=918.0, ram_used_mb=3000,
             timestamp="01-02-2026 03:04:05", temps_c={"cpu": 55.1, "gpu": 53.2})),
    # JetPack 6, Orin Nano run without root: no rails at all
    "orin_nano_jp6_no_root": (
        "RAM 2277/7620MB (lfb 5x4MB) SWAP 0/3810MB (cached 0MB) CPU [1%@729,2%@729,0%@729,"
        "0%@729,0%@729,0%@729] GR3D_FREQ 0% cpu@47.656C soc2@46.5C soc0@46.031C gpu@46.937C "
        "tj@47.656C soc1@46.25C",
        dict(rails_w={}, total_w=None, gpu_util=0.0, gpu_freq_mhz=None, ram_used_mb=2277,
             timestamp=None)),
    # lower-case rail names: the input rail is still found, names kept as printed
    "lower_case_rails": (
        "RAM 1000/4000MB CPU [5%@1000] GR3D_FREQ 7%@[612,612] gpu@41C vdd_in 4200mW/4000mW "
        "vdd_cpu_gpu_cv 900mW/850mW vdd_soc 1100mW/1000mW",
        dict(rails_w={"vdd_in": 4.2, "vdd_cpu_gpu_cv": 0.9, "vdd_soc": 1.1}, total_w=4.2,
             gpu_util=7.0, gpu_freq_mhz=612.0, ram_used_mb=1000, timestamp=None)),
    # JetPack 5, AGX Orin with all four rails and an NC channel: NC dropped, the rest summed
    "agx_orin_jp5_nc_rail": (
        "RAM 5000/30536MB (lfb 6000x4MB) SWAP 0/15268MB (cached 0MB) CPU [1%@2201,0%@2201] "
        "EMC_FREQ 0%@2133 GR3D_FREQ 0%@[305,305] VIC_FREQ 115 APE 174 CV0@-256C cpu@43.1C "
        "VDD_GPU_SOC 2400mW/2400mW VDD_CPU_CV 800mW/800mW VIN_SYS_5V0 3500mW/3500mW "
        "NC 0mW/0mW VDDQ_VDD2_1V8AO 600mW/600mW",
        dict(rails_w={"VDD_GPU_SOC": 2.4, "VDD_CPU_CV": 0.8, "VIN_SYS_5V0": 3.5,
                      "VDDQ_VDD2_1V8AO": 0.6},
             total_w=2.4 + 0.8 + 3.5 + 0.6, gpu_util=0.0, gpu_freq_mhz=305.0, ram_used_mb=5000,
             timestamp=None, temps_c={"cpu": 43.1})),
    # L4T 24 (TX1): "GR3D" without _FREQ, lower-case cpu, "EDP limit" — no rails
    "tx1_old_gr3d": (
        "RAM 1130/3983MB (lfb 546x4MB) cpu [3%,0%,0%,0%]@102 EMC 4%@1600 AVP 0%@80 VDE 120 "
        "GR3D 0%@76 EDP limit 1734",
        dict(rails_w={}, total_w=None, gpu_util=0.0, gpu_freq_mhz=76.0, ram_used_mb=1130,
             timestamp=None)),
    # two GPCs at different clocks: utilisation is the percent, the clock the highest
    "two_gpcs_unequal_clocks": (
        "RAM 9000/30536MB CPU [90%@2201] GR3D_FREQ 99%@[612,1300] VDD_GPU_SOC 20000mW/15000mW "
        "VDD_CPU_CV 4000mW/4000mW VIN_SYS_5V0 6000mW/6000mW VDDQ_VDD2_1V8AO 2000mW/2000mW",
        dict(rails_w={"VDD_GPU_SOC": 20.0, "VDD_CPU_CV": 4.0, "VIN_SYS_5V0": 6.0,
                      "VDDQ_VDD2_1V8AO": 2.0},
             total_w=32.0, gpu_util=99.0, gpu_freq_mhz=1300.0, ram_used_mb=9000,
             timestamp=None)),
    # JetPack 5 without a timestamp, CRLF line end, doubled spaces, unknown tokens everywhere
    "unknown_tokens_crlf": (
        "RAM 3168/6851MB  (lfb 2x4MB) SWAP 161/3426MB (cached 0MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [23%@1397,17%@1192] EMC_FREQ 2%@204 GR3D_FREQ 31%@[1100] NVENC 1075 NVDEC off "
        "NVJPG 0 OFA off PVA0_FREQ off MTS fg 0% bg 3% VIC_FREQ 0%@115 APE 150 EDP limit 1734 "
        "FOO 12 AUX@45C VDD_IN  5120mW/2846mW VDD_CPU_GPU_CV 1650mW/670mW VDD_SOC 1050mW/711mW"
        "\r\n",
        dict(rails_w={"VDD_IN": 5.12, "VDD_CPU_GPU_CV": 1.65, "VDD_SOC": 1.05}, total_w=5.12,
             gpu_util=31.0, gpu_freq_mhz=1100.0, ram_used_mb=3168, timestamp=None,
             temps_c={"AUX": 45.0})),
    # JetPack 4 Nano with the GPU busy: POM_5V_IN total, digits in rail names
    "nano_jp4_busy": (
        "RAM 3500/3964MB (lfb 1x1MB) SWAP 900/1982MB (cached 20MB) IRAM 0/252kB(lfb 252kB) "
        "CPU [60%@1479,55%@1479,70%@1479,58%@1479] EMC_FREQ 60%@1600 GR3D_FREQ 99%@921 APE 25 "
        "PLL@49C CPU@52.5C PMIC@100C GPU@50.5C AO@58C thermal@51.25C POM_5V_IN 6420/4000 "
        "POM_5V_GPU 2900/1500 POM_5V_CPU 1800/1200",
        dict(rails_w={"POM_5V_IN": 6.42, "POM_5V_GPU": 2.9, "POM_5V_CPU": 1.8}, total_w=6.42,
             gpu_util=99.0, gpu_freq_mhz=921.0, ram_used_mb=3500, timestamp=None)),
    # JetPack 6 AGX Orin with timestamp, no VDDQ rail printed and temperatures with one value
    "agx_orin_jp6_three_rails": (
        "11-30-2024 23:59:59 RAM 12000/62841MB (lfb 1x4MB) SWAP 0/31420MB (cached 0MB) "
        "CPU [5%@1728] EMC_FREQ 1%@2133 GR3D_FREQ 0%@[0,0] cpu@45.5C soc0@44C tj@45.5C "
        "VDD_GPU_SOC 3590mW/3590mW VDD_CPU_CV 797mW/797mW VIN_SYS_5V0 2922mW/2900mW",
        dict(rails_w={"VDD_GPU_SOC": 3.59, "VDD_CPU_CV": 0.797, "VIN_SYS_5V0": 2.922},
             total_w=3.59 + 0.797 + 2.922, gpu_util=0.0, gpu_freq_mhz=0.0, ram_used_mb=12000,
             timestamp="11-30-2024 23:59:59", temps_c={"cpu": 45.5, "soc0": 44.0, "tj": 45.5})),
}


@pytest.mark.parametrize("name", sorted(SYNTHETIC))
def test_synthetic_line_formats(name):
    line, want = SYNTHETIC[name]
    check(parse_line(line), want)


@pytest.mark.parametrize("line", ["", "   \n", "Error: tegrastats is already running",
                                  "hello 1/2", "usage: tegrastats [-option]",
                                  "VDD_IN 5000mW/5000mW"])
def test_not_tegrastats_output_raises(line):
    with pytest.raises(ValueError):
        parse_line(line)


def test_rail_naming_rules():
    for name in ("NC", "nc", "NC_1", "VDD_NC", "NC-2"):
        assert is_not_connected(name), name
    for name in ("VDD_SYNC", "VINC", "NCPU", "VDDQ_VDD2_1V8AO", "POM_5V_IN"):
        assert not is_not_connected(name), name
    # an input rail wins; otherwise NC and aggregate channels are left out of the sum
    assert module_total_w({"POM_5V_CPU": 0.4, "POM_5V_IN": 2.0}) == 2.0
    assert module_total_w({"VDD_GPU": 9.0, "VDD_CPU_SOC_MSS": 6.0, "VIN": 40.0}) == 40.0
    assert module_total_w({"VIN_SYS_5V0": 5.5, "VDD_CPU_CV": 3.0}) == 8.5  # VIN_SYS_5V0 != VIN
    assert module_total_w({"A": 1.0, "NC": 5.0, "sum of shunt voltages": 9.0,
                           "B_TOTAL": 4.0, "B": 2.0}) == 3.0
    assert module_total_w({}) is None


# ---------------------------------------------------------------------------------------------
# tegrastats: the profiler around a fake tegrastats process

FAKE_TEGRASTATS = textwrap.dedent("""\
    import sys, time
    args = sys.argv[1:]
    ms = int(args[args.index("--interval") + 1])
    with open({argv_log!r}, "w") as f:
        f.write(" ".join(args))
    print("fake tegrastats starting", flush=True)  # not a tegrastats line: skipped
    while True:
        with open({control!r}) as f:
            line = f.read().strip()
        if line.startswith("EXIT"):
            print(line[4:], flush=True)
            sys.exit(3)
        print(line, flush=True)
        time.sleep(ms / 1000)
""")

LINE = ("RAM 3168/6851MB (lfb 2x4MB) CPU [23%@1397] GR3D_FREQ 0%@[114] GPU@45.5C "
        "VDD_IN {mw}mW/2846mW VDD_CPU_GPU_CV 1200mW/670mW VDD_SOC 900mW/711mW")


def fake_tegrastats(tmp_path, first_line):
    control = tmp_path / "control.txt"
    control.write_text(first_line)
    log = tmp_path / "argv.txt"
    script = tmp_path / "tegrastats_fake.py"
    script.write_text(FAKE_TEGRASTATS.format(argv_log=str(log), control=str(control)))
    return [sys.executable, str(script)], control, log


def set_line(control: Path, text: str) -> None:
    tmp = control.with_suffix(".new")
    tmp.write_text(text)
    os.replace(tmp, control)  # atomic: the fake never reads half a line


def test_tegrastats_window_with_a_fake_process(tmp_path):
    command, control, log = fake_tegrastats(tmp_path, LINE.format(mw=4800))
    p = TegrastatsProfiler(interval_s=0.02, command=command)
    try:
        p.start()
        time.sleep(0.3)
        trace = p.stop()
        assert log.read_text() == "--interval 20"  # argv, never a shell string
        n = trace.samples
        assert 5 <= n <= trace.duration_s / 0.02 + 2  # a reading held from the start, then ~15
        assert trace.timestamps_s[0] == 0.0
        assert trace.timestamps_s == sorted(trace.timestamps_s)
        assert trace.timestamps_s[-1] <= trace.duration_s
        assert trace.total_w == [4.8] * n  # mW -> W, the instantaneous value, not 2846 (avg)
        assert trace.rails_w == {"VDD_IN": [4.8] * n, "VDD_CPU_GPU_CV": [1.2] * n,
                                 "VDD_SOC": [0.9] * n}
        assert trace.energy_j == pytest.approx(4.8 * trace.duration_s, rel=1e-9)
        assert trace.sensor_period_s == 0.02
        proc = p._session.proc

        # a second window (bench.py: idle, then timed) reuses the running process
        set_line(control, LINE.format(mw=3000))
        wait_until(lambda: p.latest().total_w == 3.0)
        p.start()
        time.sleep(0.1)
        set_line(control, LINE.format(mw=9000))
        wait_until(lambda: p.latest().total_w == 9.0)
        time.sleep(0.05)
        step = p.stop()
        assert p._session.proc is proc
        assert step.total_w[0] == 3.0 and step.total_w[-1] == 9.0
        assert set(step.total_w) == {3.0, 9.0}
        assert step.energy_j == pytest.approx(
            integrate_power(step.timestamps_s, step.total_w, step.duration_s, start_s=0.0))
        assert 3.0 * step.duration_s < step.energy_j < 9.0 * step.duration_s
    finally:
        p.close()
    assert proc.wait(timeout=5) is not None  # close() stopped tegrastats


def test_tegrastats_process_stops_when_the_profiler_is_dropped(tmp_path):
    command, _, _ = fake_tegrastats(tmp_path, LINE.format(mw=1000))
    p = TegrastatsProfiler(interval_s=0.02, command=command)
    p.start()
    assert p.stop().total_w[0] == 1.0
    proc = p._session.proc
    del p
    gc.collect()
    assert proc.wait(timeout=5) is not None


def test_tegrastats_that_dies_says_why(tmp_path):
    command, _, _ = fake_tegrastats(tmp_path, "EXITtegrastats: need root to read rails")
    p = TegrastatsProfiler(interval_s=0.02, command=command)
    with pytest.raises(EdgerobError, match="exited with code 3.*need root to read rails"):
        p.start()


def test_tegrastats_without_rails_gives_an_empty_trace(tmp_path):
    line = SYNTHETIC["orin_nano_jp6_no_root"][0]
    command, _, _ = fake_tegrastats(tmp_path, line)
    with TegrastatsProfiler(interval_s=0.02, command=command) as p:
        p.start()
        time.sleep(0.08)
        trace = p.stop()
        assert p.latest().ram_used_mb == 2277  # lines arrive, none carries power
    assert trace.samples == 0 and trace.energy_j is None and trace.duration_s > 0


def test_tegrastats_options_are_checked():
    with pytest.raises(ValueError, match="shell string"):
        TegrastatsProfiler(command="tegrastats --interval 100")
    with pytest.raises(ValueError):
        TegrastatsProfiler(interval_s=0)
    with pytest.raises(ValueError):
        TegrastatsProfiler(gpu_index=0)
    with pytest.raises(RuntimeError):
        TegrastatsProfiler().stop()


def test_tegrastats_available_finds_the_tool(tmp_path, monkeypatch):
    from edgerob.device.profilers import tegrastats as mod

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    monkeypatch.setattr(mod, "FALLBACK_PATHS", (str(tmp_path / "usr_bin_tegrastats"),))
    ok, reason = TegrastatsProfiler.available()
    assert not ok and "not a Jetson, or tegrastats not on PATH" in reason

    fallback = tmp_path / "usr_bin_tegrastats"
    fallback.write_text("#!/bin/sh\n")
    fallback.chmod(0o644)
    ok, reason = TegrastatsProfiler.available()
    assert not ok and "not executable" in reason and str(fallback) in reason

    tool = bin_dir / "tegrastats"
    tool.write_text("#!/bin/sh\n")
    tool.chmod(0o755)
    ok, reason = TegrastatsProfiler.available()
    assert ok and str(tool) in reason
    assert TegrastatsProfiler(interval_s=0.25).argv() == [str(tool), "--interval", "250"]
    assert TegrastatsProfiler(interval_s=0.25).resolution_s() == 0.25  # readings integrated


# ---------------------------------------------------------------------------------------------
# INA3221 sysfs

def write(path: Path, text) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{text}\n")


def hwmon_device(root: Path, device: str, hwmon: str, channels: dict, name="ina3221") -> Path:
    """JetPack 5+: channels {N: (label, mV, mA or None)}; returns the hwmon directory."""
    dev = root / "sys/bus/i2c/devices" / device
    write(dev / "name", name)
    d = dev / "hwmon" / hwmon
    write(d / "name", name)
    for n, (label, mv, ma) in channels.items():
        write(d / f"in{n}_label", label)
        write(d / f"in{n}_input", mv)
        if ma is not None:
            write(d / f"curr{n}_input", ma)
    return d


def iio_device(root: Path, device: str, rails: dict, power=True) -> Path:
    """JetPack 4: rails {N: (name, mV, mA, mW)}; returns the iio directory."""
    dev = root / "sys/bus/i2c/devices" / device
    write(dev / "name", "ina3221x")
    d = dev / "iio:device0"
    for n, (label, mv, ma, mw) in rails.items():
        write(d / f"rail_name_{n}", label)
        write(d / f"in_voltage{n}_input", mv)
        write(d / f"in_current{n}_input", ma)
        if power:
            write(d / f"in_power{n}_input", mw)
    return d


ORIN_NX = {1: ("VDD_IN", 5000, 1468), 2: ("VDD_CPU_GPU_CV", 5000, 480),
           3: ("VDD_SOC", 5000, 300), 7: ("sum of shunt voltages", 120, None)}


def orin_nx(root: Path) -> Path:
    d = hwmon_device(root, "1-0040", "hwmon1", ORIN_NX)
    for n in (4, 5, 6):  # the unlabelled shunt-voltage channels (no current)
        write(d / f"in{n}_input", 40)
    return d


def test_ina3221_hwmon_orin_nx(tmp_path):
    orin_nx(tmp_path)
    rails, devices = find_rails(tmp_path)
    assert devices == ["1-0040"]
    got = ina_mod.read_rails_w(rails)
    assert got == pytest.approx({"VDD_IN": 7.34, "VDD_CPU_GPU_CV": 2.4, "VDD_SOC": 1.5})
    r = Ina3221Profiler(root=tmp_path).read()
    assert r.total_w == pytest.approx(7.34)  # the input rail, not 7.34 + 2.4 + 1.5
    assert Ina3221Profiler.available(root=tmp_path) == (
        True, "INA3221 hwmon rails: VDD_IN, VDD_CPU_GPU_CV, VDD_SOC")


def test_ina3221_hwmon_agx_orin_sums_rails_and_skips_nc(tmp_path):
    d = hwmon_device(tmp_path, "1-0040", "hwmon3",
                     {1: ("VDD_GPU_SOC", 19000, 270), 2: ("VDD_CPU_CV", 19000, 172),
                      3: ("VIN_SYS_5V0", 5000, 1100), 7: ("sum of shunt voltages", 500, None)})
    write(d / "curr7_input", 1542)  # even with a current node, the summation channel is no rail
    hwmon_device(tmp_path, "1-0041", "hwmon4",
                 {1: ("NC", 0, 0), 2: ("VDDQ_VDD2_1V8AO", 5000, 224), 3: ("NC", 0, 0)})
    # another hwmon chip on the bus, with labels and currents: not an INA3221, ignored
    hwmon_device(tmp_path, "2-004c", "hwmon0", {1: ("VDD_FAKE", 5000, 9999)}, name="tmp451")
    r = Ina3221Profiler(root=tmp_path).read()
    assert r.rails_w == pytest.approx({"VDD_GPU_SOC": 5.13, "VDD_CPU_CV": 3.268,
                                       "VIN_SYS_5V0": 5.5, "VDDQ_VDD2_1V8AO": 1.12})
    assert r.total_w == pytest.approx(5.13 + 3.268 + 5.5 + 1.12)


def test_ina3221_skips_a_disabled_channel(tmp_path):
    d = orin_nx(tmp_path)
    write(d / "in3_enable", 0)
    rails, _ = find_rails(tmp_path)
    assert [r.name for r in rails] == ["VDD_IN", "VDD_CPU_GPU_CV"]


def test_ina3221_iio_jetpack4_nano(tmp_path):
    iio_device(tmp_path, "6-0040", {0: ("POM_5V_IN", 5016, 349, 1750),
                                    1: ("POM_5V_GPU", 5016, 0, 0),
                                    2: ("POM_5V_CPU", 5016, 73, 366)})
    r = Ina3221Profiler(root=tmp_path).read()
    assert r.rails_w == pytest.approx({"POM_5V_IN": 1.75, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.366})
    assert r.total_w == pytest.approx(1.75)
    ok, reason = Ina3221Profiler.available(root=tmp_path)
    assert ok and "iio" in reason


def test_ina3221_iio_without_power_node_uses_volts_times_amps(tmp_path):
    iio_device(tmp_path, "0-0041", {0: ("VDD_IN", 19072, 192, None),
                                    1: ("VDD_SYS_GPU", 19072, 10, None)}, power=False)
    r = Ina3221Profiler(root=tmp_path).read()
    assert r.rails_w == pytest.approx({"VDD_IN": 19.072 * 0.192, "VDD_SYS_GPU": 19.072 * 0.010})
    assert r.total_w == pytest.approx(19.072 * 0.192)


def test_ina3221_available_says_why_not(tmp_path, monkeypatch):
    ok, reason = Ina3221Profiler.available(root=tmp_path)
    assert not ok and "no INA3221" in reason

    hwmon_device(tmp_path / "nc", "1-0041", "hwmon4", {1: ("NC", 0, 0), 3: ("NC", 0, 0)})
    ok, reason = Ina3221Profiler.available(root=tmp_path / "nc")
    assert not ok and "no connected rail" in reason and "1-0041" in reason

    # a node that cannot be read as a file
    d = orin_nx(tmp_path / "dir")
    (d / "curr2_input").unlink()
    (d / "curr2_input").mkdir()
    ok, reason = Ina3221Profiler.available(root=tmp_path / "dir")
    assert not ok and "cannot read" in reason and str(d / "curr2_input") in reason

    # permission denied, named (a seam: tests may run as root, where chmod does not block reads)
    d = orin_nx(tmp_path / "perm")
    real = ina_mod._read_text

    def guarded(path):
        if Path(path) == d / "in1_input":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(ina_mod, "_read_text", guarded)
    ok, reason = Ina3221Profiler.available(root=tmp_path / "perm")
    assert not ok and "permission denied" in reason and str(d / "in1_input") in reason
    r = Ina3221Profiler(root=tmp_path / "perm").read()
    assert r.total_w is None  # a failed read drops the sample rather than under-report


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0,
                    reason="root reads files whatever their mode")
def test_ina3221_permission_by_mode(tmp_path):
    d = orin_nx(tmp_path)
    (d / "curr1_input").chmod(0)
    try:
        ok, reason = Ina3221Profiler.available(root=tmp_path)
    finally:
        (d / "curr1_input").chmod(stat.S_IRUSR | stat.S_IWUSR)
    assert not ok and "permission denied" in reason and "curr1_input" in reason


def test_ina3221_window_traces_watts(tmp_path):
    d = orin_nx(tmp_path)
    p = Ina3221Profiler(interval_s=0.01, root=tmp_path)
    p.start()
    time.sleep(0.08)
    set_line(d / "curr1_input", "2000\n")  # VDD_IN 5 V x 2 A = 10 W
    wait_until(lambda: p._trace.total_w[-1] == 10.0)  # the sampler thread saw the step
    time.sleep(0.03)
    trace = p.stop()
    assert trace.samples >= 4
    assert set(trace.total_w) == {7.34, 10.0}
    assert trace.total_w[0] == 7.34 and trace.total_w[-1] == 10.0
    assert trace.rails_w["VDD_IN"] == trace.total_w
    assert trace.rails_w["VDD_SOC"] == [1.5] * trace.samples
    assert set(trace.rails_w) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}
    assert trace.energy_j == pytest.approx(
        integrate_power(trace.timestamps_s, trace.total_w, trace.duration_s, start_s=0.0))
    assert trace.sensor_period_s == 0.01 == p.resolution_s()


def test_ina3221_start_without_rails_is_a_clear_error(tmp_path):
    with pytest.raises(EdgerobError, match="no INA3221 rail"):
        Ina3221Profiler(root=tmp_path).start()


# ---------------------------------------------------------------------------------------------
# jtop (jetson-stats), faked

def rail(mw, avg, volt=5000):
    return {"online": True, "type": "INA3221", "status": "ok", "volt": volt,
            "curr": round(mw * 1000 / volt), "warn": 32760, "crit": 32760, "power": mw,
            "avg": avg}


# jtop >= 4.2 shapes: the input rail lives in "tot" with its name
NANO = {"rail": {"POM_5V_GPU": rail(0, 0), "POM_5V_CPU": rail(366, 406)},
        "tot": {**rail(1750, 1628), "name": "POM_5V_IN"}}
ORIN_NX_JTOP = {"rail": {"VDD_CPU_GPU_CV": rail(2397, 2100, 4984),
                         "VDD_SOC": rail(1495, 1450, 4984)},
                "tot": {**rail(7341, 6120, 4984), "name": "VDD_IN"}}
# AGX Orin: no input rail; jtop's total shown wrong on purpose (#344: it was VIN_SYS_5V0)
AGX_ORIN_JTOP = {"rail": {"VDD_GPU_SOC": rail(5139, 4000, 19000),
                          "VDD_CPU_CV": rail(3268, 3000, 19000),
                          "VIN_SYS_5V0": rail(5500, 5400), "VDDQ_VDD2_1V8AO": rail(1120, 1100),
                          "NC": rail(0, 0)},
                 "tot": {"power": 5500, "avg": 5400}}
# an older jtop that kept the input rail among the rails and summed all of them (#51)
NANO_DOUBLE_COUNTED = {"rail": {"POM_5V_IN": rail(1750, 1628), "POM_5V_GPU": rail(0, 0),
                                "POM_5V_CPU": rail(366, 406)},
                       "tot": {"power": 2116, "avg": 2034}}
# jtop 3.x: (total, rails) with cur/avg
NANO_JTOP3 = ({"cur": 2116, "avg": 2034},
              {"POM_5V_IN": {"cur": 1750, "avg": 1628}, "POM_5V_GPU": {"cur": 0, "avg": 0},
               "POM_5V_CPU": {"cur": 366, "avg": 406}})

NANO_RAILS = {"POM_5V_IN": 1.75, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.366}


@pytest.mark.parametrize("power, total, rails", [
    (NANO, 1.75, NANO_RAILS),
    (ORIN_NX_JTOP, 7.341, {"VDD_IN": 7.341, "VDD_CPU_GPU_CV": 2.397, "VDD_SOC": 1.495}),
    (AGX_ORIN_JTOP, 5.139 + 3.268 + 5.5 + 1.12,
     {"VDD_GPU_SOC": 5.139, "VDD_CPU_CV": 3.268, "VIN_SYS_5V0": 5.5, "VDDQ_VDD2_1V8AO": 1.12}),
    (NANO_DOUBLE_COUNTED, 1.75, NANO_RAILS),
    (NANO_JTOP3, 1.75, NANO_RAILS),
], ids=["nano", "orin_nx", "agx_orin", "nano_double_counted", "jtop3_tuple"])
def test_jtop_power_dicts(power, total, rails):
    r = power_reading(power)
    assert r.total_w == pytest.approx(total)
    assert r.rails_w == pytest.approx(rails)
    assert set(r.rails_w) == set(rails)


def test_jtop_power_without_rails():
    assert power_reading({}).total_w is None
    assert power_reading({"rail": {}, "tot": {}}).total_w is None


class FakeJtopException(Exception):
    pass


def fake_jtop(monkeypatch, power, start_error=None, service_interval=None):
    """Put a fake jetson-stats `jtop` module in sys.modules; returns its client class."""

    class jtop:
        clients = []

        def __init__(self, interval=1.0):
            self.requested = interval
            self.started = self.closed = False
            jtop.clients.append(self)

        def start(self):
            if start_error is not None:
                raise start_error
            self.started = True

        def close(self):
            self.closed = True

        def ok(self, spin=False):
            return self.started and not self.closed

        @property
        def interval(self):
            return service_interval if service_interval is not None else self.requested

        @property
        def power(self):
            return power() if callable(power) else power

    mod = types.ModuleType("jtop")
    mod.jtop, mod.JtopException, mod.__version__ = jtop, FakeJtopException, "4.3.1"
    monkeypatch.setitem(sys.modules, "jtop", mod)
    return jtop


def test_jtop_not_installed(monkeypatch):
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError
    assert JtopProfiler.available() == (
        False, "jetson-stats is not installed (pip install jetson-stats)")
    with pytest.raises(EdgerobError, match="not installed"):
        JtopProfiler().start()


@pytest.mark.parametrize("error, expect", [
    (FakeJtopException("The jtop.service is not active. Please run:\n"
                       "sudo systemctl restart jtop.service"),
     ["the jtop service is not running", "no {sock}", "sudo systemctl restart jtop.service"]),
    (FileNotFoundError(2, "No such file or directory"),
     ["the jtop service is not running", "no {sock}"]),
    (FakeJtopException("I can't access jtop.service.\nPlease logout or reboot this board."),
     ["permission denied on {sock}", "group 'jtop'", "usermod -aG jtop"]),
    (PermissionError(13, "Permission denied"), ["permission denied on {sock}", "group 'jtop'"]),
    (FakeJtopException("Mismatch version jtop service: [4.2.7] and client: [4.3.1]. "
                       "Please run:\n\nsudo systemctl restart jtop.service"),
     ["versions differ", "[4.2.7]", "[4.3.1]", "pip3 install -U jetson-stats"]),
    (FakeJtopException("Mismatch of Python versions between library and service"),
     ["do not match", "Python versions"]),
], ids=["service_down", "socket_missing", "group", "socket_permission", "version_mismatch",
        "python_mismatch"])
def test_jtop_available_reasons(monkeypatch, tmp_path, error, expect):
    sock = tmp_path / "jtop.sock"  # absent
    monkeypatch.setattr(JtopProfiler, "socket_path", str(sock))
    fake_jtop(monkeypatch, NANO, start_error=error)
    ok, reason = JtopProfiler.available()
    assert not ok
    for text in expect:
        assert text.format(sock=sock) in reason, reason
    with pytest.raises(EdgerobError):
        JtopProfiler().start()


def test_jtop_available_when_running(monkeypatch):
    client = fake_jtop(monkeypatch, ORIN_NX_JTOP)
    assert JtopProfiler.available() == (
        True, "jtop service, rails: VDD_CPU_GPU_CV, VDD_SOC, VDD_IN")
    assert client.clients[-1].closed  # the probe disconnects
    fake_jtop(monkeypatch, {"rail": {}, "tot": {}})
    ok, reason = JtopProfiler.available()
    assert not ok and "no power rails" in reason


def test_jtop_window_traces_instantaneous_watts(monkeypatch):
    state = {"power": ORIN_NX_JTOP}
    client_cls = fake_jtop(monkeypatch, lambda: state["power"])
    p = JtopProfiler(interval_s=0.01)
    p.start()
    time.sleep(0.05)
    state["power"] = AGX_ORIN_JTOP
    wait_until(lambda: p._trace.total_w[-1] > 15)
    time.sleep(0.03)
    trace = p.stop()
    assert trace.samples >= 4 and trace.sensor_period_s == 0.01
    assert trace.total_w[0] == pytest.approx(7.341)  # VDD_IN, not avg 6.12, not a sum
    assert trace.total_w[-1] == pytest.approx(15.027)  # sum of rails, not jtop's 5.5
    assert set(round(w, 6) for w in trace.total_w) == {7.341, 15.027}
    assert trace.rails_w["VDD_SOC"][0] == pytest.approx(1.495)
    assert trace.energy_j == pytest.approx(
        integrate_power(trace.timestamps_s, trace.total_w, trace.duration_s, start_s=0.0))
    client = client_cls.clients[-1]
    p.start()  # the same connection serves the next window
    p.stop()
    assert client_cls.clients[-1] is client and not client.closed
    p.close()
    assert client.closed


def test_jtop_follows_a_slower_service(monkeypatch):
    fake_jtop(monkeypatch, NANO, service_interval=0.05)
    asked = JtopProfiler(interval_s=0.01)
    assert asked.resolution_s() == 0.05  # the service's interval, before any window
    asked.close()
    p = JtopProfiler(interval_s=0.01)
    p.start()
    time.sleep(0.12)
    trace = p.stop()
    p.close()
    assert p.interval_s == 0.05 and trace.sensor_period_s == 0.05
    assert 1 <= trace.samples <= 5  # ~3 at the service's 50 ms; ~13 had it polled at 10 ms
    assert trace.total_w == [1.75] * trace.samples
    assert trace.rails_w["POM_5V_IN"] == [1.75] * trace.samples


def test_jtop_lost_service_stops_samples_not_the_run(monkeypatch):
    def broken():
        raise FakeJtopException("Lost connection with jtop server")

    fake_jtop(monkeypatch, broken)
    p = JtopProfiler(interval_s=0.01)
    p.start()
    time.sleep(0.03)
    trace = p.stop()
    p.close()
    assert trace.samples == 0 and trace.energy_j is None
    assert "Lost connection" in p.last_error


def test_jtop_module_imports_without_jetson_stats():
    assert "jtop" not in jtop_mod.__dict__  # imported lazily, never at module import
