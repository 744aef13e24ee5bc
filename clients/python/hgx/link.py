"""``HGXLink``: the app's connection to the local ``hgxd``.

The link runs its own asyncio event loop in a daemon thread (``threaded=True``, the
default), connects to ``ws://127.0.0.1:<ipc_port>/``, presents the capability token
from ``ipc.token`` in ``hello`` and builds every call from the op table that ``hello``
returns: arguments are bound by name, defaults filled in, and ``TypeError`` raised
locally for unknown or missing ones (src/ipc/PROTOCOL.md).

Every operation exists in three forms: a coroutine for the link's own loop (``new``), a
blocking call for other threads (``new_threadsafe``) and a coroutine for other event
loops (``new_loopsafe``).

If the daemon goes away the link reconnects by itself (with backoff, re-reading the token
file, which the daemon rewrites at each start) and then re-registers its app token, its
share handlers and every live object it tracks; updates missed meanwhile are applied and
their callbacks run. Requests made while disconnected wait for the reconnection (up to
``timeout``); requests in flight when the connection dropped raise ``ConnectionLost``.

The token file is found the way the daemon finds its config (see
:func:`ipc_token_search_paths`); a missing one raises :class:`IPCTokenNotFound` at once,
naming every path tried.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import functools
import inspect
import itertools
import logging
import os
import threading
import weakref
from typing import Any, Awaitable, Callable, List, Optional, Type, TypeVar, Union

import websockets
from websockets.asyncio.client import connect as _ws_connect

from . import exceptions as exc
from ._sync import forms, maybe_await, run_loopsafe, run_threadsafe
from ._wire import Event, OpTable, decode_server_message, encode_request
from .ghid import Ghid
from ._version import __version__
from .utils import ApiID, AppToken

__all__ = [
    "HGXLink",
    "find_ipc_token_file",
    "ipc_token_search_paths",
    "read_ipc_token",
    "DEFAULT_IPC_PORT",
    "DEFAULT_CONNECT_TIMEOUT",
    "IPC_TOKEN_FILE_ENV",
]

logger = logging.getLogger("hgx")

DEFAULT_IPC_PORT = 7772
#: How long :meth:`HGXLink.start` tries to reach the daemon, in seconds.
DEFAULT_CONNECT_TIMEOUT = 3.0
IPC_TOKEN_FILE = "ipc.token"
#: The environment variable naming the token file itself (overrides the search).
IPC_TOKEN_FILE_ENV = "HGX_IPC_TOKEN_FILE"
# Reconnect backoff: first retry, cap.
_BACKOFF_START = 0.05
_BACKOFF_MAX = 2.0

PathLike = Union[str, "os.PathLike[str]"]
ObjT = TypeVar("ObjT")


def ipc_token_search_paths(home: Optional[PathLike] = None) -> List[str]:
    """The token files tried, in order: ``home/ipc.token`` when ``home`` is given; else the
    file named by ``$HGX_IPC_TOKEN_FILE`` when set; else ``ipc.token`` in the directories the
    daemon searches for ``hypergolix.yml`` (its token is written beside its config):
    ``$HYPERGOLIX_HOME`` alone when set, else the current directory, ``~/.hypergolix`` and
    ``/etc/hypergolix``."""
    if home is not None:
        return [os.path.join(os.fspath(home), IPC_TOKEN_FILE)]
    explicit = os.environ.get(IPC_TOKEN_FILE_ENV)
    if explicit:
        return [explicit]
    env_home = os.environ.get("HYPERGOLIX_HOME")
    if env_home:
        dirs = [env_home]
    else:
        dirs = [os.getcwd()]
        user_home = os.environ.get("HOME")
        if user_home:
            dirs.append(os.path.join(user_home, ".hypergolix"))
        dirs.append("/etc/hypergolix")
    return [os.path.join(d, IPC_TOKEN_FILE) for d in dirs]


def find_ipc_token_file(home: Optional[PathLike] = None) -> str:
    """The first existing file of :func:`ipc_token_search_paths`; raises
    :class:`hgx.exceptions.IPCTokenNotFound` (with ``.tried``) if there is none."""
    tried = ipc_token_search_paths(home)
    for path in tried:
        if os.path.isfile(path):
            return path
    raise exc.IPCTokenNotFound(tried)


def _parse_ipc_token(value):
    if isinstance(value, str):
        value = value.strip()
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise ValueError("the IPC token must be 64 hex characters") from None
    else:
        raw = bytes(value)
        if len(raw) == 64:
            try:
                raw = bytes.fromhex(raw.decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                raise ValueError("the IPC token must be 32 bytes or 64 hex characters") from None
    if len(raw) != 32:
        raise ValueError("the IPC token must be 32 bytes (64 hex characters)")
    return raw


def read_ipc_token(path: PathLike) -> bytes:
    """The 32-byte capability token from a token file (64 hex characters)."""
    with open(path, "r", encoding="ascii") as f:
        try:
            return _parse_ipc_token(f.read())
        except ValueError as e:
            raise ValueError("%s: %s" % (os.fspath(path), e)) from None


def _triplicated(fn):
    """Marks a coroutine method of HGXLink to get ``_threadsafe`` / ``_loopsafe`` twins."""
    fn._hgx_triplicate = True
    return fn


def _ghid_or_none(value):
    return None if value is None else Ghid.from_bytes(value)


def _api_or_none(value):
    return None if value is None else ApiID.coerce(value)


class HGXLink:
    """The link to the Hypergolix daemon.

    :param ipc_port: the daemon's IPC port on 127.0.0.1 (default 7772).
    :param autostart: connect immediately (else call :meth:`start`).
    :param threaded: run the link's event loop in its own thread (default). With
        ``threaded=False`` the link lives in the caller's loop: ``await link.connect()``
        from inside it (or ``start()`` when that loop is not running yet).
    :param ipc_token: the capability token (32 bytes or 64 hex characters); by default it
        is read from the first ``ipc.token`` of :func:`ipc_token_search_paths` (re-read at
        every reconnection). No token file at all raises :class:`IPCTokenNotFound` at once.
    :param home: the daemon's home directory (where ``ipc.token`` is).
    :param timeout: how long one request (or a wait for a reconnection) may take, in
        seconds; ``None`` for no limit.
    :param connect_timeout: how long :meth:`start` tries to reach the daemon (default
        3 s); then it raises :class:`HGXLinkError` with the last error (for a daemon that is
        not running: connection refused).
    :param reconnect: reconnect after the daemon restarts (default).
    :param aengel: accepted for compatibility with the original client; unused (the link's
        thread is a daemon thread, and links still running at exit are stopped).
    """

    def __init__(
        self,
        ipc_port: int = DEFAULT_IPC_PORT,
        autostart: bool = True,
        debug: bool = False,
        *,
        threaded: bool = True,
        ipc_token: Union[bytes, str, None] = None,
        home: Optional[PathLike] = None,
        host: str = "127.0.0.1",
        timeout: Optional[float] = 60.0,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        reconnect: bool = True,
        client_name: str = "hgx-python/" + __version__,
        loop: Optional[asyncio.AbstractEventLoop] = None,
        aengel: Any = None,
    ) -> None:
        self._ipc_port = int(ipc_port)
        self._host = host
        self._url = "ws://%s:%d/" % (host, self._ipc_port)
        self._explicit_ipc_token = None if ipc_token is None else _parse_ipc_token(ipc_token)
        self._home = home
        self._debug = debug
        self._threaded = threaded
        self._timeout = timeout
        self._connect_timeout = connect_timeout
        self._reconnect = reconnect
        self._client_name = client_name

        self._loop = loop
        self._thread = None
        self._executor = None
        self._started = False
        self._stopping = False

        # ghid -> live Obj/Proxy (weak: the app owns its objects).
        self._objs_by_ghid = weakref.WeakValueDictionary()
        # ApiID -> async handler(ghid, origin, api_id)
        self._share_handlers = {}
        self._token = None
        self._startup = None
        self._whoami = None
        self._user_id = None
        self._optable = OpTable()
        self._protocol = None
        self._max_message = None

        # Loop-side state, created in _setup().
        self._ws = None
        self._pending = {}
        self._ids = itertools.count(1)
        self._ready = None
        self._events = None
        self._tasks = set()
        self._conn_task = None
        self._dispatch_task = None
        self._first_connect = None
        self._last_error = None
        self._connections = 0

        if autostart:
            self.start()

    # -- lifecycle --------------------------------------------------------------------

    def start(self) -> None:
        """Starts the link and waits until it is connected (at most ``connect_timeout``);
        raises :class:`HGXLinkError` if the daemon cannot be reached, and
        :class:`IPCTokenNotFound` at once if there is no token file."""
        if self._started:
            return
        self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="hgxlink-worker")
        if self._threaded:
            self._loop = asyncio.new_event_loop()
            if self._debug:
                self._loop.set_debug(True)
            running = threading.Event()
            self._thread = threading.Thread(
                target=self._run_loop, args=(running,), name="hgxlink", daemon=True
            )
            self._thread.start()
            running.wait()
            try:
                run_threadsafe(self._start(), self._loop)
            except BaseException:
                self._close_thread()
                raise
            _live_links.add(self)
        else:
            loop = self._loop
            if loop is None:
                try:
                    loop = asyncio.get_running_loop()
                except RuntimeError:
                    loop = asyncio.new_event_loop()
            if loop.is_running():
                raise exc.HGXLinkError(
                    "an unthreaded HGXLink inside a running event loop: `await link.connect()`"
                )
            self._loop = loop
            loop.run_until_complete(self._start())

    async def connect(self) -> None:
        """Starts an unthreaded link in the running loop (the coroutine form of start)."""
        if self._started:
            return
        if self._threaded:
            raise exc.HGXLinkError("connect() is for threaded=False links; use start()")
        self._executor = concurrent.futures.ThreadPoolExecutor(thread_name_prefix="hgxlink-worker")
        self._loop = asyncio.get_running_loop()
        await self._start()

    def _run_loop(self, running):
        asyncio.set_event_loop(self._loop)
        self._loop.call_soon(running.set)
        try:
            self._loop.run_forever()
        finally:
            try:
                tasks = [t for t in asyncio.all_tasks(self._loop) if not t.done()]
                for t in tasks:
                    t.cancel()
                if tasks:
                    self._loop.run_until_complete(
                        asyncio.gather(*tasks, return_exceptions=True)
                    )
                self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            finally:
                self._loop.close()

    def _close_thread(self):
        loop, thread = self._loop, self._thread
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None and thread is not threading.current_thread():
            thread.join(10)
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        _live_links.discard(self)

    async def _start(self):
        # Fail now, naming the paths tried, rather than after connect_timeout of retries.
        self._ipc_token()
        self._stopping = False
        self._ready = asyncio.Event()
        self._events = asyncio.Queue()
        self._first_connect = asyncio.get_running_loop().create_future()
        self._dispatch_task = asyncio.ensure_future(self._dispatcher())
        self._conn_task = asyncio.ensure_future(self._connection_loop())
        try:
            await asyncio.wait_for(asyncio.shield(self._first_connect), self._connect_timeout)
        except asyncio.TimeoutError:
            await self._stop()
            hint = ""
            if isinstance(self._last_error, ConnectionRefusedError):
                hint = ": nothing listens there; is hgxd running, with this ipc_port?"
            raise exc.HGXLinkError(
                "could not reach hgxd at %s within %g s (last error: %r)%s"
                % (self._url, self._connect_timeout, self._last_error, hint)
            ) from None
        except BaseException:
            await self._stop()
            raise
        self._started = True

    async def _stop(self):
        self._stopping = True
        if self._ready is not None:
            self._ready.clear()
        for task in (self._conn_task, self._dispatch_task):
            if task is not None and not task.done():
                task.cancel()
        ws, self._ws = self._ws, None
        if ws is not None:
            try:
                await asyncio.wait_for(ws.close(), 2)
            except Exception:
                pass
        for task in (self._conn_task, self._dispatch_task):
            if task is not None:
                try:
                    await task
                except BaseException:
                    pass
        self._fail_pending(exc.HGXLinkError("the HGXLink was stopped"))
        for task in list(self._tasks):
            task.cancel()
        self._started = False

    async def stop(self) -> None:
        """Disconnects and stops the link (coroutine, for the link's own loop)."""
        await self._stop()
        if self._executor is not None:
            self._executor.shutdown(wait=False)
        if self._threaded and self._loop is not None:
            self._loop.call_soon(self._loop.stop)
            _live_links.discard(self)

    def stop_threadsafe(self, timeout: Optional[float] = 10) -> None:
        """Stops the link from another thread and waits for its thread to end."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._threaded:
            try:
                run_threadsafe(self._stop(), loop, timeout)
            except concurrent.futures.TimeoutError:
                logger.warning("HGXLink did not stop in time")
            self._close_thread()
        else:
            run_threadsafe(self._stop(), loop, timeout)

    async def stop_loopsafe(self) -> None:
        """Stops the link from another event loop."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        await run_loopsafe(self._stop(), loop)
        if self._threaded:
            await asyncio.get_running_loop().run_in_executor(None, self._close_thread)

    # -- properties -------------------------------------------------------------------

    @property
    def whoami(self) -> Ghid:
        """The fingerprint (``Ghid``) of the logged-in user; share with this."""
        if self._whoami is None:
            raise exc.HGXLinkError("whoami is unknown: the link has not connected yet")
        return self._whoami

    @property
    def user_id(self) -> Ghid:
        """The user's account root ghid."""
        if self._user_id is None:
            raise exc.HGXLinkError("user_id is unknown: the link has not connected yet")
        return self._user_id

    @property
    def token(self) -> AppToken:
        """This app's :class:`AppToken` (after :meth:`register_token`)."""
        if self._token is None:
            raise exc.HGXLinkError("no app token: call register_token() first")
        return self._token

    @property
    def ops(self) -> OpTable:
        """The daemon's op table from ``hello`` (an :class:`hgx._wire.OpTable`)."""
        return self._optable

    @property
    def connected(self) -> bool:
        return self._ready is not None and self._ready.is_set()

    @property
    def ipc_port(self) -> int:
        return self._ipc_port

    def has_op(self, name: str) -> bool:
        """Whether the running daemon offers the op ``name``."""
        return name in self._optable

    # -- connection -------------------------------------------------------------------

    def _spawn(self, coro):
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _fail_pending(self, error):
        pending, self._pending = self._pending, {}
        for fut in pending.values():
            if not fut.done():
                fut.set_exception(error)

    def _ipc_token(self) -> bytes:
        if self._explicit_ipc_token is not None:
            return self._explicit_ipc_token
        return read_ipc_token(find_ipc_token_file(self._home))

    async def _connection_loop(self):
        delay = _BACKOFF_START
        while not self._stopping:
            try:
                ws = await _ws_connect(
                    self._url,
                    max_size=None,
                    compression=None,
                    open_timeout=10,
                    close_timeout=0.25,
                )
            except asyncio.CancelledError:
                raise
            except Exception as e:
                self._last_error = e
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            self._ws = ws
            reader = asyncio.ensure_future(self._reader(ws))
            try:
                await self._handshake()
            except asyncio.CancelledError:
                reader.cancel()
                raise
            except Exception as e:
                self._last_error = e
                logger.warning("hgxd handshake failed: %r", e)
                self._ws = None
                reader.cancel()
                try:
                    await asyncio.wait_for(ws.close(), 2)
                except Exception:
                    pass
                self._fail_pending(exc.ConnectionLost("handshake failed: %r" % (e,)))
                if (
                    isinstance(e, exc.CODES["access_denied"])
                    and self._explicit_ipc_token is not None
                    and not self._first_connect.done()
                ):
                    # An explicit token will not get better by retrying.
                    self._first_connect.set_exception(e)
                    return
                await asyncio.sleep(delay)
                delay = min(delay * 2, _BACKOFF_MAX)
                continue
            delay = _BACKOFF_START
            self._connections += 1
            self._ready.set()
            if not self._first_connect.done():
                self._first_connect.set_result(None)
            try:
                await reader
            except asyncio.CancelledError:
                raise
            except Exception:
                pass
            self._ready.clear()
            self._ws = None
            self._fail_pending(exc.ConnectionLost("the connection to hgxd closed"))
            if self._stopping:
                break
            if not self._reconnect:
                logger.warning("connection to hgxd lost; not reconnecting")
                break
            logger.warning("connection to hgxd lost; reconnecting")

    async def _reader(self, ws):
        try:
            async for message in ws:
                if isinstance(message, str):
                    logger.warning("ignoring a text frame from hgxd")
                    continue
                try:
                    msg = decode_server_message(message)
                except ValueError as e:
                    logger.warning("ignoring an undecodable message from hgxd: %s", e)
                    continue
                if isinstance(msg, Event):
                    self._events.put_nowait(msg)
                    continue
                fut = self._pending.pop(msg.id, None)
                if fut is None:
                    if msg.is_error:
                        logger.warning("hgxd error without a request: %r", msg.err)
                    continue
                if fut.done():
                    continue
                if msg.is_error:
                    fut.set_exception(exc.error_for(msg.err, getattr(fut, "_hgx_op", None)))
                else:
                    fut.set_result(msg.ok)
        except websockets.exceptions.ConnectionClosed:
            pass

    async def _handshake(self):
        token = self._ipc_token()
        hello = await self._send(
            "hello", {"token": token, "client": self._client_name}, handshake=True
        )
        if not isinstance(hello, dict):
            raise exc.IPCError("hello: unexpected reply %r" % (hello,), code="malformed")
        self._optable = OpTable(hello.get("ops"), hello.get("events"))
        self._protocol = hello.get("protocol")
        self._max_message = hello.get("max_message")
        self._whoami = Ghid.from_bytes(hello["fingerprint"])
        self._user_id = _ghid_or_none(hello.get("user_id"))
        if self._connections:
            await self._restore()

    async def _restore(self):
        """After a reconnection: the app token, share handlers and tracked objects."""
        if self._token is not None and self.has_op("register_token"):
            try:
                await self._call_op("register_token", handshake=True, token=self._token)
            except exc.IPCError as e:
                logger.warning("could not re-register the app token: %r", e)
        for api_id in list(self._share_handlers):
            if not self.has_op("register_share_handler"):
                break
            try:
                await self._call_op("register_share_handler", handshake=True, api_id=api_id)
            except exc.IPCError as e:
                logger.warning("could not re-register the share handler for %s: %r", api_id, e)
        for ghid, obj in list(self._objs_by_ghid.items()):
            if not obj._hgx_alive_:
                continue
            try:
                wire = await self._call_op("get", handshake=True, ghid=ghid)
            except (exc.CODES["not_found"], exc.CODES["dead_object"]):
                await self._apply_delete(ghid)
                continue
            except exc.IPCError as e:
                logger.warning("could not re-track %s: %r", ghid, e)
                continue
            if isinstance(wire, dict) and wire.get("state") != obj._hgx_packed_:
                await self._apply_update(wire)

    async def _wait_ready(self):
        if self._stopping or self._ready is None:
            raise exc.HGXLinkError("the HGXLink is not running")
        if self._ready.is_set():
            return
        try:
            await asyncio.wait_for(self._ready.wait(), self._timeout)
        except asyncio.TimeoutError:
            raise exc.HGXLinkError(
                "not connected to hgxd at %s (last error: %r)" % (self._url, self._last_error)
            ) from None
        if self._stopping:
            raise exc.HGXLinkError("the HGXLink was stopped")

    async def _send(self, op, args, *, handshake=False):
        """Sends one request with already-bound ``args``; returns ``ok`` or raises."""
        if not handshake:
            await self._wait_ready()
        ws = self._ws
        if ws is None:
            raise exc.ConnectionLost("not connected to hgxd", op=op)
        req_id = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        fut._hgx_op = op
        self._pending[req_id] = fut
        try:
            await ws.send(encode_request(req_id, op, args))
        except websockets.exceptions.ConnectionClosed:
            self._pending.pop(req_id, None)
            raise exc.ConnectionLost("the connection to hgxd closed", op=op) from None
        except BaseException:
            self._pending.pop(req_id, None)
            raise
        try:
            return await asyncio.wait_for(fut, self._timeout)
        except asyncio.TimeoutError:
            self._pending.pop(req_id, None)
            raise exc.HGXLinkError("%s: no reply from hgxd within %s s" % (op, self._timeout))

    async def _call_op(self, op, *args, handshake=False, **kwargs):
        if not handshake:
            await self._wait_ready()
        bound = self._optable.bind(op, args, kwargs)
        return await self._send(op, bound, handshake=handshake)

    @_triplicated
    async def call(self, op: str, *args: Any, **kwargs: Any) -> Any:
        """Calls any op of the daemon's table by name, binding arguments against the table
        (``TypeError`` for unknown or missing arguments, ``UnknownOp`` if the daemon does
        not offer ``op``). Returns the raw result."""
        return await self._call_op(op, *args, **kwargs)

    # -- events -----------------------------------------------------------------------

    async def _dispatcher(self):
        while True:
            ev = await self._events.get()
            try:
                if ev.name == "update":
                    await self._apply_update(ev.data)
                elif ev.name == "delete":
                    await self._apply_delete(Ghid.from_bytes(ev.data["ghid"]))
                elif ev.name == "share":
                    self._on_share(ev.data)
                elif ev.name == "share_result":
                    logger.info("share result: %r", ev.data)
                elif ev.name == "remote_refused":
                    logger.warning(
                        "remote %s refused %s for good (%s): %s",
                        ev.data.get("remote"),
                        Ghid.from_bytes(ev.data["ghid"]),
                        ev.data.get("code"),
                        ev.data.get("message"),
                    )
                else:
                    logger.debug("ignoring unknown event %r", ev.name)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("error while handling the %r event", ev.name)

    async def _apply_update(self, wire):
        ghid = Ghid.from_bytes(wire["ghid"])
        obj = self._objs_by_ghid.get(ghid)
        if obj is None or not obj._hgx_alive_:
            logger.debug("update for %s, which no live object here tracks", ghid)
            return
        packed = wire.get("state")
        if packed == obj._hgx_packed_:
            return  # nothing new (e.g. a catch-up after a reconnection we already applied)
        state = await maybe_await(type(obj).hgx_unpack(packed))
        obj._hgx_apply_wire(wire, state, packed)
        self._schedule_callback(obj)

    async def _apply_delete(self, ghid):
        obj = self._objs_by_ghid.pop(ghid, None)
        if obj is None or not obj._hgx_alive_:
            return
        obj._hgx_render_dead()
        self._schedule_callback(obj)

    def _schedule_callback(self, obj):
        """Runs the object's callback as a task, after its previous callback finished (so
        one object's callbacks run in order and never block other events)."""
        callback = obj._hgx_callback_
        if callback is None:
            return
        previous = obj._hgx_cb_task_

        async def run():
            if previous is not None and not previous.done():
                await asyncio.wait([previous])
            try:
                await callback(obj)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("error in the update callback of %r", obj)

        object.__setattr__(obj, "_hgx_cb_task_", self._spawn(run()))

    def _on_share(self, data):
        ghid = Ghid.from_bytes(data["ghid"])
        origin = _ghid_or_none(data.get("origin"))
        api_id = _api_or_none(data.get("api_id"))
        handler = self._share_handlers.get(api_id)
        if handler is None:
            logger.info("share of %s for api_id %s, which has no handler here", ghid, api_id)
            return

        async def run():
            try:
                await handler(ghid, origin, api_id)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.exception("error in the share handler for %s", api_id)

        self._spawn(run())

    # -- objects ----------------------------------------------------------------------

    def _register(self, obj):
        self._objs_by_ghid[obj._hgx_ghid_] = obj

    @_triplicated
    async def new(
        self,
        cls: Type[ObjT],
        state: Any,
        api_id: Union[ApiID, bytes, None] = None,
        dynamic: bool = True,
        private: bool = False,
    ) -> ObjT:
        """Creates an object of class ``cls`` (``Obj``, ``Proxy``, ``JsonObj``, ... or a
        subclass) with ``state``, pushes it to the daemon and returns it. ``api_id``
        defaults to ``cls._hgx_DEFAULT_API``."""
        from .objproxy import _ObjCore

        if not (isinstance(cls, type) and issubclass(cls, _ObjCore)):
            raise TypeError("cls must be hgx.Obj, hgx.Proxy or a subclass")
        if isinstance(state, _ObjCore):
            state = state._hgx_state_
        if api_id is None:
            api_id = cls._hgx_default_api()
        api_id = ApiID.coerce(api_id)
        packed = await maybe_await(cls.hgx_pack(state))
        wire = await self._call_op(
            "new", state=packed, api_id=api_id, dynamic=bool(dynamic), private=bool(private)
        )
        obj = cls._hgx_from_wire(self, wire, state, packed)
        self._register(obj)
        return obj

    @_triplicated
    async def get(self, cls: Type[ObjT], ghid: Union[Ghid, bytes, str]) -> ObjT:
        """Loads the object ``ghid`` as class ``cls`` and tracks it (its updates arrive and
        run its callback). A ghid already loaded here returns the same live object; asking
        for it as another class raises ``HGXLinkError`` (use ``recast``)."""
        from .objproxy import _ObjCore

        if not (isinstance(cls, type) and issubclass(cls, _ObjCore)):
            raise TypeError("cls must be hgx.Obj, hgx.Proxy or a subclass")
        ghid = Ghid.coerce(ghid)
        existing = self._objs_by_ghid.get(ghid)
        if existing is not None and existing._hgx_alive_:
            if type(existing) is not cls:
                raise exc.HGXLinkError(
                    "%s is already loaded as %s; use recast() to change its class"
                    % (ghid, type(existing).__name__)
                )
            return existing
        wire = await self._call_op("get", ghid=ghid)
        packed = wire.get("state")
        state = await maybe_await(cls.hgx_unpack(packed))
        # Another get of the same ghid may have finished meanwhile: keep one live object.
        existing = self._objs_by_ghid.get(ghid)
        if existing is not None and existing._hgx_alive_ and type(existing) is cls:
            return existing
        obj = cls._hgx_from_wire(self, wire, state, packed)
        self._register(obj)
        return obj

    # -- app token and startup object -------------------------------------------------

    @_triplicated
    async def register_token(self, token: Union[AppToken, bytes, None] = None) -> Optional[Ghid]:
        """Registers this app: ``token=None`` asks the daemon for a new token, an existing
        token re-registers the app. The token is then in :attr:`token`. Returns the ghid of
        the app's startup object when re-registering (``None`` if it has none)."""
        if token is not None:
            token = AppToken(token)
        result = await self._call_op("register_token", token=token)
        new_token, startup = token, None
        if isinstance(result, dict):
            raw = result.get("token")
            if raw is not None:
                new_token = AppToken(raw)
            startup = _ghid_or_none(result.get("startup"))
        elif isinstance(result, (bytes, bytearray)) and len(result) == AppToken.LENGTH:
            new_token = AppToken(result)
        if new_token is None:
            raise exc.IPCError("register_token: no token in reply %r" % (result,), code="malformed")
        self._token = new_token
        self._startup = startup if token is not None else None
        return self._startup

    @_triplicated
    async def register_startup(self, obj: Any) -> None:
        """Declares ``obj`` (or a ghid) as this app's startup object, returned by
        :meth:`register_token` on the app's next start. Needs an app token."""
        ghid = obj if isinstance(obj, Ghid) else obj._hgx_ghid_
        await self._call_op("register_startup", ghid=ghid)
        self._startup = ghid

    @_triplicated
    async def deregister_startup(self) -> None:
        """Removes this app's startup object."""
        await self._call_op("deregister_startup")
        self._startup = None

    # -- sharing ----------------------------------------------------------------------

    @_triplicated
    async def register_share_handler(
        self,
        api_id: Union[ApiID, bytes],
        handler: Callable[[Ghid, Optional[Ghid], Optional[ApiID]], Awaitable[Any]],
    ) -> None:
        """Receives objects of ``api_id`` shared with this user: ``await handler(ghid,
        origin, api_id)`` runs in the link's loop for each (wrap blocking functions with
        :meth:`wrap_threadsafe`, other loops' coroutines with :meth:`wrap_loopsafe`). One
        handler per api_id; a second registration replaces the first."""
        api_id = ApiID.coerce(api_id)
        if not callable(handler):
            raise TypeError("the share handler must be callable")
        if not _is_async_callable(handler):
            raise TypeError(
                "the share handler must be a coroutine function (async def); wrap blocking "
                "functions with link.wrap_threadsafe(fn)"
            )
        previous = self._share_handlers.get(api_id)
        self._share_handlers[api_id] = handler
        try:
            await self._call_op("register_share_handler", api_id=api_id)
        except BaseException:
            if previous is None:
                self._share_handlers.pop(api_id, None)
            else:
                self._share_handlers[api_id] = previous
            raise

    @_triplicated
    async def deregister_share_handler(self, api_id: Union[ApiID, bytes]) -> None:
        """Stops receiving shares of ``api_id``."""
        api_id = ApiID.coerce(api_id)
        await self._call_op("deregister_share_handler", api_id=api_id)
        self._share_handlers.pop(api_id, None)

    # -- callbacks across threads and loops -------------------------------------------

    def wrap_threadsafe(self, fn: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
        """A coroutine function that runs the blocking ``fn`` in a worker thread; usable as
        a decorator. For share handlers and object callbacks."""
        if _is_async_callable(fn):
            raise TypeError("wrap_threadsafe is for plain (blocking) functions")

        @functools.wraps(fn)
        async def wrapped(*args, **kwargs):
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._executor, functools.partial(fn, *args, **kwargs))

        return wrapped

    def wrap_loopsafe(
        self,
        coro_fn: Optional[Callable[..., Awaitable[Any]]] = None,
        *,
        target_loop: Optional[asyncio.AbstractEventLoop] = None,
    ) -> Any:
        """A coroutine function that runs the coroutine function ``coro_fn`` in
        ``target_loop`` (another thread's loop) and waits for it. As a decorator:
        ``@link.wrap_loopsafe(target_loop=loop)``."""
        if isinstance(coro_fn, asyncio.AbstractEventLoop) and target_loop is None:
            coro_fn, target_loop = None, coro_fn
        if target_loop is None:
            raise TypeError("wrap_loopsafe needs target_loop=<the loop to run in>")
        if coro_fn is None:
            return functools.partial(self.wrap_loopsafe, target_loop=target_loop)
        if not _is_async_callable(coro_fn):
            raise TypeError("wrap_loopsafe is for coroutine functions (async def)")

        @functools.wraps(coro_fn)
        async def wrapped(*args, **kwargs):
            return await run_loopsafe(coro_fn(*args, **kwargs), target_loop)

        return wrapped

    def __repr__(self):
        state = "connected" if self.connected else ("stopped" if self._stopping else "idle")
        return "<HGXLink %s %s>" % (self._url, state)


def _is_async_callable(fn):
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)
    )


# Add the _threadsafe / _loopsafe twins of every marked coroutine.
for _name, _fn in list(vars(HGXLink).items()):
    if getattr(_fn, "_hgx_triplicate", False):
        _ts, _ls = forms(_fn, lambda self: self._loop, _name)
        setattr(HGXLink, _name + "_threadsafe", _ts)
        setattr(HGXLink, _name + "_loopsafe", _ls)
del _name, _fn

# The original client's names for the startup-object calls.
for _suffix in ("", "_threadsafe", "_loopsafe"):
    setattr(HGXLink, "register_startup_obj" + _suffix, getattr(HGXLink, "register_startup" + _suffix))
    setattr(HGXLink, "deregister_startup_obj" + _suffix, getattr(HGXLink, "deregister_startup" + _suffix))
del _suffix

# Links still running at interpreter exit are stopped cleanly (their threads are daemons,
# so nothing hangs if this cannot finish).
_live_links = weakref.WeakSet()


@atexit.register
def _stop_live_links():
    for link in list(_live_links):
        try:
            link.stop_threadsafe(timeout=2)
        except Exception:
            pass
