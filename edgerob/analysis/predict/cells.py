"""The store's results as (device configuration, workload) cells, and predictions from them.

A published MLPerf result is a run with source "mlperf" and model "mlperf:BENCHMARK" (a model
without the prefix is read as having it); its workload is the benchmark x scenario, one column
per MLPerf version (software drifts between versions), and its value the scenario's headline
metric (Offline/Server throughput per accelerator where the store has it). An own measurement's
workload is model x precision x batch size and its value the throughput. A device configuration
is the target with the run's configuration (else its engines label) and accelerator count; own
rows share the target's default configuration (MaxP on the GPU) when measured in the mode the
catalog's peak figures assume (or "default", or no mode recorded); own rows of another power
mode are a configuration of their own, "TARGET (MODE)", whose spec figures are the catalog's
scaled to that mode (`Target.mode_scale`: GPU clock cap x TPCs on). Rows of forced runs are
left out.
"""

from __future__ import annotations

import math

import numpy as np

from edgerob.analysis.compare import forced_runs
from edgerob.analysis.predict.matrix import (Matrix, cold_fill, cold_validate, cross_validate,
                                             fill, support)
from edgerob.catalog.targets import load_target, mode_base
from edgerob.errors import EdgerobError

HEADLINE = {"SingleStream": "latency_p90_ms", "MultiStream": "latency_p99_ms",
            "Offline": "throughput_sps", "Server": "throughput_sps"}
ENERGY = "energy_per_inference_j"
# What one sample of an MLPerf benchmark is (a benchmark is its own unit); own models: images.
# Benchmarks not named here count "samples".
SAMPLE_NOUNS = {"resnet50": "images", "retinanet": "images", "ssd-mobilenet": "images",
                "ssd-resnet34": "images", "bert-99": "sequences", "bert-99.9": "sequences",
                "rnnt": "utterances", "3d-unet-99": "volumes", "3d-unet-99.9": "volumes"}
_UNITS = {"latency_p90_ms": "p90 ms", "latency_p99_ms": "p99 ms",
          ENERGY: "J per {noun_1}"}


def unit(metric: str, workload: str) -> str:
    """The unit of a prediction: "sequences/s" for BERT's throughput, "J per image", "p90 ms"."""
    bench = workload.split(" ")[0]
    noun = (SAMPLE_NOUNS.get(bench.removeprefix("mlperf:"), "samples")
            if bench.startswith("mlperf:") else "images")
    if metric == "throughput_sps":
        return f"{noun}/s"
    return _UNITS.get(metric, metric).format(noun_1=noun.removesuffix("s"))


def _workload(run: dict, m: dict) -> tuple[str, str, str, str, float | None]:
    """(column, family, network, metric, value) of one clean measurement."""
    if run.get("source") == "mlperf":
        model = run["model"] if run["model"].startswith("mlperf:") else f"mlperf:{run['model']}"
        family = f"{model} {run.get('scenario')}"
        metric = HEADLINE.get(run.get("scenario"))
        value = m.get(metric) if metric else None
        if metric == "throughput_sps" and m.get("throughput_per_accelerator_sps"):
            value = m["throughput_per_accelerator_sps"]
        return f"{family} {run.get('mlperf_version')}", family, model, metric, value
    family = f"{run['model']} {m['precision']} b{m['batch_size']}"
    value = m.get("throughput_sps")
    if not value and m.get("latency_p50_ms"):
        value = m["batch_size"] * 1e3 / m["latency_p50_ms"]
    return family, family, run["model"], "throughput_sps", value


DEFAULT_CONFIGURATIONS = (None, "GPU", "MaxP, GPU")  # where own measurements join the target


def _own_mode(target: str, mode: str | None) -> str | None:
    """The power mode that makes an own row a configuration of its own: None for no mode,
    "default" (a GPU at its default power limit) and the catalog's peak mode."""
    if mode is None or mode == "default":
        return None
    try:
        peak = load_target(target).peak_mode
    except EdgerobError:
        peak = None
    return None if peak is not None and mode_base(mode) == peak else mode


def _config(run: dict, mode: str | None = None) -> str:
    if run.get("source") != "mlperf" and mode:
        return f"{run['target']} ({mode})"
    label = run.get("configuration") or run.get("accelerators")
    n = run.get("n_accelerators")
    if n not in (None, 1):  # per-accelerator figures of a bigger system: its own configuration
        label = f"{label or 'GPU'}, x{n}"
    return run["target"] if label in DEFAULT_CONFIGURATIONS else f"{run['target']} ({label})"


def _speed(metric: str, value: float) -> float:
    """Log speed: larger is faster (or less energy) in every column."""
    return math.log(value) if metric == "throughput_sps" else -math.log(value)


def _value(metric: str, speed: float) -> float:
    return math.exp(speed) if metric == "throughput_sps" else math.exp(-speed)


class Cells:
    """Both quantities' matrices ("speed": each column's headline metric; "energy": J per
    inference) with each column's metric and each row's target."""

    def __init__(self, store, include_forced: bool = False, targets=None):
        runs = {r["run_id"]: r for r in store.runs()}
        forced = set() if include_forced else forced_runs(store)
        best: dict[tuple, float] = {}
        self.metric: dict[str, str] = {}
        self.family: dict[str, str] = {}
        self.network: dict[str, str] = {}  # column: the network it runs (resnet50, own model)
        self.target: dict[str, str] = {}
        self.meta: dict[str, dict] = {}  # column: source, scenario, precision, batch size
        self.mode: dict[str, str] = {}  # configuration row: its power mode, where it has one
        own_modes: dict[tuple, str | None] = {}
        for m in store.measurements():
            run = runs.get(m["run_id"])
            if (run is None or m["input_set"] != "clean" or m["run_id"] in forced
                    or targets is not None and m["target"] not in targets):
                continue
            col, fam, net, metric, value = _workload({**run, "target": m["target"]}, m)
            mode = m.get("power_mode")
            if run.get("source") != "mlperf":
                key = (m["target"], mode)
                if key not in own_modes:
                    own_modes[key] = _own_mode(m["target"], mode)
                mode = own_modes[key]
            row = _config({**run, "target": m["target"]}, mode)
            if mode:
                self.mode[row] = mode
            for q, met, v in (("speed", metric, value), ("energy", ENERGY, m.get(ENERGY))):
                if met and v and v > 0 and math.isfinite(v):
                    s = _speed(met, v)
                    best[(q, row, col)] = max(s, best.get((q, row, col), -math.inf))
            self.metric[col], self.family[col], self.target[row] = metric, fam, m["target"]
            self.network[col] = net
            mlperf = run.get("source") == "mlperf"
            self.meta[col] = {"source": "mlperf" if mlperf else "measured",
                              "mlperf_version": run.get("mlperf_version") if mlperf else None,
                              "scenario": run.get("scenario") if mlperf else None,
                              "precision": m["precision"],
                              "batch_size": None if mlperf else m["batch_size"]}
        self.values = best

    def matrix(self, quantity: str, extra_rows: list[str] = ()) -> Matrix:
        keys = [k for k in self.values if k[0] == quantity]
        rows = sorted({k[1] for k in keys} | set(extra_rows))
        cols = sorted({k[2] for k in keys})
        y = np.full((len(rows), len(cols)), np.nan)
        ri, ci = {r: i for i, r in enumerate(rows)}, {c: j for j, c in enumerate(cols)}
        for (_q, r, c), s in self.values.items():
            if _q == quantity:
                y[ri[r], ci[c]] = s
        return Matrix(rows, [self.target.get(r, r) for r in rows], cols,
                      [self.family[c] for c in cols], y, [self.network[c] for c in cols])


def _specs(target: str, cache: dict, mode: str | None = None) -> dict | None:
    """Peak INT8 TOPS (else FP16) and memory bandwidth from the catalog, in power mode `mode`
    where the catalog has its figures (`Target.specs_in`); None off-catalog."""
    if (target, mode) not in cache:
        try:
            s = load_target(target).specs_in(mode)
            cache[(target, mode)] = {
                "peak_tops": s.peak_tops.get("int8") or s.peak_tops.get("fp16"),
                "memory_bandwidth_gbs": s.memory_bandwidth_gbs}
        except EdgerobError:
            cache[(target, mode)] = None
    return cache[(target, mode)]


def _row_specs(cells: Cells, mat: Matrix, cache: dict) -> dict:
    """Spec figures by device (the catalog's, at its peak mode) and, for configuration rows of
    another power mode, by row name (scaled to the mode)."""
    specs = {g: _specs(g, cache) for g in set(mat.groups)}
    for row, g in zip(mat.rows, mat.groups):
        if row in cells.mode and row not in specs:
            specs[row] = _specs(g, cache, cells.mode[row])
    return specs


def families(cells: Cells, *, mlperf: str | None = None, scenario: str | None = None,
             model: str | None = None, precision: str | None = None,
             batch_size: int | None = None) -> list[str]:
    """The workload families a query names: an MLPerf benchmark x scenario, or an own model at
    every stored precision x batch size unless given."""
    if mlperf:
        bench = mlperf if mlperf.startswith("mlperf:") else f"mlperf:{mlperf}"
        return [f"{bench} {scenario}"]
    return sorted({f for f in cells.family.values() if f.startswith(f"{model} ")
                   and (precision is None or f.split(" ")[1] == precision)
                   and (batch_size is None or f.split(" ")[2] == f"b{batch_size}")})


def predict(store, target: str, *, mlperf: str | None = None, scenario: str | None = None,
            version: str | None = None, model: str | None = None, precision: str | None = None,
            batch_size: int | None = None, level: float = 0.9,
            include_forced: bool = False) -> list[dict]:
    """Predictions for every configuration of `target` on a workload (`mlperf` + `scenario`,
    every stored version unless `version`; or `model`, every precision x batch size unless
    given), speed and energy per inference, with the method chosen by cross-validation and a
    split-conformal `level` interval. The target's own cells of the workload are hidden from
    every fit, the method choice and the interval, and reported as `measured`."""
    if not 0 < level < 1:
        raise EdgerobError(f"--level must be between 0 and 1 (e.g. 0.9), not {level:g}")
    if (mlperf is None) == (model is None):
        raise EdgerobError("name one workload: --mlperf BENCHMARK --scenario S, or --model DIR")
    if mlperf and scenario not in HEADLINE:
        raise EdgerobError(f"--scenario must be one of {', '.join(HEADLINE)}, not {scenario!r}")
    cells = Cells(store, include_forced)
    fams = families(cells, mlperf=mlperf, scenario=scenario, model=model, precision=precision,
                    batch_size=batch_size)
    where = getattr(store, "url", "the store")
    wanted = {fam: sorted(c for c, f in cells.family.items() if f == fam
                          and (version is None or c == f"{fam} {version}")) for fam in fams}
    if not any(wanted.values()):
        what = (f"{fams[0]}" + (f" {version}" if version else "") if mlperf else
                f"model {model!r}" + (f" at {precision}" if precision else "")
                + (f" batch size {batch_size}" if batch_size else ""))
        raise EdgerobError(f"no results for workload {what} on any target in {where}")
    return predict_cells(cells, target, wanted, level, where)


def predict_cells(cells: Cells, target: str, wanted: dict[str, list[str]], level: float,
                  where: str = "the store") -> list[dict]:
    """`predict` on built cells: `wanted` maps each workload family to the columns to report."""
    cache: dict = {}
    known = target in cells.target.values()
    if not known and _specs(target, cache) is None:
        raise EdgerobError(f"unknown target {target!r}: not in the catalog (targets/) and no "
                           f"results for it in {where}")
    out = []
    for fam, cols in wanted.items():
        for quantity in ("speed", "energy") if cols else ():
            mat = cells.matrix(quantity, [] if known else [target])
            out += _predict_quantity(cells, mat, quantity, target, fam, cols, level, cache)
    return out


def _predict_quantity(cells, mat, quantity, target, family, cols, level, cache):
    rows = [i for i, g in enumerate(mat.groups) if g == target]
    colj = [mat.cols.index(c) for c in cols if c in mat.cols]
    if not colj:
        return []
    held = mat.held_mask(target, family)
    warm = bool(rows) and (~np.isnan(np.where(held, np.nan, mat.y))[rows]).any()
    specs = _row_specs(cells, mat, cache)
    # the target's own cells of the workload are hidden from the method choice and the interval
    # as well as from the fit
    seen = mat.masked(held)
    val = cross_validate(seen) if warm else cold_validate(seen, specs)
    if not val.cells:
        return []
    order = sorted(val.scores, key=lambda m: (m != val.chosen, val.scores[m]))
    why = val.why()
    # warm: the interval from held-out cells whose workload was known on as many devices
    sup = support(seen.y, mat.groups) if warm else [None] * len(mat.cols)
    if not warm:
        why = f"{target} has no results for any workload; " + why.replace(
            "(device, workload) cells", "cells of devices held out whole")
    est = {m: fill(mat.y, held, m, mat.networks) if warm else
           (_or_nan(cold_fill(mat, held, target, specs, m), mat), {}) for m in order}
    out = []
    plain = mat.plain
    for i in rows:
        for j in colj:
            method = next((m for m in order if np.isfinite(est[m][0][i, j])), None)
            metric = ENERGY if quantity == "energy" else cells.metric[mat.cols[j]]
            truth = mat.y[i, j]
            res = {"target": target, "configuration": mat.rows[i], "workload": mat.cols[j],
                   "metric": metric, "predicted": None, "interval": None, "level": level,
                   "method": method, "why": why, "references": [],
                   "devices_with_workload": None if sup[j] is None else int(sup[j]),
                   "measured": None if np.isnan(truth) else _value(metric, truth),
                   "unit": unit(metric, mat.cols[j])}
            if method is not None:
                s = est[method][0][i, j]
                half = val.half_width(level, sup[j], bool(plain[i]))
                res.update(predicted=_value(metric, s), interval=sorted(
                               (_value(metric, s - half), _value(metric, s + half)))
                           if math.isfinite(half) else None,
                           references=_references(mat, est[method][1].get((i, j)), i, j,
                                                  held, metric))
                if method != order[0]:
                    res["why"] += f"; {order[0]} cannot fill this cell, so {method}"
            elif warm:
                res["why"] = (f"no method can fill this cell: no device with {mat.cols[j]} "
                              f"shares a result with {mat.rows[i]}, even through other devices")
            else:
                res["why"] = (f"no method can fill this cell: no device with {mat.cols[j]} has "
                              f"a spec sheet to scale from to {target}'s")
            out.append(res)
    return out


def _or_nan(est, mat: Matrix) -> np.ndarray:
    return np.full(mat.y.shape, np.nan) if est is None else est


def _references(mat: Matrix, refs, i: int, j: int, held: np.ndarray, metric: str) -> list[dict]:
    """What a prediction leaned on: the ratio method's reference devices (value ratio, shared
    workloads), else the counts of results that fixed the device's and the workload's effects."""
    if refs:
        return [{"device": mat.rows[r["row"]], "value": _value(metric, mat.y[r["row"], j]),
                 "ratio": _value(metric, r["log_ratio"]), "shared_workloads": r["shared"],
                 "spread_log": round(r["spread"], 4)} for r in refs]
    train = ~np.isnan(np.where(held, np.nan, mat.y))
    return [{"device_results": int(train[i].sum()), "workload_results": int(train[:, j].sum()),
             "devices": len(set(mat.groups)), "workloads": len(set(mat.families))}]
