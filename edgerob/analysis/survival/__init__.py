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
medians, means, log-likelihood) uses the closed forms in `fitting`, so durations can be rescaled for
convergence and mapped back exactly, and the log-likelihood is the unpenalised one even when a
penalizer had to be used.

The parts: `records` (load_failures, cached_training, simulate_failures), `design_matrix`
(the design matrix), `fitting` (families, lifelines fits with retries, BIC, FitResult, fit_models),
`fit_quality` (concordance, ICI/E50 calibration, Kaplan-Meier) and `plots`.
"""

from edgerob.analysis.survival.design_matrix import (CATEGORICAL, COVARIATES,
                                                     DEFAULT_COVARIATES, DURATIONS, NUMERIC,
                                                     SPEC_COVARIATES, Design, design)
from edgerob.analysis.survival.fit_quality import calibration
from edgerob.analysis.survival.fitting import (FAMILIES, MAIN_FAMILIES, FamilyFit, FitResult,
                                               SurvivalFitter, fit_models, predict)
from edgerob.analysis.survival.plots import plot
from edgerob.analysis.survival.records import cached_training, load_failures, simulate_failures

__all__ = ["CATEGORICAL", "COVARIATES", "DEFAULT_COVARIATES", "DURATIONS", "FAMILIES",
           "MAIN_FAMILIES", "NUMERIC", "SPEC_COVARIATES", "Design", "FamilyFit", "FitResult",
           "SurvivalFitter", "cached_training", "calibration", "design", "fit_models",
           "load_failures", "plot", "predict", "simulate_failures"]
