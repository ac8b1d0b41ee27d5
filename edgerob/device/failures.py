"""Failure records: black-box query attacks on the deployed artifact, timed on the target.

Only samples the deployed artifact classifies correctly on the clean input are attacked; the
others are counted (`AttackCell.n_clean_wrong`), never recorded as failures. That clean pass
selects the samples and is not counted as a query (as in the official Square code, which counts
queries from its initialisation).

Every query is one inference of the deployed artifact through the target's runtime, at the
sweep's batch size: the attacker works on `batch_size` samples at once and each query sends one
candidate per sample. A sample takes part in queries 1, 2, ... until the query whose answer
misclassifies it (it *fails* there) or to the end of the budget (right-censored); after it fails,
its row is still sent (static shapes) but no longer attacked, as are the rows that pad the last
batch.

Time and energy, one basis for both (what each number means):

- `duration_s`, `energy_j`: the wall time and the target's energy of the queries the sample took
  part in, each query counted whole (the attacker's latency view: how long until this sample
  breaks; what the AFT models fit). Time is the sum of the measured query times, not a formula;
  energy the sensor's power over those queries less the target's idle power (settled, measured
  before the attack), the basis of energy per inference (None without a sensor).
- `duration_share_s`, `energy_share_j`: the sample's share of the same queries: each query's time
  and energy divided by the number of samples still attacked in it (padding and failed rows not
  counted). The shares of a batch add up to its wall time and energy, so they are what a failure
  costs the attacker; `edgerob.analysis.cost.attacker_side` prices both (USD from time, kWh from energy).

The attack is Square, L-inf (Andriushchenko et al., ECCV 2020), as `square_attack_linf` in the
official code (github.com/max-andr/square-attack, attack.py): vertical stripes of +-eps to start,
then one random s x s window per query and sample with a random +-eps per channel, resampled
while it would leave the image unchanged, accepted only on a strictly lower margin loss on
logits. Pure numpy, so it runs on a device without torch.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from fractions import Fraction

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.device.profilers import PowerTrace, Profiler
from edgerob.device.runtimes import Runtime

QUERY_ATTACKS = ("square",)
NO_CHANGE_TOL = 1e-7  # the official code's test for a window the patch leaves unchanged
MIN_EPS = 1e-6  # below the no-change tolerance (float32 pixels) the resampling could not end

clock = time.perf_counter  # the query clock; tests replace it with a fake one


@dataclass
class FailureRecord:
    sample_id: int
    label: int
    queries: int  # queries it took part in: the one that failed it, or the budget when censored
    budget_queries: int
    duration_s: float  # wall time of those queries, each counted whole
    energy_j: float | None  # target energy over those queries, each counted whole; None: no sensor
    event: int  # 1: misclassified within the budget; 0: censored
    duration_share_s: float  # its share: each query's time / samples attacked in that query
    energy_share_j: float | None  # likewise for energy


@dataclass
class AttackCell:
    """One query-attack cell: the records of the attacked samples, and what was left out."""

    n_available: int  # samples in the input set
    n_clean_wrong: int  # misclassified on the clean input: not attacked, no record
    records: list[FailureRecord] = field(default_factory=list)

    @property
    def n_attacked(self) -> int:
        return len(self.records)


def margin(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """logit of the true class minus the largest other logit: Square's margin loss. A sample is
    misclassified at <= 0 (the official code attacks while the margin is > 0)."""
    rows = np.arange(len(labels))
    correct = logits[rows, labels]
    other = logits.astype(np.float64, copy=True)
    other[rows, labels] = -np.inf
    return correct - other.max(axis=1)


def p_selection(p_init: float, it: int, n_iters: int) -> float:
    """Square's piecewise-constant schedule of p (the fraction of pixels a patch covers), as the
    official `p_selection`: the iteration is rescaled to a 10,000-query budget first."""
    it = int(it / n_iters * 10000)
    for bound, div in ((10, 1), (50, 2), (200, 4), (500, 8), (1000, 16), (2000, 32),
                       (4000, 64), (6000, 128), (8000, 256), (10000, 512)):
        if it <= bound:
            return p_init / div
    return p_init  # past 10,000 the official schedule starts over (unreachable: it < n_iters)


def patch_side(p: float, c: int, h: int, w: int) -> int:
    """Side of the square: round(sqrt(p x features / channels)), at least 1 and at most
    side - 1 (the official clamp)."""
    n_features = c * h * w
    return min(max(int(round(np.sqrt(p * n_features / c))), 1), min(h, w) - 1)


class _Window:
    """Times each query and keeps (start, end) so energy can be integrated over queries only."""

    def __init__(self, runtime: Runtime):
        self.runtime = runtime
        self.intervals: list[tuple[float, float]] = []

    def query(self, x: np.ndarray) -> np.ndarray:
        t0 = clock()
        out = self.runtime.run(x)
        self.intervals.append((t0, clock()))
        return out


def _batches(n: int, batch_size: int):
    """Index arrays of full batches over n samples (the last wraps around to pad: static
    shapes) and how many rows of each are real."""
    for start in range(0, n, batch_size):
        yield np.arange(start, start + batch_size) % n, min(batch_size, n - start)


def clean_correct(runtime: Runtime, images: np.ndarray, labels: np.ndarray,
                  batch_size: int) -> np.ndarray:
    """Whether the deployed artifact classifies each clean sample correctly (margin > 0)."""
    ok = np.zeros(len(images), dtype=bool)
    for idx, real in _batches(len(images), batch_size):
        ok[idx[:real]] = margin(runtime.run(images[idx]), labels[idx])[:real] > 0
    return ok


def square_attack(runtime: Runtime, images: np.ndarray, labels: np.ndarray,
                  sample_ids: np.ndarray, eps: float, budget_queries: int, batch_size: int,
                  p_init: float = 0.1, seed: int = 0,
                  profiler: Profiler | None = None, idle_w: float | None = None) -> AttackCell:
    """Attack every sample the artifact classifies correctly through `runtime`; one
    FailureRecord per attacked sample, in input order. With `idle_w` (the target's settled idle
    power) energies are net of idle, the basis of energy per inference."""
    if not MIN_EPS <= eps <= 1:
        raise EdgerobError(f"query attack eps must be in [{MIN_EPS:g}, 1], got {eps}")
    if budget_queries < 2:
        raise EdgerobError(f"budget_queries must be at least 2, got {budget_queries}")
    if len(images) != len(labels) or len(images) != len(sample_ids):
        raise EdgerobError("images, labels and sample ids differ in length")
    if min(images.shape[2:]) < 2:
        raise EdgerobError(f"Square needs images of at least 2 x 2 pixels, got {images.shape}")
    images = np.asarray(images, dtype=np.float32)
    correct = clean_correct(runtime, images, labels, batch_size)
    cell = AttackCell(n_available=len(images), n_clean_wrong=int((~correct).sum()))
    attacked = np.flatnonzero(correct)
    rng = np.random.default_rng(seed)
    for idx, real in _batches(len(attacked), batch_size):
        rows = attacked[idx]
        window = _Window(runtime)
        if profiler is not None:
            profiler.start()
            t_begin = clock()
        fail_q = _attack_batch(window.query, images[rows], labels[rows], real, eps,
                               budget_queries, p_init, rng)
        trace = profiler.stop() if profiler is not None else None
        took = np.where(fail_q[:real] > 0, fail_q[:real], budget_queries)
        # samples attacked in each query: those that had not failed before it
        n_in = (took[None, :] >= np.arange(1, len(window.intervals) + 1)[:, None]).sum(axis=1)
        times = np.array([b - a for a, b in window.intervals])
        energy = (_query_energy(trace, window.intervals, t_begin, idle_w or 0.0)
                  if trace is not None else None)
        wall_t, share_t = np.cumsum(times), np.cumsum(times / n_in)
        wall_e, share_e = ((np.cumsum(energy), np.cumsum(energy / n_in))
                           if energy is not None else (None, None))
        for j in range(real):
            q = int(took[j])
            cell.records.append(FailureRecord(
                sample_id=int(sample_ids[rows[j]]), label=int(labels[rows[j]]), queries=q,
                budget_queries=budget_queries, duration_s=float(wall_t[q - 1]),
                energy_j=_at(wall_e, q), event=int(fail_q[j] > 0),
                duration_share_s=float(share_t[q - 1]), energy_share_j=_at(share_e, q)))
    return cell


def _at(cumulative: np.ndarray | None, q: int) -> float | None:
    return None if cumulative is None or np.isnan(cumulative[q - 1]) else float(cumulative[q - 1])


def _attack_batch(query, x: np.ndarray, y: np.ndarray, real: int, eps: float, budget: int,
                  p_init: float, rng: np.random.Generator) -> np.ndarray:
    """Square on one batch: the query (1-based) at which each sample was first misclassified,
    0 where it survived the budget. Rows from `real` on are padding: sent, never attacked."""
    n, c, h, w = x.shape
    signs = np.array([-eps, eps], dtype=np.float32)
    attacked = np.arange(n) < real
    fail_q = np.zeros(n, dtype=np.int64)
    # query 1: vertical stripes, one sign per column and channel
    x_best = np.clip(x + rng.choice(signs, size=(n, c, 1, w)), 0, 1)
    x_best[~attacked] = x[~attacked]
    m_best = margin(query(x_best), y)
    fail_q[attacked & (m_best <= 0)] = 1
    for q in range(2, budget + 1):
        active = np.flatnonzero(attacked & (fail_q == 0))
        if not len(active):
            break
        s = patch_side(p_selection(p_init, q - 2, budget), c, h, w)
        cand = x_best.copy()
        for i in active:
            r, col = rng.integers(0, h - s), rng.integers(0, w - s)  # as np.random.randint
            win = (i, slice(None), slice(r, r + s), slice(col, col + s))
            while True:  # a patch that changes nothing is resampled, not queried
                cand[win] = np.clip(x[win] + rng.choice(signs, size=(c, 1, 1)), 0, 1)
                if not np.all(np.abs(cand[win] - x_best[win]) < NO_CHANGE_TOL):
                    break
        m = margin(query(cand), y)
        better = np.zeros(n, dtype=bool)
        better[active] = m[active] < m_best[active]  # strictly lower only
        x_best[better], m_best[better] = cand[better], m[better]
        fail_q[better & (m <= 0)] = q
    return fail_q


def _query_energy(trace: PowerTrace, intervals: list[tuple[float, float]],
                  t_begin: float, idle_w: float = 0.0) -> np.ndarray:
    """Energy (J) of each query: the sensor's power interpolated at the query, less idle power,
    times its time."""
    if not trace.total_w:
        return np.full(len(intervals), np.nan)
    ts = np.asarray(trace.timestamps_s, dtype=np.float64)
    mids = np.array([(a + b) / 2 - t_begin for a, b in intervals])
    power = np.interp(mids, ts, np.asarray(trace.total_w, dtype=np.float64)) - idle_w
    return power * np.array([b - a for a, b in intervals])


def km_median(durations, events) -> float | None:
    """Kaplan-Meier median time to failure: the smallest t with S(t) <= 1/2 (lifelines'
    `median_survival_time_` convention; at S(t) = 1/2 exactly that t, not the midpoint to the
    next failure time). S is computed exactly (fractions of counts), so a curve that reaches 1/2
    is not missed by float rounding. None when S never drops to 1/2 (too many samples censored
    to say)."""
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=bool)
    surv = Fraction(1)
    at_risk = len(t)
    for time_i in np.unique(t):
        here = t == time_i
        deaths = int((here & e).sum())
        if deaths:
            surv *= Fraction(at_risk - deaths, at_risk)
            if surv <= Fraction(1, 2):
                return float(time_i)
        at_risk -= int(here.sum())
    return None
