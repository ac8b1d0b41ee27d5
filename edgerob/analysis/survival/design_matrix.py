"""The design matrix of an AFT fit: which covariates, their levels and reference, the
target specs joined from the catalog, and the columns dropped to keep it full rank."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from edgerob.catalog.targets import load_target
from edgerob.errors import EdgerobError

# --- what can be fitted ---------------------------------------------------------------------

DEFAULT_COVARIATES = ("precision", "target", "power_mode", "attack", "eps", "log2_batch_size")
CATEGORICAL = ("precision", "target", "power_mode", "attack", "model")
# A power mode is a mode of one target (MAXN of an Orin Nano is not MAXN of an AGX Orin): its
# levels are "TARGET/MODE", and a record whose mode was not recorded is "TARGET/unknown", a level
# of its own (which mode it ran in is not known, so it is pooled with none). With the target a
# covariate too, each target's modes are effects relative to one of its modes (the other is
# dropped as collinear, with a note). One level in the data: dropped as constant, as any other.
UNKNOWN_MODE = "unknown"
NUMERIC = ("eps", "log2_batch_size", "batch_size")
# joined from the target catalog (targets/NAME.yaml specs); peak_tops at the record's precision
SPEC_COVARIATES = ("tdp_w", "memory_bandwidth_gbs", "memory_gb", "peak_tops")
COVARIATES = CATEGORICAL + NUMERIC + SPEC_COVARIATES
DURATIONS = {"time": ("duration_s", "s"), "energy": ("energy_j", "J")}
PRECISION_ORDER = ("fp32", "fp16", "bf16", "int8")


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


def _catalog_targets(names) -> dict:
    out = {}
    for name in names:
        try:
            out[name] = load_target(name)
        except EdgerobError as e:
            raise EdgerobError(f"spec covariates need target {name!r} in the catalog: {e}") from None
    return out


def _mode_of(target: str, mode) -> str | None:
    """A record's plain mode label (None: not recorded) from a plain or qualified label."""
    if mode is None or isinstance(mode, float) and math.isnan(mode) or mode == UNKNOWN_MODE:
        return None
    mode = str(mode)
    return mode.split("/", 1)[1] if mode.startswith(f"{target}/") else mode


def _qualified_modes(frame: pd.DataFrame) -> np.ndarray:
    """power_mode levels "TARGET/MODE" ("TARGET/unknown" where not recorded)."""
    if "target" not in frame:
        raise EdgerobError("covariate 'power_mode' needs the target (a mode is a target's)")
    modes = frame["power_mode"] if "power_mode" in frame else [None] * len(frame)
    return np.array([f"{t}/{_mode_of(t, m) or UNKNOWN_MODE}"
                     for t, m in zip(frame["target"].astype(str), modes)], dtype=object)


def _raw_covariates(frame: pd.DataFrame, covariates) -> dict:
    """covariate -> numpy array (str for categorical, float for numeric) for each row."""
    out = {}
    specs = None
    for c in covariates:
        if c == "power_mode":
            out[c] = _qualified_modes(frame)
        elif c in CATEGORICAL:
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
                specs = _catalog_targets(sorted(set(frame["target"].astype(str))))
            vals = []
            modes = frame["power_mode"] if "power_mode" in frame else [None] * len(frame)
            for t, p, mode in zip(frame["target"].astype(str), frame.get(
                    "precision", pd.Series([None] * len(frame))).astype(str), modes):
                s = specs[t].specs_in(_mode_of(t, mode))  # the figures of the record's mode
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
