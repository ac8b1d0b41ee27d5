"""edgerob.host.ntk: the empirical NTK against closed forms, its scores, determinism, and the CLI."""

import json
import math

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

from edgerob.errors import EdgerobError
from edgerob.host.ntk import (arch_scores, empirical_ntk, rank_correlation, score_keys, scores,
                         validate)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """2 shared cores: one intra-op thread keeps these tests quick and steady."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.mark.parametrize("method", ["vmap", "loop"])
@pytest.mark.parametrize("output", ["sum", "mean"])
def test_linear_ntk_is_gram_matrix(method, output):
    torch.manual_seed(0)
    x = torch.randn(7, 5, dtype=torch.float64)
    model = nn.Linear(5, 1, bias=False).double()
    theta = empirical_ntk(model, x, output=output, method=method)
    assert theta.dtype == torch.float64 and theta.shape == (7, 7)
    torch.testing.assert_close(theta, x @ x.T, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("method", ["vmap", "loop"])
def test_linear_ntk_with_bias_adds_one(method):
    torch.manual_seed(1)
    x = torch.randn(6, 4, dtype=torch.float64)
    theta = empirical_ntk(nn.Linear(4, 1).double(), x, method=method)
    torch.testing.assert_close(theta, x @ x.T + 1, rtol=1e-12, atol=1e-12)


def test_multi_output_linear_sum_and_mean():
    """f = W x with K outputs: d(sum_k w_k.x)/dW stacks x K times, so the summed output gives
    K * X X^T; the per-logit average gives X X^T."""
    torch.manual_seed(2)
    x = torch.randn(5, 3, dtype=torch.float64)
    model = nn.Linear(3, 4, bias=False).double()
    torch.testing.assert_close(empirical_ntk(model, x, output="sum"), 4 * x @ x.T)
    torch.testing.assert_close(empirical_ntk(model, x, output="mean"), x @ x.T)


def test_float32_model_is_computed_in_float64_and_left_alone():
    torch.manual_seed(3)
    model = nn.Linear(4, 1, bias=False)
    model.train()
    x = torch.randn(5, 4)
    theta = empirical_ntk(model, x)
    assert theta.dtype == torch.float64
    assert next(model.parameters()).dtype == torch.float32 and model.training
    torch.testing.assert_close(theta, x.double() @ x.double().T)


def test_scores_of_known_psd_matrix():
    s = scores(torch.diag(torch.tensor([1.0, 2.0, 4.0])))
    assert s["min_eig"] == pytest.approx(1) and s["max_eig"] == pytest.approx(4)
    assert s["cond"] == pytest.approx(4) and s["trace"] == pytest.approx(7)
    assert s["logdet"] == pytest.approx(math.log(8))
    # a rotation of it has the same spectrum
    q, _ = torch.linalg.qr(torch.randn(3, 3, dtype=torch.float64))
    s2 = scores(q @ torch.diag(torch.tensor([1.0, 2.0, 4.0], dtype=torch.float64)) @ q.T)
    assert s2["cond"] == pytest.approx(4) and s2["trace"] == pytest.approx(7)


def test_scores_singular_and_bad_input():
    s = scores(torch.tensor([[1.0, 1.0], [1.0, 1.0]]))
    assert s["min_eig"] == pytest.approx(0, abs=1e-12)
    assert s["cond"] == math.inf or s["cond"] > 1e12
    with pytest.raises(EdgerobError):
        scores(torch.ones(2, 3))


def test_resnet_vmap_matches_loop():
    from edgerob.host.models import ResNet

    torch.manual_seed(0)
    model = ResNet(8, 2, 1, 10, 16, [0.5], [0.25]).eval()
    x = torch.rand(4, 1, 16, 16)
    a = empirical_ntk(model, x, method="vmap")
    b = empirical_ntk(model, x, method="loop")
    torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    assert torch.linalg.eigvalsh(a).min() > -1e-8  # PSD


@pytest.fixture(scope="module")
def two_archs():
    return arch_scores([(8, 2), (14, 2)], batch=8, seed=0, eps=0.1, attack_steps=2)


def test_arch_scores_finite_with_timings(two_archs):
    assert [r["arch"] for r in two_archs] == ["resnet8", "resnet14"]
    for r in two_archs:
        for kind in ("clean", "adv"):
            assert set(r[kind]) == {"min_eig", "max_eig", "cond", "trace", "logdet"}
            assert all(math.isfinite(v) for v in r[kind].values()), r[kind]
            assert r[kind]["max_eig"] >= r[kind]["min_eig"] > 0
        assert r["clean_s"] > 0 and r["adv_s"] > 0 and r["batch"] == 8
        assert r["clean"] != r["adv"]  # the attack moved the inputs


def test_arch_scores_deterministic_for_a_seed(two_archs):
    again = arch_scores([(8, 2), (14, 2)], batch=8, seed=0, eps=0.1, attack_steps=2)
    for a, b in zip(two_archs, again):
        assert a["clean"] == b["clean"] and a["adv"] == b["adv"]
    other = arch_scores([(8, 2)], batch=8, seed=1, eps=0.1, attack_steps=2)
    assert other[0]["clean"] != two_archs[0]["clean"]


def test_arch_scores_errors():
    with pytest.raises(EdgerobError):
        arch_scores([(9, 2)], batch=4)
    with pytest.raises(EdgerobError):
        arch_scores([(8, 2)], batch=1)


def test_rank_correlation_perfect_and_bootstrap():
    r = rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], n_boot=200, seed=0)
    assert r["spearman"] == pytest.approx(1) and r["kendall"] == pytest.approx(1)
    assert r["spearman_lo"] == pytest.approx(1) and r["spearman_hi"] == pytest.approx(1)
    assert r == rank_correlation([1, 2, 3, 4, 5], [10, 20, 30, 40, 50], n_boot=200, seed=0)
    neg = rank_correlation([1, 2, 3, math.inf], [4, 3, 2, 1], n_boot=50)
    assert neg["spearman"] == pytest.approx(-1)
    assert rank_correlation([1, 1, 1], [1, 2, 3])["spearman"] is None


def test_validate_tiny():
    """One epoch, three tiny archs: the structure of the report (not whether the proxy works)."""
    res = validate([(8, 2), (14, 2), (8, 3)], epochs=1, robust_eval_samples=16, batch=8,
                   attack_steps=1, n_boot=50)
    assert set(res["correlations"]) == set(score_keys())
    c = res["correlations"]["adv_min_eig"]["adv_robust"]
    assert c["n"] == 3 and "spearman_lo" in c
    for r in res["archs"]:
        assert 0 <= r["adv_robust"] <= 1 and 0 <= r["std_clean"] <= 1
    assert res["compute"]["train_wall_s"] > 0 and res["compute"]["score_s"] > 0


def test_cli_arch_score_json_and_table():
    from edgerob.cli import app

    runner = CliRunner()
    r = runner.invoke(app, ["arch-score", "--depths", "8", "--widths", "2,3", "--batch", "6",
                            "--attack-steps", "1", "--json"])
    assert r.exit_code == 0, r.output
    rows = json.loads(r.stdout)["archs"]
    assert [(x["depth"], x["width"]) for x in rows] == [(8, 2), (8, 3)]
    r = runner.invoke(app, ["arch-score", "--depths", "8", "--widths", "2", "--batch", "6",
                            "--attack-steps", "1"])
    assert r.exit_code == 0, r.output
    assert "min eig" in r.stdout and "resnet8" in r.stdout
    r = runner.invoke(app, ["arch-score", "--depths", "9", "--widths", "2"])
    assert r.exit_code == 2
