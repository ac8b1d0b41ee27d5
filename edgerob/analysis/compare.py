"""Fleet comparison: one row per target x power mode x runtime x precision x batch size, ties
within noise, Pareto fronts, the most energy-efficient power mode within a latency budget and
Kaplan-Meier summaries of the failure records (prediction: `predict`).

Everything here reads the store and the target YAMLs; nothing is estimated silently. A value the
store does not hold (no power sensor, no adversarial input set, over half the samples surviving
the attack) is None, and the reason is said where a table or a front leaves a row out.

Host side only (numpy, matplotlib for plots, imported lazily).
"""

from __future__ import annotations

import io
import json
import math
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerob.catalog.targets import load_target
from edgerob.device.bench import compare_samples
from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes

# |Cliff's delta| below this is a negligible difference (Romano et al. 2006), as in bench.py.
NEGLIGIBLE_DELTA = 0.147


# --- small helpers ------------------------------------------------------------------------------

def target_names(targets) -> list[str] | None:
    """None, a list of names, or a comma-separated string -> a list of names (or None: all)."""
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [str(t).strip() for t in targets if str(t).strip()]
    return names or None


def batch_text(row: dict) -> str:
    """"b8", or the scenario of a published row without a batch size (an Offline run is one
    query of `samples_per_query` samples: that count is not a batch size)."""
    if row.get("batch_size") is None:
        return row.get("scenario") or "—"
    return f"b{row['batch_size']}"


def config_label(row: dict) -> str:
    mode = f"@{row['power_mode']}" if row.get("power_mode") else ""
    return f"{row['target']}{mode}/{row['runtime']}/{row['precision']}/{batch_text(row)}"


def _num(v) -> bool:
    return v is not None and isinstance(v, (int, float)) and math.isfinite(v)


class TargetCache:
    """Target YAMLs by name, loaded once; a name without a loadable YAML gives None and a note."""

    def __init__(self):
        self._targets: dict = {}
        self.notes: dict[str, str] = {}

    def get(self, name: str):
        if name not in self._targets:
            try:
                self._targets[name] = load_target(name)
            except EdgerobError as e:
                self._targets[name] = None
                self.notes[name] = str(e)
        return self._targets[name]


# --- Kaplan-Meier ---------------------------------------------------------------------------------

def km_curve(durations, events) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier step function: times (from 0) and S(t) from each time until the next."""
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=bool)
    times, surv = [0.0], [1.0]
    s, at_risk = 1.0, len(t)
    for time_i in np.unique(t):
        here = t == time_i
        deaths = int((here & e).sum())
        if deaths:
            s *= 1 - deaths / at_risk
            times.append(float(time_i))
            surv.append(s)
        at_risk -= int(here.sum())
    return np.array(times), np.array(surv)


def restricted_mean(durations, events, horizon: float | None = None) -> float | None:
    """Area under the Kaplan-Meier curve from 0 to `horizon` (default: the longest recorded
    duration, i.e. the attack budget): the restricted mean time to failure. Where samples survive
    the budget it is a lower bound on the unrestricted mean E[T]."""
    t = np.asarray(durations, dtype=np.float64)
    if len(t) == 0:
        return None
    horizon = float(t.max()) if horizon is None else float(horizon)
    times, surv = km_curve(t, events)
    edges = np.append(times, np.inf)
    area = 0.0
    for i, s in enumerate(surv):
        lo, hi = edges[i], min(edges[i + 1], horizon)
        if hi > lo:
            area += s * (hi - lo)
    return float(area)


def _km_or_none(values, events) -> float | None:
    """Kaplan-Meier median of a column some records lack (no sensor, older records): None."""
    return None if None in values else km_median(values, events)


def failure_summary(records: list[dict], cell: dict | None = None) -> dict:
    """Kaplan-Meier summary of one group of failure records (one attack, one configuration);
    `cell` is its `attack_cells` row (samples left out as misclassified clean), if stored."""
    ev = [r["event"] for r in records]
    energy = [r["energy_j"] for r in records]
    dur = [r["duration_s"] for r in records]
    share = [r.get("duration_share_s") for r in records]
    return {
        "failure_clean_wrong": cell["n_clean_wrong"] if cell else None,
        "failure_records": len(records),
        "failure_events": int(sum(ev)),
        "failure_censored": len(records) - int(sum(ev)),
        "budget_queries": max(r["budget_queries"] for r in records),
        "median_queries_to_failure": km_median([r["queries"] for r in records], ev),
        "median_time_to_failure_s": km_median(dur, ev),
        "median_energy_to_failure_j": _km_or_none(energy, ev),
        # the per-sample share basis (edgerob.device.failures), what the attacker's cost uses
        "median_time_share_to_failure_s": _km_or_none(share, ev),
        "median_energy_share_to_failure_j": _km_or_none([r.get("energy_share_j")
                                                         for r in records], ev),
        # E[T] restricted to the budget: area under the KM curve up to the longest duration
        "mean_time_to_failure_restricted_s": restricted_mean(dur, ev),
        # the same per attacked sample (time shares): the E[T] of TRASH (Meyers et al.)
        "mean_time_share_to_failure_restricted_s":
            None if None in share else restricted_mean(share, ev),
        "failure_horizon_s": float(max(dur)),
    }


def sequential_summary(cell: dict | None) -> dict:
    """A query-attack cell's samples used of available and its failure proportion with the
    anytime-valid interval (attack_cells; issue 17). Empty when the store has no row."""
    if cell is None:
        return {}
    return {"samples_used": cell["n_sampled"], "samples_available": cell["n_available"],
            "failure_rate": cell["failure_rate"], "failure_ci_low": cell["failure_ci_low"],
            "failure_ci_high": cell["failure_ci_high"], "stopped_by": cell["stopped_by"],
            "projected_saved_s": cell["projected_saved_s"]}


# --- forced runs ---------------------------------------------------------------------------------

# How output that leaves forced rows out says so, after "left out N ... row(s)".
LEFT_OUT_FORCED = ("of forced runs (measured with --force-target on a machine that is not the "
                   "target they name); --include-forced uses them")


def forced_runs(store) -> set[str]:
    """Ids of the runs measured with --force-target on a machine that is not the target they
    name. Tables that show rows keep them, marked; what feeds a decision (cost, predictions,
    survival fits) leaves them out unless asked (`include_forced`)."""
    return {r["run_id"] for r in store.runs() if r.get("forced_target")}


def forced_note(store, targets=None) -> str | None:
    """The line output leaving forced runs out prints: how many of the stored rows of `targets`
    (default all) it left out, and the flag that includes them. None where there are none."""
    forced = forced_runs(store)
    if not forced:
        return None
    wanted = set(target_names(targets) or []) or None

    def left_out(rows):
        return sum(r["run_id"] in forced and (wanted is None or r["target"] in wanted)
                   for r in rows)

    n_meas, n_fail = left_out(store.measurements()), left_out(store.failures())
    if not n_meas + n_fail:
        return None
    return (f"left out {n_meas} measurement row(s) and {n_fail} failure record(s) "
            f"{LEFT_OUT_FORCED}")


# --- the fleet table ------------------------------------------------------------------------------

FAILURE_KEYS = ("failure_attack", "failure_records", "failure_events", "failure_censored",
                "budget_queries", "median_queries_to_failure", "median_time_to_failure_s",
                "median_energy_to_failure_j", "mean_time_to_failure_restricted_s",
                "failure_horizon_s", "failure_clean_wrong", "median_time_share_to_failure_s",
                "median_energy_share_to_failure_j", "mean_time_share_to_failure_restricted_s")


def failure_modes(store) -> dict[tuple, str | None]:
    """(run_id, precision, batch_size) -> the power mode of failure records stored without one
    (before revision 0007): they were measured in the run's session of that precision and
    batch size, so they take the mode of its measurement rows where those name exactly one;
    None (not recorded, or several modes: which one is not said, never guessed)."""
    seen: dict[tuple, set] = {}
    for m in store.measurements():
        seen.setdefault((m["run_id"], m["precision"], m["batch_size"]), set()).add(
            m.get("power_mode"))
    return {k: next(iter(v)) if len(v) == 1 else None for k, v in seen.items()}


def record_mode(row: dict, modes: dict[tuple, str | None]) -> str | None:
    """The power mode of a failure record or `attack_cells` row: its own where recorded (since
    0007), else its run's (`failure_modes(store)` is `modes`)."""
    return row.get("power_mode") or modes.get((row["run_id"], row["precision"],
                                               row["batch_size"]))


def _failure_groups(store, wanted: set[str] | None, include_forced: bool = True
                    ) -> dict[tuple, dict[str, list[dict]]]:
    """(target, power mode, runtime, precision, batch) -> {"attack@eps": records of the latest
    run that has records for that cell}. The runtime comes from the run, the mode from the
    record (`record_mode`: its own, or its run's measurements' for records stored before)."""
    runs = {r["run_id"]: r for r in store.runs()}
    modes = failure_modes(store)
    by_run: dict[tuple, dict[str, list[dict]]] = {}
    for f in store.failures():
        run = runs.get(f["run_id"], {})
        if (wanted is not None and f["target"] not in wanted
                or run.get("forced_target") and not include_forced):
            continue
        key = (f["target"], record_mode(f, modes), run.get("runtime") or "?", f["precision"],
               f["batch_size"], f"{f['attack']}@{f['eps']:g}")
        by_run.setdefault(key, {}).setdefault(f["run_id"], []).append(f)
    out: dict[tuple, dict[str, list[dict]]] = {}
    for (*cell, attack), per_run in by_run.items():
        latest = max(per_run, key=lambda rid: (runs.get(rid, {}).get("started_at") or "",
                                               max(r["id"] for r in per_run[rid])))
        out.setdefault(tuple(cell), {})[attack] = per_run[latest]
    return out


PROVENANCE_KEYS = ("source", "mlperf_version", "system_name", "benchmark", "scenario")
MEASURED = "measured"
# The published rows that stand beside own measurements in prediction and cost: ResNet-50 (the
# workload those compare), one accelerator, no serving or partitioning layer (Triton, MIG).
PREDICTED_BENCHMARK = "mlperf:resnet50"


def provenance(run: dict | None) -> dict:
    """Where a run's numbers come from: source "measured" (by edgerob, here or on a device) or
    "mlperf" (imported published results), with the MLPerf version, system, benchmark, scenario,
    the engines that ran, the device configuration, the accelerator count and the file."""
    run = run or {}
    source = run.get("source") or MEASURED
    return {"source": source,
            "mlperf_version": run.get("mlperf_version"), "system_name": run.get("system_name"),
            "benchmark": run.get("model") if source != MEASURED else None,
            "scenario": run.get("scenario"), "accelerators": run.get("accelerators"),
            "configuration": run.get("configuration"),
            "n_accelerators": run.get("n_accelerators"),
            "source_path": run.get("source_path")}


def single_device_resnet50(row: dict) -> bool:
    """Own rows, and published ResNet-50 rows of one accelerator without Triton or MIG (rows
    stored before these columns existed count as such: that importer read nothing else)."""
    if row.get("source", MEASURED) == MEASURED:
        return True
    extra = [p for p in (row.get("configuration") or "").split(", ")[2:] if p]
    return (row.get("benchmark") in (None, PREDICTED_BENCHMARK)
            and row.get("n_accelerators") in (None, 1) and not extra)


def source_label(row: dict) -> str:
    """"measured", or e.g. "MLPerf v3.0 Orin_TRT resnet50 Offline" (and "GPU + 2 DLA" where not
    GPU)."""
    if row.get("source", MEASURED) == MEASURED:
        return MEASURED
    acc = row.get("accelerators")
    bench = (row.get("benchmark") or "").removeprefix("mlperf:")
    return " ".join(str(x) for x in ("MLPerf", row.get("mlperf_version"), row.get("system_name"),
                                     bench, row.get("scenario")) if x) + (
        f" ({acc})" if acc and acc != "GPU" else "")


def side_by_side_notes(rows: list[dict]) -> list[str]:
    """One line per target that has both its own measurements and imported published rows."""
    by_target: dict[str, set[str]] = {}
    for r in rows:
        by_target.setdefault(r["target"], set()).add(r.get("source", MEASURED))
    return [f"{t}: own measurements and published MLPerf results side by side: same device, "
            f"different model and inputs (MLPerf's benchmark models and data sets vs the model "
            f"edgerob measured), software (the submitter's tuned harness and TensorRT version) "
            f"and power settings; compare them as two sources, not one series"
            for t, s in sorted(by_target.items()) if len(s) > 1]


PUBLISHED = ("none", "latest", "all")
# configuration parts of a published row beyond "MaxP, GPU": a serving or partitioning layer
_VARIANTS = ("Triton", "MIG", "HeteroMultiUse")


def _version_key(version) -> tuple:
    return tuple(int(x) for x in re.findall(r"\d+", str(version or "")))


def select_published(rows: list[dict], published: str = "latest") -> list[dict]:
    """Own rows, then the published ones `published` asks for: "none", "all", or "latest" (the
    default): per device, benchmark, scenario, precision, power setting (MaxP/MaxQ),
    accelerators and their count, one row: the plain configuration before Triton/MIG variants,
    then the newest MLPerf round. Own rows keep their order; published ones follow
    `_published_order`."""
    if published not in PUBLISHED:
        raise EdgerobError(f"--published must be one of {', '.join(PUBLISHED)}, got "
                           f"{published!r}")
    own = [r for r in rows if r.get("source", MEASURED) == MEASURED]
    ref = [r for r in rows if r.get("source", MEASURED) != MEASURED]
    if published == "none":
        return own
    if published == "latest":
        best: dict[tuple, dict] = {}
        for r in ref:
            parts = (r.get("configuration") or "").split(", ")
            key = (r["target"], r.get("benchmark"), r.get("scenario"), r.get("precision"),
                   parts[0], r.get("accelerators"), r.get("n_accelerators"))
            rank = (not any(v in p for p in parts[2:] for v in _VARIANTS),
                    _version_key(r.get("mlperf_version")))
            if key not in best or rank > best[key][0]:
                best[key] = (rank, r)
        keep = {id(r) for _, r in best.values()}
        ref = [r for r in ref if id(r) in keep]
    own.sort(key=lambda r: (r["target"], r.get("runtime") or "", r.get("precision") or "",
                            r.get("batch_size") or 0, r.get("power_mode") or ""))
    return own + sorted(ref, key=_published_order)


_SCENARIOS = ("SingleStream", "MultiStream", "Server", "Offline")


def _published_order(r: dict) -> tuple:
    """ResNet-50 (the workload own rows are compared with) first, then by benchmark, device,
    scenario, precision, configuration, accelerator count, newest round first."""
    sc = r.get("scenario")
    return (r.get("benchmark") != PREDICTED_BENCHMARK, r.get("benchmark") or "", r["target"],
            _SCENARIOS.index(sc) if sc in _SCENARIOS else len(_SCENARIOS),
            r.get("precision") or "", r.get("configuration") or "", r.get("n_accelerators") or 0,
            tuple(-x for x in _version_key(r.get("mlperf_version"))), r.get("system_name") or "")


def fleet_table(store, targets=None, include_forced: bool = True,
                published: str = "all") -> list[dict]:
    """One row per target x power mode x runtime x precision x batch size x provenance (own
    measurements, or one MLPerf version x system x scenario: published rows never replace own
    ones). Two power modes of one target are two rows, never merged; `power_mode` is None where
    the mode was not recorded (a row of its own, not pooled with a recorded mode).

    Measurement fields come from the clean input set (the latest stored row of each cell, with
    its run_id); `accuracy@ATTACK@EPS` from each white-box input set, `robust_accuracy` is the
    worst of them. Failure fields are Kaplan-Meier summaries of the failure records (one attack:
    the one with most records; every attack under `failures_by_attack`): medians are None where
    over half the samples survive the budget. `latencies_ms` holds the per-iteration latencies
    (for `rank_latency`); `latency_rank` ranks within each batch size and source, ties sharing
    a rank. Prices come from targets/NAME.yaml (None where the file or the figure is missing).
    `source` etc. (see `provenance`) say where each row's numbers come from.

    Rows of forced runs are in the table, marked `forced` (a table that shows rows); with
    `include_forced` False they are left out before anything is chosen or summarised, so a
    cell's latest row is its latest verified one (the rows cost and prediction use; a target
    whose rows are all forced is then absent, not an error).

    Own rows come first, then published ones (`select_published`: "none", "latest" or "all").
    A published Offline row has batch_size None and its query's sample count under
    `samples_per_query` (one query of the whole run, not a batch).
    """
    wanted = set(target_names(targets) or []) or None
    forced = forced_runs(store)
    meas = [m for m in store.measurements() if (wanted is None or m["target"] in wanted)
            and (include_forced or m["run_id"] not in forced)]
    fails = _failure_groups(store, wanted, include_forced)
    if wanted:
        seen = {m["target"] for m in meas} | {k[0] for k in fails}
        if not include_forced:  # a target whose rows are all forced is known, not missing
            seen |= {r["target"] for r in store.runs() if r["run_id"] in forced}
        missing = sorted(wanted - seen)
        if missing:
            raise EdgerobError(f"no measurements or failure records for target(s) "
                               f"{', '.join(missing)} in {getattr(store, 'url', 'the store')}")
    run_info = {r["run_id"]: provenance(r) for r in store.runs()}
    own = tuple(provenance(None)[k] for k in PROVENANCE_KEYS)
    latest: dict[tuple, dict[str, dict]] = {}
    for m in meas:  # ordered by id: a later row of the same cell replaces an earlier one
        prov = run_info.get(m["run_id"], provenance(None))
        key = (m["target"], m.get("power_mode"), m["runtime"], m["precision"], m["batch_size"],
               *(prov[k] for k in PROVENANCE_KEYS))
        latest.setdefault(key, {})[m["input_set"]] = m
    modes = failure_modes(store)
    attack_cells = {(c["run_id"], record_mode(c, modes), c["precision"], c["batch_size"],
                     f"{c['attack']}@{c['eps']:g}"): c for c in store.attack_cells()}
    fails = {(*k, *own): v for k, v in fails.items()}  # failure records are always our own
    cache = TargetCache()
    rows = []
    for key in sorted(set(latest) | set(fails), key=lambda k: tuple(str(x or "") for x in k)):
        target, mode, runtime, precision, batch = key[:5]
        sets = latest.get(key, {})
        clean = sets.get("clean")
        row = {"target": target, "power_mode": mode, "runtime": runtime, "precision": precision,
               "batch_size": batch, "run_id": clean["run_id"] if clean else None}
        row.update(run_info.get(row["run_id"]) or provenance(None))
        row["source_label"] = source_label(row)
        row["samples_per_query"] = None
        if row["source"] != MEASURED and row.get("scenario") == "Offline":
            row["samples_per_query"], row["batch_size"] = batch, None
        for k in ("n_samples", "iterations", "latency_p50_ms", "latency_p90_ms",
                  "latency_p99_ms", "latency_mean_ms", "latency_std_ms", "throughput_sps",
                  "power_mean_w", "power_idle_w", "energy_per_inference_j", "accuracy",
                  "power_note", "throttled"):
            row[k] = clean[k] if clean else None
        row["latencies_ms"] = (json.loads(clean["latencies_ms"])
                               if clean and clean["latencies_ms"] else [])
        adv = {name: m for name, m in sets.items() if name != "clean"}
        for name in sorted(adv):
            row[f"accuracy@{name}"] = adv[name]["accuracy"]
        scored = [(m["accuracy"], name) for name, m in adv.items() if m["accuracy"] is not None]
        row["robust_accuracy"], row["robust_input_set"] = min(scored) if scored else (None, None)
        groups = fails.get(key, {})
        row["failures_by_attack"] = {
            a: {**failure_summary(rs, cell := attack_cells.get((rs[0]["run_id"], mode, precision,
                                                                 batch, a))),
                **sequential_summary(cell)} for a, rs in sorted(groups.items())}
        if groups:
            main = max(groups, key=lambda a: (len(groups[a]), a))
            row.update(failure_attack=main, **row["failures_by_attack"][main])
        else:
            row.update({k: None for k in FAILURE_KEYS}, failure_records=0)
        tgt = cache.get(target)
        row["price_purchase_usd"] = tgt.price.purchase_usd if tgt else None
        row["price_cloud_usd_per_h"] = tgt.price.cloud_usd_per_h if tgt else None
        row["target_note"] = cache.notes.get(target)
        # measured with --force-target on a machine that is not the target: marked everywhere
        row["forced"] = any(m["run_id"] in forced for m in sets.values()) or any(
            f["run_id"] in forced for rs in groups.values() for f in rs)
        rows.append(row)
    rows = select_published(rows, published)
    # published rows are ranked apart from ours, and per MLPerf version and scenario
    within = ("batch_size", "source", "mlperf_version", "benchmark", "scenario")
    for row, rank in zip(rows, rank_latency(rows, within=within)):
        row["latency_rank"] = rank
    shared = {}
    for r in rows:
        if r["latency_rank"] is not None:
            k = (*(r[w] for w in within), r["latency_rank"])
            shared[k] = shared.get(k, 0) + 1
    for r in rows:
        r["latency_tie"] = (r["latency_rank"] is not None
                            and shared[(*(r[w] for w in within), r["latency_rank"])] > 1)
    return rows


def public_rows(rows: list[dict]) -> list[dict]:
    """Rows without the per-iteration latencies (for JSON and CSV output)."""
    return [{k: v for k, v in r.items() if k != "latencies_ms"} for r in rows]


# --- ties and ranks -------------------------------------------------------------------------------

def _latencies(row: dict) -> list[float]:
    lat = row.get("latencies_ms") or []
    return json.loads(lat) if isinstance(lat, str) else list(lat)


def latency_tie(a: dict, b: dict) -> bool:
    """True when the latency difference between two configurations is within measurement noise:
    |Cliff's delta| of their per-iteration latencies below 0.147 (negligible); where either has
    no stored latencies, when their p50 +- std intervals overlap."""
    la, lb = _latencies(a), _latencies(b)
    if len(la) >= 2 and len(lb) >= 2:
        return abs(compare_samples(la, lb)["cliffs_delta"]) < NEGLIGIBLE_DELTA
    pa, pb = a.get("latency_p50_ms"), b.get("latency_p50_ms")
    if not (_num(pa) and _num(pb)):
        return False
    sa, sb = a.get("latency_std_ms") or 0.0, b.get("latency_std_ms") or 0.0
    return abs(pa - pb) <= sa + sb


def rank_latency(rows: list[dict], within: tuple[str, ...] = ()) -> list[int | None]:
    """Competition ranks by p50 latency (1 = fastest), one per row, ties sharing a rank; None
    for rows without a latency. Rows are ranked within groups of equal `within` keys (e.g.
    ("batch_size",)); by default all together.

    Sorted by p50, a row shares the rank of the fastest row of the current tie group when it is
    tied with that row (`latency_tie`), else starts a new group at its own position (1, 1, 3).
    Ties are not transitive, so a chain of small steps does not collapse into one rank.
    """
    ranks: list[int | None] = [None] * len(rows)
    groups: dict[tuple, list[int]] = {}
    for i, r in enumerate(rows):
        if _num(r.get("latency_p50_ms")):
            groups.setdefault(tuple(r.get(k) for k in within), []).append(i)
    for idx in groups.values():
        order = sorted(idx, key=lambda i: rows[i]["latency_p50_ms"])
        leader, rank = None, 0
        for pos, i in enumerate(order, 1):
            if leader is None or not latency_tie(rows[leader], rows[i]):
                leader, rank = i, pos
            ranks[i] = rank
    return ranks


# --- Pareto fronts --------------------------------------------------------------------------------

def _dominates(a: dict, b: dict, x: str, y: str, minimize_x: bool, maximize_y: bool) -> bool:
    ax, bx = (a[x], b[x]) if minimize_x else (-a[x], -b[x])
    ay, by = (a[y], b[y]) if maximize_y else (-a[y], -b[y])
    return ax <= bx and ay >= by and (ax < bx or ay > by)


def pareto_front(rows: list[dict], x: str, y: str, minimize_x: bool = True,
                 maximize_y: bool = True) -> list[dict]:
    """The non-dominated rows (lower x and higher y are better by default), sorted by x. Rows
    without a finite x or y are left out (see `pareto_fronts` for the notes). Equal points are
    kept together."""
    pts = [r for r in rows if _num(r.get(x)) and _num(r.get(y))]
    front = [r for r in pts
             if not any(_dominates(o, r, x, y, minimize_x, maximize_y) for o in pts)]
    return sorted(front, key=lambda r: (r[x] if minimize_x else -r[x]))


@dataclass(frozen=True)
class FrontSpec:
    name: str
    x: str
    y: str
    x_label: str
    y_label: str
    minimize_x: bool = True
    maximize_y: bool = True


FRONTS = (
    FrontSpec("latency_vs_robust_accuracy", "latency_p50_ms", "robust_accuracy",
              "p50 latency per batch (ms)", "robust accuracy (worst input set)"),
    FrontSpec("energy_vs_robust_accuracy", "energy_per_inference_j", "robust_accuracy",
              "energy per inference (J, net of idle)", "robust accuracy (worst input set)"),
    # purchase and rental prices are different units (USD vs USD/h): two fronts, never mixed
    FrontSpec("purchase_price_vs_throughput", "price_purchase_usd", "throughput_sps",
              "purchase price (USD)", "throughput (samples/s)"),
    FrontSpec("cloud_price_vs_throughput", "price_cloud_usd_per_h", "throughput_sps",
              "cloud price (USD/h)", "throughput (samples/s)"),
)

_WHY_MISSING = {
    "latency_p50_ms": "no clean latency measured",
    "robust_accuracy": "no adversarial input set measured",
    "energy_per_inference_j": "no energy per inference (no power sensor)",
    "price_purchase_usd": "no purchase_usd in its target YAML",
    "price_cloud_usd_per_h": "no cloud_usd_per_h in its target YAML",
    "throughput_sps": "no clean throughput measured",
}


def pareto_fronts(rows: list[dict], specs: tuple[FrontSpec, ...] = FRONTS) -> list[dict]:
    """Each front: {name, x, y, labels, front (rows), considered (how many rows had both values),
    excluded: [{config, reason}]}. Published rows of other benchmarks or of several devices are
    not on these axes (another workload; a price is per device): `single_device_resnet50`."""
    rows = [r for r in rows if single_device_resnet50(r)]
    out = []
    for spec in specs:
        excluded = []
        for r in rows:
            missing = [k for k in (spec.x, spec.y) if not _num(r.get(k))]
            if missing:
                why = "; ".join(_WHY_MISSING.get(k, f"no {k}") for k in missing)
                if "power_mean_w" in r and "energy" in spec.x and r.get("power_note"):
                    why += f" ({r['power_note']})"
                if r.get("target_note") and "price" in spec.x:
                    why += f" ({r['target_note']})"
                excluded.append({"config": config_label(r), "reason": why})
        out.append({"name": spec.name, "x": spec.x, "y": spec.y, "x_label": spec.x_label,
                    "y_label": spec.y_label, "minimize_x": spec.minimize_x,
                    "maximize_y": spec.maximize_y,
                    "front": pareto_front(rows, spec.x, spec.y, spec.minimize_x,
                                          spec.maximize_y),
                    "considered": len(rows) - len(excluded), "excluded": excluded})
    return out


# --- the power mode for a latency budget ---------------------------------------------------------

BUDGET_PERCENTILE = "latency_p99_ms"  # the tail a latency bound holds (MLPerf's Server bound)


def _mode_name(row: dict) -> str:
    return row.get("power_mode") or "(not recorded)"


def mode_choice(rows: list[dict], latency_budget_ms: float) -> list[dict]:
    """For each target x runtime x precision x batch size x source: the power mode with the
    least energy per inference among those whose p99 latency (per batch) is within
    `latency_budget_ms`, with that energy. Where none is chosen, `power_mode` is None and
    `reason` says why: no mode meets the bound (the fastest named), or none that meets it had
    energy measured (no sensor: never read as 0). Rows of forced runs are left out (a
    decision). `meeting` lists the modes within the bound, "(not recorded)" for a NULL mode."""
    if not (_num(latency_budget_ms) and latency_budget_ms > 0):
        raise EdgerobError(f"--latency-budget-ms must be a positive number of milliseconds, "
                           f"got {latency_budget_ms!r}")
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        if r.get("forced") or r.get("run_id") is None:
            continue
        key = (r["target"], r["runtime"], r["precision"], r["batch_size"],
               r.get("source_label") or MEASURED)
        groups.setdefault(key, []).append(r)
    out = []
    for (target, runtime, precision, batch, source), group in sorted(
            groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
        timed = [r for r in group if _num(r.get(BUDGET_PERCENTILE))]
        meeting = sorted((r for r in timed if r[BUDGET_PERCENTILE] <= latency_budget_ms),
                         key=lambda r: r[BUDGET_PERCENTILE])
        metered = [r for r in meeting if _num(r.get("energy_per_inference_j"))]
        best = min(metered, key=lambda r: (r["energy_per_inference_j"], r[BUDGET_PERCENTILE]),
                   default=None)
        if best is not None:
            reason = None
        elif not timed:
            reason = "no p99 latency stored"
        elif not meeting:
            fastest = min(timed, key=lambda r: r[BUDGET_PERCENTILE])
            reason = (f"no power mode meets p99 <= {latency_budget_ms:g} ms (fastest: "
                      f"{_mode_name(fastest)}, {fastest[BUDGET_PERCENTILE]:.4g} ms)")
        else:
            why = sorted({r["power_note"] for r in meeting if r.get("power_note")})
            reason = (f"no energy measured in the mode(s) that meet it "
                      f"({', '.join(_mode_name(r) for r in meeting)})"
                      + (f": {'; '.join(why)}" if why else ""))
        out.append({"target": target, "runtime": runtime, "precision": precision,
                    "batch_size": batch, "source_label": source,
                    "latency_budget_ms": latency_budget_ms,
                    "power_mode": best.get("power_mode") if best else None,
                    "mode_recorded": bool(best and best.get("power_mode")),
                    "latency_p99_ms": best[BUDGET_PERCENTILE] if best else None,
                    "energy_per_inference_j": best["energy_per_inference_j"] if best else None,
                    "run_id": best["run_id"] if best else None,
                    "meeting": [_mode_name(r) for r in meeting],
                    "without_energy": [_mode_name(r) for r in meeting
                                       if not _num(r.get("energy_per_inference_j"))],
                    "modes_compared": len(group), "reason": reason})
    return out


# --- plots ----------------------------------------------------------------------------------------

def _new_figure(w: float = 6.4, h: float = 4.4):
    from matplotlib.figure import Figure  # no pyplot: no global backend state

    return Figure(figsize=(w, h), dpi=100, layout="constrained")


def _colors(names: list[str]) -> dict[str, tuple]:
    from matplotlib import colormaps

    cmap = colormaps["tab10"]
    return {n: cmap(i % 10) for i, n in enumerate(sorted(set(names)))}


def _maybe_log(ax, axis: str, values) -> None:
    v = [x for x in values if _num(x) and x > 0]
    if v and max(v) / min(v) > 20:
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def front_figure(rows: list[dict], front: dict):
    """Every row with both values (grey), the front highlighted and joined by its staircase."""
    fig = _new_figure()
    ax = fig.add_subplot()
    x, y = front["x"], front["y"]
    pts = [r for r in rows if _num(r.get(x)) and _num(r.get(y))]
    colors = _colors([r["target"] for r in rows])
    if not pts:
        ax.text(0.5, 0.5, "no configuration has both values", ha="center", va="center",
                transform=ax.transAxes)
        ax.set_axis_off()
    else:
        ax.scatter([r[x] for r in pts], [r[y] for r in pts], s=22, color="0.75", zorder=1,
                   label="dominated")
        fr = front["front"]
        ax.step([r[x] for r in fr], [r[y] for r in fr], where="post", color="0.3", lw=1,
                zorder=2)
        for t in sorted({r["target"] for r in fr}):
            sel = [r for r in fr if r["target"] == t]
            ax.scatter([r[x] for r in sel], [r[y] for r in sel], s=46, color=colors[t],
                       edgecolor="black", zorder=3, label=t)
        for r in fr:
            ax.annotate(f"{r['precision']} {batch_text(r)}", (r[x], r[y]), fontsize=7,
                        xytext=(4, 4), textcoords="offset points")
        _maybe_log(ax, "x", [r[x] for r in pts])
        ax.legend(fontsize=7, loc="best")
        ax.grid(alpha=0.3)
    ax.set_xlabel(front["x_label"])
    ax.set_ylabel(front["y_label"])
    ax.set_title(front["name"].replace("_", " "), fontsize=10)
    return fig


def km_figures(store, targets=None) -> dict[str, object]:
    """Kaplan-Meier curves from the failure records: time to failure by target (one panel per
    precision), and queries to failure by precision (pooled over targets). {} when none."""
    wanted = set(target_names(targets) or []) or None
    groups = _failure_groups(store, wanted)
    if not groups:
        return {}
    precisions = sorted({k[3] for k in groups})
    colors = _colors([k[0] for k in groups])
    fig = _new_figure(max(6.4, 5.2 * len(precisions)), 4.2)
    axes = fig.subplots(1, len(precisions), squeeze=False)[0]
    styles = ["-", "--", ":", "-."]
    batch_styles = {b: styles[i % 4] for i, b in enumerate(sorted({k[4] for k in groups}))}
    all_t = []
    for ax, prec in zip(axes, precisions):
        for (target, mode, runtime, p, batch), per_attack in sorted(
                groups.items(), key=lambda kv: tuple(str(x) for x in kv[0])):
            if p != prec:
                continue
            for attack, recs in per_attack.items():
                dur = [r["duration_s"] for r in recs]
                ev = [r["event"] for r in recs]
                t, s = km_curve(dur, ev)
                t = np.append(t, max(dur))
                s = np.append(s, s[-1])
                all_t += [d for d in dur if d > 0]
                where = f"{target}@{mode}" if mode else target
                ax.step(t, s, where="post", color=colors[target], ls=batch_styles[batch],
                        label=f"{where} b{batch} {attack}")
                cens = [d for d, e in zip(dur, ev) if not e]
                if cens:
                    ax.plot(cens, [s[-1]] * len(cens), "|", color=colors[target], ms=6)
        ax.set_title(f"{prec}: time to failure", fontsize=10)
        ax.set_xlabel("attacker's wall time on the target (s)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, ncols=2 if len(ax.get_lines()) > 16 else 1)
    axes[0].set_ylabel("fraction not yet misclassified")
    for ax in axes:
        _maybe_log(ax, "x", all_t)
    out = {"km_time_by_target": fig}

    pooled: dict[tuple, list[dict]] = {}
    for (target, mode, runtime, p, batch), per_attack in groups.items():
        for attack, recs in per_attack.items():
            pooled.setdefault((p, attack), []).extend(recs)
    fig2 = _new_figure(6.4, 4.0)
    ax = fig2.add_subplot()
    pcolors = _colors(precisions)
    for (p, attack), recs in sorted(pooled.items()):
        q = [r["queries"] for r in recs]
        ev = [r["event"] for r in recs]
        t, s = km_curve(q, ev)
        ax.step(np.append(t, max(q)), np.append(s, s[-1]), where="post", color=pcolors[p],
                label=f"{p} {attack} (n={len(recs)})")
    ax.set_xlabel("queries to failure")
    ax.set_ylabel("fraction not yet misclassified")
    ax.set_title("queries to failure by precision (all targets)", fontsize=10)
    ax.set_ylim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    out["km_queries_by_precision"] = fig2
    return out


def figure_bytes(fig, fmt: str = "png") -> bytes:
    buf = io.BytesIO()
    # no Software/Date metadata: reproducible bytes and no URLs inside the files
    meta = {"Software": None} if fmt == "png" else {"Creator": None, "Date": None}
    fig.savefig(buf, format=fmt, metadata=meta)
    return buf.getvalue()


def save_figure(fig, out_dir: str | Path, stem: str) -> list[Path]:
    """PNG and SVG of `fig` in out_dir, written atomically."""
    paths = []
    for fmt in ("png", "svg"):
        path = Path(out_dir) / f"{stem}.{fmt}"
        atomic_write_bytes(path, figure_bytes(fig, fmt))
        paths.append(path)
    return paths


def plot_fleet(store, rows: list[dict], fronts: list[dict], out_dir: str | Path,
               targets=None) -> list[Path]:
    """Pareto plots and Kaplan-Meier curves as PNG + SVG into out_dir; returns the paths."""
    paths = []
    for f in fronts:
        paths += save_figure(front_figure(rows, f), out_dir, f"pareto_{f['name']}")
    for name, fig in km_figures(store, targets).items():
        paths += save_figure(fig, out_dir, name)
    return paths


def compare_fleet(store, targets=None, out_dir: str | Path | None = None,
                  published: str = "latest", latency_budget_ms: float | None = None) -> dict:
    """The whole comparison: {"rows", "fronts", "plots", "mode_choice"} (plots only when out_dir
    is given; the choice of power mode, `mode_choice`, only with a latency budget); own rows
    first, published ones as `published` says (`select_published`)."""
    if latency_budget_ms is not None:
        mode_choice([], latency_budget_ms)  # a bad budget fails before anything is read
    rows = fleet_table(store, targets, published=published)
    if not rows:
        raise EdgerobError(f"no measurements in {getattr(store, 'url', 'the store')}: run "
                           f"`edgerob profile` first")
    fronts = pareto_fronts(rows)
    choice = mode_choice(rows, latency_budget_ms) if latency_budget_ms is not None else None
    plots = plot_fleet(store, rows, fronts, out_dir, targets) if out_dir is not None else []
    return {"rows": rows, "fronts": fronts, "plots": plots, "mode_choice": choice}
