"""Rows of forced runs (measured with --force-target on a machine that is not the target they
name) are shown, marked, but never feed a decision unless asked: cost, predictions, the report's
cost and prediction sections and survival fits leave them out by default and say how many
(issue 20). Resuming a run never changes whether it is forced.

RECORDED DATA, written straight into a store (no device ran): three verified targets whose p50
latency follows a known law of their specs, and forced runs whose numbers are wildly off (50x
slower, 100x more queries), so any use of them moves every answer checked here.
"""

from __future__ import annotations

import json
import math

import pytest
import yaml
from typer.testing import CliRunner

from edgerob.analysis.compare import fleet_table, forced_note
from edgerob.analysis.cost import Workload, cost_table
from edgerob.analysis.predict import held_out, predict_candidate
from edgerob.analysis.report import render_report
from edgerob.cli import app
from edgerob.device.failures import km_median
from edgerob.errors import EdgerobError
from edgerob.store import Store

SPECS = {"dev-a": (1.0, 25.6), "dev-b": (2.0, 68.0), "dev-c": (4.0, 102.0),
         "dev-d": (8.0, 204.0), "cand": (3.0, 90.0)}
WILD = 50.0  # forced rows: this many times slower
FACTS = {"facts": {"cpu": "recorded"}, "mismatch": "recorded: not this device"}


def write_target(folder, name: str) -> None:
    tops, bw = SPECS[name]
    spec = {"name": name, "description": f"test target {name}", "runtime": "onnxruntime",
            "runtime_options": {"providers": ["CPUExecutionProvider"]}, "profiler": "none",
            "specs": {"peak_tops": {"int8": tops}, "memory_bandwidth_gbs": bw, "tdp_w": 10 * tops},
            "price": {"purchase_usd": 100 * tops}}
    (folder / "targets").mkdir(exist_ok=True)
    (folder / "targets" / f"{name}.yaml").write_text(yaml.safe_dump(spec))


def add_run(store, target: str, forced: bool) -> str:
    """One run of `target`: a clean fp32 b1 row on the law (WILD times slower when forced) and
    ten failure records (their queries and times 100x when forced)."""
    tops, bw = SPECS[target]
    p50 = 40 * tops ** -0.6 * bw ** -0.2 * (WILD if forced else 1.0)
    run, _ = store.begin_run(target=target, profile="recorded", model="m", model_sha256="x",
                             runtime="onnxruntime", host="h", versions={},
                             forced_target=forced, target_facts=FACTS if forced else None)
    store.add_measurement({
        "run_id": run, "target": target, "runtime": "onnxruntime", "precision": "fp32",
        "batch_size": 1, "input_set": "clean", "latency_p50_ms": p50, "latency_std_ms": 0.0,
        "latencies_ms": [p50 * f for f in (0.99, 1.0, 1.01)], "throughput_sps": 1e3 / p50,
        "energy_per_inference_j": 1e-3 * tops * (WILD if forced else 1.0)})
    scale = 100 if forced else 1
    store.add_failures([{
        "run_id": run, "target": target, "precision": "fp32", "batch_size": 1, "attack": "square",
        "eps": 0.1, "sample_id": j, "queries": (5 + 3 * j) * scale, "budget_queries": 10_000,
        "duration_s": (5 + 3 * j) * scale * p50 / 1e3,
        "duration_share_s": (5 + 3 * j) * scale * p50 / 1e3, "energy_j": None,
        "event": int(j < 8)} for j in range(10)])
    store.finish_run(run)
    return run


def make_store(folder, forced: bool) -> Store:
    """dev-a, dev-b and dev-c verified; with `forced`, then a forced run of dev-b (same cells,
    later, so it would replace the verified ones) and of dev-d (it has no other)."""
    for name in SPECS:
        write_target(folder, name)
    store = Store(f"sqlite:///{folder}/{'forced' if forced else 'clean'}.db")
    for name in ("dev-a", "dev-b", "dev-c"):
        add_run(store, name, forced=False)
    if forced:
        add_run(store, "dev-b", forced=True)
        add_run(store, "dev-d", forced=True)
    return store


@pytest.fixture
def stores(tmp_path, monkeypatch):
    """(store with forced runs, the same store without them)."""
    monkeypatch.chdir(tmp_path)
    return make_store(tmp_path, forced=True), make_store(tmp_path, forced=False)


NOTE = ("left out 2 measurement row(s) and 20 failure record(s) of forced runs (measured with "
        "--force-target on a machine that is not the target they name); --include-forced uses "
        "them")


def test_tables_show_forced_rows_marked(stores):
    store, _ = stores
    marks = {r["target"]: r["forced"] for r in fleet_table(store)}
    assert marks == {"dev-a": False, "dev-b": True, "dev-c": False, "dev-d": True}
    # the decision rows: dev-b's verified row stands in for its forced one, dev-d is absent
    rows = {r["target"]: r for r in fleet_table(store, include_forced=False)}
    assert set(rows) == {"dev-a", "dev-b", "dev-c"} and not any(r["forced"] for r in rows.values())
    assert rows["dev-b"]["latency_p50_ms"] == pytest.approx(40 * 2.0 ** -0.6 * 68.0 ** -0.2)
    assert fleet_table(store, targets="dev-d", include_forced=False) == []  # not an error


def test_forced_note_counts_what_is_left_out(stores):
    store, clean = stores
    assert forced_note(store) == NOTE
    assert forced_note(store, targets="dev-d") == NOTE.replace("2 measurement", "1 measurement"
                                                               ).replace("20 failure", "10 failure")
    assert forced_note(store, targets="dev-a") is None and forced_note(clean) is None


def test_cost_leaves_forced_rows_out_unless_asked(stores):
    store, _ = stores
    w = Workload(inferences_per_s=500, utilisation=1.0)
    verified = [m for m in store.measurements() if m["target"] == "dev-b"][0]  # added first
    recs = [f for f in store.failures() if f["run_id"] == verified["run_id"]]

    def dev_b(costs):
        [c] = [c for c in costs if c["target"] == "dev-b"]
        return c

    # rows built with the forced ones in: a row marked forced is not priced
    assert {c["target"] for c in cost_table(fleet_table(store), w)} == {"dev-a", "dev-c"}
    c = dev_b(cost_table(fleet_table(store, include_forced=False), w))
    assert c["devices_needed"] == math.ceil(500 / verified["throughput_sps"])
    assert c["attacker_s_to_failure"] == km_median([f["duration_share_s"] for f in recs],
                                                   [f["event"] for f in recs])
    forced = cost_table(fleet_table(store), w, include_forced=True)
    assert dev_b(forced)["devices_needed"] > c["devices_needed"]
    assert dev_b(forced)["attacker_s_to_failure"] > 50 * c["attacker_s_to_failure"]
    assert "dev-d" in {c["target"] for c in forced}


def _same(a: list[dict], b: list[dict], keys) -> bool:
    return [[p[k] for k in keys] for p in a] == [[p[k] for k in keys] for p in b]


PREDICTED = ("throughput_sps", "latency_p50_ms", "energy_per_inference_j", "method",
             "median_queries_to_failure", "training_targets")


def test_prediction_leaves_forced_rows_out_unless_asked(stores):
    store, clean = stores
    preds = predict_candidate(store, "cand")
    assert _same(preds, predict_candidate(clean, "cand"), PREDICTED)
    assert preds[0]["training_targets"] == ["dev-a", "dev-b", "dev-c"]
    wide = predict_candidate(store, "cand", include_forced=True)
    assert wide[0]["training_targets"] == ["dev-a", "dev-b", "dev-c", "dev-d"]
    assert wide[0]["latency_p50_ms"] > 2 * preds[0]["latency_p50_ms"]
    assert wide[0]["median_queries_to_failure"] > 10 * preds[0]["median_queries_to_failure"]
    # each device held out: forced rows neither train nor serve as the truth
    loo = held_out(store)
    assert _same(loo, held_out(clean), ("target", "cells", "median_abs_rel_error"))
    assert [r["target"] for r in held_out(store, include_forced=True)] == [
        "dev-a", "dev-b", "dev-c", "dev-d"]


def _section(html: str, name: str, after: str) -> str:
    return html.split(f"<h2 id='{name}'>")[1].split(f"<h2 id='{after}'>")[0]


def test_report_cost_and_prediction_leave_forced_rows_out(stores):
    store, _ = stores
    html = render_report(store, aft=False)
    assert "dev-d (forced" in _section(html, "own", "pareto")  # shown, marked
    for name, after in (("cost", "prediction"), ("prediction", "survival")):
        part = _section(html, name, after)
        assert "dev-d" not in part and "left out 2 measurement row(s)" in part, name
        assert "dev-b" in part, name  # its verified row stands in for its forced one
    html = render_report(store, aft=False, include_forced=True)
    for name, after in (("cost", "prediction"), ("prediction", "survival")):
        part = _section(html, name, after)
        assert "dev-d" in part and "left out" not in part, name


def test_survival_fit_leaves_forced_records_out_unless_asked(stores):
    sv = pytest.importorskip("edgerob.analysis.survival")  # pandas, lifelines: host extra
    store, _ = stores
    df = sv.load_failures(store)
    assert len(df) == 30 and set(df["target"]) == {"dev-a", "dev-b", "dev-c"}
    assert df["queries"].max() < 100
    assert any("left out 20 failure record(s) of forced runs" in n for n in df.attrs["notes"])
    df = sv.load_failures(store, include_forced=True)
    assert len(df) == 50 and not any("forced" in n for n in df.attrs["notes"])
    with pytest.raises(EdgerobError, match="other than forced ones.*--include-forced"):
        sv.load_failures(store, targets=["dev-d"])


def test_cli_cost_report_and_fit_take_include_forced(stores, tmp_path):
    pytest.importorskip("lifelines")
    store, _ = stores
    runner = CliRunner()
    r = runner.invoke(app, ["cost", "--store", store.url, "--json"])
    assert r.exit_code == 0, r.output
    assert {c["target"] for c in json.loads(r.stdout)["rows"]} == {"dev-a", "dev-b", "dev-c"}
    assert NOTE in " ".join(r.stderr.split())
    r = runner.invoke(app, ["cost", "--store", store.url, "--json", "--include-forced"])
    assert "dev-d" in {c["target"] for c in json.loads(r.stdout)["rows"]}
    assert "left out" not in r.stderr
    r = runner.invoke(app, ["cost", "--store", store.url, "--candidate", "cand", "--json"])
    assert r.exit_code == 0, r.output
    preds = json.loads(r.stdout)["predictions"]
    assert preds[0]["training_targets"] == ["dev-a", "dev-b", "dev-c"]
    assert NOTE in " ".join(r.stderr.split())
    r = runner.invoke(app, ["cost", "--store", store.url, "--targets", "dev-d"])
    assert r.exit_code == 2 and "other than forced ones (--include-forced" in r.output
    r = runner.invoke(app, ["report", "--store", store.url, "--out", str(tmp_path / "r.html")])
    assert r.exit_code == 0 and NOTE in " ".join(r.stderr.split()), r.output
    for flags in ([], ["--include-forced"]):
        r = runner.invoke(app, ["fit", "--store", store.url, "--families", "exponential",
                                "--covariates", "target", "--json", "--out",
                                str(tmp_path / "fit"), *flags])
        assert r.exit_code == 0, r.output
        coefs = {c["covariate"] for c in json.loads(r.stdout)["coefficients"]}
        assert ("target[dev-d]" in coefs) == bool(flags)  # dev-d has forced records only
        assert ("left out 20 failure record(s)" in " ".join(r.stderr.split())) == (not flags)


# --- resuming keeps a run's forced flag --------------------------------------------------------

def begin(store, forced, facts=None, **kw):
    return store.begin_run(target="jetson-orin-nano-8gb", profile="quick", model="m",
                           model_sha256="abc", runtime="onnxruntime", host="h", versions={},
                           forced_target=forced, target_facts=facts, **kw)


def flags(store) -> dict:
    return {r["run_id"]: (r["forced_target"], r["target_facts"]) for r in store.runs()}


def test_a_forced_run_stays_forced_and_takes_no_verified_cells(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    forced, _ = begin(store, True, FACTS)
    before = flags(store)[forced]
    # the same sweep on a machine that now verifies: a run of its own, the forced one untouched
    verified, resumed = begin(store, False, {"facts": {"cpu": "now it matches"}})
    assert verified != forced and not resumed
    assert flags(store)[forced] == before == (True, json.dumps(FACTS))
    assert flags(store)[verified][0] is False
    # forced again: resumes the forced run, its flag and facts as they were
    assert begin(store, True, {"facts": {}, "mismatch": "other"}) == (forced, True)
    assert flags(store)[forced] == before


def test_a_verified_run_never_takes_forced_cells(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    verified, _ = begin(store, False)
    forced, resumed = begin(store, True, FACTS)
    assert forced != verified and not resumed
    assert flags(store)[verified] == (False, None) and flags(store)[forced][0] is True
    # verified again: its own run, though the forced one is later
    assert begin(store, False) == (verified, True)
    assert flags(store)[verified] == (False, None)


def test_a_run_stored_before_verification_is_resumed_as_it_was(tmp_path):
    store = Store(f"sqlite:///{tmp_path}/s.db")
    legacy, _ = begin(store, None)  # NULL: stored before verification existed
    assert begin(store, False, {"facts": {}}) == (legacy, True)
    assert flags(store)[legacy] == (None, None)  # not rewritten as verified
    assert begin(store, True, FACTS)[0] != legacy
