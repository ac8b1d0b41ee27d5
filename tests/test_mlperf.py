"""MLPerf Inference result import: a synthetic results tree built here (so CI needs nothing from
outside), real summaries of the formats before v2.0 in tests/data/mlperf (SOURCES.md there), and
the real NVIDIA files from ../shared/samples/mlperf where they exist."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.fleet.mlperf import ingest_mlperf, parse_summary, power_from_logs
from edgerob.store import Store

REAL = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "samples" / "mlperf",
                         Path("/work/shared/samples/mlperf")) if p.is_dir()), None)
needs_real = pytest.mark.skipif(REAL is None, reason="no ../shared/samples/mlperf here")
DATA = Path(__file__).resolve().parent / "data" / "mlperf"

SS = """================================================
MLPerf Results Summary
================================================
SUT name : LWIS_Server
Scenario : SingleStream
Mode     : PerformanceOnly
90th percentile latency (ns) : 633478
Result is : {validity}
  Min duration satisfied : Yes
Early Stopping Result:
 * Early stopping 90th percentile estimate: 633479

================================================
Additional Stats
================================================
QPS w/ loadgen overhead         : 1573.48
QPS w/o loadgen overhead        : 1586.27

Min latency (ns)                : 619046
Max latency (ns)                : 64876018
Mean latency (ns)               : 630410
50.00 percentile latency (ns)   : 630245
90.00 percentile latency (ns)   : 633478
95.00 percentile latency (ns)   : 634437
97.00 percentile latency (ns)   : 635079
99.00 percentile latency (ns)   : 636517
99.90 percentile latency (ns)   : 640999

================================================
Test Parameters Used
================================================
samples_per_query : 1
target_qps : 1384.58
"""
OFFLINE = """MLPerf Results Summary
Scenario : Offline
Mode     : PerformanceOnly
Samples per second: 6438.1
Result is : VALID
Min latency (ns)                : 48481652
50.00 percentile latency (ns)   : 312673374423
samples_per_query : 4026000
"""
SYSTEM = {"accelerator_model_name": "NVIDIA A30", "accelerator_memory_capacity": "24 GB",
          "host_memory_capacity": "1 TB", "framework": "TensorRT 8.6.0, CUDA 12.0",
          "system_name": "Test A30 (TensorRT)", "hw_notes": ""}
# the fields of NVIDIA's v3.0 closed/NVIDIA/systems/Orin_TRT.json that the importer reads
ORIN = {"accelerator_model_name": "NVIDIA Jetson AGX Orin",
        "accelerator_memory_capacity": "Shared with host", "host_memory_capacity": "32 GB",
        "host_processor_core_count": 12, "framework": "TensorRT 8.5.2",
        "hw_notes": "GPU and both DLAs are used in resnet50 and Retinanet, in Offline scenario",
        "system_name": "Orin (TensorRT)"}


def result(root: Path, system: str, scenario: str, text: str, version="v9.9",
           benchmark="resnet50", submitter="NVIDIA") -> Path:
    run = (root / f"inference_results_{version}" / "closed" / submitter / "results" / system /
           benchmark / scenario / "performance" / "run_1")
    run.mkdir(parents=True, exist_ok=True)
    (run / "mlperf_log_summary.txt").write_text(text)
    return run


def system_json(root: Path, system: str, data, version="v9.9", submitter="NVIDIA") -> None:
    d = root / f"inference_results_{version}" / "closed" / submitter / "systems"
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{system}.json").write_text(data if isinstance(data, str) else json.dumps(data))


@pytest.fixture
def tree(tmp_path):
    root = tmp_path / "results"
    result(root, "A30x1", "SingleStream", SS.format(validity="VALID"))
    result(root, "A30x1", "Offline", OFFLINE)
    system_json(root, "A30x1", SYSTEM)
    result(root, "OrinX", "Offline", OFFLINE)
    result(root, "OrinX", "SingleStream", SS.format(validity="INVALID"))
    system_json(root, "OrinX", ORIN)
    return root


def test_synthetic_tree_imports_the_files_numbers(tree, tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    counts = ingest_mlperf(tree, store)
    assert counts["imported"] == 3 and len(counts["invalid"]) == 1
    assert "INVALID" in counts["invalid"][0] and "OrinX" in counts["invalid"][0]
    runs = {(r["system_name"], r["scenario"]): r for r in store.runs()}
    meas = {m["run_id"]: m for m in store.measurements()}
    ss = meas[runs[("A30x1", "SingleStream")]["run_id"]]
    assert ss["target"] == "a30" and ss["precision"] == "int8" and ss["batch_size"] == 1
    # the file's numbers, ns -> ms only; the early-stopping estimate apart from the percentile
    assert ss["latency_p90_ms"] == 633478 / 1e6 and ss["latency_p50_ms"] == 630245 / 1e6
    assert ss["latency_early_stopping_ms"] == 633479 / 1e6
    assert ss["latency_mean_ms"] == 630410 / 1e6 and ss["latency_max_ms"] == 64876018 / 1e6
    assert ss["throughput_sps"] == 1573.48  # QPS with loadgen overhead, 1 sample per query
    assert ss["power_mean_w"] is None and "no power logs" in ss["power_note"]
    off = meas[runs[("A30x1", "Offline")]["run_id"]]
    assert off["throughput_sps"] == 6438.1 and off["latency_p50_ms"] is None
    assert off["batch_size"] == 4026000 and off["throughput_per_accelerator_sps"] == 6438.1
    assert ss["throughput_per_accelerator_sps"] is None  # Offline and Server only
    run = runs[("A30x1", "Offline")]
    assert run["source"] == "mlperf" and run["mlperf_version"] == "v9.9"
    assert run["model"] == "mlperf:resnet50" and run["n_accelerators"] == 1
    assert run["accelerators"] == "GPU" and run["source_path"].endswith("mlperf_log_summary.txt")
    assert run["configuration"] == "MaxP, GPU"
    # the 32 GB AGX Orin with 12 cores is the developer kit (64GB module's CPU and GPU); its
    # Offline ResNet-50 ran on GPU + both DLAs (hw_notes)
    orin = runs[("OrinX", "Offline")]
    assert orin["target"] == "jetson-agx-orin-devkit-32gb" and orin["accelerators"] == "GPU + 2 DLA"
    assert orin["configuration"] == "MaxP, GPU + 2 DLA"
    assert "developer kit" in json.loads(orin["versions"])["device_note"]
    # re-ingesting adds nothing
    again = ingest_mlperf(tree, store)
    assert again["imported"] == 0 and again["already_stored"] == 3
    assert len(store.measurements()) == 3 and len(store.runs()) == 3


@pytest.mark.parametrize("text,why", [
    (SS.format(validity="VALID")[:700], "truncated"),
    (SS.format(validity="VALID").replace("SingleStream", "TripleStream"), "unknown scenario"),
    # a Server summary needs its samples per second (Server was refused before issue 21)
    (SS.format(validity="VALID").replace("SingleStream", "Server"),
     "no 'Completed samples per second' line"),
    ("hello\n", "not an MLPerf summary"),
])
def test_bad_summary_is_one_line_and_nothing_written(tmp_path, text, why):
    root = tmp_path / "r"
    result(root, "A30x1", "SingleStream", text)
    system_json(root, "A30x1", SYSTEM)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(EdgerobError, match=why):
        ingest_mlperf(root, store)
    assert store.runs() == [] and store.measurements() == []
    with pytest.raises(EdgerobError, match=why):
        parse_summary(text)


def test_system_json_that_is_not_json(tmp_path):
    root = tmp_path / "r"
    result(root, "A30x1", "SingleStream", SS.format(validity="VALID"))
    system_json(root, "A30x1", "{not json")
    store = Store(f"sqlite:///{tmp_path}/s.db")
    with pytest.raises(EdgerobError, match="not JSON"):
        ingest_mlperf(root, store)
    assert store.runs() == []


def test_one_bad_file_among_good_ones_is_skipped_not_fatal(tree, tmp_path):
    result(tree, "A30x1", "MultiStream", SS.format(validity="VALID")[:500])
    counts = ingest_mlperf(tree, Store(f"sqlite:///{tmp_path}/s.db"))
    assert counts["imported"] == 3
    assert len(counts["problems"]) == 1 and "MultiStream" in counts["problems"][0]


def test_cli_exit_codes(tree, tmp_path):
    runner = CliRunner()
    empty = tmp_path / "empty"
    empty.mkdir()
    r = runner.invoke(app, ["ingest", "--mlperf", str(empty), "--store",
                            f"sqlite:///{tmp_path}/c.db"])
    assert r.exit_code == 2 and "no mlperf_log_summary.txt" in r.output
    bad = tmp_path / "bad"
    result(bad, "A30x1", "SingleStream", SS.format(validity="VALID")[:600])
    result(bad, "A30x1", "Offline", OFFLINE.replace("Offline", "Elsewhere"))
    system_json(bad, "A30x1", SYSTEM)
    r = runner.invoke(app, ["ingest", "--mlperf", str(bad), "--store",
                            f"sqlite:///{tmp_path}/c.db"])
    lines = [x for x in r.output.splitlines() if x.startswith("skipped:")]
    assert r.exit_code == 2 and len(lines) == 2 and "Traceback" not in r.output
    assert any("truncated" in x for x in lines) and any("unknown scenario" in x for x in lines)
    r = runner.invoke(app, ["ingest", "--mlperf", str(tree), "--store",
                            f"sqlite:///{tmp_path}/c.db"])
    assert r.exit_code == 0, r.output
    assert "imported 3" in r.output and "INVALID" in r.output
    r = runner.invoke(app, ["results", "--store", f"sqlite:///{tmp_path}/c.db"])
    assert r.exit_code == 0 and "MLPerf v9.9" in r.output


def _power_run(tmp_path, spl_lines, begin="08-11-2023 22:48:03.931",
               end="08-11-2023 22:48:07.931", queries=100):
    run = tmp_path / "run_1"
    run.mkdir()
    detail = [("power_begin", begin), ("power_end", end), ("result_query_count", queries)]
    (run / "mlperf_log_detail.txt").write_text("".join(
        f':::MLLOG {json.dumps({"key": k, "value": v})}\n' for k, v in detail))
    (run / "spl.txt").write_text("".join(
        f"Time,08-11-2023 {t},Watts,{w:f},Volts,240.0,Amps,0.1,PF,0.3,Mark,x\n"
        for t, w in spl_lines))
    return run


def test_power_is_the_mean_inside_the_run_window_only(tmp_path):
    # idle 5 W outside the window, 10 and 14 W inside: mean 12 W over 4 s, 100 queries of 8
    run = _power_run(tmp_path, [("22:48:02.000", 5.0), ("22:48:04.000", 10.0),
                                ("22:48:06.000", 14.0), ("22:48:08.000", 5.0)])
    p = power_from_logs(run, samples_per_query=8)
    assert p["power_mean_w"] == pytest.approx(12.0) and p["power_samples"] == 2
    assert p["energy_j"] == pytest.approx(48.0)
    assert p["energy_per_inference_j"] == pytest.approx(48.0 / 800)
    assert "wall power of the whole system" in p["power_note"]


def test_no_power_without_a_covering_log(tmp_path):
    run = _power_run(tmp_path, [("22:48:04.000", 10.0), ("22:48:06.000", 14.0)])
    p = power_from_logs(run, 1)  # samples do not cover the whole window: nothing estimated
    assert p["power_mean_w"] is None and "do not cover" in p["power_note"]
    (run / "spl.txt").unlink()
    assert power_from_logs(run, 1)["energy_per_inference_j"] is None


# --- the real files --------------------------------------------------------------------------------

@needs_real
def test_real_maxq_power(tmp_path):
    src = REAL / "inference_results_v3.1"
    dst = tmp_path / "inference_results_v3.1"
    shutil.copytree(src, dst)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    assert ingest_mlperf(dst, store)["imported"] == 1
    m = store.measurements()[0]
    assert m["target"] == "jetson-orin-nx-16gb" and m["latency_p90_ms"] == 1418809 / 1e6
    assert m["throughput_sps"] == 697.05 and m["iterations"] == 418234
    # 600 one-second analyser samples inside the 600 s window (power_begin/power_end)
    assert m["power_samples"] == 600
    assert 10 < m["power_mean_w"] < 20
    assert m["energy_per_inference_j"] == pytest.approx(m["power_mean_w"] * 600.002 / 418234)


def _kv(path: Path) -> dict:
    """The test's own reading of a summary's `key : value` lines (first wins), so the expected
    figures do not come from the importer's parser."""
    kv = {}
    for line in path.read_text().splitlines():
        if ":" in line and not line.lstrip().startswith("*"):
            k, v = line.split(":", 1)
            kv.setdefault(k.strip(), v.strip())
    return kv


@needs_real
def test_real_tree_every_value_and_idempotent(tmp_path):
    dst = tmp_path / "mlperf"
    shutil.copytree(REAL, dst)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    counts = ingest_mlperf(dst, store)
    # Expected independently: every VALID summary, those on CPU-only systems too; an Offline
    # folder's SingleStream log (some 3d-unet ones) gives the inferred Offline result
    expected = [s for s in sorted(dst.rglob("mlperf_log_summary.txt"))
                if _kv(s)["Result is"] == "VALID"]
    assert len(expected) == 620  # the tree's 620 summaries
    by_path = {r["source_path"]: r for r in store.runs()}
    assert counts["imported"] == len(by_path) == len(expected)
    assert {str(s.resolve()) for s in expected} == set(by_path)
    assert counts["problems"] == [] and counts["invalid"] == []
    meas = {m["run_id"]: m for m in store.measurements()}
    for s in expected:
        kv, run = _kv(s), by_path[str(s.resolve())]
        m = meas[run["run_id"]]
        assert run["model"] == f"mlperf:{s.parts[-5]}" and run["scenario"] == s.parts[-4]
        sc = run["scenario"]
        if sc == "SingleStream":  # headline: the result line, the p90 per query
            assert m["latency_p90_ms"] == float(kv["90th percentile latency (ns)"]) / 1e6
            assert m["throughput_sps"] == float(kv["QPS w/ loadgen overhead"])
        elif sc == "MultiStream":
            assert m["latency_p99_ms"] == float(kv["99th percentile latency (ns)"]) / 1e6
        elif sc == "Offline" and kv["Scenario"] == "SingleStream":  # the checker's inference
            assert m["throughput_sps"] == float(kv["QPS w/o loadgen overhead"])
            assert json.loads(m["fingerprint"])["inferred_from"] == "SingleStream"
        elif sc == "Offline":
            assert m["throughput_sps"] == float(kv["Samples per second"])
        else:
            assert m["throughput_sps"] == float(kv["Completed samples per second"])
            assert m["latency_p99_ms"] == float(kv["99.00 percentile latency (ns)"]) / 1e6
        if sc in ("SingleStream", "MultiStream"):
            pct = "90" if sc == "SingleStream" else "99"
            es = re.search(rf"Early stopping {pct}th percentile estimate: (\d+)", s.read_text())
            assert m["latency_early_stopping_ms"] == int(es.group(1)) / 1e6
        if sc in ("Offline", "Server"):
            assert m["throughput_per_accelerator_sps"] == pytest.approx(
                m["throughput_sps"] / run["n_accelerators"], rel=1e-12)
        # precision only where stated (NVIDIA's ResNet-50: int8), else NULL with a note
        assert (m["precision"] == "int8") == (s.parts[-5] == "resnet50")
        assert (m["precision_note"] is None) == (s.parts[-5] == "resnet50")
    assert ingest_mlperf(dst, store)["imported"] == 0
    assert len(store.runs()) == len(expected)


@needs_real
def test_real_devices_and_configurations(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    ingest_mlperf(REAL, store)
    runs = {(r["mlperf_version"], r["system_name"], r["model"], r["scenario"]): r
            for r in store.runs()}
    meas = {m["run_id"]: m for m in store.measurements()}

    def run(version, system, bench, sc):
        return runs[(version, system, f"mlperf:{bench}", sc)]

    # v4.1 H200: no catalog entry, kept as a reference-only device of 8 accelerators
    h200 = run("v4.1", "H200-SXM-141GBx8_TRT", "resnet50", "Offline")
    assert h200["target"] == "ref:nvidia-h200-sxm-141gb" and h200["n_accelerators"] == 8
    m = meas[h200["run_id"]]
    assert m["target"] == h200["target"]
    assert m["throughput_per_accelerator_sps"] == m["throughput_sps"] / 8
    # MaxP and MaxQ, GPU and GPU + 2 DLA of one AGX Orin kit: four configurations, kept apart
    confs = {(sys, sc): run("v3.0", sys, "resnet50", sc)["configuration"]
             for sys in ("Orin_TRT", "Orin_TRT_MaxQ") for sc in ("SingleStream", "Offline")}
    assert confs == {("Orin_TRT", "SingleStream"): "MaxP, GPU",
                     ("Orin_TRT", "Offline"): "MaxP, GPU + 2 DLA",
                     ("Orin_TRT_MaxQ", "SingleStream"): "MaxQ, GPU",
                     ("Orin_TRT_MaxQ", "Offline"): "MaxQ, GPU + 2 DLA"}
    assert {run("v3.0", s, "resnet50", "Offline")["target"] for s in
            ("Orin_TRT", "Orin_TRT_MaxQ")} == {"jetson-agx-orin-devkit-32gb"}
    # the note names resnet50 and Retinanet only: BERT Offline ran on the GPU
    assert run("v3.0", "Orin_TRT", "bert-99", "Offline")["configuration"] == "MaxP, GPU"
    assert run("v3.0", "Orin_TRT", "retinanet", "Offline")["accelerators"] == "GPU + 2 DLA"
    # v2.0 spells the kit "NVIDIA Orin": 12 cores, the same device
    assert run("v2.0", "Orin_TRT", "resnet50", "Offline")["target"] == "jetson-agx-orin-devkit-32gb"
    assert run("v3.0", "Orin_NX_TRT", "resnet50", "Offline")["target"] == "jetson-orin-nx-16gb"
    # Triton and MIG runs are their own configurations of the device
    assert run("v2.0", "A30x1_TRT_Triton", "resnet50", "Offline")["configuration"] == (
        "MaxP, GPU, Triton")
    mig = run("v2.0", "A30-MIG_1x1g.6gb_TRT_HeteroMultiUse", "resnet50", "Offline")
    assert mig["target"] == "a30" and mig["configuration"] == (
        "MaxP, GPU, MIG 1x1g.6gb, HeteroMultiUse")
    # Server: completed samples per second, whichever order the v4.1 summary lists them in
    srv = meas[run("v4.1", "H200-SXM-141GBx8_TRT", "resnet50", "Server")["run_id"]]
    assert srv["throughput_sps"] == 632229.06 and srv["latency_p99_ms"] == 12981655 / 1e6


def test_older_log_formats(tmp_path):
    """Real v0.5, v0.7 and v1.1 summaries (tests/data/mlperf/SOURCES.md): "Single Stream" and
    "Multi Stream", "Mode : Performance", MultiStream's "Samples per query" result, v0.5's
    benchmark folder "resnet", Server results of scheduled samples per second."""
    root = tmp_path / "r"
    files = {("v0.5", "T4x8", "resnet", "MultiStream"): "v0.5_T4x8_resnet_MultiStream.txt",
             ("v0.5", "T4x8", "resnet", "Server"): "v0.5_T4x8_resnet_Server.txt",
             ("v0.7", "A100-PCIex1_TRT", "resnet50", "SingleStream"):
                 "v0.7_A100-PCIex1_TRT_resnet50_SingleStream.txt",
             ("v1.1", "A100-PCIe-80GB_aarch64x4_TRT", "resnet50", "Server"):
                 "v1.1_A100-PCIe-80GB_aarch64x4_TRT_resnet50_Server.txt"}
    # accelerator, memory and count as the systems' names say (T4x8: 8 T4s)
    systems = {"T4x8": ("NVIDIA T4", "16 GB", 8), "A100-PCIex1_TRT": ("NVIDIA A100-PCIe-80GB",
                                                                       "80 GB", 1),
               "A100-PCIe-80GB_aarch64x4_TRT": ("NVIDIA A100-PCIe-80GB", "80 GB", 4)}
    for (version, system, bench, sc), name in files.items():
        result(root, system, sc, (DATA / name).read_text(), version, bench)
        acc, mem, n = systems[system]
        system_json(root, system, {"accelerator_model_name": acc, "accelerators_per_node": n,
                                   "accelerator_memory_capacity": mem,
                                   "framework": "TensorRT"}, version)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    assert ingest_mlperf(root, store)["imported"] == 4
    rows = {(r["mlperf_version"], r["scenario"]): (r, m) for r in store.runs()
            for m in store.measurements() if m["run_id"] == r["run_id"]}
    run, ms = rows[("v0.5", "MultiStream")]
    assert run["model"] == "mlperf:resnet50" and run["target"] == "t4"
    # the result: 1920 streams (samples per query) within the 50 ms bound; percentiles per
    # query (the first block), not per sample; min/max/mean exist only per sample: not stored
    assert ms["batch_size"] == 1920 and ms["latency_p99_ms"] == 46439806 / 1e6
    assert ms["latency_p50_ms"] == 45649828 / 1e6 and ms["latency_mean_ms"] is None
    assert ms["latency_max_ms"] is None and ms["throughput_sps"] is None
    _, srv = rows[("v0.5", "Server")]
    assert srv["throughput_sps"] == 41542.28 and srv["latency_p99_ms"] == 10159013 / 1e6
    assert srv["throughput_per_accelerator_sps"] == 41542.28 / 8
    run, ss = rows[("v0.7", "SingleStream")]
    assert run["target"] == "a100-pcie" and ss["latency_p90_ms"] == 518641 / 1e6
    assert ss["throughput_sps"] == 1868.65 and ss["latency_early_stopping_ms"] is None
    run, srv = rows[("v1.1", "Server")]
    assert run["n_accelerators"] == 4 and srv["throughput_sps"] == 104011.04
    assert srv["throughput_per_accelerator_sps"] == 104011.04 / 4
    kv = parse_summary((DATA / files[("v0.7", "A100-PCIex1_TRT", "resnet50",
                                      "SingleStream")]).read_text())
    assert kv["Scenario"] == "SingleStream" and kv["Mode"] == "Performance"


@pytest.mark.parametrize("cores,target", [(12, "jetson-agx-orin-devkit-32gb"),
                                          (8, "jetson-agx-orin-32gb"),
                                          (None, "ref:nvidia-jetson-agx-orin-32gb")])
def test_agx_orin_32gb_is_told_apart_by_cpu_cores(tmp_path, cores, target):
    """12 cores: the developer kit (64GB module's CPU and GPU); 8: the production 32GB module;
    no core count: not guessed, a reference-only device."""
    root = tmp_path / "r"
    result(root, "Orin", "Offline", OFFLINE)
    system_json(root, "Orin", {**ORIN, "host_processor_core_count": cores})
    store = Store(f"sqlite:///{tmp_path}/s.db")
    ingest_mlperf(root, store)
    [run] = store.runs()
    assert run["target"] == target == store.measurements()[0]["target"]


def test_reference_only_device_and_other_submitters_precision(tmp_path):
    root = tmp_path / "r"
    result(root, "BoxA10x1", "Offline", OFFLINE, submitter="Acme", benchmark="bert-99")
    system_json(root, "BoxA10x1", {**SYSTEM, "accelerator_model_name": "Acme NPU-9 (rev B)",
                                   "accelerator_memory_capacity": "12 GB"}, submitter="Acme")
    store = Store(f"sqlite:///{tmp_path}/s.db")
    ingest_mlperf(root, store)
    [run], [m] = store.runs(), store.measurements()
    assert run["target"] == m["target"] == "ref:acme-npu-9"
    assert run["accelerators"] == "Acme NPU-9" and run["configuration"] == "MaxP, Acme NPU-9"
    assert run["model"] == "mlperf:bert-99"
    assert m["precision"] is None and "not stated" in m["precision_note"]


def test_own_and_published_rows_side_by_side(tree, tmp_path):
    from edgerob.analysis.compare import fleet_table, side_by_side_notes

    store = Store(f"sqlite:///{tmp_path}/s.db")
    ingest_mlperf(tree, store)
    run_id, _ = store.begin_run(target="a30", profile="p", model="resnet8", model_sha256="x",
                                runtime="tensorrt", host="lab", versions={})
    store.add_measurement({"run_id": run_id, "target": "a30", "runtime": "tensorrt",
                           "precision": "int8", "batch_size": 1, "input_set": "clean",
                           "latency_p50_ms": 0.2, "throughput_sps": 5000.0})
    rows = [r for r in fleet_table(store) if r["target"] == "a30" and r["batch_size"] == 1]
    assert sorted(r["source_label"] for r in rows) == [
        "MLPerf v9.9 A30x1 resnet50 SingleStream", "measured"]
    # the published row never replaces the own one of the same cell, nor is ranked against it
    assert {r["latency_p50_ms"] for r in rows} == {0.2, 630245 / 1e6}
    assert all(r["latency_rank"] == 1 for r in rows)
    [note] = side_by_side_notes(rows)
    assert note.startswith("a30:") and "same device" in note and "different model" in note
    r = CliRunner().invoke(app, ["compare", "--store", f"sqlite:///{tmp_path}/s.db"])
    assert r.exit_code == 0 and "MLPerf" in r.output and "same device" in r.output


def test_multi_accelerator_system_is_stored_with_its_count(tmp_path):
    """Issue 21: an 8-accelerator system is imported (it was refused before), with N and its
    throughput per accelerator; prediction and cost still read single-device rows only."""
    from edgerob.analysis.compare import fleet_table, pareto_fronts
    from edgerob.analysis.predict.cells import Cells

    root = tmp_path / "r"
    result(root, "A30x8", "Offline", OFFLINE)
    system_json(root, "A30x8", {**SYSTEM, "accelerators_per_node": 8})
    result(root, "A30x1", "Offline", OFFLINE.replace("6438.1", "800.5"))
    system_json(root, "A30x1", {**SYSTEM, "accelerator_model_name": "NVIDIA A30 24GB",
                                "accelerators_per_node": 1})
    result(root, "A30x1", "Offline", OFFLINE.replace("6438.1", "900.5"), benchmark="bert-99")
    result(root, "A30x1_Triton", "Offline", OFFLINE.replace("6438.1", "999.5"))
    system_json(root, "A30x1_Triton", SYSTEM)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    counts = ingest_mlperf(root, store)
    assert counts["imported"] == 4 and counts["targets"] == ["a30"]
    run = next(r for r in store.runs() if r["system_name"] == "A30x8")
    m = next(m for m in store.measurements() if m["run_id"] == run["run_id"])
    assert run["n_accelerators"] == 8 and m["throughput_sps"] == 6438.1
    assert m["throughput_per_accelerator_sps"] == 6438.1 / 8
    # the predictor's a30 row is the one-A30 system; the system of 8 is a configuration of its
    # own, valued per accelerator
    mat = Cells(store).matrix("speed")
    [col] = [j for j, f in enumerate(mat.families) if f == "mlperf:resnet50 Offline"]
    val = {r: math.exp(mat.y[i, col]) for i, r in enumerate(mat.rows)}
    assert val["a30"] == pytest.approx(800.5)
    # each column knows its network: a scenario or version of it is a priori alike
    assert sorted(set(mat.networks)) == ["mlperf:bert-99", "mlperf:resnet50"]
    assert mat.networks[col] == "mlperf:resnet50"
    assert val[next(r for r in val if "x8" in r)] == pytest.approx(6438.1 / 8)
    rows = fleet_table(store)
    # nor do the price-vs-throughput fronts put them on one axis
    assert {f["considered"] + len(f["excluded"]) for f in pareto_fronts(rows)} == {1}


def test_every_mapped_device_is_a_catalog_target():
    """Imported rows are stored under catalog names with a spec sheet, never a family name."""
    from edgerob.catalog.targets import load_target
    from edgerob.fleet.mlperf import SYSTEM_FOLDERS, TARGET_MAP

    from edgerob.fleet.mlperf import AGX_ORIN_BY_CORES

    for name in {*TARGET_MAP.values(), *AGX_ORIN_BY_CORES.values(), *SYSTEM_FOLDERS.values()}:
        assert load_target(name).specs.peak_tops.get("int8"), name


def test_rows_of_the_resnet50_importer_are_upgraded_to_0004(tmp_path):
    """A store that holds rows of the previous importer (revision 0003: model "resnet50", no
    configuration or count) is named and described like a new import, its values kept."""
    import sqlalchemy as sa
    from alembic import command

    from edgerob.store import _alembic

    url = f"sqlite:///{tmp_path}/r.db"
    with sa.create_engine(url).begin() as c:
        command.upgrade(_alembic(c), "0003")
        for rid, system, sc, acc in (("a", "Orin_TRT_MaxQ", "Offline", "GPU + 2 DLA"),
                                     ("b", "A30x1_TRT_Triton", "SingleStream", "GPU"),
                                     ("c", "A30x1_TRT", "Offline", "GPU")):
            c.execute(sa.text(
                "INSERT INTO runs (run_id, target, profile, model, host, status, started_at, "
                "source, system_name, scenario, accelerators) VALUES (:r, 'a30', 'mlperf-closed', "
                "'resnet50', 'h', 'done', 't', 'mlperf', :s, :sc, :acc)"),
                {"r": rid, "s": system, "sc": sc, "acc": acc})
            c.execute(sa.text(
                "INSERT INTO measurements (run_id, target, runtime, precision, batch_size, "
                "input_set, throughput_sps, created_at) VALUES (:r, 'a30', 'tensorrt', 'int8', "
                "1, 'clean', 100.5, 't')"), {"r": rid})
        c.execute(sa.text("INSERT INTO runs (run_id, target, profile, model, host, status, "
                          "started_at) VALUES ('own', 'cpu', 'q', 'resnet20', 'h', 'done', 't')"))
    store = Store(url)
    runs = {r["run_id"]: r for r in store.runs()}
    assert {k: (r["model"], r["configuration"], r["n_accelerators"]) for k, r in runs.items()} == {
        "a": ("mlperf:resnet50", "MaxQ, GPU + 2 DLA", 1),
        "b": ("mlperf:resnet50", "MaxP, GPU, Triton", 1),
        "c": ("mlperf:resnet50", "MaxP, GPU", 1), "own": ("resnet20", None, None)}
    per_acc = {m["run_id"]: m["throughput_per_accelerator_sps"] for m in store.measurements()}
    assert per_acc == {"a": 100.5, "b": None, "c": 100.5}


def test_offline_inferred_from_another_scenario_and_cpu_only_systems(tmp_path):
    """Issue 21: nothing with a device and a scenario is skipped. An Offline folder holding a
    SingleStream or MultiStream log gives the Offline result MLPerf's submission checker infers
    (get_inferred_result); a CPU-only system is a reference-only device named from its
    processors, the sockets counted as accelerators."""
    root = tmp_path / "r"
    result(root, "A30x1", "Offline", SS.format(validity="VALID"), benchmark="3d-unet-99")
    ms = (SS.format(validity="VALID").replace("SingleStream", "MultiStream")
          .replace("90th percentile latency (ns) : 633478", "99th percentile latency (ns) : 9")
          .replace("samples_per_query : 1", "samples_per_query : 8"))
    result(root, "A30x1", "Offline", ms, benchmark="retinanet")
    result(root, "A30x1", "Server", SS.format(validity="VALID"))  # no rule infers a Server
    system_json(root, "A30x1", SYSTEM)
    result(root, "CPU_2S", "Offline", OFFLINE)
    system_json(root, "CPU_2S", {**SYSTEM, "accelerator_model_name": "N/A",
                                 "accelerators_per_node": 0, "host_processors_per_node": 2,
                                 "host_processor_model_name":
                                     "Intel(R) Xeon(R) Platinum 8380 CPU @ 2.30GHz"})
    store = Store(f"sqlite:///{tmp_path}/s.db")
    counts = ingest_mlperf(root, store)
    assert counts["imported"] == 3 and len(counts["problems"]) == 1
    assert "says scenario SingleStream in folder Server" in counts["problems"][0]
    runs = {r["model"] + " " + r["target"]: r for r in store.runs()}
    meas = {m["run_id"]: m for m in store.measurements()}
    ss = meas[runs["mlperf:3d-unet-99 a30"]["run_id"]]
    assert runs["mlperf:3d-unet-99 a30"]["scenario"] == "Offline"
    assert ss["throughput_sps"] == 1586.27  # QPS w/o loadgen overhead, not w/ (1573.48)
    assert ss["latency_p90_ms"] is None and ss["batch_size"] == 1
    assert json.loads(ss["fingerprint"])["inferred_from"] == "SingleStream"
    # MultiStream: samples per query / mean query latency (8 / 630410 ns)
    assert meas[runs["mlperf:retinanet a30"]["run_id"]]["throughput_sps"] == pytest.approx(
        8 / 630410e-9, rel=1e-12)
    cpu = runs["mlperf:resnet50 ref:2x-intel-xeon-platinum-8380"]
    assert cpu["n_accelerators"] == 2 and cpu["configuration"] == "MaxP, CPU"
    assert meas[cpu["run_id"]]["throughput_per_accelerator_sps"] == 6438.1 / 2
