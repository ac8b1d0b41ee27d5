"""The `tensorrt` runtime: a TensorRT engine built from the ONNX artifact, run on a CUDA stream.

Precision lives in the artifact (DESIGN.md). On TensorRT 10.12+ and 11 the network is strongly
typed: the fp16 tensors and Q/DQ nodes of the graph decide every layer's precision, and the FP16 /
INT8 builder flags (deprecated in 10.12, gone in 11) are not used. On older TensorRT (8.5 on
JetPack 5, 8.6, 10.0-10.11) the network is weakly typed and the builder flag of the artifact's
precision is set: FP16 for the fp16 graph, INT8 for the Q/DQ graph (explicit quantisation: no
calibrator). INT8 is set alone, without FP16, so layers the graph keeps in float (the stem conv)
run in fp32 as they do when strongly typed: "int8" is the same model on every TensorRT.

One engine holds one optimisation profile per measured batch size (`batch_sizes=[...]`, default
1, 8, 32), each with min = opt = max = that size, so every batch size runs on the kernels TensorRT
chose for it (a single min..max profile tunes for opt only). When the batch size changes the
context switches to its profile (`set_optimization_profile_async`) and then sets the input shape;
a batch size that was not built is refused. TF32 is off by default (`tf32=False` clears
`BuilderFlag.TF32`, which TensorRT sets by default, so "fp32" layers run in fp32); `tf32=True`
measures TF32 deliberately; `info()` records which. Engines and the timing cache are cached under
$EDGEROB_CACHE/engines (else ~/.cache/edgerob/engines): an engine by artifact sha256, TensorRT
version, device name, compute capability, batch sizes and TF32 setting; the timing cache by
TensorRT version and device, so every model built on one GPU shares it. Inference: pinned host
buffers, device buffers and a stream from cuda-python, the profile and `set_input_shape` when the
batch size changes, `execute_async_v3`, and
CUDA events around the host-to-device copy, the compute and the device-to-host copy, reported in
`last_timing_ms` for the last call (trtexec's H2D / GPU compute / D2H split). TensorRT 8.5 is the
oldest supported: it is the first with the name-based tensor API and `execute_async_v3`.

The version logic (`trt_version`, `strongly_typed`, `network_flags`, `builder_flags`), the batch
range and the cache keys are plain functions that tests drive with a fake `tensorrt` module; the
rest needs TensorRT and a GPU. To verify it on a GPU box (x86, NVIDIA driver for CUDA 12):

    make install                                   # .venv with the project (host + dev extras)
    .venv/bin/pip install tensorrt-cu12 "cuda-python>=12.6,<13"   # CUDA 13 driver: -cu13, 13.x
    .venv/bin/python -c "import edgerob.device.runtimes.trt as t; print(t.TensorRTRuntime.available())"
    .venv/bin/python -m pytest tests/test_runtimes.py          # unit tests, then the GPU check:
    .venv/bin/python - <<'EOF'
    import numpy as np
    from edgerob.host.data import load_dataset
    from edgerob.host.export import export
    from edgerob.device.runtimes import create_runtime
    from edgerob.host.train import TrainConfig, train
    train(TrainConfig(arch="resnet8", width=8, epochs=6, seed=1), "/tmp/trt-model")
    arts = export("/tmp/trt-model")
    x = load_dataset("digits").x_test[:32]
    ref = create_runtime("onnxruntime", arts["fp32"].path).run(x)
    for p, a in arts.items():
        rt = create_runtime("tensorrt", a.path, batch_sizes=[1, 32])  # one profile each
        y, y1 = rt.run(x), rt.run(x[:1])
        print(p, rt.info(), rt.last_timing_ms)
        print("  max |err| vs ORT fp32:", float(abs(y - ref).max()),
              "top-1 agreement:", float((y.argmax(1) == ref.argmax(1)).mean()),
              "batch 1 = row 0 of batch 32:", np.allclose(y1, y[:1], atol=1e-2))
    EOF
    # Run it twice: the second run loads the engines from the cache (engine_from_cache True).
    # Pass: fp32 top-1 agreement 1.0 with a small max error (TF32 off by default; tf32=True is
    # looser), fp16/int8 agreement at least the artifact's parity["min_top1_agreement"].
    # Jetson, JetPack 6 (TensorRT 8.6/10.3, Python 3.10): TensorRT comes with JetPack
    # (apt install python3-libnvinfer), then pip install cuda-python for its CUDA; same script.
    # JetPack 5 (TensorRT 8.5) ships Python 3.8 bindings only, and edgerob needs Python 3.10+:
    # the 8.5 path needs TensorRT's Python bindings built for 3.10 (TensorRT OSS, python/).
"""

from __future__ import annotations

import ctypes
import hashlib
import json
import re
from pathlib import Path

import numpy as np

from edgerob.device.artifacts import load_artifact
from edgerob.device.runtimes import Runtime
from edgerob.errors import EdgerobError
from edgerob.files import atomic_write_bytes, cache_dir

MIN_VERSION = (8, 5)  # name-based tensor API and execute_async_v3
STRONGLY_TYPED_FROM = (10, 12)  # FP16/INT8 builder flags deprecated here, removed in 11
DEFAULT_BATCH_SIZES = (1, 8, 32)
DEFAULT_WORKSPACE_MB = 1024
CACHE_FORMAT = 2  # bump when what goes into an engine changes in a way the key does not show

INSTALL_HINT = ("pip install tensorrt; on a Jetson it comes with JetPack "
                "(apt install python3-libnvinfer)")
CUDA_PYTHON_HINT = "pip install cuda-python (the release matching the driver's CUDA major version)"


# ---- imports (lazy: a device without TensorRT still imports this module) ----------------------

def _import_tensorrt():
    try:
        import tensorrt
    except Exception as e:  # noqa: BLE001 - ImportError, or OSError when libnvinfer cannot load
        return None, f"{type(e).__name__}: {e}"
    return tensorrt, ""


def _import_cudart():
    """cuda-python's runtime API: `cuda.bindings.runtime` (12.6+), else the older `cuda.cudart`."""
    try:
        from cuda.bindings import runtime as cudart
    except Exception:  # noqa: BLE001
        try:
            from cuda import cudart
        except Exception as e:  # noqa: BLE001
            return None, f"{type(e).__name__}: {e}"
    return cudart, ""


# ---- version dispatch (pure: tested with a fake tensorrt module) -------------------------------

def trt_version(trt) -> tuple[int, int]:
    """(major, minor) of a tensorrt module's __version__ ('10.12.0.36' -> (10, 12))."""
    m = re.match(r"\s*(\d+)(?:\.(\d+))?", str(getattr(trt, "__version__", "")))
    if not m:
        raise EdgerobError(f"cannot read the TensorRT version {trt.__version__!r}")
    return int(m.group(1)), int(m.group(2) or 0)


def strongly_typed(trt) -> bool:
    """Whether networks are built strongly typed: TensorRT 10.12+ (and always in 11)."""
    return trt_version(trt) >= STRONGLY_TYPED_FROM


def network_flags(trt) -> int:
    """The `create_network` flags: EXPLICIT_BATCH on 8.x (10 made it the only mode and 11 dropped
    the flag), STRONGLY_TYPED on 10.12-10.x (11 is always strongly typed and ignores the flag)."""
    v = trt_version(trt)
    flag = trt.NetworkDefinitionCreationFlag
    if v >= (11, 0):
        return 0
    if v >= STRONGLY_TYPED_FROM:
        return 1 << int(flag.STRONGLY_TYPED)
    if v >= (10, 0):
        return 0
    return 1 << int(flag.EXPLICIT_BATCH)


def builder_flags(trt, precision: str) -> list:
    """Builder flags for an artifact's precision: none when strongly typed (the graph decides);
    on older TensorRT FP16 for fp16 and INT8 alone for the Q/DQ int8 graph."""
    if precision not in ("fp32", "fp16", "int8"):
        raise EdgerobError(f"tensorrt: unknown precision {precision!r}")
    if strongly_typed(trt) or precision == "fp32":
        return []
    return [trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.INT8]


def profile_batches(batch_sizes=None) -> tuple[int, ...]:
    """The batch sizes to build, ascending and unique: one optimisation profile (b, b, b) each."""
    if batch_sizes is None:
        return DEFAULT_BATCH_SIZES
    if isinstance(batch_sizes, int):
        batch_sizes = [batch_sizes]
    sizes = list(batch_sizes)
    if not sizes or any(isinstance(b, bool) or not isinstance(b, (int, np.integer)) or b < 1
                        for b in sizes):
        raise EdgerobError(f"tensorrt: batch_sizes must be positive integers, got {batch_sizes!r}")
    return tuple(sorted({int(b) for b in sizes}))


# ---- caches --------------------------------------------------------------------------------------

def engine_cache_dir() -> Path:
    """$EDGEROB_CACHE/engines, else $XDG_CACHE_HOME/edgerob/engines or ~/.cache/edgerob/engines."""
    return cache_dir() / "engines"


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.]+", "-", text).strip("-").lower() or "gpu"


def engine_cache_key(artifact_sha256: str, tensorrt_version: str, device_name: str,
                     compute_capability: str, batch: tuple[int, ...],
                     tf32: bool = False) -> str:
    """Hex key of one engine: what makes an engine valid for a graph on a device."""
    payload = {"format": CACHE_FORMAT, "artifact_sha256": artifact_sha256,
               "tensorrt": str(tensorrt_version), "device": device_name,
               "compute_capability": str(compute_capability), "batch_sizes": list(batch),
               "tf32": bool(tf32)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def engine_file_name(artifact_sha256: str, tensorrt_version: str, device_name: str,
                     compute_capability: str, batch: tuple[int, ...],
                     tf32: bool = False) -> str:
    key = engine_cache_key(artifact_sha256, tensorrt_version, device_name, compute_capability,
                           batch, tf32)
    return (f"{artifact_sha256[:12]}-trt{tensorrt_version}-{_slug(device_name)}"
            f"-sm{str(compute_capability).replace('.', '')}-b{'_'.join(map(str, batch))}"
            f"-{key[:16]}.engine")


def timing_cache_file_name(tensorrt_version: str, device_name: str,
                           compute_capability: str) -> str:
    return (f"timing-trt{tensorrt_version}-{_slug(device_name)}"
            f"-sm{str(compute_capability).replace('.', '')}.cache")


# ---- CUDA helpers ------------------------------------------------------------------------------

def _check(cudart, result, what: str):
    """Unpack a cuda-python call's (err, *values); raise on an error code."""
    err, values = result[0], result[1:]
    if err != cudart.cudaError_t.cudaSuccess:
        try:
            name = cudart.cudaGetErrorName(err)[1]
            name = name.decode() if isinstance(name, bytes) else str(name)
        except Exception:  # noqa: BLE001
            name = str(err)
        raise RuntimeError(f"CUDA {what} failed: {name}")
    if not values:
        return None
    return values[0] if len(values) == 1 else values


def _device_count(cudart) -> tuple[int, str]:
    try:
        result = cudart.cudaGetDeviceCount()
    except Exception as e:  # noqa: BLE001 - no driver library at all
        return 0, f"{type(e).__name__}: {e}"
    if result[0] != cudart.cudaError_t.cudaSuccess:
        try:
            msg = cudart.cudaGetErrorString(result[0])[1]
            msg = msg.decode() if isinstance(msg, bytes) else str(msg)
        except Exception:  # noqa: BLE001
            msg = str(result[0])
        return 0, msg
    return int(result[1]), ""


def _device_properties(cudart, index: int) -> tuple[str, str, dict]:
    """(name, 'major.minor', identity) of a CUDA device. The identity (CUDA ordinal, UUID and
    PCI bus id where the bindings give them) lets the power sensor read the same physical GPU."""
    prop = _check(cudart, cudart.cudaGetDeviceProperties(index), "cudaGetDeviceProperties")
    name = prop.name
    if isinstance(name, (bytes, bytearray)):
        name = bytes(name).split(b"\x00", 1)[0].decode(errors="replace")
    identity = {"cuda_device": index}
    raw = getattr(getattr(prop, "uuid", None), "bytes", None)
    if isinstance(raw, str):
        raw = raw.encode("latin-1")
    if raw is not None and len(raw) == 16:  # a char array cut at a NUL byte is not a UUID
        h = bytes(raw).hex()
        identity["device_uuid"] = f"GPU-{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
    if getattr(prop, "pciBusID", None) is not None:
        identity["pci_bus_id"] = (f"{getattr(prop, 'pciDomainID', 0):08x}:{prop.pciBusID:02x}:"
                                  f"{getattr(prop, 'pciDeviceID', 0):02x}.0")
    return str(name).strip(), f"{prop.major}.{prop.minor}", identity


def _float_view(address: int, count: int) -> np.ndarray:
    """A float32 numpy view of `count` floats of (pinned) host memory at `address`."""
    return np.ctypeslib.as_array(ctypes.cast(address, ctypes.POINTER(ctypes.c_float)),
                                 shape=(count,))


class TensorRTRuntime(Runtime):
    name = "tensorrt"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        trt, err = _import_tensorrt()
        if trt is None:
            return False, f"tensorrt is not installed ({err}): {INSTALL_HINT}"
        try:
            version = trt_version(trt)
        except EdgerobError as e:
            return False, str(e)
        if version < MIN_VERSION:
            return False, (f"TensorRT {trt.__version__} is too old: edgerob needs 8.5 or newer "
                           f"(JetPack 5+); use onnxruntime or torch here")
        cudart, err = _import_cudart()
        if cudart is None:
            return False, f"cuda-python is not installed ({err}): {CUDA_PYTHON_HINT}"
        count, why = _device_count(cudart)
        if count == 0:
            return False, f"no CUDA device{f' ({why})' if why else ''}"
        return True, f"tensorrt {trt.__version__}, {count} CUDA device(s)"

    @classmethod
    def accelerator_options(cls, options: dict) -> tuple[dict | None, str]:
        return options, ""  # TensorRT runs on the CUDA GPU only

    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes=None, device: int = 0, workspace_mb: int = DEFAULT_WORKSPACE_MB,
                 tf32: bool = False, cache_dir: str | Path | None = None, rebuild: bool = False,
                 **options):
        if options:
            raise EdgerobError(f"tensorrt: unknown options {', '.join(sorted(options))}")
        ok, reason = self.available()
        if not ok:
            raise EdgerobError(f"runtime 'tensorrt' is not available here: {reason}")
        self._trt, _ = _import_tensorrt()
        self._cudart, _ = _import_cudart()
        trt, cudart = self._trt, self._cudart
        self._buffers: list[tuple[str, int]] = []  # (kind, pointer) to free in close()
        self._stream = None
        self._events: list = []

        self.artifact = load_artifact(artifact_path)
        self.threads = threads  # the GPU does the work; kept for the fingerprint only
        self.batch_sizes = profile_batches(batch_sizes)
        self.tf32 = bool(tf32)
        self.device_index = int(device)
        count, _ = _device_count(cudart)
        if not 0 <= self.device_index < count:
            raise EdgerobError(f"tensorrt: no CUDA device {device} ({count} here: 0..{count - 1})")
        _check(cudart, cudart.cudaSetDevice(self.device_index), "cudaSetDevice")
        self.device_name, self.compute_capability, self.identity = _device_properties(
            cudart, self.device_index)
        self.strongly_typed = strongly_typed(trt)
        self.builder_flags = [str(f).split(".")[-1]
                              for f in builder_flags(trt, self.artifact.precision)]
        self.input_shape = tuple(self.artifact.input_shape)

        cache = Path(cache_dir) if cache_dir else engine_cache_dir()
        self.engine_path = cache / engine_file_name(
            self.artifact.sha256, trt.__version__, self.device_name, self.compute_capability,
            self.batch_sizes, self.tf32)
        self.timing_cache_path = cache / timing_cache_file_name(
            trt.__version__, self.device_name, self.compute_capability)

        self._logger = trt.Logger(trt.Logger.WARNING)
        self._runtime = trt.Runtime(self._logger)
        self.engine = None
        self.engine_from_cache = False
        if self.engine_path.is_file() and not rebuild:
            self.engine = self._deserialize(self.engine_path.read_bytes())
            self.engine_from_cache = self.engine is not None  # None: stale/corrupt, rebuild
        if self.engine is None:
            plan = self._build(int(workspace_mb) << 20)
            atomic_write_bytes(self.engine_path, plan)
            self.engine = self._deserialize(plan)
            if self.engine is None:
                raise EdgerobError(f"TensorRT {trt.__version__} built an engine for "
                                   f"{artifact_path} but cannot load it")
        self.context = self.engine.create_execution_context()
        self._bind()
        self.last_timing_ms: dict[str, float] = {}

    # -- build ------------------------------------------------------------------------------------

    def _deserialize(self, plan: bytes):
        try:
            return self._runtime.deserialize_cuda_engine(plan)
        except Exception:  # noqa: BLE001 - some versions raise instead of returning None
            return None

    def _build(self, workspace_bytes: int) -> bytes:
        trt, art = self._trt, self.artifact
        builder = trt.Builder(self._logger)
        network = builder.create_network(network_flags(trt))
        parser = trt.OnnxParser(network, self._logger)
        if not parser.parse_from_file(str(art.path)):
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EdgerobError(f"TensorRT {trt.__version__} cannot parse {art.path}: "
                               f"{errors[:500] or 'no detail given'}")
        if network.num_inputs != 1 or network.num_outputs != 1:
            raise EdgerobError(f"{art.path}: expected one input and one output, found "
                               f"{network.num_inputs} and {network.num_outputs}")
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        for flag in builder_flags(trt, art.precision):
            config.set_flag(flag)
        # TensorRT sets TF32 by default: clear it for fp32 layers that really run in fp32.
        if hasattr(trt.BuilderFlag, "TF32"):
            (config.set_flag if self.tf32 else config.clear_flag)(trt.BuilderFlag.TF32)
        timing_cache = self._timing_cache(config)
        input_name = network.get_input(0).name
        for b in self.batch_sizes:  # profile i is batch_sizes[i], tuned for exactly that shape
            profile = builder.create_optimization_profile()
            shape = (b, *self.input_shape)
            profile.set_shape(input_name, shape, shape, shape)
            config.add_optimization_profile(profile)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EdgerobError(f"TensorRT {trt.__version__} could not build an engine for "
                               f"{art.path} ({art.precision}, batch sizes {list(self.batch_sizes)}) on "
                               f"{self.device_name}; TensorRT's log above says why")
        atomic_write_bytes(self.timing_cache_path, bytes(timing_cache.serialize()))
        return bytes(plan)

    def _timing_cache(self, config):
        """The device's timing cache from disk, or a new one when missing or unreadable."""
        data = b""
        if self.timing_cache_path.is_file():
            data = self.timing_cache_path.read_bytes()
        try:
            cache = config.create_timing_cache(data)
            if config.set_timing_cache(cache, ignore_mismatch=False):
                return cache
        except Exception:  # noqa: BLE001 - a damaged cache file: start a fresh one
            pass
        cache = config.create_timing_cache(b"")
        config.set_timing_cache(cache, ignore_mismatch=False)
        return cache

    # -- buffers ----------------------------------------------------------------------------------

    def _bind(self) -> None:
        trt, cudart, engine = self._trt, self._cudart, self.engine
        names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
        inputs = [n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT]
        outputs = [n for n in names if n not in inputs]
        if len(inputs) != 1 or len(outputs) != 1:
            raise EdgerobError(f"engine for {self.artifact.path} has inputs {inputs} and "
                               f"outputs {outputs}; expected one of each")
        self.input_name, self.output_name = inputs[0], outputs[0]
        for n in names:
            try:
                is_float32 = np.dtype(trt.nptype(engine.get_tensor_dtype(n))) == np.float32
            except TypeError:  # a type numpy has no name for (bf16, fp8, int4)
                is_float32 = False
            if not is_float32:
                raise EdgerobError(f"engine tensor {n} is {engine.get_tensor_dtype(n)}; the "
                                   f"artifacts keep float32 inputs and outputs")
        hi = self.batch_sizes[-1]
        self._stream = _check(cudart, cudart.cudaStreamCreate(), "cudaStreamCreate")
        self._profile = 0  # a new context starts on profile 0
        self._set_batch(hi)
        out_shape = tuple(self.context.get_tensor_shape(self.output_name))
        self.num_classes = int(np.prod(out_shape[1:]))
        in_count = hi * int(np.prod(self.input_shape))
        out_count = hi * self.num_classes

        self._events = [_check(cudart, cudart.cudaEventCreate(), "cudaEventCreate")
                        for _ in range(4)]
        self._d_in = self._alloc("device", in_count)
        self._d_out = self._alloc("device", out_count)
        h_in = self._alloc("host", in_count)
        h_out = self._alloc("host", out_count)
        self._h_in = _float_view(h_in, in_count).reshape(hi, *self.input_shape)
        self._h_out = _float_view(h_out, out_count).reshape(hi, self.num_classes)
        self._h_in_ptr, self._h_out_ptr = h_in, h_out
        for name, ptr in ((self.input_name, self._d_in), (self.output_name, self._d_out)):
            if not self.context.set_tensor_address(name, int(ptr)):
                raise RuntimeError(f"TensorRT rejected the address of tensor {name}")

    def _alloc(self, kind: str, floats: int) -> int:
        cudart = self._cudart
        what = "cudaMalloc" if kind == "device" else "cudaMallocHost"  # host: pinned
        ptr = int(_check(cudart, getattr(cudart, what)(floats * 4), what))
        self._buffers.append((kind, ptr))
        return ptr

    def _set_batch(self, n: int) -> None:
        """Switch to batch size n's optimisation profile, then set the input shape."""
        index = self.batch_sizes.index(n)
        if index != self._profile:
            if not self.context.set_optimization_profile_async(index, int(self._stream)):
                raise RuntimeError(f"TensorRT rejected optimisation profile {index} (batch {n})")
            self._profile = index
        if not self.context.set_input_shape(self.input_name, (n, *self.input_shape)):
            raise EdgerobError(f"TensorRT rejected batch size {n} (profile {index})")
        self._batch = n

    # -- run --------------------------------------------------------------------------------------

    def run(self, x: np.ndarray) -> np.ndarray:
        cudart, stream = self._cudart, self._stream
        if stream is None:
            raise EdgerobError("tensorrt: this runtime was closed")
        x = np.asarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise EdgerobError(f"tensorrt: input of shape {x.shape}, the engine takes "
                               f"(N, {', '.join(map(str, self.input_shape))})")
        n = x.shape[0]
        if n not in self.batch_sizes:
            raise EdgerobError(f"tensorrt: batch size {n} has no optimisation profile in this "
                               f"engine (built for {', '.join(map(str, self.batch_sizes))}); "
                               f"pass batch_sizes=[...] including it")
        if n != self._batch:
            self._set_batch(n)
        # Staging into pinned memory is a host copy, outside the timed H2D (as trtexec).
        np.copyto(self._h_in[:n], x)
        ev = self._events
        h2d, d2h = cudart.cudaMemcpyKind.cudaMemcpyHostToDevice, \
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost
        _check(cudart, cudart.cudaEventRecord(ev[0], stream), "cudaEventRecord")
        _check(cudart, cudart.cudaMemcpyAsync(self._d_in, self._h_in_ptr, x.nbytes, h2d, stream),
               "cudaMemcpyAsync (host to device)")
        _check(cudart, cudart.cudaEventRecord(ev[1], stream), "cudaEventRecord")
        if not self.context.execute_async_v3(int(stream)):
            raise RuntimeError("TensorRT execute_async_v3 failed; TensorRT's log says why")
        _check(cudart, cudart.cudaEventRecord(ev[2], stream), "cudaEventRecord")
        _check(cudart, cudart.cudaMemcpyAsync(self._h_out_ptr, self._d_out,
                                              n * self.num_classes * 4, d2h, stream),
               "cudaMemcpyAsync (device to host)")
        _check(cudart, cudart.cudaEventRecord(ev[3], stream), "cudaEventRecord")
        _check(cudart, cudart.cudaStreamSynchronize(stream), "cudaStreamSynchronize")
        elapsed = cudart.cudaEventElapsedTime
        self.last_timing_ms = {
            "h2d": float(_check(cudart, elapsed(ev[0], ev[1]), "cudaEventElapsedTime")),
            "compute": float(_check(cudart, elapsed(ev[1], ev[2]), "cudaEventElapsedTime")),
            "d2h": float(_check(cudart, elapsed(ev[2], ev[3]), "cudaEventElapsedTime")),
        }
        return self._h_out[:n].copy()

    def info(self) -> dict:
        return {"runtime": self.name, "version": self._trt.__version__,
                "tensorrt": self._trt.__version__, "device": self.device_name,
                "device_index": self.device_index,
                "compute_capability": self.compute_capability,
                "strongly_typed": self.strongly_typed, "builder_flags": self.builder_flags,
                "tf32": self.tf32, "engine_cache": str(self.engine_path),
                "engine_from_cache": self.engine_from_cache,
                "batch_sizes": list(self.batch_sizes), **self.identity}

    def close(self) -> None:
        """Free the CUDA buffers, events and stream (also done when the object is collected)."""
        cudart = getattr(self, "_cudart", None)
        if cudart is None:
            return
        for kind, ptr in getattr(self, "_buffers", []):
            try:
                (cudart.cudaFree if kind == "device" else cudart.cudaFreeHost)(ptr)
            except Exception:  # noqa: BLE001 - best effort at shutdown
                pass
        self._buffers = []
        for event in getattr(self, "_events", []):
            try:
                cudart.cudaEventDestroy(event)
            except Exception:  # noqa: BLE001
                pass
        self._events = []
        if getattr(self, "_stream", None) is not None:
            try:
                cudart.cudaStreamDestroy(self._stream)
            except Exception:  # noqa: BLE001
                pass
            self._stream = None

    def __del__(self):
        self.close()
