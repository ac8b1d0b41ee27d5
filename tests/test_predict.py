"""The matrix predictor (issue 21): each method on synthetic matrices with a known answer, the
cross-validated choice, conformal coverage, and `edgerob predict` on a synthetic store."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from typer.testing import CliRunner

from edgerob.analysis.predict import predict
from edgerob.analysis.predict.matrix import (COLD_METHODS, SLOPE_PRIOR, Matrix, Validation,
                                             cold_fill,
                                             cold_validate,
                                             cross_validate, fill, ratio_predict,
                                             device_speeds, linked, workload_slopes,
                                             workload_weights)
from edgerob.cli import app
from edgerob.store import Store, measurements, now, runs


def _matrix(y, groups=None, families=None) -> Matrix:
    n, m = y.shape
    return Matrix([f"d{i}" for i in range(n)], groups or [f"d{i}" for i in range(n)],
                  [f"w{j}" for j in range(m)], families or [f"w{j}" for j in range(m)], y)


def _additive(n=8, m=6, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, n)[:, None] + rng.normal(0, 1, m)[None, :], rng


def test_ratio_is_exact_on_an_additive_matrix_and_names_its_references():
    y, _ = _additive()
    held = np.zeros(y.shape, bool)
    held[2, 3] = True
    est, refs = fill(y, held, "ratio")
    assert est[2, 3] == pytest.approx(y[2, 3], abs=1e-12)
    r = refs[(2, 3)][0]  # the ratio to a reference is its device effect difference, exactly
    assert r["log_ratio"] == pytest.approx(y[2, 0] - y[r["row"], 0]) and r["shared"] == 5
    # a row sharing no workload with the reference cannot be filled
    y2 = y.copy()
    y2[2, [0, 1, 2, 4, 5]] = np.nan
    assert math.isnan(ratio_predict(y2, 2, 3)[0])


def test_rank1_recovers_an_interaction_that_additive_misses():
    rng = np.random.default_rng(1)
    n, m = 30, 20  # enough cells per row and column that the ridge (1.0) barely shrinks
    u, v = rng.normal(0, 1, n), rng.normal(0, 1, m)
    y = rng.normal(0, 1, n)[:, None] + rng.normal(0, 1, m)[None, :] + np.outer(u, v)
    held = np.zeros(y.shape, bool)
    held[[0, 3, 7], [1, 4, 6]] = True
    err = {k: np.abs(fill(y, held, k)[0] - y)[held].max() for k in ("additive", "rank1")}
    assert err["rank1"] < 0.1 < err["additive"]


def test_rank2_recovers_two_interactions_that_rank1_misses():
    rng = np.random.default_rng(2)
    n, m = 40, 30
    y = rng.normal(0, 1, (n, 2)) @ rng.normal(0, 1, (2, m)) * 1.5
    held = np.zeros(y.shape, bool)
    held[[1, 5, 9, 13], [2, 7, 0, 5]] = True
    err = {k: np.abs(fill(y, held, k)[0] - y)[held].max() for k in ("rank1", "rank2")}
    assert err["rank2"] < 0.15 < err["rank1"]


def test_cross_validation_picks_low_rank_on_low_rank_data():
    rng = np.random.default_rng(3)
    n, m = 30, 20
    y = rng.normal(0, 1, (n, 2)) @ rng.normal(0, 1, (2, m)) * 1.5 + rng.normal(0, 1, n)[:, None]
    val = cross_validate(_matrix(y))
    assert val.chosen == "rank2"
    assert val.scores["rank2"] < min(val.scores["ratio"], val.scores["additive"])
    assert "rank2: smallest mean |log error|" in val.why()


def test_cross_validation_picks_ratios_where_devices_copy_archetypes():
    # every device is one of 6 random archetypes shifted: rank 6, but each has exact twins
    rng = np.random.default_rng(4)
    arch = rng.normal(0, 1, (6, 10))
    kind = np.arange(24) % 6
    y = arch[kind] + rng.normal(0, 1, 24)[:, None]
    val = cross_validate(_matrix(y))
    assert val.chosen == "ratio"
    assert val.scores["ratio"] < 0.25 * val.scores["rank2"]


def test_ratio_scales_a_device_gap_by_how_it_shows_on_the_workload():
    # y(d, w) = b_w + g_w s_d: a one-sample latency (g 0.2) spreads the devices less than
    # throughput (g 1.2); device 0's gap to a reference on w1..w3 is rescaled to w0's g
    g = np.array([0.2, 1.2, 0.9, 0.5])
    b = np.array([0.3, -1.0, 2.0, 0.5])
    y = b[None, :] + np.arange(0.0, 12.0, 2.0)[:, None] * g[None, :]  # devices 2 apart
    y[0, 0] = np.nan
    truth = b[0]
    unscaled = ratio_predict(y, 0, 0, speed=np.zeros(6))[0]  # no speed: every slope 1
    assert unscaled < truth - 0.5  # the gap as it shows on throughput: far too large
    # six devices: the slopes are shrunk to 1 (SLOPE_PRIOR), most of the way there
    assert abs(ratio_predict(y, 0, 0)[0] - truth) < 0.5 * abs(unscaled - truth)
    # a workload that gets slower on faster devices is not divided by: its g is floored at
    # 0.05 of (Sxx + prior), here with the rows centred on their mean speed
    anti = np.column_stack([y[:, 1], -y[:, 1]])
    c = np.arange(0.0, 12.0, 2.0) - 5.0
    assert workload_slopes(anti, 0, np.arange(0.0, 12.0, 2.0))[1] == pytest.approx(
        (c @ anti[:, 0] + SLOPE_PRIOR) / (0.05 * (c @ c + SLOPE_PRIOR)))
    # the speeds are the additive device effects, exact where cells are missing too
    add, _ = _additive(8, 6)
    add[[0, 3, 5], [2, 4, 1]] = np.nan
    full, _ = _additive(8, 6)
    assert np.ptp(device_speeds(add) - (full[:, 0] - full[0, 0])) == pytest.approx(0, abs=1e-9)
    s = np.random.default_rng(7).normal(0, 1.5, 2000)  # many devices: the slopes themselves
    big = b[None, :] + s[:, None] * g[None, :]
    assert workload_slopes(big, 0, device_speeds(big)) == pytest.approx(g[0] / g, rel=0.05)


def test_a_held_out_cell_hides_every_configuration_and_version_of_the_pair():
    # rows 0 and 1 are two configurations of device "a"; columns 2 and 3 two versions of "w"
    y, _ = _additive(6, 5)
    mat = _matrix(y, groups=["a", "a", "b", "c", "d", "e"], families=["u", "v", "w", "w", "x"])
    held = mat.held_mask("a", "w")
    assert held.sum() == 4 and held[:2, 2:4].all()
    y2 = y.copy()
    y2[1, 2] = 100.0  # were the other configuration a reference, row 0 would move
    assert fill(y2, held, "ratio")[0][0, 2] == pytest.approx(y[0, 2], abs=1e-12)


def test_conformal_interval_coverage_is_near_its_level():
    # additive + N(0, 0.15) noise, 30 devices x 20 workloads; 120 held-out cells, each
    # predicted with its interval from cross-validation on what is left
    rng = np.random.default_rng(5)
    y = rng.normal(0, 1, 30)[:, None] + rng.normal(0, 1, 20)[None, :] + rng.normal(0, .15,
                                                                                 (30, 20))
    mat = _matrix(y)
    inside = []
    for i, j in zip(rng.integers(0, 30, 120), rng.integers(0, 20, 120)):
        held = mat.held_mask(f"d{i}", f"w{j}")
        seen = _matrix(np.where(held, np.nan, y))
        val = cross_validate(seen)
        est = fill(y, held, val.chosen)[0][i, j]
        inside.append(abs(est - y[i, j]) <= val.half_width(0.9))
    assert 0.8 <= np.mean(inside) <= 0.97


def test_spec_fills_a_cold_device_from_its_spec_sheet():
    # device effect = log peak TOPS exactly: a device with no results is predicted exactly
    tops = np.array([10.0, 20, 40, 80, 160, 320])
    y = np.log(tops)[:, None] + np.array([0.0, 1.0, -0.5, 2.0])[None, :]
    specs = {f"d{i}": {"peak_tops": t, "memory_bandwidth_gbs": 100 + 37 * i ** 2}
             for i, t in enumerate(tops)}
    held = np.zeros(y.shape, bool)
    held[3] = True
    for method in ("spec", "spec+neighbours"):
        est = cold_fill(_matrix(y), held, "d3", specs, method)
        assert np.allclose(est[3], y[3], atol=0.01)  # the biases' small ridge


def test_interval_is_calibrated_on_cells_as_thin_as_the_one_predicted():
    # Mondrian: a workload known on one device gets the quantile of held-out cells like it, not
    # of the many well-supported ones (pooled, 90% would be ~0.1 here and undercover thin cells)
    e = np.r_[np.linspace(0.5, 1.0, 30), np.linspace(0.01, 0.1, 300)]
    sup = np.r_[np.full(30, 1), np.full(300, 3)]
    val = Validation({"ratio": e}, "ratio", len(e), {"ratio": 0.1}, sup)
    assert val.half_width(0.9, 1) == pytest.approx(np.sort(e[:30])[27])
    assert val.half_width(0.9, 7) == pytest.approx(np.sort(e[30:])[270])  # 3 or more
    # no held-out cell with support 2: the thinner cells stand in, never the thick ones
    assert val.half_width(0.9, 2) == val.half_width(0.9, 1)
    assert val.half_width(0.9) == pytest.approx(np.sort(e)[math.ceil(331 * .9) - 1])
    # and of a row kind like it: of the well-supported cells, a device's plain rows miss more
    # than the configurations other devices ran alike (x8, MaxQ)
    plain = np.r_[np.zeros(30, bool), np.arange(300) >= 200]  # the 100 largest errors: plain
    val = Validation({"ratio": e}, "ratio", len(e), {"ratio": 0.1}, sup, plain)
    assert val.half_width(0.9, 3, True) == pytest.approx(np.sort(e[230:])[90])
    assert val.half_width(0.9, 3, False) == pytest.approx(np.sort(e[30:230])[180])
    assert val.half_width(0.9, 1, True) == val.half_width(0.9, 1)  # no plain thin cell: pooled
    assert val.half_width(0.9, 3) == pytest.approx(np.sort(e[30:])[270])
    # a cold device (no support): the cells of its row kind
    assert val.half_width(0.9, None, True) == pytest.approx(np.sort(e[230:])[90])
    assert val.half_width(0.9, None, False) == pytest.approx(np.sort(e[:230])[207])


def test_cross_validation_holds_out_thin_workloads_for_the_intervals():
    # rank-1 interaction: a workload known on one device is predicted worse than one known on
    # many, and the thin cells' errors are what the support-1 interval is made of
    rng = np.random.default_rng(6)
    y = (rng.normal(0, 1, 20)[:, None] + rng.normal(0, 1, 12)[None, :]
         + np.outer(rng.normal(0, .5, 20), rng.normal(0, .5, 12)) + rng.normal(0, .05, (20, 12)))
    val = cross_validate(_matrix(y))
    assert set(np.unique(val.supports)) == {1, 2, 3}
    e = np.abs(val.errors[val.chosen])
    assert np.median(e[val.supports == 1]) > np.median(e[val.supports == 3])
    assert val.half_width(0.9, 1) > val.half_width(0.9, 3)
    assert val.cells == (val.supports == 3).sum()  # the method is chosen on the random folds
    assert len(val.plain) == len(e) and val.plain.all()  # every row here is a plain device


def test_nearest_tops_is_a_cold_method_and_wins_where_devices_pair_up_on_paper():
    # pairs of devices 10% apart in TOPS deviate alike from the TOPS law: the nearest device
    # scaled by the TOPS ratio is exact; the spec regression misses the deviation
    tops = np.array([10.0, 11, 40, 44, 160, 176])
    dev = np.array([0.5, 0.5, -0.4, -0.4, 0.3, 0.3])
    y = np.log(tops)[:, None] + dev[:, None] + np.array([0.0, 1.0, -0.5, 2.0])[None, :]
    specs = {f"d{i}": {"peak_tops": t, "memory_bandwidth_gbs": 100 + 37 * i ** 2}
             for i, t in enumerate(tops)}
    val = cold_validate(_matrix(y), specs)
    assert val.chosen == "nearest" and val.cells == 24
    assert val.scores["nearest"] < 1e-9 < 0.3 < val.scores["spec"]
    held = np.zeros(y.shape, bool)
    held[2] = True
    est = cold_fill(_matrix(y), held, "d2", specs, "nearest")
    assert np.allclose(est[2], y[3] + math.log(40 / 44))


def test_ratio_leans_on_the_workloads_that_scale_like_the_one_predicted():
    # w0 and w1 scale alike across devices (effect a), w2 otherwise (effect b): device 0's
    # w0 is its w1 ratio to the others, not the mean of its w1 and w2 ratios
    rng = np.random.default_rng(3)
    a, b = rng.normal(0, 1, 8), rng.normal(0, 1, 8)
    y = np.column_stack([a, a + 0.5, b])
    held = np.zeros(y.shape, bool)
    held[0, 0] = True
    est = fill(y, held, "ratio")[0][0, 0]
    assert est == pytest.approx(y[0, 0], abs=0.03)  # uniform weights: off by 1.3 here
    w = workload_weights(y, 0, 0)
    assert w[0] == 0 and w[1] > 100 * w[2]


def test_a_workload_of_the_same_network_weighs_more_where_few_devices_tell():
    # w0 is known on d1 and d2 only, where w1 (the same network, another scenario) and w2
    # (another network) look equally alike; d0's ratio to them is 2 on w1 and 1 on w2: the
    # same network weighs SAME_NETWORK_WEIGHT (8) times as much, (8 x 2 + 1) / 9
    y = np.array([[np.nan, 2.0, 1.0], [0.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    held = np.zeros(y.shape, bool)
    assert ratio_predict(y, 0, 0, ["resnet50", "resnet50", "bert"])[0] == pytest.approx(17 / 9)
    assert ratio_predict(y, 0, 0)[0] == pytest.approx(1.5)  # networks unknown: alike
    mat = _matrix(np.where(np.isnan(y), 3.0, y))
    mat.networks = ["resnet50", "resnet50", "bert"]
    held[0, 0] = True
    assert fill(mat.y, held, "ratio", mat.networks)[0][0, 0] == pytest.approx(17 / 9)
    assert np.isnan(mat.masked(held).y[0, 0]) and mat.masked(held).networks == mat.networks


def test_a_workload_run_only_by_unlinked_devices_is_not_predicted():
    # d3 ran only w3 and nothing else any device ran: w3's effect and d3's are not separable,
    # so no method may put a number on w3 for d0 (the low-rank fits would return the ridge's)
    y, _ = _additive(5, 4)
    y[:3, 3] = np.nan
    y[3, :3] = np.nan
    y[4] = np.nan
    assert linked(y)[0, :3].all() and not linked(y)[0, 3] and linked(y)[3, 3]
    assert not linked(y)[4].any()  # a device with no results is linked to nothing
    held = np.zeros(y.shape, bool)
    held[0, 3] = True  # nothing known there: the cell asked for
    for method in ("ratio", "additive", "rank1", "rank2", "ratio+additive"):
        assert np.isnan(fill(y, held, method)[0][0, 3]), method
    held[0, 3], held[1, 2] = False, True
    assert np.isfinite(fill(y, held, "additive")[0][1, 2])


def test_a_cold_device_is_predicted_configuration_by_configuration():
    # every device runs a default and a MaxQ configuration 0.7 slower (log), devices are
    # exactly on the TOPS law: each cold configuration is predicted from the same configuration
    # of the others (a reference in the other configuration would be off by 0.7)
    tops = [10.0, 20, 40, 80, 160, 320]
    w = np.array([0.0, 1.0, -0.5, 2.0])
    rows, groups, y = [], [], []
    for i, t in enumerate(tops):
        for cfg, gap in (("", 0.0), (" (MaxQ)", -0.7)):
            rows.append(f"d{i}{cfg}")
            groups.append(f"d{i}")
            y.append(math.log(t) + gap + w)
    y = np.array(y)
    mat = Matrix(rows, groups, [f"w{j}" for j in range(4)], [f"w{j}" for j in range(4)], y)
    specs = {f"d{i}": {"peak_tops": t, "memory_bandwidth_gbs": 100 + 37 * i ** 2}
             for i, t in enumerate(tops)}
    held = (np.array(groups) == "d2")[:, None] & np.ones(y.shape, bool)
    for method in COLD_METHODS:
        est = cold_fill(mat, held, "d2", specs, method)
        assert np.allclose(est[held], y[held], atol=0.02), method
    # MaxQ known on one device and one workload only: the others come from the nearest
    # device's default configuration, corrected by the MaxQ gap learnt there
    maxq, d2, d3 = np.arange(len(rows)) % 2 == 1, np.array(groups) == "d2", np.array(groups) == "d3"
    y2 = y.copy()
    y2[maxq & ~d2 & ~d3] = np.nan
    y2[maxq & d3, 1:] = np.nan
    held = d2[:, None] & np.ones(y.shape, bool)
    est = cold_fill(Matrix(rows, groups, mat.cols, mat.families, y2), held, "d2", specs,
                    "nearest")
    assert np.allclose(est[held], y[held], atol=0.02)


# --- the store and the CLI ---------------------------------------------------------------------

DEVICES = {"a2": -1.0, "t4": -0.6, "l4": 0.0, "a30": 0.4, "a100-pcie": 1.0, "h100-pcie": 1.6,
           "jetson-agx-orin-32gb": -1.3, "a10": 0.2}


def _store(tmp_path, own_l4=None, seed=0):
    """Four MLPerf workloads (Offline throughput and SingleStream latency) on DEVICES and an own
    model on all but h100-pcie: log metric = device effect + workload effect + N(0, 0.03)."""
    rng = np.random.default_rng(seed)
    store = Store(f"sqlite:///{tmp_path}/p.db")
    with store.engine.begin() as c:
        for d, a in DEVICES.items():
            for k, (bench, scen) in enumerate([("resnet50", "Offline"), ("bert-99", "Offline"),
                                               ("resnet50", "SingleStream"),
                                               ("retinanet", "Offline")]):
                run_id = f"{d}{k}"
                val = math.exp(a + k + rng.normal(0, 0.03))
                metric = {"Offline": "throughput_sps", "SingleStream": "latency_p90_ms"}[scen]
                c.execute(runs.insert().values(
                    run_id=run_id, target=d, profile="mlperf", model=bench, host="x",
                    status="done", started_at="v3.0", source="mlperf", mlperf_version="v3.0",
                    scenario=scen, system_name=d, accelerators="GPU"))
                c.execute(measurements.insert().values(
                    run_id=run_id, target=d, runtime="tensorrt", precision="int8", batch_size=1,
                    input_set="clean", created_at=now(),
                    **{metric: val if metric == "throughput_sps" else 1 / val}))
            if d == "h100-pcie":
                continue
            v = 100 * math.exp(a) if d != "l4" or own_l4 is None else own_l4
            c.execute(runs.insert().values(run_id=f"{d}own", target=d, profile="quick",
                                           model="mynet", host="x", status="done",
                                           started_at="2026"))
            c.execute(measurements.insert().values(
                run_id=f"{d}own", target=d, runtime="onnxruntime", precision="fp32",
                batch_size=4, input_set="clean", created_at=now(), throughput_sps=v,
                latency_p50_ms=4e3 / v))
    return store


def test_predict_json_shape_and_the_chosen_method(tmp_path):
    _store(tmp_path)
    r = CliRunner().invoke(app, ["predict", "--target", "l4", "--mlperf", "bert-99",
                                 "--scenario", "Offline", "--json",
                                 "--store", f"sqlite:///{tmp_path}/p.db"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.output)
    assert len(rows) == 1
    row = rows[0]
    assert {"target", "workload", "metric", "predicted", "interval", "level", "method",
            "references", "measured"} <= set(row)
    assert row["target"] == "l4" and row["metric"] == "throughput_sps" and row["level"] == 0.9
    assert row["workload"] == "mlperf:bert-99 Offline v3.0" and row["unit"] == "sequences/s"
    assert row["interval"][0] < row["predicted"] < row["interval"][1]
    assert abs(math.log(row["predicted"] / math.exp(1))) < 0.1
    assert row["method"] in row["why"] and row["references"]
    assert row["measured"] == pytest.approx(math.exp(1), rel=0.1)


def test_own_model_on_a_target_that_never_ran_it(tmp_path):
    store = _store(tmp_path)
    rows = predict(store, "h100-pcie", model="mynet")
    assert [r["workload"] for r in rows] == ["mynet fp32 b4"] and rows[0]["measured"] is None
    assert abs(math.log(rows[0]["predicted"] / (100 * math.exp(1.6)))) < 0.1


def test_the_targets_own_value_is_never_fitted(tmp_path):
    # l4's own row says 1000x what the others imply: the prediction must not move
    a = predict(_store(tmp_path / "a", own_l4=100.0), "l4", model="mynet")[0]
    b = predict(_store(tmp_path / "b", own_l4=1e5), "l4", model="mynet")[0]
    assert b["measured"] == pytest.approx(1e5)
    assert a["predicted"] == b["predicted"] and a["interval"] == b["interval"]


@pytest.mark.parametrize("args, match", [
    (["--target", "nope", "--mlperf", "resnet50", "--scenario", "Offline"], "unknown target"),
    (["--target", "l4", "--mlperf", "gptj", "--scenario", "Offline"], "no results for workload"),
    (["--target", "l4", "--model", "othernet"], "no results for workload"),
    (["--target", "l4", "--mlperf", "resnet50", "--scenario", "Offline", "--level", "1.5"],
     "--level must be between 0 and 1"),
    (["--target", "l4", "--mlperf", "resnet50", "--scenario", "Batch"], "--scenario must be"),
    (["--target", "l4"], "name one workload"),
])
def test_user_errors_end_with_one_line_and_exit_2(tmp_path, args, match):
    _store(tmp_path)
    r = CliRunner().invoke(app, ["predict", *args, "--store", f"sqlite:///{tmp_path}/p.db"])
    assert r.exit_code == 2, r.output
    assert match in r.output and "Traceback" not in r.output


def test_each_benchmark_has_its_own_unit():
    from edgerob.analysis.predict.cells import unit

    assert unit("throughput_sps", "mlperf:bert-99 Offline v3.0") == "sequences/s"
    assert unit("throughput_sps", "mlperf:3d-unet-99.9 Offline v2.1") == "volumes/s"
    assert unit("energy_per_inference_j", "mlperf:rnnt Server v2.0") == "J per utterance"
    assert unit("throughput_sps", "mlperf:gptj-99 Offline v3.1") == "samples/s"  # not named
    assert unit("throughput_sps", "resnet8 fp32 b8") == "images/s"  # own models: images
    assert unit("latency_p90_ms", "mlperf:resnet50 SingleStream v3.0") == "p90 ms"
