"""Targets: the devices edgerob measures, one targets/NAME.yaml each."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path
from typing import Literal

from pydantic import (BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator,
                      model_validator)
from urllib.parse import urlsplit

from edgerob.catalog import find_yaml, list_names, load_yaml
from edgerob.device.machine import (describe_facts, detected, identified_by,  # noqa: F401
                                    machine_facts, verify_target)
from edgerob.device.profilers import REGISTRY as PROFILERS
from edgerob.device.runtimes import REGISTRY as RUNTIMES
from edgerob.errors import EdgerobError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Specs(_Strict):
    """Spec-sheet figures; absent (null) where the vendor publishes none.

    Every peak figure follows one definition, so devices can be compared and regressed on:
    **dense** (no 2:4 structured sparsity), **GPU only** (no DLA or other accelerator), on the
    **tensor cores where the device has them** (fp32 is the CUDA-core rate: tensor cores have no
    fp32 path; tf32 is its own key), at the clock of the power mode whose watts are `tdp_w`.
    """

    peak_tops: dict[str, PositiveFloat] = Field(default_factory=dict)  # by precision
    memory_bandwidth_gbs: PositiveFloat | None = None
    tdp_w: PositiveFloat | None = None
    memory_gb: PositiveFloat | None = None


class ModeSpec(_Strict):
    """Figures NVIDIA publishes for one power mode (nvpmodel.conf, data sheets); absent where
    it publishes none. `gpu_max_mhz` is the mode's GPU frequency cap, `gpu_tpcs` the GPU's
    texture processor clusters left on (nvpmodel gates the others), `power_w` the module power
    budget the mode is named for."""

    gpu_max_mhz: PositiveFloat | None = None
    gpu_tpcs: PositiveInt | None = None
    power_w: PositiveFloat | None = None


def mode_base(label: str) -> str:
    """A stored power_mode label without its suffixes: "MAXN+jetson_clocks" -> "MAXN"
    (jetson_clocks pins the clocks at the mode's caps; the caps are the mode's)."""
    return label.split("+", 1)[0]


_MONTH = r"^\d{4}-\d{2}(-\d{2})?$"  # YYYY-MM or YYYY-MM-DD


class Price(_Strict):
    purchase_usd: PositiveFloat | None = None
    cloud_usd_per_h: PositiveFloat | None = None
    purchase_as_of: str | None = Field(None, pattern=_MONTH)  # when purchase_usd was the price
    purchase_kind: Literal["kit", "module", "card"] | None = None  # what purchase_usd buys
    cloud_as_of: str | None = Field(None, pattern=_MONTH)  # when cloud_usd_per_h was listed
    cloud_instance: str | None = None  # provider, instance type, region, pricing model

    @field_validator("purchase_as_of", "cloud_as_of", mode="before")
    @classmethod
    def _date_text(cls, v):
        return v.isoformat() if isinstance(v, date) else v  # YAML reads 2024-12-17 as a date


class Detect(_Strict):
    """How a machine is recognised as the one a target describes; every rule given must hold.

    Names match as whole words, any case. The memory range (GiB, min inclusive, max exclusive)
    applies to the GPU's total memory from NVML where `gpu_name` is given, else to MemTotal in
    /proc/meminfo (a Jetson's unified memory, a little under the nominal size: firmware
    carve-outs take a few percent)."""

    # Jetson module part numbers (the half after '+' of /proc/device-tree/compatible, e.g.
    # p3701-0005): where the machine has one, it alone decides; the rules below are the
    # fallback for a board whose part number is unreadable
    modules: list[str] = Field(default_factory=list)
    device_model: str | None = None  # in /proc/device-tree/model, e.g. "Orin Nano" on a Jetson
    gpu_name: str | None = None  # in an NVIDIA GPU's name from NVML, e.g. "H100"
    gpu_name_has: str | None = None  # also a plain substring of that name: "SXM", "PCIe", "HBM3"
    cpu_model: str | None = None  # in /proc/cpuinfo "model name", e.g. "EPYC 7B13"
    memory_gib_min: float | None = None
    memory_gib_max: float | None = None

    @model_validator(mode="after")
    def _has_a_name(self):
        if not (self.modules or self.device_model or self.gpu_name or self.cpu_model):
            raise ValueError("detect needs modules, device_model, gpu_name or cpu_model")
        for part in self.modules:
            if not re.fullmatch(r"p\d{4}-\d{4}", part):
                raise ValueError(f"module part number {part!r} is not pNNNN-NNNN")
        if self.gpu_name_has and not self.gpu_name:
            raise ValueError("gpu_name_has refines gpu_name: give gpu_name too")
        return self

    def describe(self) -> str:
        """What the rule asks for, in words."""
        parts = []
        if self.device_model:
            parts.append(f"device-tree model with {self.device_model!r}")
        if self.gpu_name:
            has = f" and {self.gpu_name_has!r}" if self.gpu_name_has else ""
            parts.append(f"NVIDIA GPU named with {self.gpu_name!r}{has}")
        if self.cpu_model:
            parts.append(f"CPU model with {self.cpu_model!r}")
        lo, hi = self.memory_gib_min, self.memory_gib_max
        if lo is not None or hi is not None:
            what = "GPU memory" if self.gpu_name else "MemTotal"
            parts.append(f"{what} >= {lo:g} GiB" if hi is None else f"{what} < {hi:g} GiB"
                         if lo is None else f"{what} in [{lo:g}, {hi:g}) GiB")
        if not self.modules:
            return ", ".join(parts)
        modules = f"module {' or '.join(self.modules)} in /proc/device-tree/compatible"
        return modules + (f" (where none is readable: {', '.join(parts)})" if parts else "")


class Target(_Strict):
    name: str
    description: str = ""
    host: str = "local"  # "local", or ssh://user@host[:port] (OpenSSH, the user's keys/config)
    ssh_options: list[str] = Field(default_factory=list)  # extra ssh arguments, e.g. ["-i", KEY]
    remote_command: list[str] = Field(default_factory=lambda: ["edgerob"])  # edgerob on device
    remote_dir: str = ".edgerob/bundles"  # where bundles go on the device (relative: its home)
    runtime: str = "onnxruntime"  # the preferred runtime
    fallback_runtimes: list[str] = Field(default_factory=list)  # tried in order where it is absent
    runtime_options: dict = Field(default_factory=dict)
    threads: PositiveInt | None = None  # intra-op threads; None: the runtime's default
    profiler: str = "none"
    profiler_options: dict = Field(default_factory=dict)  # e.g. interval_s, gpu_index
    power_modes: list[str] = Field(default_factory=list)
    specs: Specs = Field(default_factory=Specs)
    # per-mode figures (keys from power_modes) and the mode the peak figures in `specs` assume
    modes: dict[str, ModeSpec] = Field(default_factory=dict)
    peak_mode: str | None = None
    price: Price = Field(default_factory=Price)
    detect: Detect | None = None  # None: a generic target (cpu), the fallback
    families: list[str] = Field(default_factory=list)  # names that resolve to it on its device

    @field_validator("runtime", "fallback_runtimes")
    @classmethod
    def _known_runtime(cls, v):
        for name in [v] if isinstance(v, str) else v:
            if name not in RUNTIMES:
                raise ValueError(f"unknown runtime {name!r}; allowed: "
                                 f"{', '.join(sorted(RUNTIMES))}")
        return v

    @field_validator("host")
    @classmethod
    def _valid_host(cls, v: str) -> str:
        if v not in ("local", "localhost"):
            try:
                parse_ssh_host(v)
            except EdgerobError as e:
                raise ValueError(str(e)) from None
        return v

    @field_validator("profiler")
    @classmethod
    def _known_profiler(cls, v: str) -> str:
        if v not in PROFILERS:
            raise ValueError(f"unknown profiler {v!r}; allowed: {', '.join(sorted(PROFILERS))}")
        return v

    @model_validator(mode="after")
    def _modes_known(self):
        unknown = sorted(set(self.modes) - set(self.power_modes))
        if unknown:
            raise ValueError(f"modes: {unknown[0]!r} is not in power_modes "
                             f"({', '.join(self.power_modes) or 'none'})")
        if self.peak_mode is not None and self.peak_mode not in self.modes:
            raise ValueError(f"peak_mode {self.peak_mode!r} has no entry under modes")
        if any(m.gpu_max_mhz for m in self.modes.values()):
            peak = self.modes.get(self.peak_mode) if self.peak_mode else None
            if peak is None or not peak.gpu_max_mhz:
                raise ValueError("modes with gpu_max_mhz need peak_mode: the mode whose GPU "
                                 "clock the peak figures assume, with its gpu_max_mhz")
        return self

    @property
    def is_local(self) -> bool:
        return self.host in ("local", "localhost")

    def mode_scale(self, mode: str | None) -> float | None:
        """The factor the peak figures take in power mode `mode` (a stored label): its GPU clock
        cap over the peak mode's, times its TPCs left on over the peak mode's where both are
        given (peak throughput is proportional to clock x units). None where the catalog has
        no figure for the mode (unknown, unlisted, or the target has no per-mode figures)."""
        m = self.modes.get(mode_base(mode)) if mode else None
        peak = self.modes.get(self.peak_mode) if self.peak_mode else None
        if m is None or peak is None or not (m.gpu_max_mhz and peak.gpu_max_mhz):
            return None
        tpcs = m.gpu_tpcs / peak.gpu_tpcs if m.gpu_tpcs and peak.gpu_tpcs else 1.0
        return m.gpu_max_mhz / peak.gpu_max_mhz * tpcs

    def specs_in(self, mode: str | None) -> Specs:
        """The spec sheet in power mode `mode`: peak figures scaled by `mode_scale` and the
        mode's power budget as tdp_w where the catalog has them; else the catalog's own."""
        scale = self.mode_scale(mode)
        m = self.modes.get(mode_base(mode)) if mode else None
        if scale is None and not (m and m.power_w):
            return self.specs
        peak = {p: v * scale for p, v in self.specs.peak_tops.items()} if scale else \
            self.specs.peak_tops
        return self.specs.model_copy(update={"peak_tops": peak, "tdp_w": (
            m.power_w if m and m.power_w else self.specs.tdp_w)})


def parse_ssh_host(host: str) -> tuple[str, int | None]:
    """'ssh://user@host:2222' -> ('user@host', 2222)."""
    parts = urlsplit(host)
    if parts.scheme != "ssh" or not parts.hostname:
        raise EdgerobError(f"target host {host!r} is not local and not ssh://[user@]host[:port]")
    if parts.path not in ("", "/") or parts.query or parts.fragment or parts.password:
        raise EdgerobError(f"target host {host!r}: only ssh://[user@]host[:port] is accepted")
    try:
        port = parts.port
    except ValueError:
        raise EdgerobError(f"target host {host!r} has an invalid port") from None
    dest = f"{parts.username}@{parts.hostname}" if parts.username else parts.hostname
    if dest.startswith("-"):
        raise EdgerobError(f"target host {host!r} would be read as an ssh option")
    return dest, port


def load_target(name: str) -> Target:
    """A target by catalog name (cpu, jetson-orin-nano-8gb, ...) or by path to its YAML file."""
    try:
        path = find_yaml("targets", name)
    except EdgerobError:
        members = family_members(name)
        if not members:
            raise
        raise EdgerobError(f"{name!r} is a target family ({', '.join(t.name for t in members)}): "
                           f"it resolves on the device itself; elsewhere name one of them"
                           ) from None
    return load_yaml(path, Target)


def catalog() -> list[Target]:
    """Every loadable catalog target (a broken YAML is reported by `targets show`, not here)."""
    out = []
    for name in list_names("targets"):
        try:
            out.append(load_yaml(find_yaml("targets", name), Target))
        except EdgerobError:
            continue
    return out


def family_members(family: str) -> list[Target]:
    return [t for t in catalog() if family in t.families]


def families() -> dict[str, list[str]]:
    """Family name -> member target names."""
    out: dict[str, list[str]] = {}
    for t in catalog():
        for f in t.families:
            out.setdefault(f, []).append(t.name)
    return dict(sorted(out.items()))


def matching_targets(facts: dict | None = None) -> list[Target]:
    """Catalog targets that fit this machine, most specific first; generic ones (no `detect`)
    last, as the fallback."""
    facts = machine_facts() if facts is None else facts
    everything = catalog()
    return ([t for t in everything if t.detect is not None and detected(t.detect, facts)]
            + [t for t in everything if t.detect is None])


def target_for_machine(facts: dict | None = None
                       ) -> tuple[Target | None, str | None, str | None]:
    """(target, None, how it was identified), or (None, why not, None). A device-specific
    target where exactly one fits; the generic one (cpu) only for a machine that is neither a
    Jetson nor an NVIDIA GPU host, so a board no entry describes is never filed as a CPU."""
    facts = machine_facts() if facts is None else facts
    fits = matching_targets(facts)
    specific = [t for t in fits if t.detect is not None]
    if len(specific) == 1:
        return specific[0], None, identified_by(specific[0].detect, facts)
    if specific:
        return None, (f"{', '.join(t.name for t in specific)} all fit "
                      f"({identified_by(specific[0].detect, facts)}); name one with --target"), None
    if facts.get("device_model") or facts.get("gpus") or not fits:
        return None, f"no catalog target describes this machine: {describe_facts(facts)}", None
    return fits[0], None, "generic: runs on any machine"


# --- verification before measuring ---------------------------------------------------------------

def resolve_target(name: str, facts: dict | None = None) -> Target:
    """A target by name or path; a family name (jetson-orin, a100, ...) resolves to the member
    this machine is, or fails saying what this machine is and listing the members."""
    try:
        find_yaml("targets", name)
    except EdgerobError:
        members = family_members(name)
        if not members:
            raise
        facts = machine_facts() if facts is None else facts
        fits = [t for t in members if t.detect is not None and detected(t.detect, facts)]
        if len(fits) == 1:
            return fits[0]
        listing = "; ".join(f"{t.name} ({t.detect.describe() if t.detect else 'generic'})"
                            for t in members)
        if fits:
            raise EdgerobError(f"family {name!r} is ambiguous here: "
                               f"{', '.join(t.name for t in fits)} all fit this machine; name "
                               f"one with --target") from None
        raise EdgerobError(f"no member of family {name!r} fits this machine: "
                           f"{describe_facts(facts)}. The family's members: {listing}") from None
    return load_target(name)


