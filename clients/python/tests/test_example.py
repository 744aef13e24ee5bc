"""The example app (examples/status) end to end: Alice publishes, Bob watches."""

import subprocess
import sys

from conftest import make_link, require_ops
from harness import REPO

APP = REPO / "examples" / "status" / "status.py"


def run(daemon, *args, timeout=60):
    return subprocess.run(
        [sys.executable, str(APP), "--ipc-port", str(daemon.ipc_port), *args],
        env=daemon.env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
        timeout=timeout,
    )


def spawn(daemon, *args):
    return subprocess.Popen(
        [sys.executable, str(APP), "--ipc-port", str(daemon.ipc_port), *args],
        env=daemon.env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT, text=True,
    )


def test_status_app_two_users(alice, bob, tmp_path):
    link = make_link(alice)
    try:
        require_ops(link, "register_token", "register_startup", "register_share_handler", "share")
    finally:
        link.stop_threadsafe()
    state = tmp_path / "alice-status.token"

    # A first run creates the status object and remembers it as the startup object.
    first = run(alice, "publish", "--count", "1", "--interval", "0", "--state", str(state))
    assert first.returncode == 0, first.stdout + first.stderr
    status_ghid = next(l.split()[-1] for l in first.stdout.splitlines() if l.startswith("status object:"))
    assert state.exists()

    publisher = spawn(alice, "publish", "--interval", "0.3", "--count", "100", "--state", str(state))
    try:
        line = publisher.stdout.readline()
        assert line.startswith("fingerprint:"), line
        fingerprint = line.split()[-1]
        assert fingerprint == alice.fingerprint
        line = publisher.stdout.readline()
        assert line.split()[-1] == status_ghid  # the restarted publisher kept its object

        watcher = run(bob, "watch", fingerprint, "--count", "4", "--timeout", "45", timeout=60)
        out = watcher.stdout
        assert watcher.returncode == 0, out + watcher.stderr
        assert "watching " + status_ghid in out
        updates = [l for l in out.splitlines() if l.startswith("update ")]
        assert len(updates) >= 4, out
        numbers = [int(l.split("'n': ")[1].split(",")[0]) for l in updates]
        assert numbers == sorted(numbers) and len(set(numbers)) == len(numbers)
        assert "watcher done" in out
    finally:
        publisher.terminate()
        try:
            rest, _ = publisher.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            publisher.kill()
            rest, _ = publisher.communicate()
    assert "request from " + bob.fingerprint in rest
    assert "publisher done" in rest
