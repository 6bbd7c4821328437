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

    def start_pair(self, extra=""):
        hosts = Hosts(None)
        self.addCleanup(hosts.remove)  # registered first: runs last, after every process is gone
        hosts.make()
        workdir = temporary_directory(self)
        pair = Pair(
            workdir, interval=INTERVAL, threshold=THRESHOLD, own_listeners=True, failover_extra=extra,
            hosts=(hosts.addresses["a"], hosts.addresses["b"]),
            consoles=(f"unix:{workdir}/a.sock", f"unix:{workdir}/b.sock"),
        )
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
