"""Tables of stored rows that several commands print: measurements, adversarial vs clean,
failure records and query-attack cells."""

from __future__ import annotations

from rich import box
from rich.table import Table
from rich.text import Text

from edgerob.cli.common import err, fmt, out
from edgerob.device.failures import km_median

FORCED_NOTE = ("target*: forced, measured with --force-target on a machine that is not the "
               "target (runs.target_facts says what it was)")


def new_table(title: str, columns: list[str], labels: set[str]) -> Table:
    """A table whose label columns (`labels`, left-aligned) wrap or fold; the others are
    numbers, right-aligned. Print it with `show`, which keeps every number whole."""
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    for col in columns:
        table.add_column(col, justify="left" if col in labels else "right", overflow="fold")
    return table


def show(table: Table) -> None:
    """Print a `new_table`: a number column is never narrower than its widest number (nor a
    header word), a label column gives way first (wrapped, at most 10 wide) where the terminal
    is narrow: a device name wraps, a number is never cut."""
    for col in table.columns:
        cells = [Text.from_markup(c).plain if isinstance(c, str) else str(c)
                 for c in col._cells]
        words = str(col.header).split()
        if col.justify == "right":
            col.min_width = max([len(c) for c in cells] + [len(w) for w in words] + [1])
        else:
            col.min_width = min(10, max([len(w) for c in cells for w in c.split()]
                                        + [len(w) for w in words] + [1]))
    out.print(table)


SCENARIO_SHORT = {"SingleStream": "Single", "MultiStream": "Multi"}  # ...Stream: wraps less
# a predicted metric as a column value, with its unit
METRIC_SHORT = {"throughput_sps": "samples/s", "latency_p90_ms": "p90 ms",
                "latency_p99_ms": "p99 ms", "energy_per_inference_j": "J/inf"}


def short_workload(workload: str) -> str:
    """"mlperf:resnet50 SingleStream v3.0" -> "resnet50 Single v3.0" (fits a narrow column)."""
    words = workload.removeprefix("mlperf:").split(" ")
    return " ".join(SCENARIO_SHORT.get(w, w) for w in words)


def short_source(row: dict) -> str:
    """"MLPerf v3.0" (the system, benchmark and scenario have their own columns)."""
    return " ".join(str(x) for x in ("MLPerf", row.get("mlperf_version")) if x)


def target_cell(name: str, forced: bool) -> str:
    """A target's name, marked * where it was measured with --force-target on another machine
    (short: these tables are wide)."""
    return f"{name}[red]*[/]" if forced else name


def print_measurements(rows: list[dict], title: str, forced: set = frozenset(),
                       wide: bool = False) -> None:
    """Own rows first, then imported ones (`select_published` orders them); the source column
    only where some row was imported. --wide adds mean, std, p99, accuracy's neighbours."""
    sourced = any(r.get("source", "measured") != "measured" for r in rows)
    moded = any(r.get("power_mode") for r in rows)  # the power mode where some row has one
    cols = ["target", *(["source"] if sourced else []), *(["power mode"] if moded else []),
            "prec", "batch", "input set", "p50 ms", *(["p99 ms", "mean ms", "std ms"] if wide
                                                     else []),
            "samples/s", "accuracy", "W", "J/inf", *(["iters"] if wide else [])]
    table = new_table(f"measurements ({title}); W and J/inf: — where no sensor measured "
                      f"(the note says why)", cols,
                      {"target", "source", "power mode", "prec", "input set"})
    for r in rows:
        own = r.get("source", "measured") == "measured"
        table.add_row(target_cell(r["target"], r["run_id"] in forced),
                      *([("measured" if own else short_source(r) + " " + SCENARIO_SHORT.get(
                          r.get("scenario"), r.get("scenario") or ""))] if sourced else []),
                      *([r.get("power_mode") or "—"] if moded else []), r["precision"] or "—",
                      "—" if not own and r.get("scenario") == "Offline" else str(r["batch_size"]),
                      r["input_set"], fmt(r["latency_p50_ms"], ".3f"),
                      *([fmt(r["latency_p99_ms"], ".3f"), fmt(r["latency_mean_ms"], ".3f"),
                         fmt(r["latency_std_ms"], ".3f")] if wide else []),
                      fmt(r["throughput_sps"], ",.0f"), fmt(r["accuracy"], ".2%"),
                      fmt(r["power_mean_w"], ".2f"), fmt(r["energy_per_inference_j"], ".3g"),
                      *([fmt(r["iterations"], "d")] if wide else []))
    show(table)
    notes = sorted({f"{r['target']}: {r['power_note']}" for r in rows
                    if r.get("power_note") and r.get("power_mean_w") is None})
    for n in notes:
        err.print(f"no power (W, J/inf —): {n}", highlight=False, markup=False)


def _ratio(r: dict, kind: str) -> str:
    """A vs-clean ratio with its interval: 1.003 [0.998, 1.009]."""
    ratio = r.get(f"{kind}_vs_clean_ratio")
    low, high = r.get(f"{kind}_vs_clean_low"), r.get(f"{kind}_vs_clean_high")
    if ratio is None or low is None or high is None:
        return fmt(ratio, ".3f")
    return f"{ratio:.3f} [{low:.3f}, {high:.3f}]"


def print_versus_clean(rows: list[dict]) -> None:
    adv = [r for r in rows if r["input_set"] != "clean"]
    if not adv:
        return
    paired = [r for r in adv if (r.get("vs_clean_method") or "").startswith("paired")]
    table = new_table("adversarial vs clean inputs (same precision and batch size)",
                      ["prec", "batch", "input set", "accuracy", "p50 vs clean [95%]",
                       "p (rounds)", "effect", "energy vs clean [95%]",
                       "fp32 robust acc [interval] (samples used)"], {"prec", "input set"})
    for r in adv:
        seq = (f"{r['seq_estimate']:.3f} [{r['seq_ci_low']:.3f}, {r['seq_ci_high']:.3f}] "
               f"({r['n_samples']}/{r['seq_n_available']})"
               if r.get("seq_estimate") is not None else "—")
        sequential = r.get("vs_clean_method") == "sequential cells"
        table.add_row(r["precision"], str(r["batch_size"]), r["input_set"],
                      fmt(r["accuracy"], ".2%"),
                      _ratio(r, "latency") + (" (seq)" if sequential else ""),
                      fmt(r["latency_vs_clean_p"], ".2g"),
                      fmt(r.get("latency_vs_clean_effect"), "+.2f"),
                      _ratio(r, "energy"), seq)
    show(table)
    if paired:
        rounds = sorted({r["vs_clean_rounds"] for r in paired})
        out.print(f"vs clean: each input set timed in {'/'.join(map(str, rounds))} alternating "
                  f"rounds with clean in one session (drift hits both alike); ratio = paired "
                  f"ratio of per-round medians (Hodges-Lehmann) with its exact 95% interval, "
                  f"p = Wilcoxon signed-rank over rounds, effect = rank-biserial (-1..1); "
                  f"energy net of idle, where a sensor measured it")
    if len(paired) < len(adv):
        out.print("(seq): stored before 0.3.0, compared with a clean cell measured minutes "
                  "apart; machine drift may pass for an effect there: measure again")


def print_attack_cells(cells: list[dict]) -> None:
    """Query-attack cells: samples used of available, the failure proportion and its interval,
    the KM median time to failure and the time not spent."""
    if not cells:
        return
    moded = any(c.get("power_mode") for c in cells)  # the power mode where some cell has one
    table = new_table("query-attack cells (interval: anytime-valid where the cell stopped "
                      "sequentially; KM interval: Brookmeyer-Crowley, fixed-sample)",
                      [*(["power mode"] if moded else []), "prec", "batch", "attack",
                       "samples used", "stopped by", "failure rate", "interval",
                       "KM median s [interval]", "attack s", "saved s"],
                      {"power mode", "prec", "attack", "stopped by"})
    for c in cells:
        used = f"{c['n_sampled']}/{c['n_available']}" if c["n_sampled"] is not None else "—"
        ci = (f"[{c['failure_ci_low']:.3f}, {c['failure_ci_high']:.3f}]"
              if c["failure_ci_low"] is not None else "—")
        km = (f"{fmt(c['km_median_s'], '.3g')} [{fmt(c['km_median_low_s'], '.3g')}, "
              f"{fmt(c['km_median_high_s'], '.3g')}]")
        table.add_row(*([c.get("power_mode") or "—"] if moded else []), c["precision"],
                      str(c["batch_size"]), f"{c['attack']}@{c['eps']:g}", used,
                      c["stopped_by"] or "every sample", fmt(c["failure_rate"], ".3f"), ci, km,
                      fmt(c["attack_wall_s"], ".1f"), fmt(c["projected_saved_s"], ".1f"))
    show(table)


def print_failures(records: list[dict], cells: list[dict]) -> None:
    """Failure records per query-attack cell, with the samples left out because the artifact
    misclassifies them clean (`attack_cells`; — for cells stored before it was counted)."""
    if not records and not cells:
        return
    def key(r: dict) -> tuple:
        return r.get("power_mode"), r["precision"], r["batch_size"], f"{r['attack']}@{r['eps']:g}"

    groups: dict[tuple, list[dict]] = {}
    for r in records:
        groups.setdefault(key(r), []).append(r)
    clean_wrong: dict[tuple, int] = {}
    for c in cells:
        groups.setdefault(key(c), [])
        clean_wrong[key(c)] = clean_wrong.get(key(c), 0) + c["n_clean_wrong"]
    moded = any(k[0] for k in groups)  # the power mode where some record has one
    table = new_table("failure records (clean-misclassified samples are not attacked; "
                      "Kaplan-Meier medians of the wall time and energy of the queries; — "
                      "where over half survive)",
                      [*(["power mode"] if moded else []), "prec", "batch", "attack",
                       "clean wrong", "attacked", "failed", "censored", "median queries",
                       "median time s", "median energy J"],
                      {"power mode", "prec", "attack"})
    for (mode, prec, bs, name), rs in groups.items():
        ev = [r["event"] for r in rs]
        energy = [r["energy_j"] for r in rs]
        table.add_row(*([mode or "—"] if moded else []), prec, str(bs), name,
                      fmt(clean_wrong.get((mode, prec, bs, name)), "d"),
                      str(len(rs)), str(sum(ev)), str(len(rs) - sum(ev)),
                      fmt(km_median([r["queries"] for r in rs], ev), ".0f"),
                      fmt(km_median([r["duration_s"] for r in rs], ev), ".3g"),
                      fmt(km_median(energy, ev) if None not in energy else None, ".3g"))
    show(table)
