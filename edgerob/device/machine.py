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

from edgerob.errors import EdgerobError


def machine_facts(root: str | Path = "/", nvml=None) -> dict:
    """What identifies this machine: the device-tree model and MemTotal (Jetsons), the CPU
    model, and each NVIDIA GPU's name and total memory from NVML. `root` holds proc/ (tests
    point it at a fake folder); `nvml` is a pynvml-like module (default: pynvml if installed)."""
    proc = Path(root) / "proc"
    facts = {"device_model": None, "memory_gib": None, "cpu_model": None, "gpus": [],
             "gpu_names": [], "nvml_note": None}
    try:
        facts["device_model"] = (proc / "device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        pass
    facts["memory_gib"] = _meminfo_gib(proc / "meminfo")
    facts["cpu_model"] = _cpu_model(proc / "cpuinfo")
    if facts["cpu_model"] is None and Path(root) == Path("/"):
        facts["cpu_model"] = platform.processor() or None  # no "model name" on some ARM kernels
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
    """Whether this machine (`facts`) satisfies every rule of `detect`. An unknown memory size
    fails a memory rule: a target is never assumed."""
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
    if detected(target.detect, facts):
        return {"forced_target": False, "target_facts": {"facts": facts}}
    why = (f"target {target.name!r} needs {target.detect.describe()}; this machine: "
           f"{describe_facts(facts)}")
    if not force:
        raise EdgerobError(f"{why}. Nothing measured; --force-target measures it anyway, "
                           f"marked as forced")
    return {"forced_target": True, "target_facts": {"facts": facts, "mismatch": why}}
