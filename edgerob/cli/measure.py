"""Commands that measure and move measurements: profile (local, remote or a bundle), bundle,
ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from edgerob.catalog.profiles import load_profile
from edgerob.catalog.targets import load_target, resolve_target, verify_target
from edgerob.cli.common import (ModelOpt, ProfileOpt, StoreOpt, TargetOpt, ThreadsOpt,
                                err, out, prepare_workload, user_errors)
from edgerob.cli.tables import print_failures, print_measurements, print_versus_clean
from edgerob.device.lock import device_key, refuse_if_busy
from edgerob.device.power_mode.switch import preflight
from edgerob.device.sweep import cells, run_profile
from edgerob.errors import EdgerobError
from edgerob.fleet.bundle import ingest as ingest_results, load_bundle, results_url, write_bundle
from edgerob.fleet.mlperf import ingest_mlperf
from edgerob.fleet.remote import cell_line, profile_remote
from edgerob.store import DEFAULT_URL, Store

BundleOpt = Annotated[Optional[Path], typer.Option(
    "--bundle", "-b", help="Run a bundle (on the device it was shipped to) instead of a target.")]


@user_errors
def profile(
    target: TargetOpt = "cpu",
    profile_name: ProfileOpt = "quick",
    model: ModelOpt = None,
    store: Annotated[Optional[str], typer.Option(
        "--store", help="Results database URL (default sqlite:///edgerob.db; with --bundle, "
                        "the bundle's results/edgerob.db).", envvar="EDGEROB_STORE")] = None,
    threads: ThreadsOpt = None,
    bundle: BundleOpt = None,
    new_run: Annotated[bool, typer.Option(help="Start a new run instead of resuming the last "
                                               "one for this target/profile/model.")] = False,
    force_target: Annotated[bool, typer.Option(
        "--force-target", help="Measure even where this machine is not the target's device "
                               "(its detect rules); the run is marked forced, resumes only a "
                               "forced run, and cost, predictions and fits leave it out unless "
                               "--include-forced.")] = False,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="Where another sweep holds the device's lock, exit 2 saying who "
                          "holds it instead of waiting.")] = False,
    cell_lines: Annotated[bool, typer.Option(
        "--cell-lines", hidden=True, help="One plain line per cell on stderr (read by a "
                                          "remote host driving this run).")] = False,
):
    """Measure a model on a target over a profile's sweep and store the results.

    A local target is verified first: this machine must be the device it names (a family name
    such as jetson-orin resolves to the member this machine is), else exit 2 with nothing
    stored, unless --force-target.

    A target whose host is ssh://user@host is profiled remotely: the bundle is copied there,
    run, and its results ingested here."""
    if bundle is not None:
        tgt, prof, work = load_bundle(bundle)  # verifies every file first
        if no_wait:
            refuse_if_busy(device_key(tgt))
        db = Store(store or results_url(bundle))
        store = store or results_url(bundle)
    else:
        tgt, prof = resolve_target(target), load_profile(profile_name)
        if tgt.is_local:
            verify_target(tgt, force=force_target)  # refuse before any training
            if no_wait:
                refuse_if_busy(device_key(tgt))
        elif force_target:
            raise EdgerobError("--force-target is for local targets: a remote device verifies "
                               "its own target when it runs the bundle")
        preflight(tgt, prof)  # power modes: names, privileges
        store = store or DEFAULT_URL
        db = Store(store)  # open early: a bad URL fails before any training
        work = prepare_workload(prof, model)
    if not tgt.is_local and bundle is None:
        with err.status("remote profiling") as status:
            counts = profile_remote(tgt, prof, work, db, new_run=new_run, wait=not no_wait,
                                    on_step=lambda s: status.update(f"{tgt.name}: {s}"))
        rows = [r for r in db.measurements(target=tgt.name)]
        print_measurements(rows, f"{tgt.name} ({tgt.host}) / {prof.name}")
        err.print(f"ingested {counts['measurements']} measurements and {counts['failures']} "
                  f"failure records ({counts['skipped']} already stored) -> {store}")
        return
    progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                        TimeElapsedColumn(), console=err)
    task = progress.add_task(f"profiling on {tgt.name}", total=len(cells(prof)))

    def on_cell(i, n, cell, m):
        if cell_lines:
            err.print(cell_line(i, n, m is not None), highlight=False, markup=False)
        progress.update(task, completed=i, total=n, description=(
            (f"{cell.power_mode} " if cell.power_mode else "")
            + f"{cell.precision} b{cell.batch_size} {cell.input_set}"
            + (" query attack" if cell.kind == "failures" else "")
            + (" (stored)" if m is None else "")))

    with progress:
        result = run_profile(tgt, prof, work, db, new_run=new_run, threads=threads,
                             on_cell=on_cell, force_target=force_target, wait=not no_wait,
                             on_wait=lambda line: err.print(line, highlight=False,
                                                            markup=False, soft_wrap=True),
                             on_note=lambda line: progress.console.print(line, markup=False))
    forced = {r["run_id"] for r in db.runs() if r.get("forced_target")}
    print_measurements(result.rows, f"{tgt.name} / {prof.name}", forced)
    if result.run_id in forced:
        err.print(f"[yellow]warning[/] run {result.run_id} is marked forced: this machine is "
                  f"not {tgt.name} (--force-target)")
    print_versus_clean(result.rows)
    print_failures(result.failures, result.attack_cells)
    err.print(f"run {result.run_id}: {result.measured} cells measured, {result.skipped} already "
              f"stored{' (resumed)' if result.resumed else ''} -> {store}")
    if result.power_note:
        err.print(f"power and energy are empty: {result.power_note}")
    hot = [r for r in result.rows if r["throttled"]]
    if hot:
        err.print(f"[yellow]warning[/] {len(hot)} cells were measured while throttled "
                  f"(column `throttled`): {hot[0]['throttle_note']}")
    elif result.rows and all(r["throttled"] is None for r in result.rows):
        err.print(f"throttling unknown: {result.rows[0]['throttle_note']}")


@user_errors
def bundle_cmd(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Bundle folder to write.")],
    target: TargetOpt = "cpu",
    profile_name: ProfileOpt = "quick",
    model: ModelOpt = None,
):
    """Write a bundle for a device: artifacts, input sets, target, profile, hashed manifest."""
    tgt, prof = load_target(target), load_profile(profile_name)
    folder = write_bundle(tgt, prof, prepare_workload(prof, model), out_dir)
    out.print(f"bundle for {tgt.name} / {prof.name} -> {folder}\n"
              f"on the device: edgerob profile --bundle {folder.name}; then here: "
              f"edgerob ingest {folder.name}")


@user_errors
def ingest(
    source: Annotated[Optional[Path], typer.Argument(help="A bundle folder with results, or a "
                                                          "results .db file.")] = None,
    mlperf: Annotated[Optional[Path], typer.Option(
        "--mlperf", help="Import published MLPerf Inference results (every benchmark and "
                         "scenario, VALID only): a results repository checkout or any folder "
                         "under it.")] = None,
    store: StoreOpt = DEFAULT_URL,
):
    """Import a device's results into the store, skipping rows already there."""
    if (source is None) == (mlperf is None):
        raise EdgerobError("give a bundle folder (or results .db) or --mlperf PATH, not both")
    if mlperf is not None:
        counts = ingest_mlperf(mlperf, Store(store), on_skip=lambda line: err.print(
            f"skipped: {line}", highlight=False, markup=False, soft_wrap=True))
        out.print(f"imported {counts['imported']} MLPerf results (source mlperf) for "
                  f"{', '.join(counts['targets'])}; {counts['already_stored']} already stored, "
                  f"{len(counts['invalid'])} INVALID skipped, {len(counts['problems'])} "
                  f"file(s) not imported (each named above) -> {store}", highlight=False)
        return
    counts = ingest_results(source, Store(store))
    out.print(f"ingested {counts['runs']} new runs, {counts['measurements']} measurements, "
              f"{counts['failures']} failure records; {counts['skipped']} rows already stored "
              f"-> {store}")
