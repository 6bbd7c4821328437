"""
Regression tests for failures 3, 4 and 7 of issue 11, between real hosts:
the network namespaces of test_partition (node A, node B and, when one is
configured, a witness W), with nftables rules in them for the faults
(resets, and silent drops both ways). Threshold 1 s, heartbeat interval
0.2 s; both nodes' /api/status read every 20 ms.

 - Failure 3: the live node's firewall resets every TCP connection from its
   backup, while the live node is healthy and reaches its witness and the
   backup does not. The reset reads as "process dead" (the crash fast
   path), but the takeover it proposes passes the witness gate like any
   other: the backup, the isolated one, stays backup.
 - Failure 4, a limit of a pair: a witness reachable from both nodes cannot
   arbitrate a cut of the link between them alone. Both serve for the cut;
   each node warns about it at start, and once the link returns the lower
   rank stops within about one heartbeat interval and a redial.
 - Failure 7: after a silent partition of 10 s the nodes find each other
   within a redial bounded by the interval (not a 30 s connect timeout).
   With no witness the lower rank stops at once; with a witness reachable
   from the live node only, the backup stays backup through the cut and
   does not take over after it (it asks the live node first).

Only addresses inside these namespaces are used; the namespaces have no link
to the machine's own network. Each test removes its nftables tables, its
namespaces (and with them their veth pairs) and kills every process it
started, whatever its outcome.
"""

import itertools
import os
import shutil
import subprocess
import threading
import time
from typing import NamedTuple, Optional

from twisted.trial import unittest

import test_partition
from test_partition import PartitionTestCase, ip

THRESHOLD = 1.0
INTERVAL = 0.2
SAMPLE_EVERY = 0.02
"""Both nodes' /api/status are read this often (seconds)."""

HEAL_BOUND = 1.0
"""
Once the link returns, one node only is live within this many seconds:
a redial (at most one interval of backoff, then a dial bounded by the
interval), the hello, a heartbeat, and the lower rank's yield.
"""

SETTLED = 2.0
"""After that, the same single node stays live for this long."""

CUT = 10.0
"""The silent partition of failure 7 (seconds)."""

_made = itertools.count(1)


def nft(netns: str, *args: str, script: Optional[str] = None) -> None:
    """Run nft in namespace C{netns} (C{script} on its standard input); fail naming what nft said."""
    done = subprocess.run(
        ["ip", "netns", "exec", netns, "nft", *args], input=script, text=True, capture_output=True, timeout=30,
    )
    if done.returncode != 0:
        raise RuntimeError(f"nft {' '.join(args)} in {netns} failed: {done.stderr.strip()}\n{script or ''}")


class Hosts(test_partition.Hosts):
    """
    test_partition's namespaces, two more layouts, and nftables rules in
    them.

    C{witness_side} "a" or "b": as in test_partition (the far node reaches
    the witness through the near one, over the link between the nodes);
    "both": the witness has a link of its own to each node, so cutting the
    link between the nodes leaves it reachable from both; None: no witness.
    """

    def __init__(self, witness_side):
        super().__init__(witness_side)
        # Names of their own for each test: namespaces that a failed removal
        # left behind cannot stop the next test.
        tag = f"{os.getpid() % 10000}{next(_made)}"
        self.ns = {name: f"iwr{tag}{name}" for name in ("a", "b", "w")}
        self.link = (f"iwr{tag}ab", f"iwr{tag}ba")
        self.addresses.update(b_w="10.231.3.2", w_b="10.231.3.1")
        self.tables = []
        """(host, table) of each nftables table in force."""

    def make(self):
        if self.witness_side in ("a", "b"):
            super().make()
            return
        for host in ("a", "b", "w") if self.witness_side == "both" else ("a", "b"):
            subprocess.run(["ip", "netns", "add", self.ns[host]], check=True, capture_output=True, timeout=30)
            self.made.append(self.ns[host])
            ip("link", "set", "lo", "up", netns=self.ns[host])
        ab, ba = self.link
        self._veth(ab, "a", self.addresses["a"], ba, "b", self.addresses["b"], "24")
        if self.witness_side == "both":
            # W's address is on its link to a; b reaches it over its own link
            # to W. Nothing forwards, so there is no way from a to b but the link.
            self._veth(f"{ab}w", "a", self.addresses["near"], f"{ab}x", "w", self.addresses["w"], "24")
            self._veth(f"{ba}w", "b", self.addresses["b_w"], f"{ba}x", "w", self.addresses["w_b"], "24")
            ip("route", "add", "10.231.2.0/24", "via", self.addresses["w_b"], netns=self.ns["b"])

    def add_table(self, host: str, table: str, chain: str) -> None:
        """Put nftables table C{table} (family inet) holding C{chain} (nft syntax) in C{host}'s namespace."""
        nft(self.ns[host], "-f", "-", script=f"table inet {table} {{\n{chain}\n}}\n")
        self.tables.append((host, table))

    def delete_table(self, host: str, table: str) -> None:
        self.tables.remove((host, table))
        nft(self.ns[host], "delete", "table", "inet", table)

    def reset_tcp(self, source: str, host: str) -> None:
        """C{host}'s firewall answers every TCP segment from C{source} with a reset (connections, and answers on them)."""
        self.add_table(
            host, "iwreset",
            "chain input { type filter hook input priority 0;"
            f" ip saddr {self.addresses[source]} meta l4proto tcp reject with tcp reset; }}",
        )

    def drop_from(self, source: str, host: str) -> None:
        """C{host} silently drops everything from C{source}."""
        self.add_table(host, "iwdrop", f"chain input {{ type filter hook input priority 0; ip saddr {self.addresses[source]} drop; }}")

    def cut_silently(self) -> None:
        """Drop everything that arrives over the link between a and b, at both ends: no reset, no error, silence."""
        for host, end in (("a", self.link[0]), ("b", self.link[1])):
            self.add_table(host, "iwcut", f'chain prerouting {{ type filter hook prerouting priority 0; iifname "{end}" drop; }}')

    def heal(self) -> None:
        """Let the link between a and b carry traffic again."""
        for host in ("a", "b"):
            self.delete_table(host, "iwcut")

    def remove(self):
        for host, table in list(self.tables):
            try:
                self.delete_table(host, table)
            except (RuntimeError, subprocess.SubprocessError):
                pass  # the namespace goes next, and its tables with it
        super().remove()


class Sample(NamedTuple):
    """Both nodes' /api/status (None for a node that did not answer), read C{at} seconds after a watch began."""

    at: float
    a: Optional[dict]
    b: Optional[dict]

    @property
    def roles(self) -> tuple:
        return tuple((status or {}).get("role") for status in (self.a, self.b))


class PartitionRegressionTests(PartitionTestCase):
    interval = INTERVAL
    threshold = THRESHOLD

    def check_namespace(self, ns):
        if shutil.which("nft") is None:
            raise unittest.SkipTest("nft is not installed (Debian package nftables; make system-packages)")
        try:
            nft(ns, "add", "table", "inet", "iwcheck")
        except RuntimeError as e:
            raise unittest.SkipTest(f"cannot use nftables in a network namespace here: {e}")

    def logs(self, pair) -> str:
        return "\n" + pair.a.log_tail() + pair.b.log_tail()

    def watch(self, pair, seconds: float, until=None) -> list:
        """
        Read both nodes' /api/status every L{SAMPLE_EVERY} seconds for
        C{seconds}, or until C{until(sample)} is true: the L{Sample}s, each
        stamped when both reads had returned.
        """
        samples = []
        started = time.monotonic()
        deadline = started + seconds
        pace = threading.Event()
        while time.monotonic() < deadline:
            read = time.monotonic()
            statuses = pair.a.status(), pair.b.status()
            sample = Sample(time.monotonic() - started, *statuses)
            samples.append(sample)
            if until is not None and until(sample):
                break
            pace.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - read)))
        return samples

    def show(self, samples, last=15) -> str:
        """The role changes in C{samples}, and the last few samples."""
        changes, previous = [], None
        for s in samples:
            if s.roles != previous:
                changes.append(f"{s.at:.3f}s {s.roles}")
                previous = s.roles
        return f"\nrole changes: {changes}\nlast samples: {[(round(s.at, 3), s.roles) for s in samples[-last:]]}"

    def cut_until_both_live(self, hosts, pair, seconds: float) -> list:
        """
        Cut the link silently for C{seconds}: the backup must take over (no
        arbiter stops it) while the live node stays live. The samples.
        """
        hosts.cut_silently()
        cut = time.monotonic()
        samples = self.watch(pair, THRESHOLD + 3, until=lambda s: s.roles == ("live", "live"))
        self.assertEqual(
            samples[-1].roles, ("live", "live"),
            "with the link cut and nothing to arbitrate, serv_b should have taken over" + self.show(samples) + self.logs(pair),
        )
        samples += self.watch(pair, cut + seconds - time.monotonic())
        self.assertEqual(
            {s.roles[0] for s in samples}, {"live"}, "serv_a should stay live through the cut" + self.show(samples) + self.logs(pair),
        )
        return samples

    def heal_and_settle(self, hosts, pair):
        """
        Heal the link: within L{HEAL_BOUND} exactly one node is live, the
        one of higher rank (serv_b, which took the role with a later epoch);
        it stays the only live node for L{SETTLED}, and serv_a stops serving.
        """
        hosts.heal()
        settling = self.watch(pair, 5.0, until=lambda s: sorted(map(str, s.roles)) == ["backup", "live"])
        last = settling[-1]
        self.assertEqual(
            last.roles, ("backup", "live"), "one node live, serv_b, after the link returned" + self.show(settling) + self.logs(pair),
        )
        self.assertLessEqual(
            last.at, HEAL_BOUND,
            f"two nodes live for {last.at:.3f}s after the link returned" + self.show(settling) + self.logs(pair),
        )
        self.assertGreater(last.b["epoch"], last.a["epoch"])
        self.assertIn("outranks this node", last.a["cause"])
        settled = self.watch(pair, SETTLED)
        self.assertEqual(
            {s.roles for s in settled}, {("backup", "live")},
            "serv_b should stay the only live node" + self.show(settled) + self.logs(pair),
        )
        self.assertEqual(settled[-1].a["listeners"]["web_a"]["state"], "WAITING", settled[-1].a["listeners"])
        self.assertEqual(settled[-1].b["listeners"]["web_b"]["state"], "ACTIVE", settled[-1].b["listeners"])
        return last.at

    def test_a_reset_does_not_let_an_isolated_backup_take_over(self):
        """Failure 3: the live node's firewall resets the backup's connections and the backup cannot reach the witness: the crash fast path starts, refuses at the witness gate, and the backup never goes live."""
        # The gate is what this checks: pulses are off, or the backup would go on hearing
        # serv_a over UDP and never reach the gate (test_pulse_e2e shows that side).
        hosts, pair = self.start("a", Hosts("a"), extra="pulses = false")
        hosts.drop_from("b", "w")  # the backup's way to the witness is cut
        hosts.reset_tcp("b", "a")  # and the live node's firewall resets everything the backup sends it
        samples = self.watch(pair, 3 * THRESHOLD)
        self.assertEqual({s.roles for s in samples}, {("live", "backup")}, self.show(samples) + self.logs(pair))
        backup = pair.b.log_text()
        # The fast path was taken (the reset read as a dead process), and the
        # witness gate stopped it.
        self.assertIn("heartbeat link from serv_a (live) ended (reset on the way); asking", backup, self.logs(pair))
        self.assertIn("its heartbeat port refused the connection", backup)
        self.assertIn("this node is the isolated one and stays backup", backup)
        self.assertIn("is reachable, so this node stays live", pair.a.log_text(), self.logs(pair))

    def test_a_witness_reachable_from_both_cannot_arbitrate_a_cut_of_their_link(self):
        """Failure 4, a pair's limit: each node warns at start; with the link alone cut both serve; within 1 s of its return exactly one node is live, and stays so."""
        hosts, pair = self.start("both", Hosts("both"))
        limit = "pair limit: a witness arbitrates a cut between a node and the rest of the network, not a cut of the link"
        for node in (pair.a, pair.b):
            self.assertIn(limit, node.log_text())
        samples = self.cut_until_both_live(hosts, pair, 3.0)
        self.assertIn("witness", samples[-1].b["cause"])  # the witness let it take over: it could not tell
        self.heal_and_settle(hosts, pair)

    def test_without_witness_the_lower_rank_stops_within_a_second_of_a_long_cut(self):
        """Failure 7: after a silent cut of 10 s with no witness (both served), the nodes meet again within 1 s and the lower rank stops."""
        hosts, pair = self.start(None, Hosts(None))
        self.assertIn("pair limit: no witness is configured", pair.a.log_text())
        self.cut_until_both_live(hosts, pair, CUT)
        self.heal_and_settle(hosts, pair)

    def test_an_isolated_backup_does_not_take_over_after_a_long_cut(self):
        """Failure 7: a silent cut of 10 s, the witness reachable from the live node only: the backup stays backup through it, hears the live node within 1 s of the heal, and does not take over."""
        hosts, pair = self.start("a", Hosts("a"))
        hosts.cut_silently()
        during = self.watch(pair, CUT)
        self.assertEqual({s.roles for s in during}, {("live", "backup")}, self.show(during) + self.logs(pair))
        self.assertIn("this node is the isolated one and stays backup", pair.b.log_text(), self.logs(pair))
        received = during[-1].b["heartbeats"]["received"]
        hosts.heal()
        heard = self.watch(pair, 5.0, until=lambda s: s.b is not None and s.b["heartbeats"]["received"] > received)
        self.assertGreater(heard[-1].b["heartbeats"]["received"], received, "serv_b never heard serv_a again" + self.logs(pair))
        self.assertLessEqual(heard[-1].at, HEAL_BOUND, f"serv_b heard serv_a again only {heard[-1].at:.3f}s after the heal")
        after = self.watch(pair, SETTLED)
        samples = heard + after
        self.assertEqual({s.roles for s in samples}, {("live", "backup")}, self.show(samples) + self.logs(pair))
        self.assertEqual(after[-1].a["cause"], during[0].a["cause"], "serv_a kept the role it had before the cut")
