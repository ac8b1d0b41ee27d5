"""The device lock: one measurement per physical device at a time.

A sweep holds an exclusive `flock` on a file named after its device for as long as it runs; the
kernel releases it when the process ends, however it ends, so a crashed sweep never leaves a
stale lock. The file records its holder (pid, host, user, command, since) for the line a waiting
sweep shows; the file itself is never removed (removing a flock'd file races with its next
holder).

The device: the GPU a target names in its profiler options (`gpu_uuid`, `pci_bus_id`,
`cuda_device` or `gpu_index`, in that order), so two GPUs of one box can be measured at once,
else the whole machine. Two targets naming the same GPU in different ways (UUID vs ordinal) get
different locks: name GPUs one way on a multi-GPU box.

Where: `$EDGEROB_LOCK_DIR`, else /run/lock/edgerob, else /var/lock/edgerob (the system's lock
directories, shared by every user), else edgerob-locks in the temporary directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import getpass
import json
import os
import re
import socket
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

from edgerob.errors import EdgerobError

GPU_SELECTORS = ("gpu_uuid", "pci_bus_id", "cuda_device", "gpu_index")
POLL_S = 0.2  # how often a waiting sweep tries again


def device_key(target) -> str:
    """The lock's name for the device `target` measures: 'gpu-<selector>' or 'machine'."""
    for name in GPU_SELECTORS:
        value = target.profiler_options.get(name)
        if value is not None:
            return "gpu-" + re.sub(r"[^A-Za-z0-9.-]", "_", f"{name}-{value}")
    return "machine"


def _path(key: str) -> Path:
    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", key):
        raise EdgerobError(f"invalid device lock name {key!r}")
    return lock_dir() / f"{key}.lock"


def lock_dir() -> Path:
    """The first usable of $EDGEROB_LOCK_DIR, /run/lock/edgerob, /var/lock/edgerob, a temp dir."""
    if os.environ.get("EDGEROB_LOCK_DIR"):
        path = Path(os.environ["EDGEROB_LOCK_DIR"])
        path.mkdir(parents=True, exist_ok=True)
        return path
    for base in (Path("/run/lock"), Path("/var/lock"), Path(tempfile.gettempdir())):
        path = base / ("edgerob" if base != Path(tempfile.gettempdir()) else "edgerob-locks")
        try:
            path.mkdir(exist_ok=True)
            path.chmod(0o1777)  # every user's sweeps share it, as /run/lock itself
        except PermissionError:
            pass  # made by another user: usable if it is writable
        except OSError:
            continue
        if os.access(path, os.W_OK | os.X_OK):
            return path
    raise EdgerobError("no writable lock directory: set EDGEROB_LOCK_DIR")


def holder_line(holder: dict | None, key: str) -> str:
    if not holder:
        return f"device {key} is busy (holder unknown)"
    return (f"device {key} is busy: held by pid {holder.get('pid')} of {holder.get('user')}@"
            f"{holder.get('host')} since {holder.get('since')} ({holder.get('command')})")


def _open(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR)
    except PermissionError:  # another user's file, not writable: lockable, holder not written
        return os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)  # another user's sweep takes the same lock later
        return fd


def _read_holder(fd: int) -> dict | None:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"null")
    except (OSError, ValueError):
        return None  # being rewritten this instant


def holder(key: str) -> dict | None:
    """Who holds the lock `key` now (None: free)."""
    path = _path(key)
    if not path.exists():
        return None
    fd = os.open(path, os.O_RDONLY)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return _read_holder(fd) or {}
        fcntl.flock(fd, fcntl.LOCK_UN)
        return None
    finally:
        os.close(fd)


def refuse_if_busy(key: str) -> None:
    """Raise what `device_lock(key, wait=False)` raises if the device is busy now: a check
    before slow preparations, not a reservation (the sweep takes the lock itself)."""
    held = holder(key)
    if held is not None:
        raise _refusal(holder_line(held, key))


def _refusal(line: str) -> EdgerobError:
    return EdgerobError(f"{line}; run again when it is done, or without --no-wait to wait")


@contextlib.contextmanager
def device_lock(key: str, *, wait: bool = True,
                on_wait: Callable[[str], None] | None = None) -> Iterator[dict]:
    """Hold the exclusive lock of device `key` for the block. Busy: `on_wait(line)` with the
    holder's line (again whenever the holder changes) and wait, or with `wait=False` raise
    EdgerobError with that line. Yields the holder record written."""
    fd = _open(_path(key))
    try:
        shown = None
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                line = holder_line(_read_holder(fd), key)
                if not wait:
                    raise _refusal(line) from None
                if on_wait and line != shown:
                    on_wait(f"waiting: {line}")
                    shown = line
                time.sleep(POLL_S)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "user": _user(),
              "command": " ".join(sys.argv)[:300] or "python",
              "since": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        with contextlib.suppress(OSError):
            os.ftruncate(fd, 0)
            os.pwrite(fd, json.dumps(me).encode(), 0)
        try:
            yield me
        finally:
            with contextlib.suppress(OSError):
                os.ftruncate(fd, 0)
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return str(os.getuid())
