#!/usr/bin/env python3
"""
Takeover time: how long clients are without service after a fault.

Real twistd processes on loopback, N trials for each fault:

- kill -9 of the live node (a crash),
- SIGTERM of the live node (a clean stop),
- SIGSTOP of the live node (the silent path: a hung host or a cut cable).

Each trial measures the time from the fault to the first connection
accepted on the backup's own listener. For the silent path it also reports
the excess over the threshold: how late after the threshold, counted from
the last heartbeat the backup heard, its listener accepted.

    python bench/takeover.py                # 20 trials per fault, intervals 1 s and 0.1 s
    python bench/takeover.py --quick        # 3 trials, interval 0.1 s
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from harness import Pair  # noqa: E402

FAULTS = {"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM, "SIGSTOP": signal.SIGSTOP}


def first_accept(port: int, deadline: float) -> float:
    """Poll 127.0.0.1:port until a connection is accepted; the monotonic time it was."""
    pause = threading.Event()
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return time.monotonic()
        except OSError:
            pause.wait(0.0005)
    raise TimeoutError(f"nothing accepted on port {port}")


def percentile(values, fraction):
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, int(round(fraction * (len(ordered) - 1)))))
    return ordered[index]


def parse_iso(text: str) -> float:
    return datetime.datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=datetime.timezone.utc).timestamp()


def trial(workdir, fault: str, interval: float, threshold: float, extra: str = ""):
    """One pair, one fault. Returns (seconds to service, excess over threshold or None)."""
    pair = Pair(workdir, interval=interval, threshold=threshold, own_listeners=True, reload_interval=5,
                failover_extra=extra)
    try:
        pair.start_both()
        start = time.monotonic()
        os.kill(pair.a.process.pid, FAULTS[fault])
        accepted = first_accept(pair.ports["web_b"], start + threshold + 10)
        accepted_wall = time.time()
        elapsed = accepted - start
        excess = None
        if fault == "SIGSTOP":
            status = pair.b.status()
            silence = float(re.search(r"for ([0-9.]+)s", status["cause"]).group(1))
            # Decision lateness (silence measured at takeover minus the
            # threshold) plus the time from the decision to the first accept.
            excess = (silence - threshold) + (accepted_wall - parse_iso(status["since"]))
        return elapsed, excess
    finally:
        pair.stop()


def run(trials: int, intervals, faults, out=sys.stdout, threshold=None, extra=""):
    rows = []
    fixed = threshold
    for interval in intervals:
        threshold = fixed if fixed is not None else round(3 * interval, 6)
        for fault in faults:
            times, excesses = [], []
            for _ in range(trials):
                workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
                try:
                    elapsed, excess = trial(workdir, fault, interval, threshold, extra)
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
                times.append(elapsed)
                if excess is not None:
                    excesses.append(excess)
            rows.append((fault, interval, threshold, trials, times, excesses))
    print_table(rows, out)
    return rows


def ms(value):
    return f"{value * 1000:8.1f}"


def print_table(rows, out=sys.stdout):
    print("takeover: fault to first connection accepted on the backup's listener (ms)", file=out)
    header = f"{'fault':9} {'interval':>8} {'threshold':>9} {'trials':>6} {'p50':>8} {'p95':>8} {'max':>8}   {'excess p50':>10} {'p95':>8} {'max':>8}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for fault, interval, threshold, trials, times, excesses in rows:
        line = f"{fault:9} {interval:8g} {threshold:9g} {trials:6d} {ms(percentile(times, .5))} {ms(percentile(times, .95))} {ms(max(times))}"
        if excesses:
            line += f"   {ms(percentile(excesses, .5)):>10} {ms(percentile(excesses, .95))} {ms(max(excesses))}"
        print(line, file=out)
    print("excess: for SIGSTOP, how long after the threshold (counted from the last heartbeat heard) service was back", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials at interval 0.1 s")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, action="append", help="heartbeat interval(s) to test (default 1 and 0.1)")
    parser.add_argument("--fault", choices=sorted(FAULTS), action="append")
    parser.add_argument("--threshold", type=float, help="the threshold (default 3 x the interval)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a [failover] setting for the pair, e.g. --set pulses=true (repeatable)")
    args = parser.parse_args(argv)
    trials = 3 if args.quick else args.trials
    intervals = args.interval or ([0.1] if args.quick else [1.0, 0.1])
    extra = "\n".join(" = ".join(part.strip() for part in item.split("=", 1)) for item in args.set)
    run(trials, intervals, args.fault or list(FAULTS), threshold=args.threshold, extra=extra)
    return 0


if __name__ == "__main__":
    sys.exit(main())
