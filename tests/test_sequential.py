"""Anytime-valid sequential estimates: coverage under peeking, the stopping rule, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edgerob.host.workload import prepare_workload
from edgerob.errors import EdgerobError
from edgerob.device.sequential import BettingCS, StopRule, km_median_ci, planned_samples, run_sequential

stats = pytest.importorskip("scipy.stats")


def clopper_pearson(k, n, confidence):
    a = 1 - confidence
    lo = np.where(k > 0, stats.beta.ppf(a / 2, k, n - k + 1), 0.0)
    hi = np.where(k < n, stats.beta.ppf(1 - a / 2, k + 1, n - k), 1.0)
    return lo, hi


def test_cs_covers_under_peeking_and_naive_clopper_pearson_does_not():
    """300 seeded Bernoulli(0.5) sequences, looked at every 10 samples up to 300: the share whose
    interval holds the truth at every look (= coverage under the worst stopping rule). The CS
    keeps >= 95% - 2%; Clopper-Pearson recomputed at each look loses far more than that (its
    miss rate over 30 looks is several times alpha: a gap no seed closes)."""
    rng = np.random.default_rng(17)
    reps, n, p = 300, 300, 0.5
    x = (rng.random((reps, n)) < p).astype(float)
    cs = BettingCS(0.95, reps=reps, grid=200)
    cs_ok = np.ones(reps, dtype=bool)
    cp_ok = np.ones(reps, dtype=bool)
    for k in range(0, n, 10):
        cs.update(x[:, k:k + 10])
        cs_ok &= (cs.lo <= p) & (p <= cs.hi)
        lo, hi = clopper_pearson(x[:, :k + 10].sum(1), k + 10, 0.95)
        cp_ok &= (lo <= p) & (p <= hi)
    assert cs_ok.mean() >= 0.93
    assert cp_ok.mean() <= 0.85
    # and the CS is a real interval, not [0, 1]: it narrowed around the mean
    assert np.all(cs.hi - cs.lo < 0.35)
    assert np.mean((cs.lo <= x.mean(1)) & (x.mean(1) <= cs.hi)) >= 0.95


def test_without_replacement_cs_covers_the_finite_mean_and_closes_at_the_end():
    rng = np.random.default_rng(3)
    pop = np.r_[np.ones(30), np.zeros(70)]
    reps = 200
    x = np.stack([rng.permutation(pop) for _ in range(reps)])
    cs = BettingCS(0.9, population=100, reps=reps, grid=200)
    ok = np.ones(reps, dtype=bool)
    widths = []
    for k in range(0, 100, 5):
        cs.update(x[:, k:k + 5])
        ok &= (cs.lo <= 0.3) & (0.3 <= cs.hi)
        widths.append(float(np.mean(cs.hi - cs.lo)))
    assert ok.mean() >= 0.88
    assert widths == sorted(widths, reverse=True) and widths[0] > 0.5
    assert np.allclose(cs.hi[ok], 0.3) and np.allclose(cs.lo[ok], 0.3)  # every item seen: exact
    with pytest.raises(EdgerobError, match="more outcomes"):
        cs.update(np.zeros((reps, 1)))


def test_single_sequence_shrinks_and_contains_the_mean():
    x = (np.random.default_rng(0).random(2000) < 0.8).astype(float)
    cs = BettingCS(0.95)
    widths = []
    for k in range(0, 2000, 100):
        cs.update(x[k:k + 100])
        widths.append(cs.hi - cs.lo)
        assert cs.lo <= x[:k + 100].mean() <= cs.hi
    assert all(a >= b for a, b in zip(widths, widths[1:])) and widths[-1] < 0.1


def test_stops_at_the_first_batch_whose_half_width_is_small_enough():
    pop = (np.random.default_rng(1).random(400) < 0.7).astype(float)
    calls = []

    def attack(idx):
        calls.append(len(idx))
        return pop[idx]

    rule = StopRule(half_width=0.1, confidence=0.95)
    r = run_sequential(len(pop), attack, rule, batch_size=16, seed=5)
    assert r.stopped_by == "half_width" and r.n_attacked < len(pop)
    assert r.ci_high - r.ci_low <= 2 * rule.half_width
    assert r.ci_low <= pop.mean() <= r.ci_high
    assert np.array_equal(r.order, np.random.default_rng(5).permutation(400)[:r.n_attacked])
    assert np.array_equal(r.outcomes, pop[r.order]) and r.estimate == pop[r.order].mean()
    assert sum(calls) == r.n_attacked and calls[:-1] == [16] * (len(calls) - 1)
    # one batch earlier the interval was still too wide: it stopped at the first chance
    replay = BettingCS(0.95, population=400, plan=planned_samples(rule))
    replay.update(r.outcomes[:r.n_attacked - calls[-1]])
    assert replay.half_width > rule.half_width
    assert r.saved_s == pytest.approx(r.wall_s / r.n_attacked * (400 - r.n_attacked))


def test_respects_max_samples_and_uses_everything_when_it_must():
    pop = np.tile([0.0, 1.0], 100)
    r = run_sequential(200, lambda i: pop[i], StopRule(0.01, 0.95, max_samples=50), 16)
    assert r.n_attacked == 50 and r.stopped_by == "max_samples"
    r = run_sequential(200, lambda i: pop[i], StopRule(0.001), 64)
    assert r.n_attacked == 200 and r.stopped_by == "exhausted"
    assert r.ci_low == r.ci_high == 0.5


@pytest.mark.parametrize("hw, conf, cap", [(0, 0.95, None), (0.6, 0.95, None), (-0.1, 0.9, 5),
                                           (0.1, 1.0, None), (0.1, 0.0, None), (0.1, 0.9, 0),
                                           (0.1, 0.9, 2.5)])
def test_bad_rules_are_user_errors(hw, conf, cap):
    with pytest.raises(EdgerobError):
        StopRule(hw, conf, cap)


def test_km_median_and_brookmeyer_crowley_interval():
    # 10 samples failing at 1..10: S drops by 0.1 per step, the median is 5
    t = np.arange(1, 11, dtype=float)
    med, lo, hi = km_median_ci(t, np.ones(10), 0.95)
    assert med == 5.0
    # Greenwood: se(S(t_k)) = sqrt(S(1-S)/10) with S = 1 - k/10; z = 1.96
    z = 1.959964
    expect_lo = next(k for k in t if (1 - k / 10) - z * math.sqrt((1 - k / 10) * k / 100) <= 0.5)
    expect_hi = next(k for k in t if (1 - k / 10) + z * math.sqrt((1 - k / 10) * k / 100) < 0.5)
    assert (lo, hi) == (expect_lo, expect_hi) == (3.0, 8.0)
    # most censored: no median, no upper bound
    assert km_median_ci(t, np.r_[1, np.zeros(9)])[0] is None


def test_km_median_ci_is_the_exact_median_on_ties():
    """22 samples: 7 fail at t=1, 4 at t=2, then 5 at t=3 and 6 censored at t=4. S(2) = 15/22 x
    11/15 = 1/2 exactly, so the median is 2 (lifelines' convention: the smallest t with
    S(t) <= 1/2); the float product is a hair above 1/2 and would give 3."""
    from edgerob.device.failures import km_median

    t = np.r_[[1.0] * 7, [2.0] * 4, [3.0] * 5, [4.0] * 6]
    e = np.r_[np.ones(16), np.zeros(6)]
    assert (1 - 7 / 22) * (1 - 4 / 15) > 0.5  # the trap: IEEE doubles round this product up
    med, lo, hi = km_median_ci(t, e, 0.95)
    assert med == 2.0 == km_median(t, e)
    # Brookmeyer-Crowley around it: Greenwood se at t=1 and t=2 (S = 15/22, 1/2), z = 1.96
    z = 1.959964
    s1, s2 = 15 / 22, 0.5
    se1 = s1 * math.sqrt(7 / (22 * 15))
    se2 = s2 * math.sqrt(7 / (22 * 15) + 4 / (15 * 11))
    assert s1 - z * se1 <= 0.5 and s2 + z * se2 >= 0.5  # lower bound t=1; t=2 not above
    assert (lo, hi) == (1.0, 3.0) and lo <= med <= hi


# --- where the stopping rule enters: CLI, profiles, craft, the sweep, the store -----------------

@pytest.mark.parametrize("args, match", [
    (["--half-width", "0.6"], "half-width must be in (0, 0.5]"),
    (["--half-width", "0"], "half-width must be in (0, 0.5]"),
    (["--half-width", "0.1", "--confidence", "1"], "confidence must be in (0, 1)"),
    (["--half-width", "0.1", "--max-samples", "0"], "max_samples must be an integer >= 1"),
    (["--max-samples", "10"], "--max-samples needs --half-width"),
])
def test_attack_cli_rejects_bad_rules_with_exit_2(tmp_path, args, match):
    from typer.testing import CliRunner

    from edgerob.cli import app

    r = CliRunner().invoke(app, ["attack", str(tmp_path / "no-model"), *args])
    assert r.exit_code == 2 and "Traceback" not in r.output, r.output
    assert match in r.output and not (tmp_path / "no-model").exists()


@pytest.mark.parametrize("stop, field", [
    ("{half_width: 0.7}", "stop.half_width"), ("{half_width: 0.1, confidence: 1.5}",
                                               "stop.confidence"),
    ("{half_width: 0.1, max_samples: 0}", "stop.max_samples"), ("{confidence: 0.9}",
                                                                "stop.half_width")])
def test_profile_stop_is_validated_naming_file_and_field(tmp_path, stop, field):
    from edgerob.catalog.profiles import load_profile

    for entry, where in (("attacks:\n  - {attack: pgd, eps: [0.1], stop: %s}", "attacks.0."),
                         ("query_attack: {eps: [0.1], budget_queries: 10, stop: %s}",
                          "query_attack.")):
        path = tmp_path / "p.yaml"
        path.write_text("precisions: [fp32]\nbatch_sizes: [1]\n" + entry % stop + "\n")
        with pytest.raises(EdgerobError) as e:
            load_profile(str(path))
        assert str(path) in str(e.value) and f"'{where}{field}'" in str(e.value)


def test_store_round_trips_the_attack_cell_columns(tmp_path):
    from edgerob.store import Store

    db = Store(f"sqlite:///{tmp_path}/s.db")
    run_id, _ = db.begin_run(target="cpu", profile="p", model="m", model_sha256="x",
                             runtime="onnxruntime", host="h", versions={})
    row = {"run_id": run_id, "target": "cpu", "precision": "fp32", "batch_size": 4,
           "attack": "square", "eps": 0.1, "n_available": 200, "n_clean_wrong": 3,
           "n_attacked": 61, "n_sampled": 64, "stop_half_width": 0.1, "stop_confidence": 0.9,
           "stop_max_samples": 100, "stopped_by": "half_width", "failure_rate": 0.25,
           "failure_ci_low": 0.17, "failure_ci_high": 0.36, "ci_method": "hedged-betting-cs",
           "km_median_s": None, "km_median_low_s": 0.5, "km_median_high_s": None,
           "attack_wall_s": 2.0, "projected_saved_s": 4.25}
    assert db.add_attack_cell(row)
    assert not db.add_attack_cell(row)  # one row per cell
    got = db.attack_cells(run_id=run_id)
    assert len(got) == 1 and {k: got[0][k] for k in row} == row
    assert db.attack_cells(attack="pgd") == []


def test_craft_with_a_rule_attacks_a_random_part_and_stores_the_interval(tiny_model, tmp_path):
    torch = pytest.importorskip("torch")
    from edgerob.host.attacks import InputSet, craft, evaluate
    from edgerob.host.data import load_dataset
    from edgerob.host.models import load_checkpoint

    torch.set_num_threads(1)
    model, _ = load_checkpoint(tiny_model)
    d = load_dataset("digits")
    x, y, ids = d.x_test[:200], d.y_test[:200], np.arange(200) + 1000
    rule = StopRule(half_width=0.15, confidence=0.9, max_samples=150)
    s = craft(model, x, y, ids, "fgsm", 0.1, stop=rule, stop_batch=16, seed=4)
    seq = s.params["sequential"]
    n = len(s)
    assert n == seq["n_attacked"] <= 150 and n % 16 == 0 or seq["stopped_by"] == "max_samples"
    order = np.random.default_rng(4).permutation(200)[:n]
    assert s.sample_ids.tolist() == (ids[order]).tolist() and s.labels.tolist() == y[order].tolist()
    # each batch is the plain attack on those samples (batch k seeded with seed + k)
    first = evaluate(model, x[order[:16]], y[order[:16]], "fgsm", 0.1, seed=4)
    assert np.array_equal(s.images[:16], first.adversarial)
    assert seq["ci_low"] <= s.robust_accuracy <= seq["ci_high"]
    assert seq["ci_high"] - seq["ci_low"] <= 0.3 or seq["stopped_by"] == "max_samples"
    assert seq["rule"] == {"half_width": 0.15, "confidence": 0.9, "max_samples": 150}
    back = InputSet.load(s.save(tmp_path / "f.npz"))
    assert back.params["sequential"] == seq and back.robust_accuracy == s.robust_accuracy


def test_sweep_stops_the_query_attack_and_records_the_cell(tiny_model, tmp_path):
    from conftest import FAST
    from edgerob.store import Store
    from edgerob.catalog.profiles import Profile
    from edgerob.device.sweep import run_profile
    from edgerob.catalog.targets import load_target

    prof = Profile.model_validate({
        "name": "seq", "precisions": ["fp32"], "batch_sizes": [8], "samples": 120,
        "timing": FAST, "query_attack": {
            "eps": [0.3], "budget_queries": 20, "samples": 120, "seed": 2,
            "stop": {"half_width": 0.2, "confidence": 0.9, "max_samples": 100}}})
    store = Store(f"sqlite:///{tmp_path}/s.db")
    res = run_profile(load_target("cpu"), prof, prepare_workload(prof, tiny_model), store)
    (cell,) = store.attack_cells(run_id=res.run_id)
    n = cell["n_sampled"]
    assert 0 < n <= 100 and n % 8 == 0 or n == 100
    assert cell["n_available"] == 120 and cell["n_attacked"] + cell["n_clean_wrong"] == n
    assert len(res.failures) == n  # one record per sample drawn, the others not attacked
    drawn = np.random.default_rng(2).permutation(120)[:n]
    assert sorted(f["sample_id"] for f in res.failures) == sorted(drawn.tolist())
    failed = np.mean([f["event"] for f in res.failures])
    assert cell["failure_rate"] == pytest.approx(failed)
    assert cell["failure_ci_low"] <= failed <= cell["failure_ci_high"]
    assert (cell["stopped_by"] == "max_samples"
            or cell["failure_ci_high"] - cell["failure_ci_low"] <= 0.4)
    assert cell["stop_half_width"] == 0.2 and cell["ci_method"] == "hedged-betting-cs"
    assert cell["projected_saved_s"] > 0 and cell["attack_wall_s"] > 0
    # compare's fleet table and `edgerob results` show the samples used and the interval
    from typer.testing import CliRunner

    from edgerob.cli import app
    from edgerob.analysis.compare import fleet_table

    (row,) = [r for r in fleet_table(store) if r["failure_records"]]
    s = row["failures_by_attack"]["square@0.3"]
    assert (s["samples_used"], s["samples_available"]) == (n, 120)
    assert (s["failure_ci_low"], s["failure_ci_high"]) == (cell["failure_ci_low"],
                                                           cell["failure_ci_high"])
    shown = CliRunner().invoke(app, ["results", "--store", store.url])
    assert shown.exit_code == 0 and f"{n}/120" in shown.output, shown.output
