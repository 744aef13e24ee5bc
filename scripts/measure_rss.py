#!/usr/bin/env python3
"""Idle and loaded resident memory (VmRSS) of a real hgxd, for a given sled page cache.

Starts one hgx-persister and one hgxd (fixture identity, test-cost scrypt) in a temporary
directory with the Python client's test harness, reads hgxd's VmRSS once it is ready and idle,
then has an app create OBJECTS objects of SIZE random bytes and push each PUSHES more times,
and reads VmRSS again (right after the load, and after SETTLE seconds of quiet). With
--reread it then restarts hgxd on the same cache and has an app read (get, then discard)
every object: sled's page cache fills on reads.

    cargo build --release --bins
    .venv/bin/python scripts/measure_rss.py --bin-dir target/release --cache 16777216
    .venv/bin/python scripts/measure_rss.py --bin-dir target/release --cache 1073741824

(1073741824 is sled's own default, what the daemon used before `process.cache_capacity`.)
"""

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def rss_kib(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS for pid %d" % pid)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bin-dir", default=str(REPO / "target" / "release"))
    ap.add_argument("--cache", type=int, required=True, help="process.cache_capacity, bytes")
    ap.add_argument("--objects", type=int, default=1000)
    ap.add_argument("--pushes", type=int, default=2)
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--settle", type=float, default=10.0)
    ap.add_argument("--reread", action="store_true",
                    help="restart hgxd, then read every object back (get + discard)")
    ap.add_argument("--discard", action="store_true",
                    help="discard each object after its pushes (the daemon stops tracking it)")
    args = ap.parse_args()

    os.environ["HGX_BIN_DIR"] = str(Path(args.bin_dir).resolve())
    sys.path.insert(0, str(REPO / "clients" / "python" / "tests"))
    import hgx
    from harness import Daemon, Persister

    with tempfile.TemporaryDirectory() as root:
        root = Path(root)
        persister = Persister(root / "persister").start()
        daemon = Daemon(root, "alice", "TEST_AGENT1", persister.port)
        yml = daemon.home / "hypergolix.yml"
        text = yml.read_text()
        yml.write_text(text.replace("ipc_port: %d}" % daemon.ipc_port,
                                    "ipc_port: %d, cache_capacity: %d}" % (daemon.ipc_port, args.cache)))
        try:
            daemon.start()
            pid = daemon.proc.pid
            time.sleep(args.settle)
            idle = rss_kib(pid)
            link = hgx.HGXLink(daemon.ipc_port, home=daemon.home, timeout=60, connect_timeout=10)
            started = time.monotonic()
            peak = idle
            ghids = []
            try:
                for i in range(args.objects):
                    obj = link.new_threadsafe(hgx.Obj, os.urandom(args.size))
                    ghids.append(obj.ghid)
                    for _ in range(args.pushes):
                        obj.state = os.urandom(args.size)
                        obj.push_threadsafe()
                    if args.discard:
                        obj.discard_threadsafe()
                    if i % 50 == 0:
                        peak = max(peak, rss_kib(pid))
            finally:
                link.stop_threadsafe()
            took = time.monotonic() - started
            loaded = rss_kib(pid)
            peak = max(peak, loaded)
            time.sleep(args.settle)
            settled = rss_kib(pid)
            reread = None
            if args.reread:
                daemon.restart()
                pid = daemon.proc.pid
                time.sleep(args.settle)
                reidle = rss_kib(pid)
                link = hgx.HGXLink(daemon.ipc_port, home=daemon.home, timeout=60, connect_timeout=10)
                started = time.monotonic()
                try:
                    for ghid in ghids:
                        link.get_threadsafe(hgx.Obj, ghid).discard_threadsafe()
                finally:
                    link.stop_threadsafe()
                reread = (reidle, rss_kib(pid), time.monotonic() - started)
        finally:
            daemon.stop()
            persister.stop()
    print("cache_capacity=%d objects=%d pushes=%d size=%d discard=%s load=%.1fs" % (
        args.cache, args.objects, args.pushes, args.size, args.discard, took))
    print("hgxd VmRSS: idle %.1f MiB, peak during load %.1f MiB, after load %.1f MiB, "
          "after %gs quiet %.1f MiB" % (idle / 1024, peak / 1024, loaded / 1024, args.settle,
                                         settled / 1024))
    if reread is not None:
        print("after a restart: idle %.1f MiB; after reading every object back (%.1fs) %.1f MiB"
              % (reread[0] / 1024, reread[2], reread[1] / 1024))


if __name__ == "__main__":
    main()
