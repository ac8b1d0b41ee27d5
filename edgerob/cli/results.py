"""Commands over the stored results: results, compare, cost, report, fit."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from edgerob.analysis.compare import (MEASURED, compare_fleet, config_label, fleet_table,
                                      forced_note, provenance, public_rows, select_published,
                                      side_by_side_notes, source_label)
from edgerob.analysis.cost import Workload, candidate_costs, cost_table, workload_dict
from edgerob.analysis.predict import predict_candidate
from edgerob.analysis.report import write_report
from edgerob.catalog.targets import load_target
from edgerob.analysis.plots import write_fleet_plots, write_ratio_plot
from edgerob.cli.common import (AllPublishedOpt, PublishedOpt, StoreOpt, WideOpt, csv_list, err,
                                fmt, out, print_json, published_choice, user_errors)
from edgerob.cli.tables import (FORCED_NOTE, SCENARIO_SHORT, new_table, print_attack_cells, print_failures,
                                METRIC_SHORT, print_measurements, print_versus_clean, short_source,
                                short_workload, show,
                                target_cell)
from edgerob.errors import EdgerobError
from edgerob.store import DEFAULT_URL, Store

TargetsOpt = Annotated[Optional[str], typer.Option(
    "--targets", help="Comma-separated target names (default: every target in the store).")]
InferencesOpt = Annotated[float, typer.Option(
    "--inferences-per-s", help="Sustained demand (inferences/s).")]
HoursOpt = Annotated[float, typer.Option("--hours-per-day",
                                         help="Service hours per day.")]
YearsOpt = Annotated[float, typer.Option("--years",
                                         help="Years of service.")]
KwhOpt = Annotated[float, typer.Option("--usd-per-kwh",
                                       help="Electricity price (USD/kWh).")]
UtilisationOpt = Annotated[float, typer.Option(
    "--utilisation", help="Fraction of a device's measured throughput to plan on.")]
TrainTimeOpt = Annotated[Optional[float], typer.Option(
    "--train-time-s",
    help="Training time (s) of the model, for the TRASH score (model.json train_time_s).")]
TrainSamplesOpt = Annotated[Optional[int], typer.Option(
    "--train-samples", min=1, help="Training samples the model was trained on, for the TRASH "
                                   "score (model.json n_train_samples).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")]
CsvOpt = Annotated[Optional[Path], typer.Option("--csv", help="Also write every column of the "
                                                                "rows to this CSV file.")]
PlotOpt = Annotated[Optional[Path], typer.Option(
    "--plot", help="Write the command's picture to this file (.png, .svg or .pdf).")]
IncludeForcedOpt = Annotated[bool, typer.Option(
    "--include-forced", help="Also use rows of runs measured with --force-target on a machine "
                             "that is not the target (left out by default).")]


def _print_forced_note(db, targets, include_forced: bool) -> str | None:
    """The one line saying how many rows of forced runs a decision left out (none: nothing)."""
    note = None if include_forced else forced_note(db, targets)
    if note:
        err.print(f"note: {note}", highlight=False, markup=False)
    return note


@user_errors
def results(
    store: StoreOpt = DEFAULT_URL,
    run: Annotated[Optional[str], typer.Option(help="Only this run id.")] = None,
    target: Annotated[Optional[str], typer.Option(help="Only this target.")] = None,
    csv_out: Annotated[Optional[Path], typer.Option("--csv", help="Also write rows to CSV.")] = None,
    plot: PlotOpt = None,
    published: PublishedOpt = "latest",
    all_published: AllPublishedOpt = False,
    wide: WideOpt = False,
):
    """Show stored measurements: your own first, published MLPerf rows after them.

    --plot FILE: the adversarial-vs-clean ratio of each cell with its interval (forest plot)."""
    db = Store(store)
    runs = {r["run_id"]: provenance(r) for r in db.runs()}
    rows = [{**m, **{k: v for k, v in runs.get(m["run_id"], provenance(None)).items()
                     if k not in m}} for m in db.measurements(run_id=run, target=target)]
    rows = select_published(rows, published_choice(published, all_published))
    if not rows:
        raise EdgerobError(f"no measurements in {store}"
                           + (f" for run {run}" if run else "")
                           + (f" for target {target}" if target else ""))
    for r in rows:
        r["source_label"] = source_label(r)
    forced = {r["run_id"] for r in db.runs() if r.get("forced_target")}
    if plot:
        err.print(f"plot -> {write_ratio_plot(rows, plot)}")
    print_measurements(rows, store, forced, wide)
    if forced & {r["run_id"] for r in rows}:
        err.print(FORCED_NOTE)
    print_versus_clean(rows)
    cells = db.attack_cells(run_id=run, target=target)
    print_failures([f for f in db.failures(run) if not target or f["target"] == target], cells)
    print_attack_cells(cells)
    if csv_out:
        _write_csv(rows, csv_out)




def _bench(row: dict) -> str:
    return (row.get("benchmark") or "").removeprefix("mlperf:")


def _batch(row: dict) -> str:
    """A batch size, or — for a published Offline row (its samples per query are not one)."""
    return "—" if row.get("batch_size") is None else str(row["batch_size"])


def _write_csv(rows: list[dict], path: Path) -> None:
    cols = list(dict.fromkeys(k for r in rows for k in r if k not in ("latencies_ms",
                                                                       "failures_by_attack")))
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, cols, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    err.print(f"wrote {len(rows)} rows to {path}")


def _print_own_fleet(rows: list[dict], store: str, wide: bool) -> None:
    adv = sorted({k for r in rows for k in r if k.startswith("accuracy@")})
    runtimes = wide or len({r["runtime"] for r in rows}) > 1
    moded = any(r.get("power_mode") for r in rows)
    cols = ["target", *(["runtime"] if runtimes else []), *(["power mode"] if moded else []),
            "prec", "batch", "rank", "p50 ms", *(["p99 ms"] if wide else []), "samples/s", "W",
            "J/inf",
            "clean acc", *([a[9:] for a in adv] if wide else ["robust acc"]),
            "s to fail", *(["J to fail", "records", "clean wrong"] if wide else [])]
    table = new_table(f"your measurements ({store}): rank of p50 latency within batch size, "
                      f"=N tied within noise; accuracy on clean and (robust) the worst "
                      f"adversarial input set; Kaplan-Meier median s to failure",
                      cols, {"target", "runtime", "power mode", "prec"})
    for r in rows:
        rank = r["latency_rank"]
        table.add_row(target_cell(r["target"], r["forced"]),
                      *([r["runtime"]] if runtimes else []),
                      *([r.get("power_mode") or "—"] if moded else []), r["precision"],
                      _batch(r), "—" if rank is None else f"{'=' if r['latency_tie'] else ''}{rank}",
                      fmt(r["latency_p50_ms"], ".3f"),
                      *([fmt(r["latency_p99_ms"], ".3f")] if wide else []),
                      fmt(r["throughput_sps"], ",.0f"), fmt(r["power_mean_w"], ".2f"),
                      fmt(r["energy_per_inference_j"], ".3g"), fmt(r["accuracy"], ".1%"),
                      *([fmt(r.get(a), ".1%") for a in adv] if wide
                        else [fmt(r.get("robust_accuracy"), ".1%")]),
                      fmt(r["median_time_to_failure_s"], ".3g"),
                      *([fmt(r["median_energy_to_failure_j"], ".3g"),
                         str(r["failure_records"]), fmt(r["failure_clean_wrong"], "d")]
                        if wide else []))
    show(table)
    if any(r["forced"] for r in rows):
        err.print(FORCED_NOTE)
    notes = sorted({f"{r['target']}: {r['power_note']}" for r in rows
                    if r.get("power_note") and r.get("power_mean_w") is None})
    for n in notes:
        err.print(f"no power (W, J/inf —): {n}", highlight=False, markup=False)


def _print_published_fleet(rows: list[dict], published: str, wide: bool) -> None:
    cols = ["device", "round", "benchmark", "scenario", "config", "prec", "batch",
            *(["samples/query", "system"] if wide else []), "p50 ms",
            *(["p99 ms"] if wide else []), "samples/s", "W", "J/inf"]
    table = new_table(f"published MLPerf results, for reference ({published} of them; "
                      f"--published none|latest|all): the submitters' models, data and "
                      f"harness; W: the whole system's wall power. — where MLPerf gives no "
                      f"such number: Offline is one query (no batch or latency), MultiStream "
                      f"no samples/s, only MaxQ runs power",
                      cols, {"device", "round", "benchmark", "scenario", "config", "prec",
                             "system"})
    for r in rows:
        table.add_row(r["target"], r.get("mlperf_version") or "—", _bench(r),
                      SCENARIO_SHORT.get(r.get("scenario"), r.get("scenario") or "—"),
                      r.get("configuration") or "—", r["precision"] or "—", _batch(r),
                      *([fmt(r.get("samples_per_query"), ",d"), r.get("system_name") or "—"]
                        if wide else []),
                      fmt(r["latency_p50_ms"], ".3f"),
                      *([fmt(r["latency_p99_ms"], ".3f")] if wide else []),
                      fmt(r["throughput_sps"], ",.0f"), fmt(r["power_mean_w"], ".0f"),
                      fmt(r["energy_per_inference_j"], ".3g"))
    show(table)


@user_errors
def compare(
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    out_dir: Annotated[Optional[Path], typer.Option(
        "--out", "-o", help="Folder for the Pareto and Kaplan-Meier plots (PNG + SVG).")] = None,
    plot: PlotOpt = None,
    published: PublishedOpt = "latest",
    all_published: AllPublishedOpt = False,
    wide: WideOpt = False,
    json_out: JsonOpt = False,
    csv_out: CsvOpt = None,
    latency_budget_ms: Annotated[Optional[float], typer.Option(
        "--latency-budget-ms", help="Also pick, per target, precision and batch size, the power "
                                    "mode with the least energy per inference whose p99 latency "
                                    "is within this bound (ms per batch).")] = None,
):
    """Compare targets per power mode, precision and batch size, with Pareto fronts.

    Your measurements first, published MLPerf rows after them for reference. Latency (ties
    within noise), throughput, power, energy, accuracy under attack, time and energy to
    failure; Pareto fronts as tables and plots; with --latency-budget-ms the most
    energy-efficient power mode that meets the bound. --plot FILE: latency and throughput
    against batch size, one panel per target (and energy against latency per power mode, where
    measured, beside it)."""
    published = published_choice(published, all_published)
    result = compare_fleet(Store(store), targets, out_dir, published=published,
                           latency_budget_ms=latency_budget_ms)
    rows, fronts = result["rows"], result["fronts"]
    if plot:
        for path in write_fleet_plots(rows, plot):
            err.print(f"plot -> {path}")
    if json_out:
        print_json({"rows": public_rows(rows), "fronts": [
            {**{k: v for k, v in f.items() if k != "front"},
             "front": [config_label(r) for r in f["front"]]} for f in fronts],
            **({"mode_choice": result["mode_choice"]} if latency_budget_ms is not None else {})})
        return
    if csv_out:
        _write_csv(public_rows(rows), csv_out)
    own = [r for r in rows if r["source"] == MEASURED]
    ref = [r for r in rows if r["source"] != MEASURED]
    if own:
        _print_own_fleet(own, store, wide)
    else:
        err.print("no measurements of your own in this store (edgerob profile takes them)")
    if ref:
        _print_published_fleet(ref, published, wide)
    for line in side_by_side_notes(rows):
        err.print(f"note: {line}", highlight=False, markup=False)
    for f in fronts:
        if not f["front"]:
            reasons = sorted({x["reason"] for x in f["excluded"]})
            err.print(f"{f['name']}: no configuration has both values ({'; '.join(reasons)})",
                      highlight=False)
            continue
        ft = new_table(f"Pareto front: {f['name'].replace('_', ' ')} "
                       f"({len(f['front'])} of {f['considered']})",
                       ["configuration", f["x_label"], f["y_label"]], {"configuration"})
        for r in f["front"]:
            ft.add_row(config_label(r), fmt(r[f["x"]], ".4g"), fmt(r[f["y"]], ".4g"))
        show(ft)
        if f["excluded"]:
            err.print(f"{f['name']}: {len(f['excluded'])} configuration(s) left out, e.g. "
                      f"{f['excluded'][0]['config']}: {f['excluded'][0]['reason']}",
                      highlight=False)
    if result["mode_choice"] is not None:
        _print_mode_choice(result["mode_choice"], latency_budget_ms)
    if result["plots"]:
        err.print(f"wrote {len(result['plots'])} plot files to {out_dir}")


def _print_mode_choice(choice: list[dict], budget: float) -> None:
    table = new_table(f"most energy-efficient power mode with p99 latency <= {budget:g} ms "
                      f"(per batch; forced runs left out)",
                      ["target", "runtime", "prec", "batch", "mode", "p99 ms", "J/inf",
                       "modes within the bound"],
                      {"target", "runtime", "prec", "mode", "modes within the bound"})
    for c in choice:
        mode = c["power_mode"] or ("(not recorded)" if c["reason"] is None else "none")
        table.add_row(c["target"], c["runtime"], c["precision"], str(c["batch_size"]), mode,
                      fmt(c["latency_p99_ms"], ".4g"), fmt(c["energy_per_inference_j"], ".3g"),
                      ", ".join(c["meeting"]) or "—")
    show(table)
    for c in choice:
        if c["reason"]:
            err.print(f"{c['target']} {c['precision']} b{c['batch_size']}: {c['reason']}",
                      highlight=False, markup=False)


def _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation):
    return Workload(inferences_per_s=inferences_per_s, hours_per_day=hours_per_day,
                    years=years, electricity_usd_per_kwh=usd_per_kwh, utilisation=utilisation)


@user_errors
def cost(
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    inferences_per_s: InferencesOpt = 100.0,
    hours_per_day: HoursOpt = 24.0,
    years: YearsOpt = 3.0,
    usd_per_kwh: KwhOpt = 0.15,
    utilisation: UtilisationOpt = 0.7,
    train_time_s: TrainTimeOpt = None,
    train_samples: TrainSamplesOpt = None,
    candidate: Annotated[Optional[str], typer.Option(
        "--candidate", help="Predict this target on every stored workload (as `edgerob "
                            "predict` does) and cost it; its own results are shown, never "
                            "fitted.")] = None,
    published: PublishedOpt = "latest",
    all_published: AllPublishedOpt = False,
    wide: WideOpt = False,
    json_out: JsonOpt = False,
    csv_out: CsvOpt = None,
    include_forced: IncludeForcedOpt = False,
):
    """Cost of ownership for a workload, and what a failure costs the target.

    Capital, energy, USD and kWh per million inferences, devices needed; the attacker's side:
    USD and joules to a failure, TRASH. --candidate predicts and costs a device (the predictor
    of `edgerob predict`).
    Rows of forced runs (--force-target) are left out unless --include-forced."""
    db = Store(store)
    w = _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation)
    left_out = _print_forced_note(db, targets, include_forced)
    published = published_choice(published, all_published)
    if candidate:
        _cost_candidate(db, candidate, targets, w, json_out, include_forced, wide)
        return
    costs = cost_table(fleet_table(db, targets, include_forced, published), w, train_time_s,
                       n_train_samples=train_samples, include_forced=include_forced)
    if not costs:
        raise EdgerobError(f"no measurements in {store}" + (
            " other than forced ones (--include-forced uses them)" if left_out
            else ": run `edgerob profile` first"))
    if json_out:
        print_json({"workload": workload_dict(w), "rows": costs})
        return
    if csv_out:
        _write_csv(costs, csv_out)
    title = (f"{w.inferences_per_s:g} inferences/s, {w.hours_per_day:g} h/day, {w.years:g} "
             f"years ({w.service_h:,.0f} h), utilisation {w.utilisation:.0%}, "
             f"{w.electricity_usd_per_kwh:g} USD/kWh")
    own = [c for c in costs if (c.get("source") or MEASURED) == MEASURED]
    ref = [c for c in costs if (c.get("source") or MEASURED) != MEASURED]
    if own:
        _print_costs(own, f"cost of ownership, your measurements: {title}", wide)
    if ref:
        _print_costs(ref, f"cost of ownership from published MLPerf ResNet-50 results, for "
                          f"reference ({published}; --published none|latest|all)", wide)
    moded = any(c.get("power_mode") for c in own)  # the mode where some row has one
    attacker = new_table("attacker's side: what a failure costs the target (Kaplan-Meier "
                         "medians of each sample's share of the queries; E[T] restricted to the "
                         "attack budget)",
                         ["target", *(["mode"] if moded else []), "prec", "batch", "attack",
                          "s to failure", "USD to failure", "J to failure", "E[T] s", "TRASH"],
                         {"target", "mode", "prec", "attack"})
    for c in own:
        trash = c.get("trash_score")
        attacker.add_row(c["target"], *([c.get("power_mode") or "—"] if moded else []),
                         c.get("precision") or "—", _batch(c),
                         c.get("failure_attack") or "—",
                         fmt(c.get("attacker_s_to_failure"), ".3g"),
                         fmt(c.get("attacker_usd_to_failure"), ".3g"),
                         fmt(c.get("attacker_j_to_failure"), ".3g"),
                         fmt(c.get("expected_time_to_failure_s"), ".3g"),
                         "—" if trash is None else (f"[bold red]{trash:.3g} ⚑[/]" if trash > 1
                                                    else f"{trash:.3g}"))
    if own:
        show(attacker)
    notes = sorted({f"{c['target']}: {n}" for c in costs for n in c.get("notes", [])})
    for n in notes:
        err.print(f"note: {n}", highlight=False)
    if any((c.get("trash_score") or 0) > 1 for c in costs):
        err.print("⚑ TRASH > 1: cheaper to break than to build ((train time / training "
                  "samples) / E[T], E[T] per attacked sample, restricted to the attack budget)")


def _price(c: dict) -> str:
    """What one device costs: bought once (USD) or rented per hour of service (USD/h)."""
    if c.get("pricing") == "purchase" and c.get("purchase_usd_per_device"):
        return f"buy {c['purchase_usd_per_device']:,.0f} USD"
    if c.get("pricing") == "cloud" and c.get("cloud_usd_per_h"):
        return f"rent {c['cloud_usd_per_h']:.3g} USD/h"
    return "—"


def _print_costs(costs: list[dict], title: str, wide: bool) -> None:
    """Costs of ownership. --wide: bought devices under "buy USD", rented ones under "rent USD"
    (the hourly price over the service hours); a rented device's electricity is in its rent."""
    ref = any((c.get("source") or MEASURED) != MEASURED for c in costs)
    moded = any(c.get("power_mode") for c in costs)  # the mode where some row has one
    cols = ["target", *(["round", "scenario"] if ref else []), *(["mode"] if moded else []),
            "prec", "batch", "price",
            "devices", *(["buy USD", "rent USD", "energy kWh", "energy USD"] if wide else []),
            "total USD", "USD/M inf", "kWh/M inf"]
    table = new_table(title, cols, {"target", "round", "scenario", "mode", "prec", "price"})
    for c in costs:
        capital = fmt(c.get("capital_usd"), ",.0f")
        rented = c.get("pricing") == "cloud"
        energy_usd = ("in rent" if rented and c.get("devices_needed") is not None
                      else fmt(c.get("energy_usd"), ",.2f"))
        sc = c.get("scenario")
        table.add_row(c["target"], *([c.get("mlperf_version") or "—",
                                      SCENARIO_SHORT.get(sc, sc or "—")] if ref else []),
                      *([c.get("power_mode") or "—"] if moded else []),
                      c.get("precision") or "—", _batch(c), _price(c),
                      fmt(c.get("devices_needed"), "d"),
                      *(["—" if rented else capital, capital if rented else "—",
                         fmt(c.get("energy_kwh"), ",.1f"), energy_usd] if wide else []),
                      fmt(c.get("total_usd"), ",.0f"),
                      fmt(c.get("usd_per_million_inferences"), ".4g"),
                      fmt(c.get("kwh_per_million_inferences"), ".4g"))
    show(table)


def _cost_candidate(db, candidate: str, targets, w, json_out: bool,
                    include_forced: bool, wide: bool = False) -> None:
    tgt = load_target(candidate)
    preds = candidate_costs(predict_candidate(db, tgt, targets, include_forced=include_forced),
                            tgt, w)
    if json_out:
        print_json({"candidate": tgt.name, "workload": workload_dict(w), "predictions": preds})
        return
    cols = ["workload", *(["config"] if wide else []), "predicts", "predicted", "interval",
            "true", *(["inside", "method", "J/inf interval", "s to failure", "devices",
                       "total USD"] if wide else []), "J/inf", "USD/M inf"]
    table = new_table(f"{tgt.name}: predicted from the other devices' results (measured, or "
                      f"published MLPerf), {preds[0]['level']:.0%} intervals calibrated on "
                      f"held-out cells; 'true' is {tgt.name}'s own result, never fitted",
                      cols, {"workload", "config", "predicts", "method"})

    def interval(p, key):
        lo, hi = p[f"{key}_lo"], p[f"{key}_hi"]
        return "—" if lo is None else f"{lo:.4g}–{hi:.4g}"

    for p in preds:
        c = p.get("cost") or {}
        k = p["response"]
        inside = {None: "—", True: "yes", False: "no"}[p["truth_in_interval"]]
        table.add_row(short_workload(p["workload"]), *([p["configuration"]] if wide else []),
                      METRIC_SHORT.get(k, k), fmt(p[k], ".4g"), interval(p, k),
                      fmt(p["truth"], ".4g"),
                      *([inside, p["method"] or "—", interval(p, "energy_per_inference_j"),
                         fmt(p["median_time_to_failure_s"], ".3g"),
                         fmt(c.get("devices_needed"), "d"), fmt(c.get("total_usd"), ",.0f")]
                        if wide else []),
                      fmt(p["energy_per_inference_j"], ".3g"),
                      fmt(c.get("usd_per_million_inferences"), ".4g"))
    show(table)
    for why in dict.fromkeys(p["why"] for p in preds if p["why"]):
        err.print(f"method: {why}", highlight=False, markup=False)


@user_errors
def report(
    out_path: Annotated[Path, typer.Option("--out", "-o", help="HTML file to write.")] = Path(
        "report.html"),
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
    inferences_per_s: InferencesOpt = 100.0,
    hours_per_day: HoursOpt = 24.0,
    years: YearsOpt = 3.0,
    usd_per_kwh: KwhOpt = 0.15,
    utilisation: UtilisationOpt = 0.7,
    train_time_s: TrainTimeOpt = None,
    train_samples: TrainSamplesOpt = None,
    include_forced: IncludeForcedOpt = False,
):
    """Write one self-contained HTML report that opens offline.

    Fleet table, Pareto plots, cost, each device held out and predicted, survival curves,
    every measurement's fingerprint. Cost, prediction and the AFT fits leave rows of forced
    runs (--force-target) out unless --include-forced."""
    w = _workload(inferences_per_s, hours_per_day, years, usd_per_kwh, utilisation)
    db = Store(store)
    path = write_report(db, out_path, targets, w, train_time_s, n_train_samples=train_samples,
                        include_forced=include_forced)
    _print_forced_note(db, targets, include_forced)
    out.print(f"report -> {path} ({path.stat().st_size / 1024:,.0f} KiB, self-contained)")


def _sequential_fit_note(db, run_ids: set[str]) -> list[str]:
    """How many records the fit has where query attacks stopped early (it uses those that
    exist: a random sample of each such cell, so nothing is imputed); `run_ids`: the runs whose
    records it fits."""
    cells = [c for c in db.attack_cells()
             if c["stop_half_width"] is not None and c["run_id"] in run_ids]
    if not cells:
        return []
    used, available = sum(c["n_sampled"] for c in cells), sum(c["n_available"] for c in cells)
    return [f"{len(cells)} query-attack cells stopped sequentially: the fit uses the {used} "
            f"samples attacked of {available} available there (a seeded random sample)"]


@user_errors
def fit(
    store: StoreOpt = DEFAULT_URL,
    duration: Annotated[str, typer.Option(help="What to model: time (s) or energy (J) to "
                                               "failure.")] = "time",
    families: Annotated[str, typer.Option(help="Comma-separated AFT families: weibull, "
                                               "lognormal, loglogistic, exponential, gengamma "
                                               "(slow: about 40 s per 100,000 records).")
                        ] = "weibull,lognormal,loglogistic",
    covariates: Annotated[Optional[str], typer.Option(help=(
        "Comma-separated (default precision,target,attack,eps,log2_batch_size); also model, "
        "batch_size and the target specs tdp_w, memory_bandwidth_gbs, memory_gb, "
        "peak_tops."))] = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for the CSV tables and "
                                                              "plots.")] = Path("fit"),
    horizon: Annotated[Optional[float], typer.Option(help="Calibration horizon (default: the "
                                                          "median duration).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the comparison and the best "
                                                         "family's coefficients as JSON only.")
                       ] = False,
    include_forced: IncludeForcedOpt = False,
):
    """Fit AFT survival models to the failure records.

    Compares families (AIC, BIC, concordance, calibration), prints time ratios, writes plots
    and the TRASH score. Records of forced runs (--force-target) are left out unless
    --include-forced."""


    from edgerob.analysis import survival  # pandas and lifelines (host extra): lazy

    db = Store(store)
    df = survival.load_failures(db, duration, include_forced=include_forced)
    result = survival.fit_models(
        df, families=csv_list(families),
        covariates=csv_list(covariates) if covariates is not None else None, horizon=horizon)
    notes = list(result.notes) + _sequential_fit_note(db, set(df["run_id"]))
    trash = None
    if result.duration == "time":
        training = survival.cached_training(result.data)
        if training:
            trash = result.trash({m: t for m, (t, _) in training.items()},
                                 {m: n for m, (_, n) in training.items()})
            notes += sorted({f"{r.model}: {r.note}" for r in trash.itertuples() if r.note})
        else:
            notes.append("TRASH score skipped: no cached model card with a train time matches "
                         "these records' models (pass train_time_s and n_train_samples to "
                         "FitResult.trash)")
    paths = result.write(out_dir, trash)
    if as_json:
        typer.echo(json.dumps(result.to_json()))
    else:
        unit = result.unit
        table = Table("family", "n", "events", "k", "log-lik", "AIC", "BIC", "C train",
                      "C test", "ICI", "E50", title=f"AFT models of {result.duration} to failure "
                      f"({unit}); * best by AIC; calibration at {result.horizon:.4g} {unit}")
        for f in result.models.values():
            table.add_row(f"{f.family}{' *' if f.family == result.best else ''}", str(f.n),
                          str(f.events), str(f.k), fmt(f.log_likelihood, ".1f"),
                          fmt(f.aic, ".1f"), fmt(f.bic, ".1f"),
                          fmt(f.concordance_train, ".3f"), fmt(f.concordance_test, ".3f"),
                          fmt(f.ici, ".4f"), fmt(f.e50, ".4f"),
                          style="bold" if f.family == result.best else None)
        out.print(table)
        table = Table("covariate", "time ratio", "95% CI", "p",
                      title=f"{result.best}: time ratios exp(coef) on all {result.final.n} "
                            f"records (below 1: fails sooner than the reference)")
        for c, r in result.coefficients.iterrows():
            table.add_row(escape(c), f"{r.time_ratio:.3f}", f"{r.ci_low:.3f} – {r.ci_high:.3f}",
                          f"{r.p:.2g}" if r.p > 0 else "<1e-300")
        refs = [f"{c} {t['reference']}" for c, t in result.design.terms.items()
                if t["kind"] == "categorical"]
        out.print(table)
        if refs:
            out.print(f"reference: {', '.join(refs)}", markup=False, highlight=False)
        if trash is not None and len(trash):
            table = Table("model", "target", "train s", "training samples", "E[T] s", "TRASH",
                          "", title="TRASH score: (train time / training samples) / expected "
                                    "time to failure per attacked sample")
            for r in trash.itertuples():
                table.add_row(escape(r.model), escape(r.target), f"{r.train_time_s:.4g}",
                              "—" if r.n_train_samples != r.n_train_samples  # NaN: unknown
                              or r.n_train_samples is None else f"{int(r.n_train_samples)}",
                              f"{r.expected_time_s:.4g}",
                              "not estimable" if r.note else f"{r.trash:.4g}",
                              "[red]cheaper to break than to build[/]"
                              if r.cheaper_to_break else "")
            out.print(table)
    for n in notes:
        err.print(f"note: {n}", highlight=False, markup=False)
    err.print(f"wrote {len(paths)} files to {out_dir}")
