"""The Golix hash identifier (``Ghid``): a one-byte algorithm id plus a 64-byte address.

A ghid names an identity (its public key fingerprint), a static object (the hash of its
container) or a dynamic object (the hash of its first binding frame). On the wire it is
always 65 raw bytes; as text, 88 characters of padded url-safe base64.
"""

import base64
import binascii
import os

__all__ = ["Ghid"]

# algo -> address length. 1 is SHA-512; 0 is the test / api-id algorithm.
_ADDRESS_LENGTHS = {0: 64, 1: 64}


class Ghid:
    """``Ghid(algo, address)``: immutable, hashable, comparable with ``==``.

    ``bytes(ghid)`` is the 65-byte serialization, ``ghid.as_str()`` the 88-character text
    form, ``str(ghid)`` a short form for logs. Invalid input raises ``ValueError``.
    """

    __slots__ = ("_algo", "_address")

    def __init__(self, algo, address):
        if isinstance(algo, bool) or not isinstance(algo, int):
            raise ValueError("Ghid algo must be an int, not %r" % (type(algo).__name__,))
        if algo not in _ADDRESS_LENGTHS:
            raise ValueError("unknown Ghid algo %r" % (algo,))
        if isinstance(address, (bytearray, memoryview)):
            address = bytes(address)
        if not isinstance(address, bytes):
            raise ValueError("Ghid address must be bytes, not %r" % (type(address).__name__,))
        if len(address) != _ADDRESS_LENGTHS[algo]:
            raise ValueError(
                "Ghid address for algo %d must be %d bytes, got %d"
                % (algo, _ADDRESS_LENGTHS[algo], len(address))
            )
        object.__setattr__(self, "_algo", algo)
        object.__setattr__(self, "_address", address)

    def __setattr__(self, name, value):
        raise AttributeError("Ghid is immutable")

    def __delattr__(self, name):
        raise AttributeError("Ghid is immutable")

    @property
    def algo(self):
        """The hash algorithm id (1 = SHA-512, 0 = test / api ids)."""
        return self._algo

    @property
    def address(self):
        """The 64-byte digest."""
        return self._address

    # -- serializations ---------------------------------------------------------------

    def __bytes__(self):
        return bytes((self._algo,)) + self._address

    @classmethod
    def from_bytes(cls, data):
        """Loads the 65-byte serialization. Raises ``ValueError`` on bad input."""
        if isinstance(data, Ghid):
            return cls(data.algo, data.address)
        if isinstance(data, (bytearray, memoryview)):
            data = bytes(data)
        if not isinstance(data, bytes):
            raise ValueError("Ghid.from_bytes needs bytes, not %r" % (type(data).__name__,))
        if not data:
            raise ValueError("Ghid.from_bytes: empty input")
        return cls(data[0], data[1:])

    def as_str(self):
        """The full text form: 88 characters of padded url-safe base64 of ``bytes(self)``."""
        return base64.urlsafe_b64encode(bytes(self)).decode("ascii")

    @classmethod
    def from_str(cls, text):
        """Loads the text form of :meth:`as_str` (padding optional). Raises ``ValueError``."""
        if isinstance(text, bytes):
            try:
                text = text.decode("ascii")
            except UnicodeDecodeError:
                raise ValueError("Ghid.from_str: not ascii") from None
        if not isinstance(text, str):
            raise ValueError("Ghid.from_str needs a str, not %r" % (type(text).__name__,))
        text = text.strip()
        if len(text) % 4:
            text += "=" * (-len(text) % 4)
        try:
            raw = base64.b64decode(text.encode("ascii"), altchars=b"-_", validate=True)
        except (binascii.Error, UnicodeEncodeError, ValueError) as e:
            raise ValueError("Ghid.from_str: not url-safe base64: %s" % e) from None
        return cls.from_bytes(raw)

    @classmethod
    def pseudorandom(cls, algo=1):
        """A random ghid of the given algo (for tests and ids; addresses nothing)."""
        if algo not in _ADDRESS_LENGTHS:
            raise ValueError("unknown Ghid algo %r" % (algo,))
        return cls(algo, os.urandom(_ADDRESS_LENGTHS[algo]))

    @classmethod
    def coerce(cls, value):
        """A ``Ghid`` from a Ghid, its 65 bytes or its text form."""
        if isinstance(value, Ghid):
            return value
        if isinstance(value, str):
            return cls.from_str(value)
        return cls.from_bytes(value)

    # -- comparisons ------------------------------------------------------------------

    def __eq__(self, other):
        if isinstance(other, Ghid):
            return self._algo == other._algo and self._address == other._address
        return NotImplemented

    def __ne__(self, other):
        eq = self.__eq__(other)
        return eq if eq is NotImplemented else not eq

    def __hash__(self):
        return hash((self._algo, self._address))

    def __lt__(self, other):
        if isinstance(other, Ghid):
            return bytes(self) < bytes(other)
        return NotImplemented

    def __str__(self):
        return self.as_str()[:12] + "\u2026"

    def __repr__(self):
        return "%s(%r)" % (type(self).__name__, self.as_str())

    def __reduce__(self):
        return (type(self), (self._algo, self._address))

    def __copy__(self):
        return self

    def __deepcopy__(self, memo):
        return self
