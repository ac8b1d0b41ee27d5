"""Sweeping power modes (edgerob/device/power_mode/switch.py): each mode set, verified, measured
and the original put back, also after Ctrl-C, SIGTERM and kill -9 (the state file), on a fake
AGX Orin: a system root laid out like / (tests/test_power_mode.py) and a fake `nvpmodel` on
PATH that keeps its mode in the root's var/lib/nvpmodel/status and answers `-q` as the real one
does ("NV Power Mode: MODE_30W" then the id), and sets the mode's clock floors (what ends
jetson_clocks' pinning); a fake `jetson_clocks` that pins every CPU's and the GPU's min and current
frequency at their max (what `read_power_mode` reads as jetson_clocks active), `--restore`
unpins; a fake jetson-stats `jtop` module whose setters run those two as the jtop service does.
GPU power limits against a fake pynvml.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import signal
import stat
import subprocess
import sys
import textwrap
import time
import types
from pathlib import Path

import pytest
from typer.testing import CliRunner

from edgerob.catalog.profiles import Profile, QueryAttackSpec
from edgerob.catalog.targets import load_target
from edgerob.cli import app
from edgerob.device.clocks import cpu_state
from edgerob.device.paired import MIN_ROUNDS
from edgerob.device.power_mode import read_power_mode
from edgerob.device.power_mode import switch
from edgerob.device.sweep import run_profile
from edgerob.errors import EdgerobError
from edgerob.host.workload import prepare_workload
from edgerob.store import Store

from conftest import FAST
from test_power_mode import AGX_ORIN_CONF, board, write

# poll the mode every 50 ms, give up on a mode that does not take after 0.5 s; few rounds
TIMING = dataclasses.replace(FAST, settle_max_s=0.5, rounds=MIN_ROUNDS, min_iterations=2,
                             min_duration_s=0.01)
MODES = ["MAXN", "MODE_50W"]  # the board starts in MODE_30W (pmode:0002)

# a shell script: it runs dozens of times per test (Python's start-up would dominate)
FAKE_NVPMODEL = r"""#!/bin/sh
here=$(dirname "$0")
echo "$@" >> "$here/args"
status="$EDGEROB_SYSROOT/var/lib/nvpmodel/status"
if [ "$1" = -m ]; then
    [ -e "$here/ignore" ] && exit 0  # a board that ignores -m
    printf 'pmode:%04d\n' "$2" > "$status"
    # the mode's floors (the fake board's: test_power_mode.sysroot) end jetson_clocks' pinning
    for d in "$EDGEROB_SYSROOT"/sys/devices/system/cpu/cpu*/cpufreq; do
        echo 729600 > "$d/scaling_min_freq"; echo 729600 > "$d/scaling_cur_freq"
    done
    for d in "$EDGEROB_SYSROOT"/sys/class/devfreq/*; do
        echo 306000000 > "$d/min_freq"; echo 306000000 > "$d/cur_freq"
    done
    exit 0
fi
id=$(sed 's/.*pmode:0*//' "$status")
id=${id:-0}
name=$(sed -n "s/.*POWER_MODEL ID=$id NAME=\([^ >]*\).*/\1/p" "$EDGEROB_SYSROOT/etc/nvpmodel.conf")
printf 'NV Power Mode: %s\n%s\n' "$name" "$id"
"""

# pins each CPU's and the GPU's min and current frequency at its max; --restore unpins
FAKE_JETSON_CLOCKS = r"""#!/bin/sh
here=$(dirname "$0")
echo jetson_clocks "$@" >> "$here/args"
[ -e "$here/ignore-clocks" ] && exit 0
for d in "$EDGEROB_SYSROOT"/sys/devices/system/cpu/cpu*/cpufreq; do
    v=$(cat "$d/scaling_max_freq"); [ "$1" = --restore ] && v=729600
    echo "$v" > "$d/scaling_min_freq"; echo "$v" > "$d/scaling_cur_freq"
done
for d in "$EDGEROB_SYSROOT"/sys/class/devfreq/*; do
    v=$(cat "$d/max_freq"); [ "$1" = --restore ] && v=306000000
    echo "$v" > "$d/min_freq"; echo "$v" > "$d/cur_freq"
done
"""


def script(path: Path, text: str) -> Path:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


@pytest.fixture
def orin(tmp_path, monkeypatch):
    """A fake AGX Orin in MODE_30W: sysroot, nvpmodel and a passwordless sudo on PATH, a state
    folder, no root (sudo -n is how the sweep gets it)."""
    root = board(tmp_path, "agx-orin-64gb", status="pmode:0002\n")
    bindir = tmp_path / "bin"
    bindir.mkdir()
    script(bindir / "nvpmodel", FAKE_NVPMODEL)
    script(bindir / "jetson_clocks", FAKE_JETSON_CLOCKS)
    script(bindir / "sudo", '#!/bin/sh\n[ "$1" = -n ] && shift\nexec "$@"\n')
    env = {"EDGEROB_SYSROOT": str(root), "EDGEROB_STATE_DIR": str(tmp_path / "state"),
           "PATH": f"{bindir}{os.pathsep}{os.environ['PATH']}"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setattr(switch, "_is_root", lambda: False)
    monkeypatch.chdir(tmp_path)
    return {"root": root, "bin": bindir, "state": tmp_path / "state", "env": env,
            "tmp": tmp_path}


def mode_now(orin) -> str:
    return read_power_mode(orin["root"])["power_mode"]


def nvpmodel_calls(orin) -> list[str]:
    return [a for a in (orin["bin"] / "args").read_text().split("\n") if a.startswith("-m")]


def calls(orin) -> list[str]:
    """nvpmodel's and jetson_clocks' arguments, in order."""
    return (orin["bin"] / "args").read_text().splitlines()


def jetson_clocks(orin) -> None:
    """The user ran jetson_clocks before the sweep."""
    subprocess.run([orin["bin"] / "jetson_clocks"], check=True)
    (orin["bin"] / "args").unlink()
    assert mode_now(orin) == "MODE_30W+jetson_clocks"


# the generic cpu target (verifies anywhere) with the AGX Orin's modes
TARGET = load_target("cpu").model_copy(update={"power_modes": ["MAXN", "MODE_15W", "MODE_30W",
                                                               "MODE_50W"]})


def profile(batch_sizes=(1,)) -> Profile:
    return Profile(name="modes", precisions=["fp32"], batch_sizes=list(batch_sizes),
                   timing=TIMING, power_modes=MODES)


def test_two_modes_each_set_measured_and_the_original_restored(orin, tiny_model):
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile(batch_sizes=(1, 2))  # each mode set once for its two groups
    notes, seen = [], []

    def on_cell(i, n, cell, m):
        seen.append((cell.power_mode, mode_now(orin)))  # the board is in the cell's mode

    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store, on_cell=on_cell,
                      on_note=notes.append)
    assert res.measured == 4 and len(seen) == 4
    assert all(asked == now for asked, now in seen)
    assert sorted((r["power_mode"], r["batch_size"]) for r in res.rows) == [
        ("MAXN", 1), ("MAXN", 2), ("MODE_50W", 1), ("MODE_50W", 2)]
    for r in res.rows:
        facts = json.loads(r["fingerprint"])["power_mode_facts"]
        assert facts["nvpmodel_mode"] == r["power_mode"]
    assert nvpmodel_calls(orin) == ["-m 0", "-m 3", "-m 2"]  # MAXN, MODE_50W, back to MODE_30W
    assert mode_now(orin) == "MODE_30W"
    assert notes[-1] == "power mode MODE_30W restored"
    assert list(orin["state"].iterdir()) == []
    # resumed: every cell stored for its mode, nothing set or measured again
    again = run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert again.resumed and again.measured == 0 and again.skipped == 4
    assert len(nvpmodel_calls(orin)) == 3
    # a third mode: only its cells are measured
    more = prof.model_copy(update={"power_modes": ["MAXN", "MODE_50W", "MODE_15W"]})
    grown = run_profile(TARGET, more, prepare_workload(more, tiny_model), store)
    assert grown.measured == 2 and nvpmodel_calls(orin)[3:] == ["-m 1", "-m 2"]
    assert mode_now(orin) == "MODE_30W"


def test_all_sweeps_every_mode_of_the_target(orin, tiny_model):
    prof = profile().model_copy(update={"power_modes": ["all"]})
    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model),
                      Store(f"sqlite:///{orin['tmp']}/s.db"))
    assert [r["power_mode"] for r in res.rows] == TARGET.power_modes
    assert mode_now(orin) == "MODE_30W"


def test_a_mode_that_does_not_take_is_refused_and_nothing_stored(orin, tiny_model):
    (orin["bin"] / "ignore").touch()
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile()
    with pytest.raises(EdgerobError, match="MAXN did not take: the device reads MODE_30W"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert store.measurements() == [] and store.runs()[0]["status"] == "failed"
    assert list(orin["state"].iterdir()) == []  # the original mode is what it reads


def test_a_mode_changed_under_the_sweep_is_refused(orin, tiny_model):
    """Someone sets another mode between two groups: that group is not stored under MAXN."""
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile(batch_sizes=(1, 2))

    def meddle(i, n, cell, m):
        if i == 1:
            write(orin["root"] / "var/lib/nvpmodel/status", "pmode:0001\n")  # MODE_15W

    with pytest.raises(EdgerobError, match="left power mode MAXN: it reads MODE_15W"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store, on_cell=meddle)
    assert [r["power_mode"] for r in store.measurements()] == ["MAXN"]  # the first group only
    assert mode_now(orin) == "MODE_30W"


# a tiny query attack: one cell of 4 samples, 8 queries each at most
QUERY_ATTACK = QueryAttackSpec(eps=[0.2], budget_queries=8, samples=4)


def test_query_attack_cells_run_in_every_mode_under_their_mode(orin, tiny_model):
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile().model_copy(update={"query_attack": QUERY_ATTACK})
    seen = []

    def on_cell(i, n, cell, m):
        seen.append((cell.kind, cell.power_mode, mode_now(orin)))

    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store, on_cell=on_cell)
    assert seen == [("measure", "MAXN", "MAXN"), ("failures", "MAXN", "MAXN"),
                    ("measure", "MODE_50W", "MODE_50W"), ("failures", "MODE_50W", "MODE_50W")]
    assert res.measured == 4
    cells = {c["power_mode"]: c for c in res.attack_cells}
    assert sorted(cells) == MODES
    for mode, cell in cells.items():  # each cell's records stored under its own mode
        assert sum(f["power_mode"] == mode for f in res.failures) == cell["n_attacked"]
    assert len(res.failures) == sum(c["n_attacked"] for c in cells.values()) > 0
    assert store.failure_cells(res.run_id) == {("fp32", 1, "square", 0.2, m) for m in MODES}
    assert mode_now(orin) == "MODE_30W"
    # resumed: every cell stored for its mode, nothing set or attacked again
    again = run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert again.resumed and again.measured == 0 and again.skipped == 4
    assert len(nvpmodel_calls(orin)) == 3 and len(store.failures()) == len(res.failures)
    # a third mode: only its cells, its query attack included
    more = prof.model_copy(update={"power_modes": [*MODES, "MODE_15W"]})
    grown = run_profile(TARGET, more, prepare_workload(more, tiny_model), store)
    assert grown.measured == 2 and nvpmodel_calls(orin)[3:] == ["-m 1", "-m 2"]
    assert sorted(c["power_mode"] for c in store.attack_cells()) == sorted([*MODES, "MODE_15W"])


def test_a_query_attack_cell_whose_mode_changed_is_refused(orin, tiny_model):
    """The mode changes after the measurement cell: the query-attack cell of that mode is
    refused, no record or attack cell stored under it."""
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile().model_copy(update={"query_attack": QUERY_ATTACK})

    def meddle(i, n, cell, m):
        if i == 1:
            write(orin["root"] / "var/lib/nvpmodel/status", "pmode:0001\n")  # MODE_15W

    with pytest.raises(EdgerobError, match="left power mode MAXN: it reads MODE_15W"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store, on_cell=meddle)
    assert [r["power_mode"] for r in store.measurements()] == ["MAXN"]
    assert store.attack_cells() == [] and store.failures() == []
    assert mode_now(orin) == "MODE_30W"


def test_ctrl_c_restores_the_original_mode(orin, tiny_model):
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile()

    def interrupt(i, n, cell, m):
        assert mode_now(orin) == "MAXN"
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store, on_cell=interrupt)
    assert mode_now(orin) == "MODE_30W" and list(orin["state"].iterdir()) == []


NO_SUDO = "#!/bin/sh\necho 'sudo: a password is required' >&2\nexit 1\n"


def test_without_privileges_exit_2_one_line_nothing_measured(orin, tiny_model, monkeypatch):
    script(orin["bin"] / "sudo", NO_SUDO)
    monkeypatch.setitem(sys.modules, "jtop", None)  # import jtop -> ImportError
    (orin["tmp"] / "targets").mkdir()
    (orin["tmp"] / "targets/fake-orin.yaml").write_text(
        "name: fake-orin\nruntime: onnxruntime\nprofiler: none\n"
        "power_modes: [MAXN, MODE_15W, MODE_30W, MODE_50W]\n")
    (orin["tmp"] / "modes.yaml").write_text(
        "name: modes\nprecisions: [fp32]\nbatch_sizes: [1]\npower_modes: [MAXN, MODE_50W]\n")
    url = f"sqlite:///{orin['tmp']}/s.db"
    r = CliRunner().invoke(app, ["profile", "--target", "fake-orin", "--profile",
                                 str(orin["tmp"] / "modes.yaml"), "--model", str(tiny_model),
                                 "--store", url])
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    assert len(lines) == 1 and "needs root" in lines[0] and "sudo" in lines[0]
    assert "join group jtop" in lines[0] and "jetson-stats is not installed" in lines[0]
    assert "Traceback" not in r.output
    assert Store(url).measurements() == [] and Store(url).runs() == []
    assert not (orin["bin"] / "args").exists()  # not even read: refused before the workload
    # the sweep itself refuses too (a Python caller, a bundle on the device)
    prof = profile()
    with pytest.raises(EdgerobError, match="needs root"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), Store(url))
    assert Store(url).runs() == [] and nvpmodel_calls(orin) == []
    # a mode the target does not have: refused as the profile is read
    (orin["tmp"] / "modes.yaml").write_text(
        "name: modes\nprecisions: [fp32]\nbatch_sizes: [1]\npower_modes: [MAXN, TURBO]\n")
    r = CliRunner().invoke(app, ["profile", "--target", "fake-orin", "--profile",
                                 str(orin["tmp"] / "modes.yaml"), "--store", url])
    assert r.exit_code == 2 and "TURBO is not one of target 'fake-orin'" in r.output


def test_a_mode_needing_a_reboot_is_refused_before_anything(orin, tiny_model):
    # MODE_15W takes 4 of the cores offline: nvpmodel would ask for a reboot
    conf = AGX_ORIN_CONF.replace("< POWER_MODEL ID=1 NAME=MODE_15W >\nCPU_ONLINE CORE_0 1\n",
                                 "< POWER_MODEL ID=1 NAME=MODE_15W >\nCPU_ONLINE CORE_0 1\n"
                                 "CPU_ONLINE CORE_4 0\n")
    write(orin["root"] / "etc/nvpmodel.conf", conf)
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile().model_copy(update={"power_modes": ["MAXN", "MODE_15W"]})
    with pytest.raises(EdgerobError, match="MODE_15W needs a reboot .* CPU_ONLINE CORE_4"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert store.runs() == [] and nvpmodel_calls(orin) == []  # read, never set
    assert switch.reboot_settings(conf)[1] == {("CPU_ONLINE", "CORE_0"): "1",
                                               ("CPU_ONLINE", "CORE_4"): "0"}
    assert switch.reboot_settings(conf)[2] == {("CPU_ONLINE", "CORE_0"): "1"}


# --- jetson_clocks: measured without it, put back after the sweep ---------------------------

def test_jetson_clocks_active_at_start_is_put_back_after_the_sweep(orin, tiny_model):
    jetson_clocks(orin)
    states = []

    def on_cell(i, n, cell, m):
        states.append(json.loads((orin["state"] / "power-mode-jetson.json").read_text()))

    prof = profile()
    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model),
                      Store(f"sqlite:///{orin['tmp']}/s.db"), on_cell=on_cell)
    # the modes as nvpmodel leaves them: no jetson_clocks, and the labels say so
    assert [r["power_mode"] for r in res.rows] == MODES
    assert {(s["label"], s["nvpmodel_id"], s["jetson_clocks"]) for s in states} == {
        ("MODE_30W+jetson_clocks", 2, True)}  # for a restore after kill -9
    assert [c for c in calls(orin) if c != "-q"] == ["-m 0", "-m 3", "-m 2", "jetson_clocks"]
    assert mode_now(orin) == "MODE_30W+jetson_clocks"
    assert list(orin["state"].iterdir()) == []


def test_jetson_clocks_left_off_by_a_killed_sweep_is_put_back(orin):
    write(orin["root"] / "var/lib/nvpmodel/status", "pmode:0000\n")  # the killed sweep's MAXN
    orin["state"].mkdir()
    (orin["state"] / "power-mode-jetson.json").write_text(json.dumps(
        {"label": "MODE_30W+jetson_clocks", "kind": "jetson", "nvpmodel_id": 2,
         "jetson_clocks": True, "pid": 2 ** 22 + 1,  # above pid_max: not running
         "boot_id": switch._boot_id()}))
    assert switch.restore_pending(settle_s=0.5, poll_s=0.01) == ["MODE_30W+jetson_clocks"]
    assert mode_now(orin) == "MODE_30W+jetson_clocks"
    assert list(orin["state"].iterdir()) == []


def test_jetson_clocks_that_cannot_be_put_back(orin, tiny_model):
    jetson_clocks(orin)
    prof = profile()
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    # not on PATH: refused before anything is set or measured
    (orin["bin"] / "jetson_clocks").rename(orin["tmp"] / "jetson_clocks")
    with pytest.raises(EdgerobError, match="jetson_clocks is active but not on PATH"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert store.runs() == [] and nvpmodel_calls(orin) == []  # read, never set
    # runs but the clocks stay unpinned: one line, the state file kept for the next start
    (orin["tmp"] / "jetson_clocks").rename(orin["bin"] / "jetson_clocks")
    (orin["bin"] / "ignore-clocks").touch()
    with pytest.raises(EdgerobError) as e:
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert str(e.value) == ("power mode MODE_30W+jetson_clocks did not take: the device reads "
                            "MODE_30W; the next sweep retries; set it by hand if it keeps "
                            "failing")
    assert (orin["state"] / "power-mode-jetson.json").exists()


# --- jtop's service: modes without root or sudo ---------------------------------------------

def fake_jtop(monkeypatch, orin, works=True, start_error=None) -> list:
    """A jetson-stats `jtop` module; its setters run nvpmodel and jetson_clocks (the fakes on
    PATH) as the jtop service does: after a mode change it runs jetson_clocks again where it was
    active. `works=False`: setters that change nothing. Returns the setters' calls."""
    seen = []

    def run(*args):
        subprocess.run([orin["bin"] / args[0], *args[1:]], check=True)

    class jtop:
        def __init__(self, interval=1.0):
            pass

        def start(self):
            if start_error is not None:
                raise start_error

        def close(self):
            pass

        @property
        def nvpmodel(self):
            return read_power_mode(orin["root"])["power_mode_facts"]["nvpmodel_mode"]

        @nvpmodel.setter
        def nvpmodel(self, value):
            seen.append(("nvpmodel", value))
            if works:
                pinned = read_power_mode(orin["root"])["power_mode_facts"]["jetson_clocks"]
                run("nvpmodel", "-m", str(value))
                if pinned:
                    run("jetson_clocks")

        @property
        def jetson_clocks(self):
            return read_power_mode(orin["root"])["power_mode_facts"]["jetson_clocks"]

        @jetson_clocks.setter
        def jetson_clocks(self, on):
            seen.append(("jetson_clocks", on))
            if works:
                run("jetson_clocks", *([] if on else ["--restore"]))

    mod = types.ModuleType("jtop")
    mod.jtop = jtop
    monkeypatch.setitem(sys.modules, "jtop", mod)
    return seen


def test_jtop_service_sets_modes_without_root_or_sudo(orin, tiny_model, monkeypatch):
    script(orin["bin"] / "sudo", NO_SUDO)
    jetson_clocks(orin)
    seen = fake_jtop(monkeypatch, orin)
    prof = profile()
    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model),
                      Store(f"sqlite:///{orin['tmp']}/s.db"))
    # jetson_clocks turned off first: the service would otherwise pin the clocks of each mode
    assert [r["power_mode"] for r in res.rows] == MODES
    assert seen == [("jetson_clocks", False), ("nvpmodel", 0), ("nvpmodel", 3),
                    ("nvpmodel", 2), ("jetson_clocks", True)]
    assert mode_now(orin) == "MODE_30W+jetson_clocks"
    assert list(orin["state"].iterdir()) == []


def test_jtop_whose_change_does_not_take_is_refused(orin, tiny_model, monkeypatch):
    script(orin["bin"] / "sudo", NO_SUDO)
    seen = fake_jtop(monkeypatch, orin, works=False)
    store = Store(f"sqlite:///{orin['tmp']}/s.db")
    prof = profile()
    with pytest.raises(EdgerobError, match="MAXN did not take: the device reads MODE_30W"):
        run_profile(TARGET, prof, prepare_workload(prof, tiny_model), store)
    assert seen[0] == ("nvpmodel", 0) and store.measurements() == []


def test_jtop_unreachable_names_every_fix(orin, monkeypatch):
    script(orin["bin"] / "sudo", NO_SUDO)
    fake_jtop(monkeypatch, orin, start_error=PermissionError(13, "Permission denied"))
    with pytest.raises(EdgerobError) as e:
        switch.privileges("jetson")
    line = str(e.value)
    assert "\n" not in line
    for fix in ("run as root", "sudo without a password", "join group jtop",
                "usermod -aG jtop"):
        assert fix in line, line


# --- killed mid-sweep: the next start restores ----------------------------------------------

CHILD = textwrap.dedent("""
    import pickle, sys, time
    from pathlib import Path
    from edgerob.device.sweep import run_profile
    from edgerob.store import Store

    target, prof, work, url, marker = pickle.loads(Path(sys.argv[1]).read_bytes())

    def hang(i, n, cell, m):
        Path(marker).write_text(cell.power_mode)
        time.sleep(120)  # killed here, in MAXN

    run_profile(target, prof, work, Store(url), on_cell=hang)
""")


def start_child(orin, tiny_model, prof):
    url = f"sqlite:///{orin['tmp']}/s.db"
    marker = orin["tmp"] / "in-mode"
    job = orin["tmp"] / "job.pkl"
    job.write_bytes(pickle.dumps((TARGET, prof, prepare_workload(prof, tiny_model), url,
                                  str(marker))))
    env = {**os.environ, **orin["env"],
           "PYTHONPATH": os.pathsep.join([str(Path(__file__).parent.parent),
                                          os.environ.get("PYTHONPATH", "")])}
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(job)], env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert child.poll() is None, child.communicate()
        assert time.monotonic() < deadline, "the child sweep never measured a cell"
        time.sleep(0.05)
    return child, url


def test_kill_9_mid_sweep_leaves_the_next_start_restoring(orin, tiny_model):
    prof = profile()
    child, url = start_child(orin, tiny_model, prof)
    assert mode_now(orin) == "MAXN"
    child.kill()  # SIGKILL: no handler runs
    child.wait()
    assert mode_now(orin) == "MAXN"
    state = json.loads((orin["state"] / "power-mode-jetson.json").read_text())
    assert (state["label"], state["nvpmodel_id"]) == ("MODE_30W", 2)
    notes = []
    res = run_profile(TARGET, prof, prepare_workload(prof, tiny_model), Store(url),
                      on_note=notes.append)
    assert notes[0].startswith("restored power mode MODE_30W, left changed by an interrupted "
                               f"sweep (pid {child.pid}")
    assert nvpmodel_calls(orin)[:2] == ["-m 0", "-m 2"]  # the child's MAXN, then the restore
    assert res.resumed and res.skipped == 1 and res.measured == 1  # the child stored 1 cell
    assert sorted(r["power_mode"] for r in res.rows) == ["MAXN", "MODE_50W"]
    assert mode_now(orin) == "MODE_30W" and list(orin["state"].iterdir()) == []


def test_sigterm_restores_the_original_mode(orin, tiny_model):
    child, url = start_child(orin, tiny_model, profile())
    child.send_signal(signal.SIGTERM)
    assert child.wait(timeout=60) == 128 + signal.SIGTERM
    assert mode_now(orin) == "MODE_30W" and list(orin["state"].iterdir()) == []
    assert Store(url).runs()[0]["status"] == "failed"


def test_a_running_sweep_is_not_undone_by_another(orin):
    (orin["state"]).mkdir()
    (orin["state"] / "power-mode-jetson.json").write_text(json.dumps(
        {"label": "MODE_30W", "kind": "jetson", "nvpmodel_id": 2, "pid": os.getppid(),
         "boot_id": switch._boot_id()}))
    with pytest.raises(EdgerobError, match=f"another edgerob sweep \\(pid {os.getppid()}\\)"):
        switch.restore_pending()


# --- GPU power limits (fake pynvml) ---------------------------------------------------------

class FakeNvml:
    """One GPU: default 400 W, settable 100-450 W; `ignore` leaves the limit as it is."""

    NVML_CLOCK_SM, NVML_CLOCK_MEM = 1, 2

    def __init__(self, ignore=False):
        self.limit, self.ignore, self.sets = 300_000, ignore, []

    def nvmlInit(self): pass
    def nvmlShutdown(self): pass
    def nvmlDeviceGetHandleByIndex(self, i): return "gpu0"
    def nvmlDeviceGetPowerManagementDefaultLimit(self, h): return 400_000
    def nvmlDeviceGetPowerManagementLimitConstraints(self, h): return 100_000, 450_000
    def nvmlDeviceGetPowerManagementLimit(self, h): return self.limit
    def nvmlDeviceGetEnforcedPowerLimit(self, h): return self.limit
    def nvmlDeviceGetPersistenceMode(self, h): return 1
    def nvmlDeviceGetApplicationsClock(self, h, kind): return 1410
    def nvmlDeviceGetDefaultApplicationsClock(self, h, kind): return 1410

    def nvmlDeviceSetPowerManagementLimit(self, h, mw):
        self.sets.append(mw)
        if not self.ignore:
            self.limit = mw


@pytest.fixture
def gpu_box(tmp_path, monkeypatch):
    monkeypatch.setenv("EDGEROB_SYSROOT", str(tmp_path))  # not a Jetson
    monkeypatch.setenv("EDGEROB_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setattr(switch, "_is_root", lambda: True)
    return tmp_path


def gpu_target():
    return load_target("cpu").model_copy(update={"profiler": "nvml"})


def test_gpu_power_limits_set_verified_and_restored(gpu_box):
    nvml = FakeNvml()
    prof = profile().model_copy(update={"power_modes": [], "power_limits_w": [0.6, 400, 250]})
    settings = switch.plan(gpu_target(), prof, {"index": 0}, nvml)
    assert [(s.label, s.limit_mw) for s in settings] == [
        ("240W-limit", 240_000), ("default", 400_000), ("250W-limit", 250_000)]
    read = []
    gpu = {"index": 0, "runtime": "onnxruntime", "providers": ["CUDAExecutionProvider"]}
    with switch.ModeSweep(settings, gpu=gpu, nvml=nvml, settle_s=0.5, poll_s=0.01) as modes:
        state = json.loads((gpu_box / "state/power-mode-nvml-0.json").read_text())
        assert state["limit_mw"] == 300_000 and state["gpu"] == {"index": 0}
        for s in settings:
            read.append(modes.set(s)["power_mode"])
    assert read == ["240W-limit", "default", "250W-limit"]
    assert nvml.sets == [240_000, 400_000, 250_000, 300_000] and nvml.limit == 300_000
    assert list((gpu_box / "state").iterdir()) == []


def test_gpu_limit_left_by_a_killed_sweep_is_restored(gpu_box):
    (gpu_box / "state").mkdir()
    (gpu_box / "state/power-mode-nvml-0.json").write_text(json.dumps(
        {"label": "default", "kind": "nvml", "limit_mw": 400_000, "gpu": {"index": 0},
         "pid": 2 ** 22 + 1, "boot_id": switch._boot_id()}))  # above pid_max: not running
    nvml = FakeNvml()
    assert switch.restore_pending(nvml=nvml, settle_s=0.5, poll_s=0.01) == ["default"]
    assert nvml.limit == 400_000 and list((gpu_box / "state").iterdir()) == []


def test_gpu_limit_refusals(gpu_box, monkeypatch):
    prof = profile().model_copy(update={"power_modes": [], "power_limits_w": [500]})
    with pytest.raises(EdgerobError, match="500 W is outside this GPU's range 100-450 W"):
        switch.plan(gpu_target(), prof, {"index": 0}, FakeNvml())
    nvml = FakeNvml(ignore=True)
    [s] = switch.plan(gpu_target(), prof.model_copy(update={"power_limits_w": [200]}),
                      {"index": 0}, nvml)
    with pytest.raises(EdgerobError, match="200W-limit did not take: the device reads 300W"):
        with switch.ModeSweep([s], gpu={"index": 0}, nvml=nvml, settle_s=0.05,
                              poll_s=0.01) as modes:
            modes.set(s)
    monkeypatch.setattr(switch, "_is_root", lambda: False)
    with pytest.raises(EdgerobError, match="GPU power limit needs root"):
        switch.plan(gpu_target(), prof.model_copy(update={"power_limits_w": [200]}),
                    {"index": 0}, FakeNvml())


def test_profile_keys_are_checked():
    with pytest.raises(ValueError, match="'all' stands alone"):
        Profile(name="x", precisions=["fp32"], batch_sizes=[1], power_modes=["all", "MAXN"])
    both = Profile(name="x", precisions=["fp32"], batch_sizes=[1], power_modes=["MAXN"],
                   power_limits_w=[200])
    with pytest.raises(EdgerobError, match="one kind of device per profile"):
        switch.check_names(TARGET, both)


def test_cpu_state_reads_under_the_sysroot(tmp_path, monkeypatch):
    write(tmp_path / "sys/devices/system/cpu/cpu0/cpufreq/scaling_cur_freq", "1190400\n")
    monkeypatch.setenv("EDGEROB_SYSROOT", str(tmp_path))
    assert cpu_state()["clocks_mhz"] == {"cpu0": 1190.4}
