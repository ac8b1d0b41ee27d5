"""Tests for edgerob.host.data: digits, bilinear resize, IDX/MNIST reading, CIFAR-10 pickles."""

from __future__ import annotations

import gzip
import os
import pickle
import shlex
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from edgerob.host.data import (
    Dataset,
    load_cifar10,
    load_dataset,
    load_digits,
    load_mnist,
    read_idx,
    read_mnist_split,
    resize_bilinear,
)
from edgerob.errors import EdgerobError

REAL_MNIST = Path(__file__).resolve().parents[2] / "shared/data/mnist"

IDX_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09, np.dtype(">i2"): 0x0B,
             np.dtype(">i4"): 0x0C, np.dtype(">f4"): 0x0D, np.dtype(">f8"): 0x0E}


def idx_bytes(arr: np.ndarray) -> bytes:
    """Encode an array as an IDX file (big-endian header and body)."""
    dtype = arr.dtype.newbyteorder(">") if arr.dtype.itemsize > 1 else arr.dtype
    arr = arr.astype(dtype)
    header = bytes([0, 0, IDX_CODES[np.dtype(dtype)], arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    return header + arr.tobytes()


def write_idx(path: Path, arr: np.ndarray) -> Path:
    data = idx_bytes(arr)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


# --- digits ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def digits() -> Dataset:
    return load_digits()


def test_digits_shapes_dtypes_and_range(digits):
    assert digits.name == "digits"
    assert digits.root is None
    assert digits.x_train.shape == (1437, 1, 16, 16)
    assert digits.x_test.shape == (360, 1, 16, 16)
    assert digits.y_train.shape == (1437,)
    assert digits.y_test.shape == (360,)
    for x in (digits.x_train, digits.x_test):
        assert x.dtype == np.float32
        assert x.min() >= 0.0 and x.max() <= 1.0
        assert x.max() == pytest.approx(1.0)  # some pixel is full intensity
    for y in (digits.y_train, digits.y_test):
        assert y.dtype == np.int64
        assert set(np.unique(y)) == set(range(10))
    assert digits.input_shape == (1, 16, 16)
    assert digits.num_classes == 10
    assert digits.class_names == [str(i) for i in range(10)]


def test_digits_split_is_stratified(digits):
    counts = np.bincount(digits.y_test, minlength=10)
    # 1,797 images, ~180 per class, 20% held out: 35 to 37 of each class in the test split
    assert counts.min() >= 35 and counts.max() <= 37


def test_digits_deterministic(digits):
    again = load_digits()
    np.testing.assert_array_equal(again.x_train, digits.x_train)
    np.testing.assert_array_equal(again.y_train, digits.y_train)
    np.testing.assert_array_equal(again.x_test, digits.x_test)
    np.testing.assert_array_equal(again.y_test, digits.y_test)


def test_digits_mean_std_per_channel(digits):
    assert isinstance(digits.mean, list) and len(digits.mean) == 1
    assert isinstance(digits.std, list) and len(digits.std) == 1
    assert all(isinstance(v, float) for v in digits.mean + digits.std)
    assert digits.mean[0] == pytest.approx(float(digits.x_train.mean()), rel=1e-5)
    assert digits.std[0] == pytest.approx(float(digits.x_train.std()), rel=1e-5)
    assert 0.0 < digits.mean[0] < 0.5
    assert 0.0 < digits.std[0] < 0.5


def test_dataset_mean_std_are_per_channel_and_train_only():
    x_train = np.zeros((4, 3, 2, 2), np.float32)
    x_train[:, 0] = 0.25
    x_train[:, 1] = np.array([0.0, 1.0, 0.0, 1.0], np.float32)[:, None, None]
    x_train[:, 2] = 1.0
    ds = Dataset("t", x_train, np.zeros(4, np.int64), np.full((1, 3, 2, 2), 0.9, np.float32),
                 np.zeros(1, np.int64), ["a", "b"])
    assert ds.mean == pytest.approx([0.25, 0.5, 1.0])
    assert ds.std == pytest.approx([0.0, 0.5, 0.0])
    assert ds.num_classes == 2
    assert ds.input_shape == (3, 2, 2)


def test_digits_native_size_is_the_raw_sklearn_pixels():
    ds = load_digits(size=8)
    assert ds.x_train.shape[1:] == (1, 8, 8)
    # at the native size the resize is the identity, so pixels are the sklearn values 0..16 / 16
    scaled = ds.x_train * 16
    np.testing.assert_allclose(scaled, np.round(scaled), atol=1e-5)


# --- resize_bilinear -------------------------------------------------------------------------

def test_resize_constant_image_stays_constant():
    img = np.full((2, 3, 5, 7), 0.37, np.float32)
    for size in (3, 5, 16, 31):
        out = resize_bilinear(img, size)
        assert out.shape == (2, 3, size, size)
        assert out.dtype == np.float32
        np.testing.assert_allclose(out, 0.37, atol=1e-6)


def test_resize_upsample_2x_matches_torch():
    torch = pytest.importorskip("torch")
    img = np.array([[[[0.0, 1.0], [0.5, 0.25]]]], np.float32)
    ours = resize_bilinear(img, 4)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img), size=(4, 4), mode="bilinear",
                                          align_corners=False).numpy()
    assert ours.shape == (1, 1, 4, 4)
    np.testing.assert_allclose(ours, ref, atol=1e-6)
    # hand-checked corners and one interior value (half-pixel centres)
    assert ours[0, 0, 0, 0] == pytest.approx(0.0)
    assert ours[0, 0, 0, 3] == pytest.approx(1.0)
    assert ours[0, 0, 3, 3] == pytest.approx(0.25)
    assert ours[0, 0, 0, 1] == pytest.approx(0.25)


@pytest.mark.parametrize("shape,size", [((2, 3, 5, 3), 7), ((1, 2, 8, 8), 3), ((1, 1, 8, 8), 16)])
def test_resize_matches_torch_random(shape, size):
    torch = pytest.importorskip("torch")
    img = np.random.default_rng(0).random(shape, dtype=np.float32)
    ref = torch.nn.functional.interpolate(torch.from_numpy(img), size=(size, size),
                                          mode="bilinear", align_corners=False).numpy()
    np.testing.assert_allclose(resize_bilinear(img, size), ref, atol=1e-6)


# --- read_idx --------------------------------------------------------------------------------

@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip_uint8_3d(tmp_path, suffix):
    arr = np.random.default_rng(1).integers(0, 256, (5, 4, 3), dtype=np.uint8)
    out = read_idx(write_idx(tmp_path / f"images-idx3-ubyte{suffix}", arr))
    assert out.dtype == np.uint8
    assert out.shape == (5, 4, 3)
    np.testing.assert_array_equal(out, arr)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_round_trip_uint8_1d(tmp_path, suffix):
    arr = np.array([7, 2, 1, 0, 4, 255], np.uint8)
    out = read_idx(write_idx(tmp_path / f"labels-idx1-ubyte{suffix}", arr))
    assert out.shape == (6,)
    np.testing.assert_array_equal(out, arr)


def test_read_idx_big_endian_int32_and_float(tmp_path):
    ints = np.array([[1, -2], [70000, 3]], ">i4")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "a", ints)), ints)
    floats = np.array([0.5, -1.25, 3e9], ">f8")
    np.testing.assert_array_equal(read_idx(write_idx(tmp_path / "b.gz", floats)), floats)


@pytest.mark.parametrize("header", [b"\x01\x00\x08\x01", b"\x00\x00\x07\x01", b"\x00\x00",
                                    b"PK\x03\x04"])
def test_read_idx_bad_magic(tmp_path, header):
    path = tmp_path / "bad"
    path.write_bytes(header + b"\x00\x00\x00\x02\x01\x02")
    with pytest.raises(EdgerobError, match="magic"):
        read_idx(path)


@pytest.mark.parametrize("suffix", ["", ".gz"])
def test_read_idx_truncated_body(tmp_path, suffix):
    data = idx_bytes(np.arange(24, dtype=np.uint8).reshape(2, 3, 4))[:-5]
    path = tmp_path / f"t{suffix}"
    path.write_bytes(gzip.compress(data) if suffix else data)
    with pytest.raises(EdgerobError, match="truncated") as err:
        read_idx(path)
    assert str(path) in str(err.value)


def test_read_idx_extra_bytes_rejected(tmp_path):
    path = tmp_path / "long"
    path.write_bytes(idx_bytes(np.arange(6, dtype=np.uint8)) + b"\x00")
    with pytest.raises(EdgerobError, match="corrupt"):
        read_idx(path)


def test_read_idx_missing_file(tmp_path):
    with pytest.raises(EdgerobError, match="cannot read"):
        read_idx(tmp_path / "nope.gz")


def test_read_idx_not_gzip_but_gz_suffix(tmp_path):
    path = tmp_path / "plain.gz"
    path.write_bytes(idx_bytes(np.arange(6, dtype=np.uint8)))
    with pytest.raises(EdgerobError):
        read_idx(path)


def test_read_idx_truncated_header(tmp_path):
    path = tmp_path / "short-header"
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0, 0, 2]))  # says 3 dims, holds 1
    with pytest.raises(EdgerobError, match="truncated"):
        read_idx(path)


def test_read_idx_corrupt_gzip_stream(tmp_path):
    raw = gzip.compress(idx_bytes(np.arange(100, dtype=np.uint8)))
    # byte 10 opens the deflate stream: 0xFF sets BTYPE=11, a reserved (invalid) block type
    bad = raw[:10] + b"\xff" + raw[11:]
    path = tmp_path / "corrupt.gz"
    path.write_bytes(bad)
    with pytest.raises(EdgerobError):
        read_idx(path)


# --- MNIST (synthetic) -----------------------------------------------------------------------

def make_mnist(root: Path, n_train: int = 6, n_test: int = 4, gz: bool = True) -> dict:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(2)
    suffix = ".gz" if gz else ""
    out = {}
    for split, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        images[0, 0, 0], images[0, 0, 1] = 255, 51
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / f"{split}-images-idx3-ubyte{suffix}", images)
        write_idx(root / f"{split}-labels-idx1-ubyte{suffix}", labels)
        out[split] = (images, labels)
    return out


@pytest.mark.parametrize("gz", [True, False])
def test_read_mnist_split_synthetic(tmp_path, gz):
    raw = make_mnist(tmp_path, gz=gz)
    for split in ("train", "t10k"):
        x, y = read_mnist_split(tmp_path, split)
        images, labels = raw[split]
        assert x.shape == (len(images), 1, 28, 28)
        assert x.dtype == np.float32
        assert y.dtype == np.int64
        np.testing.assert_allclose(x[:, 0], images.astype(np.float32) / 255.0, rtol=1e-6)
        assert x[0, 0, 0, 0] == 1.0
        assert x[0, 0, 0, 1] == pytest.approx(0.2)
        assert x.min() >= 0.0 and x.max() <= 1.0
        np.testing.assert_array_equal(y, labels.astype(np.int64))


def test_read_mnist_split_dot_idx_names(tmp_path):
    write_idx(tmp_path / "t10k-images.idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels.idx1-ubyte", np.array([3, 4], np.uint8))
    x, y = read_mnist_split(tmp_path, "t10k")
    assert x.shape == (2, 1, 28, 28)
    assert y.tolist() == [3, 4]


def test_load_mnist_synthetic(tmp_path):
    make_mnist(tmp_path, n_train=6, n_test=4)
    ds = load_mnist(tmp_path)
    assert ds.name == "mnist"
    assert ds.root == str(tmp_path)
    assert ds.x_train.shape == (6, 1, 28, 28)
    assert ds.x_test.shape == (4, 1, 28, 28)
    assert ds.y_train.tolist() == [0, 1, 2, 3, 4, 5]
    assert ds.y_test.tolist() == [0, 1, 2, 3]
    assert ds.class_names == [str(i) for i in range(10)]
    assert ds.input_shape == (1, 28, 28)
    same = load_dataset("mnist", root=tmp_path)
    np.testing.assert_array_equal(same.x_test, ds.x_test)


@pytest.mark.parametrize("missing", ["t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz",
                                     "train-images-idx3-ubyte.gz"])
def test_mnist_missing_file(tmp_path, missing):
    make_mnist(tmp_path)
    (tmp_path / missing).unlink()
    stem = missing.removesuffix(".gz")
    with pytest.raises(EdgerobError, match=stem):
        load_mnist(tmp_path)


def test_mnist_mismatched_lengths(tmp_path):
    make_mnist(tmp_path)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte.gz", np.arange(3, dtype=np.uint8))  # 4 images
    with pytest.raises(EdgerobError, match="disagree"):
        read_mnist_split(tmp_path, "t10k")
    with pytest.raises(EdgerobError):
        load_mnist(tmp_path)


def test_mnist_wrong_ndim(tmp_path):
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros((2, 1), np.uint8))
    with pytest.raises(EdgerobError, match="disagree"):
        read_mnist_split(tmp_path, "t10k")


# --- MNIST (real test split) -----------------------------------------------------------------

def test_real_mnist_test_split():
    if not REAL_MNIST.is_dir():
        pytest.skip(f"real MNIST not found at {REAL_MNIST} (shared/data/mnist beside the repo)")
    x, y = read_mnist_split(REAL_MNIST, "t10k")
    assert x.shape == (10000, 1, 28, 28)
    assert x.dtype == np.float32
    assert x.min() == 0.0 and x.max() == 1.0
    assert y.shape == (10000,) and y.dtype == np.int64
    assert y.min() == 0 and y.max() == 9
    counts = np.bincount(y, minlength=10)
    assert (counts > 0).all()
    assert counts.sum() == 10000
    assert y[0] == 7  # the well-known first MNIST test digit
    assert y[:5].tolist() == [7, 2, 1, 0, 4]
    # the published per-class counts of the MNIST test set
    assert counts.tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]


# --- CIFAR-10 (synthetic pickles) ------------------------------------------------------------

CIFAR_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship",
               "truck"]


class Evil:
    """Unpickling this runs a shell command."""

    def __init__(self, cmd: str):
        self.cmd = cmd

    def __reduce__(self):
        return (os.system, (self.cmd,))


def cifar_batch(n: int, offset: int) -> dict:
    data = ((np.arange(n * 3072).reshape(n, 3072) + offset * 7) % 256).astype(np.uint8)
    return {b"batch_label": b"synthetic", b"data": data,
            b"labels": [int((offset + i) % 10) for i in range(n)],
            b"filenames": [f"img{offset + i}.png".encode() for i in range(n)]}


def make_cifar(parent: Path, n: int = 3, n_test: int = 2) -> tuple[Path, dict]:
    folder = parent / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    batches = {}
    for i in range(1, 6):
        batches[f"data_batch_{i}"] = cifar_batch(n, offset=10 * i)
    batches["test_batch"] = cifar_batch(n_test, offset=99)
    for name, batch in batches.items():
        with open(folder / name, "wb") as f:
            pickle.dump(batch, f)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"label_names": [s.encode() for s in CIFAR_NAMES],
                     b"num_cases_per_batch": n, b"num_vis": 3072}, f)
    return folder, batches


@pytest.mark.parametrize("which", ["folder", "parent"])
def test_load_cifar10_synthetic(tmp_path, which):
    folder, batches = make_cifar(tmp_path, n=3, n_test=2)
    ds = load_cifar10(folder if which == "folder" else tmp_path)
    assert ds.name == "cifar10"
    assert ds.root == str(folder)
    assert ds.x_train.shape == (15, 3, 32, 32)
    assert ds.x_test.shape == (2, 3, 32, 32)
    assert ds.x_train.dtype == np.float32 and ds.y_train.dtype == np.int64
    assert ds.class_names == CIFAR_NAMES
    assert ds.num_classes == 10
    # batches are concatenated in order 1..5, rows are R, G, B planes of 32x32
    expected = np.concatenate([batches[f"data_batch_{i}"][b"data"] for i in range(1, 6)])
    np.testing.assert_allclose(ds.x_train, expected.reshape(-1, 3, 32, 32) / 255.0, rtol=1e-6)
    first = batches["data_batch_1"][b"data"][0]
    assert ds.x_train[0, 1, 0, 0] == pytest.approx(first[1024] / 255.0)  # first green pixel
    assert ds.x_train[0, 2, 31, 31] == pytest.approx(first[3071] / 255.0)  # last blue pixel
    expected_labels = sum((batches[f"data_batch_{i}"][b"labels"] for i in range(1, 6)), [])
    assert ds.y_train.tolist() == expected_labels
    assert ds.y_test.tolist() == batches["test_batch"][b"labels"]
    np.testing.assert_allclose(ds.x_test,
                               batches["test_batch"][b"data"].reshape(-1, 3, 32, 32) / 255.0)
    assert 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert len(ds.mean) == 3 and len(ds.std) == 3


def test_load_dataset_cifar10(tmp_path):
    make_cifar(tmp_path)
    ds = load_dataset("cifar10", root=tmp_path)
    assert ds.x_train.shape == (15, 3, 32, 32)


def test_cifar_meta_without_names_falls_back_to_digits(tmp_path):
    folder, _ = make_cifar(tmp_path)
    with open(folder / "batches.meta", "wb") as f:
        pickle.dump({b"num_vis": 3072}, f)
    assert load_cifar10(folder).class_names == [str(i) for i in range(10)]


@pytest.mark.parametrize("victim", ["data_batch_3", "test_batch", "batches.meta"])
def test_cifar_malicious_pickle_is_refused(tmp_path, victim):
    folder, _ = make_cifar(tmp_path / "data")
    marker = tmp_path / "pwned"
    with open(folder / victim, "wb") as f:
        pickle.dump(Evil(f"echo pwned > {shlex.quote(str(marker))}"), f)
    with pytest.raises(EdgerobError, match="refusing"):
        load_cifar10(folder)
    assert not marker.exists(), "unpickling ran the embedded command"


def test_cifar_malicious_pickle_nested_in_dict_is_refused(tmp_path):
    folder, _ = make_cifar(tmp_path / "data")
    marker = tmp_path / "pwned"
    batch = cifar_batch(3, 0)
    batch[b"labels"] = Evil(f"touch {shlex.quote(str(marker))}")
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(EdgerobError):
        load_cifar10(folder)
    assert not marker.exists()


def test_cifar_missing_batch(tmp_path):
    folder, _ = make_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(EdgerobError, match="test_batch"):
        load_cifar10(folder)


def test_cifar_label_count_mismatch(tmp_path):
    folder, _ = make_cifar(tmp_path)
    batch = cifar_batch(3, 0)
    batch[b"labels"] = batch[b"labels"][:2]
    with open(folder / "data_batch_2", "wb") as f:
        pickle.dump(batch, f)
    with pytest.raises(EdgerobError, match="labels"):
        load_cifar10(folder)


def test_cifar_missing_key_and_bad_size(tmp_path):
    folder, _ = make_cifar(tmp_path)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"labels": [1]}, f)
    with pytest.raises(EdgerobError, match="not a CIFAR-10 batch"):
        load_cifar10(folder)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump({b"data": np.zeros((1, 100), np.uint8), b"labels": [1]}, f)
    with pytest.raises(EdgerobError, match="not a CIFAR-10 batch"):
        load_cifar10(folder)


def test_cifar_truncated_pickle(tmp_path):
    folder, _ = make_cifar(tmp_path)
    blob = (folder / "data_batch_1").read_bytes()
    (folder / "data_batch_1").write_bytes(blob[: len(blob) // 2])
    with pytest.raises(EdgerobError, match="data_batch_1"):
        load_cifar10(folder)


def test_cifar_batch_that_is_not_a_dict(tmp_path):
    folder, _ = make_cifar(tmp_path)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump([1, 2, 3], f)
    with pytest.raises(EdgerobError):
        load_cifar10(folder)


@pytest.mark.parametrize("protocol", [2, 5])
def test_cifar_batches_in_other_pickle_protocols(tmp_path, protocol):
    folder, batches = make_cifar(tmp_path)
    with open(folder / "data_batch_1", "wb") as f:
        pickle.dump(batches["data_batch_1"], f, protocol=protocol)
    ds = load_cifar10(folder)
    assert ds.x_train.shape == (15, 3, 32, 32)


# --- load_dataset ----------------------------------------------------------------------------

def test_load_dataset_digits_default():
    ds = load_dataset()
    assert ds.name == "digits" and ds.x_train.shape == (1437, 1, 16, 16)


@pytest.mark.parametrize("name", ["imagenet", "MNIST", ""])
def test_load_dataset_unknown_name(name, tmp_path):
    with pytest.raises(EdgerobError, match="unknown dataset") as err:
        load_dataset(name, root=tmp_path)
    assert "digits" in str(err.value) and "cifar10" in str(err.value)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_load_dataset_needs_root(name):
    with pytest.raises(EdgerobError, match="needs a folder"):
        load_dataset(name)


@pytest.mark.parametrize("name", ["mnist", "cifar10"])
def test_load_dataset_nonexistent_root(name, tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(EdgerobError, match="does not exist") as err:
        load_dataset(name, root=missing)
    assert str(missing) in str(err.value)


def test_load_dataset_root_is_a_file(tmp_path):
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(EdgerobError):
        load_dataset("mnist", root=f)
