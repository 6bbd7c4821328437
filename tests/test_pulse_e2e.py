"""
End to end, between real hosts (two network namespaces joined by a veth
pair, as test_partition makes them): pulses keep a pair together when its
heartbeat connection cannot carry heartbeats.

The backup's firewall drops every TCP segment from the live node (nftables,
silently): the heartbeat connection goes quiet, as it does on a lossy link
while a segment waits for its retransmission. With pulses = true the backup
hears the live node over UDP and never takes over; without (the default)
the same drop is a takeover at the threshold.

Threshold 1 s, heartbeat interval 0.2 s. Only addresses inside the
namespaces are used; every table, namespace and process goes at the end.
"""

from harness import Pair, temporary_directory
from test_partition import PartitionTestCase
import test_partition_regressions as regressions
from test_partition_regressions import INTERVAL, THRESHOLD, Hosts

SECOND = {"a": "10.231.4.1", "b": "10.231.4.2"}
"""Each host's address on the second network (a second veth between the namespaces)."""

WATCH = 5 * THRESHOLD
"""How long the backup is watched once TCP is dropped (seconds)."""


class PulseLinkTests(PartitionTestCase):
    interval = INTERVAL
    threshold = THRESHOLD

    # The regression tests' helpers (the class itself is not imported here: its tests would run twice).
    check_namespace = regressions.PartitionRegressionTests.check_namespace
    watch = regressions.PartitionRegressionTests.watch
    show = regressions.PartitionRegressionTests.show
    logs = regressions.PartitionRegressionTests.logs

    def start_pair(self, extra="", second_network=False, second_addresses=False):
        """
        A pair between two namespaces; with C{second_network}, a second veth
        between them (10.231.4.0/24), and with C{second_addresses} each
        server's second_address on it.
        """
        hosts = Hosts(None)
        self.addCleanup(hosts.remove)  # registered first: runs last, after every process is gone
        hosts.make()
        if second_network:
            ab, ba = hosts.link
            hosts._veth(f"{ab}2", "a", SECOND["a"], f"{ba}2", "b", SECOND["b"], "24")
        workdir = temporary_directory(self)
        pair = Pair(
            workdir, interval=INTERVAL, threshold=THRESHOLD, own_listeners=True, failover_extra=extra,
            hosts=(hosts.addresses["a"], hosts.addresses["b"]),
            consoles=(f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock"),
        )
        if second_addresses:
            with open(pair.config_path) as f:
                text = f.read()
            for name in ("a", "b"):
                text = text.replace(f"[server:serv_{name}]\n", f"[server:serv_{name}]\nsecond_address = {SECOND[name]}\n")
            with open(pair.config_path, "w") as f:
                f.write(text)
        pair.a.netns, pair.b.netns = hosts.ns["a"], hosts.ns["b"]
        self.addCleanup(pair.stop)
        pair.start_both()
        return hosts, pair

    def drop_tcp_from_the_live_node(self, hosts):
        hosts.add_table(
            "b", "iwtcp",
            f"chain input {{ type filter hook input priority 0; ip saddr {hosts.addresses['a']} meta l4proto tcp drop; }}",
        )

    def test_pulses_keep_the_backup_waiting_while_tcp_is_dropped(self):
        hosts, pair = self.start_pair(extra="pulses = true")
        self.watch(pair, 10, until=lambda s: (s.b or {}).get("heartbeats", {}).get("pulses", {}).get("received", 0) > 0)
        self.drop_tcp_from_the_live_node(hosts)
        samples = self.watch(pair, WATCH)
        self.assertEqual({s.roles for s in samples}, {("live", "backup")}, self.show(samples) + self.logs(pair))
        # The backup kept hearing the live node: its last heartbeat never grew near the threshold.
        ages = [s.b["peer"]["last_heartbeat_age"] for s in samples if s.b is not None]
        self.assertLess(max(ages), THRESHOLD / 2, self.show(samples) + self.logs(pair))
        self.assertGreater(samples[-1].b["heartbeats"]["pulses"]["received"], samples[0].b["heartbeats"]["pulses"]["received"])

    def test_without_pulses_the_same_drop_is_a_takeover(self):
        hosts, pair = self.start_pair()  # pulses are off by default
        self.drop_tcp_from_the_live_node(hosts)
        samples = self.watch(pair, WATCH, until=lambda s: s.roles[1] == "live")
        self.assertEqual(samples[-1].roles[1], "live", self.show(samples) + self.logs(pair))
        self.assertEqual(samples[-1].b["heartbeats"]["pulses"]["received"], 0)

    def test_a_second_address_keeps_the_pair_together_when_the_first_network_fails(self):
        """
        Two networks between the hosts, each server's second_address on the second: the first one goes
        down (both ends of its link), the heartbeat connection with it; the pulses to the second address
        go on, and the backup never takes over.
        """
        hosts, pair = self.start_pair(extra="pulses = true", second_network=True, second_addresses=True)
        self.watch(pair, 10, until=lambda s: (s.b or {}).get("heartbeats", {}).get("pulses", {}).get("received", 0) > 0)
        hosts.cut()
        samples = self.watch(pair, WATCH)
        self.assertEqual({s.roles for s in samples}, {("live", "backup")}, self.show(samples) + self.logs(pair))
        ages = [s.b["peer"]["last_heartbeat_age"] for s in samples if s.b is not None]
        self.assertLess(max(ages), THRESHOLD / 2, self.show(samples) + self.logs(pair))
        self.assertNotIn("pulse:", pair.b.log_text(), "the copies of each pulse are no refusals")

    def test_without_a_second_address_the_loss_of_the_network_is_a_takeover(self):
        """The same two networks and the same cut, no second_address: the backup takes over."""
        hosts, pair = self.start_pair(extra="pulses = true", second_network=True)
        self.watch(pair, 10, until=lambda s: (s.b or {}).get("heartbeats", {}).get("pulses", {}).get("received", 0) > 0)
        hosts.cut()
        samples = self.watch(pair, WATCH, until=lambda s: s.roles[1] == "live")
        self.assertEqual(samples[-1].roles[1], "live", self.show(samples) + self.logs(pair))
