"""The matrix predictor (edgerob.analysis.predict) on every published NVIDIA closed-division MLPerf
Inference result, in one run, against two baselines.

    PYTHONPATH=. python scripts/bench_predict.py [MLPERF_RESULTS_FOLDER]

Every VALID result (all benchmarks and scenarios) is imported (`edgerob.fleet.mlperf`) into a
temporary store; a device configuration is the catalog target (or reference-only device) with the
run's configuration and accelerator count, the value the scenario's headline metric (Offline and
Server throughput per accelerator). Then:

(a) warm cells: for each device and workload (benchmark x scenario) both with other results, the
    device's results for that workload are removed in every version and configuration and
    predicted from the rest (the method chosen by the predictor's own cross-validation on what is
    left, 90% split-conformal interval from held-out cells whose workload was known on as many
    devices: 1, 2, 3+);
(b) a new workload: each benchmark x scenario of one MLPerf version is kept on only k = 1, 2, 3
    devices (DRAWS draws per column with a fixed seed; the workload's other versions removed) and
    predicted on the others of that version, as one's own model measured on k devices would be;
(c) cold device: each catalog device with a spec sheet loses every result and is predicted by
    the cold method the predictor's cross-validation on the others picks (spec-sheet regression
    of the device effects, with the spec neighbours' residuals, nearest-TOPS scaling, or the mean
    of spec and nearest-TOPS; each configuration from the same configuration of other devices).

Truth and prediction are always in one MLPerf version (a column is benchmark x scenario x
version). Baselines on the same cells: nearest-TOPS (the device with the cell nearest in peak
INT8 TOPS, scaled by the TOPS ratio), nearest reference (issue 21's quick method: the device
whose log ratios to this one vary least over their shared results, scaled by their mean;
cells it cannot fill are left out of its row) and the spec regression `cost --candidate` used before
issue 21 (per column, log metric on log peak TOPS / memory bandwidth, covariates by
leave-one-target-out, its 90% t interval). Errors are |log(predicted / published)|: median,
mean (what the predictor's cross-validation minimises: the tails matter to a buyer) and p90.
"plain rows": the cells of one accelerator in its default configuration only (no MaxQ, DLA,
Triton, MIG or multi-accelerator system). Deterministic: seeded draws, sorted iteration.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgerob.analysis.predict.cells import Cells, _specs
from edgerob.analysis.predict.matrix import (cold_fill, cold_validate, cross_validate, fill,
                                             support)
from edgerob.analysis.predict.spec import LATENCY_COVARIATES, fit_loglinear
from edgerob.fleet.mlperf import ingest_mlperf
from edgerob.store import Store

LEVEL = 0.9
DRAWS = 4  # (b): draws of the k devices per column (one draw's figures swing by +-0.04)


def _default_path() -> Path:
    for p in (Path(__file__).resolve().parents[2] / "shared" / "samples" / "mlperf",
              Path("/work/shared/samples/mlperf")):
        if p.is_dir():
            return p
    sys.exit("no MLPerf results folder found: pass one as the first argument")


def nearest_tops(mat, held, i, j, specs) -> float:
    """Log speed of (i, j) from the training row nearest in log peak TOPS, scaled by the ratio."""
    mine = (specs.get(mat.groups[i]) or {}).get("peak_tops")
    refs = [r for r in range(len(mat.rows)) if not held[r, j] and not np.isnan(mat.y[r, j])
            and (specs.get(mat.groups[r]) or {}).get("peak_tops")]
    if not mine or not refs:
        return float("nan")
    r = min(refs, key=lambda r: (abs(math.log(specs[mat.groups[r]]["peak_tops"] / mine)),
                                 mat.rows[r]))
    return mat.y[r, j] + math.log(mine / specs[mat.groups[r]]["peak_tops"])


def nearest_reference(mat, held, i, j) -> float:
    """The issue's quick method: log speed of (i, j) from the training row with column j whose
    log ratios to row i over their shared workloads (at least 2) vary least, scaled by their
    mean."""
    train = np.where(held, np.nan, mat.y)
    best = (math.inf, float("nan"))
    for r in np.flatnonzero(~np.isnan(train[:, j])):
        d = train[i] - train[r]
        d = d[~np.isnan(d)]
        if r != i and len(d) >= 2 and d.std(ddof=1) < best[0]:
            best = (d.std(ddof=1), train[r, j] + d.mean())
    return best[1]


def spec_column(mat, held, i, j, specs) -> tuple[float, float, float]:
    """The per-column spec regression on column j: (log speed, low, high); nan where not
    identified."""
    g = mat.groups[i]
    rows = [r for r in range(len(mat.rows)) if not held[r, j] and not np.isnan(mat.y[r, j])
            and specs.get(mat.groups[r]) and all(specs[mat.groups[r]].get(c)
                                                 for c in LATENCY_COVARIATES)]
    best: dict[str, int] = {}
    for r in rows:  # one row per device: its best configuration
        if mat.groups[r] not in best or mat.y[r, j] > mat.y[best[mat.groups[r]], j]:
            best[mat.groups[r]] = r
    if len(best) < 3 or not specs.get(g) or not all(specs[g].get(c) for c in LATENCY_COVARIATES):
        return (float("nan"),) * 3
    names = sorted(best)
    fit = fit_loglinear([math.exp(mat.y[best[d], j]) for d in names], [specs[d] for d in names],
                        LATENCY_COVARIATES, specs[g], proportional={"peak_tops": 1.0})
    mid, lo, hi = fit.predict(specs[g], LEVEL)
    return math.log(mid), math.log(lo) if lo else -math.inf, math.log(hi) if hi else math.inf


class Tally:
    def __init__(self):
        self.rows: dict[str, list] = {}

    def add(self, name: str, est: float, truth: float, lo=None, hi=None):
        if math.isfinite(est):
            inside = None if lo is None else bool(lo <= truth <= hi)
            self.rows.setdefault(name, []).append((abs(est - truth), inside))

    def print(self, title: str):
        print(f"\n{title}")
        print(f"  {'method':<26}{'cells':>6}{'median':>9}{'mean':>8}{'p90':>8}{'90% cover':>11}")
        for name, r in self.rows.items():
            e = np.array([x[0] for x in r])
            ins = [x[1] for x in r if x[1] is not None]
            cover = f"{np.mean(ins):.0%}" if ins else "—"
            print(f"  {name:<26}{len(e):>6}{np.median(e):>9.3f}{np.mean(e):>8.3f}"
                  f"{np.quantile(e, 0.9):>8.3f}"
                  f"{cover:>11}")


def predictor(mat, held, specs, chosen_log):
    """The predictor as `edgerob predict` runs it: CV on what is left, chosen method, interval
    (per column: from held-out cells whose workload was known on as many devices)."""
    masked = mat.masked(held)
    val = cross_validate(masked)
    chosen_log[val.chosen] = chosen_log.get(val.chosen, 0) + 1
    est = fill(mat.y, held, val.chosen, mat.networks)[0]
    sup = support(masked.y, mat.groups)
    return est, np.array([[val.half_width(LEVEL, s, p) for s in sup] for p in mat.plain])


def score(t: Tally, mat, held, specs, est, half):
    """The predictor and both baselines on the held cells the predictor and nearest-TOPS fill
    (the spec regression needs 3 devices with specs in the column: it may fill fewer)."""
    for i, j in zip(*np.nonzero(held & ~np.isnan(mat.y))):
        truth, base = mat.y[i, j], nearest_tops(mat, held, i, j, specs)
        if not (math.isfinite(est[i, j]) and math.isfinite(base)):
            continue
        h = half[i, j] if np.ndim(half) else half
        near = nearest_reference(mat, held, i, j)
        t.add("predictor", est[i, j], truth, est[i, j] - h, est[i, j] + h)
        t.add("nearest-TOPS", base, truth)
        t.add("nearest reference", near, truth)
        if mat.plain[i]:  # one accelerator in its default configuration
            t.add("predictor, plain rows", est[i, j], truth, est[i, j] - h, est[i, j] + h)
            t.add("nearest ref., plain rows", near, truth)
        sc = spec_column(mat, held, i, j, specs)
        t.add("spec regression (before)", sc[0], truth, sc[1], sc[2])


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _default_path()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        n = ingest_mlperf(path, store)["imported"]
        mat = Cells(store).matrix("speed")
    cache: dict = {}
    specs = {g: _specs(g, cache) for g in set(mat.groups)}
    have = ~np.isnan(mat.y)
    print(f"{n} published results: {len(set(mat.groups))} devices in {len(mat.rows)} "
          f"configurations x {len(set(mat.families))} workloads in {len(mat.cols)} "
          f"(workload, version) columns, {int(have.sum())} cells")

    warm, chosen = Tally(), {}
    pairs = sorted({(mat.groups[i], mat.families[j]) for i, j in zip(*np.nonzero(have))})
    for g, f in pairs:
        held = mat.held_mask(g, f) & have
        rest = have & ~held
        if not rest[np.array(mat.groups) == g].any() or not specs.get(g):
            continue  # not warm, or no baseline to compare with
        est, half = predictor(mat, held, specs, chosen)
        score(warm, mat, held, specs, est, half)
    warm.print(f"(a) warm cells: a device's workload held out in every version and "
               f"configuration (methods chosen: {chosen})")

    rng = np.random.default_rng(0)
    for k in (1, 2, 3):
        t, chosen = Tally(), {}
        for j, col in enumerate(mat.cols):
            devs = sorted({mat.groups[i] for i in np.flatnonzero(have[:, j])})
            if len(devs) < k + 3:
                continue
            for _ in range(DRAWS):
                keep = set(rng.choice(devs, k, replace=False))
                fam = np.array(mat.families) == mat.families[j]
                held = have & fam[None, :] & ~(np.isin(mat.groups, list(keep))[:, None]
                                               & (np.arange(len(mat.cols)) == j)[None, :])
                est, half = predictor(mat, held, specs, chosen)
                only = np.zeros_like(held)
                only[:, j] = held[:, j]  # scored in the kept version only
                score(t, mat, only, specs, est, half)
        t.print(f"(b) a workload known on only k = {k} device(s) of one version, predicted on "
                f"the others (methods chosen: {chosen})")

    cold, chosen = Tally(), {}
    for g in sorted(set(mat.groups)):
        held = (np.array(mat.groups) == g)[:, None] & have
        if not specs.get(g):
            continue
        val = cold_validate(mat.masked(held), specs)
        est = cold_fill(mat, held, g, specs, val.chosen)
        if est is None or not val.cells:
            continue
        chosen[val.chosen] = chosen.get(val.chosen, 0) + 1
        half = np.array([val.half_width(LEVEL, None, p) for p in mat.plain])
        score(cold, mat, held, specs, est, np.broadcast_to(half[:, None], mat.y.shape))
    cold.print(f"(c) cold device: a catalog device with every result removed (methods chosen: "
               f"{chosen})")


if __name__ == "__main__":
    main()
