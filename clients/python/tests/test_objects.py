"""Obj: members, every operation in every form, callbacks, equality, errors."""

import threading

import pytest

import hgx
from hgx import exceptions
from conftest import FORMS, Recorder, call, eventually, make_link


@pytest.fixture
def alink2(alice):
    """A second app of Alice's (another connection to the same daemon)."""
    link = make_link(alice)
    yield link
    link.stop_threadsafe()


def test_members_are_read_only_except_state_and_callback(alink):
    obj = alink.new_threadsafe(hgx.Obj, b"members")
    for name in ("ghid", "api_id", "private", "dynamic", "binder", "isalive"):
        with pytest.raises(AttributeError):
            setattr(obj, name, None)
    obj.state = b"changed locally"
    assert obj.state == b"changed locally"

    async def cb(o):
        pass

    obj.callback = cb
    assert obj.callback is cb
    obj.callback = None
    with pytest.raises(TypeError):
        obj.callback = lambda o: None  # must be async (or wrapped)
    assert "members" not in repr(obj) and "changed locally" in repr(obj)


def test_equality_and_hash(alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"eq")
    twin = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    assert obj == twin and not (obj != twin)
    assert hash(obj) == hash(twin) == hash(obj.ghid)
    assert len({obj, twin}) == 1
    twin.state = b"different"
    assert obj != twin
    other = alink.new_threadsafe(hgx.Obj, b"eq")
    assert obj != other  # same state, other ghid
    with pytest.raises(TypeError):
        obj == b"eq"
    # A proxy of the same object with the same state is equal too.
    proxy = alink2.get_threadsafe(hgx.Proxy, other.ghid)
    assert other == proxy and proxy == other


@pytest.mark.parametrize("form", FORMS)
def test_push_and_sync(form, alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"v1")
    mirror = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    obj.state = b"v2 " + form.encode()
    assert call(form, obj, "push") is None
    # The other app sees it (event or sync, whichever comes first).
    call(form, mirror, "sync")
    eventually(lambda: mirror.state == b"v2 " + form.encode(), message="synced state")


@pytest.mark.parametrize("form", FORMS)
def test_freeze(form, alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"to freeze")
    frozen = call(form, obj, "freeze")
    assert isinstance(frozen, hgx.Obj)
    assert frozen.dynamic is False
    assert frozen.ghid != obj.ghid
    assert frozen.state == b"to freeze"
    assert frozen.binder == obj.binder and frozen.api_id == obj.api_id
    # The dynamic object goes on; the frozen one keeps the old state.
    obj.state = b"moved on"
    obj.push_threadsafe()
    assert alink2.get_threadsafe(hgx.Obj, frozen.ghid).state == b"to freeze"
    with pytest.raises(exceptions.LocallyImmutable):
        frozen.push_threadsafe()


@pytest.mark.parametrize("form", FORMS)
def test_hold(form, alink):
    obj = alink.new_threadsafe(hgx.Obj, b"held")
    assert call(form, obj, "hold") is None
    assert obj.isalive


@pytest.mark.parametrize("form", FORMS)
def test_discard(form, alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"to discard")
    call(form, obj, "discard")
    assert not obj.isalive
    for name in ("push", "sync", "freeze", "hold", "discard", "delete"):
        with pytest.raises(exceptions.DeadObject):
            getattr(obj, name + "_threadsafe")()
    with pytest.raises(exceptions.DeadObject):
        obj.share_threadsafe(alink.whoami)
    with pytest.raises(exceptions.DeadObject):
        obj.recast_threadsafe(hgx.Obj)
    # Local only: the object still exists for everyone else.
    assert alink2.get_threadsafe(hgx.Obj, obj.ghid).state == b"to discard"
    # ... and this app can load it again.
    again = alink.get_threadsafe(hgx.Obj, obj.ghid)
    assert again is not obj and again.isalive


@pytest.mark.parametrize("form", FORMS)
def test_delete_runs_the_other_apps_callback(form, alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"to delete")
    mirror = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    rec = Recorder()

    async def cb(o):
        try:
            state = o.state
        except exceptions.DeadObject:
            state = "DeadObject"
        rec.record(o.isalive, state)

    mirror.callback = cb
    call(form, obj, "delete")
    assert not obj.isalive
    with pytest.raises(exceptions.DeadObject):
        obj.push_threadsafe()
    assert rec.wait(1)[0] == (False, "DeadObject")
    assert not mirror.isalive
    with pytest.raises(exceptions.DeadObject):
        mirror.sync_threadsafe()


@pytest.mark.parametrize("form", FORMS)
def test_recast(form, alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b'{"n":1}')
    rec = Recorder()
    obj.callback = rec.async_record
    as_json = call(form, obj, "recast", hgx.JsonObj)
    assert isinstance(as_json, hgx.JsonObj)
    assert as_json.state == {"n": 1}
    assert as_json.ghid == obj.ghid and as_json.binder == obj.binder
    assert as_json.api_id == obj.api_id  # recasting keeps the object's api id
    assert not obj.isalive  # the old object is dead, the new one takes over
    assert as_json.callback is obj.callback
    # Updates now arrive at the recast object, with its callback.
    mirror = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    mirror.state = b'{"n":2}'
    mirror.push_threadsafe()
    rec.wait(1)
    assert rec.calls[0][0] is as_json and as_json.state == {"n": 2}
    back = as_json.recast_threadsafe(hgx.Proxy)
    assert isinstance(back, hgx.Proxy) and back == b'{"n":2}'
    with pytest.raises(TypeError):
        back.hgx_recast_threadsafe(dict)


def test_callback_on_update_not_on_own_push(alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"0")
    mirror = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    own, other = Recorder(), Recorder()
    obj.callback = own.async_record

    async def cb(o):
        # Runs in the link's loop, after the state was replaced.
        other.record(o.state, threading.current_thread().name)

    mirror.callback = cb
    for i in range(1, 4):
        obj.state = str(i).encode()
        obj.push_threadsafe()
    calls = other.wait(1)
    eventually(lambda: other.calls[-1][0] == b"3", message="last update")
    # In order, without going backwards.
    states = [c[0] for c in other.calls]
    assert states == sorted(states)
    assert all(c[1] == "hgxlink" for c in other.calls)
    assert calls and own.calls == []  # never for our own pushes

    # A callback that raises is logged and swallowed: later updates still arrive.
    boom = Recorder()

    async def failing(o):
        boom.record(o.state)
        raise RuntimeError("callback failure (expected by the test)")

    mirror.callback = failing
    obj.state = b"4"
    obj.push_threadsafe()
    boom.wait(1)
    obj.state = b"5"
    obj.push_threadsafe()
    eventually(lambda: boom.calls[-1] == (b"5",), message="update after a failing callback")


def test_threadsafe_callback_via_wrap_threadsafe(alink, alink2):
    obj = alink.new_threadsafe(hgx.Obj, b"x")
    mirror = alink2.get_threadsafe(hgx.Obj, obj.ghid)
    rec = Recorder()

    @alink2.wrap_threadsafe
    def blocking(o):
        rec.record(o.state, threading.current_thread().name)

    mirror.callback = blocking
    obj.state = b"y"
    obj.push_threadsafe()
    state, thread = rec.wait(1)[0]
    assert state == b"y" and thread.startswith("hgxlink-worker")


def test_push_refusals(alink):
    static = alink.new_threadsafe(hgx.Obj, b"static", dynamic=False)
    with pytest.raises(exceptions.LocallyImmutable):
        static.push_threadsafe()
    # A foreign object (binder is someone else): refused before anything is sent.
    obj = alink.new_threadsafe(hgx.Obj, b"mine")
    object.__setattr__(obj, "_hgx_binder_", hgx.Ghid.pseudorandom(1))
    with pytest.raises(exceptions.LocallyImmutable):
        obj.push_threadsafe()


def test_private_objects_are_unsharable(alink):
    # Private objects need an app token in the daemon (unknown_token without one); the
    # client refuses to share them before asking the daemon anything.
    obj = hgx.Obj(alink, b"private", private=True, ghid=hgx.Ghid.pseudorandom(1), binder=alink.whoami)
    with pytest.raises(exceptions.Unsharable):
        obj.share_threadsafe(hgx.Ghid.pseudorandom(1))


def test_update_for_a_dropped_object_is_ignored(alink, alink2):
    import gc

    obj = alink.new_threadsafe(hgx.Obj, b"a")
    alink2.get_threadsafe(hgx.Obj, obj.ghid)  # tracked, then dropped
    gc.collect()
    obj.state = b"b"
    obj.push_threadsafe()
    # The link keeps working.
    assert alink2.get_threadsafe(hgx.Obj, obj.ghid).state in (b"a", b"b")
