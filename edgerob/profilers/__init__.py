"""Profilers: power/energy sensor adapters behind one protocol, a registry keyed by name.

A profiler is a measurement window (as Zeus's begin_window/end_window): `start()` begins
sampling, `stop()` ends it and returns a `PowerTrace`. A profiler with no sensor here says so in
`available()`; the sweep then records NULL power and energy with that reason.
"""

from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

from edgerob.errors import EdgerobError

REGISTRY = {
    "none": "edgerob.profilers:NoProfiler",
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


class Profiler(ABC):
    name: str = ""

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """Whether the sensor can be read here, and why not when it cannot."""

    @abstractmethod
    def start(self) -> None: ...

    @abstractmethod
    def stop(self) -> PowerTrace: ...


class NoProfiler(Profiler):
    """No sensor: power and energy are recorded as NULL, with the reason."""

    name = "none"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        return False, "target has no power profiler configured (profiler: none)"

    def start(self) -> None:
        pass

    def stop(self) -> PowerTrace:
        return PowerTrace()


def profiler_class(name: str) -> type[Profiler]:
    if name not in REGISTRY:
        raise EdgerobError(f"unknown profiler {name!r}; known: {', '.join(sorted(REGISTRY))}")
    module, cls = REGISTRY[name].split(":")
    return getattr(importlib.import_module(module), cls)
