"""Seeded SGD training of a ResNet on a dataset; the card records what really ran.

Beyond plain training (the default, unchanged: SGD with Nesterov momentum, a per-step cosine
learning rate, every random choice from `config.seed`):
- adversarial training: PGD (Madry et al. 2018) or FGSM with a uniform random start ("fast is
  better than free", Wong et al. 2020), with their catastrophic-overfitting guard: after each
  epoch, PGD on one fixed training minibatch; if its robust accuracy falls by more than
  `overfit_drop` (0.2) from the previous epoch, training stops and the previous epoch's weights
  are restored (the card says so: `stopped_early`, `stop_reason`);
- learning-rate schedules: cosine (default), constant, step, onecycle and AccelAT (Nikfam et al.,
  IEEE Access 2022), an epoch-level controller driven by validation accuracy on a held-out part
  of the training split (`val_fraction`; never the test split);
- defences: Gaussian noise on training inputs (`train_noise`, a training choice), and the model
  layers `Squeeze` (feature squeezing) and `OutputNoise` (seeded logit noise) that are exported
  with the model (see edgerob.host.models);
- numeric precision: fp32, bf16 / fp16 mixed precision (CPU autocast; fp16 with a gradient
  scaler) and fp64 (the model and data in double). The checkpoint is always stored in fp32 (the
  form every runtime and export takes); the card records the accuracy in the training precision.

The card records the epochs actually run, train time (training, attack generation, AccelAT
validation and the overfitting check; not the per-epoch test evaluation), the per-epoch learning
rate, the robust accuracy under PGD at `eps` on the test split, and the energy where a profiler
was named and can measure it.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import math
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from edgerob.device.profilers import profiler_class
from edgerob.errors import EdgerobError
from edgerob.files import cache_dir
from edgerob.host.attacks import bpda, evaluate as attack_eval
from edgerob.host.data import Dataset, load_dataset
from edgerob.host.models import (
    MAX_SQUEEZE_BITS, OUTPUT_NOISE_ROWS, ModelCard, ResNet, build_model, default_width,
    load_checkpoint, parse_arch, save_checkpoint,
)

ADVERSARIAL = ("pgd", "fgsm-rs")
SCHEDULES = ("cosine", "constant", "step", "onecycle", "accelat")
PRECISIONS = ("fp32", "fp16", "bf16", "fp64")
ACCELAT_DEFAULT_VAL_FRACTION = 0.1


@dataclass(frozen=True)
class TrainConfig:
    arch: str = "resnet8"
    width: int | None = None  # None: 16 for CIFAR-style depths, 64 for resnet18/34/50
    dataset: str = "digits"
    data_root: str | None = None
    epochs: int = 15
    batch_size: int = 64
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    seed: int = 0
    # adversarial training (None: standard training)
    adversarial: str | None = None  # "pgd" or "fgsm-rs"
    eps: float = 0.1  # L-inf radius in [0, 1] pixel units: training and the card's robust accuracy
    steps: int = 7  # PGD steps during training (FGSM-RS takes one)
    alpha: float | None = None  # step size; None: 2.5*eps/steps (PGD), 1.25*eps (FGSM-RS)
    overfit_guard: bool = True  # catastrophic-overfitting check (adversarial training only)
    overfit_drop: float = 0.2  # stop when the check's robust accuracy falls by more than this
    check_steps: int = 5  # PGD steps of the overfitting check and of robust validation
    # learning-rate schedule
    lr_schedule: str = "cosine"
    step_size: int | None = None  # "step": epochs between decays; None: max(1, epochs // 3)
    gamma: float = 0.1  # "step": lr factor at each decay
    accelat_k: int = 5
    accelat_patience: int = 5
    accelat_threshold: float = 0.005
    accelat_factor: float = 0.8
    lr_floor: float = 1e-6
    val_fraction: float | None = None  # None: 0.1 with accelat, else 0 (train on all of it)
    # defences
    train_noise: float = 0.0  # Gaussian sigma on training inputs (then clipped to [0, 1])
    output_noise: float = 0.0  # Gaussian sigma on logits at inference (a model layer)
    output_noise_seed: int | None = None  # None: `seed`
    squeeze_bits: int | None = None  # feature squeezing to this bit depth (a model layer)
    # numeric precision of training and of the per-epoch evaluation
    precision: str = "fp32"
    # what the card measures after training
    robust_eval_samples: int = 500  # first N test images for the PGD robust accuracy; 0: skip
    robust_eval_steps: int = 10
    energy_profiler: str | None = None  # e.g. "rapl" or "nvml": energy of the training windows

    def validate(self) -> None:
        parse_arch(self.arch)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise EdgerobError(f"{name} must be at least 1, got {getattr(self, name)}")
        if not _finite(self.lr) or self.lr <= 0:
            raise EdgerobError(f"lr must be positive, got {self.lr}")
        if self.width is not None and self.width < 1:
            raise EdgerobError(f"width must be at least 1, got {self.width}")
        if self.adversarial is not None and self.adversarial not in ADVERSARIAL:
            raise EdgerobError(f"unknown adversarial training {self.adversarial!r}; choose "
                               f"{' or '.join(ADVERSARIAL)}")
        if not _finite(self.eps) or not 0 <= self.eps <= 1:
            raise EdgerobError(f"eps must be in [0, 1] (images are in [0, 1]), got {self.eps}")
        if self.adversarial and self.eps == 0:
            raise EdgerobError("adversarial training needs eps > 0")
        for name in ("steps", "check_steps", "robust_eval_steps", "accelat_k"):
            _positive_int(name, getattr(self, name))
        if self.alpha is not None and (not _finite(self.alpha) or self.alpha <= 0):
            raise EdgerobError(f"alpha must be positive, got {self.alpha}")
        if not _finite(self.overfit_drop) or not 0 < self.overfit_drop <= 1:
            raise EdgerobError(f"overfit_drop must be in (0, 1], got {self.overfit_drop}")
        if self.lr_schedule not in SCHEDULES:
            raise EdgerobError(f"unknown lr schedule {self.lr_schedule!r}; choose one of "
                               f"{', '.join(SCHEDULES)}")
        if self.step_size is not None:
            _positive_int("step_size", self.step_size)
        if not _finite(self.gamma) or not 0 < self.gamma <= 1:
            raise EdgerobError(f"gamma must be in (0, 1], got {self.gamma}")
        if isinstance(self.accelat_patience, bool) or not isinstance(
                self.accelat_patience, int) or self.accelat_patience < 0:
            raise EdgerobError(f"accelat_patience must be a non-negative integer, "
                               f"got {self.accelat_patience!r}")
        if not _finite(self.accelat_threshold):
            raise EdgerobError(f"accelat_threshold must be a number, got {self.accelat_threshold}")
        if not _finite(self.accelat_factor) or not 0 < self.accelat_factor <= 1:
            raise EdgerobError(f"accelat_factor must be in (0, 1], got {self.accelat_factor}")
        if not _finite(self.lr_floor) or self.lr_floor < 0:
            raise EdgerobError(f"lr_floor must be non-negative, got {self.lr_floor}")
        if self.lr_schedule == "accelat" and self.lr < self.lr_floor:
            raise EdgerobError(f"lr {self.lr:g} is below lr_floor {self.lr_floor:g}")
        if self.val_fraction is not None and (not _finite(self.val_fraction)
                                              or not 0 <= self.val_fraction < 1):
            raise EdgerobError(f"val_fraction must be in [0, 1), got {self.val_fraction}")
        if self.lr_schedule == "accelat" and self.val_fraction == 0:
            raise EdgerobError("the accelat schedule watches validation accuracy: val_fraction "
                               "must be above 0 (default 0.1)")
        for name in ("train_noise", "output_noise"):
            v = getattr(self, name)
            if not _finite(v) or v < 0:
                raise EdgerobError(f"{name} must be a non-negative sigma, got {v}")
        if self.squeeze_bits is not None and (
                isinstance(self.squeeze_bits, bool) or not isinstance(self.squeeze_bits, int)
                or not 1 <= self.squeeze_bits <= MAX_SQUEEZE_BITS):
            raise EdgerobError(f"squeeze_bits must be an integer from 1 to {MAX_SQUEEZE_BITS}, "
                               f"got {self.squeeze_bits!r}")
        if self.precision not in PRECISIONS:
            raise EdgerobError(f"unknown precision {self.precision!r}; choose one of "
                               f"{', '.join(PRECISIONS)}")
        if isinstance(self.robust_eval_samples, bool) or not isinstance(
                self.robust_eval_samples, int) or self.robust_eval_samples < 0:
            raise EdgerobError(f"robust_eval_samples must be a non-negative integer, "
                               f"got {self.robust_eval_samples!r}")

    # --- derived settings -------------------------------------------------------------------

    @property
    def effective_alpha(self) -> float | None:
        if self.adversarial is None:
            return None
        if self.alpha is not None:
            return self.alpha
        return 1.25 * self.eps if self.adversarial == "fgsm-rs" else 2.5 * self.eps / self.steps

    @property
    def effective_val_fraction(self) -> float:
        if self.val_fraction is not None:
            return self.val_fraction
        return ACCELAT_DEFAULT_VAL_FRACTION if self.lr_schedule == "accelat" else 0.0

    @property
    def effective_step_size(self) -> int:
        return self.step_size or max(1, self.epochs // 3)

    def defences(self) -> dict:
        """The card's `defences` for this config (empty for an undefended model)."""
        d: dict[str, Any] = {}
        if self.squeeze_bits:
            d["squeeze_bits"] = self.squeeze_bits
        if self.output_noise:
            d["output_noise"] = {
                "sigma": self.output_noise,
                "seed": self.seed if self.output_noise_seed is None else self.output_noise_seed,
                "rows": OUTPUT_NOISE_ROWS,
                "note": f"fixed N(0, sigma^2) pattern, batch row i gets pattern row i mod "
                        f"{OUTPUT_NOISE_ROWS}; eval mode only"}
        if self.train_noise:
            d["train_noise"] = self.train_noise  # a training choice, not a layer of the model
        return d


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def _positive_int(name: str, v) -> None:
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise EdgerobError(f"{name} must be a positive integer, got {v!r}")


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    loss: float
    test_accuracy: float  # in the training precision
    lr: float  # the learning rate at the end of the epoch
    train_time_s: float = 0.0  # cumulative, as the card counts it
    val_accuracy: float | None = None  # what AccelAT watched (robust when adversarial)
    check_robust_accuracy: float | None = None  # the overfitting guard's minibatch
    model: Any = field(default=None, repr=False, compare=False)  # read it; do not modify it


class AccelATController:
    """AccelAT's learning-rate rule (Nikfam et al. 2022; github farzadnikfam/AccelAT).

    `step(val_accuracy)` is called once after each epoch and returns the learning rate for the
    next one. It keeps the validation accuracies and, each epoch, their mean over the last `k`
    (fewer while fewer exist). With `means` the means of the earlier epochs: when more than `k`
    of them exist, at least `patience` epochs have passed since the last change (no limit before
    the first change), and the new mean exceeds the previous epoch's mean by less than
    `threshold`, then lr *= factor and the epoch count since the change restarts; the lr never
    goes below `floor`. Defaults: k=5, patience=5, threshold 0.005, factor 0.8, floor 1e-6.
    (The original keeps a counter that starts at `patience`, adds one per epoch, must exceed
    `patience` and resets to 1 at a change: the same rule.)
    """

    def __init__(self, k: int = 5, patience: int = 5, threshold: float = 0.005,
                 factor: float = 0.8, floor: float = 1e-6, lr: float = 1e-3):
        if k < 1 or patience < 0 or not 0 < factor <= 1 or floor < 0 or lr <= 0:
            raise EdgerobError("AccelAT needs k >= 1, patience >= 0, factor in (0, 1], "
                               "floor >= 0 and lr > 0")
        self.k, self.patience, self.threshold = k, patience, threshold
        self.factor, self.floor = factor, floor
        self.lr = max(lr, floor)
        self.accuracies: list[float] = []
        self.means: list[float] = []
        self.since_change: int | None = None  # epochs since the last change; None: none yet
        self.changes: list[int] = []  # epochs (1-based) after which lr was cut

    def step(self, val_accuracy: float) -> float:
        self.accuracies.append(float(val_accuracy))
        mean = sum(self.accuracies[-self.k:]) / len(self.accuracies[-self.k:])
        if self.since_change is not None:
            self.since_change += 1
        if (len(self.means) > self.k
                and (self.since_change is None or self.since_change >= self.patience)
                and mean - self.means[-1] < self.threshold):
            self.lr = max(self.lr * self.factor, self.floor)
            self.since_change = 0
            self.changes.append(len(self.accuracies))
        self.means.append(mean)
        return self.lr


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 256, precision: str = "fp32") -> float:
    """Top-1 accuracy of a torch model on numpy images (cast to the model's dtype; bf16/fp16
    under CPU autocast)."""
    model.eval()
    dtype = _param_dtype(model)
    correct = 0
    with torch.no_grad(), _autocast(precision):
        for i in range(0, len(images), batch_size):
            x = torch.from_numpy(images[i:i + batch_size])
            logits = model(x if x.dtype == dtype else x.to(dtype))
            correct += int((logits.argmax(1).numpy() == labels[i:i + batch_size]).sum())
    return correct / len(images)


def _param_dtype(model: nn.Module) -> torch.dtype:
    p = next(iter(model.parameters()), None)
    return p.dtype if p is not None else torch.float32


def _autocast(precision: str):
    if precision in ("fp16", "bf16"):
        return torch.autocast("cpu", dtype=torch.float16 if precision == "fp16"
                              else torch.bfloat16)
    return contextlib.nullcontext()


def _check_precision_supported(precision: str) -> None:
    if precision not in ("fp16", "bf16"):
        return
    try:
        lin = nn.Linear(2, 2)
        with _autocast(precision):
            out = lin(torch.ones(1, 2))
        out.float().sum().backward()
    except Exception as e:  # noqa: BLE001 - an old torch without CPU autocast for this dtype
        raise EdgerobError(f"{precision} mixed precision needs CPU autocast for it, which torch "
                           f"{torch.__version__} does not provide ({str(e).splitlines()[0]}); "
                           f"use bf16, fp32 or fp64") from None
    if out.dtype == torch.float32:
        raise EdgerobError(f"torch {torch.__version__} ignores {precision} autocast on CPU; "
                           f"use fp32 or fp64")


# --- attacks used during training (plain torch, one generator for their random starts) ----------

def _straight_through(model: nn.Module):
    """BPDA through non-differentiable layers (Squeeze) while crafting training attacks."""
    if any(getattr(m, "non_differentiable", False) for m in model.modules()):
        return bpda(model)
    return contextlib.nullcontext()


def pgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, alpha: float,
        steps: int, generator: torch.Generator | None = None, precision: str = "fp32",
        random_start: bool = True) -> torch.Tensor:
    """L-inf PGD from a uniform random start in the eps-ball (steps=1, alpha=1.25*eps is
    FGSM-RS). Runs in the model's current mode; returns detached images in [0, 1]."""
    if random_start:
        delta = (torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1) * eps
        delta = (x + delta).clamp(0, 1) - x
    else:
        delta = torch.zeros_like(x)
    loss_fn = nn.CrossEntropyLoss(reduction="sum")  # only the sign is used: sum keeps fp16 alive
    with _straight_through(model):
        for _ in range(steps):
            delta.requires_grad_(True)
            with _autocast(precision):
                loss = loss_fn(model(x + delta), y)
            grad, = torch.autograd.grad(loss, delta)
            delta = (delta.detach() + alpha * grad.sign()).clamp(-eps, eps)
            delta = (x + delta).clamp(0, 1) - x
    return (x + delta).detach()


def robust_accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int,
                    seed: int, precision: str = "fp32", batch_size: int = 256) -> float:
    """Share of samples correct both clean and under PGD (alpha 2.5*eps/steps), eval mode."""
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    ok = 0
    try:
        for i in range(0, len(x), batch_size):
            xb, yb = x[i:i + batch_size], y[i:i + batch_size]
            adv = pgd(model, xb, yb, eps, 2.5 * eps / steps, steps, gen, precision)
            with torch.no_grad(), _autocast(precision):
                ok += int(((model(xb).argmax(1) == yb) & (model(adv).argmax(1) == yb)).sum())
    finally:
        model.train(was_training)
    return ok / max(1, len(x))


# --- training ------------------------------------------------------------------------------------

def train(config: TrainConfig = TrainConfig(), out_dir: str | Path | None = None,
          dataset: Dataset | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None) -> tuple[ResNet, ModelCard]:
    """Train, evaluate on the test split, and (with `out_dir`) save the checkpoint and card.

    SGD with Nesterov momentum and the configured schedule (cosine by default); every random
    choice (init, shuffles, validation split, attack starts, training noise) comes from
    `config.seed`, so the same config gives the same weights on the same machine. The returned
    model is fp32 in eval mode, whatever the training precision.
    """
    config.validate()
    _check_precision_supported(config.precision)
    data = dataset or load_dataset(config.dataset, config.data_root)
    x_train, y_train, x_val, y_val = _split(data, config)
    depth = parse_arch(config.arch)
    card = ModelCard(
        arch=f"resnet{depth}", depth=depth, width=config.width or default_width(depth),
        in_channels=data.input_shape[0], num_classes=data.num_classes,
        input_shape=list(data.input_shape), dataset=data.name, dataset_root=data.root,
        mean=data.mean, std=data.std, class_names=data.class_names,
        epochs_requested=config.epochs, train=asdict(config), defences=config.defences())
    torch.manual_seed(config.seed)
    model = build_model(card)
    dtype = torch.float64 if config.precision == "fp64" else torch.float32
    if dtype != torch.float32:
        model = model.to(dtype)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = -(-len(x_train) // config.batch_size)
    per_step, per_epoch, controller = _schedule(config, opt, steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(x_train), torch.from_numpy(y_train)
    if dtype != torch.float32:
        x_all = x_all.to(dtype)
    # A generator of its own for attack starts and training noise: the global stream (init,
    # and everything a default run draws) stays exactly as it was without these options.
    gen = torch.Generator().manual_seed(config.seed)
    amp = config.precision in ("fp16", "bf16")
    scaler = torch.amp.GradScaler("cpu") if config.precision == "fp16" else None
    alpha = config.effective_alpha
    guard = config.adversarial is not None and config.overfit_guard
    check_x = check_y = None
    if guard:  # one fixed training minibatch, the same every epoch
        idx = np.random.default_rng([config.seed, 2]).permutation(len(x_all))[:config.batch_size]
        check_x, check_y = x_all[torch.from_numpy(idx)], y_all[torch.from_numpy(idx)]
    val_x = torch.from_numpy(x_val).to(dtype) if len(x_val) else None
    val_y = torch.from_numpy(y_val) if len(y_val) else None
    energy = _EnergyMeter(config.energy_profiler)

    train_time = 0.0
    epochs_run = 0
    accuracy = 0.0
    lr_trace: list[float] = []
    val_trace: list[float] = []
    check_trace: list[float] = []
    prev_check, prev_state = 0.0, None  # Wong et al. start the comparison from 0
    stop_reason = None
    for epoch in range(1, config.epochs + 1):
        lr_trace.append(opt.param_groups[0]["lr"])
        energy.start()
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            xb, yb = x_all[idx], y_all[idx]
            if config.train_noise:
                noise = torch.randn(xb.shape, generator=gen, dtype=xb.dtype)
                xb = (xb + config.train_noise * noise).clamp(0, 1)
            if config.adversarial:
                steps = 1 if config.adversarial == "fgsm-rs" else config.steps
                xb = pgd(model, xb, yb, config.eps, alpha, steps, gen, config.precision)
            opt.zero_grad(set_to_none=True)
            if amp:
                with _autocast(config.precision):
                    loss = loss_fn(model(xb), yb)
            else:
                loss = loss_fn(model(xb), yb)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(opt)
                scaler.update()
            else:
                loss.backward()
                opt.step()
            if per_step is not None:
                per_step.step()
            total += loss.item() * len(idx)
        val_acc = check = None
        if controller is not None:
            val_acc = (robust_accuracy(model, val_x, val_y, config.eps, config.check_steps,
                                       config.seed + 1, config.precision)
                       if config.adversarial else
                       evaluate(model, x_val, y_val, precision=config.precision))
            val_trace.append(val_acc)
        if guard:
            check = robust_accuracy(model, check_x, check_y, config.eps, config.check_steps,
                                    config.seed + 2, config.precision)
            check_trace.append(check)
        train_time += time.perf_counter() - t0  # test evaluation below is not training time
        energy.stop()
        if guard and prev_check - check > config.overfit_drop:
            model.load_state_dict(prev_state)
            stop_reason = (
                f"catastrophic overfitting: in epoch {epoch} PGD-{config.check_steps} robust "
                f"accuracy on the check minibatch fell from {prev_check:.3f} to {check:.3f} "
                f"(more than {config.overfit_drop:g}); stopped and restored the weights of "
                f"epoch {epoch - 1}")
            accuracy = evaluate(model, data.x_test, data.y_test, precision=config.precision)
            break
        if guard:
            prev_check, prev_state = check, copy.deepcopy(model.state_dict())
        epochs_run = epoch
        if controller is not None:
            for g in opt.param_groups:
                g["lr"] = controller.step(val_acc)
        elif per_epoch is not None:
            per_epoch.step()
        accuracy = evaluate(model, data.x_test, data.y_test, precision=config.precision)
        if on_epoch:
            on_epoch(EpochReport(epoch, config.epochs, total / len(order), accuracy,
                                 opt.param_groups[0]["lr"], train_time, val_acc, check,
                                 model))

    if dtype != torch.float32:
        model = model.float()
    model.eval()
    card.accuracy = accuracy if config.precision == "fp32" else evaluate(
        model, data.x_test, data.y_test)
    card.epochs_run = epochs_run
    card.train_time_s = train_time
    card.n_train_samples = len(x_train)  # after the validation split: what training saw
    card.stopped_early = stop_reason is not None
    card.stop_reason = stop_reason
    card.precision = {
        "train": config.precision, "eval_accuracy": accuracy, "stored": "fp32",
        "note": {"fp32": "trained and stored in fp32",
                 "fp64": "model and data in float64 during training; stored as fp32",
                 "bf16": "CPU autocast to bfloat16 (fp32 master weights)",
                 "fp16": "CPU autocast to float16 with a gradient scaler (fp32 master "
                         "weights)"}[config.precision]}
    card.lr_schedule = _schedule_record(config, lr_trace, val_trace, controller)
    if config.adversarial:
        card.adversarial = {
            "method": config.adversarial, "eps": config.eps,
            "steps": 1 if config.adversarial == "fgsm-rs" else config.steps, "alpha": alpha,
            "random_start": "uniform in the eps-ball",
            "overfit_guard": ({"check": f"PGD-{config.check_steps}, alpha 2.5*eps/steps, on one "
                                        f"fixed training minibatch of {len(check_x)}",
                               "max_drop": config.overfit_drop, "trace": check_trace}
                              if guard else None)}
    card.energy_j, card.energy_note = energy.result()
    if config.robust_eval_samples:
        card.robust_accuracy, card.robust_eval = _robust_eval(model, data, config)
    card.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    if out_dir is not None:
        save_checkpoint(model, card, out_dir)
    return model, card


def _split(data: Dataset, config: TrainConfig):
    """(x_train, y_train, x_val, y_val): the validation part is held out of the training split
    by a seeded permutation; with no validation the training split is used as it is."""
    frac = config.effective_val_fraction
    if frac == 0:
        return data.x_train, data.y_train, data.x_train[:0], data.y_train[:0]
    n = len(data.x_train)
    n_val = int(round(frac * n))
    if n_val < 1 or n - n_val < 1:
        raise EdgerobError(f"val_fraction {frac:g} of {n} training images leaves an empty "
                           f"validation or training set")
    perm = np.random.default_rng([config.seed, 1]).permutation(n)
    val, tr = np.sort(perm[:n_val]), np.sort(perm[n_val:])
    return data.x_train[tr], data.y_train[tr], data.x_train[val], data.y_train[val]


def _schedule(config: TrainConfig, opt, steps_per_epoch: int):
    """(per-step scheduler, per-epoch scheduler, AccelAT controller); at most one is set."""
    total = config.epochs * steps_per_epoch
    if config.lr_schedule == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, total), None, None
    if config.lr_schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=config.lr, total_steps=total, cycle_momentum=False), None, None
    if config.lr_schedule == "step":
        return None, torch.optim.lr_scheduler.StepLR(
            opt, config.effective_step_size, config.gamma), None
    if config.lr_schedule == "accelat":
        return None, None, AccelATController(
            config.accelat_k, config.accelat_patience, config.accelat_threshold,
            config.accelat_factor, config.lr_floor, config.lr)
    return None, None, None  # constant


def _schedule_record(config: TrainConfig, lr_trace, val_trace, controller) -> dict:
    name = config.lr_schedule
    options: dict[str, Any] = {"lr": config.lr}
    if name == "cosine":
        options["note"] = "cosine annealing to 0 over all steps, stepped every batch"
    elif name == "onecycle":
        options["note"] = ("torch OneCycleLR with max_lr=lr over all steps, stepped every "
                           "batch; momentum not cycled")
    elif name == "step":
        options.update(step_size=config.effective_step_size, gamma=config.gamma)
    elif name == "accelat":
        options.update(k=config.accelat_k, patience=config.accelat_patience,
                       threshold=config.accelat_threshold, factor=config.accelat_factor,
                       floor=config.lr_floor, val_fraction=config.effective_val_fraction,
                       watches=(f"robust validation accuracy (PGD-{config.check_steps} at eps "
                                f"{config.eps:g})" if config.adversarial
                                else "clean validation accuracy"),
                       changes_after_epochs=list(controller.changes))
    return {"name": name, "options": options,
            "lr_trace": lr_trace, "val_trace": val_trace or None,
            "note": "lr_trace: the lr at the start of each epoch trained (an epoch the "
                    "overfitting guard discarded included); val_trace: what AccelAT watched"}


def _robust_eval(model: nn.Module, data: Dataset, config: TrainConfig):
    """PGD (edgerob.host.attacks.evaluate: torchattacks PGD, random start, alpha 2.5*eps/steps) on
    the first test images at the training eps, on the fp32 model, BPDA through Squeeze."""
    n = min(config.robust_eval_samples, len(data.x_test))
    if config.eps == 0:
        return None, {"skipped": "eps is 0"}
    x, y = data.x_test[:n], data.y_test[:n]
    with _straight_through(model):
        r = attack_eval(model, x, y, "pgd", config.eps, seed=config.seed,
                        steps=config.robust_eval_steps)
    return r.robust_accuracy, {
        "attack": "pgd", "eps": config.eps, "steps": config.robust_eval_steps,
        "alpha": r.params["alpha"], "random_start": True, "samples": n, "split": "test",
        "seed": config.seed, "clean_accuracy": r.clean_accuracy,
        "bpda": bool(config.squeeze_bits), "precision": "fp32",
        "note": "robust = correct on the clean and on the adversarial image"}


class _EnergyMeter:
    """Sums a profiler's energy over the training windows of each epoch, where one can."""

    def __init__(self, name: str | None):
        self.profiler, self.total, self.note = None, 0.0, None
        if name is None:
            self.note = ("not measured: no energy profiler named (energy_profiler); this CPU "
                         "host has no sensor edgerob reads by default")
            return
        cls = profiler_class(name)
        ok, why = cls.available()
        if not ok:
            self.note = f"not measured: profiler {name} unavailable here: {why}"
            return
        self.profiler = cls()
        self.note = f"{name}: sum over the training windows of each epoch"

    def start(self):
        if self.profiler is not None:
            self.profiler.start()

    def stop(self):
        if self.profiler is not None:
            trace = self.profiler.stop()
            if trace.energy_j is None:
                self.note = "not measured: the profiler returned no energy for a window"
                self.profiler, self.total = None, None
            else:
                self.total += trace.energy_j

    def result(self) -> tuple[float | None, str | None]:
        return (self.total if self.profiler is not None else None), self.note


def default_model(config: TrainConfig = TrainConfig(),
                  on_epoch: Callable[[EpochReport], None] | None = None) -> tuple[Path, bool]:
    """The cached model for `config`, trained on first use. Returns (folder, trained_now)."""
    key = hashlib.sha256(json.dumps(asdict(config), sort_keys=True).encode()).hexdigest()[:12]
    depth = parse_arch(config.arch)
    folder = cache_dir() / "models" / (
        f"resnet{depth}-w{config.width or default_width(depth)}-{config.dataset}-{key}")
    if (folder / "model.json").is_file():
        try:
            load_checkpoint(folder)
            return folder, False
        except EdgerobError:
            pass  # damaged cache entry: train it again
    train(config, folder, on_epoch=on_epoch)
    return folder, True
