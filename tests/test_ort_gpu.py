"""onnxruntime on a GPU target without a GPU: a fake `InferenceSession` that falls back the way
onnxruntime does (it drops a provider it cannot load and runs on the next, saying so only on
stdout), and the sweep's runtime choice for GPU and Jetson targets."""

from __future__ import annotations

import pytest

from edgerob.errors import EdgerobError
from edgerob.runtimes import create_runtime
from edgerob.runtimes import ort as ortmod
from edgerob.sweep import on_accelerator, pick_runtime
from edgerob.targets import Target, load_target

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"


class _Node:
    name = "input"


class FakeSession:
    """Records what it was given; runs on the providers in `loads` (the ones whose libraries
    "load"), like onnxruntime, which keeps going on the rest without raising."""

    loads = {CPU}
    made: list = []

    def __init__(self, path, options=None, providers=None):
        self.asked = providers
        FakeSession.made.append(self)

    def get_providers(self):
        names = [p if isinstance(p, str) else p[0] for p in self.asked]
        return [n for n in names if n in self.loads] + ([CPU] if CPU not in names else [])

    def get_inputs(self):
        return [_Node()]

    get_outputs = get_inputs


@pytest.fixture
def fake_ort(monkeypatch):
    monkeypatch.setattr(ortmod.ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ortmod.ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(FakeSession, "made", [])
    monkeypatch.setattr(FakeSession, "loads", {CPU})
    return FakeSession


def test_a_session_that_fell_back_to_the_cpu_is_refused(fake_ort):
    with pytest.raises(EdgerobError, match=r"fell back: asked for CUDAExecutionProvider, the "
                                           r"session runs on CPUExecutionProvider"):
        create_runtime("onnxruntime", "m.onnx", providers=[CUDA])
    # TensorRT EP asked, CUDA got: a different runtime than asked, refused as well
    fake_ort.loads = {CUDA, CPU}
    with pytest.raises(EdgerobError, match="TensorrtExecutionProvider could not be loaded"):
        create_runtime("onnxruntime", "m.onnx", providers=[TRT, CUDA, CPU])
    rt = create_runtime("onnxruntime", "m.onnx", providers=[CUDA, CPU])
    assert rt.info()["providers"] == [CUDA, CPU] and rt.info()["cuda_device"] == 0


def test_provider_option_pairs_pass_through_exactly(fake_ort):
    fake_ort.loads = {TRT, CUDA, CPU}
    trt_options = {"device_id": 1, "trt_fp16_enable": True, "trt_int8_enable": False,
                   "trt_engine_cache_enable": True, "trt_engine_cache_path": "/tmp/e"}
    # YAML has no tuples: a two-item list is a (name, options) pair
    rt = create_runtime("onnxruntime", "m.onnx",
                        providers=[[TRT, trt_options], (CUDA, {"device_id": 1}), CPU])
    assert fake_ort.made[-1].asked == [(TRT, trt_options), (CUDA, {"device_id": 1}), CPU]
    info = rt.info()
    assert info["cuda_device"] == 1
    assert info["providers_asked"] == [[TRT, trt_options], [CUDA, {"device_id": 1}], CPU]
    for bad in ([["x"]], [(CUDA, "device_id=1")], [3]):
        with pytest.raises(EdgerobError, match="neither a name nor"):
            create_runtime("onnxruntime", "m.onnx", providers=bad)


def _gpu_target(**changes) -> Target:
    return load_target("h100").model_copy(update=changes)


@pytest.mark.parametrize("name", ["h100", "jetson-agx-orin", "jetson-orin-nano"])
def test_a_gpu_targets_fallback_runs_on_its_gpu(fake_ort, monkeypatch, name):
    target = load_target(name)  # tensorrt, falling back to onnxruntime
    assert on_accelerator(target)
    # TensorRT is absent here; onnxruntime falls in, on the CUDA provider, not the CPU
    assert pick_runtime(target) == ("onnxruntime", {"providers": [CUDA]})
    # an onnxruntime without the CUDA provider cannot stand in for the GPU: refused, reasons given
    monkeypatch.setattr(ortmod.ort, "get_available_providers", lambda: [CPU])
    with pytest.raises(EdgerobError, match="onnxruntime: cannot run on the GPU here: this "
                                           "onnxruntime has no CUDA execution provider"):
        pick_runtime(target)


def test_gpu_target_with_cpu_only_options_is_refused_and_cpu_target_untouched(fake_ort):
    target = _gpu_target(runtime="onnxruntime", fallback_runtimes=[],
                         runtime_options={"providers": [CPU]})
    with pytest.raises(EdgerobError, match="providers ask for no GPU execution provider"):
        pick_runtime(target)
    asked = {"providers": [[CUDA, {"device_id": 2}]]}
    assert pick_runtime(_gpu_target(runtime="onnxruntime", runtime_options=asked)) == (
        "onnxruntime", asked)
    # a target whose runtime options ask for the GPU is one, whatever its profiler
    assert on_accelerator(_gpu_target(runtime="onnxruntime", profiler="none",
                                      runtime_options=asked))
    cpu = load_target("cpu")
    assert not on_accelerator(cpu)
    assert pick_runtime(cpu) == ("onnxruntime", {"providers": [CPU]})
