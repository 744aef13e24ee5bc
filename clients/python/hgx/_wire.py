"""The IPC envelope (src/ipc/PROTOCOL.md): every websocket message is one binary frame
holding one msgpack map with named fields. Byte strings and ghids are msgpack ``bin``.

request ``{id, op, args}``; reply ``{id, ok}`` or ``{id, err: {code, message, logref}}``;
event ``{event, data}``. Pure functions, no I/O.

:class:`OpTable` binds call arguments by name against the op table that ``hello``
returns (src/ipc/PROTOCOL.md): positional arguments in table order, keyword arguments by
name, defaults filled in, ``TypeError`` locally for unknown or missing arguments.
"""

import msgpack

from . import exceptions as _exc
from .ghid import Ghid

__all__ = [
    "pack",
    "unpack",
    "encode_request",
    "decode_server_message",
    "Reply",
    "Event",
    "OpTable",
]


def _default(value):
    if isinstance(value, Ghid):
        return bytes(value)
    if isinstance(value, (bytearray, memoryview)):
        return bytes(value)
    raise TypeError("cannot send %r over IPC" % (type(value).__name__,))


def pack(value):
    """msgpack with ``bin`` for bytes and ghids, smallest encodings, map order kept."""
    return msgpack.packb(value, use_bin_type=True, default=_default)


def unpack(data):
    """One msgpack value; ``str`` for msgpack str, ``bytes`` for bin. Trailing bytes fail."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def encode_request(req_id, op, args):
    """``{id, op, args}`` in that order (args as given, normally the op table's order)."""
    return pack({"id": req_id, "op": op, "args": args})


class Reply:
    """A reply: ``ok`` holds the result, or ``err`` the error map."""

    __slots__ = ("id", "ok", "err", "is_error")

    def __init__(self, req_id, ok=None, err=None, is_error=False):
        self.id = req_id
        self.ok = ok
        self.err = err
        self.is_error = is_error

    def __repr__(self):
        if self.is_error:
            return "Reply(id=%r, err=%r)" % (self.id, self.err)
        return "Reply(id=%r, ok=%r)" % (self.id, self.ok)


class Event:
    """An event the daemon pushed: ``name`` and ``data``."""

    __slots__ = ("name", "data")

    def __init__(self, name, data):
        self.name = name
        self.data = data

    def __repr__(self):
        return "Event(%r, %r)" % (self.name, self.data)


def decode_server_message(data):
    """A daemon -> app message as :class:`Reply` or :class:`Event`. Unknown fields are
    ignored; ``ValueError`` if the message is neither."""
    try:
        msg = unpack(data)
    except Exception as e:  # msgpack raises several unrelated types
        raise ValueError("not msgpack: %s" % e) from None
    if not isinstance(msg, dict):
        raise ValueError("a daemon message must be a map")
    if "event" in msg:
        name = msg["event"]
        if not isinstance(name, str):
            raise ValueError("`event` must be a string")
        return Event(name, msg.get("data"))
    if "err" in msg and msg["err"] is not None:
        return Reply(msg.get("id"), err=msg["err"], is_error=True)
    if "ok" in msg:
        return Reply(msg.get("id"), ok=msg["ok"])
    raise ValueError("a reply needs `ok` or `err`")


class OpSpec:
    """One op as ``hello`` describes it: argument names (in order) and defaults."""

    __slots__ = ("name", "args", "defaults", "result")

    def __init__(self, name, args=(), defaults=None, result=""):
        self.name = name
        self.args = tuple(args)
        self.defaults = dict(defaults or {})
        self.result = result

    def bind(self, args=(), kwargs=None):
        """The named argument map for a call, in table order. ``TypeError`` for too many
        positional arguments, unknown or duplicate names, and missing required ones."""
        kwargs = kwargs or {}
        if len(args) > len(self.args):
            raise TypeError(
                "%s() takes %d argument(s) but %d were given"
                % (self.name, len(self.args), len(args))
            )
        bound = dict(zip(self.args, args))
        for key, value in kwargs.items():
            if key not in self.args:
                raise TypeError("%s() got an unexpected keyword argument %r" % (self.name, key))
            if key in bound:
                raise TypeError("%s() got multiple values for argument %r" % (self.name, key))
            bound[key] = value
        out = {}
        missing = []
        for name in self.args:
            if name in bound:
                out[name] = bound[name]
            elif name in self.defaults:
                out[name] = self.defaults[name]
            else:
                missing.append(name)
        if missing:
            raise TypeError(
                "%s() missing required argument(s): %s"
                % (self.name, ", ".join(repr(m) for m in missing))
            )
        return out

    def __repr__(self):
        return "OpSpec(%r, args=%r, defaults=%r)" % (self.name, self.args, self.defaults)


class OpTable:
    """The daemon's op table from ``hello``: ``{name: {args: [...], defaults: {...}}}``."""

    def __init__(self, ops=None, events=()):
        self.ops = {}
        for name, spec in (ops or {}).items():
            if not isinstance(name, str):
                continue
            spec = spec if isinstance(spec, dict) else {}
            args = [a for a in (spec.get("args") or []) if isinstance(a, str)]
            defaults = spec.get("defaults") or {}
            if not isinstance(defaults, dict):
                defaults = {}
            self.ops[name] = OpSpec(name, args, defaults, spec.get("result") or "")
        self.events = tuple(e for e in (events or ()) if isinstance(e, str))

    def __contains__(self, name):
        return name in self.ops

    def __iter__(self):
        return iter(self.ops)

    def __getitem__(self, name):
        return self.ops[name]

    def bind(self, op, args=(), kwargs=None):
        """Binds a call of ``op``; raises :class:`hgx.exceptions.UnknownOp` (locally) if the
        daemon does not offer it, ``TypeError`` for bad arguments."""
        spec = self.ops.get(op)
        if spec is None:
            raise _exc.CODES["unknown_op"](
                "the running daemon does not offer the op %r" % (op,), code="unknown_op", op=op
            )
        return spec.bind(args, kwargs)
