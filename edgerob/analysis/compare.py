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


def failure_summary(records: list[dict]) -> dict:
    """Kaplan-Meier summary of one group of failure records (one attack, one configuration)."""
    ev = [r["event"] for r in records]
    energy = [r["energy_j"] for r in records]
    dur = [r["duration_s"] for r in records]
    return {
        "failure_records": len(records),
        "failure_events": int(sum(ev)),
        "failure_censored": len(records) - int(sum(ev)),
        "budget_queries": max(r["budget_queries"] for r in records),
        "median_queries_to_failure": km_median([r["queries"] for r in records], ev),
        "median_time_to_failure_s": km_median(dur, ev),
        "median_energy_to_failure_j": km_median(energy, ev) if None not in energy else None,
        # E[T] restricted to the budget: area under the KM curve up to the longest duration
        "mean_time_to_failure_restricted_s": restricted_mean(dur, ev),
        "failure_horizon_s": float(max(dur)),
    }


# --- the fleet table ------------------------------------------------------------------------------

FAILURE_KEYS = ("failure_attack", "failure_records", "failure_events", "failure_censored",
                "budget_queries", "median_queries_to_failure", "median_time_to_failure_s",
                "median_energy_to_failure_j", "mean_time_to_failure_restricted_s",
                "failure_horizon_s")


def _failure_groups(store, wanted: set[str] | None) -> dict[tuple, dict[str, list[dict]]]:
    """(target, runtime, precision, batch) -> {"attack@eps": records of the latest run that has
    records for that cell}. The runtime comes from the run (failure records have none)."""
    runs = {r["run_id"]: r for r in store.runs()}
    by_run: dict[tuple, dict[str, list[dict]]] = {}
    for f in store.failures():
        if wanted is not None and f["target"] not in wanted:
            continue
        run = runs.get(f["run_id"], {})
        key = (f["target"], run.get("runtime") or "?", f["precision"], f["batch_size"],
               f"{f['attack']}@{f['eps']:g}")
        by_run.setdefault(key, {}).setdefault(f["run_id"], []).append(f)
    out: dict[tuple, dict[str, list[dict]]] = {}
    for (*cell, attack), per_run in by_run.items():
        latest = max(per_run, key=lambda rid: (runs.get(rid, {}).get("started_at") or "",
                                               max(r["id"] for r in per_run[rid])))
        out.setdefault(tuple(cell), {})[attack] = per_run[latest]
    return out


def fleet_table(store, targets=None) -> list[dict]:
    """One row per target x runtime x precision x batch size.

    Measurement fields come from the clean input set (the latest stored row of each cell, with
    its run_id); `accuracy@ATTACK@EPS` from each white-box input set, `robust_accuracy` is the
    worst of them. Failure fields are Kaplan-Meier summaries of the failure records (one attack:
    the one with most records; every attack under `failures_by_attack`): medians are None where
    over half the samples survive the budget. `latencies_ms` holds the per-iteration latencies
    (for `rank_latency`); `latency_rank` ranks within each batch size, ties sharing a rank.
    Prices come from targets/NAME.yaml (None where the file or the figure is missing).
    """
    wanted = set(target_names(targets) or []) or None
    meas = [m for m in store.measurements() if wanted is None or m["target"] in wanted]
    fails = _failure_groups(store, wanted)
    if wanted:
        seen = {m["target"] for m in meas} | {k[0] for k in fails}
        missing = sorted(wanted - seen)
        if missing:
            raise EdgerobError(f"no measurements or failure records for target(s) "
                               f"{', '.join(missing)} in {getattr(store, 'url', 'the store')}")
    latest: dict[tuple, dict[str, dict]] = {}
    for m in meas:  # ordered by id: a later row of the same cell replaces an earlier one
        key = (m["target"], m["runtime"], m["precision"], m["batch_size"])
        latest.setdefault(key, {})[m["input_set"]] = m
    cache = TargetCache()
    rows = []
    for key in sorted(set(latest) | set(fails), key=lambda k: (k[0], k[1], k[2], k[3])):
        target, runtime, precision, batch = key
        sets = latest.get(key, {})
        clean = sets.get("clean")
        row = {"target": target, "runtime": runtime, "precision": precision,
               "batch_size": batch, "run_id": clean["run_id"] if clean else None}
        for k in ("n_samples", "iterations", "latency_p50_ms", "latency_p99_ms",
                  "latency_mean_ms", "latency_std_ms", "throughput_sps", "power_mean_w",
                  "power_idle_w", "energy_per_inference_j", "accuracy", "power_note",
                  "throttled"):
            row[k] = clean[k] if clean else None
        row["latencies_ms"] = (json.loads(clean["latencies_ms"])
                               if clean and clean["latencies_ms"] else [])
        adv = {name: m for name, m in sets.items() if name != "clean"}
        for name in sorted(adv):
            row[f"accuracy@{name}"] = adv[name]["accuracy"]
        scored = [(m["accuracy"], name) for name, m in adv.items() if m["accuracy"] is not None]
        row["robust_accuracy"], row["robust_input_set"] = min(scored) if scored else (None, None)
        groups = fails.get(key, {})
        row["failures_by_attack"] = {a: failure_summary(rs) for a, rs in sorted(groups.items())}
        if groups:
            main = max(groups, key=lambda a: (len(groups[a]), a))
            row.update(failure_attack=main, **row["failures_by_attack"][main])
        else:
            row.update({k: None for k in FAILURE_KEYS}, failure_records=0)
        tgt = cache.get(target)
        row["price_purchase_usd"] = tgt.price.purchase_usd if tgt else None
        row["price_cloud_usd_per_h"] = tgt.price.cloud_usd_per_h if tgt else None
        row["target_note"] = cache.notes.get(target)
        rows.append(row)
    for row, rank in zip(rows, rank_latency(rows, within=("batch_size",))):
        row["latency_rank"] = rank
    shared = {}
    for r in rows:
        if r["latency_rank"] is not None:
            k = (r["batch_size"], r["latency_rank"])
            shared[k] = shared.get(k, 0) + 1
    for r in rows:
        r["latency_tie"] = (r["latency_rank"] is not None
                            and shared[(r["batch_size"], r["latency_rank"])] > 1)
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
    excluded: [{config, reason}]}."""
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


@dataclass
class LogLinearFit:
    """log(y) = b0 + sum_k b_k log(x_k), ordinary least squares, with the classical prediction
    interval yhat +- t(df) s sqrt(1 + x0'(X'X)^-1 x0) in log space (multiplicative in y)."""

    covariates: list[str]
    coef: np.ndarray
    xtx_inv: np.ndarray
    s: float  # residual standard deviation (log scale); nan when df == 0
    df: int
    n: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # measured x ranges
    dropped: list[str] = field(default_factory=list)  # covariate: why it is not in the model

    def formula(self, response: str, precision: str) -> str:
        terms = ["1"] + [f"log({_cov_label(c, precision)})" for c in self.covariates]
        return f"log({response}) ~ {' + '.join(terms)}"

    def predict(self, x: dict[str, float], level: float) -> tuple[float, float | None,
                                                                 float | None]:
        from scipy import stats

        x0 = np.array([1.0] + [math.log(x[c]) for c in self.covariates])
        mid = float(x0 @ self.coef)
        if self.df < 1 or not math.isfinite(self.s):
            return math.exp(mid), None, None
        se = self.s * math.sqrt(1 + float(x0 @ self.xtx_inv @ x0))
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * se
        return math.exp(mid), math.exp(mid - half), math.exp(mid + half)


def fit_loglinear(y: list[float], xs: list[dict[str, float | None]], priority: tuple[str, ...],
                  candidate: dict[str, float | None]) -> LogLinearFit:
    """Fit log(y) on the logs of the covariates in `priority` order, using a covariate only where
    the candidate and every training point have it, it varies, it is not collinear with the ones
    already in, and at least one residual degree of freedom remains (k <= n - 2)."""
    n = len(y)
    ly = np.log(np.asarray(y, dtype=np.float64))
    cols = [np.ones(n)]
    chosen, dropped = [], []
    for c in priority:
        if len(chosen) >= n - 2:
            dropped.append(f"{c}: too few targets for another covariate ({n})")
            continue
        if not _num(candidate.get(c)) or candidate[c] <= 0:
            dropped.append(f"{c}: not on the candidate's spec sheet")
            continue
        vals = [x.get(c) for x in xs]
        if not all(_num(v) and v > 0 for v in vals):
            dropped.append(f"{c}: missing on a measured target's spec sheet")
            continue
        col = np.log(np.asarray(vals, dtype=np.float64))
        trial = np.column_stack(cols + [col])
        if np.ptp(col) < 1e-12 or np.linalg.matrix_rank(trial) < trial.shape[1]:
            dropped.append(f"{c}: constant or collinear across the measured targets")
            continue
        cols.append(col)
        chosen.append(c)
    X = np.column_stack(cols)
    coef, *_ = np.linalg.lstsq(X, ly, rcond=None)
    resid = ly - X @ coef
    df = n - X.shape[1]
    s = math.sqrt(float(resid @ resid) / df) if df > 0 else float("nan")
    ranges = {c: (min(x[c] for x in xs), max(x[c] for x in xs)) for c in chosen}
    return LogLinearFit(chosen, coef, np.linalg.pinv(X.T @ X), s, df, n, ranges, dropped)


def _specs_dict(target, precision: str, names: tuple[str, ...]) -> dict[str, float | None]:
    return {c: covariate(target, c, precision) for c in names}


def _has_specs(target) -> bool:
    return target is not None and bool(target.specs.peak_tops or target.specs.memory_bandwidth_gbs
                                       or target.specs.tdp_w)


def _per_target_rows(rows: list[dict], cache: TargetCache) -> dict[tuple, dict[str, dict]]:
    """(precision, batch) -> {target: its clean row}; where a target has several runtimes, its
    preferred runtime's row, else the fastest."""
    out: dict[tuple, dict[str, dict]] = {}
    for r in rows:
        if not _num(r.get("latency_p50_ms")):
            continue
        cell = out.setdefault((r["precision"], r["batch_size"]), {})
        prev = cell.get(r["target"])
        tgt = cache.get(r["target"])
        pref = tgt.runtime if tgt else None
        if (prev is None or (r["runtime"] == pref) > (prev["runtime"] == pref)
                or ((r["runtime"] == pref) == (prev["runtime"] == pref)
                    and r["latency_p50_ms"] < prev["latency_p50_ms"])):
            cell[r["target"]] = r
    return out


def _range_warnings(fit: LogLinearFit, x: dict[str, float], precision: str) -> list[str]:
    out = []
    for c in fit.covariates:
        lo, hi = fit.ranges[c]
        if not lo <= x[c] <= hi:
            out.append(f"{_cov_label(c, precision)} = {x[c]:g} is outside the measured range "
                       f"{lo:g}-{hi:g}: the prediction extrapolates the fitted trend")
    return out


def _predict_rows(rows: list[dict], failures: dict, cache: TargetCache, candidate,
                  min_targets: int, level: float) -> list[dict]:
    """Predictions for `candidate` (a Target) from the measured rows of the other targets."""
    out = []
    for (precision, batch), per_target in sorted(_per_target_rows(rows, cache).items()):
        train = {t: r for t, r in per_target.items()
                 if t != candidate.name and _has_specs(cache.get(t))}
        res = {"candidate": candidate.name, "precision": precision, "batch_size": batch,
               "level": level, "n_targets": len(train), "training_targets": sorted(train),
               "warnings": [], "notes": []}
        for k in ("latency_p50_ms", "throughput_sps", "energy_per_inference_j",
                  "median_time_to_failure_s"):
            res.update({k: None, f"{k}_lo": None, f"{k}_hi": None})
        res.update(latency_model=None, latency_df=None, latency_residual_sd_log=None,
                   energy_model=None, median_queries_to_failure=None, failure_attack=None)
        own = per_target.get(candidate.name)
        res["measured_latency_p50_ms"] = own["latency_p50_ms"] if own else None
        res["measured_energy_per_inference_j"] = own["energy_per_inference_j"] if own else None
        if len(train) < min_targets:
            res["notes"].append(f"{len(train)} measured target(s) with spec sheets at "
                                f"{precision} b{batch}; at least {min_targets} needed")
            out.append(res)
            continue
        cand_x = _specs_dict(candidate, precision, ENERGY_COVARIATES)
        names = sorted(train)
        xs = [_specs_dict(cache.get(t), precision, ENERGY_COVARIATES) for t in names]
        fit = fit_loglinear([train[t]["latency_p50_ms"] for t in names], xs,
                            LATENCY_COVARIATES, cand_x)
        mid, lo, hi = fit.predict(cand_x, level)
        res.update(latency_p50_ms=mid, latency_p50_ms_lo=lo, latency_p50_ms_hi=hi,
                   latency_model=fit.formula("latency_p50_ms", precision),
                   latency_df=fit.df,
                   latency_residual_sd_log=fit.s if math.isfinite(fit.s) else None)
        res["throughput_sps"] = batch * 1e3 / mid  # from the predicted p50 latency
        res["throughput_sps_lo"] = batch * 1e3 / hi if hi else None
        res["throughput_sps_hi"] = batch * 1e3 / lo if lo else None
        res["warnings"] += _range_warnings(fit, cand_x, precision)
        res["warnings"] += [f"{_cov_label(d.split(':')[0], precision)} is not on "
                            f"{candidate.name}'s spec sheet: the latency model leaves it out"
                            for d in fit.dropped if "candidate's spec sheet" in d
                            and d.split(":")[0] in LATENCY_COVARIATES]
        if not fit.covariates:
            res["notes"].append("no usable hardware covariate: the prediction is the measured "
                                "targets' geometric mean")
        res["notes"] += [f"latency: {d}" for d in fit.dropped]
        if fit.df < 1:
            res["notes"].append("no residual degrees of freedom: no prediction interval")
        elif fit.df < 3:
            res["notes"].append(f"only {fit.df} residual degree(s) of freedom: the interval is "
                                f"wide because few targets were measured")
        # energy per inference, where measured on enough targets
        e_names = [t for t in names if _num(train[t].get("energy_per_inference_j"))
                   and train[t]["energy_per_inference_j"] > 0]
        if len(e_names) >= min_targets:
            efit = fit_loglinear([train[t]["energy_per_inference_j"] for t in e_names],
                                 [_specs_dict(cache.get(t), precision, ENERGY_COVARIATES)
                                  for t in e_names], ENERGY_COVARIATES, cand_x)
            emid, elo, ehi = efit.predict(cand_x, level)
            res.update(energy_per_inference_j=emid, energy_per_inference_j_lo=elo,
                       energy_per_inference_j_hi=ehi,
                       energy_model=efit.formula("energy_per_inference_j", precision))
            res["warnings"] += [w for w in _range_warnings(efit, cand_x, precision)
                                if w not in res["warnings"]]
        else:
            res["notes"].append(f"energy per inference measured on {len(e_names)} target(s) "
                                f"at {precision} b{batch}; at least {min_targets} needed")
        # time to failure = predicted latency per query x median queries to failure, pooled
        # over the measured targets' records at this precision and batch size
        pooled: dict[str, list[dict]] = {}
        for (t, _rt, p, b), per_attack in failures.items():
            if p == precision and b == batch and t != candidate.name:
                for attack, recs in per_attack.items():
                    pooled.setdefault(attack, []).extend(recs)
        if pooled:
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
        out.append(res)
    return out


def _measured_with_specs(rows: list[dict], cache: TargetCache) -> list[str]:
    return sorted({r["target"] for r in rows if _num(r.get("latency_p50_ms"))
                   and _has_specs(cache.get(r["target"]))})


def predict_candidate(store, candidate_target, targets=None, level: float = 0.95) -> list[dict]:
    """Predict p50 latency, throughput, energy per inference and median time to failure, with
    `level` prediction intervals, at every measured precision x batch size for a device known
    only from its spec sheet (a Target or a target name), from log-linear least-squares fits
    across the measured targets (`targets`: which ones; default all in the store). The
    candidate's own measurements, if any, are never used for the fit (they are reported as
    `measured_*` for comparison). `warnings` flags covariates outside the measured range."""
    cand = load_target(candidate_target) if isinstance(candidate_target, str) else candidate_target
    if not _has_specs(cand):
        raise EdgerobError(f"candidate {cand.name!r} has no spec sheet (specs.peak_tops, "
                           f"memory_bandwidth_gbs, tdp_w are all empty in its target YAML)")
    cache = TargetCache()
    rows = fleet_table(store, targets)
    measured = [t for t in _measured_with_specs(rows, cache) if t != cand.name]
    if len(measured) < MIN_PREDICTION_TARGETS:
        raise EdgerobError(
            f"pre-purchase prediction needs clean measurements from at least "
            f"{MIN_PREDICTION_TARGETS} targets whose YAML has specs (peak_tops, "
            f"memory_bandwidth_gbs, tdp_w); the store has {len(measured)}"
            f"{': ' + ', '.join(measured) if measured else ''}. Profile more targets or fill in "
            f"their specs")
    fails = _failure_groups(store, set(target_names(targets) or []) or None)
    return _predict_rows(rows, fails, cache, cand, MIN_PREDICTION_TARGETS, level)


def leave_one_target_out(store, targets=None, level: float = 0.95) -> list[dict]:
    """Hold out each measured target with specs in turn, predict it from the others, and compare
    with what was measured. One row per held-out target: cells predicted, median and max
    |relative error| of p50 latency (and energy per inference where predicted), and the fraction
    of cells whose measured value fell inside the prediction interval; `cells` has the detail.
    With 3 targets each fit sees only 2 (intercept only: the fleet's geometric mean)."""
    cache = TargetCache()
    rows = fleet_table(store, targets)
    measured = _measured_with_specs(rows, cache)
    if len(measured) < MIN_PREDICTION_TARGETS:
        raise EdgerobError(
            f"leave-one-target-out needs clean measurements from at least "
            f"{MIN_PREDICTION_TARGETS} targets whose YAML has specs; the store has "
            f"{len(measured)}{': ' + ', '.join(measured) if measured else ''}")
    fails = _failure_groups(store, set(target_names(targets) or []) or None)
    out = []
    for held in measured:
        others = [r for r in rows if r["target"] in measured]
        preds = _predict_rows(others, fails, cache, cache.get(held), 2, level)
        cells = []
        for p in preds:
            truth = p["measured_latency_p50_ms"]
            if p["latency_p50_ms"] is None or not _num(truth):
                continue
            cell = {"precision": p["precision"], "batch_size": p["batch_size"],
                    "n_targets": p["n_targets"], "latency_p50_ms": truth,
                    "predicted_latency_p50_ms": p["latency_p50_ms"],
                    "latency_rel_error": (p["latency_p50_ms"] - truth) / truth,
                    "latency_in_interval": (None if p["latency_p50_ms_lo"] is None else
                                            p["latency_p50_ms_lo"] <= truth
                                            <= p["latency_p50_ms_hi"]),
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
        lat = [abs(c["latency_rel_error"]) for c in cells]
        inside = [c["latency_in_interval"] for c in cells if c["latency_in_interval"] is not None]
        en = [abs(c["energy_rel_error"]) for c in cells if c["energy_rel_error"] is not None]
        out.append({
            "target": held, "cells": len(cells),
            "latency_median_abs_rel_error": float(np.median(lat)) if lat else None,
            "latency_max_abs_rel_error": float(max(lat)) if lat else None,
            "latency_inside_interval_fraction": (sum(inside) / len(inside)) if inside else None,
            "energy_median_abs_rel_error": float(np.median(en)) if en else None,
            "extrapolated_cells": sum(c["extrapolated"] for c in cells),
            "level": level, "details": cells})
    return out
