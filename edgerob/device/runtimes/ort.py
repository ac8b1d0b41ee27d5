"""The `onnxruntime` runtime: CPU by default; CUDA/TensorRT execution providers where installed.

`providers` lists execution providers as onnxruntime takes them: names, or `(name, options)`
pairs (a two-item list in YAML), e.g. `[[CUDAExecutionProvider, {device_id: 1}]]` or
`[[TensorrtExecutionProvider, {trt_fp16_enable: true, trt_engine_cache_enable: true}]]`; the
options are passed to onnxruntime as given. onnxruntime drops a provider it cannot load and runs
on the next one (CPU in the end), saying so only on stdout: here every provider asked must be in
the session's `get_providers()`, else the runtime is refused, naming what was asked and got.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.device.runtimes import GPU_PROVIDERS, Runtime

try:
    import onnxruntime as ort
except ImportError as e:  # reported by available(), not at import
    ort, _IMPORT_ERROR = None, str(e)


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


def cuda_device(providers) -> int | None:
    """The CUDA device the first GPU provider runs on (its device_id, 0 by default), or None."""
    for p in providers:
        if provider_name(p) in GPU_PROVIDERS:
            options = {} if isinstance(p, str) else p[1]
            return int(options.get("device_id", 0))
    return None


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
        if "CUDAExecutionProvider" not in have:
            return None, (f"this onnxruntime has no CUDA execution provider (has "
                          f"{', '.join(have)}; install onnxruntime-gpu)")
        return {**options, "providers": ["CUDAExecutionProvider"]}, ""

    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes: list[int] | None = None, providers: list | None = None,
                 **options):
        if options:
            raise EdgerobError(f"onnxruntime: unknown options {', '.join(sorted(options))}")
        self.providers = normalise_providers(providers or ["CPUExecutionProvider"])
        asked = [provider_name(p) for p in self.providers]
        missing = [p for p in asked if p not in ort.get_available_providers()]
        if missing:
            raise EdgerobError(f"onnxruntime here has no {', '.join(missing)} "
                               f"(available: {', '.join(ort.get_available_providers())})")
        so = ort.SessionOptions()
        so.log_severity_level = 3  # keep ORT's warnings off the user's terminal
        if threads:
            so.intra_op_num_threads = threads
            so.inter_op_num_threads = 1
        self.threads = threads or 0
        try:
            self.session = ort.InferenceSession(str(artifact_path), so, providers=self.providers)
        except Exception as e:  # noqa: BLE001 - ORT raises its own types for corrupt models
            raise EdgerobError(f"onnxruntime cannot load {artifact_path}: "
                               f"{str(e).splitlines()[0][:300]}") from None
        got = list(self.session.get_providers())
        dropped = [p for p in asked if p not in got]
        if dropped:  # a silent fallback (CUDA libraries missing, TensorRT EP failed to build)
            raise EdgerobError(f"onnxruntime fell back: asked for {', '.join(asked)}, the session "
                               f"runs on {', '.join(got)} ({', '.join(dropped)} could not be "
                               f"loaded; onnxruntime's stdout says why)")
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]

    def info(self) -> dict:
        info = {"runtime": self.name, "version": ort.__version__,
                "providers": self.session.get_providers(),
                "providers_asked": [p if isinstance(p, str) else [p[0], p[1]]
                                    for p in self.providers],
                "intra_op_threads": self.threads}
        device = cuda_device(self.providers)
        if device is not None:
            info["cuda_device"] = device  # CUDA's ordinal: the profiler maps it to NVML
        return info
