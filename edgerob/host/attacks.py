"""White-box attacks on the host: adversarial input sets, robust accuracy and precise evaluation.

- `InputSet` (`edgerob.device.inputs`): clean or adversarial images with labels and per-sample ids
  (indices into the test split), saved as one .npz that devices load with numpy alone. torch and
  torchattacks are imported inside the functions that need them.
- `make_attack` builds a torchattacks attack with edgerob's defaults (`ATTACKS` lists the names);
  every crafted image is projected into the L-inf eps-ball around its clean image and into [0, 1]
  (CW and DeepFool are L2/unbounded attacks: for them this projection changes the result, and the
  recorded params say so).
- `evaluate` returns clean and robust accuracy of the fp32 torch model plus the adversarial images;
  `craft` wraps the result in an `InputSet`.
- Precise mode (Lee & Chandrakasan, SiPS 2021) re-attacks the samples that survived the plain
  attack with compensations for the three ways first-order attacks overestimate robustness: a loss
  that does not saturate (cross-entropy on logits / T, a margin loss, a targeted step towards the
  second most likely class), BPDA through non-differentiable ops (`bpda`: exact forward,
  straight-through backward), and better starts (random restarts and a second-order start), and
  keeps the per-sample worst case. It also reports gradient-masking warnings.
- `fake_quant_int8` turns a model into one that rounds like the int8 artifact (`FakeQuant`), so that
  rounding can be attacked with BPDA.

Robust accuracy counts a sample as robust only if it is classified correctly both clean and on its
adversarial image.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import io
import math
import time
from dataclasses import asdict, dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from edgerob.device.inputs import InputSet, as_images, as_int_vector, input_set_name
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes
from edgerob.device.sequential import SequentialResult, StopRule, run_sequential

__all__ = [
    "ATTACKS", "AttackResult", "InputSet", "PreciseConfig", "PreparedAttack", "bpda", "craft",
    "evaluate", "fake_quant_int8", "input_set_name", "make_attack",
]  # also `Round` and `FakeQuant` (torch modules, built on first access: not in a star-import)

ATTACKS = ("fgsm", "pgd", "apgd", "cw", "deepfool", "square", "autoattack")
PROJECTED_ATTACKS = ("cw", "deepfool")  # not L-inf bounded by construction

# Defaults per attack; a key here is a parameter the user may override. `alpha: None` means
# 2.5 * eps / steps (Madry et al.'s choice, so PGD can cross the ball and back).
_DEFAULTS: dict[str, dict[str, Any]] = {
    "fgsm": {},
    "pgd": {"steps": 10, "alpha": None, "random_start": True},
    "apgd": {"steps": 10, "n_restarts": 1, "loss": "ce", "rho": 0.75},
    "cw": {"c": 1.0, "kappa": 0.0, "steps": 50, "lr": 0.01},
    "deepfool": {"steps": 50, "overshoot": 0.02},
    "square": {"n_queries": 5000, "n_restarts": 1, "p_init": 0.8, "loss": "margin"},
    # torchattacks' AutoAttack: APGD-CE, APGD-T, FAB-T at 10 steps, Square at 5000 queries
    "autoattack": {"steps": 10, "n_queries": 5000},
}
# fra31/auto-attack "standard" (autoattack/autoattack.py): 100 iterations for APGD-CE, APGD-T and
# FAB-T, each targeted part on the 9 most likely other classes; Square with 5000 queries, p_init 0.8
# and its patch-size schedule as written for 10,000 queries (resc_schedule=False: not rescaled).
OFFICIAL_AUTOATTACK = {"steps": 100, "n_queries": 5000}
OFFICIAL_TARGET_CLASSES = 9
OFFICIAL_SQUARE = {"p_init": 0.8, "resc_schedule": False}
_INT_PARAMS = ("steps", "n_restarts", "n_queries")
_POSITIVE_FLOATS = ("alpha", "c", "lr", "rho", "p_init")
_NONNEG_FLOATS = ("kappa", "overshoot")
_CHOICES = {("apgd", "loss"): ("ce", "dlr"), ("square", "loss"): ("margin", "ce")}


def _check_attack(attack: str) -> str:
    if not isinstance(attack, str) or attack.lower() not in ATTACKS:
        raise EdgerobError(f"unknown attack {attack!r}; choose one of {', '.join(ATTACKS)}")
    return attack.lower()


def _check_eps(eps) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise EdgerobError(f"eps must be a number in [0, 1], got {eps!r}") from None
    if not (0.0 <= eps <= 1.0):  # also rejects NaN
        raise EdgerobError(f"eps must be in [0, 1] (images are in [0, 1]), got {eps:g}")
    return eps


def _resolve_params(attack: str, eps: float, official: bool,
                    params: dict) -> tuple[dict, str]:
    """Effective parameters (JSON-able) and the strength label."""
    allowed = _DEFAULTS[attack]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        takes = ", ".join(allowed) if allowed else "no parameters"
        raise EdgerobError(f"{attack} does not take {', '.join(unknown)}; it takes {takes}")
    if official and attack != "autoattack":
        raise EdgerobError(f"official=True applies to autoattack only, not {attack}")
    if official and params:
        raise EdgerobError(f"official AutoAttack fixes its budget ({OFFICIAL_AUTOATTACK}); "
                           f"drop {', '.join(sorted(params))} or official=True")
    p = dict(allowed)
    p.update(OFFICIAL_AUTOATTACK if official else params)
    for key, value in p.items():
        if value is None:
            continue
        bad = None
        if key in _INT_PARAMS and (isinstance(value, bool) or not isinstance(value, int)
                                   or value < 1):
            bad = "a positive integer"
        elif key in _POSITIVE_FLOATS and (not _is_number(value) or not value > 0):
            bad = "a positive number"
        elif key in _NONNEG_FLOATS and (not _is_number(value) or not value >= 0):
            bad = "a non-negative number"
        elif key == "random_start" and not isinstance(value, bool):
            bad = "true or false"
        elif (attack, key) in _CHOICES and value not in _CHOICES[attack, key]:
            bad = f"one of {', '.join(_CHOICES[attack, key])}"
        if bad:
            raise EdgerobError(f"{attack} parameter {key} must be {bad}, got {value!r}")
    if attack == "pgd" and p["alpha"] is None:
        p["alpha"] = 2.5 * eps / p["steps"]
    p["norm"] = "Linf"
    if attack in PROJECTED_ATTACKS:
        p["projected"] = "L-inf eps-ball and [0, 1]"  # an L2 / unbounded attack, then projected
    if attack == "autoattack":
        strength = ("official" if official else
                    "torchattacks-default" if not params or all(
                        params[k] == _DEFAULTS["autoattack"][k] for k in params) else "custom")
    else:
        strength = "custom" if any(params[k] != allowed[k] for k in params) else "edgerob-default"
    return p, strength


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class PreciseConfig:
    """Precise-mode settings (Lee & Chandrakasan, SiPS 2021); `precise=True` uses these defaults."""

    temperature: float = 100.0  # CE on logits / T does not saturate
    steps: int | None = None  # per compensation; None: the plain attack's steps (10 if it has none)
    restarts: int = 2  # extra random-start runs (margin loss)
    targeted: bool = True  # a run towards the second most likely class
    second_order: bool = True  # a start from one Hessian power-iteration step
    fd_step: float | None = None  # finite-difference step h for the Hessian-vector product; eps/2
    bpda: bool = True  # compensations run through non-differentiable ops straight-through
    square_queries: int = 300  # the black-box check (a gradient-free attack)
    zero_grad_tol: float = 1e-20  # |grad|_inf at or below this counts as a zero gradient

    def validate(self) -> None:
        if not (_is_number(self.temperature) and self.temperature > 0):
            raise EdgerobError(f"precise temperature must be positive, got {self.temperature!r}")
        for name in ("restarts", "square_queries"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 0:
                raise EdgerobError(f"precise {name} must be a non-negative integer, got {v!r}")
        if self.steps is not None and (not isinstance(self.steps, int) or self.steps < 1):
            raise EdgerobError(f"precise steps must be a positive integer, got {self.steps!r}")
        if self.fd_step is not None and not (_is_number(self.fd_step) and self.fd_step > 0):
            raise EdgerobError(f"precise fd_step must be positive, got {self.fd_step!r}")


def _check_precise(precise) -> PreciseConfig | None:
    if precise is False or precise is None:
        return None
    cfg = PreciseConfig() if precise is True else precise
    if not isinstance(cfg, PreciseConfig):
        raise EdgerobError(f"precise must be True, False or a PreciseConfig, got {precise!r}")
    cfg.validate()
    return cfg


# --- torch-side helpers (built on first use) ----------------------------------------------------

_STE_OPS = ("round", "floor", "ceil", "trunc", "fix", "sign")


@functools.lru_cache(maxsize=None)
def _torch_defs() -> SimpleNamespace:
    import torch
    from torch import nn
    from torch.overrides import TorchFunctionMode

    class StraightThrough(torch.autograd.Function):
        """Forward: `out` exactly. Backward: the gradient goes to `x` unchanged (identity)."""

        @staticmethod
        def forward(ctx, x, out):
            return out.detach().clone()

        @staticmethod
        def backward(ctx, grad):
            return grad, None

    funcs = {}
    for name in _STE_OPS:
        for owner, label in ((torch, "torch"), (torch.Tensor, "Tensor")):
            if hasattr(owner, name):
                funcs[getattr(owner, name)] = f"{label}.{name}"

    class STEMode(TorchFunctionMode):
        """Inside the mode, rounding-type ops keep their forward and pass gradients straight."""

        def __init__(self, seen: set):
            super().__init__()
            self.seen = seen

        def __torch_function__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            label = funcs.get(func)
            if label is not None and args and isinstance(args[0], torch.Tensor):
                x = args[0]
                self.seen.add(label)
                if (isinstance(out, torch.Tensor) and out.shape == x.shape
                        and out.is_floating_point() and x.requires_grad
                        and torch.is_grad_enabled()):
                    return StraightThrough.apply(x, out)
            return out

    class Round(nn.Module):
        """Rounds [0, 1] inputs to `levels` evenly spaced values. Zero gradient, as a deployed
        quantiser has; flagged `non_differentiable`, so `bpda` passes gradients straight through."""

        non_differentiable = True

        def __init__(self, levels: int = 256):
            super().__init__()
            if levels < 2:
                raise EdgerobError(f"Round needs at least 2 levels, got {levels}")
            self.levels = int(levels)

        def forward(self, x):
            return torch.round(x * (self.levels - 1)) / (self.levels - 1)

        def extra_repr(self):
            return f"levels={self.levels}"

    class FakeQuant(nn.Module):
        """Simulated integer quantisation, y = (clamp(round(x / scale) + zp, qmin, qmax) - zp) *
        scale (per tensor, or per channel with a broadcastable scale). The forward is the real
        rounding; the backward of round() is zero as in the deployed model, so plain gradient
        attacks are masked. Under `bpda` the round is straight-through and the clamp keeps its
        own gradient (zero outside the representable range)."""

        def __init__(self, scale, zero_point: int = 0, qmin: int = -128, qmax: int = 127):
            super().__init__()
            scale = torch.as_tensor(scale, dtype=torch.float32)
            if not bool(torch.all(scale > 0)):
                raise EdgerobError("FakeQuant scale must be positive")
            self.register_buffer("scale", scale)
            self.zero_point, self.qmin, self.qmax = int(zero_point), int(qmin), int(qmax)

        def forward(self, x):
            q = torch.clamp(torch.round(x / self.scale) + self.zero_point, self.qmin, self.qmax)
            return (q - self.zero_point) * self.scale

        def extra_repr(self):
            return f"qmin={self.qmin}, qmax={self.qmax}, zero_point={self.zero_point}"

    class PositiveLogits(nn.Module):
        """Shifts each row of logits so all are >= 1. torchattacks' CW computes its margin with
        masked maxima that read 0 for the masked entries, which is wrong when logits are negative;
        the shift is the same for every class, so predictions and margins are unchanged."""

        def __init__(self, model):
            super().__init__()
            self.model = model

        # The mode is the wrapped model's: torchattacks restores the mode it read from the
        # wrapper, and a wrapper of its own (training by default) would flip the model to train.
        @property
        def training(self):
            return self.model.training if "model" in self._modules else True

        @training.setter
        def training(self, value):
            pass  # train()/eval() recurse into the wrapped model, which holds the flag

        def forward(self, x):
            z = self.model(x)
            return z - z.min(dim=1, keepdim=True).values.detach() + 1.0

    return SimpleNamespace(StraightThrough=StraightThrough, STEMode=STEMode, Round=Round,
                           FakeQuant=FakeQuant, PositiveLogits=PositiveLogits)


def __getattr__(name):  # `Round` and `FakeQuant` need torch: build them on first access
    if name in ("Round", "FakeQuant"):
        return getattr(_torch_defs(), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@contextlib.contextmanager
def bpda(model=None, enabled: bool = True, seen: set | None = None):
    """BPDA (Athalye et al. 2018): forward exactly as the model does, backward through a substitute.

    Inside the context, torch.round/floor/ceil/trunc/fix/sign (functions and Tensor methods)
    return their exact result but pass the incoming gradient straight through (identity), and
    every submodule of `model` whose class sets `non_differentiable = True` (e.g. `Round`) is
    made straight-through as a whole (its output must have its input's shape). The names of the
    ops met are added to `seen`.
    """
    if not enabled:
        yield seen
        return
    import torch

    defs = _torch_defs()
    seen = set() if seen is None else seen

    def hook(module, inputs, output):
        x = inputs[0] if inputs else None
        seen.add(type(module).__name__)
        if (isinstance(x, torch.Tensor) and isinstance(output, torch.Tensor)
                and x.shape == output.shape and torch.is_grad_enabled()
                and (x.requires_grad or output.requires_grad)):
            return defs.StraightThrough.apply(x, output)
        return output

    handles = []
    if model is not None:
        handles = [m.register_forward_hook(hook) for m in model.modules()
                   if getattr(m, "non_differentiable", False)]
    try:
        with defs.STEMode(seen):
            yield seen
    finally:
        for h in handles:
            h.remove()


def fake_quant_int8(model, calibration_images, batch_size: int = 256, skip_first: bool = True):
    """A copy of `model` that computes like the int8 artifact: per-channel symmetric int8 weights
    and per-tensor symmetric int8 inputs (max-abs calibrated on `calibration_images`) for every
    Conv2d and Linear; the first one stays float, as in edgerob's export (the stem). An
    approximation of onnxruntime's QDQ arithmetic, not bit-exact. Its rounding has zero gradient;
    attack it with precise mode (BPDA)."""
    import torch
    from torch import nn

    defs = _torch_defs()
    calibration_images = as_images(calibration_images, "calibration images")
    qmodel = copy.deepcopy(model).eval()
    targets = [(name, m) for name, m in qmodel.named_modules()
               if isinstance(m, (nn.Conv2d, nn.Linear))]
    if skip_first:
        targets = targets[1:]
    if not targets:
        raise EdgerobError("fake_quant_int8: the model has no Conv2d or Linear layer to quantise")
    amax = {name: 0.0 for name, _ in targets}

    def recorder(name):
        def pre_hook(module, inputs):
            amax[name] = max(amax[name], float(inputs[0].detach().abs().max()))
        return pre_hook

    handles = [m.register_forward_pre_hook(recorder(name)) for name, m in targets]
    device = _model_device(qmodel)
    try:
        with torch.inference_mode():
            for i in range(0, len(calibration_images), batch_size):
                qmodel(torch.from_numpy(calibration_images[i:i + batch_size]).to(device))
    finally:
        for h in handles:
            h.remove()
    with torch.no_grad():
        for name, m in targets:
            w = m.weight
            wmax = w.abs().flatten(1).amax(1).clamp_min(1e-12)
            ws = (wmax / 127.0).view(-1, *([1] * (w.dim() - 1)))
            w.copy_(torch.clamp(torch.round(w / ws), -127, 127) * ws)
            wrapped = nn.Sequential(defs.FakeQuant(max(amax[name], 1e-12) / 127.0), m)
            parent_name, _, child = name.rpartition(".")
            parent = qmodel.get_submodule(parent_name) if parent_name else qmodel
            setattr(parent, child, wrapped)
    return qmodel


def _model_device(model):
    import torch

    p = next(iter(model.parameters()), None)
    if p is None:
        p = next(iter(model.buffers()), None)
    return p.device if p is not None else torch.device("cpu")


@contextlib.contextmanager
def _eval_mode(model):
    """model.eval() for the duration; then every submodule gets back its own mode."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for m, training in modes:
            m.training = training


def _rng_devices(device) -> list:
    return [device.index or 0] if device.type == "cuda" else []


def _project(adv, x, eps: float):
    """Into the L-inf eps-ball around x and into [0, 1]; non-finite values fall back to x."""
    import torch

    adv = torch.where(torch.isfinite(adv), adv, x)
    return torch.clamp(torch.minimum(torch.maximum(adv, x - eps), x + eps), 0.0, 1.0)


def _margin(z, y):
    """max_{j != y} z_j - z_y: positive once misclassified; never saturates."""
    import torch

    true = z.gather(1, y[:, None]).squeeze(1)
    other = z.masked_fill(torch.nn.functional.one_hot(y, z.shape[1]).bool(),
                          float("-inf")).amax(1)
    return other - true


def position_dependent(model) -> bool:
    """Whether a sample's output depends on its row in the batch: a submodule flags itself
    `position_dependent` (edgerob's `OutputNoise` defence: a fixed noise pattern by row)."""
    modules = model.modules() if hasattr(model, "modules") else ()
    return any(getattr(m, "position_dependent", False) for m in modules)


def _forward_at(model, inp, rows):
    """The model's output for each row of `inp` as if it sat at batch row `rows[i]` (distinct;
    None: where it is). Rows up to the highest are filled with copies of the first input; rows do
    not interact in eval mode, so only the positions matter. Differentiable in `inp`."""
    if rows is None:
        return model(inp)
    size = int(rows.max()) + 1
    batch = inp[:1].detach().expand(size, *inp.shape[1:]).index_copy(0, rows, inp)
    return model(batch).index_select(0, rows)


def _pinned(model, row: int):
    """`model` for one-sample batches, each evaluated at batch row `row` (for attacks such as
    torchattacks' Square that split their batch internally). In eval mode, so that torchattacks
    does not switch the wrapped model back to training mode afterwards."""
    import torch
    from torch import nn

    class AtRow(nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, inp):
            if len(inp) != 1:
                raise RuntimeError(f"a model pinned to row {row} takes one sample, got {len(inp)}")
            return _forward_at(self.model, inp, torch.tensor([row], device=inp.device))

    return AtRow().eval()


# --- attacks -------------------------------------------------------------------------------------

@dataclass
class PreparedAttack:
    """A configured attack: call it with (images, labels) tensors to get adversarial images.

    `torchattack` is the underlying torchattacks object. The output is always projected into the
    eps-ball and [0, 1]. With `precise`, the call also runs the compensations on the samples the
    plain attack left correctly classified and returns the per-sample worst case; `diagnostics`
    accumulates what evaluate() turns into warnings. Seed torch yourself (evaluate() does).
    """

    model: Any
    attack: str
    eps: float
    params: dict
    strength: str
    torchattack: Any
    precise: PreciseConfig | None = None
    official: bool = False
    seed: int = 0
    diagnostics: dict = field(default_factory=dict)
    last_naive_robust: Any = None  # bool tensor for the last batch (precise mode)
    position_dependent: bool = False  # the output depends on the batch row (`OutputNoise`)

    def __call__(self, images, labels):
        import torch

        if self.eps == 0:
            return images.detach().clone()
        with torch.enable_grad():
            if self.attack in ("apgd", "square", "autoattack"):
                # these reseed torch's global generator; keep the caller's stream going
                with torch.random.fork_rng(devices=_rng_devices(images.device)):
                    adv = self.torchattack(images, labels)
            else:
                adv = self.torchattack(images, labels)
        adv = _project(adv.detach(), images, self.eps)
        if self.precise is not None:
            with _eval_mode(self.model):
                adv = _precise_attack(self, images, labels, adv)
        return adv


def make_attack(model, attack: str, eps: float, precise=False, official: bool = False,
                seed: int = 0, n_classes: int | None = None, **params) -> PreparedAttack:
    """Build `attack` (one of ATTACKS) at L-inf radius `eps` with edgerob's defaults.

    Defaults: pgd 10 steps, alpha 2.5*eps/steps, random start; apgd (CE) 10 steps; cw L2 with
    c=1, 50 steps (then projected to the L-inf ball); deepfool 50 steps (projected); square
    5000 queries; autoattack as torchattacks builds it (10 steps, Square 5000 queries), or with
    `official=True` as fra31/auto-attack's "standard" version (100 steps; APGD-T and FAB-T on 9
    target classes, or n_classes - 1 where fewer exist; Square 5000 queries, p_init 0.8, the
    schedule not rescaled). `n_classes` (default 10) matters for autoattack's targeted parts.
    """
    attack = _check_attack(attack)
    eps = _check_eps(eps)
    p, strength = _resolve_params(attack, eps, bool(official), params)
    cfg = _check_precise(precise)
    if n_classes is not None and (not isinstance(n_classes, int) or n_classes < 2):
        raise EdgerobError(f"n_classes must be an integer >= 2, got {n_classes!r}")
    n_classes = n_classes or 10
    if attack == "autoattack":
        p["n_classes"] = n_classes
    import torchattacks

    if attack == "fgsm":
        atk = torchattacks.FGSM(model, eps=eps)
    elif attack == "pgd":
        atk = torchattacks.PGD(model, eps=eps, alpha=p["alpha"], steps=p["steps"],
                               random_start=p["random_start"])
    elif attack == "apgd":
        atk = torchattacks.APGD(model, norm="Linf", eps=eps, steps=p["steps"],
                                n_restarts=p["n_restarts"], seed=seed, loss=p["loss"],
                                rho=p["rho"])
    elif attack == "cw":
        atk = torchattacks.CW(_torch_defs().PositiveLogits(model), c=p["c"], kappa=p["kappa"],
                              steps=p["steps"], lr=p["lr"])
    elif attack == "deepfool":
        atk = torchattacks.DeepFool(model, steps=p["steps"], overshoot=p["overshoot"])
    elif attack == "square":
        atk = torchattacks.Square(model, norm="Linf", eps=eps, n_queries=p["n_queries"],
                                  n_restarts=p["n_restarts"], p_init=p["p_init"],
                                  loss=p["loss"], seed=seed)
    elif strength == "torchattacks-default":
        atk = torchattacks.AutoAttack(model, norm="Linf", eps=eps, version="standard",
                                      n_classes=n_classes, seed=seed)
    elif official:
        atk = _official_autoattack(model, eps, seed, n_classes, p)
    else:  # the same four attacks at a chosen budget
        steps, queries = p["steps"], p["n_queries"]
        atk = torchattacks.MultiAttack([
            torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                              loss="ce"),
            torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1,
                               seed=seed, n_classes=n_classes),
            torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                             multi_targeted=True, n_classes=n_classes),
            torchattacks.Square(model, norm="Linf", eps=eps, n_queries=queries, n_restarts=1,
                                seed=seed),
        ])
    return PreparedAttack(model=model, attack=attack, eps=eps, params=p, strength=strength,
                          torchattack=atk, precise=cfg, official=bool(official), seed=seed,
                          position_dependent=position_dependent(model))


def _official_autoattack(model, eps: float, seed: int, n_classes: int, p: dict):
    """fra31/auto-attack's "standard" Linf AutoAttack from torchattacks' parts. torchattacks
    sets `n_target_classes = n_classes - 1` in APGDT and FAB, so asking for 9 target classes means
    passing n_classes=10 whatever the data set has (the targets are the 9 most likely other
    classes, as in the official code); with fewer than 10 classes only n_classes - 1 exist, and
    `p` records the difference."""
    import torchattacks

    targets = min(OFFICIAL_TARGET_CLASSES, n_classes - 1)
    p["n_target_classes"] = targets
    p["square"] = dict(OFFICIAL_SQUARE)
    if targets < OFFICIAL_TARGET_CLASSES:
        p["differs_from_official"] = (f"{n_classes} classes: APGD-T and FAB-T use {targets} "
                                      f"target classes, not the official "
                                      f"{OFFICIAL_TARGET_CLASSES}")
    steps = p["steps"]
    return torchattacks.MultiAttack([
        torchattacks.APGD(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                          loss="ce", eot_iter=1, rho=0.75),
        torchattacks.APGDT(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                           eot_iter=1, rho=0.75, n_classes=targets + 1),
        torchattacks.FAB(model, norm="Linf", eps=eps, steps=steps, n_restarts=1, seed=seed,
                         multi_targeted=True, n_classes=targets + 1),
        torchattacks.Square(model, norm="Linf", eps=eps, n_queries=p["n_queries"], n_restarts=1,
                            seed=seed, loss="margin", **OFFICIAL_SQUARE),
    ])


# --- precise mode --------------------------------------------------------------------------------

def _precise_attack(pa: PreparedAttack, x, y, adv):
    """Worst case over the plain attack and the compensations, per sample. A compensation counts
    for a sample only if its image fools the model in the full batch, at the sample's own row
    (what `evaluate` judges). On a position-dependent model every sample is also attacked at its
    own row, so a sub-batch never shows it another row's noise."""
    import torch
    import torch.nn.functional as F

    cfg, model, eps, d = pa.precise, pa.model, pa.eps, pa.diagnostics
    for key in ("samples", "clean_correct", "naive_fooled", "zero_grad", "square_fooled",
                "unconfirmed"):
        d.setdefault(key, 0)
    d.setdefault("compensations", {})
    d.setdefault("ops", set())
    rows = torch.arange(len(x), device=x.device) if pa.position_dependent else None
    at = (lambda idx: None) if rows is None else (lambda idx: rows[idx])
    with torch.no_grad():
        z_clean = model(x)
        clean_ok = z_clean.argmax(1) == y
        naive_ok = clean_ok & (model(adv).argmax(1) == y)
    pa.last_naive_robust = naive_ok
    d["samples"] += len(x)
    d["clean_correct"] += int(clean_ok.sum())
    d["naive_fooled"] += int((clean_ok & ~naive_ok).sum())
    ci = clean_ok.nonzero().flatten()
    if len(ci) == 0:
        return adv

    # masking signal: the plain loss's input gradient at the clean point, without BPDA
    xg = x[ci].clone().requires_grad_(True)
    with torch.enable_grad():
        loss = F.cross_entropy(_forward_at(model, xg, at(ci)), y[ci], reduction="sum")
        if loss.requires_grad:
            g = torch.autograd.grad(loss, xg)[0]
            d["zero_grad"] += int((g.flatten(1).abs().amax(1) <= cfg.zero_grad_tol).sum())
        else:
            d["zero_grad"] += len(ci)

    adv = adv.clone()
    robust = naive_ok.clone()
    credit: dict[int, str] = {}  # sample -> the compensation whose image replaced the plain one
    steps = cfg.steps or int(pa.params.get("steps") or 10)
    si = naive_ok.nonzero().flatten()
    if len(si):
        xs, ys = x[si], y[si]
        target = z_clean[si].topk(2, dim=1).indices[:, 1]  # second most likely (top-1 is y)
        variants = [("margin", "margin", "random", steps),
                    (f"ce/T={cfg.temperature:g}", "ce_t", "random", steps)]
        if cfg.targeted:
            variants.append(("targeted-second-class", "targeted", "random", steps))
        if cfg.second_order:
            variants.append(("second-order-start", "margin", "second-order", steps))
        variants += [(f"restart-{k + 1}", "margin", "random", steps)
                     for k in range(cfg.restarts)]
        alive = torch.ones(len(si), dtype=torch.bool, device=x.device)
        for name, loss_name, start, n_steps in variants:
            a = alive.nonzero().flatten()
            if len(a) == 0:
                break
            fooled, imgs = _pgd_variant(pa, xs[a], ys[a], target[a], loss_name, start, n_steps,
                                        at(si[a]))
            hit = a[fooled]
            adv[si[hit]] = imgs[fooled]
            alive[hit] = False
            robust[si[hit]] = False
            credit.update((int(i), name) for i in si[hit])

    # black-box check on every correctly classified sample: Square needs no gradient
    if cfg.square_queries:
        import torchattacks

        def square(m, xx, yy):
            sq = torchattacks.Square(m, norm="Linf", eps=eps, n_queries=cfg.square_queries,
                                     n_restarts=1, seed=pa.seed, loss="margin")
            with torch.random.fork_rng(devices=_rng_devices(x.device)):
                return _project(sq(xx, yy).detach(), xx, eps)

        if rows is None:
            sq_adv = square(model, x[ci], y[ci])
        else:  # Square splits its batch as samples fall: one sample at a time, at its own row
            sq_adv = torch.cat([square(_pinned(model, int(i)), x[i:i + 1], y[i:i + 1])
                                for i in ci])
        with torch.no_grad():
            sq_ok = _forward_at(model, sq_adv, at(ci)).argmax(1) == y[ci]
        d["square_fooled"] += int((~sq_ok).sum())
        extra = robust[ci] & ~sq_ok  # fooled by Square only
        adv[ci[extra]] = sq_adv[extra]
        robust[ci[extra]] = False
        credit.update((int(i), f"square-{cfg.square_queries}") for i in ci[extra])

    # the verdict that counts: the whole batch, every sample at its own row
    with torch.no_grad():
        fooled = (model(adv).argmax(1) != y).tolist()
    for i, name in credit.items():
        if fooled[i]:
            d["compensations"][name] = d["compensations"].get(name, 0) + 1
        else:
            d["unconfirmed"] += 1
    return adv


def _pgd_variant(pa: PreparedAttack, x, y, target, loss_name: str, start: str, steps: int,
                 rows=None):
    """L-inf PGD through BPDA with a non-saturating loss. Returns (fooled mask, images): the first
    iterate that is misclassified, per sample (the exact forward decides). `rows`: each sample's
    batch row for a position-dependent model (see `_forward_at`)."""
    import torch
    import torch.nn.functional as F

    cfg, model, eps = pa.precise, pa.model, pa.eps
    seen = pa.diagnostics.setdefault("ops", set())

    def forward(inp, idx):
        with bpda(model, enabled=cfg.bpda, seen=seen):
            return _forward_at(model, inp, None if rows is None else rows[idx])

    def objective(z, idx):  # to maximise, per sample
        if loss_name == "ce_t":
            return F.cross_entropy(z / cfg.temperature, y[idx], reduction="none")
        if loss_name == "targeted":
            t, yy = target[idx], y[idx]
            return z.gather(1, t[:, None]).squeeze(1) - z.gather(1, yy[:, None]).squeeze(1)
        return _margin(z, y[idx])

    def gradient(inp, idx, loss_fn):
        inp = inp.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = loss_fn(forward(inp, idx), idx).sum()
            if not loss.requires_grad:
                return torch.zeros_like(inp)
            return torch.autograd.grad(loss, inp)[0]

    n = len(x)
    everyone = torch.arange(n, device=x.device)
    if start == "second-order":
        # one power-iteration step on the Hessian of the CE/T loss: H d ~ g(x + h d) - g(x)
        h = cfg.fd_step or eps / 2
        ce_t = lambda z, idx: F.cross_entropy(z / cfg.temperature, y[idx], reduction="none")
        direction = torch.randint(0, 2, x.shape, device=x.device).to(x.dtype) * 2 - 1
        g0 = gradient(x, everyone, ce_t)
        g1 = gradient(torch.clamp(x + h * direction, 0, 1), everyone, ce_t)
        s = (g1 - g0).sign()
        flat = s.flatten(1).abs().amax(1) == 0  # no curvature seen: fall back to random signs
        s[flat] = direction[flat]
        plus, minus = _project(x + eps * s, x, eps), _project(x - eps * s, x, eps)
        with torch.no_grad():  # an eigenvector's sign is arbitrary: take the better side
            better = (objective(forward(plus, everyone), everyone)
                      >= objective(forward(minus, everyone), everyone))
        cur = torch.where(better.view(-1, *[1] * (x.dim() - 1)), plus, minus)
        steps = max(steps - 2, 1)  # the two gradients count against the step budget
    else:
        cur = _project(x + torch.empty_like(x).uniform_(-eps, eps), x, eps)
    alpha = 2.5 * eps / steps

    fooled = torch.zeros(n, dtype=torch.bool, device=x.device)
    out = x.clone()
    act = everyone
    for k in range(steps + 1):
        last = k == steps
        cur = cur.detach().requires_grad_(not last)
        with torch.set_grad_enabled(not last):
            z = forward(cur, act)
        hit = z.argmax(1) != y[act]
        if hit.any():
            out[act[hit]] = cur.detach()[hit]
            fooled[act[hit]] = True
        keep = ~hit
        if last or not keep.any():
            break
        with torch.enable_grad():
            loss = objective(z, act)[keep].sum()
            g = (torch.autograd.grad(loss, cur)[0] if loss.requires_grad
                 else torch.zeros_like(cur))
        nxt = _project(cur.detach() + alpha * g.sign(), x[act], eps)
        act, cur = act[keep], nxt[keep]
    return fooled, out


# --- evaluation ----------------------------------------------------------------------------------

@dataclass
class AttackResult:
    attack: str
    eps: float
    params: dict
    precise: bool
    strength: str
    clean_accuracy: float
    robust_accuracy: float  # in precise mode: after the compensations (the worst case)
    adversarial: np.ndarray  # same shape as the images, inside the eps-ball and [0, 1]
    crafting_time_s: float  # wall time in the attack calls (accuracy passes excluded)
    n_samples: int
    clean_correct: np.ndarray  # bool per sample
    robust_correct: np.ndarray  # bool per sample: correct clean and on the adversarial image
    naive_robust_accuracy: float | None = None  # precise mode: the plain attack alone
    warnings: list[str] = field(default_factory=list)
    compensations: dict[str, int] = field(default_factory=dict)  # samples each variant broke


def evaluate(model, images, labels, attack: str = "pgd", eps: float = 0.1, precise=False,
             batch_size: int = 128, seed: int = 0, official: bool = False,
             **params) -> AttackResult:
    """Clean and robust accuracy of a torch model (logits for [0, 1] inputs) under `attack`.

    Deterministic for a given seed (torch's generator is seeded inside and the caller's generator
    state is restored afterwards). At eps=0 the adversarial images are the clean images.
    `precise=True` (or a `PreciseConfig`) runs the compensations and gradient-masking checks.
    """
    attack = _check_attack(attack)
    eps = _check_eps(eps)
    _resolve_params(attack, eps, bool(official), params)  # fail before any torch work
    _check_precise(precise)
    images = as_images(images)
    labels = as_int_vector(labels, len(images), "labels", "evaluate")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EdgerobError(f"batch_size must be a positive integer, got {batch_size!r}")
    import torch

    device = _model_device(model)
    sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
    n = len(images)
    clean_ok = np.zeros(n, dtype=bool)
    robust_ok = np.zeros(n, dtype=bool)
    naive_ok = np.zeros(n, dtype=bool)
    adversarial = images.copy() if eps == 0 else np.empty_like(images)
    crafting = 0.0
    probabilities = True
    with _eval_mode(model), torch.random.fork_rng(devices=_rng_devices(device)):
        torch.manual_seed(seed)
        with torch.inference_mode():
            probe = model(torch.from_numpy(images[:1]).to(device))
        if probe.dim() != 2:
            raise EdgerobError(f"the model must return (N, classes) logits, got shape "
                               f"{tuple(probe.shape)}")
        n_classes = int(probe.shape[1])
        if labels.max() >= n_classes:
            raise EdgerobError(f"labels go up to {int(labels.max())} but the model has "
                               f"{n_classes} classes")
        atk = make_attack(model, attack, eps, precise=precise, official=official, seed=seed,
                          n_classes=max(n_classes, 2), **params)
        for i in range(0, n, batch_size):
            j = min(i + batch_size, n)
            x = torch.from_numpy(images[i:j]).to(device)
            y = torch.from_numpy(labels[i:j]).to(device)
            with torch.inference_mode():
                z = model(x)
                probabilities = probabilities and _looks_like_probabilities(z)
                c_ok = z.argmax(1) == y
            if eps == 0:
                r_ok = nv_ok = c_ok
            else:
                sync()
                t0 = time.perf_counter()
                adv = atk(x, y)
                sync()
                crafting += time.perf_counter() - t0
                with torch.inference_mode():
                    r_ok = c_ok & (model(adv).argmax(1) == y)
                adversarial[i:j] = adv.detach().cpu().numpy()
                nv_ok = atk.last_naive_robust if atk.precise is not None else r_ok
            clean_ok[i:j] = c_ok.cpu().numpy()
            robust_ok[i:j] = r_ok.cpu().numpy()
            naive_ok[i:j] = nv_ok.cpu().numpy()

    params_out = dict(atk.params)
    cfg = atk.precise
    warnings = []
    if probabilities:
        warnings.append("gradient masking: the model outputs probabilities (rows in [0, 1] that "
                        "sum to 1), not logits; cross-entropy on them has vanishing gradients: "
                        "return logits")
    if atk.position_dependent:
        params_out["position_dependent"] = True
        warnings.append(f"the model's output depends on a sample's row in its batch (output "
                        f"noise): every sample was judged{' and attacked' if cfg else ''} at its "
                        f"own row in batches of {batch_size}; the numbers hold for that "
                        f"arrangement")
    if cfg is not None:
        params_out["precise"] = asdict(cfg)
        warnings += _masking_warnings(atk, attack, eps)
    naive_acc = float(naive_ok.mean()) if cfg is not None else None
    robust_acc = float(robust_ok.mean())
    if cfg is not None and eps > 0 and naive_acc - robust_acc >= 0.1:
        warnings.append(f"plain {attack} overestimates robust accuracy by "
                        f"{naive_acc - robust_acc:.2f} ({naive_acc:.3f} vs {robust_acc:.3f} with "
                        f"the compensations: a weak attack or masked gradients); report the "
                        f"precise number")
    return AttackResult(
        attack=attack, eps=eps, params=params_out, precise=cfg is not None, strength=atk.strength,
        clean_accuracy=float(clean_ok.mean()), robust_accuracy=robust_acc,
        adversarial=adversarial, crafting_time_s=crafting, n_samples=n, clean_correct=clean_ok,
        robust_correct=robust_ok, naive_robust_accuracy=naive_acc, warnings=warnings,
        compensations=dict(atk.diagnostics.get("compensations", {})))


def _looks_like_probabilities(z) -> bool:
    if z.numel() == 0:
        return False
    return bool(z.min() >= 0) and bool(z.max() <= 1) and bool(
        ((z.sum(1) - 1).abs() <= 1e-3).all())


def _masking_warnings(atk: PreparedAttack, attack: str, eps: float) -> list[str]:
    d = atk.diagnostics
    out = []
    cc = d.get("clean_correct", 0)
    if eps == 0 or cc == 0:
        return out
    if d["zero_grad"] > cc / 2:
        out.append(f"gradient masking: the input gradient of the loss is (near) zero for "
                   f"{d['zero_grad']} of {cc} correctly classified samples (saturated softmax or "
                   f"a non-differentiable op)")
    if d["square_fooled"] > d["naive_fooled"]:
        out.append(f"gradient masking: black-box Square ({atk.precise.square_queries} queries) "
                   f"fooled {d['square_fooled']} of {cc} correctly classified samples, white-box "
                   f"{attack} only {d['naive_fooled']}")
    if d.get("unconfirmed"):
        out.append(f"{d['unconfirmed']} compensation image(s) that fooled the model in a "
                   f"sub-batch did not fool it in the full batch: not counted")
    ops = sorted(d.get("ops", ()))
    if ops:
        out.append(f"gradient masking: the forward pass uses non-differentiable ops "
                   f"({', '.join(ops)}) whose gradient is zero; precise mode attacked through "
                   f"them with BPDA (straight-through)")
    return out


def craft(model, images, labels, sample_ids, attack: str, eps: float, precise=False,
          official: bool = False, seed: int = 0, batch_size: int = 128,
          stop: StopRule | None = None, stop_batch: int = 32, **params) -> InputSet:
    """Attack the samples and return them as an input set named `ATTACK@EPS`.

    With `stop`, samples are attacked `stop_batch` at a time in a seeded random order until the
    robust accuracy's anytime-valid interval is as narrow as asked (edgerob.device.sequential): the set
    holds the attacked samples only, its robust_accuracy is their mean and
    params["sequential"] the interval, samples used and the stopping rule."""
    images = as_images(images)
    sample_ids = as_int_vector(sample_ids, len(images), "sample_ids", "craft")
    labels = as_int_vector(labels, len(images), "labels", "craft")
    seq = None
    if stop is None:
        r = evaluate(model, images, labels, attack=attack, eps=eps, precise=precise,
                     batch_size=batch_size, seed=seed, official=official, **params)
    else:
        r, seq = _evaluate_sequential(model, images, labels, attack, eps, stop, stop_batch,
                                      precise=precise, batch_size=batch_size, seed=seed,
                                      official=official, **params)
        labels, sample_ids = labels[seq.order], sample_ids[seq.order]
    p = dict(r.params)
    p.setdefault("precise", False)
    p["seed"] = seed
    if seq is not None:
        p["sequential"] = seq.summary()
    if r.naive_robust_accuracy is not None:
        p["naive_robust_accuracy"] = r.naive_robust_accuracy
    if r.warnings:
        p["warnings"] = r.warnings
    return InputSet(name=input_set_name(r.attack, r.eps), images=r.adversarial, labels=labels,
                    sample_ids=sample_ids, attack=r.attack, eps=r.eps, params=p,
                    crafting_time_s=r.crafting_time_s, clean_accuracy=r.clean_accuracy,
                    robust_accuracy=r.robust_accuracy, strength=r.strength)


def _evaluate_sequential(model, images, labels, attack, eps, stop: StopRule, stop_batch: int,
                         seed: int = 0, **kw) -> tuple[AttackResult, SequentialResult]:
    """`evaluate` on batches drawn in a seeded random order until `stop` is met; the batches'
    results joined in the order attacked (batch k seeded with seed + k)."""
    parts: list[AttackResult] = []

    def attack_batch(idx):
        parts.append(evaluate(model, images[idx], labels[idx], attack=attack, eps=eps,
                              seed=seed + len(parts), **kw))
        return parts[-1].robust_correct.astype(np.float64)

    seq = run_sequential(len(images), attack_batch, stop, stop_batch, seed=seed)
    first, n = parts[0], seq.n_attacked

    def join(name: str) -> np.ndarray:
        return np.concatenate([getattr(q, name) for q in parts])

    naive = ([q.naive_robust_accuracy * q.n_samples for q in parts]
             if first.naive_robust_accuracy is not None else None)
    warnings = list(dict.fromkeys(w for q in parts for w in q.warnings))
    compensations: dict[str, int] = {}
    for q in parts:
        for k, v in q.compensations.items():
            compensations[k] = compensations.get(k, 0) + v
    return AttackResult(
        attack=first.attack, eps=first.eps, params=first.params, precise=first.precise,
        strength=first.strength, clean_accuracy=float(join("clean_correct").mean()),
        robust_accuracy=seq.estimate, adversarial=join("adversarial"),
        crafting_time_s=sum(q.crafting_time_s for q in parts), n_samples=n,
        clean_correct=join("clean_correct"), robust_correct=join("robust_correct"),
        naive_robust_accuracy=None if naive is None else sum(naive) / n, warnings=warnings,
        compensations=compensations), seq
