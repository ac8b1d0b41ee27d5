"""Fleet commands: fleet run (many devices at once, one store), fleet status, and fleet holder
(what status asks a remote device)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.live import Live
from rich.table import Table

from edgerob.cli.common import (ModelOpt, ProfileOpt, StoreOpt, csv_list, err, out,
                                prepare_workload, user_errors)
from edgerob.cli.tables import new_table, show
from edgerob.device.lock import holder, holder_line
from edgerob.errors import EdgerobError
from edgerob.fleet.fleet import fleet_from_names, fleet_status, load_fleet, prepare_all, run_fleet
from edgerob.store import DEFAULT_URL, Store

fleet_app = typer.Typer(no_args_is_help=True, help="Profile many devices at once into one store.")

FleetFileOpt = Annotated[Optional[Path], typer.Argument(
    help="Fleet file (fleet.yaml: defaults, then targets each with profile and model).")]
TargetsOpt = Annotated[Optional[str], typer.Option(
    "--targets", help="Comma-separated target names, instead of a fleet file.")]


def _members(fleet_file, targets, profile_name, model):
    if (fleet_file is None) == (targets is None):
        raise EdgerobError("give a fleet file or --targets a,b,c, not both")
    if fleet_file is not None:
        return load_fleet(fleet_file)
    return fleet_from_names(csv_list(targets), profile_name, model)


def _table(runs) -> Table:
    table = Table("device", "step", "cells", "elapsed", "last error")
    for r in runs:
        table.add_row(r.name, r.step, f"{r.done}/{r.total}", f"{r.elapsed_s:.0f} s",
                      r.error or "", style="red" if r.failed else None)
    return table


@fleet_app.command("run")
@user_errors
def run(
    fleet_file: FleetFileOpt = None,
    targets: TargetsOpt = None,
    profile_name: ProfileOpt = "quick",
    model: ModelOpt = None,
    store: StoreOpt = DEFAULT_URL,
    new_run: Annotated[bool, typer.Option(help="Start new runs instead of resuming.")] = False,
    no_wait: Annotated[bool, typer.Option(
        "--no-wait", help="A device whose lock another sweep holds fails (saying who holds "
                          "it) instead of waiting.")] = False,
):
    """Profile every device of a fleet into one store: remote targets at once, local ones one
    at a time; a device that fails is reported and the others go on. Exit 1 if any device
    failed; run the same command again to resume."""
    members = _members(fleet_file, targets, profile_name, model)
    db = Store(store)  # a bad URL fails before any preparing
    workloads = prepare_all(members, prepare_workload)
    shown = {}  # device name -> its DeviceRun, as run_fleet updates it
    with Live(console=err, get_renderable=lambda: _table(shown.values()), refresh_per_second=4):
        runs = run_fleet(members, db, workloads, new_run=new_run, wait=not no_wait,
                         on_update=lambda r: shown.setdefault(r.name, r))
    summary = new_table(f"fleet -> {store}", ["device", "measured", "resumed", "skipped",
                                               "failed", "elapsed"],
                        {"device", "resumed", "failed"})
    for r in runs:
        summary.add_row(r.name, str(r.measured), "yes" if r.resumed else "no", str(r.skipped),
                        r.error or "no", f"{r.elapsed_s:.0f} s",
                        style="red" if r.failed else None)
    show(summary)
    failed = [r.name for r in runs if r.failed]
    if failed:
        err.print(f"{len(failed)} of {len(runs)} devices failed ({', '.join(failed)}): run the "
                  f"same command again to resume them", highlight=False)
        raise typer.Exit(1)


@fleet_app.command("status")
@user_errors
def status(
    fleet_file: FleetFileOpt = None,
    targets: TargetsOpt = None,
    store: StoreOpt = DEFAULT_URL,
):
    """Per target: cells stored, last run, power modes; whether its host answers (ssh, 5 s)
    and its device is free (not being profiled)."""
    members = _members(fleet_file, targets, "quick", None)
    table = new_table(f"fleet status ({store})", ["target", "host", "cells", "last run",
                                                  "power modes", "reachable", "free"],
                      {"target", "host", "last run", "power modes", "reachable", "free"})
    for s in fleet_status(members, Store(store)):
        reach = "local" if s.reachable is None else "yes" if s.reachable else "no"
        free = ("?" if s.reachable is False or s.note else "yes" if s.holder is None
                else s.holder)
        table.add_row(s.name, s.host, str(s.cells), s.last_run or "never",
                      ", ".join(s.power_modes) or "—", reach + (f" ({s.note})" if s.note else ""),
                      free)
    show(table)


@fleet_app.command("holder", hidden=True)
@user_errors
def holder_cmd(key: Annotated[str, typer.Argument(help="Device lock name, e.g. machine.")]):
    """Who holds this machine's device lock KEY, or 'free' (asked over ssh by fleet status)."""
    held = holder(key)
    out.print("free" if held is None else holder_line(held, key), highlight=False,
              markup=False, soft_wrap=True)
