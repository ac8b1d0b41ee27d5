"""Datasets: images in [0, 1] as NCHW float32, integer labels, class names, per-channel mean/std.

Three sources, picked by name with `load_dataset`:
- `digits`: scikit-learn's bundled 8x8 digits (no download), upsampled to `size` x `size`;
- `mnist`: the IDX files (.gz or raw) from a folder the user names;
- `cifar10`: the python-pickle batches from a folder the user names, read with an unpickler that
  only builds plain containers and numpy arrays (a pickle can otherwise run arbitrary code).
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgerob.errors import EdgerobError

DATASETS = ("digits", "mnist", "cifar10")
DIGITS_SIZE = 16
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 0


@dataclass
class Dataset:
    name: str
    x_train: np.ndarray  # (N, C, H, W) float32 in [0, 1]
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: list[str]
    root: str | None = None  # folder it was read from; None for embedded data

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def mean(self) -> list[float]:
        return [float(v) for v in self.x_train.mean(axis=(0, 2, 3))]

    @property
    def std(self) -> list[float]:
        return [float(v) for v in self.x_train.std(axis=(0, 2, 3))]


def load_dataset(name: str = "digits", root: str | Path | None = None) -> Dataset:
    """Load a dataset by name; `root` is the folder for `mnist` and `cifar10`."""
    if name == "digits":
        return load_digits()
    if name not in DATASETS:
        raise EdgerobError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    if root is None:
        raise EdgerobError(f"dataset {name!r} needs a folder: pass --data-root DIR")
    root = Path(root)
    if not root.is_dir():
        raise EdgerobError(f"dataset folder {root} does not exist")
    return load_mnist(root) if name == "mnist" else load_cifar10(root)


def load_digits(size: int = DIGITS_SIZE) -> Dataset:
    """scikit-learn's 1,797 8x8 digits, upsampled to size x size, split 80/20 stratified."""
    from sklearn.datasets import load_digits as sk_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_digits()
    images = (bunch.images / 16.0).astype(np.float32)[:, None]  # pixel values are 0..16
    images = resize_bilinear(images, size)
    labels = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, random_state=DIGITS_SPLIT_SEED,
        stratify=labels)
    return Dataset("digits", x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)])


def resize_bilinear(images: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of NCHW images to size x size (half-pixel centres, as torch/PIL do)."""
    _, _, h, w = images.shape

    def axis_weights(n_in: int):
        pos = np.clip((np.arange(size) + 0.5) * n_in / size - 0.5, 0, n_in - 1)
        lo = np.floor(pos).astype(int)
        hi = np.minimum(lo + 1, n_in - 1)
        return lo, hi, (pos - lo).astype(np.float32)

    r0, r1, rw = axis_weights(h)
    c0, c1, cw = axis_weights(w)
    rows = images[:, :, r0] * (1 - rw)[:, None] + images[:, :, r1] * rw[:, None]
    out = rows[..., c0] * (1 - cw) + rows[..., c1] * cw
    return np.clip(out, 0.0, 1.0).astype(np.float32)


# --- MNIST (IDX) -----------------------------------------------------------------------------

_IDX_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path) -> np.ndarray:
    """Read one IDX file (gzipped or raw) into an array, checking its header against its size."""
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise EdgerobError(f"cannot read IDX file {path}: {e}") from None
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] not in _IDX_DTYPES:
        raise EdgerobError(f"{path} is not an IDX file (bad magic number)")
    ndim = data[3]
    if len(data) < 4 + 4 * ndim:
        raise EdgerobError(f"{path} is truncated: its header declares {ndim} dimensions")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    dtype = np.dtype(_IDX_DTYPES[data[2]])
    expected = int(np.prod(dims)) * dtype.itemsize
    body = data[4 + 4 * ndim :]
    if len(body) != expected:
        raise EdgerobError(f"{path} is truncated or corrupt: header says {dims}, "
                           f"expected {expected} bytes of data, found {len(body)}")
    return np.frombuffer(body, dtype=dtype).reshape(dims)


def _find(root: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz", stem.replace("-idx", ".idx")):
        if (root / name).is_file():
            return root / name
    raise EdgerobError(f"{root} has no {stem}[.gz]")


def read_mnist_split(root: str | Path, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """One MNIST split (`train` or `t10k`) as (N, 1, 28, 28) float32 in [0, 1] and int64 labels."""
    root = Path(root)
    images = read_idx(_find(root, f"{split}-images-idx3-ubyte"))
    labels = read_idx(_find(root, f"{split}-labels-idx1-ubyte"))
    if images.ndim != 3 or labels.ndim != 1 or len(images) != len(labels):
        raise EdgerobError(f"MNIST {split} files in {root} disagree: images {images.shape}, "
                           f"labels {labels.shape}")
    return (images.astype(np.float32) / 255.0)[:, None], labels.astype(np.int64)


def load_mnist(root: str | Path) -> Dataset:
    x_tr, y_tr = read_mnist_split(root, "train")
    x_te, y_te = read_mnist_split(root, "t10k")
    return Dataset("mnist", x_tr, y_tr, x_te, y_te, [str(i) for i in range(10)], str(root))


# --- CIFAR-10 (python pickle) ----------------------------------------------------------------

class _SafeUnpickler(pickle.Unpickler):
    """Builds only the numpy arrays and plain containers CIFAR batches hold; nothing callable."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"), ("numpy", "dtype"),
        # protocol 5 buffers and protocol 2 bytes: data, not code
        ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),
    }

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}")


def _unpickle(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            obj = _SafeUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
    except FileNotFoundError:
        raise EdgerobError(f"CIFAR-10 folder has no {path.name}: expected {path}") from None
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as e:
        raise EdgerobError(f"cannot read CIFAR-10 batch {path}: {e}") from None
    if not isinstance(obj, dict):
        raise EdgerobError(f"{path} is not a CIFAR-10 batch: holds a {type(obj).__name__}")
    return obj


def _cifar_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    batch = _unpickle(path)
    try:
        data = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = np.asarray(batch[b"labels"], dtype=np.int64)
    except (KeyError, ValueError) as e:
        raise EdgerobError(f"{path} is not a CIFAR-10 batch: {e}") from None
    if len(data) != len(labels):
        raise EdgerobError(f"{path}: {len(data)} images but {len(labels)} labels")
    return data.astype(np.float32) / 255.0, labels


def load_cifar10(root: str | Path) -> Dataset:
    """CIFAR-10 from `cifar-10-batches-py` (the folder itself or its parent)."""
    root = Path(root)
    if (root / "cifar-10-batches-py").is_dir():
        root = root / "cifar-10-batches-py"
    parts = [_cifar_batch(root / f"data_batch_{i}") for i in range(1, 6)]
    x_te, y_te = _cifar_batch(root / "test_batch")
    meta = _unpickle(root / "batches.meta")
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in meta.get(b"label_names", [])]
    return Dataset("cifar10", np.concatenate([p[0] for p in parts]),
                   np.concatenate([p[1] for p in parts]), x_te, y_te,
                   names or [str(i) for i in range(10)], str(root))
