"""HGXLink: connecting, the capability token, the op table, lifecycle forms."""

import asyncio
import threading
import time

import pytest

import hgx
from hgx import exceptions
from conftest import FORMS, call, make_link


def test_whoami_user_id_and_op_table(alink, alice):
    assert isinstance(alink.whoami, hgx.Ghid)
    assert alink.whoami.algo == 1
    assert alink.whoami.as_str() == alice.fingerprint
    assert isinstance(alink.user_id, hgx.Ghid)
    for op in ("whoami", "new", "get", "push", "sync", "freeze", "hold", "discard", "delete"):
        assert alink.has_op(op)
    assert alink.ops["new"].args == ("state", "api_id", "dynamic", "private")
    assert alink.ops["new"].defaults == {"api_id": None, "dynamic": True, "private": False}
    # The daemon's own whoami op, through the generic call.
    who = alink.call_threadsafe("whoami")
    assert hgx.Ghid.from_bytes(who["fingerprint"]) == alink.whoami
    assert alink.connected
    assert "connected" in repr(alink)


def test_no_token_before_register(alink):
    with pytest.raises(hgx.HGXLinkError):
        alink.token


def test_explicit_ipc_token(alice):
    token_hex = (alice.home / "ipc.token").read_text().strip()
    assert len(token_hex) == 64
    # Explicit token (hex or raw bytes), with a home that has no token file.
    for token in (token_hex, bytes.fromhex(token_hex)):
        link = hgx.HGXLink(alice.ipc_port, ipc_token=token, home="/nonexistent", timeout=10)
        try:
            assert link.whoami.as_str() == alice.fingerprint
        finally:
            link.stop_threadsafe()


def test_token_from_hypergolix_home(alice, monkeypatch):
    monkeypatch.setenv("HYPERGOLIX_HOME", str(alice.home))
    link = hgx.HGXLink(alice.ipc_port, timeout=10)
    try:
        assert link.whoami.as_str() == alice.fingerprint
    finally:
        link.stop_threadsafe()


def test_token_from_the_users_home(alice, monkeypatch, tmp_path):
    (tmp_path / ".hypergolix").mkdir()
    (tmp_path / ".hypergolix" / "ipc.token").write_text((alice.home / "ipc.token").read_text())
    monkeypatch.delenv("HYPERGOLIX_HOME", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert hgx.link.find_ipc_token_file() == str(tmp_path / ".hypergolix" / "ipc.token")
    link = hgx.HGXLink(alice.ipc_port, timeout=10)
    try:
        assert link.whoami.as_str() == alice.fingerprint
    finally:
        link.stop_threadsafe()


def test_wrong_ipc_token_is_refused(alice):
    with pytest.raises(exceptions.AccessDenied):
        hgx.HGXLink(alice.ipc_port, ipc_token=bytes(32), connect_timeout=5)
    with pytest.raises(ValueError):
        hgx.HGXLink(alice.ipc_port, ipc_token="abc", autostart=False)


def test_unreachable_daemon_fails_within_the_timeout(alice):
    from harness import free_port

    with pytest.raises(hgx.HGXLinkError):
        hgx.HGXLink(free_port(), ipc_token=bytes(32), connect_timeout=1)


def test_arguments_bind_against_the_daemons_table(alink):
    # TypeError locally: unknown, missing, too many, duplicated.
    with pytest.raises(TypeError):
        alink.call_threadsafe("get")
    with pytest.raises(TypeError):
        alink.call_threadsafe("get", ghid=hgx.Ghid.pseudorandom(1), colour="red")
    with pytest.raises(TypeError):
        alink.call_threadsafe("get", hgx.Ghid.pseudorandom(1), hgx.Ghid.pseudorandom(1))
    with pytest.raises(TypeError):
        alink.call_threadsafe("new", b"x", state=b"y")
    # An op the daemon does not offer is refused locally.
    with pytest.raises(exceptions.UnknownOp):
        alink.call_threadsafe("frobnicate")
    # Defaults come from the table: `new` with only its state.
    wire = alink.call_threadsafe("new", b"defaults")
    assert wire["dynamic"] is True and wire["private"] is False and wire["state"] == b"defaults"


def test_daemon_error_codes_raise_their_classes(alink):
    # The daemon's own unknown_op (sent around the local table check).
    with pytest.raises(exceptions.UnknownOp) as info:
        call("plain", alink, "_send", "frobnicate", {})
    assert info.value.logref
    # bad_args: a ghid that is not 65 bytes.
    with pytest.raises(exceptions.BadArgs):
        alink.call_threadsafe("get", ghid=b"too short")
    # not_found: nobody ever made this object.
    with pytest.raises(exceptions.NotFound) as info:
        alink.get_threadsafe(hgx.Obj, hgx.Ghid.pseudorandom(1))
    assert info.value.code == "not_found" and isinstance(info.value, hgx.IPCError)


def test_start_later_and_stop_forms(alice):
    link = make_link(alice, autostart=False)
    assert not link.connected
    with pytest.raises(hgx.HGXLinkError):
        link.whoami
    link.start()
    assert link.whoami.as_str() == alice.fingerprint
    link.start()  # idempotent
    link.stop_threadsafe()
    assert not link._thread.is_alive()
    with pytest.raises(hgx.HGXLinkError):
        link.new_threadsafe(hgx.Obj, b"after stop")
    # A stopped link can be started again.
    link.start()
    assert link.new_threadsafe(hgx.Obj, b"restarted").isalive
    link.stop_threadsafe()

    link = make_link(alice)
    asyncio.run(link.stop_loopsafe())
    assert not link._thread.is_alive()

    link = make_link(alice)
    # The plain coroutine, awaited in the link's own loop, stops the loop as well.
    asyncio.run_coroutine_threadsafe(link.stop(), link._loop).result(10)
    link._thread.join(10)
    assert not link._thread.is_alive()


def test_stop_takes_a_round_trip_not_the_close_timeout(alice):
    """Stopping a link completes the websocket close handshake and hgxd then ends the TCP
    connection at once, so the client does not wait out its close timeout (0.25 s before
    hgxd closed promptly)."""
    times = []
    for _ in range(5):
        link = make_link(alice)
        assert link.whoami.as_str() == alice.fingerprint
        t = time.monotonic()
        link.stop_threadsafe()
        times.append(time.monotonic() - t)
    times.sort()
    assert times[len(times) // 2] < 0.2, times


def test_threadsafe_call_inside_the_link_loop_is_refused(alink):
    async def inside():
        alink.new_threadsafe(hgx.Obj, b"deadlock?")

    with pytest.raises(RuntimeError):
        asyncio.run_coroutine_threadsafe(inside(), alink._loop).result(10)


async def test_unthreaded_link_in_the_callers_loop(alice):
    link = hgx.HGXLink(alice.ipc_port, autostart=False, threaded=False, home=alice.home, timeout=20)
    await link.connect()
    try:
        assert link._loop is asyncio.get_running_loop()
        obj = await link.new(hgx.Obj, b"unthreaded")
        obj.state = b"unthreaded 2"
        await obj.push()
        # The loopsafe form awaited from the link's own loop runs directly.
        await obj.sync_loopsafe()
        assert obj.state == b"unthreaded 2"
    finally:
        await link.stop()


@pytest.mark.parametrize("form", FORMS)
def test_new_and_get_in_every_form(form, alink, alice):
    obj = call(form, alink, "new", hgx.Obj, b"made " + form.encode())
    assert isinstance(obj, hgx.Obj)
    assert obj.state == b"made " + form.encode()
    assert isinstance(obj.ghid, hgx.Ghid) and obj.ghid.algo == 1
    assert obj.binder == alink.whoami
    assert obj.api_id == hgx.Obj._hgx_DEFAULT_API
    assert obj.dynamic is True and obj.private is False and obj.isalive

    other = make_link(alice)
    try:
        got = call(form, other, "get", hgx.Obj, obj.ghid)
        assert got == obj
        assert got is not obj
        assert got.binder == alink.whoami and got.api_id == obj.api_id
        # A second get of a live object returns the same object.
        assert call(form, other, "get", hgx.Obj, obj.ghid) is got
        # ... and its text form works as the ghid too.
        assert other.get_threadsafe(hgx.Obj, obj.ghid.as_str()) is got
        with pytest.raises(hgx.HGXLinkError):
            other.get_threadsafe(hgx.JsonObj, obj.ghid)
    finally:
        other.stop_threadsafe()


def test_new_options(alink):
    static = alink.new_threadsafe(hgx.Obj, b"static", dynamic=False)
    assert static.dynamic is False
    api = hgx.utils.ApiID.pseudorandom()
    custom = alink.new_threadsafe(hgx.Obj, b"custom api", api_id=api)
    assert custom.api_id == api
    # 64 raw bytes are an api id too.
    raw = alink.new_threadsafe(hgx.Obj, b"raw api", api_id=api.address)
    assert raw.api_id == api
    with pytest.raises(TypeError):
        alink.new_threadsafe(hgx.Obj, "not bytes")
    with pytest.raises(TypeError):
        alink.new_threadsafe(dict, b"not an hgx class")


def test_wrap_threadsafe_and_loopsafe_as_decorators(alink):
    seen = []

    @alink.wrap_threadsafe
    def blocking(x):
        seen.append(("thread", x, threading.current_thread().name))
        return x * 2

    other_loop = asyncio.new_event_loop()
    t = threading.Thread(target=other_loop.run_forever, daemon=True)
    t.start()
    try:
        @alink.wrap_loopsafe(target_loop=other_loop)
        async def elsewhere(x):
            seen.append(("loop", x, asyncio.get_running_loop() is other_loop))
            return x + 1

        async def both():
            return await blocking(3), await elsewhere(4)

        assert asyncio.run_coroutine_threadsafe(both(), alink._loop).result(10) == (6, 5)
        assert seen[0][:2] == ("thread", 3) and seen[0][2].startswith("hgxlink-worker")
        assert seen[1] == ("loop", 4, True)
        # The direct (non-decorator) spelling.
        wrapped = alink.wrap_loopsafe(elsewhere.__wrapped__, target_loop=other_loop)
        assert asyncio.run_coroutine_threadsafe(wrapped(9), alink._loop).result(10) == 10
        with pytest.raises(TypeError):
            alink.wrap_loopsafe(elsewhere.__wrapped__)
        with pytest.raises(TypeError):
            alink.wrap_threadsafe(elsewhere)
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        t.join(5)
