"""
Tests for L{iwayfailover.console.metrics}: C{GET /metrics} shows a node's
state in the Prometheus text format, read from the node at each scrape.
"""

import math

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet import defer
from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure
from twisted.web.test.requesthelper import DummyRequest
from zope.interface import implementer

from iwayfailover import probe, wire
from iwayfailover.config import ConfigError
from iwayfailover.console import console_root
from iwayfailover.console.metrics import MetricsResource, node_registry
from iwayfailover.reload import ConfigPoller
from iwayfailover.status import LOCAL_COPY, CoordinatorStatus, INodeControl, LeaseStats, MemberStatus
from test_console import ThroughInterface
from test_node import CONFIG, NodeTestCase
from wirepeer import frame_bytes, keyed


def scrape(node):
    """
    The node's metrics as Prometheus parses them: C{(sample name, labels)}
    to value, labels as a sorted tuple of pairs. The collector sees the node
    through L{INodeControl} alone.
    """
    text = generate_latest(node_registry(ThroughInterface(node))).decode("utf-8")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name, **labels):
    return samples[(name, tuple(sorted(labels.items())))]


def current(samples, name, label, **others):
    """The values of C{label} whose sample is 1 (e.g. the role a node is in)."""
    return sorted(
        dict(key)[label] for (sample, key), v in samples.items()
        if sample == name and v == 1 and all(dict(key).get(k) == o for k, o in others.items())
    )


class CollectorRoleTests(NodeTestCase):
    """Role, epoch and takeovers, as the node's state changes."""

    def test_a_backup_shows_role_backup_and_epoch_zero(self):
        """A new backup: role backup is 1 (every other role 0), epoch 0, no takeovers."""
        samples = scrape(self.make_node())

        self.assertEqual(current(samples, "iwayfailover_role", "role", server="serv_b"), ["backup"])
        self.assertEqual(value(samples, "iwayfailover_role", server="serv_b", role="live"), 0)
        self.assertEqual(value(samples, "iwayfailover_epoch"), 0)
        self.assertEqual(
            {k: v for (name, k), v in samples.items() if name == "iwayfailover_takeovers_total"},
            {(("cause", c),): 0 for c in ("crash", "peer_shutdown", "silence", "switchover")},
        )

    def test_a_takeover_on_silence_raises_epoch_role_and_takeovers_for_silence(self):
        """After the threshold of silence: role live, epoch 1, takeovers_total{cause=silence} 1."""
        node = self.make_node()

        self.step(2.05)
        samples = scrape(node)

        self.assertEqual(current(samples, "iwayfailover_role", "role", server="serv_b"), ["live"])
        self.assertEqual(value(samples, "iwayfailover_epoch"), 1)
        self.assertEqual(value(samples, "iwayfailover_takeovers_total", cause="silence"), 1)
        self.assertEqual(value(samples, "iwayfailover_role_since_timestamp_seconds"), 1764064800.0)
        self.assertEqual(value(samples, "iwayfailover_takeovers_total", cause="crash"), 0)

    def test_a_peer_standing_down_for_a_switchover_counts_as_switchover(self):
        """A standing-down frame flagged as a switchover: takeovers_total{cause=switchover} 1."""
        node = self.make_node()
        protocol, _ = self.inbound(node)

        protocol.dataReceived(
            frame_bytes(protocol, wire.Kind.STANDING_DOWN, "serv_a", wire.Role.LIVE, seq=1, flags=wire.FLAG_SWITCHOVER)
        )
        samples = scrape(node)

        self.assertEqual(value(samples, "iwayfailover_takeovers_total", cause="switchover"), 1)
        self.assertEqual(value(samples, "iwayfailover_takeovers_total", cause="peer_shutdown"), 0)

    def test_a_peer_standing_down_to_shut_down_counts_as_peer_shutdown(self):
        """A standing-down frame without the switchover flag: takeovers_total{cause=peer_shutdown} 1."""
        node = self.make_node()
        protocol, _ = self.inbound(node)

        protocol.dataReceived(frame_bytes(protocol, wire.Kind.STANDING_DOWN, "serv_a", wire.Role.LIVE, seq=1))

        self.assertEqual(value(scrape(node), "iwayfailover_takeovers_total", cause="peer_shutdown"), 1)

    def test_a_takeover_after_a_crash_probe_counts_as_crash(self):
        """The live's connection closes and its port refuses: takeovers_total{cause=crash} 1."""
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.REFUSED, "connection refused")
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))

        protocol.connectionLost(Failure(ConnectionDone()))

        self.assertEqual(value(scrape(node), "iwayfailover_takeovers_total", cause="crash"), 1)


class CollectorHeartbeatTests(NodeTestCase):
    """Heartbeat counters and the age of the last one."""

    def test_heartbeats_received_count_and_the_last_ones_age(self):
        """Before any heartbeat the age is NaN; then it counts from the last one heard, and received counts each."""
        node = self.make_node()
        self.assertTrue(math.isnan(value(scrape(node), "iwayfailover_last_heartbeat_age_seconds")))
        protocol, _ = self.inbound(node)

        self.every_half_second(protocol, 3, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE)
        self.reactor.advance(0.25)
        samples = scrape(node)

        self.assertEqual(value(samples, "iwayfailover_heartbeats_received_total"), 3)
        self.assertAlmostEqual(value(samples, "iwayfailover_last_heartbeat_age_seconds"), 0.25)
        self.assertEqual(value(samples, "iwayfailover_peer_connected"), 1)

    def test_the_longest_gap_between_live_heartbeats_is_shown(self):
        """max_heartbeat_gap_seconds is the longest pause between two live heartbeats the backup heard."""
        node = self.make_node()
        protocol, _ = self.inbound(node)

        for seq, pause in enumerate((0.5, 1.25, 0.5), start=1):
            self.reactor.advance(pause)
            protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=seq))

        self.assertEqual(value(scrape(node), "iwayfailover_max_heartbeat_gap_seconds"), 1.25)

    def test_heartbeats_sent_by_a_live_node_are_counted(self):
        """A live node connected to its backup: heartbeats_sent_total counts one per interval."""
        node = self.make_node(name="serv_a", backup=False)
        self.answering_backup(node)
        before = value(scrape(node), "iwayfailover_heartbeats_sent_total")

        self.step(1.55)  # three intervals of 0.5 s

        self.assertEqual(value(scrape(node), "iwayfailover_heartbeats_sent_total") - before, 3)

    def test_a_bad_hello_counts_as_rejected(self):
        """Bytes that are no hello on the heartbeat port: heartbeats_rejected_total 1."""
        node = self.make_node()
        protocol = node.heartbeat_factory.buildProtocol(IPv4Address("TCP", "10.9.9.66", 40000))
        protocol.makeConnection(StringTransport())

        protocol.dataReceived(b"\x00\x00\x00\x05hello")

        self.assertEqual(value(scrape(node), "iwayfailover_heartbeats_rejected_total"), 1)


class CollectorSettingsTests(NodeTestCase):
    """The settings alert rules compare with."""

    def test_threshold_and_heartbeat_interval_follow_the_configuration(self):
        """threshold_seconds and heartbeat_interval_seconds are the node's settings, also after a reload."""
        node = self.make_node()
        samples = scrape(node)
        self.assertEqual(
            (value(samples, "iwayfailover_threshold_seconds"), value(samples, "iwayfailover_heartbeat_interval_seconds")),
            (2.0, 0.5),
        )

        node.apply_config(keyed(CONFIG.replace("threshold = 2", "threshold = 4").replace("= 0.5", "= 0.25")))
        samples = scrape(node)

        self.assertEqual(
            (value(samples, "iwayfailover_threshold_seconds"), value(samples, "iwayfailover_heartbeat_interval_seconds")),
            (4.0, 0.25),
        )


class CollectorListenerTests(NodeTestCase):
    """One 1 per listener, on the state it is in."""

    def test_a_backups_listeners_are_waiting(self):
        """On a backup every listener of this node is WAITING (and only its own listeners are shown)."""
        samples = scrape(self.make_node())

        self.assertEqual(current(samples, "iwayfailover_listener_state", "state", listener="web"), ["WAITING"])
        self.assertEqual(current(samples, "iwayfailover_listener_state", "state", listener="broken"), ["WAITING"])
        self.assertNotIn("elsewhere", {dict(k).get("listener") for (_, k) in samples})

    def test_after_a_takeover_listeners_are_active_or_failed(self):
        """After a takeover web is ACTIVE and broken (which cannot start) FAILED; every other state is 0."""
        node = self.make_node()

        self.step(2.05)
        samples = scrape(node)

        self.assertEqual(current(samples, "iwayfailover_listener_state", "state", listener="web"), ["ACTIVE"])
        self.assertEqual(current(samples, "iwayfailover_listener_state", "state", listener="broken"), ["FAILED"])
        self.assertEqual(value(samples, "iwayfailover_listener_state", listener="web", state="WAITING"), 0)


class CollectorReloadTests(NodeTestCase):
    """Configuration reloads and refused reads."""

    def poller(self, node, share):
        poller = ConfigPoller(self.reactor, node.config, 1.0, share, lambda f, *a: defer.maybeDeferred(f, *a),
                              node.apply_config)
        node.poller = poller
        poller.startService()
        self.addCleanup(lambda: poller.running and poller.stopService())
        return poller

    def test_without_a_poller_reloads_are_zero(self):
        """A node not polling its file shows zero reloads and failures."""
        samples = scrape(self.make_node())

        self.assertEqual(value(samples, "iwayfailover_config_reloads_total"), 0)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failures_total"), 0)

    def test_a_changed_file_counts_as_a_reload(self):
        """A changed configuration applied: config_reloads_total 1, no failure."""
        node = self.make_node()
        changed = keyed(CONFIG.replace("threshold = 2", "threshold = 3"), "/share/iway.ini")
        self.poller(node, lambda path: changed)

        self.reactor.advance(1.0)
        self.reactor.advance(0.5)  # read again after the settle delay: the file is stable
        samples = scrape(node)

        self.assertEqual(value(samples, "iwayfailover_config_reloads_total"), 1)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failures_total"), 0)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failing"), 0)

    def test_a_bad_edit_counts_as_a_failure_while_it_lasts(self):
        """Each refused read counts; config_reload_failing is 1 until a good read."""
        node = self.make_node()
        share = {"result": ConfigError("/share/iway.ini", "server:serv_a", "threshold", "x", "not a number")}

        def load(path):
            if isinstance(share["result"], Exception):
                raise share["result"]
            return share["result"]

        self.poller(node, load)

        self.reactor.advance(1.0)
        self.reactor.advance(0.5)  # the second read confirms the error: one failure
        self.reactor.advance(0.5)  # the next poll: the same error again
        samples = scrape(node)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failures_total"), 2)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failing"), 1)

        share["result"] = node.config
        self.reactor.advance(1.0)
        self.assertEqual(value(scrape(node), "iwayfailover_config_reload_failing"), 0)


class BuildInfoTests(NodeTestCase):
    def test_build_info_names_the_version_and_server(self):
        """iwayfailover_build_info carries the package version and the server name."""
        import iwayfailover

        samples = scrape(self.make_node())

        self.assertEqual(
            value(samples, "iwayfailover_build_info", version=iwayfailover.__version__, server="serv_b"), 1
        )


class GroupCollectorTests(NodeTestCase):
    """A group member's metrics: its lease keepalives, the store's reach, and the members by role."""

    def group_samples(self, coordinator, members=()):
        """The samples of a real node's metrics with C{coordinator} and C{members} added to its status."""
        from test_console import GroupMember

        return scrape(GroupMember(self.make_node(), coordinator, tuple(members)))

    def test_a_pair_has_no_group_metrics(self):
        """A pair node exposes none of the lease or group families."""
        names = {name for name, _ in scrape(self.make_node())}
        self.assertFalse({n for n in names if n.startswith(("iwayfailover_lease", "iwayfailover_group", "iwayfailover_coordinator"))})

    def test_a_group_member_has_no_heartbeat_or_peer_metrics(self):
        """A group's members send no heartbeats: no heartbeat age (NaN would fire a backup's alert forever), no peer link."""
        names = {name for name, _ in self.group_samples(LeaseStats().status(connected=True))}
        self.assertIn("iwayfailover_coordinator_connected", names)
        self.assertFalse({n for n in names if n.startswith(("iwayfailover_heartbeat", "iwayfailover_last_heartbeat",
                                                            "iwayfailover_max_heartbeat", "iwayfailover_peer"))}
                         - {"iwayfailover_heartbeat_interval_seconds"})

    def test_renewals_and_failures_are_counters(self):
        """iwayfailover_lease_renewals_total and ..._failures_total are LeaseStats' counts."""
        stats = LeaseStats()
        for latency in (0.004, 0.02, 0.3):
            stats.renewed(latency)
        stats.failed("no answer in 1 s")

        samples = self.group_samples(stats.status(connected=True))

        self.assertEqual(value(samples, "iwayfailover_lease_renewals_total"), 3)
        self.assertEqual(value(samples, "iwayfailover_lease_renewal_failures_total"), 1)

    def test_renewal_latency_is_a_histogram(self):
        """iwayfailover_lease_renewal_seconds: cumulative buckets up to +Inf, its count and its sum."""
        stats = LeaseStats()
        for latency in (0.004, 0.02, 0.3, 4.0):
            stats.renewed(latency)

        samples = self.group_samples(stats.status())

        buckets = {dict(labels)["le"]: v for (name, labels), v in samples.items() if name == "iwayfailover_lease_renewal_seconds_bucket"}
        self.assertEqual(buckets, {
            "0.005": 1, "0.01": 1, "0.025": 2, "0.05": 2, "0.1": 2, "0.25": 2, "0.5": 3, "1.0": 3, "2.5": 3, "+Inf": 4,
        })
        self.assertEqual(value(samples, "iwayfailover_lease_renewal_seconds_count"), 4)
        self.assertAlmostEqual(value(samples, "iwayfailover_lease_renewal_seconds_sum"), 4.324)

    def test_lease_left_and_connected(self):
        """A live member with 2.5 s of lease left and the store answering."""
        samples = self.group_samples(CoordinatorStatus(connected=True, lease_ttl=3, lease_left=2.5))

        self.assertEqual(value(samples, "iwayfailover_lease_left_seconds"), 2.5)
        self.assertEqual(value(samples, "iwayfailover_coordinator_connected"), 1)

    def test_no_lease_is_nan_and_a_lost_store_is_zero(self):
        """A member holding no lease: NaN left; the store out of reach: connected 0."""
        samples = self.group_samples(CoordinatorStatus(connected=False))

        self.assertTrue(math.isnan(value(samples, "iwayfailover_lease_left_seconds")))
        self.assertEqual(value(samples, "iwayfailover_coordinator_connected"), 0)

    def test_members_are_counted_by_role(self):
        """One live and two backups: live 1, backup 2, every other role 0."""
        members = [MemberStatus("alpha", "live"), MemberStatus("beta", "backup"), MemberStatus("gamma", "backup")]

        samples = self.group_samples(CoordinatorStatus(connected=True), members)

        self.assertEqual(value(samples, "iwayfailover_group_members", role="live"), 1)
        self.assertEqual(value(samples, "iwayfailover_group_members", role="backup"), 2)
        self.assertEqual(value(samples, "iwayfailover_group_members", role="starting"), 0)


def get(resource, client):
    """Render C{GET} on C{resource} for a request from C{client}; the request, finished."""
    request = DummyRequest([b""])
    request.method = b"GET"
    request.client = client
    body = resource.render(request)
    request.write(body)
    request.finish()
    return request


class MetricsResourceTests(NodeTestCase):
    """C{GET /metrics} on the console."""

    def test_get_metrics_through_the_console_site(self):
        """GET /metrics on the console's resource tree, from this host: 200 and the node's role."""
        from treq.testing import StubTreq

        node = self.make_node()
        client = StubTreq(console_root(ThroughInterface(node)))

        response = self.successResultOf(client.get("http://console/metrics"))
        text = self.successResultOf(client.text_content(response))

        self.assertEqual(response.code, 200)
        self.assertIn('iwayfailover_role{role="backup",server="serv_b"} 1.0', text)

    def test_a_post_is_refused(self):
        """POST /metrics without a login: refused by the console's guard; the metrics are read-only."""
        from treq.testing import StubTreq

        client = StubTreq(console_root(ThroughInterface(self.make_node())))

        response = self.successResultOf(client.post("http://console/metrics", data=b""))

        self.assertEqual(response.code, 403)

    def test_loopback_client_gets_the_exposition(self):
        """From 127.0.0.1: 200, the Prometheus text content type, and the node's samples."""
        node = self.make_node()

        request = get(MetricsResource(node), IPv4Address("TCP", "127.0.0.1", 50000))

        self.assertEqual(request.responseCode, 200)
        [content_type] = request.responseHeaders.getRawHeaders(b"content-type")
        self.assertTrue(content_type.startswith(b"text/plain; version=0.0.4"), content_type)
        families = {f.name for f in text_string_to_metric_families(b"".join(request.written).decode())}
        self.assertIn("iwayfailover_role", families)
        self.assertIn("iwayfailover_epoch", families)

    def through_console(self, node, client, host=None):
        """GET /metrics through the console's guard, as from C{client}; the answer's code and body."""
        from treq.testing import StubTreq
        from twisted.web.resource import Resource

        root = console_root(ThroughInterface(node))

        class From(Resource):
            def getChildWithDefault(self, path, request):
                request.getClientAddress = lambda: client
                if host is not None:
                    request.getHost = lambda: host
                return root.getChildWithDefault(path, request)

        stub = StubTreq(From())
        response = self.successResultOf(stub.get("http://console/metrics"))
        return response.code, self.successResultOf(stub.text_content(response))

    def test_this_hosts_clients_read_it_without_a_login(self):
        """Through the console: ::1, a Unix socket, and the console's own bound address read it without a login."""
        node = self.make_node()
        here = IPv4Address("TCP", "192.0.2.2", 8081)
        for client in (IPv6Address("TCP", "::1", 50000), UNIXAddress(b"/run/console.sock"),
                       IPv4Address("TCP", "192.0.2.2", 50000)):
            code, text = self.through_console(node, client, host=here)
            self.assertEqual(code, 200, client)
            self.assertIn("iwayfailover_role", text)

    def test_other_hosts_without_a_login_get_401(self):
        """Through the console, from another address without a login: 401, and no metrics in the body."""
        code, text = self.through_console(self.make_node(), IPv4Address("TCP", "192.0.2.7", 50000),
                                          host=IPv4Address("TCP", "192.0.2.2", 8081))
        self.assertEqual(code, 401)
        self.assertNotIn("iwayfailover_", text)

    def test_a_failing_collector_answers_500_and_is_logged(self):
        """A node whose state cannot be read: 500 with a short message, the failure logged, nothing escapes."""

        @implementer(INodeControl)
        class Broken:
            def status(self):
                raise RuntimeError("no status")

        request = get(MetricsResource(Broken()), IPv4Address("TCP", "127.0.0.1", 50000))

        self.assertEqual(request.responseCode, 500)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_each_scrape_reads_the_node_afresh(self):
        """One resource, two scrapes around a takeover: the second shows the new role."""
        node = self.make_node()
        resource = MetricsResource(node)
        loopback = IPv4Address("TCP", "127.0.0.1", 50000)

        def role():
            text = b"".join(get(resource, loopback).written).decode()
            return current(
                {(s.name, tuple(sorted(s.labels.items()))): s.value
                 for f in text_string_to_metric_families(text) for s in f.samples},
                "iwayfailover_role", "role",
            )

        self.assertEqual(role(), ["backup"])
        self.step(2.05)
        self.assertEqual(role(), ["live"])


class LocalCopyMetricTests(NodeTestCase):
    """Whether the node runs from its local copy of the configuration, and whether the copy can be kept."""

    def samples(self, **config):
        import dataclasses

        node = self.make_node()

        @implementer(INodeControl)
        class Copied:
            def status(self):
                status = node.status()
                return dataclasses.replace(status, config=dataclasses.replace(status.config, **config))

        return scrape(Copied())

    def test_a_node_on_its_share_shows_zero(self):
        samples = self.samples()
        self.assertEqual(value(samples, "iwayfailover_config_from_local_copy"), 0)
        self.assertEqual(value(samples, "iwayfailover_config_local_copy_failing"), 0)

    def test_a_node_on_its_copy_shows_one(self):
        samples = self.samples(source=LOCAL_COPY, last_error="cannot read the configuration: Input/output error")
        self.assertEqual(value(samples, "iwayfailover_config_from_local_copy"), 1)
        self.assertEqual(value(samples, "iwayfailover_config_reload_failing"), 1)

    def test_a_copy_that_cannot_be_written_shows_one(self):
        samples = self.samples(local_copy_error="No space left on device")
        self.assertEqual(value(samples, "iwayfailover_config_local_copy_failing"), 1)
