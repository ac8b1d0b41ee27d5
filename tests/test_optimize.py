"""edgerob optimize: a real small study on digits, the Pareto front, failed and infeasible trials,
resume, heartbeats, and several workers on one PostgreSQL study at once."""

from __future__ import annotations

import re
import time

import pytest
import yaml
from typer.testing import CliRunner

import pg
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.analysis.optimize import (
    IntRange, Space, dominates, is_non_dominated, load_result, load_space, optimize,
    pareto_front, plan_study, resolve_targets,
)
from edgerob.store import Store

TINY = {  # a tiny space for the runner stubs: nothing is trained
    "name": "tiny", "sampler": {"seed": 0, "startup_trials": 2},
    "params": {"depth": [8, 14], "width": {"low": 4, "high": 16, "step": 4},
               "precision": ["fp32", "int8"], "batch_size": [1, 8]},
    "constraints": {"memory_mb": 0.8},
}


def fake_runner(cfg, ctx):
    """Deterministic metrics from the config, and one measurement per trial in the store (so
    the store tells which trials ran, and how often)."""
    run, _ = ctx.store.begin_run(target=ctx.target.name, profile=f"optimize:{ctx.study_name}",
                                 model=f"trial-{ctx.number}", model_sha256=str(ctx.number),
                                 runtime="fake", host="test", versions={}, new=True)
    ctx.store.add_measurement({"run_id": run, "target": ctx.target.name, "runtime": "fake",
                               "precision": cfg["precision"], "batch_size": cfg["batch_size"],
                               "input_set": "clean", "latency_p50_ms": 1.0})
    width = cfg["width"] * (cfg["depth"] / 8)
    return {"robust_accuracy": min(1.0, width / 32), "latency_p50_ms": width * cfg["batch_size"],
            "latency_p99_ms": 1.0, "memory_mb": width / 16, "run_id": run}


def crashing_runner(cfg, ctx):
    if ctx.number == 1:
        raise RuntimeError("boom in trial 1")
    return fake_runner(cfg, ctx)


def _space(tmp_path, **over) -> str:
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump({**TINY, **over}))
    return str(path)


def _feasible(rows):
    return [r for r in rows if r["state"] == "COMPLETE" and r["feasible"]]


# --- the real pipeline ------------------------------------------------------------------------

# A p99 budget no run can miss (over 16 minutes per batch). Whether a real trial meets a real
# latency budget depends on this machine's speed and load (the shipped 2 ms made every trial
# infeasible on a busy machine); what the budget does is tested with a fake runner below.
UNBINDING_P99_MS = 1e6


@pytest.mark.timeout(1800)  # a hang guard, not a speed claim: 8 real trials on a busy 2-core box
def test_cli_optimize_8_trials_on_digits_prints_a_non_dominated_front(tmp_path, monkeypatch):
    """The shipped default space, for real (train, export, craft, profile), on a copy of the cpu
    target that has a cloud price, so the cost objective is in the study too. Two changes keep
    the machine's speed out of the outcome: the p99 budget cannot bind (the memory budget, the
    artifact's size, is kept), and all 8 trials are the seed's random ones, as TPE would pick
    later trials from measured latencies (the fake-runner tests below run TPE trials)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "targets").mkdir()
    cpu = yaml.safe_load(_catalog_file("targets", "cpu").read_text())
    cpu.update(name="cpu-rented", price={"cloud_usd_per_h": 0.1, "purchase_usd": None})
    (tmp_path / "targets" / "cpu-rented.yaml").write_text(yaml.safe_dump(cpu))
    space = yaml.safe_load(_catalog_file("profiles", "space-quick").read_text())
    space["constraints"]["p99_latency_ms"] = UNBINDING_P99_MS
    space["sampler"]["startup_trials"] = 8
    (tmp_path / "space.yaml").write_text(yaml.safe_dump(space))
    storage, store = f"sqlite:///{tmp_path}/study.db", f"sqlite:///{tmp_path}/results.db"
    r = CliRunner().invoke(app, ["optimize", "--trials", "8", "--space",
                                 str(tmp_path / "space.yaml"), "--storage", storage, "--store",
                                 store, "--target", "cpu-rented", "--plot",
                                 str(tmp_path / "front.png")])
    assert r.exit_code == 0, r.output + repr(r.exception)
    assert "Pareto front of study edgerob" in r.output
    assert "energy per inference is not an objective" in r.output  # no sensor here
    assert (tmp_path / "front.png").stat().st_size > 5000

    front, rows, names = load_result(storage, "edgerob")
    assert names == ["robust_accuracy", "latency_p50_ms", "usd_per_million_inferences"]
    assert len(rows) == 8 and front
    directions = ["maximize", "minimize", "minimize"]
    feasible = _feasible(rows)
    assert is_non_dominated(front, feasible, directions)
    # the front is exactly the non-dominated set of the feasible completed trials
    assert sorted(r["number"] for r in front) == sorted(
        feasible[i]["number"] for i in pareto_front(feasible, directions))
    printed = {int(m) for m in re.findall(r"^│\s+(\d+) │", r.output, re.M)}
    assert printed == {t["number"] for t in front}
    results = Store(store)
    for t in rows:
        if t["state"] == "COMPLETE":  # every completed trial is one run in the results store
            ms = results.measurements(t["run_id"])
            assert {m["input_set"] for m in ms} == {"clean", "pgd@0.1"}
            assert ms[0]["latency_p50_ms"] == pytest.approx(t["values"]["latency_p50_ms"])
            assert t["usd_per_million_inferences"] > 0
            assert t["feasible"] == all(v <= 0 for v in t["constraints"].values())
            assert set(t["constraints"]) == {"p99_latency_ms", "memory_mb"}
            # the budget of the space written above, not the shipped one
            assert t["constraints"]["p99_latency_ms"] == pytest.approx(
                t["latency_p99_ms"] - UNBINDING_P99_MS)
        else:
            assert t["state"] == "FAIL" and t["error"]  # e.g. an int8 export that is broken
    assert all(t["feasible"] for t in front)


def _catalog_file(kind, name):
    from edgerob.catalog import find_yaml

    return find_yaml(kind, name)


def test_real_trial_on_postgresql(tmp_path):
    url = pg.database_url()
    res = optimize(1, storage=url, store=url, study_name="real", space=_space(
        tmp_path, budget={"epochs": 1, "samples": 64, "timing": {
            "warmup_s": 0.01, "min_duration_s": 0.05, "min_iterations": 5, "idle_s": 0.05,
            "min_power_samples": 2}},
        robustness={"attack": "pgd", "eps": 0.1, "params": {"steps": 3}},
        params={"depth": [8], "width": [8], "precision": ["fp32"], "batch_size": [8],
                "adversarial": ["fgsm-rs"], "eps": [0.1], "squeeze_bits": [4]}))
    (t,) = res.trials
    assert t["state"] == "COMPLETE", t["error"]
    assert t["params"]["adversarial"] == "fgsm-rs" and t["params"]["squeeze_bits"] == 4
    assert len(Store(url).measurements(t["run_id"])) == 2
    assert res.front and res.front[0]["number"] == 0


# --- failures, resume, heartbeats ---------------------------------------------------------------

def test_a_crashing_trial_is_recorded_as_failed_and_the_study_goes_on(tmp_path):
    seen = []
    res = optimize(4, storage=f"sqlite:///{tmp_path}/s.db", store=f"sqlite:///{tmp_path}/r.db",
                   space=_space(tmp_path), runner=crashing_runner, on_trial=seen.append)
    assert [r["number"] for r in seen] == res.ran == [0, 1, 2, 3]
    states = {r["number"]: r["state"] for r in res.trials}
    assert states == {0: "COMPLETE", 1: "FAIL", 2: "COMPLETE", 3: "COMPLETE"}
    failed = next(r for r in res.trials if r["number"] == 1)
    assert failed["error"] == "RuntimeError: boom in trial 1" and failed["values"] is None
    assert res.counts()["failed"] == 1 and 1 not in {r["number"] for r in res.front}


def test_infeasible_trials_are_kept_marked_and_off_the_front(tmp_path):
    res = optimize(6, storage=f"sqlite:///{tmp_path}/s.db", store=f"sqlite:///{tmp_path}/r.db",
                   space=_space(tmp_path, constraints={"memory_mb": 0.6}), runner=fake_runner)
    infeasible = [r for r in res.trials if r["feasible"] is False]
    assert infeasible, "the space should make some trials too big"
    for r in infeasible:
        assert r["state"] == "COMPLETE" and r["constraints"]["memory_mb"] > 0
    assert all(r["feasible"] for r in res.front)
    assert is_non_dominated(res.front, _feasible(res.trials), res.directions)


def test_a_trial_over_the_p99_budget_is_infeasible_and_off_the_front(tmp_path):
    """The latency budget without timing anything: the runner sets p99 per trial. Trial 0 beats
    every other trial on every objective but is over budget, so only its infeasibility keeps it
    off the front; trial 1 is exactly at the budget, which is allowed."""
    def runner(cfg, ctx):
        m = fake_runner(cfg, ctx)  # robust accuracy <= 0.875, p50 >= 4 ms, p99 1 ms
        if ctx.number == 0:
            m.update(robust_accuracy=1.0, latency_p50_ms=0.01, latency_p99_ms=5.0)
        if ctx.number == 1:
            m.update(latency_p99_ms=2.0)
        return m

    res = optimize(4, storage=f"sqlite:///{tmp_path}/s.db", store=f"sqlite:///{tmp_path}/r.db",
                   space=_space(tmp_path, constraints={"p99_latency_ms": 2.0}), runner=runner)
    rows = {r["number"]: r for r in res.trials}
    assert [rows[n]["state"] for n in range(4)] == ["COMPLETE"] * 4
    assert rows[0]["feasible"] is False and rows[0]["constraints"] == {"p99_latency_ms": 3.0}
    assert rows[1]["feasible"] is True and rows[1]["constraints"] == {"p99_latency_ms": 0.0}
    assert rows[2]["feasible"] and rows[3]["feasible"]
    assert res.counts()["infeasible"] == 1
    everything = list(rows.values())  # without the budget, trial 0 alone would be the front
    assert pareto_front(everything, res.directions) == [0]
    front = sorted(r["number"] for r in res.front)
    feasible = _feasible(res.trials)
    assert front and 0 not in front
    assert front == sorted(feasible[i]["number"] for i in pareto_front(feasible, res.directions))


def test_resume_adds_trials_to_an_existing_study(tmp_path):
    kw = dict(storage=f"sqlite:///{tmp_path}/s.db", store=f"sqlite:///{tmp_path}/r.db",
              space=_space(tmp_path), runner=fake_runner, study_name="s")
    first = optimize(3, **kw)
    with pytest.raises(EdgerobError, match="already exists.*--resume"):
        optimize(1, **kw)
    more = optimize(2, resume=True, **kw)
    assert more.ran == [3, 4] and [r["number"] for r in more.trials] == [0, 1, 2, 3, 4]
    assert [r["params"] for r in more.trials[:3]] == [r["params"] for r in first.trials]
    shown = optimize(0, resume=True, **kw)  # only reads the study
    assert shown.ran == [] and len(shown.trials) == 5
    assert len(Store(kw["store"]).runs()) == 5
    other = _space(tmp_path, constraints={"memory_mb": 0.1})
    with pytest.raises(EdgerobError, match="different space"):
        optimize(1, resume=True, **{**kw, "space": other})


@pytest.mark.filterwarnings("ignore:Heartbeat of storage")
def test_a_dead_workers_trial_is_failed_by_heartbeat_and_retried(tmp_path):
    import optuna

    from edgerob.analysis.optimize import open_storage

    kw = dict(storage=f"sqlite:///{tmp_path}/s.db", store=f"sqlite:///{tmp_path}/r.db",
              space=_space(tmp_path), runner=fake_runner, study_name="hb")
    optimize(0, **kw)
    st = open_storage(kw["storage"], heartbeat_interval=1, grace_period=1)
    study = optuna.load_study(study_name="hb", storage=st)
    dead = study.ask()  # a worker took it, beat once, and died
    st.record_heartbeat(dead._trial_id)
    time.sleep(2.5)
    res = optimize(1, resume=True, heartbeat_interval=1, grace_period=1, **kw)
    rows = {r["number"]: r for r in res.trials}
    assert rows[0]["state"] == "FAIL"
    assert rows[1]["state"] == "COMPLETE" and rows[1]["retry_of"] == 0


def test_cli_errors_exit_2(tmp_path):
    cli = CliRunner()
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: bad\nparams: {depth: [9]}\n")
    r = cli.invoke(app, ["optimize", "--space", str(bad), "--storage",
                         f"sqlite:///{tmp_path}/s.db", "--store", f"sqlite:///{tmp_path}/r.db"])
    assert r.exit_code == 2 and "depth 9" in r.output
    r = cli.invoke(app, ["optimize", "--storage", "nope://x", "--store",
                         f"sqlite:///{tmp_path}/r.db"])
    assert r.exit_code == 2 and "cannot open storage" in r.output
    r = cli.invoke(app, ["optimize", "--target", "jetson-nano", "--storage",
                         f"sqlite:///{tmp_path}/s.db", "--store", f"sqlite:///{tmp_path}/r.db"])
    assert r.exit_code == 2 and "describes another machine" in r.output


# --- several workers on one PostgreSQL study -----------------------------------------------------

WORKERS, EACH = 4, 3


def _worker(url: str, space: str, seed: int, barrier, results) -> None:
    barrier.wait(timeout=120)  # all join the (not yet existing) study at once
    res = optimize(EACH, storage=url, store=url, study_name="fleet", space=space, resume=True,
                   runner=fake_runner, seed=seed)
    results.put(res.ran)


def test_workers_on_one_postgresql_study_run_every_trial_exactly_once(tmp_path):
    url = pg.database_url()
    space = _space(tmp_path)
    ran = pg.run_processes(_worker, lambda i: (url, space, i), WORKERS, timeout=240)
    numbers = sorted(n for r in ran for n in r)
    assert numbers == list(range(WORKERS * EACH))  # each worker's trials, none twice
    front, rows, names = load_result(url, "fleet")
    assert [r["state"] for r in rows] == ["COMPLETE"] * (WORKERS * EACH)
    assert len({r["worker"] for r in rows}) == WORKERS
    runs = Store(url).runs()
    assert sorted(r["model"] for r in runs) == sorted(f"trial-{n}" for n in numbers)
    assert is_non_dominated(front, _feasible(rows), ["maximize", "minimize"])


# --- the space, the plan and the front ---------------------------------------------------------

def test_default_space_loads_and_plans_without_sensor_or_price():
    space = load_space("quick")
    assert space.budget.epochs <= 3 and isinstance(space.params.width, IntRange)
    plan = plan_study(space, resolve_targets("cpu")[0])
    names = plan.names
    assert names[:2] == ["robust_accuracy", "latency_p50_ms"]
    if "energy_per_inference_j" not in names:
        assert any("energy per inference is not an objective" in n for n in plan.notes)
    assert "usd_per_million_inferences" not in names  # cpu has no price
    assert any("no price" in n for n in plan.notes)


def test_training_options_missing_from_train_config_leave_the_search(monkeypatch):
    import edgerob.analysis.optimize as opt

    monkeypatch.setattr(opt, "train_fields", lambda: {"arch", "width", "epochs", "seed"})
    plan = plan_study(load_space("quick"), resolve_targets("cpu")[0])
    assert plan.params.adversarial is None and plan.params.eps is None
    assert plan.params.squeeze_bits is None
    assert any("adversarial training" in n and "left out" in n for n in plan.notes)


@pytest.mark.parametrize("params, message", [
    ({"depth": [10]}, "depth 10"),
    ({"width": {"low": 8, "high": 4}}, "must not exceed"),
    ({"adversarial": ["pgd"]}, "give eps"),
    ({"eps": [0, 0.1], "adversarial": ["pgd"]}, "eps values"),
    ({"colour": ["red"]}, "colour"),
])
def test_space_validation(tmp_path, params, message):
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "params": params}))
    with pytest.raises(EdgerobError, match=message):
        load_space(str(path))


def test_dominance_and_front():
    d = ["maximize", "minimize"]
    assert dominates([0.9, 1.0], [0.8, 1.0], d) and not dominates([0.9, 1.0], [0.9, 1.0], d)
    pts = [[0.9, 5.0], [0.5, 1.0], [0.4, 2.0], [0.9, 5.0], [0.1, 0.5]]
    assert pareto_front(pts, d) == [0, 1, 3, 4]
    assert is_non_dominated([pts[i] for i in (0, 1, 4)], pts, d)
    assert not is_non_dominated([pts[2]], pts, d)
    assert Space(name="x").params.depth == [8]
