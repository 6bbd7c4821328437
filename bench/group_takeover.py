#!/usr/bin/env python3
"""
Takeover time of a group on etcd beside a pair's, in one run.

Real twistd processes on loopback. The group: three members on a
one-member etcd (Debian's etcd-server), TTL (threshold) 2 s, keepalives
every 0.25 s, each member with a web listener on a port of its own. The
pair: two nodes, interval 0.1 s, threshold 0.3 s (bench/takeover.py's
fast setting). For each fault, N trials: the time from the fault to the
first connection accepted on another member's listener.

    python bench/group_takeover.py              # 10 trials per fault
    python bench/group_takeover.py --quick      # 3 trials per fault

Goals (issue 12): crash of the live member to service back at most TTL +
50 ms p95; clean stop at most 100 ms p95.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "..", "tests"))
sys.path.insert(0, HERE)

from etcdharness import ETCD, EtcdCluster  # noqa: E402
from groupharness import Group  # noqa: E402
from takeover import first_accept, ms, percentile, trial as pair_trial  # noqa: E402

TTL = 2
INTERVAL = 0.25
FAULTS = {"kill -9": signal.SIGKILL, "SIGTERM": signal.SIGTERM}


def first_accept_any(ports, deadline: float):
    """Poll every port in turn until one accepts; (monotonic time, port)."""
    while time.monotonic() < deadline:
        for port in ports:
            try:
                return first_accept(port, time.monotonic() + 0.001), port
            except TimeoutError:
                continue
    raise TimeoutError(f"nothing accepted on ports {ports}")


def group_trial(cluster, workdir, fault: str) -> float:
    group = Group(workdir, cluster.endpoints, threshold=TTL, interval=INTERVAL, reload_interval=5, web=True)
    try:
        group.start_all()
        others = [group.web[name] for name in group.names if name != "alpha"]
        start = time.monotonic()
        os.kill(group["alpha"].process.pid, FAULTS[fault])
        accepted, _ = first_accept_any(others, start + TTL + 10)
        return accepted - start
    finally:
        group.stop()


def run(trials: int, out=sys.stdout):
    rows = []
    base = tempfile.mkdtemp(prefix="iwayfailover-bench-group-")
    cluster = EtcdCluster(members=1, folder=os.path.join(base, "etcd"))
    try:
        for fault in FAULTS:
            times = []
            for n in range(trials):
                times.append(group_trial(cluster, os.path.join(base, f"group-{fault[:4]}-{n}"), fault))
            rows.append(("group (etcd)", fault, f"TTL {TTL}s, keepalive {INTERVAL}s", times))
            times = []
            for n in range(trials):
                workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
                try:
                    times.append(pair_trial(workdir, fault, 0.1, 0.3)[0])
                finally:
                    shutil.rmtree(workdir, ignore_errors=True)
            rows.append(("pair", fault, "threshold 0.3s, interval 0.1s", times))
    finally:
        cluster.stop()
        shutil.rmtree(base, ignore_errors=True)
    print_table(rows, out)
    return rows


def print_table(rows, out=sys.stdout):
    print("takeover: fault to first connection accepted on another member's listener (ms)", file=out)
    header = f"{'':13} {'fault':8} {'settings':30} {'trials':>6} {'p50':>8} {'p95':>8} {'max':>8}"
    print(header, file=out)
    print("-" * len(header), file=out)
    for kind, fault, settings, times in rows:
        print(f"{kind:13} {fault:8} {settings:30} {len(times):6d} {ms(percentile(times, .5))}"
              f" {ms(percentile(times, .95))} {ms(max(times))}", file=out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="3 trials per fault")
    parser.add_argument("--trials", type=int, default=10)
    args = parser.parse_args(argv)
    if ETCD is None:
        print("group_takeover: etcd is not installed (Debian package etcd-server: `make system-packages` installs it)",
              file=sys.stderr)
        return 2
    run(3 if args.quick else args.trials)
    return 0


if __name__ == "__main__":
    sys.exit(main())
