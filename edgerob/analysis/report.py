"""One self-contained HTML report of a store: fleet table, Pareto fronts, cost, survival, and the
fingerprint of every measurement.

Self-contained means it opens offline: CSS is inline, plots are base64 PNGs in data: URLs, and
nothing in it points at a network address. It is written atomically, so an interrupted run never
leaves half a report.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
from pathlib import Path

import sqlalchemy as sa

from edgerob.analysis.compare import (MEASURED, config_label, figure_bytes, fleet_table,
                                      forced_note, front_figure, km_figures, pareto_fronts,
                                      side_by_side_notes, target_names)
from edgerob.analysis.cost import Workload, cost_table
from edgerob.analysis.plots import fleet_batch_figure, power_mode_figure, ratio_forest_figure
from edgerob.analysis.predict import held_out
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes
from edgerob.store import now

CSS = """
:root { --fg:#1d2330; --muted:#5b6475; --line:#d9dee7; --bg:#ffffff; --band:#f5f7fa;
        --accent:#2457a6; --good:#1f7a3d; --warn:#a05a00; }
* { box-sizing: border-box; }
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--fg);
       background: var(--bg); margin: 0; }
header { background: #1d2b45; color: #fff; padding: 22px 32px 18px; }
header h1 { margin: 0 0 4px; font-size: 22px; font-weight: 600; }
header p { margin: 0; color: #c9d3e6; font-size: 13px; }
nav { padding: 8px 32px; background: var(--band); border-bottom: 1px solid var(--line);
      position: sticky; top: 0; z-index: 2; }
nav a { color: var(--accent); text-decoration: none; margin-right: 18px; font-size: 13px; }
main { padding: 8px 32px 40px; max-width: 1500px; }
h2 { font-size: 18px; margin: 30px 0 6px; padding-bottom: 4px;
     border-bottom: 2px solid var(--line); }
h3 { font-size: 15px; margin: 18px 0 6px; }
p.note, li.note { color: var(--muted); font-size: 12.5px; }
.cards { display: flex; gap: 12px; flex-wrap: wrap; margin: 16px 0 6px; }
.card { border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px; min-width: 150px;
        background: var(--band); }
.card b { display: block; font-size: 20px; }
.card span { color: var(--muted); font-size: 12px; }
.scroll { overflow-x: auto; border: 1px solid var(--line); border-radius: 6px; margin: 8px 0; }
table { border-collapse: collapse; width: 100%; font-size: 12.5px; }
th, td { padding: 5px 8px; border-bottom: 1px solid var(--line); white-space: nowrap; }
th { background: var(--band); text-align: left; font-weight: 600; white-space: normal;
     vertical-align: bottom; min-width: 48px; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
tr:nth-child(even) td { background: #fbfcfd; }
td.na { color: #9aa3b2; text-align: center; }
.tie { color: var(--warn); font-weight: 600; }
.flag { color: #b00020; font-weight: 600; }
.ok { color: var(--good); }
.plots { display: grid; grid-template-columns: repeat(auto-fit, minmax(460px, 1fr)); gap: 14px; }
figure { margin: 0; border: 1px solid var(--line); border-radius: 6px; padding: 8px;
         background: #fff; }
figure.wide { grid-column: 1 / -1; }
figure img { width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; padding-top: 4px; }
details { border: 1px solid var(--line); border-radius: 6px; margin: 4px 0; background: #fff; }
details summary { cursor: pointer; padding: 5px 10px; font-size: 12.5px; }
details pre { margin: 0; padding: 8px 12px; background: var(--band); font-size: 11.5px;
              overflow-x: auto; border-top: 1px solid var(--line); }
code { font-family: ui-monospace, SFMono-Regular, Menlo, monospace; font-size: 12px; }
"""


def _e(v) -> str:
    return html.escape(str(v), quote=True)


def _fmt(v, spec: str = ".3g") -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "—"
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, (int, float)):
        return format(v, spec)
    return str(v)


def _table(headers: list[str], rows: list[list], numeric: set[int] | None = None) -> str:
    numeric = numeric or set()
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = []
    for r in rows:
        cells = []
        for i, (text, raw) in enumerate(r):
            cls = "na" if text == "—" else ("num" if i in numeric else "")
            cells.append(f'<td class="{cls}">{raw if raw is not None else _e(text)}</td>')
        body.append("<tr>" + "".join(cells) + "</tr>")
    return (f'<div class="scroll"><table><thead><tr>{head}</tr></thead><tbody>'
            + "".join(body) + "</tbody></table></div>")


def _cell(v, spec=".3g"):
    return (_fmt(v, spec), None)


def _img(fig, alt: str) -> str:
    data = base64.b64encode(figure_bytes(fig, "png")).decode()
    return f'<img alt="{_e(alt)}" src="data:image/png;base64,{data}">'


def _safe_url(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return url


# --- sections -----------------------------------------------------------------------------------

def _own_and_published(rows: list[dict], store, published: str) -> str:
    """Your measurements first (with the pictures), then published rows, folded."""
    own = [r for r in rows if r.get("source", "measured") == "measured"]
    ref = [r for r in rows if r.get("source", "measured") != "measured"]
    figs = []
    for fig, caption, wide in (
            (fleet_batch_figure(rows), "p50 latency and throughput against batch size, one pair "
             "of panels per target: own rows solid lines, published MLPerf rows hollow markers",
             True),
            (power_mode_figure(rows), "energy per inference against latency per power mode",
             False),
            (ratio_forest_figure([m for m in store.measurements()
                                  if m["target"] in {r["target"] for r in own}]),
             "adversarial / clean ratio per cell with its 95% interval (1: no difference)",
             False)):
        if fig is not None:
            figs.append(f"<figure class='{'wide' if wide else ''}'>{_img(fig, caption)}"
                        f"<figcaption>{_e(caption)}</figcaption></figure>")
    own_html = (_fleet_section(own, "own", "Your measurements") if own else
                "<h2 id='own'>Your measurements</h2><p class='note'>None in this store "
                "(`edgerob profile` takes them).</p>")
    pub = ""
    if ref:
        pub = ("<h2 id='published'>Published results (reference)</h2><details><summary>"
               f"{len(ref)} published MLPerf rows ({_e(published)} of them: the newest per "
               "device, benchmark, scenario and configuration unless all were asked for); "
               "Offline runs are one query: no batch size</summary>"
               + _fleet_section(ref, "published-table", None) + "</details>")
    return (own_html + (f"<div class='plots'>{''.join(figs)}</div>" if figs else "") + pub)


def _fleet_section(rows: list[dict], anchor: str = "fleet", title: str | None = "Fleet") -> str:
    adv = sorted({k for r in rows for k in r if k.startswith("accuracy@")})
    headers = (["target", "source", "runtime", "precision", "batch", "latency rank", "p50 ms",
                "p99 ms",
                "samples/s", "power W", "J/inference", "clean acc"] + adv
               + ["robust acc", "query attack", "records", "median s to failure",
                  "median J to failure"])
    body = []
    for r in rows:
        rank = r.get("latency_rank")
        rank_html = None
        if rank is not None and r.get("latency_tie"):
            rank_html = f'<span class="tie" title="tied within measurement noise">={rank}</span>'
        forced = " (forced: not measured on this target)" if r.get("forced") else ""
        line = [_cell(r["target"] + forced), _cell(r.get("source_label", "measured")),
                _cell(r["runtime"]), _cell(r["precision"]),
                _cell(r["batch_size"]), (_fmt(rank), rank_html),
                _cell(r["latency_p50_ms"], ".3f"), _cell(r["latency_p99_ms"], ".3f"),
                _cell(r["throughput_sps"], ",.0f"), _cell(r["power_mean_w"], ".2f"),
                _cell(r["energy_per_inference_j"], ".3g"), _cell(r["accuracy"], ".2%")]
        line += [_cell(r.get(k), ".2%") for k in adv]
        line += [_cell(r["robust_accuracy"], ".2%"), _cell(r.get("failure_attack")),
                 _cell(r.get("failure_records")), _cell(r.get("median_time_to_failure_s")),
                 _cell(r.get("median_energy_to_failure_j"))]
        body.append(line)
    numeric = set(range(4, len(headers))) - {len(headers) - 4}
    notes = sorted({f"{r['target']}: {r['power_note']}" for r in rows
                    if r.get("power_note") and r.get("power_mean_w") is None})
    head = f"<h2 id='{anchor}'>{_e(title)}</h2>" if title else f"<div id='{anchor}'></div>"
    return (head +
            "<p class='note'>One row per target x runtime x precision x batch size (clean input "
            "set). Latency ranks are within each batch size; <span class='tie'>=N</span> marks "
            "configurations whose latency difference is within measurement noise (|Cliff's "
            "delta| &lt; 0.147 on the per-iteration latencies), shown as ties rather than "
            "rankings. Times and energy to failure are Kaplan-Meier medians of the failure "
            "records (— where over half the samples survive the budget). Source: measured by "
            "edgerob, or imported from published MLPerf Inference results (version, system, "
            "benchmark, scenario; MLPerf power is wall power of the whole system).</p>"
            + _table(headers, body, numeric)
            + "".join(f"<p class='note'>{_e(n)}</p>" for n in side_by_side_notes(rows))
            + "".join(f"<p class='note'>no power: {_e(n)}</p>" for n in notes))


def _pareto_section(rows: list[dict], fronts: list[dict]) -> str:
    parts = ["<h2 id='pareto'>Pareto fronts</h2>",
             "<p class='note'>Non-dominated configurations: none other is at least as good on "
             "both axes and better on one. Purchase and rental prices are different units and "
             "get separate fronts.</p>"]
    figs, tables = [], []
    for f in fronts:
        if f["considered"] == 0:
            reasons = sorted({x["reason"] for x in f["excluded"]})
            tables.append(f"<h3>{_e(f['name'].replace('_', ' '))}</h3><p class='note'>no "
                          f"configuration has both values: {_e('; '.join(reasons))}</p>")
            continue
        figs.append(f"<figure>{_img(front_figure(rows, f), f['name'])}<figcaption>"
                    f"{_e(f['x_label'])} vs {_e(f['y_label'])}: {len(f['front'])} non-dominated "
                    f"of {f['considered']}</figcaption></figure>")
        body = [[_cell(config_label(r)), _cell(r[f["x"]], ".4g"), _cell(r[f["y"]], ".4g")]
                for r in f["front"]]
        excl = ""
        if f["excluded"]:
            items = "".join(f"<li class='note'>{_e(x['config'])}: {_e(x['reason'])}</li>"
                            for x in f["excluded"])
            excl = (f"<details><summary>{len(f['excluded'])} configuration(s) left out"
                    f"</summary><ul>{items}</ul></details>")
        tables.append(f"<h3>{_e(f['name'].replace('_', ' '))}</h3>"
                      + _table(["configuration", f["x_label"], f["y_label"]], body, {1, 2})
                      + excl)
    if figs:
        parts.append("<div class='plots'>" + "".join(figs) + "</div>")
    return "".join(parts + tables)


def _forced(note: str | None) -> str:
    """The line a section that leaves forced runs out shows (empty where none were)."""
    return f"<p class='note'>{_e(note)}</p>" if note else ""


def _cost_section(rows: list[dict], workload, train_time_s, n_train_samples=None,
                  include_forced: bool = False, note: str | None = None) -> str:
    costs = cost_table(rows, workload, train_time_s, n_train_samples=n_train_samples,
                       include_forced=include_forced)
    w = workload
    headers = ["target", "source", "mode", "precision", "batch", "price", "devices", "buy USD",
               "rent USD",
               "energy kWh", "energy USD", "total USD", "USD / M inferences",
               "kWh / M inferences", "attacker s to failure", "attacker USD to failure",
               "attacker J to failure", "E[T] s (restricted)", "TRASH"]
    body, published = [], []
    costs = ([c for c in costs if c.get("source", "measured") == "measured"]
             + [c for c in costs if c.get("source", "measured") != "measured"])
    for c in costs:
        rented = c.get("pricing") == "cloud"
        trash = c.get("trash_score")
        trash_html = None
        if trash is not None and c.get("cheaper_to_break_than_build"):
            trash_html = (f'<span class="flag" title="cheaper to break than to build">'
                          f'{trash:.3g} ⚑</span>')
        (body if c.get("source", "measured") == "measured" else published).append([
                     _cell(c["target"]), _cell(c.get("source_label") or "measured"),
                     _cell(c.get("power_mode")),
                     _cell(c.get("precision")), _cell(c.get("batch_size")),
                     _cell(_price(c)), _cell(c.get("devices_needed")),
                     _cell(None if rented else c.get("capital_usd"), ",.2f"),
                     _cell(c.get("capital_usd") if rented else None, ",.2f"),
                     _cell(c.get("energy_kwh"), ",.1f"),
                     ("in rent", None) if rented and c.get("devices_needed") else
                     _cell(c.get("energy_usd"), ",.2f"), _cell(c.get("total_usd"), ",.2f"),
                     _cell(c.get("usd_per_million_inferences"), ".4g"),
                     _cell(c.get("kwh_per_million_inferences"), ".4g"),
                     _cell(c.get("attacker_s_to_failure"), ".3g"),
                     _cell(c.get("attacker_usd_to_failure"), ".3g"),
                     _cell(c.get("attacker_j_to_failure"), ".3g"),
                     _cell(c.get("expected_time_to_failure_s"), ".3g"), (_fmt(trash), trash_html)])
    notes = sorted({f"{c['target']}: {n}" for c in costs for n in c.get("notes", [])})
    bases = sorted({b for c in costs for b in (c.get("capital_basis"), c.get("energy_basis"),
                                                 c.get("attacker_usd_basis")) if b})
    return ("<h2 id='cost'>Cost</h2>"
            f"<p class='note'>Workload: {w.inferences_per_s:g} inferences/s, "
            f"{w.hours_per_day:g} h/day for {w.years:g} years ({w.service_h:,.0f} service hours,"
            f" {w.inferences:.3g} inferences), utilisation {w.utilisation:.0%}, electricity "
            f"{w.electricity_usd_per_kwh:g} USD/kWh. TRASH = (train time / training samples) / "
            f"E[T] (E[T] per attacked sample: area under the Kaplan-Meier curve up to the attack "
            f"budget); ⚑ above 1: cheaper to break than to build"
            f"{'' if train_time_s else ' (no train time given: TRASH not computed)'}."
            f"</p>" + _forced(note)
            + (_table(headers, body, set(range(6, len(headers)))) if body else
               "<p class='note'>No cost of your own measurements: none has a throughput or "
               "failure records.</p>")
            + (f"<details><summary>published MLPerf ResNet-50 rows, for reference "
               f"({len(published)})</summary>"
               + _table(headers, published, set(range(6, len(headers)))) + "</details>"
               if published else "")
            + (("<details><summary>how each figure is computed and what is missing</summary><ul>"
                + "".join(f"<li class='note'>{_e(n)}</li>" for n in bases + notes)
                + "</ul></details>") if bases or notes else ""))


def _price(c: dict) -> str | None:
    """One device's price: bought (USD) or rented per hour of service (USD/h)."""
    if c.get("pricing") == "purchase" and c.get("purchase_usd_per_device"):
        return f"buy {c['purchase_usd_per_device']:,.0f} USD"
    if c.get("pricing") == "cloud" and c.get("cloud_usd_per_h"):
        return f"rent {c['cloud_usd_per_h']:.3g} USD/h"
    return None


def _prediction_section(store, targets, own: set[str], include_forced: bool = False,
                        note: str | None = None) -> str:
    head = "<h2 id='prediction'>Pre-purchase prediction: each device's results held out</h2>" + (
        _forced(note))
    # the user's own devices where there are some: what the report's reader asks about (every
    # published device held out is scripts/bench_predict.py's work, minutes on a full import)
    rows = held_out(store, targets, include_forced=include_forced, devices=own or None)
    if not rows:
        return head + "<p class='note'>No clean results in the store.</p>"
    body = [[_cell(r["target"]), _cell(r["cells"]),
             _cell(r["median_abs_rel_error"], ".1%"),
             _cell(r["max_abs_rel_error"], ".1%"),
             _cell(r["inside_interval_fraction"], ".0%"),
             _cell(r["energy_median_abs_rel_error"], ".1%"), _cell(", ".join(r["methods"]))]
            for r in rows]
    return (head + "<p class='note'>Each device's results of each workload (your own "
            "devices' where the store has some; published devices are scored by "
            "scripts/bench_predict.py) are hidden and "
            "predicted from the rest by the predictor `edgerob predict` and `cost --candidate` "
            "use: reference-device ratios or low-rank completion where the device has other "
            "results, spec sheets where it has none, the method chosen by cross-validation on "
            "the store's own cells and 90% intervals calibrated on held-out cells. A device "
            "with no prediction had too little around it to predict from.</p>"
            + _table(["held-out target", "cells", "median |rel. error|", "max |rel. error|",
                      "inside 90% interval", "median |rel. error| J/inf", "methods"],
                     body, {1, 2, 3, 4, 5}))


def _survival_section(store, rows: list[dict], targets, aft: bool = True,
                      include_forced: bool = False) -> str:
    figs = km_figures(store, targets)
    head = "<h2 id='survival'>Survival under attack</h2>"
    if not figs:
        return head + "<p class='note'>No failure records in the store (profiles with a " \
                      "query_attack write them).</p>"
    body = []
    for r in rows:
        for attack, s in (r.get("failures_by_attack") or {}).items():
            body.append([_cell(r["target"]), _cell(r["precision"]), _cell(r["batch_size"]),
                         _cell(attack), _cell(s["failure_records"]), _cell(s["failure_events"]),
                         _cell(s["failure_censored"]), _cell(s["budget_queries"]),
                         _cell(s["median_queries_to_failure"], ".0f"),
                         _cell(s["median_time_to_failure_s"], ".3g"),
                         _cell(s["mean_time_to_failure_restricted_s"], ".3g"),
                         _cell(s["median_energy_to_failure_j"], ".3g"),
                         _cell(_used(s)), _cell(_rate_interval(s))])
    captions = {"km_time_by_target": "time to failure by target, one panel per precision "
                                     "(line style: batch size)",
                "km_queries_by_precision": "queries to failure by precision, pooled over "
                                           "targets"}
    imgs = "".join(f"<figure class='{'wide' if name == 'km_time_by_target' else ''}'>"
                   f"{_img(fig, name)}<figcaption>{_e(captions.get(name, name))}"
                   f"</figcaption></figure>" for name, fig in figs.items())
    return (head + "<p class='note'>Kaplan-Meier estimates from the per-sample failure records "
            "(| marks samples that survived the budget, right-censored).</p>"
            f"<div class='plots'>{imgs}</div>"
            + _table(["target", "precision", "batch", "attack", "samples", "failed", "censored",
                      "budget queries", "median queries", "median s", "E[T] s (restricted)",
                      "median J", "samples used", "failure rate [interval]"], body,
                     set(range(4, 14)))
            + (_aft_section(store, targets, include_forced) if aft else ""))


def _used(s: dict) -> str | None:
    """samples attacked of available (a sequential cell stops early)."""
    if s.get("samples_used") is None:
        return None
    return f"{s['samples_used']}/{s['samples_available']}"


def _rate_interval(s: dict) -> str | None:
    """failure proportion, with its anytime-valid interval where the cell stopped sequentially."""
    if s.get("failure_rate") is None:
        return None
    ci = (f" [{s['failure_ci_low']:.3f}, {s['failure_ci_high']:.3f}]"
          if s.get("failure_ci_low") is not None else "")
    return f"{s['failure_rate']:.3f}{ci}"


def _aft_section(store, targets=None, include_forced: bool = False) -> str:
    """Accelerated failure time models from edgerob.analysis.survival (lifelines), where that module and
    its dependencies are installed: the family comparison and the best family's time ratios.
    Optional: without it, or when the records cannot be fitted, a one-line note says why.
    Records of forced runs are fitted only with `include_forced` (the notes say how many)."""
    try:
        from edgerob.analysis import survival  # pandas and lifelines (host extra): optional
    except ImportError as e:
        return f"<p class='note'>AFT models not included: {_e(e)}</p>"
    try:
        df = survival.load_failures(store, include_forced=include_forced,
                                    targets=target_names(targets))
        result = survival.fit_models(df)
        table = result.table()
    except Exception as e:  # noqa: BLE001 - optional section: say why it is missing
        return (f"<p class='note'>AFT models not included: "
                f"{_e(str(e).splitlines()[0] if str(e) else type(e).__name__)}</p>")
    cols = [("family", "family", None), ("best", "best (AIC)", None), ("n", "n", ",.0f"),
            ("events", "events", ",.0f"), ("log_likelihood", "log-likelihood", ".2f"),
            ("aic", "AIC", ".2f"), ("bic", "BIC", ".2f"),
            ("concordance_train", "concordance (fit)", ".3f"),
            ("concordance_test", "concordance (held out)", ".3f"), ("ici", "ICI", ".3g"),
            ("e50", "E50", ".3g")]
    def plain(v):  # numpy scalars -> Python, so bools print as yes/no
        return v.item() if hasattr(v, "item") else v

    body = [[_cell(plain(rec.get(k)), spec or "") for k, _, spec in cols]
            for rec in table.to_dict("records")]
    coef = [[_cell(name), _cell(r["time_ratio"], ".3g"), _cell(r["ci_low"], ".3g"),
             _cell(r["ci_high"], ".3g"), _cell(r["p"], ".2g")]
            for name, r in result.coefficients.iterrows()]
    notes = "".join(f"<li class='note'>{_e(n)}</li>" for n in result.notes)
    return (f"<h3>Accelerated failure time models ({_e(result.duration)} to failure)</h3>"
            + _table([h for _, h, _ in cols], body, set(range(2, len(cols))))
            + f"<h3>Time ratios, {_e(result.best)} (best by AIC)</h3>"
              "<p class='note'>exp(coefficient): above 1 the configuration survives longer than "
              "the reference, with 95% intervals.</p>"
            + _table(["covariate", "time ratio", "95% low", "95% high", "p"], coef, {1, 2, 3, 4})
            + (f"<ul>{notes}</ul>" if notes else ""))


def _fingerprint_section(store, targets) -> str:
    wanted = set(target_names(targets) or []) or None
    ms = [m for m in store.measurements() if wanted is None or m["target"] in wanted]
    items = []
    for m in ms:
        try:
            fp = json.loads(m["fingerprint"]) if m["fingerprint"] else {}
        except ValueError:
            fp = {"unparsed": m["fingerprint"]}
        extra = {k: m[k] for k in ("run_id", "artifact_sha256", "profiler", "power_note",
                                   "throttled", "throttle_note", "iterations", "duration_s",
                                   "created_at")}
        body = json.dumps({"fingerprint": fp, **extra}, indent=2, sort_keys=True, default=str)
        items.append(f"<details><summary><code>{_e(m['target'])} · {_e(m['runtime'])} · "
                     f"{_e(m['precision'])} · b{_e(m['batch_size'])} · {_e(m['input_set'])}"
                     f"</code> — run {_e(m['run_id'][:12])}, {_e(m['created_at'])}</summary>"
                     f"<pre>{_e(body)}</pre></details>")
    return (f"<h2 id='fingerprints'>Fingerprints ({len(ms)} measurements)</h2>"
            "<p class='note'>Where and how each measurement was taken: host, runtime and library "
            "versions, artifact sha256, precision, clocks where readable.</p>" + "".join(items))


# --- the report ---------------------------------------------------------------------------------

def render_report(store, targets=None, workload=None, train_time_s: float | None = None,
                  title: str = "edgerob fleet report", aft: bool = True,
                  n_train_samples: int | None = None, include_forced: bool = False,
                  published: str = "latest") -> str:
    """The report as one HTML string: your measurements first, published rows after them,
    folded (`published`: none, latest or all, as `select_published`). `aft`: include the AFT model comparison from
    edgerob.analysis.survival where it can run (a few seconds of fitting). The fleet, Pareto
    and survival tables show rows of forced runs, marked; cost, prediction and the AFT fits
    leave them out unless `include_forced`, and say how many."""
    workload = workload or Workload()
    rows = fleet_table(store, targets, published=published)
    if not rows:
        raise EdgerobError(f"no measurements in {_safe_url(store.url)}: run `edgerob profile` "
                           f"first")
    decide = rows if include_forced else fleet_table(store, targets, include_forced=False,
                                                     published=published)
    note = None if include_forced else forced_note(store, targets)
    fronts = pareto_fronts(rows)
    n_fail = sum(r.get("failure_records") or 0 for r in rows)
    wanted = set(target_names(targets) or []) or None
    n_meas = sum(1 for m in store.measurements() if wanted is None or m["target"] in wanted)
    cards = [(len({r["target"] for r in rows}), "targets"), (len(rows), "configurations"),
             (n_meas, "measurements"), (n_fail, "failure records")]
    nav = "".join(f"<a href='#{a}'>{t}</a>" for a, t in (
        ("own", "Your measurements"), ("published", "Published"), ("pareto", "Pareto fronts"), ("cost", "Cost"),
        ("prediction", "Prediction"), ("survival", "Survival"), ("fingerprints", "Fingerprints")))
    sections = [_own_and_published(rows, store, published), _pareto_section(rows, fronts),
                _cost_section(decide, workload, train_time_s, n_train_samples, include_forced,
                              note),
                _prediction_section(store, targets, {r["target"] for r in rows
                                                     if r["source"] == MEASURED},
                                    include_forced, note),
                _survival_section(store, rows, targets, aft, include_forced),
                _fingerprint_section(store, targets)]
    return ("<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{_e(title)}</title><style>{CSS}</style></head><body>"
            f"<header><h1>{_e(title)}</h1><p>store {_e(_safe_url(store.url))} · generated "
            f"{_e(now())} · self-contained: opens offline</p></header><nav>{nav}</nav><main>"
            "<div class='cards'>" + "".join(f"<div class='card'><b>{n}</b><span>{_e(t)}</span>"
                                            f"</div>" for n, t in cards) + "</div>"
            + "".join(sections) + "</main></body></html>\n")


def write_report(store, out_path: str | Path, targets=None, workload=None,
                 train_time_s: float | None = None, title: str = "edgerob fleet report",
                 aft: bool = True, n_train_samples: int | None = None,
                 include_forced: bool = False, published: str = "latest") -> Path:
    """Write the self-contained HTML report to out_path atomically; returns the path."""
    text = render_report(store, targets, workload, train_time_s, title, aft, n_train_samples,
                         include_forced, published)
    path = Path(out_path)
    atomic_write_bytes(path, text.encode("utf-8"))
    _readable(path)
    return path


def _readable(path: Path) -> None:
    """A report is for sharing: give it the usual file mode (0666 minus the umask) rather than
    the 0600 of the temporary file it was renamed from."""
    mask = os.umask(0)
    os.umask(mask)
    try:
        os.chmod(path, 0o666 & ~mask)
    except OSError:
        pass
