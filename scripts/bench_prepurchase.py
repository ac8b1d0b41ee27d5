"""Pre-purchase prediction on devices nobody here owns: leave-one-device-out over the imported
MLPerf Inference fleet, against the naive peak-TOPS baseline, in one run.

    PYTHONPATH=. python scripts/bench_prepurchase.py [MLPERF_RESULTS_FOLDER]

Imports the results (default ../shared/samples/mlperf, else /work/shared/samples/mlperf) into a
temporary store, then within each MLPerf version (software comparable) and scenario holds out
each device with a spec sheet, predicts its published metric from the others with
`edgerob.analysis.compare` (log-linear on the catalog's dense GPU-only peak figures, covariates chosen by
leave-one-target-out error, 95% prediction interval), and prints predicted vs published, the
absolute log error per device, the median and worst, the interval coverage, and the same errors
for the naive baseline: the training device nearest in peak INT8 TOPS, scaled by the peak-TOPS
ratio (throughput x ratio, latency / ratio). Jetson Offline rows (GPU + 2 DLA) are excluded from
both, as in `cost --candidate`. Deterministic: no randomness, sorted iteration.
"""

from __future__ import annotations

import math
import sys
import tempfile
from pathlib import Path

import numpy as np

from edgerob.analysis.compare import TargetCache, fleet_table
from edgerob.analysis.predict.spec import (RESPONSE, _per_target_rows, _predict_rows,
                                           prediction_group)
from edgerob.fleet.mlperf import ingest_mlperf
from edgerob.store import Store


def _default_path() -> Path:
    here = Path(__file__).resolve().parents[1]
    for p in (here.parent / "shared" / "samples" / "mlperf", here.parent.parent / "shared" /
              "samples" / "mlperf", Path("/work/shared/samples/mlperf")):
        if p.is_dir():
            return p
    sys.exit("no MLPerf results folder found: pass one as the first argument")


def naive(train: dict[str, dict], cache: TargetCache, held: str, precision: str,
          response: str) -> float | None:
    """The training device nearest in log peak TOPS, scaled by the peak-TOPS ratio."""
    tops = {t: cache.get(t).specs.peak_tops.get(precision) for t in [*train, held]}
    if not tops[held]:
        return None
    refs = [t for t in train if tops[t]]
    if not refs:
        return None
    ref = min(refs, key=lambda t: (abs(math.log(tops[t] / tops[held])), t))
    ratio = tops[held] / tops[ref]
    y = train[ref][response]
    return y * ratio if response == "throughput_sps" else y / ratio


def main() -> None:
    path = Path(sys.argv[1]) if len(sys.argv) > 1 else _default_path()
    with tempfile.TemporaryDirectory() as tmp:
        store = Store(f"sqlite:///{tmp}/bench.db")
        counts = ingest_mlperf(path, store)
        rows = [r for r in fleet_table(store) if r["source"] == "mlperf"]
    cache = TargetCache()
    print(f"imported {counts['imported']} results from {path}")
    groups = _per_target_rows(rows, cache)
    all_model, all_naive, all_cover = [], [], []
    for g in sorted(groups, key=lambda g: tuple(str(x) for x in g)):
        _, version, scenario, precision, _ = g
        cell = groups[g]
        devices = sorted(t for t in cell["rows"] if cache.get(t) is not None)
        if len(devices) < 3:
            print(f"\n{version} {scenario}: {len(devices)} device(s) with spec sheets, "
                  f"fewer than 3: not scored")
            continue
        response = RESPONSE[scenario]
        g_rows = [r for r in rows if prediction_group(r) == g]
        print(f"\n{version} {scenario} ({response}; {len(devices)} devices"
              + (f"; excluded: {', '.join(sorted(cell['excluded']))} (GPU + 2 DLA)"
                 if cell["excluded"] else "") + ")")
        print(f"  {'held out':<22}{'published':>11}{'predicted':>11}{'95% PI':>21}"
              f"{'in':>4}{'|log err|':>10}{'naive':>11}{'|log err|':>10}  model")
        errs, nerrs, cover = [], [], []
        for held in devices:
            preds = [p for p in _predict_rows(g_rows, {}, cache, cache.get(held), 2, 0.95)
                     if p["group"].startswith(f"MLPerf {version} {scenario}")]
            p = preds[0]
            truth, pred = p["truth"], p[response]
            train = {t: r for t, r in cell["rows"].items() if t in devices and t != held}
            nv = naive(train, cache, held, precision, response)
            e = abs(math.log(pred / truth))
            ne = abs(math.log(nv / truth)) if nv else None
            errs.append(e)
            if ne is not None:
                nerrs.append(ne)
            if p["truth_in_interval"] is not None:
                cover.append(p["truth_in_interval"])
            lo, hi = p[f"{response}_lo"], p[f"{response}_hi"]
            pi = "—" if lo is None else f"{lo:.4g}–{hi:.4g}"
            inside = "—" if p["truth_in_interval"] is None else (
                "yes" if p["truth_in_interval"] else "no")
            print(f"  {held:<22}{truth:>11.4g}{pred:>11.4g}{pi:>21}{inside:>4}{e:>10.3f}"
                  f"{(nv or float('nan')):>11.4g}{(ne if ne is not None else float('nan')):>10.3f}"
                  f"  {p['model']}")
        print(f"  model: median |log err| {np.median(errs):.3f}, worst {max(errs):.3f}; "
              f"naive: median {np.median(nerrs):.3f}, worst {max(nerrs):.3f}; 95% PI covers "
              f"{sum(cover)}/{len(cover)}")
        all_model += errs
        all_naive += nerrs
        all_cover += cover
    if all_model:
        m, n = float(np.median(all_model)), float(np.median(all_naive))
        print(f"\nall groups: {len(all_model)} held-out predictions; median |log err| model "
              f"{m:.3f} (x{math.exp(m):.2f}), naive {n:.3f} (x{math.exp(n):.2f}); naive/model "
              f"ratio {n / m:.2f}; worst model {max(all_model):.3f}, naive {max(all_naive):.3f}; "
              f"95% PI coverage {sum(all_cover)}/{len(all_cover)}")


if __name__ == "__main__":
    main()
