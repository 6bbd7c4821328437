"""
The floating IP between real hosts: three network namespaces on one bridge
(node A, node B and a client C). Each node serves a page naming itself on
the floating IP; the client keeps asking the floating IP. kill -9 of the
live node: the client's next connections reach the new live node at the
same address, and at every sample of both nodes' addresses the floating IP
is on one node at most (exactly one outside the takeover gap).

Only addresses inside these namespaces are used (10.231.7.0/24); the
namespaces have no link to the machine's own network.
"""

import os
import shlex
import shutil
import subprocess
import sys
import time

from twisted.trial import unittest

import harness
from harness import Pair, temporary_directory, wait_for

SUBNET = "10.231.7"
VIP = f"{SUBNET}.100"
VIP6 = "2001:db8:7::100"  # documentation prefix, only inside the namespaces
WEB_PORT = 8080

# The client: one HTTP GET to the floating IP per line read, a fresh
# connection each time; prints who answered (or the error).
CLIENT = """
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
for line in sys.stdin:
    try:
        with socket.create_connection((host, port), timeout=0.5) as s:
            s.sendall(b"GET / HTTP/1.0\\r\\nHost: vip\\r\\n\\r\\n")
            data = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        body = data.split(b"\\r\\n\\r\\n", 1)[-1].decode().strip()
        print(body or "empty", flush=True)
    except OSError as e:
        print("error " + type(e).__name__, flush=True)
"""

LISTENERS = """
[listener:web_a]
plugin = web --listen '{endpoint}' --path {www_a}
servers = serv_a

[listener:web_b]
plugin = web --listen '{endpoint}' --path {www_b}
servers = serv_b
"""


def run(*argv):
    return subprocess.run(argv, check=True, capture_output=True, timeout=30)


class Lan:
    """Namespaces a, b (the nodes, each with eth0) and c (the client, holding the bridge)."""

    def __init__(self):
        tag = f"{os.getpid() % 100000}"
        self.ns = {name: f"iwf{tag}{name}" for name in ("a", "b", "c")}
        self.addresses = {"a": f"{SUBNET}.1", "b": f"{SUBNET}.2", "c": f"{SUBNET}.9"}
        self.made = []

    def make(self):
        for ns in self.ns.values():
            run("ip", "netns", "add", ns)
            self.made.append(ns)
            run("ip", "-n", ns, "link", "set", "lo", "up")
        c = self.ns["c"]
        run("ip", "-n", c, "link", "add", "br0", "type", "bridge")
        run("ip", "-n", c, "addr", "add", f"{self.addresses['c']}/24", "dev", "br0")
        run("ip", "-n", c, "addr", "add", "2001:db8:7::9/64", "dev", "br0", "nodad")
        run("ip", "-n", c, "link", "set", "br0", "up")
        for node in ("a", "b"):
            port = f"port{node}"
            run("ip", "link", "add", "eth0", "netns", self.ns[node], "type", "veth", "peer", "name", port, "netns", c)
            run("ip", "-n", c, "link", "set", port, "master", "br0")
            run("ip", "-n", c, "link", "set", port, "up")
            run("ip", "-n", self.ns[node], "addr", "add", f"{self.addresses[node]}/24", "dev", "eth0")
            run("ip", "-n", self.ns[node], "link", "set", "eth0", "up")

    def holds(self, node, vip=VIP) -> bool:
        """Is the floating IP on node's eth0 now?"""
        out = run("ip", "-n", self.ns[node], "-o", "addr", "show", "dev", "eth0").stdout.decode()
        return f" {vip}/" in out

    def remove(self):
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)


class NamespaceTestCase(unittest.TestCase):
    def setUp(self):
        if os.geteuid() != 0:
            raise unittest.SkipTest("network namespaces and floating IPs need root (CI runs as root)")
        for tool, package in (("ip", "iproute2"), ("arping", "iputils-arping")):
            if shutil.which(tool) is None:
                raise unittest.SkipTest(f"{tool} is not installed (Debian package {package}; make system-packages)")
        check = f"iwfcheck{os.getpid()}"
        probe = subprocess.run(["ip", "netns", "add", check], capture_output=True, timeout=30)
        if probe.returncode != 0:
            raise unittest.SkipTest(f"cannot make network namespaces here: {probe.stderr.decode().strip()}")
        subprocess.run(["ip", "netns", "del", check], capture_output=True, timeout=30)


class FloatingIPNamespaceTests(NamespaceTestCase):
    vip, prefix = VIP, 24
    endpoint = f"tcp:{WEB_PORT}:interface={VIP}"

    @property
    def item(self):
        """The floating IP's name among the listeners."""
        return f"vip:{self.vip}/{self.prefix}"

    def start(self):
        lan = Lan()
        self.addCleanup(lan.remove)  # registered first: runs last, after every process is gone
        lan.make()
        workdir = temporary_directory(self)
        pages = {}
        for server in ("serv_a", "serv_b"):
            pages[server] = os.path.join(workdir, f"www-{server}")
            os.makedirs(pages[server])
            with open(os.path.join(pages[server], "index.html"), "w") as f:
                f.write(f"served by {server}\n")
        pair = Pair(
            workdir, interval=0.2, threshold=1.0,
            failover_extra=f"virtual_ip = {self.vip}/{self.prefix}\ninterface = eth0",
            hosts=(lan.addresses["a"], lan.addresses["b"]),
            consoles=(f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock"),
        )
        pair.listeners = LISTENERS.format(endpoint=self.endpoint, www_a=pages["serv_a"], www_b=pages["serv_b"])
        pair.write_config()
        pair.a.netns, pair.b.netns = lan.ns["a"], lan.ns["b"]
        client = subprocess.Popen(
            ["ip", "netns", "exec", lan.ns["c"], sys.executable, "-c", CLIENT, self.vip, str(WEB_PORT)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
        )

        def stop_client():
            client.kill()
            client.wait(timeout=10)
            client.stdin.close()
            client.stdout.close()

        self.addCleanup(stop_client)
        self.addCleanup(pair.stop)
        pair.start_both()
        return lan, pair, client

    def get(self, client) -> str:
        """One request from the client to the floating IP, on a new connection: who answered."""
        client.stdin.write("get\n")
        client.stdin.flush()
        return client.stdout.readline().strip()

    def sample(self, lan, logs):
        """
        Where the floating IP is: read a, b, a within a moment. The new live
        node adds the address only after no other host has answered for it
        during DAD_WINDOW (0.2 s), so finding it on b and on a in reads so
        close together means it was on both at once.
        """
        for _ in range(50):
            started = time.monotonic()
            first, b, second = lan.holds("a", self.vip), lan.holds("b", self.vip), lan.holds("a", self.vip)
            if time.monotonic() - started < 0.15:
                break  # else the machine was too busy for the reads to count as one moment: again
        else:
            raise AssertionError("three reads of the addresses never took less than 0.15 s: the machine is too busy to judge")
        if b and (first or second):
            raise AssertionError(f"{self.vip} is on both nodes at once\n" + logs())
        return {"a": first and second, "b": b}

    def taken_over(self, pair) -> bool:
        """serv_b live, its floating IP and listener ACTIVE, and the address announced."""
        status = pair.b.status() or {}
        listeners = status.get("listeners", {})
        return (
            status.get("role") == "live"
            and listeners.get(self.item, {}).get("state") == "ACTIVE"
            and listeners.get("web_b", {}).get("state") == "ACTIVE"
            and f"announced {self.vip}" in pair.b.log_text()
        )

    def test_the_client_follows_the_floating_ip_through_a_kill_9(self):
        """kill -9 of the live node: the client's next connection to the same IP reaches the new live node; the address is never on two nodes."""
        lan, pair, client = self.start()
        logs = lambda: pair.a.log_tail() + pair.b.log_tail()
        wait_for(lambda: self.sample(lan, logs) == {"a": True, "b": False}, 10, f"{self.vip} on serv_a only\n" + logs())
        wait_for(
            lambda: {e["state"] for n, e in (pair.a.status() or {}).get("listeners", {}).items()} == {"ACTIVE"},
            10, "serv_a's floating IP and listener to be ACTIVE\n" + logs(),
        )
        self.assertEqual(self.get(client), "served by serv_a", logs())
        self.assertEqual(pair.b.status()["listeners"][self.item]["state"], "WAITING", pair.b.status()["listeners"])

        pair.a.kill()
        killed = time.monotonic()
        gap = []
        deadline = killed + 15
        while not self.taken_over(pair):
            if time.monotonic() > deadline:
                raise AssertionError(f"serv_b did not take the address over; answers {gap}\n" + logs())
            self.sample(lan, logs)
            gap.append(self.get(client))  # during the takeover: nobody, or serv_b already
            self.assertNotIn("served by serv_a", gap, logs())
        # The takeover is over: the very next connection reaches serv_b, and
        # every one after it; the address is on serv_b only.
        self.assertEqual(self.get(client), "served by serv_b", f"answers during the takeover: {gap}\n" + logs())
        for _ in range(5):
            self.assertEqual(self.sample(lan, logs), {"a": False, "b": True}, logs())
            self.assertEqual(self.get(client), "served by serv_b")
        took = time.monotonic() - killed
        status = pair.b.status()
        self.assertEqual(status["role"], "live")
        self.assertEqual(status["listeners"][self.item]["state"], "ACTIVE")
        self.assertIn("serv_a", status["cause"])  # its crash seen at once, or its silence past the threshold
        # The dead node's guardian took the address off serv_a.
        self.assertFalse(lan.holds("a", self.vip))
        # A node that stops lets go of the address.
        pair.b.stop()
        self.assertEqual(self.sample(lan, logs), {"a": False, "b": False})
        self.assertLess(took, 10, f"{took:.2f}s to reach serv_b; answers during the takeover: {gap}")


class FloatingIPv6NamespaceTests(FloatingIPNamespaceTests):
    """The same over IPv6: ndisc6 checks for another holder, the kernel announces the address."""

    vip, prefix = VIP6, 64
    endpoint = f"tcp6:{WEB_PORT}:interface=" + VIP6.replace(":", "\\:")

    def setUp(self):
        super().setUp()
        if shutil.which("ndisc6") is None:
            raise unittest.SkipTest("ndisc6 is not installed (Debian package ndisc6; make system-packages)")


class WithoutPrivilegeTests(NamespaceTestCase):
    """A node that lacks CAP_NET_ADMIN, in a namespace of its own."""

    def test_without_cap_net_admin_the_address_is_failed_and_says_why(self):
        """Root without CAP_NET_ADMIN: the log says so at startup, the address is FAILED naming the privilege, on_fault runs."""
        if shutil.which("setpriv") is None:
            raise unittest.SkipTest("setpriv (util-linux) is not installed")
        lan = Lan()
        self.addCleanup(lan.remove)
        lan.make()
        workdir = temporary_directory(self)
        # twistd in node a's namespace with CAP_NET_ADMIN out of its bounding set.
        wrapper = os.path.join(workdir, "twistd-without-net-admin")
        with open(wrapper, "w") as f:
            f.write(
                "#!/bin/sh\n"
                f"exec ip netns exec {lan.ns['a']} setpriv --bounding-set=-net_admin --inh-caps=-net_admin"
                f" {shlex.quote(harness.TWISTD)} \"$@\"\n"
            )
        os.chmod(wrapper, 0o755)
        self.patch(harness, "TWISTD", wrapper)
        script = shlex.quote('env > "$0/fault.env"')
        hook = f"/bin/sh -c {script} {workdir}"
        pair = Pair(
            workdir, interval=0.2, threshold=1.0,
            failover_extra=f"virtual_ip = {VIP}/24\ninterface = eth0\non_fault = {hook}",
            hosts=(lan.addresses["a"], lan.addresses["b"]),
            consoles=(f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock"),
        )
        self.addCleanup(pair.stop)
        pair.a.start()
        status = pair.a.wait_role("live")
        vip = wait_for(
            lambda: (pair.a.status() or {}).get("listeners", {}).get(f"vip:{VIP}/24", {}).get("state") == "FAILED"
            and pair.a.status()["listeners"][f"vip:{VIP}/24"],
            10, "the floating IP to be FAILED\n" + pair.a.log_tail(),
        )
        self.assertIn("Operation not permitted: needs root or CAP_NET_ADMIN", vip["reason"])
        self.assertIn("neither root nor CAP_NET_ADMIN", pair.a.log_text())
        self.assertFalse(lan.holds("a"))
        wait_for(lambda: "on_fault hook ended" in pair.a.log_text(), 10, "the on_fault hook\n" + pair.a.log_tail())
        with open(os.path.join(workdir, "fault.env")) as f:
            env = dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)
        self.assertEqual((env["IWAY_SERVER"], env["IWAY_ROLE"], env["IWAY_EVENT"]), ("serv_a", "live", "on_fault"))
        self.assertEqual(env["IWAY_EPOCH"], str(status["epoch"]))
        self.assertIn(f"vip:{VIP}/24 FAILED", env["IWAY_CAUSE"])
        self.assertIn("CAP_NET_ADMIN", env["IWAY_CAUSE"])
