"""The torch and tensorrt runtimes.

torch runs for real on the CPU against onnxruntime. TensorRT cannot run here (no GPU, no
TensorRT): its version dispatch, batch range, cache keys and availability reasons are tested as
plain functions with fake `tensorrt` modules, and its build/load/run plumbing against a fake
TensorRT + cuda-python written from their documented Python APIs (the fake's "engine" runs the
artifact with onnxruntime). Whether the real libraries behave like the fakes is only checked on a
GPU machine (see the docstring of edgerob/device/runtimes/trt.py).
"""

from __future__ import annotations

import ctypes
import enum
import json
import shutil
import subprocess
import sys
import types
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgerob.catalog.profiles import Profile
from edgerob.catalog.targets import load_target
from edgerob.device.sweep import run_profile
from edgerob.errors import EdgerobError
from edgerob.host.workload import prepare_workload
from edgerob.store import Store
from edgerob.device.artifacts import metadata_path
from edgerob.host.models import WEIGHTS_FILE, load_checkpoint
from edgerob.device.runtimes import create_runtime, runtime_class
from edgerob.device.runtimes import trt as trtmod
from edgerob.device.runtimes.torch_eager import TorchRuntime

from conftest import FAST


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """torch on 2 threads is slower than on 1 for these tiny models; restore it afterwards."""
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def images():
    from edgerob.host.data import load_dataset

    return load_dataset("digits").x_test[:300]


def _copy_artifact(art, folder: Path, **changes) -> Path:
    """A copy of an artifact in `folder`, with metadata fields changed."""
    folder.mkdir(parents=True, exist_ok=True)
    dst = folder / Path(art.path).name
    shutil.copy(art.path, dst)
    meta = json.loads(metadata_path(art.path).read_text())
    meta.update(changes)
    metadata_path(dst).write_text(json.dumps(meta))
    return dst


# ---- torch ---------------------------------------------------------------------------------------

def torch_runtime(path, **options):
    """The torch runtime with the host's checkpoint loader, as a workload hands it over."""
    return TorchRuntime(path, load_model=load_checkpoint, **options)


def test_torch_fp32_matches_onnxruntime(tiny_artifacts, images):
    path = tiny_artifacts["fp32"].path
    rt = torch_runtime(path)
    ref = create_runtime("onnxruntime", path).run(images)
    out = rt.run(images)
    assert out.dtype == np.float32 and out.shape == ref.shape
    np.testing.assert_allclose(out, ref, atol=1e-4, rtol=0)
    assert (out.argmax(1) == ref.argmax(1)).all()
    assert rt.run(images[:1]).shape == (1, 10)


def test_torch_fp16_and_bf16_agree_with_fp32(tiny_artifacts, images):
    ref = torch_runtime(tiny_artifacts["fp32"].path).run(images).argmax(1)
    fp16 = torch_runtime(tiny_artifacts["fp16"].path)  # raises EdgerobError where CPU lacks fp16
    assert fp16.info()["dtype"] == "fp16"
    assert {p.dtype.itemsize for p in fp16.model.parameters()} == {2}
    out = fp16.run(images)
    assert out.dtype == np.float32
    assert (out.argmax(1) == ref).mean() >= 0.98
    bf16 = torch_runtime(tiny_artifacts["fp32"].path, dtype="bf16")
    assert bf16.info()["dtype"] == "bf16"
    assert (bf16.run(images).argmax(1) == ref).mean() >= 0.95


def test_torch_refuses_int8_and_precision_overrides(tiny_artifacts):
    with pytest.raises(EdgerobError, match="int8 artifacts need onnxruntime or tensorrt"):
        torch_runtime(tiny_artifacts["int8"].path)
    with pytest.raises(EdgerobError, match="precision lives in the artifact"):
        torch_runtime(tiny_artifacts["fp32"].path, dtype="fp16")
    with pytest.raises(EdgerobError, match="unknown dtype"):
        torch_runtime(tiny_artifacts["fp32"].path, dtype="int4")
    with pytest.raises(EdgerobError, match="unknown options"):
        torch_runtime(tiny_artifacts["fp32"].path, providers=["x"])


def test_torch_needs_the_artifacts_own_checkpoint(tiny_artifacts, tiny_model, tmp_path):
    art = tiny_artifacts["fp32"]
    with pytest.raises(EdgerobError, match="does not record the model folder"):
        torch_runtime(_copy_artifact(art, tmp_path / "a", model_dir=None))
    with pytest.raises(EdgerobError, match="model folder .* is missing"):
        torch_runtime(_copy_artifact(art, tmp_path / "b", model_dir="../no-such-model"))
    with pytest.raises(EdgerobError, match="is not a model folder"):
        torch_runtime(_copy_artifact(art, tmp_path / "b2", model_dir="."))
    other = _copy_artifact(art, tmp_path / "c", model_dir=str(Path(tiny_model).resolve()),
                           checkpoint_sha256="0" * 64)
    with pytest.raises(EdgerobError, match="different checkpoint"):
        torch_runtime(other)
    # the same copy pointing at the right checkpoint runs
    ok = _copy_artifact(art, tmp_path / "d", model_dir=str(Path(tiny_model).resolve()))
    assert torch_runtime(ok).run(np.zeros((2, 1, 16, 16), np.float32)).shape == (2, 10)
    # weights replaced after export: load_checkpoint's hash check refuses them
    broken = tmp_path / "model"
    shutil.copytree(tiny_model, broken)
    (broken / WEIGHTS_FILE).write_bytes(b"not weights")
    with pytest.raises(EdgerobError):
        torch_runtime(_copy_artifact(art, tmp_path / "e", model_dir=str(broken)))


def test_torch_takes_the_model_code_from_the_host(tiny_artifacts, tiny_model, tmp_path):
    """The device has no model code: the torch runtime refuses to run without the host's loader,
    and a sweep hands it the one its workload carries."""
    with pytest.raises(EdgerobError, match="load_model"):
        TorchRuntime(tiny_artifacts["fp32"].path)
    profile = Profile(name="t", precisions=["fp32"], batch_sizes=[1], timing=FAST)
    target = load_target("cpu").model_copy(update={"runtime": "torch",
                                                   "runtime_options": {"device": "cpu"}})
    work = prepare_workload(profile, tiny_model)
    calls = []

    def loader(folder):
        calls.append(folder)
        return load_checkpoint(folder)

    work.load_model = loader
    res = run_profile(target, profile, work, Store(f"sqlite:///{tmp_path}/s.db"))
    assert calls == [Path(tiny_model).resolve()]
    assert [r["runtime"] for r in res.rows] == ["torch"]


def test_torch_via_registry_info_and_errors(tiny_artifacts):
    assert runtime_class("torch") is TorchRuntime
    ok, reason = TorchRuntime.available()
    assert ok and reason.startswith("torch ")
    rt = create_runtime("torch", tiny_artifacts["fp32"].path, threads=1, device="cpu",
                        load_model=load_checkpoint)
    info = rt.info()
    assert info["runtime"] == "torch" and info["device"] == "cpu" and info["dtype"] == "fp32"
    assert info["compiled"] is False and info["threads"] == 1 and info["version"]
    with pytest.raises(EdgerobError, match="the model takes"):
        rt.run(np.zeros((2, 3, 16, 16), np.float32))
    with pytest.raises(EdgerobError, match="bad device|not supported"):
        torch_runtime(tiny_artifacts["fp32"].path, device="tpu")
    import torch

    if not torch.cuda.is_available():
        with pytest.raises(EdgerobError, match="sees no CUDA device"):
            torch_runtime(tiny_artifacts["fp32"].path, device="cuda:0")


def test_torch_compile_plumbing(tiny_artifacts, images):
    """compile=True means inductor (needs a C++ compiler, slow here); the 'eager' backend goes
    through torch.compile the same way in a second."""
    path = tiny_artifacts["fp32"].path
    rt = torch_runtime(path, compile="eager")
    assert rt.info()["compiled"] == "eager"
    np.testing.assert_allclose(rt.run(images[:8]), torch_runtime(path).run(images[:8]), atol=1e-5)
    with pytest.raises(EdgerobError, match="torch.compile"):
        torch_runtime(path, compile="no-such-backend")


def test_torch_compile_is_static_and_tf32_is_off_unless_asked(tiny_artifacts, monkeypatch):
    import torch

    seen = {}

    def fake_compile(model, **kwargs):
        seen.update(kwargs)
        return model

    monkeypatch.setattr(torch, "compile", fake_compile)
    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    try:
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
        rt = TorchRuntime(tiny_artifacts["fp32"].path, compile=True, load_model=load_checkpoint)
        assert seen == {"backend": "inductor", "dynamic": False}
        assert torch.backends.cuda.matmul.allow_tf32 is False
        assert torch.backends.cudnn.allow_tf32 is False
        assert rt.info()["tf32"] is False
        assert TorchRuntime(tiny_artifacts["fp32"].path, tf32=True,
                            load_model=load_checkpoint).info()["tf32"] is True
        assert torch.backends.cudnn.allow_tf32 is True
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def test_torch_cuda_identity_for_the_power_sensor():
    """What torch reports for a CUDA device, in the forms NVML matching accepts."""
    from edgerob.device.runtimes.torch_eager import cuda_identity

    props = SimpleNamespace(uuid="5c7b3b2a-0000-1111-2222-333333333333", pci_bus_id=0x65,
                            pci_device_id=0, pci_domain_id=0)
    torch = SimpleNamespace(cuda=SimpleNamespace(get_device_properties=lambda i: props,
                                                 current_device=lambda: 2))
    assert cuda_identity(torch, SimpleNamespace(index=None)) == {
        "cuda_device": 2, "device_uuid": "5c7b3b2a-0000-1111-2222-333333333333",
        "pci_bus_id": "00000000:65:00.0"}
    old = SimpleNamespace(cuda=SimpleNamespace(get_device_properties=lambda i: SimpleNamespace()))
    assert cuda_identity(old, SimpleNamespace(index=1)) == {"cuda_device": 1}


def test_torch_unavailable_without_torch(monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # makes `import torch` fail
    ok, reason = TorchRuntime.available()
    assert not ok and reason.startswith("torch is not installed")


def test_runtime_modules_import_without_torch_or_tensorrt():
    """Device side: importing both runtime modules pulls in neither torch nor tensorrt."""
    code = ("import sys; import edgerob.device.runtimes.torch_eager, edgerob.device.runtimes.trt; "
            "bad = [m for m in ('torch', 'tensorrt', 'cuda') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---- tensorrt: version dispatch ------------------------------------------------------------------

def fake_trt(version: str, *, with_old_names: bool = True) -> types.ModuleType:
    """A tensorrt module with the version and the enum names the dispatch reads. TensorRT 11 has
    no EXPLICIT_BATCH and no FP16/INT8 builder flags: leave them out to prove they are not read."""
    m = types.ModuleType("tensorrt")
    m.__version__ = version
    m.NetworkDefinitionCreationFlag = SimpleNamespace(STRONGLY_TYPED=1)
    m.BuilderFlag = SimpleNamespace(TF32="TF32")
    if with_old_names:
        m.NetworkDefinitionCreationFlag.EXPLICIT_BATCH = 0
        m.BuilderFlag.FP16, m.BuilderFlag.INT8 = "FP16", "INT8"
    return m


@pytest.mark.parametrize("version, typed, net_flags, fp16, int8", [
    ("8.5.2.2", False, 1 << 0, ["FP16"], ["INT8"]),   # JetPack 5
    ("8.6.1.6", False, 1 << 0, ["FP16"], ["INT8"]),
    ("10.0.1.6", False, 0, ["FP16"], ["INT8"]),       # explicit batch is the only mode
    ("10.11.0.33", False, 0, ["FP16"], ["INT8"]),
    ("10.12.0.36", True, 1 << 1, [], []),             # strongly typed: the graph decides
    ("10.16.1", True, 1 << 1, [], []),
])
def test_version_dispatch(version, typed, net_flags, fp16, int8):
    trt = fake_trt(version)
    assert trtmod.strongly_typed(trt) is typed
    assert trtmod.network_flags(trt) == net_flags
    assert trtmod.builder_flags(trt, "fp32") == []
    assert trtmod.builder_flags(trt, "fp16") == fp16
    # INT8 alone: the layers the Q/DQ graph keeps in float stay fp32, as when strongly typed
    assert trtmod.builder_flags(trt, "int8") == int8


def test_tensorrt_11_is_strongly_typed_without_the_removed_names():
    trt = fake_trt("11.0.0.5", with_old_names=False)
    assert trtmod.strongly_typed(trt)
    assert trtmod.network_flags(trt) == 0  # always strongly typed; the flag is ignored
    assert [trtmod.builder_flags(trt, p) for p in ("fp32", "fp16", "int8")] == [[], [], []]


def test_version_parsing_and_bad_precision():
    assert trtmod.trt_version(fake_trt("10.12.0.36")) == (10, 12)
    assert trtmod.trt_version(fake_trt("8.5.2.2")) == (8, 5)
    assert trtmod.trt_version(fake_trt("11")) == (11, 0)
    with pytest.raises(EdgerobError):
        trtmod.trt_version(fake_trt("dev"))
    with pytest.raises(EdgerobError, match="unknown precision"):
        trtmod.builder_flags(fake_trt("8.6.1"), "bf16")


def test_profile_batches():
    assert trtmod.profile_batches() == (1, 8, 32)
    assert trtmod.profile_batches([1, 8, 32]) == (1, 8, 32)
    assert trtmod.profile_batches([16, 4, 16]) == (4, 16)
    assert trtmod.profile_batches(8) == (8,)
    for bad in ([], [0, 4], [1.5], [True], ["8"]):
        with pytest.raises(EdgerobError, match="batch_sizes"):
            trtmod.profile_batches(bad)


def test_engine_cache_key_and_names(monkeypatch, tmp_path):
    base = dict(artifact_sha256="a" * 64, tensorrt_version="10.12.0.36",
                device_name="NVIDIA H100 80GB HBM3", compute_capability="9.0", batch=(1, 8, 32))
    key = trtmod.engine_cache_key(**base)
    assert key == trtmod.engine_cache_key(**dict(base))  # stable
    for change in (dict(artifact_sha256="b" * 64), dict(tensorrt_version="10.13.0.35"),
                   dict(device_name="NVIDIA L4"), dict(compute_capability="8.9"),
                   dict(batch=(1, 32)), dict(batch=(1, 8, 16, 32)), dict(tf32=True)):
        assert trtmod.engine_cache_key(**{**base, **change}) != key, change
    name = trtmod.engine_file_name(**base)
    assert name.startswith("aaaaaaaaaaaa-trt10.12.0.36-nvidia-h100-80gb-hbm3-sm90-b1_8_32-")
    assert name.endswith(".engine") and "/" not in name
    assert trtmod.engine_file_name(**{**base, "device_name": "NVIDIA L4"}) != name
    timing = trtmod.timing_cache_file_name("10.12.0.36", "NVIDIA H100 80GB HBM3", "9.0")
    assert timing == "timing-trt10.12.0.36-nvidia-h100-80gb-hbm3-sm90.cache"
    assert timing != trtmod.timing_cache_file_name("8.5.2.2", "Orin", "8.7")
    monkeypatch.setenv("EDGEROB_CACHE", str(tmp_path / "c"))
    assert trtmod.engine_cache_dir() == tmp_path / "c" / "engines"
    monkeypatch.delenv("EDGEROB_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert trtmod.engine_cache_dir() == tmp_path / "x" / "edgerob" / "engines"


# ---- tensorrt: availability ----------------------------------------------------------------------

class _Err(enum.Enum):
    cudaSuccess = 0
    cudaErrorNoDevice = 100


def _install_cudart(monkeypatch, cudart) -> None:
    """Make `from cuda.bindings import runtime` return `cudart`."""
    cuda, bindings = types.ModuleType("cuda"), types.ModuleType("cuda.bindings")
    cuda.bindings, bindings.runtime = bindings, cudart
    monkeypatch.setitem(sys.modules, "cuda", cuda)
    monkeypatch.setitem(sys.modules, "cuda.bindings", bindings)
    monkeypatch.setitem(sys.modules, "cuda.bindings.runtime", cudart)


def test_tensorrt_unavailable_reasons(monkeypatch, tiny_artifacts):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    ok, reason = trtmod.TensorRTRuntime.available()
    assert not ok and "tensorrt is not installed" in reason
    assert "pip install tensorrt" in reason and "python3-libnvinfer" in reason
    with pytest.raises(EdgerobError, match="'tensorrt' is not available here"):
        create_runtime("tensorrt", tiny_artifacts["fp32"].path)

    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("8.4.3.1"))
    ok, reason = trtmod.TensorRTRuntime.available()
    assert not ok and "too old" in reason and "8.5" in reason

    monkeypatch.setitem(sys.modules, "tensorrt", fake_trt("10.12.0.36"))
    for name in ("cuda", "cuda.bindings", "cuda.bindings.runtime", "cuda.cudart"):
        monkeypatch.setitem(sys.modules, name, None)
    ok, reason = trtmod.TensorRTRuntime.available()
    assert not ok and "cuda-python is not installed" in reason and "pip install" in reason

    no_gpu = SimpleNamespace(cudaError_t=_Err,
                             cudaGetDeviceCount=lambda: (_Err.cudaErrorNoDevice, 0),
                             cudaGetErrorString=lambda e: (_Err.cudaSuccess,
                                                           b"no CUDA-capable device is detected"))
    _install_cudart(monkeypatch, no_gpu)
    ok, reason = trtmod.TensorRTRuntime.available()
    assert not ok and reason == "no CUDA device (no CUDA-capable device is detected)"

    _install_cudart(monkeypatch, SimpleNamespace(cudaError_t=_Err,
                                                 cudaGetDeviceCount=lambda: (_Err.cudaSuccess, 2)))
    assert trtmod.TensorRTRuntime.available() == (True, "tensorrt 10.12.0.36, 2 CUDA device(s)")


def test_cuda_helpers():
    cudart = SimpleNamespace(
        cudaError_t=_Err, cudaGetErrorName=lambda e: (_Err.cudaSuccess, e.name.encode()),
        cudaGetDeviceProperties=lambda i: (_Err.cudaSuccess, SimpleNamespace(
            name=b"NVIDIA H100 80GB HBM3\x00\x00junk", major=9, minor=0,
            uuid=SimpleNamespace(bytes=bytes(range(16))), pciBusID=0x65, pciDeviceID=0,
            pciDomainID=0)))
    assert trtmod._check(cudart, (_Err.cudaSuccess,), "x") is None
    assert trtmod._check(cudart, (_Err.cudaSuccess, 5), "x") == 5
    assert trtmod._check(cudart, (_Err.cudaSuccess, 5, 6), "x") == (5, 6)
    with pytest.raises(RuntimeError, match="cudaMalloc failed: cudaErrorNoDevice"):
        trtmod._check(cudart, (_Err.cudaErrorNoDevice, 0), "cudaMalloc")
    assert trtmod._device_properties(cudart, 0) == (
        "NVIDIA H100 80GB HBM3", "9.0",
        {"cuda_device": 0, "device_uuid": "GPU-00010203-0405-0607-0809-0a0b0c0d0e0f",
         "pci_bus_id": "00000000:65:00.0"})
    buf = (ctypes.c_float * 6)()
    view = trtmod._float_view(ctypes.addressof(buf), 6)
    view[:] = np.arange(6)
    assert list(buf) == [0, 1, 2, 3, 4, 5]


# ---- tensorrt: build / cache / run plumbing against fakes ----------------------------------------

class FakeCudart:
    """cuda-python's runtime API as TensorRTRuntime uses it; 'device' memory is host memory."""

    cudaError_t = _Err

    class cudaMemcpyKind(enum.Enum):
        cudaMemcpyHostToDevice = 1
        cudaMemcpyDeviceToHost = 2

    class Stream:
        def __int__(self):
            return 1234

    def __init__(self):
        self.memory, self.freed, self.copies = {}, [], []
        self.streams = self.events = 0

    def cudaGetDeviceCount(self):
        return _Err.cudaSuccess, 1

    def cudaSetDevice(self, index):
        return (_Err.cudaSuccess,)

    def cudaGetDeviceProperties(self, index):
        return _Err.cudaSuccess, SimpleNamespace(name=b"Fake GPU\x00", major=8, minor=7)

    def _alloc(self, nbytes):
        buf = ctypes.create_string_buffer(nbytes)
        self.memory[ctypes.addressof(buf)] = buf
        return _Err.cudaSuccess, ctypes.addressof(buf)

    cudaMalloc = cudaMallocHost = _alloc

    def cudaFree(self, ptr):
        self.freed.append(self.memory.pop(ptr) is not None)
        return (_Err.cudaSuccess,)

    cudaFreeHost = cudaFree

    def cudaStreamCreate(self):
        self.streams += 1
        return _Err.cudaSuccess, self.Stream()

    def cudaStreamDestroy(self, stream):
        self.streams -= 1
        return (_Err.cudaSuccess,)

    def cudaEventCreate(self):
        self.events += 1
        return _Err.cudaSuccess, object()

    def cudaEventDestroy(self, event):
        self.events -= 1
        return (_Err.cudaSuccess,)

    def cudaEventRecord(self, event, stream):
        assert isinstance(stream, self.Stream)
        return (_Err.cudaSuccess,)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        ctypes.memmove(dst, src, nbytes)
        self.copies.append((kind.name, nbytes))
        return (_Err.cudaSuccess,)

    def cudaStreamSynchronize(self, stream):
        return (_Err.cudaSuccess,)

    def cudaEventElapsedTime(self, start, end):
        return _Err.cudaSuccess, 0.5


def fake_tensorrt_backed_by_ort(version: str) -> types.ModuleType:
    """TensorRT's Python API as TensorRTRuntime uses it. The 'plan' is JSON naming the ONNX file;
    executing it runs that file with onnxruntime on the bound buffers."""
    import onnxruntime as ort

    trt = fake_trt(version)
    trt.builds = []
    trt.MemoryPoolType = SimpleNamespace(WORKSPACE="WORKSPACE")
    trt.TensorIOMode = SimpleNamespace(INPUT="INPUT", OUTPUT="OUTPUT")
    trt.nptype = lambda dtype: {"FLOAT": np.float32}[dtype]

    class Logger:
        WARNING = 2

        def __init__(self, level):
            pass

    class Network:
        num_inputs = num_outputs = 1

        def __init__(self, flags):
            self.flags, self.path = flags, None

        def get_input(self, i):
            return SimpleNamespace(name="input")

    class OnnxParser:
        num_errors = 0

        def __init__(self, network, logger):
            self.network = network

        def parse_from_file(self, path):
            self.network.path = path
            return Path(path).is_file()

    class TimingCache:
        def __init__(self, data):
            self.data = data

        def serialize(self):
            return self.data + b"+"

    class Config:
        def __init__(self):
            self.flags, self.cleared, self.profiles, self.timing = [], [], [], None

        def set_memory_pool_limit(self, pool, size):
            assert pool == "WORKSPACE" and size == 1024 << 20

        def set_flag(self, flag):
            self.flags.append(flag)

        def clear_flag(self, flag):
            self.cleared.append(flag)

        def create_timing_cache(self, data):
            return TimingCache(bytes(data))

        def set_timing_cache(self, cache, ignore_mismatch):
            self.timing = cache
            return True

        def add_optimization_profile(self, profile):
            self.profiles.append(profile)

    class Profile:
        def set_shape(self, name, lo, opt, hi):
            self.shape = (name, tuple(lo), tuple(opt), tuple(hi))

    class Builder:
        def __init__(self, logger):
            pass

        def create_network(self, flags):
            return Network(flags)

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            shapes = [p.shape for p in config.profiles]
            trt.builds.append({"network_flags": network.flags, "flags": config.flags,
                               "cleared": config.cleared, "profiles": shapes,
                               "timing_cache_in": config.timing.data})
            ranges = [[lo[0], hi[0]] for _, lo, _, hi in shapes]
            return json.dumps({"onnx": network.path, "ranges": ranges}).encode()

    class Context:
        def __init__(self, plan):
            self.session = ort.InferenceSession(plan["onnx"], providers=["CPUExecutionProvider"])
            self.ranges, self.shape, self.addresses = plan["ranges"], None, {}
            self.profile, self.profile_calls = 0, []  # TensorRT starts a context on profile 0
            self.classes = self.session.run(None, {"input": np.zeros((1, 1, 16, 16),
                                                                     np.float32)})[0].shape[1]
            self.shape_calls = 0

        def set_optimization_profile_async(self, index, stream_handle):
            assert stream_handle == 1234
            self.profile_calls.append(index)
            self.profile = index
            return 0 <= index < len(self.ranges)

        def set_input_shape(self, name, shape):
            self.shape_calls += 1
            lo, hi = self.ranges[self.profile]
            if not lo <= shape[0] <= hi:
                return False
            self.shape = tuple(shape)
            return True

        def get_tensor_shape(self, name):
            return self.shape if name == "input" else (self.shape[0], self.classes)

        def set_tensor_address(self, name, address):
            self.addresses[name] = address
            return True

        def execute_async_v3(self, stream_handle):
            assert stream_handle == 1234
            n = int(np.prod(self.shape))
            x = np.ctypeslib.as_array(ctypes.cast(self.addresses["input"],
                                                  ctypes.POINTER(ctypes.c_float)), shape=(n,))
            y = self.session.run(None, {"input": x.reshape(self.shape).copy()})[0]
            ctypes.memmove(self.addresses["logits"], np.ascontiguousarray(y).ctypes.data, y.nbytes)
            return True

    class Engine:
        num_io_tensors = 2

        def __init__(self, plan):
            self.plan = plan

        def get_tensor_name(self, i):
            return ["input", "logits"][i]

        def get_tensor_mode(self, name):
            return "INPUT" if name == "input" else "OUTPUT"

        def get_tensor_dtype(self, name):
            return "FLOAT"

        def create_execution_context(self):
            return Context(self.plan)

    class Runtime:
        def __init__(self, logger):
            pass

        def deserialize_cuda_engine(self, plan):
            try:
                return Engine(json.loads(plan))
            except ValueError:
                return None  # what TensorRT does with a plan it cannot read

    trt.Logger, trt.Builder, trt.OnnxParser, trt.Runtime = Logger, Builder, OnnxParser, Runtime
    return trt


@pytest.fixture
def fake_gpu(monkeypatch):
    def install(version):
        trt, cudart = fake_tensorrt_backed_by_ort(version), FakeCudart()
        monkeypatch.setitem(sys.modules, "tensorrt", trt)
        _install_cudart(monkeypatch, cudart)
        return trt, cudart
    return install


@pytest.mark.parametrize("version", ["10.12.0.36", "8.5.2.2"])
def test_tensorrt_plumbing_with_fakes(fake_gpu, tiny_artifacts, images, tmp_path, version):
    trt, cudart = fake_gpu(version)
    new = version.startswith("10")
    for precision, art in tiny_artifacts.items():
        ref = create_runtime("onnxruntime", art.path).run(images[:20])
        rt = create_runtime("tensorrt", art.path, batch_sizes=[4, 20], cache_dir=tmp_path)
        build = trt.builds[-1]
        assert build["network_flags"] == (1 << 1 if new else 1 << 0)
        assert build["flags"] == ([] if new else {"fp32": [], "fp16": ["FP16"],
                                                  "int8": ["INT8"]}[precision])
        # one profile per batch size, min = opt = max; TF32 cleared (fp32 is fp32)
        assert build["profiles"] == [("input", (b, 1, 16, 16), (b, 1, 16, 16), (b, 1, 16, 16))
                                     for b in (4, 20)]
        assert build["cleared"] == ["TF32"]
        np.testing.assert_array_equal(rt.run(images[:20]), ref)
        assert rt.context.profile_calls == [1]  # batch 20 is profile 1, selected at bind
        np.testing.assert_array_equal(rt.run(images[:4]), ref[:4])  # new shape, same buffers
        assert rt.context.profile_calls == [1, 0] and rt.context.profile == 0
        np.testing.assert_array_equal(rt.run(images[:4]), ref[:4])
        assert rt.context.profile_calls == [1, 0]  # same batch: no switch, no new shape
        assert rt.context.shape_calls == 2  # max batch (20) at bind, then 4
        assert set(rt.last_timing_ms) == {"h2d", "compute", "d2h"}
        assert cudart.copies[-2:] == [("cudaMemcpyHostToDevice", 4 * 256 * 4),
                                      ("cudaMemcpyDeviceToHost", 4 * 10 * 4)]
        for n in (21, 5):  # not built: refused, never run on another batch size's kernels
            with pytest.raises(EdgerobError, match="no optimisation profile.*built for 4, 20"):
                rt.run(images[:n])
        with pytest.raises(EdgerobError, match="the engine takes"):
            rt.run(images[:4, :, :8])
        info = rt.info()
        assert info["strongly_typed"] is new and info["batch_sizes"] == [4, 20]
        assert info["tf32"] is False and info["cuda_device"] == 0
        assert info["device"] == "Fake GPU" and info["compute_capability"] == "8.7"
        assert info["engine_from_cache"] is False and Path(info["engine_cache"]).is_file()
        rt.close()
        assert cudart.memory == {} and len(cudart.freed) % 4 == 0
        assert cudart.streams == 0 and cudart.events == 0
        with pytest.raises(EdgerobError, match="closed"):
            rt.run(images[:4])

    builds = len(trt.builds)
    assert builds == 3  # one per precision
    # second load: from the engine cache, no build; the timing cache went to disk and back
    again = create_runtime("tensorrt", tiny_artifacts["fp32"].path, batch_sizes=[4, 20],
                           cache_dir=tmp_path)
    assert again.info()["engine_from_cache"] is True and len(trt.builds) == builds
    assert trt.builds[1]["timing_cache_in"] == b"+"  # read back what the first build wrote
    # other batch sizes are another engine; a damaged engine file is rebuilt
    create_runtime("tensorrt", tiny_artifacts["fp32"].path, batch_sizes=[1], cache_dir=tmp_path)
    assert len(trt.builds) == builds + 1
    Path(again.engine_path).write_bytes(b"garbage")
    rebuilt = create_runtime("tensorrt", tiny_artifacts["fp32"].path, batch_sizes=[4, 20],
                             cache_dir=tmp_path)
    assert rebuilt.info()["engine_from_cache"] is False and len(trt.builds) == builds + 2
    np.testing.assert_array_equal(rebuilt.run(images[:4]),
                                  create_runtime("onnxruntime", tiny_artifacts["fp32"].path)
                                  .run(images[:4]))
    # TF32 asked for deliberately: set, recorded, another engine
    tf32 = create_runtime("tensorrt", tiny_artifacts["fp32"].path, tf32=True,
                          batch_sizes=[4, 20], cache_dir=tmp_path)
    assert trt.builds[-1]["flags"] == ["TF32"] and trt.builds[-1]["cleared"] == []
    assert tf32.info()["tf32"] is True and tf32.engine_path != again.engine_path
    with pytest.raises(EdgerobError, match="unknown options"):
        create_runtime("tensorrt", tiny_artifacts["fp32"].path, providers=["x"])
    with pytest.raises(EdgerobError, match="no CUDA device 1"):
        create_runtime("tensorrt", tiny_artifacts["fp32"].path, device=1)
