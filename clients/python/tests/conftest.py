"""Fixtures: one persister and two daemons (Alice = TEST_AGENT1, Bob = TEST_AGENT2) for
the whole session, and a fresh HGXLink per test."""

import logging
import sys
import threading
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import hgx  # noqa: E402
from harness import Daemon, Persister  # noqa: E402

logging.getLogger("hgx").setLevel(logging.INFO)

# Every wait for an event in the tests is bounded by this.
WAIT = 20


class Servers:
    def __init__(self, root):
        self.root = root
        self.persister = Persister(root / "persister")
        self.alice = None
        self.bob = None

    def start(self):
        self.persister.start()
        self.alice = Daemon(self.root, "alice", "TEST_AGENT1", self.persister.port).start()
        self.bob = Daemon(self.root, "bob", "TEST_AGENT2", self.persister.port).start()
        return self

    def stop(self):
        for d in (self.alice, self.bob):
            if d is not None:
                d.stop()
        self.persister.stop()


@pytest.fixture(scope="session")
def servers(tmp_path_factory):
    s = Servers(tmp_path_factory.mktemp("hgx"))
    try:
        s.start()
        yield s
    finally:
        s.stop()


@pytest.fixture(scope="session")
def alice(servers):
    return servers.alice


@pytest.fixture(scope="session")
def bob(servers):
    return servers.bob


def make_link(daemon, **kwargs):
    kwargs.setdefault("timeout", 30)
    return hgx.HGXLink(ipc_port=daemon.ipc_port, home=daemon.home, **kwargs)


@pytest.fixture
def alink(alice):
    link = make_link(alice)
    yield link
    link.stop_threadsafe()


@pytest.fixture
def blink(bob):
    link = make_link(bob)
    yield link
    link.stop_threadsafe()


def require_ops(link, *ops):
    """Skips the test when the running daemon does not offer one of ``ops``."""
    missing = [op for op in ops if not link.has_op(op)]
    if missing:
        pytest.skip("the running hgxd does not offer %s yet (its hello op table lacks them)"
                    % ", ".join(missing))


class Recorder:
    """Collects calls from any thread; ``wait(n)`` blocks until n arrived (bounded)."""

    def __init__(self):
        self.calls = []
        self.cond = threading.Condition()

    def record(self, *args):
        with self.cond:
            self.calls.append(args)
            self.cond.notify_all()

    async def async_record(self, *args):
        self.record(*args)

    def wait(self, n=1, timeout=WAIT):
        with self.cond:
            ok = self.cond.wait_for(lambda: len(self.calls) >= n, timeout)
        assert ok, "expected %d call(s) within %s s, got %d: %r" % (n, timeout, len(self.calls), self.calls)
        return self.calls


@pytest.fixture
def recorder():
    return Recorder()


FORMS = ["plain", "threadsafe", "loopsafe"]


def call(form, target, name, *args, **kwargs):
    """Calls ``target.<name>`` in one of its three forms and returns the result:
    ``plain`` awaits the coroutine in the link's own loop, ``threadsafe`` blocks on
    ``<name>_threadsafe`` from this thread, ``loopsafe`` awaits ``<name>_loopsafe`` from a
    separate event loop of this thread."""
    import asyncio

    link = target if isinstance(target, hgx.HGXLink) else target._hgx_link_
    if form == "threadsafe":
        return getattr(target, name + "_threadsafe")(*args, **kwargs)
    if form == "plain":
        coro = getattr(target, name)(*args, **kwargs)
        return asyncio.run_coroutine_threadsafe(coro, link._loop).result(WAIT)
    if form == "loopsafe":
        async def main():
            return await asyncio.wait_for(getattr(target, name + "_loopsafe")(*args, **kwargs), WAIT)

        return asyncio.run(main())
    raise ValueError(form)


def in_link(link, coro, timeout=WAIT):
    """Runs ``coro`` in the link's loop and returns its result."""
    import asyncio

    return asyncio.run_coroutine_threadsafe(coro, link._loop).result(timeout)


def eventually(predicate, timeout=WAIT, interval=0.05, message="condition"):
    import time

    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("%s not reached within %s s" % (message, timeout))
        time.sleep(interval)
