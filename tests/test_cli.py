"""The CLI end to end (a real subprocess, as a user runs it) and its error contract."""

import os
import shutil
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgerob.cli import app

FAST_PROFILE = """\
name: fast
precisions: [fp32, fp16, int8]
batch_sizes: [1, 8, 32]
timing: {warmup_s: 0.02, min_duration_s: 0.1, min_iterations: 5}
attacks:
  - {attack: pgd, eps: [0.1]}
query_attack: {attack: square, eps: [0.15], budget_queries: 100, samples: 16, batch_sizes: [1, 8]}
"""


def edgerob(*args, cwd, env=None):
    return subprocess.run([sys.executable, "-m", "edgerob.cli", *args], cwd=cwd, text=True,
                          capture_output=True, env={**os.environ, **(env or {})}, timeout=600)


def test_profile_end_to_end_with_default_model(tmp_path):
    """No model given: train the default model, export three precisions, sweep, store, print."""
    (tmp_path / "fast.yaml").write_text(FAST_PROFILE)
    r = edgerob("profile", "--target", "cpu", "--profile", "fast.yaml", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "trained default model" in r.stderr
    for word in ("fp32", "fp16", "int8", "p50 ms", "samples/s"):
        assert word in r.stdout
    assert "24 cells measured" in r.stderr and "power and energy are empty" in r.stderr
    assert "adversarial vs clean" in r.stdout and "failure records" in r.stdout

    db = sqlite3.connect(tmp_path / "edgerob.db")
    rows = db.execute("SELECT precision, batch_size, latency_p50_ms, latency_p99_ms, "
                      "throughput_sps, accuracy, power_mean_w FROM measurements "
                      "WHERE input_set = 'clean'").fetchall()
    assert {(p, b) for p, b, *_ in rows} == {(p, b) for p in ("fp32", "fp16", "int8")
                                             for b in (1, 8, 32)}
    adv = db.execute("SELECT precision, batch_size, accuracy, latency_vs_clean_ratio, "
                     "latency_vs_clean_p FROM measurements WHERE input_set = 'pgd@0.1'").fetchall()
    assert {(p, b) for p, b, *_ in adv} == {(p, b) for p, b, *_ in rows}
    clean_acc = {(p, b): a for p, b, _, _, _, a, _ in rows}
    for p, b, acc, ratio, pval in adv:
        assert acc < clean_acc[(p, b)] and ratio > 0 and 0 <= pval <= 1
    fails = db.execute("SELECT precision, batch_size, event, queries, budget_queries, "
                       "duration_s FROM failures WHERE attack = 'square' AND eps = 0.15").fetchall()
    # the samples an artifact misclassifies clean are counted per cell, not attacked
    cells = db.execute("SELECT n_available, n_clean_wrong, n_attacked FROM attack_cells "
                       "WHERE attack = 'square' AND eps = 0.15").fetchall()
    assert len(cells) == 3 * 2 and all(a == 16 and w + n == 16 for a, w, n in cells)
    assert len(fails) == sum(n for *_, n in cells)
    assert {f[2] for f in fails} == {0, 1}  # both failures and censored samples
    for _, _, event, q, budget, dur in fails:
        assert 1 <= q <= budget == 100 and dur > 0 and (event or q == budget)
    for _, _, p50, p99, tput, acc, power in rows:
        assert 0 < p50 <= p99 and tput > 0 and acc > 0.9 and power is None
    acc = {p: a for p, b, _, _, _, a, _ in rows if b == 1}
    assert abs(acc["fp16"] - acc["fp32"]) <= 0.01 and abs(acc["int8"] - acc["fp32"]) <= 0.01
    assert db.execute("SELECT status FROM runs").fetchall() == [("done",)]

    again = edgerob("profile", "--target", "cpu", "--profile", "fast.yaml", cwd=tmp_path)
    assert again.returncode == 0 and "reusing default model" in again.stderr
    assert "0 cells measured, 24 already stored" in again.stderr
    assert db.execute("SELECT COUNT(*) FROM measurements").fetchone() == (18,)
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (len(fails),)

    shown = edgerob("results", "--csv", "out.csv", cwd=tmp_path)
    assert shown.returncode == 0 and "int8" in shown.stdout
    assert len((tmp_path / "out.csv").read_text().splitlines()) == 19


runner = CliRunner()


def fails_cleanly(args, match):
    r = runner.invoke(app, args)
    assert r.exit_code == 2, (r.exit_code, r.output)
    assert "Traceback" not in r.output
    assert match in r.output
    return r


def test_unknown_target_and_profile(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails_cleanly(["profile", "--target", "jetson-mars"], "unknown target 'jetson-mars'")
    fails_cleanly(["profile", "--profile", "nope"], "unknown profile 'nope'")
    assert not (tmp_path / "edgerob.db").exists()


def test_malformed_and_invalid_yaml(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bad.yaml").write_text("precisions: [fp32\nbatch_sizes: 1")
    fails_cleanly(["profile", "--profile", "bad.yaml"], "bad.yaml")
    (tmp_path / "wrong.yaml").write_text("precisions: [fp32]\nbatch_sizes: [-1]\n")
    fails_cleanly(["profile", "--profile", "wrong.yaml"], "batch_sizes")


def test_unusable_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    fails_cleanly(["profile", "--store", "nosuchdb://x"], "cannot open store")
    fails_cleanly(["results", "--store", f"sqlite:///{tmp_path}/empty.db"], "no measurements")


def test_missing_and_corrupt_model(tmp_path, tiny_model, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/x.db"
    fails_cleanly(["profile", "--model", str(tmp_path / "none"), "--store", store],
                  "not a model folder")
    broken = tmp_path / "broken"
    shutil.copytree(tiny_model, broken, ignore=shutil.ignore_patterns("artifacts"))
    with open(broken / "model.pt", "r+b") as f:
        f.seek(200)
        f.write(b"\0" * 64)
    fails_cleanly(["profile", "--model", str(broken), "--store", store], "sha256")
    fails_cleanly(["export", str(broken)], "sha256")
    assert not (broken / "artifacts").exists()


def test_corrupt_onnx_artifact(tmp_path, tiny_model, tiny_artifacts, monkeypatch):
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "m"
    shutil.copytree(tiny_model, model)
    (model / "artifacts" / "fp32.onnx").write_bytes(b"not onnx")
    # a damaged artifact is rebuilt by export, not silently used
    r = runner.invoke(app, ["export", str(model), "--precisions", "fp32"])
    assert r.exit_code == 0, r.output
    from edgerob.device.artifacts import load_artifact
    assert load_artifact(model / "artifacts" / "fp32.onnx").precision == "fp32"


def test_train_command(tmp_path):
    r = runner.invoke(app, ["train", "-o", str(tmp_path / "m"), "--epochs", "1", "--width", "4"])
    assert r.exit_code == 0, r.output
    assert "after 1 epochs" in r.output
    import json
    card = json.loads((tmp_path / "m" / "model.json").read_text())
    assert card["epochs_run"] == 1 and card["train_time_s"] > 0 and card["accuracy"] > 0
    fails_cleanly(["train", "-o", str(tmp_path / "x"), "--arch", "resnet9"], "resnet9")
    fails_cleanly(["train", "-o", str(tmp_path / "x"), "--dataset", "mnist"], "--data-root")


def test_attack_command(tmp_path, tiny_model):
    from edgerob.host.attacks import InputSet

    r = runner.invoke(app, ["attack", str(tiny_model), "--attack", "fgsm,pgd", "--eps", "0,0.1",
                            "--samples", "40", "-o", str(tmp_path)])
    assert r.exit_code == 0, r.output
    assert "robust acc" in r.output
    sets = {p.stem: InputSet.load(p) for p in tmp_path.glob("*.npz")}
    assert set(sets) == {"fgsm@0", "fgsm@0.1", "pgd@0", "pgd@0.1"}
    for name, s in sets.items():
        assert len(s) == 40 and s.sample_ids.tolist() == list(range(40))
        if s.eps == 0:
            assert s.robust_accuracy == s.clean_accuracy
        else:
            assert s.robust_accuracy < s.clean_accuracy
            assert s.crafting_time_s > 0


@pytest.mark.parametrize("args,match", [
    (["--attack", "magic"], "magic"),
    (["--eps=-0.1"], "eps"),
    (["--eps", "1.5"], "eps"),
    (["--eps", "abc"], "abc"),
])
def test_attack_bad_input(tiny_model, tmp_path, args, match):
    fails_cleanly(["attack", str(tiny_model), "--samples", "8", "-o", str(tmp_path), *args],
                  match)
    assert not list(tmp_path.glob("*.npz"))


def test_version_option_and_every_runs_versions():
    from importlib.metadata import version

    from edgerob.device.sweep import _versions

    res = CliRunner().invoke(app, ["--version"])
    assert res.exit_code == 0 and res.stdout == f"edgerob {version('edgerob')}\n"
    assert _versions("onnxruntime")["edgerob"] == version("edgerob")
