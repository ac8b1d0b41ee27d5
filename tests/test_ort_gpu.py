"""onnxruntime on a GPU target without a GPU: a fake `InferenceSession` that falls back the way
onnxruntime does (it drops a provider it cannot load and runs on the next, saying so only on
stdout), and the sweep's runtime choice for GPU and Jetson targets."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from edgerob.host.workload import prepare_workload
from edgerob.errors import EdgerobError
from edgerob.device.artifacts import metadata_path
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
    shape = ["batch", 3, 8, 8]


class FakeSession:
    """Records what it was given; runs on the providers in `loads` (the ones whose libraries
    "load"), like onnxruntime, which keeps going on the rest without raising. Its graph has
    `nodes` (op type, node name), each placed on the session's first provider unless `placed`
    names another for its op type; `end_profiling` writes their kernel events as onnxruntime
    does, under the session options' profile_file_prefix."""

    loads = {CPU}
    made: list = []
    nodes = (("Conv", "/layer1/conv/Conv"), ("Softmax", "/fc/Softmax"))
    placed: dict = {}

    def __init__(self, path, options=None, providers=None):
        self.asked, self.options, self.fed = providers, options, []
        FakeSession.made.append(self)

    def get_providers(self):
        names = [p if isinstance(p, str) else p[0] for p in self.asked]
        return [n for n in names if n in self.loads] + ([CPU] if CPU not in names else [])

    def get_inputs(self):
        return [_Node()]

    get_outputs = get_inputs

    def run(self, output_names, feed):
        x = feed["input"]
        self.fed.append(x.shape)
        return [np.full((len(x), 10), len(self.fed), np.float32)]

    def end_profiling(self):
        first = self.get_providers()[0]
        trace = [{"cat": "Session", "name": "model_run", "args": {}}] + [
            {"cat": "Node", "name": f"{node}_kernel_time",
             "args": {"op_name": op, "provider": self.placed.get(op, first)}}
            for op, node in self.nodes]
        path = f"{self.options.profile_file_prefix}_fake.json"
        Path(path).write_text(json.dumps(trace))
        return path

    def trt_options(self) -> dict:
        return next(p[1] for p in self.asked if not isinstance(p, str) and p[0] == TRT)


@pytest.fixture
def fake_ort(monkeypatch):
    monkeypatch.setattr(ortmod.ort, "InferenceSession", FakeSession)
    monkeypatch.setattr(ortmod.ort, "get_available_providers", lambda: [TRT, CUDA, CPU])
    monkeypatch.setattr(FakeSession, "made", [])
    monkeypatch.setattr(FakeSession, "loads", {CPU})
    monkeypatch.setattr(FakeSession, "placed", {})
    # The runtime sets NVIDIA_TF32_OVERRIDE and remembers TF32 sessions for the whole process:
    # both are undone after each test (setenv first, so that monkeypatch restores the absence).
    monkeypatch.setenv(ortmod.TF32_OVERRIDE, "unset")
    monkeypatch.delenv(ortmod.TF32_OVERRIDE)
    monkeypatch.setattr(ortmod, "_tf32_session_made", False)
    return FakeSession


def artifact(tmp_path, precision: str) -> str:
    """An ONNX file with its metadata beside it, as export writes them (the fake never reads
    the graph)."""
    path = tmp_path / f"{precision}.onnx"
    path.write_bytes(b"graph")
    metadata_path(path).write_text(json.dumps({
        "path": str(path), "precision": precision, "sha256": "0" * 64, "model": "m",
        "checkpoint_sha256": "1" * 64, "input_shape": [3, 8, 8], "opset": 17,
        "exporter": "test"}))
    return str(path)


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


def shapes(shape: str) -> dict:
    return dict.fromkeys(ortmod.TRT_PROFILE_OPTIONS, shape)


def test_provider_option_pairs_pass_through_with_the_runtimes_own(fake_ort):
    fake_ort.loads = {TRT, CUDA, CPU}
    trt_options = {"device_id": 1, "trt_fp16_enable": True, "trt_int8_enable": False,
                   "trt_engine_cache_enable": True, "trt_engine_cache_path": "/tmp/e"}
    # YAML has no tuples: a two-item list is a (name, options) pair
    rt = create_runtime("onnxruntime", "m.onnx", batch_sizes=[4],
                        providers=[[TRT, trt_options], (CUDA, {"device_id": 1}), CPU])
    # a bare ONNX file has no precision: the user's precision flags stay as given; the runtime
    # adds its profile shapes and TF32 setting, and leaves the user's dicts alone
    assert fake_ort.made[-1].asked == [(TRT, {**trt_options, **shapes("input:4x3x8x8")}),
                                       (CUDA, {"device_id": 1, "use_tf32": 0}), CPU]
    assert "trt_profile_min_shapes" not in trt_options
    info = rt.info()
    assert info["cuda_device"] == 1 and info["trt_fp16_enable"] is True
    assert info["providers_asked"] == [[TRT, trt_options], [CUDA, {"device_id": 1, "use_tf32": 0}],
                                       CPU]
    for bad in ([["x"]], [(CUDA, "device_id=1")], [3]):
        with pytest.raises(EdgerobError, match="neither a name nor"):
            create_runtime("onnxruntime", "m.onnx", providers=bad)


def test_cuda_ep_runs_fp32_without_tf32_unless_asked(fake_ort):
    fake_ort.loads = {CUDA, CPU}
    rt = create_runtime("onnxruntime", "m.onnx", providers=[CUDA])
    # onnxruntime's CUDA EP default is use_tf32=1: fp32 convs would run in TF32
    assert fake_ort.made[-1].asked == [(CUDA, {"use_tf32": 0})] and rt.info()["tf32"] is False
    rt = create_runtime("onnxruntime", "m.onnx", providers=[(CUDA, {"device_id": 0})], tf32=True)
    assert fake_ort.made[-1].asked == [(CUDA, {"device_id": 0, "use_tf32": 1})]
    assert rt.info()["tf32"] is True
    # a provider option cannot contradict the runtime option that decides TF32
    with pytest.raises(EdgerobError, match=r"CUDAExecutionProvider option use_tf32='1' "
                                           r"contradicts tf32: false"):
        create_runtime("onnxruntime", "m.onnx", providers=[(CUDA, {"use_tf32": "1"})])
    with pytest.raises(EdgerobError, match="tf32: true needs a GPU execution provider"):
        create_runtime("onnxruntime", "m.onnx", providers=[CPU], tf32=True)
    with pytest.raises(EdgerobError, match="tf32 must be true or false, got 'no'"):
        create_runtime("onnxruntime", "m.onnx", providers=[CUDA], tf32="no")
    # NVIDIA_TF32_OVERRIDE=0 turns TF32 off whatever use_tf32 says: a TF32 label would be false
    os.environ[ortmod.TF32_OVERRIDE] = "0"
    with pytest.raises(EdgerobError, match="NVIDIA_TF32_OVERRIDE=0 in this process"):
        create_runtime("onnxruntime", "m.onnx", providers=[CUDA], tf32=True)
    assert create_runtime("onnxruntime", "m.onnx", providers=[CPU]).info()["tf32"] is False


def test_tensorrt_ep_builds_one_engine_per_batch_size_and_runs_by_batch(fake_ort, tmp_path):
    fake_ort.loads = {TRT, CUDA, CPU}
    rt = create_runtime("onnxruntime", artifact(tmp_path, "fp32"), batch_sizes=[8, 1],
                        providers=[TRT, CUDA])
    probe, *engines = fake_ort.made
    assert probe.asked == [CPU]  # the input's name and C, H, W, read before any engine is built
    # one session per batch size, min = opt = max: each batch size has an engine tuned for it
    assert [s.trt_options() for s in engines] == [
        {"trt_fp16_enable": False, "trt_int8_enable": False, **shapes(f"input:{b}x3x8x8")}
        for b in (1, 8)]
    assert [s.fed for s in engines] == [[(1, 3, 8, 8)], [(8, 3, 8, 8)]]  # built and probed
    # run() takes the session built for the batch size (the fake answers its call count)
    assert rt.run(np.zeros((8, 3, 8, 8), np.float32))[0, 0] == 2
    assert rt.run(np.zeros((1, 3, 8, 8), np.float32))[0, 0] == 2
    assert [s.fed[-1][0] for s in engines] == [1, 8]
    with pytest.raises(EdgerobError, match=r"batch size 4 has no TensorRT EP session \(built "
                                           r"for 1, 8\)"):
        rt.run(np.zeros((4, 3, 8, 8), np.float32))
    info = rt.info()
    assert info["trt_profile_shapes"] == ["input:1x3x8x8", "input:8x3x8x8"]
    assert (info["trt_fp16_enable"], info["trt_int8_enable"], info["trt_bf16_enable"]) == (
        False, False, False)
    # the profiles are the runtime's: a user's own would be silently replaced
    with pytest.raises(EdgerobError, match="trt_profile_min_shapes is set by the runtime"):
        create_runtime("onnxruntime", "m.onnx", providers=[
            (TRT, {"trt_profile_min_shapes": "input:1x3x8x8"})])


def test_tensorrt_ep_tf32_follows_the_runtime_option(fake_ort, tmp_path):
    fake_ort.loads = {TRT, CUDA, CPU}
    path = artifact(tmp_path, "fp32")
    # TensorRT sets TF32 by default and the EP has no option for it: NVIDIA's override clears it
    rt = create_runtime("onnxruntime", path, batch_sizes=[1], providers=[TRT, CUDA])
    assert os.environ[ortmod.TF32_OVERRIDE] == "0" and rt.info()["tf32"] is False
    assert fake_ort.made[-1].asked[1] == (CUDA, {"use_tf32": 0})  # the EP's CUDA fallback too
    os.environ.pop(ortmod.TF32_OVERRIDE)
    rt = create_runtime("onnxruntime", path, batch_sizes=[1], providers=[TRT, CUDA], tf32=True)
    assert ortmod.TF32_OVERRIDE not in os.environ and rt.info()["tf32"] is True
    # TensorRT keeps the override it first read: TF32 off is no longer possible in this process
    with pytest.raises(EdgerobError, match="a TF32 session was made earlier in this process"):
        create_runtime("onnxruntime", path, batch_sizes=[1], providers=[TRT, CUDA])


def test_int8_artifact_on_the_cuda_ep_is_refused(fake_ort, tmp_path):
    fake_ort.loads = {TRT, CUDA, CPU}
    int8 = artifact(tmp_path, "int8")
    for providers in ([CUDA], [CUDA, TRT]):  # CUDA first gets the graph: float convs
        with pytest.raises(EdgerobError, match=r"int8 \(Q/DQ\) artifact and the CUDA execution "
                                               r"provider .* use the TensorRT execution provider "
                                               r"or the tensorrt runtime"):
            create_runtime("onnxruntime", int8, providers=providers)
    # on the TensorRT EP the Q/DQ graph builds int8 kernels: INT8 alone, as the tensorrt runtime
    rt = create_runtime("onnxruntime", int8, batch_sizes=[2], providers=[TRT, CUDA])
    assert fake_ort.made[-1].trt_options() == {"trt_fp16_enable": False, "trt_int8_enable": True,
                                               **shapes("input:2x3x8x8")}
    assert rt.info()["trt_int8_enable"] is True
    # no metadata, no precision: no constraint; fp32 runs on the CUDA EP as before
    create_runtime("onnxruntime", "m.onnx", providers=[CUDA])
    create_runtime("onnxruntime", artifact(tmp_path, "fp32"), providers=[CUDA])


def test_the_artifact_decides_the_tensorrt_precision_flags(fake_ort, tmp_path):
    fake_ort.loads = {TRT, CUDA, CPU}
    fp32, fp16, int8 = (artifact(tmp_path, p) for p in ("fp32", "fp16", "int8"))
    # a target-wide option cannot turn the fp32 session into an fp16 one
    with pytest.raises(EdgerobError, match=r"TensorrtExecutionProvider option "
                                           r"trt_fp16_enable=True contradicts the fp32 artifact"):
        create_runtime("onnxruntime", fp32, providers=[(TRT, {"trt_fp16_enable": True})])
    for same in (True, "true", 1):  # agreeing values are accepted, however spelled
        create_runtime("onnxruntime", fp16, batch_sizes=[1],
                       providers=[(TRT, {"trt_fp16_enable": same})])
        assert fake_ort.made[-1].trt_options()["trt_fp16_enable"] is True
    rt = create_runtime("onnxruntime", fp16, batch_sizes=[1], providers=[TRT])
    assert fake_ort.made[-1].trt_options() == {"trt_fp16_enable": True, "trt_int8_enable": False,
                                               **shapes("input:1x3x8x8")}
    assert (rt.info()["trt_fp16_enable"], rt.info()["trt_int8_enable"]) == (True, False)
    with pytest.raises(EdgerobError, match=r"trt_fp16_enable='true' contradicts the int8"):
        create_runtime("onnxruntime", int8, providers=[(TRT, {"trt_fp16_enable": "true"})])
    with pytest.raises(EdgerobError, match=r"trt_int8_enable=1 contradicts the fp16"):
        create_runtime("onnxruntime", fp16, providers=[(TRT, {"trt_int8_enable": 1})])
    with pytest.raises(EdgerobError, match=r"trt_bf16_enable=True contradicts the fp16"):
        create_runtime("onnxruntime", fp16, providers=[(TRT, {"trt_bf16_enable": True})])
    with pytest.raises(EdgerobError, match=r"trt_fp16_enable='maybe' is not a boolean"):
        create_runtime("onnxruntime", fp16, providers=[(TRT, {"trt_fp16_enable": "maybe"})])


def test_nodes_placed_on_the_cpu_are_reported(fake_ort):
    fake_ort.loads = {CUDA, CPU}
    fake_ort.placed = {"Softmax": CPU}  # onnxruntime's CUDA EP "has no kernel" for it
    rt = create_runtime("onnxruntime", "m.onnx", batch_sizes=[4, 2], providers=[CUDA])
    session = fake_ort.made[-1]
    assert session.fed == [(2, 3, 8, 8)]  # one probe at the first batch size, under profiling
    assert session.options.enable_profiling
    assert rt.info()["cpu_nodes"] == ["Softmax /fc/Softmax"]
    assert not Path(session.options.profile_file_prefix).parent.exists()  # trace deleted
    fake_ort.placed = {}
    assert create_runtime("onnxruntime", "m.onnx", providers=[CUDA]).info()["cpu_nodes"] == []
    # a CPU session runs everything on the CPU by design: no probe, no report
    cpu = create_runtime("onnxruntime", "m.onnx", providers=[CPU])
    assert "cpu_nodes" not in cpu.info()
    assert fake_ort.made[-1].fed == [] and not fake_ort.made[-1].options.enable_profiling


# Kernel events from the trace onnxruntime 1.32 (CPU) wrote for a Conv-Relu-Flatten-MatMul-
# Softmax graph, cut to the fields that matter (the memory and thread statistics dropped); the
# Conv+Relu pair ran fused as "r_nchwc" and the layout transformer added ReorderOutput.
RECORDED_TRACE = [
    {"cat": "Session", "pid": 4931, "tid": 4931, "dur": 10584, "ts": 393, "ph": "X",
     "name": "session_initialization", "args": {}},
    {"cat": "Node", "pid": 4931, "tid": 4931, "dur": 85, "ts": 11150, "ph": "X",
     "name": "r_nchwc_kernel_time",
     "args": {"op_name": "Conv", "provider": "CPUExecutionProvider", "node_index": "6",
              "output_type_shape": [{"float": [2, 16, 6, 6]}]}},
    {"cat": "Node", "pid": 4931, "tid": 4931, "dur": 6, "ts": 11240, "ph": "X",
     "name": "ReorderOutput_kernel_time",
     "args": {"op_name": "ReorderOutput", "provider": "CPUExecutionProvider", "node_index": "7"}},
    {"cat": "Node", "pid": 4931, "tid": 4931, "dur": 9, "ts": 11274, "ph": "X",
     "name": "/fc/Softmax_kernel_time",
     "args": {"provider": "CPUExecutionProvider", "op_name": "Softmax", "node_index": "4"}},
    {"cat": "Session", "pid": 4931, "tid": 4931, "dur": 163, "ts": 11133, "ph": "X",
     "name": "model_run", "args": {}},
]


def test_node_providers_reads_onnxruntimes_trace():
    placed = {"Conv r_nchwc": CPU, "ReorderOutput ReorderOutput": CPU, "Softmax /fc/Softmax": CPU}
    assert ortmod.node_providers(RECORDED_TRACE) == placed
    # older onnxruntime also writes NODE_fence_before/_after events, with op_name only
    # (sequential_executor.cc): they place nothing
    fences = [{"cat": "Node", "name": f"/fc/Softmax_fence_{when}", "args": {"op_name": "Softmax"}}
              for when in ("before", "after")]
    assert ortmod.node_providers(fences + RECORDED_TRACE) == placed


def test_the_real_onnxruntime_trace_is_read(fake_ort, monkeypatch, tiny_artifacts):
    """The installed onnxruntime writes the trace the runtime parses: a session that reports the
    CUDA EP but really runs on the CPU shows every node it ran on CPUExecutionProvider."""
    monkeypatch.setattr(ortmod.ort, "InferenceSession", GpuPretendingSession)
    rt = create_runtime("onnxruntime", tiny_artifacts["fp32"].path, batch_sizes=[2],
                        providers=[CUDA])
    ops = {node.split()[0] for node in rt.info()["cpu_nodes"]}
    assert {"Conv", "Gemm"} <= ops, ops
    assert not Path(fake_ort.made[-1].options.profile_file_prefix).parent.exists()


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
    """Runs the model for real on the CPU, with the session options given (profiling included),
    but reports the providers asked, as a CUDA session would: enough to drive a whole sweep of a
    GPU target here, and to read a trace the real onnxruntime wrote."""

    def __init__(self, path, options=None, providers=None):
        super().__init__(path, options, providers)
        self.real = REAL_SESSION(path, options, providers=[CPU])

    def get_providers(self):
        return [p if isinstance(p, str) else p[0] for p in self.asked]

    def get_inputs(self):
        return self.real.get_inputs()

    def get_outputs(self):
        return self.real.get_outputs()

    def run(self, *args):
        return self.real.run(*args)

    def end_profiling(self):
        return self.real.end_profiling()


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
    assert fp["tf32"] is False and fp["cpu_nodes"]  # (all of them: the session ran on the CPU)
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
