"""Failure records: black-box query attacks on the deployed artifact, timed on the target.

Every query is one inference of the deployed artifact through the target's runtime, at the
sweep's batch size: the attacker works on `batch_size` samples at once and each query sends one
candidate per sample. A sample *fails* at the first query whose answer misclassifies it; its
duration is the attacker's wall time on the target until then (the sum of the measured times of
the queries it took, not a formula), its energy the target's energy over those queries divided
among the samples that shared them. A sample that survives the whole budget is right-censored.

The attack is Square (Andriushchenko et al., ECCV 2020), L-inf, margin loss on logits: random
square patches at +-eps accepted when they lower the margin. Pure numpy, so it runs on a device
without torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PowerTrace, Profiler
from edgerob.device.runtimes import Runtime

QUERY_ATTACKS = ("square",)


@dataclass
class FailureRecord:
    sample_id: int
    label: int
    queries: int  # queries spent when it failed, or the budget when censored
    budget_queries: int
    duration_s: float  # attacker's wall time on the target until failure (or budget)
    energy_j: float | None  # target energy over those queries, this sample's share; None: no sensor
    event: int  # 1: misclassified within the budget; 0: censored


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """logit of the true class minus the largest other logit; negative means misclassified."""
    rows = np.arange(len(labels))
    correct = logits[rows, labels]
    other = logits.astype(np.float64, copy=True)
    other[rows, labels] = -np.inf
    return correct - other.max(axis=1)


def _p_schedule(p_init: float, it: int, budget: int) -> float:
    """Square's patch-size schedule (official code), rescaled from 10,000 queries to `budget`."""
    it = int(it / max(budget, 1) * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256)):
        if it <= bound:
            return p_init / div
    return p_init / 512


class _Window:
    """Times each query and keeps (start, end) so energy can be integrated over queries only."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.intervals: list[tuple[float, float]] = []

    def query(self, x: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        out = self.runtime.run(x)
        self.intervals.append((t0, time.perf_counter()))
        return out


def square_attack(runtime: Runtime, images: np.ndarray, labels: np.ndarray,
                  sample_ids: np.ndarray, eps: float, budget_queries: int, batch_size: int,
                  p_init: float = 0.1, seed: int = 0,
                  profiler: Profiler | None = None) -> list[FailureRecord]:
    """Attack every sample through `runtime`; one FailureRecord per sample, in input order."""
    if not 0 < eps <= 1:
        raise EdgerobError(f"query attack eps must be in (0, 1], got {eps}")
    if budget_queries < 2:
        raise EdgerobError(f"budget_queries must be at least 2, got {budget_queries}")
    if len(images) != len(labels) or len(images) != len(sample_ids):
        raise EdgerobError("images, labels and sample ids differ in length")
    rng = np.random.default_rng(seed)
    records: list[FailureRecord] = []
    for start in range(0, len(images), batch_size):
        idx = np.arange(start, start + batch_size) % len(images)  # full batches: static shapes
        real = min(batch_size, len(images) - start)  # the wrapped tail pads, it is not recorded
        window = _Window(runtime)
        if profiler is not None:
            profiler.start()
            t_begin = time.perf_counter()
        fail_q = _attack_batch(window, images[idx], labels[idx], eps, budget_queries, p_init, rng)
        trace = profiler.stop() if profiler is not None else None
        ends = np.cumsum([b - a for a, b in window.intervals])
        energy = (np.cumsum(_query_energy(trace, window.intervals, t_begin)) / batch_size
                  if trace is not None else None)
        for j in range(real):
            q = int(fail_q[j]) if fail_q[j] > 0 else budget_queries
            records.append(FailureRecord(
                sample_id=int(sample_ids[start + j]), label=int(labels[start + j]), queries=q,
                budget_queries=budget_queries, duration_s=float(ends[q - 1]),
                energy_j=(None if energy is None or np.isnan(energy[q - 1])
                          else float(energy[q - 1])),
                event=int(fail_q[j] > 0)))
    return records


def _attack_batch(window: _Window, x: np.ndarray, y: np.ndarray, eps: float, budget: int,
                  p_init: float, rng: np.random.Generator) -> np.ndarray:
    """Queries at which each sample was first misclassified (0: survived the budget)."""
    n, c, h, w = x.shape
    fail_q = np.zeros(n, dtype=np.int64)

    def record(m: np.ndarray, q: int) -> None:
        fail_q[(m < 0) & (fail_q == 0)] = q

    record(margin(window.query(x), y), 1)  # the clean input is the attacker's first query
    # Vertical stripes of +-eps: Square's initialisation.
    x_best = np.clip(x + eps * rng.choice([-1.0, 1.0], size=(n, c, 1, w)), 0, 1).astype(np.float32)
    m_best = margin(window.query(x_best), y)
    record(m_best, 2)
    for q in range(3, budget + 1):
        active = fail_q == 0
        if not active.any():
            break
        p = _p_schedule(p_init, q - 3, budget)
        s = int(min(max(round(np.sqrt(p * h * w)), 1), h, w))
        cand = x_best.copy()
        for i in np.flatnonzero(active):
            r, col = rng.integers(0, h - s + 1), rng.integers(0, w - s + 1)
            patch = eps * rng.choice([-1.0, 1.0], size=(c, 1, 1))
            cand[i, :, r:r + s, col:col + s] = np.clip(x[i, :, r:r + s, col:col + s] + patch, 0, 1)
        m = margin(window.query(cand), y)
        better = active & (m < m_best)
        x_best[better], m_best[better] = cand[better], m[better]
        record(np.where(active, m, np.inf), q)
    return fail_q


def _query_energy(trace: PowerTrace, intervals: list[tuple[float, float]],
                  t_begin: float) -> np.ndarray:
    """Energy (J) of each query: the sensor's power interpolated at the query, times its time."""
    if not trace.total_w:
        return np.full(len(intervals), np.nan)
    ts = np.asarray(trace.timestamps_s, dtype=np.float64)
    mids = np.array([(a + b) / 2 - t_begin for a, b in intervals])
    power = np.interp(mids, ts, np.asarray(trace.total_w, dtype=np.float64))
    return power * np.array([b - a for a, b in intervals])


def km_median(durations, events) -> float | None:
    """Kaplan-Meier median time to failure; None when survival never drops to 0.5 (too many
    samples censored to say)."""
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=bool)
    surv = 1.0
    at_risk = len(t)
    for time_i in np.unique(t):
        here = t == time_i
        deaths = int((here & e).sum())
        if deaths:
            surv *= 1 - deaths / at_risk
            if surv <= 0.5:
                return float(time_i)
        at_risk -= int(here.sum())
    return None
