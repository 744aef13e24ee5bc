"""Ghid, ApiID and AppToken (no servers)."""

import base64
import pickle

import pytest

import hgx
from hgx.utils import ApiID, AppToken


def test_ghid_members_bytes_and_equality():
    address = bytes(range(64))
    g = hgx.Ghid(1, address)
    assert g.algo == 1
    assert g.address == address
    assert bytes(g) == b"\x01" + address
    assert len(bytes(g)) == 65
    assert g == hgx.Ghid(1, address)
    assert g != hgx.Ghid(1, bytes(64))
    assert g != hgx.Ghid(0, address)
    assert hgx.Ghid.from_bytes(bytes(g)) == g
    assert (g == bytes(g)) is False


def test_ghid_is_hashable_and_immutable():
    g = hgx.Ghid(1, bytes(64))
    d = {g: "x"}
    assert d[hgx.Ghid.from_bytes(b"\x01" + bytes(64))] == "x"
    assert len({g, hgx.Ghid(1, bytes(64))}) == 1
    with pytest.raises(AttributeError):
        g.algo = 0
    assert pickle.loads(pickle.dumps(g)) == g


def test_ghid_text_forms():
    g = hgx.Ghid(1, bytes(64))
    text = g.as_str()
    assert len(text) == 88
    assert text == "AQ" + "A" * 85 + "="
    assert text == base64.urlsafe_b64encode(bytes(g)).decode()
    assert hgx.Ghid.from_str(text) == g
    assert hgx.Ghid.from_str(text.rstrip("=")) == g
    # str() is a short form, repr() the full one
    assert str(g) == text[:12] + "\u2026"
    assert text in repr(g)
    for _ in range(20):
        r = hgx.Ghid.pseudorandom(1)
        assert r.algo == 1 and len(r.as_str()) == 88
        assert hgx.Ghid.from_str(r.as_str()) == r
    assert hgx.Ghid.pseudorandom(1) != hgx.Ghid.pseudorandom(1)


@pytest.mark.parametrize(
    "make",
    [
        lambda: hgx.Ghid(7, bytes(64)),
        lambda: hgx.Ghid(1, bytes(63)),
        lambda: hgx.Ghid(1, bytes(65)),
        lambda: hgx.Ghid(1, "not bytes"),
        lambda: hgx.Ghid("1", bytes(64)),
        lambda: hgx.Ghid.from_bytes(b""),
        lambda: hgx.Ghid.from_bytes(bytes(64)),
        lambda: hgx.Ghid.from_bytes(b"\x09" + bytes(64)),
        lambda: hgx.Ghid.from_str("not base64 at all!"),
        lambda: hgx.Ghid.from_str("AQAA"),
        lambda: hgx.Ghid.from_str(12),
        lambda: hgx.Ghid.pseudorandom(5),
    ],
)
def test_ghid_bad_input_raises_value_error(make):
    with pytest.raises(ValueError):
        make()


def test_api_id():
    a = ApiID(bytes(63) + b"\x01")
    assert isinstance(a, hgx.Ghid)
    assert a.algo == 0
    assert bytes(a) == bytes(64) + b"\x01"
    assert len(bytes(a)) == 65
    assert ApiID(bytes(a)) == a
    assert ApiID.from_bytes(bytes(a)) == a
    assert ApiID.from_str(a.as_str()) == a
    assert a == hgx.Ghid(0, bytes(63) + b"\x01")
    assert hash(a) == hash(hgx.Ghid(0, bytes(63) + b"\x01"))
    r = ApiID.pseudorandom()
    assert r.algo == 0 and len(bytes(r)) == 65 and r != ApiID.pseudorandom()
    assert pickle.loads(pickle.dumps(r)) == r
    for bad in (bytes(63), b"\x01" + bytes(64), "x", hgx.Ghid(1, bytes(64))):
        with pytest.raises(ValueError):
            ApiID(bad)


def test_default_api_ids():
    # REFERENCE §0: Obj/Proxy 63x00 + 01; Pickle* end 02; Json* end 03 (after the algo byte).
    expected = {
        hgx.Obj: 1, hgx.Proxy: 1, hgx.PickleObj: 2, hgx.PickleProxy: 2,
        hgx.JsonObj: 3, hgx.JsonProxy: 3,
    }
    for cls, last in expected.items():
        api = cls._hgx_DEFAULT_API
        assert isinstance(api, ApiID)
        assert bytes(api) == b"\x00" + bytes(63) + bytes((last,)), cls


def test_app_token():
    t = AppToken(bytes(range(16)))
    assert bytes(t) == bytes(range(16)) and len(t) == 16
    assert AppToken(t.hex()) == t
    assert AppToken.pseudorandom() != AppToken.pseudorandom()
    assert pickle.loads(pickle.dumps(t)) == t
    with pytest.raises(ValueError):
        AppToken(bytes(15))
    with pytest.raises(ValueError):
        AppToken("zz")
