"""Profiles: the sweeps edgerob runs, one profiles/NAME.yaml each.

A profile names what the host prepares (white-box attacks, samples) and what the device measures
(precisions, batch sizes, timing rules, the query attack), so it is checked against both: the
attacks the host can craft and the timing rules of the device's measurement loop.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PositiveInt, field_validator

from edgerob.catalog import find_yaml, load_yaml
from edgerob.device.bench import TimingRules
from edgerob.device.failures import MIN_EPS
from edgerob.device.inputs import input_set_name
from edgerob.device.sequential import StopRule
from edgerob.host.attacks import ATTACKS

Precision = Literal["fp32", "fp16", "int8"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


Eps = Annotated[float, Field(ge=0, le=1)]


class StopSpec(_Strict):
    """`stop:` on an attack entry: attack samples in a seeded random order and stop when the
    anytime-valid interval's half-width is <= half_width (edgerob.device.sequential)."""

    half_width: float = Field(gt=0, le=0.5)
    confidence: float = Field(0.95, gt=0, lt=1)
    max_samples: PositiveInt | None = None

    def rule(self) -> StopRule:
        return StopRule(self.half_width, self.confidence, self.max_samples)


class AttackSpec(_Strict):
    """White-box input sets crafted on the host on the fp32 model: one per eps."""

    attack: str
    eps: list[Eps] = Field(min_length=1)
    precise: bool = False
    official: bool = False  # AutoAttack at the official strength (100 steps, 5000 queries)
    params: dict = Field(default_factory=dict)
    stop: StopSpec | None = None  # None: attack every sample

    @field_validator("attack")
    @classmethod
    def _known(cls, v: str) -> str:
        if v not in ATTACKS:
            raise ValueError(f"unknown attack {v!r}; allowed: {', '.join(ATTACKS)}")
        return v


class QueryAttackSpec(_Strict):
    """Black-box attack on the deployed artifact, producing failure records."""

    attack: Literal["square"] = "square"
    eps: list[Annotated[float, Field(ge=MIN_EPS, le=1)]] = Field(min_length=1)
    budget_queries: int = Field(ge=2)
    samples: PositiveInt = 32
    precisions: list[Precision] | None = None  # None: the profile's
    batch_sizes: list[PositiveInt] | None = None  # None: the profile's
    p_init: float = Field(0.1, gt=0, le=1)
    seed: int = 0
    stop: StopSpec | None = None  # None: attack every sample


class Profile(_Strict):
    name: str
    description: str = ""
    precisions: list[Precision] = Field(min_length=1)
    batch_sizes: list[PositiveInt] = Field(min_length=1)
    samples: PositiveInt | None = None  # cap on samples per input set; None: the whole test split
    timing: TimingRules = Field(default_factory=TimingRules)
    attacks: list[AttackSpec] = Field(default_factory=list)
    query_attack: QueryAttackSpec | None = None
    # operating points swept (edgerob.device.power_mode.switch): nvpmodel mode names from the
    # target's power_modes (or [all]) on a Jetson; GPU power limits in W (a value <= 1 is a
    # fraction of the GPU's default limit). Empty: measured in whatever mode the device is in.
    power_modes: list[str] = Field(default_factory=list)
    power_limits_w: list[Annotated[float, Field(gt=0)]] = Field(default_factory=list)

    @field_validator("precisions", "batch_sizes", "power_modes", "power_limits_w")
    @classmethod
    def _unique(cls, v: list) -> list:
        if len(set(v)) != len(v):
            raise ValueError(f"values must be unique, got {v}")
        return v

    @field_validator("power_modes")
    @classmethod
    def _all_alone(cls, v: list) -> list:
        if "all" in v and len(v) > 1:
            raise ValueError(f"'all' stands alone (every mode of the target), got {v}")
        return v

    @property
    def input_sets(self) -> list[str]:
        """'clean' then one ATTACK@EPS per white-box attack and eps."""
        return ["clean"] + [input_set_name(a.attack, e) for a in self.attacks for e in a.eps]


def load_profile(name: str) -> Profile:
    """A profile by catalog name (quick, ...) or by path to its YAML file."""
    return load_yaml(find_yaml("profiles", name), Profile)
