"""
A network partition between real separate hosts: three network namespaces
(node A, node B and a witness W) joined by veth pairs. The link between A
and B is cut while the witness stays reachable from one side only.

No address outside these namespaces is ever used: the namespaces have no
link to the machine's own network.
"""

import os
import subprocess
import sys
import time

from twisted.trial import unittest

from harness import Pair, temporary_directory

WITNESS_PORT = 7000
WITNESS_SERVER = """
import socket, sys, time
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(16)
s.settimeout(1)
deadline = time.monotonic() + 300  # bounded, whatever happens to the test
while time.monotonic() < deadline:
    try:
        c, _ = s.accept()
        c.close()
    except OSError:
        pass
"""


def ip(*args, netns=None):
    argv = ["ip", "netns", "exec", netns, "ip", *args] if netns else ["ip", *args]
    subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Hosts:
    """Three namespaces: a and b joined by one veth pair, the witness joined to one of them by another (and routed to from the other one through it)."""

    def __init__(self, witness_side):
        tag = f"{os.getpid() % 100000}"
        self.ns = {name: f"iwt{tag}{name}" for name in ("a", "b", "w")}
        self.addresses = {"a": "10.231.1.1", "b": "10.231.1.2", "w": "10.231.2.1", "near": "10.231.2.2"}
        self.witness_side = witness_side
        self.link = (f"iwt{tag}ab", f"iwt{tag}ba")
        self.made = []

    def make(self):
        for ns in self.ns.values():
            subprocess.run(["ip", "netns", "add", ns], check=True, capture_output=True, timeout=30)
            self.made.append(ns)
            ip("link", "set", "lo", "up", netns=ns)
        ab, ba = self.link
        self._veth(ab, "a", self.addresses["a"], ba, "b", self.addresses["b"], "24")
        near = self.witness_side
        far = "a" if near == "b" else "b"
        self._veth(f"{self.link[0]}w", near, self.addresses["near"], f"{self.link[0]}x", "w", self.addresses["w"], "24")
        # The far node reaches the witness through the near one while the
        # link is up, as across a real network: nobody fences before the cut.
        subprocess.run(
            ["ip", "netns", "exec", self.ns[near], "sysctl", "-qw", "net.ipv4.ip_forward=1"],
            check=True, capture_output=True, timeout=30,
        )
        ip("route", "add", "10.231.2.0/24", "via", self.addresses[near], netns=self.ns[far])
        ip("route", "add", "10.231.1.0/24", "via", self.addresses["near"], netns=self.ns["w"])

    def _veth(self, left, left_host, left_address, right, right_host, right_address, prefix):
        ip("link", "add", left, "netns", self.ns[left_host], "type", "veth", "peer", "name", right, "netns", self.ns[right_host])
        ip("addr", "add", f"{left_address}/{prefix}", "dev", left, netns=self.ns[left_host])
        ip("addr", "add", f"{right_address}/{prefix}", "dev", right, netns=self.ns[right_host])
        ip("link", "set", left, "up", netns=self.ns[left_host])
        ip("link", "set", right, "up", netns=self.ns[right_host])

    def cut(self):
        """Cut the link between a and b (both ends down)."""
        ip("link", "set", self.link[0], "down", netns=self.ns["a"])
        ip("link", "set", self.link[1], "down", netns=self.ns["b"])

    def remove(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class PartitionTestCase(unittest.TestCase):
    """Namespaces made for each test and removed after it, whatever its outcome, and a pair started in them."""

    interval = 0.2
    threshold = 2.0

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("network namespaces need root (CI runs as root)")
        check = f"iwtcheck{os.getpid()}"
        probe = subprocess.run(["ip", "netns", "add", check], capture_output=True, timeout=30)
        if probe.returncode != 0:
            raise unittest.SkipTest(f"cannot make network namespaces here: {probe.stderr.decode().strip()}")
        try:
            self.check_namespace(check)
        finally:
            subprocess.run(["ip", "netns", "del", check], capture_output=True, timeout=30)

    def check_namespace(self, ns):
        """Skip the test if something it needs cannot be done in a new namespace C{ns} (nothing more here)."""

    def start(self, witness_side, hosts=None, extra=""):
        """
        Make C{hosts} (by default L{Hosts} with the witness on
        C{witness_side}), start the witness if it has a namespace, and serv_a
        live in a with serv_b backup in b (a witness configured unless
        C{hosts.witness_side} is None; C{extra}: more [failover] lines).
        """
        hosts = hosts or Hosts(witness_side)
        self.addCleanup(hosts.remove)  # registered first: runs last, after every process is gone
        hosts.make()
        workdir = temporary_directory(self)
        consoles = (f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock")
        witnessed = hosts.witness_side is not None
        pair = Pair(
            workdir, interval=self.interval, threshold=self.threshold, own_listeners=True,
            failover_extra=(f"witness = {hosts.addresses['w']}:{WITNESS_PORT}\n" if witnessed else "") + extra,
            hosts=(hosts.addresses["a"], hosts.addresses["b"]), consoles=consoles,
        )
        pair.a.netns, pair.b.netns = hosts.ns["a"], hosts.ns["b"]
        if witnessed:
            witness = subprocess.Popen(
                ["ip", "netns", "exec", hosts.ns["w"], sys.executable, "-c", WITNESS_SERVER, hosts.addresses["w"],
                 str(WITNESS_PORT)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )

            def stop_witness():
                witness.kill()
                witness.wait(timeout=10)

            self.addCleanup(stop_witness)
        self.addCleanup(pair.stop)
        return hosts, pair.start_both()


class PartitionTests(PartitionTestCase):
    """The link between the nodes cut (both ends down) while the witness stays reachable from one side only."""

    def sample(self, pair, seconds):
        deadline = time.monotonic() + seconds
        samples = []
        while time.monotonic() < deadline:
            roles = pair.roles()
            samples.append(roles)
            self.assertNotEqual(
                roles, ("live", "live"), "both nodes live at once\n" + pair.a.log_tail() + pair.b.log_tail()
            )
        return samples

    def test_cut_with_the_witness_on_the_backups_side(self):
        """The backup sees the witness, the live node does not: the live fences itself, the backup takes over, never both live."""
        hosts, pair = self.start("b")
        hosts.cut()
        samples = self.sample(pair, self.threshold * 2.5)
        self.assertEqual(samples[-1], ("backup", "live"), pair.a.log_tail() + pair.b.log_tail())
        self.assertIn("self-fenced", pair.a.status()["cause"])
        self.assertIn("witness", pair.b.status()["cause"])
        self.assertEqual(pair.a.status()["listeners"]["web_a"]["state"], "WAITING")

    def test_cut_with_the_witness_on_the_live_nodes_side(self):
        """The live node sees the witness, the backup does not: the live stays live, the backup stays backup."""
        hosts, pair = self.start("a")
        hosts.cut()
        samples = self.sample(pair, self.threshold * 2.5)
        self.assertEqual(set(samples), {("live", "backup")}, pair.a.log_tail() + pair.b.log_tail())
        self.assertIn("isolated one", pair.b.log_text())
