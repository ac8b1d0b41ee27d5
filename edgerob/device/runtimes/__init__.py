"""Runtimes: backends that run an artifact. One protocol, a registry keyed by name.

A runtime module is imported only when its name is asked for, so a device needs only the
library of the runtime it uses (onnxruntime, tensorrt, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np

from edgerob.device.plugins import load_plugin
from edgerob.errors import EdgerobError

# name -> "module:Class"; adding a backend is one line here and one file beside this one.
REGISTRY = {
    "onnxruntime": "edgerob.device.runtimes.ort:OnnxRuntime",
    "tensorrt": "edgerob.device.runtimes.trt:TensorRTRuntime",
    "torch": "edgerob.device.runtimes.torch_eager:TorchRuntime",
}

# onnxruntime execution providers that run on an NVIDIA GPU (a GPU target's accelerator).
GPU_PROVIDERS = ("TensorrtExecutionProvider", "CUDAExecutionProvider")


class Runtime(ABC):
    """A loaded artifact ready to run. `run` takes and returns float32 NCHW/(N, classes) arrays."""

    name: str = ""
    # True: runs the artifact's checkpoint, not its graph, and takes `load_model` (folder ->
    # (module, card)), the host's loader, since the model's code lives on the host.
    runs_checkpoint: bool = False

    @classmethod
    @abstractmethod
    def available(cls) -> tuple[bool, str]:
        """Whether this runtime can run here, and why not when it cannot."""

    @classmethod
    def accelerator_options(cls, options: dict) -> tuple[dict | None, str]:
        """`options` made to run on the CUDA GPU (the accelerator of a GPU or Jetson target), or
        None and why this runtime cannot run there. Runtimes with a GPU path override it."""
        return None, "it has no GPU path"

    @abstractmethod
    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes: list[int] | None = None, **options):
        """`batch_sizes`: every batch size the sweep will run (engines that need an
        optimisation profile build it from them; dynamic-shape runtimes ignore it)."""

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Logits for one batch; returns once the result is on the host (device synchronised)."""

    @abstractmethod
    def info(self) -> dict:
        """Library versions, execution providers/devices and settings, for the fingerprint."""


def runtime_class(name: str) -> type[Runtime]:
    return load_plugin("runtime", REGISTRY, name)


def create_runtime(name: str, artifact_path: str | Path, **options) -> Runtime:
    cls = runtime_class(name)
    ok, reason = cls.available()
    if not ok:
        raise EdgerobError(f"runtime {name!r} is not available here: {reason}")
    return cls(artifact_path, **options)
