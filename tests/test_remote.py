"""Remote profiling through a real SSH server on loopback (asyncssh, in process) driven by the
user's OpenSSH client, as `edgerob profile --target` does for ssh:// hosts."""

import asyncio
import shutil
import subprocess
import sys
import threading

import pytest

from edgerob.errors import EdgerobError
from edgerob.catalog.targets import parse_ssh_host
from edgerob.fleet.remote import profile_remote, ssh_command
from edgerob.store import Store
from edgerob.catalog.profiles import Profile
from edgerob.host.workload import prepare_workload
from edgerob.catalog.targets import Target, load_target

# asyncssh leaves a Queue.join coroutine unawaited when a redirected process ends
pytestmark = [pytest.mark.filterwarnings("ignore:coroutine .Queue.join. was never awaited"),
              pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")]
asyncssh = pytest.importorskip("asyncssh", reason="asyncssh provides the loopback SSH server")
if shutil.which("ssh") is None:
    pytest.skip("no OpenSSH client (ssh) on PATH", allow_module_level=True)

PROFILE = {"name": "r", "precisions": ["fp32"], "batch_sizes": [1, 4], "samples": 16,
           "timing": {"warmup_s": 0.01, "min_duration_s": 0.05, "min_iterations": 5},
           "query_attack": {"eps": [0.2], "budget_queries": 10, "samples": 4,
                            "batch_sizes": [4]}}


async def _run_command(process):
    """Run what the client asked for in a shell, as sshd would, wiring stdin/stdout/stderr."""
    proc = await asyncio.create_subprocess_shell(
        process.command, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE)
    await process.redirect(stdin=proc.stdin, stdout=proc.stdout, stderr=proc.stderr)
    process.exit(await proc.wait())


class Server:
    def __init__(self, tmp_path):
        self.host_key = asyncssh.generate_private_key("ssh-ed25519")
        self.user_key = asyncssh.generate_private_key("ssh-ed25519")
        self.key_file = tmp_path / "id_ed25519"
        self.user_key.write_private_key(str(self.key_file))
        self.key_file.chmod(0o600)
        self.loop = asyncio.new_event_loop()
        ready = threading.Event()

        async def start():
            self.server = await asyncssh.create_server(
                asyncssh.SSHServer, "127.0.0.1", 0, server_host_keys=[self.host_key],
                authorized_client_keys=asyncssh.import_authorized_keys(
                    self.user_key.export_public_key().decode()),
                process_factory=_run_command, encoding=None)
            self.port = self.server.sockets[0].getsockname()[1]
            ready.set()

        self.thread = threading.Thread(target=lambda: (self.loop.run_until_complete(start()),
                                                       self.loop.run_forever()), daemon=True)
        self.thread.start()
        ready.wait(10)
        self.known_hosts = tmp_path / "known_hosts"
        self.known_hosts.write_text(f"[127.0.0.1]:{self.port} "
                                    f"{self.host_key.export_public_key().decode()}")

    def target(self, tmp_path, known_hosts=None) -> Target:
        base = load_target("cpu").model_dump()
        base.update(
            name="loopback", host=f"ssh://127.0.0.1:{self.port}",
            ssh_options=["-F", "/dev/null", "-i", str(self.key_file), "-o", "IdentitiesOnly=yes",
                         "-o", f"UserKnownHostsFile={known_hosts or self.known_hosts}"],
            remote_command=[sys.executable, "-m", "edgerob.cli"],
            remote_dir=str(tmp_path / "device"))
        return Target.model_validate(base)

    def close(self):
        self.loop.call_soon_threadsafe(self.server.close)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def server(tmp_path):
    s = Server(tmp_path)
    yield s
    s.close()


def test_parse_ssh_host():
    assert parse_ssh_host("ssh://nvidia@orin.local:2222") == ("nvidia@orin.local", 2222)
    assert parse_ssh_host("ssh://orin") == ("orin", None)
    for bad in ("nvidia@orin", "ssh://", "ssh://-oProxyCommand=x", "ssh://h/path", "http://h"):
        with pytest.raises(EdgerobError):
            parse_ssh_host(bad)


def test_ssh_command_is_strict():
    t = Target(name="x", host="ssh://u@h:2200", ssh_options=["-i", "key"])
    argv = ssh_command(t)
    assert argv[:5] == ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes"]
    assert argv[-1] == "u@h" and ["-p", "2200"] == argv[5:7]


def test_profile_over_ssh_end_to_end(server, tiny_model, tmp_path):
    target = server.target(tmp_path)
    store = Store(f"sqlite:///{tmp_path}/host.db")
    profile = Profile.model_validate(PROFILE)
    steps = []
    work = prepare_workload(profile, tiny_model)
    counts = profile_remote(target, profile, work, store, on_step=steps.append)
    assert counts["measurements"] == 2 and counts["failures"] == 4
    assert any("copying" in s for s in steps) and steps[-1] == "ingesting"
    rows = store.measurements()
    assert {(r["precision"], r["batch_size"]) for r in rows} == {("fp32", 1), ("fp32", 4)}
    assert all(r["target"] == "loopback" for r in rows)
    # again: same bundle folder on the device, the run resumes there, nothing is duplicated
    again = profile_remote(target, profile, work, store)
    assert again["measurements"] == 0 and again["failures"] == 0
    assert len(store.measurements()) == 2 and len(store.failures()) == 4
    assert len(list((tmp_path / "device").iterdir())) == 1


def test_unknown_host_key_is_refused(server, tiny_model, tmp_path):
    other = tmp_path / "other_known_hosts"
    other.write_text(f"[127.0.0.1]:{server.port} "
                     + asyncssh.generate_private_key("ssh-ed25519").export_public_key().decode())
    target = server.target(tmp_path, known_hosts=other)
    with pytest.raises(EdgerobError, match="failed"):
        profile = Profile.model_validate(PROFILE)
        profile_remote(target, profile, prepare_workload(profile, tiny_model),
                       Store(f"sqlite:///{tmp_path}/h.db"))
    assert not (tmp_path / "device").exists()
