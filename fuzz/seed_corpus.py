#!/usr/bin/env python3
"""(Re)writes the seed inputs of every fuzz target from ../tests/vectors/golix and
../tests/vectors/ipc.

Seeds are named seed-*. The msgpack seeds (persist_envelope, ipc_envelope, account_state)
are written by a small encoder below that makes the same choices as rmp_serde's
`to_vec_named` (smallest encodings, struct fields in declaration order, bytes as `bin`); it
is checked byte for byte against the IPC golden messages first, so the seeds are what the
Rust code itself writes. Run from anywhere (standard library only):
python3 fuzz/seed_corpus.py
"""
import base64
import hashlib
import json
import pathlib
import struct

HERE = pathlib.Path(__file__).resolve().parent
VECTORS = HERE.parent / "tests" / "vectors" / "golix"
IPC_VECTORS = HERE.parent / "tests" / "vectors" / "ipc"
CORPUS = HERE / "corpus"


def put(target, name, data):
    d = CORPUS / target
    d.mkdir(parents=True, exist_ok=True)
    (d / f"seed-{name}").write_bytes(data)


class Bin(bytes):
    """A msgpack bin (plain Python bytes are also written as bin)."""


def mp(v):
    """msgpack, smallest encodings, like rmp_serde / rmpv."""
    if v is None:
        return b"\xc0"
    if v is True:
        return b"\xc3"
    if v is False:
        return b"\xc2"
    if isinstance(v, int):
        if 0 <= v < 0x80:
            return bytes([v])
        if -32 <= v < 0:
            return struct.pack(">b", v)
        if v >= 0:
            for marker, fmt, top in ((0xcc, ">B", 0xff), (0xcd, ">H", 0xffff),
                                     (0xce, ">I", 0xffffffff), (0xcf, ">Q", 2**64 - 1)):
                if v <= top:
                    return bytes([marker]) + struct.pack(fmt, v)
        for marker, fmt, lo in ((0xd0, ">b", -2**7), (0xd1, ">h", -2**15),
                                (0xd2, ">i", -2**31), (0xd3, ">q", -2**63)):
            if v >= lo:
                return bytes([marker]) + struct.pack(fmt, v)
    if isinstance(v, float):
        return b"\xcb" + struct.pack(">d", v)
    if isinstance(v, str):
        b = v.encode()
        n = len(b)
        if n < 32:
            return bytes([0xa0 | n]) + b
        for marker, fmt, top in ((0xd9, ">B", 0xff), (0xda, ">H", 0xffff), (0xdb, ">I", 2**32 - 1)):
            if n <= top:
                return bytes([marker]) + struct.pack(fmt, n) + b
    if isinstance(v, (bytes, bytearray)):
        n = len(v)
        for marker, fmt, top in ((0xc4, ">B", 0xff), (0xc5, ">H", 0xffff), (0xc6, ">I", 2**32 - 1)):
            if n <= top:
                return bytes([marker]) + struct.pack(fmt, n) + bytes(v)
    if isinstance(v, (list, tuple)):
        n = len(v)
        head = bytes([0x90 | n]) if n < 16 else (b"\xdc" + struct.pack(">H", n))
        return head + b"".join(mp(x) for x in v)
    if isinstance(v, dict):
        n = len(v)
        head = bytes([0x80 | n]) if n < 16 else (b"\xde" + struct.pack(">H", n))
        return head + b"".join(mp(k) + mp(x) for k, x in v.items())
    raise TypeError(f"cannot encode {v!r}")


def from_twin(v):
    """A JSON twin of tests/vectors/ipc (bin written {"$bin": hex}) as Python values."""
    if isinstance(v, dict):
        if list(v) == ["$bin"]:
            return bytes.fromhex(v["$bin"])
        return {k: from_twin(x) for k, x in v.items()}
    if isinstance(v, list):
        return [from_twin(x) for x in v]
    return v


def check_encoder():
    for twin in sorted(IPC_VECTORS.glob("*.json")):
        want = twin.with_suffix(".msgpack").read_bytes()
        got = mp(from_twin(json.loads(twin.read_text())))
        assert got == want, f"seed encoder disagrees with {twin.name}"


def ghids():
    """Real ghids (65 bytes) from the vector file names."""
    return [base64.urlsafe_b64decode(f.stem) for f in sorted(VECTORS.glob("**/*.ghid"))]


def persist_seeds(g, obj):
    """Persister envelopes: a request for every op, every kind of reply, a notify."""
    put_ = lambda name, v: put("persist_envelope", name, mp(v))
    for i, op in enumerate(["hello", "ping", "list_subscriptions", "disconnect"]):
        put_(f"req-{op}", {"id": i, "op": op, "args": {}})
    put_("req-publish", {"id": 10, "op": "publish", "args": {"object": obj}})
    for i, op in enumerate(["get", "subscribe", "unsubscribe", "list_bindings",
                            "query_debinding", "exists"]):
        put_(f"req-{op}", {"id": 20 + i, "op": op, "args": {"ghid": g[i]}})
    put_("ok-nil", {"id": 1, "ok": None})
    put_("ok-true", {"id": 2, "ok": True})
    put_("ok-object", {"id": 3, "ok": obj})
    put_("ok-ghids", {"id": 4, "ok": g[:3]})
    put_("ok-publish", {"id": 5, "ok": {"ghid": g[0], "kind": "gobd", "new": True}})
    ops = {"hello": [], "publish": ["object"], "get": ["ghid"]}
    put_("ok-hello", {"id": 6, "ok": {
        "protocol": 1, "server": "hgx-persister", "version": "0.1.0",
        "limits": {"max_frame": 16 << 20, "max_subscriptions": 10000, "outbound_queue": 1024,
                   "max_in_flight": 64, "idle_timeout_s": 120},
        "ops": {k: {"args": a, "defaults": {}, "result": "map"} for k, a in ops.items()},
        "events": ["notify"], "features": []}})
    put_("err", {"id": 7, "err": {"code": "not_found", "message": "no such object"}})
    put_("err-orphan", {"id": None, "err": {"code": "malformed", "message": "not msgpack"}})
    put_("notify", {"event": "notify", "subscription": g[1], "object": obj})


def ipc_seeds(g):
    """App IPC messages: the golden vectors, a request for every op, replies and events."""
    for f in sorted(IPC_VECTORS.glob("*.msgpack")):
        put("ipc_envelope", f"vector-{f.stem}", f.read_bytes())
    put_ = lambda name, v: put("ipc_envelope", name, mp(v))
    by_ghid = ["get", "sync", "freeze", "hold", "discard", "delete", "register_startup"]
    for i, op in enumerate(by_ghid):
        put_(f"req-{op}", {"id": 10 + i, "op": op, "args": {"ghid": g[i]}})
    put_("req-whoami", {"id": 20, "op": "whoami"})
    put_("req-deregister_startup", {"id": 21, "op": "deregister_startup", "args": None})
    put_("req-push", {"id": 22, "op": "push", "args": {"ghid": g[0], "state": b"v2",
                                                        "private": None}})
    put_("req-register_token", {"id": 23, "op": "register_token", "args": {"token": bytes(16)}})
    put_("req-register_token-nil", {"id": 24, "op": "register_token", "args": {"token": None}})
    for i, op in enumerate(["register_share_handler", "deregister_share_handler"]):
        put_(f"req-{op}", {"id": 25 + i, "op": op, "args": {"api_id": g[2]}})
    put_("req-share", {"id": 27, "op": "share", "args": {"ghid": g[0], "recipient": g[3]}})
    put_("req-hello-hex", {"id": 28, "op": "hello", "args": {"token": b"ab" * 32,
                                                              "client": "seed"}})
    put_("ok-whoami", {"id": 30, "ok": {"fingerprint": g[0], "user_id": g[1]}})
    put_("ok-ghid", {"id": 31, "ok": g[2]})
    put_("ok-token", {"id": 32, "ok": {"token": bytes(range(16)), "startup": g[3]}})
    put_("ok-hello", {"id": 33, "ok": {
        "protocol": 1,
        "ops": {"new": {"args": ["state", "api_id", "dynamic", "private"],
                        "defaults": {"api_id": None, "dynamic": True, "private": False},
                        "result": "object"}},
        "events": ["update", "delete", "share", "share_result"],
        "fingerprint": g[0], "user_id": g[1], "max_message": 16 << 20}})
    put_("ev-delete", {"event": "delete", "data": {"ghid": g[4]}})
    put_("ev-share", {"event": "share", "data": {"ghid": g[4], "origin": g[5], "api_id": g[6]}})
    put_("ev-share_result", {"event": "share_result", "data": {
        "ghid": g[4], "recipient": g[5], "ok": False, "status": 3}})


def account_seeds(g):
    """Root plaintexts without their SHA-512 trailer (the target appends it): the fixture
    identities' keys, an empty and a full account state."""
    ids = json.loads((VECTORS / "fixture_identities.json").read_text())
    secret = b"SH\x00\x02\x01" + bytes(range(48))
    token = bytes(range(16))
    full = {
        "secrets": {g[0]: {"secret": secret, "container": g[1]}},
        "tokens": [token],
        "startup": {token: g[2]},
        "private": {g[3]: token},
        "api_ids": {g[3]: g[4]},
        "pending_shares": [{"request": g[5], "target": g[3], "recipient": g[6],
                            "token": token}],
        "orphan_shares": [{"ghid": g[7], "origin": g[8], "api_id": None}],
        "holds": [g[9]],
    }
    for n, (agent, state) in enumerate([("TEST_AGENT1", {}), ("TEST_AGENT2", full)]):
        keys = ids[agent]
        doc = mp({"identity": {
            "signature_pkcs8": bytes.fromhex(keys["signature_private_der_hex"]),
            "encryption_pkcs8": bytes.fromhex(keys["encryption_private_der_hex"]),
            "exchange": bytes.fromhex(keys["exchange_private_hex"])},
            "state": state})
        body = b"HGXA" + struct.pack(">II", 1, len(doc)) + doc + bytes(64)
        put("account_state", f"root-{n}", body)
        assert len(hashlib.sha512(body).digest()) == 64


def content_seeds(g):
    """App plaintext framing: `hgxd | 0 | api_id (65, zeros for none) | state`."""
    put("app_content", "no-api", b"hgxd\x00" + bytes(65) + b"state")
    put("app_content", "api", b"hgxd\x00" + g[0] + b"")
    put("app_content", "api-state", b"hgxd\x00" + g[1] + bytes(range(40)))


def main():
    check_encoder()
    g = ghids()
    small_obj = min((f.read_bytes() for f in VECTORS.glob("**/*.ghid")), key=len)
    persist_seeds(g, small_obj)
    ipc_seeds(g)
    account_seeds(g)
    content_seeds(g)
    ghid_files = sorted(VECTORS.glob("**/*.ghid"))
    for f in ghid_files:
        tag = f"{f.parent.name}-{f.stem[:16]}"
        put("golix_object", tag, f.read_bytes())
        put("ghid_str", tag, f.stem.encode())
    keys = json.loads((VECTORS / "keys_hgx_save_a.json").read_text())["hgx_save_a"]
    manifest = json.loads((VECTORS / "generated_ref_v16" / "manifest.json").read_text())
    plaintexts = [(g[:16], o["inner_plaintext_hex"]) for g, o in keys["garq_opened"].items()]
    plaintexts += [(n, o["inner_plaintext_hex"]) for n, o in manifest["cs1"].items()
                   if "inner_plaintext_hex" in o]
    for name, hx in plaintexts:
        put("golix_request", name, bytes.fromhex(hx))
    secrets = {g[:16]: b"SH\x00\x02\x01" + bytes.fromhex(o["key_hex"]) + bytes.fromhex(o["nonce_hex"])
               for g, o in keys["geoc_secrets"].items()}
    secrets["dummy"] = b"SH\x00\x02\x00" + bytes(32)
    for name, data in secrets.items():
        put("golix_secret", name, data)


if __name__ == "__main__":
    main()
