"""This machine's facts, and the check that it is the device a target names.

Lives on the device side so a sweep verifies its own machine wherever it runs (locally, or from a
bundle on a Jetson): the facts are read from /proc and NVML here, never taken on trust from the
host. `target` and `detect` are the catalog's Target and Detect (edgerob.catalog.targets), used by
their attributes only.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from edgerob.device.power_mode import sysroot
from edgerob.errors import EdgerobError

# the module's part number is the half after '+' of the board's device-tree compatible, e.g.
# "nvidia,p3737-0000+p3701-0005" (carrier p3737, module p3701-0005); Orin Nano/NX boards on
# JetPack 6.2 add "-super" ("nvidia,p3768-0000+p3767-0003-super")
_MODULE = re.compile(r"\+(p\d{4}-\d{4})")


def machine_facts(root: str | Path | None = None, nvml=None) -> dict:
    """What identifies this machine: the module part number in the device-tree `compatible`,
    the device-tree model and MemTotal (Jetsons), the CPU model, and each NVIDIA GPU's name and
    total memory from NVML. `root` is the system root (default: EDGEROB_SYSROOT, else /); `nvml`
    is a pynvml-like module (default: pynvml if installed, not read for a folder standing in
    for a machine: NVML can only see this one)."""
    root = sysroot() if root is None else Path(root)
    proc = root / "proc"
    facts = {"device_model": None, "compatible": None, "module": None, "memory_gib": None,
             "cpu_model": None, "gpus": [], "gpu_names": [], "nvml_note": None}
    try:
        facts["device_model"] = (proc / "device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        pass
    try:  # NUL-separated entries, most specific first
        facts["compatible"] = [c for c in (proc / "device-tree/compatible").read_text()
                               .split("\x00") if c.strip()]
        found = _MODULE.search(facts["compatible"][0]) if facts["compatible"] else None
        facts["module"] = found.group(1) if found else None
    except OSError:
        pass
    facts["memory_gib"] = _meminfo_gib(proc / "meminfo")
    facts["cpu_model"] = _cpu_model(proc / "cpuinfo")
    if facts["cpu_model"] is None and root == Path("/"):
        facts["cpu_model"] = platform.processor() or None  # no "model name" on some ARM kernels
    if nvml is None and root != Path("/"):
        facts["nvml_note"] = f"NVML not read: the machine's facts come from the folder {root}"
    else:
        facts["gpus"], facts["nvml_note"] = _nvml_gpus(nvml)
    facts["gpu_names"] = [g["name"] for g in facts["gpus"]]
    return facts


def _meminfo_gib(path: Path) -> float | None:
    try:
        for line in path.read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 2**20  # kB (KiB) -> GiB
    except (OSError, ValueError, IndexError):
        pass
    return None


def _cpu_model(path: Path) -> str | None:
    try:
        for line in path.read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    except OSError:
        pass
    return None


def _nvml_gpus(nvml) -> tuple[list[dict], str | None]:
    if nvml is None:
        try:
            import pynvml as nvml  # optional: only machines with NVIDIA GPUs have it
        except ImportError:
            return [], "pynvml is not installed"
    try:
        nvml.nvmlInit()
    except Exception as e:  # noqa: BLE001 - NVMLError subclasses: no driver, no GPU
        return [], f"NVML did not start ({e})"
    gpus = []
    try:
        for i in range(nvml.nvmlDeviceGetCount()):
            h = nvml.nvmlDeviceGetHandleByIndex(i)
            name = nvml.nvmlDeviceGetName(h)
            gpus.append({"name": name.decode() if isinstance(name, bytes) else name,
                         "memory_gib": nvml.nvmlDeviceGetMemoryInfo(h).total / 2**30})
    finally:
        nvml.nvmlShutdown()
    return gpus, None


def describe_facts(facts: dict) -> str:
    """This machine in words, for error messages."""
    model, mem = facts.get("device_model"), facts.get("memory_gib")
    parts = [f"device-tree model {model!r}" if model
             else "not a Jetson (no /proc/device-tree/model)"]
    if facts.get("module"):
        parts.append(f"module {facts['module']}")
    elif model:
        parts.append("no module part number in /proc/device-tree/compatible")
    if mem is not None:
        parts.append(f"MemTotal {mem:.1f} GiB")
    gpus = _gpus(facts)
    parts.append("NVIDIA GPUs: " + ", ".join(
        g["name"] + (f" ({g['memory_gib']:.1f} GiB)" if g.get("memory_gib") else "")
        for g in gpus) if gpus else
        "no NVIDIA GPU" + (f" ({facts['nvml_note']})" if facts.get("nvml_note") else ""))
    if facts.get("cpu_model"):
        parts.append(f"CPU {facts['cpu_model']!r}")
    return "; ".join(parts)


def _gpus(facts: dict) -> list[dict]:
    """GPUs from `facts` (older callers give only gpu_names: memory unknown)."""
    return facts.get("gpus") or [{"name": n, "memory_gib": None}
                                 for n in facts.get("gpu_names") or []]


def _has_words(needle: str, text: str) -> bool:
    """`needle` in `text` as whole words, so "NVIDIA L4" does not match "NVIDIA L40S"."""
    return re.search(rf"(?<!\w){re.escape(needle.lower())}(?!\w)", text.lower()) is not None


def detected(detect, facts: dict) -> bool:
    """Whether this machine (`facts`) satisfies every rule of `detect`. A module part number,
    where both the rule and the machine have one, decides alone (the model string and memory
    cannot tell a developer-kit module from a production one); the other rules are the
    fallback. An unknown memory size fails a memory rule: a target is never assumed."""
    if detect.modules and facts.get("module"):
        return facts["module"] in detect.modules
    def memory_ok(gib):
        lo, hi = detect.memory_gib_min, detect.memory_gib_max
        if lo is None and hi is None:
            return True
        return gib is not None and (lo is None or gib >= lo) and (hi is None or gib < hi)

    if detect.gpu_name:
        if not any(_has_words(detect.gpu_name, g["name"])
                   and (detect.gpu_name_has or "").lower() in g["name"].lower()
                   and memory_ok(g.get("memory_gib")) for g in _gpus(facts)):
            return False
    elif not memory_ok(facts.get("memory_gib")):
        return False
    if detect.device_model and not _has_words(detect.device_model,
                                               facts.get("device_model") or ""):
        return False
    return not detect.cpu_model or _has_words(detect.cpu_model, facts.get("cpu_model") or "")


def verify_target(target, facts: dict | None = None, force: bool = False) -> dict:
    """Check that this machine is the one `target` describes, before anything is measured.

    Generic targets (no `detect`, e.g. cpu) fit any machine. Returns what the run records:
    {"forced_target": bool, "target_facts": dict | None}; raises EdgerobError on a mismatch
    unless `force`, in which case the run is marked forced with the facts and the reason."""
    if target.detect is None:
        return {"forced_target": False, "target_facts": None}
    facts = machine_facts() if facts is None else facts
    how = identified_by(target.detect, facts)
    if detected(target.detect, facts):
        return {"forced_target": False, "target_facts": {"facts": facts, "identified_by": how}}
    why = (f"target {target.name!r} needs {target.detect.describe()}; this machine: "
           f"{describe_facts(facts)}")
    if not force:
        raise EdgerobError(f"{why}. Nothing measured; --force-target measures it anyway, "
                           f"marked as forced")
    return {"forced_target": True, "target_facts": {"facts": facts, "mismatch": why,
                                                    "identified_by": how}}


def identified_by(detect, facts: dict) -> str:
    """Which facts decide whether this machine is the target: its module part number, or,
    where none is readable, the fallback rules, said as such."""
    if detect.modules and facts.get("module"):
        return f"module part number {facts['module']} (/proc/device-tree/compatible)"
    if detect.modules:
        return ("device-tree model and MemTotal: no module part number readable in "
                "/proc/device-tree/compatible, so a developer-kit module and a production "
                "module of the same memory size cannot be told apart")
    return "the target's detect rules: " + detect.describe()
