"""Commands that make what gets measured, on the host: train, export, attack."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import numpy as np
import typer
from rich.table import Table

from edgerob.cli.common import csv_list, epoch_progress, err, fmt, out, user_errors
from edgerob.device.sequential import StopRule, check_rule
from edgerob.errors import EdgerobError
from edgerob.host.attacks import craft, input_set_name
from edgerob.host.data import load_dataset

@user_errors
def train(
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for model.pt + model.json.")],
    arch: Annotated[str, typer.Option(help="resnet8/14/20/32/56/110 or resnet18/34/50.")] = "resnet8",
    width: Annotated[Optional[int], typer.Option(help="Base width (default 16, or 64 for "
                                                       "resnet18/34/50).")] = None,
    dataset: Annotated[str, typer.Option(help="digits (embedded), mnist or cifar10.")] = "digits",
    data_root: Annotated[Optional[Path], typer.Option(help="Folder holding MNIST/CIFAR-10.")] = None,
    epochs: int = 15,
    batch_size: int = 64,
    lr: float = 0.05,
    seed: int = 0,
    adversarial: Annotated[Optional[str], typer.Option(
        help="Adversarial training: pgd or fgsm-rs (FGSM with random start).")] = None,
    eps: Annotated[float, typer.Option(help="L-inf radius in [0, 1] for adversarial training "
                                            "and the recorded robust accuracy.")] = 0.1,
    steps: Annotated[int, typer.Option(help="PGD steps in adversarial training.")] = 7,
    alpha: Annotated[Optional[float], typer.Option(help="Attack step size (default 2.5*eps/"
                                                        "steps for pgd, 1.25*eps for "
                                                        "fgsm-rs).")] = None,
    lr_schedule: Annotated[str, typer.Option(help="cosine, constant, step, onecycle or "
                                                  "accelat.")] = "cosine",
    accelat_k: Annotated[int, typer.Option(help="AccelAT: epochs in the accuracy mean.")] = 5,
    accelat_patience: Annotated[int, typer.Option(help="AccelAT: epochs between cuts.")] = 5,
    accelat_threshold: Annotated[float, typer.Option(help="AccelAT: cut when the mean rose "
                                                          "by less.")] = 0.005,
    accelat_factor: Annotated[float, typer.Option(help="AccelAT: lr multiplier at a cut.")] = 0.8,
    lr_floor: Annotated[float, typer.Option(help="AccelAT: lowest lr.")] = 1e-6,
    val_fraction: Annotated[Optional[float], typer.Option(help="Training images held out for "
                                                               "validation (default 0.1 with "
                                                               "accelat, else 0).")] = None,
    step_size: Annotated[Optional[int], typer.Option(help="step schedule: epochs between "
                                                          "decays (default epochs/3).")] = None,
    gamma: Annotated[float, typer.Option(help="step schedule: lr factor per decay.")] = 0.1,
    train_noise: Annotated[float, typer.Option(help="Gaussian sigma on training inputs.")] = 0.0,
    output_noise: Annotated[float, typer.Option(help="Gaussian sigma on the logits at "
                                                     "inference (seeded; exported).")] = 0.0,
    output_noise_seed: Annotated[Optional[int], typer.Option(help="Seed of the output noise "
                                                                  "(default --seed).")] = None,
    squeeze_bits: Annotated[Optional[int], typer.Option(help="Feature squeezing of inputs to "
                                                             "this bit depth (exported).")] = None,
    precision: Annotated[str, typer.Option(help="fp32, fp16, bf16 (CPU autocast) or fp64.")
                         ] = "fp32",
    energy_profiler: Annotated[Optional[str], typer.Option(help="Profiler for training energy "
                                                                "(e.g. rapl, nvml).")] = None,
):
    """Train a ResNet with seeded SGD; prints and records test accuracy and train time."""
    from edgerob.host.train import TrainConfig, train as train_model  # torch: not on devices

    config = TrainConfig(arch=arch, width=width, dataset=dataset,
                         data_root=str(data_root) if data_root else None, epochs=epochs,
                         batch_size=batch_size, lr=lr, seed=seed,
                         adversarial=adversarial.lower() if adversarial else None, eps=eps,
                         steps=steps, alpha=alpha, lr_schedule=lr_schedule.lower(),
                         accelat_k=accelat_k, accelat_patience=accelat_patience,
                         accelat_threshold=accelat_threshold, accelat_factor=accelat_factor,
                         lr_floor=lr_floor, val_fraction=val_fraction, step_size=step_size,
                         gamma=gamma, train_noise=train_noise, output_noise=output_noise,
                         output_noise_seed=output_noise_seed,
                         squeeze_bits=squeeze_bits, precision=precision.lower(),
                         energy_profiler=energy_profiler)
    config.validate()
    progress, on_epoch = epoch_progress(epochs)
    with progress:
        _, card = train_model(config, out_dir, on_epoch=on_epoch)
    robust = ("" if card.robust_accuracy is None else
              f", PGD robust accuracy {card.robust_accuracy:.2%} at eps {config.eps:g}")
    short = ("" if card.epochs_run == card.epochs_requested
             else f" (of {card.epochs_requested} requested)")
    out.print(f"{card.name}: test accuracy {card.accuracy:.2%}{robust} after {card.epochs_run} "
              f"epochs{short}, train time {card.train_time_s:.1f} s -> {out_dir}",
              highlight=False)
    if card.stopped_early:
        err.print(f"[yellow]stopped early[/] {card.stop_reason}", highlight=False)


@user_errors
def export_cmd(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (model.pt + model.json).")],
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Artifact folder "
                                                     "(default MODEL_DIR/artifacts).")] = None,
    precisions: Annotated[str, typer.Option(help="Comma-separated.")] = "fp32,fp16,int8",
    calibration_samples: Annotated[int, typer.Option(min=1)] = 256,
    force: Annotated[bool, typer.Option(help="Rebuild artifacts that already exist.")] = False,
):
    """Export to ONNX at each precision with a parity report against fp32."""
    from edgerob.host.export import export  # torch, onnx: not on devices

    arts = export(model_dir, out_dir, csv_list(precisions),
                  calibration_samples=calibration_samples, reuse=not force)
    table = Table("precision", "file", "size KiB", "top-1 agreement", "max |logit err|",
                  "accuracy", "vs", "sha256", title="artifacts")
    for a in arts.values():
        p = a.parity
        table.add_row(a.precision, a.path, f"{a.size_bytes / 1024:.0f}",
                      f"{p['top1_agreement']:.2%}", f"{p['max_abs_logit_error']:.3g}",
                      f"{p['accuracy']:.2%}", p["reference"], a.sha256[:12])
    out.print(table)


@user_errors
def attack(
    model_dir: Annotated[Path, typer.Argument(help="Model folder (model.pt + model.json).")],
    attacks: Annotated[str, typer.Option("--attack", "-a", help="Comma-separated: fgsm, pgd, "
                                          "cw, deepfool, square, autoattack.")] = "pgd",
    eps: Annotated[str, typer.Option(help="Comma-separated L-inf radii in [0, 1].")] = "0.1",
    precise: Annotated[bool, typer.Option(help="Add the compensations for gradient masking "
                                               "(Lee & Chandrakasan 2021).")] = False,
    official: Annotated[bool, typer.Option(help="AutoAttack as fra31/auto-attack's standard "
                                                "version (100 steps, 9 target classes, Square "
                                                "5000 queries on the official schedule).")
                        ] = False,
    samples: Annotated[Optional[int], typer.Option(min=1, help="First N test images.")] = None,
    out_dir: Annotated[Optional[Path], typer.Option("--out", "-o", help="Folder for the .npz "
                                                     "input sets (default MODEL_DIR/inputs).")] = None,
    seed: int = 0,
    half_width: Annotated[Optional[float], typer.Option(
        help="Attack in a seeded random order and stop when the robust accuracy's "
             "anytime-valid interval has this half-width, in (0, 0.5].")] = None,
    confidence: Annotated[float, typer.Option(help="Of that interval, in (0, 1).")] = 0.95,
    max_samples: Annotated[Optional[int], typer.Option(
        help="With --half-width: attack at most this many samples.")] = None,
):
    """Craft white-box input sets on the fp32 model; report clean and robust accuracy."""
    from edgerob.host.models import load_checkpoint  # torch: not on devices

    stop = None
    if half_width is not None:
        check_rule(half_width, confidence, max_samples, "edgerob attack")
        stop = StopRule(half_width, confidence, max_samples)
    elif max_samples is not None:
        raise EdgerobError("--max-samples needs --half-width (without it every sample is "
                           "attacked)")
    names, radii = csv_list(attacks), csv_list(eps, float)
    model, card = load_checkpoint(model_dir)
    data = load_dataset(card.dataset, card.dataset_root)
    n = min(samples or len(data.x_test), len(data.x_test))
    ids = np.arange(n, dtype=np.int64)
    folder = out_dir or Path(model_dir) / "inputs"
    table = Table("input set", "clean acc", "robust acc", "naive robust acc", "strength",
                  "crafting s", "file", title=f"{card.name}: white-box attacks on {n} images")
    if stop:
        for col in ("samples used", f"{stop.confidence:.0%} interval", "stopped by", "saved s"):
            table.add_column(col)
    for name in names:
        for e in radii:
            s = craft(model, data.x_test[:n], data.y_test[:n], ids, name, e, precise=precise,
                      official=official, seed=seed, stop=stop)
            path = folder / f"{input_set_name(name, e)}.npz"
            s.save(path)
            seq = s.params.get("sequential")
            table.add_row(s.name, fmt(s.clean_accuracy, ".2%"), fmt(s.robust_accuracy, ".2%"),
                          fmt(s.params.get("naive_robust_accuracy"), ".2%"), s.strength or "",
                          fmt(s.crafting_time_s, ".2f"), str(path),
                          *(_sequential_cells(seq) if seq else ()))
            for w in s.params.get("warnings", []):
                err.print(f"[yellow]warning[/] {s.name}: {w}", highlight=False)
    out.print(table)


def _sequential_cells(seq: dict) -> tuple[str, ...]:
    """samples used of available, the interval, why it stopped, and the time not spent (the
    unattacked samples at the measured time per sample: a projection)."""
    n, total = seq["n_attacked"], seq["n_available"]
    return (f"{n}/{total} ({n / total:.0%})", f"[{seq['ci_low']:.3f}, {seq['ci_high']:.3f}]",
            seq["stopped_by"], fmt(seq["projected_saved_s"], ".1f"))
