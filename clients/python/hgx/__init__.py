"""hgx: the Python integration for Hypergolix ("programmable Dropbox").

Apps talk to the local ``hgxd`` daemon through an :class:`HGXLink`, and hold
Hypergolix objects as :class:`Obj` / :class:`Proxy` (or their JSON / pickle variants)::

    import hgx
    link = hgx.HGXLink()                      # reads ~/.hypergolix/ipc.token
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

__version__ = "0.1.0"

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
]
