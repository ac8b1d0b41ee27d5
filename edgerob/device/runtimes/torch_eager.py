"""The `torch` runtime: the artifact's checkpoint in eager PyTorch (optionally torch.compile'd).

The reference backend, and the fallback on GPUs where TensorRT is absent. It runs the checkpoint
the artifact was exported from (`Artifact.checkpoint_dir()`), built by `load_model` (the host's
`edgerob.host.models.load_checkpoint`, handed over in the workload), at the artifact's precision:
fp32 as float32, fp16 as half (weights and activations, like the fp16 graph). `dtype="bf16"` runs
bfloat16, which has no ONNX artifact of its own (run it from the fp32 artifact). int8 Q/DQ graphs
have no eager equivalent here: they need onnxruntime or tensorrt.

TF32 is off by default (`tf32=False`): on Ampere and newer torch lets cuDNN convolutions run fp32
at the TF32 rate unless told not to, so "fp32" would not be fp32. The matmul and cuDNN TF32
switches are process-wide; this runtime sets them when it is made (the last one made wins) and
records the state in `info()`. `tf32=True` measures TF32 deliberately. `torch.compile` is called
with `dynamic=False`, so every batch size gets its own static graph, compiled alike.

torch is imported only when the runtime is used, so `import edgerob.device.runtimes.torch_eager` works on
a device without it; `available()` says why not.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from edgerob.errors import EdgerobError
from edgerob.device.artifacts import load_artifact
from edgerob.device.runtimes import Runtime

# dtype names this runtime accepts, and the torch dtype attribute each maps to.
_DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}
_ALIASES = {"float32": "fp32", "float": "fp32", "float16": "fp16", "half": "fp16",
            "bfloat16": "bf16"}


def _import_torch():
    try:
        import torch  # optional heavy dependency: a device without it still imports this module
    except ImportError as e:
        return None, str(e)
    return torch, ""


def resolve_dtype(artifact_precision: str, dtype: str | None) -> str:
    """The precision a run uses: the artifact's, or bf16 when asked for. int8 is refused."""
    if artifact_precision == "int8":
        raise EdgerobError("the torch runtime runs fp32/fp16/bf16; int8 artifacts need "
                           "onnxruntime or tensorrt")
    if artifact_precision not in ("fp32", "fp16"):
        raise EdgerobError(f"the torch runtime cannot run precision {artifact_precision!r}")
    if dtype is None:
        return artifact_precision
    name = _ALIASES.get(str(dtype).lower(), str(dtype).lower())
    if name not in _DTYPES:
        raise EdgerobError(f"torch: unknown dtype {dtype!r}; choose bf16 (fp32 and fp16 come "
                           f"from the artifact)")
    if name != "bf16" and name != artifact_precision:
        raise EdgerobError(f"torch: dtype {name} on a {artifact_precision} artifact: precision "
                           f"lives in the artifact, use the {name} artifact instead "
                           f"(only bf16, which has no artifact, can be asked for)")
    return name


def cuda_identity(torch, device) -> dict:
    """The CUDA ordinal, UUID and PCI bus id of a torch CUDA device, so the power sensor reads
    the same physical GPU (`edgerob.device.profilers.nvml.resolve_gpu`); absent fields where this torch
    does not report them."""
    index = device.index if device.index is not None else torch.cuda.current_device()
    props = torch.cuda.get_device_properties(index)
    out = {"cuda_device": index}
    if getattr(props, "uuid", None) is not None:
        out["device_uuid"] = str(props.uuid)
    if getattr(props, "pci_bus_id", None) is not None:
        out["pci_bus_id"] = (f"{getattr(props, 'pci_domain_id', 0):08x}:{props.pci_bus_id:02x}:"
                             f"{getattr(props, 'pci_device_id', 0):02x}.0")
    return out


def resolve_device(torch, device: str) -> str:
    """'auto' -> 'cuda' where CUDA is usable, else 'cpu'; checks 'cuda[:N]' is there."""
    if device in (None, "auto"):
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise EdgerobError(f"torch: bad device {device!r} ({e}); use auto, cpu, cuda or "
                           f"cuda:N") from None
    if dev.type == "cpu":
        return "cpu"
    if dev.type != "cuda":
        raise EdgerobError(f"torch: device {device!r} is not supported; use auto, cpu, cuda "
                           f"or cuda:N")
    if not torch.cuda.is_available():
        raise EdgerobError(f"torch: device {device!r} asked for, but this torch "
                           f"({torch.__version__}) sees no CUDA device")
    if dev.index is not None and dev.index >= torch.cuda.device_count():
        raise EdgerobError(f"torch: device {device!r} does not exist here "
                           f"({torch.cuda.device_count()} CUDA device(s))")
    return str(dev)


class TorchRuntime(Runtime):
    name = "torch"
    runs_checkpoint = True

    @classmethod
    def available(cls) -> tuple[bool, str]:
        torch, err = _import_torch()
        if torch is None:
            return False, f"torch is not installed ({err})"
        if torch.cuda.is_available():
            where = f"CUDA {torch.version.cuda} on {torch.cuda.get_device_name(0)}"
        else:
            where = "CPU only (no CUDA device visible to torch)"
        return True, f"torch {torch.__version__}, {where}"

    @classmethod
    def accelerator_options(cls, options: dict) -> tuple[dict | None, str]:
        """CUDA: the options' device when it is a CUDA one, else 'cuda' where torch sees one."""
        device = str(options.get("device", "auto"))
        if device.startswith("cuda"):
            return options, ""
        if device != "auto":
            return None, f"its options ask for device {device!r}"
        torch, _ = _import_torch()
        if not torch.cuda.is_available():
            return None, f"this torch ({torch.__version__}) sees no CUDA device"
        return {**options, "device": "cuda"}, ""

    def __init__(self, artifact_path: str | Path, *, threads: int | None = None,
                 batch_sizes: list[int] | None = None, device: str = "auto",
                 dtype: str | None = None, compile: bool | str = False,
                 cudnn_benchmark: bool = True, tf32: bool = False, load_model=None, **options):
        if options:
            raise EdgerobError(f"torch: unknown options {', '.join(sorted(options))}")
        ok, reason = self.available()
        if not ok:
            raise EdgerobError(f"runtime 'torch' is not available here: {reason}")
        if load_model is None:
            raise EdgerobError("the torch runtime builds the model with the host's code: pass "
                               "load_model=edgerob.host.models.load_checkpoint")
        import torch  # optional heavy dependency: only this runtime needs it

        self.artifact = load_artifact(artifact_path)
        self.precision = resolve_dtype(self.artifact.precision, dtype)
        folder = self.artifact.checkpoint_dir()
        if folder is None:
            raise EdgerobError(f"artifact {artifact_path} does not record the model folder it "
                               f"came from (no model_dir); export it again to run it with torch")
        if not folder.is_dir():
            raise EdgerobError(f"the model folder of artifact {artifact_path} is missing: "
                               f"{folder}")
        model, card = load_model(folder)  # checks the weights against the card's sha256
        if card.checkpoint_sha256 != self.artifact.checkpoint_sha256:
            raise EdgerobError(f"{folder} holds a different checkpoint than {artifact_path} was "
                               f"exported from (sha256 {str(card.checkpoint_sha256)[:12]} vs "
                               f"{self.artifact.checkpoint_sha256[:12]}); export it again")

        if threads:
            # Process-wide, like OMP_NUM_THREADS: it stays set after this runtime is gone.
            torch.set_num_threads(int(threads))
        self.device = torch.device(resolve_device(torch, device))
        if self.device.type == "cuda":
            # cuDNN picks the fastest conv algorithm per shape, as TensorRT's tactic search does.
            # Process-wide, like the thread count.
            torch.backends.cudnn.benchmark = bool(cudnn_benchmark)
        # Process-wide as well; set on CPU too, so the recorded state is the one in force.
        self.tf32 = bool(tf32)
        torch.backends.cuda.matmul.allow_tf32 = self.tf32
        torch.backends.cudnn.allow_tf32 = self.tf32
        self.dtype = getattr(torch, _DTYPES[self.precision])
        self.input_shape = tuple(self.artifact.input_shape)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self._torch = torch
        self._probe(self.model, "eager")
        self.compiled: str | bool = False
        if compile:
            backend = "inductor" if compile is True else str(compile)
            try:
                self.model = torch.compile(self.model, backend=backend, dynamic=False)
            except Exception as e:  # noqa: BLE001 - unknown backend, unsupported platform
                raise EdgerobError(f"torch.compile (backend {backend}) failed here: "
                                   f"{str(e).splitlines()[0][:300]}") from None
            self._probe(self.model, f"torch.compile (backend {backend})")
            self.compiled = backend

    def _probe(self, model, what: str) -> None:
        """One batch of one at load time: an unsupported dtype/device (fp16 on an old CPU torch)
        or a compiler that cannot build fails here with one clear line, not inside a sweep."""
        torch = self._torch
        try:
            with torch.inference_mode():
                model(torch.zeros((1, *self.input_shape), device=self.device, dtype=self.dtype))
        except Exception as e:  # noqa: BLE001 - torch raises RuntimeError/NotImplementedError/...
            raise EdgerobError(f"torch {torch.__version__} cannot run {self.precision} on "
                               f"{self.device} ({what}): {str(e).splitlines()[0][:300]}") from None

    def run(self, x: np.ndarray) -> np.ndarray:
        torch = self._torch
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise EdgerobError(f"torch: input of shape {x.shape}, the model takes "
                               f"(N, {', '.join(map(str, self.input_shape))})")
        with torch.inference_mode():
            # Copy float32 to the device, cast there: the cast is part of the model's work.
            t = torch.from_numpy(x).to(self.device).to(self.dtype)
            y = self.model(t)
            # .cpu() of a CUDA tensor is a blocking copy: the device is synchronised on return.
            return y.float().cpu().numpy()

    def info(self) -> dict:
        torch = self._torch
        info = {"runtime": self.name, "version": torch.__version__, "device": str(self.device),
                "dtype": self.precision, "compiled": self.compiled,
                "threads": torch.get_num_threads(),
                "tf32": bool(torch.backends.cuda.matmul.allow_tf32
                             or torch.backends.cudnn.allow_tf32)}
        if self.device.type == "cuda":
            info.update(device_name=torch.cuda.get_device_name(self.device),
                        cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version(),
                        cudnn_benchmark=bool(torch.backends.cudnn.benchmark),
                        **cuda_identity(torch, self.device))
        return info
