"""The sweep: every cell of a profile measured on this machine for a prepared workload.

A cell is runtime x precision x batch size x input set x power mode (a profile may sweep modes:
edgerob.device.power_mode.switch). Cells already in the store for the same run are skipped, so
an interrupted sweep resumes where it stopped; each cell is written in one transaction, so an
interruption leaves only whole cells behind. The workload (artifacts and input
sets) comes ready: from `edgerob.host.workload` on this machine, or from a bundle on a device.
"""

from __future__ import annotations

import importlib.metadata as md
import json
import os
import platform
import socket
import sys
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Callable, Literal

import numpy as np

from edgerob import __version__
from edgerob.device.bench import Measurement, idle_baseline, measure_sets
from edgerob.device.clocks import cpu_state
from edgerob.device.failures import AttackCell, square_attack
from edgerob.device.lock import device_key, device_lock
from edgerob.device.machine import verify_target
from edgerob.device.paired import paired_ratio
from edgerob.device.power_mode import read_power_mode
from edgerob.device.power_mode.switch import ModeSweep, plan, restore_pending, same_mode
from edgerob.device.profilers import profiler_class
from edgerob.device.runtimes import GPU_PROVIDERS, create_runtime, runtime_class
from edgerob.device.sequential import km_median_ci, run_sequential
from edgerob.errors import EdgerobError
from edgerob.store import Store, now


@dataclass
class Cell:
    precision: str
    batch_size: int
    input_set: str  # "clean" / "pgd@0.1" for measurements; "square@0.1" for failure records
    kind: Literal["measure", "failures"] = "measure"
    power_mode: str | None = None  # the mode a sweep over modes sets for it; None: as it is


@dataclass
class SweepResult:
    run_id: str
    resumed: bool
    measured: int  # cells measured now
    skipped: int  # cells already in the store
    rows: list[dict]  # every measurement of the run
    failures: list[dict]  # every failure record of the run
    power_note: str | None  # why power is NULL, when it is
    attack_cells: list[dict] = field(default_factory=list)  # per query-attack cell: counts


def cells(profile) -> list[Cell]:
    """Measurement cells, the input sets of each precision and batch size together (clean
    first: they are measured in one session, interleaved, and compared with clean), then
    failure-record cells."""
    out = [Cell(p, b, s) for p in profile.precisions for b in profile.batch_sizes
           for s in profile.input_sets]
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


# Profilers that read a GPU or a Jetson: a target measured by one of them names an accelerator.
ACCELERATOR_PROFILERS = frozenset({"nvml", "tegrastats", "jtop", "ina3221"})


def on_accelerator(target) -> bool:
    """Whether the target names a GPU or Jetson, whose numbers must come from its CUDA GPU: its
    profiler reads one (nvml, tegrastats, jtop, ina3221), its runtime is tensorrt, or its
    runtime options ask for a GPU execution provider."""
    providers = target.runtime_options.get("providers") or []
    names = [p if isinstance(p, str) else p[0] for p in providers]
    return (target.profiler in ACCELERATOR_PROFILERS or target.runtime == "tensorrt"
            or any(n in GPU_PROVIDERS for n in names))


def pick_runtime(target) -> tuple[str, dict]:
    """The target's runtime if it can run here, else the first fallback that can (without the
    preferred runtime's options). Returns (name, options).

    On an accelerator target (`on_accelerator`) every candidate must run on the CUDA GPU: its
    options are made so (`Runtime.accelerator_options`: onnxruntime gets the CUDA execution
    provider, torch device cuda), and a runtime that can only run on the CPU here is skipped with
    its reason. A GPU target's numbers never come from the CPU."""
    gpu = on_accelerator(target)
    reasons = []
    for i, name in enumerate([target.runtime, *target.fallback_runtimes]):
        try:
            cls = runtime_class(name)
            ok, reason = cls.available()
        except EdgerobError as e:
            ok, reason = False, str(e)
        options = target.runtime_options if i == 0 else {}
        if ok and gpu:
            options, why = cls.accelerator_options(options)
            ok, reason = options is not None, f"cannot run on the GPU here: {why}"
        if ok:
            return name, options
        reasons.append(f"{name}: {reason}")
    raise EdgerobError(f"no runtime of target {target.name!r} can run here ({'; '.join(reasons)})")


def run_profile(target, profile, work: Workload, store: Store, *, wait: bool = True,
                on_wait: Callable[[str], None] | None = None, **options) -> SweepResult:
    """`sweep` holding the device's lock (`edgerob.device.lock`) throughout, so no other sweep
    measures this device meanwhile: a busy device is waited for (`on_wait(line)` says who holds
    it and since when) or, with `wait=False`, refused with that line."""
    with device_lock(device_key(target), wait=wait, on_wait=on_wait):
        return sweep(target, profile, work, store, **options)


def sweep(target, profile, work: Workload, store: Store, *,
          new_run: bool = False, threads: int | None = None,
          on_cell: Callable[[int, int, Cell, object | None], None] | None = None,
          force_target: bool = False,
          on_note: Callable[[str], None] | None = None) -> SweepResult:
    """Measure every cell of `profile` (a catalog Profile) on `target` (a catalog Target: this
    machine) for the prepared workload `work`.

    `on_cell(done, total, cell, result)` is called after each cell (result None: already
    stored, skipped). This machine must be the one `target` describes (`verify_target`) unless
    `force_target`, which marks the run forced.

    A profile with `power_modes`/`power_limits_w` measures every cell (failure records too) in
    each mode, setting, verifying and finally restoring the mode
    (`edgerob.device.power_mode.switch`); `on_note(line)` hears of each change, and of a mode
    put back for a sweep that was killed.
    """
    if not target.is_local:
        raise EdgerobError(f"target {target.name!r} is on host {target.host!r}; this command "
                           f"measures the local machine only")
    check = verify_target(target, force=force_target)  # before anything is measured or stored
    if on_accelerator(target):
        # CUDA ordinals in PCI bus order, as nvidia-smi and NVML number GPUs, so a device_id maps
        # to its power sensor (read by CUDA when it first initialises in this process)
        os.environ["CUDA_DEVICE_ORDER"] = "PCI_BUS_ID"
    artifacts, inputs = work.artifacts, work.inputs
    qa = profile.query_attack
    runtime_name, runtime_options = pick_runtime(target)

    threads = threads or target.threads
    prof_cls = profiler_class(target.profiler)
    prof_ok, prof_reason = prof_cls.available(**target.profiler_options)
    versions = _versions(runtime_name)
    machine = _fingerprint(target, threads, versions)
    base = cells(profile)
    batch_sizes = sorted({c.batch_size for c in base})
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

    # the GPU the runtime runs on, whose power limit is the mode (a Jetson's is the board's)
    gpu = runtime_for(base[0].precision).info() if on_accelerator(target) else None
    timing = profile.timing
    restore_pending(on_note, settle_s=timing.settle_max_s, poll_s=timing.idle_s)
    settings = plan(target, profile, gpu)  # refuses before anything is stored
    todo = [replace(c, power_mode=s.label) for s in settings for c in base] if settings else base
    run_id, resumed = store.begin_run(
        target=target.name, profile=profile.name, model=work.model,
        model_sha256=work.model_sha256, runtime=runtime_name, host=socket.gethostname(),
        versions=versions, new=new_run, **check)
    done = store.measured_cells(run_id)
    done_failures = store.failure_cells(run_id)
    measured = skipped = 0
    now_mode = read_power_mode(gpu=gpu)["power_mode"] if not settings else None

    def stored(cell: Cell) -> bool:
        if cell.kind == "failures":
            attack, eps = cell.input_set.split("@")
            key, have = (cell.precision, cell.batch_size, attack, float(eps)), done_failures
        else:
            key, have = (runtime_name, cell.precision, cell.batch_size, cell.input_set), done
        if cell.power_mode is None:  # the mode the device is in is the cell's
            return (*key, now_mode) in have
        return any(d[:-1] == key and same_mode(d[-1], cell.power_mode) for d in have)

    modes = ModeSweep(settings, gpu=gpu, on_note=on_note, settle_s=timing.settle_max_s,
                      poll_s=timing.idle_s)
    mode_set = None  # the mode last set by this sweep
    try:
        with modes:
            for group in _groups(todo):
                head = group[0]
                if all(stored(c) for c in group):
                    for cell in group:
                        skipped += 1
                        if on_cell:
                            on_cell(todo.index(cell) + 1, len(todo), cell, None)
                    continue
                if head.power_mode is not None and head.power_mode != mode_set:
                    modes.set(next(s for s in settings if s.label == head.power_mode))
                    mode_set = head.power_mode
                rt = runtime_for(head.precision)
                profiler = prof_cls(**sensor_options(target, rt)) if prof_ok else None
                if head.kind == "failures":
                    results = {head.input_set: _failure_cell(store, run_id, target, head, rt,
                                                             inputs["clean"], qa, timing,
                                                             profiler)}
                else:
                    results = _measure_group(store, run_id, target, runtime_name, group, stored,
                                             rt, inputs, timing, profiler, prof_reason, machine,
                                             artifacts[head.precision])
                for cell in group:
                    new = cell.input_set in results
                    measured += new
                    skipped += not new
                    if on_cell:
                        on_cell(todo.index(cell) + 1, len(todo), cell,
                                results.get(cell.input_set))
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done")
    return SweepResult(run_id, resumed, measured, skipped, store.measurements(run_id),
                       store.failures(run_id), None if prof_ok else prof_reason,
                       store.attack_cells(run_id=run_id))


def sensor_options(target: Target, rt) -> dict:
    """The target's profiler options, pointed at the GPU the runtime runs on: NVML gets the
    runtime's device UUID, else its PCI bus id, else its CUDA ordinal (a Jetson's sensors read
    its one GPU; other profilers take the options as they are)."""
    options = dict(target.profiler_options)
    if target.profiler != "nvml":
        return options
    info = rt.info()
    for key, option in (("device_uuid", "gpu_uuid"), ("pci_bus_id", "pci_bus_id"),
                        ("cuda_device", "cuda_device")):
        if info.get(key) is not None:
            return {**options, option: info[key]}
    return options


def _groups(todo: list[Cell]) -> list[list[Cell]]:
    """Cells measured together: the input sets of one mode, precision and batch size (one
    session, interleaved rounds); every failure-record cell alone."""
    groups: dict[tuple, list[Cell]] = {}
    for i, c in enumerate(todo):
        key = (c.power_mode, c.precision, c.batch_size) if c.kind == "measure" else i
        groups.setdefault(key, []).append(c)
    return list(groups.values())


def _measure_group(store, run_id, target, runtime_name, group, stored, rt, inputs, timing,
                   profiler, prof_reason, machine, art) -> dict[str, Measurement]:
    """Measure the input sets of one precision and batch size in alternating rounds and store
    the rows not stored yet in one transaction. Every set is measured, stored or not, so that a
    resumed group still compares within one session."""
    names = [c.input_set for c in group]
    if "clean" not in names and any(n != "clean" for n in names):
        names = ["clean", *names]  # the reference of the comparison
    info = rt.info()
    mode = cell_mode(target, group[0], info)
    started = now("microseconds")
    ms = measure_sets(rt, {n: (inputs[n].images, inputs[n].labels) for n in names},
                      group[0].batch_size, timing, profiler=profiler,
                      profiler_name=target.profiler,
                      profiler_note=None if profiler else prof_reason,
                      state=lambda: machine_state(profiler))
    # the session's span (idle baseline, warm-up, timed rounds): what the device lock keeps apart
    window = {"window_start": started, "window_end": now("microseconds")}
    rows = {}
    for cell in group:
        if stored(cell):
            continue
        m = ms[cell.input_set]
        row = asdict(m)
        row.update(run_id=run_id, target=target.name, runtime=runtime_name,
                   precision=cell.precision, input_set=cell.input_set,
                   artifact_sha256=art.sha256, power_mode=mode["power_mode"],
                   fingerprint={**machine, **info, "artifact_sha256": art.sha256,
                                "power_mode_facts": mode["power_mode_facts"],
                                "precision": cell.precision, "timestamp": now(), **window,
                                "interleaved_with": [n for n in names if n != cell.input_set],
                                # the physical GPU the power sensor read (NVML)
                                **getattr(profiler, "identity", {})})
        if cell.input_set != "clean":
            row.update(versus_clean(m, ms["clean"]))
            row.update(_sequential_columns(inputs[cell.input_set]))
        rows[cell.input_set] = row
    store.add_measurements(list(rows.values()))
    return {n: ms[n] for n in rows}


def cell_mode(target, cell: Cell, info: dict) -> dict:
    """The operating point a cell runs in (`read_power_mode`: a GPU's only where the runtime
    runs on one, `info` its `rt.info()`), read before it is measured; refused, nothing stored,
    where a sweep over modes asked another (the device left it under the sweep)."""
    mode = read_power_mode(gpu=info if on_accelerator(target) else None)
    asked = cell.power_mode
    if asked is not None and not same_mode(mode["power_mode"], asked):
        raise EdgerobError(f"the device left power mode {asked}: it reads "
                           f"{mode['power_mode'] or mode['power_mode_facts'].get('reason')} "
                           f"before {cell.precision} b{cell.batch_size}; nothing stored")
    return mode


def versus_clean(m: Measurement, clean: Measurement, confidence: float = 0.95) -> dict:
    """An input set against clean, measured in the same rounds: paired ratios of per-round
    median latency and, where a sensor measured both, of energy per inference (net of idle;
    NULL when a round's net energy is not positive: the sensor cannot tell the sets apart)."""
    lat = paired_ratio([r["p50_ms"] for r in m.rounds], [r["p50_ms"] for r in clean.rounds],
                       confidence)
    out = {"latency_vs_clean_ratio": lat.ratio, "latency_vs_clean_low": lat.low,
           "latency_vs_clean_high": lat.high, "latency_vs_clean_p": lat.p_value,
           "latency_vs_clean_effect": lat.effect, "vs_clean_rounds": lat.rounds,
           "vs_clean_confidence": lat.confidence, "vs_clean_method": PAIRED_METHOD}
    a = [r.get("energy_per_inference_j") for r in m.rounds]
    b = [r.get("energy_per_inference_j") for r in clean.rounds]
    if None not in a + b and min(a + b) > 0:
        e = paired_ratio(a, b, confidence)
        out.update(energy_vs_clean_ratio=e.ratio, energy_vs_clean_low=e.low,
                   energy_vs_clean_high=e.high)
    return out


# How vs-clean columns were measured (rows stored before 0.3.0 say "sequential cells").
PAIRED_METHOD = "paired rounds: Hodges-Lehmann ratio, exact signed-rank interval and p"


def _failure_cell(store, run_id, target, cell, rt, clean, qa, timing, profiler):
    """Attack the clean samples the artifact gets right; store the records and the cell's
    counts (`attack_cells`) in one transaction, under the power mode read before (`cell_mode`,
    which refuses a mode the device left). Returns the AttackCell. Energy to failure is net
    of the idle power measured (settled) before the attack, as energy per inference is."""
    attack, eps = cell.input_set.split("@")
    mode = cell_mode(target, cell, rt.info())
    idle_w = idle_note = None
    if profiler is not None:
        idle, idle_note = idle_baseline(profiler, timing)
        idle_w = idle.mean_w
    n = min(qa.samples, len(clean.images))
    records: list = []
    clean_wrong = 0
    batches = 0

    def attack_batch(idx: np.ndarray) -> list:
        nonlocal clean_wrong, batches
        got = square_attack(rt, clean.images[idx], clean.labels[idx], clean.sample_ids[idx],
                            float(eps), qa.budget_queries, cell.batch_size, p_init=qa.p_init,
                            seed=qa.seed + batches, profiler=profiler, idle_w=idle_w)
        batches += 1
        records.extend(got.records)
        clean_wrong += got.n_clean_wrong
        return got.records

    if qa.stop is None:
        t0 = time.perf_counter()
        attack_batch(np.arange(n))
        seq, wall = None, time.perf_counter() - t0
    else:
        def outcomes(idx: np.ndarray) -> np.ndarray:
            got = {r.sample_id: r for r in attack_batch(idx)}
            return np.array([_failed(got.get(int(i))) for i in clean.sample_ids[idx]])

        seq = run_sequential(n, outcomes, qa.stop.rule(), cell.batch_size, seed=qa.seed)
        wall = seq.wall_s
    key = {"run_id": run_id, "target": target.name, "precision": cell.precision,
           "batch_size": cell.batch_size, "attack": attack, "eps": float(eps),
           "power_mode": mode["power_mode"]}
    store.add_failures([{**asdict(r), **key} for r in records],
                       cell={**key, **_attack_cell_columns(n, clean.sample_ids, records,
                                                           clean_wrong, seq, wall),
                             "power_idle_w": idle_w, "power_note": idle_note})
    return AttackCell(n_available=n, n_clean_wrong=clean_wrong, records=records)


def _failed(record) -> float:
    """A sample's outcome for the failure proportion: 1 when misclassified within the budget;
    a sample without a record was misclassified clean (not attacked, no robust sample), as
    robust accuracy counts it."""
    return 1.0 if record is None or record.event else 0.0


def _attack_cell_columns(n: int, ids: np.ndarray, records: list, clean_wrong: int, seq,
                         wall_s: float) -> dict:
    """attack_cells columns of one query-attack cell: counts, the stopping rule, the failure
    proportion with its interval and the Kaplan-Meier median time to failure."""
    n_sampled = seq.n_attacked if seq is not None else n
    drawn = ids[seq.order] if seq is not None else ids[:n]
    by_id = {r.sample_id: r for r in records}
    confidence = seq.rule.confidence if seq is not None else 0.95
    km = km_median_ci([r.duration_s for r in records], [r.event for r in records], confidence)
    out = {"n_available": n, "n_clean_wrong": clean_wrong, "n_attacked": len(records),
           "n_sampled": n_sampled,
           "failure_rate": float(np.mean([_failed(by_id.get(i)) for i in drawn.tolist()])),
           "km_median_s": km[0], "km_median_low_s": km[1], "km_median_high_s": km[2],
           "attack_wall_s": wall_s}
    if seq is not None:
        out.update(stop_half_width=seq.rule.half_width, stop_confidence=seq.rule.confidence,
                   stop_max_samples=seq.rule.max_samples, stopped_by=seq.stopped_by,
                   failure_ci_low=seq.ci_low, failure_ci_high=seq.ci_high, ci_method=seq.method,
                   projected_saved_s=seq.saved_s)
    return out


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


def _sequential_columns(inputs) -> dict:
    """A sequential input set's host estimate (fp32 robust accuracy, its interval, the rule),
    copied beside the device's measurement of the attacked samples."""
    seq = inputs.params.get("sequential")
    if seq is None:
        return {}
    return {"seq_n_available": seq["n_available"], "seq_estimate": seq["estimate"],
            "seq_ci_low": seq["ci_low"], "seq_ci_high": seq["ci_high"],
            "seq_rule": {**seq["rule"], "stopped_by": seq["stopped_by"],
                         "method": seq["method"], "wall_s": seq["wall_s"],
                         "projected_saved_s": seq["projected_saved_s"]}}


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
