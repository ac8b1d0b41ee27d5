"""The measurement loop: the latency, throughput, power, energy and accuracy of one sweep cell,
for every input set of that cell at once, in alternating rounds.

Rules (DESIGN.md, after trtexec and MLPerf LoadGen): warm up for a time, then time iterations
until both a minimum duration and a minimum count are met. Each iteration is timed on its own
(the runtime returns only once results are on the host, so the device is synchronised); throughput
is samples over the wall time spent in timed blocks.

Input sets of one runtime session, precision and batch size (clean and adversarial) are measured
together: the timed time is cut into `rounds` rounds, and each round times one block of every
set, the order rotating from round to round (AB, BA, ... for two sets). Drift in load, clocks
and temperature then hits every set alike, and a comparison between sets is made per round
(`edgerob.device.paired`); cells measured one after another, minutes apart, would compare the
machine's drift instead. Each block is its own profiler window, so each set's energy is measured,
not apportioned; a block lasts at least as long as the sensor's resolution allows for an energy
error under `max_energy_error`.

Order: the idle baseline first (only with a profiler), repeated until power has settled after
whatever ran before; then one accuracy pass per set; then the warm-up, alternating sets; then the
rounds. Energy per inference is each set's energy less idle power over its profiler windows'
span, divided by the samples it ran.

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
from edgerob.device.paired import MIN_ROUNDS
from edgerob.device.profilers import PowerTrace, Profiler, min_window_s
from edgerob.device.runtimes import Runtime

PERCENTILES = (50, 90, 95, 99)
clock = time.perf_counter  # the timing clock; tests replace it with a fake one


@dataclass(frozen=True)
class TimingRules:
    """Warm-up, minimum duration and count (trtexec: 200 ms, 3 s, 10); profiles set their own."""

    __pydantic_config__ = {"extra": "forbid"}  # a typo in a profile's timing is an error

    warmup_s: float = 0.2
    min_duration_s: float = 1.0  # per input set, over all its rounds
    min_iterations: int = 10  # likewise
    idle_s: float = 1.0  # one idle-power window (only with a profiler)
    min_power_samples: int = 5  # fewer samples than this in a set's windows is flagged
    rounds: int = 10  # alternating rounds over the input sets of a cell (the paired unit)
    settle_tolerance: float = 0.05  # idle has settled: two windows' mean power within 5%
    settle_max_s: float = 30.0  # ... else stop waiting after this long, and flag it
    max_energy_error: float = 0.01  # a window's energy quantisation (sensor resolution) bound

    def __post_init__(self):
        for name in ("warmup_s", "idle_s", "settle_max_s"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0")
        if self.min_duration_s <= 0 or self.min_iterations < 1 or self.min_power_samples < 1:
            raise ValueError("min_duration_s must be > 0, min_iterations and "
                             "min_power_samples >= 1")
        if self.rounds < MIN_ROUNDS:
            raise ValueError(f"rounds must be >= {MIN_ROUNDS} (the fewest pairs with an exact "
                             f"95% interval)")
        if not (self.settle_tolerance > 0 and 0 < self.max_energy_error < 1):
            raise ValueError("settle_tolerance must be > 0 and max_energy_error in (0, 1)")


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
    # per round: p50_ms, iterations, wall_s, energy_j, energy_per_inference_j (net of idle)
    rounds: list[dict] = field(default_factory=list, repr=False)

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
               min_iterations: int, first: int = 0) -> tuple[list[float], float]:
    """Per-iteration latencies (s) and the window's wall time (s); batches from index `first`
    on, cycling."""
    perf = clock
    latencies = []
    nb = len(batches)
    i = 0
    start = perf()
    deadline = start + min_duration_s
    while True:
        t0 = perf()
        run(batches[(first + i) % nb])
        t1 = perf()
        latencies.append(t1 - t0)
        i += 1
        if t1 >= deadline and i >= min_iterations:
            return latencies, t1 - start


def idle_baseline(profiler: Profiler, rules: TimingRules,
                  sleep: Callable[[float], None] = time.sleep) -> tuple[PowerTrace, str | None]:
    """Idle power once it has settled after whatever ran before (the previous cell's load heats
    the device and keeps its clocks up for a while): windows of `idle_s` (at least the sensor's
    resolution allows) until two in a row agree within `settle_tolerance`, giving up after
    `settle_max_s` with a note. Returns the last window's trace and the note."""
    window = max(rules.idle_s, min_window_s(_resolution(profiler), rules.max_energy_error))
    previous, waited = None, 0.0
    while True:
        profiler.start()
        sleep(window)
        trace = profiler.stop()
        watts = trace.mean_w
        if watts is None:
            return trace, None  # no samples: _add_power says there is no idle baseline
        if previous is not None and abs(watts - previous) <= rules.settle_tolerance * previous:
            return trace, None
        waited += trace.duration_s
        if waited >= rules.settle_max_s:
            return trace, (f"idle power had not settled after {waited:.3g} s (last windows "
                           f"{previous if previous is not None else math.nan:.3g} W, "
                           f"{watts:.3g} W): energy net of idle is uncertain")
        previous = watts


def _resolution(profiler: Profiler | None) -> float | None:
    return profiler.resolution_s() if profiler is not None else None


def measure_sets(runtime: Runtime, sets: dict[str, tuple[np.ndarray, np.ndarray | None]],
                 batch_size: int, rules: TimingRules = TimingRules(),
                 profiler: Profiler | None = None, profiler_name: str = "none",
                 profiler_note: str | None = None,
                 state: Callable[[], dict] | None = None) -> dict[str, Measurement]:
    """Measure every input set (name -> (images, labels or None)) of one cell in alternating
    rounds (module docstring). `profiler` None means no sensor: power stays NULL with
    `profiler_note`. `state()` reads clocks/temperatures/throttle counters before and after
    the rounds."""
    if not sets:
        raise ValueError("no input sets to measure")
    names = list(sets)
    batches = {name: make_batches(images, batch_size) for name, (images, _) in sets.items()}
    idle, idle_note = idle_baseline(profiler, rules) if profiler is not None else (None, None)
    # The accuracy pass runs every sample once and is the first part of the warm-up.
    accuracy = {}
    for name, (images, labels) in sets.items():
        preds = predict(runtime, batches[name], len(images))
        accuracy[name] = float((preds == labels).mean()) if labels is not None else None
    warm_end = clock() + rules.warmup_s
    i = 0
    while clock() < warm_end:
        b = batches[names[i % len(names)]]
        runtime.run(b[(i // len(names)) % len(b)])
        i += 1

    block_s = rules.min_duration_s / rules.rounds
    resolution = _resolution(profiler)  # asked once: NVML opens the driver to answer
    floor = min_window_s(resolution, rules.max_energy_error)
    window_note = None
    if floor > block_s:
        window_note = (f"blocks lengthened from {block_s:.3g} s to {floor:.3g} s: the sensor's "
                       f"{resolution:.3g} s resolution would otherwise err by more "
                       f"than {rules.max_energy_error:.0%}")
        block_s = floor
    block_iterations = -(-rules.min_iterations // rules.rounds)
    blocks: dict[str, list] = {name: [] for name in names}
    done = dict.fromkeys(names, 0)  # iterations so far: each block goes on where the last ended
    before = state() if state else {}
    for r in range(rules.rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            if profiler is not None:
                profiler.start()
            latencies, wall = timed_loop(runtime.run, batches[name], block_s, block_iterations,
                                         first=done[name])
            trace = profiler.stop() if profiler is not None else None
            done[name] += len(latencies)
            blocks[name].append((latencies, wall, trace))
    after = state() if state else {}
    throttle = throttled_between(before, after) if state else (None, None)

    out = {}
    for name in names:
        m = _summarise(blocks[name], batch_size, len(sets[name][0]), accuracy[name],
                       profiler_name, profiler_note)
        m.clocks_start, m.clocks_end = before, after
        m.throttled, m.throttle_note = throttle
        if profiler is not None:
            _add_power(m, blocks[name], idle, [idle_note, window_note], rules, profiler)
        out[name] = m
    return out


def measure(runtime: Runtime, images: np.ndarray, labels: np.ndarray | None, batch_size: int,
            rules: TimingRules = TimingRules(), profiler: Profiler | None = None,
            profiler_name: str = "none", profiler_note: str | None = None,
            state: Callable[[], dict] | None = None) -> Measurement:
    """Measure one input set (`measure_sets` with one set)."""
    return measure_sets(runtime, {"": (images, labels)}, batch_size, rules, profiler,
                        profiler_name, profiler_note, state)[""]


def _summarise(blocks: list, batch_size: int, n_samples: int, accuracy: float | None,
               profiler_name: str, profiler_note: str | None) -> Measurement:
    latencies = [t for lat, _, _ in blocks for t in lat]
    wall = sum(w for _, w, _ in blocks)
    return Measurement(
        batch_size=batch_size, n_samples=n_samples, iterations=len(latencies), duration_s=wall,
        throughput_sps=len(latencies) * batch_size / wall, accuracy=accuracy,
        profiler=profiler_name, power_note=profiler_note,
        latencies_ms=[t * 1e3 for t in latencies],
        rounds=[{"p50_ms": float(np.median(lat)) * 1e3, "iterations": len(lat), "wall_s": w}
                for lat, w, _ in blocks],
        **latency_summary(latencies))


def _add_power(m: Measurement, blocks: list, idle: PowerTrace | None, notes: list,
               rules: TimingRules, profiler: Profiler) -> None:
    """Power and energy of a set from its blocks' profiler windows; energy per inference net of
    idle power over the span each window's energy covers (the profiler's own window)."""
    traces = [trace for _, _, trace in blocks]
    m.power_samples = sum(t.samples for t in traces)
    m.power_idle_w = idle.mean_w if idle is not None else None
    idle_w = m.power_idle_w or 0.0
    notes = [n for n in notes if n]
    span = sum(t.duration_s for t in traces)
    if any(t.energy_j is None for t in traces):
        notes.append("no energy: the sensor gave no samples in a window")
    else:
        m.energy_j = sum(t.energy_j for t in traces)
        m.power_mean_w = m.energy_j / span if span > 0 else None
        m.energy_per_inference_j = (m.energy_j - idle_w * span) / (m.iterations * m.batch_size)
        for r, trace in zip(m.rounds, traces):
            r["energy_j"] = trace.energy_j
            r["energy_per_inference_j"] = ((trace.energy_j - idle_w * trace.duration_s)
                                           / (r["iterations"] * m.batch_size))
        if m.power_idle_w is None:
            notes.append("no idle baseline: energy per inference not net of idle")
    if m.power_samples < rules.min_power_samples and traces[0].sensor_period_s is not None:
        notes.append(f"only {m.power_samples} power samples in the windows "
                     f"(< {rules.min_power_samples}); lengthen min_duration_s")
    source = getattr(profiler, "note", None)  # e.g. NVML: which power reading was used
    if source:
        notes.append(source)
    m.power_note = "; ".join(notes) or None


def compare_samples(treated, control) -> dict[str, float]:
    """Latencies of two unpaired configurations: ratio of medians, Mann-Whitney U two-sided
    p-value (normal approximation with tie correction) and Cliff's delta (P(a > b) - P(a < b),
    in [-1, 1]).

    Consecutive iterations are not independent (caches, clocks), so read the p-value as a screen
    and the effect size as the answer: |delta| < 0.147 is negligible (Romano et al. 2006). Input
    sets of one cell are compared paired instead (`edgerob.device.paired`).
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
