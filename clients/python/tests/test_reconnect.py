"""The link survives an hgxd restart: it reconnects by itself and re-registers its app
token, share handlers and tracked objects."""

import threading
import time

import pytest

import hgx
from hgx import exceptions
from hgx.utils import ApiID
from conftest import Recorder, eventually, make_link, require_ops


def wait_reconnected(link, connections):
    eventually(lambda: link.connected and link._connections >= connections, timeout=30,
               message="link reconnected")


def test_reconnect_restores_tracked_objects(alice):
    link = make_link(alice)
    try:
        whoami = link.whoami
        obj = link.new_threadsafe(hgx.JsonObj, {"v": 0})
        rec = Recorder()
        obj.callback = rec.async_record
        old_token = (alice.home / "ipc.token").read_text()

        alice.stop()
        eventually(lambda: not link.connected, message="link noticed the daemon stopped")
        # A request made while the daemon is down waits for the reconnection.
        queued = {}
        t = threading.Thread(target=lambda: queued.setdefault(
            "obj", link.new_threadsafe(hgx.Obj, b"queued while down")))
        t.start()
        time.sleep(0.3)
        assert t.is_alive()
        alice.start()
        assert (alice.home / "ipc.token").read_text() != old_token  # a new capability token
        wait_reconnected(link, 2)
        t.join(30)
        assert queued["obj"].state == b"queued while down"
        assert link.whoami == whoami

        # The object is tracked again: another app's push reaches its callback.
        other = make_link(alice)
        try:
            mirror = other.get_threadsafe(hgx.JsonObj, obj.ghid)
            mirror.state = {"v": 1}
            mirror.push_threadsafe()
            rec.wait(1)
            assert obj.state == {"v": 1}
        finally:
            other.stop_threadsafe()
        # And the link works as before.
        obj.state = {"v": 2}
        obj.push_threadsafe()
        assert link.new_threadsafe(hgx.Obj, b"after restart").isalive
    finally:
        link.stop_threadsafe()


def test_reconnect_restores_token_share_handlers_and_missed_updates(alice, blink):
    link = make_link(alice)
    try:
        require_ops(link, "register_token", "register_share_handler", "share")
        link.register_token_threadsafe()
        token = link.token
        api = ApiID.pseudorandom()
        shares = Recorder()
        link.register_share_handler_threadsafe(api, shares.async_record)

        # An object of Bob's that Alice's app tracks.
        bobs = blink.new_threadsafe(hgx.JsonObj, {"b": 0}, api_id=api)
        bobs.share_threadsafe(link.whoami)
        ghid = shares.wait(1)[0][0]
        view = link.get_threadsafe(hgx.JsonObj, ghid)
        updates = Recorder()
        view.callback = updates.async_record

        alice.stop()
        # Bob changes it while Alice's daemon is down.
        bobs.state = {"b": 1}
        bobs.push_threadsafe()
        alice.start()
        wait_reconnected(link, 2)

        # The missed update arrives (and runs the callback).
        updates.wait(1)
        eventually(lambda: view.state == {"b": 1}, message="missed update applied")
        # Live updates go on.
        bobs.state = {"b": 2}
        bobs.push_threadsafe()
        eventually(lambda: view.state == {"b": 2}, message="live update after restart")

        # The share handler was registered again.
        another = blink.new_threadsafe(hgx.JsonObj, {"second": True}, api_id=api)
        another.share_threadsafe(link.whoami)
        eventually(lambda: any(c[0] == another.ghid for c in shares.calls), message="share after restart")

        # The token is this link's again: another session cannot take it.
        assert link.token == token
        other = make_link(alice)
        try:
            with pytest.raises(exceptions.TokenInUse):
                other.register_token_threadsafe(token)
        finally:
            other.stop_threadsafe()
    finally:
        link.stop_threadsafe()
