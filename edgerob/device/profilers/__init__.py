"""Profilers: power/energy sensor adapters behind one protocol, a registry keyed by name.

A profiler is a measurement window (as Zeus's begin_window/end_window): `start()` begins
sampling, `stop()` ends it and returns a `PowerTrace`. A profiler with no sensor here says so in
`available()`; the sweep then records NULL power and energy with that reason.
"""

from __future__ import annotations

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
