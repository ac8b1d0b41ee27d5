"""Clocks, temperatures and throttling of this machine, read before and after each sweep cell.

Only what Linux exposes without root: cpufreq (`scaling_cur_freq`, kHz), thermal zones
(`temp`, millidegrees C) and, on Intel CPUs, the thermal-throttle event counters
(`thermal_throttle/core_throttle_count`, `package_throttle_count`). A counter that grew between
the start and the end of a cell means the cell was measured while throttled. Where no counter is
readable the flag is unknown (None), never guessed from a clock reading. GPU profilers add their
own state (NVML's clock-event reasons) through `Profiler.state()`.
"""

from __future__ import annotations

from pathlib import Path

from edgerob.device.power_mode import sysroot


def _read_number(path: Path) -> float | None:
    try:
        return float(path.read_text().strip())
    except (OSError, ValueError):
        return None


def cpu_state(root: str | Path | None = None) -> dict:
    """{"clocks_mhz": {cpuN: MHz}, "temps_c": {zone type: C}, "throttle_counts": {...}}, read
    under `root` (default: EDGEROB_SYSROOT, else /)."""
    root = sysroot() if root is None else Path(root)
    cpus = root / "sys/devices/system/cpu"
    clocks, counts = {}, {}
    for cpu in sorted(cpus.glob("cpu[0-9]*"), key=lambda p: int(p.name[3:])):
        khz = _read_number(cpu / "cpufreq/scaling_cur_freq")
        if khz is not None:
            clocks[cpu.name] = khz / 1000
        for kind in ("core", "package"):
            n = _read_number(cpu / f"thermal_throttle/{kind}_throttle_count")
            if n is not None:
                counts[f"{cpu.name}/{kind}"] = int(n)
    temps = {}
    for zone in sorted((root / "sys/class/thermal").glob("thermal_zone*")):
        milli = _read_number(zone / "temp")
        if milli is None or milli <= -40000:  # absent sensors report large negatives
            continue
        try:
            name = (zone / "type").read_text().strip() or zone.name
        except OSError:
            name = zone.name
        temps[f"{name}:{zone.name[12:]}"] = milli / 1000
    return {"clocks_mhz": clocks, "temps_c": temps, "throttle_counts": counts}


def throttled_between(start: dict, end: dict) -> tuple[bool | None, str | None]:
    """Whether the machine throttled between two states, with what showed it.

    True if a throttle counter grew, or a state says it was throttling at either end
    (`throttle_reasons`, from a GPU profiler); None when nothing readable could tell.
    """
    reasons = []
    a, b = start.get("throttle_counts") or {}, end.get("throttle_counts") or {}
    grew = sorted(k for k in a.keys() & b.keys() if b[k] > a[k])
    if grew:
        reasons.append(f"throttle counters grew: {', '.join(grew[:4])}"
                       + (f" (+{len(grew) - 4} more)" if len(grew) > 4 else ""))
    for label, state in (("start", start), ("end", end)):
        if state.get("throttle_reasons"):
            reasons.append(f"{label}: {', '.join(state['throttle_reasons'])}")
    if reasons:
        return True, "; ".join(reasons)
    known = bool(a.keys() & b.keys()) or "throttle_reasons" in start or "throttle_reasons" in end
    return (False, None) if known else (None, "no throttle counter readable here")
