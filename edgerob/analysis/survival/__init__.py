"""Survival models of failure time and energy (split into modules next)."""

from edgerob.analysis.survival.fitting import *  # noqa: F401,F403
from edgerob.analysis.survival.fitting import _fit_once  # noqa: F401
