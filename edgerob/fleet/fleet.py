"""Fleet runs: many targets profiled at once into one store, each device measured by one sweep at
a time (its lock, `edgerob.device.lock`).

A fleet is a fleet file or a list of target names:

    # fleet.yaml
    defaults: {profile: quick, model: models/resnet8}   # optional; model: the default model
    targets:
      - orin-lab-1                                     # a name: the defaults apply
      - {target: orin-lab-2, profile: quick}
      - {target: targets/rtx-box.yaml, model: models/resnet20}

Target and model paths in the file are relative to its folder. Each distinct workload (profile x
model) is prepared once and shared by the targets that sweep it. Remote targets (ssh://) run
concurrently, one thread each driving OpenSSH as `profile_remote` does; then local targets run one
at a time, after the remote ones, so this machine's own measurements never share its CPU with the
fleet's copying and ingesting. A device that fails (unreachable, host key refused, a cell that
errors) is recorded and the others go on. Re-running resumes every device where it stopped: the
runs' resume keys, on the device and here.
"""

from __future__ import annotations

import shlex
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from pydantic import BaseModel, ConfigDict, Field, field_validator

from edgerob.catalog import load_yaml
from edgerob.catalog.profiles import Profile, load_profile
from edgerob.catalog.targets import Target, resolve_target
from edgerob.device.lock import device_key, holder, holder_line
from edgerob.device.sweep import Workload, cells, run_profile
from edgerob.errors import EdgerobError
from edgerob.fleet.remote import profile_remote, ssh_command


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Defaults(_Strict):
    profile: str = "quick"
    model: str | None = None  # None: the default model


class _Entry(_Strict):
    target: str
    profile: str | None = None
    model: str | None = None


class FleetFile(_Strict):
    name: str = "fleet"
    defaults: _Defaults = Field(default_factory=_Defaults)
    targets: list[_Entry] = Field(min_length=1)

    @field_validator("targets", mode="before")
    @classmethod
    def _names(cls, v):  # a bare name is an entry with the defaults
        return [{"target": e} if isinstance(e, str) else e for e in v] if isinstance(v, list) else v


@dataclass
class Member:
    """One device of a fleet: the target, the profile it sweeps and the model folder (None: the
    default model)."""

    target: Target
    profile: Profile
    model: Path | None = None

    @property
    def workload_key(self) -> tuple:
        return (self.profile.model_dump_json(), str(self.model.resolve()) if self.model else None)


@dataclass
class DeviceRun:
    """A device's progress and outcome in a fleet run."""

    name: str
    remote: bool
    step: str = "waiting to start"
    done: int = 0  # cells done (measured or found stored)
    total: int = 0
    measured: int = 0  # cells measured by this run
    skipped: int = 0  # cells already stored: resumed
    error: str | None = None  # why the device failed (None: it did not)
    started: float | None = None  # time.monotonic()
    ended: float | None = None
    run_ids: list[str] = field(default_factory=list)

    @property
    def failed(self) -> bool:
        return self.error is not None

    @property
    def resumed(self) -> bool:
        return self.skipped > 0

    @property
    def elapsed_s(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.monotonic()) - self.started


def load_fleet(path: str | Path) -> list[Member]:
    """The members of a fleet file (module docstring); one-line errors name the file and field."""
    path = Path(path)
    fleet = load_yaml(path, FleetFile)
    here = path.parent

    def local(value: str | None) -> str | None:  # paths in the file are relative to it
        if value is None or not (value.endswith((".yaml", ".yml")) or "/" in value):
            return value
        return str(here / value)

    try:
        return _members([(local(e.target), local(e.profile or fleet.defaults.profile),
                          local(e.model or fleet.defaults.model)) for e in fleet.targets])
    except EdgerobError as e:
        raise EdgerobError(f"{path}: {e}") from None


def fleet_from_names(targets: list[str], profile: str = "quick",
                     model: str | Path | None = None) -> list[Member]:
    """The members of `--targets a,b,c`: one profile and model for all."""
    if not targets:
        raise EdgerobError("no targets given")
    return _members([(t, profile, None if model is None else str(model)) for t in targets])


def _members(entries: list[tuple]) -> list[Member]:
    if len(set(entries)) != len(entries):
        raise EdgerobError("a target is listed twice with the same profile and model")
    profiles = {p: load_profile(p) for p in dict.fromkeys(p for _, p, _ in entries)}
    return [Member(resolve_target(t), profiles[p], None if m is None else Path(m))
            for t, p, m in entries]


def labels(members: list[Member]) -> list[str]:
    """A name per member: the target's, with the profile where a target is listed twice."""
    names = [m.target.name for m in members]
    return [n if names.count(n) == 1 else f"{n}/{m.profile.name}" for n, m in zip(names, members)]


def prepare_all(members: list[Member], prepare: Callable[[Profile, Path | None], Workload]
                ) -> dict[tuple, Workload]:
    """Each distinct workload once: workload_key -> Workload. `prepare(profile, model)`."""
    work: dict[tuple, Workload] = {}
    for m in members:
        if m.workload_key not in work:
            work[m.workload_key] = prepare(m.profile, m.model)
    return work


def run_fleet(members: list[Member], store, workloads: dict[tuple, Workload], *,
              new_run: bool = False, wait: bool = True,
              on_update: Callable[[DeviceRun], None] | None = None) -> list[DeviceRun]:
    """Profile every member into `store` with its prepared workload (`prepare_all`): remote
    ones concurrently, then local ones one at a time. A device's failure is recorded in its
    DeviceRun (`error`), never raised; `on_update(run)` is called whenever a device's state
    changes (from the device's thread), and once for each, in order, before any starts."""
    runs = [DeviceRun(name, not m.target.is_local, total=len(cells(m.profile)))
            for name, m in zip(labels(members), members)]
    update = on_update or (lambda r: None)
    for run in runs:  # every device, in order, before any starts
        update(run)

    def one(member: Member, run: DeviceRun) -> None:
        run.started = time.monotonic()
        run.step = "starting"
        update(run)

        def step(text: str) -> None:
            run.step = text
            update(run)

        def cell(done: int, total: int, measured: bool) -> None:
            run.done, run.total = done, total
            run.measured += measured
            run.skipped += not measured
            run.step = "profiling"
            update(run)

        work = workloads[member.workload_key]
        try:
            if run.remote:
                counts = profile_remote(member.target, member.profile, work, store,
                                        new_run=new_run, wait=wait, on_step=step,
                                        on_cell=cell)
                run.step = (f"done: {counts['measurements']} measurements, "
                            f"{counts['failures']} failure records ingested")
            else:
                run.step = "profiling"
                result = run_profile(member.target, member.profile, work, store,
                                     new_run=new_run, wait=wait, on_wait=step,
                                     on_cell=lambda i, n, c, m: cell(i, n, m is not None))
                run.run_ids.append(result.run_id)
                run.step = "done"
        except EdgerobError as e:
            run.error, run.step = str(e), "failed"
        except Exception as e:  # a device's own bug: report it, let the others finish
            run.error, run.step = f"{type(e).__name__}: {e}", "failed"
        finally:
            run.ended = time.monotonic()
            update(run)

    pairs = list(zip(members, runs))
    remote = [(m, r) for m, r in pairs if r.remote]
    if remote:
        with ThreadPoolExecutor(max_workers=len(remote), thread_name_prefix="fleet") as pool:
            list(pool.map(lambda mr: one(*mr), remote))
    for m, r in pairs:
        if not r.remote:
            one(m, r)
    return runs


@dataclass
class TargetStatus:
    """What `fleet_status` says of one member."""

    name: str
    host: str
    cells: int  # measurement and query-attack cells stored
    last_run: str | None  # when the newest run started
    power_modes: list[str]
    reachable: bool | None  # None: local (always)
    holder: str | None  # who holds the device's lock (None: free)
    note: str | None = None  # why reachable/free is not known


def fleet_status(members: list[Member], store, *, timeout_s: int = 5) -> list[TargetStatus]:
    """Per member: its stored cells, last run and power modes (its target's runs of its
    profile, in `store`), whether its host answers (ssh BatchMode, `timeout_s` to connect) and
    whether its device lock is free (read here for local targets; on the device, with `edgerob
    fleet holder KEY`, for remote ones). Remote checks run concurrently."""
    rows, attack, runs_ = store.measurements(), store.attack_cells(), store.runs()

    def one(name: str, m: Member) -> TargetStatus:
        t = m.target
        ids = {r["run_id"]: r["started_at"] for r in runs_
               if r["target"] == t.name and r["profile"] == m.profile.name}
        mine = [r for r in rows if r["run_id"] in ids]
        st = TargetStatus(name, t.host, len(mine) + sum(a["run_id"] in ids for a in attack),
                          max(ids.values()) if ids else None,
                          sorted({r["power_mode"] for r in mine if r.get("power_mode")}),
                          None, None)
        key = device_key(t)
        if t.is_local:
            held = holder(key)
            st.holder = None if held is None else holder_line(held, key)
            return st
        cmd = [*ssh_command(t, timeout_s), shlex.join([*t.remote_command, "fleet", "holder",
                                                        key])]
        try:
            p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            st.reachable, st.note = False, "no answer"
            return st
        if p.returncode == 255:  # ssh's own failure: not reached
            st.reachable = False
            st.note = (p.stderr.strip().splitlines() or ["ssh failed"])[-1]
            return st
        st.reachable = True
        if p.returncode != 0:
            st.note = (f"edgerob on the device could not say: "
                       f"{(p.stderr.strip().splitlines() or ['no message'])[-1]}")
        else:
            line = p.stdout.strip()
            st.holder = None if line == "free" else line
        return st

    names = labels(members)
    with ThreadPoolExecutor(max_workers=max(1, len(members))) as pool:
        return list(pool.map(one, names, members))
