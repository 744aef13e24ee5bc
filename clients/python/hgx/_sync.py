"""Crossing between event loops and threads: every operation of the link and its objects
exists as a coroutine for the link's own loop (``name``), a blocking call for any other
thread (``name_threadsafe``) and a coroutine for any other event loop (``name_loopsafe``).
"""

import asyncio
import functools
import inspect

from .exceptions import HGXLinkError

__all__ = ["run_threadsafe", "run_loopsafe", "forms", "maybe_await"]


def _running_loop():
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _check_loop(loop, coro):
    if loop is None or loop.is_closed():
        coro.close()
        raise HGXLinkError("the HGXLink is not running (start() it first, or it was stopped)")


def run_threadsafe(coro, loop, timeout=None):
    """Runs ``coro`` in ``loop`` (another thread's) and blocks for its result."""
    _check_loop(loop, coro)
    if _running_loop() is loop:
        coro.close()
        raise RuntimeError(
            "a _threadsafe method was called from inside the HGXLink's own event loop, "
            "where it would deadlock: await the plain coroutine form instead"
        )
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    return future.result(timeout)


async def run_loopsafe(coro, loop):
    """Awaits ``coro`` running in ``loop`` from the caller's (different) event loop."""
    _check_loop(loop, coro)
    if _running_loop() is loop:
        return await coro
    return await asyncio.wrap_future(asyncio.run_coroutine_threadsafe(coro, loop))


async def maybe_await(value):
    """``value``, awaited if it is awaitable (serializer hooks may be plain functions)."""
    if inspect.isawaitable(value):
        return await value
    return value


def forms(coro_fn, loop_of, name):
    """The ``_threadsafe`` and ``_loopsafe`` twins of the coroutine function ``coro_fn``
    (a method); ``loop_of(self)`` gives the loop it must run in."""

    @functools.wraps(coro_fn)
    def threadsafe(self, *args, **kwargs):
        return run_threadsafe(coro_fn(self, *args, **kwargs), loop_of(self))

    @functools.wraps(coro_fn)
    async def loopsafe(self, *args, **kwargs):
        return await run_loopsafe(coro_fn(self, *args, **kwargs), loop_of(self))

    threadsafe.__name__ = threadsafe.__qualname__ = name + "_threadsafe"
    loopsafe.__name__ = loopsafe.__qualname__ = name + "_loopsafe"
    threadsafe.__doc__ = "Blocking form of :meth:`%s` for threads other than the link's." % name
    loopsafe.__doc__ = "Coroutine form of :meth:`%s` for event loops other than the link's." % name
    return threadsafe, loopsafe
