"""The device catalog and this machine: targets list/show, doctor."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from edgerob.catalog import find_yaml, list_names
from edgerob.catalog.targets import (describe_facts, families, load_target, machine_facts,
                                     target_for_machine)
from edgerob.cli.common import fmt, out, print_json, user_errors
from edgerob.device import power_mode
from edgerob.device.profilers import REGISTRY as PROFILERS, profiler_class
from edgerob.device.runtimes import REGISTRY as RUNTIMES, runtime_class
from edgerob.errors import EdgerobError

targets_app = typer.Typer(no_args_is_help=True, help="The device catalog (targets/*.yaml).")


@targets_app.command("list")
@user_errors
def targets_list():
    """Every target: runtime, profiler, peak TOPS, bandwidth, TDP and price; then the families
    (names such as jetson-orin that resolve to one member on the device itself).

    Peak figures are dense, GPU only (no DLA), tensor cores where the device has them, at the
    power mode of the TDP column."""
    table = Table("name", "runtime", "profiler", "host", "int8 TOPS", "fp16 TOPS", "GB/s",
                  "TDP W", "USD", "USD/h", title="targets (peak TOPS: dense, GPU only, at TDP)")
    table.columns[0].no_wrap = True
    for name in list_names("targets"):
        t = load_target(name)
        tops = t.specs.peak_tops
        p = t.price
        table.add_row(t.name, t.runtime, t.profiler, t.host, fmt(tops.get("int8"), "g"),
                      fmt(tops.get("fp16"), "g"), fmt(t.specs.memory_bandwidth_gbs, "g"),
                      fmt(t.specs.tdp_w, "g"),
                      fmt(p.purchase_usd, ",.0f") + (f" {p.purchase_kind}, {p.purchase_as_of}"
                                                      if p.purchase_usd else ""),
                      fmt(p.cloud_usd_per_h, ".2f") + (f" ({p.cloud_as_of})"
                                                        if p.cloud_usd_per_h else ""))
    out.print(table)
    fam = Table("family", "members (resolved on the device by device-tree model and memory, "
                "or NVML name and memory)", title="families")
    for name, members in families().items():
        fam.add_row(name, ", ".join(members))
    out.print(fam)


@targets_app.command("show")
@user_errors
def targets_show(name: Annotated[str, typer.Argument(help="Target name or YAML path.")]):
    """One target's file, with the sources of its figures."""
    load_target(name)  # validate first
    out.print(find_yaml("targets", name).read_text(), highlight=False, markup=False)


@user_errors
def doctor(
    sysroot: Annotated[Optional[Path], typer.Option(
        "--sysroot", help="Read the machine from this folder laid out like / (proc/device-tree, "
                          "proc/meminfo, sys/, etc/nvpmodel.conf, var/lib/nvpmodel/status, "
                          "etc/nv_tegra_release) instead of /; EDGEROB_SYSROOT does the same for "
                          "every command. nvpmodel is still run from PATH where it is there.")
    ] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
):
    """What can run here: runtimes, profilers, the target for this machine and its power mode.

    Lists each runtime and profiler, available or not and why, the catalog target that fits
    this machine (by module part number on a Jetson, with the facts it used) and the power mode
    it is in (nvpmodel mode and clocks, or a GPU's power limit)."""
    if sysroot is not None and not sysroot.is_dir():
        raise EdgerobError(f"--sysroot {sysroot}: no such folder")
    root = sysroot if sysroot is not None else power_mode.sysroot()
    plugins = []
    for kind, names, get in (("runtime", RUNTIMES, runtime_class),
                             ("profiler", PROFILERS, profiler_class)):
        for name in names:
            try:
                ok, reason = get(name).available()
            except (EdgerobError, ImportError) as e:
                ok, reason = False, str(e)
            plugins.append({"kind": kind, "name": name, "available": ok, "why": reason})
    facts = machine_facts(root)
    target, reason, how = target_for_machine(facts)
    mode = power_mode.read_power_mode(root, gpu={"index": 0} if facts["gpus"] else None)
    if json_out:
        print_json({"sysroot": str(root), "target": target.name if target else None,
                    "reason": reason, "identified_by": how, **mode, "facts": facts,
                    "plugins": plugins})
        return
    table = Table("kind", "name", "available", "why", title="edgerob doctor")
    for p in plugins:
        table.add_row(p["kind"], p["name"], "[green]yes[/]" if p["available"] else "[red]no[/]",
                      p["why"])
    out.print(table)
    out.print(f"this machine: {describe_facts(facts)}", highlight=False, markup=False)
    label = mode["power_mode"] or f"unknown ({mode['power_mode_facts'].get('reason')})"
    out.print(f"power mode: {label}", highlight=False, markup=False)
    if target:
        out.print(f"target for this machine: [bold]{target.name}[/] "
                  f"(edgerob profile --target {target.name}); identified by {how}")
    else:
        out.print(f"no target for this machine: {reason}", highlight=False, markup=False)

