"""The power mode used everywhere (issue 22): a key of compare and cost rows, the most
energy-efficient mode within a latency budget, a covariate of fit, per-mode catalog figures in
the spec features, and MLPerf rows' modes where the system description states one.

Stores here are RECORDED DATA written directly (no device ran); the per-mode catalog figures
are NVIDIA's nvpmodel.conf values cited in targets/jetson-agx-orin-32gb.yaml."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgerob.analysis import survival as sv
from edgerob.analysis.compare import compare_fleet, fleet_table, mode_choice
from edgerob.analysis.cost import Workload, cost_table
from edgerob.analysis.predict.cells import Cells, _row_specs
from edgerob.analysis.survival.design_matrix import _raw_covariates
from edgerob.catalog.targets import Target, load_target
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.fleet.mlperf import ingest_mlperf, stated_power_mode
from edgerob.store import Store

from test_mlperf import REAL, needs_real

ORIN = "jetson-agx-orin-32gb"  # catalog entry with per-mode figures
L4 = "l4"


def _measure(store, run, target, mode, p99, energy, precision="fp32", batch=1, note=None):
    lat = np.full(50, p99 * 0.9)
    store.add_measurement({
        "run_id": run, "target": target, "runtime": "onnxruntime", "precision": precision,
        "batch_size": batch, "input_set": "clean", "n_samples": 10, "iterations": 50,
        "duration_s": float(lat.sum() / 1e3), "latency_p50_ms": p99 * 0.9,
        "latency_p99_ms": p99, "latency_mean_ms": p99 * 0.9, "latency_std_ms": 0.01,
        "throughput_sps": batch * 1e3 / (p99 * 0.9), "accuracy": 0.9, "profiler": "recorded",
        "power_samples": 20 if energy else 0, "power_mean_w": 10.0 if energy else None,
        "power_idle_w": None, "energy_per_inference_j": energy, "power_note": note,
        "latencies_ms": lat.tolist(), "power_mode": mode,
        "fingerprint": {"recorded": True}})


def _run(store, target, profile="recorded"):
    run, _ = store.begin_run(target=target, profile=profile, model="m", model_sha256="x",
                             runtime="onnxruntime", host="h", versions={})
    return run


@pytest.fixture
def moded(tmp_path):
    """One Orin measured in three modes (one run each, as a sweep per mode would store them),
    with failure records in two; an L4 whose only row in the budget has no energy."""
    store = Store(f"sqlite:///{tmp_path}/m.db")
    for mode, p99, energy in (("MAXN", 2.0, 0.5), ("MODE_15W", 5.0, 0.2),
                              ("MODE_30W", 3.0, None)):
        run = _run(store, ORIN, f"recorded-{mode}")  # a run per mode (a new one each time)
        _measure(store, run, ORIN, mode, p99, energy,
                 note="no power sensor" if energy is None else None)
        if mode != "MODE_30W":
            q = 10 if mode == "MAXN" else 30
            store.add_failures([{"run_id": run, "target": ORIN, "precision": "fp32",
                                 "batch_size": 1, "attack": "square", "eps": 0.1,
                                 "sample_id": j, "queries": q + j, "budget_queries": 100,
                                 "duration_s": (q + j) * 1e-3, "energy_j": None, "event": 1}
                                for j in range(5)])
        store.finish_run(run)
    run = _run(store, L4)
    _measure(store, run, L4, "default", 1.0, None, note="no power sensor")
    store.finish_run(run)
    return store


def test_two_modes_of_one_target_are_two_rows_with_their_own_values(moded):
    rows = {(r["target"], r["power_mode"]): r for r in fleet_table(moded)}
    assert set(rows) == {(ORIN, "MAXN"), (ORIN, "MODE_15W"), (ORIN, "MODE_30W"), (L4, "default")}
    assert rows[(ORIN, "MAXN")]["latency_p99_ms"] == 2.0
    assert rows[(ORIN, "MODE_15W")]["energy_per_inference_j"] == 0.2
    # failure records join the mode their session ran in, not the other one
    assert rows[(ORIN, "MAXN")]["median_queries_to_failure"] == 12
    assert rows[(ORIN, "MODE_15W")]["median_queries_to_failure"] == 32
    assert rows[(ORIN, "MODE_30W")]["failure_records"] == 0
    costs = cost_table(list(rows.values()), Workload(inferences_per_s=10))
    assert sorted(c["power_mode"] for c in costs if c["target"] == ORIN) == \
        ["MAXN", "MODE_15W", "MODE_30W"]


def test_latency_budget_picks_the_least_energy_mode_that_meets_p99(moded):
    def pick(budget):
        return {c["target"]: c for c in mode_choice(fleet_table(moded), budget)}

    loose = pick(6.0)[ORIN]
    assert (loose["power_mode"], loose["energy_per_inference_j"]) == ("MODE_15W", 0.2)
    mid = pick(4.0)[ORIN]  # MODE_15W (5 ms) is too slow; MODE_30W meets it but has no energy
    assert (mid["power_mode"], mid["latency_p99_ms"], mid["energy_per_inference_j"]) == \
        ("MAXN", 2.0, 0.5)
    assert mid["meeting"] == ["MAXN", "MODE_30W"] and mid["without_energy"] == ["MODE_30W"]
    tight = pick(1.5)
    assert tight[ORIN]["power_mode"] is None
    assert "no power mode meets p99 <= 1.5 ms (fastest: MAXN, 2 ms)" in tight[ORIN]["reason"]
    l4 = tight[L4]  # within the bound but unmetered: said, and never a 0
    assert l4["power_mode"] is None and l4["energy_per_inference_j"] is None
    assert "no energy measured" in l4["reason"] and "no power sensor" in l4["reason"]
    with pytest.raises(EdgerobError, match="positive"):
        mode_choice([], 0)


def test_cli_compare_latency_budget(moded):
    url = moded.url
    res = CliRunner().invoke(app, ["compare", "--store", url, "--latency-budget-ms", "6",
                                   "--json"])
    assert res.exit_code == 0, res.output
    choice = {c["target"]: c for c in json.loads(res.stdout)["mode_choice"]}
    assert choice[ORIN]["power_mode"] == "MODE_15W"
    res = CliRunner().invoke(app, ["compare", "--store", url, "--latency-budget-ms", "4"])
    assert res.exit_code == 0, res.output
    assert "MODE_30W" in res.stdout and "power mode with p99 latency <= 4 ms" in res.stdout
    assert "no energy measured" in res.output
    res = CliRunner().invoke(app, ["compare", "--store", url, "--latency-budget-ms", "-1"])
    assert res.exit_code == 2 and "Traceback" not in res.output
    assert "must be a positive number" in res.output
    res = CliRunner().invoke(app, ["cost", "--store", url, "--json"])
    assert res.exit_code == 0, res.output
    assert {c["power_mode"] for c in json.loads(res.stdout)["rows"]} >= {"MAXN", "MODE_15W"}


def test_fit_keeps_modes_apart_as_a_covariate():
    """Records drawn with a known time ratio 0.4 for MODE_15W vs MAXN on one target: the fit
    recovers it as power_mode[ORIN/MODE_15W]; without the covariate the modes would be pooled."""
    df = sv.simulate_failures(1200, "weibull", targets=("MAXN", "MODE_15W"),
                              time_ratios={"precision[fp16]": 0.8, "precision[int8]": 0.6,
                                           "log2_batch_size": 1.15, "target[MODE_15W]": 0.4},
                              seed=21)
    df["power_mode"], df["target"] = df["target"], ORIN
    r = sv.fit_models(df, families=("weibull",), test_fraction=0)
    col = f"power_mode[{ORIN}/MODE_15W]"
    assert col in r.coefficients.index
    row = r.coefficients.loc[col]
    assert row.ci_low < 0.4 < row.ci_high
    assert any("single target" in n for n in r.notes)
    maxn = r.predict({"precision": "fp32", "batch_size": 8, "power_mode": "MAXN"})
    low = r.predict({"precision": "fp32", "batch_size": 8, "power_mode": "MODE_15W"})
    assert low["median"] / maxn["median"] == pytest.approx(row.time_ratio)
    with pytest.raises(EdgerobError, match="not in the fitted data"):
        r.predict({"precision": "fp32", "batch_size": 8, "power_mode": "MODE_50W"})


def test_load_failures_takes_the_mode_of_the_session(moded):
    df = sv.load_failures(moded)
    by_run = df.groupby("power_mode")["queries"].median().to_dict()
    assert by_run == {"MAXN": 12.0, "MODE_15W": 32.0}
    # a run that measured one cell in two modes does not say which the records ran in
    run = _run(moded, ORIN, "recorded-mixed")
    _measure(moded, run, ORIN, "MAXN", 2.0, 0.5, precision="int8")
    moded.add_measurement({**moded.measurements(run_id=run)[0], "id": None,
                           "input_set": "pgd@0.1", "power_mode": "MODE_15W",
                           "latencies_ms": None, "fingerprint": "{}", "rounds": None})
    moded.add_failures([{"run_id": run, "target": ORIN, "precision": "int8", "batch_size": 1,
                         "attack": "square", "eps": 0.1, "sample_id": 0, "queries": 5,
                         "budget_queries": 100, "duration_s": 5e-3, "energy_j": None,
                         "event": 1}])
    df = sv.load_failures(moded)
    assert df.loc[df["precision"] == "int8", "power_mode"].isna().all()
    assert any("no recorded power mode" in n for n in df.attrs["notes"])
    X = _raw_covariates(df, ["power_mode"])["power_mode"]
    assert f"{ORIN}/unknown" in set(X) and f"{ORIN}/MAXN" in set(X)


def test_records_with_their_own_mode_are_grouped_by_it(moded):
    """Since 0007 a sweep over modes stores failure records and attack cells under the mode
    each ran in: one run whose measurements name two modes (which the fallback could not
    tell apart) keeps their records apart, each with its own cell's counts."""
    run = _run(moded, ORIN, "recorded-sweep")
    for mode, q, wrong in (("MAXN", 10, 1), ("MODE_15W", 40, 3)):
        _measure(moded, run, ORIN, mode, 2.0, 0.5, precision="int8")
        key = {"run_id": run, "target": ORIN, "precision": "int8", "batch_size": 1,
               "attack": "square", "eps": 0.1, "power_mode": mode}
        assert moded.add_failures(
            [{**key, "sample_id": j, "queries": q + j, "budget_queries": 100,
              "duration_s": (q + j) * 1e-3, "energy_j": None, "event": 1} for j in range(5)],
            cell={**key, "n_available": 8, "n_clean_wrong": wrong, "n_attacked": 5})
    rows = {(r["power_mode"], r["precision"]): r for r in fleet_table(moded)
            if r["target"] == ORIN}
    assert rows[("MAXN", "int8")]["median_queries_to_failure"] == 12
    assert rows[("MODE_15W", "int8")]["median_queries_to_failure"] == 42
    assert rows[("MAXN", "int8")]["failure_clean_wrong"] == 1
    assert rows[("MODE_15W", "int8")]["failure_clean_wrong"] == 3
    df = sv.load_failures(moded)
    assert df[df["precision"] == "int8"].groupby("power_mode")["queries"].median().to_dict() \
        == {"MAXN": 12.0, "MODE_15W": 42.0}
    # records stored before 0007 (NULL) still take their session's mode
    assert rows[("MAXN", "fp32")]["median_queries_to_failure"] == 12


def test_catalog_mode_figures_scale_the_peak(tmp_path):
    orin = load_target(ORIN)
    # nvpmodel_p3701_0004.conf: MODE_30W caps the GPU at 612 MHz with 4 of 8 TPCs on; MAXN is
    # uncapped (930 MHz, data sheet) with 7
    assert orin.mode_scale("MODE_30W") == pytest.approx(612 / 930 * 4 / 7)
    assert orin.mode_scale("MAXN+jetson_clocks") == 1.0
    assert orin.mode_scale(None) is None and orin.mode_scale("MODE_99W") is None
    s = orin.specs_in("MODE_15W")
    assert s.peak_tops["int8"] == pytest.approx(orin.specs.peak_tops["int8"] * 408 / 930 * 3 / 7)
    assert s.tdp_w == 15 and orin.specs_in(None) == orin.specs
    frame = {"target": [ORIN, ORIN, ORIN], "precision": ["int8"] * 3,
             "power_mode": ["MAXN", "MODE_30W", None]}
    tops = _raw_covariates(pd.DataFrame(frame), ["peak_tops"])["peak_tops"]
    base = orin.specs.peak_tops["int8"]
    assert tops.tolist() == pytest.approx([base, base * 612 / 930 * 4 / 7, base])
    base_yaml = {"name": "x", "power_modes": ["MAXN", "LOW"], "specs": {"peak_tops": {"int8": 10}}}
    with pytest.raises(ValueError, match="'OTHER' is not in power_modes"):
        Target(**base_yaml, modes={"OTHER": {"power_w": 5}})
    with pytest.raises(ValueError, match="need peak_mode"):
        Target(**base_yaml, modes={"LOW": {"gpu_max_mhz": 500}})
    with pytest.raises(ValueError, match="greater than 0"):
        Target(**base_yaml, modes={"LOW": {"gpu_max_mhz": -5}})


def test_predictor_rows_of_another_mode_are_their_own_configuration_with_scaled_specs(moded):
    cells = Cells(moded)
    rows = sorted(set(cells.target))
    # the peak mode (MAXN) and a GPU's default join the device; the others are configurations
    assert rows == sorted([L4, ORIN, f"{ORIN} (MODE_15W)", f"{ORIN} (MODE_30W)"])
    mat = cells.matrix("speed")
    assert set(mat.networks) == {"m"}  # one's own model's columns run it
    specs = _row_specs(cells, mat, {})
    ratio = specs[f"{ORIN} (MODE_30W)"]["peak_tops"] / specs[ORIN]["peak_tops"]
    assert ratio == pytest.approx(612 / 930 * 4 / 7)
    assert not math.isclose(ratio, 1.0)


def test_mlperf_mode_only_where_the_system_description_states_it():
    assert stated_power_mode({"hw_notes": "nvpmodel MODE_30W, jetson_clocks"}, ORIN)[0] == \
        "MODE_30W"
    assert stated_power_mode({"sw_notes": "GPUs power limited to 250W"}, "a100-pcie")[0] == \
        "250W-limit"
    assert stated_power_mode({"sw_notes": "nvidia-smi -i 0 -pl 275"}, "a100-pcie")[0] == \
        "275W-limit"
    # MaxQ in the name is MLPerf's category; a TGP is the board's rating; two modes: none
    for system, target in (({"system_name": "NVIDIA Jetson AGX Orin (MaxQ, TensorRT)"}, ORIN),
                           ({"hw_notes": "H200 TGP 700W"}, "ref:h200-sxm-141gb"),
                           ({"hw_notes": "MAXN and MODE_15W"}, ORIN),
                           ({"hw_notes": "carrier with a 25W supply"}, "jetson-orin-nx-16gb")):
        mode, reason = stated_power_mode(system, target)
        assert mode is None and reason


@needs_real
def test_real_system_jsons_state_no_mode(tmp_path):
    """None of NVIDIA's shared system descriptions (MaxP and MaxQ, v2.0-v4.1) names a mode or a
    power limit set for the run, so every imported row's mode is NULL with the reason."""
    files = sorted(REAL.glob("inference_results_v*/closed/NVIDIA/systems/*.json"))
    assert files
    for f in files:
        for target in (ORIN, "jetson-orin-nx-16gb", "jetson-xavier-nx", "a100-pcie"):
            assert stated_power_mode(json.loads(f.read_text()), target)[0] is None, f
    store = Store(f"sqlite:///{tmp_path}/p.db")
    ingest_mlperf(REAL / "inference_results_v3.1", store)
    rows = store.measurements()
    assert rows and all(r["power_mode"] is None for r in rows)
    assert all(json.loads(r["fingerprint"])["power_mode_facts"]["reason"] for r in rows)


def test_cold_device_from_a_reference_measured_in_a_slower_mode():
    """A reference device measured only at half its GPU clock (row "B (LOW)", its figures
    scaled to the mode) predicts a device with twice B's peak at twice B's full-clock speed,
    not at twice its half-clock speed."""
    from edgerob.analysis.predict.matrix import Matrix, cold_fill

    y = np.array([[math.log(5), math.log(10)], [np.nan, np.nan]])
    mat = Matrix(["B (LOW)", "D"], ["B", "D"], ["w1", "w2"], ["f", "f"], y)
    specs = {"B": {"peak_tops": 20, "memory_bandwidth_gbs": 100},
             "B (LOW)": {"peak_tops": 10, "memory_bandwidth_gbs": 100},
             "D": {"peak_tops": 40, "memory_bandwidth_gbs": 100}}
    held = np.array([[False, False], [True, True]])
    est = cold_fill(mat, held, "D", specs, "nearest")
    assert np.exp(est[1]).tolist() == pytest.approx([20, 40])
