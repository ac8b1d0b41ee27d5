"""The measurement loop: one sweep cell's latency, throughput, power, energy and accuracy.

Rules (DESIGN.md, after trtexec and MLPerf LoadGen): warm up for a time, then time iterations
until both a minimum duration and a minimum count are met. Each iteration is timed on its own
(the runtime returns only once results are on the host, so the device is synchronised); throughput
is samples over the wall time of the whole timed window. A profiler samples power during that
window only. The idle baseline is measured first, before the accuracy pass and the warm-up (a GPU
or Jetson measured idle just before timing would clock down before the timed window); energy per
inference is the window's energy less idle power over the same window (the profiler's own window
duration, the span its energy was integrated over), divided by the samples run in it.

Batches are prepared before timing (contiguous, full size; the last one wraps around to the start
of the input set) so the timed loop does nothing but call the runtime.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np

from edgerob.device.clocks import throttled_between
from edgerob.device.profilers import Profiler
from edgerob.device.runtimes import Runtime

PERCENTILES = (50, 90, 95, 99)


@dataclass(frozen=True)
class TimingRules:
    """Warm-up, minimum duration and count (trtexec: 200 ms, 3 s, 10); profiles set their own."""

    __pydantic_config__ = {"extra": "forbid"}  # a typo in a profile's timing is an error

    warmup_s: float = 0.2
    min_duration_s: float = 1.0
    min_iterations: int = 10
    idle_s: float = 1.0  # idle power baseline before the window (only with a profiler)
    min_power_samples: int = 5  # fewer samples than this in a window is flagged

    def __post_init__(self):
        for name in ("warmup_s", "idle_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.min_duration_s <= 0 or self.min_iterations < 1 or self.min_power_samples < 1:
            raise ValueError("min_duration_s must be > 0, min_iterations and "
                             "min_power_samples >= 1")


@dataclass
class Measurement:
    batch_size: int
    n_samples: int
    iterations: int
    duration_s: float
    latency_mean_ms: float
    latency_p50_ms: float
    latency_p90_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    latency_std_ms: float
    latency_min_ms: float
    latency_max_ms: float
    throughput_sps: float
    accuracy: float | None
    profiler: str
    power_samples: int | None = None
    power_mean_w: float | None = None
    power_idle_w: float | None = None
    energy_j: float | None = None
    energy_per_inference_j: float | None = None
    power_note: str | None = None  # why power is missing or flagged
    throttled: bool | None = None  # None: nothing readable could tell
    throttle_note: str | None = None
    clocks_start: dict = field(default_factory=dict, repr=False)  # clocks, temps, counters
    clocks_end: dict = field(default_factory=dict, repr=False)
    latencies_ms: list[float] = field(default_factory=list, repr=False)

    @property
    def cv(self) -> float:
        """Coefficient of variation of latency; trtexec warns above 0.1."""
        return self.latency_std_ms / self.latency_mean_ms if self.latency_mean_ms else 0.0


def make_batches(images: np.ndarray, batch_size: int) -> list[np.ndarray]:
    """Full batches covering every image once; the last wraps around to the first images."""
    n = len(images)
    if n == 0:
        raise ValueError("no images to batch")
    count = -(-n // batch_size)
    idx = np.arange(count * batch_size) % n
    return [np.ascontiguousarray(images[idx[i * batch_size:(i + 1) * batch_size]],
                                 dtype=np.float32) for i in range(count)]


def predict(runtime: Runtime, batches: list[np.ndarray], n: int) -> np.ndarray:
    """Top-1 predictions for the first n samples of the batched set."""
    return np.concatenate([runtime.run(b).argmax(1) for b in batches])[:n]


def latency_summary(latencies_s) -> dict[str, float]:
    lat_ms = np.asarray(latencies_s, dtype=np.float64) * 1e3
    pct = np.percentile(lat_ms, PERCENTILES)
    summary = {f"latency_p{p}_ms": float(v) for p, v in zip(PERCENTILES, pct)}
    summary.update(latency_mean_ms=float(lat_ms.mean()),
                   latency_std_ms=float(lat_ms.std(ddof=1)) if len(lat_ms) > 1 else 0.0,
                   latency_min_ms=float(lat_ms.min()), latency_max_ms=float(lat_ms.max()))
    return summary


def timed_loop(run, batches: list[np.ndarray], min_duration_s: float,
               min_iterations: int) -> tuple[list[float], float]:
    """Per-iteration latencies (s) and the window's wall time (s)."""
    perf = time.perf_counter
    latencies = []
    nb = len(batches)
    i = 0
    start = perf()
    deadline = start + min_duration_s
    while True:
        t0 = perf()
        run(batches[i % nb])
        t1 = perf()
        latencies.append(t1 - t0)
        i += 1
        if t1 >= deadline and i >= min_iterations:
            return latencies, t1 - start


def measure(runtime: Runtime, images: np.ndarray, labels: np.ndarray | None, batch_size: int,
            rules: TimingRules = TimingRules(), profiler: Profiler | None = None,
            profiler_name: str = "none", profiler_note: str | None = None,
            state: Callable[[], dict] | None = None) -> Measurement:
    """Measure one cell. `profiler` None means no sensor: power stays NULL with `profiler_note`.
    `state()` reads clocks/temperatures/throttle counters before and after the timed window."""
    batches = make_batches(images, batch_size)
    idle = None
    if profiler is not None:  # idle first: after the warm-up the device would clock down in it
        profiler.start()
        time.sleep(rules.idle_s)
        idle = profiler.stop()
    # The accuracy pass runs every sample once and doubles as the first part of the warm-up.
    preds = predict(runtime, batches, len(images))
    accuracy = float((preds == labels).mean()) if labels is not None else None
    warm_end = time.perf_counter() + rules.warmup_s
    i = 0
    while time.perf_counter() < warm_end:
        runtime.run(batches[i % len(batches)])
        i += 1

    before = state() if state else {}
    if profiler is not None:
        profiler.start()
    latencies, wall = timed_loop(runtime.run, batches, rules.min_duration_s, rules.min_iterations)
    trace = profiler.stop() if profiler is not None else None
    after = state() if state else {}

    m = Measurement(
        batch_size=batch_size, n_samples=len(images), iterations=len(latencies),
        duration_s=wall, throughput_sps=len(latencies) * batch_size / wall, accuracy=accuracy,
        profiler=profiler_name, power_note=profiler_note,
        latencies_ms=[t * 1e3 for t in latencies], clocks_start=before, clocks_end=after,
        **latency_summary(latencies))
    if state:
        m.throttled, m.throttle_note = throttled_between(before, after)
    if trace is not None:
        _add_power(m, trace, idle, rules, profiler)
    return m


def _add_power(m: Measurement, trace, idle, rules: TimingRules, profiler=None) -> None:
    m.power_samples = trace.samples
    m.power_mean_w = trace.mean_w
    m.power_idle_w = idle.mean_w if idle is not None else None
    m.energy_j = trace.energy_j
    notes = []
    if trace.energy_j is None:
        notes.append("no energy: the sensor gave no samples in the window")
    elif m.power_idle_w is None:
        notes.append("no idle baseline: energy per inference not net of idle")
    if trace.samples < rules.min_power_samples and trace.sensor_period_s is not None:
        notes.append(f"only {trace.samples} power samples in the window "
                     f"(< {rules.min_power_samples}); lengthen min_duration_s")
    inferences = m.iterations * m.batch_size
    if trace.energy_j is not None:
        # idle over the span the energy covers (the profiler's window), not the timed loop's
        net = trace.energy_j - (m.power_idle_w or 0.0) * trace.duration_s
        m.energy_per_inference_j = net / inferences
    source = getattr(profiler, "note", None)  # e.g. NVML: which power reading was used
    if source:
        notes.append(source)
    m.power_note = "; ".join(notes) or None


def compare_samples(treated, control) -> dict[str, float]:
    """Adversarial vs clean latencies: ratio of medians, Mann-Whitney U two-sided p-value (normal
    approximation with tie correction) and Cliff's delta (P(a > b) - P(a < b), in [-1, 1]).

    Consecutive iterations are not independent (caches, clocks), so read the p-value as a screen
    and the effect size as the answer: |delta| < 0.147 is negligible (Romano et al. 2006).
    """
    a = np.asarray(treated, dtype=np.float64)
    b = np.asarray(control, dtype=np.float64)
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        raise ValueError("need at least two samples on each side")
    both = np.concatenate([a, b])
    order = np.argsort(both, kind="mergesort")
    ranks = np.empty(len(both))
    ranks[order] = np.arange(1, len(both) + 1)
    values, inverse, counts = np.unique(both, return_inverse=True, return_counts=True)
    ranks = (np.bincount(inverse, weights=ranks) / counts)[inverse]  # mid-ranks for ties
    u1 = ranks[:n1].sum() - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - (counts ** 3 - counts).sum() / (n * (n - 1)))
    z = (u1 - n1 * n2 / 2) / np.sqrt(var) if var > 0 else 0.0
    p = float(math.erfc(abs(z) / math.sqrt(2)))
    delta = 2 * u1 / (n1 * n2) - 1  # Cliff's delta from U
    return {"ratio_p50": float(np.median(a) / np.median(b)), "p_value": p,
            "cliffs_delta": float(delta)}
