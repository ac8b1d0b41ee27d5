"""Target verification before measuring, --force-target, and target families.

Machine facts come from fake /proc folders under tmp_path and a fake pynvml module, so these
tests behave the same on a laptop, a GPU server or a Jetson."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from edgerob.host.workload import prepare_workload
from edgerob.catalog import targets
from edgerob.device import machine
from edgerob.cli import app
from edgerob.analysis.compare import fleet_table
from edgerob.errors import EdgerobError
from edgerob.analysis.report import _fleet_section
from edgerob.store import Store
from edgerob.catalog.profiles import Profile
from edgerob.device.sweep import run_profile
from edgerob.catalog.targets import (families, load_target, machine_facts, resolve_target,
                             verify_target)

from conftest import FAST

X86_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B13\n"
ORIN_CPUINFO = "processor\t: 0\nBogoMIPS\t: 62.50\nCPU implementer\t: 0x41\n"

# (device-tree model, MemTotal kB as /proc/meminfo prints it, device-tree compatible's board
# entry or None where unreadable) -> the module it is. Compatible strings as the kernel and
# NVIDIA publish them: Linux arch/arm64/boot/dts/nvidia/tegra234-p3737-0000+p3701-0000.dts;
# NVIDIA's jetson-io JETSON_COMPATIBLE ("nvidia,p3737-0000+p3701-0000", "...+p3701-0004",
# "...+p3701-0005"); NVIDIA dtbs tegra234-p3768-0000+p3767-000N-nv[-super].dtb, e.g. a
# reComputer Orin Nano 8GB on JetPack 6.2: "nvidia,p3768-0000+p3767-0003-super".
ORIN_BOARDS = [
    ("NVIDIA Jetson AGX Orin Developer Kit", 64_335_836, "nvidia,p3737-0000+p3701-0005",
     "jetson-agx-orin-64gb"),
    ("Jetson AGX Orin", 64_335_836, None, "jetson-agx-orin-64gb"),
    ("Jetson AGX Orin", 32_089_300, "nvidia,p3737-0000+p3701-0004", "jetson-agx-orin-32gb"),
    ("NVIDIA Jetson AGX Orin Developer Kit", 30_536_000, "nvidia,p3737-0000+p3701-0000",
     "jetson-agx-orin-devkit-32gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 15_980_000,
     "nvidia,p3768-0000+p3767-0000", "jetson-orin-nx-16gb"),
    ("NVIDIA Jetson Orin NX Engineering Reference Developer Kit", 7_620_000, None,
     "jetson-orin-nx-8gb"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 7_802_000, "nvidia,p3768-0000+p3767-0005",
     "jetson-orin-nano-8gb"),
    ("Jetson Orin Nano Super Developer Kit", 7_802_000, "nvidia,p3768-0000+p3767-0003-super",
     "jetson-orin-nano-8gb"),
    ("NVIDIA Jetson Orin Nano Developer Kit", 3_700_000, None, "jetson-orin-nano-4gb"),
]


def fake_proc(root, model=None, mem_kb=None, cpuinfo=X86_CPUINFO, compatible=None):
    """A fake root folder with proc/device-tree/model and compatible (NUL-terminated, as the
    kernel writes them; compatible's board entry first, then the SoC), proc/meminfo and
    proc/cpuinfo."""
    proc = root / "proc"
    proc.mkdir(parents=True)
    if model is not None:
        (proc / "device-tree").mkdir()
        (proc / "device-tree/model").write_bytes(model.encode() + b"\x00")
    if compatible is not None:
        (proc / "device-tree/compatible").write_bytes(
            compatible.encode() + b"\x00nvidia,tegra234\x00")
    if mem_kb is not None:
        (proc / "meminfo").write_text(f"MemTotal:       {mem_kb} kB\nMemFree:  1000 kB\n")
    (proc / "cpuinfo").write_text(cpuinfo)
    return root


class FakeNVML:
    """The part of pynvml that machine_facts uses; names as bytes (older pynvml) on request."""

    class NVMLError(Exception):
        pass

    def __init__(self, gpus=(), fail=False, as_bytes=False):
        self.gpus, self.fail, self.as_bytes = list(gpus), fail, as_bytes
        self.open = False

    def nvmlInit(self):
        if self.fail:
            raise self.NVMLError("Driver Not Loaded")
        self.open = True

    def nvmlShutdown(self):
        self.open = False

    def nvmlDeviceGetCount(self):
        assert self.open
        return len(self.gpus)

    def nvmlDeviceGetHandleByIndex(self, i):
        return i

    def nvmlDeviceGetName(self, h):
        name = self.gpus[h][0]
        return name.encode() if self.as_bytes else name

    def nvmlDeviceGetMemoryInfo(self, h):
        return type("Memory", (), {"total": self.gpus[h][1], "free": 0, "used": 0})()


NO_GPU = FakeNVML(fail=True)


@pytest.fixture
def shipped_only(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return tmp_path


def x86_facts(tmp_path):
    return machine_facts(fake_proc(tmp_path / "x86", mem_kb=24_000_000), nvml=NO_GPU)


# --- facts ---------------------------------------------------------------------------------------

def test_machine_facts_read_fake_proc_and_nvml(tmp_path):
    root = fake_proc(tmp_path, "NVIDIA Jetson AGX Orin Developer Kit", 64_335_836)
    nvml = FakeNVML([("NVIDIA A100-SXM4-80GB", 80 * 2**30)], as_bytes=True)
    f = machine_facts(root, nvml=nvml)
    assert f["device_model"] == "NVIDIA Jetson AGX Orin Developer Kit"  # NUL stripped
    assert f["memory_gib"] == pytest.approx(64_335_836 / 2**20)
    assert f["cpu_model"] == "AMD EPYC 7B13"
    assert f["gpus"] == [{"name": "NVIDIA A100-SXM4-80GB", "memory_gib": 80.0}]
    assert not nvml.open  # shut down again


def test_no_driver_means_no_gpu_with_a_reason(tmp_path):
    f = x86_facts(tmp_path)
    assert f["gpus"] == [] and f["device_model"] is None
    assert "Driver Not Loaded" in f["nvml_note"]
    assert "not a Jetson" in targets.describe_facts(f)


# --- verification --------------------------------------------------------------------------------

def test_jetson_target_refused_on_x86(shipped_only):
    with pytest.raises(EdgerobError) as e:
        verify_target(load_target("jetson-agx-orin-64gb"), x86_facts(shipped_only))
    msg = str(e.value)
    assert "\n" not in msg
    assert "'AGX Orin'" in msg and "[48, 96) GiB" in msg  # what the target needs
    assert "not a Jetson" in msg and "AMD EPYC 7B13" in msg  # what this machine is
    assert "--force-target" in msg


def test_matching_machine_verifies(shipped_only):
    root = fake_proc(shipped_only / "orin", "Jetson AGX Orin", 64_335_836, ORIN_CPUINFO)
    check = verify_target(load_target("jetson-agx-orin-64gb"), machine_facts(root, nvml=NO_GPU))
    assert check["forced_target"] is False
    # the 32GB module's figures do not belong to a 64GB board
    with pytest.raises(EdgerobError, match="jetson-agx-orin-32gb"):
        verify_target(load_target("jetson-agx-orin-32gb"), machine_facts(root, nvml=NO_GPU))


def test_gpu_variant_told_apart_by_nvml(shipped_only):
    sxm = machine_facts(fake_proc(shipped_only / "a"), nvml=FakeNVML(
        [("NVIDIA A100-SXM4-80GB", 80 * 2**30)]))
    assert verify_target(load_target("a100-sxm"), sxm)["forced_target"] is False
    with pytest.raises(EdgerobError, match="'PCIe'"):
        verify_target(load_target("a100-pcie"), sxm)


def test_generic_cpu_target_runs_anywhere(shipped_only):
    assert verify_target(load_target("cpu"), x86_facts(shipped_only)) == {
        "forced_target": False, "target_facts": None}


def test_forced_mismatch_is_marked(shipped_only):
    check = verify_target(load_target("jetson-orin-nano-8gb"), x86_facts(shipped_only),
                          force=True)
    assert check["forced_target"] is True
    assert "not a Jetson" in check["target_facts"]["mismatch"]
    assert check["target_facts"]["facts"]["cpu_model"] == "AMD EPYC 7B13"


# --- families ------------------------------------------------------------------------------------

def test_families_declared_in_the_catalog(shipped_only):
    fam = families()
    assert set(fam["jetson-orin"]) == {b[3] for b in ORIN_BOARDS}
    assert set(fam["jetson-orin-nano"]) == {"jetson-orin-nano-4gb", "jetson-orin-nano-8gb"}
    assert set(fam["jetson-orin-nx"]) == {"jetson-orin-nx-8gb", "jetson-orin-nx-16gb"}
    assert set(fam["jetson-agx-orin"]) == {"jetson-agx-orin-32gb", "jetson-agx-orin-64gb",
                                           "jetson-agx-orin-devkit-32gb"}
    assert set(fam["jetson-xavier"]) == {"jetson-agx-xavier", "jetson-xavier-nx"}
    assert set(fam["a100"]) == {"a100-sxm", "a100-pcie"}
    assert set(fam["h100"]) == {"h100-sxm", "h100-pcie"}


@pytest.mark.parametrize("model,mem_kb,compatible,module", ORIN_BOARDS)
def test_orin_family_resolves_each_module(shipped_only, model, mem_kb, compatible, module):
    root = fake_proc(shipped_only / "dev", model, mem_kb, ORIN_CPUINFO, compatible)
    facts = machine_facts(root, nvml=NO_GPU)
    assert resolve_target("jetson-orin", facts).name == module
    sub = {"agx": "jetson-agx-orin", "nx": "jetson-orin-nx", "nano": "jetson-orin-nano"}
    family = next(f for k, f in sub.items() if f"-{k}-" in module)
    how = verify_target(load_target(module), facts)["target_facts"]["identified_by"]
    assert (compatible.split("+")[1][:10] in how) if compatible else "no module part" in how
    assert resolve_target(family, facts).name == module


def test_family_elsewhere_says_not_a_jetson_and_lists_members(shipped_only):
    with pytest.raises(EdgerobError) as e:
        resolve_target("jetson-orin", x86_facts(shipped_only))
    msg = str(e.value)
    assert "not a Jetson" in msg
    for *_, module in ORIN_BOARDS:
        assert module in msg


def test_gpu_family_resolves_by_nvml_name_and_memory(shipped_only):
    def facts(name, gib):
        return machine_facts(fake_proc(shipped_only / name.replace(" ", "_")),
                             nvml=FakeNVML([(name, gib * 2**30)]))

    assert resolve_target("a100", facts("NVIDIA A100 80GB PCIe", 80)).name == "a100-pcie"
    assert resolve_target("a100", facts("NVIDIA A100-SXM4-80GB", 80)).name == "a100-sxm"
    assert resolve_target("h100", facts("NVIDIA H100 80GB HBM3", 79.6)).name == "h100-sxm"
    assert resolve_target("h100", facts("NVIDIA H100 PCIe", 79.6)).name == "h100-pcie"
    with pytest.raises(EdgerobError, match="no member of family 'a100'.*a100-pcie"):
        resolve_target("a100", facts("NVIDIA A100-SXM4-40GB", 40))  # no entry for it
    with pytest.raises(EdgerobError, match="no NVIDIA GPU"):
        resolve_target("h100", x86_facts(shipped_only))


def test_family_name_is_not_a_stored_target(shipped_only):
    with pytest.raises(EdgerobError, match="family.*jetson-orin-nano-4gb"):
        load_target("jetson-orin-nano")


# --- the sweep and the CLI -----------------------------------------------------------------------

ZETA = """\
name: zeta-board
description: a board with its own detect rule, measured with onnxruntime on the CPU
runtime: onnxruntime
runtime_options: {providers: [CPUExecutionProvider]}
profiler: none
detect: {device_model: Zeta Board}
"""


@pytest.fixture
def zeta(shipped_only, monkeypatch):
    """A local target whose detect rule this (faked x86) machine does not meet."""
    (shipped_only / "targets").mkdir()
    (shipped_only / "targets/zeta-board.yaml").write_text(ZETA)
    facts = x86_facts(shipped_only)
    for module in (targets, machine):  # families resolve in the catalog, the sweep verifies
        monkeypatch.setattr(module, "machine_facts", lambda *a, **k: facts)
    return load_target("zeta-board")


def test_sweep_on_the_wrong_machine_writes_nothing(zeta, tiny_model, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    prof = Profile(name="p", precisions=["fp32"], batch_sizes=[1], timing=FAST)
    with pytest.raises(EdgerobError, match="'Zeta Board'"):
        run_profile(zeta, prof, prepare_workload(prof, tiny_model), store)
    assert store.runs() == [] and store.measurements() == []


def test_forced_sweep_is_marked_in_runs_results_and_compare(zeta, tiny_model, tmp_path):
    url = f"sqlite:///{tmp_path}/s.db"
    store = Store(url)
    prof = Profile(name="p", precisions=["fp32"], batch_sizes=[1], timing=FAST)
    res = run_profile(zeta, prof, prepare_workload(prof, tiny_model), store, force_target=True)
    run = store.runs()[0]
    assert run["run_id"] == res.run_id and run["forced_target"] is True
    assert "'Zeta Board'" in json.loads(run["target_facts"])["mismatch"]
    assert [r["forced"] for r in fleet_table(store)] == [True]
    assert "zeta-board (forced" in _fleet_section(fleet_table(store))  # the HTML report
    out = CliRunner().invoke(app, ["results", "--store", url])
    assert out.exit_code == 0 and "zeta-board*" in out.output and "forced" in out.output
    out = CliRunner().invoke(app, ["compare", "--store", url])
    assert out.exit_code == 0 and "zeta-board*" in out.output and "forced" in out.output
    # an honest run of the generic cpu target in the same store is not marked
    run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), store)
    marks = {r["target"]: r["forced"] for r in fleet_table(store)}
    assert marks == {"zeta-board": True, "cpu": False}


def test_cli_refuses_another_machines_target_and_stores_nothing(shipped_only, monkeypatch):
    facts = x86_facts(shipped_only)
    for module in (targets, machine):  # families resolve in the catalog, the sweep verifies
        monkeypatch.setattr(module, "machine_facts", lambda *a, **k: facts)
    for name, words in (("jetson-agx-orin-64gb", ["needs", "'AGX Orin'", "not a Jetson"]),
                        ("jetson-orin", ["not a Jetson", "jetson-orin-nx-16gb",
                                         "jetson-agx-orin-32gb", "jetson-orin-nano-4gb"]),
                        ("a100", ["no NVIDIA GPU", "a100-sxm", "a100-pcie"])):
        r = CliRunner().invoke(app, ["profile", "--target", name])
        assert r.exit_code == 2, r.output
        assert "Traceback" not in r.output
        for w in words:
            assert w in " ".join(r.output.split()), (name, w, r.output)
    assert not (shipped_only / "edgerob.db").exists()


def test_targets_list_shows_families(shipped_only):
    r = CliRunner().invoke(app, ["targets", "list"])
    assert r.exit_code == 0, r.output
    text = " ".join(r.output.split())
    assert "jetson-orin" in text and "a100" in text and "families" in text
