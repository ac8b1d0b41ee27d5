"""The matrix predictor (`cells.predict_cells`) for `cost --candidate` and the report: every
workload of the store predicted for one device, in the row shape costing reads, and each device's
own results held out and predicted (how far to trust a prediction)."""

from __future__ import annotations

import numpy as np

from edgerob.analysis.compare import _failure_groups, target_names
from edgerob.analysis.predict.cells import ENERGY, Cells, predict_cells
from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError


def predict_candidate(store, candidate, targets=None, level: float = 0.9,
                      include_forced: bool = False) -> list[dict]:
    """One row per workload column x configuration of `candidate` (a target name or a Target):
    its headline metric (`response`, with `_lo`/`_hi`), energy per inference, throughput where the
    metric is one, median time to failure (predicted latency per query x the median queries to
    failure pooled over the other targets' records at that precision and batch size), the method
    and why. Its own value, if stored, is `truth`, never fitted. `targets` limits the rows used
    (the candidate's own are always read, to be shown); forced runs only with `include_forced`."""
    name = getattr(candidate, "name", candidate)
    names = target_names(targets)
    keep = None if names is None else {*names, name}
    cells = Cells(store, include_forced, keep)
    if not cells.values:
        raise EdgerobError(f"no clean results in {getattr(store, 'url', 'the store')}"
                           + (" for those targets" if names is not None else ""))
    wanted = {f: sorted(c for c in cells.family if cells.family[c] == f)
              for f in sorted(set(cells.family.values()))}
    where = getattr(store, "url", "the store")
    rows = _rows(cells, predict_cells(cells, name, wanted, level, where),
                 _failure_groups(store, keep, include_forced))
    if not any(r["method"] for r in rows):
        raise EdgerobError(f"no workload in {where} can be predicted for {name}: a device with "
                           f"no results needs results from at least 3 devices with spec sheets "
                           f"(peak TOPS, memory bandwidth) to fit and check the spec model")
    others = sorted(set(cells.target.values()) - {name})
    for r in rows:
        r["training_targets"], r["n_targets"] = others, len(others)
    return rows


def _rows(cells: Cells, preds: list[dict], fails: dict) -> list[dict]:
    """The predictor's speed and energy rows of each (configuration, column) merged into one."""
    out: dict[tuple, dict] = {}
    for p in preds:
        key = (p["configuration"], p["workload"])
        meta = cells.meta[p["workload"]]
        row = out.setdefault(key, _blank(p, cells.metric[p["workload"]], meta))
        lo, hi = p["interval"] or (None, None)
        inside = None if p["measured"] is None or lo is None else lo <= p["measured"] <= hi
        if p["metric"] == ENERGY:
            row.update({ENERGY: p["predicted"], f"{ENERGY}_lo": lo, f"{ENERGY}_hi": hi,
                        "energy_method": p["method"],
                        "measured_energy_per_inference_j": p["measured"]})
            continue
        m = p["metric"]
        row.update({m: p["predicted"], f"{m}_lo": lo, f"{m}_hi": hi, "method": p["method"],
                    "why": p["why"], "references": p["references"], "truth": p["measured"],
                    "truth_in_interval": inside})
        if m == "throughput_sps" and meta["batch_size"] and p["predicted"]:
            # own rows: the latency of one batch, what a query to the deployed model takes
            b = meta["batch_size"]
            row.update(latency_p50_ms=b * 1e3 / p["predicted"],
                       latency_p50_ms_lo=b * 1e3 / hi if hi else None,
                       latency_p50_ms_hi=b * 1e3 / lo if lo else None)
            _failures(row, fails)
    return list(out.values())


def _blank(p: dict, metric: str, meta: dict) -> dict:
    row = {"candidate": p["target"], "configuration": p["configuration"],
           "workload": p["workload"], "group": p["workload"], "response": metric,
           "level": p["level"], **meta, "method": None, "why": None, "energy_method": None,
           "references": [], "truth": None, "truth_in_interval": None,
           "measured_energy_per_inference_j": None, "notes": [],
           "median_queries_to_failure": None, "failure_attack": None,
           "training_targets": []}
    for k in {metric, "throughput_sps", "latency_p50_ms", ENERGY, "median_time_to_failure_s"}:
        row.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
    return row


def _failures(row: dict, fails: dict) -> None:
    pooled: dict[str, list[dict]] = {}
    for (t, _mode, _rt, p, b), per_attack in fails.items():
        if p == row["precision"] and b == row["batch_size"] and t != row["candidate"]:
            for attack, recs in per_attack.items():
                pooled.setdefault(attack, []).extend(recs)
    if not pooled:
        return
    attack = max(pooled, key=lambda a: (len(pooled[a]), a))
    recs = pooled[attack]
    q = km_median([r["queries"] for r in recs], [r["event"] for r in recs])
    row.update(failure_attack=attack, median_queries_to_failure=q)
    if q is None:
        row["notes"].append("over half the attacked samples survive the budget: no median time "
                            "to failure")
        return
    for s in ("", "_lo", "_hi"):
        lat = row[f"latency_p50_ms{s}"]
        row[f"median_time_to_failure_s{s}"] = None if lat is None else q * lat / 1e3
    row["notes"].append("time to failure: predicted latency x the median queries to failure "
                        "measured on the other targets at this precision and batch size")


def held_out(store, targets=None, level: float = 0.9, include_forced: bool = False,
             devices=None) -> list[dict]:
    """Each device's results of each workload hidden and predicted from the rest by the
    predictor (its method choice and interval included): per device, cells predicted, median and
    max |relative error|, the fraction inside the interval, energy's median |relative error| and
    the methods chosen; `details` has the cells. `devices`: the devices held out (default every
    device of `targets`; each costs a cross-validation per workload)."""
    names = target_names(targets)
    cells = Cells(store, include_forced, None if names is None else set(names))
    fams = sorted(set(cells.family.values()))
    out = []
    for dev in sorted(set(cells.target.values())):
        if devices is not None and dev not in devices:
            continue
        mine = {c for (_q, r, c) in cells.values if cells.target[r] == dev}
        details = []
        for f in fams:
            cols = sorted(c for c in mine if cells.family[c] == f)
            if cols:
                details += [p for p in predict_cells(cells, dev, {f: cols}, level)
                            if p["measured"] is not None and p["predicted"] is not None]
        speed = [p for p in details if p["metric"] != ENERGY]
        err = [abs(p["predicted"] / p["measured"] - 1) for p in speed]
        inside = [p["interval"][0] <= p["measured"] <= p["interval"][1] for p in speed
                  if p["interval"]]
        en = [abs(p["predicted"] / p["measured"] - 1) for p in details if p["metric"] == ENERGY]
        out.append({"target": dev, "cells": len(speed),
                    "median_abs_rel_error": float(np.median(err)) if err else None,
                    "max_abs_rel_error": max(err) if err else None,
                    "inside_interval_fraction": float(np.mean(inside)) if inside else None,
                    "energy_median_abs_rel_error": float(np.median(en)) if en else None,
                    "methods": sorted({p["method"] for p in speed}), "details": details})
    return out
