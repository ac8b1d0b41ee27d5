"""A throwaway PostgreSQL server for the tests: one per test session, a fresh database per test.

The server is Debian's (or any) PostgreSQL found on PATH or under /usr/lib/postgresql/*/bin. It
listens on a Unix socket only (listen_addresses=''), in a private temporary folder, with trust
authentication and no fsync: fast, reachable from this machine only, and deleted at exit.
PostgreSQL refuses to run as root, so as root it runs as the `postgres` user (Debian's package
creates it); none is created here.

Test modules share the one server through `server()` (a fixture defined in two modules would
start two). Use the `pg_url` fixture pattern:

    @pytest.fixture
    def pg_url():
        return pg.database_url()   # skips with the reason when no server can be started
"""

from __future__ import annotations

import atexit
import glob
import multiprocessing as mp
import os
import queue
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

PG_USER = "postgres"
PREFIX = "edgerob-pg-"


@dataclass
class Server:
    bindir: Path
    root: Path  # temporary folder: data/, the socket, log
    port: int
    runas: list[str]  # argv prefix to run a server binary as an unprivileged user

    @property
    def data(self) -> Path:
        return self.root / "data"

    def url(self, database: str, driver: str = "psycopg") -> str:
        return (f"postgresql+{driver}://{PG_USER}@/{database}?host={self.root}"
                f"&port={self.port}")

    def stop(self) -> None:
        subprocess.run([*self.runas, str(self.bindir / "pg_ctl"), "-D", str(self.data),
                        "-m", "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(self.root, ignore_errors=True)


_server: Server | None = None
_skip_reason: str | None = None


def find_bindir() -> Path | None:
    """The folder holding initdb, pg_ctl and postgres: PATH first, then Debian's layout."""
    on_path = shutil.which("initdb")
    candidates = [Path(os.path.realpath(on_path)).parent] if on_path else []
    candidates += [Path(p) for p in sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                           key=lambda p: _version_key(Path(p).parent.name),
                                           reverse=True)]
    for d in candidates:
        if all((d / b).is_file() and os.access(d / b, os.X_OK)
               for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _version_key(name: str) -> tuple:
    return tuple(int(p) if p.isdigit() else 0 for p in name.split("."))


def _free_port() -> int:
    # The server listens on a Unix socket only; the port just names the socket file. A port
    # free on TCP keeps it distinct from any other server's socket name anyway.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start() -> Server:
    bindir = find_bindir()
    if bindir is None:
        raise _Skip("PostgreSQL server binaries (initdb, pg_ctl, postgres) are not installed: "
                    "apt-get install postgresql")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise _Skip("the PostgreSQL driver psycopg is not installed: pip install -e '.[dev]'")
    runas: list[str] = []
    owner = None
    if os.geteuid() == 0:
        try:
            owner = pwd.getpwnam(PG_USER)
        except KeyError:
            raise _Skip(f"running as root and there is no {PG_USER!r} user to run PostgreSQL "
                        f"as (it refuses root; Debian's postgresql package creates the user)")
        runuser = shutil.which("runuser")
        runas = [runuser, "-u", PG_USER, "--"] if runuser else None
        if runas is None:
            raise _Skip("running as root and runuser is missing: cannot start PostgreSQL as "
                        f"{PG_USER}")
    _reap_stale(bindir, runas)
    root = Path(tempfile.mkdtemp(prefix=PREFIX))  # short: the socket path is limited
    (root / "owner.pid").write_text(str(os.getpid()))
    if owner is not None:
        os.chown(root, owner.pw_uid, owner.pw_gid)
    server = Server(bindir, root, _free_port(), runas)
    steps = [
        [*runas, str(bindir / "initdb"), "-D", str(server.data), "-U", PG_USER, "--auth=trust",
         "-E", "UTF8", "--no-sync", "--no-instructions"],
        [*runas, str(bindir / "pg_ctl"), "-D", str(server.data), "-l", str(root / "log"),
         "-o", f"-k {root} -p {server.port} -c listen_addresses='' -c fsync=off "
               f"-c synchronous_commit=off -c full_page_writes=off -c max_connections=200",
         "-w", "-t", "60", "start"],
    ]
    for argv in steps:
        try:
            p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as e:
            shutil.rmtree(root, ignore_errors=True)
            raise _Skip(f"cannot start PostgreSQL: {Path(argv[len(runas)]).name}: {e}")
        if p.returncode != 0:
            log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
            server.stop()
            tail = (p.stderr or p.stdout or log).strip().splitlines()[-3:]
            raise _Skip(f"cannot start PostgreSQL ({Path(argv[len(runas)]).name} exited "
                        f"{p.returncode}): {' | '.join(tail)}")
    atexit.register(server.stop)
    return server


def _reap_stale(bindir: Path, runas: list[str]) -> None:
    """Stop and delete the servers of earlier test sessions that were killed before their exit
    handler ran (their owner process is gone)."""
    for d in glob.glob(os.path.join(tempfile.gettempdir(), PREFIX + "*")):
        try:
            pid = int(Path(d, "owner.pid").read_text())
            os.kill(pid, 0)
            continue  # still running: another session's server
        except ProcessLookupError:
            pass
        except (OSError, ValueError):
            continue  # not ours to judge
        subprocess.run([*runas, str(bindir / "pg_ctl"), "-D", os.path.join(d, "data"), "-m",
                        "immediate", "-w", "stop"], capture_output=True, timeout=60)
        shutil.rmtree(d, ignore_errors=True)


class _Skip(Exception):
    pass


def server() -> Server:
    """The session's server, started on first use; skips the calling test (with the reason)
    where none can be started."""
    global _server, _skip_reason
    if _server is None and _skip_reason is None:
        try:
            _server = _start()
        except _Skip as e:
            _skip_reason = str(e)
    if _server is None:
        pytest.skip(_skip_reason)
    return _server


def database_url(name: str | None = None) -> str:
    """A new, empty database on the session's server; its SQLAlchemy URL (psycopg 3)."""
    import psycopg

    srv = server()
    name = name or f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(host=str(srv.root), port=srv.port, user=PG_USER, dbname="postgres",
                         autocommit=True) as c:
        c.execute(f'CREATE DATABASE "{name}"')
    return srv.url(name)


def run_processes(target, args_of, n: int, timeout: float = 120) -> list:
    """Start `n` spawned processes target(*args_of(i), barrier, results) at once; their results.
    A process that fails fails the test (its siblings are stopped, never left behind)."""
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*args_of(i), barrier, results), daemon=True)
             for i in range(n)]
    for p in procs:
        p.start()
    try:
        out = []
        deadline = time.monotonic() + timeout
        while len(out) < n:
            try:
                out.append(results.get(timeout=1))
            except queue.Empty:
                dead = [p for p in procs if p.exitcode not in (None, 0)]
                assert not dead, f"a process failed (exit code {dead[0].exitcode})"
                assert time.monotonic() < deadline, "processes did not finish in time"
        for p in procs:
            p.join(timeout=60)
            assert p.exitcode == 0
        return out
    finally:
        for p in procs:
            if p.is_alive():
                p.kill()
                p.join(timeout=10)
