"""The power mode: the device's operating point, read here (set, verified and restored for a
sweep in `edgerob.device.power_mode.switch`).

On a Jetson: the nvpmodel mode (name and id) from `nvpmodel -q` where the command is on PATH
and answers, else from /var/lib/nvpmodel/status (`pmode:0002`, what nvpmodel itself writes) and
the mode names in /etc/nvpmodel.conf (`< POWER_MODEL ID=2 NAME=MODE_30W >`), which need no root;
whether jetson_clocks is active; GPU, EMC and CPU frequency floors, caps and current values
(devfreq and cpufreq sysfs); the online CPU cores; the L4T release. On an NVIDIA GPU (NVML):
the power limit (current, default, enforced), the application clocks and persistence mode.

Everything is read under the system root (`EDGEROB_SYSROOT`, default /), so a folder laid out
like / stands in for a board. What cannot be read is None, with the reason in the facts:
a label is never guessed.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path


def sysroot() -> Path:
    """Where machine facts are read: EDGEROB_SYSROOT (a folder laid out like /), else /."""
    return Path(os.environ.get("EDGEROB_SYSROOT") or "/")


def _text(path: Path) -> str | None:
    try:
        return path.read_text().strip("\x00\n ")
    except OSError:
        return None


def _int(path: Path) -> int | None:
    text = _text(path)
    try:
        return int(text) if text is not None else None
    except ValueError:
        return None


def is_jetson(root: Path) -> bool:
    """An L4T release file or a Tegra device-tree `compatible`: what every Jetson has."""
    compatible = _text(root / "proc/device-tree/compatible") or ""
    return (root / "etc/nv_tegra_release").exists() or "nvidia,tegra" in compatible


def read_power_mode(root: str | Path | None = None, gpu: dict | None = None, nvml=None) -> dict:
    """{"power_mode": label or None, "power_mode_facts": {...}} for this machine.

    `gpu` names the NVIDIA GPU a run uses ({"device_uuid"|"pci_bus_id"|"cuda_device"|"index":
    ...}, as a runtime's info() gives them); None where the run does not use one. `nvml` is a
    pynvml-like module (default: pynvml)."""
    root = sysroot() if root is None else Path(root)
    if is_jetson(root):
        return jetson_power_mode(root)
    if gpu is not None:
        return gpu_power_mode(gpu, nvml)
    return {"power_mode": None, "power_mode_facts": {
        "kind": None, "reason": "not a Jetson and no NVIDIA GPU in use: no power mode to read"}}


# --- Jetson ---------------------------------------------------------------------------------

# `nvpmodel -q` prints "NV Power Mode: MODE_30W" and the id on the next line; with --verbose
# the name line is prefixed "NVPM VERB: Current mode: " (/work/shared/samples/jetson)
_NVPMODEL_Q = re.compile(r"NV Power Mode:\s*(\S+)\s*\n\s*(\d+)\s*$", re.M)
_CONF_MODE = re.compile(r"^\s*<\s*POWER_MODEL\s+ID=(\d+)\s+NAME=(\S+?)\s*>", re.M)
_GPU_DEVFREQ = re.compile(r"gpu|g[mpva]\d+b", re.I)  # 57000000.gpu, 17000000.gv11b/.ga10b


def parse_nvpmodel_query(text: str) -> tuple[str, int] | None:
    m = _NVPMODEL_Q.search(text)
    return (m.group(1), int(m.group(2))) if m else None


def conf_modes(text: str) -> dict[int, str]:
    """Mode id -> name from an nvpmodel.conf."""
    return {int(i): name for i, name in _CONF_MODE.findall(text)}


def _nvpmodel(root: Path, facts: dict) -> tuple[str | None, int | None]:
    """The mode's name and id, saying in `facts` where they came from or why they are None."""
    exe = shutil.which("nvpmodel")
    if exe:
        try:
            done = subprocess.run([exe, "-q"], capture_output=True, text=True, timeout=20)
            found = parse_nvpmodel_query(done.stdout) if done.returncode == 0 else None
            if found:
                facts["nvpmodel_source"] = f"{exe} -q"
                return found
            facts["nvpmodel_query_note"] = (f"{exe} -q exited {done.returncode} without a mode: "
                                            f"{(done.stderr or done.stdout).strip()[:200]}")
        except (OSError, subprocess.TimeoutExpired) as e:
            facts["nvpmodel_query_note"] = f"{exe} -q failed: {e}"
    status = _text(root / "var/lib/nvpmodel/status")
    m = re.search(r"pmode:(\d+)", status or "")
    if not m:
        facts["nvpmodel_source"] = None
        facts["reason"] = ("nvpmodel mode unreadable: no nvpmodel -q answer and no pmode in "
                           "var/lib/nvpmodel/status")
        return None, None
    mode_id = int(m.group(1))
    name = conf_modes(_text(root / "etc/nvpmodel.conf") or "").get(mode_id)
    facts["nvpmodel_source"] = "var/lib/nvpmodel/status + etc/nvpmodel.conf"
    if name is None:
        facts["reason"] = (f"nvpmodel mode id {mode_id} has no POWER_MODEL entry in "
                           f"etc/nvpmodel.conf")
    return name, mode_id


def _freqs(folder: Path, prefix: str = "") -> dict | None:
    """min/max/cur of a devfreq (`min_freq`, Hz) or cpufreq (`scaling_min_freq`, kHz) folder."""
    out = {k: _int(folder / f"{prefix}{k}_freq") for k in ("min", "max", "cur")}
    return out if any(v is not None for v in out.values()) else None


def _pinned(f: dict | None) -> bool | None:
    if f is None or None in f.values():
        return None
    return f["min"] == f["max"] == f["cur"]


def jetson_power_mode(root: Path) -> dict:
    facts: dict = {"kind": "jetson"}
    name, mode_id = _nvpmodel(root, facts)
    facts.update(nvpmodel_mode=name, nvpmodel_id=mode_id)

    cpu_dir = root / "sys/devices/system/cpu"
    facts["cpu_online"] = _text(cpu_dir / "online")  # e.g. "0-5"; offline cores have no cpufreq
    cpus = {}
    for cpu in sorted(cpu_dir.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        f = _freqs(cpu / "cpufreq", "scaling_")
        if f is not None:
            cpus[cpu.name] = f
    facts["cpu_khz"] = cpus or None
    facts["cpu_online_count"] = _count_cpus(facts["cpu_online"])

    gpu = emc = None
    for dev in sorted((root / "sys/class/devfreq").glob("*")):
        if gpu is None and _GPU_DEVFREQ.search(dev.name):
            gpu = _freqs(dev)
        elif emc is None and "emc" in dev.name.lower():
            emc = _freqs(dev)
    facts["gpu_hz"] = gpu
    facts["emc_hz"] = emc
    # the EMC cap nvpmodel writes (readable without root); the EMC clock itself is often only
    # in the BPMP debugfs, which needs root
    facts["emc_cap_hz"] = _int(root / "sys/kernel/nvpmodel_emc_cap/emc_iso_cap")
    if emc is None:
        facts["emc_note"] = "no EMC devfreq node readable (its clock is in root-only debugfs)"

    # jetson_clocks pins every CPU and the GPU at their caps: jetson-stats counts it active
    # when each CPU and the GPU read min == max == current (rbonghi/jetson_stats,
    # jtop/core/jetson_clocks.py, jetson_clocks_alive, on `jetson_clocks --show`, which prints
    # these cpufreq/devfreq values; it leaves EMC out, as here)
    pins = [_pinned(f) for f in [*cpus.values(), gpu]]
    if not cpus or gpu is None or None in pins:
        facts["jetson_clocks"] = None
        facts["jetson_clocks_note"] = "CPU or GPU min/max/current frequencies not all readable"
    else:
        facts["jetson_clocks"] = all(pins)
    facts["l4t_release"] = l4t_release(root)
    label = None if name is None else name + ("+jetson_clocks" if facts["jetson_clocks"] else "")
    return {"power_mode": label, "power_mode_facts": facts}


def _count_cpus(online: str | None) -> int | None:
    """'0-3,5' -> 5."""
    if not online:
        return None
    n = 0
    try:
        for part in online.split(","):
            lo, _, hi = part.partition("-")
            n += int(hi or lo) - int(lo) + 1
    except ValueError:
        return None
    return n


def l4t_release(root: Path) -> str | None:
    """'R35.4.1' from etc/nv_tegra_release ("# R35 (release), REVISION: 4.1, GCID: ...")."""
    m = re.search(r"R(\d+) \(release\), REVISION: ([\d.]+)",
                  _text(root / "etc/nv_tegra_release") or "")
    return f"R{m.group(1)}.{m.group(2)}" if m else None


# --- NVIDIA GPU (NVML) ----------------------------------------------------------------------

def gpu_handle(nvml, gpu: dict):
    """NVML's handle of the GPU `gpu` names (a runtime's info()), None where it names none."""
    index = next((gpu[k] for k in ("cuda_device", "index") if gpu.get(k) is not None), None)
    if gpu.get("device_uuid"):
        return nvml.nvmlDeviceGetHandleByUUID(gpu["device_uuid"])
    if gpu.get("pci_bus_id"):
        return nvml.nvmlDeviceGetHandleByPciBusId(gpu["pci_bus_id"])
    if index is not None:  # CUDA ordinals in PCI bus order (the sweep sets it), as NVML's
        return nvml.nvmlDeviceGetHandleByIndex(int(index))
    return None


def gpu_limit_label(limit_mw: int, default_mw: int) -> str:
    return "default" if limit_mw == default_mw else f"{limit_mw / 1000:g}W-limit"


def gpu_power_mode(gpu: dict, nvml=None) -> dict:
    facts: dict = {"kind": "nvml"}
    if nvml is None:
        try:
            import pynvml as nvml  # optional: only machines with NVIDIA GPUs have it
        except ImportError:
            return {"power_mode": None, "power_mode_facts": {
                **facts, "reason": "pynvml is not installed"}}
    try:
        nvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError subclasses: no driver, no GPU
        return {"power_mode": None, "power_mode_facts": {**facts,
                                                          "reason": f"NVML did not start ({e})"}}
    try:
        h = gpu_handle(nvml, gpu)
        if h is None:  # reading GPU 0 instead could describe another card than the one measured
            return {"power_mode": None, "power_mode_facts": {
                **facts, "reason": "the runtime did not say which GPU it runs on"}}
        unread = {}

        def read(key, fn, *args):
            try:
                facts[key] = fn(h, *args)
            except Exception as e:  # noqa: BLE001 - NotSupported on this GPU/driver
                facts[key] = None
                unread[key] = str(e)

        read("power_limit_mw", nvml.nvmlDeviceGetPowerManagementLimit)
        read("power_limit_default_mw", nvml.nvmlDeviceGetPowerManagementDefaultLimit)
        read("power_limit_enforced_mw", nvml.nvmlDeviceGetEnforcedPowerLimit)
        read("persistence_mode", nvml.nvmlDeviceGetPersistenceMode)
        for clock, kind in (("sm", nvml.NVML_CLOCK_SM), ("mem", nvml.NVML_CLOCK_MEM)):
            read(f"app_clock_{clock}_mhz", nvml.nvmlDeviceGetApplicationsClock, kind)
            read(f"app_clock_{clock}_default_mhz", nvml.nvmlDeviceGetDefaultApplicationsClock,
                 kind)
    except Exception as e:  # noqa: BLE001 - the GPU named is not there
        return {"power_mode": None, "power_mode_facts": {**facts, "reason": f"NVML: {e}"}}
    finally:
        nvml.nvmlShutdown()
    # NVML has no query for clocks locked with nvidia-smi -lgc; their effect shows in the
    # clock-event reasons the nvml profiler records in clocks_start/clocks_end
    facts["locked_clocks_note"] = "NVML cannot read locked clocks (nvidia-smi -lgc)"
    if unread:
        facts["unreadable"] = unread
    limit, default = facts["power_limit_enforced_mw"], facts["power_limit_default_mw"]
    if limit is None or default is None:
        facts["reason"] = "power limit or its default unreadable: " + "; ".join(
            f"{k}: {v}" for k, v in unread.items())
        return {"power_mode": None, "power_mode_facts": facts}
    label = gpu_limit_label(limit, default)
    apps = [(facts[f"app_clock_{c}_mhz"], facts[f"app_clock_{c}_default_mhz"])
            for c in ("sm", "mem")]
    if any(a is not None and d is not None and a != d for a, d in apps):
        label += f"+app-clocks-{apps[0][0]}/{apps[1][0]}MHz"
    return {"power_mode": label, "power_mode_facts": facts}
