"""Real servers for the tests: one ``hgx-persister`` and ``hgxd`` daemons (Alice, Bob) on
127.0.0.1, each in a temporary home. Every wait is bounded.

Binaries (``cargo build --bins`` first) are looked for in ``$HGX_BIN_DIR`` if set, else in
``$CARGO_TARGET_DIR/debug``, else in ``target/debug`` of the repository. Identities come from
the repository's fixture file ``tests/vectors/golix/fixture_identities.json``, so no RSA key
is ever generated here.
"""

import json
import os
import re
import signal
import socket
import subprocess
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]


def _bin_dir():
    if os.environ.get("HGX_BIN_DIR"):
        return Path(os.environ["HGX_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR") or REPO / "target")
    if not target.is_absolute():
        target = REPO / target
    return target / "debug"


BIN_DIR = _bin_dir()
IDENTITIES = REPO / "tests" / "vectors" / "golix" / "fixture_identities.json"
VECTORS = REPO / "tests" / "vectors" / "ipc"

READY = re.compile(r"hgxd: ready on ws://127\.0\.0\.1:(\d+)/")
LISTENING = re.compile(r"listening on http://127\.0\.0\.1:(\d+)")


def binary(name):
    path = BIN_DIR / name
    if not path.exists():
        raise RuntimeError("%s not built: run `cargo build --bins` first (looked in %s)" % (name, BIN_DIR))
    return str(path)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def identity(name):
    try:
        with open(IDENTITIES) as f:
            return json.load(f)[name]
    except FileNotFoundError:
        raise RuntimeError("fixture identities missing: %s" % IDENTITIES) from None


def _wait_for(path, pattern, proc, timeout, start_at=0, what="server"):
    """Polls ``path`` (from byte ``start_at``) until ``pattern`` matches; returns the
    match. Fails early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            with open(path, "rb") as f:
                f.seek(start_at)
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            text = ""
        m = pattern.search(text)
        if m:
            return m
        if proc.poll() is not None:
            raise RuntimeError("%s exited (%s) before it was ready:\n%s" % (what, proc.returncode, text[-3000:]))
        if time.monotonic() > deadline:
            raise RuntimeError("%s not ready within %s s:\n%s" % (what, timeout, text[-3000:]))
        time.sleep(0.05)


def _terminate(proc, timeout):
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)


class Persister:
    """``hgx-persister --port 0`` in ``root``; ``port`` once started."""

    def __init__(self, root):
        self.dir = Path(root)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.proc = None
        self.port = None
        self.log = self.dir / "persister.out"

    def start(self, timeout=30):
        cmd = [
            binary("hgx-persister"),
            "--port", "0",
            "--ghidcache", str(self.dir / "ghidcache"),
            "--pid-file", str(self.dir / "p.pid"),
            "--logdir", str(self.dir / "logs"),
        ]
        env = dict(os.environ, HYPERGOLIX_HOME=str(self.dir))
        env.pop("HGX_CONFIG", None)
        with open(self.log, "ab") as out:
            start_at = out.tell()
            self.proc = subprocess.Popen(
                cmd, cwd=self.dir, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        m = _wait_for(self.log, LISTENING, self.proc, timeout, start_at, "hgx-persister")
        self.port = int(m.group(1))
        return self

    def stop(self, timeout=30):
        _terminate(self.proc, timeout)


class Daemon:
    """One user's ``hgxd`` with its own home (config, ghidcache, logs, ``ipc.token``)."""

    def __init__(self, root, name, identity_name, persister_port, password="correct horse battery"):
        self.name = name
        self.home = Path(root) / name
        self.home.mkdir(parents=True, exist_ok=True)
        self.password = password
        self.ipc_port = free_port()
        self.proc = None
        self.log = self.home / "hgxd.out"
        self.identity_file = self.home / "id.json"
        with open(self.identity_file, "w") as f:
            json.dump(identity(identity_name), f)
        with open(self.home / "hypergolix.yml", "w") as f:
            f.write(
                "process: {ghidcache: ./ghidcache, logdir: ./logs, pid_file: ./hgxd.pid, "
                "ipc_port: %d}\n"
                "instrumentation: {verbosity: info}\n"
                # Test-cost scrypt (N = 2^10); the account records it on creation.
                "user: {scrypt: {log_n: 10, r: 8, p: 1}}\n"
                "remotes: [{host: 127.0.0.1, port: %d, tls: false}]\n"
                % (self.ipc_port, persister_port)
            )

    @property
    def env(self):
        """The environment an app of this user runs with."""
        env = dict(os.environ, HYPERGOLIX_HOME=str(self.home))
        env.pop("HGX_CONFIG", None)
        return env

    @property
    def fingerprint(self):
        text = (self.home / "hypergolix.yml").read_text()
        m = re.search(r"fingerprint:\s*['\"]?([A-Za-z0-9_=-]+)", text)
        return m.group(1) if m else None

    def start(self, timeout=60):
        env = dict(self.env, HGX_PASSWORD=self.password)
        with open(self.log, "ab") as out:
            start_at = out.tell()
            self.proc = subprocess.Popen(
                [binary("hgxd"), "--identity-file", str(self.identity_file)],
                cwd=self.home, env=env, stdin=subprocess.DEVNULL, stdout=out,
                stderr=subprocess.STDOUT,
            )
        m = _wait_for(self.log, READY, self.proc, timeout, start_at, "hgxd (%s)" % self.name)
        assert int(m.group(1)) == self.ipc_port
        return self

    def stop(self, timeout=30):
        _terminate(self.proc, timeout)

    def restart(self, timeout=60):
        self.stop()
        return self.start(timeout)

    def log_tail(self, n=4000):
        try:
            return self.log.read_text(errors="replace")[-n:]
        except FileNotFoundError:
            return ""
