"""Setting the power mode for a sweep: each asked operating point set, verified, and the
original put back.

A profile's `power_modes:` are nvpmodel modes (Jetson, `nvpmodel -m ID`, the id from
etc/nvpmodel.conf); its `power_limits_w:` are NVIDIA GPU power limits (NVML
`nvmlDeviceSetPowerManagementLimit`). Everything that can refuse is checked before anything is
measured (`plan`): names, ids, privileges, and modes nvpmodel could only enter after a reboot
(another set of online CPU cores or GPU TPC mask than the mode the board is in). `ModeSweep`
then sets each mode, waits until its clocks stop moving, verifies by reading the mode back
(`read_power_mode`) and puts the original back at the end, on an error, on Ctrl-C and on
SIGTERM. Before its first change it writes a state file naming the original mode; a sweep killed
with -9 leaves it behind, and the next sweep restores that mode first (`restore_pending`).

Jetson modes are changed one of two ways (`privileges` picks it in `plan`, before anything is
measured): `nvpmodel -m ID` and `jetson_clocks` found on PATH, run as root or through `sudo -n`;
else, for a user in group jtop, jtop's service (jetson-stats: `jetson.nvpmodel = ID`,
`jetson.jetson_clocks = True`), which runs the same commands as root.

jetson_clocks: the sweep measures each mode as nvpmodel leaves it, without jetson_clocks
(`nvpmodel -m` sets the mode's clock floors, undoing jetson_clocks' pinning; jtop's service would
re-apply it after each change, so that way turns it off first); the label read back says which
(`MODE_30W`, or `MODE_30W+jetson_clocks` where the board still pins its clocks). Where the board
started with jetson_clocks active, the restore runs it again after the original mode and
verifies the label with `+jetson_clocks`; the state file records it for a restore after kill -9.

The state folder: EDGEROB_STATE_DIR, else $XDG_STATE_HOME/edgerob, else ~/.local/state/edgerob.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Protocol

from edgerob.device.power_mode import (_text, conf_modes, gpu_handle, gpu_limit_label, is_jetson,
                                       read_power_mode, sysroot)
from edgerob.device.profilers.jtop import SOCKET, _close, _connect, _reason
from edgerob.errors import EdgerobError

# nvpmodel.conf settings a mode can change only across a reboot (nvpmodel asks for one)
_REBOOT_PARAMS = ("CPU_ONLINE", "TPC_POWER_GATING")
_HEADER = re.compile(r"^\s*<\s*(\w+)(?:\s+ID=(\d+))?")


@dataclass(frozen=True)
class Setting:
    """One operating point: labelled as `read_power_mode` labels it once set."""

    label: str  # MODE_30W / 150W-limit / default; an original: MODE_30W+jetson_clocks
    kind: str  # "jetson" (nvpmodel) or "nvml"
    nvpmodel_id: int | None = None
    limit_mw: int | None = None
    jetson_clocks: bool = False  # run jetson_clocks after the mode (an original mode only)


def same_mode(read_label: str | None, label: str) -> bool:
    """Whether a mode read back is the one asked: its label, perhaps with what the mode does not
    set (`+jetson_clocks`, `+app-clocks-...`) after it."""
    return read_label is not None and (read_label == label or read_label.startswith(label + "+"))


def state_dir() -> Path:
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local/state"
    return Path(os.environ.get("EDGEROB_STATE_DIR") or Path(base) / "edgerob")


# --- planning: everything that can refuse, before anything is measured ----------------------

def check_names(target, profile) -> None:
    """The profile's power modes are the target's (the catalog alone: no machine read)."""
    if profile.power_modes and profile.power_limits_w:
        raise EdgerobError(f"profile {profile.name!r} gives both power_modes (nvpmodel, Jetson) "
                           f"and power_limits_w (NVIDIA GPU): one kind of device per profile")
    unknown = [m for m in profile.power_modes if m != "all" and m not in target.power_modes]
    if unknown:
        raise EdgerobError(f"profile {profile.name!r}: power mode {', '.join(unknown)} is not one "
                           f"of target {target.name!r}'s power_modes "
                           f"({', '.join(target.power_modes) or 'none'})")


def preflight(target, profile) -> None:
    """What can be refused before the workload is prepared: the mode names, and on this
    machine the privileges to change modes (`plan` checks the rest when the sweep starts)."""
    check_names(target, profile)
    if target.is_local and (profile.power_modes or profile.power_limits_w):
        privileges("jetson" if profile.power_modes else "nvml")


def plan(target, profile, gpu: dict | None = None, nvml=None) -> list[Setting]:
    """The operating points `profile` sweeps on this machine ([] if none), each checked: the
    mode exists here, needs no reboot, and this process may set it. `gpu` names the GPU the
    runtime runs on (its info()), for power limits."""
    check_names(target, profile)
    if profile.power_modes:
        names = target.power_modes if profile.power_modes == ["all"] else profile.power_modes
        settings = _jetson_settings(names)
    elif profile.power_limits_w:
        settings = _gpu_settings(profile.power_limits_w, gpu, nvml)
    else:
        return []
    way = privileges(settings[0].kind)
    if (isinstance(way, Nvpmodel) and shutil.which("jetson_clocks") is None
            and read_power_mode()["power_mode_facts"].get("jetson_clocks")):
        raise EdgerobError("jetson_clocks is active but not on PATH, so it could not be put "
                           "back after the sweep (nvpmodel -m undoes it); nothing measured")
    return settings


def _jetson_settings(names: list[str]) -> list[Setting]:
    root = sysroot()
    if not is_jetson(root):
        raise EdgerobError("power_modes are nvpmodel modes, and this machine is not a Jetson")
    conf = _text(root / "etc/nvpmodel.conf") or ""
    ids = {name: i for i, name in conf_modes(conf).items()}
    missing = [n for n in names if n not in ids]
    if missing:
        raise EdgerobError(f"etc/nvpmodel.conf has no power mode {', '.join(missing)} (it has "
                           f"{', '.join(ids) or 'none'}); nothing measured")
    now = read_power_mode(root)["power_mode_facts"].get("nvpmodel_id")
    if now is None:
        raise EdgerobError("the current nvpmodel mode is unreadable, so it could not be put back "
                           "after the sweep; nothing measured")
    blocks = reboot_settings(conf)
    for name in names:
        changed = sorted(k for k in blocks.get(now, {}).keys() | blocks.get(ids[name], {}).keys()
                         if blocks.get(now, {}).get(k) != blocks.get(ids[name], {}).get(k))
        if changed:
            raise EdgerobError(
                f"power mode {name} needs a reboot from the current mode (id {now}): it changes "
                f"{', '.join(' '.join(k) for k in changed[:3])}; set it with nvpmodel -m "
                f"{ids[name]} and reboot, or leave it out of power_modes; nothing measured")
    return [Setting(n, "jetson", nvpmodel_id=ids[n]) for n in names]


def reboot_settings(conf: str) -> dict[int, dict[tuple[str, str], str]]:
    """Mode id -> {(PARAM, ARG): value} of the nvpmodel.conf lines that need a reboot to change
    (`CPU_ONLINE CORE_4 0`, `TPC_POWER_GATING TPC_PG_MASK 1`)."""
    out: dict[int, dict] = {}
    mode = None
    for line in conf.splitlines():
        header = _HEADER.match(line)
        if header:
            mode = int(header.group(2)) if header.group(1) == "POWER_MODEL" else None
            if mode is not None:
                out.setdefault(mode, {})
            continue
        parts = line.split()
        if mode is not None and len(parts) == 3 and parts[0] in _REBOOT_PARAMS:
            out[mode][(parts[0], parts[1])] = parts[2]
    return out


def _gpu_settings(limits_w: list[float], gpu: dict | None, nvml) -> list[Setting]:
    nvml = nvml or _pynvml()
    with _nvml_session(nvml):
        h = gpu_handle(nvml, gpu or {})
        if h is None:
            raise EdgerobError("power_limits_w: the runtime does not run on an NVIDIA GPU here")
        default = nvml.nvmlDeviceGetPowerManagementDefaultLimit(h)
        low, high = nvml.nvmlDeviceGetPowerManagementLimitConstraints(h)
    out = []
    for w in limits_w:
        mw = int(round(w * default if w <= 1 else w * 1000))
        if not low <= mw <= high:
            raise EdgerobError(f"power limit {mw / 1000:g} W is outside this GPU's range "
                               f"{low / 1000:g}-{high / 1000:g} W; nothing measured")
        out.append(Setting(gpu_limit_label(mw, default), "nvml", limit_mw=mw))
    return out


def _is_root() -> bool:
    return os.geteuid() == 0


def privileges(kind: str) -> ModeSetter | None:
    """How this process may change modes of `kind`: nvpmodel modes through nvpmodel as root or
    with `sudo -n`, else jtop's service; NVML limits as root (None). EdgerobError naming every
    fix where there is no way."""
    if _is_root():
        return Nvpmodel([]) if kind == "jetson" else None
    if kind == "nvml":
        raise EdgerobError("setting a GPU power limit needs root (NVML): run edgerob profile as "
                           "root; nothing measured")
    sudo = shutil.which("sudo")
    if sudo and subprocess.run([sudo, "-n", "true"], stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30).returncode == 0:
        return Nvpmodel([sudo, "-n"])
    jtop, why = JtopService.reachable()
    if jtop is not None:
        return jtop
    raise EdgerobError("changing the nvpmodel mode needs root: run as root, allow this user "
                       "nvpmodel and jetson_clocks through sudo without a password (sudo -n "
                       "true fails here), or join group jtop with the jtop service running "
                       f"(jtop: {why}); nothing measured")


class ModeSetter(Protocol):
    """A way to change a Jetson's mode. Neither call verifies: `settle` reads the mode back."""

    def set(self, setting: Setting) -> None: ...

    def jetson_clocks(self, on: bool) -> None: ...


@dataclass
class Nvpmodel:
    """nvpmodel and jetson_clocks, found on PATH, run behind `prefix` ([] as root, sudo -n)."""

    prefix: list

    def _run(self, name: str, *args: str) -> subprocess.CompletedProcess:
        exe = shutil.which(name)
        if exe is None:
            raise EdgerobError(f"{name} is not on PATH: cannot set the power mode")
        # stdin closed: nvpmodel's reboot prompt reads EOF instead of waiting for an answer
        return subprocess.run([*self.prefix, exe, *args], stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, timeout=120)

    def set(self, setting: Setting) -> None:
        done = self._run("nvpmodel", "-m", str(setting.nvpmodel_id))
        said = (done.stdout + done.stderr).strip()
        if done.returncode != 0 or "reboot" in said.lower():
            raise EdgerobError(f"nvpmodel -m {setting.nvpmodel_id} ({setting.label}) did not "
                               f"set the mode (exit {done.returncode}): {said[:200]}")

    def jetson_clocks(self, on: bool) -> None:
        if not on:
            return  # nvpmodel -m, which comes next, sets the mode's floors: the pinning ends
        done = self._run("jetson_clocks")
        if done.returncode != 0:
            raise EdgerobError(f"jetson_clocks exited {done.returncode}: "
                               f"{(done.stdout + done.stderr).strip()[:200]}")


class JtopService:
    """jtop's service (jetson-stats) changes the mode, as root, for a user in group jtop. Its
    setters only queue the change (the service runs nvpmodel in a thread of its own)."""

    @classmethod
    def reachable(cls) -> tuple[JtopService | None, str | None]:
        """(the service, None) where it answers and has nvpmodel, else (None, why not)."""
        try:
            with cls()._client() as jetson:
                if getattr(jetson, "nvpmodel", None) is None:
                    return None, "the jtop service has no nvpmodel on this board"
        except EdgerobError as e:
            return None, str(e)
        return cls(), None

    @contextmanager
    def _client(self):
        try:
            client = _connect(1.0)
        except ImportError:
            raise EdgerobError("jetson-stats is not installed") from None
        except Exception as e:  # noqa: BLE001 - JtopException and OS errors become the reason
            raise EdgerobError(_reason(e, SOCKET)) from None
        try:
            yield client
        except EdgerobError:
            raise
        except Exception as e:  # noqa: BLE001 - the service refused the change
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise EdgerobError(f"jtop refused the change: {first}") from None
        finally:
            _close(client)

    def set(self, setting: Setting) -> None:
        with self._client() as jetson:
            jetson.nvpmodel = setting.nvpmodel_id

    def jetson_clocks(self, on: bool, timeout_s: float = 30.0) -> None:
        with self._client() as jetson:
            jetson.jetson_clocks = on
        # the service runs it in a thread: wait until the clocks show it done, so a mode change
        # that follows does not find it half-way (a verify reads what came of it anyway)
        deadline = time.monotonic() + timeout_s
        while (read_power_mode()["power_mode_facts"].get("jetson_clocks") != on
               and time.monotonic() < deadline):
            time.sleep(0.2)


# --- setting, verifying, restoring ----------------------------------------------------------

def _pynvml():
    import pynvml  # optional: only machines with NVIDIA GPUs have it

    return pynvml


@contextmanager
def _nvml_session(nvml):
    nvml.nvmlInit()
    try:
        yield
    finally:
        nvml.nvmlShutdown()


def apply(setting: Setting, gpu: dict | None = None, nvml=None,
          way: ModeSetter | None = None) -> None:
    """Ask the device for `setting` (not verified here: see ModeSweep.set); a Jetson's through
    `way` (default: the one `privileges` finds)."""
    if setting.kind == "nvml":
        nvml = nvml or _pynvml()
        privileges("nvml")
        with _nvml_session(nvml):
            nvml.nvmlDeviceSetPowerManagementLimit(gpu_handle(nvml, gpu or {}), setting.limit_mw)
        return
    (way or privileges("jetson")).set(setting)


def put_back(setting: Setting, read: Callable[[], dict], settle_s: float, poll_s: float,
             gpu: dict | None = None, nvml=None, way: ModeSetter | None = None) -> dict:
    """Restore an original mode, jetson_clocks too where it was active, and verify it."""
    if setting.kind == "jetson":
        way = way or privileges("jetson")
    apply(setting, gpu, nvml, way)
    if setting.jetson_clocks:
        way.jetson_clocks(True)
    return settle(read, setting, settle_s, poll_s,
                  then="the next sweep retries; set it by hand if it keeps failing")


def _caps(mode: dict) -> tuple:
    """What a mode change moves and then holds: frequency floors and caps, online cores, limits
    (current frequencies keep moving with the load)."""
    f = mode["power_mode_facts"]
    span = lambda d: None if d is None else (d.get("min"), d.get("max"))  # noqa: E731
    return (mode["power_mode"], f.get("cpu_online"), span(f.get("gpu_hz")),
            span(f.get("emc_hz")), f.get("emc_cap_hz"), f.get("power_limit_enforced_mw"),
            tuple(sorted((k, span(v)) for k, v in (f.get("cpu_khz") or {}).items())))


@dataclass
class ModeSweep:
    """Context manager around a sweep over `settings`: `set(s)` changes the mode and returns it
    verified; leaving puts the original mode back and removes the state file. With no settings
    it changes nothing."""

    settings: list
    gpu: dict | None = None
    nvml: object = None
    on_note: Callable[[str], None] | None = None
    settle_s: float = 30.0  # longest wait for a new mode's clocks to hold still
    poll_s: float = 0.5

    def read(self) -> dict:
        return read_power_mode(gpu=self.gpu, nvml=self.nvml)

    def __enter__(self) -> "ModeSweep":
        self.original: Setting | None = None
        self.changed = False
        self._previous_handler = None
        if not self.settings:
            return self
        self.original = current_setting(self.settings[0].kind, self.read())
        self.way = privileges("jetson") if self.original.kind == "jetson" else None
        self.state = state_dir() / _state_name(self.original, self.gpu)
        _write_state(self.state, {**asdict(self.original), "gpu": _gpu_id(self.gpu),
                                  "pid": os.getpid(), "boot_id": _boot_id()})
        if threading.current_thread() is threading.main_thread():
            self._previous_handler = signal.signal(signal.SIGTERM, _terminate)
        return self

    def set(self, setting: Setting) -> dict:
        """Set `setting`, wait until its clocks hold still (at most settle_s), and return the
        mode read back; EdgerobError naming both when it is not the one asked."""
        first, self.changed = not self.changed, True  # from here on, the leave restores
        if first and self.original.jetson_clocks:
            self.way.jetson_clocks(False)  # the modes are measured without it (module docstring)
        apply(setting, self.gpu, self.nvml, self.way)
        mode = settle(self.read, setting, self.settle_s, self.poll_s)
        if self.on_note:
            self.on_note(f"power mode {mode['power_mode']} set and verified")
        return mode

    def __exit__(self, *exc) -> None:
        if self.original is None:
            return
        if self._previous_handler is not None:
            signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second TERM must not stop the restore
        try:
            if self.changed:
                put_back(self.original, self.read, self.settle_s, self.poll_s, self.gpu,
                         self.nvml, self.way)
                if self.on_note:
                    self.on_note(f"power mode {self.original.label} restored")
            # kept where restoring failed: the next start retries
            self.state.unlink(missing_ok=True)
        finally:
            if self._previous_handler is not None:
                signal.signal(signal.SIGTERM, self._previous_handler)


def _terminate(signum, frame):
    raise SystemExit(128 + signum)  # unwinds the sweep, so the original mode is put back


def settle(read: Callable[[], dict], setting: Setting, timeout_s: float, poll_s: float,
           then: str = "nothing measured in it") -> dict:
    """Read the mode until it is `setting` and its caps are the same twice in a row, for at most
    `timeout_s`; EdgerobError (ending with `then`) if it is still another mode then."""
    deadline = time.monotonic() + timeout_s
    last = None
    while True:
        mode = read()
        caps = _caps(mode)
        if same_mode(mode["power_mode"], setting.label) and caps == last:
            return mode
        if time.monotonic() >= deadline:
            break
        last = caps
        time.sleep(poll_s)
    if not same_mode(mode["power_mode"], setting.label):
        got = mode["power_mode"] or mode["power_mode_facts"].get("reason")
        raise EdgerobError(f"power mode {setting.label} did not take: the device reads {got}; "
                           f"{then}")
    return mode  # the asked mode, its clocks still moving after timeout_s: the facts say so


def current_setting(kind: str, mode: dict) -> Setting:
    """The mode the device is in, as a Setting to put back."""
    f = mode["power_mode_facts"]
    if kind == "jetson" and f.get("nvpmodel_id") is not None and f.get("nvpmodel_mode"):
        clocks = bool(f.get("jetson_clocks"))
        return Setting(f["nvpmodel_mode"] + ("+jetson_clocks" if clocks else ""), "jetson",
                       nvpmodel_id=f["nvpmodel_id"], jetson_clocks=clocks)
    if kind == "nvml" and f.get("power_limit_mw") is not None:
        return Setting(gpu_limit_label(f["power_limit_mw"], f["power_limit_default_mw"]),
                       "nvml", limit_mw=f["power_limit_mw"])
    raise EdgerobError(f"the current power mode is unreadable ({f.get('reason')}), so it could "
                       f"not be put back after the sweep; nothing measured")


_GPU_KEYS = ("device_uuid", "pci_bus_id", "cuda_device", "index")  # as gpu_handle reads them


def _gpu_id(gpu: dict | None) -> dict:
    """What names the GPU in a runtime's info(), for the state file."""
    return {k: gpu[k] for k in _GPU_KEYS if (gpu or {}).get(k) is not None}


def _state_name(setting: Setting, gpu: dict | None) -> str:
    if setting.kind == "jetson":
        return "power-mode-jetson.json"
    which = next(iter(_gpu_id(gpu).values()), "gpu")
    return "power-mode-nvml-" + re.sub(r"[^\w.-]", "_", str(which)) + ".json"


def _write_state(path: Path, state: dict) -> None:
    """Written whole or not at all (a kill may come at any moment)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w") as f:
        json.dump(state, f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _boot_id() -> str | None:
    return _text(Path("/proc/sys/kernel/random/boot_id"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def restore_pending(on_note: Callable[[str], None] | None = None, nvml=None,
                    settle_s: float = 30.0, poll_s: float = 0.5) -> list[str]:
    """Put back the modes a killed sweep left set (its state files), before a sweep starts.
    Returns the labels restored. EdgerobError where another sweep is still changing modes, or
    the mode cannot be put back."""
    restored = []
    for path in sorted(state_dir().glob("power-mode-*.json")):
        try:
            state = json.loads(path.read_text())
            setting = Setting(state["label"], state["kind"], state.get("nvpmodel_id"),
                              state.get("limit_mw"), bool(state.get("jetson_clocks")))
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise EdgerobError(f"unreadable power mode state file {path} ({e}): delete it after "
                               f"checking the device's power mode") from None
        pid = state.get("pid")
        if (pid and pid != os.getpid() and state.get("boot_id") == _boot_id()
                and _alive(pid)):
            raise EdgerobError(f"another edgerob sweep (pid {pid}) is changing power modes here; "
                               f"wait for it, or delete {path} if no sweep is running")
        gpu = state.get("gpu")
        put_back(setting, lambda: read_power_mode(gpu=gpu, nvml=nvml), settle_s, poll_s, gpu,
                 nvml)
        path.unlink()
        restored.append(setting.label)
        if on_note:
            on_note(f"restored power mode {setting.label}, left changed by an interrupted sweep "
                    f"(pid {pid}; state file {path})")
    return restored
