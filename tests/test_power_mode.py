"""The power mode (edgerob/device/power_mode.py), target identity by module part number, and
`doctor --sysroot`, against fake system roots laid out like / and recorded real outputs.

Sources of the recorded text used here:
- tests/data/jetson/nvpmodel-q-verbose-xavier-nx.txt: `sudo nvpmodel -q --verbose` on a Jetson
  Xavier NX (JetPack 4.x), from a public course setup guide (MIDS-scaling-up); copied from
  /work/shared/samples/jetson (SOURCES.md there).
- nvpmodel.conf mode lines (`< POWER_MODEL ID=n NAME=... >`, `< PM_CONFIG DEFAULT=n >`): the
  format of NVIDIA's /etc/nvpmodel.conf as in NVIDIA's MLPerf harness
  (mlcommons/inference_results_v3.0, closed/*/code/common/nvpmodel_orin.py); the AGX Orin ids
  (MAXN 0, MODE_15W 1, MODE_30W 2 default, MODE_50W 3) as the catalog's AGX Orin entries give
  them; the Orin Nano Super ids (15W 0, 25W 1, MAXN_SUPER 2, 7W 3) as a public field report
  quotes its /etc/nvpmodel.conf.
- /var/lib/nvpmodel/status: `pmode:0002`, what nvpmodel writes (public Jetson scripts read it
  with `sed 's/.*pmode:0*//'`).
- device-tree compatible strings: see tests/test_verify.py (ORIN_BOARDS); Xavier NX
  "nvidia,p3509-0000+p3668-0001" + "nvidia,tegra194" (Linux devicetree bindings
  arm/tegra.yaml).
The L4T release line follows /etc/nv_tegra_release's format; its GCID and date are made up.
"""

from __future__ import annotations

import json
import re
import os
import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerob.catalog.profiles import Profile
from edgerob.catalog.targets import load_target, machine_facts, target_for_machine
from edgerob.cli import app
from edgerob.device.power_mode import (conf_modes, parse_nvpmodel_query, read_power_mode)
from edgerob.device.sweep import run_profile
from edgerob.host.workload import prepare_workload
from edgerob.store import Store

from conftest import FAST
from test_profilers_host import FakeGpu, fake_pynvml

DATA = Path(__file__).parent / "data/jetson"
VERBOSE_XAVIER_NX = (DATA / "nvpmodel-q-verbose-xavier-nx.txt").read_text()

AGX_ORIN_CONF = """\
# FORMAT: < POWER_MODEL ID=id_num NAME=mode_name >
< POWER_MODEL ID=0 NAME=MAXN >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=1 NAME=MODE_15W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=2 NAME=MODE_30W >
CPU_ONLINE CORE_0 1
< POWER_MODEL ID=3 NAME=MODE_50W >
CPU_ONLINE CORE_0 1
< PM_CONFIG DEFAULT=2 >
"""
ORIN_NANO_SUPER_CONF = """\
< POWER_MODEL ID=0 NAME=15W >
< POWER_MODEL ID=1 NAME=25W >
< POWER_MODEL ID=2 NAME=MAXN_SUPER >
< POWER_MODEL ID=3 NAME=7W >
< PM_CONFIG DEFAULT=0 >
"""
XAVIER_NX_CONF = "< POWER_MODEL ID=2 NAME=MODE_15W_6CORE >\n< PM_CONFIG DEFAULT=2 >\n"
L4T_R35 = ("# R35 (release), REVISION: 4.1, GCID: 12345678, BOARD: t186ref, EABI: aarch64, "
           "DATE: Tue Aug  1 19:57:35 UTC 2023\n")


def write(path: Path, text: str | bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())


def sysroot(root: Path, *, model, mem_kb, compatible=None, soc="nvidia,tegra234", conf=None,
            status=None, release=L4T_R35, cpus=6, online=None, cpu_khz=(729600, 1984000, 1190400),
            gpu=("17000000.ga10b", 306000000, 1300500000, 306000000), emc_cap=None) -> Path:
    """A folder laid out like / on a Jetson: device tree, meminfo, cpufreq for each CPU
    (min, max, current kHz), the GPU's devfreq (name, min, max, current Hz), nvpmodel files."""
    write(root / "proc/device-tree/model", model.encode() + b"\x00")
    if compatible:
        write(root / "proc/device-tree/compatible",
              compatible.encode() + b"\x00" + soc.encode() + b"\x00")
    write(root / "proc/meminfo", f"MemTotal:       {mem_kb} kB\nMemFree:  1000 kB\n")
    write(root / "proc/cpuinfo", "processor\t: 0\nCPU implementer\t: 0x41\n")
    cpu = root / "sys/devices/system/cpu"
    write(cpu / "online", online or f"0-{cpus - 1}\n")
    for i in range(cpus):
        for name, value in zip(("min", "max", "cur"), cpu_khz):
            write(cpu / f"cpu{i}/cpufreq/scaling_{name}_freq", f"{value}\n")
    if gpu:
        for name, value in zip(("min", "max", "cur"), gpu[1:]):
            write(root / f"sys/class/devfreq/{gpu[0]}/{name}_freq", f"{value}\n")
    if emc_cap:
        write(root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap", f"{emc_cap}\n")
    if conf:
        write(root / "etc/nvpmodel.conf", conf)
    if status:
        write(root / "var/lib/nvpmodel/status", status)
    if release:
        write(root / "etc/nv_tegra_release", release)
    return root


# The four boards of the issue, plus the 64GB module: (sysroot keywords, target)
BOARDS = {
    "agx-orin-devkit": (dict(model="NVIDIA Jetson AGX Orin Developer Kit", mem_kb=30_536_000,
                             compatible="nvidia,p3737-0000+p3701-0000", cpus=12,
                             conf=AGX_ORIN_CONF, status="pmode:0002\n"),
                        "jetson-agx-orin-devkit-32gb"),
    "agx-orin-32gb": (dict(model="NVIDIA Jetson AGX Orin Developer Kit", mem_kb=30_536_000,
                           compatible="nvidia,p3737-0000+p3701-0004", cpus=8,
                           conf=AGX_ORIN_CONF, status="pmode:0002\n"),
                      "jetson-agx-orin-32gb"),
    "agx-orin-64gb": (dict(model="NVIDIA Jetson AGX Orin Developer Kit", mem_kb=64_335_836,
                           compatible="nvidia,p3737-0000+p3701-0005", cpus=12,
                           conf=AGX_ORIN_CONF, status="pmode:0000\n"),
                      "jetson-agx-orin-64gb"),
    "orin-nano-8gb": (dict(model="NVIDIA Jetson Orin Nano Engineering Reference Developer Kit "
                                 "Super", mem_kb=7_802_000,
                           compatible="nvidia,p3768-0000+p3767-0003-super",
                           conf=ORIN_NANO_SUPER_CONF, status="pmode:0003\n", online="0-3\n"),
                      "jetson-orin-nano-8gb"),
    "xavier-nx": (dict(model="NVIDIA Jetson Xavier NX Developer Kit", mem_kb=7_760_000,
                       compatible="nvidia,p3509-0000+p3668-0001", soc="nvidia,tegra194",
                       conf=XAVIER_NX_CONF, status="pmode:0002\n",
                       # the recorded verbose output's REAL_VALs: CPU 1190400-1420800 kHz,
                       # GPU 17000000.gv11b 114750000-1109250000 Hz, EMC cap 1600000000
                       cpu_khz=(1190400, 1420800, 1420800),
                       gpu=("17000000.gv11b", 114750000, 1109250000, 114750000),
                       emc_cap=1600000000),
                  "jetson-xavier-nx"),
}


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the shipped catalog only, no ./targets
    monkeypatch.delenv("EDGEROB_SYSROOT", raising=False)
    return tmp_path


def board(tmp_path, name, **changes) -> Path:
    return sysroot(tmp_path / name, **{**BOARDS[name][0], **changes})


# --- identity: the module part number decides ---------------------------------------------

@pytest.mark.parametrize("name", list(BOARDS))
def test_each_board_is_the_target_its_part_number_names(shipped_only, name):
    root = board(shipped_only, name)
    facts = machine_facts(root)
    target, reason, how = target_for_machine(facts)
    assert reason is None and target.name == BOARDS[name][1]
    assert facts["module"] in how and "part number" in how
    assert "NVML not read" in facts["nvml_note"]  # a folder: this host's GPUs are not its


def test_devkit_and_32gb_module_differ_only_in_part_number(shipped_only):
    # same model string and MemTotal: only the module part number tells 2048 from 1792 cores
    devkit = load_target(target_for_machine(machine_facts(board(shipped_only,
                                                                "agx-orin-devkit")))[0].name)
    module = load_target(target_for_machine(machine_facts(board(shipped_only,
                                                                "agx-orin-32gb")))[0].name)
    assert devkit.specs.peak_tops["int8"] == 85 and module.specs.peak_tops["int8"] == 53.3


def test_no_part_number_falls_back_to_model_and_memory_and_says_so(shipped_only):
    root = board(shipped_only, "agx-orin-64gb", compatible=None)
    facts = machine_facts(root)
    assert facts["module"] is None
    target, _, how = target_for_machine(facts)
    assert target.name == "jetson-agx-orin-64gb"
    assert "no module part number readable" in how
    # a 32 GB AGX Orin without a part number may be either 32 GB module: not guessed
    target, reason, _ = target_for_machine(machine_facts(board(shipped_only, "agx-orin-32gb",
                                                               compatible=None)))
    assert target is None
    assert "jetson-agx-orin-32gb" in reason and "jetson-agx-orin-devkit-32gb" in reason


def test_part_number_is_the_module_half_not_the_carrier(shipped_only):
    # p3737-0000 is the carrier: a reader taking it would find no target at all
    facts = machine_facts(board(shipped_only, "agx-orin-devkit"))
    assert facts["module"] == "p3701-0000"
    assert facts["compatible"] == ["nvidia,p3737-0000+p3701-0000", "nvidia,tegra234"]


# --- the nvpmodel mode ---------------------------------------------------------------------

def test_recorded_nvpmodel_outputs_parse():
    assert parse_nvpmodel_query(VERBOSE_XAVIER_NX) == ("MODE_15W_6CORE", 2)
    assert parse_nvpmodel_query("NV Power Mode: MODE_30W\n2\n") == ("MODE_30W", 2)
    assert parse_nvpmodel_query("NVPM ERROR: failed to open /var/lib/nvpmodel/status\n") is None
    assert conf_modes(ORIN_NANO_SUPER_CONF) == {0: "15W", 1: "25W", 2: "MAXN_SUPER", 3: "7W"}


@pytest.fixture
def fake_nvpmodel(tmp_path, monkeypatch):
    """A fake `nvpmodel` first on PATH: prints the recorded output and logs its arguments."""
    def install(output: str, rc: int = 0) -> Path:
        bindir = tmp_path / "bin"
        bindir.mkdir(exist_ok=True)
        (bindir / "out.txt").write_text(output)
        exe = bindir / "nvpmodel"
        exe.write_text(f'#!/bin/sh\necho "$@" >> "{bindir}/args"\ncat "{bindir}/out.txt"\n'
                       f"exit {rc}\n")
        exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        return bindir
    return install


def test_mode_from_nvpmodel_on_path(shipped_only, fake_nvpmodel):
    # the status file says mode 0: the command's answer (the recorded MODE_15W_6CORE) wins
    bindir = fake_nvpmodel(VERBOSE_XAVIER_NX)
    mode = read_power_mode(board(shipped_only, "xavier-nx", status="pmode:0000\n"))
    assert (bindir / "args").read_text().split() == ["-q"]
    assert mode["power_mode"] == "MODE_15W_6CORE"
    facts = mode["power_mode_facts"]
    assert facts["nvpmodel_id"] == 2 and facts["nvpmodel_source"].endswith("nvpmodel -q")
    assert facts["gpu_hz"] == {"min": 114750000, "max": 1109250000, "cur": 114750000}
    assert facts["emc_cap_hz"] == 1600000000
    assert facts["l4t_release"] == "R35.4.1"


def test_nvpmodel_needing_root_falls_back_to_status_and_conf(shipped_only, fake_nvpmodel):
    fake_nvpmodel("NVPM ERROR: Permission denied\n", rc=1)
    mode = read_power_mode(board(shipped_only, "agx-orin-devkit"))
    facts = mode["power_mode_facts"]
    assert mode["power_mode"] == "MODE_30W" and facts["nvpmodel_id"] == 2
    assert facts["nvpmodel_source"] == "var/lib/nvpmodel/status + etc/nvpmodel.conf"
    assert "exited 1" in facts["nvpmodel_query_note"]


@pytest.mark.parametrize("name,label,mode_id,online", [
    ("agx-orin-devkit", "MODE_30W", 2, 12),
    ("agx-orin-64gb", "MAXN", 0, 12),  # pmode:0000, though the conf's default is 2
    ("orin-nano-8gb", "7W", 3, 4),  # 7W runs 4 of 6 cores
])
def test_mode_from_status_file_and_conf(shipped_only, name, label, mode_id, online):
    mode = read_power_mode(board(shipped_only, name))
    facts = mode["power_mode_facts"]
    assert mode["power_mode"] == label and facts["nvpmodel_id"] == mode_id
    assert facts["cpu_online_count"] == online
    assert facts["jetson_clocks"] is False


def test_unreadable_mode_is_null_with_the_reason(shipped_only):
    mode = read_power_mode(board(shipped_only, "agx-orin-devkit", status=None))
    assert mode["power_mode"] is None and "pmode" in mode["power_mode_facts"]["reason"]
    # an id the conf does not name is not guessed either
    mode = read_power_mode(board(shipped_only, "xavier-nx", status="pmode:0007"))
    assert mode["power_mode"] is None and "7" in mode["power_mode_facts"]["reason"]


def test_jetson_clocks_is_every_cpu_and_the_gpu_pinned(shipped_only):
    pinned = dict(cpu_khz=(1984000, 1984000, 1984000),
                  gpu=("17000000.ga10b", 1300500000, 1300500000, 1300500000))
    mode = read_power_mode(board(shipped_only, "agx-orin-64gb", **pinned))
    assert mode["power_mode"] == "MAXN+jetson_clocks"
    assert mode["power_mode_facts"]["jetson_clocks"] is True
    # GPU pinned but the CPUs scaling: not jetson_clocks
    root = board(shipped_only, "agx-orin-devkit", gpu=pinned["gpu"])
    assert read_power_mode(root)["power_mode_facts"]["jetson_clocks"] is False
    # floor raised to the cap but the GPU not at it: jetson-stats does not count it either
    root = board(shipped_only, "agx-orin-64gb", cpu_khz=pinned["cpu_khz"],
                 gpu=("17000000.ga10b", 1300500000, 1300500000, 306000000))
    assert read_power_mode(root)["power_mode_facts"]["jetson_clocks"] is False
    # no GPU devfreq readable: unknown, not False
    root = board(shipped_only, "orin-nano-8gb", gpu=None)
    facts = read_power_mode(root)["power_mode_facts"]
    assert facts["jetson_clocks"] is None and facts["jetson_clocks_note"]


def test_not_a_jetson_and_no_gpu_has_no_mode(tmp_path):
    write(tmp_path / "proc/cpuinfo", "model name\t: AMD EPYC 7B13\n")
    mode = read_power_mode(tmp_path)
    assert mode["power_mode"] is None and mode["power_mode_facts"]["reason"]


# --- an NVIDIA GPU's power limit (fake pynvml) ---------------------------------------------

def gpu_nvml(limit_mw, default_mw, app=(1410, 1215), default_app=(1410, 1215)):
    gpu = FakeGpu(name="NVIDIA A100-SXM4-80GB", limit_mw=limit_mw)
    m = fake_pynvml([gpu])
    m.nvmlDeviceGetHandleByUUID = lambda uuid: {gpu.uuid: gpu}[uuid]
    m.nvmlDeviceGetPowerManagementLimit = lambda h: limit_mw
    m.nvmlDeviceGetPowerManagementDefaultLimit = lambda h: default_mw
    m.nvmlDeviceGetPersistenceMode = lambda h: 1
    m.nvmlDeviceGetApplicationsClock = lambda h, kind: app[kind - 1]
    m.nvmlDeviceGetDefaultApplicationsClock = lambda h, kind: default_app[kind - 1]
    return m, gpu


def test_gpu_power_limit_label(tmp_path):
    m, gpu = gpu_nvml(250_000, 400_000)
    mode = read_power_mode(tmp_path, gpu={"device_uuid": gpu.uuid}, nvml=m)
    assert mode["power_mode"] == "250W-limit"
    facts = mode["power_mode_facts"]
    assert facts["power_limit_default_mw"] == 400_000 and facts["persistence_mode"] == 1
    assert m.calls["shutdown"] == m.calls["init"] == 1
    m, gpu = gpu_nvml(400_000, 400_000)
    assert read_power_mode(tmp_path, gpu={"index": 0}, nvml=m)["power_mode"] == "default"
    m, gpu = gpu_nvml(400_000, 400_000, app=(1095, 1215))
    assert read_power_mode(tmp_path, gpu={"index": 0}, nvml=m)["power_mode"] == \
        "default+app-clocks-1095/1215MHz"


def test_gpu_limit_unreadable_is_null_with_the_reason(tmp_path):
    m, gpu = gpu_nvml(None, 400_000)  # the enforced limit NotSupported
    mode = read_power_mode(tmp_path, gpu={"index": 0}, nvml=m)
    assert mode["power_mode"] is None and "Not Supported" in mode["power_mode_facts"]["reason"]
    m, gpu = gpu_nvml(250_000, 400_000)
    mode = read_power_mode(tmp_path, gpu={"cuda_device": None}, nvml=m)
    assert mode["power_mode"] is None and "which GPU" in mode["power_mode_facts"]["reason"]
    m = fake_pynvml([], init_error="no driver")
    mode = read_power_mode(tmp_path, gpu={"index": 0}, nvml=m)
    assert mode["power_mode"] is None and "NVML did not start" in mode["power_mode_facts"]["reason"]


# --- recorded in every measurement, shown by results ----------------------------------------

def test_mode_lands_in_each_measurement_row(shipped_only, monkeypatch, tiny_model):
    # the generic cpu target verifies anywhere; the machine's facts come from a fake Orin Nano
    monkeypatch.setenv("EDGEROB_SYSROOT", str(board(shipped_only, "orin-nano-8gb")))
    url = f"sqlite:///{shipped_only}/s.db"
    prof = Profile(name="p", precisions=["fp32"], batch_sizes=[1], timing=FAST)
    run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), Store(url))
    row, = Store(url).measurements()
    assert row["power_mode"] == "7W"
    facts = json.loads(row["fingerprint"])["power_mode_facts"]
    assert facts["nvpmodel_id"] == 3 and facts["l4t_release"] == "R35.4.1"
    out = CliRunner().invoke(app, ["results", "--store", url])
    # the header may wrap at the terminal's width ("power" over "mode")
    assert out.exit_code == 0 and "power" in out.output
    assert re.search(r"(^|\s)7W\s", out.output, re.M)
    # a machine with no mode: the column is left out, the reason is in the fingerprint
    monkeypatch.delenv("EDGEROB_SYSROOT")
    url2 = f"sqlite:///{shipped_only}/t.db"
    run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), Store(url2))
    row, = Store(url2).measurements()
    assert row["power_mode"] is None
    assert json.loads(row["fingerprint"])["power_mode_facts"]["reason"]
    out = CliRunner().invoke(app, ["results", "--store", url2])
    assert out.exit_code == 0 and "power mo" not in out.output


# --- doctor --sysroot -------------------------------------------------------------------------

def test_doctor_reads_a_sysroot(shipped_only):
    root = board(shipped_only, "agx-orin-devkit")
    r = CliRunner().invoke(app, ["doctor", "--sysroot", str(root), "--json"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.output)
    assert d["target"] == "jetson-agx-orin-devkit-32gb" and d["reason"] is None
    assert d["power_mode"] == "MODE_30W" and d["power_mode_facts"]["nvpmodel_id"] == 2
    assert d["facts"]["module"] == "p3701-0000" and "p3701-0000" in d["identified_by"]


def test_doctor_sysroot_from_the_environment_and_no_target(shipped_only, monkeypatch):
    monkeypatch.setenv("EDGEROB_SYSROOT", str(board(shipped_only, "agx-orin-32gb",
                                                    compatible=None)))
    d = json.loads(CliRunner().invoke(app, ["doctor", "--json"]).output)
    assert d["target"] is None and "jetson-agx-orin-devkit-32gb" in d["reason"]
    assert d["power_mode"] == "MODE_30W"
    r = CliRunner().invoke(app, ["doctor", "--sysroot", str(shipped_only / "nowhere")])
    assert r.exit_code == 2 and "no such folder" in r.output
