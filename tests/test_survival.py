"""Survival models of failure time: records drawn from a known AFT are stored, fitted and the
truth is recovered; the comparison, BIC, predictions, plots, TRASH and messy data."""

from __future__ import annotations

import json
import math

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from edgerob.analysis import survival as sv
from edgerob.analysis.survival import fitting
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.store import Store

# The truth the simulations draw from (sigma 0.5: Weibull shape rho = 2).
TRUTH = {"precision[fp16]": 0.8, "precision[int8]": 0.6, "log2_batch_size": 1.15,
         "target[l4]": 0.3}
N = 2520  # 2 targets x 3 precisions x 3 batch sizes x 140 samples


def store_records(df: pd.DataFrame, url: str, energy_w: float | None = None) -> Store:
    """Write simulated records the way a sweep does: one run per target, one transaction per
    cell."""
    store = Store(url)
    for target, g in df.groupby("target"):
        run_id, _ = store.begin_run(target=target, profile="sim", model="sim-model",
                                    model_sha256="0" * 64, runtime="onnxruntime", host="test",
                                    versions={})
        for _, cell in g.groupby(["precision", "batch_size"]):
            store.add_failures([{
                "run_id": run_id, "target": r.target, "precision": r.precision,
                "batch_size": int(r.batch_size), "attack": r.attack, "eps": float(r.eps),
                "sample_id": int(r.sample_id), "queries": int(r.queries),
                "budget_queries": int(r.budget_queries), "duration_s": float(r.duration_s),
                "energy_j": None if energy_w is None else float(r.duration_s) * energy_w,
                "event": int(r.event)} for r in cell.itertuples()])
        store.finish_run(run_id)
    return store


@pytest.fixture(scope="module")
def weibull_store(tmp_path_factory):
    df = sv.simulate_failures(N, "weibull", sigma=0.5, time_ratios=TRUTH, censored=0.25, seed=11)
    url = f"sqlite:///{tmp_path_factory.mktemp('weibull')}/w.db"
    return store_records(df, url), url


@pytest.fixture(scope="module")
def weibull_fit(weibull_store):
    df = sv.load_failures(weibull_store[0])
    return sv.fit_models(df)


def covers(coefs: pd.DataFrame, truth: dict) -> None:
    assert set(coefs.index) == set(truth)
    for col, ratio in truth.items():
        row = coefs.loc[col]
        assert row.ci_low < ratio < row.ci_high, (col, ratio, row.to_dict())
        assert row.ci_low < row.time_ratio < row.ci_high and 0 <= row.p <= 1


def test_load_failures_reads_the_store(weibull_store):
    df = sv.load_failures(weibull_store[0])
    assert len(df) == N and 0.2 < 1 - df["event"].mean() < 0.3  # ~25% censored
    assert set(df["precision"]) == {"fp32", "fp16", "int8"}
    assert set(df["target"]) == {"jetson-orin-nano-8gb", "l4"}
    assert df["model"].eq("sim-model").all()
    assert np.allclose(df["log2_batch_size"], np.log2(df["batch_size"]))
    assert (df["duration"] == df["duration_s"]).all() and df.attrs["unit"] == "s"


def test_weibull_truth_recovered_and_bic_counts_every_parameter(weibull_fit):
    r = weibull_fit
    assert r.best == "weibull" and set(r.models) == {"weibull", "lognormal", "loglogistic"}
    covers(r.coefficients, TRUTH)
    # reference levels: fp32, and the target with most records (a tie: alphabetical)
    assert r.design.terms["precision"]["reference"] == "fp32"
    assert r.design.terms["target"]["reference"] == "jetson-orin-nano-8gb"
    assert any("attack" in n for n in r.notes) and any("eps is constant" in n for n in r.notes)
    for f in r.models.values():
        # 4 location coefficients + intercept + one ancillary intercept
        assert f.k == len(f.params) == 6
        assert f.bic == pytest.approx(f.k * math.log(f.n) - 2 * f.log_likelihood, rel=1e-12)
        assert f.aic == pytest.approx(2 * f.k - 2 * f.log_likelihood, rel=1e-12)
        # lifelines' BIC_ counts only the 2 parameter names: too few, so it differs
        assert f.lifelines_bic == pytest.approx(2 * math.log(f.n) - 2 * f.log_likelihood)
        assert f.bic - f.lifelines_bic == pytest.approx(4 * math.log(f.n))
        assert 0.7 < f.concordance_train < 0.9 and 0.7 < f.concordance_test < 0.9
        assert 0 <= f.e50 <= 1 and 0 <= f.ici < 0.1 and f.converged
    assert r.n_train + r.n_test == N and 0.2 < r.n_test / N < 0.3
    assert r.models["weibull"].ici < r.models["lognormal"].ici  # the true family calibrates best
    assert r.final.n == N and r.horizon == pytest.approx(np.median(r.data["duration"]))
    # the shape: sigma 0.5 means rho = 2
    assert math.exp(r.final.ancillary["rho_"]) == pytest.approx(2, rel=0.08)
    assert not any("differs from lifelines" in n for n in r.notes)


def test_cli_json_recovers_the_truth(weibull_store, tmp_path):
    _, url = weibull_store
    res = CliRunner().invoke(app, ["fit", "--store", url, "--out", str(tmp_path / "fit"),
                                   "--json"])
    assert res.exit_code == 0, res.output
    doc = json.loads(res.stdout)  # stdout holds the JSON document and nothing else
    assert set(doc) == {"duration", "best", "models", "coefficients"}
    assert doc["duration"] == "time" and doc["best"] == "weibull"
    assert [m["family"] for m in doc["models"]] == ["weibull", "lognormal", "loglogistic"]
    for m in doc["models"]:
        assert set(m) == {"family", "n", "events", "log_likelihood", "aic", "bic",
                          "concordance_train", "concordance_test", "ici", "e50"}
        assert m["bic"] == pytest.approx(6 * math.log(m["n"]) - 2 * m["log_likelihood"])
    best = min(doc["models"], key=lambda m: m["aic"])
    assert best["family"] == doc["best"]
    coefs = {c["covariate"]: c for c in doc["coefficients"]}
    assert set(coefs) == set(TRUTH)
    for col, ratio in TRUTH.items():
        assert coefs[col]["ci_low"] < ratio < coefs[col]["ci_high"]
    assert "eps is constant" in res.stderr
    for name in ("comparison.csv", "coefficients.csv", "km_precision.png", "km_target.svg",
                 "partial_effects.png"):
        assert (tmp_path / "fit" / name).stat().st_size > 0


def test_cli_table_trash_and_errors(weibull_store, tmp_path, monkeypatch):
    _, url = weibull_store
    # a cached model card for the records' model (matched by checkpoint sha256): TRASH score
    monkeypatch.setenv("EDGEROB_CACHE", str(tmp_path / "cache"))
    card = tmp_path / "cache" / "models" / "sim-model-0" / "model.json"
    card.parent.mkdir(parents=True)
    card.write_text(json.dumps({"checkpoint_sha256": "0" * 64, "train_time_s": 10.0,
                                "n_train_samples": 2}))
    res = CliRunner().invoke(app, ["fit", "--store", url, "--out", str(tmp_path / "f"),
                                   "--families", "weibull,lognormal", "--covariates",
                                   "precision,log2_batch_size"])
    assert res.exit_code == 0, res.output
    assert "TRASH score" in res.stdout and "cheaper to break than to build" in res.stdout
    trash = pd.read_csv(tmp_path / "f" / "trash.csv")
    assert set(trash["target"]) == {"jetson-orin-nano-8gb", "l4"}
    assert (trash["train_time_s"] == 10).all()
    assert (trash["train_time_per_sample_s"] == 5).all()
    assert np.allclose(trash["trash"], 5 / trash["expected_time_s"])
    assert trash["cheaper_to_break"].all() and (trash["trash"] > 1).all()
    # a card written before the sample count was recorded: not estimable, not a guess
    card.write_text(json.dumps({"checkpoint_sha256": "0" * 64, "train_time_s": 10.0}))
    res = CliRunner().invoke(app, ["fit", "--store", url, "--out", str(tmp_path / "g"),
                                   "--families", "weibull", "--covariates", "precision"])
    assert res.exit_code == 0, res.output
    assert "not estimable" in res.stdout and "lacks n_train_samples" in res.stderr
    old = pd.read_csv(tmp_path / "g" / "trash.csv")
    assert old["trash"].isna().all() and old["n_train_samples"].isna().all()
    # without target the durations mix two Weibulls: either family may win, one is marked
    assert ("weibull *" in res.stdout) != ("lognormal *" in res.stdout)
    assert "precision[int8]" in res.stdout
    assert "time ratio" in res.stdout and "reference: precision fp32" in res.stdout
    for args, words in ((["--duration", "energy"], "no energy was measured for these failure "
                         "records (profiler none): fit --duration time"),
                        (["--families", "weibul"], "unknown family 'weibul'"),
                        (["--covariates", "precision,colour"], "unknown covariate 'colour'")):
        res = CliRunner().invoke(app, ["fit", "--store", url, "--out", str(tmp_path / "g"),
                                       *args])
        assert res.exit_code == 2 and words in res.stderr, res.output
        assert "Traceback" not in res.output


def test_lognormal_data_lognormal_wins_on_aic(tmp_path):
    df = sv.simulate_failures(N, "lognormal", sigma=0.6, time_ratios=TRUTH, censored=0.25,
                              seed=5)
    store = store_records(df, f"sqlite:///{tmp_path}/l.db")
    r = sv.fit_models(sv.load_failures(store))
    assert r.best == "lognormal"
    aic = {f: m.aic for f, m in r.models.items()}
    assert aic["lognormal"] < aic["loglogistic"] and aic["lognormal"] < aic["weibull"]
    covers(r.coefficients, TRUTH)
    assert math.exp(r.final.ancillary["sigma_"]) == pytest.approx(0.6, rel=0.08)


def test_closed_forms_match_lifelines():
    """Survival, median, mean and log-likelihood read from a fit equal lifelines' own."""
    import lifelines

    df = sv.simulate_failures(900, "weibull", time_ratios=TRUTH, seed=3)
    des = sv.design(df)
    X, T, E = des.values(df), df["duration"].to_numpy(), df["event"].to_numpy()
    data = pd.DataFrame(X, columns=des.columns).assign(T=T, E=E)
    times = np.quantile(T, [0.1, 0.5, 0.9])
    for fam, cls in (("weibull", lifelines.WeibullAFTFitter),
                     ("lognormal", lifelines.LogNormalAFTFitter),
                     ("loglogistic", lifelines.LogLogisticAFTFitter)):
        ours, _ = fitting._fit_once(fam, X, des.columns, T, E, 1.0, 0.0, None)
        ref = cls().fit(data, "T", "E")
        assert ours.log_likelihood == pytest.approx(ref.log_likelihood_, rel=1e-8)
        assert np.allclose(ours.median(X, des.columns), ref.predict_median(data), rtol=1e-5)
        assert np.allclose(ours.mean(X, des.columns), ref.predict_expectation(data), rtol=1e-5)
        S = ref.predict_survival_function(data.iloc[:50], times=times).to_numpy().T
        assert np.allclose(ours.survival(X[:50], des.columns, times), S, atol=1e-6)
        # scaling durations for convergence changes nothing but is mapped back exactly
        scaled, _ = fitting._fit_once(fam, X, des.columns, T, E, float(np.median(T)), 0.0, None)
        assert scaled.log_likelihood == pytest.approx(ours.log_likelihood, rel=1e-6)
        assert np.allclose(scaled.params, ours.params, atol=2e-4)


def test_exponential_and_generalised_gamma_nest_the_weibull():
    df = sv.simulate_failures(900, "weibull", time_ratios=TRUTH, seed=4)
    r = sv.fit_models(df, families=("weibull", "exponential", "gengamma"), test_fraction=0)
    ll = {f: m.log_likelihood for f, m in r.models.items()}
    assert set(ll) == {"weibull", "exponential", "gengamma"}
    assert ll["exponential"] < ll["weibull"] <= ll["gengamma"] + 1e-6
    assert r.models["exponential"].k == 5 and r.models["gengamma"].k == 7
    gg = r.models["gengamma"]
    assert gg.ancillary["lambda_"] == pytest.approx(1, abs=0.35)  # Weibull: lambda = 1
    # gengamma's closed-form mean agrees with integrating its survival function
    x = r.design.values(df.iloc[:1])
    t = np.geomspace(1e-6, 1e3, 200001)
    integral = np.trapezoid(gg.survival(x, r.design.columns, t)[0], t)
    assert gg.mean(x, r.design.columns)[0] == pytest.approx(integral, rel=1e-3)
    assert r.n_test == 0 and all(m.concordance_test is None for m in r.models.values())


def test_predict_follows_the_time_ratios(weibull_fit):
    r = weibull_fit
    base = {"precision": "fp32", "target": "jetson-orin-nano-8gb", "batch_size": 8}
    p = {prec: sv.predict(r, {**base, "precision": prec}) for prec in ("fp32", "fp16", "int8")}
    for v in p.values():
        assert 0 < v["median"] < v["expected"] < math.inf and v["family"] == "weibull"
    assert p["int8"]["median"] < p["fp16"]["median"] < p["fp32"]["median"]
    tr = r.coefficients["time_ratio"]
    assert p["int8"]["median"] / p["fp32"]["median"] == pytest.approx(tr["precision[int8]"])
    assert p["fp16"]["expected"] / p["fp32"]["expected"] == pytest.approx(tr["precision[fp16]"])
    big = r.predict({**base, "batch_size": 32})
    assert big["median"] / p["fp32"]["median"] == pytest.approx(tr["log2_batch_size"] ** 2)
    l4 = r.predict({**base, "target": "l4"})
    assert l4["median"] / p["fp32"]["median"] == pytest.approx(tr["target[l4]"])
    # left-out categorical keys take the reference level
    assert r.predict({"batch_size": 8})["median"] == pytest.approx(p["fp32"]["median"])
    with pytest.raises(EdgerobError, match="'bf16' is not in the fitted data"):
        r.predict({**base, "precision": "bf16"})
    with pytest.raises(EdgerobError, match="eps was 0.15 for every record"):
        r.predict({**base, "eps": 0.3})
    with pytest.raises(EdgerobError, match="needs batch_size"):
        r.predict({"precision": "int8"})


def test_plots_and_tables_written(weibull_fit, tmp_path):
    trash = weibull_fit.trash(10.0, 100)
    paths = weibull_fit.write(tmp_path / "out", trash)
    names = {p.name for p in paths}
    for stem in ("km_precision", "km_target", "partial_effects"):
        for ext in ("png", "svg"):
            f = tmp_path / "out" / f"{stem}.{ext}"
            assert f"{stem}.{ext}" in names and f.stat().st_size > 1000
    assert (tmp_path / "out" / "km_precision.png").read_bytes()[:4] == b"\x89PNG"
    assert b"<svg" in (tmp_path / "out" / "partial_effects.svg").read_bytes()[:2000]
    table = pd.read_csv(tmp_path / "out" / "comparison.csv")
    assert table["best"].sum() == 1 and table.loc[table["best"], "family"].item() == "weibull"
    assert len(pd.read_csv(tmp_path / "out" / "trash.csv")) == 2


def test_trash_score_flags_models_cheaper_to_break(weibull_fit):
    r = weibull_fit
    expected = r.trash(1.0, 1).set_index("target")["expected_time_s"]
    assert expected["l4"] < expected["jetson-orin-nano-8gb"]  # l4 fails sooner (ratio 0.3)
    per_sample = math.sqrt(expected["l4"] * expected["jetson-orin-nano-8gb"])  # between the two
    t = r.trash({"sim-model": per_sample * 1000}, {"sim-model": 1000}).set_index("target")
    assert t.loc["l4", "train_time_per_sample_s"] == pytest.approx(per_sample)
    assert t.loc["l4", "trash"] == pytest.approx(per_sample / expected["l4"])
    assert t.loc["l4", "trash"] > 1 and t.loc["l4", "cheaper_to_break"]
    assert t.loc["jetson-orin-nano-8gb", "trash"] < 1 and not t.loc["jetson-orin-nano-8gb",
                                                                 "cheaper_to_break"]
    # E[T] per attacked sample: the mean of the fitted per-record expectations, each divided by
    # the record's batch size (the records' durations are batched query times)
    df = r.data[r.data["target"] == "l4"]
    X = r.design.values(df)
    per_record = r.final.mean(X, r.design.columns) / df["batch_size"].to_numpy()
    assert expected["l4"] == pytest.approx(per_record.mean())
    assert r.trash({"other-model": 5.0}, 10).empty  # no train time for these records' model


def test_trash_is_one_definition_in_one_place(weibull_fit):
    """(train s / training samples) / E[T per attacked sample], whichever module asks."""
    from types import SimpleNamespace

    from edgerob.analysis.cost import Workload, attacker_side, trash

    exact = trash(600.0, 50, 4.0)  # 12 s per training sample / 4 s per attacked sample
    assert exact["trash"] == 3.0 and exact["train_time_per_sample_s"] == 12.0
    assert exact["cheaper_to_break"] and exact["note"] is None
    assert trash(600.0, 50, 24.0)["trash"] == 0.5 and not trash(600.0, 50, 24.0)[
        "cheaper_to_break"]
    # the fitted model's E[T] and the fleet's E[T], given the same numbers, score the same
    fit = weibull_fit.trash(600.0, 50).set_index("target")
    device = SimpleNamespace(name="dev", price=SimpleNamespace(cloud_usd_per_h=None,
                                                               purchase_usd=None))
    for target, row in fit.iterrows():
        side = attacker_side(device, {"failure_records": 10, "mean_time_share_to_failure_restricted_s":
                                      row["expected_time_s"]}, Workload(), 600.0, 50)
        assert side["trash_score"] == row["trash"] == pytest.approx(12.0 / row["expected_time_s"])
    # no sample count: not estimable, and said so (not 0, not the old train time / E[T])
    side = attacker_side(device, {"failure_records": 10,
                                  "mean_time_share_to_failure_restricted_s": 4.0}, Workload(), 600.0)
    assert side["trash_score"] is None
    assert any("n_train_samples" in n for n in side["attacker_notes"])
    with pytest.raises(EdgerobError, match="positive integer"):
        trash(600.0, 0, 4.0)


def test_trash_not_estimable_where_the_mean_diverges():
    """A log-logistic fit with shape <= 1 has E[T] = inf: TRASH is not estimable (not 0)."""
    from edgerob.analysis.cost import trash

    df = sv.simulate_failures(540, "loglogistic", sigma=1.6, time_ratios={"precision[int8]": 0.6},
                              censored=0.1, seed=3)
    r = sv.fit_models(df, families=("loglogistic",), covariates=("precision",), test_fraction=0)
    assert math.exp(r.final.ancillary["beta_"]) < 1  # shape below 1: no finite mean
    t = r.trash(100.0, 10, by=("model",))
    assert len(t) == 1 and math.isinf(t["expected_time_s"].item())
    assert math.isnan(t["trash"].item()) and t["cheaper_to_break"].item() is None
    assert "not estimable" in t["note"].item() and "infinite" in t["note"].item()
    assert trash(100.0, 10, math.inf)["trash"] is None


def test_constant_and_collinear_columns_dropped_with_notes():
    df = sv.simulate_failures(900, "weibull", time_ratios=TRUTH, seed=6)
    df["model"] = df["precision"].map({"fp32": "a", "fp16": "b", "int8": "c"})  # aliased
    r = sv.fit_models(df, families=("weibull",), test_fraction=0,
                      covariates=["precision", "target", "tdp_w", "model", "eps",
                                  "log2_batch_size"])
    # tdp_w (catalog: Orin Nano 25 W, L4 72 W) is a linear function of the target dummy
    assert any(n.startswith("tdp_w dropped: collinear with") and "target[l4]" in n
               for n in r.notes)
    assert any(n.startswith("model[") and "collinear" in n for n in r.notes)
    assert any("eps is constant" in n for n in r.notes)
    assert list(r.coefficients.index) == ["precision[fp16]", "precision[int8]", "target[l4]",
                                          "log2_batch_size"]
    X = r.design.values(r.data)
    assert np.linalg.matrix_rank(np.column_stack([np.ones(len(X)), X])) == X.shape[1] + 1
    covers(r.coefficients, TRUTH)


def test_cache_rule(monkeypatch, tmp_path):
    """One rule for edgerob's cache, shared by training, fit and the TensorRT engine cache."""
    from edgerob.files import cache_dir

    expected = {0: tmp_path / "c", 1: tmp_path / "edgerob", 2: Path.home() / ".cache/edgerob"}
    envs = ({"EDGEROB_CACHE": str(tmp_path / "c")}, {"XDG_CACHE_HOME": str(tmp_path)}, {})
    for i, env in enumerate(envs):
        for k in ("EDGEROB_CACHE", "XDG_CACHE_HOME"):
            monkeypatch.delenv(k, raising=False)
        for k, v in env.items():
            monkeypatch.setenv(k, v)
        assert cache_dir() == expected[i]


def test_spec_covariate_needs_catalog_figures():
    df = sv.simulate_failures(200, "weibull", targets=("cpu", "l4"), seed=1)
    with pytest.raises(EdgerobError, match="target 'cpu' has no tdp_w"):
        sv.fit_models(df, covariates=["precision", "tdp_w"])


def test_single_target_dropped_with_note():
    df = sv.simulate_failures(900, "weibull", targets=("cpu",),
                              time_ratios={k: v for k, v in TRUTH.items() if "target" not in k},
                              seed=7)
    r = sv.fit_models(df, families=("weibull", "lognormal"))
    assert "single target (cpu): target covariate dropped" in r.notes
    assert not any(c.startswith("target") for c in r.coefficients.index)
    assert r.predict({"precision": "int8", "batch_size": 1})["median"] > 0
    with pytest.raises(EdgerobError, match="target was cpu for every record"):
        r.predict({"precision": "int8", "batch_size": 1, "target": "l4"})


def test_messy_data_gives_clear_errors(tmp_path):
    df = sv.simulate_failures(300, "weibull", seed=8)
    censored = df.assign(event=0)
    with pytest.raises(EdgerobError, match="all 300 failure records are censored"):
        sv.fit_models(censored)
    few = df.assign(event=0)
    few.loc[few.index[:4], "event"] = 1
    with pytest.raises(EdgerobError, match="too few failures to fit: 4 of 300"):
        sv.fit_models(few)
    few.loc[few.index[:6], "event"] = 1  # 6 failures: enough for 2 parameters, not for 6
    with pytest.raises(EdgerobError, match=r"6 parameters need at least 8"):
        sv.fit_models(few)
    r = sv.fit_models(few, families=("weibull",), covariates=["log2_batch_size"])
    assert r.final.events == 6 and any("held-out split" in n for n in r.notes)
    with pytest.raises(EdgerobError, match="unknown family"):
        sv.fit_models(df, families=("cox",))
    with pytest.raises(EdgerobError, match="no failure records"):
        sv.load_failures(Store(f"sqlite:///{tmp_path}/empty.db"))
    with pytest.raises(EdgerobError, match="unknown duration"):
        sv.load_failures(Store(f"sqlite:///{tmp_path}/empty.db"), "queries")


def test_zero_durations_clipped_with_a_note():
    df = sv.simulate_failures(600, "weibull", seed=9)
    df.loc[df.index[:3], ["duration", "duration_s"]] = 0.0
    r = sv.fit_models(df, families=("weibull",), test_fraction=0)
    assert any(n.startswith("3 records with zero time: clipped") for n in r.notes)
    assert (r.data["duration"] > 0).all()


def test_energy_duration(tmp_path):
    df = sv.simulate_failures(600, "weibull", seed=10)
    store = store_records(df, f"sqlite:///{tmp_path}/e.db", energy_w=15.0)
    e = sv.load_failures(store, "energy")
    assert e.attrs["unit"] == "J" and np.allclose(e["duration"], e["duration_s"] * 15.0)
    r = sv.fit_models(e, families=("weibull",), test_fraction=0)
    t = sv.fit_models(sv.load_failures(store), families=("weibull",), test_fraction=0)
    # energy = 15 W x time: the same time ratios, the intercept shifted by log 15
    assert r.duration == "energy" and r.unit == "J"
    assert np.allclose(r.coefficients["time_ratio"], t.coefficients["time_ratio"], rtol=1e-3)
    assert r.predict({"batch_size": 8})["median"] == pytest.approx(
        15 * t.predict({"batch_size": 8})["median"], rel=1e-3)
    with pytest.raises(EdgerobError, match="TRASH score compares times"):
        r.trash(1.0, 1)


def test_convergence_retry_ladder(monkeypatch):
    """A family that fails on raw durations is refitted on scaled ones, then with a penalizer,
    and says so; one that never converges is left out with a note."""
    df = sv.simulate_failures(600, "weibull", time_ratios=TRUTH, seed=12)
    real = fitting._fit_once

    def flaky(family, X, columns, T, E, scale, penalizer, warm):
        if family == "weibull" and scale == 1.0:
            raise RuntimeError("simulated: did not converge")
        if family == "lognormal" and penalizer == 0:
            raise RuntimeError("simulated: did not converge")
        if family == "loglogistic":
            raise RuntimeError("simulated: hopeless")
        return real(family, X, columns, T, E, scale, penalizer, warm)

    monkeypatch.setattr(fitting, "_fit_once", flaky)
    r = sv.fit_models(df, test_fraction=0)
    assert any(n.startswith("weibull: did not converge on raw durations") and "median" in n
               for n in r.notes)
    assert any(n.startswith("lognormal: converged only with durations scaled and penalizer")
               for n in r.notes)
    assert any(n.startswith("loglogistic: did not converge") and "left out" in n
               for n in r.notes)
    assert set(r.models) == {"weibull", "lognormal"}
    assert r.models["weibull"].scale == pytest.approx(np.median(df["duration"]))
    assert r.models["lognormal"].penalizer == 0.01 and not r.models["lognormal"].converged
    assert r.models["weibull"].converged and r.best == "weibull"
    covers(r.coefficients, TRUTH)  # scaling does not move the time ratios

    def hopeless(*args):
        raise RuntimeError("simulated: hopeless")

    monkeypatch.setattr(fitting, "_fit_once", hopeless)
    with pytest.raises(EdgerobError, match="no family converged"):
        sv.fit_models(df, test_fraction=0)


def test_calibration_ici_small_when_calibrated_large_when_not():
    rng = np.random.default_rng(0)
    n = 4000
    x = rng.integers(0, 2, n) + rng.random(n)  # many distinct predictions: the spline smoother
    lam = np.exp(0.5 * x)
    T = lam * rng.exponential(size=n)
    C = rng.exponential(3, size=n)
    dur, E = np.minimum(T, C), (T <= C).astype(int)
    t0 = float(np.median(dur))
    true_p = 1 - np.exp(-t0 / lam)
    ici, e50 = sv.calibration(dur, E, true_p, t0)
    assert ici < 0.02 and e50 < 0.02
    bad_ici, _ = sv.calibration(dur, E, np.clip(true_p + 0.15, 0, 0.99), t0)
    assert bad_ici > 0.1
    # few distinct predictions (a categorical design): the linear smoother
    p2 = 1 - np.exp(-t0 / np.exp(0.5 * np.floor(x)))
    ici2, _ = sv.calibration(dur, E, p2, t0)
    assert ici2 is not None and 0 <= ici2 < 0.1
