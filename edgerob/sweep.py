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
from typing import Callable, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from edgerob import __version__
from edgerob.bench import Measurement, TimingRules, measure
from edgerob.catalog import find_yaml, load_yaml
from edgerob.errors import EdgerobError
from edgerob.profilers import profiler_class
from edgerob.runtimes import create_runtime
from edgerob.store import Store, now
from edgerob.targets import Target

Precision = Literal["fp32", "fp16", "int8"]


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    precisions: list[Precision] = Field(min_length=1)
    batch_sizes: list[PositiveInt] = Field(min_length=1)
    input_sets: list[str] = Field(default_factory=lambda: ["clean"], min_length=1)
    samples: PositiveInt | None = None  # cap on samples per input set; None: the whole test split
    timing: TimingRules = Field(default_factory=TimingRules)

    @field_validator("precisions", "batch_sizes", "input_sets")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {v}")
        return v

    @field_validator("input_sets")
    @classmethod
    def _known_sets(cls, v: list[str]) -> list[str]:
        unknown = [s for s in v if s != "clean"]
        if unknown:
            raise ValueError(f"unknown input set {unknown[0]!r}; allowed: clean")
        return v


def load_profile(name: str) -> Profile:
    """A profile by catalog name (quick, ...) or by path to its YAML file."""
    return load_yaml(find_yaml("profiles", name), Profile)


@dataclass
class Cell:
    precision: str
    batch_size: int
    input_set: str


@dataclass
class SweepResult:
    run_id: str
    resumed: bool
    measured: int  # cells measured now
    skipped: int  # cells already in the store
    rows: list[dict]  # every measurement of the run
    power_note: str | None  # why power is NULL, when it is


def cells(profile: Profile) -> list[Cell]:
    return [Cell(p, b, s) for s in profile.input_sets for p in profile.precisions
            for b in profile.batch_sizes]


def run_profile(target: Target, profile: Profile, model_dir: str | Path, store: Store, *,
                new_run: bool = False, threads: int | None = None,
                on_cell: Callable[[int, int, Cell, Measurement | None], None] | None = None,
                ) -> SweepResult:
    """Measure every cell of `profile` for the model in `model_dir` on `target` (this machine).

    Artifacts are exported on first use and reused after. `on_cell(done, total, cell, m)` is
    called after each cell (m is None for a cell skipped because it was already stored).
    """
    if not target.is_local:
        raise EdgerobError(f"target {target.name!r} is on host {target.host!r}; this command "
                           f"measures the local machine only")
    from edgerob.export import export
    from edgerob.models import load_card

    card = load_card(model_dir)
    artifacts = export(model_dir, precisions=profile.precisions)
    inputs = {s: _input_set(s, card, profile.samples) for s in profile.input_sets}

    threads = threads or target.threads
    prof_cls = profiler_class(target.profiler)
    prof_ok, prof_reason = prof_cls.available()
    versions = _versions(target.runtime)
    machine = _fingerprint(target, threads, versions)
    run_id, resumed = store.begin_run(
        target=target.name, profile=profile.name, model=card.name,
        model_sha256=card.checkpoint_sha256, runtime=target.runtime, host=socket.gethostname(),
        versions=versions, new=new_run)
    done = store.measured_cells(run_id)
    todo = cells(profile)
    measured = skipped = 0
    runtimes = {}
    try:
        for i, cell in enumerate(todo, 1):
            key = (target.runtime, cell.precision, cell.batch_size, cell.input_set)
            if key in done:
                skipped += 1
                if on_cell:
                    on_cell(i, len(todo), cell, None)
                continue
            art = artifacts[cell.precision]
            if cell.precision not in runtimes:
                runtimes[cell.precision] = create_runtime(
                    target.runtime, art.path, threads=threads, **target.runtime_options)
            rt = runtimes[cell.precision]
            images, labels = inputs[cell.input_set]
            m = measure(rt, images, labels, cell.batch_size, profile.timing,
                        profiler=prof_cls() if prof_ok else None, profiler_name=target.profiler,
                        profiler_note=None if prof_ok else prof_reason)
            fingerprint = {**machine, **rt.info(),
                           "artifact_sha256": art.sha256, "precision": cell.precision,
                           "timestamp": now()}
            row = asdict(m)
            row.update(run_id=run_id, target=target.name, runtime=target.runtime,
                       precision=cell.precision, input_set=cell.input_set,
                       artifact_sha256=art.sha256, fingerprint=fingerprint)
            store.add_measurement(row)
            measured += 1
            if on_cell:
                on_cell(i, len(todo), cell, m)
    except BaseException:
        store.finish_run(run_id, "failed")
        raise
    store.finish_run(run_id, "done")
    return SweepResult(run_id, resumed, measured, skipped, store.measurements(run_id),
                       None if prof_ok else prof_reason)


def _input_set(name: str, card, samples: int | None) -> tuple[np.ndarray, np.ndarray]:
    from edgerob.data import load_dataset

    data = load_dataset(card.dataset, card.dataset_root)
    if list(data.input_shape) != list(card.input_shape):
        raise EdgerobError(f"dataset {card.dataset} gives images of shape {data.input_shape}, "
                           f"the model expects {tuple(card.input_shape)}")
    n = min(samples or len(data.x_test), len(data.x_test))
    return data.x_test[:n], data.y_test[:n]


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
