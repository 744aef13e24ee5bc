"""The envelope, golden vectors (tests/vectors/ipc), op-table binding and error mapping
(no servers)."""

import json

import msgpack
import pytest

import hgx
from hgx import _wire, exceptions
from harness import VECTORS

NAMES = ["hello_request", "new_request", "ok_reply", "err_reply", "update_event"]


def from_twin(value):
    """The JSON twin convention: {"$bin": hex} is bytes."""
    if isinstance(value, dict):
        if set(value) == {"$bin"}:
            return bytes.fromhex(value["$bin"])
        return {k: from_twin(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_twin(v) for v in value]
    return value


def load(name):
    raw = (VECTORS / (name + ".msgpack")).read_bytes()
    twin = json.loads((VECTORS / (name + ".json")).read_text())
    return raw, from_twin(twin)


@pytest.mark.parametrize("name", NAMES)
def test_vector_decodes_to_its_twin(name):
    raw, twin = load(name)
    assert _wire.unpack(raw) == twin
    # Map order is part of the encoding: the twin lists keys in msgpack order.
    assert list(_wire.unpack(raw)) == list(twin)


@pytest.mark.parametrize("name", NAMES)
def test_vector_encodes_byte_exact(name):
    raw, twin = load(name)
    assert _wire.pack(twin) == raw


def test_requests_built_by_the_client_are_byte_exact():
    raw, twin = load("hello_request")
    assert _wire.encode_request(1, "hello", {"token": bytes(range(32)), "client": "golden"}) == raw

    # `new` bound against an op table like hello's, from the client's own types.
    table = _wire.OpTable({"new": {"args": ["state", "api_id", "dynamic", "private"],
                                   "defaults": {"api_id": None, "dynamic": True, "private": False}}})
    args = table.bind("new", (b"hello world",), {"api_id": hgx.Obj._hgx_DEFAULT_API})
    raw, twin = load("new_request")
    assert _wire.encode_request(2, "new", args) == raw


def test_replies_and_events_decode():
    raw, twin = load("ok_reply")
    reply = _wire.decode_server_message(raw)
    assert isinstance(reply, _wire.Reply) and not reply.is_error
    assert reply.id == 2
    assert hgx.Ghid.from_bytes(reply.ok["ghid"]) == hgx.Ghid(1, b"\x11" * 64)
    assert hgx.utils.ApiID(reply.ok["api_id"]) == hgx.Obj._hgx_DEFAULT_API
    assert reply.ok["state"] == b"hello world"

    raw, _ = load("err_reply")
    reply = _wire.decode_server_message(raw)
    assert reply.is_error and reply.id == 3
    err = exceptions.error_for(reply.err, "get")
    assert isinstance(err, exceptions.NotFound) and isinstance(err, hgx.IPCError)
    assert (err.code, err.logref, err.op) == ("not_found", "0badc0de", "get")
    assert "object does not exist" in str(err)

    raw, _ = load("update_event")
    ev = _wire.decode_server_message(raw)
    assert isinstance(ev, _wire.Event) and ev.name == "update"
    assert ev.data["state"] == b"hello again"


def test_decoder_is_tolerant():
    # Unknown fields are ignored; other key orders are fine.
    msg = _wire.pack({"future": [1, 2], "ok": {"x": 1}, "id": 9})
    reply = _wire.decode_server_message(msg)
    assert reply.id == 9 and reply.ok == {"x": 1}
    ev = _wire.decode_server_message(_wire.pack({"data": None, "event": "from_the_future"}))
    assert ev.name == "from_the_future"
    for bad in (b"\xc1", _wire.pack([1, 2]), _wire.pack({"id": 1}), _wire.pack({"event": 5})):
        with pytest.raises(ValueError):
            _wire.decode_server_message(bad)


def test_ghids_travel_as_bin():
    g = hgx.Ghid(1, bytes(64))
    packed = _wire.pack({"ghid": g})
    assert msgpack.unpackb(packed, raw=False) == {"ghid": bytes(g)}
    assert packed[:8] == b"\x81\xa4ghid\xc4\x41"  # map(1), str "ghid", bin8 of 65 bytes


TABLE = _wire.OpTable(
    {
        "push": {"args": ["ghid", "state", "private"], "defaults": {"private": None}},
        "whoami": {"args": [], "defaults": {}},
        "hello": {"args": ["token", "client"], "defaults": {"client": ""}},
    },
    ["update"],
)


def test_binding_by_name_and_position():
    g = hgx.Ghid(1, bytes(64))
    assert TABLE.bind("push", (g, b"s")) == {"ghid": g, "state": b"s", "private": None}
    assert TABLE.bind("push", (), {"state": b"s", "ghid": g, "private": True}) == {
        "ghid": g, "state": b"s", "private": True}
    # Always in table order, whatever the call order.
    assert list(TABLE.bind("push", (), {"state": b"s", "ghid": g})) == ["ghid", "state", "private"]
    assert TABLE.bind("whoami") == {}


@pytest.mark.parametrize(
    "args,kwargs",
    [
        ((), {}),                                   # missing ghid and state
        ((b"g",), {}),                              # missing state
        ((b"g", b"s", None, 4), {}),                # too many
        ((b"g", b"s"), {"colour": "red"}),          # unknown name
        ((b"g", b"s"), {"ghid": b"again"}),         # twice
    ],
)
def test_binding_errors_are_type_errors(args, kwargs):
    with pytest.raises(TypeError):
        TABLE.bind("push", args, kwargs)


def test_unknown_op_is_refused_locally():
    with pytest.raises(exceptions.UnknownOp):
        TABLE.bind("frobnicate")


def test_error_codes_map_to_classes():
    for code, name in [
        ("not_found", "NotFound"), ("access_denied", "AccessDenied"),
        ("unknown_token", "UnknownToken"), ("locally_immutable", "LocallyImmutable"),
        ("dead_object", "DeadObject"), ("unsharable", "Unsharable"), ("bad_args", "BadArgs"),
        ("unknown_op", "UnknownOp"), ("malformed", "Malformed"), ("internal", "Internal"),
        ("token_in_use", "TokenInUse"), ("cat_outta_bag", "CatOuttaBag"),
        ("unavailable_upstream", "UnavailableUpstream"), ("illegal_frame", "IllegalFrame"),
        ("already_set", "AlreadySet"), ("unknown_recipient", "UnknownRecipient"),
    ]:
        err = exceptions.error_for({"code": code, "message": "m", "logref": "r"})
        cls = getattr(exceptions, name)
        assert type(err) is cls and err.code == code
        assert issubclass(cls, hgx.IPCError)
    err = exceptions.error_for({"code": "brand_new_code", "message": "m"})
    assert type(err) is hgx.IPCError and err.code == "brand_new_code"
    assert type(exceptions.error_for("garbage")) is hgx.IPCError
