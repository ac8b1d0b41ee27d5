"""Profiles (profiles/NAME.yaml) and the sweep that measures every cell of one on a target.

A cell is runtime x precision x batch size x input set. Cells already in the store for the same
run are skipped, so an interrupted sweep resumes where it stopped; each cell is written in one
transaction, so an interruption leaves only whole cells behind.
"""

from __future__ import annotations

import json
import os
import platform
import socket
import sys
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Annotated, Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from edgerob import __version__
from edgerob.device.bench import Measurement, TimingRules, compare_samples, measure
from edgerob.catalog import find_yaml, load_yaml
from edgerob.device.clocks import cpu_state
from edgerob.errors import EdgerobError
from edgerob.device.profilers import profiler_class
from edgerob.device.runtimes import create_runtime, runtime_class
from edgerob.store import Store, now
from edgerob.catalog.targets import Target

Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Eps = Annotated[float, Field(ge=0, le=1)]


class AttackSpec(_Strict):
    """White-box input sets crafted on the host on the fp32 model: one per eps."""

    attack: str
    eps: list[Eps] = Field(min_length=1)
    precise: bool = False
    official: bool = False  # AutoAttack at the official strength (100 steps, 5000 queries)
    params: dict = Field(default_factory=dict)

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        from edgerob.host.attacks import ATTACKS

        if v not in ATTACKS:
            raise ValueError(f"unknown attack {v!r}; allowed: {', '.join(ATTACKS)}")
        return v


class QueryAttackSpec(_Strict):
    """Black-box attack on the deployed artifact, producing failure records."""

    attack: Literal["square"] = "square"
    eps: list[Annotated[float, Field(gt=0, le=1)]] = Field(min_length=1)
    budget_queries: int = Field(ge=2)
    samples: PositiveInt = 32
    precisions: list[Precision] | None = None  # None: the profile's
    batch_sizes: list[PositiveInt] | None = None  # None: the profile's
    p_init: float = Field(0.1, gt=0, le=1)
    seed: int = 0


class Profile(_Strict):
    name: str
    description: str = ""
    precisions: list[Precision] = Field(min_length=1)
    batch_sizes: list[PositiveInt] = Field(min_length=1)
    samples: PositiveInt | None = None  # cap on samples per input set; None: the whole test split
    timing: TimingRules = Field(default_factory=TimingRules)
    attacks: list[AttackSpec] = Field(default_factory=list)
    query_attack: QueryAttackSpec | None = None

    @field_validator("precisions", "batch_sizes")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {v}")
        return v

    @property
    def input_sets(self) -> list[str]:
        """'clean' then one ATTACK@EPS per white-box attack and eps."""
        from edgerob.host.attacks import input_set_name

        return ["clean"] + [input_set_name(a.attack, e) for a in self.attacks for e in a.eps]


def load_profile(name: str) -> Profile:
    """A profile by catalog name (quick, ...) or by path to its YAML file."""
    return load_yaml(find_yaml("profiles", name), Profile)


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


def cells(profile: Profile) -> list[Cell]:
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
    """What a sweep runs: the artifacts by precision and the input sets by name. Built on the
    host from a model folder (`prepare_workload`), or read from a bundle on a device."""

    model: str
    model_sha256: str
    artifacts: dict  # precision -> Artifact
    inputs: dict  # input set name -> InputSet


def sweep_precisions(profile: Profile) -> list[str]:
    qa = profile.query_attack
    return list(dict.fromkeys(profile.precisions + ((qa.precisions or []) if qa else [])))


def prepare_workload(profile: Profile, model_dir: str | Path) -> Workload:
    """Export the artifacts and craft the input sets the profile needs (host side: torch)."""
    from edgerob.host.export import export
    from edgerob.host.models import load_card

    card = load_card(model_dir)
    artifacts = export(model_dir, precisions=sweep_precisions(profile))
    return Workload(card.name, card.checkpoint_sha256, artifacts, input_sets(profile, model_dir))


def pick_runtime(target: Target) -> tuple[str, dict]:
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


def run_profile(target: Target, profile: Profile, model: str | Path | Workload, store: Store, *,
                new_run: bool = False, threads: int | None = None,
                on_cell: Callable[[int, int, Cell, object | None], None] | None = None,
                ) -> SweepResult:
    """Measure every cell of `profile` on `target` (this machine) for `model`: a model folder
    (artifacts and input sets are made on first use and reused after) or a prepared Workload.

    `on_cell(done, total, cell, result)` is called after each cell (result None: already
    stored, skipped).
    """
    if not target.is_local:
        raise EdgerobError(f"target {target.name!r} is on host {target.host!r}; this command "
                           f"measures the local machine only")
    work = model if isinstance(model, Workload) else prepare_workload(profile, model)
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

    def runtime_for(precision: str):
        if precision not in runtimes:
            runtimes[precision] = create_runtime(runtime_name, artifacts[precision].path,
                                                 threads=threads, batch_sizes=batch_sizes,
                                                 **runtime_options)
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
    from edgerob.device.failures import square_attack

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


def input_sets(profile: Profile, model_dir: str | Path) -> dict:
    """Every input set the profile names, as InputSets. White-box sets are crafted on the fp32
    torch model once and cached in MODEL_DIR/inputs/NAME.npz."""
    from edgerob.host.attacks import InputSet, craft, input_set_name
    from edgerob.host.data import load_dataset
    from edgerob.host.models import load_card

    card = load_card(model_dir)
    data = load_dataset(card.dataset, card.dataset_root)
    if list(data.input_shape) != list(card.input_shape):
        raise EdgerobError(f"dataset {card.dataset} gives images of shape {data.input_shape}, "
                           f"the model expects {tuple(card.input_shape)}")
    n = min(profile.samples or len(data.x_test), len(data.x_test))
    ids = np.arange(n, dtype=np.int64)
    sets = {"clean": InputSet(name="clean", images=data.x_test[:n], labels=data.y_test[:n],
                              sample_ids=ids, attack=None, eps=0.0, params={})}
    model = None
    for spec in profile.attacks:
        for eps in spec.eps:
            name = input_set_name(spec.attack, eps)
            path = Path(model_dir) / "inputs" / f"{name}.npz"
            wanted = {"precise": spec.precise, "official": spec.official, **spec.params}
            if path.is_file():
                cached = InputSet.load(path)
                if (cached.sample_ids.tolist() == ids.tolist()
                        and cached.params.get("requested") == wanted):
                    sets[name] = cached
                    continue
            if model is None:
                from edgerob.host.models import load_checkpoint

                model, _ = load_checkpoint(model_dir)
            crafted = craft(model, sets["clean"].images, sets["clean"].labels, ids, spec.attack,
                            eps, precise=spec.precise, official=spec.official, **spec.params)
            crafted.params["requested"] = wanted
            crafted.save(path)
            sets[name] = crafted
    return sets


def _versions(runtime: str) -> dict:
    import importlib.metadata as md

    out = {"edgerob": __version__, "python": sys.version.split()[0], "numpy": np.__version__}
    try:
        out[runtime] = md.version(runtime)  # runtime names are their package names
    except md.PackageNotFoundError:
        pass
    return out


def _fingerprint(target: Target, threads: int | None, versions: dict) -> dict:
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
