"""AFT fitting: the families' closed forms, lifelines fitters with convergence retries, the
fit of each family with BIC over every estimated parameter, and the `FitResult`."""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from edgerob.analysis import cost
from edgerob.analysis.survival.fit_quality import _concordance, calibration
from edgerob.analysis.survival.design_matrix import (CATEGORICAL, DURATIONS, SPEC_COVARIATES,
                                                     Design, design)
from edgerob.analysis.survival.plots import plot
from edgerob.errors import EdgerobError

MAIN_FAMILIES = ("weibull", "lognormal", "loglogistic")
FAMILIES = MAIN_FAMILIES + ("exponential", "gengamma")
Z95 = 1.959963984540054

# lifelines parameter names: location (log-time scale, carries the covariates) and ancillary
_LOCATION = {"weibull": "lambda_", "lognormal": "mu_", "loglogistic": "alpha_",
             "exponential": "lambda_", "gengamma": "mu_"}
_ANCILLARY = {"weibull": ("rho_",), "lognormal": ("sigma_",), "loglogistic": ("beta_",),
              "exponential": (), "gengamma": ("sigma_", "lambda_")}
_RETRY_PENALIZER = 0.01
MIN_EVENTS = 5


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
            if c == "power_mode" and c not in row:  # the mode with most records of the target
                target = row.get("target", self.design.terms.get("target", {}).get(
                    "reference", self.design.constants.get("target")))
                row[c] = next((lv for lv in t["levels"] if lv.startswith(f"{target}/")),
                              t["reference"])
            elif t["kind"] == "categorical":
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
            score = cost.trash(float(tt), n, e)
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
