"""The `onnxruntime` runtime: CPU by default; CUDA/TensorRT execution providers where installed.

`providers` lists execution providers as onnxruntime takes them: names, or `(name, options)`
pairs (a two-item list in YAML), e.g. `[[CUDAExecutionProvider, {device_id: 1}]]` or
`[[TensorrtExecutionProvider, {trt_engine_cache_enable: true}], CUDAExecutionProvider]`.
onnxruntime drops a provider it cannot load and runs on the next one (CPU in the end), saying so
only on stdout: here every provider asked must be in the session's `get_providers()`, else the
runtime is refused, naming what was asked and got.

On a GPU the runtime sets the options that decide what a measurement is, so its label holds:

- TF32 is off unless the runtime option `tf32: true` asks for it (the tensorrt runtime's option).
  The CUDA EP runs fp32 Conv/MatMul in TF32 unless its option `use_tf32` is 0 (default 1; the
  option came with onnxruntime PRs #19357/#19426 in 2024, and an older CUDA EP refuses it). The
  TensorRT EP has no such option and TensorRT enables TF32 by default, so for it this process
  gets NVIDIA_TF32_OVERRIDE=0, NVIDIA's switch that turns TF32 off in cuBLAS, cuDNN and TensorRT
  (the only one for that EP: onnxruntime issue #26029). `info()["tf32"]` records the setting.
- The TensorRT EP gets one session per batch size (`batch_sizes`), each with min = opt = max =
  (b, C, H, W), so every batch size is timed on an engine built for it: without explicit
  profiles the EP rebuilds its engine for the largest shape seen, and batch 1 would run on an
  engine tuned for batch 32. `run()` picks the session by batch size and refuses one not built.
  One session with several profiles is not used: the EP builds them but keeps its execution
  context on profile 0 (onnxruntime PR #31624, open).
- Precision lives in the artifact (its metadata beside the ONNX file; a bare ONNX file has none
  and sets no constraint). It decides the TensorRT EP's trt_fp16_enable / trt_int8_enable: fp32
  neither, fp16 the first, int8 the second alone (explicit Q/DQ quantisation; layers the graph
  keeps in float stay fp32, as in the tensorrt runtime). A provider option that contradicts the
  precision is refused, and so is an int8 artifact on the CUDA EP, which runs float convolutions
  between the Quantize/Dequantize nodes.
- onnxruntime places a node its GPU provider has no kernel for on the CPU, silently. A GPU session
  runs one batch of zeros under onnxruntime's profiler when it is made, and `info()["cpu_nodes"]`
  lists the nodes the trace shows on the CPU ("OpType node-name").
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np

from edgerob.device.artifacts import PRECISIONS, load_artifact, metadata_path
from edgerob.device.runtimes import GPU_PROVIDERS, Runtime
from edgerob.device.runtimes.trt import profile_batches
from edgerob.errors import EdgerobError

try:
    import onnxruntime as ort
except ImportError as e:  # reported by available(), not at import
    ort, _IMPORT_ERROR = None, str(e)

CPU, CUDA, TRT = "CPUExecutionProvider", "CUDAExecutionProvider", "TensorrtExecutionProvider"
TF32_OVERRIDE = "NVIDIA_TF32_OVERRIDE"
# The TensorRT EP's precision options (tensorrt_execution_provider_info.cc; trt_bf16_enable only
# in recent onnxruntime, which older ones reject as unknown: checked, never added) and the one
# each artifact precision turns on.
TRT_FLAGS = ("trt_fp16_enable", "trt_int8_enable", "trt_bf16_enable")
TRT_FLAG_OF = {"fp32": None, "fp16": "trt_fp16_enable", "int8": "trt_int8_enable"}
TRT_PROFILE_OPTIONS = ("trt_profile_min_shapes", "trt_profile_opt_shapes",
                       "trt_profile_max_shapes")

# Whether a GPU session with TF32 on was made in this process: the libraries keep the
# NVIDIA_TF32_OVERRIDE they first read (onnxruntime issue #26029), so TF32 cannot be turned off
# for the TensorRT EP afterwards.
_tf32_session_made = False


def normalise_providers(providers) -> list:
    """Names stay names; `(name, options)` pairs (tuples, or two-item lists from YAML) become
    tuples, options untouched. Anything else is an error naming the entry."""
    out = []
    for p in providers:
        if isinstance(p, str):
            out.append(p)
        elif (isinstance(p, (list, tuple)) and len(p) == 2 and isinstance(p[0], str)
              and isinstance(p[1], dict)):
            out.append((p[0], p[1]))
        else:
            raise EdgerobError(f"onnxruntime: provider {p!r} is neither a name nor a "
                               f"(name, options) pair")
    return out


def provider_name(p) -> str:
    return p if isinstance(p, str) else p[0]


def gpu_provider(providers) -> str | None:
    """The GPU provider that gets the graph first (onnxruntime assigns nodes in list order)."""
    return next((provider_name(p) for p in providers if provider_name(p) in GPU_PROVIDERS), None)


def cuda_device(providers) -> int | None:
    """The CUDA device the first GPU provider runs on (its device_id, 0 by default), or None."""
    for p in providers:
        if provider_name(p) in GPU_PROVIDERS:
            options = {} if isinstance(p, str) else p[1]
            return int(options.get("device_id", 0))
    return None


def artifact_precision(path) -> str | None:
    """The precision in the artifact's metadata beside the ONNX file, None for a file without it.
    Not hashed again: whoever found the artifact (find_artifacts, a bundle) verified it."""
    if not metadata_path(path).is_file():
        return None
    precision = load_artifact(path, verify=False).precision
    if precision not in PRECISIONS:
        raise EdgerobError(f"{metadata_path(path)}: unknown precision {precision!r}")
    return precision


def flag(provider: str, name: str, value) -> bool:
    """A boolean provider option as onnxruntime parses it: Python's True/False reach it as
    'True'/'False' (str() of each value), and its parsers take those, true/false and 1/0."""
    if str(value) in ("True", "true", "1"):
        return True
    if str(value) in ("False", "false", "0"):
        return False
    raise EdgerobError(f"onnxruntime: {provider} option {name}={value!r} is not a boolean")


def node_providers(trace: list) -> dict[str, str]:
    """'OpType node-name' -> execution provider of every node an onnxruntime profiling trace shows
    running: its kernel events have cat "Node", name NODE_kernel_time and args op_name and
    provider (onnxruntime/core/framework/sequential_executor.cc)."""
    placed = {}
    for event in trace:
        args = event.get("args") or {}
        if event.get("cat") == "Node" and "provider" in args:
            node = str(event.get("name", "")).removesuffix("_kernel_time")
            placed[f"{args.get('op_name', '?')} {node}"] = args["provider"]
    return placed


def _chw(node) -> tuple[int, ...]:
    chw = tuple(node.shape[1:])
    if not chw or not all(isinstance(d, int) for d in chw):
        raise EdgerobError(f"onnxruntime: input {node.name} has shape {list(node.shape)}; an "
                           f"artifact has a dynamic batch axis and a static C, H, W")
    return chw


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if ort is None:
            return False, f"onnxruntime is not installed ({_IMPORT_ERROR})"
        return True, f"onnxruntime {ort.__version__}"

    @classmethod
    def accelerator_options(cls, options: dict) -> tuple[dict | None, str]:
        """On a GPU target: the options' providers when they include a GPU provider, else the
        CUDA provider where this onnxruntime has it; never the CPU provider alone."""
        if "providers" in options:
            if cuda_device(normalise_providers(options["providers"])) is None:
                return None, "its providers ask for no GPU execution provider"
            return options, ""
        have = ort.get_available_providers()
        if CUDA not in have:
            return None, (f"this onnxruntime has no CUDA execution provider (has "
                          f"{', '.join(have)}; install onnxruntime-gpu)")
        return {**options, "providers": [CUDA]}, ""

    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes: list[int] | None = None, providers: list | None = None,
                 tf32: bool = False, **options):
        global _tf32_session_made
        if options:
            raise EdgerobError(f"onnxruntime: unknown options {', '.join(sorted(options))}")
        if not isinstance(tf32, bool):
            raise EdgerobError(f"onnxruntime: tf32 must be true or false, got {tf32!r}")
        self.providers = normalise_providers(providers or [CPU])
        asked = [provider_name(p) for p in self.providers]
        missing = [p for p in asked if p not in ort.get_available_providers()]
        if missing:
            raise EdgerobError(f"onnxruntime here has no {', '.join(missing)} "
                               f"(available: {', '.join(ort.get_available_providers())})")
        self.path, self.threads, self.tf32 = str(artifact_path), threads or 0, tf32
        self.gpu = gpu_provider(self.providers)
        self.cpu_nodes: list[str] = []
        if self.gpu is None:
            if tf32:
                raise EdgerobError("onnxruntime: tf32: true needs a GPU execution provider; "
                                   "this session runs on the CPU")
            self._sessions = {None: self._open(self.providers)}
        else:
            self.precision = artifact_precision(artifact_path)
            if self.precision == "int8" and self.gpu == CUDA:
                raise EdgerobError(
                    f"onnxruntime: {artifact_path} is an int8 (Q/DQ) artifact and the CUDA "
                    f"execution provider runs its convolutions in float between the Q/DQ nodes; "
                    f"use the TensorRT execution provider or the tensorrt runtime")
            self._set_tf32()
            self.provider_options = self._provider_options()
            if self.gpu == TRT:
                # the graph's input, read on the CPU: the engines are built for its shapes
                probe = self._open([CPU]).get_inputs()[0]
                self.trt_shapes = {
                    b: f"{probe.name}:{'x'.join(map(str, (b, *_chw(probe))))}"
                    for b in profile_batches(batch_sizes)}
                self._sessions = {b: self._open(self._with_profile(shape), probe=b)
                                  for b, shape in self.trt_shapes.items()}
            else:
                self._sessions = {None: self._open(self.provider_options,
                                                   probe=profile_batches(batch_sizes or 1)[0])}
            _tf32_session_made = _tf32_session_made or tf32
        first = next(iter(self._sessions.values()))
        self.input_name = first.get_inputs()[0].name
        self.output_names = [first.get_outputs()[0].name]

    def _set_tf32(self) -> None:
        if self.tf32 and os.environ.get(TF32_OVERRIDE) == "0":
            raise EdgerobError(f"onnxruntime: tf32: true, but {TF32_OVERRIDE}=0 in this process "
                               f"turns TF32 off in cuBLAS, cuDNN and TensorRT; measure TF32 in a "
                               f"process without it")
        if self.gpu == TRT and not self.tf32:
            if _tf32_session_made:
                raise EdgerobError("onnxruntime: a TF32 session was made earlier in this process "
                                   "and TensorRT keeps the TF32 setting it first read; measure "
                                   "the TensorRT EP without TF32 in a new process")
            # no TensorRT EP option clears TensorRT's default TF32 builder flag (issue #26029)
            os.environ[TF32_OVERRIDE] = "0"

    def _provider_options(self) -> list:
        """The providers with the options this runtime decides: use_tf32 on the CUDA EP, the
        precision flags on the TensorRT EP. A user's option that contradicts them is refused."""
        out = []
        for p in self.providers:
            name, options = (p, {}) if isinstance(p, str) else (p[0], dict(p[1]))
            if name == CUDA:
                self._require(name, options, "use_tf32", self.tf32,
                              f"tf32: {str(self.tf32).lower()} (set the runtime option tf32)")
                # onnxruntime's default is 1 (use_tf32{true}, cuda_execution_provider_info.h)
                options["use_tf32"] = int(self.tf32)
            elif name == TRT:
                for option in TRT_PROFILE_OPTIONS:
                    if option in options:
                        raise EdgerobError(f"onnxruntime: {option} is set by the runtime, one "
                                           f"profile per batch size; pass batch_sizes instead")
                if self.precision is not None:
                    for trt_flag in TRT_FLAGS:
                        want = trt_flag == TRT_FLAG_OF[self.precision]
                        self._require(name, options, trt_flag, want,
                                      f"the {self.precision} artifact {self.path}")
                        if trt_flag != "trt_bf16_enable":
                            options[trt_flag] = want
            out.append((name, options) if name in GPU_PROVIDERS or not isinstance(p, str)
                       else name)
        return out

    def _with_profile(self, shape: str) -> list:
        """The providers with the TensorRT EP's optimisation profile at one shape (min = opt =
        max, 'input:BxCxHxW', the format of trt_profile_*_shapes)."""
        return [(p[0], {**p[1], **dict.fromkeys(TRT_PROFILE_OPTIONS, shape)})
                if provider_name(p) == TRT else p for p in self.provider_options]

    @staticmethod
    def _require(provider: str, options: dict, name: str, want: bool, because: str) -> None:
        if name in options and flag(provider, name, options[name]) != want:
            raise EdgerobError(f"onnxruntime: {provider} option {name}={options[name]!r} "
                               f"contradicts {because}")

    def _open(self, providers: list, probe: int | None = None):
        """A session on `providers`, refused when onnxruntime dropped one. With `probe`, one batch
        of zeros of that size runs under onnxruntime's profiler (which stops at end_profiling),
        and the nodes its trace shows on the CPU join `cpu_nodes`."""
        so = ort.SessionOptions()
        so.log_severity_level = 3  # keep ORT's warnings off the user's terminal
        if self.threads:
            so.intra_op_num_threads = self.threads
            so.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory(prefix="edgerob-ort-") as tmp:  # the trace goes with it
            if probe:
                so.enable_profiling = True
                so.profile_file_prefix = os.path.join(tmp, "trace")
            try:
                session = ort.InferenceSession(self.path, so, providers=providers)
            except Exception as e:  # noqa: BLE001 - ORT raises its own types for corrupt models
                raise EdgerobError(f"onnxruntime cannot load {self.path}: "
                                   f"{str(e).splitlines()[0][:300]}") from None
            asked = [provider_name(p) for p in providers]
            got = list(session.get_providers())
            dropped = [p for p in asked if p not in got]
            if dropped:  # a silent fallback (CUDA libraries missing, TensorRT EP failed to build)
                raise EdgerobError(f"onnxruntime fell back: asked for {', '.join(asked)}, the "
                                   f"session runs on {', '.join(got)} ({', '.join(dropped)} could "
                                   f"not be loaded; onnxruntime's stdout says why)")
            if probe:
                node = session.get_inputs()[0]
                zeros = np.zeros((probe, *_chw(node)), np.float32)
                try:
                    session.run(None, {node.name: zeros})
                except Exception as e:  # noqa: BLE001 - ORT's own types (engine build, memory)
                    raise EdgerobError(f"onnxruntime cannot run {self.path} on "
                                       f"{', '.join(asked)}: "
                                       f"{str(e).splitlines()[0][:300]}") from None
                with open(session.end_profiling()) as f:
                    placed = node_providers(json.load(f))
                self.cpu_nodes += [n for n, p in placed.items()
                                   if p == CPU and n not in self.cpu_nodes]
        return session

    def run(self, x: np.ndarray) -> np.ndarray:
        session = self._sessions.get(len(x) if self.gpu == TRT else None)
        if session is None:
            raise EdgerobError(f"onnxruntime: batch size {len(x)} has no TensorRT EP session "
                               f"(built for {', '.join(map(str, self.trt_shapes))}); pass "
                               f"batch_sizes=[...] including it")
        return session.run(self.output_names, {self.input_name: x})[0]

    def info(self) -> dict:
        first = next(iter(self._sessions.values()))
        asked = self.provider_options if self.gpu else self.providers
        info = {"runtime": self.name, "version": ort.__version__,
                "providers": first.get_providers(),
                "providers_asked": [p if isinstance(p, str) else [p[0], p[1]] for p in asked],
                "intra_op_threads": self.threads, "tf32": self.tf32}
        if self.gpu:
            info["cuda_device"] = cuda_device(self.providers)  # the profiler maps it to NVML
            info["cpu_nodes"] = list(self.cpu_nodes)
        if self.gpu == TRT:
            trt_options = next(p[1] for p in asked if provider_name(p) == TRT)
            info["trt_profile_shapes"] = list(self.trt_shapes.values())  # min = opt = max
            info.update({f: flag(TRT, f, trt_options.get(f, False)) for f in TRT_FLAGS})
        return info
