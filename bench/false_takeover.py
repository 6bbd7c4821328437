#!/usr/bin/env python3
"""
False takeovers: how often the pair fails over when nothing failed.

A pair at heartbeat interval 0.1 s and threshold 0.3 s runs for a set time
(default 10 minutes) while both cores are saturated (stress-ng from Debian
where installed, else CPU burners in Python) and while the live node's
listener serves HTTP load. Counts the takeovers (the goal is zero) and
reports the largest heartbeat gap the backup saw.

    python bench/false_takeover.py            # 600 s
    python bench/false_takeover.py --quick    # 10 s
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import threading

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from harness import Pair  # noqa: E402

INTERVAL = 0.1
THRESHOLD = 0.3

BURNER = "import sys, time\nend = time.monotonic() + float(sys.argv[1])\nwhile time.monotonic() < end:\n    pass\n"


def saturate(seconds: float):
    """Load both cores for C{seconds}; returns the processes and what loads them."""
    cores = os.cpu_count() or 2
    if shutil.which("stress-ng"):
        return [subprocess.Popen(
            ["stress-ng", "--cpu", str(cores), "--timeout", f"{int(seconds) + 1}s", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )], f"stress-ng --cpu {cores}"
    return [
        subprocess.Popen([sys.executable, "-c", BURNER, str(seconds)]) for _ in range(cores)
    ], f"{cores} Python CPU burners"


class Load(threading.Thread):
    """HTTP GETs against the live node's listener, one after another, until told to stop."""

    def __init__(self, port: int):
        super().__init__(daemon=True)
        self.port = port
        self.requests = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=2)
                connection.request("GET", "/")
                connection.getresponse().read()
                connection.close()
                self.requests += 1
            except OSError:
                self.errors += 1
                self.stop.wait(0.01)


def lives(status) -> int:
    """How often a node went live (its recent transitions; a takeover is one, whatever its epoch step)."""
    return sum(1 for t in status["transitions"] if t["to"] == "live")


def run(seconds: float):
    workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
    pair = Pair(workdir, interval=INTERVAL, threshold=THRESHOLD, own_listeners=True, reload_interval=5)
    burners = []
    load = None
    try:
        pair.start_both(timeout=30)
        lives_before = lives(pair.a.status()) + lives(pair.b.status())
        burners, how = saturate(seconds)
        load = Load(pair.ports["web_a"])
        load.start()
        threading.Event().wait(seconds)
        load.stop.set()
        load.join(timeout=10)
        a, b = pair.a.status(), pair.b.status()
        takeovers = lives(a) + lives(b) - lives_before
        return {
            "seconds": seconds, "load": how, "requests": load.requests, "errors": load.errors,
            "takeovers": takeovers, "roles": (a["role"], b["role"]), "max_gap": b["heartbeats"]["max_gap"],
            "received": b["heartbeats"]["received"],
        }
    finally:
        if load is not None:
            load.stop.set()
        for burner in burners:
            burner.kill()
            burner.wait(timeout=10)
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="10 s instead of 600 s")
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args(argv)
    result = run(10.0 if args.quick else args.seconds)
    print(f"false takeovers: interval {INTERVAL:g} s, threshold {THRESHOLD:g} s, CPU saturated by {result['load']}")
    header = f"{'seconds':>7} {'requests':>9} {'heartbeats':>10} {'takeovers':>9} {'max gap ms':>10} {'roles at end':>14}"
    print(header)
    print("-" * len(header))
    print(
        f"{result['seconds']:7g} {result['requests']:9d} {result['received']:10d} {result['takeovers']:9d}"
        f" {result['max_gap'] * 1000:10.1f} {'/'.join(result['roles']):>14}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
