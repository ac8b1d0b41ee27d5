"""Fleet comparison, cost and the HTML report (edgerob.analysis.compare, edgerob.analysis.cost, edgerob.analysis.report).

Two kinds of data:
- real CPU runs: the tiny model profiled on this machine under three target names at different
  thread counts (`real_fleet`); their spec sheets and prices are made up for the test (the CPU is
  the same), so they exercise the plumbing, not the hardware models;
- recorded rows, written straight into a store and labelled as such (`recorded_fleet`): five
  hypothetical devices whose p50 latency follows a known law of their specs, for exact checks of
  ties, fronts, predictions and costs.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
import yaml

from edgerob.analysis.compare import (fleet_table, km_curve, latency_tie, pareto_front,
                                      pareto_fronts, rank_latency, restricted_mean)
from edgerob.analysis.predict import held_out, predict_candidate
from edgerob.analysis.predict.matrix import WARM_METHODS
from edgerob.analysis.cost import (JOULES_PER_KWH, Workload, attacker_side, joules_to_kwh, tco,
                          usd_for_seconds)
from edgerob.errors import EdgerobError
from edgerob.device.bench import compare_samples
from edgerob.device.failures import km_median
from edgerob.analysis.report import write_report
from edgerob.store import Store, measurements
from edgerob.catalog.targets import load_target

from conftest import FAST


def write_target(folder: Path, name: str, peak_tops: dict, bw=None, tdp=None, purchase=None,
                 cloud=None, threads=None) -> Path:
    spec = {"name": name, "description": f"test target {name}", "runtime": "onnxruntime",
            "runtime_options": {"providers": ["CPUExecutionProvider"]}, "threads": threads,
            "profiler": "none",
            "specs": {"peak_tops": peak_tops, "memory_bandwidth_gbs": bw, "tdp_w": tdp},
            "price": {"purchase_usd": purchase, "cloud_usd_per_h": cloud}}
    path = folder / "targets" / f"{name}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(spec))
    return path


# --- real CPU runs under three target names -----------------------------------------------------

@pytest.fixture(scope="module")
def real_fleet(tiny_model, tmp_path_factory):
    """(folder with targets/, store): three runs of the tiny model on this CPU, 1 and 2 threads,
    with clean and FGSM input sets and Square failure records."""
    from edgerob.catalog.profiles import Profile
    from edgerob.device.sweep import run_profile
    from edgerob.host.workload import prepare_workload

    folder = tmp_path_factory.mktemp("real_fleet")
    # made-up spec sheets and prices (same CPU underneath): plumbing, not a hardware model
    specs = {"cpu-t1": dict(peak_tops={"fp32": 0.1, "int8": 0.4}, bw=20, tdp=15, purchase=300,
                            threads=1),
             "cpu-t2": dict(peak_tops={"fp32": 0.2, "int8": 0.8}, bw=25, tdp=25, purchase=500,
                            threads=2),
             "cpu-cloud": dict(peak_tops={"fp32": 0.3, "int8": 1.2}, bw=40, tdp=35,
                               cloud=0.8048, threads=2)}
    paths = {n: write_target(folder, n, **s) for n, s in specs.items()}
    profile = Profile.model_validate({
        "name": "fleet", "precisions": ["fp32", "int8"], "batch_sizes": [1, 4], "samples": 40,
        "timing": FAST, "attacks": [{"attack": "fgsm", "eps": [0.1]}],
        "query_attack": {"eps": [0.2], "budget_queries": 30, "samples": 6,
                         "precisions": ["fp32", "int8"], "batch_sizes": [4]}})
    work = prepare_workload(profile, tiny_model)
    store = Store(f"sqlite:///{folder}/fleet.db")
    for name, path in paths.items():
        run_profile(load_target(str(path)), profile, work, store)
    return folder, store


def test_fleet_table_values_equal_the_stored_ones(real_fleet, monkeypatch):
    folder, store = real_fleet
    monkeypatch.chdir(folder)
    rows = fleet_table(store)
    assert {r["target"] for r in rows} == {"cpu-t1", "cpu-t2", "cpu-cloud"}
    assert len(rows) == 3 * 2 * 2
    stored = {(m["target"], m["precision"], m["batch_size"], m["input_set"]): m
              for m in store.measurements()}
    for r in rows:
        clean = stored[(r["target"], r["precision"], r["batch_size"], "clean")]
        fgsm = stored[(r["target"], r["precision"], r["batch_size"], "fgsm@0.1")]
        for k in ("latency_p50_ms", "latency_p99_ms", "throughput_sps", "accuracy",
                  "power_mean_w", "energy_per_inference_j"):
            assert r[k] == clean[k], k
        assert r["accuracy@fgsm@0.1"] == fgsm["accuracy"]
        assert r["robust_accuracy"] == fgsm["accuracy"] and r["robust_input_set"] == "fgsm@0.1"
        assert r["latencies_ms"] == json.loads(clean["latencies_ms"])
        assert r["power_mean_w"] is None  # no sensor on this CPU: empty, never estimated
        recs = [f for f in store.failures() if (f["target"], f["precision"], f["batch_size"])
                == (r["target"], r["precision"], r["batch_size"])]
        assert r["failure_records"] == len(recs)
        if recs:
            assert r["batch_size"] == 4 and r["failure_attack"] == "square@0.2"
            ev = [f["event"] for f in recs]
            assert r["median_time_to_failure_s"] == km_median([f["duration_s"] for f in recs], ev)
            assert r["median_queries_to_failure"] == km_median([f["queries"] for f in recs], ev)
            assert r["median_energy_to_failure_j"] is None  # no sensor
            assert r["median_time_share_to_failure_s"] == km_median(
                [f["duration_share_s"] for f in recs], ev)
            [cell] = [c for c in store.attack_cells(target=r["target"])
                      if (c["precision"], c["batch_size"]) == (r["precision"], r["batch_size"])]
            assert r["failure_clean_wrong"] == cell["n_clean_wrong"]
            assert cell["n_attacked"] == len(recs)
        else:
            assert r["median_time_to_failure_s"] is None
        tgt = load_target(r["target"])
        assert r["price_purchase_usd"] == tgt.price.purchase_usd
        assert r["price_cloud_usd_per_h"] == tgt.price.cloud_usd_per_h
    # ranks: within each batch size, 1 is the fastest, ties share a rank
    for b in (1, 4):
        sub = sorted((r for r in rows if r["batch_size"] == b),
                     key=lambda r: r["latency_p50_ms"])
        assert sub[0]["latency_rank"] == 1
        assert [r["latency_rank"] for r in sub] == sorted(r["latency_rank"] for r in sub)
    only = fleet_table(store, targets="cpu-t1,cpu-t2")
    assert {r["target"] for r in only} == {"cpu-t1", "cpu-t2"}
    with pytest.raises(EdgerobError, match="no-such"):
        fleet_table(store, targets=["no-such"])


def test_each_real_runs_device_held_out_and_predicted(real_fleet, monkeypatch):
    folder, store = real_fleet
    monkeypatch.chdir(folder)
    rows = held_out(store)
    assert [r["target"] for r in rows] == ["cpu-cloud", "cpu-t1", "cpu-t2"]
    for r in rows:
        assert r["cells"] == 4  # fp32/int8 x batch 1/4, each hidden and predicted
        assert r["median_abs_rel_error"] >= 0 and r["methods"]
        assert all(c["measured"] is not None and c["interval"] for c in r["details"])


def test_report_of_the_real_runs_is_self_contained(real_fleet, monkeypatch, tmp_path):
    folder, store = real_fleet
    monkeypatch.chdir(folder)
    out = write_report(store, tmp_path / "report.html",
                       workload=Workload(inferences_per_s=50, hours_per_day=8, years=2),
                       train_time_s=12.0, aft=False)
    text = out.read_text()
    _assert_self_contained(text)
    for name in ("cpu-t1", "cpu-t2", "cpu-cloud"):
        assert name in text
    for section in ("id='own'", "id='pareto'", "id='cost'", "id='survival'",
                    "id='fingerprints'", "id='prediction'"):
        assert section in text
    assert "accuracy@fgsm@0.1" in text and "USD / M inferences" in text
    assert text.count("<details><summary><code>") == len(store.measurements())
    assert text.count("data:image/png;base64,") >= 3  # Pareto + KM plots
    assert [p.name for p in tmp_path.iterdir()] == ["report.html"]  # no temp file left


# --- recorded rows (hypothetical devices, a known latency law) ----------------------------------

# p50 latency (ms) = 40 * tops^-0.6 * bw^-0.2 * batch^0.8, energy (J) = 0.002 * tdp^0.9 * tops^-0.5
DEVICES = {
    "dev-a": dict(peak_tops={"fp32": 1.0, "int8": 4.0}, bw=25.6, tdp=10, purchase=99),
    "dev-b": dict(peak_tops={"fp32": 2.0, "int8": 20.0}, bw=68.0, tdp=15, purchase=249),
    "dev-c": dict(peak_tops={"fp32": 4.0, "int8": 33.0}, bw=102.0, tdp=25, purchase=599),
    "dev-d": dict(peak_tops={"fp32": 8.0, "int8": 78.0}, bw=204.0, tdp=40, purchase=1599),
    "dev-l4": dict(peak_tops={"fp32": 30.3, "int8": 242.5}, bw=300.0, tdp=72, cloud=0.8048),
}


def _law(spec, precision, batch, noise):
    lat = 40 * spec["peak_tops"][precision] ** -0.6 * spec["bw"] ** -0.2 * batch ** 0.8 * noise
    energy = 0.002 * spec["tdp"] ** 0.9 * spec["peak_tops"][precision] ** -0.5 * noise
    return lat, energy


def recorded_store(folder: Path, devices=DEVICES) -> Store:
    """RECORDED DATA, written directly (no device ran): one clean and one PGD row per device,
    precision and batch size, 200 latencies around the law's p50, and 20 failure records."""
    rng = np.random.default_rng(7)
    store = Store(f"sqlite:///{folder}/recorded.db")
    for i, (name, spec) in enumerate(devices.items()):
        write_target(folder, name, **spec)
        run, _ = store.begin_run(target=name, profile="recorded", model="m", model_sha256="x",
                                 runtime="onnxruntime", host=f"host-{name}",
                                 versions={"edgerob": "test"})
        for precision in ("fp32", "int8"):
            for batch in (1, 8):
                noise = math.exp(0.03 * rng.standard_normal())
                p50, energy = _law(spec, precision, batch, noise)
                lat = p50 * np.exp(0.02 * rng.standard_normal(200))
                for input_set, acc in (("clean", 0.95 - 0.01 * i), ("pgd@0.1", 0.30 + 0.05 * i)):
                    store.add_measurement({
                        "run_id": run, "target": name, "runtime": "onnxruntime",
                        "precision": precision, "batch_size": batch, "input_set": input_set,
                        "n_samples": 100, "iterations": 200, "duration_s": lat.sum() / 1e3,
                        "latency_p50_ms": float(np.median(lat)),
                        "latency_p99_ms": float(np.percentile(lat, 99)),
                        "latency_mean_ms": float(lat.mean()), "latency_std_ms": float(lat.std()),
                        "throughput_sps": batch * 1e3 / float(lat.mean()), "accuracy": acc,
                        "profiler": "recorded", "power_samples": 50,
                        "power_mean_w": spec["tdp"] * 0.6, "power_idle_w": spec["tdp"] * 0.2,
                        "energy_per_inference_j": energy, "latencies_ms": lat.tolist(),
                        "fingerprint": {"host": f"host-{name}", "recorded": True}})
                q = rng.integers(5, 60, size=20)
                ev = (q < 50).astype(int)
                q = np.where(ev == 1, q, 50)
                store.add_failures([{
                    "run_id": run, "target": name, "precision": precision, "batch_size": batch,
                    "attack": "square", "eps": 0.1, "sample_id": j, "queries": int(q[j]),
                    "budget_queries": 50, "duration_s": float(q[j] * p50 / 1e3),
                    "energy_j": float(q[j] * energy), "event": int(ev[j])}
                    for j in range(20)])
        store.finish_run(run)
    return store


@pytest.fixture
def recorded_fleet(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    return recorded_store(tmp_path)


def test_ties_within_noise_and_not_beyond():
    rng = np.random.default_rng(0)
    base = 2.0 + 0.1 * rng.standard_normal(300)
    a = {"latency_p50_ms": float(np.median(base)), "latencies_ms": base.tolist()}
    same = {"latency_p50_ms": float(np.median(base)), "latencies_ms": base[::-1].tolist()}
    close = {"latency_p50_ms": 2.001, "latencies_ms": (base + 0.001).tolist()}
    slow = {"latency_p50_ms": 3.0, "latencies_ms": (base + 1.0).tolist()}
    assert latency_tie(a, same) and latency_tie(a, close)
    assert not latency_tie(a, slow)
    assert rank_latency([slow, a, same]) == [3, 1, 1]
    assert rank_latency([a, close, slow]) == [1, 1, 3]
    # no stored latencies: p50 +- std intervals
    assert latency_tie({"latency_p50_ms": 1.0, "latency_std_ms": 0.2},
                       {"latency_p50_ms": 1.3, "latency_std_ms": 0.2})
    assert not latency_tie({"latency_p50_ms": 1.0, "latency_std_ms": 0.1},
                           {"latency_p50_ms": 1.3, "latency_std_ms": 0.1})
    # ranks stay within groups and skip rows without latency
    rows = [{"latency_p50_ms": 5.0, "batch_size": 8}, {"latency_p50_ms": 1.0, "batch_size": 1},
            {"latency_p50_ms": None, "batch_size": 1}, {"latency_p50_ms": 9.0, "batch_size": 1}]
    assert rank_latency(rows, within=("batch_size",)) == [1, 1, None, 2]
    # not transitive: a chain of small steps does not collapse into one rank
    chain = [{"latency_p50_ms": v, "latency_std_ms": 0.6} for v in (1.0, 2.0, 3.0)]
    assert rank_latency(chain) == [1, 1, 3]


def _slower_on(per_mille: int) -> dict:
    """A configuration as fast as `_BASE` (1 ms) except on `per_mille` of its 1000 iterations
    (2 ms): against `_BASE`, Cliff's delta is exactly per_mille / 1000, whatever its p50."""
    lat = [2.0] * per_mille + [1.0] * (1000 - per_mille)
    return {"latency_p50_ms": float(np.median(lat)), "latencies_ms": lat}


_BASE = {"latency_p50_ms": 1.0, "latencies_ms": [1.0] * 10}


@pytest.mark.parametrize("per_mille, tie", [
    (100, True),    # |delta| 0.1: negligible
    (146, True),    # just under the 0.147 threshold (Romano et al. 2006) ...
    (148, False),   # ... and just over it (|delta| exactly 0.147 is left to rounding)
    (300, False),   # small, not negligible: a tie only under a far looser threshold
])
def test_a_tie_is_a_cliffs_delta_under_0_147(per_mille, tie):
    slower = _slower_on(per_mille)
    assert compare_samples(slower["latencies_ms"], _BASE["latencies_ms"])["cliffs_delta"] == \
        pytest.approx(per_mille / 1000, abs=1e-9)
    assert latency_tie(slower, _BASE) is tie and latency_tie(_BASE, slower) is tie  # |delta|
    # all p50s are 1 ms, so only the tie decides the rank
    assert rank_latency([_BASE, slower]) == ([1, 1] if tie else [1, 2])


def test_a_tie_uses_cliffs_delta_from_two_latencies_on_each_side_else_p50_and_std():
    """Two iterations on each side are enough for Cliff's delta, which then decides even where
    the p50 +- std intervals overlap; one side without them falls back to the intervals."""
    fast = {"latency_p50_ms": 1.0, "latency_std_ms": 0.6, "latencies_ms": [1.0, 1.0]}
    slow = {"latency_p50_ms": 2.0, "latency_std_ms": 0.6, "latencies_ms": [2.0, 2.0]}
    assert not latency_tie(fast, slow)  # delta -1, though 1.0 +- 0.6 meets 2.0 +- 0.6
    no_list = {k: v for k, v in slow.items() if k != "latencies_ms"}
    assert latency_tie(fast, no_list) and latency_tie(no_list, fast)  # the intervals


def test_pareto_front_hand_made():
    pts = [{"n": "a", "lat": 1.0, "acc": 0.5}, {"n": "b", "lat": 2.0, "acc": 0.7},
           {"n": "c", "lat": 2.5, "acc": 0.6},   # dominated by b
           {"n": "d", "lat": 3.0, "acc": 0.7},   # dominated by b (equal acc, slower)
           {"n": "e", "lat": 4.0, "acc": 0.9}, {"n": "f", "lat": 4.0, "acc": 0.9},  # equal: both
           {"n": "g", "lat": None, "acc": 0.99}]  # missing x: left out
    assert [r["n"] for r in pareto_front(pts, "lat", "acc")] == ["a", "b", "e", "f"]
    # maximise x, minimise y
    assert [r["n"] for r in pareto_front(pts, "lat", "acc", minimize_x=False,
                                         maximize_y=False)] == ["e", "f", "d", "c", "a"]


def test_fronts_and_notes_on_recorded_rows(recorded_fleet):
    rows = fleet_table(recorded_fleet)
    fronts = {f["name"]: f for f in pareto_fronts(rows)}
    lat = fronts["latency_vs_robust_accuracy"]
    assert lat["considered"] == len(rows) and not lat["excluded"]
    for r in lat["front"]:  # nothing both faster and more robust exists
        assert not any(o["latency_p50_ms"] < r["latency_p50_ms"]
                       and o["robust_accuracy"] > r["robust_accuracy"] for o in rows)
    # only dev-l4 is rented, every other device is bought: each excluded from the other's front
    cloud = fronts["cloud_price_vs_throughput"]
    assert {r["target"] for r in cloud["front"]} == {"dev-l4"}
    assert all("cloud_usd_per_h" in x["reason"] for x in cloud["excluded"])
    assert len(cloud["excluded"]) == len(rows) - 4
    buy = fronts["purchase_price_vs_throughput"]
    assert {x["config"].split("/")[0] for x in buy["excluded"]} == {"dev-l4"}


# --- cost: hand-computed cases --------------------------------------------------------------------

def _row(**kw):
    base = {"runtime": "onnxruntime", "precision": "fp32", "batch_size": 1,
            "throughput_sps": None, "power_mean_w": None, "energy_per_inference_j": None,
            "failure_records": 0, "median_time_to_failure_s": None,
            "median_energy_to_failure_j": None, "mean_time_to_failure_restricted_s": None}
    return {**base, **kw}


def test_unit_conversions():
    assert JOULES_PER_KWH == 3.6e6
    assert joules_to_kwh(3.6e6) == 1.0
    assert usd_for_seconds(3600, 2.55) == pytest.approx(2.55)
    assert usd_for_seconds(1, 0.8048) == pytest.approx(0.8048 / 3600)


def test_cloud_device_cost_l4(tmp_path, monkeypatch):
    """L4 rented at 0.8048 USD/h, 100 inferences/s, 8 h/day for 1 year, 50% utilisation."""
    monkeypatch.chdir(tmp_path)
    write_target(tmp_path, "l4-test", {"fp16": 121}, 300, 72, cloud=0.8048)
    w = Workload(inferences_per_s=100, hours_per_day=8, years=1, electricity_usd_per_kwh=0.2,
                 utilisation=0.5)
    c = tco("l4-test", _row(throughput_sps=400.0, power_mean_w=72.0,
                            energy_per_inference_j=0.18, failure_records=20,
                            median_time_to_failure_s=360.0, median_energy_to_failure_j=7200.0,
                            median_time_share_to_failure_s=90.0,
                            median_energy_share_to_failure_j=1800.0,
                            mean_time_share_to_failure_restricted_s=120.0), w, train_time_s=600.0,
            n_train_samples=50)
    assert c["pricing"] == "cloud"
    assert c["service_h"] == 2920  # 8 x 365 x 1
    assert c["devices_needed"] == 1  # 100 / (400 x 0.5) = 0.5 -> 1
    assert c["capital_usd"] == pytest.approx(0.8048 * 2920)  # 2350.016: per hour of service
    # 0.18 J x 1.0512e9 inferences = 52.56 kWh (not 72 W x 2920 h = 210.24 kWh)
    assert c["energy_kwh"] == pytest.approx(0.18 * 100 * 2920 * 3600 / 3.6e6)
    assert c["energy_usd"] == 0.0  # electricity is in the hourly price
    assert c["total_usd"] == pytest.approx(2350.016)
    inferences = 100 * 2920 * 3600  # 1.0512e9
    assert c["usd_per_million_inferences"] == pytest.approx(2350.016 / inferences * 1e6)
    assert c["kwh_per_million_inferences"] == pytest.approx(0.18 * 1e6 / 3.6e6)
    # attacker: a 90 s share of an L4 at 0.8048 USD/h is 0.02012 USD; the same share in J
    assert c["attacker_s_to_failure"] == 90.0
    assert c["attacker_usd_to_failure"] == pytest.approx(0.02012)
    assert c["attacker_j_to_failure"] == 1800.0
    assert c["attacker_kwh_to_failure"] == pytest.approx(1800 / 3.6e6)
    assert c["attacker_energy_usd_to_failure"] == pytest.approx(1800 / 3.6e6 * 0.2)
    # 600 s over 50 training samples is 12 s per sample, against 120 s per attacked sample
    assert c["trash_score"] == pytest.approx(600 / 50 / 120)
    assert c["cheaper_to_break_than_build"] is False


def test_seconds_times_usd_per_hour_is_divided_by_3600(tmp_path, monkeypatch):
    """Regression (deckard's defect): seconds x USD/hour must be divided by 3600."""
    monkeypatch.chdir(tmp_path)
    write_target(tmp_path, "v100", {"fp32": 15.7}, 900, 250, cloud=2.55)
    side = attacker_side("v100", _row(failure_records=10, median_time_share_to_failure_s=7200.0),
                         Workload())
    assert side["attacker_usd_to_failure"] == pytest.approx(5.10)  # 2 h x 2.55 USD/h
    assert side["attacker_usd_to_failure"] != pytest.approx(7200.0 * 2.55)


def test_purchased_device_needing_several_devices(tmp_path, monkeypatch):
    """Orin NX bought at 599 USD: 1000 inferences/s at 300 samples/s each, 80% utilisation."""
    monkeypatch.chdir(tmp_path)
    write_target(tmp_path, "nx-test", {"int8": 78}, 102, 40, purchase=599)
    w = Workload(inferences_per_s=1000, hours_per_day=24, years=3, electricity_usd_per_kwh=0.2,
                 utilisation=0.8)
    c = tco("nx-test", _row(throughput_sps=300.0, power_mean_w=25.0,
                            energy_per_inference_j=0.05, failure_records=20,
                            median_time_share_to_failure_s=30.0), w)
    assert c["pricing"] == "purchase"
    assert c["devices_needed"] == 5  # 1000 / (300 x 0.8) = 4.17 -> 5
    assert c["capital_usd"] == 599 * 5
    assert c["service_h"] == 24 * 365 * 3  # 26280
    # energy per inference x inferences (not 25 W x 5 devices x 26280 h = 3285 kWh)
    kwh = 0.05 * 1000 * 26280 * 3600 / 3.6e6  # 1314 kWh
    assert c["energy_kwh"] == pytest.approx(kwh)
    assert c["energy_usd"] == pytest.approx(kwh * 0.2)
    assert c["total_usd"] == pytest.approx(2995 + kwh * 0.2)
    assert c["usd_per_million_inferences"] == pytest.approx(
        (2995 + kwh * 0.2) / (1000 * 26280 * 3600) * 1e6)
    # amortised device time: 599 USD over 26280 h of life, for 30 s
    assert c["attacker_usd_to_failure"] == pytest.approx(599 / (26280 * 3600) * 30)
    assert "amortised" in c["attacker_usd_basis"]
    assert c["trash_score"] is None  # no train time given
    # an exact integer ratio does not round up: 100 / (250 x 0.4) = 1 device
    w2 = Workload(inferences_per_s=100, utilisation=0.4)
    assert tco("nx-test", _row(throughput_sps=250.0), w2)["devices_needed"] == 1


def test_energy_from_joules_per_inference_when_no_power(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    write_target(tmp_path, "nano-test", {"fp16": 0.472}, 25.6, 10, purchase=99)
    w = Workload(inferences_per_s=10, hours_per_day=10, years=1, electricity_usd_per_kwh=0.3,
                 utilisation=1.0)
    c = tco("nano-test", _row(throughput_sps=50.0, energy_per_inference_j=0.036), w)
    inferences = 10 * 3650 * 3600  # 131,400,000
    assert c["energy_kwh"] == pytest.approx(0.036 * inferences / 3.6e6)  # 1.314 kWh
    assert c["kwh_per_million_inferences"] == pytest.approx(0.01)  # 0.036 J x 1e6 / 3.6e6
    assert c["energy_usd"] == pytest.approx(1.314 * 0.3)
    assert "energy_per_inference_j" in c["energy_basis"]
    # no sensor at all: energy unknown, said so, total not made up
    c = tco("nano-test", _row(throughput_sps=50.0), w)
    assert c["energy_kwh"] is None and c["total_usd"] is None
    assert any("no power" in n for n in c["notes"])


def test_workload_is_validated():
    with pytest.raises(EdgerobError, match="utilisation"):
        Workload(utilisation=0)
    with pytest.raises(EdgerobError, match="hours_per_day"):
        Workload(hours_per_day=25)


def test_kaplan_meier_restricted_mean_by_hand():
    assert restricted_mean([1, 2, 3, 4], [1, 1, 1, 1]) == pytest.approx(2.5)  # 1+.75+.5+.25
    # two survive to the budget at 5: 1 + 0.75 + 0.5 x 3
    assert restricted_mean([1, 2, 5, 5], [1, 1, 0, 0]) == pytest.approx(3.25)
    t, s = km_curve([1, 2, 5, 5], [1, 1, 0, 0])
    assert t.tolist() == [0, 1, 2] and s.tolist() == [1, 0.75, 0.5]


# --- pre-purchase prediction ----------------------------------------------------------------------

def test_candidate_without_results_predicted_from_its_spec_sheet(recorded_fleet, tmp_path):
    write_target(tmp_path, "cand-inside", {"fp32": 3.0, "int8": 25.0}, 90, 20, purchase=400)
    preds = predict_candidate(recorded_fleet, "cand-inside")
    assert {(p["precision"], p["batch_size"]) for p in preds} == {
        ("fp32", 1), ("fp32", 8), ("int8", 1), ("int8", 8)}
    spec = dict(peak_tops={"fp32": 3.0, "int8": 25.0}, bw=90, tdp=20)
    for p in preds:
        assert p["n_targets"] == 5 and p["truth"] is None and p["truth_in_interval"] is None
        assert p["method"].startswith("spec") and "no results for any workload" in p["why"]
        truth, energy = _law(spec, p["precision"], p["batch_size"], 1.0)
        assert p["latency_p50_ms_lo"] <= truth <= p["latency_p50_ms_hi"]
        assert p["latency_p50_ms"] == pytest.approx(truth, rel=0.15)
        assert p["energy_per_inference_j"] == pytest.approx(energy, rel=0.3)
        assert p["latency_p50_ms"] == pytest.approx(p["batch_size"] * 1e3 / p["throughput_sps"])
        assert p["median_time_to_failure_s"] == pytest.approx(
            p["median_queries_to_failure"] * p["latency_p50_ms"] / 1e3)


def test_measured_candidate_is_shown_beside_never_fitted(recorded_fleet):
    # dev-c's own rows are hidden per workload: the prediction leans on its other workloads and
    # the other devices, and its true value is reported next to it
    preds = predict_candidate(recorded_fleet, "dev-c")
    for p in preds:
        assert p["truth"] == pytest.approx(p["throughput_sps"], rel=0.1)
        assert p["truth_in_interval"] is True and p["method"] in WARM_METHODS
    [p] = [p for p in preds if p["workload"] == "m int8 b8"]
    m = [m for m in recorded_fleet.measurements()
         if m["target"] == "dev-c" and m["input_set"] == "clean" and m["precision"] == "int8"
         and m["batch_size"] == 8][0]
    assert p["truth"] == pytest.approx(m["throughput_sps"])
    # a different own value would not move the prediction
    with recorded_fleet.engine.begin() as c:
        c.execute(measurements.update().where(measurements.c.id == m["id"]).values(
            throughput_sps=m["throughput_sps"] * 100))
    [q] = [q for q in predict_candidate(recorded_fleet, "dev-c") if q["workload"] == "m int8 b8"]
    assert q["throughput_sps"] == p["throughput_sps"] and q["truth_in_interval"] is False


def test_candidate_without_usable_spec_sheet_is_a_user_error(recorded_fleet, tmp_path):
    write_target(tmp_path, "cand-no-int8", {"fp32": 3.0}, 90, 20)
    with pytest.raises(EdgerobError, match="no workload .* can be predicted for cand-no-int8"):
        predict_candidate(recorded_fleet, "cand-no-int8")


def test_too_few_targets_for_prediction(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    two = {k: DEVICES[k] for k in ("dev-a", "dev-b")}
    store = recorded_store(tmp_path, two)
    write_target(tmp_path, "cand", {"int8": 3.0}, 90, 20)
    with pytest.raises(EdgerobError, match="at least 3 devices with spec sheets"):
        predict_candidate(store, "cand")
    # held out: each device still keeps its other workloads, so it is predicted (warm)
    assert [r["cells"] for r in held_out(store)] == [4, 4]


def test_each_recorded_device_held_out(recorded_fleet):
    rows = {r["target"]: r for r in held_out(recorded_fleet)}
    assert set(rows) == set(DEVICES)
    for r in rows.values():
        assert r["cells"] == 4 and set(r["methods"]) <= set(WARM_METHODS)
        assert len(r["details"]) == 8  # throughput and energy per inference
    assert rows["dev-b"]["median_abs_rel_error"] < 0.15
    assert rows["dev-c"]["inside_interval_fraction"] == 1.0


# --- the report -----------------------------------------------------------------------------------

def _assert_self_contained(text: str) -> None:
    assert not re.search(r"""(?:src|href)\s*=\s*["']?\s*(?:https?:)?//""", text, re.I)
    assert "http://" not in text and "https://" not in text
    assert "<link" not in text and "@import" not in text and "<script" not in text


def test_report_html_recorded(recorded_fleet, tmp_path):
    path = write_report(recorded_fleet, tmp_path / "out" / "report.html", train_time_s=5.0)
    text = path.read_text()
    _assert_self_contained(text)
    assert "dev-l4" in text and "pgd@0.1" in text and "Pareto fronts" in text
    assert "held-out target" in text and "TRASH" in text
    # AFT models from edgerob.analysis.survival where it can run; a one-line reason where it cannot
    assert ("Accelerated failure time models" in text) or ("AFT models not included" in text)
    assert text.count("<details><summary><code>") == len(recorded_fleet.measurements())


CHROMIUM = shutil.which("chromium") or ("/usr/bin/chromium"
                                        if Path("/usr/bin/chromium").exists() else None)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium): the report is not rendered in a browser")
def test_report_renders_in_headless_chromium(recorded_fleet, tmp_path):
    path = write_report(recorded_fleet, tmp_path / "report.html", train_time_s=5.0, aft=False)
    profile = tmp_path / "chromium-profile"
    shot = tmp_path / "shot.png"
    proc = subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--no-first-run", f"--user-data-dir={profile}", f"--screenshot={shot}",
         "--window-size=1280,2000", path.resolve().as_uri()],
        capture_output=True, text=True, timeout=60)
    assert shot.is_file(), proc.stderr[-2000:]
    assert shot.stat().st_size > 10_000


def test_cli_compare_cost_report(recorded_fleet, tmp_path):
    """The thin CLI layer over the library, on the recorded fleet."""
    import json

    from typer.testing import CliRunner

    from edgerob.cli import app

    url = f"sqlite:///{tmp_path}/recorded.db"
    runner = CliRunner()
    r = runner.invoke(app, ["compare", "--store", url, "--out", str(tmp_path / "plots")])
    assert r.exit_code == 0, r.output
    assert "dev-l4" in r.output and "Pareto front" in r.output
    assert list((tmp_path / "plots").glob("*.svg"))
    r = runner.invoke(app, ["compare", "--store", url, "--json"])
    rows = json.loads(r.stdout)["rows"]
    assert len(rows) == 5 * 2 * 2
    r = runner.invoke(app, ["cost", "--store", url, "--json", "--inferences-per-s", "500"])
    costs = json.loads(r.stdout)["rows"]
    assert {c["target"] for c in costs} == set(DEVICES)
    assert all(c["devices_needed"] >= 1 for c in costs if c["devices_needed"] is not None)
    r = runner.invoke(app, ["cost", "--store", url, "--candidate", "dev-c",
                            "--targets", "dev-a,dev-b,dev-d,dev-l4"])
    assert r.exit_code == 0, r.output
    assert "method: " in r.output and "dev-c's own result, never fitted" in " ".join(
        r.output.split())
    r = runner.invoke(app, ["cost", "--store", url, "--utilisation", "0"])
    assert r.exit_code == 2 and "utilisation" in r.output
    r = runner.invoke(app, ["report", "--store", url, "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "r.html").read_text()
    assert "dev-l4" in html and "https://" not in html
