"""hgx: the Python integration for Hypergolix ("programmable Dropbox").

Apps talk to the local ``hgxd`` daemon through an :class:`HGXLink`, and hold
Hypergolix objects as :class:`Obj` / :class:`Proxy` (or their JSON / pickle variants)::

    import hgx
    link = hgx.HGXLink()                      # finds ipc.token as hgxd finds its config
    obj = link.new_threadsafe(hgx.JsonObj, {"hello": "world"})
    obj.state["hello"] = "Hypergolix"
    obj.push_threadsafe()
    obj.share_threadsafe(friend_fingerprint)
"""

from . import exceptions
from . import utils
from .exceptions import IPCError, HGXLinkError
from .ghid import Ghid
from .link import HGXLink
from .objproxy import JsonObj, JsonProxy, Obj, PickleObj, PickleProxy, Proxy
from .utils import ApiID, AppToken
from ._version import __version__

__all__ = [
    "HGXLink",
    "Ghid",
    "ApiID",
    "AppToken",
    "Obj",
    "Proxy",
    "JsonObj",
    "JsonProxy",
    "PickleObj",
    "PickleProxy",
    "IPCError",
    "HGXLinkError",
    "exceptions",
    "utils",
    "__version__",
]
