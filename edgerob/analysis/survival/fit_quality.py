"""How well a fit ranks and predicts: concordance (Harrell's C) and calibration at a horizon
(Austin et al. 2020 ICI/E50)."""

from __future__ import annotations

import math

import numpy as np


def _concordance(T, predicted, E) -> float | None:
    from lifelines.utils import concordance_index

    if E.sum() == 0 or len(T) < 2:
        return None
    try:
        return float(concordance_index(T, predicted, E))
    except ZeroDivisionError:
        return None


def _rcs(x: np.ndarray, knots) -> np.ndarray:
    """Restricted cubic spline basis (Harrell), 3 knots: x and one non-linear column."""
    k1, k2, k3 = knots
    d = (k3 - k1) ** 2

    def p3(v):
        return np.maximum(v, 0) ** 3

    nl = (p3(x - k1) - p3(x - k2) * (k3 - k1) / (k3 - k2) + p3(x - k3) * (k2 - k1) / (k3 - k2)) / d
    return np.column_stack([x, nl])


def _cox_failure_at(basis: np.ndarray, T: np.ndarray, E: np.ndarray, t0: float) -> np.ndarray:
    """Cox model (Breslow ties) of the records on `basis`; each record's P(T <= t0 | basis)."""
    n, p = basis.shape
    order = np.argsort(-T, kind="stable")
    Xs, Ts, Es = basis[order], T[order], E[order].astype(bool)
    # risk set of record i: every record with T >= T_i = a prefix of the descending order
    last = np.searchsorted(-Ts, -Ts, side="right") - 1
    beta = np.zeros(p)

    def pieces(b):
        eta = Xs @ b
        w = np.exp(eta - eta.max())
        s0 = np.cumsum(w)[last]
        s1 = np.cumsum(w[:, None] * Xs, axis=0)[last]
        ll = float(np.sum((eta - eta.max())[Es] - np.log(s0[Es])))
        return ll, w, s0, s1

    ll, w, s0, s1 = pieces(beta)
    for _ in range(50):
        s2 = np.cumsum(w[:, None, None] * Xs[:, :, None] * Xs[:, None, :], axis=0)[last]
        m = s1[Es] / s0[Es, None]
        grad = (Xs[Es] - m).sum(0)
        hess = -(s2[Es] / s0[Es, None, None] - m[:, :, None] * m[:, None, :]).sum(0)
        hess -= 1e-9 * np.eye(p)
        step = np.linalg.solve(hess, -grad)
        for _halving in range(30):
            new = pieces(beta + step)
            if new[0] >= ll - 1e-12:
                break
            step /= 2
        beta = beta + step
        improved = new[0] - ll
        ll, w, s0, s1 = new
        if abs(improved) < 1e-10 and np.abs(step).max() < 1e-8:
            break
    eta = Xs @ beta
    shift = eta.max()
    s0 = np.cumsum(np.exp(eta - shift))[last]
    h0 = float(np.sum(1 / s0[Es & (Ts <= t0)])) * math.exp(-shift)  # Breslow baseline
    return 1 - np.exp(-h0 * np.exp(basis @ beta))


def calibration(T: np.ndarray, E: np.ndarray, predicted_failure: np.ndarray, t0: float
                ) -> tuple[float | None, float | None]:
    """ICI and E50 at horizon t0 (Austin, Harrell & van Klaveren, Stat Med 2020): the observed
    probability of failure by t0 is smoothed against the predicted one by a Cox model on the
    complementary log-log of the prediction (a restricted cubic spline with 3 knots where there
    are enough distinct predictions, linear otherwise); ICI is the mean, E50 the median, of
    |observed - predicted| over the records."""
    T = np.asarray(T, dtype=float)
    E = np.asarray(E, dtype=int)
    if E.sum() < 2 or len(T) < 10:
        return None, None
    p = np.clip(np.asarray(predicted_failure, dtype=float), 1e-10, 1 - 1e-10)
    ccl = np.log(-np.log(1 - p))
    distinct = np.unique(np.round(ccl, 10))
    if len(distinct) == 1:
        kt, ks = _km(T, E)
        observed = np.full(len(T), 1 - float(ks[np.searchsorted(kt, t0, side="right") - 1]))
    else:
        basis = ccl[:, None]
        if len(distinct) >= 5:
            knots = np.quantile(distinct, [0.1, 0.5, 0.9])
            if len(set(np.round(knots, 10))) == 3:
                basis = _rcs(ccl, knots)
        sd = basis.std(0)
        basis = (basis - basis.mean(0)) / np.where(sd > 0, sd, 1)
        with np.errstate(all="ignore"):
            try:
                observed = _cox_failure_at(basis, T, E, t0)
            except np.linalg.LinAlgError:
                return None, None
        if not np.isfinite(observed).all():
            return None, None
    delta = np.abs(observed - p)
    return float(delta.mean()), float(np.median(delta))


def _km(T, E):
    """Kaplan-Meier step points (times, survival) starting at (0, 1)."""
    order = np.argsort(T, kind="stable")
    t, e = T[order], E[order]
    times, idx = np.unique(t, return_index=True)
    deaths = np.add.reduceat(e, idx)
    at_risk = len(t) - idx
    surv = np.cumprod(1 - deaths / at_risk)
    return np.concatenate([[0.0], times]), np.concatenate([[1.0], surv])
