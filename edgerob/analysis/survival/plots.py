"""Plots of a fit: Kaplan-Meier curves with the fitted ones over them, and partial effects.

`result` is always a `fitting.FitResult` (not imported: `FitResult.write` calls `plot`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from edgerob.analysis.survival.fit_quality import _km
from edgerob.analysis.survival.design_matrix import _raw_covariates


def _grid(T: np.ndarray) -> tuple[np.ndarray, bool]:
    lo, hi = float(T.min()), float(T.max())
    log = hi / lo > 50
    return (np.geomspace(lo, hi, 200) if log else np.linspace(0, hi, 200)), log


def _marginal_survival(result, X: np.ndarray, grid: np.ndarray) -> np.ndarray:
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


def plot(result, out_dir) -> list[Path]:
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


def _baseline(result) -> dict:
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
