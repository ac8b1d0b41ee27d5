"""Targets: the devices edgerob measures, one targets/NAME.yaml each."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

import re
from pathlib import Path
from urllib.parse import urlsplit

from edgerob.catalog import find_yaml, list_names, load_yaml
from edgerob.device.profilers import REGISTRY as PROFILERS
from edgerob.device.runtimes import REGISTRY as RUNTIMES
from edgerob.errors import EdgerobError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Specs(_Strict):
    """Spec-sheet figures; absent (null) where the vendor publishes none."""

    peak_tops: dict[str, PositiveFloat] = Field(default_factory=dict)  # by precision
    memory_bandwidth_gbs: PositiveFloat | None = None
    tdp_w: PositiveFloat | None = None
    memory_gb: PositiveFloat | None = None


class Price(_Strict):
    purchase_usd: PositiveFloat | None = None
    cloud_usd_per_h: PositiveFloat | None = None


class Detect(_Strict):
    """How `edgerob doctor` recognises the machine a target describes (substrings, any case)."""

    device_model: str | None = None  # in /proc/device-tree/model, e.g. "Orin Nano" on a Jetson
    gpu_name: str | None = None  # in an NVIDIA GPU's name from NVML, e.g. "H100"


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
    price: Price = Field(default_factory=Price)
    detect: Detect | None = None  # None: a generic target (cpu), the fallback

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

    @property
    def is_local(self) -> bool:
        return self.host in ("local", "localhost")


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
    """A target by catalog name (cpu, jetson-orin-nano, ...) or by path to its YAML file."""
    return load_yaml(find_yaml("targets", name), Target)


def machine_facts() -> dict:
    """What identifies this machine: the device-tree model (Jetsons) and NVIDIA GPU names."""
    facts = {"device_model": None, "gpu_names": []}
    try:
        facts["device_model"] = Path("/proc/device-tree/model").read_text().strip("\x00\n ")
    except OSError:
        pass
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            for i in range(pynvml.nvmlDeviceGetCount()):
                name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(i))
                facts["gpu_names"].append(name.decode() if isinstance(name, bytes) else name)
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001 - no pynvml, no driver: no GPU facts
        pass
    return facts


def _has_words(needle: str, text: str) -> bool:
    """`needle` in `text` as whole words, so "NVIDIA L4" does not match "NVIDIA L40S"."""
    return re.search(rf"(?<!\w){re.escape(needle.lower())}(?!\w)", text) is not None


def matching_targets(facts: dict | None = None) -> list[Target]:
    """Catalog targets that fit this machine, most specific first; generic ones (no `detect`)
    last, as the fallback."""
    facts = machine_facts() if facts is None else facts
    model = (facts.get("device_model") or "").lower()
    gpus = [g.lower() for g in facts.get("gpu_names") or []]
    specific, generic = [], []
    for name in list_names("targets"):
        try:
            t = load_target(name)
        except Exception:  # noqa: BLE001 - a broken YAML is reported by `targets show`, not here
            continue
        if t.detect is None:
            generic.append(t)
        elif ((t.detect.device_model and _has_words(t.detect.device_model, model))
              or (t.detect.gpu_name and any(_has_words(t.detect.gpu_name, g) for g in gpus))):
            specific.append(t)
    return specific + generic
