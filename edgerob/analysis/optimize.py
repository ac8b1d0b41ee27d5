"""Multi-objective search over the whole deployment decision with Optuna (`edgerob optimize`).

Meyers et al. (2024) used the Tree-structured Parzen Estimator to trade robustness against run
time in one search; this does it for the decision a deployment makes: model depth and width,
precision, batch size, adversarial-training eps, defence parameters and (where several can run
here) the target. Every trial is a real, small train -> export -> profile run at the budget the
space file sets, and its measurements go to the results store like any sweep's.

Objectives (fixed for a study; one that cannot be measured here is left out with a note, since
Optuna takes no missing values):
- robust accuracy, up: the deployed artifact's accuracy on an input set crafted on the fp32
  torch model (white-box, BPDA through feature squeezing) at the space's attack eps;
- p50 latency of one batch, down;
- energy per inference, down (only where every target's profiler can measure it);
- USD per million inferences for the space's workload (edgerob.analysis.cost.tco), down (only where every
  target has a price; a bought device needs measured energy as well).

Constraints go through Optuna's constraint API (`trial.set_constraint`, feasible when <= 0): a
p99 latency budget and a memory budget (the deployed artifact's size). Infeasible trials are kept,
marked, and never on the front. A trial that raises is stored as failed with its error (user
attribute `error`) and the study goes on.

The study lives in an Optuna RDB storage: `sqlite:///edgerob.db` by default, or a PostgreSQL URL
that many workers on many machines join (`resume=True` is `load_if_exists`), with heartbeats so a
dead worker's trial is failed and queued again (RetryHeartbeatStaleTrialCallback). It is a
standard Optuna study: optuna-dashboard opens the same URL.
"""

from __future__ import annotations

import json
import math
import os
import re
import socket
import tempfile
import warnings
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any, Callable, Literal, Sequence, Union

import numpy as np
import sqlalchemy as sa
from pydantic import (BaseModel, ConfigDict, Discriminator, Field, PositiveFloat, PositiveInt, Tag,
                      model_validator)

from edgerob.analysis.cost import Workload as CostWorkload, tco
from edgerob.catalog import find_yaml, load_yaml
from edgerob.catalog.profiles import AttackSpec, Profile
from edgerob.catalog.targets import detected, load_target, machine_facts, matching_targets
from edgerob.device.bench import TimingRules
from edgerob.device.inputs import InputSet
from edgerob.device.profilers import profiler_class
from edgerob.device.sweep import Workload, pick_runtime, run_profile
from edgerob.errors import EdgerobError
from edgerob.host.attacks import _resolve_params, bpda, craft
from edgerob.host.data import load_dataset
from edgerob.host.export import export
from edgerob.host.models import load_checkpoint, parse_arch
from edgerob.host.train import TrainConfig, train
from edgerob.store import DEFAULT_URL, Store, normalize_url

DEFAULT_STORAGE = "sqlite:///edgerob.db"
DEFAULT_SPACE = "quick"  # profiles/space-quick.yaml

# name -> (direction, label); the order is the order of a study's values
OBJECTIVES = {
    "robust_accuracy": ("maximize", "robust accuracy"),
    "latency_p50_ms": ("minimize", "p50 latency ms"),
    "energy_per_inference_j": ("minimize", "J / inference"),
    "usd_per_million_inferences": ("minimize", "USD / M inferences"),
}
# constraint name -> (metric the runner returns, space field holding the budget)
CONSTRAINTS = {
    "p99_latency_ms": ("latency_p99_ms", "p99_latency_ms"),
    "memory_mb": ("memory_mb", "memory_mb"),
}
ATTR_OBJECTIVES = "edgerob:objectives"
ATTR_SPACE = "edgerob:space"
ATTR_NOTES = "edgerob:notes"
# PostgreSQL advisory lock held while one worker creates Optuna's tables
_STORAGE_LOCK = 0x6F7074756E61  # "optuna"


# --- the space file ---------------------------------------------------------------------------

class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IntRange(_Strict):
    low: int
    high: int
    step: PositiveInt = 1
    log: bool = False

    @model_validator(mode="after")
    def _order(self):
        _check_range(self)
        return self

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


class FloatRange(_Strict):
    low: float
    high: float
    step: PositiveFloat | None = None
    log: bool = False

    @model_validator(mode="after")
    def _order(self):
        _check_range(self)
        return self


def _check_range(r) -> None:
    if not r.low <= r.high:
        raise ValueError(f"low ({r.low}) must not exceed high ({r.high})")
    if r.log and r.low <= 0:
        raise ValueError("a log range needs low > 0")
    if r.log and r.step not in (None, 1):
        raise ValueError("a log range takes no step")


def _range_or_list(v) -> str:
    return "range" if isinstance(v, (dict, IntRange, FloatRange)) else "list"


# a list is a categorical choice, a mapping a range: each validated as what it is, so an error
# names the real problem
Ints = Annotated[Union[Annotated[list[int], Field(min_length=1), Tag("list")],
                       Annotated[IntRange, Tag("range")]], Discriminator(_range_or_list)]
Floats = Annotated[Union[Annotated[list[float], Field(min_length=1), Tag("list")],
                         Annotated[FloatRange, Tag("range")]], Discriminator(_range_or_list)]


class SearchParams(_Strict):
    """What a trial chooses: a list is a categorical choice, {low, high[, step][, log]} a range.
    A parameter left out (or null) is not searched: the training default holds."""

    depth: Ints = [8]  # ResNet depth, 6n+2 (8, 14, 20, ...)
    width: Ints = [8]  # base width
    precision: Annotated[list[Literal["fp32", "fp16", "int8"]], Field(min_length=1)] = ["fp32"]
    batch_size: Ints = [1]  # inference batch size of the deployment
    adversarial: Annotated[list[Literal["pgd", "fgsm-rs"] | None],
                           Field(min_length=1)] | None = None  # None in the list: standard
    eps: Floats | None = None  # adversarial-training eps (sampled only for adversarial trials)
    squeeze_bits: Annotated[list[int | None], Field(min_length=1)] | None = None
    output_noise: Floats | None = None  # sigma of the seeded logit noise
    train_noise: Floats | None = None  # sigma of Gaussian noise on training inputs
    target: Annotated[list[str], Field(min_length=1)] | None = None  # names or YAML paths

    @model_validator(mode="after")
    def _valid(self):
        for d in _choices(self.depth):
            try:
                parse_arch(f"resnet{d}")
            except EdgerobError as e:
                raise ValueError(f"depth {d}: {e}") from None
        for name in ("width", "batch_size"):
            if min(_choices(getattr(self, name))) < 1:
                raise ValueError(f"{name} values must be at least 1")
        if self.eps is not None:
            lo, hi = _bounds(self.eps)
            if not 0 < lo <= hi <= 1:
                raise ValueError("eps values must be in (0, 1]")
        for name in ("output_noise", "train_noise"):
            v = getattr(self, name)
            if v is not None and _bounds(v)[0] < 0:
                raise ValueError(f"{name} values must be >= 0")
        if self.adversarial and any(self.adversarial) and self.eps is None:
            raise ValueError("adversarial training is searched: give eps (list or range)")
        return self


def _choices(spec) -> list:
    return spec.values() if isinstance(spec, IntRange) else list(spec)


def _bounds(spec) -> tuple[float, float]:
    if isinstance(spec, (IntRange, FloatRange)):
        return spec.low, spec.high
    return min(spec), max(spec)


class Budget(_Strict):
    """How much each trial may spend: tiny by default (2 epochs, a short timing window)."""

    dataset: str = "digits"
    data_root: str | None = None
    epochs: PositiveInt = 2
    seed: int = 0  # training seed, the same for every trial: differences come from the params
    samples: PositiveInt = 200  # test images in the clean and the crafted input set
    timing: TimingRules = Field(default_factory=lambda: TimingRules(
        warmup_s=0.05, min_duration_s=0.2, min_iterations=5, idle_s=0.2, min_power_samples=2))


class Robustness(_Strict):
    """The attack behind the robust-accuracy objective, at one fixed eps for every trial."""

    attack: Literal["pgd", "fgsm"] = "pgd"
    eps: float = Field(0.1, gt=0, le=1)
    params: dict = Field(default_factory=dict)  # e.g. pgd {steps: 10} (edgerob.host.attacks)

    @model_validator(mode="after")
    def _known_params(self):
        try:
            _resolve_params(self.attack, self.eps, False, dict(self.params))
        except EdgerobError as e:
            raise ValueError(str(e)) from None
        return self


class Constraints(_Strict):
    p99_latency_ms: PositiveFloat | None = None  # per batch
    memory_mb: PositiveFloat | None = None  # the deployed artifact's size (MiB)


class WorkloadSpec(_Strict):
    """The workload the cost objective prices (edgerob.analysis.cost.Workload)."""

    inferences_per_s: PositiveFloat = 100.0
    hours_per_day: float = Field(24.0, gt=0, le=24)
    years: PositiveFloat = 3.0
    electricity_usd_per_kwh: float = Field(0.15, ge=0)
    utilisation: float = Field(0.7, gt=0, le=1)


class SamplerSpec(_Strict):
    seed: int = 0
    startup_trials: PositiveInt = 10  # random trials before TPE models the front


class Space(_Strict):
    name: str
    description: str = ""
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    budget: Budget = Field(default_factory=Budget)
    robustness: Robustness = Field(default_factory=Robustness)
    params: SearchParams = Field(default_factory=SearchParams)
    constraints: Constraints = Field(default_factory=Constraints)
    workload: WorkloadSpec = Field(default_factory=WorkloadSpec)


def load_space(space: str | Path | Space | None = None) -> Space:
    """A space by name (`quick` is profiles/space-quick.yaml), by path to its YAML file (read
    with yaml.safe_load and validated), or as it is."""
    if isinstance(space, Space):
        return space
    name = str(space or DEFAULT_SPACE)
    if not (name.endswith((".yaml", ".yml")) or "/" in name or name.startswith("space-")):
        name = f"space-{name}"
    return load_yaml(find_yaml("profiles", name), Space)


# --- objectives, targets, trial configs --------------------------------------------------------

@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "maximize" / "minimize"
    label: str


@dataclass
class Plan:
    """What a study optimises here: objectives, targets and the params actually searched."""

    objectives: list[Objective]
    targets: list  # edgerob.catalog.targets.Target
    params: SearchParams
    notes: list[str] = field(default_factory=list)

    @property
    def names(self) -> list[str]:
        return [o.name for o in self.objectives]

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]


def train_fields() -> set[str]:
    """The fields this edgerob's TrainConfig has (adversarial training and defences may not be
    there in every version)."""
    return {f.name for f in fields(TrainConfig)}


def resolve_targets(names: Sequence[str] | str | None) -> tuple[list, list[str]]:
    """Targets a trial can run on here: local, with a runtime that runs on this machine.
    `auto` (or None) is every catalog target that matches this machine. Returns (targets,
    notes)."""
    notes = []
    if isinstance(names, str):
        names = [n.strip() for n in names.split(",") if n.strip()]
    if not names or list(names) == ["auto"]:
        found = []
        for t in matching_targets(machine_facts()):
            try:
                if t.is_local:
                    pick_runtime(t)
                    found.append(t)
            except EdgerobError as e:
                notes.append(f"target {t.name} matches this machine but cannot run here: {e}")
        if not found:
            raise EdgerobError("no catalog target matches this machine and runs here: name one "
                               "with --target")
        return found, notes
    out = []
    facts = None
    for n in names:
        t = load_target(n)
        if not t.is_local:
            raise EdgerobError(f"target {t.name!r} is on host {t.host!r}: optimize measures this "
                               f"machine only (run a worker on that device with the same "
                               f"--storage and --resume)")
        if t.detect is not None:
            facts = facts or machine_facts()
            if not detected(t.detect, facts):
                raise EdgerobError(
                    f"target {t.name!r} describes another machine (its detect: "
                    f"{t.detect.model_dump(exclude_none=True)}; this one: "
                    f"{facts.get('device_model') or 'no device model'}, GPUs "
                    f"{', '.join(facts.get('gpu_names') or []) or 'none'}): optimize measures "
                    f"this machine only; run a worker on that device with the same --storage "
                    f"and --resume")
        pick_runtime(t)  # raises with the reasons when none of its runtimes runs here
        out.append(t)
    if len({t.name for t in out}) != len(out):
        raise EdgerobError(f"targets named twice: {', '.join(t.name for t in out)}")
    return out, notes


def plan_study(space: Space, targets: list) -> Plan:
    """Objectives and searched params for `space` on `targets`, with a note for each thing left
    out and why."""
    notes = []
    objectives = [Objective(n, *OBJECTIVES[n]) for n in ("robust_accuracy", "latency_p50_ms")]
    no_energy = []
    for t in targets:
        try:
            ok, why = profiler_class(t.profiler).available(**t.profiler_options)
        except EdgerobError as e:
            ok, why = False, str(e)
        if not ok:
            no_energy.append(f"{t.name}: profiler {t.profiler}: {why}")
    if no_energy:
        notes.append("energy per inference is not an objective (no energy sensor readable here, "
                     "and Optuna cannot take missing values): " + "; ".join(no_energy))
    else:
        objectives.append(Objective("energy_per_inference_j",
                                    *OBJECTIVES["energy_per_inference_j"]))
    no_price = []
    for t in targets:
        p = t.price
        if not (p.cloud_usd_per_h or (p.purchase_usd and not no_energy)):
            no_price.append(f"{t.name}: " + ("no price in its target file" if not
                                             (p.cloud_usd_per_h or p.purchase_usd) else
                                             "bought devices need measured energy"))
    if no_price:
        notes.append("cost per million inferences is not an objective: " + "; ".join(no_price))
    else:
        objectives.append(Objective("usd_per_million_inferences",
                                    *OBJECTIVES["usd_per_million_inferences"]))

    have = train_fields()
    params = space.params.model_copy()
    for names, what in ((("adversarial", "eps"), "adversarial training"),
                        (("squeeze_bits",), "feature squeezing"),
                        (("output_noise",), "output noise"), (("train_noise",), "training noise")):
        searched = [n for n in names if getattr(params, n) is not None]
        missing = [n for n in names if n not in have]
        if searched and missing:
            for n in names:
                setattr(params, n, None)
            notes.append(f"{what} ({', '.join(searched)}) left out of the search: this edgerob's "
                         f"TrainConfig has no {', '.join(missing)}")
    if params.adversarial is None or not any(params.adversarial):
        params.eps = None
    return Plan(objectives, targets, params, notes)


def sample_config(trial, params: SearchParams, targets: list) -> dict:
    """One trial's configuration from the space (Optuna's suggest API; TPE by default)."""

    def suggest(name, spec, kind):
        if isinstance(spec, IntRange):
            return trial.suggest_int(name, spec.low, spec.high, step=spec.step, log=spec.log)
        if isinstance(spec, FloatRange):
            return trial.suggest_float(name, spec.low, spec.high, step=spec.step, log=spec.log)
        return trial.suggest_categorical(name, [kind(v) if v is not None else None
                                                for v in spec])

    cfg: dict[str, Any] = {
        "depth": suggest("depth", params.depth, int),
        "width": suggest("width", params.width, int),
        "precision": suggest("precision", params.precision, str),
        "batch_size": suggest("batch_size", params.batch_size, int),
        "adversarial": None, "eps": None,
    }
    if params.adversarial is not None:
        cfg["adversarial"] = suggest("adversarial", params.adversarial, str)
        if cfg["adversarial"] is not None:
            cfg["eps"] = suggest("eps", params.eps, float)
    for name, kind in (("squeeze_bits", int), ("output_noise", float), ("train_noise", float)):
        spec = getattr(params, name)
        cfg[name] = suggest(name, spec, kind) if spec is not None else None
    cfg["target"] = (suggest("target", [t.name for t in targets], str) if len(targets) > 1
                     else targets[0].name)
    return cfg


# --- one trial: train, export, craft, profile ---------------------------------------------------

@dataclass
class TrialContext:
    """What a runner gets besides the trial's configuration."""

    number: int
    study_name: str
    space: Space
    target: Any  # edgerob.catalog.targets.Target
    store: Store
    workdir: Path  # a folder of its own for this trial's model and artifacts
    objectives: list[str]


Runner = Callable[[dict, TrialContext], dict]


def train_config(cfg: dict, budget: Budget):
    """A TrainConfig for the trial, built only from fields this edgerob's TrainConfig has: a
    searched field it lacks is an error (plan_study leaves those out of the search first)."""
    have = train_fields()
    kwargs = {"arch": f"resnet{cfg['depth']}", "width": cfg["width"], "epochs": budget.epochs,
              "seed": budget.seed}
    optional = {"dataset": budget.dataset, "data_root": budget.data_root,
                "robust_eval_samples": 0}  # robustness is measured on the artifact instead
    if "dataset" not in have and budget.dataset != "digits":
        raise EdgerobError(f"this edgerob's TrainConfig has no dataset field: only digits, "
                           f"not {budget.dataset!r}")
    kwargs.update({k: v for k, v in optional.items() if k in have})
    searched = {k: cfg[k] for k in ("adversarial", "eps", "squeeze_bits", "output_noise",
                                    "train_noise") if cfg.get(k) is not None}
    missing = sorted(set(searched) - have)
    if missing:
        raise EdgerobError(f"this edgerob's TrainConfig has no {', '.join(missing)}")
    return TrainConfig(**kwargs, **searched)


def run_pipeline(cfg: dict, ctx: TrialContext) -> dict:
    """The real trial: train at the budget, export the chosen precision, craft the attack's
    input set on the fp32 torch model, profile clean and attacked inputs on the target (one
    run in the results store), and price it. Returns the metrics."""
    space, budget, rob = ctx.space, ctx.space.budget, ctx.space.robustness
    config = train_config(cfg, budget)
    model_dir = ctx.workdir / "model"
    model, card = train(config, model_dir)
    precision = cfg["precision"]
    art = export(model_dir, precisions=[precision])[precision]
    data = load_dataset(card.dataset, card.dataset_root)
    n = min(budget.samples, len(data.x_test))
    ids = np.arange(n, dtype=np.int64)
    clean = InputSet.clean(data.x_test[:n], data.y_test[:n], ids)
    straight = any(getattr(m, "non_differentiable", False) for m in model.modules())
    with bpda(model, enabled=straight):  # gradients through feature squeezing, as deployed
        adv = craft(model, clean.images, clean.labels, ids, rob.attack, rob.eps,
                    seed=budget.seed, **rob.params)
    profile = Profile(name=f"optimize:{ctx.study_name}", precisions=[precision],
                      batch_sizes=[cfg["batch_size"]], samples=n, timing=budget.timing,
                      attacks=[AttackSpec(attack=rob.attack, eps=[rob.eps], params=rob.params)])
    work = Workload(card.name, card.checkpoint_sha256, {precision: art},
                    {"clean": clean, adv.name: adv}, load_model=load_checkpoint)
    result = run_profile(ctx.target, profile, work, ctx.store, new_run=True)
    rows = {r["input_set"]: r for r in result.rows}
    c, a = rows["clean"], rows[adv.name]
    cost = tco(ctx.target, c, CostWorkload(**space.workload.model_dump()))
    return {
        "robust_accuracy": a["accuracy"], "clean_accuracy": c["accuracy"],
        "latency_p50_ms": c["latency_p50_ms"], "latency_p99_ms": c["latency_p99_ms"],
        "latency_p50_per_sample_ms": c["latency_p50_ms"] / cfg["batch_size"],
        "throughput_sps": c["throughput_sps"],
        "energy_per_inference_j": c["energy_per_inference_j"],
        "usd_per_million_inferences": cost["usd_per_million_inferences"],
        "memory_mb": art.size_bytes / 2**20,
        "torch_robust_accuracy": adv.robust_accuracy, "train_time_s": card.train_time_s,
        "epochs_run": card.epochs_run, "run_id": result.run_id, "model": card.name,
        "model_sha256": card.checkpoint_sha256, "artifact_sha256": art.sha256,
        "input_set": adv.name, "power_note": result.power_note,
        "cost_notes": "; ".join(cost["notes"]) or None,
    }


# --- the study ----------------------------------------------------------------------------------

@dataclass
class OptimizeResult:
    study_name: str
    storage: str  # password hidden
    objectives: list[Objective]
    constraints: dict[str, float]  # name -> budget
    front: list[dict]  # study.best_trials as rows, best robust accuracy first
    trials: list[dict]  # every trial of the study, all workers'
    ran: list[int]  # numbers of the trials this call ran
    notes: list[str]
    plot: Path | None = None

    @property
    def directions(self) -> list[str]:
        return [o.direction for o in self.objectives]

    def counts(self) -> dict[str, int]:
        out = {"trials": len(self.trials), "complete": 0, "infeasible": 0, "failed": 0,
               "running": 0, "waiting": 0, "pruned": 0}
        for t in self.trials:
            key = {"COMPLETE": "complete", "FAIL": "failed", "RUNNING": "running",
                   "WAITING": "waiting", "PRUNED": "pruned"}[t["state"]]
            out[key] += 1
            if t["state"] == "COMPLETE" and t["feasible"] is False:
                out["infeasible"] += 1
        return out


def open_storage(url: str = DEFAULT_STORAGE, *, heartbeat_interval: int | None = 60,
                 grace_period: int | None = None, max_retry: int | None = 3):
    """An Optuna RDBStorage for `url`, with heartbeats (a dead worker's trial is failed after the
    grace period and queued again, up to `max_retry` times) unless `heartbeat_interval` is None
    or 0. On PostgreSQL, workers starting at once create the tables one at a time."""
    import optuna  # optional heavy dependency (host extra)
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback

    url = normalize_url(url)
    try:
        parsed = sa.engine.make_url(url)
    except sa.exc.ArgumentError as e:
        raise EdgerobError(f"cannot open storage {url!r}: {e}") from None
    if parsed.drivername.startswith("sqlite") and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
    kwargs: dict[str, Any] = {}
    if heartbeat_interval:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            retry = RetryHeartbeatStaleTrialCallback(max_retry=max_retry)
        kwargs.update(heartbeat_interval=int(heartbeat_interval), grace_period=grace_period,
                      heartbeat_stale_trial_callback=retry)
    engine_kwargs = {} if parsed.drivername.startswith("sqlite") else {"pool_pre_ping": True}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            if parsed.get_backend_name() == "postgresql":
                lock_engine = sa.create_engine(url, poolclass=sa.pool.NullPool)
                try:
                    with lock_engine.connect() as c:
                        c.execute(sa.select(sa.func.pg_advisory_lock(_STORAGE_LOCK)))
                        try:
                            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
                        finally:
                            c.execute(sa.select(sa.func.pg_advisory_unlock(_STORAGE_LOCK)))
                finally:
                    lock_engine.dispose()
            return RDBStorage(url, engine_kwargs=engine_kwargs, **kwargs)
    except ImportError as e:
        raise EdgerobError(f"cannot open storage {url!r}: its database driver is not installed "
                           f"({e}); for PostgreSQL: pip install 'edgerob[postgres]'") from None
    except (sa.exc.SQLAlchemyError, ValueError, RuntimeError, OSError) as e:
        reason = str(getattr(e, "orig", None) or e).strip().splitlines()[0]
        raise EdgerobError(f"cannot open storage {_hide(url)}: {reason}") from None


def _hide(url: str) -> str:
    try:
        return sa.engine.make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for messages
        return url


def optimize(trials: int, storage: str = DEFAULT_STORAGE, study_name: str = "edgerob",
             space: str | Path | Space | None = None, store: str | Store = DEFAULT_URL,
             resume: bool = False, target: str | Sequence[str] | None = None,
             on_trial: Callable[[dict], None] | None = None, *, seed: int | None = None,
             runner: Runner | None = None, workdir: str | Path | None = None,
             plot: str | Path | None = None, heartbeat_interval: int | None = 60,
             grace_period: int | None = None, max_retry: int | None = 3) -> OptimizeResult:
    """Run `trials` trials of the multi-objective study `study_name` in `storage`.

    space: a space name (`quick`: profiles/space-quick.yaml), a YAML path or a Space.
    target: name(s) or YAML path(s) of local targets, comma-separated or a list; `auto` for
        every catalog target matching this machine; None: the space's `params.target`, else cpu.
    resume: continue the study if it exists (Optuna's load_if_exists; how fleet workers join);
        without it an existing study is an error. Its objectives and space must be the same.
    on_trial(row): called after each trial this call runs.
    seed: the sampler's seed (default the space's); the number of trials already in the study is
        added, so a resumed study does not replay its first random trials. Give each
        concurrent worker its own seed.
    runner(config, context) -> metrics: replaces the real train/export/profile pipeline
        (`run_pipeline`); for tests and custom trials.
    workdir: keep each trial's model and artifacts in WORKDIR/STUDY/trial-N (default: a
        temporary folder, deleted after the trial; the measurements stay in the store).
    plot: write the Pareto plot (PNG, or any suffix matplotlib knows) to this path.
    heartbeat_interval, grace_period, max_retry: Optuna heartbeats (None or 0: off).
    """
    import optuna  # optional heavy dependency (host extra)

    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 0:
        raise EdgerobError(f"trials must be a non-negative integer, got {trials!r}")
    if not study_name:
        raise EdgerobError("the study needs a name")
    sp = load_space(space)
    targets, target_notes = resolve_targets(
        target if target is not None else (sp.params.target or ["cpu"]))
    plan = plan_study(sp, targets)
    plan.notes = target_notes + plan.notes
    db = store if isinstance(store, Store) else Store(store)
    st = open_storage(storage, heartbeat_interval=heartbeat_interval, grace_period=grace_period,
                      max_retry=max_retry)
    space_json = json.dumps(sp.model_dump(mode="json"), sort_keys=True)
    sampler_seed = sp.sampler.seed if seed is None else seed
    try:
        study = optuna.create_study(storage=st, study_name=study_name, directions=plan.directions,
                                    load_if_exists=resume)
    except optuna.exceptions.DuplicatedStudyError:
        raise EdgerobError(f"study {study_name!r} already exists in {_hide(st.url)}: --resume "
                           f"continues it, or choose another --study") from None
    _check_study(study, plan, space_json)
    done_before = len(study.get_trials(deepcopy=False, states=None))
    study = optuna.load_study(study_name=study_name, storage=st,
                              sampler=optuna.samplers.TPESampler(
                                  seed=sampler_seed + done_before,
                                  n_startup_trials=sp.sampler.startup_trials))

    ran: list[int] = []
    objective = _Objective(plan, sp, db, study_name, runner or run_pipeline, workdir)

    def callback(study_, frozen) -> None:
        ran.append(frozen.number)
        if on_trial:
            on_trial(trial_row(frozen, plan.names))

    if trials:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.optimize(objective, n_trials=trials, catch=(Exception,), callbacks=[callback],
                           gc_after_trial=False)
    result = _result(study, plan, sp, st.url, ran)
    if plot is not None:
        result.plot = plot_front(result, plot)
    return result


def _check_study(study, plan: Plan, space_json: str) -> None:
    """A study keeps its objectives and space: set them on a new study, check them on a resumed
    one (a fleet worker whose machine measures other objectives cannot join)."""
    attrs = study.user_attrs
    directions = [d.name.lower() for d in study.directions]
    if ATTR_OBJECTIVES not in attrs and (directions != plan.directions or study.get_trials(
            deepcopy=False)):
        raise EdgerobError(f"study {study.study_name!r} exists but was not made by edgerob "
                           f"optimize (directions {', '.join(directions)}, no objective names): "
                           f"choose another --study")
    if ATTR_OBJECTIVES not in attrs:
        study.set_user_attr(ATTR_OBJECTIVES, plan.names)
        study.set_user_attr(ATTR_SPACE, json.loads(space_json))
        study.set_user_attr(ATTR_NOTES, plan.notes)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # experimental in Optuna 5.0
            study.set_metric_names(plan.names)  # labels optuna-dashboard shows
        return
    if attrs[ATTR_OBJECTIVES] != plan.names:
        raise EdgerobError(f"study {study.study_name!r} optimises "
                           f"{', '.join(attrs[ATTR_OBJECTIVES])}"
                           f"; here it would be {', '.join(plan.names)} (" +
                           ("; ".join(plan.notes) or "a different machine") +
                           "): run this worker where the same objectives can be measured, or "
                           "start another study")
    if json.dumps(attrs.get(ATTR_SPACE), sort_keys=True) != space_json:
        raise EdgerobError(f"study {study.study_name!r} was created with a different space "
                           f"file; trials of two spaces are not comparable: use the same space "
                           f"or another --study")


class _Objective:
    def __init__(self, plan: Plan, space: Space, store: Store, study_name: str, runner: Runner,
                 workdir):
        self.plan, self.space, self.store = plan, space, store
        self.study_name, self.runner = study_name, runner
        self.workdir = Path(workdir) if workdir is not None else None
        self.targets = {t.name: t for t in plan.targets}

    def __call__(self, trial) -> list[float]:
        trial.set_user_attr("worker", f"{socket.gethostname()}:{os.getpid()}")
        try:
            cfg = sample_config(trial, self.plan.params, self.plan.targets)
            trial.set_user_attr("target", cfg["target"])
            metrics = self._run(trial, cfg)
            for key, value in metrics.items():
                if _jsonable(value):
                    trial.set_user_attr(key, value)
            values = []
            for o in self.plan.objectives:
                v = metrics.get(o.name)
                if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                    raise EdgerobError(f"objective {o.name} was not measured (got {v!r})")
                values.append(float(v))
            feasible = True
            for name, (metric, budget_field) in CONSTRAINTS.items():
                budget = getattr(self.space.constraints, budget_field)
                if budget is None:
                    continue
                v = metrics.get(metric)
                if not isinstance(v, (int, float)) or not math.isfinite(v):
                    raise EdgerobError(f"constraint {name}: {metric} was not measured")
                trial.set_constraint(name, float(v) - budget)
                feasible = feasible and v <= budget
            trial.set_user_attr("feasible", feasible)
            return values
        except Exception as e:
            trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:4000])
            raise

    def _run(self, trial, cfg: dict) -> dict:
        ctx = dict(number=trial.number, study_name=self.study_name, space=self.space,
                   target=self.targets[cfg["target"]], store=self.store,
                   objectives=self.plan.names)
        if self.workdir is not None:
            folder = self.workdir / self.study_name / f"trial-{trial.number}"
            folder.mkdir(parents=True, exist_ok=True)
            return self.runner(cfg, TrialContext(workdir=folder, **ctx))
        with tempfile.TemporaryDirectory(prefix=f"edgerob-trial-{trial.number}-") as tmp:
            return self.runner(cfg, TrialContext(workdir=Path(tmp), **ctx))


def _jsonable(v) -> bool:
    try:
        json.dumps(v, allow_nan=False)
        return True
    except (TypeError, ValueError):
        return False


def trial_row(t, objectives: Sequence[str]) -> dict:
    """One Optuna trial as a flat row: number, state, values by objective, feasibility,
    constraints, params, error and what the trial recorded."""
    ua = dict(t.user_attrs)
    constraints = dict(t.constraints)
    values = (dict(zip(objectives, t.values)) if t.values is not None
              and len(t.values) == len(objectives) else None)
    feasible = (all(v <= 0 for v in constraints.values()) if t.state.name == "COMPLETE"
                else None)
    row = {"number": t.number, "state": t.state.name, "values": values, "feasible": feasible,
           "constraints": constraints, "params": dict(t.params), "error": ua.pop("error", None),
           "retry_of": t.system_attrs.get("failed_trial"),
           "duration_s": t.duration.total_seconds() if t.duration else None}
    ua.pop("feasible", None)
    row.update({k: v for k, v in ua.items() if k not in row})
    return row


def _result(study, plan: Plan, space: Space, storage_url: str, ran: list[int]) -> OptimizeResult:
    # best_trials first: other workers may finish trials meanwhile, and a trial on that front is
    # complete in every later read (the front is the study's as of that read)
    front_numbers = {t.number for t in study.best_trials}
    rows = [trial_row(t, plan.names) for t in study.get_trials(deepcopy=False)]
    front = [r for r in rows if r["number"] in front_numbers]
    front.sort(key=lambda r: (-r["values"]["robust_accuracy"], r["values"]["latency_p50_ms"]))
    budgets = {k: getattr(space.constraints, f) for k, (_, f) in CONSTRAINTS.items()
               if getattr(space.constraints, f) is not None}
    notes = list(dict.fromkeys(list(study.user_attrs.get(ATTR_NOTES, [])) + plan.notes))
    return OptimizeResult(study.study_name, _hide(storage_url), plan.objectives, budgets, front,
                          rows, ran, notes)


def load_result(storage: str, study_name: str) -> tuple[list[dict], list[dict], list[str]]:
    """(front rows, all trial rows, objective names) of a stored study, measuring nothing."""
    import optuna  # optional heavy dependency (host extra)

    st = open_storage(storage, heartbeat_interval=None)
    try:
        study = optuna.load_study(study_name=study_name, storage=st)
    except KeyError:
        raise EdgerobError(f"no study {study_name!r} in {_hide(st.url)}") from None
    names = list(study.user_attrs.get(ATTR_OBJECTIVES) or study.metric_names or [])
    front = {t.number for t in study.best_trials}  # first: see _result
    rows = [trial_row(t, names) for t in study.get_trials(deepcopy=False)]
    return [r for r in rows if r["number"] in front], rows, names


# --- the Pareto front ---------------------------------------------------------------------------

def _values(item) -> list[float]:
    if hasattr(item, "values") and not isinstance(item, dict):
        return list(item.values)  # an Optuna FrozenTrial
    if isinstance(item, dict):
        v = item["values"]
        return list(v.values()) if isinstance(v, dict) else list(v)
    return list(item)


def _sign(direction) -> float:
    d = getattr(direction, "name", direction)
    d = str(d).lower()
    if d not in ("maximize", "minimize"):
        raise ValueError(f"direction must be maximize or minimize, got {direction!r}")
    return -1.0 if d == "maximize" else 1.0


def dominates(a: Sequence[float], b: Sequence[float], directions: Sequence) -> bool:
    """True when `a` is at least as good as `b` in every objective and better in one."""
    signs = [_sign(d) for d in directions]
    if not len(a) == len(b) == len(signs):
        raise ValueError("points and directions must have the same length")
    pa = [s * x for s, x in zip(signs, a)]
    pb = [s * x for s, x in zip(signs, b)]
    return all(x <= y for x, y in zip(pa, pb)) and any(x < y for x, y in zip(pa, pb))


def is_non_dominated(front, all_trials, directions) -> bool:
    """True when no point of `all_trials` dominates a point of `front`. Points are value
    sequences, Optuna trials (.values) or rows from `trial_row` (their "values"). Compare a
    constrained study's front with its feasible completed trials: an infeasible trial may
    dominate the front and is rightly not on it."""
    fr = [_values(f) for f in front]
    every = [_values(t) for t in all_trials]
    return not any(dominates(a, f, directions) for f in fr for a in every)


def pareto_front(points, directions) -> list[int]:
    """Indices of the non-dominated points among `points`."""
    vals = [_values(p) for p in points]
    return [i for i, v in enumerate(vals)
            if not any(dominates(w, v, directions) for j, w in enumerate(vals) if j != i)]


def plot_front(result: OptimizeResult, path: str | Path) -> Path:
    """Robust accuracy against each other objective: every completed trial, infeasible ones
    crossed, the Pareto front ringed. One panel per objective; written to `path`."""
    import matplotlib  # optional heavy dependency (host extra)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    objs = result.objectives
    y = objs[0]
    others = objs[1:]
    fig, axes = plt.subplots(1, len(others), figsize=(max(6.0, 4.6 * len(others)), 4.4),
                             squeeze=False)
    done = [r for r in result.trials if r["state"] == "COMPLETE" and r["values"]]
    front = {r["number"] for r in result.front}
    for ax, x in zip(axes[0], others):
        for rows, kw in (
                ([r for r in done if r["feasible"] and r["number"] not in front],
                 dict(c="0.6", s=22, label="feasible")),
                ([r for r in done if r["feasible"] is False],
                 dict(c="tab:red", marker="x", s=28, label="infeasible")),
                ([r for r in done if r["number"] in front],
                 dict(c="tab:orange", edgecolors="k", s=60, label="Pareto front", zorder=3))):
            if rows:
                ax.scatter([r["values"][x.name] for r in rows],
                           [r["values"][y.name] for r in rows], **kw)
        for r in done:
            if r["number"] in front:
                ax.annotate(str(r["number"]), (r["values"][x.name], r["values"][y.name]),
                            textcoords="offset points", xytext=(4, 4), fontsize=7)
        ax.set_xlabel(f"{x.label} ({'lower' if x.direction == 'minimize' else 'higher'} is "
                      f"better)")
        ax.set_ylabel(f"{y.label} (higher is better)")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"study {result.study_name}: {len(done)} completed trials\n"
                 f"{len(result.front)} on the Pareto front of all objectives", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
