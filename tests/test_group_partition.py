"""
A member of a group cut off from etcd, between real hosts: network
namespaces joined by veth pairs, with nftables rules in them for the cut.

    A (alpha, live) ---- E (etcd, one member) ---- B (beta, gamma)
     10.232.1.1    10.232.1.2          10.232.2.2    10.232.2.1

E's etcd listens on its address on each link; every member's
C{etcd_endpoints} lists both, and each member reaches only the one on its
own link (the other has no route: the client moves past it). Nothing
forwards, and no namespace has a link to the machine's own network.

The live member, alpha, is cut from E by its own firewall (a silent drop
both ways, or a TCP reset both ways). What is judged is the serving record
of groupharness: alpha stops serving before beta or gamma starts (the
overlap is exactly zero), a member of B takes over about a TTL after the
cut, alpha says why it stopped, and once the cut heals alpha is a backup
beside the one live member (it never takes the role back on its own).

TTL (threshold) 2 s, keepalives every 0.25 s. Each test removes its nftables
tables, its namespaces (and with them their veth pairs), its processes and
its files, whatever its outcome.
"""

import itertools
import os
import shutil
import subprocess
import sys
import threading
import time
from typing import Optional

from twisted.trial import unittest

from etcdharness import _die_with_parent
from groupharness import Group
from harness import allocate_port, temporary_directory, wait_for

THRESHOLD = 2
INTERVAL = 0.25

TAKEOVER_BOUND = THRESHOLD + 2.0
"""
A member of B starts serving within this many seconds of the cut: the TTL
counted from alpha's last renewal before the cut (the backups clear a key
not renewed for its TTL; etcd's own expiry checks only every 500 ms), the
watch's DELETE, one campaign and the channel's start.
"""

SETTLED = 2.0 * THRESHOLD
"""After the heal, the one live member stays the only one for this long."""

SAMPLE_EVERY = 0.05

_made = itertools.count(1)

HEALTH = """
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=1) as answer:
    sys.exit(0 if json.load(answer).get("health") == "true" else 1)
"""


def run(argv, what: str, timeout: float = 30) -> str:
    """Run C{argv}; its output, or one error naming C{what} and what the command said."""
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed ({' '.join(argv)}): {(done.stderr or done.stdout).strip()}")
    return done.stdout


class Hosts:
    """Three namespaces: E (etcd) with a veth link to A and one to B, and nftables tables in A."""

    addresses = {"a": "10.232.1.1", "e_a": "10.232.1.2", "b": "10.232.2.1", "e_b": "10.232.2.2"}

    def __init__(self):
        tag = f"{os.getpid() % 10000}{next(_made)}"
        self.ns = {host: f"iwg{tag}{host}" for host in ("a", "b", "e")}
        self.links = {"a": (f"iwg{tag}ae", f"iwg{tag}ea"), "b": (f"iwg{tag}be", f"iwg{tag}eb")}
        self.made = []
        self.tables = []
        """(host, table) of each nftables table in force."""

    def exec(self, host: str, *argv: str) -> list:
        return ["ip", "netns", "exec", self.ns[host], *argv]

    def make(self) -> None:
        for host in ("a", "b", "e"):
            run(["ip", "netns", "add", self.ns[host]], f"making namespace {self.ns[host]}")
            self.made.append(self.ns[host])
            run(self.exec(host, "ip", "link", "set", "lo", "up"), f"bringing lo up in {self.ns[host]}")
        for host in ("a", "b"):
            near, far = self.links[host]
            run(["ip", "link", "add", near, "netns", self.ns[host], "type", "veth", "peer", "name", far,
                 "netns", self.ns["e"]], f"making the veth link {host}-e")
            for side, device, address in ((host, near, self.addresses[host]), ("e", far, self.addresses[f"e_{host}"])):
                run(self.exec(side, "ip", "addr", "add", f"{address}/24", "dev", device), f"addressing {device}")
                run(self.exec(side, "ip", "link", "set", device, "up"), f"bringing {device} up")

    def nft(self, host: str, *args: str, script: Optional[str] = None) -> None:
        done = subprocess.run(self.exec(host, "nft", *args), input=script, text=True, capture_output=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)} in {self.ns[host]} failed: {done.stderr.strip()}\n{script or ''}")

    def cut(self, how: str) -> None:
        """
        A's firewall cuts it from E both ways: C{how} "drop" drops every
        packet (silence), "reset" answers every TCP segment with a reset.
        """
        e = self.addresses["e_a"]
        if how == "drop":
            incoming, outgoing = f"ip saddr {e} drop", f"ip daddr {e} drop"
        elif how == "reset":
            # A reset made for an outgoing segment comes in from E's address:
            # it passes (a reset is never answered), and so does E's own.
            incoming = f"ip saddr {e} tcp flags & rst == 0 reject with tcp reset"
            outgoing = f"ip daddr {e} meta l4proto tcp reject with tcp reset"
        else:
            raise ValueError(f"cut how: {how!r} (drop or reset)")
        self.nft("a", "-f", "-", script=(
            "table inet iwgcut {\n"
            f"  chain input {{ type filter hook input priority 0; {incoming}; }}\n"
            f"  chain output {{ type filter hook output priority 0; {outgoing}; }}\n"
            "}\n"
        ))
        self.tables.append(("a", "iwgcut"))

    def heal(self) -> None:
        self.tables.remove(("a", "iwgcut"))
        self.nft("a", "delete", "table", "inet", "iwgcut")

    def remove(self) -> None:
        for host, table in list(self.tables):
            try:
                self.nft(host, "delete", "table", "inet", table)
            except (RuntimeError, subprocess.SubprocessError):
                pass  # the namespace goes next, and its tables with it
        self.tables.clear()
        for ns in reversed(self.made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        self.made.clear()


class Etcd:
    """A one-member etcd in namespace E, on its address on each link (and E's own loopback)."""

    def __init__(self, hosts: Hosts, workdir: str):
        self.hosts = hosts
        self.port = allocate_port()
        self.peer_port = allocate_port()
        self.data = os.path.join(workdir, "etcd-data")
        self.logfile = os.path.join(workdir, "etcd.log")
        self.process = None

    def url(self, address: str) -> str:
        return f"http://{address}:{self.port}"

    @property
    def endpoints(self) -> list:
        """E's client URL on A's link, then on B's: a member reaches one of them only."""
        return [self.url(self.hosts.addresses["e_a"]), self.url(self.hosts.addresses["e_b"])]

    def start(self) -> None:
        clients = ",".join([*self.endpoints, self.url("127.0.0.1")])
        peer = f"http://127.0.0.1:{self.peer_port}"
        with open(self.logfile, "wb") as log:
            self.process = subprocess.Popen(
                self.hosts.exec(
                    "e", "etcd", "--name", "e0", "--data-dir", self.data,
                    "--listen-client-urls", clients, "--advertise-client-urls", clients,
                    "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
                    "--initial-cluster", f"e0={peer}", "--initial-cluster-state", "new",
                    "--heartbeat-interval", "50", "--election-timeout", "500",
                ),
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                preexec_fn=_die_with_parent,  # kept across ip netns exec's exec: etcd dies with the test process
            )

    def healthy_from(self, host: str) -> bool:
        """Does etcd's /health say so to a client in C{host}'s namespace, over C{host}'s link?"""
        endpoint = self.url(self.hosts.addresses[f"e_{host}"])
        done = subprocess.run(self.hosts.exec(host, sys.executable, "-c", HEALTH, endpoint + "/health"),
                              capture_output=True, timeout=30)
        return done.returncode == 0

    def log_tail(self, lines: int = 20) -> str:
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return "--- log of etcd ---\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return "--- no log for etcd ---"

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


class NamespacedGroup(Group):
    """A Group whose members run in namespaces: their consoles are unix sockets in the work dir, reachable from any namespace."""

    def console_endpoint(self, name) -> str:
        return f"unix:{os.path.join(self.workdir, name + '.sock')}"


class GroupPartitionTests(unittest.TestCase):

    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("network namespaces need root (CI runs as root)")
        if shutil.which("ip") is None:
            raise unittest.SkipTest("ip (iproute2) is not installed: no network namespaces to cut a member off in")
        check = f"iwgcheck{os.getpid()}"
        probe = subprocess.run(["ip", "netns", "add", check], capture_output=True, text=True, timeout=30)
        if probe.returncode != 0:
            raise unittest.SkipTest(f"cannot make network namespaces here (ip netns add): {probe.stderr.strip()}")
        subprocess.run(["ip", "netns", "del", check], capture_output=True, timeout=30)
        # make test installs these: missing, the test fails (it never passes by skipping).
        for program, package in (("nft", "nftables"), ("etcd", "etcd-server")):
            if shutil.which(program) is None:
                self.fail(f"{program} is not installed (Debian package {package}; make system-packages installs it)")

    def start(self):
        """The hosts, etcd in E, and the group: alpha live in A, beta and gamma backups in B."""
        hosts = Hosts()
        self.addCleanup(hosts.remove)  # registered first: runs last, after every process is gone
        workdir = temporary_directory(self)
        hosts.make()
        etcd = Etcd(hosts, workdir)
        self.addCleanup(etcd.stop)
        etcd.start()
        for host in ("a", "b"):
            wait_for(lambda: etcd.healthy_from(host) or etcd.process.poll() is not None, 30,
                     f"etcd in {hosts.ns['e']} to answer from {hosts.ns[host]}")
            self.assertIsNone(etcd.process.poll(), "etcd ended at start\n" + etcd.log_tail())
        # Each side reaches E on its own link only: no route to E's address on the other.
        for host, other in (("a", "e_b"), ("b", "e_a")):
            route = subprocess.run(hosts.exec(host, "ip", "route", "get", hosts.addresses[other]),
                                   capture_output=True, text=True, timeout=30)
            self.assertNotEqual(route.returncode, 0, f"{hosts.ns[host]} has a route to {other}: {route.stdout}")
        group = NamespacedGroup(workdir, etcd.endpoints, threshold=THRESHOLD, interval=INTERVAL,
                                netns={"alpha": hosts.ns["a"], "beta": hosts.ns["b"], "gamma": hosts.ns["b"]})
        self.addCleanup(group.stop)
        self.etcd, self.group = etcd, group
        group.start_all()
        self.assertEqual(group.live(), ["alpha"], self.logs())
        wait_for(lambda: [(name, what) for _, name, what in group.serving_events()] == [("alpha", "start")], 10,
                 "alpha's channel to start serving\n" + group.log_tails())
        return hosts, group

    def logs(self) -> str:
        return "\n" + self.group.log_tails() + "\n" + self.etcd.log_tail()

    def record(self) -> str:
        return "\nserving record: " + repr(self.group.serving_events())

    def watch(self, seconds: float, until=None) -> list:
        """Every member's /api/status every L{SAMPLE_EVERY} s for C{seconds} (or until C{until(statuses)}): [(monotonic, statuses)]."""
        samples = []
        deadline = time.monotonic() + seconds
        pace = threading.Event()
        while time.monotonic() < deadline:
            began = time.monotonic()
            statuses = self.group.statuses()
            samples.append((began, statuses))
            if until is not None and until(statuses):
                break
            pace.wait(max(0.0, SAMPLE_EVERY - (time.monotonic() - began)))
        return samples

    def cut_and_heal(self, how: str):
        hosts, group = self.start()
        hosts.cut(how)
        cut_at = time.time()  # the rules are in force from here

        # A member of B takes over; alpha stopped serving before it did.
        taken = wait_for(lambda: group.started_after(cut_at), TAKEOVER_BOUND + 5,
                         "a member of B to start serving after the cut" + self.logs() + self.record())
        took_at, taker = taken
        self.assertIn(taker, ("beta", "gamma"), self.record())
        stops = [at for at, name, what in group.serving_events() if name == "alpha" and what == "stop" and at > cut_at]
        self.assertTrue(stops, "alpha never stopped serving" + self.record() + self.logs())
        stopped_at = stops[0]
        self.assertEqual(group.overlap(), 0.0, "two members served at once" + self.record() + self.logs())
        self.assertLess(stopped_at, took_at, self.record())
        self.assertLessEqual(took_at - cut_at, TAKEOVER_BOUND, self.record())

        alpha = group["alpha"].status()
        self.assertIsNotNone(alpha, "alpha's console does not answer" + self.logs())
        self.assertEqual(alpha["role"], "backup", alpha)
        self.assertIn("the lease could not be renewed", alpha["cause"], alpha)
        self.assertEqual(group.wait_live(timeout=5), taker)

        # alpha knows it is cut off (so what follows the heal is news to it).
        wait_for(lambda: ((group["alpha"].status() or {}).get("coordinator") or {}).get("connected") is False,
                 2 * THRESHOLD, "alpha to say it is not connected to the store" + self.logs())

        # Heal: alpha meets the store again and comes back a backup beside the one live member.
        hosts.heal()
        healed_at = time.monotonic()

        def alpha_back(statuses):
            a = statuses["alpha"] or {}
            coordinator = a.get("coordinator") or {}
            return a.get("role") == "backup" and coordinator.get("connected") and coordinator.get("live") == taker

        back = self.watch(2 * THRESHOLD + 5, until=alpha_back)
        self.assertTrue(alpha_back(back[-1][1]), "alpha did not come back as a backup seeing "
                        f"{taker} live: {back[-1][1]['alpha']}" + self.logs())
        back_after = back[-1][0] - healed_at
        settled = self.watch(SETTLED)
        for at, statuses in back + settled:
            lives = sorted(name for name, s in statuses.items() if s is not None and s["role"] == "live")
            self.assertLessEqual(len(lives), 1, f"{lives} live at once, {at - healed_at:.3f}s after the heal" + self.logs())
        for at, statuses in settled:
            roles = {name: (s or {}).get("role") for name, s in statuses.items()}
            self.assertEqual(roles[taker], "live", f"{at - healed_at:.3f}s after the heal: {roles}" + self.logs())
            self.assertEqual(roles["alpha"], "backup", f"{at - healed_at:.3f}s after the heal: {roles}" + self.logs())
        self.assertEqual(group.live(), [taker])
        self.assertEqual(group.overlap(), 0.0, self.record())
        self.assertEqual([at for at, name, what in group.serving_events() if name == "alpha" and what == "start"
                          and at > cut_at], [], "alpha served again after the heal" + self.record())
        margin, takeover = took_at - stopped_at, took_at - cut_at
        print(f"\n{how} cut: alpha stopped {stopped_at - cut_at:.3f}s after the cut, {taker} started"
              f" {takeover:.3f}s after it (margin {margin:.3f}s); healed, alpha a backup seeing {taker} live"
              f" within {back_after:.3f}s")
        return margin, takeover

    def test_silent_cut(self):
        """A's firewall drops everything to and from E: alpha stops before its lease can expire in etcd, a member of B takes over about a TTL after the cut, never both serving; healed, alpha is a backup."""
        self.cut_and_heal("drop")

    def test_reset_cut(self):
        """A's firewall answers every TCP segment to and from E with a reset: the same invariant as the silent cut."""
        self.cut_and_heal("reset")
