"""Hypergolix objects as apps see them.

:class:`Obj` holds a state (``bytes`` for ``Obj`` itself) with its Hypergolix members as
plain names: ``state``, ``ghid``, ``api_id``, ``private``, ``dynamic``, ``binder``,
``callback``, and ``recast``, ``push``, ``sync``, ``share``, ``freeze``, ``hold``,
``discard``, ``delete`` in their plain / ``_threadsafe`` / ``_loopsafe`` forms.

:class:`Proxy` wraps any value and behaves like it (attributes, operators, item access,
``isinstance``), with the same members under an ``hgx_`` prefix (``hgx_state``,
``hgx_push_threadsafe``, ...).

Serialization is per class: ``hgx_pack(state) -> bytes`` and ``hgx_unpack(bytes) ->
state`` (static or class methods; coroutines or plain functions), and the default api id
``_hgx_DEFAULT_API``. ``JsonObj``/``JsonProxy`` use compact JSON, ``PickleObj``/
``PickleProxy`` pickle. Subclass either to define your own.
"""

import json
import logging
import operator
import pickle

from . import exceptions as exc
from ._sync import forms, maybe_await
from .ghid import Ghid
from .utils import ApiID

__all__ = ["Obj", "Proxy", "JsonObj", "JsonProxy", "PickleObj", "PickleProxy"]

logger = logging.getLogger("hgx")


def _api(last):
    return ApiID(bytes(63) + bytes((last,)))


DEFAULT_API = _api(1)
PICKLE_API = _api(2)
JSON_API = _api(3)

# The operations every object has (each in three forms), and its read-only members.
_OPS = ("recast", "push", "sync", "share", "freeze", "hold", "discard", "delete")
_READONLY = ("ghid", "api_id", "private", "dynamic", "binder", "isalive")


class _ObjCore:
    """What ``Obj`` and ``Proxy`` share: the state, the Hypergolix metadata and the
    operations (as coroutines named ``_hgx_op_<name>``). Every instance attribute is named
    ``_hgx_*_`` so that a proxy can pass every other name through to its value."""

    _hgx_DEFAULT_API = DEFAULT_API

    def __init__(self, hgxlink, state, api_id=None, dynamic=True, private=False, ghid=None,
                 binder=None):
        if isinstance(state, _ObjCore):
            state = state._hgx_state_
        _set = object.__setattr__
        _set(self, "_hgx_link_", hgxlink)
        _set(self, "_hgx_state_", state)
        _set(self, "_hgx_api_id_", None if api_id is None else ApiID.coerce(api_id))
        _set(self, "_hgx_dynamic_", bool(dynamic))
        _set(self, "_hgx_private_", bool(private))
        _set(self, "_hgx_ghid_", None if ghid is None else Ghid.coerce(ghid))
        _set(self, "_hgx_binder_", None if binder is None else Ghid.coerce(binder))
        _set(self, "_hgx_alive_", True)
        _set(self, "_hgx_callback_", None)
        _set(self, "_hgx_cb_task_", None)
        # The state as the daemon last had it (to spot updates missed while offline).
        _set(self, "_hgx_packed_", None)

    # -- serialization (override in subclasses) ---------------------------------------

    @staticmethod
    async def hgx_pack(state):
        """State -> bytes. The base class stores bytes as they are."""
        if isinstance(state, (bytearray, memoryview)):
            state = bytes(state)
        if not isinstance(state, bytes):
            raise TypeError(
                "Obj/Proxy state must be bytes (use JsonObj, PickleObj or a custom "
                "serializer for other values), not %s" % type(state).__name__
            )
        return state

    @staticmethod
    async def hgx_unpack(packed):
        """Bytes -> state. The base class returns the bytes."""
        return bytes(packed)

    @classmethod
    def _hgx_default_api(cls):
        api = getattr(cls, "_hgx_DEFAULT_API", None)
        if api is None:
            api = getattr(cls, "_hgx_DEFAULT_API_ID", None)
        return None if api is None else ApiID.coerce(api)

    # -- construction from the wire ---------------------------------------------------

    @classmethod
    def _hgx_from_wire(cls, link, wire, state, packed):
        obj = cls(
            link,
            state,
            api_id=wire.get("api_id"),
            dynamic=wire.get("dynamic", True),
            private=wire.get("private", False),
            ghid=Ghid.from_bytes(wire["ghid"]),
            binder=None if wire.get("author") is None else Ghid.from_bytes(wire["author"]),
        )
        object.__setattr__(obj, "_hgx_packed_", packed)
        return obj

    def _hgx_apply_wire(self, wire, state, packed):
        _set = object.__setattr__
        _set(self, "_hgx_state_", state)
        _set(self, "_hgx_packed_", packed)
        if "private" in wire and wire["private"] is not None:
            _set(self, "_hgx_private_", bool(wire["private"]))

    def _hgx_render_dead(self):
        object.__setattr__(self, "_hgx_alive_", False)

    def _hgx_loop(self):
        return self._hgx_link_._loop

    def _hgx_check_dead(self, what):
        if not self._hgx_alive_:
            raise exc.CODES["dead_object"](
                "%s: the object was discarded or deleted" % what, code="dead_object", op=what
            )

    def _hgx_check_alive(self, what):
        self._hgx_check_dead(what)
        if self._hgx_ghid_ is None:
            raise exc.HGXLinkError("%s: the object was not created through an HGXLink" % what)

    def _hgx_set_callback(self, callback):
        if callback is not None:
            from .link import _is_async_callable

            if not _is_async_callable(callback):
                raise TypeError(
                    "the callback must be a coroutine function (async def) taking the "
                    "object; wrap blocking functions with link.wrap_threadsafe(fn)"
                )
        object.__setattr__(self, "_hgx_callback_", callback)

    # -- operations -------------------------------------------------------------------

    async def _hgx_op_recast(self, cls):
        """A new object of class ``cls`` for the same Hypergolix object: the state is
        packed with this class's serializer and unpacked with ``cls``'s. The new object
        takes over updates and the callback; this one is dead afterwards."""
        self._hgx_check_alive("recast")
        if not (isinstance(cls, type) and issubclass(cls, _ObjCore)):
            raise TypeError("recast needs hgx.Obj, hgx.Proxy or a subclass")
        packed = await maybe_await(type(self).hgx_pack(self._hgx_state_))
        state = await maybe_await(cls.hgx_unpack(packed))
        new = cls(
            self._hgx_link_,
            state,
            api_id=self._hgx_api_id_,
            dynamic=self._hgx_dynamic_,
            private=self._hgx_private_,
            ghid=self._hgx_ghid_,
            binder=self._hgx_binder_,
        )
        object.__setattr__(new, "_hgx_packed_", self._hgx_packed_)
        object.__setattr__(new, "_hgx_callback_", self._hgx_callback_)
        self._hgx_link_._register(new)
        self._hgx_render_dead()
        return new

    async def _hgx_op_push(self):
        """Sends the current state upstream. Only for dynamic objects of this user
        (``LocallyImmutable`` otherwise)."""
        self._hgx_check_alive("push")
        link = self._hgx_link_
        if not self._hgx_dynamic_:
            raise exc.CODES["locally_immutable"](
                "cannot push a static object", code="locally_immutable", op="push"
            )
        if self._hgx_binder_ is not None and self._hgx_binder_ != link.whoami:
            raise exc.CODES["locally_immutable"](
                "the object belongs to %s, not to this user" % (self._hgx_binder_,),
                code="locally_immutable",
                op="push",
            )
        packed = await maybe_await(type(self).hgx_pack(self._hgx_state_))
        await link._call_op("push", ghid=self._hgx_ghid_, state=packed)
        object.__setattr__(self, "_hgx_packed_", packed)

    async def _hgx_op_sync(self):
        """Pulls the newest state from upstream into this object."""
        self._hgx_check_alive("sync")
        wire = await self._hgx_link_._call_op("sync", ghid=self._hgx_ghid_)
        if isinstance(wire, dict) and "state" in wire:
            packed = wire["state"]
            if packed != self._hgx_packed_:
                state = await maybe_await(type(self).hgx_unpack(packed))
                self._hgx_apply_wire(wire, state, packed)

    async def _hgx_op_share(self, recipient):
        """Shares the object with the user whose fingerprint is ``recipient``."""
        self._hgx_check_alive("share")
        if self._hgx_private_:
            raise exc.CODES["unsharable"](
                "private objects cannot be shared", code="unsharable", op="share"
            )
        recipient = Ghid.coerce(recipient)
        return await self._hgx_link_._call_op("share", ghid=self._hgx_ghid_, recipient=recipient)

    async def _hgx_op_freeze(self):
        """Binds the current state statically: returns a new static object (same class)."""
        self._hgx_check_alive("freeze")
        frozen = await self._hgx_link_._call_op("freeze", ghid=self._hgx_ghid_)
        frozen = Ghid.from_bytes(frozen)
        packed = await maybe_await(type(self).hgx_pack(self._hgx_state_))
        state = await maybe_await(type(self).hgx_unpack(packed))
        new = type(self)(
            self._hgx_link_,
            state,
            api_id=self._hgx_api_id_,
            dynamic=False,
            private=self._hgx_private_,
            ghid=frozen,
            binder=self._hgx_binder_,
        )
        object.__setattr__(new, "_hgx_packed_", packed)
        self._hgx_link_._register(new)
        return new

    async def _hgx_op_hold(self):
        """Adds this user's own binding: the object survives its owner's delete."""
        self._hgx_check_alive("hold")
        await self._hgx_link_._call_op("hold", ghid=self._hgx_ghid_)

    async def _hgx_op_discard(self):
        """Stops tracking the object here (nothing changes anywhere else). The object is
        dead afterwards."""
        self._hgx_check_alive("discard")
        await self._hgx_link_._call_op("discard", ghid=self._hgx_ghid_)
        self._hgx_forget()

    async def _hgx_op_delete(self):
        """Deletes the object everywhere (its other holders get a delete). The object is
        dead afterwards."""
        self._hgx_check_alive("delete")
        await self._hgx_link_._call_op("delete", ghid=self._hgx_ghid_)
        self._hgx_forget()

    def _hgx_forget(self):
        self._hgx_render_dead()
        objs = self._hgx_link_._objs_by_ghid
        if objs.get(self._hgx_ghid_) is self:
            objs.pop(self._hgx_ghid_, None)

    # -- comparisons ------------------------------------------------------------------

    def _hgx_same(self, other):
        return (
            self._hgx_ghid_ == other._hgx_ghid_
            and self._hgx_binder_ == other._hgx_binder_
            and self._hgx_state_ == other._hgx_state_
        )

    def __hash__(self):
        if self._hgx_ghid_ is None:
            raise TypeError("an hgx object without a ghid is unhashable")
        return hash(self._hgx_ghid_)


def _expose(cls, prefix):
    """Puts the operations on ``cls`` as ``<prefix><op>`` (+ ``_threadsafe``/``_loopsafe``)
    and the metadata as read-only properties ``<prefix><name>``."""
    for op in _OPS:
        coro = getattr(_ObjCore, "_hgx_op_" + op)
        name = prefix + op
        threadsafe, loopsafe = forms(coro, _ObjCore._hgx_loop, name)
        setattr(cls, name, _as_coroutine_function(coro, name))
        setattr(cls, name + "_threadsafe", threadsafe)
        setattr(cls, name + "_loopsafe", loopsafe)
    for attr in _READONLY:
        key = "_hgx_alive_" if attr == "isalive" else "_hgx_%s_" % attr
        setattr(cls, prefix + attr, property(operator.attrgetter(key), doc="Read-only."))

    def get_state(self):
        self._hgx_check_dead(prefix + "state")
        return self._hgx_state_

    def set_state(self, value):
        self._hgx_check_dead(prefix + "state")
        if isinstance(value, _ObjCore):
            value = value._hgx_state_
        object.__setattr__(self, "_hgx_state_", value)

    setattr(cls, prefix + "state", property(
        get_state, set_state,
        doc="The object's value (read-write). Changes go upstream only on push. "
            "``DeadObject`` once the object was discarded, deleted or recast."))
    setattr(cls, prefix + "callback", property(
        operator.attrgetter("_hgx_callback_"), _ObjCore._hgx_set_callback,
        doc="``async def callback(obj)``, awaited in the link's loop after an upstream "
            "update or delete (not after this app's own push). Its exceptions are logged "
            "and swallowed. ``None`` to clear."))


def _as_coroutine_function(coro, name):
    async def method(self, *args, **kwargs):
        return await coro(self, *args, **kwargs)

    method.__name__ = method.__qualname__ = name
    method.__doc__ = coro.__doc__
    return method


class Obj(_ObjCore):
    """A Hypergolix object: ``state`` (bytes, for ``Obj`` itself) plus its metadata and
    operations under plain names. Create them with ``link.new(...)`` / ``link.get(...)``.

    ``==`` is true when ghid, state and binder all compare equal; comparing with anything
    that is not an hgx object raises ``TypeError``. Hashable by ghid.
    """

    def __eq__(self, other):
        if not isinstance(other, _ObjCore):
            raise TypeError(
                "an hgx.Obj compares only with other hgx objects, not %s" % type(other).__name__
            )
        return self._hgx_same(other)

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = _ObjCore.__hash__

    def __repr__(self):
        return "<%s with state %r at %r>" % (type(self).__name__, self._hgx_state_, self._hgx_ghid_)


_expose(Obj, "")


# -- Proxy ---------------------------------------------------------------------------


def _unwrap(value):
    return value._hgx_state_ if isinstance(value, _ObjCore) else value


class Proxy(_ObjCore):
    """Wraps any value and behaves like it; Hypergolix members are ``hgx_*``.

    Attribute access, item access, operators and most special methods go to the wrapped
    value (``proxy + 1``, ``proxy['key']``, ``proxy.upper()``, ``isinstance(proxy, int)``).
    In-place operators (``proxy += b'x'``) replace the wrapped value and keep the proxy.
    Assign ``proxy.hgx_state = value`` to replace the value outright.

    ``==``: against another hgx object, ghid, state and binder must all compare equal;
    against anything else, the wrapped value is compared. Hashable when it has a ghid (the
    hash is the ghid's, not the value's).
    """

    # -- attribute pass-through -------------------------------------------------------

    def __getattr__(self, name):
        # Only called when normal lookup fails: Proxy's own members never get here.
        if name.startswith("_hgx_"):
            raise AttributeError(name)
        if not object.__getattribute__(self, "_hgx_alive_"):
            self._hgx_check_dead(name)
        return getattr(object.__getattribute__(self, "_hgx_state_"), name)

    def __setattr__(self, name, value):
        if name.startswith("_hgx_") or name.startswith("hgx_"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._hgx_state_, name, value)

    def __delattr__(self, name):
        if name.startswith("_hgx_") or name.startswith("hgx_"):
            object.__delattr__(self, name)
        else:
            delattr(self._hgx_state_, name)

    def __dir__(self):
        names = set(dir(type(self))) | set(object.__getattribute__(self, "__dict__"))
        return sorted(names | set(dir(self._hgx_state_)))

    @property
    def __class__(self):
        # isinstance(proxy, type(value)) is true; type(proxy) is still the proxy class.
        return type(object.__getattribute__(self, "_hgx_state_"))

    # -- comparisons and hashing ------------------------------------------------------

    def __eq__(self, other):
        if isinstance(other, _ObjCore):
            return self._hgx_same(other)
        return self._hgx_state_ == other

    def __ne__(self, other):
        return not self.__eq__(other)

    __hash__ = _ObjCore.__hash__

    def __lt__(self, other):
        return self._hgx_state_ < _unwrap(other)

    def __le__(self, other):
        return self._hgx_state_ <= _unwrap(other)

    def __gt__(self, other):
        return self._hgx_state_ > _unwrap(other)

    def __ge__(self, other):
        return self._hgx_state_ >= _unwrap(other)

    # -- conversions and protocols ----------------------------------------------------

    def __repr__(self):
        return "<%s to %r at %r>" % (type(self).__name__, self._hgx_state_, self._hgx_ghid_)

    def __str__(self):
        return str(self._hgx_state_)

    def __bytes__(self):
        return bytes(self._hgx_state_)

    def __format__(self, spec):
        return format(self._hgx_state_, spec)

    def __bool__(self):
        return bool(self._hgx_state_)

    def __int__(self):
        return int(self._hgx_state_)

    def __float__(self):
        return float(self._hgx_state_)

    def __complex__(self):
        return complex(self._hgx_state_)

    def __index__(self):
        return operator.index(self._hgx_state_)

    def __round__(self, ndigits=None):
        return round(self._hgx_state_) if ndigits is None else round(self._hgx_state_, ndigits)

    def __trunc__(self):
        import math

        return math.trunc(self._hgx_state_)

    def __floor__(self):
        import math

        return math.floor(self._hgx_state_)

    def __ceil__(self):
        import math

        return math.ceil(self._hgx_state_)

    def __neg__(self):
        return -self._hgx_state_

    def __pos__(self):
        return +self._hgx_state_

    def __abs__(self):
        return abs(self._hgx_state_)

    def __invert__(self):
        return ~self._hgx_state_

    def __len__(self):
        return len(self._hgx_state_)

    def __length_hint__(self):
        return operator.length_hint(self._hgx_state_)

    def __iter__(self):
        return iter(self._hgx_state_)

    def __reversed__(self):
        return reversed(self._hgx_state_)

    def __contains__(self, item):
        return item in self._hgx_state_

    def __getitem__(self, key):
        return self._hgx_state_[key]

    def __setitem__(self, key, value):
        self._hgx_state_[key] = value

    def __delitem__(self, key):
        del self._hgx_state_[key]

    def __call__(self, *args, **kwargs):
        return self._hgx_state_(*args, **kwargs)

    def __enter__(self):
        return self._hgx_state_.__enter__()

    def __exit__(self, *exc_info):
        return self._hgx_state_.__exit__(*exc_info)


def _binary(op):
    def forward(self, other):
        return op(self._hgx_state_, _unwrap(other))

    def reflected(self, other):
        return op(_unwrap(other), self._hgx_state_)

    return forward, reflected


def _inplace(iop):
    def method(self, other):
        object.__setattr__(self, "_hgx_state_", iop(self._hgx_state_, _unwrap(other)))
        return self

    return method


for _name, _op, _iop in (
    ("add", operator.add, operator.iadd),
    ("sub", operator.sub, operator.isub),
    ("mul", operator.mul, operator.imul),
    ("matmul", operator.matmul, operator.imatmul),
    ("truediv", operator.truediv, operator.itruediv),
    ("floordiv", operator.floordiv, operator.ifloordiv),
    ("mod", operator.mod, operator.imod),
    ("pow", operator.pow, operator.ipow),
    ("lshift", operator.lshift, operator.ilshift),
    ("rshift", operator.rshift, operator.irshift),
    ("and", operator.and_, operator.iand),
    ("xor", operator.xor, operator.ixor),
    ("or", operator.or_, operator.ior),
    ("divmod", divmod, None),
):
    _fwd, _ref = _binary(_op)
    _fwd.__name__, _ref.__name__ = "__%s__" % _name, "__r%s__" % _name
    setattr(Proxy, "__%s__" % _name, _fwd)
    setattr(Proxy, "__r%s__" % _name, _ref)
    if _iop is not None:
        _in = _inplace(_iop)
        _in.__name__ = "__i%s__" % _name
        setattr(Proxy, "__i%s__" % _name, _in)
del _name, _op, _iop, _fwd, _ref, _in

_expose(Proxy, "hgx_")


# -- serializers ---------------------------------------------------------------------


class _JsonSerializer:
    _hgx_DEFAULT_API = JSON_API

    @staticmethod
    async def hgx_pack(state):
        return json.dumps(state, separators=(",", ":"), ensure_ascii=False).encode("utf-8")

    @staticmethod
    async def hgx_unpack(packed):
        return json.loads(bytes(packed).decode("utf-8"))


class _PickleSerializer:
    _hgx_DEFAULT_API = PICKLE_API

    @staticmethod
    async def hgx_pack(state):
        return pickle.dumps(state, protocol=pickle.DEFAULT_PROTOCOL)

    @staticmethod
    async def hgx_unpack(packed):
        return pickle.loads(bytes(packed))


class JsonObj(_JsonSerializer, Obj):
    """An :class:`Obj` whose state is anything JSON can hold (compact UTF-8 JSON)."""


class JsonProxy(_JsonSerializer, Proxy):
    """A :class:`Proxy` whose value is anything JSON can hold (compact UTF-8 JSON)."""


class PickleObj(_PickleSerializer, Obj):
    """An :class:`Obj` whose state is any picklable value. Only share pickles with users
    you trust: unpickling runs code."""


class PickleProxy(_PickleSerializer, Proxy):
    """A :class:`Proxy` whose value is any picklable value. Only share pickles with users
    you trust: unpickling runs code."""
