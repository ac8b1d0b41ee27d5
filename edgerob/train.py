"""Seeded SGD training of a ResNet on a dataset; the card records what really ran."""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from torch import nn

from edgerob.data import Dataset, load_dataset
from edgerob.errors import EdgerobError
from edgerob.models import ModelCard, ResNet, build_model, default_width, parse_arch, save_checkpoint


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

    def validate(self) -> None:
        parse_arch(self.arch)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise EdgerobError(f"{name} must be at least 1, got {getattr(self, name)}")
        if self.lr <= 0:
            raise EdgerobError(f"lr must be positive, got {self.lr}")
        if self.width is not None and self.width < 1:
            raise EdgerobError(f"width must be at least 1, got {self.width}")


@dataclass
class EpochReport:
    epoch: int
    epochs: int
    loss: float
    test_accuracy: float
    lr: float


def evaluate(model: nn.Module, images: np.ndarray, labels: np.ndarray,
             batch_size: int = 256) -> float:
    """Top-1 accuracy of a torch model on numpy images."""
    model.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(images), batch_size):
            logits = model(torch.from_numpy(images[i:i + batch_size]))
            correct += int((logits.argmax(1).numpy() == labels[i:i + batch_size]).sum())
    return correct / len(images)


def train(config: TrainConfig = TrainConfig(), out_dir: str | Path | None = None,
          dataset: Dataset | None = None,
          on_epoch: Callable[[EpochReport], None] | None = None) -> tuple[ResNet, ModelCard]:
    """Train, evaluate on the test split, and (with `out_dir`) save the checkpoint and card.

    SGD with Nesterov momentum and a cosine learning rate; every random choice (init, shuffles)
    comes from `config.seed`, so the same config gives the same weights on the same machine.
    """
    config.validate()
    data = dataset or load_dataset(config.dataset, config.data_root)
    depth = parse_arch(config.arch)
    card = ModelCard(
        arch=f"resnet{depth}", depth=depth, width=config.width or default_width(depth),
        in_channels=data.input_shape[0], num_classes=data.num_classes,
        input_shape=list(data.input_shape), dataset=data.name, dataset_root=data.root,
        mean=data.mean, std=data.std, class_names=data.class_names,
        epochs_requested=config.epochs, train=asdict(config))
    torch.manual_seed(config.seed)
    model = build_model(card)
    rng = np.random.default_rng(config.seed)
    opt = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                          weight_decay=config.weight_decay, nesterov=True)
    steps_per_epoch = -(-len(data.x_train) // config.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, config.epochs * steps_per_epoch)
    loss_fn = nn.CrossEntropyLoss()
    x_all, y_all = torch.from_numpy(data.x_train), torch.from_numpy(data.y_train)

    train_time = 0.0
    epochs_run = 0
    accuracy = 0.0
    for epoch in range(1, config.epochs + 1):
        t0 = time.perf_counter()
        model.train()
        order = torch.from_numpy(rng.permutation(len(x_all)))
        total = 0.0
        for i in range(0, len(order), config.batch_size):
            idx = order[i:i + config.batch_size]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_all[idx]), y_all[idx])
            loss.backward()
            opt.step()
            sched.step()
            total += loss.item() * len(idx)
        train_time += time.perf_counter() - t0  # evaluation below is not training time
        epochs_run = epoch
        accuracy = evaluate(model, data.x_test, data.y_test)
        if on_epoch:
            on_epoch(EpochReport(epoch, config.epochs, total / len(order), accuracy,
                                 opt.param_groups[0]["lr"]))
    card.accuracy = accuracy
    card.epochs_run = epochs_run
    card.train_time_s = train_time
    card.created_at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    model.eval()
    if out_dir is not None:
        save_checkpoint(model, card, out_dir)
    return model, card


def cache_dir() -> Path:
    """Where edgerob keeps models it trained on its own: $EDGEROB_CACHE or ~/.cache/edgerob."""
    root = os.environ.get("EDGEROB_CACHE") or Path(
        os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgerob"
    return Path(root)


def default_model(config: TrainConfig = TrainConfig(),
                  on_epoch: Callable[[EpochReport], None] | None = None) -> tuple[Path, bool]:
    """The cached model for `config`, trained on first use. Returns (folder, trained_now)."""
    from edgerob.models import load_checkpoint

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
