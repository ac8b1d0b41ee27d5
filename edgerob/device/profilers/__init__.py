"""Profilers: power/energy sensor adapters behind one protocol, a registry keyed by name.

A profiler is a measurement window (as Zeus's begin_window/end_window): `start()` begins
sampling, `stop()` ends it and returns a `PowerTrace`. A profiler with no sensor here says so in
`available()`; the sweep then records NULL power and energy with that reason.

`resolution_s()` is the time granularity of a window's energy and `min_window_s` the shortest
window whose energy that granularity leaves within a given error; the sweep lengthens windows to it.
"""

from __future__ import annotations

import statistics
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from edgerob.device.plugins import load_plugin

REGISTRY = {
    "none": "edgerob.device.profilers:NoProfiler",
    "tegrastats": "edgerob.device.profilers.tegrastats:TegrastatsProfiler",
    "jtop": "edgerob.device.profilers.jtop:JtopProfiler",
    "ina3221": "edgerob.device.profilers.ina3221:Ina3221Profiler",
    "nvml": "edgerob.device.profilers.nvml:NvmlProfiler",
    "rapl": "edgerob.device.profilers.rapl:RaplProfiler",
}


@dataclass
class PowerTrace:
    """Samples from one window. Watts are instantaneous readings, never a running average."""

    timestamps_s: list[float] = field(default_factory=list)  # seconds since start()
    total_w: list[float] = field(default_factory=list)
    rails_w: dict[str, list[float]] = field(default_factory=dict)
    energy_j: float | None = None  # from a hardware counter, or the integral of total_w
    duration_s: float = 0.0
    sensor_period_s: float | None = None

    @property
    def samples(self) -> int:
        return len(self.total_w)

    @property
    def mean_w(self) -> float | None:
        if self.energy_j is not None and self.duration_s > 0:
            return self.energy_j / self.duration_s
        return sum(self.total_w) / len(self.total_w) if self.total_w else None


def integrate_power(timestamps_s, watts, end_s: float, start_s: float | None = None) -> float:
    """Joules from instantaneous readings by sample-and-hold: each reading holds until the next
    (the last until `end_s`; the first from `start_s` when given, the window's start). Exact for
    constant power and for steps that fall on a reading."""
    ts = list(timestamps_s)
    if not ts:
        raise ValueError("no power samples to integrate")
    if start_s is not None:
        ts[0] = min(start_s, ts[0])
    bounds = ts[1:] + [max(end_s, ts[-1])]
    return float(sum(w * (b - t) for t, w, b in zip(ts, watts, bounds)))


def min_window_s(resolution_s: float | None, max_error: float = 0.01) -> float:
    """The shortest window, in seconds, whose energy the sensor's time granularity leaves within
    `max_error` (relative): `resolution_s / max_error`; 0.0 where the granularity is unknown.

    Why one period (not two): a counter that updates every P seconds, read at time t, holds the
    energy up to its last update u, with t - u in [0, P) (a fixed reporting delay shifts both ends
    alike and cancels). A window [t0, t1] read at both ends gets the energy of (u0, u1]: it lacks
    t1 - u1 at its end and has t0 - u0 too many at its start. Both are in [0, P) and they have
    opposite signs, so the error is under one period's energy. With the power about the same just
    before the window as in it (the sweep warms up at the window's load), the relative error of a
    W-second window is under P / W, and W >= P / max_error keeps it under max_error. The bound is
    tight: a window just over k periods can be off by nearly one. Readings integrated by
    sample-and-hold every P seconds start at the window's start and the last holds to its end, so
    each change of power is placed to within one interval: the same bound for a step at an end.
    """
    if not 0 < max_error < 1:
        raise ValueError(f"max_error must be in (0, 1), not {max_error}")
    if resolution_s is None:
        return 0.0
    if resolution_s < 0:
        raise ValueError(f"resolution_s must not be negative, not {resolution_s}")
    return resolution_s / max_error


def counter_period_s(read, clock=time.perf_counter, sleep=time.sleep, *, poll_s: float = 0.001,
                     timeout_s: float = 2.0, changes: int = 6) -> tuple[float | None, str]:
    """The update period of a counter, measured: `read()` every `poll_s` until its value has
    changed `changes` times or `timeout_s` has passed, then the median gap between changes.

    Returns (seconds, how it was found), or (None, why not) when fewer than two changes were seen.
    Gaps are taken between observed changes only: the time from the first read to the first change
    depends on where in its cycle the counter was. Each change is seen up to one poll late, so a
    gap is right to about `poll_s`. The median holds where the minimum and the mean do not: a poll
    the scheduler delays makes one long gap and one short (the minimum takes the short one), and a
    stall longer than a period merges two updates into one double gap (the mean rises). A counter
    faster than the poll changes at every poll and measures as the poll period: the safe side.
    """
    start = last_t = clock()
    last = read()
    seen: list[float] = []
    while len(seen) < changes and last_t - start < timeout_s:
        sleep(poll_s)
        value = read()
        last_t = clock()
        if value != last:
            seen.append(last_t)
            last = value
    gaps = [b - a for a, b in zip(seen, seen[1:])]
    if not gaps:
        return None, (f"energy counter update period unknown: it changed {len(seen)} time(s) "
                      f"in {last_t - start:.2f} s")
    period = statistics.median(gaps)
    return period, (f"energy counter updates every {period * 1000:.3g} ms (measured: median of "
                    f"{len(gaps)} gaps between changes)")


class Profiler(ABC):
    """A power sensor. `start()` opens a window, `stop()` closes it and returns its trace."""

    name: str = ""

    def __init__(self, **options):
        if options:
            raise ValueError(f"profiler {self.name!r} takes no options "
                             f"{', '.join(sorted(options))}")

    @classmethod
    @abstractmethod
    def available(cls, **options) -> tuple[bool, str]:
        """Whether the sensor can be read here with these options (the target's
        `profiler_options`), and why not when it cannot."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> PowerTrace: ...

    def resolution_s(self) -> float | None:
        """The time granularity of a window's energy, in seconds: the update period of the energy
        counter where the energy is a counter's difference, else the interval of the readings
        integrated (the sensor's own period where it updates slower). None: unknown. Windows of
        `min_window_s(resolution_s())` or longer keep its error under 1%."""
        return None


@dataclass
class Reading:
    """One instantaneous reading: total watts (None: not given) and per-rail watts."""

    total_w: float | None
    rails_w: dict[str, float] = field(default_factory=dict)


class PollingProfiler(Profiler):
    """A sampler thread reads the sensor every `interval_s` during the window.

    Subclasses implement `read()`; where the hardware keeps an energy counter (NVML on Volta+,
    RAPL) they also implement `energy_counter_j()`, and the window's energy is the counter's
    difference instead of the integral of the readings.
    """

    def __init__(self, interval_s: float = 0.05, **options):
        super().__init__(**options)
        if interval_s <= 0:
            raise ValueError("interval_s must be positive")
        self.interval_s = interval_s
        self._thread: threading.Thread | None = None

    @abstractmethod
    def read(self) -> Reading:
        """The sensor's instantaneous power now."""

    def energy_counter_j(self) -> float | None:
        """A monotonic hardware energy counter in joules, or None where there is none."""
        return None

    def resolution_s(self) -> float | None:
        """The polling interval: the readings' granularity (a subclass with an energy counter
        gives the counter's period instead)."""
        return self.interval_s

    def start(self) -> None:
        self._trace = PowerTrace(sensor_period_s=self.interval_s)
        self._stop = threading.Event()
        self._t0 = time.perf_counter()
        self._e0 = self.energy_counter_j()
        self._sample()  # a reading at the window's start
        self._thread = threading.Thread(target=self._run, name=f"edgerob-{self.name}",
                                        daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        r = self.read()
        t = time.perf_counter() - self._t0
        if r.total_w is None:
            return
        self._trace.timestamps_s.append(t)
        self._trace.total_w.append(r.total_w)
        for rail, w in r.rails_w.items():
            self._trace.rails_w.setdefault(rail, []).append(w)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self._sample()

    def stop(self) -> PowerTrace:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
        end = time.perf_counter() - self._t0
        e1 = self.energy_counter_j()
        trace = self._trace
        trace.duration_s = end
        if self._e0 is not None and e1 is not None:
            trace.energy_j = e1 - self._e0
        elif trace.total_w:
            trace.energy_j = integrate_power(trace.timestamps_s, trace.total_w, end, start_s=0.0)
        return trace


class NoProfiler(Profiler):
    """No sensor: power and energy are recorded as NULL, with the reason."""

    name = "none"

    @classmethod
    def available(cls, **options) -> tuple[bool, str]:
        return False, "target has no power profiler configured (profiler: none)"

    def start(self) -> None:
        pass

    def stop(self) -> PowerTrace:
        return PowerTrace()


def profiler_class(name: str) -> type[Profiler]:
    return load_plugin("profiler", REGISTRY, name)
