"""The device lock (edgerob.device.lock): one sweep per device at a time, per GPU where a target
names one; and two real `edgerob profile --target cpu` processes started together."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime

import pytest

from edgerob.catalog.targets import Target, load_target
from edgerob.device.lock import device_key, device_lock, holder
from edgerob.errors import EdgerobError
from edgerob.store import Store

TINY_PROFILE = """
name: tiny
precisions: [fp32]
batch_sizes: [1, 2]
samples: 16
timing: {warmup_s: 0.01, min_duration_s: 0.3, min_iterations: 5, rounds: 6}
"""


def test_device_key_is_the_gpu_a_target_names_else_the_machine():
    cpu = load_target("cpu")
    assert device_key(cpu) == "machine"
    a = Target(name="a", profiler="nvml", profiler_options={"gpu_uuid": "GPU-1a/2"})
    b = Target(name="b", profiler="nvml", profiler_options={"cuda_device": 1})
    assert device_key(a) == "gpu-gpu_uuid-GPU-1a_2" and device_key(b) == "gpu-cuda_device-1"


def test_a_held_device_is_refused_with_its_holder_and_other_devices_are_not():
    with device_lock("machine") as me:
        assert holder("machine")["pid"] == os.getpid() == me["pid"]
        with pytest.raises(EdgerobError, match=f"device machine is busy: held by pid "
                                               f"{os.getpid()} .* since {re.escape(me['since'])}"):
            with device_lock("machine", wait=False):
                pass
        with device_lock("gpu-cuda_device-1", wait=False):  # another GPU of the box: free
            assert holder("gpu-cuda_device-1")["pid"] == os.getpid()
    assert holder("machine") is None and holder("gpu-cuda_device-1") is None
    with pytest.raises(EdgerobError, match="invalid device lock name"):
        holder("../etc/passwd")


def test_the_lock_dies_with_its_process_and_a_waiter_is_told_who_holds_it():
    code = ("import sys, time; from edgerob.device.lock import device_lock\n"
            "with device_lock('machine'):\n    print('held', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        lines = []
        # SIGKILL: no cleanup runs; the kernel releases the flock as the process dies
        killer = threading.Timer(0.5, lambda: os.kill(proc.pid, signal.SIGKILL))
        killer.start()
        with device_lock("machine", on_wait=lines.append):
            assert proc.poll() is not None  # got it only once the holder was gone
        killer.join()
        assert len(lines) == 1 and f"held by pid {proc.pid} " in lines[0]
        assert lines[0].startswith("waiting: device machine is busy")
    finally:
        proc.kill()
        proc.wait()


def _profile(tmp_path, tiny_model, *extra):
    return subprocess.Popen(
        [sys.executable, "-m", "edgerob.cli", "profile", "--target", "cpu", "--profile",
         "tiny.yaml", "--model", str(tiny_model), "--store", f"sqlite:///{tmp_path}/r.db",
         *extra], cwd=tmp_path, text=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def test_two_profiles_at_once_take_turns(tmp_path, tiny_model):
    """Two profiles let go at the same moment (both waiting on a lock this test holds, then
    released): both finish, one waits for the other (saying so), their measured sessions never
    overlap, and no cell is stored twice."""
    (tmp_path / "tiny.yaml").write_text(TINY_PROFILE)
    lines = [[], []]
    with device_lock("machine"):
        procs = [_profile(tmp_path, tiny_model, "--new-run") for _ in range(2)]
        readers = [threading.Thread(target=lambda p=p, out=out: out.extend(p.stderr))
                   for p, out in zip(procs, lines)]
        for t in readers:
            t.start()
        deadline = time.monotonic() + 300
        while not all(any(f"held by pid {os.getpid()} " in x for x in out) for out in lines):
            assert time.monotonic() < deadline and all(p.poll() is None for p in procs), lines
            time.sleep(0.05)
    for p, t in zip(procs, readers):
        p.wait(timeout=300)
        t.join()
    assert [p.returncode for p in procs] == [0, 0], lines
    # the one that lost the race says who won
    told = [any(f"held by pid {other.pid} " in x for x in out)
            for out, other in zip(lines, procs[::-1])]
    assert sorted(told) == [False, True], lines
    rows = Store(f"sqlite:///{tmp_path}/r.db").measurements()
    keys = [(r["run_id"], r["precision"], r["batch_size"], r["input_set"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 and len({r["run_id"] for r in rows}) == 2
    windows = {}
    for r in rows:
        fp = json.loads(r["fingerprint"])
        start, end = (datetime.fromisoformat(fp[k]) for k in ("window_start", "window_end"))
        assert start < end
        windows.setdefault(r["run_id"], []).append((start, end))
    first, second = sorted(windows.values(), key=min)
    assert max(e for _, e in first) < min(s for s, _ in second)


def test_no_wait_exits_2_naming_the_holder(tmp_path, tiny_model):
    (tmp_path / "tiny.yaml").write_text(TINY_PROFILE)
    with device_lock("machine"):
        p = _profile(tmp_path, tiny_model, "--no-wait")
        _, err = p.communicate(timeout=300)
    assert p.returncode == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and f"held by pid {os.getpid()} " in lines[0], err
    assert lines[0].startswith("error: device machine is busy")
    assert Store(f"sqlite:///{tmp_path}/r.db").measurements() == []
