"""NTK-based architecture scores: rank ResNet depths/widths for robustness before training.

Wu et al. (ICLR 2024, NAS-RobBench-201) found that scores from the empirical neural tangent
kernel (NTK) at initialisation, computed on adversarial inputs, track robust accuracy after
adversarial training better than the standard (clean) NTK. This module computes such scores for
edgerob's ResNets and checks them against measured truth on a small budget (`validate`).

Conventions (stated once, used everywhere):
- `empirical_ntk(model, x)` is Theta = J J^T with J the (N, P) Jacobian of a scalar output per
  sample with respect to all P trainable parameters. `output="sum"` (default) differentiates the
  sum of the logits, f(x) = sum_k f_k(x) (one backward pass per sample; Theta then includes the
  cross-logit terms, Theta = sum_{k,l} J_k J_l^T); `output="mean"` is the per-logit averaged
  NTK, Theta = (1/K) sum_k J_k J_k^T (K times the Jacobian cost).
- The model is put in eval mode, so BatchNorm uses its running statistics. At initialisation
  those are mean 0 / var 1 (BN is then an affine identity up to 1/sqrt(1 + bn_eps)); this keeps
  the kernel a function of each input alone (no batch coupling) and deterministic, at the price
  of not normalising the activations as train-mode BN would. Buffers are not differentiated.
- The kernel is computed in float64 by default (`dtype`), so eigenvalues near 0 are meaningful.
- Adversarial inputs are L-inf PGD on the initialised network in eval mode (the true labels,
  cross-entropy, random start from a seeded generator, alpha = 2.5 * eps / steps).
"""

from __future__ import annotations

import copy
import math
import time
from typing import Iterable, Sequence

import numpy as np
import torch
from torch import nn
from torch.func import functional_call, jacrev, vmap

from edgerob.errors import EdgerobError
from edgerob.host.data import load_dataset
from edgerob.host.models import ResNet, parse_arch
from edgerob.host.train import TrainConfig, pgd, train

OUTPUTS = ("sum", "mean")
SCORE_NAMES = ("min_eig", "max_eig", "cond", "trace", "logdet")
METRICS = ("std_clean", "std_robust", "adv_clean", "adv_robust")


# --- the kernel ----------------------------------------------------------------------------------

def empirical_ntk(model: nn.Module, x: torch.Tensor, output: str = "sum",
                  dtype: torch.dtype | None = torch.float64, chunk_size: int | None = 8,
                  method: str = "vmap") -> torch.Tensor:
    """The (N, N) empirical NTK of `model` on the N inputs `x` (see the module docstring).

    `method="vmap"` uses torch.func (vmap over jacrev of functional_call), `"loop"` explicit
    per-sample autograd gradients (a reference; fine for small N). `dtype`: compute in this
    precision on a copy of the model (None: the model's own). The model's mode is restored."""
    if output not in OUTPUTS:
        raise EdgerobError(f"unknown NTK output {output!r}; choose {' or '.join(OUTPUTS)}")
    if method not in ("vmap", "loop"):
        raise EdgerobError(f"unknown NTK method {method!r}; choose vmap or loop")
    if x.ndim < 2 or len(x) == 0:
        raise EdgerobError("empirical_ntk needs a non-empty batch (N, ...) of inputs")
    was_training = model.training
    net = model
    if dtype is not None and any(p.dtype != dtype for p in model.parameters()):
        net = copy.deepcopy(model).to(dtype)
    net.eval()
    x = x.detach().to(dtype or next(net.parameters()).dtype)
    try:
        jac = _jacobian_vmap(net, x, output, chunk_size) if method == "vmap" else \
            _jacobian_loop(net, x, output)
    finally:
        model.train(was_training)
    # jac: (N, K', P) with K' = 1 ("sum") or K ("mean")
    theta = torch.einsum("ikp,jkp->ij", jac, jac)
    if output == "mean":
        theta = theta / jac.shape[1]
    return 0.5 * (theta + theta.T)  # exactly symmetric


def _scalarise(logits: torch.Tensor, output: str) -> torch.Tensor:
    """Per-sample outputs to differentiate: (1,) for "sum", (K,) for "mean"."""
    logits = logits.reshape(-1)
    return logits.sum().reshape(1) if output == "sum" else logits


def _jacobian_vmap(net: nn.Module, x: torch.Tensor, output: str,
                   chunk_size: int | None) -> torch.Tensor:
    params = {k: v.detach() for k, v in net.named_parameters() if v.requires_grad}
    buffers = {k: v.detach() for k, v in net.named_buffers()}

    def f(p, xi):
        return _scalarise(functional_call(net, (p, buffers), (xi.unsqueeze(0),)), output)

    jac = vmap(jacrev(f), in_dims=(None, 0), chunk_size=chunk_size)(params, x)
    n = len(x)
    return torch.cat([j.reshape(n, j.shape[1], -1) for j in jac.values()], dim=2)


def _jacobian_loop(net: nn.Module, x: torch.Tensor, output: str) -> torch.Tensor:
    params = [p for p in net.parameters() if p.requires_grad]
    rows = []
    for xi in x:
        outs = _scalarise(net(xi.unsqueeze(0)), output)
        per_out = []
        for k in range(len(outs)):
            grads = torch.autograd.grad(outs[k], params, retain_graph=k + 1 < len(outs),
                                        allow_unused=True)
            per_out.append(torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1)
                                      for g, p in zip(grads, params)]))
        rows.append(torch.stack(per_out))
    return torch.stack(rows)


def scores(theta: torch.Tensor) -> dict:
    """Spectral scores of a symmetric PSD kernel: min/max eigenvalue, condition number
    (max/min; inf when min <= 0), trace and log-determinant (-inf when not positive definite).
    Eigenvalues in float64 (`torch.linalg.eigvalsh`)."""
    theta = torch.as_tensor(theta, dtype=torch.float64)
    if theta.ndim != 2 or theta.shape[0] != theta.shape[1] or theta.shape[0] == 0:
        raise EdgerobError(f"scores needs a non-empty square matrix, got shape "
                           f"{tuple(theta.shape)}")
    eig = torch.linalg.eigvalsh(0.5 * (theta + theta.T))
    lo, hi = float(eig[0]), float(eig[-1])
    return {"min_eig": lo, "max_eig": hi,
            "cond": hi / lo if lo > 0 else math.inf,
            "trace": float(torch.trace(theta)),
            "logdet": float(torch.log(eig).sum()) if lo > 0 else -math.inf}


# --- scores of architectures at initialisation ----------------------------------------------------

def _init_model(depth: int, width: int, data, seed: int) -> nn.Module:
    parse_arch(f"resnet{depth}")
    if width < 1:
        raise EdgerobError(f"width must be at least 1, got {width}")
    c, h, _ = data.input_shape
    torch.manual_seed(seed)  # the same initialisation edgerob.host.train gives for this seed
    return ResNet(depth, width, c, data.num_classes, h, data.mean, data.std).eval()


def _batch(data, batch: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    if batch < 2:
        raise EdgerobError(f"batch must be at least 2 (a kernel needs pairs), got {batch}")
    rng = np.random.default_rng(seed)
    idx = np.sort(rng.choice(len(data.x_train), size=min(batch, len(data.x_train)),
                             replace=False))
    return torch.from_numpy(data.x_train[idx]), torch.from_numpy(data.y_train[idx])


def arch_scores(archs: Sequence[tuple[int, int]] = ((8, 4), (14, 4), (20, 4)),
                dataset: str = "digits", batch: int = 32, seed: int = 0, eps: float = 0.1,
                attack_steps: int = 3, output: str = "sum", data=None,
                data_root: str | None = None) -> list[dict]:
    """For each (depth, width): the ResNet at initialisation (torch seed `seed`, as
    `edgerob.host.train` would initialise it), the NTK on a seeded batch of `batch` training images
    and on PGD-`attack_steps` adversarial versions of it at `eps` (crafted on that initialised
    network), the scores of both, and the seconds each took (the adversarial time includes the
    attack). Deterministic for a seed on a given machine."""
    if not archs:
        raise EdgerobError("arch_scores needs at least one (depth, width)")
    if not (isinstance(eps, (int, float)) and 0 < eps <= 1):
        raise EdgerobError(f"eps must be in (0, 1], got {eps}")
    if attack_steps < 1:
        raise EdgerobError(f"attack_steps must be at least 1, got {attack_steps}")
    data = data or load_dataset(dataset, data_root)
    x, y = _batch(data, batch, seed)
    rows = []
    for depth, width in archs:
        model = _init_model(int(depth), int(width), data, seed)
        params = sum(p.numel() for p in model.parameters())
        t0 = time.perf_counter()
        clean = scores(empirical_ntk(model, x, output))
        t_clean = time.perf_counter() - t0
        t0 = time.perf_counter()
        gen = torch.Generator().manual_seed(seed)
        x_adv = pgd(model, x, y, eps, 2.5 * eps / attack_steps, attack_steps, gen)
        adv = scores(empirical_ntk(model, x_adv, output))
        t_adv = time.perf_counter() - t0
        rows.append({"arch": f"resnet{depth}", "depth": int(depth), "width": int(width),
                     "parameters": params, "batch": len(x), "output": output, "seed": seed,
                     "eps": eps, "attack_steps": attack_steps,
                     "clean": clean, "adv": adv, "clean_s": t_clean, "adv_s": t_adv})
    return rows


# --- validation against measured truth ------------------------------------------------------------

def score_keys() -> list[str]:
    """Flat names of every score: clean_min_eig, ..., adv_logdet."""
    return [f"{kind}_{name}" for kind in ("clean", "adv") for name in SCORE_NAMES]


def _flat(row: dict) -> dict:
    return {f"{kind}_{name}": row[kind][name] for kind in ("clean", "adv")
            for name in SCORE_NAMES}


def rank_correlation(scores_: Sequence[float], truth: Sequence[float], n_boot: int = 1000,
                     seed: int = 0, level: float = 0.95) -> dict:
    """Spearman rho and Kendall tau (scipy.stats) with percentile bootstrap intervals: the
    architectures are resampled with replacement (seeded); resamples where a correlation is
    undefined (constant values) are dropped, and `boot_used` says how many remained.
    Infinite scores rank above every finite one (ranks are all that matter)."""
    from scipy.stats import kendalltau, spearmanr

    s = np.asarray([_rankable(v) for v in scores_], dtype=float)
    t = np.asarray(truth, dtype=float)
    if len(s) != len(t):
        raise EdgerobError("scores and truth must have the same length")
    out = {"n": len(s)}
    rng = np.random.default_rng(seed)
    draws = [rng.integers(0, len(s), len(s)) for _ in range(n_boot)]
    for name, fn in (("spearman", spearmanr), ("kendall", kendalltau)):
        est = _corr(fn, s, t)
        boots = [c for c in (_corr(fn, s[i], t[i]) for i in draws) if c is not None]
        lo, hi = ((float(np.quantile(boots, (1 - level) / 2)),
                   float(np.quantile(boots, 1 - (1 - level) / 2))) if boots else (None, None))
        out[name] = est
        out[f"{name}_lo"], out[f"{name}_hi"] = lo, hi
        out[f"{name}_boot_used"] = len(boots)
    out["level"] = level
    return out


def _rankable(v: float) -> float:
    if v == math.inf:
        return 1e308
    if v == -math.inf:
        return -1e308
    return float(v)


def _corr(fn, a: np.ndarray, b: np.ndarray) -> float | None:
    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    r = fn(a, b)[0]
    return None if not np.isfinite(r) else float(r)


def validate(archs: Sequence[tuple[int, int]], epochs: int = 3, eps: float = 0.1,
             adversarial: str = "fgsm-rs", robust_eval_samples: int = 200, dataset: str = "digits",
             batch: int = 32, seed: int = 0, attack_steps: int = 3, output: str = "sum",
             n_boot: int = 1000, data_root: str | None = None, on_arch=None) -> dict:
    """Score each architecture (`arch_scores`), then train it standard and adversarially
    (`adversarial` = "fgsm-rs" or "pgd") for `epochs` at `eps` with `edgerob.host.train.train`,
    measure clean and PGD robust accuracy (`robust_eval_samples` test images), and report each
    score's Spearman/Kendall correlation (bootstrap intervals) with each measured metric:
    std_clean, std_robust (standard training) and adv_clean, adv_robust (adversarial training).
    `compute` compares the seconds spent scoring with the seconds spent training (wall time of
    `train`, which includes its test and robust evaluation, and the card's train_time_s)."""
    if len(archs) < 3:
        raise EdgerobError("validate needs at least 3 architectures to rank")
    data = load_dataset(dataset, data_root)
    rows = arch_scores(archs, dataset, batch, seed, eps, attack_steps, output, data=data)
    for row in rows:
        for kind, adv in (("std", None), ("adv", adversarial)):
            cfg = TrainConfig(arch=row["arch"], width=row["width"], dataset=dataset,
                              data_root=data_root, epochs=epochs, seed=seed, adversarial=adv,
                              eps=eps, robust_eval_samples=robust_eval_samples)
            t0 = time.perf_counter()
            _, card = train(cfg, dataset=data)
            row[f"{kind}_wall_s"] = time.perf_counter() - t0
            row[f"{kind}_train_s"] = card.train_time_s
            row[f"{kind}_clean"] = card.accuracy
            row[f"{kind}_robust"] = card.robust_accuracy
        if on_arch:
            on_arch(row)
    correlations = {key: {m: rank_correlation([_flat(r)[key] for r in rows],
                                              [r[m] for r in rows], n_boot, seed)
                          for m in METRICS} for key in score_keys()}
    score_s = sum(r["clean_s"] + r["adv_s"] for r in rows)
    train_wall = sum(r["std_wall_s"] + r["adv_wall_s"] for r in rows)
    train_s = sum((r["std_train_s"] or 0) + (r["adv_train_s"] or 0) for r in rows)
    return {"archs": rows, "correlations": correlations,
            "settings": {"epochs": epochs, "eps": eps, "adversarial": adversarial,
                         "robust_eval_samples": robust_eval_samples, "dataset": dataset,
                         "batch": batch, "seed": seed, "attack_steps": attack_steps,
                         "output": output, "n_boot": n_boot},
            "compute": {"score_s": score_s, "train_wall_s": train_wall, "train_s": train_s,
                        "saved_fraction": 1 - score_s / train_wall if train_wall else None,
                        "speedup": train_wall / score_s if score_s else None}}


def parse_archs(depths: Iterable[int], widths: Iterable[int]) -> list[tuple[int, int]]:
    """The grid depths x widths, in that order."""
    return [(int(d), int(w)) for d in depths for w in widths]
