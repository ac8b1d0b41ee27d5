"""Fleet comparison: one row per target x runtime x precision x batch size, ties within noise,
Pareto fronts, Kaplan-Meier summaries of the failure records, and pre-purchase prediction for a
device known only from its spec sheet.

Everything here reads the store and the target YAMLs; nothing is estimated silently. A value the
store does not hold (no power sensor, no adversarial input set, over half the samples surviving
the attack) is None, and the reason is said where a table or a front leaves a row out.

Host side only (numpy, scipy for the t quantile, matplotlib for plots, imported lazily).
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path

import numpy as np

from edgerob.catalog.targets import load_target
from edgerob.device.bench import compare_samples
from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes

# |Cliff's delta| below this is a negligible difference (Romano et al. 2006), as in bench.py.
NEGLIGIBLE_DELTA = 0.147
MIN_PREDICTION_TARGETS = 3


# --- small helpers ------------------------------------------------------------------------------

def target_names(targets) -> list[str] | None:
    """None, a list of names, or a comma-separated string -> a list of names (or None: all)."""
    if targets is None:
        return None
    if isinstance(targets, str):
        targets = targets.split(",")
    names = [str(t).strip() for t in targets if str(t).strip()]
    return names or None


def config_label(row: dict) -> str:
    return f"{row['target']}/{row['runtime']}/{row['precision']}/b{row['batch_size']}"


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


def _failure_groups(store, wanted: set[str] | None, include_forced: bool = True
                    ) -> dict[tuple, dict[str, list[dict]]]:
    """(target, runtime, precision, batch) -> {"attack@eps": records of the latest run that has
    records for that cell}. The runtime comes from the run (failure records have none)."""
    runs = {r["run_id"]: r for r in store.runs()}
    by_run: dict[tuple, dict[str, list[dict]]] = {}
    for f in store.failures():
        run = runs.get(f["run_id"], {})
        if (wanted is not None and f["target"] not in wanted
                or run.get("forced_target") and not include_forced):
            continue
        key = (f["target"], run.get("runtime") or "?", f["precision"], f["batch_size"],
               f"{f['attack']}@{f['eps']:g}")
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


def fleet_table(store, targets=None, include_forced: bool = True) -> list[dict]:
    """One row per target x runtime x precision x batch size x provenance (own measurements,
    or one MLPerf version x system x scenario: published rows never replace own ones).

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
        key = (m["target"], m["runtime"], m["precision"], m["batch_size"],
               *(prov[k] for k in PROVENANCE_KEYS))
        latest.setdefault(key, {})[m["input_set"]] = m
    attack_cells = {(c["run_id"], c["precision"], c["batch_size"], f"{c['attack']}@{c['eps']:g}"): c
                    for c in store.attack_cells()}
    fails = {(*k, *own): v for k, v in fails.items()}  # failure records are always our own
    cache = TargetCache()
    rows = []
    for key in sorted(set(latest) | set(fails), key=lambda k: tuple(str(x or "") for x in k)):
        target, runtime, precision, batch = key[:4]
        sets = latest.get(key, {})
        clean = sets.get("clean")
        row = {"target": target, "runtime": runtime, "precision": precision,
               "batch_size": batch, "run_id": clean["run_id"] if clean else None}
        row.update(run_info.get(row["run_id"]) or provenance(None))
        row["source_label"] = source_label(row)
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
            a: {**failure_summary(rs, cell := attack_cells.get((rs[0]["run_id"], precision, batch,
                                                                 a))),
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
            ax.annotate(f"{r['precision']} b{r['batch_size']}", (r[x], r[y]), fontsize=7,
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
    precisions = sorted({k[2] for k in groups})
    colors = _colors([k[0] for k in groups])
    fig = _new_figure(max(6.4, 5.2 * len(precisions)), 4.2)
    axes = fig.subplots(1, len(precisions), squeeze=False)[0]
    styles = ["-", "--", ":", "-."]
    batch_styles = {b: styles[i % 4] for i, b in enumerate(sorted({k[3] for k in groups}))}
    all_t = []
    for ax, prec in zip(axes, precisions):
        for (target, runtime, p, batch), per_attack in sorted(groups.items()):
            if p != prec:
                continue
            for attack, recs in per_attack.items():
                dur = [r["duration_s"] for r in recs]
                ev = [r["event"] for r in recs]
                t, s = km_curve(dur, ev)
                t = np.append(t, max(dur))
                s = np.append(s, s[-1])
                all_t += [d for d in dur if d > 0]
                ax.step(t, s, where="post", color=colors[target], ls=batch_styles[batch],
                        label=f"{target} b{batch} {attack}")
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
    for (target, runtime, p, batch), per_attack in groups.items():
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


def compare_fleet(store, targets=None, out_dir: str | Path | None = None) -> dict:
    """The whole comparison: {"rows", "fronts", "plots"} (plots only when out_dir is given)."""
    rows = fleet_table(store, targets)
    if not rows:
        raise EdgerobError(f"no measurements in {getattr(store, 'url', 'the store')}: run "
                           f"`edgerob profile` first")
    fronts = pareto_fronts(rows)
    plots = plot_fleet(store, rows, fronts, out_dir, targets) if out_dir is not None else []
    return {"rows": rows, "fronts": fronts, "plots": plots}


# --- pre-purchase prediction ----------------------------------------------------------------------

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
