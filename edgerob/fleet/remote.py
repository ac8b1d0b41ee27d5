"""Remote targets: profile a device over SSH with the user's own OpenSSH set-up.

For a target whose host is `ssh://user@host[:port]`: write the prepared workload as a bundle,
stream it to `REMOTE_DIR/BUNDLE_ID` on the device (tar over ssh), run `edgerob profile --bundle`
there, fetch the device's results database and ingest it. The bundle id is a hash of the bundle's contents, so
re-running after a lost connection sends the same folder and the device resumes its partial run.

OpenSSH does the connecting: keys, agents and ~/.ssh/config work as usual, with
`StrictHostKeyChecking=yes` (an unknown host is refused, not trusted) and `BatchMode=yes` (no
password prompts in the middle of a sweep). Local commands are argument lists; the one string the
remote shell sees is built with shlex quoting from values edgerob controls or validated.
"""

from __future__ import annotations

import hashlib
import json
import re
import shlex
import subprocess
import tarfile
import tempfile
import threading
from pathlib import Path
from typing import Callable

from edgerob.catalog.targets import parse_ssh_host
from edgerob.device.sweep import Workload
from edgerob.errors import EdgerobError
from edgerob.fleet.bundle import RESULTS_DB, ingest, write_bundle


CONNECT_TIMEOUT_S = 15
# One ingest at a time in this process (a fleet's threads): two threads' SQLite transactions that
# read then write can refuse each other at once (SQLITE_BUSY, no wait); ingesting is short.
_INGESTING = threading.Lock()


def ssh_command(target, connect_timeout_s: int = CONNECT_TIMEOUT_S) -> list[str]:
    dest, port = parse_ssh_host(target.host)
    # a timeout for hosts that never answer (the user's own -o ConnectTimeout comes first: wins)
    return ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            *(["-p", str(port)] if port else []), *target.ssh_options,
            "-o", f"ConnectTimeout={connect_timeout_s}", dest]
# What `edgerob profile --cell-lines` prints per cell, read back here for the host's progress.
CELL_LINE = re.compile(r"^edgerob-cell (\d+)/(\d+) (measured|stored)$")


def cell_line(done: int, total: int, measured: bool) -> str:
    return f"edgerob-cell {done}/{total} {'measured' if measured else 'stored'}"


def _last_line(data: bytes) -> str:
    lines = data.decode(errors="replace").strip().splitlines()
    return lines[-1] if lines else "no message"


def profile_remote(target, profile, work: Workload, store, *, new_run: bool = False,
                   wait: bool = True, on_step: Callable[[str], None] | None = None,
                   on_cell: Callable[[int, int, bool], None] | None = None) -> dict:
    """Bundle the prepared workload, copy, run on the device, fetch and ingest. Returns the
    ingest counts. `on_step(text)`: each step, and the device's line while it waits for its
    lock (`wait=False`: the device refuses instead, and this raises with its line);
    `on_cell(done, total, measured)`: after each cell on the device (measured False: it was
    stored already)."""
    step = on_step or (lambda s: None)
    ssh = ssh_command(target)
    with tempfile.TemporaryDirectory() as tmp:
        step("bundling")
        bundle = write_bundle(target, profile, work, Path(tmp) / "bundle")
        files = json.loads((bundle / "manifest.json").read_text())["files"]
        bundle_id = hashlib.sha256(json.dumps(
            [target.name, profile.name, files], sort_keys=True).encode()).hexdigest()[:16]
        remote = f"{target.remote_dir.rstrip('/')}/{bundle_id}"

        step(f"copying the bundle to {ssh[-1]}:{remote}")
        q = shlex.quote
        proc = subprocess.Popen(
            [*ssh, f"mkdir -p {q(remote)} && tar -C {q(remote)} -xf -"],
            stdin=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            with tarfile.open(fileobj=proc.stdin, mode="w|") as tar:
                for path in sorted(bundle.rglob("*")):
                    if path.is_file():
                        tar.add(path, arcname=str(path.relative_to(bundle)))
            proc.stdin.close()
        except BrokenPipeError:
            pass  # ssh ended early (refused host key, no route...): its exit says why
        err = proc.stderr.read()
        if proc.wait() != 0:
            raise EdgerobError(f"copying the bundle to {ssh[-1]} failed (exit {proc.returncode}):"
                               f" {_last_line(err)}")

        step("profiling on the device")
        cmd = [*target.remote_command, "profile", "--bundle", remote, "--cell-lines",
               *(["--new-run"] if new_run else []), *([] if wait else ["--no-wait"])]
        # the device's tables are not needed: its rows are ingested and shown here
        run = subprocess.Popen([*ssh, shlex.join(cmd)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, errors="replace")
        last = "no message"
        for line in run.stderr:
            line = line.strip()
            if m := CELL_LINE.match(line):
                if on_cell:
                    on_cell(int(m[1]), int(m[2]), m[3] == "measured")
                continue
            if line.startswith("waiting: "):
                step(line)
            last = line or last
        if run.wait() != 0:
            raise EdgerobError(f"profiling on {ssh[-1]} failed (exit {run.returncode}): "
                               f"{last}; its finished cells are kept there: "
                               f"run the same command again to resume")

        step("fetching results")
        for _ in range(2):  # reading is harmless to repeat: once more after a dropped connection
            fetched = subprocess.run([*ssh, shlex.join(["cat", f"{remote}/{RESULTS_DB}"])],
                                     capture_output=True)
            if fetched.returncode == 0:
                break
        if fetched.returncode != 0:
            raise EdgerobError(f"fetching results from {ssh[-1]} failed: "
                               f"{_last_line(fetched.stderr)}")
        db = Path(tmp) / "results.db"
        db.write_bytes(fetched.stdout)
        step("ingesting")
        with _INGESTING:
            return ingest(db, store)
