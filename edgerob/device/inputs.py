"""Input sets as a device reads them: clean or adversarial samples with labels and per-sample ids.

One .npz each (arrays plus a JSON metadata string; never pickle), written on the host
(`edgerob.host.attacks.craft`, `edgerob.host.workload`) and loaded on a device with numpy alone.
"""

from __future__ import annotations

import io
import json
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes

INPUT_SET_FORMAT = "edgerob-input-set"
INPUT_SET_VERSION = 1


def input_set_name(attack: str | None, eps: float) -> str:
    """`clean` for no attack, else `ATTACK@EPS` (e.g. `pgd@0.1`), the store's input_set column."""
    return "clean" if attack is None else f"{attack}@{eps:g}"


# --- input sets --------------------------------------------------------------------------------

@dataclass
class InputSet:
    """Clean or adversarial samples: what a sweep runs through a deployed model."""

    name: str  # "clean" or "ATTACK@EPS"
    images: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    labels: np.ndarray  # (N,) int64
    sample_ids: np.ndarray  # (N,) int64, index into the dataset's test split
    attack: str | None = None
    eps: float = 0.0
    params: dict = field(default_factory=dict)
    crafting_time_s: float | None = None
    clean_accuracy: float | None = None  # of the fp32 torch model on these samples
    robust_accuracy: float | None = None
    strength: str | None = None  # e.g. "edgerob-default", "torchattacks-default", "official"

    def __post_init__(self) -> None:
        self.images = as_images(self.images, f"input set {self.name!r}")
        n = len(self.images)
        self.labels = as_int_vector(self.labels, n, "labels", f"input set {self.name!r}")
        self.sample_ids = as_int_vector(self.sample_ids, n, "sample_ids",
                                         f"input set {self.name!r}")
        self.eps = float(self.eps)

    def __len__(self) -> int:
        return len(self.images)

    @classmethod
    def clean(cls, images, labels, sample_ids, clean_accuracy: float | None = None) -> InputSet:
        return cls("clean", images, labels, sample_ids, clean_accuracy=clean_accuracy,
                   robust_accuracy=clean_accuracy)

    def metadata(self) -> dict:
        return {"format": INPUT_SET_FORMAT, "version": INPUT_SET_VERSION, "name": self.name,
                "attack": self.attack, "eps": self.eps, "params": self.params,
                "crafting_time_s": self.crafting_time_s, "clean_accuracy": self.clean_accuracy,
                "robust_accuracy": self.robust_accuracy, "strength": self.strength,
                "n_samples": len(self)}

    def save(self, path: str | Path) -> Path:
        """Write one .npz atomically: images, labels, sample_ids and `meta` (a JSON string)."""
        path = Path(path)
        try:
            meta = json.dumps(self.metadata(), allow_nan=False)
        except (TypeError, ValueError) as e:
            raise EdgerobError(f"input set {self.name!r} has metadata that is not plain JSON: "
                               f"{e}") from None
        buf = io.BytesIO()
        np.savez(buf, images=self.images, labels=self.labels, sample_ids=self.sample_ids,
                 meta=np.array(meta))
        atomic_write_bytes(path, buf.getvalue())
        return path

    @classmethod
    def load(cls, path: str | Path) -> InputSet:
        path = Path(path)
        if not path.is_file():
            raise EdgerobError(f"input set file {path} does not exist")
        try:
            with np.load(path, allow_pickle=False) as npz:
                missing = {"images", "labels", "sample_ids", "meta"} - set(npz.files)
                if missing:
                    raise EdgerobError(f"{path} is not an edgerob input set: no "
                                       f"{', '.join(sorted(missing))}")
                images, labels, ids = npz["images"], npz["labels"], npz["sample_ids"]
                meta = json.loads(str(npz["meta"]))
        except EdgerobError:
            raise
        except (OSError, ValueError, EOFError, KeyError, zipfile.BadZipFile) as e:
            why = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise EdgerobError(f"cannot read input set {path}: {why}") from None
        if not isinstance(meta, dict) or meta.get("format") != INPUT_SET_FORMAT:
            raise EdgerobError(f"{path} is not an edgerob input set (no format marker)")
        if meta.get("version") != INPUT_SET_VERSION:
            raise EdgerobError(f"{path} is input set format version {meta.get('version')}; "
                               f"this edgerob reads version {INPUT_SET_VERSION}")
        try:
            return cls(name=str(meta["name"]), images=images, labels=labels, sample_ids=ids,
                       attack=meta["attack"], eps=float(meta["eps"]), params=meta["params"],
                       crafting_time_s=meta["crafting_time_s"],
                       clean_accuracy=meta["clean_accuracy"],
                       robust_accuracy=meta["robust_accuracy"], strength=meta["strength"])
        except (KeyError, TypeError, ValueError) as e:
            raise EdgerobError(f"{path} has incomplete input-set metadata: {e}") from None
        except EdgerobError as e:
            raise EdgerobError(f"{path}: {e}") from None


# --- validation ---------------------------------------------------------------------------------

def as_images(images, what: str = "images") -> np.ndarray:
    if hasattr(images, "detach"):  # a torch tensor
        images = images.detach().cpu().numpy()
    images = np.asarray(images)
    if images.ndim != 4 or len(images) == 0:
        raise EdgerobError(f"{what}: images must have shape (N, C, H, W) with N >= 1, "
                           f"got {images.shape}")
    if not np.issubdtype(images.dtype, np.floating):
        raise EdgerobError(f"{what}: images must be floats in [0, 1], got dtype {images.dtype}")
    images = np.ascontiguousarray(images, dtype=np.float32)
    lo, hi = float(images.min()), float(images.max())
    if not (math.isfinite(lo) and math.isfinite(hi)) or lo < 0.0 or hi > 1.0:
        raise EdgerobError(f"{what}: images must lie in [0, 1], found values in [{lo:g}, {hi:g}]")
    return images


def as_int_vector(values, n: int, name: str, what: str) -> np.ndarray:
    if hasattr(values, "detach"):
        values = values.detach().cpu().numpy()
    values = np.asarray(values)
    if values.ndim != 1 or len(values) != n:
        raise EdgerobError(f"{what}: {name} must be a vector of length {n} (one per image), "
                           f"got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.integer):
        raise EdgerobError(f"{what}: {name} must be integers, got dtype {values.dtype}")
    if n and values.min() < 0:
        raise EdgerobError(f"{what}: {name} must be non-negative, found {int(values.min())}")
    return np.ascontiguousarray(values, dtype=np.int64)
