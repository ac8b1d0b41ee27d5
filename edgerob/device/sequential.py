"""Sequential estimates: attack samples in a seeded random order and stop as soon as the estimate
is as precise as asked, with an interval that stays valid under that optional stopping.

The interval is the hedged betting confidence sequence of Waudby-Smith & Ramdas ("Estimating
means of bounded random variables by betting", JRSS-B 2023: the hedged capital process and its
sampling-without-replacement form), matched against `confseq/betting.py` (`betting_mart`,
`cs_from_martingale`, `lambda_predmix_eb`): for each candidate mean m on a grid, two capital
processes bet that the mean is above / below m,

    K+_t(m) = prod_i (1 + l+_i(m) (x_i - mu_i(m))),  K-_t(m) = prod_i (1 - l-_i(m) (x_i - mu_i(m))),

with predictable plug-in bets l_t = sqrt(2 log(2/alpha) / (sigma2_{t-1} n)) truncated at c/mu and
c/(1 - mu) (c = 1/2), where n is `plan` (WSR's fixed-n bets; a sequential run plans for the
Hoeffding sample size of the asked half-width, which makes the interval narrow where the stop is
expected; any predictable bets keep the guarantee) or t log(1 + t) without a plan, and
mu_t(m) = (N m - S_{t-1}) / (N - t + 1) when N samples are drawn without replacement from a
finite set (mu = m for i.i.d. draws). m stays in the set while max(K+/2, K-/2) < 1/alpha; the
set is intersected over time (and, for a finite set, with the
bounds the observed sum already forces). P(the true mean ever leaves the set) <= alpha, so the
interval at any data-dependent stopping time covers with probability >= 1 - alpha. A
Clopper-Pearson interval recomputed after each batch has no such guarantee.

Numpy only: it runs on the device, around the query attack.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from statistics import NormalDist
from typing import Callable

import numpy as np

from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError

METHOD = "hedged-betting-cs"  # what the stored interval is
_TRUNC = 0.5  # c: bets never risk more than half the capital


@dataclass(frozen=True)
class StopRule:
    """Stop when the interval's half-width is <= half_width (at `confidence`), or after
    max_samples samples (None: the whole set)."""

    half_width: float
    confidence: float = 0.95
    max_samples: int | None = None

    def __post_init__(self) -> None:
        check_rule(self.half_width, self.confidence, self.max_samples)

    def describe(self) -> str:
        cap = f", at most {self.max_samples} samples" if self.max_samples else ""
        return f"half-width <= {self.half_width:g} at {self.confidence:.0%}{cap}"


def check_rule(half_width, confidence, max_samples, where: str = "") -> None:
    """Raise EdgerobError (exit 2) naming `where` when a stopping rule is out of range."""
    at = f"{where}: " if where else ""
    if not (isinstance(half_width, (int, float)) and 0 < half_width <= 0.5):
        raise EdgerobError(f"{at}half-width must be in (0, 0.5], got {half_width!r}")
    if not (isinstance(confidence, (int, float)) and 0 < confidence < 1):
        raise EdgerobError(f"{at}confidence must be in (0, 1), got {confidence!r}")
    if max_samples is not None and (isinstance(max_samples, bool)
                                    or not isinstance(max_samples, int) or max_samples < 1):
        raise EdgerobError(f"{at}max_samples must be an integer >= 1, got {max_samples!r}")


class BettingCS:
    """Running hedged betting confidence sequence for the mean of [0, 1] outcomes.

    `plan`: the sample size the bets are tuned for (None: bets that shrink like
    1/sqrt(t log t), WSR's anytime default). `population`: N for sampling without replacement
    from N items (the interval is then for the mean of those N), None for i.i.d. draws. `reps`
    runs that many independent sequences at once
    (simulations); `lo`/`hi` are then arrays.
    """

    def __init__(self, confidence: float = 0.95, population: int | None = None,
                 grid: int = 1000, reps: int | None = None, plan: float | None = None):
        if not 0 < confidence < 1:
            raise EdgerobError(f"confidence must be in (0, 1), got {confidence!r}")
        self.alpha = 1 - confidence
        self.population = population
        self.plan = plan
        self.m = np.linspace(0.0, 1.0, grid + 1)
        shape = (reps or 1, grid + 1)
        self._scalar = reps is None
        self._log_pos = np.zeros(shape)
        self._log_neg = np.zeros(shape)
        self._out = np.zeros(shape, dtype=bool)  # mu_t(m) left [0, 1]: m impossible
        self.t = 0
        self.total = np.zeros(shape[0])  # S_t
        self._mu_hat = np.full(shape[0], 0.5)  # regularised running mean and variance
        self._sq = np.full(shape[0], 0.25)  # (1/4 + sum (x_i - mu_hat_i)^2)
        self._lo = np.zeros(shape[0])
        self._hi = np.ones(shape[0])

    def update(self, x) -> None:
        """Add outcomes in order: shape (k,) or, with reps, (reps, k)."""
        x = np.asarray(x, dtype=np.float64).reshape(len(self._lo), -1)
        if ((x < 0) | (x > 1)).any():
            raise EdgerobError("outcomes must be in [0, 1]")
        log_thr = math.log(1 / self.alpha)
        for col in x.T:
            t = self.t + 1
            if self.population is not None and t > self.population:
                raise EdgerobError(f"more outcomes than the {self.population} samples")
            xi = col[:, None]
            sigma2 = self._sq / t  # sigma2_{t-1}: (1/4 + sum) / ((t - 1) + 1)
            scale = t * math.log(1 + t) if self.plan is None else self.plan
            lam = np.sqrt(2 * math.log(2 / self.alpha) / (sigma2 * scale))[:, None]
            if self.population is None:
                mu = np.broadcast_to(self.m, self._log_pos.shape)
            else:
                n = self.population
                mu = (n * self.m[None, :] - self.total[:, None]) / (n - t + 1)
            self._out |= (mu < 0) | (mu > 1)
            mu = np.clip(mu, 0.0, 1.0)
            with np.errstate(divide="ignore"):
                lp = np.minimum(lam, _TRUNC / mu)
                ln = np.minimum(lam, _TRUNC / (1 - mu))
            self._log_pos += np.log1p(lp * (xi - mu))
            self._log_neg += np.log1p(-ln * (xi - mu))
            self.t = t
            self.total += col
            mu_hat = (0.5 + self.total) / (t + 1)
            self._sq += (col - mu_hat) ** 2
            self._mu_hat = mu_hat
            keep = (np.maximum(self._log_pos, self._log_neg) + math.log(0.5) < log_thr) \
                & ~self._out
            self._narrow(keep)
        return None

    def _narrow(self, keep: np.ndarray) -> None:
        step = self.m[1] - self.m[0]
        any_in = keep.any(axis=1)
        first = np.where(any_in, self.m[np.argmax(keep, axis=1)] - step, 0.0)
        last = np.where(any_in, self.m[len(self.m) - 1 - np.argmax(keep[:, ::-1], axis=1)]
                        + step, 1.0)
        if self.population is not None:  # what the observed sum already forces
            n = self.population
            first = np.maximum(first, self.total / n)
            last = np.minimum(last, (self.total + n - self.t) / n)
        self._lo = np.maximum(self._lo, np.clip(first, 0, 1))
        self._hi = np.minimum(self._hi, np.clip(last, 0, 1))

    def _out_value(self, v):
        return float(v[0]) if self._scalar else v.copy()

    @property
    def lo(self):
        return self._out_value(self._lo)

    @property
    def hi(self):
        return self._out_value(self._hi)

    @property
    def half_width(self):
        return self._out_value((self._hi - self._lo) / 2)

    @property
    def mean(self):
        return self._out_value(self.total / max(self.t, 1))


@dataclass
class SequentialResult:
    """Where a sequential run stopped and what it estimated."""

    n_available: int
    n_attacked: int
    estimate: float  # mean of the outcomes seen
    ci_low: float
    ci_high: float
    stopped_by: str  # "half_width", "max_samples" or "exhausted" (every sample used)
    rule: StopRule
    wall_s: float  # measured time in the attack calls
    order: np.ndarray  # indices attacked, in order
    outcomes: np.ndarray  # outcome per attacked index
    method: str = METHOD

    @property
    def saved_s(self) -> float:
        """Time the samples not attacked would have taken at the measured per-sample rate
        (a projection from this run's own timing, not a measurement)."""
        if not self.n_attacked:
            return 0.0
        return self.wall_s / self.n_attacked * (self.n_available - self.n_attacked)

    def summary(self) -> dict:
        """Plain-JSON fields for an input set's metadata and the store."""
        return {"method": self.method, "n_available": self.n_available,
                "n_attacked": self.n_attacked, "estimate": self.estimate,
                "ci_low": self.ci_low, "ci_high": self.ci_high, "stopped_by": self.stopped_by,
                "rule": asdict(self.rule), "wall_s": self.wall_s,
                "projected_saved_s": self.saved_s}


def planned_samples(rule: StopRule) -> int:
    """Hoeffding's sample size for the rule's half-width: log(2/alpha) / (2 H^2)."""
    return math.ceil(math.log(2 / (1 - rule.confidence)) / (2 * rule.half_width ** 2))


def run_sequential(n_available: int, attack: Callable[[np.ndarray], np.ndarray],
                   rule: StopRule, batch_size: int, seed: int = 0) -> SequentialResult:
    """Attack indices of `range(n_available)` in a seeded random order, `batch_size` at a time
    (`attack(indices)` returns one outcome in [0, 1] per index), until the interval's
    half-width is <= rule.half_width or rule.max_samples (or every sample) is used."""
    if n_available < 1:
        raise EdgerobError("no samples to attack")
    order = np.random.default_rng(seed).permutation(n_available)
    cap = min(rule.max_samples or n_available, n_available)
    cs = BettingCS(rule.confidence, population=n_available, plan=min(planned_samples(rule), cap))
    outcomes: list[np.ndarray] = []
    wall = 0.0
    stopped_by = "exhausted" if cap == n_available else "max_samples"
    for start in range(0, cap, batch_size):
        idx = order[start:min(start + batch_size, cap)]
        t0 = time.perf_counter()
        y = np.asarray(attack(idx), dtype=np.float64)
        wall += time.perf_counter() - t0
        if y.shape != idx.shape:
            raise EdgerobError(f"the attack returned {y.shape} outcomes for {len(idx)} samples")
        cs.update(y)
        outcomes.append(y)
        if cs.t == n_available:
            break  # every sample seen: the interval is the exact value, whatever the rule
        if cs.half_width <= rule.half_width:
            stopped_by = "half_width"
            break
    y_all = np.concatenate(outcomes)
    return SequentialResult(n_available, cs.t, float(y_all.mean()), cs.lo, cs.hi, stopped_by,
                            rule, wall, order[:cs.t], y_all)


def km_median_ci(durations, events, confidence: float = 0.95
                 ) -> tuple[float | None, float | None, float | None]:
    """Kaplan-Meier median time to failure (`km_median`, exact: the one median every table
    shows) and its Brookmeyer-Crowley interval (the times where a Greenwood-variance z-test does
    not reject S(t) = 0.5). A fixed-sample interval: valid for the samples at hand, not
    anytime-valid under the sequential stopping. None where the data do not reach (over half
    censored: no median; no upper bound)."""
    t = np.asarray(durations, dtype=np.float64)
    e = np.asarray(events, dtype=bool)
    if len(t) == 0:
        return None, None, None
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    times, surv, se = [], [], []
    s, green, at_risk = 1.0, 0.0, len(t)
    for ti in np.unique(t):
        here = t == ti
        d = int((here & e).sum())
        if d:
            s *= 1 - d / at_risk
            green = green + d / (at_risk * (at_risk - d)) if at_risk > d else math.inf
            times.append(float(ti))
            surv.append(s)
            se.append(0.0 if s == 0 else s * math.sqrt(green))
        at_risk -= int(here.sum())
    surv_a, se_a = np.array(surv), np.array(se)
    # The bounds test S +- z se in floats: where S is 1/2 exactly and its float a hair above,
    # se > 0 still puts the lower bound at or before the exact median, the upper at or after.
    median = km_median(t, e)
    lower = next((ti for ti, si, ei in zip(times, surv_a, se_a) if si - z * ei <= 0.5), None)
    upper = next((ti for ti, si, ei in zip(times, surv_a, se_a) if si + z * ei < 0.5), None)
    return median, lower, upper
