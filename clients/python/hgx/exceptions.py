"""Exceptions. Every failure the daemon reports is an :class:`IPCError` whose subclass is
named by the wire error code (``not_found`` -> :class:`NotFound`, ...); codes this
version does not know raise the base :class:`IPCError` with ``.code`` set. The client
raises the same classes itself where it can tell in advance (``LocallyImmutable`` for a
push to a static or foreign object, ``DeadObject`` for a discarded or deleted one,
``Unsharable`` for sharing a private one).
"""

from typing import Dict, List, Optional, Type

__all__ = [
    "HGXError",
    "HGXLinkError",
    "IPCTokenNotFound",
    "ConnectionLost",
    "IPCError",
    "error_for",
    "exception_class",
    "CODES",
]


class HGXError(Exception):
    """Base of every exception this package raises on purpose."""


class HGXLinkError(HGXError, RuntimeError):
    """The link itself is unusable: not started, stopped, cannot reach the daemon, ..."""


class IPCTokenNotFound(HGXLinkError, FileNotFoundError):
    """No ``ipc.token`` in any of the places searched (``tried``, in order): the daemon is not
    running, or runs with another home (set ``HYPERGOLIX_HOME``, ``HGX_IPC_TOKEN_FILE``, or
    pass ``home=`` / ``ipc_token=``)."""

    def __init__(self, tried: List[str]) -> None:
        self.tried = list(tried)
        HGXLinkError.__init__(
            self,
            "no hgxd capability token (ipc.token) found; tried: %s. Is hgxd running? Set "
            "HYPERGOLIX_HOME or HGX_IPC_TOKEN_FILE, or pass home= or ipc_token=."
            % ", ".join(self.tried),
        )


class IPCError(HGXError):
    """The daemon (or the client on its behalf) refused an operation.

    ``code`` is the stable wire code, ``message`` the daemon's text, ``logref`` the id of
    the daemon's log line for this failure (empty for errors raised locally), ``op`` the
    operation that failed.
    """

    code: Optional[str] = None

    def __init__(
        self,
        message: str = "",
        *,
        code: Optional[str] = None,
        logref: str = "",
        op: Optional[str] = None,
    ) -> None:
        if code is not None:
            self.code = code
        self.message = message
        self.logref = logref
        self.op = op
        text = message or (self.code or "")
        if op:
            text = "%s: %s" % (op, text)
        if logref:
            text = "%s (logref %s)" % (text, logref)
        super().__init__(text)


class ConnectionLost(HGXLinkError, IPCError):
    """The connection to the daemon closed while the request was in flight; the request
    may or may not have taken effect. The link reconnects by itself."""

    code = "connection_lost"


# code -> class. Filled by _code() below; the names follow the codes.
CODES: Dict[str, Type[IPCError]] = {}


def _code(code, name, base=IPCError, doc=""):
    cls = type(name, (base,), {"code": code, "__doc__": doc or "Wire code ``%s``." % code})
    cls.__module__ = __name__
    CODES[code] = cls
    globals()[name] = cls
    __all__.append(name)
    return cls


# The IPC layer's own codes.
_code("malformed", "Malformed", doc="The message was not a valid request envelope.")
_code("unknown_op", "UnknownOp", doc="The daemon does not know the operation.")
_code("bad_args", "BadArgs", doc="Missing or mistyped arguments.")
_code("access_denied", "AccessDenied", doc="Wrong capability token, or access refused.")
_code("too_large", "TooLarge", doc="The message exceeds the daemon's size limit.")
_code("internal", "Internal", doc="The daemon failed in a way it did not classify.")
# The daemon's codes.
_code("not_found", "NotFound", doc="The object (or identity) does not exist.")
_code("locally_immutable", "LocallyImmutable", doc="Static, or owned by someone else.")
_code("dead_object", "DeadObject", doc="The object was discarded or deleted.")
_code("unknown_token", "UnknownToken", doc="The app token is not known to the daemon.")
_code("token_in_use", "TokenInUse", doc="Another connection already uses this app token.")
_code("unsharable", "Unsharable", doc="Private objects cannot be shared.")
_code("cat_outta_bag", "CatOuttaBag", doc="A public object cannot become private.")
_code("unknown_secret", "UnknownSecret", doc="No secret known for the object.")
_code("unavailable_upstream", "UnavailableUpstream", doc="No remote could provide it.")
_code("shutting_down", "ShuttingDown", doc="The daemon is shutting down.")
_code("already_set", "AlreadySet", doc="Already registered (token or startup object).")
_code("unknown_recipient", "UnknownRecipient", doc="No identity known for the recipient.")
_code("wrong_password", "WrongPassword")
_code("account", "AccountError")
_code("storage", "StorageError")
# Persistence codes (carried through from the Golix rules).
_code("verification_failed", "VerificationFailed")
_code("unknown_author", "UnknownAuthor")
_code("unbound_container", "UnboundContainer")
_code("already_debound", "AlreadyDebound")
_code("invalid_target", "InvalidTarget")
_code("inconsistent_author", "InconsistentAuthor")
_code("illegal_frame", "IllegalFrame")
_code("circular_binding", "CircularBinding")
_code("limit", "LimitExceeded")
_code("unavailable", "Unavailable")

# Reference-compatible alias.
DoesNotExist = CODES["not_found"]  # noqa: F821 (defined by _code)
__all__.append("DoesNotExist")


def exception_class(code: str) -> Type[IPCError]:
    """The exception class for a wire code (the base :class:`IPCError` if unknown)."""
    return CODES.get(code, IPCError)


def error_for(err: object, op: Optional[str] = None) -> IPCError:
    """An exception instance from a wire ``err`` map ``{code, message, logref}``."""
    if not isinstance(err, dict):
        return IPCError("undecodable error reply: %r" % (err,), code="malformed", op=op)
    code = err.get("code")
    code = code if isinstance(code, str) else "internal"
    message = err.get("message") or ""
    logref = err.get("logref") or ""
    cls = exception_class(code)
    return cls(str(message), code=code, logref=str(logref), op=op)
