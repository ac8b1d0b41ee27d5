"""Survival-fit speed: 100,000 failure records drawn from a known Weibull AFT (2 targets x 3
precisions x 3 batch sizes, ~25% censored; covariates precision, target, log2_batch_size, with
attack and eps constant and dropped), then

- each of the three main families (weibull, lognormal, loglogistic) fitted alone on every record
  (one lifelines fit plus reading the log-likelihood back from the closed forms: `_fit_once`);
- the whole `fit_models` call a user makes: design matrix, stratified 75/25 split, the three
  families on the fitting split, concordance on both splits, ICI/E50 calibration on the
  held-out split, and the best family refitted on every record.

Timings are wall clock (perf_counter), one run each after a small warm-up fit (imports, first
autograd trace). Optionally also the store round trip (`--store`: write the records into a
SQLite store through `Store.add_failures` and read them back with `load_failures`). Goal: the
whole fit under 30 s.

    .venv/bin/python scripts/bench_fit.py [--n 100000] [--seed 0] [--store]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--store", action="store_true", help="also time the store round trip")
    args = ap.parse_args()

    from edgerob.analysis import survival as sv

    truth = {"precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
             "target[l4]": 0.3}
    sv.fit_models(sv.simulate_failures(500, seed=1), families=("weibull",), test_fraction=0)
    df = sv.simulate_failures(args.n, "weibull", time_ratios=truth, seed=args.seed)
    print(f"{len(df):,} records, {int(df['event'].sum()):,} failures "
          f"({1 - df['event'].mean():.0%} censored)")

    if args.store:
        from edgerob.store import Store

        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            store = Store(f"sqlite:///{tmp}/bench.db")
            cols = ["target", "precision", "batch_size", "attack", "eps", "sample_id",
                    "queries", "budget_queries", "duration_s", "energy_j", "event"]
            for target, g in df.groupby("target"):
                run_id, _ = store.begin_run(target=target, profile="bench", model="sim",
                                            model_sha256="0" * 64, runtime="onnxruntime",
                                            host="bench", versions={})
                for _, cell in g.groupby(["precision", "batch_size"]):
                    recs = cell[cols].to_dict("records")
                    store.add_failures([{**r, "run_id": run_id, "energy_j": None}
                                        for r in recs])
            t1 = time.perf_counter()
            loaded = sv.load_failures(store)
            t2 = time.perf_counter()
        print(f"store write {t1 - t0:6.2f} s   load_failures {t2 - t1:6.2f} s "
              f"({len(loaded):,} rows)")

    des = sv.design(df)
    X, T, E = des.values(df), df["duration"].to_numpy(float), df["event"].to_numpy(int)
    for fam in sv.MAIN_FAMILIES:
        t0 = time.perf_counter()
        fit, _ = sv._fit_once(fam, X, des.columns, T, E, 1.0, 0.0, None)
        print(f"{fam:12s} fit {time.perf_counter() - t0:6.2f} s   "
              f"log-lik {fit.log_likelihood:12.1f}   k {fit.k}")

    t0 = time.perf_counter()
    result = sv.fit_models(df)
    total = time.perf_counter() - t0
    print(f"fit_models   {total:6.2f} s   (3 families on {result.n_train:,} records, "
          f"concordance and calibration, best refitted on {result.final.n:,})")
    print(f"best {result.best}; time ratios (truth in brackets):")
    for col, row in result.coefficients.iterrows():
        inside = row.ci_low < truth[col] < row.ci_high
        print(f"  {col:18s} {row.time_ratio:.4f}  [{truth[col]}]  "
              f"95% CI {row.ci_low:.4f} - {row.ci_high:.4f}"
              f"{'' if inside else '  (truth outside: one draw, 5% each)'}")
    print(f"goal: under 30 s -> {'met' if total < 30 else 'NOT met'}")


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
