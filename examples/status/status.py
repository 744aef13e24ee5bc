#!/usr/bin/env python3
"""A two-user Hypergolix app: one user publishes a changing status, the other watches it.

    status.py publish [--interval S] [--count N] [--state FILE]
    status.py watch PUBLISHER_FINGERPRINT [--count N] [--timeout S]

The publisher keeps one dynamic JSON object with its status and pushes a new state every
``--interval`` seconds. It shares that object with whoever asks: a watcher asks by sharing a
small request object (api id REQUEST_API) with the publisher's fingerprint; the
publisher's share handler answers by sharing the status object (api id STATUS_API) with
the request's origin. The watcher's share handler loads the status object and prints
every update Hypergolix delivers.

With ``--state FILE`` the publisher keeps its app token in FILE and registers the status
object as its startup object, so a restarted publisher goes on with the same object (and
watchers keep receiving its updates).

Both talk to their own user's hgxd (``--ipc-port``, default 7772; the capability token is
read from ``$HYPERGOLIX_HOME`` or ``~/.hypergolix``, or ``--home``).
"""

import argparse
import datetime
import hashlib
import itertools
import os
import signal
import sys
import threading

import hgx
from hgx.utils import ApiID, AppToken

# Application-defined object types (any 64 bytes; hashing a name keeps them unique).
STATUS_API = ApiID(hashlib.sha512(b"hgx example: status").digest())
REQUEST_API = ApiID(hashlib.sha512(b"hgx example: status request").digest())

MOODS = ["all good", "busy", "in a meeting", "having lunch", "deploying", "back soon"]


def say(*parts):
    print(*parts, flush=True)


def connect(args):
    return hgx.HGXLink(ipc_port=args.ipc_port, home=args.home)


def publish(args):
    link = connect(args)
    say("fingerprint:", link.whoami.as_str())

    status = None
    if args.state and os.path.exists(args.state):
        # A restart: the same app token gives back the startup object.
        with open(args.state) as f:
            token = AppToken(f.read().strip())
        startup = link.register_token_threadsafe(token)
        if startup is not None:
            status = link.get_threadsafe(hgx.JsonObj, startup)
    elif args.state:
        link.register_token_threadsafe()
        with open(args.state, "w") as f:
            f.write(link.token.as_str())
    if status is None:
        status = link.new_threadsafe(
            hgx.JsonObj, {"n": 0, "status": "starting"}, api_id=STATUS_API
        )
        if args.state:
            link.register_startup_threadsafe(status)
    say("status object:", status.ghid.as_str())

    @link.wrap_threadsafe
    def on_request(ghid, origin, api_id):
        # Someone asks for our status: share it with them, and drop their request.
        say("request from", origin.as_str())
        status.share_threadsafe(origin)
        try:
            link.get_threadsafe(hgx.JsonObj, ghid).discard_threadsafe()
        except hgx.IPCError:
            pass

    link.register_share_handler_threadsafe(REQUEST_API, on_request)

    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    start = status.state.get("n", 0) if isinstance(status.state, dict) else 0
    try:
        for n in itertools.count(start + 1):
            if args.count is not None and n > start + args.count:
                break
            status.state = {
                "n": n,
                "status": MOODS[n % len(MOODS)],
                "time": datetime.datetime.now().isoformat(timespec="seconds"),
            }
            status.push_threadsafe()
            say("published", n, status.state["status"])
            if stop.wait(args.interval):
                break
    except KeyboardInterrupt:
        pass
    finally:
        link.stop_threadsafe()
    say("publisher done")


def watch(args):
    publisher = hgx.Ghid.from_str(args.publisher)
    link = connect(args)
    say("fingerprint:", link.whoami.as_str())
    updates = []
    done = threading.Event()
    keep = []  # the watched objects (the link holds them weakly)

    @link.wrap_threadsafe
    def show(obj):
        if not obj.isalive:
            say("status object deleted")
            done.set()
            return
        updates.append(obj.state)
        say("update %d:" % len(updates), obj.state)
        if args.count is not None and len(updates) >= args.count:
            done.set()

    @link.wrap_threadsafe
    def on_status(ghid, origin, api_id):
        if origin != publisher:
            return
        obj = link.get_threadsafe(hgx.JsonObj, ghid)
        keep.append(obj)
        obj.callback = show
        say("watching", ghid.as_str(), "current:", obj.state)

    link.register_share_handler_threadsafe(STATUS_API, on_status)
    request = link.new_threadsafe(
        hgx.JsonObj, {"want": "status", "from": link.whoami.as_str()}, api_id=REQUEST_API
    )
    request.share_threadsafe(publisher)
    say("asked", publisher.as_str(), "for its status")

    try:
        ok = done.wait(args.timeout)
    except KeyboardInterrupt:
        ok = True
    finally:
        try:
            request.delete_threadsafe()
        except hgx.IPCError:
            pass
        link.stop_threadsafe()
    if not ok:
        say("timed out after %s s with %d update(s)" % (args.timeout, len(updates)))
        return 1
    say("watcher done")
    return 0


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ipc-port", type=int, default=7772, help="your hgxd's IPC port")
    parser.add_argument("--home", help="your hgxd's home (default $HYPERGOLIX_HOME or ~/.hypergolix)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("publish", help="publish a changing status")
    p.add_argument("--interval", type=float, default=2.0, help="seconds between updates")
    p.add_argument("--count", type=int, help="stop after this many updates")
    p.add_argument("--state", help="file keeping the app token (restarts reuse the object)")
    w = sub.add_parser("watch", help="watch someone's status")
    w.add_argument("publisher", help="the publisher's fingerprint")
    w.add_argument("--count", type=int, help="exit after this many updates")
    w.add_argument("--timeout", type=float, default=None, help="give up after this many seconds")
    args = parser.parse_args(argv)
    if args.command == "publish":
        publish(args)
        return 0
    return watch(args)


if __name__ == "__main__":
    sys.exit(main())
