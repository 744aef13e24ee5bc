"""Small value types apps use: ``ApiID`` (what kind of object) and ``AppToken`` (which app)."""

import os

from .ghid import Ghid

__all__ = ["ApiID", "AppToken"]


class ApiID(Ghid):
    """An application-defined object type id: a 65-byte algo-0 Ghid.

    ``ApiID(address)`` takes the 64-byte address (or the full 65 bytes starting with 0x00,
    or an algo-0 ``Ghid``). Objects are delivered to share handlers by their api id.
    """

    __slots__ = ()

    def __init__(self, address, _address=None):
        # ApiID(0, address) is accepted too, for symmetry with Ghid(algo, address).
        if _address is not None:
            if address != 0:
                raise ValueError("ApiID algo must be 0")
            address = _address
        if isinstance(address, Ghid):
            if address.algo != 0:
                raise ValueError("ApiID must be an algo-0 ghid")
            address = address.address
        if isinstance(address, (bytearray, memoryview)):
            address = bytes(address)
        if not isinstance(address, bytes):
            raise ValueError("ApiID needs bytes, not %r" % (type(address).__name__,))
        if len(address) == 65:
            if address[0] != 0:
                raise ValueError("a 65-byte ApiID must start with the algo byte 0x00")
            address = address[1:]
        super().__init__(0, address)

    @classmethod
    def from_bytes(cls, data):
        return cls(data)

    @classmethod
    def from_str(cls, text):
        return cls(Ghid.from_str(text))

    @classmethod
    def pseudorandom(cls, algo=0):
        if algo != 0:
            raise ValueError("ApiID algo must be 0")
        return cls(os.urandom(64))

    @classmethod
    def coerce(cls, value):
        """An ``ApiID`` from an ApiID, an algo-0 Ghid, 64 or 65 bytes, or the text form."""
        if isinstance(value, ApiID):
            return value
        if isinstance(value, str):
            return cls.from_str(value)
        return cls(value)

    def __reduce__(self):
        return (type(self), (self.address,))


class AppToken(bytes):
    """A 16-byte application token: names one app across restarts (the app keeps it)."""

    LENGTH = 16

    def __new__(cls, value):
        if isinstance(value, str):
            try:
                value = bytes.fromhex(value)
            except ValueError:
                raise ValueError("AppToken text must be hex") from None
        value = bytes(value)
        if len(value) != cls.LENGTH:
            raise ValueError("AppToken must be %d bytes, got %d" % (cls.LENGTH, len(value)))
        return super().__new__(cls, value)

    @classmethod
    def pseudorandom(cls):
        return cls(os.urandom(cls.LENGTH))

    @classmethod
    def from_bytes(cls, data):
        return cls(data)

    def as_str(self):
        return self.hex()

    def __repr__(self):
        return "AppToken(%r)" % self.hex()

    def __reduce__(self):
        return (type(self), (bytes(self),))
