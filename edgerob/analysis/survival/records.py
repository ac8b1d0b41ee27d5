"""The failure records as a DataFrame: loaded from a store, or drawn from a known AFT (checks
and benchmarks); and the training cost of their models from the model cache."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import sqlalchemy as sa

from edgerob.analysis.compare import LEFT_OUT_FORCED, failure_modes
from edgerob.analysis.survival.design_matrix import DURATIONS, _split_column
from edgerob.errors import EdgerobError
from edgerob.files import cache_dir
from edgerob.store import failures as failures_table, measurements, runs


# --- loading --------------------------------------------------------------------------------

def load_failures(store, duration: str = "time", include_forced: bool = False,
                  targets: list[str] | None = None) -> pd.DataFrame:
    """The failure records of `store` (an `edgerob.store.Store`) as one DataFrame: those of
    `targets` (default all), without the records of forced runs (measured with --force-target
    on a machine that is not the target) unless `include_forced`; a note says how many.

    Columns: run_id, model, model_sha256, target, power_mode (the record's own, or for records
    stored before 0007 the mode of the run's measurements of that precision and batch size,
    `compare.failure_modes`; None where not recorded or not one), precision, batch_size,
    log2_batch_size, attack, eps, sample_id, queries, budget_queries, duration_s, energy_j,
    event, and `duration` (the one
    being modelled: `duration_s` for "time", `energy_j` for "energy"). `df.attrs` holds
    `duration`, `unit` and `notes`.
    """
    if duration not in DURATIONS:
        raise EdgerobError(f"unknown duration {duration!r}; allowed: {', '.join(DURATIONS)}")
    q = (sa.select(failures_table, runs.c.model, runs.c.model_sha256, runs.c.forced_target)
         .select_from(failures_table.outerjoin(runs, failures_table.c.run_id == runs.c.run_id))
         .order_by(failures_table.c.id))
    if targets:
        q = q.where(failures_table.c.target.in_(list(targets)))
    with store.engine.connect() as c:
        df = pd.read_sql(q, c)
    forced = df.pop("forced_target").eq(True)  # NULL (before verification existed): not forced
    notes = []
    if forced.any() and not include_forced:
        notes.append(f"left out {int(forced.sum())} failure record(s) {LEFT_OUT_FORCED}")
        df = df[~forced].reset_index(drop=True)
    if df.empty:
        raise EdgerobError(f"no failure records in {store.url}"
                           + (f" for {', '.join(targets)}" if targets else "")
                           + (" other than forced ones (--include-forced uses them)"
                              if forced.any() else ": profile with a profile that has a "
                                                   "query_attack first (edgerob profile)"))
    df["model"] = df["model"].fillna("unknown")
    modes = failure_modes(store)  # for records stored without a mode (before 0007)
    df["power_mode"] = [m if isinstance(m, str) else modes.get((r, p, b)) for m, r, p, b in
                        zip(df["power_mode"], df["run_id"], df["precision"], df["batch_size"])]
    unmoded = df["power_mode"].isna()
    if unmoded.any() and not unmoded.all():
        notes.append(f"{int(unmoded.sum())} of {len(df)} records have no recorded power mode: "
                     f"their own power_mode level (TARGET/unknown), pooled with no mode")
    col, unit = DURATIONS[duration]
    if duration == "energy":
        has = df["energy_j"].notna()
        if not has.any():
            with store.engine.connect() as c:
                profs = sorted({p or "none" for (p,) in c.execute(
                    sa.select(measurements.c.profiler).distinct()
                    .where(measurements.c.run_id.in_(df["run_id"].unique().tolist())))})
            raise EdgerobError(f"no energy was measured for these failure records (profiler "
                               f"{', '.join(profs) or 'none'}): fit --duration time")
        if not has.all():
            notes.append(f"{int((~has).sum())} of {len(df)} records have no energy (no sensor): "
                         f"left out")
            df = df[has].reset_index(drop=True)
    df["duration"] = df[col].astype(float)
    df["event"] = df["event"].astype(int)
    df["eps"] = df["eps"].astype(float)
    df["log2_batch_size"] = np.log2(df["batch_size"].astype(float))
    df.attrs.update(duration=duration, unit=unit, notes=notes)
    return df


def cached_training(df: pd.DataFrame) -> dict[str, tuple[float, int | None]]:
    """Train time (s) and number of training samples of each model in `df`, read from the cards
    of models edgerob trained and cached (matched by checkpoint sha256): {model name:
    (train_time_s, n_train_samples)}, the count None on cards written before it was recorded.
    Models not found are absent."""
    want = {}
    if "model_sha256" in df:
        want = {s: m for s, m in df[["model_sha256", "model"]].drop_duplicates()
                .itertuples(index=False) if isinstance(s, str) and s}
    found = {}
    for card in sorted((cache_dir() / "models").glob("*/model.json")):
        try:
            raw = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sha, t, n = raw.get("checkpoint_sha256"), raw.get("train_time_s"), \
            raw.get("n_train_samples")
        if sha in want and isinstance(t, (int, float)) and t > 0:
            ok = isinstance(n, int) and not isinstance(n, bool) and n > 0
            found[want[sha]] = (float(t), n if ok else None)
    return found


# --- synthetic records (checks and benchmarks) -----------------------------------------------

def simulate_failures(n: int = 2520, family: str = "weibull", *, sigma: float = 0.5,
                      intercept: float = math.log(0.5), time_ratios: dict | None = None,
                      targets=("jetson-orin-nano-8gb", "l4"), precisions=("fp32", "fp16", "int8"),
                      batch_sizes=(1, 8, 32), attack: str = "square", eps: float = 0.15,
                      censored: float = 0.25, seed: int = 0) -> pd.DataFrame:
    """Failure records drawn from a known AFT: log T = intercept + sum log(time ratio) * x +
    sigma * W, W standard extreme-value (min) for "weibull" (shape 1/sigma), standard normal for
    "lognormal", standard logistic for "loglogistic"; independent log-normal censoring tuned to
    about `censored` of the records. `time_ratios` keys are design columns, e.g.
    {"precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
    "target[l4]": 0.3}. Same columns as `load_failures`."""
    rng = np.random.default_rng(seed)
    ratios = time_ratios if time_ratios is not None else {
        "precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
        f"target[{targets[-1]}]": 0.3}
    cells = [(t, p, b) for t in targets for p in precisions for b in batch_sizes]
    which = np.arange(n) % len(cells)
    tgt = np.array([cells[i][0] for i in which])
    prec = np.array([cells[i][1] for i in which])
    bs = np.array([cells[i][2] for i in which])
    lp = np.full(n, intercept)
    for col, r in ratios.items():
        name, level = _split_column(col)
        x = {"precision": prec, "target": tgt}.get(name)
        lp += math.log(r) * ((x == level) if level is not None else np.log2(bs))
    if family == "weibull":
        w = np.log(rng.exponential(size=n))
    elif family == "lognormal":
        w = rng.standard_normal(n)
    elif family == "loglogistic":
        w = rng.logistic(size=n)
    else:
        raise EdgerobError(f"simulate_failures: unknown family {family!r}")
    t = np.exp(lp + sigma * w)
    if censored > 0:
        z = rng.standard_normal(n)
        lo, hi = float(np.log(t).min()) - 10, float(np.log(t).max()) + 10
        for _ in range(60):  # bisection on the censoring location
            mid = (lo + hi) / 2
            frac = np.mean(np.exp(mid + z) < t)
            lo, hi = (mid, hi) if frac > censored else (lo, mid)
        c = np.exp((lo + hi) / 2 + z)
    else:
        c = np.full(n, np.inf)
    dur = np.minimum(t, c)
    event = (t <= c).astype(int)
    per_query = 1e-3 * bs  # a notional time per query, only to fill queries
    queries = np.maximum(1, np.ceil(dur / per_query)).astype(int)
    sample = np.zeros(n, dtype=int)
    for i in range(len(cells)):
        m = which == i
        sample[m] = np.arange(m.sum())
    df = pd.DataFrame({"run_id": [f"sim-{x}" for x in tgt], "model": "sim-model",
                       "model_sha256": "0" * 64, "target": tgt, "precision": prec,
                       "batch_size": bs, "log2_batch_size": np.log2(bs), "attack": attack,
                       "eps": float(eps), "sample_id": sample, "queries": queries,
                       "budget_queries": np.maximum(queries, 1000), "duration_s": dur,
                       "energy_j": None, "event": event})
    df["duration"] = df["duration_s"]
    df.attrs.update(duration="time", unit="s", notes=[])
    return df
