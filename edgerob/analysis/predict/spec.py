"""Spec-sheet regression: log performance on the logs of the catalog's peak TOPS and memory
bandwidth, covariates chosen by leave-one-target-out error. The matrix predictor
(`predict.matrix`) fits a device effect with it for a device without results."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np

from edgerob.analysis.compare import _num

LATENCY_COVARIATES = ("peak_tops", "memory_bandwidth_gbs")


def _cov_label(name: str, precision: str) -> str:
    return f"peak_tops[{precision}]" if name == "peak_tops" else name


MIN_RESIDUAL_DF = 2  # a model with covariates keeps at least 2 residual df (t(0.975) <= 4.3)


@dataclass
class LogLinearFit:
    """log(y) = b0 + sum_k b_k log(x_k), ordinary least squares, with the classical prediction
    interval yhat +- t(df) s sqrt(1 + x0'(X'X)^-1 x0) in log space (multiplicative in y).
    `loto_rmse_log` is the leave-one-target-out RMS log error of this very model (the covariate
    set it uses, refitted without each training target in turn); `scores` the same for every
    covariate set that was considered."""

    covariates: list[str]
    coef: np.ndarray
    xtx_inv: np.ndarray
    s: float  # residual standard deviation (log scale); nan when df == 0
    df: int
    n: int
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # measured x ranges
    dropped: list[str] = field(default_factory=list)  # covariate: why it is not in the model
    loto_rmse_log: float | None = None
    scores: dict[str, float] = field(default_factory=dict)
    offset: dict[str, float] = field(default_factory=dict)  # covariate: fixed elasticity

    def formula(self, response: str, precision: str) -> str:
        terms = ["1"] + [f"log({_cov_label(c, precision)})" for c in self.covariates]
        terms += [f"offset({e:+g} x log({_cov_label(c, precision)}))"
                  for c, e in self.offset.items()]
        return f"log({response}) ~ {' + '.join(terms)}"

    def predict(self, x: dict[str, float], level: float) -> tuple[float, float | None,
                                                                 float | None]:
        from scipy import stats

        x0 = np.array([1.0] + [math.log(x[c]) for c in self.covariates])
        mid = float(x0 @ self.coef) + sum(e * math.log(x[c]) for c, e in self.offset.items())
        if self.df < 1 or not math.isfinite(self.s):
            return math.exp(mid), None, None
        se = self.s * math.sqrt(1 + float(x0 @ self.xtx_inv @ x0))
        half = float(stats.t.ppf(0.5 + level / 2, self.df)) * se
        return math.exp(mid), math.exp(mid - half), math.exp(mid + half)


def loto_rmse(ly: np.ndarray, X: np.ndarray) -> float | None:
    """Leave-one-out RMS error of OLS log(y) ~ X: each row predicted from the others. None where
    a fit without one row is not identified (fewer rows than columns, or singular)."""
    n, k = X.shape
    if n - 1 < k:
        return None
    errs = []
    for i in range(n):
        keep = np.arange(n) != i
        if np.linalg.matrix_rank(X[keep]) < k:
            return None
        coef, *_ = np.linalg.lstsq(X[keep], ly[keep], rcond=None)
        errs.append(ly[i] - X[i] @ coef)
    return float(np.sqrt(np.mean(np.square(errs))))


def fit_loglinear(y: list[float], xs: list[dict[str, float | None]], pool: tuple[str, ...],
                  candidate: dict[str, float | None], min_df: int = MIN_RESIDUAL_DF,
                  proportional: dict[str, float] | None = None) -> LogLinearFit:
    """Fit log(y) on the logs of the covariate subset of `pool` with the smallest
    leave-one-target-out error (ties: fewer parameters). A covariate is usable where the
    candidate and every training point have it and it varies; a subset is considered when its
    full fit keeps `min_df` residual degrees of freedom and it is not collinear. The intercept-
    only model (the training targets' geometric mean) is always considered, and so is, for each
    usable covariate in `proportional`, y proportional to x^e with e fixed (e.g. throughput
    proportional to peak TOPS: one fitted parameter, the scale)."""
    n = len(y)
    ly = np.log(np.asarray(y, dtype=np.float64))
    usable, dropped = [], []
    for c in pool:
        vals = [x.get(c) for x in xs]
        if not _num(candidate.get(c)) or candidate[c] <= 0:
            dropped.append(f"{c}: not on the candidate's spec sheet")
        elif not all(_num(v) and v > 0 for v in vals):
            dropped.append(f"{c}: missing on a training target's spec sheet")
        elif np.ptp(np.log(np.asarray(vals, dtype=np.float64))) < 1e-12:
            dropped.append(f"{c}: constant across the training targets")
        else:
            usable.append(c)
    logs = {c: np.log(np.asarray([x[c] for x in xs], dtype=np.float64)) for c in usable}

    def design(combo):
        return np.column_stack([np.ones(n)] + [logs[c] for c in combo])

    scores: dict[tuple, float] = {}
    offsets = {c: e for c, e in (proportional or {}).items() if c in usable}
    for c, e in offsets.items():
        err = loto_rmse(ly - e * logs[c], design(()))
        if err is not None:
            scores[(f"={c}",)] = err
    for k in range(len(usable) + 1):
        if k and n - (k + 1) < min_df:
            break
        for combo in combinations(usable, k):
            X = design(combo)
            if np.linalg.matrix_rank(X) < X.shape[1]:
                continue
            err = loto_rmse(ly, X)
            if err is not None:
                scores[combo] = err
    best = min(scores, key=lambda c: (scores[c], len(c) if c[:1] and c[0][0] != "=" else 0)
               ) if scores else ()
    offset = {best[0][1:]: offsets[best[0][1:]]} if best[:1] and best[0][0] == "=" else {}
    chosen = () if offset else best
    for c in usable:
        if c not in chosen and c not in offset:
            dropped.append(f"{c}: not chosen (leave-one-target-out error)"
                           if any(c in combo for combo in scores) else
                           f"{c}: too few training targets ({n}) to keep {min_df} residual df")
    X = design(chosen)
    target = ly - sum((e * logs[c] for c, e in offset.items()), np.zeros(n))
    coef, *_ = np.linalg.lstsq(X, target, rcond=None)
    resid = target - X @ coef
    df = n - X.shape[1]
    s = math.sqrt(float(resid @ resid) / df) if df > 0 else float("nan")
    ranges = {c: (min(x[c] for x in xs), max(x[c] for x in xs)) for c in (*chosen, *offset)}
    return LogLinearFit(list(chosen), coef, np.linalg.pinv(X.T @ X), s, df, n, ranges, dropped,
                        scores.get(best),
                        {("1 + offset " + combo[0][1:] if combo[:1] and combo[0][0] == "="
                          else "1" + "".join(f" + {c}" for c in combo)): e
                         for combo, e in scores.items()}, offset)
