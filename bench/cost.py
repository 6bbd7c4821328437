#!/usr/bin/env python3
"""
What a node costs to run, and how the number of listeners weighs on a takeover.

1. CPU time per second and peak RSS of each node of an idle pair, over a
   set time (default 60 s), at heartbeat intervals of 1 s and 0.1 s.
2. Takeover time (kill -9 of the live node to every listener of the backup
   accepting) with 1, 10 and 100 listeners.

    python bench/cost.py            # 60 s per interval, 5 takeovers per listener count
    python bench/cost.py --quick    # 5 s per interval, 1 takeover per listener count
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from harness import Pair, accepts  # noqa: E402

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def started_pair(workdir, **options):
    return Pair(workdir, reload_interval=5, **options).start_both(timeout=30)


def idle_cost(interval: float, seconds: float):
    workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
    pair = started_pair(workdir, interval=interval, threshold=3 * interval)
    try:
        threading.Event().wait(1.0)  # let start-up work settle
        pids = {"live": pair.a.process.pid, "backup": pair.b.process.pid}
        before = {role: cpu_seconds(pid) for role, pid in pids.items()}
        threading.Event().wait(seconds)
        return {
            role: ((cpu_seconds(pid) - before[role]) / seconds * 100, peak_rss_mb(pid)) for role, pid in pids.items()
        }
    finally:
        pair.stop()
        shutil.rmtree(workdir, ignore_errors=True)


def takeover_with_listeners(count: int, trials: int):
    times = []
    for _ in range(trials):
        workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
        # The listeners belong to the backup alone, so that a connection proves the backup serves
        # (a dying live node's listening socket can still accept for a moment).
        pair = started_pair(workdir, interval=0.1, threshold=0.3, listener_count=count, listener_servers="serv_b")
        try:
            start = time.monotonic()
            os.kill(pair.a.process.pid, signal.SIGKILL)
            pending = list(pair.listener_ports)
            deadline = start + 30
            pause = threading.Event()
            while pending and time.monotonic() < deadline:
                pending = [p for p in pending if not accepts(p)]
                if pending:
                    pause.wait(0.0005)
            if pending:
                raise TimeoutError(f"{len(pending)} listeners never accepted")
            times.append(time.monotonic() - start)
        finally:
            pair.stop()
            shutil.rmtree(workdir, ignore_errors=True)
    return times


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 s per interval, 1 takeover per listener count")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args(argv)
    seconds = 5.0 if args.quick else args.seconds
    trials = 1 if args.quick else args.trials

    print(f"idle cost over {seconds:g} s (CPU: % of one core; RSS: peak, MB)")
    header = f"{'interval':>8} {'node':8} {'CPU %':>7} {'RSS MB':>7}"
    print(header)
    print("-" * len(header))
    for interval in (1.0, 0.1):
        for role, (cpu, rss) in idle_cost(interval, seconds).items():
            print(f"{interval:8g} {role:8} {cpu:7.2f} {rss:7.1f}")
    print()
    print(f"takeover with N listeners: kill -9 to every listener accepting, interval 0.1 s, {trials} trials (ms)")
    header = f"{'listeners':>9} {'p50':>8} {'max':>8}"
    print(header)
    print("-" * len(header))
    for count in (1, 10, 100):
        times = sorted(takeover_with_listeners(count, trials))
        print(f"{count:9d} {times[len(times) // 2] * 1000:8.1f} {times[-1] * 1000:8.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
