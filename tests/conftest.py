"""Shared fixtures: a small trained model and its artifacts, built once per test session."""

from __future__ import annotations

import textwrap

import pytest

from edgerob.device.bench import TimingRules

# Short windows: tests check behaviour, not speed (scripts/ hold the benchmarks).
FAST = TimingRules(warmup_s=0.01, min_duration_s=0.05, min_iterations=5, idle_s=0.05,
                   min_power_samples=2)

# Host-side libraries a device never needs: importing any of them under GUARD (prepended to the
# code of a fresh interpreter) fails, as on a device where they are not installed.
BLOCKED = ("torch", "torchattacks", "sklearn", "scipy", "pandas", "lifelines", "optuna",
           "matplotlib", "onnx", "onnxconverter_common", "onnxscript")
GUARD = textwrap.dedent(f"""
    import sys

    class Block:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in {BLOCKED!r}:
                raise ImportError(f"device-side guard: {{name}} is not installed on the device")
            return None

    sys.meta_path.insert(0, Block())
""")


@pytest.fixture(autouse=True)
def isolated_cache(tmp_path_factory, monkeypatch):
    """Never touch the user's ~/.cache/edgerob, ~/.local/state/edgerob, ./edgerob.db or device
    locks from a test."""
    monkeypatch.setenv("EDGEROB_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    # nor a power mode state file (edgerob.device.power_mode.switch) of this machine
    monkeypatch.setenv("EDGEROB_STATE_DIR", str(tmp_path_factory.getbasetemp() / "state"))
    monkeypatch.delenv("EDGEROB_STORE", raising=False)
    # device locks of this session's sweeps only (not the machine's: other test runs, users)
    monkeypatch.setenv("EDGEROB_LOCK_DIR", str(tmp_path_factory.getbasetemp() / "locks"))


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """resnet8 at width 8 on digits, a few epochs: accurate enough for export parity checks."""
    from edgerob.host.train import TrainConfig, train

    folder = tmp_path_factory.mktemp("tiny_model")
    train(TrainConfig(arch="resnet8", width=8, epochs=6, seed=1, robust_eval_samples=0), folder)
    return folder


@pytest.fixture(scope="session")
def tiny_artifacts(tiny_model):
    from edgerob.host.export import export

    return export(tiny_model)
