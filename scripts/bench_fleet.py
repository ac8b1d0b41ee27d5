"""Wall time of a fleet of N loopback-SSH devices, all at once (`run_fleet`) vs one after another
(`profile_remote` per device), in one run.

Each device is this machine behind a real SSH server on loopback (asyncssh in process, driven by
OpenSSH, as tests/test_remote.py does), with its own bundle folder and its own device-lock
directory, as separate machines would have. They share this machine's cores, so the measuring
itself cannot run N times faster here; what concurrency saves is the waiting: connecting,
copying, starting edgerob on the device, fetching and ingesting. Every run is a new run
(`new_run=True`), so both ways measure every cell.

    PYTHONPATH=. python scripts/bench_fleet.py [--devices 4] [--model DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from test_remote import Server  # noqa: E402  the loopback SSH server of the tests

from edgerob.catalog.profiles import Profile  # noqa: E402
from edgerob.catalog.targets import Target  # noqa: E402
from edgerob.fleet.fleet import Member, prepare_all, run_fleet  # noqa: E402
from edgerob.fleet.remote import profile_remote  # noqa: E402
from edgerob.host.train import TrainConfig, default_model  # noqa: E402
from edgerob.host.workload import prepare_workload  # noqa: E402
from edgerob.store import Store  # noqa: E402

PROFILE = {"name": "bench-fleet", "precisions": ["fp32"], "batch_sizes": [1, 8], "samples": 64,
           "timing": {"warmup_s": 0.1, "min_duration_s": 0.5, "min_iterations": 10,
                      "rounds": 6}}


def main() -> None:
    # asyncssh leaves a Queue.join coroutine unawaited per session (the tests filter it too)
    sys.unraisablehook = lambda unraisable: None
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--devices", type=int, default=4)
    ap.add_argument("--model", type=Path, help="model folder (default: the default model)")
    args = ap.parse_args()
    model = args.model or default_model(TrainConfig())[0]
    profile = Profile.model_validate(PROFILE)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        server = Server(tmp)
        try:
            targets = []
            for i in range(args.devices):
                base = server.target(tmp).model_dump()
                base.update(name=f"loop{i}", remote_dir=str(tmp / f"device{i}"), threads=1,
                            remote_command=["env", f"EDGEROB_LOCK_DIR={tmp / f'locks{i}'}",
                                            sys.executable, "-m", "edgerob.cli"])
                targets.append(Target.model_validate(base))
            members = [Member(t, profile, model) for t in targets]
            work = prepare_all(members, prepare_workload)
            (key,) = work

            store = Store(f"sqlite:///{tmp}/serial.db")
            t0 = time.perf_counter()
            for t in targets:
                profile_remote(t, profile, work[key], store, new_run=True)
            serial = time.perf_counter() - t0

            store = Store(f"sqlite:///{tmp}/fleet.db")
            t0 = time.perf_counter()
            runs = run_fleet(members, store, work, new_run=True)
            fleet = time.perf_counter() - t0
            failed = [r.name for r in runs if r.failed]
            if failed:
                sys.exit(f"devices failed: {failed}: {[r.error for r in runs if r.failed]}")
            cells = sum(r.measured for r in runs)
        finally:
            server.close()
    print(f"{args.devices} loopback devices, profile {profile.name} (fp32, batch 1 and 8, "
          f"clean), threads 1 each, {cells} cells in the fleet run")
    print(f"one after another  {serial:7.1f} s")
    print(f"fleet (at once)    {fleet:7.1f} s")
    print(f"ratio serial / fleet: {serial / fleet:.2f}")


if __name__ == "__main__":
    main()
