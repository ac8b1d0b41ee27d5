"""The device-configuration x workload matrix of log performance, and the methods that fill a cell.

Values are log "speeds" (log throughput, -log latency, -log energy): one orientation for every
workload, so a faster device is larger everywhere and one device effect fits all columns.

Methods (each fills held-out cells from the observed ones):
- `ratio`: y(d, w) = y(r, w) + the mean over shared workloads v of beta_wv (y(d, v) - y(r, v)),
  each v weighted by how alike it scales with w on the other devices (and more where v runs the
  same network as w), from the references r most consistent on those shared workloads (smallest
  spread), weighted by it. beta_wv is how much of a device gap on v shows on w: g_w / g_v, each
  g the slope of the workload on the devices' speeds over the devices that ran both, shrunk to 1
  (`workload_slopes`): a one-image latency (SingleStream) spreads the devices far less than
  throughput does (slope 0.2-0.6 on ResNet-50 Offline in MLPerf v2.1).
- `additive`, `rank1`, `rank2`: y = mu + a_d + b_w (+ u_d . v_w), alternating ridge least squares,
  only where a chain of known cells links the device and the workload (`linked`).
- `ratio+additive`: the mean of the two.
- `spec`: for a device with no results, its device effect a_d regressed on the catalog's peak TOPS
  and memory bandwidth across the devices that have results (`fit_loglinear`), plus b_w;
  `spec+neighbours` adds the residuals of the devices nearest on paper; `nearest` scales the
  device nearest in peak TOPS; `spec+nearest` the mean. Each configuration (MaxQ, GPU + DLA,
  x8) comes from the same configuration of other devices (`cold_fill`).

Cross-validation holds out (device, workload family) cells: every configuration of the device,
every version of the workload, as a buyer without the device would be; and, as a workload known
on only 1 or 2 devices would be, workloads cut down to that many. The method with the smallest
mean |log error| over the cells every method can predict is chosen (cold devices: each device
with a spec sheet held out whole); the interval is the chosen method's held-out |log error|
quantile (split-conformal) among held-out cells whose workload was known on as many devices
(1, 2, 3+) and whose row is of the same kind (plain or a configuration: Mondrian), so its
coverage is what was measured on this store's own cells like it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

WARM_METHODS = ("ratio", "additive", "rank1", "rank2", "ratio+additive")
N_REFERENCES = 3  # references averaged by the ratio method
RATIO_PRIOR = 0.3  # log spread assumed of a ratio seen on one shared workload only
WORKLOAD_PRIOR = 0.3  # log spread assumed of two workloads' ratio seen on one device only
# A workload of the same network (another MLPerf scenario; one's model at another precision or
# batch size) counts this many times as much: it is a priori alike, which matters most where the
# workload is known on few devices and its likeness to others is seen on those few only (with
# the slopes below rescaling its gaps). bench_predict (b), k = 2, plain rows, median:
# 0.133 at 3, 0.126 at 5, 0.119 at 8, 0.118 at 12; k = 1 0.192 at 3, 0.198 at 8; warm unchanged.
SAME_NETWORK_WEIGHT = 8.0
# Shrinkage of a workload's slope on device speed to 1 (`workload_slopes`), in squared log
# device speed: 3 devices a factor e from the mean. Set on bench_predict (3 / 10 gave warm p90
# 0.231 / 0.239 with a same-network weight of 3), see the README.
SLOPE_PRIOR = 3.0
RIDGE = 1.0  # on the low-rank factors (biases get RIDGE / 100): a few cells per row is common
ALS_ITERATIONS = 60
FOLDS = 10


@dataclass
class Matrix:
    """rows: device configurations, with `groups` the device each belongs to (held out together);
    cols: workloads, with `families` the workload regardless of version (held out together);
    y: log speed, nan where unknown."""

    rows: list[str]
    groups: list[str]
    cols: list[str]
    families: list[str]
    y: np.ndarray
    networks: list[str] | None = None  # per column: the network it runs, where known

    @property
    def plain(self) -> np.ndarray:
        """Per row: whether it is its device's plain configuration (`configuration` "": no
        MaxQ, DLA, Triton, MIG, xN or power mode of its own)."""
        return np.array([configuration(self, i) == "" for i in range(len(self.rows))], bool)

    def masked(self, cells: np.ndarray) -> Matrix:
        """The same matrix with `cells` unknown."""
        return Matrix(self.rows, self.groups, self.cols, self.families,
                      np.where(cells, np.nan, self.y), self.networks)

    def held_mask(self, group: str, family: str) -> np.ndarray:
        return (np.array(self.groups)[:, None] == group) & (np.array(self.families)[None, :]
                                                            == family)


# --- the methods ---------------------------------------------------------------------------------

def ratio_predict(y: np.ndarray, i: int, j: int, networks: list[str] | None = None,
                  speed: np.ndarray | None = None) -> tuple[float, list[dict]]:
    """Cell (i, j) from the rows that have column j; nan and no references where none shares a
    column with row i. A reference's log ratio to row i is the mean over the workloads both
    share, each weighted by how alike it scales with workload j across the other rows
    (`workload_weights`: item-item similarity, so BERT Server leans on BERT Offline more than
    on ResNet-50; `networks`: each column's network, see `workload_weights`), each first
    scaled to workload j (`workload_slopes`: a device gap shrinks on a latency workload;
    `speed`: the rows' `device_speeds`, computed from `y` where not given).
    References: {"row", "log_ratio", "shared", "spread"}."""
    gap = y[i][None, :] - y  # log ratios of row i to every row, per workload
    gap[:, j] = np.nan
    shared = (~np.isnan(gap)).sum(1)
    ok = ~np.isnan(y[:, j]) & (shared > 0)
    ok[i] = False
    rows = np.flatnonzero(ok)
    if not len(rows):
        return float("nan"), []
    wr = np.where(np.isnan(gap[rows]), 0.0, workload_weights(y, i, j, networks)[None, :])
    slope = workload_slopes(y, j, device_speeds(y) if speed is None else speed)
    d = np.nan_to_num(gap[rows] * slope[None, :])
    mean = (wr * d).sum(1) / wr.sum(1)
    var = (wr * (d - mean[:, None]) ** 2).sum(1) / wr.sum(1)
    n = shared[rows]
    spread = np.sqrt((n * var + RATIO_PRIOR ** 2) / n)
    cands = [{"row": int(r), "log_ratio": float(m), "shared": int(k), "spread": float(s)}
             for r, m, k, s in zip(rows, mean, n, spread)]
    refs = sorted(cands, key=lambda c: (c["spread"], -c["shared"], c["row"]))[:N_REFERENCES]
    wt = np.array([1 / c["spread"] ** 2 for c in refs])
    vals = np.array([y[c["row"], j] + c["log_ratio"] for c in refs])
    return float(wt @ vals / wt.sum()), refs


def workload_weights(y: np.ndarray, i: int, j: int,
                     networks: list[str] | None = None) -> np.ndarray:
    """Per workload v, 1 / the mean squared spread of y(., j) - y(., v) over the rows other than
    i that have both, shrunk by WORKLOAD_PRIOR (a pair seen on few rows is not trusted to be
    alike), times SAME_NETWORK_WEIGHT where v runs j's network (`networks` given); 0 for j
    itself."""
    diff = y[:, [j]] - y
    diff[i] = np.nan
    n = (~np.isnan(diff)).sum(0)
    centred = diff - np.nanmean(np.where(n[None, :] > 0, diff, 0.0), axis=0)[None, :]
    w = np.maximum(n, 1) / (np.nansum(centred ** 2, axis=0) + WORKLOAD_PRIOR ** 2)
    if networks is not None:
        w *= np.where(np.array(networks) == networks[j], SAME_NETWORK_WEIGHT, 1.0)
    w[j] = 0.0
    return w


def device_speeds(y: np.ndarray) -> np.ndarray:
    """Each row's additive effect (log speed over all its workloads), unshrunk: exact on an
    additive matrix."""
    return fit_lowrank(y, 0, bias_ridge=0.0).a


def workload_slopes(y: np.ndarray, j: int, speed: np.ndarray) -> np.ndarray:
    """Per workload v, how a device gap on v shows on workload j: g_j / g_v, each g the slope of
    the workload on the devices' `speed` over the rows that ran both j and v, shrunk to 1 by
    SLOPE_PRIOR ((Sxy + prior) / (Sxx + prior): a pair seen on few devices keeps about 1) and
    floored at 0.05 (no division by a workload that speed does not move)."""
    both = ~np.isnan(y) & ~np.isnan(y[:, [j]])
    n = np.maximum(both.sum(0), 1)
    s = np.broadcast_to(speed[:, None], y.shape)
    c = np.where(both, s - np.where(both, s, 0.0).sum(0) / n, 0.0)  # centred on the pair's rows
    sxx = (c ** 2).sum(0) + SLOPE_PRIOR
    g_v = np.maximum((c * np.nan_to_num(y)).sum(0) + SLOPE_PRIOR, 0.05 * sxx)
    g_j = np.maximum((c * np.nan_to_num(y[:, [j]])).sum(0) + SLOPE_PRIOR, 0.05 * sxx)
    return g_j / g_v


@dataclass
class LowRank:
    mu: float
    a: np.ndarray
    b: np.ndarray
    u: np.ndarray
    v: np.ndarray

    def full(self) -> np.ndarray:
        return self.mu + self.a[:, None] + self.b[None, :] + self.u @ self.v.T


def fit_lowrank(y: np.ndarray, rank: int, seed: int = 0,
                bias_ridge: float = RIDGE / 100) -> LowRank:
    """log y = mu + a_d + b_w + u_d . v_w on the observed cells, by alternating ridge least
    squares (seeded start: the result is deterministic); `bias_ridge` 0 leaves a and b unshrunk
    (a row or column with no cells keeps 0)."""
    m = ~np.isnan(y)
    z = np.where(m, y, 0.0)
    n_r, n_c = y.shape
    mu = float(z.sum() / m.sum()) if m.any() else 0.0  # nothing known: no effects either
    a, b = np.zeros(n_r), np.zeros(n_c)
    rng = np.random.default_rng(seed)
    u, v = 0.1 * rng.standard_normal((n_r, rank)), 0.1 * rng.standard_normal((n_c, rank))
    eye = np.eye(rank)
    den_a, den_b = (m.sum(1) + bias_ridge, m.sum(0) + bias_ridge) if bias_ridge else (
        np.maximum(m.sum(1), 1), np.maximum(m.sum(0), 1))
    for _ in range(ALS_ITERATIONS):
        a = (m * (z - mu - b[None, :] - u @ v.T)).sum(1) / den_a
        b = (m * (z - mu - a[:, None] - u @ v.T)).sum(0) / den_b
        if rank:
            r = m * (z - mu - a[:, None] - b[None, :])
            u = np.linalg.solve(np.einsum("ij,jk,jl->ikl", m, v, v) + RIDGE * eye,
                                (r @ v)[..., None])[..., 0]
            v = np.linalg.solve(np.einsum("ij,ik,il->jkl", m, u, u) + RIDGE * eye,
                                (r.T @ u)[..., None])[..., 0]
    return LowRank(mu, a, b, u, v)


def fill(y: np.ndarray, cells: np.ndarray, method: str,
         networks: list[str] | None = None) -> tuple[np.ndarray, dict]:
    """Estimates of `cells` (a boolean mask, hidden from the fit) by `method`; nan where the
    method cannot say. Also {cell: ratio references} for the ratio methods (`networks`: each
    column's network, for their workload weights)."""
    train = np.where(cells, np.nan, y)
    out = np.full(y.shape, np.nan)
    refs: dict = {}
    idx = list(zip(*np.nonzero(cells)))
    if method in ("ratio", "ratio+additive"):
        speed = device_speeds(train)
        for i, j in idx:
            out[i, j], refs[(i, j)] = ratio_predict(train, i, j, networks, speed)
    if method != "ratio":
        rank = {"rank1": 1, "rank2": 2}.get(method, 0)
        full = fit_lowrank(train, rank).full()
        # a device's effect and a workload's are comparable only where a chain of shared
        # results links them (a row with no cells, or a column run only by devices that ran
        # nothing else the device ran, would take whatever the ridge left)
        est = np.where(cells & linked(train), full, np.nan)
        out = est if method != "ratio+additive" else (out + est) / 2
    return out, refs


def linked(y: np.ndarray) -> np.ndarray:
    """Per cell: whether its row and column are joined through known cells (one connected
    component of the bipartite graph rows - known cells - columns)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n_r, n_c = y.shape
    r, c = np.nonzero(~np.isnan(y))
    graph = coo_matrix((np.ones(len(r)), (r, n_r + c)), shape=(n_r + n_c,) * 2)
    label = connected_components(graph, directed=False)[1]
    has = ~np.isnan(y)
    return ((label[:n_r, None] == label[None, n_r:])
            & has.any(1)[:, None] & has.any(0)[None, :])


# --- cross-validation and intervals --------------------------------------------------------------

SUPPORT_GROUPS = (1, 2, 3)  # devices that share the cell's workload: 1, 2, 3 or more
THIN_FOLDS = 2  # per thin support: folds that keep a workload on only that many devices


def support(train: np.ndarray, groups: list[str]) -> np.ndarray:
    """Per column: the devices with a training result there (what a prediction of the column
    leans on: a workload known on one device gives one reference)."""
    g = np.array(groups)
    return np.array([len(set(g[~np.isnan(train[:, j])])) for j in range(train.shape[1])])


@dataclass
class Validation:
    """Held-out log errors (prediction - truth) per method, on the cells every method predicts,
    each cell's support (devices sharing its workload in that fold's training cells) and whether
    its row is a device's plain configuration (no MaxQ, DLA, Triton, MIG or xN)."""

    errors: dict[str, np.ndarray]
    chosen: str
    cells: int
    scores: dict[str, float] = field(default_factory=dict)  # mean |log error|
    supports: np.ndarray = field(default_factory=lambda: np.array([], int))
    plain: np.ndarray = field(default_factory=lambda: np.array([], bool))

    def half_width(self, level: float, support: int | None = None,
                   plain: bool | None = None) -> float:
        """Split-conformal: the ceil((n+1) level)-th smallest held-out |log error| among the
        held-out cells like the one predicted (Mondrian), the first group with enough cells of:
        the same support and row kind (`plain`, where given), the same support, then that
        support and every thinner one (a thin workload's errors are larger, and a plain row's
        than a configuration's that other devices ran alike: pooling them would undercover);
        without `support` (a cold device), the cells of the same row kind, else all."""
        e = np.abs(self.errors[self.chosen])
        pools = []
        if support is not None and len(self.supports) == len(e):
            s = min(support, SUPPORT_GROUPS[-1])
            pools = [self.supports == s, self.supports <= s]
        if plain is not None and len(self.plain) == len(e):
            pools.insert(0, (pools[0] if pools else True) & (self.plain == plain))
        for pool in pools:
            last = support is not None and pool is pools[-1]  # thinner cells, never thicker
            if _rank(pool.sum(), level) <= pool.sum() or last and pool.any():
                e = e[pool]
                break
        e = np.sort(e)
        k = _rank(len(e), level)
        return float("inf") if k > len(e) else float(e[k - 1])

    def why(self) -> str:
        rest = ", ".join(f"{m} {s:.3f}" for m, s in sorted(self.scores.items(),
                                                          key=lambda kv: kv[1])
                         if m != self.chosen)
        return (f"{self.chosen}: smallest mean |log error| ({self.scores[self.chosen]:.3f}) over "
                f"{self.cells} held-out (device, workload) cells; {rest}")


def _rank(n: int, level: float) -> int:
    return math.ceil((n + 1) * level)


def _folds(mat: Matrix, seed: int) -> list[tuple[np.ndarray, np.ndarray, bool]]:
    """(hidden, scored, thin) masks. Random folds of (device, workload family) pairs, shuffled
    (seeded); then thin folds, as a workload known on few devices is predicted: for a seeded
    share of the families, one version column keeps only k devices (k = 1, 2), the rest of the
    family is hidden, and that column's other devices are scored."""
    have = ~np.isnan(mat.y)
    pairs = sorted({(mat.groups[i], mat.families[j]) for i, j in zip(*np.nonzero(have))})
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(pairs))
    n = min(FOLDS, len(pairs))
    masks = [np.zeros(mat.y.shape, bool) for _ in range(n)]
    for k, p in enumerate(order):
        masks[k % n] |= mat.held_mask(*pairs[p]) & have
    out = [(m, m, False) for m in masks]
    groups, fams = np.array(mat.groups), np.array(mat.families)
    for k in SUPPORT_GROUPS[:-1]:
        cols = [j for j in range(len(mat.cols)) if len(set(groups[have[:, j]])) >= k + 2]
        picked = {}  # a family's column: one version per family
        for j in rng.permutation(cols):
            picked.setdefault(fams[j], int(j))
        chosen = list(picked.values())
        for f in range(THIN_FOLDS):
            hide, score = np.zeros_like(have), np.zeros_like(have)
            for j in chosen[f::THIN_FOLDS * 2]:  # a quarter of the families per fold
                keep = rng.choice(sorted(set(groups[have[:, j]])), k, replace=False)
                fam = (fams == fams[j])[None, :] & have
                hide |= fam & ~(np.isin(groups, keep)[:, None] & (np.arange(len(fams)) == j))
                score[:, j] |= have[:, j] & ~np.isin(groups, keep)
            if score.any():
                out.append((hide, score, True))
    return out


def cross_validate(mat: Matrix, methods=WARM_METHODS, seed: int = 0) -> Validation:
    """Every method on the same folds (`_folds`). A scored cell counts where every method
    predicts it (its device keeps other results: warm). The method is chosen on the random
    folds (the cells a prediction usually faces); the thin folds' cells only calibrate the
    intervals of thin workloads (their support is recorded)."""
    errs = {m: [] for m in methods}
    sup, regular, plain = [], [], []
    rows_plain = mat.plain
    for held, scored, thin in _folds(mat, seed):
        est = {m: fill(mat.y, held, m, mat.networks)[0] for m in methods}
        ok = scored & np.all([np.isfinite(e) for e in est.values()], axis=0)
        for m in methods:
            errs[m].append((est[m] - mat.y)[ok])
        s = np.minimum(support(np.where(held, np.nan, mat.y), mat.groups), SUPPORT_GROUPS[-1])
        sup.append(np.broadcast_to(s[None, :], ok.shape)[ok])
        regular.append(np.full(ok.sum(), not thin))
        plain.append(np.broadcast_to(rows_plain[:, None], ok.shape)[ok])
    errors = {m: np.concatenate(e) for m, e in errs.items()}
    regular = np.concatenate(regular)
    n = int(regular.sum())
    if n == 0:
        return Validation(errors, methods[0], 0, {m: float("nan") for m in methods})
    scores = {m: float(np.mean(np.abs(e[regular]))) for m, e in errors.items()}
    return Validation(errors, min(methods, key=lambda m: (scores[m], methods.index(m))), n,
                      scores, np.concatenate(sup), np.concatenate(plain))


# --- devices with no results --------------------------------------------------------------------

COLD_METHODS = ("spec", "spec+neighbours", "spec+nearest", "nearest")
N_NEIGHBOURS = 2


def spec_effect(a: dict[str, float], specs: dict[str, dict], cold: str) -> float | None:
    """A cold device's effect from the warm devices' effects `a` (log speed) regressed on their
    spec sheets, covariates chosen by leave-one-device-out (`fit_loglinear`; speed proportional
    to peak TOPS is one of the candidate laws). None where fewer than 2 devices have specs (one
    fitted scale, checked on the other device)."""
    from edgerob.analysis.predict.spec import LATENCY_COVARIATES, fit_loglinear

    names = sorted(d for d in a if _specs_ok(specs.get(d)))
    if len(names) < 2 or not _specs_ok(specs.get(cold)):
        return None
    fit = fit_loglinear([math.exp(a[d]) for d in names], [specs[d] for d in names],
                        LATENCY_COVARIATES, specs[cold], proportional={"peak_tops": 1.0})
    return math.log(fit.predict(specs[cold], 0.9)[0])


def _specs_ok(s) -> bool:
    return bool(s) and all((s.get(c) or 0) > 0 for c in ("peak_tops", "memory_bandwidth_gbs"))


def configuration(mat: Matrix, i: int) -> str:
    """Row i's configuration without its device: "(MaxQ, GPU, x8)", or "" for the default."""
    return mat.rows[i][len(mat.groups[i]):].strip()


def cold_fill(mat: Matrix, held: np.ndarray, cold: str, specs: dict, method: str):
    """Estimates of `held` for device `cold` with none of its cells known, each configuration
    from the same configuration of other devices (MaxQ from MaxQ, GPU + DLA from GPU + DLA,
    per-accelerator x8 from x8): a configuration's effect is the median, over the devices that
    ran it, of its gap to the device's best configuration, and a reference in another
    configuration is corrected by the two effects. `spec` is mu + (the spec-regressed effect of
    the device's best configuration) + the configuration's effect + b_w; `spec+neighbours` adds,
    per workload, the mean residual of that model on the N_NEIGHBOURS devices nearest in log
    peak TOPS and log memory bandwidth that have the workload (devices alike on paper deviate
    alike); `nearest` is the device nearest in peak TOPS with the workload (in the same
    configuration where one has it), scaled by the TOPS ratio; `spec+nearest` the mean of
    `spec` and `nearest`. A row of a power mode other than its device's peak figures'
    (`TARGET (MODE)`) counts with its figures scaled to the mode (specs keyed by the row).
    None where the spec sheets cannot say."""
    train = np.where(held, np.nan, mat.y)
    if np.isnan(train).all() or not _specs_ok(specs.get(cold)):
        return None
    k = 2 if method == "spec+neighbours" else 1  # TOPS and bandwidth, or TOPS alone
    dist = np.array([np.linalg.norm((_log_specs(specs[cold]) - _log_specs(specs[g]))[:k])
                     if _specs_ok(specs.get(g)) else np.inf for g in mat.groups])
    order = [r for r in np.argsort(dist, kind="stable") if np.isfinite(dist[r])]
    cfg = [configuration(mat, i) for i in range(len(mat.rows))]
    lr = fit_lowrank(train, 0)
    warm = np.flatnonzero(~np.isnan(train).all(1))
    # a row in another power mode than its device's peak figures (`TARGET (MODE)`), brought to
    # them by its spec figures (scaled to the mode), as `nearest` scales by its TOPS
    shift = [math.log(_row_spec(specs, mat, i)["peak_tops"] / specs[g]["peak_tops"])
             if _specs_ok(specs.get(g)) and _specs_ok(_row_spec(specs, mat, i)) else 0.0
             for i, g in enumerate(mat.groups)]
    best: dict[str, float] = {}  # a device's effect: its best configuration's
    for i in warm:
        best[mat.groups[i]] = max(best.get(mat.groups[i], -math.inf), lr.a[i] - shift[i])
    gaps: dict[str, list[float]] = {}
    for i in warm:
        gaps.setdefault(cfg[i], []).append(lr.a[i] - shift[i] - best[mat.groups[i]])
    effect = {c: float(np.median(v)) for c, v in gaps.items()}
    eff = spec_effect(best, specs, cold) if method != "nearest" else 0.0
    if eff is None:
        return None
    resid = train - lr.full()  # the spec model's misses, for spec+neighbours
    est = np.full(mat.y.shape, np.nan)
    for i, j in zip(*np.nonzero(held)):
        refs = [r for r in order if not np.isnan(train[r, j])]
        if not refs:
            continue
        same = [r for r in refs if cfg[r] == cfg[i]]
        r = (same or refs)[0]
        nearest = (train[r, j] + math.log(specs[cold]["peak_tops"]
                                          / _row_spec(specs, mat, r)["peak_tops"])
                   + effect.get(cfg[i], 0.0) - effect.get(cfg[r], 0.0))
        spec = lr.mu + eff + effect.get(cfg[i], 0.0) + lr.b[j]
        if method == "spec+neighbours":
            near = (same + [r for r in refs if r not in same])[:N_NEIGHBOURS]
            spec += float(np.mean(resid[near, j]))
        est[i, j] = {"nearest": nearest, "spec+nearest": (spec + nearest) / 2}.get(method, spec)
    return est


def _row_spec(specs: dict, mat: Matrix, i: int) -> dict | None:
    """Row i's spec figures: its own (a configuration in another power mode) or its device's."""
    return specs.get(mat.rows[i]) or specs.get(mat.groups[i])


def _log_specs(s: dict) -> np.ndarray:
    return np.log([s["peak_tops"], s["memory_bandwidth_gbs"]])


def cold_validate(mat: Matrix, specs: dict) -> Validation:
    """Each device with a spec sheet held out whole (every cell), each cold method's log errors on
    the cells every method predicts."""
    errs = {m: [] for m in COLD_METHODS}
    plain = []
    rows_plain = mat.plain
    for g in sorted(set(mat.groups)):
        held = (np.array(mat.groups) == g)[:, None] & ~np.isnan(mat.y)
        if not held.any() or not _specs_ok(specs.get(g)):
            continue
        est = {m: cold_fill(mat, held, g, specs, m) for m in COLD_METHODS}
        if all(e is not None for e in est.values()):
            ok = held & np.all([np.isfinite(e) for e in est.values()], axis=0)
            for m in COLD_METHODS:
                errs[m].append((est[m] - mat.y)[ok])
            plain.append(np.broadcast_to(rows_plain[:, None], ok.shape)[ok])
    errors = {m: np.concatenate(e) if e else np.array([]) for m, e in errs.items()}
    n = len(errors[COLD_METHODS[0]])
    if n == 0:
        return Validation(errors, COLD_METHODS[0], 0, {})
    scores = {m: float(np.mean(np.abs(e))) for m, e in errors.items()}
    return Validation(errors, min(COLD_METHODS, key=lambda m: (scores[m], COLD_METHODS.index(m))),
                      n, scores, plain=np.concatenate(plain))
