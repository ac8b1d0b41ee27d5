"""Fleet runs (edgerob.fleet.fleet, `edgerob fleet`): loopback-SSH devices (the asyncssh server of
test_remote, driven by OpenSSH), one unreachable, one killed mid-sweep and resumed."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys

import pytest
import yaml

from edgerob.catalog.profiles import Profile
from edgerob.catalog.targets import Target
from edgerob.device.lock import device_lock
from edgerob.fleet.fleet import Member, fleet_status, load_fleet, prepare_all, run_fleet
from edgerob.errors import EdgerobError
from edgerob.host.workload import prepare_workload
from edgerob.store import Store

from test_remote import Server  # noqa: E402 (skips this module where test_remote skips)

pytestmark = [pytest.mark.filterwarnings("ignore:coroutine .Queue.join. was never awaited"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]

# cells of at least 0.5 s: the killed device is killed well before its second cell is stored
PROFILE = {"name": "f", "precisions": ["fp32"], "batch_sizes": [1, 2], "samples": 16,
           "timing": {"warmup_s": 0.01, "min_duration_s": 0.5, "min_iterations": 5}}

# A device whose edgerob is killed (SIGKILL) right after its first cell is stored, once: the
# marker file says it happened, and the next run goes through.
KILLER = """
import os, signal, subprocess, sys
marker, argv = sys.argv[1], sys.argv[2:]
p = subprocess.Popen([sys.executable, "-m", "edgerob.cli", *argv], stderr=subprocess.PIPE,
                     text=True)
for line in p.stderr:
    sys.stderr.write(line)
    if line.startswith("edgerob-cell 1/") and not os.path.exists(marker):
        open(marker, "w").close()
        p.send_signal(signal.SIGKILL)
sys.exit(-p.wait() if p.wait() < 0 else p.wait())
"""


def free_port() -> int:
    """A loopback port nothing listens on."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def device(server, tmp_path, name: str, remote_command=None) -> Target:
    """A loopback device with its own bundle folder and its own lock directory, as a separate
    machine would have."""
    base = server.target(tmp_path).model_dump()
    lock_dir = tmp_path / f"locks-{name}"
    base.update(name=name, remote_dir=str(tmp_path / f"device-{name}"), remote_command=[
        "env", f"EDGEROB_LOCK_DIR={lock_dir}",
        *(remote_command or [sys.executable, "-m", "edgerob.cli"])])
    return Target.model_validate(base)


def test_a_fleet_goes_on_past_failed_devices_and_resumes(tmp_path, tiny_model, monkeypatch):
    server = Server(tmp_path)
    try:
        (tmp_path / "killer.py").write_text(KILLER)
        marker = tmp_path / "killed"
        profile = Profile.model_validate(PROFILE)
        good = device(server, tmp_path, "good")
        killed = device(server, tmp_path, "killed",
                        [sys.executable, str(tmp_path / "killer.py"), str(marker)])
        gone = Target.model_validate({**good.model_dump(), "name": "gone",
                                      "host": f"ssh://127.0.0.1:{free_port()}"})
        members = [Member(t, profile, tiny_model) for t in (good, killed, gone)]
        prepared = []
        workloads = prepare_all(members, lambda p, m: prepared.append(m)
                                or prepare_workload(p, m))
        assert len(prepared) == 1  # one workload, shared by the three devices
        store = Store(f"sqlite:///{tmp_path}/fleet.db")

        first = {r.name: r for r in run_fleet(members, store, workloads)}
        assert not first["good"].failed and first["good"].measured == 2
        assert marker.exists() and first["killed"].failed and "exit" in first["killed"].error
        assert first["gone"].failed and "127.0.0.1" in first["gone"].error
        assert first["killed"].done == 1  # its progress came from the device, cell by cell
        assert {r["target"] for r in store.measurements()} == {"good"}  # killed: not fetched

        again = {r.name: r for r in run_fleet(members, store, workloads)}
        assert again["good"].measured == 0 and again["good"].skipped == 2
        assert again["killed"].resumed and (again["killed"].measured,
                                            again["killed"].skipped) == (1, 1)
        assert again["gone"].failed
        rows = store.measurements()
        keys = [(r["target"], r["batch_size"], r["input_set"]) for r in rows]
        assert len(keys) == len(set(keys)) == 4

        status = {s.name: s for s in fleet_status(members, store, timeout_s=5)}
        assert (status["good"].cells, status["good"].reachable, status["good"].holder) == (
            2, True, None)
        assert status["gone"].reachable is False and status["gone"].cells == 0
        monkeypatch.setenv("EDGEROB_LOCK_DIR", str(tmp_path / "locks-good"))
        with device_lock("machine"):  # as if a sweep on device "good" held it
            held = fleet_status(members[:1], store)[0]
        assert held.reachable and f"held by pid {os.getpid()} " in held.holder
    finally:
        server.close()


def test_fleet_file_errors_are_one_line(tmp_path):
    bad = tmp_path / "fleet.yaml"
    bad.write_text("defaults: {profile: quick}\ntargets: [{target: cpu, profile: quick, gpu: 1}]")
    with pytest.raises(EdgerobError, match=r"fleet.yaml: field 'targets.0.*gpu"):
        load_fleet(bad)
    bad.write_text("targets: []")
    with pytest.raises(EdgerobError, match="fleet.yaml: field 'targets'"):
        load_fleet(bad)
    bad.write_text("targets: [cpu, nowhere]")
    with pytest.raises(EdgerobError, match="fleet.yaml: unknown target 'nowhere'"):
        load_fleet(bad)
    r = subprocess.run([sys.executable, "-m", "edgerob.cli", "fleet", "run", str(bad)],
                       capture_output=True, text=True, cwd=tmp_path)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_fleet_run_cli_exits_1_when_a_device_fails(tmp_path, tiny_model):
    """One local CPU and one unreachable device: the CPU is measured, the other reported, exit 1;
    `fleet status` shows what is stored and who answers."""
    (tmp_path / "targets").mkdir()
    gone = {"name": "gone", "host": f"ssh://127.0.0.1:{free_port()}",
            "ssh_options": ["-F", "/dev/null", "-o", "UserKnownHostsFile=/dev/null"]}
    (tmp_path / "targets" / "gone.yaml").write_text(yaml.safe_dump(gone))
    (tmp_path / "f.yaml").write_text(yaml.safe_dump({**PROFILE, "name": "f"}))
    (tmp_path / "fleet.yaml").write_text(yaml.safe_dump(
        {"defaults": {"profile": "f.yaml", "model": str(tiny_model)},
         "targets": ["targets/gone.yaml", "cpu"]}))
    store = f"sqlite:///{tmp_path}/fleet.db"

    def edgerob(*args):
        return subprocess.run([sys.executable, "-m", "edgerob.cli", *args, "--store", store],
                              capture_output=True, text=True, cwd=tmp_path, timeout=300)

    r = edgerob("fleet", "run", "fleet.yaml")
    assert r.returncode == 1, r.stderr
    assert "1 of 2 devices failed (gone)" in r.stderr
    cpu_line = next(line for line in r.stdout.splitlines() if line.strip().startswith("cpu "))
    assert cpu_line.split()[1] == "2"  # measured
    assert len(Store(store).measurements()) == 2
    s = edgerob("fleet", "status", "fleet.yaml")
    assert s.returncode == 0, s.stderr
    gone_line = next(line for line in s.stdout.splitlines() if "gone" in line)
    assert re.search(r"\s0\s+never\s+—\s+no\b", gone_line), gone_line  # cells, run, reachable
