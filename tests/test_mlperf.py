"""MLPerf Inference result import: a synthetic results tree built here (so CI needs nothing from
outside), and the real NVIDIA files from ../shared/samples/mlperf where they exist."""

from __future__ import annotations

import json
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
ORIN = {"accelerator_model_name": "NVIDIA Jetson AGX Orin",
        "accelerator_memory_capacity": "Shared with host", "host_memory_capacity": "32 GB",
        "framework": "TensorRT 8.5.2", "system_name": "Orin (TensorRT)"}


def result(root: Path, system: str, scenario: str, text: str, version="v9.9") -> Path:
    run = (root / f"inference_results_{version}" / "closed" / "Acme" / "results" / system /
           "resnet50" / scenario / "performance" / "run_1")
    run.mkdir(parents=True, exist_ok=True)
    (run / "mlperf_log_summary.txt").write_text(text)
    return run


def system_json(root: Path, system: str, data, version="v9.9") -> None:
    d = root / f"inference_results_{version}" / "closed" / "Acme" / "systems"
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
    # the file's numbers, ns -> ms only
    assert ss["latency_p90_ms"] == 633478 / 1e6 and ss["latency_p50_ms"] == 630245 / 1e6
    assert ss["latency_mean_ms"] == 630410 / 1e6 and ss["latency_max_ms"] == 64876018 / 1e6
    assert ss["throughput_sps"] == 1573.48  # QPS with loadgen overhead, 1 sample per query
    assert ss["power_mean_w"] is None and "no power logs" in ss["power_note"]
    off = meas[runs[("A30x1", "Offline")]["run_id"]]
    assert off["throughput_sps"] == 6438.1 and off["latency_p50_ms"] is None
    assert off["batch_size"] == 4026000
    run = runs[("A30x1", "Offline")]
    assert run["source"] == "mlperf" and run["mlperf_version"] == "v9.9"
    assert run["accelerators"] == "GPU" and run["source_path"].endswith("mlperf_log_summary.txt")
    orin = runs[("OrinX", "Offline")]  # AGX Orin 32GB by accelerator + host memory
    assert orin["target"] == "jetson-agx-orin-32gb" and orin["accelerators"] == "GPU + 2 DLA"
    # re-ingesting adds nothing
    again = ingest_mlperf(tree, store)
    assert again["imported"] == 0 and again["already_stored"] == 3
    assert len(store.measurements()) == 3 and len(store.runs()) == 3


@pytest.mark.parametrize("text,why", [
    (SS.format(validity="VALID")[:700], "truncated"),
    (SS.format(validity="VALID").replace("SingleStream", "TripleStream"), "unknown scenario"),
    (SS.format(validity="VALID").replace("SingleStream", "Server"), "not imported"),
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


@needs_real
def test_real_tree_every_value_and_idempotent(tmp_path):
    dst = tmp_path / "mlperf"
    shutil.copytree(REAL, dst)
    store = Store(f"sqlite:///{tmp_path}/s.db")
    counts = ingest_mlperf(dst, store)
    # Only ResNet-50 results are read (other benchmarks are skipped without a line); every one
    # is either imported or named with its reason (Server, multi-accelerator, unmapped systems)
    summaries = sorted(p for p in dst.rglob("mlperf_log_summary.txt") if "resnet50" in p.parts)
    problems = "\n".join(counts["problems"])
    by_path = {r["source_path"]: r["run_id"] for r in store.runs()}
    imported = [s for s in summaries if str(s.resolve()) in by_path]
    assert counts["imported"] == len(imported) > 30
    assert all(str(s) in problems for s in summaries if s not in imported)
    meas = {m["run_id"]: m for m in store.measurements()}
    for s in imported:
        kv = parse_summary(s.read_text())
        m = meas[by_path[str(s.resolve())]]
        if kv["Scenario"] == "Offline":
            assert m["throughput_sps"] == float(kv["Samples per second"])
        else:
            assert m["latency_p99_ms"] == float(kv["99.00 percentile latency (ns)"]) / 1e6
    assert ingest_mlperf(dst, store)["imported"] == 0


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
    assert sorted(r["source_label"] for r in rows) == ["MLPerf v9.9 A30x1 SingleStream",
                                                       "measured"]
    # the published row never replaces the own one of the same cell, nor is ranked against it
    assert {r["latency_p50_ms"] for r in rows} == {0.2, 630245 / 1e6}
    assert all(r["latency_rank"] == 1 for r in rows)
    [note] = side_by_side_notes(rows)
    assert note.startswith("a30:") and "same device" in note and "different model" in note
    r = CliRunner().invoke(app, ["compare", "--store", f"sqlite:///{tmp_path}/s.db"])
    assert r.exit_code == 0 and "MLPerf" in r.output and "same device" in r.output


def test_multi_accelerator_system_is_not_imported_as_one_device(tmp_path):
    root = tmp_path / "r"
    result(root, "A30x8", "Offline", OFFLINE)
    system_json(root, "A30x8", {**SYSTEM, "accelerators_per_node": 8})
    result(root, "A30x1", "Offline", OFFLINE)
    system_json(root, "A30x1", {**SYSTEM, "accelerator_model_name": "NVIDIA A30 24GB",
                                "accelerators_per_node": 1})
    counts = ingest_mlperf(root, Store(f"sqlite:///{tmp_path}/s.db"))
    assert counts["imported"] == 1 and counts["targets"] == ["a30"]
    assert len(counts["problems"]) == 1 and "8 accelerators per node" in counts["problems"][0]


def test_every_mapped_device_is_a_catalog_target():
    """Imported rows are stored under catalog names with a spec sheet, never a family name."""
    from edgerob.catalog.targets import load_target
    from edgerob.fleet.mlperf import SYSTEM_FOLDERS, TARGET_MAP

    for name in TARGET_MAP.values():
        assert load_target(name).specs.peak_tops.get("int8"), name
    assert set(SYSTEM_FOLDERS.values()) <= set(TARGET_MAP)
