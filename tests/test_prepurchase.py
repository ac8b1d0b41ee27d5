"""Pre-purchase prediction: the spec-sheet regression cold devices use (covariates chosen by
leave-one-target-out error, so the scored model is the model used), and one energy basis for
every device costed."""

from __future__ import annotations

import math

import numpy as np
import pytest
import yaml

from edgerob.analysis.predict.spec import fit_loglinear, loto_rmse
from edgerob.analysis.cost import Workload, candidate_costs, tco


def _xs(**cols):
    n = len(next(iter(cols.values())))
    return [{k: v[i] for k, v in cols.items()} for i in range(n)]


def _target(folder, name, tops, bw, tdp, purchase=1000):
    path = folder / "targets" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump({
        "name": name, "runtime": "tensorrt", "profiler": "none",
        "specs": {"peak_tops": {"int8": tops}, "memory_bandwidth_gbs": bw, "tdp_w": tdp},
        "price": {"purchase_usd": purchase}}))


def test_noise_covariate_is_not_added_until_one_df_is_left():
    # y follows tops exactly (x 1.1 / 0.9 wobble); bw is unrelated. The old rule added both
    # covariates with 4 targets (1 residual df, t = 12.7); LOTO keeps tops only (2 df).
    tops = [10, 40, 160, 640]
    bw = [300, 100, 250, 120]
    y = [t * f for t, f in zip(tops, (1.1, 0.9, 1.1, 0.9))]
    cand = {"peak_tops": 80, "memory_bandwidth_gbs": 200}
    fit = fit_loglinear(y, _xs(peak_tops=tops, memory_bandwidth_gbs=bw),
                        ("peak_tops", "memory_bandwidth_gbs"), cand)
    assert fit.covariates == ["peak_tops"] and fit.df == 2
    assert "1 + peak_tops + memory_bandwidth_gbs" not in fit.scores  # would leave 1 df
    # the score reported is the chosen model's own leave-one-out error, recomputed by hand
    ly, lx = np.log(y), np.log(tops)
    errs = []
    for i in range(4):
        keep = np.arange(4) != i
        b, a = np.polyfit(lx[keep], ly[keep], 1)
        errs.append(ly[i] - (a + b * lx[i]))
    assert fit.loto_rmse_log == pytest.approx(math.sqrt(np.mean(np.square(errs))))
    assert fit.loto_rmse_log == min(fit.scores.values())


def test_a_covariate_that_does_not_predict_is_left_out():
    # y is flat with noise; tops varies: the intercept-only model predicts held-out points best
    y = [5.0, 6.0, 5.0, 6.0, 5.5]
    tops = [1.0, 3.0, 9.0, 27.0, 81.0]
    fit = fit_loglinear(y, _xs(peak_tops=tops), ("peak_tops",), {"peak_tops": 10.0})
    assert fit.covariates == [] and fit.df == 4
    assert fit.scores["1"] < fit.scores["1 + peak_tops"]


def test_loto_rmse_by_hand_intercept_only():
    ly = np.log([1.0, math.e, math.e ** 2])
    # each point predicted by the mean of the other two: errors -1.5, 0, 1.5
    assert loto_rmse(ly, np.ones((3, 1))) == pytest.approx(math.sqrt((2.25 * 2) / 3))


def test_every_device_costed_on_one_energy_basis(tmp_path, monkeypatch):
    """A measured row with a power reading and a predicted candidate with the same throughput
    and energy per inference cost the same energy (the old code charged the measured one
    power x service hours, the predicted one energy per inference x inferences)."""
    monkeypatch.chdir(tmp_path)
    _target(tmp_path, "dev", 100, 300, 60)
    w = Workload(inferences_per_s=50, hours_per_day=24, years=1, utilisation=1.0)
    measured = {"runtime": "tensorrt", "precision": "int8", "batch_size": 1,
                "throughput_sps": 500.0, "power_mean_w": 40.0, "energy_per_inference_j": 0.02}
    c = tco("dev", measured, w)
    pred = {"precision": "int8", "batch_size": 1, "throughput_sps": 500.0,
            "energy_per_inference_j": 0.02, "latency_p50_ms": 2.0, "source": "measured"}
    [p] = candidate_costs([pred], "dev", w)
    assert c["energy_kwh"] == pytest.approx(p["cost"]["energy_kwh"])
    assert c["energy_kwh"] == pytest.approx(0.02 * w.inferences / 3.6e6)
    assert c["energy_kwh"] != pytest.approx(40.0 * w.service_h / 1000)
    # an Offline prediction (throughput, no latency) is costed too
    [p] = candidate_costs([{**pred, "latency_p50_ms": None}], "dev", w)
    assert p["cost"]["devices_needed"] == 1


def test_proportional_law_is_a_candidate_with_three_targets():
    # 3 targets: a free slope would leave 1 df (not considered); throughput proportional to peak
    # TOPS (scale fitted, exponent fixed) keeps 2 df and predicts held-out devices best here
    tops = [36.0, 330.0, 624.0]
    y = [84.0 * t * f for t, f in zip(tops, (1.0, 0.9, 1.05))]
    fit = fit_loglinear(y, _xs(peak_tops=tops), ("peak_tops",), {"peak_tops": 242.5},
                        proportional={"peak_tops": 1.0})
    assert fit.offset == {"peak_tops": 1.0} and fit.covariates == [] and fit.df == 2
    assert "1 + peak_tops" not in fit.scores
    assert fit.scores["1 + offset peak_tops"] < fit.scores["1"]
    mid, lo, hi = fit.predict({"peak_tops": 242.5}, 0.95)
    scale = math.exp(np.mean(np.log(np.asarray(y) / np.asarray(tops))))
    assert mid == pytest.approx(scale * 242.5) and lo < mid < hi
    assert "offset(+1 x log(peak_tops[int8]))" in fit.formula("throughput_sps", "int8")
