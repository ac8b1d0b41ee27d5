"""Bundles end to end: write on the host, run as a device would (no torch), ingest, and SSH."""

import json
import os
import sqlite3
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from edgerob.fleet.bundle import ingest, load_bundle, verify, write_bundle
from edgerob.cli import app
from edgerob.errors import EdgerobError
from edgerob.store import Store
from edgerob.catalog.profiles import Profile
from edgerob.host.workload import prepare_workload
from edgerob.catalog.targets import load_target

from conftest import FAST, GUARD

PROFILE = {"name": "b", "precisions": ["fp32", "int8"], "batch_sizes": [1, 4], "samples": 24,
           "timing": {"warmup_s": 0.01, "min_duration_s": 0.05, "min_iterations": 5},
           "attacks": [{"attack": "fgsm", "eps": [0.1]}],
           "query_attack": {"eps": [0.2], "budget_queries": 20, "samples": 4,
                            "batch_sizes": [4]}}


def device_run(*args, cwd):
    """`edgerob ...` in a fresh interpreter where host-side libraries cannot be imported."""
    code = GUARD + "from edgerob.cli import app\napp()\n"
    return subprocess.run([sys.executable, "-c", code, *args], cwd=cwd, capture_output=True,
                          text=True, timeout=300)


@pytest.fixture(scope="module")
def bundle(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("b") / "bundle"
    profile = Profile.model_validate(PROFILE)
    return write_bundle(load_target("cpu"), profile, prepare_workload(profile, tiny_model), out)


def test_the_guard_blocks_host_libraries(tmp_path):
    r = subprocess.run([sys.executable, "-c", GUARD + "import torch"], capture_output=True,
                       text=True)
    assert r.returncode != 0 and "device-side guard: torch" in r.stderr
    r = subprocess.run([sys.executable, "-c", GUARD + "import numpy, onnxruntime, sqlalchemy"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


def test_bundle_contents_and_manifest(bundle):
    manifest = verify(bundle)
    names = set(manifest["files"])
    assert {"target.yaml", "profile.yaml", "model/model.json", "model/model.pt",
            "artifacts/fp32.onnx", "artifacts/int8.json", "inputs/clean.npz",
            "inputs/fgsm@0.1.npz"} <= names
    target, profile, work = load_bundle(bundle)
    assert target.name == "cpu" and profile.name == "b"
    assert set(work.artifacts) == {"fp32", "int8"} and set(work.inputs) == {"clean", "fgsm@0.1"}
    assert work.artifacts["fp32"].checkpoint_dir() == (bundle / "model").resolve()


def test_bundle_runs_without_host_libraries_and_ingests(bundle, tmp_path):
    r = device_run("profile", "--bundle", str(bundle), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    db = sqlite3.connect(bundle / "results/edgerob.db")
    assert db.execute("SELECT COUNT(*) FROM measurements").fetchone() == (8,)
    assert db.execute("SELECT COUNT(*) FROM failures").fetchone() == (4 * 2,)
    again = device_run("profile", "--bundle", str(bundle), cwd=tmp_path)
    assert again.returncode == 0 and "0 cells measured, 10 already stored" in again.stderr

    store = Store(f"sqlite:///{tmp_path}/host.db")
    counts = ingest(bundle, store)
    assert counts == {"runs": 1, "measurements": 8, "failures": 8, "skipped": 0}
    assert ingest(bundle, store) == {"runs": 0, "measurements": 0, "failures": 0, "skipped": 16}
    assert len(store.measurements()) == 8 and len(store.failures()) == 8
    r = CliRunner().invoke(app, ["ingest", str(bundle), "--store", f"sqlite:///{tmp_path}/c.db"])
    assert r.exit_code == 0 and "8 measurements" in r.output


def test_tampered_bundle_is_refused_by_name(bundle, tmp_path):
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(bundle, copy, ignore=shutil.ignore_patterns("results"))
    (copy / "inputs/fgsm@0.1.npz").write_bytes(b"x" + (copy / "inputs/fgsm@0.1.npz").read_bytes())
    with pytest.raises(EdgerobError, match="fgsm@0.1.npz"):
        verify(copy)
    r = device_run("profile", "--bundle", str(copy), cwd=tmp_path)
    assert r.returncode == 2 and "tampered" in r.stderr and "Traceback" not in r.stderr
    assert not (copy / "results").exists()
    (copy / "artifacts/int8.onnx").unlink()
    with pytest.raises(EdgerobError, match="missing"):
        verify(copy)


def test_bundle_cli_refuses_a_non_empty_folder(tiny_model, tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x/file").write_text("")
    r = CliRunner().invoke(app, ["bundle", "-o", str(tmp_path / "x"), "--model", str(tiny_model)])
    assert r.exit_code == 2 and "not empty" in r.output
