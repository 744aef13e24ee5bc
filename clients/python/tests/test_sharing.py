"""App tokens, startup objects, share handlers and sharing between two users.

These need the daemon's token and sharing ops; each test skips (saying which op is
missing) only when the running hgxd's hello does not list them."""

import asyncio
import threading
import time

import pytest

import hgx
from hgx import exceptions
from hgx.utils import ApiID, AppToken
from conftest import FORMS, Recorder, call, eventually, make_link, require_ops

TOKEN_OPS = ("register_token", "register_startup", "deregister_startup")
SHARE_OPS = ("register_share_handler", "deregister_share_handler", "share")


@pytest.mark.parametrize("form", FORMS)
def test_tokens_and_startup_objects(form, alice):
    link = make_link(alice)
    try:
        require_ops(link, *TOKEN_OPS)
        assert call(form, link, "register_token") is None  # a new token: no startup object
        token = link.token
        assert isinstance(token, AppToken) and len(token) == 16
        startup = link.new_threadsafe(hgx.JsonObj, {"app": "state"})
        assert call(form, link, "register_startup", startup) is None
    finally:
        link.stop_threadsafe()

    # The app's next start: re-registering returns the startup object's ghid.
    link = make_link(alice)
    try:
        ghid = eventually(lambda: _reregister(link, form, token), message="token free again")
        assert ghid == startup.ghid
        assert link.token == token
        assert link.get_threadsafe(hgx.JsonObj, ghid).state == {"app": "state"}
        assert call(form, link, "deregister_startup") is None
    finally:
        link.stop_threadsafe()

    link = make_link(alice)
    try:
        assert eventually(lambda: _reregister(link, form, token) or "none", message="token") == "none"
    finally:
        link.stop_threadsafe()


def _reregister(link, form, token):
    """register_token, retried while the previous session still holds the token."""
    try:
        return call(form, link, "register_token", token) or None
    except exceptions.TokenInUse:
        return False


def test_token_errors(alink, alice):
    require_ops(alink, *TOKEN_OPS)
    with pytest.raises(exceptions.UnknownToken):
        alink.register_token_threadsafe(AppToken.pseudorandom())
    # Startup objects need a token.
    obj = alink.new_threadsafe(hgx.Obj, b"startup?")
    with pytest.raises(exceptions.UnknownToken):
        alink.register_startup_threadsafe(obj)
    alink.register_token_threadsafe()
    # One token per session; a token lives in one session at a time.
    with pytest.raises(exceptions.AlreadySet):
        alink.register_token_threadsafe()
    other = make_link(alice)
    try:
        with pytest.raises(exceptions.TokenInUse):
            other.register_token_threadsafe(alink.token)
    finally:
        other.stop_threadsafe()
    with pytest.raises(exceptions.NotFound):
        alink.deregister_startup_threadsafe()
    alink.register_startup_threadsafe(obj)
    # The same one again is a retry (ok); another one is refused.
    alink.register_startup_threadsafe(obj)
    with pytest.raises(exceptions.AlreadySet):
        alink.register_startup_threadsafe(alink.new_threadsafe(hgx.Obj, b"or here"))
    # Private objects, visible to this token only, then are possible.
    private = alink.new_threadsafe(hgx.Obj, b"only for this app", private=True)
    assert private.private is True
    with pytest.raises(exceptions.Unsharable) as info:
        private.share_threadsafe(alink.whoami)
    assert not info.value.logref  # refused by the client
    with pytest.raises(exceptions.Unsharable) as info:
        alink.call_threadsafe("share", ghid=private.ghid, recipient=alink.whoami)
    assert info.value.logref  # refused by the daemon


@pytest.mark.parametrize("form", FORMS)
def test_share_between_users_with_a_threadsafe_handler(form, alink, blink):
    require_ops(alink, *SHARE_OPS)
    api = ApiID.pseudorandom()
    received = Recorder()
    main_thread = threading.current_thread()

    @blink.wrap_threadsafe
    def on_share(ghid, origin, api_id):
        # A blocking handler, in a worker thread: it may use the _threadsafe forms.
        obj = blink.get_threadsafe(hgx.JsonProxy, ghid)
        received.record(ghid, origin, api_id, obj, threading.current_thread())

    call(form, blink, "register_share_handler", api, on_share)
    obj = alink.new_threadsafe(hgx.JsonProxy, {"greeting": "hi Bob"}, api_id=api)
    call(form, obj, "hgx_share", blink.whoami)

    ghid, origin, api_id, bobs, thread = received.wait(1)[0]
    assert ghid == obj.hgx_ghid
    assert origin == alink.whoami
    assert api_id == api and isinstance(api_id, ApiID)
    assert thread is not main_thread and thread.name.startswith("hgxlink-worker")
    assert bobs == {"greeting": "hi Bob"}
    assert bobs.hgx_binder == alink.whoami and bobs.hgx_api_id == api

    # An Obj (not a proxy) shares the same way.
    plain = alink.new_threadsafe(hgx.Obj, b'"plain"', api_id=api)
    call(form, plain, "share", blink.whoami)
    assert received.wait(2)[1][0] == plain.ghid and received.calls[1][3] == "plain"

    # Alice's updates reach Bob's object and run its callback.
    updates = Recorder()
    bobs.hgx_callback = updates.async_record
    obj["greeting"] = "hello again"
    obj.hgx_push_threadsafe()
    updates.wait(1)
    assert bobs["greeting"] == "hello again"

    # Bob cannot change Alice's object.
    with pytest.raises(exceptions.LocallyImmutable):
        bobs.hgx_push_threadsafe()
    with pytest.raises(exceptions.LocallyImmutable):
        bobs.hgx_delete_threadsafe()

    # Alice deletes it: Bob's callback sees the delete.
    obj.hgx_delete_threadsafe()
    eventually(lambda: not bobs.hgx_isalive, message="delete reaching Bob")
    assert updates.calls[-1][0] is bobs


def test_share_handler_in_another_loop_and_deregistering(alink, blink):
    require_ops(alink, *SHARE_OPS)
    api = ApiID.pseudorandom()
    other_loop = asyncio.new_event_loop()
    t = threading.Thread(target=other_loop.run_forever, daemon=True)
    t.start()
    received = Recorder()
    try:
        async def handler(ghid, origin, api_id):
            assert asyncio.get_running_loop() is other_loop
            obj = await blink.get_loopsafe(hgx.Obj, ghid)
            received.record(obj.state)

        wrapped = blink.wrap_loopsafe(handler, target_loop=other_loop)

        async def register():
            await blink.register_share_handler_loopsafe(api, wrapped)

        asyncio.run(register())
        first = alink.new_threadsafe(hgx.Obj, b"first", api_id=api)
        first.share_threadsafe(blink.whoami)
        assert received.wait(1)[0] == (b"first",)

        for form in FORMS:
            call(form, blink, "register_share_handler", api, wrapped)
            call(form, blink, "deregister_share_handler", api)
        with pytest.raises(exceptions.NotFound):
            blink.deregister_share_handler_threadsafe(api)
        second = alink.new_threadsafe(hgx.Obj, b"second", api_id=api)
        second.share_threadsafe(blink.whoami)
        time.sleep(1.5)  # nothing may arrive now
        assert received.calls == [(b"first",)]
    finally:
        other_loop.call_soon_threadsafe(other_loop.stop)
        t.join(5)


def test_share_handler_must_be_async(blink):
    require_ops(blink, *SHARE_OPS)
    with pytest.raises(TypeError):
        blink.register_share_handler_threadsafe(ApiID.pseudorandom(), lambda *a: None)


def test_hold_keeps_a_shared_object_alive(alink, blink):
    require_ops(alink, *SHARE_OPS)
    api = ApiID.pseudorandom()
    got = Recorder()
    blink.register_share_handler_threadsafe(api, got.async_record)
    obj = alink.new_threadsafe(hgx.Obj, b"keep me", api_id=api)
    obj.share_threadsafe(blink.whoami)
    ghid = got.wait(1)[0][0]
    bobs = blink.get_threadsafe(hgx.Obj, ghid)
    bobs.hold_threadsafe()
    obj.delete_threadsafe()
    # Bob's binding keeps it: he can still load it.
    time.sleep(0.5)
    bobs.discard_threadsafe()
    assert blink.get_threadsafe(hgx.Obj, ghid).state == b"keep me"


def test_share_with_an_unknown_user(alink):
    require_ops(alink, *SHARE_OPS)
    obj = alink.new_threadsafe(hgx.Obj, b"to nobody")
    with pytest.raises(hgx.IPCError) as info:
        obj.share_threadsafe(hgx.Ghid.pseudorandom(1))
    assert isinstance(info.value, (exceptions.UnknownRecipient, exceptions.NotFound))
