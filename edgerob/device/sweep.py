"""The sweep: every cell of a profile measured on this machine for a prepared workload.

A cell is runtime x precision x batch size x input set. Cells already in the store for the same
run are skipped, so an interrupted sweep resumes where it stopped; each cell is written in one
transaction, so an interruption leaves only whole cells behind. The workload (artifacts and input
sets) comes ready: from `edgerob.host.workload` on this machine, or from a bundle on a device.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgerob import __version__
from edgerob.device.bench import Measurement, compare_samples, measure
from edgerob.device.clocks import cpu_state
from edgerob.device.failures import square_attack
from edgerob.device.profilers import profiler_class
from edgerob.device.runtimes import create_runtime, runtime_class
from edgerob.errors import EdgerobError
from edgerob.store import Store, now


@dataclass
class Cell:
    precision: str
    batch_size: int
    input_set: str  # "clean" / "pgd@0.1" for measurements; "square@0.1" for failure records
    kind: Literal["measure", "failures"] = "measure"


@dataclass
class SweepResult:
    run_id: str
    resumed: bool
    measured: int  # cells measured now
    skipped: int  # cells already in the store
    rows: list[dict]  # every measurement of the run
    failures: list[dict]  # every failure record of the run
    power_note: str | None  # why power is NULL, when it is


def cells(profile) -> list[Cell]:
    """Measurement cells (clean first, so adversarial cells can be compared with them), then
    failure-record cells."""
    out = [Cell(p, b, s) for s in profile.input_sets for p in profile.precisions
           for b in profile.batch_sizes]
    qa = profile.query_attack
    if qa:
        out += [Cell(p, b, f"{qa.attack}@{e:g}", "failures") for e in qa.eps
                for p in qa.precisions or profile.precisions
                for b in qa.batch_sizes or profile.batch_sizes]
    return out


@dataclass
class Workload:
    """What a sweep runs: the artifacts by precision and the input sets by name. Prepared on
    the host from a model folder (`edgerob.host.workload.prepare_workload`), or read from a
    bundle on a device (`edgerob.fleet.bundle.load_bundle`)."""

    model: str
    model_sha256: str
    artifacts: dict  # precision -> Artifact
    inputs: dict  # input set name -> InputSet
    # The checkpoint (card and weights) and the host's loader for it, for runtimes that run the
    # checkpoint itself (torch): the model's code is the host's, so it comes in from there.
    model_files: list = field(default_factory=list)
    load_model: Callable | None = None


def sweep_precisions(profile) -> list[str]:
    qa = profile.query_attack
    return list(dict.fromkeys(profile.precisions + ((qa.precisions or []) if qa else [])))


def pick_runtime(target) -> tuple[str, dict]:
    """The target's runtime if it can run here, else the first fallback that can (without the
    preferred runtime's options). Returns (name, options)."""
    reasons = []
    for i, name in enumerate([target.runtime, *target.fallback_runtimes]):
        try:
            ok, reason = runtime_class(name).available()
        except EdgerobError as e:
            ok, reason = False, str(e)
        if ok:
            return name, (target.runtime_options if i == 0 else {})
        reasons.append(f"{name}: {reason}")
    raise EdgerobError(f"no runtime of target {target.name!r} can run here ({'; '.join(reasons)})")


def run_profile(target, profile, work: Workload, store: Store, *,
                new_run: bool = False, threads: int | None = None,
                on_cell: Callable[[int, int, Cell, object | None], None] | None = None,
                ) -> SweepResult:
    """Measure every cell of `profile` (a catalog Profile) on `target` (a catalog Target: this
    machine) for the prepared workload `work`.

    `on_cell(done, total, cell, result)` is called after each cell (result None: already
    stored, skipped).
    """
    if not target.is_local:
        raise EdgerobError(f"target {target.name!r} is on host {target.host!r}; this command "
                           f"measures the local machine only")
    artifacts, inputs = work.artifacts, work.inputs
    qa = profile.query_attack
    runtime_name, runtime_options = pick_runtime(target)

    threads = threads or target.threads
    prof_cls = profiler_class(target.profiler)
    prof_ok, prof_reason = prof_cls.available(**target.profiler_options)
    versions = _versions(runtime_name)
    machine = _fingerprint(target, threads, versions)
    run_id, resumed = store.begin_run(
        target=target.name, profile=profile.name, model=work.model,
        model_sha256=work.model_sha256, runtime=runtime_name, host=socket.gethostname(),
        versions=versions, new=new_run)
    done = store.measured_cells(run_id)
    done_failures = store.failure_cells(run_id)
    todo = cells(profile)
    batch_sizes = sorted({c.batch_size for c in todo})
    measured = skipped = 0
    runtimes = {}
    # A runtime that runs the checkpoint itself (torch) builds the model with the host's loader.
    model_options = ({"load_model": work.load_model}
                     if runtime_class(runtime_name).runs_checkpoint else {})

    def runtime_for(precision: str):
        if precision not in runtimes:
            runtimes[precision] = create_runtime(runtime_name, artifacts[precision].path,
                                                 threads=threads, batch_sizes=batch_sizes,
                                                 **runtime_options, **model_options)
        return runtimes[precision]

    try:
        for i, cell in enumerate(todo, 1):
            if cell.kind == "failures":
                attack, eps = cell.input_set.split("@")
                stored = (cell.precision, cell.batch_size, attack, float(eps)) in done_failures
            else:
                stored = (runtime_name, cell.precision, cell.batch_size, cell.input_set) in done
            if stored:
                skipped += 1
                if on_cell:
                    on_cell(i, len(todo), cell, None)
                continue
            rt = runtime_for(cell.precision)
            profiler = prof_cls(**target.profiler_options) if prof_ok else None
            if cell.kind == "failures":
                result = _failure_cell(store, run_id, target, cell, rt, inputs["clean"], qa,
                                       profiler)
            else:
                result = _measure_cell(store, run_id, target, runtime_name, cell, rt,
                                       inputs[cell.input_set],
                                       profile.timing, profiler, prof_reason, machine,
                                       artifacts[cell.precision])
            measured += 1
            if on_cell:
                on_cell(i, len(todo), cell, result)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done")
    return SweepResult(run_id, resumed, measured, skipped, store.measurements(run_id),
                       store.failures(run_id), None if prof_ok else prof_reason)


def _measure_cell(store, run_id, target, runtime_name, cell, rt, inputs, timing, profiler,
                  prof_reason, machine, art) -> Measurement:
    m = measure(rt, inputs.images, inputs.labels, cell.batch_size, timing, profiler=profiler,
                profiler_name=target.profiler,
                profiler_note=None if profiler else prof_reason,
                state=lambda: machine_state(profiler))
    row = asdict(m)
    row.update(run_id=run_id, target=target.name, runtime=runtime_name,
               precision=cell.precision, input_set=cell.input_set, artifact_sha256=art.sha256,
               fingerprint={**machine, **rt.info(), "artifact_sha256": art.sha256,
                            "precision": cell.precision, "timestamp": now()})
    if cell.input_set != "clean":
        row.update(_versus_clean(store, run_id, runtime_name, cell, m))
    store.add_measurement(row)
    return m


def _versus_clean(store, run_id, runtime, cell, m: Measurement) -> dict:
    """Compare an adversarial cell with the clean cell of the same precision and batch size."""
    clean = next((r for r in store.measurements(run_id)
                  if (r["runtime"], r["precision"], r["batch_size"], r["input_set"])
                  == (runtime, cell.precision, cell.batch_size, "clean")), None)
    if clean is None or not clean["latencies_ms"]:
        return {}
    stats = compare_samples(m.latencies_ms, json.loads(clean["latencies_ms"]))
    out = {"latency_vs_clean_ratio": stats["ratio_p50"], "latency_vs_clean_p": stats["p_value"],
           "latency_vs_clean_cliffs_delta": stats["cliffs_delta"]}
    if m.energy_per_inference_j and clean["energy_per_inference_j"]:
        out["energy_vs_clean_ratio"] = m.energy_per_inference_j / clean["energy_per_inference_j"]
    return out


def _failure_cell(store, run_id, target, cell, rt, clean, qa, profiler) -> list:
    attack, eps = cell.input_set.split("@")
    n = min(qa.samples, len(clean.images))
    records = square_attack(rt, clean.images[:n], clean.labels[:n], clean.sample_ids[:n],
                            float(eps), qa.budget_queries, cell.batch_size, p_init=qa.p_init,
                            seed=qa.seed, profiler=profiler)
    store.add_failures([{**asdict(r), "run_id": run_id, "target": target.name,
                         "precision": cell.precision, "batch_size": cell.batch_size,
                         "attack": attack, "eps": float(eps)} for r in records])
    return records


def machine_state(profiler=None) -> dict:
    """CPU clocks, temperatures and throttle counters, merged with the profiler's own state
    (a GPU's clocks and clock-event reasons) where it has one."""
    state = cpu_state()
    extra = profiler.state() if profiler is not None and hasattr(profiler, "state") else {}
    for key, value in extra.items():
        if isinstance(value, dict):
            state.setdefault(key, {}).update(value)
        else:
            state[key] = value
    return state


def _versions(runtime: str) -> dict:
    out = {"edgerob": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    try:
        out[runtime] = md.version(runtime)  # runtime names are their package names
    except md.PackageNotFoundError:
        pass
    return out


def _fingerprint(target, threads: int | None, versions: dict) -> dict:
    """Where and how this was measured, as far as the machine tells without root."""
    fp = {"target": target.name, "host": socket.gethostname(), "platform": platform.platform(),
          "machine": platform.machine(), "cpu_count": os.cpu_count(), "threads": threads,
          "versions": versions}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                fp["cpu_model"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cpufreq = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    for name in ("scaling_governor", "scaling_cur_freq", "scaling_max_freq"):
        try:
            fp[f"cpu0_{name}"] = (cpufreq / name).read_text().strip()
        except OSError:
            fp[f"cpu0_{name}"] = None  # not exposed here (VMs and containers often hide it)
    return json.loads(json.dumps(fp, default=str))
