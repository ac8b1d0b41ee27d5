"""onnxruntime on a GPU target without a GPU: a fake `InferenceSession` that falls back the way
onnxruntime does (it drops a provider it cannot load and runs on the next, saying so only on
stdout), and the sweep's runtime choice for GPU and Jetson targets."""

from __future__ import annotations

import json
import os
import sys
from types import SimpleNamespace

import pytest

from edgerob.host.workload import prepare_workload
from edgerob.errors import EdgerobError
from edgerob.device.runtimes import create_runtime
from edgerob.device.runtimes import ort as ortmod
from edgerob.store import Store
from edgerob.catalog.profiles import Profile
from edgerob.device.sweep import on_accelerator, pick_runtime, run_profile, sensor_options
from edgerob.catalog.targets import Target, load_target

from conftest import FAST
from test_profilers_host import FakeGpu, fake_pynvml

CUDA = "CUDAExecutionProvider"
TRT = "TensorrtExecutionProvider"
CPU = "CPUExecutionProvider"
REAL_SESSION = ortmod.ort.InferenceSession


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
    return load_target("h100-sxm").model_copy(update=changes)


@pytest.mark.parametrize("name", ["h100-sxm", "jetson-agx-orin-64gb", "jetson-orin-nano-8gb"])
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


class GpuPretendingSession(FakeSession):
    """Runs the model for real on the CPU but reports the providers asked, as a CUDA session
    would: enough to drive a whole sweep of a GPU target here."""

    def __init__(self, path, options=None, providers=None):
        super().__init__(path, options, providers)
        self.real = REAL_SESSION(path, providers=[CPU])

    def get_providers(self):
        return [p if isinstance(p, str) else p[0] for p in self.asked]

    def get_inputs(self):
        return self.real.get_inputs()

    def get_outputs(self):
        return self.real.get_outputs()

    def run(self, *args):
        return self.real.run(*args)


def test_gpu_sweep_reads_the_runtimes_gpu_and_fingerprints_it(fake_ort, monkeypatch, tmp_path,
                                                                tiny_model):
    monkeypatch.setattr(ortmod.ort, "InferenceSession", GpuPretendingSession)
    gpus = [FakeGpu(name=f"NVIDIA L4 #{i}", instant_mw=70_000, memory_gib=22.5,  # no counter
                    pci=f"00000000:{bus:02X}:00.0") for i, bus in enumerate((0x01, 0x81))]
    monkeypatch.setitem(sys.modules, "pynvml", fake_pynvml(gpus))
    monkeypatch.setenv("CUDA_DEVICE_ORDER", "FASTEST_FIRST")  # overridden: CUDA 0 is ambiguous
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")  # the second GPU on the bus: NVML index 1
    target = load_target("l4").model_copy(update={
        "runtime": "onnxruntime", "fallback_runtimes": [],
        "runtime_options": {"providers": [[CUDA, {"device_id": 0}]]},
        "profiler_options": {"interval_s": 0.01}})
    profile = Profile(name="one", precisions=["fp32"], batch_sizes=[4], timing=FAST)
    res = run_profile(target, profile, prepare_workload(profile, tiny_model), Store(f"sqlite:///{tmp_path}/s.db"))
    assert os.environ["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # set before any CUDA use
    fp = json.loads(res.rows[0]["fingerprint"])
    assert fp["cuda_device"] == 0 and fp["providers"] == [CUDA]
    assert res.rows[0]["power_mean_w"] == pytest.approx(70.0)  # the fake GPU's 70 W
    assert (fp["gpu_uuid"], fp["gpu_name"], fp["gpu_pci_bus_id"], fp["nvml_index"]) == (
        gpus[1].uuid, "NVIDIA L4 #1", "00000000:81:00.0", 1)


def test_sensor_options_follow_the_runtime_device():
    def rt(**info):
        return SimpleNamespace(info=lambda: info)

    h100 = load_target("h100-sxm")
    base = h100.profiler_options
    assert sensor_options(h100, rt(cuda_device=1)) == {**base, "cuda_device": 1}
    assert sensor_options(h100, rt(cuda_device=1, pci_bus_id="0000:65:00.0",
                                   device_uuid="GPU-ab")) == {**base, "gpu_uuid": "GPU-ab"}
    orin = load_target("jetson-agx-orin-64gb")  # tegrastats reads the module: options as they are
    assert sensor_options(orin, rt(cuda_device=0)) == orin.profiler_options
