"""Survival models of failure time and energy: accelerated failure time (AFT) fits of the failure
records, their comparison, predictions, plots and the TRASH score.

A failure record (`failures` table) is one attacked sample: its duration is the attacker's wall
time on the target until the deployed model misclassified it (or its energy to failure), censored
at the query budget when it survived. An AFT model says

    log T = x'beta + sigma * W

with W from a fixed distribution (extreme value: Weibull, normal: log-normal, logistic:
log-logistic, log-gamma: generalised gamma), so exp(beta_j) is a *time ratio*: how many times
longer (above 1) or shorter (below 1) a sample survives with covariate j than at the reference.

Use it like lifelines: one call fits everything, and the result holds clear attributes::

    df = load_failures(Store(url), duration="time")
    result = fit_models(df)            # or SurvivalFitter(...).fit(df)
    result.table()                     # per family: n, events, ll, AIC, BIC, concordance, ICI, E50
    result.best, result.coefficients   # best family by AIC; its time ratios, 95% CI, p-values
    result.predict({"precision": "int8", "target": "cpu", "batch_size": 8})
    result.trash(120.0, 50000)         # TRASH per model and target: train s, training samples
    result.write("fit/")               # CSV tables, Kaplan-Meier and partial-effects plots

What it does that earlier work did not (Meyers et al. 2024, deckard): BIC counts every estimated
parameter (lifelines' `BIC_` for regression models counts only the parameter *names*, e.g. 2 for
a Weibull AFT whatever its covariates); events are per sample, not per batch; concordance is also
reported on a held-out split; calibration is Austin et al. (2020) ICI/E50 at a horizon.

Lifelines does the maximum-likelihood fitting. Everything read from a fit (survival curves,
medians, means, log-likelihood) uses the closed forms below, so durations can be rescaled for
convergence and mapped back exactly, and the log-likelihood is the unpenalised one even when a
penalizer had to be used.
"""

from __future__ import annotations

import json
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import sqlalchemy as sa

from edgerob.catalog.targets import load_target
from edgerob.errors import EdgerobError
from edgerob.files import cache_dir
from edgerob.store import failures as failures_table, measurements, runs

# --- what can be fitted ---------------------------------------------------------------------

MAIN_FAMILIES = ("weibull", "lognormal", "loglogistic")
FAMILIES = MAIN_FAMILIES + ("exponential", "gengamma")
DEFAULT_COVARIATES = ("precision", "target", "attack", "eps", "log2_batch_size")
CATEGORICAL = ("precision", "target", "attack", "model")
NUMERIC = ("eps", "log2_batch_size", "batch_size")
# joined from the target catalog (targets/NAME.yaml specs); peak_tops at the record's precision
SPEC_COVARIATES = ("tdp_w", "memory_bandwidth_gbs", "memory_gb", "peak_tops")
COVARIATES = CATEGORICAL + NUMERIC + SPEC_COVARIATES
DURATIONS = {"time": ("duration_s", "s"), "energy": ("energy_j", "J")}
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")
Z95 = 1.959963984540054

# lifelines parameter names: location (log-time scale, carries the covariates) and ancillary
_LOCATION = {"weibull": "lambda_", "lognormal": "mu_", "loglogistic": "alpha_",
             "exponential": "lambda_", "gengamma": "mu_"}
_ANCILLARY = {"weibull": ("rho_",), "lognormal": ("sigma_",), "loglogistic": ("beta_",),
              "exponential": (), "gengamma": ("sigma_", "lambda_")}
_RETRY_PENALIZER = 0.01
MIN_EVENTS = 5


# --- loading --------------------------------------------------------------------------------

def load_failures(store, duration: str = "time") -> pd.DataFrame:
    """The failure records of `store` (an `edgerob.store.Store`) as one DataFrame.

    Columns: run_id, model, model_sha256, target, precision, batch_size, log2_batch_size, attack,
    eps, sample_id, queries, budget_queries, duration_s, energy_j, event, and `duration` (the one
    being modelled: `duration_s` for "time", `energy_j` for "energy"). `df.attrs` holds
    `duration`, `unit` and `notes`.
    """
    if duration not in DURATIONS:
        raise EdgerobError(f"unknown duration {duration!r}; allowed: {', '.join(DURATIONS)}")
    with store.engine.connect() as c:
        df = pd.read_sql(sa.select(failures_table, runs.c.model, runs.c.model_sha256)
                         .select_from(failures_table.outerjoin(
                             runs, failures_table.c.run_id == runs.c.run_id))
                         .order_by(failures_table.c.id), c)
    if df.empty:
        raise EdgerobError(f"no failure records in {store.url}: profile with a profile that has "
                           f"a query_attack first (edgerob profile)")
    df["model"] = df["model"].fillna("unknown")
    col, unit = DURATIONS[duration]
    notes = []
    if duration == "energy":
        has = df["energy_j"].notna()
        if not has.any():
            with store.engine.connect() as c:
                profs = sorted({p or "none" for (p,) in c.execute(
                    sa.select(measurements.c.profiler).distinct()
                    .where(measurements.c.run_id.in_(df["run_id"].unique().tolist())))})
            raise EdgerobError(f"no energy was measured for these failure records (profiler "
                               f"{', '.join(profs) or 'none'}): fit --duration time")
        if not has.all():
            notes.append(f"{int((~has).sum())} of {len(df)} records have no energy (no sensor): "
                         f"left out")
            df = df[has].reset_index(drop=True)
    df["duration"] = df[col].astype(float)
    df["event"] = df["event"].astype(int)
    df["eps"] = df["eps"].astype(float)
    df["log2_batch_size"] = np.log2(df["batch_size"].astype(float))
    df.attrs.update(duration=duration, unit=unit, notes=notes)
    return df


def cached_training(df: pd.DataFrame) -> dict[str, tuple[float, int | None]]:
    """Train time (s) and number of training samples of each model in `df`, read from the cards
    of models edgerob trained and cached (matched by checkpoint sha256): {model name:
    (train_time_s, n_train_samples)}, the count None on cards written before it was recorded.
    Models not found are absent."""
    want = {}
    if "model_sha256" in df:
        want = {s: m for s, m in df[["model_sha256", "model"]].drop_duplicates()
                .itertuples(index=False) if isinstance(s, str) and s}
    found = {}
    for card in sorted((cache_dir() / "models").glob("*/model.json")):
        try:
            raw = json.loads(card.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        sha, t, n = raw.get("checkpoint_sha256"), raw.get("train_time_s"), \
            raw.get("n_train_samples")
        if sha in want and isinstance(t, (int, float)) and t > 0:
            ok = isinstance(n, int) and not isinstance(n, bool) and n > 0
            found[want[sha]] = (float(t), n if ok else None)
    return found


# --- design matrix --------------------------------------------------------------------------

@dataclass
class Design:
    """Covariates as treatment-coded columns: what was kept, what was dropped and why."""

    covariates: list[str]  # requested covariates
    terms: dict  # kept covariate -> {"kind", "levels", "reference"} or {"kind": "numeric"}
    columns: list[str]  # design columns, e.g. "precision[int8]", "log2_batch_size"
    constants: dict  # dropped constant covariate -> its one value
    notes: list[str] = field(default_factory=list)

    def values(self, frame: pd.DataFrame, strict: bool = False) -> np.ndarray:
        """The design matrix (len(frame), len(columns)) for `frame`, which needs the raw
        columns of the kept covariates (precision, target, batch_size or log2_batch_size ...).
        `strict`: check a configuration (predict) against the data the model saw."""
        raw = _raw_covariates(frame, [c for c in self.terms])
        if strict:
            for c, v in self.constants.items():
                try:
                    given = _raw_covariates(frame, [c])[c][0]
                except EdgerobError:
                    continue  # not in the configuration: the model's one value applies
                if not _same(given, v):
                    raise EdgerobError(f"{c} was {v} for every record, so the model cannot "
                                       f"predict {c}={given}")
        out = np.zeros((len(frame), len(self.columns)))
        for j, col in enumerate(self.columns):
            name, level = _split_column(col)
            term = self.terms[name]
            vals = raw[name]
            if term["kind"] == "categorical":
                if strict:
                    bad = sorted(set(vals) - set(term["levels"]))
                    if bad:
                        raise EdgerobError(f"{name} {bad[0]!r} is not in the fitted data "
                                           f"({', '.join(map(str, term['levels']))})")
                out[:, j] = (vals == level).astype(float)
            else:
                out[:, j] = vals.astype(float)
        return out


def _same(a, b) -> bool:
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=1e-12)
    except (TypeError, ValueError):
        return str(a) == str(b)


def _split_column(col: str) -> tuple[str, str | None]:
    if col.endswith("]") and "[" in col:
        name, level = col[:-1].split("[", 1)
        return name, level
    return col, None


def _target_specs(names) -> dict:
    specs = {}
    for name in names:
        try:
            specs[name] = load_target(name).specs
        except EdgerobError as e:
            raise EdgerobError(f"spec covariates need target {name!r} in the catalog: {e}") from None
    return specs


def _raw_covariates(frame: pd.DataFrame, covariates) -> dict:
    """covariate -> numpy array (str for categorical, float for numeric) for each row."""
    out = {}
    specs = None
    for c in covariates:
        if c in CATEGORICAL:
            if c not in frame:
                raise EdgerobError(f"covariate {c!r} needs a column {c!r}")
            out[c] = frame[c].astype(str).to_numpy()
        elif c == "log2_batch_size":
            if "log2_batch_size" in frame:
                v = frame["log2_batch_size"].to_numpy(dtype=float)
            elif "batch_size" in frame:
                b = frame["batch_size"].to_numpy(dtype=float)
                if (b <= 0).any():
                    raise EdgerobError("batch_size must be positive")
                v = np.log2(b)
            else:
                raise EdgerobError("covariate log2_batch_size needs batch_size")
            out[c] = v
        elif c in NUMERIC:
            if c not in frame:
                raise EdgerobError(f"covariate {c!r} needs a value for {c!r}")
            out[c] = frame[c].to_numpy(dtype=float)
        elif c in SPEC_COVARIATES:
            if "target" not in frame:
                raise EdgerobError(f"covariate {c!r} needs the target")
            if specs is None:
                specs = _target_specs(sorted(set(frame["target"].astype(str))))
            vals = []
            for t, p in zip(frame["target"].astype(str), frame.get(
                    "precision", pd.Series([None] * len(frame))).astype(str)):
                s = specs[t]
                v = s.peak_tops.get(p) if c == "peak_tops" else getattr(s, c)
                if v is None:
                    where = f"peak_tops.{p}" if c == "peak_tops" else c
                    raise EdgerobError(f"covariate {c}: target {t!r} has no {where} in its "
                                       f"catalog entry (targets/{t}.yaml)")
                vals.append(float(v))
            out[c] = np.asarray(vals)
        else:
            raise EdgerobError(f"unknown covariate {c!r}; allowed: {', '.join(COVARIATES)}")
        if out[c].dtype.kind == "f" and not np.isfinite(out[c]).all():
            raise EdgerobError(f"covariate {c!r} has missing or infinite values")
    return out


def _levels(name: str, values: np.ndarray) -> tuple[list[str], str, str | None]:
    """Levels (reference first) and the reference; a note when the usual reference is absent."""
    uniq, counts = np.unique(values, return_counts=True)
    by_count = sorted(zip(uniq.tolist(), counts.tolist()), key=lambda x: (-x[1], x[0]))
    note = None
    if name == "precision":
        order = [p for p in PRECISION_ORDER if p in uniq] + sorted(set(uniq) - set(PRECISION_ORDER))
        if "fp32" in uniq:
            ref = "fp32"
        else:
            ref = by_count[0][0]
            note = f"precision: no fp32 records; reference is {ref} (most records)"
        return [ref] + [p for p in order if p != ref], ref, note
    ref = by_count[0][0]  # most records (ties: alphabetical)
    return [ref] + [lv for lv, _ in by_count[1:]], ref, None


def design(df: pd.DataFrame, covariates=None) -> Design:
    """Treatment-coded design for `df`: constant columns dropped with a note, and columns that
    would make the matrix rank-deficient (collinear dummies) dropped with a note, so the fit is
    identifiable."""
    default = covariates is None
    covariates = list(DEFAULT_COVARIATES if default else covariates)
    unknown = [c for c in covariates if c not in COVARIATES]
    if unknown:
        raise EdgerobError(f"unknown covariate {unknown[0]!r}; allowed: {', '.join(COVARIATES)}")
    if len(set(covariates)) != len(covariates):
        raise EdgerobError("a covariate is listed twice")
    raw = _raw_covariates(df, covariates)
    notes, terms, columns, blocks, constants = [], {}, [], [], {}
    for c in covariates:
        v = raw[c]
        if c in CATEGORICAL:
            levels, ref, note = _levels(c, v)
            if len(levels) == 1:
                constants[c] = levels[0]
                notes.append(f"single target ({levels[0]}): target covariate dropped"
                             if c == "target" else
                             f"{c}: one value ({levels[0]}) in the data, dropped")
                continue
            if note:
                notes.append(note)
            terms[c] = {"kind": "categorical", "levels": levels, "reference": ref}
            for lv in levels[1:]:
                columns.append(f"{c}[{lv}]")
                blocks.append((v == lv).astype(float))
        else:
            if np.ptp(v) == 0:
                constants[c] = float(v[0])
                notes.append(f"{c} is constant ({v[0]:g}): dropped")
                continue
            terms[c] = {"kind": "numeric"}
            columns.append(c)
            blocks.append(v.astype(float))
    kept, kept_cols = _full_rank(columns, blocks, notes)
    # a categorical term that lost every dummy is gone; numeric likewise
    terms = {c: t for c, t in terms.items()
             if any(_split_column(col)[0] == c for col in kept_cols)}
    return Design(covariates, terms, kept_cols, constants, notes)


def _full_rank(columns, blocks, notes):
    """Keep columns, in order, only where each adds rank beside the intercept and those kept
    (least squares on every record: a rare level must not look constant)."""
    if not columns:
        return [], []
    kept_idx: list[int] = []
    basis = [np.ones(len(blocks[0]))]
    names = ["Intercept"]
    for j, (col, x) in enumerate(zip(columns, blocks)):
        A = np.column_stack(basis)
        scale = np.abs(x).max() or 1.0
        coef, *_ = np.linalg.lstsq(A, x / scale, rcond=None)
        resid = x / scale - A @ coef
        if np.sqrt(np.mean(resid ** 2)) < 1e-8:
            with_ = [nm for nm, cf in zip(names, coef) if abs(cf) > 1e-6] or ["Intercept"]
            notes.append(f"{col} dropped: collinear with {', '.join(with_)}")
            continue
        kept_idx.append(j)
        basis.append(x)
        names.append(col)
    return kept_idx, [columns[j] for j in kept_idx]


# --- families: closed forms on the log-time scale -------------------------------------------

def _survival(family: str, lp, anc: dict, t):
    """S(t) for location lp (log-time scale) and ancillary parameters; broadcasts."""
    from scipy.special import expit, gammainc, gammaincc
    from scipy.stats import norm

    logt = np.log(np.maximum(t, 1e-300))
    if family in ("weibull", "exponential"):
        rho = math.exp(anc["rho_"]) if family == "weibull" else 1.0
        return np.exp(-np.exp(np.clip(rho * (logt - lp), -745, 700)))
    if family == "lognormal":
        return norm.sf((logt - lp) / math.exp(anc["sigma_"]))
    if family == "loglogistic":
        return expit(-math.exp(anc["beta_"]) * (logt - lp))
    if family == "gengamma":
        sigma, lam = math.exp(anc["sigma_"]), anc["lambda_"]
        z = (logt - lp) / sigma
        if abs(lam) < 1e-6:
            return norm.sf(z)
        a = 1 / lam ** 2
        u = np.clip(np.exp(np.clip(lam * z, -745, 700)) * a, 1e-300, 1e300)
        return gammaincc(a, u) if lam > 0 else gammainc(a, u)
    raise EdgerobError(f"unknown family {family!r}")


def _log_density_and_survival(family: str, lp, anc: dict, t):
    """(log f(t), log S(t)) per row, for the log-likelihood."""
    from scipy.special import gammaln, log_expit
    from scipy.stats import norm

    logt = np.log(t)
    if family in ("weibull", "exponential"):
        logrho = anc["rho_"] if family == "weibull" else 0.0
        rho = math.exp(logrho)
        zz = rho * (logt - lp)
        log_s = -np.exp(zz)
        return logrho - logt + zz + log_s, log_s
    if family == "lognormal":
        logsig = anc["sigma_"]
        z = (logt - lp) / math.exp(logsig)
        return norm.logpdf(z) - logsig - logt, norm.logsf(z)
    if family == "loglogistic":
        logb = anc["beta_"]
        zz = math.exp(logb) * (logt - lp)
        # f = b/t * e^zz / (1 + e^zz)^2 ; S = 1 / (1 + e^zz)
        return logb - logt + log_expit(zz) + log_expit(-zz), log_expit(-zz)
    if family == "gengamma":
        logsig, lam = anc["sigma_"], anc["lambda_"]
        z = (logt - lp) / math.exp(logsig)
        if abs(lam) < 1e-6:
            return norm.logpdf(z) - logsig - logt, norm.logsf(z)
        a = 1 / lam ** 2
        log_f = (math.log(abs(lam)) - logsig - logt - gammaln(a)
                 + a * (lam * z + math.log(a)) - a * np.exp(lam * z))
        with np.errstate(divide="ignore"):
            log_s = np.log(_survival(family, lp, anc, t))
        return log_f, log_s
    raise EdgerobError(f"unknown family {family!r}")


def _median(family: str, lp, anc: dict):
    from scipy.special import gammaincinv

    lp = np.asarray(lp, dtype=float)
    if family == "weibull":
        return np.exp(lp) * math.log(2) ** (1 / math.exp(anc["rho_"]))
    if family == "exponential":
        return np.exp(lp) * math.log(2)
    if family in ("lognormal", "loglogistic"):
        return np.exp(lp)
    if family == "gengamma":
        sigma, lam = math.exp(anc["sigma_"]), anc["lambda_"]
        if abs(lam) < 1e-6:
            return np.exp(lp)
        a = 1 / lam ** 2
        u_med = gammaincinv(a, 0.5)  # T is monotone in u, so its median maps through
        return np.exp(lp + sigma / lam * math.log(lam ** 2 * u_med))
    raise EdgerobError(f"unknown family {family!r}")


def _mean(family: str, lp, anc: dict):
    """E[T] = integral of S(t); inf where the family's mean does not exist."""
    from scipy.special import gammaln

    lp = np.asarray(lp, dtype=float)
    if family == "weibull":
        return np.exp(lp + gammaln(1 + 1 / math.exp(anc["rho_"])))
    if family == "exponential":
        return np.exp(lp)
    if family == "lognormal":
        return np.exp(lp + math.exp(anc["sigma_"]) ** 2 / 2)
    if family == "loglogistic":
        b = math.exp(anc["beta_"])
        if b <= 1:
            return np.full_like(lp, np.inf)
        return np.exp(lp) * (math.pi / b) / math.sin(math.pi / b)
    if family == "gengamma":
        sigma, lam = math.exp(anc["sigma_"]), anc["lambda_"]
        if abs(lam) < 1e-6:
            return np.exp(lp + sigma ** 2 / 2)
        a, r = 1 / lam ** 2, sigma / lam
        if a + r <= 0:
            return np.full_like(lp, np.inf)
        return np.exp(lp + r * math.log(lam ** 2) + gammaln(a + r) - gammaln(a))
    raise EdgerobError(f"unknown family {family!r}")


# --- lifelines fitters ----------------------------------------------------------------------

def _lifelines_fitter(family: str, penalizer: float, warm: dict | None):
    """A lifelines fitter for `family`; (fitter, how to call fit)."""
    import lifelines

    if family == "weibull":
        return lifelines.WeibullAFTFitter(penalizer=penalizer)
    if family == "lognormal":
        return lifelines.LogNormalAFTFitter(penalizer=penalizer)
    if family == "loglogistic":
        return lifelines.LogLogisticAFTFitter(penalizer=penalizer)
    if family == "exponential":
        return _exponential_class()(penalizer=penalizer, warm=warm)
    if family == "gengamma":
        return _gengamma_class()(penalizer=penalizer, warm=warm)
    raise EdgerobError(f"unknown family {family!r}; allowed: {', '.join(FAMILIES)}")


def _warm_point(fitter, Xs, warm: dict) -> dict:
    """An initial point in lifelines' internal (column-normalised) coordinates."""
    point = {}
    for name in fitter._fitted_parameter_names:
        cols = list(Xs[name].columns)
        point[name] = np.array([warm.get(name, {}).get(c, 0.0) * fitter._norm_std.loc[name, c]
                                for c in cols], dtype=float)
    return point


_CLASSES: dict = {}


def _exponential_class():
    """Exponential AFT: a Weibull with shape 1 (lifelines has only the univariate one)."""
    if "exponential" not in _CLASSES:
        import autograd.numpy as anp
        from lifelines.fitters import ParametricRegressionFitter

        class ExponentialAFTFitter(ParametricRegressionFitter):
            _fitted_parameter_names = ["lambda_"]
            fit_intercept = False  # the design carries its own Intercept column

            def __init__(self, penalizer=0.0, warm=None, **kw):
                super().__init__(penalizer=penalizer, **kw)
                self._warm = warm

            def _create_initial_point(self, Ts, E, entries, weights, Xs):
                if self._warm:
                    return _warm_point(self, Xs, self._warm)
                return super()._create_initial_point(Ts, E, entries, weights, Xs)

            def _cumulative_hazard(self, params, T, Xs):
                return T * anp.exp(-anp.dot(Xs["lambda_"], params["lambda_"]))

            def _log_hazard(self, params, T, Xs):
                return -anp.dot(Xs["lambda_"], params["lambda_"]) + 0 * T

        _CLASSES["exponential"] = ExponentialAFTFitter
    return _CLASSES["exponential"]


def _gengamma_class():
    """lifelines' generalised gamma regression, started from a Weibull fit where one exists
    (lambda = 1 is the Weibull): one optimisation instead of two, from a good point."""
    if "gengamma" not in _CLASSES:
        from lifelines import GeneralizedGammaRegressionFitter

        class WarmGeneralizedGammaRegressionFitter(GeneralizedGammaRegressionFitter):
            fit_intercept = False

            def __init__(self, penalizer=0.0, warm=None, **kw):
                super().__init__(penalizer=penalizer, **kw)
                self._warm = warm

            def _create_initial_point(self, Ts, E, entries, weights, Xs):
                if self._warm:
                    self._ll_null_ = np.nan
                    return _warm_point(self, Xs, self._warm)
                return super()._create_initial_point(Ts, E, entries, weights, Xs)

        _CLASSES["gengamma"] = WarmGeneralizedGammaRegressionFitter
    return _CLASSES["gengamma"]


@dataclass
class FamilyFit:
    """One family fitted to one set of records."""

    family: str
    n: int
    events: int
    k: int  # every estimated parameter: location coefficients, intercept, ancillary
    log_likelihood: float  # unpenalised, in the original duration units
    aic: float
    bic: float  # k ln(n) - 2 ll
    lifelines_bic: float  # what lifelines' BIC_ says (too few parameters for regression)
    params: pd.Series  # (parameter, column) -> estimate, original units
    se: pd.Series
    scale: float = 1.0  # durations were divided by this for the fit
    penalizer: float = 0.0
    converged: bool = True  # False: only a penalised fit converged (not the MLE)
    concordance_train: float | None = None
    concordance_test: float | None = None
    ici: float | None = None
    e50: float | None = None
    calibration_on: str | None = None  # "held-out" or "fitting" split
    notes: list[str] = field(default_factory=list)

    @property
    def location(self) -> pd.Series:
        """Location coefficients (log-time scale), Intercept included."""
        return self.params.loc[_LOCATION[self.family]]

    @property
    def ancillary(self) -> dict:
        return {name: float(self.params.loc[(name, "Intercept")])
                for name in _ANCILLARY[self.family]}

    def linear_predictor(self, X: np.ndarray, columns: list[str]) -> np.ndarray:
        loc = self.location
        return float(loc["Intercept"]) + X @ loc.reindex(columns).to_numpy(dtype=float)

    def survival(self, X, columns, t):
        return _survival(self.family, self.linear_predictor(X, columns)[:, None], self.ancillary,
                         np.asarray(t, dtype=float)[None, :])

    def median(self, X, columns):
        return _median(self.family, self.linear_predictor(X, columns), self.ancillary)

    def mean(self, X, columns):
        return _mean(self.family, self.linear_predictor(X, columns), self.ancillary)

    def log_likelihood_of(self, X, columns, T, E) -> float:
        log_f, log_s = _log_density_and_survival(self.family, self.linear_predictor(X, columns),
                                                 self.ancillary, T)
        return float(np.sum(np.where(E == 1, log_f, log_s)))


def _first_line(e: BaseException | str) -> str:
    text = str(e).strip()
    return (text.splitlines() or [type(e).__name__])[0].strip() or type(e).__name__


def _fit_once(family: str, X: np.ndarray, columns: list[str], T: np.ndarray, E: np.ndarray,
              scale: float, penalizer: float, warm: dict | None) -> tuple[FamilyFit, list[str]]:
    """One lifelines fit on durations T/scale; parameters and log-likelihood mapped back to the
    original units. Raises on failure."""
    from lifelines.exceptions import ConvergenceError

    names = [f"x{j}" for j in range(len(columns))]  # plain names: no formula parsing surprises
    data = pd.DataFrame(X, columns=names)
    data["_T"] = T / scale
    data["_E"] = E
    if warm is not None and scale != 1.0:
        warm = {p: ({**v, "Intercept": v["Intercept"] - math.log(scale)}
                    if p == _LOCATION[family] else v) for p, v in warm.items()}
    if warm is not None:
        rename = dict(zip(columns, names))
        warm = {p: {rename.get(c, c): x for c, x in v.items()} for p, v in warm.items()}
    fitter = _lifelines_fitter(family, penalizer, warm)
    seen: list[str] = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if family in MAIN_FAMILIES:
            fitter.fit(data, "_T", "_E")
        else:
            data["Intercept"] = 1.0
            regs = {_LOCATION[family]: names + ["Intercept"]}
            regs.update({a: ["Intercept"] for a in _ANCILLARY[family]})
            fitter.fit(data, "_T", "_E", regressors=regs)
    for w in caught:
        msg = _first_line(str(w.message))
        if msg and "Approximating the expected value" not in msg and msg not in seen:
            seen.append(msg)
    back = {n: c for n, c in zip(names, columns)}
    params = fitter.params_.copy()
    params.index = pd.MultiIndex.from_tuples([(p, back.get(c, c)) for p, c in params.index])
    se = pd.Series(np.asarray(fitter.standard_errors_, dtype=float), index=params.index)
    if not (np.isfinite(params).all() and np.isfinite(se).all() and (se > 0).all()):
        raise ConvergenceError("the fit ended with non-finite estimates or standard errors")
    loc = _LOCATION[family]
    params.loc[(loc, "Intercept")] += math.log(scale)
    n, events = len(T), int(E.sum())
    fit = FamilyFit(family, n, events, len(params), math.nan, math.nan, math.nan,
                    float(fitter.BIC_) if penalizer == 0 and scale == 1 else math.nan,
                    params, se, scale=scale, penalizer=penalizer)
    ll = fit.log_likelihood_of(X, columns, T, E)
    if not math.isfinite(ll):
        raise ConvergenceError("the log-likelihood is not finite at the estimate")
    if penalizer == 0 and scale == 1.0 and not math.isclose(ll, fitter.log_likelihood_,
                                                             rel_tol=1e-6, abs_tol=1e-6):
        seen.append(f"log-likelihood {ll:.6g} differs from lifelines' {fitter.log_likelihood_:.6g}")
    fit.log_likelihood = ll
    fit.aic = 2 * fit.k - 2 * ll
    fit.bic = fit.k * math.log(n) - 2 * ll
    return fit, seen


def _fit_family(family: str, X, columns, T, E, warm=None) -> tuple[FamilyFit | None, list[str]]:
    """Fit with the convergence ladder: raw durations, then durations divided by their median,
    then also a small penalizer. Returns (fit or None, notes)."""
    med = float(np.median(T))
    ladder = [(1.0, 0.0), (med, 0.0), (med, _RETRY_PENALIZER)]
    errors = []
    for i, (scale, pen) in enumerate(ladder):
        try:
            fit, seen = _fit_once(family, X, columns, T, E, scale, pen, warm)
        except (EdgerobError, KeyboardInterrupt):
            raise
        except Exception as e:  # noqa: BLE001 - lifelines raises many kinds; each is a note
            errors.append(_first_line(e))
            continue
        notes = [f"{family}: lifelines warned: {m}" for m in seen]
        if i == 1:
            notes.append(f"{family}: did not converge on raw durations ({errors[0]}); refitted "
                         f"with durations divided by their median ({med:.4g}): coefficients "
                         f"are unchanged by the scale, the intercept and log-likelihood are "
                         f"mapped back")
        elif i == 2:
            fit.converged = False  # not the maximum-likelihood estimate
            notes.append(f"{family}: converged only with durations scaled and penalizer {pen}: "
                         f"coefficients are shrunk towards 0 and their intervals approximate; "
                         f"not the MLE, so it is chosen as best only if no family converged "
                         f"without a penalizer")
        fit.notes = notes
        return fit, notes
    return None, [f"{family}: did not converge (raw, scaled, penalised: {errors[-1]}); left out"]


# --- concordance and calibration ------------------------------------------------------------

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


# --- the split ------------------------------------------------------------------------------

CELL = ("model", "target", "precision", "attack", "eps", "batch_size")


def _split(df: pd.DataFrame, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Held-out rows, stratified by cell and event, so every level stays in the fitting split."""
    rng = np.random.default_rng(seed)
    keys = [c for c in CELL if c in df] + ["event"]
    test = []
    for _, idx in df.groupby(keys, sort=True, dropna=False).indices.items():
        idx = rng.permutation(idx)
        m = int(math.floor(len(idx) * test_fraction + rng.random()))
        test.extend(idx[:min(m, len(idx) - 1)])
    test = np.sort(np.asarray(test, dtype=int))
    train = np.setdiff1d(np.arange(len(df)), test)
    return train, test


# --- the result -----------------------------------------------------------------------------

@dataclass
class FitResult:
    """Everything `fit_models` found. `models` holds each family fitted on the fitting split
    (the comparison); `final` is the best family refitted on every record, which gives
    `coefficients`, predictions, plots and TRASH scores."""

    duration: str  # "time" or "energy"
    unit: str  # "s" or "J"
    models: dict  # family -> FamilyFit (fitting split)
    best: str
    final: FamilyFit
    coefficients: pd.DataFrame  # index: design column; time_ratio, ci_low, ci_high, p, coef, se
    design: Design
    horizon: float
    n_train: int
    n_test: int
    notes: list[str]
    data: pd.DataFrame = field(repr=False)

    # tables -------------------------------------------------------------------------------

    def table(self) -> pd.DataFrame:
        """The comparison: one row per family, the best (lowest AIC) marked."""
        rows = []
        for f in self.models.values():
            rows.append({"family": f.family, "best": f.family == self.best, "n": f.n,
                         "events": f.events, "k": f.k, "log_likelihood": f.log_likelihood,
                         "aic": f.aic, "bic": f.bic, "lifelines_bic": f.lifelines_bic,
                         "concordance_train": f.concordance_train,
                         "concordance_test": f.concordance_test, "ici": f.ici, "e50": f.e50,
                         "calibration_on": f.calibration_on, "scale": f.scale,
                         "penalizer": f.penalizer, "converged": f.converged})
        return pd.DataFrame(rows)

    def to_json(self) -> dict:
        """The `edgerob fit --json` document."""
        keys = ("family", "n", "events", "log_likelihood", "aic", "bic", "concordance_train",
                "concordance_test", "ici", "e50")
        models = [{k: _clean(getattr(f, k)) for k in keys} for f in self.models.values()]
        coefs = [{"covariate": c, "time_ratio": _clean(r.time_ratio), "ci_low": _clean(r.ci_low),
                  "ci_high": _clean(r.ci_high), "p": _clean(r.p)}
                 for c, r in self.coefficients.iterrows()]
        return {"duration": self.duration, "best": self.best, "models": models,
                "coefficients": coefs}

    # predictions --------------------------------------------------------------------------

    def _frame(self, config: dict) -> pd.DataFrame:
        row = dict(config)
        for c, t in self.design.terms.items():
            if t["kind"] == "categorical":
                row.setdefault(c, t["reference"])
        for c, v in self.design.constants.items():
            if c in CATEGORICAL:
                row.setdefault(c, v)
        needed = [c for c, t in self.design.terms.items()
                  if t["kind"] == "numeric" and c not in SPEC_COVARIATES]
        missing = [c for c in needed if c not in row
                   and not (c == "log2_batch_size" and "batch_size" in row)]
        if missing:
            ask = ["batch_size" if c == "log2_batch_size" else c for c in missing]
            raise EdgerobError(f"predict needs {', '.join(ask)} (the model uses them)")
        return pd.DataFrame([row])

    def predict(self, config: dict) -> dict:
        """Median and expected duration to failure (s, or J for energy) for one configuration:
        {precision, target, batch_size, attack, eps, ...}; categorical keys left out take the
        reference level. Expected is inf where the family has no finite mean."""
        X = self.design.values(self._frame(config), strict=True)
        cols = self.design.columns
        return {"median": float(self.final.median(X, cols)[0]),
                "expected": float(self.final.mean(X, cols)[0]),
                "family": self.final.family, "unit": self.unit}

    def survival_function(self, config: dict, times) -> np.ndarray:
        X = self.design.values(self._frame(config), strict=True)
        return self.final.survival(X, self.design.columns, times)[0]

    def trash(self, train_time_s, n_train_samples, by=("model", "target")) -> pd.DataFrame:
        """TRASH score per group of records (default: model and target), by `edgerob.analysis.cost.trash`
        (the one definition): (train time / training samples) / E[T], E[T] the fitted model's
        expected time to failure per attacked sample, averaged over the group's records.
        `train_time_s` and `n_train_samples`: numbers, or {model name: number} (models without a
        train time are skipped). Where the TRASH is not estimable (no sample count, infinite
        E[T]) `trash` is NaN and `note` says why. Records' durations are the wall time of the
        batched queries a sample took part in, so a record's E[T] per attacked sample is the
        fitted expectation divided by its batch size (deckard divides the batch's expected time by
        the batch's sample count)."""
        from edgerob.analysis.cost import trash

        if self.duration != "time":
            raise EdgerobError("the TRASH score compares times: fit --duration time")
        by = list(by)
        missing = [c for c in by if c not in self.data]
        if missing:
            raise EdgerobError(f"cannot group TRASH scores by {missing[0]!r}: not in the records")
        X = self.design.values(self.data)
        expected = self.final.mean(X, self.design.columns)
        if "batch_size" in self.data:
            expected = np.asarray(expected, dtype=float) / self.data["batch_size"].to_numpy()
        frame = self.data[by].copy()
        frame["_e"] = expected
        rows = []
        for key, g in frame.groupby(by, sort=True):
            key = key if isinstance(key, tuple) else (key,)
            labels = dict(zip(by, key))
            model = labels.get("model")
            tt = train_time_s.get(model) if isinstance(train_time_s, dict) else train_time_s
            if tt is None:
                continue
            n = (n_train_samples.get(model) if isinstance(n_train_samples, dict)
                 else n_train_samples)
            e = float(g["_e"].mean())
            score = trash(float(tt), n, e)
            rows.append({**labels, "n": len(g), "train_time_s": float(tt), "n_train_samples": n,
                         "train_time_per_sample_s": score["train_time_per_sample_s"],
                         "expected_time_s": e,
                         "trash": math.nan if score["trash"] is None else score["trash"],
                         "cheaper_to_break": score["cheaper_to_break"], "note": score["note"]})
        return pd.DataFrame(rows, columns=by + ["n", "train_time_s", "n_train_samples",
                                                "train_time_per_sample_s", "expected_time_s",
                                                "trash", "cheaper_to_break", "note"])

    # files --------------------------------------------------------------------------------

    def write(self, out_dir, trash: pd.DataFrame | None = None) -> list[Path]:
        """Comparison and coefficient tables (CSV), TRASH (CSV, if given) and the plots (PNG and
        SVG) into `out_dir`. Returns the paths written."""
        out = Path(out_dir)
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise EdgerobError(f"cannot write to {out}: {e.strerror or e}") from None
        paths = []
        for name, frame in (("comparison", self.table()),
                            ("coefficients", self.coefficients.rename_axis("covariate")
                             .reset_index()),
                            ("trash", trash)):
            if frame is None:
                continue
            p = out / f"{name}.csv"
            frame.to_csv(p, index=False)
            paths.append(p)
        paths += plot(self, out)
        return paths


def _clean(v):
    if v is None:
        return None
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return float(v) if math.isfinite(v) else None
    return v


# --- fitting --------------------------------------------------------------------------------

class SurvivalFitter:
    """lifelines-style: configure, then `fit(df)` returns a `FitResult`."""

    def __init__(self, families=MAIN_FAMILIES, covariates=None, test_fraction: float = 0.25,
                 seed: int = 0, horizon: float | None = None):
        families = list(dict.fromkeys(families))
        bad = [f for f in families if f not in FAMILIES]
        if bad or not families:
            raise EdgerobError(f"unknown family {bad[0] if bad else '(none)'!r}; allowed: "
                               f"{', '.join(FAMILIES)}")
        if not 0 <= test_fraction <= 0.5:
            raise EdgerobError(f"test_fraction must be in [0, 0.5], got {test_fraction}")
        if horizon is not None and not horizon > 0:
            raise EdgerobError(f"horizon must be positive, got {horizon}")
        self.families, self.covariates = families, covariates
        self.test_fraction, self.seed, self.horizon = test_fraction, seed, horizon

    def fit(self, df: pd.DataFrame, duration_col: str | None = None) -> FitResult:
        notes = list(df.attrs.get("notes", []))
        duration = df.attrs.get("duration", "time")
        if duration_col is None:
            duration_col = "duration" if "duration" in df else DURATIONS[duration][0]
        if duration_col == "energy_j":
            duration = "energy"
        unit = DURATIONS.get(duration, ("", ""))[1]
        for c in (duration_col, "event"):
            if c not in df:
                raise EdgerobError(f"the failure records have no {c!r} column")
        df = df.copy()
        df["duration"] = pd.to_numeric(df[duration_col], errors="coerce").astype(float)
        bad = ~np.isfinite(df["duration"])
        if bad.all():
            raise EdgerobError(f"no finite {duration} values in the failure records")
        if bad.any():
            notes.append(f"{int(bad.sum())} records without a finite {duration}: left out")
            df = df[~bad]
        df = df.reset_index(drop=True)
        if not set(pd.unique(df["event"])) <= {0, 1}:
            raise EdgerobError("event must be 0 (censored) or 1 (failed)")
        df["event"] = df["event"].astype(int)
        if (df["duration"] < 0).any():
            raise EdgerobError(f"negative {duration} values in the failure records")
        n, events = len(df), int(df["event"].sum())
        if events == 0:
            raise EdgerobError(f"all {n} failure records are censored (no sample failed within "
                               f"its budget): nothing to fit; raise the query budget or eps")
        zero = df["duration"] <= 0
        if zero.any():
            pos = df.loc[~zero, "duration"]
            if pos.empty:
                raise EdgerobError(f"every {duration} is zero: nothing to fit")
            tiny = float(pos.min()) / 2
            df.loc[zero, "duration"] = tiny
            notes.append(f"{int(zero.sum())} records with zero {duration}: clipped to {tiny:.3g} "
                         f"{unit} (half the smallest positive) since AFT models need positive "
                         f"durations")

        des = design(df, self.covariates)
        notes += des.notes
        p = len(des.columns)
        need = max(MIN_EVENTS, p + 2 + 2)  # parameters of the main families + 2
        if events < need:
            raise EdgerobError(f"too few failures to fit: {events} of {n} samples failed, and "
                               f"{p + 2} parameters need at least {need}; collect more failure "
                               f"records (more samples, a larger budget or eps) or use fewer "
                               f"covariates (--covariates precision)")
        X = des.values(df)
        T = df["duration"].to_numpy(dtype=float)
        E = df["event"].to_numpy(dtype=int)

        train, test = np.arange(n), np.array([], dtype=int)
        if self.test_fraction > 0:
            tr, te = _split(df, self.test_fraction, self.seed)
            if len(te) >= 10 and E[te].sum() >= 2 and E[tr].sum() >= need:
                train, test = tr, te
            else:
                notes.append(f"too few records for a held-out split ({n} records, {events} "
                             f"failures): every record fits the models; no test concordance")
        horizon = self.horizon if self.horizon is not None else float(np.median(T))

        models: dict[str, FamilyFit] = {}
        order = sorted(self.families, key=lambda f: f != "weibull")  # warm starts need weibull
        for fam in order:
            k = p + 1 + len(_ANCILLARY[fam])
            if E[train].sum() < k + 2:
                notes.append(f"{fam}: {int(E[train].sum())} failures for {k} parameters: left out")
                continue
            warm = _warm_from(models.get("weibull"), fam)
            fit, fam_notes = _fit_family(fam, X[train], des.columns, T[train], E[train], warm)
            notes += fam_notes
            if fit is None:
                continue
            _score(fit, X, des.columns, T, E, train, test, horizon, notes)
            models[fam] = fit
        models = {f: models[f] for f in self.families if f in models}
        if any(m.calibration_on == "fitting" for m in models.values()) and len(test):
            notes.append(f"calibration (ICI, E50) on the fitting split: the held-out split has "
                         f"only {int(E[test].sum())} failures")
        if not models:
            raise EdgerobError("no family converged: " + "; ".join(
                n_ for n_ in notes if "did not converge" in n_ or "left out" in n_))
        mle = [f for f in models.values() if f.converged] or list(models.values())
        best = min(mle, key=lambda f: f.aic).family
        if len(test):
            final, fam_notes = _fit_family(best, X, des.columns, T, E,
                                           _warm_from(models.get("weibull"), best))
            notes += [f"final fit on all records: {m}" for m in fam_notes]
            if final is None:
                final = models[best]
                notes.append(f"{best}: refit on all records failed; coefficients are from the "
                             f"fitting split")
        else:
            final = models[best]
        coefs = _coefficients(final, des.columns)
        return FitResult(duration, unit, models, best, final, coefs, des, horizon,
                         len(train), len(test), notes, df)


def _warm_from(weibull: FamilyFit | None, family: str) -> dict | None:
    """Start exponential and generalised gamma at the Weibull estimate (both nest it)."""
    if weibull is None or family not in ("exponential", "gengamma"):
        return None
    loc = weibull.location.to_dict()
    if family == "exponential":
        return {"lambda_": loc}
    return {"mu_": loc, "sigma_": {"Intercept": -weibull.ancillary["rho_"]},
            "lambda_": {"Intercept": 1.0}}


def _score(fit: FamilyFit, X, columns, T, E, train, test, horizon, notes) -> None:
    med = fit.median(X, columns)
    fit.concordance_train = _concordance(T[train], med[train], E[train])
    if len(test):
        fit.concordance_test = _concordance(T[test], med[test], E[test])
    on = test if len(test) and E[test].sum() >= 10 else train
    fit.calibration_on = "held-out" if on is test else "fitting"
    pred = 1 - fit.survival(X[on], columns, [horizon])[:, 0]
    fit.ici, fit.e50 = calibration(T[on], E[on], pred, horizon)
    if fit.ici is None:
        notes.append(f"{fit.family}: calibration at {horizon:.4g} could not be estimated")


def _coefficients(fit: FamilyFit, columns: list[str]) -> pd.DataFrame:
    from scipy.stats import norm

    loc = _LOCATION[fit.family]
    rows = []
    for c in columns:
        b, s = float(fit.params.loc[(loc, c)]), float(fit.se.loc[(loc, c)])
        rows.append({"covariate": c, "time_ratio": math.exp(b), "ci_low": math.exp(b - Z95 * s),
                     "ci_high": math.exp(b + Z95 * s), "p": float(2 * norm.sf(abs(b / s))),
                     "coef": b, "se": s})
    return pd.DataFrame(rows, columns=["covariate", "time_ratio", "ci_low", "ci_high", "p",
                                       "coef", "se"]).set_index("covariate")


def fit_models(df: pd.DataFrame, families=MAIN_FAMILIES, covariates=None,
               test_fraction: float = 0.25, seed: int = 0, horizon: float | None = None
               ) -> FitResult:
    """Fit each AFT family to the failure records `df` (from `load_failures`) and compare them;
    see `FitResult`. Families: weibull, lognormal, loglogistic, exponential, gengamma."""
    return SurvivalFitter(families, covariates, test_fraction, seed, horizon).fit(df)


def predict(result: FitResult, config: dict) -> dict:
    """{"median", "expected", ...} duration to failure of `config` under the best model."""
    return result.predict(config)


# --- plots ----------------------------------------------------------------------------------

def _grid(T: np.ndarray) -> tuple[np.ndarray, bool]:
    lo, hi = float(T.min()), float(T.max())
    log = hi / lo > 50
    return (np.geomspace(lo, hi, 200) if log else np.linspace(0, hi, 200)), log


def _km(T, E):
    """Kaplan-Meier step points (times, survival) starting at (0, 1)."""
    order = np.argsort(T, kind="stable")
    t, e = T[order], E[order]
    times, idx = np.unique(t, return_index=True)
    deaths = np.add.reduceat(e, idx)
    at_risk = len(t) - idx
    surv = np.cumprod(1 - deaths / at_risk)
    return np.concatenate([[0.0], times]), np.concatenate([[1.0], surv])


def _marginal_survival(result: FitResult, X: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """Average fitted S(t) over the rows of X (the model's curve for a group of records)."""
    uniq, counts = np.unique(X, axis=0, return_counts=True)
    S = result.final.survival(uniq, result.design.columns, grid)
    return (counts[:, None] * S).sum(0) / counts.sum()


def _save(fig, out: Path, name: str) -> list[Path]:
    paths = []
    for ext in ("png", "svg"):
        p = out / f"{name}.{ext}"
        fig.savefig(p, dpi=120 if ext == "png" else None, bbox_inches="tight")
        paths.append(p)
    return paths


def plot(result: FitResult, out_dir) -> list[Path]:
    """Kaplan-Meier curves by precision and by target with the best model's fitted curves over
    them, and partial effects of precision and batch size. PNG and SVG; returns the paths."""
    from matplotlib.figure import Figure

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    df = result.data
    T, E = df["duration"].to_numpy(float), df["event"].to_numpy(int)
    X = result.design.values(df)
    grid, log = _grid(T)
    label = f"{'time' if result.duration == 'time' else 'energy'} to failure ({result.unit})"
    paths = []
    for by in ("precision", "target"):
        fig = Figure(figsize=(7, 4.5))
        ax = fig.add_subplot()
        levels = [lv for lv in (result.design.terms.get(by, {}).get("levels")
                                or sorted(df[by].astype(str).unique()))]
        for i, lv in enumerate(levels):
            rows = (df[by].astype(str) == lv).to_numpy()
            color = f"C{i % 10}"
            kt, ks = _km(T[rows], E[rows])
            ax.step(kt, ks, where="post", color=color, label=f"{lv} (Kaplan-Meier, n={rows.sum()})")
            ax.plot(grid, _marginal_survival(result, X[rows], grid), "--", color=color,
                    label=f"{lv} ({result.final.family} fit)")
        ax.set(xlabel=label, ylabel="survival (not yet failed)", ylim=(0, 1.02),
               title=f"Kaplan-Meier by {by} and the {result.final.family} AFT fit")
        if log:
            ax.set_xscale("log")
        ax.legend(fontsize=7)
        paths += _save(fig, out, f"km_{by}")
    fig = Figure(figsize=(11, 4.5))
    base = _baseline(result)
    for j, cov in enumerate(("precision", "log2_batch_size")):
        ax = fig.add_subplot(1, 2, j + 1)
        term = result.design.terms.get(cov)
        if term is None:
            ax.text(0.5, 0.5, f"{cov} is not in the model", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_axis_off()
            continue
        if cov == "precision":
            values = [(lv, {"precision": lv}) for lv in term["levels"]]
        else:
            bs = sorted(df["log2_batch_size"].unique())
            values = [(f"batch {2 ** b:g}", {"log2_batch_size": b}) for b in bs]
        for i, (name, change) in enumerate(values):
            frame = pd.DataFrame([{**base, **change}])
            S = result.final.survival(result.design.values(frame), result.design.columns, grid)[0]
            ax.plot(grid, S, color=f"C{i % 10}", label=name)
        ax.set(xlabel=label, ylabel="survival", ylim=(0, 1.02), title=f"partial effect of {cov}")
        if log:
            ax.set_xscale("log")
        ax.legend(fontsize=8)
    fig.suptitle(f"{result.final.family} AFT; other covariates at their reference or median")
    paths += _save(fig, out, "partial_effects")
    return paths


def _baseline(result: FitResult) -> dict:
    """Reference levels and median numeric values: the 'typical' record of the partial effects."""
    base = {}
    raw = _raw_covariates(result.data, list(result.design.terms))
    for c, t in result.design.terms.items():
        base[c] = t["reference"] if t["kind"] == "categorical" else float(np.median(raw[c]))
    if "target" not in base and "target" in result.data:
        base["target"] = str(result.data["target"].iloc[0])
    if "precision" not in base and "precision" in result.data:
        base["precision"] = str(result.data["precision"].iloc[0])
    return base


# --- synthetic records (checks and benchmarks) -----------------------------------------------

def simulate_failures(n: int = 2520, family: str = "weibull", *, sigma: float = 0.5,
                      intercept: float = math.log(0.5), time_ratios: dict | None = None,
                      targets=("jetson-orin-nano", "l4"), precisions=("fp32", "fp16", "int8"),
                      batch_sizes=(1, 8, 32), attack: str = "square", eps: float = 0.15,
                      censored: float = 0.25, seed: int = 0) -> pd.DataFrame:
    """Failure records drawn from a known AFT: log T = intercept + sum log(time ratio) * x +
    sigma * W, W standard extreme-value (min) for "weibull" (shape 1/sigma), standard normal for
    "lognormal", standard logistic for "loglogistic"; independent log-normal censoring tuned to
    about `censored` of the records. `time_ratios` keys are design columns, e.g.
    {"precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
    "target[l4]": 0.3}. Same columns as `load_failures`."""
    rng = np.random.default_rng(seed)
    ratios = time_ratios if time_ratios is not None else {
        "precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
        f"target[{targets[-1]}]": 0.3}
    cells = [(t, p, b) for t in targets for p in precisions for b in batch_sizes]
    which = np.arange(n) % len(cells)
    tgt = np.array([cells[i][0] for i in which])
    prec = np.array([cells[i][1] for i in which])
    bs = np.array([cells[i][2] for i in which])
    lp = np.full(n, intercept)
    for col, r in ratios.items():
        name, level = _split_column(col)
        x = {"precision": prec, "target": tgt}.get(name)
        lp += math.log(r) * ((x == level) if level is not None else np.log2(bs))
    if family == "weibull":
        w = np.log(rng.exponential(size=n))
    elif family == "lognormal":
        w = rng.standard_normal(n)
    elif family == "loglogistic":
        w = rng.logistic(size=n)
    else:
        raise EdgerobError(f"simulate_failures: unknown family {family!r}")
    t = np.exp(lp + sigma * w)
    if censored > 0:
        z = rng.standard_normal(n)
        lo, hi = float(np.log(t).min()) - 10, float(np.log(t).max()) + 10
        for _ in range(60):  # bisection on the censoring location
            mid = (lo + hi) / 2
            frac = np.mean(np.exp(mid + z) < t)
            lo, hi = (mid, hi) if frac > censored else (lo, mid)
        c = np.exp((lo + hi) / 2 + z)
    else:
        c = np.full(n, np.inf)
    dur = np.minimum(t, c)
    event = (t <= c).astype(int)
    per_query = 1e-3 * bs  # a notional time per query, only to fill queries
    queries = np.maximum(1, np.ceil(dur / per_query)).astype(int)
    sample = np.zeros(n, dtype=int)
    for i in range(len(cells)):
        m = which == i
        sample[m] = np.arange(m.sum())
    df = pd.DataFrame({"run_id": [f"sim-{x}" for x in tgt], "model": "sim-model",
                       "model_sha256": "0" * 64, "target": tgt, "precision": prec,
                       "batch_size": bs, "log2_batch_size": np.log2(bs), "attack": attack,
                       "eps": float(eps), "sample_id": sample, "queries": queries,
                       "budget_queries": np.maximum(queries, 1000), "duration_s": dur,
                       "energy_j": None, "event": event})
    df["duration"] = df["duration_s"]
    df.attrs.update(duration="time", unit="s", notes=[])
    return df
