#!/usr/bin/env python3
"""
False takeovers: how often a pair fails over when nothing failed, beside keepalived.

Two profiles (issue 14):

stress (the default): `stress-ng --cpu 2 --vm 1 --vm-bytes 25% --io 1`,
started once, and under it, at the same time and for the same duration:
  - our pair at heartbeat interval 0.03 s / threshold 0.15 s, and one at
    0.1 s / 0.3 s, each on loopback with its live node's listener under
    HTTP load (one bounded load thread per pair, requests back to back,
    moving to the other node's listener if that one becomes live);
  - keepalived pairs (unicast VRRPv3, each pair in two network namespaces)
    at advert_int 0.05 s and 0.1 s, whose 3 x advert_int is the same
    detection time as our thresholds (keepalived adds a skew of
    (256 - priority) / 256 x advert_int; priority 100 here).
  Before the stress, the same four run idle for a while: the idle rows
  give each one's cost with nothing else to do.

loss: our pair in two network namespaces joined by a veth pair, nftables
dropping 30 % of what arrives at each end (both ways), interval 0.2 s /
threshold 1 s; keepalived under the same loss at advert_int 0.2 s (the
same packet rate as ours, detection 0.6 s + skew) and 0.3 s (the detection
time nearest our 1 s: 0.9 s + skew).

All systems of a profile run at once, on purpose: they meet the same
stress (or loss) at the same moments, as co-tenants of one machine do, and
a stress-ng spike cannot fall on one system's turn only. They also load
each other (our pairs' HTTP load is CPU keepalived competes for too);
run one system alone with --only to see it without the others.

Counted for each system over each phase:
  - false takeovers: entries to live (ours: /api/status transitions) or
    to master (keepalived: its notify script's state changes, timestamped)
    on either node after the phase began. A backup taking over counts
    once; a first node that left the role and took it back counts once more;
  - gaps between heartbeats as the backup heard them (ours: every gap, from
    /api/gaps?heard_since=N on both nodes, read every 15 s) or
    between adverts as received in the backup's namespace (keepalived: a raw
    socket for IP protocol 112 there, with the kernel's receive timestamps,
    SO_TIMESTAMPNS, so that the reader's own scheduling does not count);
  - CPU (% of one core) and peak RSS of each node's processes (/proc).

    python bench/false_takeover.py                    # stress, 600 s (after 60 s idle)
    python bench/false_takeover.py --profile loss     # loss, 600 s
    python bench/false_takeover.py --quick            # both profiles, 30 s each

Needs root (network namespaces, nftables), keepalived, stress-ng, nft and
ip (`make bench` installs them from Debian). No address outside loopback and
the namespaces it makes is used; every namespace, nftables table, process
and file it makes is removed at the end, on Ctrl-C and on failure too.
"""

from __future__ import annotations

import argparse
import http.client
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import Optional, Sequence

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import keepalived  # noqa: E402
from cost import cpu_seconds, peak_rss_mb  # noqa: E402
from harness import Pair, wait_for  # noqa: E402

STRESS = ["stress-ng", "--cpu", "2", "--vm", "1", "--vm-bytes", "25%", "--io", "1"]
OURS_UNDER_STRESS = ((0.03, 0.15), (0.1, 0.3))
"""(heartbeat interval, threshold) of our pairs in the stress profile."""
KEEPALIVED_UNDER_STRESS = (0.05, 0.1)
"""advert_int of the keepalived pairs in the stress profile: 3 x advert_int = our thresholds."""

LOSS_PERCENT = 30
OURS_UNDER_LOSS = ((0.2, 1.0),)
KEEPALIVED_UNDER_LOSS = (0.2, 0.3)

KEEPALIVED_PRIORITY = 100
"""The priority of keepalived's backup (bench/keepalived.py's configuration): its skew is (256 - this) / 256 x advert_int."""

POLL = 15.0
"""
Each node's status and gaps are read this often (seconds): /api/gaps keeps
300 s of gaps and /api/status the last 50 transitions; rarely, so that the
reads add little to the nodes' cost.
"""

LOAD_LIMIT = 5_000_000
"""A load thread stops after this many requests, or at its deadline, whichever comes first."""


# -- the numbers --

def percentile(values: Sequence[float], fraction: float) -> Optional[float]:
    """
    The nearest-rank percentile of C{values}: the smallest value with at least
    C{fraction} of them at or below it (None when there are none). The p99.9
    of 1000 gaps is the second largest; of fewer than 1000, the largest.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = math.ceil(fraction * len(ordered) - 1e-9)  # 1-based; the epsilon keeps 0.999 x 1000 at 999
    return ordered[min(len(ordered), max(1, rank)) - 1]


def gap_summary(gaps: Sequence[float]) -> dict:
    """count, p50, p99, p99.9 and max of C{gaps} (seconds; None for the quantiles of no gaps)."""
    return {
        "count": len(gaps), "p50": percentile(gaps, 0.5), "p99": percentile(gaps, 0.99),
        "p999": percentile(gaps, 0.999), "max": max(gaps) if gaps else None,
    }


def gaps_between(stamps: Sequence[float], start: float, end: float) -> list:
    """The gaps between successive C{stamps} (sorted times) that end in (C{start}, C{end}]."""
    return [later - earlier for earlier, later in zip(stamps, stamps[1:]) if start < later <= end]


@dataclass
class Row:
    """One system over one phase."""

    phase: str
    system: str
    detection: float
    interval: float
    seconds: float
    takeovers: int
    gaps: Sequence[float]
    cpu: Sequence[float]
    """% of one core, of node a and node b."""
    rss: Sequence[float]
    """Peak RSS (MB) of node a and node b."""
    missed: int = 0
    """Gaps that left a node's window unread (should stay 0)."""


def _ms(value: Optional[float], width: int) -> str:
    return f"{'-':>{width}}" if value is None else f"{value * 1000:{width}.1f}"


HEADER = (
    f"{'phase':6} {'system':12} {'detect s':>8} {'interval':>8} {'false':>5} {'per min':>7} {'gaps':>6}"
    f" {'p50 ms':>7} {'p99 ms':>7} {'p99.9 ms':>8} {'max ms':>8} {'CPU % a/b':>11} {'RSS MB a/b':>11}"
)


def print_table(rows: Sequence[Row], out=sys.stdout) -> None:
    """The table: one line per system and phase, under a header and a rule of dashes."""
    print(HEADER, file=out)
    print("-" * len(HEADER), file=out)
    for row in rows:
        s = gap_summary(row.gaps)
        per_minute = row.takeovers / row.seconds * 60 if row.seconds else 0.0
        cpu = "/".join(f"{c:.1f}" for c in row.cpu)
        rss = "/".join(f"{r:.1f}" for r in row.rss)
        print(
            f"{row.phase:6} {row.system:12} {row.detection:8g} {row.interval:8g} {row.takeovers:5d} {per_minute:7.2f}"
            f" {s['count']:6d} {_ms(s['p50'], 7)} {_ms(s['p99'], 7)} {_ms(s['p999'], 8)} {_ms(s['max'], 8)}"
            f" {cpu:>11} {rss:>11}",
            file=out,
        )


# -- the systems under test --

def _total(read, pids) -> float:
    """C{read(pid)} summed over C{pids}; a process gone meanwhile counts nothing."""
    total = 0.0
    for pid in pids:
        try:
            total += read(pid)
        except OSError:
            pass
    return total


def _cpu(pids) -> float:
    return _total(cpu_seconds, pids)


def _rss(pids) -> float:
    return _total(peak_rss_mb, pids)


class Watch:
    """What a system did over a phase: call L{begin}, L{poll} every so often, then L{end}."""

    system = ""

    def pids(self):
        """The processes of node a and of node b."""
        raise NotImplementedError

    def begin(self, phase: str):
        self.poll()
        self.phase, self.started, self.wall_started = phase, time.monotonic(), time.time()
        self.cpu_before = [_cpu(p) for p in self.pids()]

    def poll(self):
        pass

    def end(self) -> Row:
        self.poll()
        elapsed = time.monotonic() - self.started
        pids = self.pids()
        cpu = [(_cpu(p) - before) / elapsed * 100 for p, before in zip(pids, self.cpu_before)]
        return self.row(elapsed, cpu, [_rss(p) for p in pids])


class OurWatch(Watch):
    """A pair of ours: /api/status transitions and /api/gaps?heard_since=N of both nodes."""

    system = "iwayfailover"

    def __init__(self, pair: Pair, interval: float, threshold: float):
        self.pair, self.interval, self.threshold = pair, interval, threshold
        self.seen = set()
        self.primed = False
        """Has the first read been made? It only marks what was there before the bench began."""
        self.cursors = {"a": None, "b": None}
        self.lives, self.gaps, self.missed, self.missed_total = 0, [], 0, 0
        self.events = []

    def pids(self):
        return [[self.pair.a.process.pid], [self.pair.b.process.pid]]

    def poll(self):
        for name, node in (("a", self.pair.a), ("b", self.pair.b)):
            status = node.status(timeout=10)
            for t in (status or {}).get("transitions", ()):
                key = (name, t["at"], t["from"], t["to"], t["epoch"])
                if key not in self.seen:
                    self.seen.add(key)
                    if t["to"] == "live" and self.primed:
                        self.lives += 1
                        self.events.append(f"{t['at']} serv_{name} {t['from']} -> live ({t.get('cause')})")
            since = self.cursors[name]
            answer = node.api(f"/api/gaps?heard_since={since or 0}", timeout=10)
            if answer is None:
                continue
            heard = answer["heard"]
            if since is not None:  # the first read only sets the cursor: gaps before the bench began are not its
                self.gaps.extend(heard["new"])
                self.missed += heard["missed"]
                self.missed_total += heard["missed"]
            self.cursors[name] = heard["count"]
        self.primed = True

    def begin(self, phase):
        super().begin(phase)
        self.lives, self.gaps, self.missed, self.events = 0, [], 0, []

    def row(self, elapsed, cpu, rss):
        return Row(self.phase, self.system, self.threshold, self.interval, elapsed, self.lives, self.gaps, cpu, rss,
                   self.missed)


# keepalived's notify script, as bench/keepalived.py's, that also logs each state change with its time.
NOTIFY = keepalived.NOTIFY.replace('echo "$2" > "$dir/$1.state"\n',
                                   'echo "$2" > "$dir/$1.state"\necho "$(date +%s.%N) $1 $2" >> "$dir/events"\n')
assert NOTIFY != keepalived.NOTIFY, "bench/keepalived.py's notify script changed: update the events line"

# The adverts that arrive in the backup's namespace, stamped by the kernel on receipt.
ADVERT_READER = r"""
import socket, struct, sys, time
source, path, deadline = sys.argv[1], sys.argv[2], time.monotonic() + float(sys.argv[3])
SO_TIMESTAMPNS = 35
s = socket.socket(socket.AF_INET, socket.SOCK_RAW, 112)
s.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
s.settimeout(1.0)
with open(path, "w", buffering=1) as out:
    print("ready", flush=True)
    while time.monotonic() < deadline:
        try:
            data, ancillary, flags, address = s.recvmsg(2048, socket.CMSG_SPACE(16))
        except socket.timeout:
            continue
        if address[0] != source:
            continue
        for level, kind, value in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                sec, nsec = struct.unpack("qq", value[:16])
                out.write(f"{sec}.{nsec:09d}\n")
"""


class Keepalived(keepalived.KeepalivedPair):
    """bench/keepalived.py's pair, with namespaces named after C{label} so that several run at once."""

    def __init__(self, workdir: str, advert: float, label: str):
        super().__init__(workdir, advert)
        tag = f"{os.getpid() % 10000}{label}"
        self.ns = {"a": f"ikf{tag}a", "b": f"ikf{tag}b"}
        self.interfaces = {"a": f"ikf{tag}va", "b": f"ikf{tag}vb"}

    def make(self):
        super().make()
        with open(os.path.join(self.workdir, "notify.sh"), "w") as f:
            f.write(NOTIFY.format(python=sys.executable, port=keepalived.LISTENER_PORT))


class KeepalivedWatch(Watch):
    """A keepalived pair: its notify script's state changes, and the adverts received in b's namespace."""

    system = "keepalived"

    def __init__(self, pair: Keepalived, seconds: float):
        self.pair = pair
        self.adverts = os.path.join(pair.workdir, "adverts")
        self.reader = subprocess.Popen(
            ["ip", "netns", "exec", pair.ns["b"], sys.executable, "-c", ADVERT_READER, keepalived.ADDRESSES["a"],
             self.adverts, str(seconds)],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )
        if self.reader.stdout.readline().strip() != "ready":
            raise RuntimeError(f"the advert reader in {pair.ns['b']} did not start")
        self.keepalived_pids = [pair.pids("a"), pair.pids("b")]

    def pids(self):
        return self.keepalived_pids

    def stop(self):
        if self.reader.poll() is None:
            self.reader.kill()
        self.reader.wait(timeout=10)
        self.reader.stdout.close()

    def events(self, start: float, end: float):
        """(time, host, state) of each state change in (C{start}, C{end}]."""
        found = []
        try:
            with open(os.path.join(self.pair.workdir, "events")) as f:
                for line in f:
                    at, host, state = line.split()
                    if start < float(at) <= end:
                        found.append((float(at), host, state))
        except OSError:
            pass
        return found

    def row(self, elapsed, cpu, rss):
        end = time.time()
        events = self.events(self.wall_started, end)
        self.changes = events
        with open(self.adverts) as f:
            stamps = [float(line) for line in f if line.strip()]
        takeovers = sum(1 for _, _, state in events if state == "master")
        advert = self.pair.advert
        return Row(self.phase, self.system, 3 * advert, advert, elapsed, takeovers,
                   gaps_between(stamps, self.wall_started, end), cpu, rss)


class Load(threading.Thread):
    """
    HTTP GETs, back to back, against the live node's listener, until told to
    stop, its deadline, or L{LOAD_LIMIT} requests. Each node has a listener
    of its own; when one stops answering (its node is no longer live) the
    load moves to the other's.
    """

    def __init__(self, ports: Sequence[int], seconds: float):
        super().__init__(daemon=True)
        self.ports = list(ports)
        self.deadline = time.monotonic() + seconds
        self.requests = 0
        self.errors = 0
        self.stop = threading.Event()

    def run(self):
        port = 0
        while not self.stop.is_set() and time.monotonic() < self.deadline and self.requests < LOAD_LIMIT:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", self.ports[port], timeout=2)
                connection.request("GET", "/")
                connection.getresponse().read()
                connection.close()
                self.requests += 1
            except (OSError, http.client.HTTPException):
                self.errors += 1
                port = (port + 1) % len(self.ports)
                self.stop.wait(0.01)


class Namespaces:
    """Two network namespaces, a and b, joined by a veth pair; no link to the machine's own network."""

    ADDRESSES = {"a": "10.233.1.1", "b": "10.233.1.2"}

    def __init__(self, label: str):
        tag = f"{os.getpid() % 10000}{label}"
        self.ns = {"a": f"iwl{tag}a", "b": f"iwl{tag}b"}
        self.interfaces = {"a": f"iwl{tag}ab", "b": f"iwl{tag}ba"}
        self.made = []

    def make(self):
        for host in ("a", "b"):
            keepalived.run(["ip", "netns", "add", self.ns[host]])
            self.made.append(self.ns[host])
            keepalived.run(["ip", "netns", "exec", self.ns[host], "ip", "link", "set", "lo", "up"])
        keepalived.run(["ip", "link", "add", self.interfaces["a"], "netns", self.ns["a"], "type", "veth",
                        "peer", "name", self.interfaces["b"], "netns", self.ns["b"]])
        for host in ("a", "b"):
            keepalived.run(["ip", "netns", "exec", self.ns[host], "ip", "addr", "add", f"{self.ADDRESSES[host]}/24",
                            "dev", self.interfaces[host]])
            keepalived.run(["ip", "netns", "exec", self.ns[host], "ip", "link", "set", self.interfaces[host], "up"])

    def remove(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made = []


LOSS_TABLE = "iwbenchloss"


def drop_randomly(ns: str, interface: str, percent: int) -> None:
    """In C{ns}, drop C{percent} % of the packets that arrive on C{interface}, at random, counting both."""
    script = (
        f"table inet {LOSS_TABLE} {{\n chain prerouting {{ type filter hook prerouting priority -300;\n"
        f'  iifname "{interface}" counter\n'
        f'  iifname "{interface}" numgen random mod 100 < {percent} counter drop\n }}\n}}\n'
    )
    done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-f", "-"], input=script, text=True,
                          capture_output=True, timeout=30)
    if done.returncode != 0:
        raise RuntimeError(f"nft in {ns} failed: {done.stderr.strip()}")


def dropped(ns: str):
    """(packets arrived, packets dropped) by L{drop_randomly}'s table in C{ns}."""
    done = subprocess.run(["ip", "netns", "exec", ns, "nft", "-j", "list", "table", "inet", LOSS_TABLE],
                          capture_output=True, text=True, timeout=30)
    counts = []
    for item in json.loads(done.stdout or "{}").get("nftables", []):
        for expression in item.get("rule", {}).get("expr", []):
            if "counter" in expression:
                counts.append(expression["counter"]["packets"])
    return tuple(counts[:2]) if len(counts) >= 2 else (0, 0)


# -- the runs --

class Bench:
    """Everything a profile starts, so that all of it is stopped and removed whatever happens."""

    def __init__(self):
        self.workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
        self.pairs, self.keepaliveds, self.namespaces, self.watches = [], [], [], []
        self.stress = None
        self.loads = []

    def directory(self, name):
        path = os.path.join(self.workdir, name)
        os.makedirs(path)
        return path

    def our_pair(self, interval, threshold, namespaces=None, label="", pulses=None, steady=False):
        extra = "" if pulses is None else f"pulses = {'true' if pulses else 'false'}"
        if steady:
            extra += "\nrealtime = true\nlock_memory = true"
        if namespaces is None:
            pair = Pair(self.directory(f"ours{label}"), interval=interval, threshold=threshold, own_listeners=True,
                        reload_interval=5, failover_extra=extra)
        else:
            workdir = self.directory(f"ours{label}")
            pair = Pair(workdir, interval=interval, threshold=threshold, own_listeners=True, reload_interval=5,
                        failover_extra=extra,
                        hosts=(namespaces.ADDRESSES["a"], namespaces.ADDRESSES["b"]),
                        consoles=(f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock"))
            pair.a.netns, pair.b.netns = namespaces.ns["a"], namespaces.ns["b"]
        self.pairs.append(pair)
        pair.start_both(timeout=60)
        watch = OurWatch(pair, interval, threshold)
        self.watches.append(watch)
        return pair

    def keepalived_pair(self, advert, label, seconds, loss=None):
        pair = Keepalived(self.directory(f"keepalived{label}"), advert, label)
        self.keepaliveds.append(pair)
        pair.make()
        pair.start("a")
        wait_for(lambda: pair.state("a") == "master", 60, f"keepalived a ({advert:g} s) to become master")
        pair.start("b")
        wait_for(lambda: pair.state("b") == "backup", 60, f"keepalived b ({advert:g} s) to become backup")
        if loss is not None:
            for host in ("a", "b"):
                drop_randomly(pair.ns[host], pair.interfaces[host], loss)
        watch = KeepalivedWatch(pair, seconds)
        self.watches.append(watch)
        return pair

    def start_stress(self, seconds):
        self.stress = subprocess.Popen(
            [*STRESS, "--timeout", f"{int(seconds) + 5}s", "--quiet"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )

    def phase(self, name, seconds):
        """Every watch over C{seconds}, read every L{POLL} seconds: a row each."""
        for watch in self.watches:
            watch.begin(name)
        deadline = time.monotonic() + seconds
        pause = threading.Event()
        while (left := deadline - time.monotonic()) > 0:
            pause.wait(min(POLL, left))
            for watch in self.watches:
                watch.poll()
        return [watch.end() for watch in self.watches]

    def remove(self):
        for load in self.loads:
            load.stop.set()
        if self.stress is not None and self.stress.poll() is None:
            try:
                os.killpg(self.stress.pid, signal.SIGKILL)
            except OSError:
                pass
            self.stress.wait(timeout=30)
        for watch in self.watches:
            if isinstance(watch, KeepalivedWatch):
                watch.stop()
        for pair in self.pairs:
            pair.stop()
        for pair in self.keepaliveds:
            pair.remove()
        for namespaces in self.namespaces:
            namespaces.remove()
        for load in self.loads:
            load.join(timeout=10)
        keepalived.reap_orphans()
        shutil.rmtree(self.workdir, ignore_errors=True)


def stress_profile(seconds: float, idle: float, only=None, pulses=None, steady=False):
    """Idle for C{idle} seconds, then C{seconds} under stress-ng with the listeners under load: the rows."""
    bench = Bench()
    try:
        total = idle + seconds + 120
        if only in (None, "iwayfailover"):
            for n, (interval, threshold) in enumerate(OURS_UNDER_STRESS):
                bench.our_pair(interval, threshold, label=str(n), pulses=pulses, steady=steady)
        if only in (None, "keepalived"):
            for n, advert in enumerate(KEEPALIVED_UNDER_STRESS):
                bench.keepalived_pair(advert, str(n), total)
        threading.Event().wait(3.0)  # the backups hear a steady stream
        rows = bench.phase("idle", idle) if idle > 0 else []
        bench.start_stress(seconds)
        for pair in bench.pairs:
            load = Load((pair.ports["web_a"], pair.ports["web_b"]), seconds + 5)
            bench.loads.append(load)
            load.start()
        rows += bench.phase("stress", seconds)
        requests = sum(load.requests for load in bench.loads)
        errors = sum(load.errors for load in bench.loads)
        return rows, bench_notes(bench) + [f"HTTP requests served by our live listeners under stress: {requests:,}"
                                           f" ({errors} failed)"]
    finally:
        bench.remove()


def loss_profile(seconds: float, only=None, pulses=True, steady=False):
    """C{seconds} with L{LOSS_PERCENT} % of packets dropped both ways between the nodes of each pair: the rows."""
    bench = Bench()
    try:
        tables = []
        if only in (None, "iwayfailover"):
            for n, (interval, threshold) in enumerate(OURS_UNDER_LOSS):
                namespaces = Namespaces(str(n))
                bench.namespaces.append(namespaces)
                namespaces.make()
                bench.our_pair(interval, threshold, namespaces, label=str(n), pulses=pulses, steady=steady)
                for host in ("a", "b"):
                    drop_randomly(namespaces.ns[host], namespaces.interfaces[host], LOSS_PERCENT)
                    tables.append(namespaces.ns[host])
        if only in (None, "keepalived"):
            for n, advert in enumerate(KEEPALIVED_UNDER_LOSS):
                pair = bench.keepalived_pair(advert, str(n), seconds + 120, loss=LOSS_PERCENT)
                tables += [pair.ns["a"], pair.ns["b"]]
        threading.Event().wait(3.0)
        rows = bench.phase("loss", seconds)
        arrived = dropped_total = 0
        for ns in tables:
            a, d = dropped(ns)
            arrived, dropped_total = arrived + a, dropped_total + d
        share = dropped_total / arrived * 100 if arrived else 0.0
        return rows, bench_notes(bench) + [f"nftables dropped {dropped_total:,} of {arrived:,} packets ({share:.1f} %)"]
    finally:
        bench.remove()


EVENTS_SHOWN = 12
"""Of each system's role changes, this many are listed under the table (the first ones, in time order)."""


def bench_notes(bench: Bench) -> list:
    """Each system's role changes, timestamped (the first few), and whether every gap of ours was read."""
    notes = []
    for watch in bench.watches:
        if isinstance(watch, OurWatch):
            name = f"iwayfailover {watch.interval:g}/{watch.threshold:g}"
            events = sorted(watch.events)
            notes.append(f"{name}: {watch.missed_total} gaps left /api/gaps's window unread (should be 0)")
        else:
            name = f"keepalived advert {watch.pair.advert:g}"
            events = [f"{iso(at)} {host} -> {state}" for at, host, state in sorted(getattr(watch, "changes", []))]
        notes += [f"{name}: {event}" for event in events[:EVENTS_SHOWN]]
        if len(events) > EVENTS_SHOWN:
            notes.append(f"{name}: ... and {len(events) - EVENTS_SHOWN} more role changes")
    return notes


def iso(unix: float) -> str:
    """A Unix time as /api/status writes one (UTC, milliseconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(unix)) + f".{int(unix % 1 * 1000):03d}Z"


def check_requirements() -> Optional[str]:
    if os.geteuid() != 0:
        return "bench/false_takeover.py needs root (network namespaces, nftables)"
    for tool, package in (("keepalived", "keepalived"), ("stress-ng", "stress-ng"), ("nft", "nftables"),
                          ("ip", "iproute2")):
        if not shutil.which(tool):
            return f"bench/false_takeover.py needs {tool}: apt-get install {package} (make bench installs it)"
    return None


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--profile", choices=("stress", "loss", "both"), default=None,
                        help="stress (the default), loss, or both (the default with --quick)")
    parser.add_argument("--quick", action="store_true", help="30 s per profile (10 s idle before the stress)")
    parser.add_argument("--seconds", type=float, default=600.0, help="seconds per profile (default 600)")
    parser.add_argument("--idle", type=float, default=60.0, help="seconds idle before the stress (default 60)")
    parser.add_argument("--only", choices=("iwayfailover", "keepalived"), help="run one system alone")
    parser.add_argument("--pulses", choices=("on", "off"), default=None,
                        help="our pairs' pulses (default: off under stress, as a node's default; on under loss,"
                             " the setting for lossy links)")
    parser.add_argument("--steady", choices=("on", "off"), default="off",
                        help="our pairs' realtime and lock_memory (default off, as a node's default; on needs root)")
    args = parser.parse_args(argv)
    problem = check_requirements()
    if problem:
        print(problem, file=sys.stderr)
        return 2
    profile = args.profile or ("both" if args.quick else "stress")
    seconds, idle = (30.0, 10.0) if args.quick else (args.seconds, args.idle)

    def interrupted(number, frame):
        raise KeyboardInterrupt

    # SIGTERM cleans up as Ctrl-C does; SIGINT too when the shell that started
    # this in the background had it ignored.
    signal.signal(signal.SIGTERM, interrupted)
    signal.signal(signal.SIGINT, interrupted)
    keepalived.become_subreaper()
    try:
        return run_profiles(profile, seconds, idle, args.only, None if args.pulses is None else args.pulses == "on",
                            args.steady == "on")
    except KeyboardInterrupt:
        print("interrupted: everything this run made has been removed", file=sys.stderr)
        return 130


def run_profiles(profile: str, seconds: float, idle: float, only=None, pulses=None, steady=False) -> int:
    together = f"{only} alone" if only else "all systems at once"
    ours = f"realtime and lock_memory {'on' if steady else 'off'}"
    if profile in ("stress", "both"):
        rows, notes = stress_profile(seconds, idle, only, pulses, steady)
        print(f"false takeovers under stress: {' '.join(STRESS)}, our live listeners under HTTP load;"
              f" idle {idle:g} s, then stress {seconds:g} s, {together}; our pulses"
              f" {'on' if pulses else 'off'}, {ours}")
        print_table(rows)
        print("detect: our threshold, or keepalived's 3 x advert_int (it waits"
              f" {(256 - KEEPALIVED_PRIORITY) / 256:.2f} x advert_int more); gaps: heard by the backup;"
              " CPU and peak RSS: node a / node b")
        for note in notes:
            print(f"  {note}")
        print()
    if profile in ("loss", "both"):
        loss_pulses = True if pulses is None else pulses
        rows, notes = loss_profile(seconds, only, loss_pulses, steady)
        print(f"false takeovers under {LOSS_PERCENT} % packet loss both ways (nftables in network namespaces),"
              f" {seconds:g} s, {together}; our pulses {'on' if loss_pulses else 'off'}, {ours}")
        print_table(rows)
        for note in notes:
            print(f"  {note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
