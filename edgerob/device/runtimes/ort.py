"""The `onnxruntime` runtime: CPU by default; CUDA/TensorRT execution providers where installed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.device.runtimes import Runtime

try:
    import onnxruntime as ort
except ImportError as e:  # reported by available(), not at import
    ort, _IMPORT_ERROR = None, str(e)


class OnnxRuntime(Runtime):
    name = "onnxruntime"

    @classmethod
    def available(cls) -> tuple[bool, str]:
        if ort is None:
            return False, f"onnxruntime is not installed ({_IMPORT_ERROR})"
        return True, f"onnxruntime {ort.__version__}"

    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes: list[int] | None = None, providers: list[str] | None = None,
                 **options):
        if options:
            raise EdgerobError(f"onnxruntime: unknown options {', '.join(sorted(options))}")
        self.providers = providers or ["CPUExecutionProvider"]
        missing = [p for p in self.providers if p not in ort.get_available_providers()]
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
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [self.session.get_outputs()[0].name]

    def run(self, x: np.ndarray) -> np.ndarray:
        return self.session.run(self.output_names, {self.input_name: x})[0]

    def info(self) -> dict:
        return {"runtime": self.name, "version": ort.__version__,
                "providers": self.session.get_providers(), "intra_op_threads": self.threads}
