"""Proxy behaves like the value it wraps; serializers (JSON, pickle, custom)."""

import collections.abc
import json
import zlib

import pytest

import hgx
from hgx import exceptions
from hgx.utils import ApiID
from conftest import FORMS, Recorder, call, make_link


def local(value, cls=hgx.Proxy, ghid=None):
    """A proxy not connected to any daemon (for behaviour only)."""
    return cls(None, value, ghid=ghid)


def test_arithmetic_on_a_proxied_int():
    p = local(5)
    assert p + 1 == 6 and 1 + p == 6
    assert p - 2 == 3 and 10 - p == 5
    assert p * 3 == 15 and 3 * p == 15
    assert p / 2 == 2.5 and p // 2 == 2 and p % 3 == 2 and divmod(p, 2) == (2, 1)
    assert p ** 2 == 25 and 2 ** p == 32
    assert -p == -5 and +p == 5 and abs(local(-3)) == 3 and ~p == -6
    assert p << 1 == 10 and p >> 1 == 2 and p & 4 == 4 and p | 2 == 7 and p ^ 1 == 4
    assert p > 4 and p >= 5 and p < 6 and p <= 5 and p == 5 and p != 6
    assert int(p) == 5 and float(p) == 5.0 and complex(p) == 5 and round(local(2.567), 2) == 2.57
    assert [0, 1, 2, 3, 4, 5][p] == 5  # __index__
    assert bool(p) and not bool(local(0))
    assert isinstance(p, int) and isinstance(p, hgx.Proxy)
    assert type(p) is hgx.Proxy
    assert f"{p:03d}" == "005" and str(p) == "5"
    p += 10
    assert isinstance(p, hgx.Proxy) and p.hgx_state == 15
    p *= 2
    assert p.hgx_state == 30


def test_in_place_add_on_proxied_bytes():
    p = local(b"hello")
    original = p
    p += b" world"
    assert p is original  # still the same proxy
    assert p.hgx_state == b"hello world"
    assert p == b"hello world"
    assert b"hello world" == p
    assert p.upper() == b"HELLO WORLD"  # methods of bytes
    assert len(p) == 11 and p[0:5] == b"hello" and b"wor" in p
    assert bytes(p) == b"hello world"
    assert isinstance(p, bytes)


def test_item_and_attribute_access_on_a_proxied_dict():
    p = local({"a": 1})
    assert p["a"] == 1
    p["b"] = 2
    assert p.hgx_state == {"a": 1, "b": 2}
    del p["a"]
    assert p == {"b": 2}
    assert "b" in p and len(p) == 1 and list(p) == ["b"]
    assert p.get("b") == 2 and sorted(p.keys()) == ["b"]
    p.update(c=3)
    assert p.hgx_state == {"b": 2, "c": 3}
    assert isinstance(p, dict) and isinstance(p, collections.abc.Mapping)
    with pytest.raises(KeyError):
        p["missing"]


def test_attribute_pass_through_and_lists():
    class Thing:
        colour = "red"

        def shout(self):
            return self.colour.upper()

    p = local(Thing())
    assert p.shout() == "RED"
    p.colour = "blue"  # set on the wrapped object
    assert p.hgx_state.colour == "blue" and p.shout() == "BLUE"
    p.size = 3
    assert p.hgx_state.size == 3
    del p.size
    assert not hasattr(p.hgx_state, "size")
    assert "shout" in dir(p) and "hgx_push_threadsafe" in dir(p)

    lst = local([3, 1, 2])
    lst.append(0)
    lst.sort()
    assert lst == [0, 1, 2, 3] and lst[-1] == 3 and list(reversed(lst)) == [3, 2, 1, 0]
    lst += [9]
    assert lst.hgx_state == [0, 1, 2, 3, 9]
    f = local(lambda x: x * 2)
    assert f(21) == 42


def test_proxy_equality_and_hashing():
    g = hgx.Ghid.pseudorandom(1)
    a = local(b"same", ghid=g)
    b = local(b"same", ghid=g)
    c = local(b"same", ghid=hgx.Ghid.pseudorandom(1))
    assert a == b  # hgx objects: ghid, state and binder
    assert a != c  # same state, other ghid
    assert a == b"same"  # anything else: the wrapped value
    assert hash(a) == hash(g)  # the ghid's hash, not the value's
    assert {a: 1}[b] == 1
    with pytest.raises(TypeError):
        hash(local(b"no ghid yet"))
    assert "Proxy to b'same'" in repr(a)


def test_hgx_members_are_prefixed(alink):
    p = alink.new_threadsafe(hgx.Proxy, b"proxied")
    assert isinstance(p.hgx_ghid, hgx.Ghid)
    assert p.hgx_binder == alink.whoami
    assert p.hgx_api_id == hgx.Proxy._hgx_DEFAULT_API
    assert p.hgx_dynamic is True and p.hgx_private is False and p.hgx_isalive
    for name in ("hgx_ghid", "hgx_binder", "hgx_api_id", "hgx_private", "hgx_dynamic"):
        with pytest.raises(AttributeError):
            setattr(p, name, None)
    # A daemon-backed proxy behaves like its value too.
    n = alink.new_threadsafe(hgx.JsonProxy, 41)
    n += 1
    assert n == 42 and n * 2 == 84 and isinstance(n, int)
    n.hgx_push_threadsafe()
    assert alink.call_threadsafe("get", ghid=n.hgx_ghid)["state"] == b"42"
    # No unprefixed members: those names belong to the wrapped value.
    with pytest.raises(AttributeError):
        p.push_threadsafe
    with pytest.raises(AttributeError):
        p.ghid


@pytest.mark.parametrize("form", FORMS)
def test_proxy_operations_in_every_form(form, alink, alice):
    p = call(form, alink, "new", hgx.JsonProxy, {"count": 0})
    other = make_link(alice)
    try:
        mirror = call(form, other, "get", hgx.JsonProxy, p.hgx_ghid)
        rec = Recorder()
        mirror.hgx_callback = rec.async_record
        p["count"] += 1
        call(form, p, "hgx_push")
        rec.wait(1)
        assert mirror["count"] == 1
        call(form, mirror, "hgx_sync")
        assert mirror == {"count": 1}
        frozen = call(form, p, "hgx_freeze")
        assert isinstance(frozen, hgx.JsonProxy) and frozen.hgx_dynamic is False
        assert frozen == {"count": 1}
        assert call(form, p, "hgx_hold") is None
        as_obj = call(form, mirror, "hgx_recast", hgx.Obj)
        assert as_obj.state == b'{"count":1}' and not mirror.hgx_isalive
        again = call(form, as_obj, "recast", hgx.JsonProxy)
        call(form, again, "hgx_discard")
        assert not again.hgx_isalive
        call(form, p, "hgx_delete")
        assert not p.hgx_isalive
        with pytest.raises(exceptions.DeadObject):
            p.hgx_push_threadsafe()
    finally:
        other.stop_threadsafe()


VALUES = [
    {"text": "h\u00e9llo", "list": [1, 2.5, None, True], "nested": {"a": []}},
    [1, "two", [3]],
    "just a string",
    42,
    None,
]


@pytest.mark.parametrize("cls", [hgx.JsonObj, hgx.JsonProxy])
def test_json_round_trip(cls, alink, alice):
    other = make_link(alice)
    try:
        for value in VALUES:
            obj = alink.new_threadsafe(cls, value)
            got = other.get_threadsafe(cls, obj.ghid if cls is hgx.JsonObj else obj.hgx_ghid)
            state = got.state if cls is hgx.JsonObj else got.hgx_state
            assert state == value
            # On the wire: compact UTF-8 JSON, with the JSON api id.
            raw = other.call_threadsafe("get", ghid=got.ghid if cls is hgx.JsonObj else got.hgx_ghid)
            assert raw["state"] == json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()
            assert raw["api_id"] == bytes(cls._hgx_DEFAULT_API)
    finally:
        other.stop_threadsafe()


class Point:
    def __init__(self, x, y):
        self.x, self.y = x, y

    def __eq__(self, other):
        return isinstance(other, Point) and (self.x, self.y) == (other.x, other.y)


@pytest.mark.parametrize("cls", [hgx.PickleObj, hgx.PickleProxy])
def test_pickle_round_trip(cls, alink, alice):
    value = {"point": Point(1, 2), "set": {1, 2}, "bytes": b"\x00\xff", "tuple": (1, (2,))}
    obj = alink.new_threadsafe(cls, value)
    other = make_link(alice)
    try:
        ghid = obj.ghid if cls is hgx.PickleObj else obj.hgx_ghid
        got = other.get_threadsafe(cls, ghid)
        state = got.state if cls is hgx.PickleObj else got.hgx_state
        assert state == value
        assert other.call_threadsafe("get", ghid=ghid)["api_id"] == bytes(hgx.PickleObj._hgx_DEFAULT_API)
        if cls is hgx.PickleProxy:
            assert got["point"].x == 1 and isinstance(got, dict)
    finally:
        other.stop_threadsafe()


class CompressedText(hgx.Proxy):
    """A custom serializer: text, zlib-compressed, with its own api id."""

    _hgx_DEFAULT_API = ApiID(b"\x07" * 64)

    @classmethod
    async def hgx_pack(cls, state):
        return b"Z" + zlib.compress(state.encode("utf-8"))

    @classmethod
    async def hgx_unpack(cls, packed):
        assert packed[:1] == b"Z"
        return zlib.decompress(packed[1:]).decode("utf-8")


class Upper(hgx.Obj):
    """Plain (non-coroutine) static methods are accepted too."""

    _hgx_DEFAULT_API = ApiID(b"\x08" * 64)

    @staticmethod
    def hgx_pack(state):
        return state.upper().encode()

    @staticmethod
    def hgx_unpack(packed):
        return packed.decode().lower()


def test_custom_serializers(alink, alice):
    text = "hello " * 50
    p = alink.new_threadsafe(CompressedText, text)
    assert p.hgx_api_id == CompressedText._hgx_DEFAULT_API
    assert p.upper().startswith("HELLO") and p == text
    other = make_link(alice)
    try:
        got = other.get_threadsafe(CompressedText, p.hgx_ghid)
        assert got == text and isinstance(got, str)
        raw = other.call_threadsafe("get", ghid=p.hgx_ghid)
        assert raw["state"][:1] == b"Z" and len(raw["state"]) < len(text)
        assert raw["api_id"] == bytes(CompressedText._hgx_DEFAULT_API)
        rec = Recorder()
        got.hgx_callback = rec.async_record
        p += " world"
        p.hgx_push_threadsafe()
        rec.wait(1)
        assert got.hgx_state.endswith("hello  world")

        u = alink.new_threadsafe(Upper, "shout")
        assert other.get_threadsafe(Upper, u.ghid).state == "shout"
        assert other.get_threadsafe(hgx.Obj, u.ghid).state == b"SHOUT"
    finally:
        other.stop_threadsafe()
