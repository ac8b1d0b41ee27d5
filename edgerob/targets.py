"""Targets: the devices edgerob measures, one targets/NAME.yaml each."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, PositiveFloat, PositiveInt, field_validator

from edgerob.catalog import find_yaml, load_yaml
from edgerob.profilers import REGISTRY as PROFILERS
from edgerob.runtimes import REGISTRY as RUNTIMES


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


class Target(_Strict):
    name: str
    description: str = ""
    host: str = "local"  # "local", or an SSH destination such as user@jetson.local
    runtime: str = "onnxruntime"
    runtime_options: dict = Field(default_factory=dict)
    threads: PositiveInt | None = None  # intra-op threads; None: the runtime's default
    profiler: str = "none"
    power_modes: list[str] = Field(default_factory=list)
    specs: Specs = Field(default_factory=Specs)
    price: Price = Field(default_factory=Price)

    @field_validator("runtime")
    @classmethod
    def _known_runtime(cls, v: str) -> str:
        if v not in RUNTIMES:
            raise ValueError(f"unknown runtime {v!r}; allowed: {', '.join(sorted(RUNTIMES))}")
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


def load_target(name: str) -> Target:
    """A target by catalog name (cpu, jetson-orin-nano, ...) or by path to its YAML file."""
    return load_yaml(find_yaml("targets", name), Target)
