"""Spec-sheet regression (the pre-purchase model before issue 21): per prediction group, log
performance regressed on the logs of the catalog's peak TOPS / memory bandwidth / TDP across the
measured targets, covariates chosen by leave-one-target-out error. `cost --candidate` and the
report call it; the matrix predictor (`predict.matrix`) uses `fit_loglinear` for devices
without results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from edgerob.analysis.compare import (MEASURED, TargetCache, _failure_groups, _num, fleet_table,
                                      single_device_resnet50, source_label, target_names)
from edgerob.catalog.targets import load_target
from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError

MIN_PREDICTION_TARGETS = 3


LATENCY_COVARIATES = ("peak_tops", "memory_bandwidth_gbs")
ENERGY_COVARIATES = ("tdp_w", "peak_tops", "memory_bandwidth_gbs")


def covariate(target, name: str, precision: str) -> float | None:
    """A spec-sheet figure: peak_tops at `precision`, memory_bandwidth_gbs or tdp_w."""
    if name == "peak_tops":
        return target.specs.peak_tops.get(precision)
    return getattr(target.specs, name)


def _cov_label(name: str, precision: str) -> str:
    return f"peak_tops[{precision}]" if name == "peak_tops" else name


MIN_RESIDUAL_DF = 2  # a model with covariates keeps at least 2 residual df (t(0.975) <= 4.3)


@dataclass
class LogLinearFit:
    """log(y) = b0 + sum_k b_k log(x_k), ordinary least squares, with the classical prediction
    interval yhat +- t(df) s sqrt(1 + x0'(X'X)^-1 x0) in log space (multiplicative in y).
    `loto_rmse_log` is the leave-one-target-out RMS log error of this very model (the covariate
    set it uses, refitted without each training target in turn); `scores` the same for every
    covariate set that was considered."""

    covariates: list[str]
    coef: np.ndarray
    xtx_inv: np.ndarray
    s: float  # residual standard deviation (log scale); nan when df == 0
    df: int
    n: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # measured x ranges
    dropped: list[str] = field(default_factory=list)  # covariate: why it is not in the model
    loto_rmse_log: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    offset: dict[str, float] = field(default_factory=dict)  # covariate: fixed elasticity

    def formula(self, response: str, precision: str) -> str:
        terms = ["1"] + [f"log({_cov_label(c, precision)})" for c in self.covariates]
        terms += [f"offset({e:+g} x log({_cov_label(c, precision)}))"
                  for c, e in self.offset.items()]
        return f"log({response}) ~ {' + '.join(terms)}"

    def predict(self, x: dict[str, float], level: float) -> tuple[float, float | None,
                                                                 float | None]:
        from scipy import stats

        x0 = np.array([1.0] + [math.log(x[c]) for c in self.covariates])
        mid = float(x0 @ self.coef) + sum(e * math.log(x[c]) for c, e in self.offset.items())
        if self.df < 1 or not math.isfinite(self.s):
            return math.exp(mid), None, None
        se = self.s * math.sqrt(1 + float(x0 @ self.xtx_inv @ x0))
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * se
        return math.exp(mid), math.exp(mid - half), math.exp(mid + half)


def loto_rmse(ly: np.ndarray, X: np.ndarray) -> float | None:
    """Leave-one-out RMS error of OLS log(y) ~ X: each row predicted from the others. None where
    a fit without one row is not identified (fewer rows than columns, or singular)."""
    n, k = X.shape
    if n - 1 < k:
        return None
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        if np.linalg.matrix_rank(X[keep]) < k:
            return None
        coef, *_ = np.linalg.lstsq(X[keep], ly[keep], rcond=None)
        errs.append(ly[i] - X[i] @ coef)
    return float(np.sqrt(np.mean(np.square(errs))))


def fit_loglinear(y: list[float], xs: list[dict[str, float | None]], pool: tuple[str, ...],
                  candidate: dict[str, float | None], min_df: int = MIN_RESIDUAL_DF,
                  proportional: dict[str, float] | None = None) -> LogLinearFit:
    """Fit log(y) on the logs of the covariate subset of `pool` with the smallest
    leave-one-target-out error (ties: fewer parameters). A covariate is usable where the
    candidate and every training point have it and it varies; a subset is considered when its
    full fit keeps `min_df` residual degrees of freedom and it is not collinear. The intercept-
    only model (the training targets' geometric mean) is always considered, and so is, for each
    usable covariate in `proportional`, y proportional to x^e with e fixed (e.g. throughput
    proportional to peak TOPS: one fitted parameter, the scale)."""
    n = len(y)
    ly = np.log(np.asarray(y, dtype=np.float64))
    usable, dropped = [], []
    for c in pool:
        vals = [x.get(c) for x in xs]
        if not _num(candidate.get(c)) or candidate[c] <= 0:
            dropped.append(f"{c}: not on the candidate's spec sheet")
        elif not all(_num(v) and v > 0 for v in vals):
            dropped.append(f"{c}: missing on a training target's spec sheet")
        elif np.ptp(np.log(np.asarray(vals, dtype=np.float64))) < 1e-12:
            dropped.append(f"{c}: constant across the training targets")
        else:
            usable.append(c)
    logs = {c: np.log(np.asarray([x[c] for x in xs], dtype=np.float64)) for c in usable}

    def design(combo):
        return np.column_stack([np.ones(n)] + [logs[c] for c in combo])

    scores: dict[tuple, float] = {}
    offsets = {c: e for c, e in (proportional or {}).items() if c in usable}
    for c, e in offsets.items():
        err = loto_rmse(ly - e * logs[c], design(()))
        if err is not None:
            scores[(f"={c}",)] = err
    for k in range(len(usable) + 1):
        if k and n - (k + 1) < min_df:
            break
        for combo in combinations(usable, k):
            X = design(combo)
            if np.linalg.matrix_rank(X) < X.shape[1]:
                continue
            err = loto_rmse(ly, X)
            if err is not None:
                scores[combo] = err
    best = min(scores, key=lambda c: (scores[c], len(c) if c[:1] and c[0][0] != "=" else 0)
               ) if scores else ()
    offset = {best[0][1:]: offsets[best[0][1:]]} if best[:1] and best[0][0] == "=" else {}
    chosen = () if offset else best
    for c in usable:
        if c not in chosen and c not in offset:
            dropped.append(f"{c}: not chosen (leave-one-target-out error)"
                           if any(c in combo for combo in scores) else
                           f"{c}: too few training targets ({n}) to keep {min_df} residual df")
    X = design(chosen)
    target = ly - sum((e * logs[c] for c, e in offset.items()), np.zeros(n))
    coef, *_ = np.linalg.lstsq(X, target, rcond=None)
    resid = target - X @ coef
    df = n - X.shape[1]
    s = math.sqrt(float(resid @ resid) / df) if df > 0 else float("nan")
    ranges = {c: (min(x[c] for x in xs), max(x[c] for x in xs)) for c in (*chosen, *offset)}
    return LogLinearFit(list(chosen), coef, np.linalg.pinv(X.T @ X), s, df, n, ranges, dropped,
                        scores.get(best),
                        {("1 + offset " + combo[0][1:] if combo[:1] and combo[0][0] == "="
                          else "1" + "".join(f" + {c}" for c in combo)): e
                         for combo, e in scores.items()}, offset)


def _specs_dict(target, precision: str, names: tuple[str, ...]) -> dict[str, float | None]:
    return {c: covariate(target, c, precision) for c in names}


def _has_specs(target) -> bool:
    return target is not None and bool(target.specs.peak_tops or target.specs.memory_bandwidth_gbs
                                       or target.specs.tdp_w)


# What is predicted in each group: own rows the p50 latency per batch (throughput follows from
# it); published MLPerf rows their scenario's headline metric.
RESPONSE = {None: "latency_p50_ms", "SingleStream": "latency_p90_ms",
            "MultiStream": "latency_p99_ms", "Offline": "throughput_sps",
            "Server": "throughput_sps"}


def prediction_group(row: dict) -> tuple:
    """Rows predicted from each other: own measurements per precision x batch size; published
    ones per MLPerf version x scenario x precision (software is comparable within a version)."""
    if row.get("source", MEASURED) == MEASURED:
        return (MEASURED, None, None, row["precision"], row["batch_size"])
    return (row["source"], row.get("mlperf_version"), row.get("scenario"), row["precision"], None)


def _better(a: dict, b: dict, response: str) -> bool:
    """Is `a` the better of two rows of one target (higher throughput, else lower latency)?"""
    return a[response] > b[response] if response == "throughput_sps" else (
        a[response] < b[response])


def _per_target_rows(rows: list[dict], cache: TargetCache) -> dict[tuple, dict]:
    """group -> {"rows": {target: its row}, "energy": {target: lowest J/inference row},
    "excluded": {target: why}}. Own rows: the target's preferred runtime, else the fastest;
    published rows: the best (e.g. MaxN over MaxQ). Rows whose engines are not the GPU alone
    (NVIDIA's Jetson Offline runs use GPU + 2 DLA) are excluded: the spec sheet's peak figures
    are the GPU's, so such a row is neither learnt from nor scored against."""
    out: dict[tuple, dict] = {}
    for r in rows:
        if not single_device_resnet50(r):  # another workload, or a system of several devices
            continue
        g = prediction_group(r)
        response = RESPONSE[g[2]]
        if not _num(r.get(response)):
            continue
        cell = out.setdefault(g, {"rows": {}, "energy": {}, "excluded": {}})
        if r.get("accelerators") not in (None, "GPU"):
            cell["excluded"][r["target"]] = (f"{source_label(r)}: ran on {r['accelerators']}; "
                                             f"the spec sheet is the GPU's alone")
            continue
        e = r.get("energy_per_inference_j")
        if _num(e) and e > 0 and (r["target"] not in cell["energy"] or e < cell["energy"][
                r["target"]]["energy_per_inference_j"]):
            cell["energy"][r["target"]] = r
        prev = cell["rows"].get(r["target"])
        tgt = cache.get(r["target"])
        pref = tgt.runtime if tgt and g[0] == MEASURED else None
        if (prev is None or (r["runtime"] == pref) > (prev["runtime"] == pref)
                or ((r["runtime"] == pref) == (prev["runtime"] == pref)
                    and _better(r, prev, response))):
            cell["rows"][r["target"]] = r
    return out


def _range_warnings(fit: LogLinearFit, x: dict[str, float], precision: str) -> list[str]:
    out = []
    for c in fit.ranges:
        lo, hi = fit.ranges[c]
        if not lo <= x[c] <= hi:
            out.append(f"{_cov_label(c, precision)} = {x[c]:g} is outside the measured range "
                       f"{lo:g}-{hi:g}: the prediction extrapolates the fitted trend")
    return out


def _group_label(g: tuple) -> str:
    src, version, scenario, precision, batch = g
    return (f"{precision} b{batch}" if src == MEASURED else
            f"MLPerf {version} {scenario} {precision}")


def _predict_rows(rows: list[dict], failures: dict, cache: TargetCache, candidate,
                  min_targets: int, level: float) -> list[dict]:
    """Predictions for `candidate` (a Target) from the rows of the other targets, per
    `prediction_group`; the candidate's own row of each group, if any, is reported next to the
    prediction (`measured_*`, `truth`, `truth_in_interval`), never used to fit."""
    out = []
    for g, cell in sorted(_per_target_rows(rows, cache).items(),
                          key=lambda kv: tuple(str(x) for x in kv[0])):
        src, version, scenario, precision, batch = g
        response = RESPONSE[scenario]
        per_target = cell["rows"]
        train = {t: r for t, r in per_target.items()
                 if t != candidate.name and _has_specs(cache.get(t))}
        own = per_target.get(candidate.name)
        res = {"candidate": candidate.name, "source": src, "mlperf_version": version,
               "scenario": scenario, "precision": precision, "batch_size": batch,
               "group": _group_label(g), "response": response, "level": level,
               "n_targets": len(train), "training_targets": sorted(train),
               "warnings": [], "notes": []}
        for k in ("latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "throughput_sps",
                  "energy_per_inference_j", "median_time_to_failure_s"):
            res.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
        res.update(latency_model=None, latency_df=None, latency_residual_sd_log=None,
                   model=None, model_df=None, model_loto_rmse_log=None, energy_model=None,
                   median_queries_to_failure=None, failure_attack=None)
        res["truth"] = own[response] if own else None
        res["truth_in_interval"] = None
        res["truth_note"] = cell["excluded"].get(candidate.name)
        res["measured_latency_p50_ms"] = own["latency_p50_ms"] if own else None
        own_e = cell["energy"].get(candidate.name)
        res["measured_energy_per_inference_j"] = own_e["energy_per_inference_j"] if own_e else None
        res["notes"] += [f"excluded {t}: {why}" for t, why in sorted(cell["excluded"].items())]
        if len(train) < min_targets:
            res["notes"].append(f"{len(train)} target(s) with spec sheets at {res['group']}; "
                                f"at least {min_targets} needed")
            out.append(res)
            continue
        cand_x = _specs_dict(candidate, precision, ENERGY_COVARIATES)
        names = sorted(train)
        xs = [_specs_dict(cache.get(t), precision, ENERGY_COVARIATES) for t in names]
        # candidate law: throughput proportional to peak TOPS, latency inversely proportional
        law = {"peak_tops": 1.0 if response == "throughput_sps" else -1.0}
        fit = fit_loglinear([train[t][response] for t in names], xs, LATENCY_COVARIATES, cand_x,
                            proportional=law)
        mid, lo, hi = fit.predict(cand_x, level)
        res.update({response: mid, f"{response}_lo": lo, f"{response}_hi": hi},
                   model=fit.formula(response, precision), model_df=fit.df,
                   model_loto_rmse_log=fit.loto_rmse_log,
                   latency_residual_sd_log=fit.s if math.isfinite(fit.s) else None)
        if response.startswith("latency"):
            res.update(latency_model=res["model"], latency_df=fit.df)
        if response == "latency_p50_ms":  # own rows: throughput from the p50 latency per batch
            res["throughput_sps"] = batch * 1e3 / mid
            res["throughput_sps_lo"] = batch * 1e3 / hi if hi else None
            res["throughput_sps_hi"] = batch * 1e3 / lo if lo else None
        if own is not None and lo is not None:
            res["truth_in_interval"] = lo <= own[response] <= hi
        res["warnings"] += _range_warnings(fit, cand_x, precision)
        res["warnings"] += [f"{_cov_label(d.split(':')[0], precision)} is not on "
                            f"{candidate.name}'s spec sheet: the model leaves it out"
                            for d in fit.dropped if "candidate's spec sheet" in d
                            and d.split(":")[0] in LATENCY_COVARIATES]
        if not fit.covariates and not fit.offset:
            res["notes"].append("no covariate beats the training targets' geometric mean "
                                "(leave-one-target-out): the prediction is that mean")
        res["notes"] += [f"model: {d}" for d in fit.dropped]
        if fit.df < 1:
            res["notes"].append("no residual degrees of freedom: no prediction interval")
        elif fit.df < 3:
            res["notes"].append(f"only {fit.df} residual degree(s) of freedom: the interval is "
                                f"wide because few targets were measured")
        # energy per inference, where measured on enough targets (same group: same basis)
        e_rows = {t: r for t, r in cell["energy"].items() if t in train}
        if len(e_rows) >= min_targets:
            e_names = sorted(e_rows)
            efit = fit_loglinear([e_rows[t]["energy_per_inference_j"] for t in e_names],
                                 [_specs_dict(cache.get(t), precision, ENERGY_COVARIATES)
                                  for t in e_names], ENERGY_COVARIATES, cand_x)
            emid, elo, ehi = efit.predict(cand_x, level)
            res.update(energy_per_inference_j=emid, energy_per_inference_j_lo=elo,
                       energy_per_inference_j_hi=ehi,
                       energy_model=efit.formula("energy_per_inference_j", precision))
            res["warnings"] += [w for w in _range_warnings(efit, cand_x, precision)
                                if w not in res["warnings"]]
        else:
            res["notes"].append(f"energy per inference measured on {len(e_rows)} target(s) "
                                f"at {res['group']}; at least {min_targets} needed")
        if response == "latency_p50_ms":
            _predict_failures(res, failures, candidate, precision, batch, mid, lo, hi)
        out.append(res)
    return out


def _predict_failures(res: dict, failures: dict, candidate, precision: str, batch: int,
                      mid: float, lo: float | None, hi: float | None) -> None:
    """Time to failure = predicted latency per query x median queries to failure, pooled over
    the measured targets' records at this precision and batch size."""
    pooled: dict[str, list[dict]] = {}
    for (t, _rt, p, b), per_attack in failures.items():
        if p == precision and b == batch and t != candidate.name:
            for attack, recs in per_attack.items():
                pooled.setdefault(attack, []).extend(recs)
    if not pooled:
        return
    attack = max(pooled, key=lambda a: (len(pooled[a]), a))
    recs = pooled[attack]
    q = km_median([r["queries"] for r in recs], [r["event"] for r in recs])
    res.update(failure_attack=attack, median_queries_to_failure=q)
    if q is not None:
        res["median_time_to_failure_s"] = q * mid / 1e3
        res["median_time_to_failure_s_lo"] = q * lo / 1e3 if lo else None
        res["median_time_to_failure_s_hi"] = q * hi / 1e3 if hi else None
        res["notes"].append("time to failure: predicted latency x the median queries to "
                            "failure measured at this precision and batch size (the "
                            "interval covers the latency only)")
    else:
        res["notes"].append("over half the attacked samples survive the budget: no "
                            "median time to failure")


def _measured_with_specs(rows: list[dict], cache: TargetCache) -> list[str]:
    """Targets with a spec sheet and a row holding its group's response (measured or imported)."""
    return sorted({r["target"] for r in rows if _num(r.get(RESPONSE[prediction_group(r)[2]]))
                   and _has_specs(cache.get(r["target"]))})


def predict_candidate(store, candidate_target, targets=None, level: float = 0.95,
                      include_forced: bool = False) -> list[dict]:
    """Predict p50 latency, throughput, energy per inference and median time to failure, with
    `level` prediction intervals, at every measured precision x batch size for a device known
    only from its spec sheet (a Target or a target name), from log-linear least-squares fits
    across the measured targets (`targets`: which ones; default all in the store). The
    candidate's own measurements, if any, are never used for the fit (they are reported as
    `measured_*` for comparison). `warnings` flags covariates outside the measured range.
    Rows of forced runs are left out unless `include_forced` (`forced_note` says how many)."""
    cand = load_target(candidate_target) if isinstance(candidate_target, str) else candidate_target
    if not _has_specs(cand):
        raise EdgerobError(f"candidate {cand.name!r} has no spec sheet (specs.peak_tops, "
                           f"memory_bandwidth_gbs, tdp_w are all empty in its target YAML)")
    cache = TargetCache()
    rows = fleet_table(store, targets, include_forced)
    measured = [t for t in _measured_with_specs(rows, cache) if t != cand.name]
    if len(measured) < MIN_PREDICTION_TARGETS:
        raise EdgerobError(
            f"pre-purchase prediction needs clean measurements from at least "
            f"{MIN_PREDICTION_TARGETS} targets whose YAML has specs (peak_tops, "
            f"memory_bandwidth_gbs, tdp_w); the store has {len(measured)}"
            f"{': ' + ', '.join(measured) if measured else ''}. Profile more targets or fill in "
            f"their specs")
    fails = _failure_groups(store, set(target_names(targets) or []) or None, include_forced)
    return _predict_rows(rows, fails, cache, cand, MIN_PREDICTION_TARGETS, level)


def leave_one_target_out(store, targets=None, level: float = 0.95,
                         include_forced: bool = False) -> list[dict]:
    """Hold out each target with specs in turn, predict it from the others (the whole procedure,
    covariate choice included, so the model scored is the model used), and compare with its own
    row in each group (measured, or published). One row per held-out target: cells predicted,
    median and max |relative error| of the predicted response (p50 latency for own rows, the
    scenario's metric for MLPerf rows) and of energy per inference, and the fraction of cells
    whose true value fell inside the prediction interval; `details` has the cells. Rows of
    forced runs are left out unless `include_forced`, as truths as well as training rows."""
    cache = TargetCache()
    rows = fleet_table(store, targets, include_forced)
    measured = _measured_with_specs(rows, cache)
    if len(measured) < MIN_PREDICTION_TARGETS:
        raise EdgerobError(
            f"leave-one-target-out needs clean measurements from at least "
            f"{MIN_PREDICTION_TARGETS} targets whose YAML has specs; the store has "
            f"{len(measured)}{': ' + ', '.join(measured) if measured else ''}")
    fails = _failure_groups(store, set(target_names(targets) or []) or None, include_forced)
    others = [r for r in rows if r["target"] in measured]
    out = []
    for held in measured:
        cells = []
        for p in _predict_rows(others, fails, cache, cache.get(held), 2, level):
            truth, pred = p["truth"], p[p["response"]]
            if pred is None or not _num(truth):
                continue
            cell = {"group": p["group"], "precision": p["precision"],
                    "batch_size": p["batch_size"], "scenario": p["scenario"],
                    "mlperf_version": p["mlperf_version"], "response": p["response"],
                    "n_targets": p["n_targets"], "truth": truth, "predicted": pred,
                    "rel_error": (pred - truth) / truth,
                    "abs_log_error": abs(math.log(pred / truth)),
                    "in_interval": p["truth_in_interval"], "model": p["model"],
                    "model_loto_rmse_log": p["model_loto_rmse_log"],
                    "energy_rel_error": None, "energy_in_interval": None,
                    "extrapolated": any("outside the measured range" in w
                                        for w in p["warnings"])}
            et = p["measured_energy_per_inference_j"]
            if p["energy_per_inference_j"] is not None and _num(et) and et > 0:
                cell["energy_rel_error"] = (p["energy_per_inference_j"] - et) / et
                if p["energy_per_inference_j_lo"] is not None:
                    cell["energy_in_interval"] = (p["energy_per_inference_j_lo"] <= et
                                                  <= p["energy_per_inference_j_hi"])
            cells.append(cell)
        err = [abs(c["rel_error"]) for c in cells]
        inside = [c["in_interval"] for c in cells if c["in_interval"] is not None]
        en = [abs(c["energy_rel_error"]) for c in cells if c["energy_rel_error"] is not None]
        out.append({
            "target": held, "cells": len(cells),
            "median_abs_rel_error": float(np.median(err)) if err else None,
            "max_abs_rel_error": float(max(err)) if err else None,
            "inside_interval_fraction": (sum(inside) / len(inside)) if inside else None,
            "energy_median_abs_rel_error": float(np.median(en)) if en else None,
            "extrapolated_cells": sum(c["extrapolated"] for c in cells), "details": cells})
    return out
