"""
Safe, fast takeover, rule by rule, on a node driven with a
MemoryReactorClock, in-memory transports and stand-in probes: fencing by
epoch, the startup check, graceful handover, the crash fast path, planned
switchover, failback and witnesses.
"""

from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from iwayfailover import auth, probe, wire
from iwayfailover.config import parse_config
from iwayfailover.listeners import ACTIVE, STOPPED, WAITING
from iwayfailover.node import SwitchoverRefused
from iwayfailover.core.events import BACKUP, HANDING_OVER, LIVE
from harness import temporary_directory
from test_node import CONFIG, NodeTestCase, dialled, frame_bytes, frames_in
from wirepeer import RING, keyed, peer_frame, prefixed, strings

WITNESS_CONFIG = CONFIG.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0.5\nwitness = 10.9.9.9:22")


def self_signed_pem(folder):
    """A key and a self-signed certificate for localhost in one PEM file (for a TLS endpoint string)."""
    import datetime
    import os

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + datetime.timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    path = os.path.join(folder, "node.pem")
    with open(path, "wb") as f:
        f.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
        f.write(certificate.public_bytes(serialization.Encoding.PEM))
    return path


def record_stops(test, node):
    """The (final state, kill_after) of every stop of C{node}'s listeners from now on."""
    stops = []
    real = node.listeners.stop

    def stop(final=WAITING, kill_after=None):
        stops.append((final, kill_after))
        return real(final, kill_after)

    test.patch(node.listeners, "stop", stop)
    return stops


def answer(role, epoch=0, seq=1, name="serv_a"):
    return peer_frame(wire.Kind.ANSWER, name, role, epoch=epoch, seq=seq)


class PairTestCase(NodeTestCase):
    """Two whole nodes, each on its own clock, linked by in-memory transports."""

    def live_pair(self, text_a, text_b):
        """
        serv_a and serv_b, both started live (each reading its own copy of
        the file), each linked to the other's heartbeat port: the nodes and
        the links. C{self.reactors} holds their clocks.
        """
        a = self.make_node(name="serv_a", backup=False, text=text_a)
        reactor_a = self.reactor
        b = self.make_node(name="serv_b", backup=False, text=text_b)
        self.reactors = (reactor_a, self.reactor)
        links = []
        for node, dialler_reactor, target in ((a, reactor_a, b), (b, self.reactor, a)):
            host, port, factory, _, _ = dialler_reactor.tcpClients[-1]
            client = factory.buildProtocol(None)
            address = IPv4Address("TCP", "10.9.9.1" if target is b else "10.9.9.2", 40000)
            server = target.heartbeat_factory.buildProtocol(address)
            server_transport = StringTransport(peerAddress=address)
            server.makeConnection(server_transport)
            client_transport = StringTransport()
            client.makeConnection(client_transport)
            links.append((client, client_transport, server, server_transport))
        return a, b, links

    def exchange(self, links, rounds):
        """Deliver what each side of each link has written, both ways, C{rounds} times."""
        for _ in range(rounds):
            for client, client_transport, server, server_transport in links:
                self.deliver(client_transport, server)
                self.deliver(server_transport, client)

    def deliver(self, transport, protocol):
        data = transport.value()
        transport.clear()
        if data:
            protocol.dataReceived(data)


class FencingTests(PairTestCase):
    def test_live_node_yields_to_a_live_peer_with_a_higher_epoch(self):
        """A heartbeat from a live peer of higher epoch makes a live node stop serving and become its backup."""
        node = self.make_node(name="serv_b", backup=False)
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1))
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual(node.listeners.status()["web"]["state"], WAITING)
        self.assertIn("outranks this node", node.machine.cause)
        [reply] = frames_in(transport)
        self.assertEqual(reply.role, wire.Role.BACKUP, "the answer already says backup")

    def test_a_yield_bounds_the_stop_of_process_channels_by_one_heartbeat(self):
        """Yielding to another live node: both serve already, so channels get SIGKILL after one heartbeat interval at most."""
        node = self.make_node(name="serv_b", backup=False)
        stops = record_stops(self, node)
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=4))
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual(stops, [(WAITING, 0.5)])  # both serve already: gone within one heartbeat interval

    def test_a_planned_stop_keeps_each_channels_stop_timeout(self):
        """A node shutting down stops its channels with their own stop_timeout (no sooner SIGKILL)."""
        node = self.make_node(name="serv_b", backup=False)
        stops = record_stops(self, node)
        node.stopService()
        self.assertEqual(stops, [(STOPPED, None)])

    def test_shutdown_after_a_yield_waits_for_the_heartbeat_link_to_close(self):
        """A node that yielded and then shuts down waits for its old heartbeat link as well as its listeners."""
        node = self.make_node(name="serv_b", backup=False)
        _, link, _ = self.outbound(node)
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1))
        stopped = node.stopService()
        self.assertNoResult(stopped)
        link.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)

    def test_live_node_of_higher_rank_stays_live_and_says_so(self):
        """A live node hearing a lower-ranked live peer stays live and answers as live, so the peer yields."""
        node = self.make_node(name="serv_a", backup=False)  # serv_a sorts first: it wins at equal epochs
        protocol, transport = self.inbound(node, host="10.9.9.2")
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_b", wire.Role.LIVE, epoch=1))
        self.assertEqual(node.machine.role, LIVE)
        [reply] = frames_in(transport)
        self.assertEqual((reply.role, reply.epoch), (wire.Role.LIVE, 2))

    def test_priority_breaks_a_tie_between_nodes_started_together(self):
        """Two nodes started live at once with equal epochs: the higher announced priority starts live."""
        text = CONFIG.replace("threshold = 2\n\n[server:serv_b]", "threshold = 2\npriority = -1\n\n[server:serv_b]")
        node = self.make_node(name="serv_a", backup=False, text=text, answer=answer(wire.Role.STARTING, name="serv_b"))
        self.assertEqual(node.machine.role, BACKUP)

    def test_a_woken_live_node_yields_on_the_answer_of_the_new_live(self):
        """A live node that was paused learns from its backup's answer that the backup is live now, and yields."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.LIVE, epoch=3))
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual({s["state"] for s in node.listeners.status().values()} - {"FAILED"}, {WAITING})

    def test_two_live_nodes_settle_to_one_within_one_heartbeat(self):
        """Two live nodes linked to each other: after one heartbeat each way exactly one is live, and it stays so."""
        a, b, links = self.live_pair(CONFIG, CONFIG)
        self.exchange(links, 4)
        self.assertEqual(sorted([a.machine.role, b.machine.role]), [BACKUP, LIVE])
        self.assertEqual(a.machine.role, LIVE, "serv_a sorts first at equal epochs and priorities")

def priorities(serv_a, serv_b, text=CONFIG):
    """C{text} with a priority for each server: one node's copy of the shared file."""
    return text.replace(
        "threshold = 2\n\n[server:serv_b]", f"threshold = 2\npriority = {serv_a}\n\n[server:serv_b]"
    ).replace("threshold = 2\n\n[listener:web]", f"threshold = 2\npriority = {serv_b}\n\n[listener:web]")


class DivergentCopiesTests(PairTestCase):
    """
    The two nodes read different copies of the configuration (one could not
    reload the share): rank is decided from what each node announces on the
    wire, so they still agree which of them stays live (issue 11, failure 5).
    """

    def test_two_live_nodes_with_divergent_copies_settle_to_one_for_good(self):
        """serv_a's copy says 5 vs 1, serv_b's says 2 vs 7: the epochs decide, both agree, nobody flaps."""
        a, b, links = self.live_pair(priorities(5, 1), priorities(2, 7))
        self.exchange(links, 4)
        self.assertEqual((a.machine.role, b.machine.role), (LIVE, BACKUP), "serv_a took the higher epoch")
        self.assertEqual(b.status().to_json()["peer"]["priority"], 5, "the priority serv_a announced, not serv_b's copy")
        for _ in range(10):  # heartbeats go on: nobody flaps
            for reactor in self.reactors:
                reactor.advance(0.5)
            self.exchange(links, 2)
        self.assertEqual((a.machine.role, b.machine.role), (LIVE, BACKUP))
        self.assertNotIn(BACKUP, [t.role for t in a.machine.transitions], "serv_a never left the live role")

    def test_both_nodes_compute_the_same_order_from_the_frames(self):
        """Each node ranks the other from its frames: exactly one of the two is outranked, whatever the copies say."""
        from iwayfailover.core.ballot import Rank, outranks

        a = self.make_node(name="serv_a", backup=True, text=priorities(5, 1))
        b = self.make_node(name="serv_b", backup=True, text=priorities(2, 7))
        from_a, from_b = a.frame(wire.Kind.HEARTBEAT, 1), b.frame(wire.Kind.HEARTBEAT, 1)
        self.assertEqual((from_a.priority, from_b.priority), (5, 7))
        rank_a, rank_b = Rank(from_a.epoch, from_a.priority, from_a.name), Rank(from_b.epoch, from_b.priority, from_b.name)
        self.assertEqual((outranks(rank_b, a.core.rank()), outranks(rank_a, b.core.rank())), (True, False))

    def test_the_startup_check_ranks_a_starting_peer_by_what_it_announces(self):
        """serv_a's copy gives serv_b priority 0, but serv_b (starting too) announces 3: serv_a starts as backup."""
        node = self.make_node(
            name="serv_a", backup=False, answer=peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.STARTING, priority=3),
        )
        self.assertEqual(node.machine.role, BACKUP)
        self.assertIn("outranks this node", node.machine.cause)

    def test_a_starting_node_ranks_a_starting_peer_by_its_announced_priority(self):
        """serv_a's copy gives serv_b priority -5; serv_b, starting too, announces 1 (above serv_a's 0): serv_a waits."""
        node = self.make_node(name="serv_a", backup=False, text=priorities(0, -5),
                              answer=peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.STARTING, priority=1))
        self.assertEqual(node.machine.role, BACKUP)


class StartupCheckTests(NodeTestCase):
    def test_a_node_started_live_asks_its_backup_location_first(self):
        """Before serving, a node started live sends a query to its backup location."""
        self.make_node(name="serv_a", backup=False)
        [(target, frame, timeout)] = self.queries
        self.assertEqual(dialled(self.reactor, target), ("10.9.9.2", 1200))
        self.assertEqual((frame.kind, frame.role), (wire.Kind.QUERY, wire.Role.STARTING))
        self.assertLessEqual(timeout, 2.0)

    def test_peer_live_makes_a_node_started_live_a_backup(self):
        """If the peer answers that it is live, the node starts as backup instead and says why."""
        node = self.make_node(name="serv_a", backup=False, answer=answer(wire.Role.LIVE, epoch=3, name="serv_b"))
        self.assertEqual(node.machine.role, BACKUP)
        self.assertIn("serv_b", node.machine.cause)
        self.assertIn("is live", node.machine.cause)
        self.assertEqual(self.started, [])

    def test_peer_starting_and_outranking_makes_this_node_a_backup(self):
        """Two nodes started live together: the one the other outranks starts as backup."""
        node = self.make_node(name="serv_b", backup=False, answer=answer(wire.Role.STARTING, name="serv_a"))
        self.assertEqual(node.machine.role, BACKUP)

    def test_peer_starting_and_outranked_lets_this_node_start_live(self):
        """The higher-ranked of two nodes started together starts live."""
        node = self.make_node(name="serv_a", backup=False, answer=answer(wire.Role.STARTING, name="serv_b"))
        self.assertEqual(node.machine.role, LIVE)

    def test_peer_backup_lets_the_node_start_live_once_asked_twice(self):
        """A peer that answers as backup twice, a window apart (it may have been deciding to take over), leaves the node live."""
        node = self.make_node(name="serv_a", backup=False, answer=answer(wire.Role.BACKUP, name="serv_b"))
        self.assertEqual(node.machine.role, "starting", "asks again first")
        self.step(0.55)
        self.assertEqual(len(self.queries), 2)
        self.assertEqual(node.machine.role, LIVE)

    def test_no_answer_starts_live(self):
        """A backup location that does not answer: the node starts live and keeps dialling it."""
        node = self.make_node(name="serv_a", backup=False)
        self.assertEqual(node.machine.role, LIVE)
        self.assertIn("did not answer", node.machine.cause)

    def test_a_starting_node_answers_queries_as_starting(self):
        """The heartbeat port answers a query even before the node has a role: role starting."""
        node = self.make_node(name="serv_b", backup=True)
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.QUERY, "serv_a", wire.Role.STARTING, seq=9))
        [reply] = frames_in(transport)
        self.assertEqual((reply.kind, reply.role, reply.seq), (wire.Kind.ANSWER, wire.Role.BACKUP, 9))
        self.assertEqual(node.machine.role, BACKUP, "a query is not a live signal")


class GracefulHandoverTests(NodeTestCase):
    def test_backup_takes_over_at_once_when_the_live_stands_down(self):
        """A standing-down frame from the live node: the backup takes over without waiting for the threshold."""
        node = self.make_node()
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=2))
        transport.clear()
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.STANDING_DOWN, "serv_a", wire.Role.LIVE, epoch=2, seq=5))
        self.assertEqual((node.machine.role, node.machine.epoch), (LIVE, 3))
        self.assertIn("stood down (shutting down)", node.machine.cause)
        [reply] = frames_in(transport)
        self.assertEqual((reply.kind, reply.role, reply.seq), (wire.Kind.ANSWER, wire.Role.LIVE, 5))

    def test_a_closed_connection_after_standing_down_is_not_probed(self):
        """The connection closing after a standing-down message is expected: no crash probe."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.STANDING_DOWN, "serv_a", wire.Role.LIVE, seq=2))
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.probes, [])

    def test_a_live_node_stopping_stops_listeners_before_it_stands_down(self):
        """On SIGTERM the listeners stop first; only then does the backup hear that the node stands down."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        transport.clear()
        seen = []
        heartbeat = node.sender._protocol
        original = heartbeat.send
        heartbeat.send = lambda frame: (seen.append((frame.kind, node.listeners.status()["web"]["state"])), original(frame))
        node.stopService()
        self.assertIn((wire.Kind.STANDING_DOWN, STOPPED), seen)
        [frame] = frames_in(transport)
        self.assertEqual((frame.kind, frame.flags), (wire.Kind.STANDING_DOWN, 0))


class CrashFastPathTests(NodeTestCase):
    def heard_then_closed(self, node):
        protocol, _ = self.inbound(node, host="10.9.9.1")
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1))
        protocol.connectionLost(Failure(ConnectionDone()))
        return protocol

    def test_refused_probe_after_a_closed_connection_takes_over_at_once(self):
        """The live's connection closes and its heartbeat port refuses: its process is dead; take over now."""
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.REFUSED, "connection refused")
        self.heard_then_closed(node)
        self.assertEqual(self.probes, [("10.9.9.1", 1200, 0.5)])
        self.assertEqual((node.machine.role, node.machine.epoch), (LIVE, 3))
        self.assertIn("serv_a is gone", node.machine.cause)
        self.assertIn("refused the connection", node.machine.cause)

    def test_probe_closed_without_an_answer_takes_over_at_once(self):
        """A dying process may still accept, then drop the probe unanswered: that is death too."""
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.CLOSED, "connection closed without an answer")
        self.heard_then_closed(node)
        self.assertEqual(node.machine.role, LIVE)
        self.assertIn("closed without an answer", node.machine.cause)

    def test_answering_live_node_after_a_closed_connection_changes_nothing(self):
        """The live node answers the probe (it only redialled): no takeover, no flapping."""
        node = self.make_node()
        self.crash_probe = probe.Reply(answer(wire.Role.LIVE), probe.ANSWERED, "serv_a answered as live")
        self.heard_then_closed(node)
        self.assertEqual(node.machine.role, BACKUP)

    def test_the_probe_goes_to_this_nodes_backup_location(self):
        """The peer's heartbeat port is asked where this node would heartbeat to it: its Location of Backup."""
        self.text = CONFIG.replace(
            "heartbeat_port = 1200\nthreshold = 2\n\n[server:serv_b]",
            "heartbeat_port = tcp:1200:interface=10.9.8.1\nthreshold = 2\n\n[server:serv_b]",
        )
        node = self.make_node()
        self.heard_then_closed(node)  # it dialled from 10.9.9.1, and serv_b's Location of Backup says 10.9.9.1
        self.assertEqual(self.probes, [("10.9.9.1", 1200, 0.5)])

    def test_a_tls_heartbeat_port_is_probed_over_this_nodes_tls_location(self):
        """A TLS port is asked through this node's own tls: Location of Backup to it, and a refusal is death."""
        pem = self_signed_pem(temporary_directory(self))
        self.text = CONFIG.replace(
            "heartbeat_port = 1200\nthreshold = 2\n\n[server:serv_b]\nbackup_location = 10.9.9.1:1200",
            f"heartbeat_port = ssl:1200:privateKey={pem}:certKey={pem}\nthreshold = 2\n\n"
            f"[server:serv_b]\nbackup_location = tls:10.9.9.1:1200:trustRoots={pem}",
        )
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.REFUSED, "connection refused")
        self.heard_then_closed(node)
        self.assertEqual(self.probes, [("tls", "10.9.9.1", 1200, 0.5)])
        self.assertEqual(node.machine.role, LIVE)
        self.assertIn("serv_a is gone", node.machine.cause)

    def test_unanswered_probe_leaves_the_threshold_rule_in_charge(self):
        """A timeout or unreachable host is not proof of death: the backup waits for the threshold."""
        node = self.make_node()
        self.heard_then_closed(node)
        self.assertEqual(node.machine.role, BACKUP)
        self.step(1.9)
        self.assertEqual(node.machine.role, BACKUP)
        self.step(0.15)
        self.assertEqual(node.machine.role, LIVE)

    def test_a_heartbeat_before_the_probe_answers_prevents_the_takeover(self):
        """If the live node reconnects and heartbeats while the probe is out, a late refusal changes nothing."""
        from twisted.internet import defer

        node = self.make_node()
        pending = defer.Deferred()
        node._query = lambda reactor, target, frame, timeout, refusals, keys: pending
        self.heard_then_closed(node)
        again, _ = self.inbound(node, host="10.9.9.1")
        again.dataReceived(frame_bytes(again, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1, seq=2))
        pending.callback(probe.Reply(None, probe.REFUSED, "connection refused"))
        self.assertEqual(node.machine.role, BACKUP)


class SwitchoverTests(NodeTestCase):
    def live_with_backup(self):
        node = self.make_node(name="serv_a", backup=False)
        return (node, *self.answering_backup(node))

    def test_switchover_stops_listeners_then_tells_the_backup(self):
        """A switchover stops every listener (WAITING) and then sends a standing-down frame flagged as switchover."""
        node, protocol, transport = self.live_with_backup()
        d = node.switchover()
        self.assertNoResult(d)
        self.assertEqual(node.machine.role, HANDING_OVER)
        self.assertEqual(node.listeners.status()["web"]["state"], WAITING)
        [frame] = frames_in(transport)
        self.assertEqual((frame.kind, frame.flags, frame.role), (wire.Kind.STANDING_DOWN, wire.FLAG_SWITCHOVER, wire.Role.BACKUP))
        node.stopService()
        self.failureResultOf(d, SwitchoverRefused)  # a shutdown ends a switchover under way

    def test_confirmed_switchover_reports_the_gap_and_makes_the_node_backup(self):
        """The backup's answer as live ends the switchover: this node is backup and the gap is reported."""
        node, protocol, _ = self.live_with_backup()
        d = node.switchover()
        self.reactor.advance(0.012)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.LIVE, epoch=3, seq=0))
        result = self.successResultOf(d)
        self.assertEqual((result["from"], result["to"], result["epoch"]), ("serv_a", "serv_b", 3))
        self.assertAlmostEqual(result["gap"], 0.012, places=6)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertIn("handed over to serv_b", node.machine.cause)

    def test_switchover_on_a_backup_is_refused_naming_the_live_node(self):
        """Only the live node can hand over; a backup says which node to ask."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        failure = self.failureResultOf(node.switchover(), SwitchoverRefused)
        self.assertIn("ask the live node serv_a", failure.getErrorMessage())

    def test_switchover_to_a_node_other_than_the_peer_is_refused(self):
        """A pair's only choice is its peer: --to another name is refused, naming the peer; the listeners stay up."""
        node = self.make_node(name="serv_a", backup=False)
        failure = self.failureResultOf(node.switchover(to="serv_c"), SwitchoverRefused)
        self.assertIn("its peer serv_b only, not serv_c", failure.getErrorMessage())
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(node.listeners.status()["web"]["state"], ACTIVE)

    def test_switchover_without_an_answering_backup_is_refused(self):
        """With no backup answering, a switchover would leave nobody serving: refused, listeners untouched."""
        node = self.make_node(name="serv_a", backup=False)
        self.failureResultOf(node.switchover(), SwitchoverRefused)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(node.listeners.status()["web"]["state"], ACTIVE)

    def test_unconfirmed_switchover_asks_the_backup_and_serves_again_when_it_is_still_backup(self):
        """No confirmation in time: the node asks; the backup answers it is still backup, so the node serves again (new epoch)."""
        node, protocol, _ = self.live_with_backup()
        epoch = node.machine.epoch
        d = node.switchover()
        self.crash_probe = probe.Reply(answer(wire.Role.BACKUP, epoch=1, name="serv_b"), probe.ANSWERED, "answered")
        self.step(5.1)
        self.failureResultOf(d, SwitchoverRefused)
        self.assertEqual(node.machine.role, LIVE)
        self.assertGreater(node.machine.epoch, epoch)
        self.assertEqual(node.listeners.status()["web"]["state"], ACTIVE)

    def test_unconfirmed_switchover_without_an_answer_leaves_the_node_backup(self):
        """No confirmation and no answer to the check: the backup may be live, so this node waits as backup."""
        node, protocol, _ = self.live_with_backup()
        d = node.switchover()
        self.step(5.5)
        self.failureResultOf(d, SwitchoverRefused)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual(node.listeners.status()["web"]["state"], WAITING)


class HandoverDuringSlowStopTests(NodeTestCase):
    def make_slow_node(self):
        from test_node import FakeListenerService

        self.slow = []

        class SlowStop(FakeListenerService):
            def stopService(inner):
                super().stopService()
                d = defer.Deferred()
                self.slow.append(d)
                return d

        node = self.make_node(name="serv_a", backup=False, build=lambda spec: SlowStop(spec, self.started))
        return (node, *self.answering_backup(node))

    def test_a_shutdown_during_a_switchover_stands_down_only_after_the_listeners_let_go(self):
        """Stopping the node while a switchover's listener stops are pending: the backup is told only once they are done."""
        node, protocol, transport = self.make_slow_node()
        d = node.switchover()
        stopped = node.stopService()
        self.assertNotIn(wire.Kind.STANDING_DOWN, [f.kind for f in frames_in(transport)])
        self.assertNoResult(stopped)
        for pending in list(self.slow):
            pending.callback(None)
        self.assertIn(wire.Kind.STANDING_DOWN, [f.kind for f in frames_in(transport)])
        self.failureResultOf(d, SwitchoverRefused)


class FailbackTests(NodeTestCase):
    text = CONFIG.replace(
        "heartbeat_interval = 0.5", "heartbeat_interval = 0.5\nfailback = true\npreferred = serv_a\nfailback_delay = 10"
    )

    def backup_answers(self, protocol, seconds, seq=1):
        return self.every_half_second(protocol, int(seconds / 0.5), wire.Kind.ANSWER, "serv_a", wire.Role.BACKUP, seq)

    def live_serv_b(self):
        node = self.make_node(name="serv_b", backup=False)
        _, protocol, transport = self.outbound(node)
        return node, protocol, transport

    def test_no_failback_before_the_delay(self):
        """The preferred server must be a healthy backup for failback_delay before the role goes back."""
        node, protocol, _ = self.live_serv_b()
        self.backup_answers(protocol, 9.5)
        self.assertEqual(node.machine.role, LIVE)

    def test_failback_hands_the_role_to_the_preferred_server(self):
        """After failback_delay of healthy answers from the preferred server, a planned switchover starts."""
        node, protocol, transport = self.live_serv_b()
        self.backup_answers(protocol, 10.5)
        self.assertEqual(node.machine.role, HANDING_OVER)
        self.assertIn(wire.Kind.STANDING_DOWN, [f.kind for f in frames_in(transport)])

    def test_a_gap_in_the_answers_restarts_the_delay(self):
        """A backup that stopped answering for a while must be healthy for the whole delay again."""
        node, protocol, _ = self.live_serv_b()
        seq = self.backup_answers(protocol, 8)
        self.reactor.advance(2.0)  # no answers: not healthy
        self.backup_answers(protocol, 8, seq)
        self.assertEqual(node.machine.role, LIVE)

    def test_no_failback_by_default(self):
        """Without failback = true, the new live stays live."""
        self.text = CONFIG
        node, protocol, _ = self.live_serv_b()
        self.backup_answers(protocol, 30)
        self.assertEqual(node.machine.role, LIVE)


class WitnessTests(NodeTestCase):
    text = WITNESS_CONFIG

    def test_backup_takes_over_only_after_reaching_a_witness(self):
        """Silence past the threshold and a reachable witness: take over, naming the witness."""
        node = self.make_node()
        self.witness = ("10.9.9.9", 22)
        self.step(2.05)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(self.witness_checks[0][0], (("10.9.9.9", 22),))
        self.assertIn("witness 10.9.9.9:22 reachable", node.machine.cause)

    def test_isolated_backup_stays_backup(self):
        """Silence and no witness reachable: this node is the isolated one and stays backup, checking again."""
        node = self.make_node()
        self.witness = None
        self.step(6.0)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertGreater(len(self.witness_checks), 3)

    def test_isolated_backup_takes_over_once_a_witness_answers(self):
        """When a witness becomes reachable and the live node is still silent, the backup takes over."""
        node = self.make_node()
        self.step(4.0)
        self.witness = ("10.9.9.9", 22)
        self.step(1.0)
        self.assertEqual(node.machine.role, LIVE)

    def test_cut_off_live_node_fences_itself_before_the_backups_threshold(self):
        """A live node with no answer from its backup and no witness yields before the backup would take over."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        self.outbound(node)
        self.witness = None
        self.step(1.95)  # the backup's threshold is 2 s
        self.assertEqual(node.machine.role, BACKUP)
        self.assertIn("self-fenced", node.machine.cause)
        self.assertEqual(node.listeners.status()["web"]["state"], WAITING)

    def test_a_self_fence_bounds_the_stop_of_process_channels_by_the_time_left(self):
        """Fenced at 1 s of silence with the backup's threshold 2 s: channels get SIGKILL after half the 1 s left."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        stops = record_stops(self, node)
        self.outbound(node)
        self.witness = None
        self.step(1.95)
        self.assertIn("self-fenced", node.machine.cause)
        [(final, kill_after)] = stops
        self.assertEqual(final, WAITING)
        self.assertLess(abs(kill_after - 0.5), 0.03, "half the 1 s left (fenced on the lease tick at 1 s or just after)")

    def test_live_node_that_reaches_a_witness_stays_live(self):
        """Backup silent but a witness reachable: the backup is the one that is gone; stay live."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        self.witness = ("10.9.9.9", 22)
        self.step(10.0)
        self.assertEqual(node.machine.role, LIVE)

    def test_self_fence_false_keeps_a_cut_off_node_live(self):
        """self_fence = false turns self-fencing off."""
        self.text = WITNESS_CONFIG.replace("witness = 10.9.9.9:22", "witness = 10.9.9.9:22\nself_fence = false")
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        self.step(10.0)
        self.assertEqual(node.machine.role, LIVE)

    def test_a_lower_backup_threshold_from_the_file_fences_by_it_at_once(self):
        """After a reload lowers the backup's threshold (0.8 s, not yet announced), a cut-off live node fences by it."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        node.apply_config(keyed(WITNESS_CONFIG.replace("threshold = 2", "threshold = 0.8"), "/share/iway.ini"))
        self.witness = None
        self.step(0.6)
        self.assertEqual(node.machine.role, BACKUP, "fenced by 0.8 s, not by the old 2 s")
        self.assertIn("self-fenced", node.machine.cause)

    def test_a_live_node_fences_by_the_threshold_its_backup_announced(self):
        """serv_b announces a 1 s threshold though serv_a's copy says 2 s: cut off, serv_a fences within 0.5 s + a tick, not 1 s."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, threshold=1000))
        self.witness = None
        self.assertEqual(node.peer_threshold, 1.0)
        self.step(0.45)
        self.assertEqual(node.machine.role, LIVE, "not before half the announced threshold")
        self.step(0.2)
        self.assertEqual(node.machine.role, BACKUP, "the copy's 2 s would have kept it live until 1 s")
        self.assertIn("self-fenced", node.machine.cause)

    def test_a_lower_threshold_announced_by_the_backup_fences_by_it(self):
        """The backup announces 0.8 s (the copy says 2 s): cut off, the live node has fenced well before 0.8 s."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, threshold=800))
        self.witness = None
        self.step(0.7)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertIn("self-fenced", node.machine.cause)

    def test_the_copy_of_the_backups_threshold_serves_only_until_the_backup_is_heard(self):
        """Before any answer the copy's 2 s counts; after one, the backup's announced 3 s, even once the link is gone."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        self.assertEqual(node.peer_threshold, 2.0)
        _, protocol, _ = self.outbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, threshold=3000))
        self.assertEqual(node.peer_threshold, 3.0)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(node.peer_threshold, 3.0)

    def test_answering_backup_keeps_the_live_node_live_without_asking_witnesses(self):
        """While the backup answers, the live node does not even ask the witnesses."""
        self.witness = ("10.9.9.9", 22)  # started live through the gate
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        checks = len(self.witness_checks)  # the gate's, at the start
        self.every_half_second(protocol, 19, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=1)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(len(self.witness_checks), checks)


class StarvationTests(NodeTestCase):
    """The heartbeat port cannot be starved by connections that say nothing useful."""

    def test_a_silent_connection_is_dropped_after_the_deadline(self):
        """A connection that sends no valid frame within the deadline is dropped."""
        node = self.make_node()
        _, transport = self.inbound(node, host="10.9.9.66")
        self.reactor.advance(node.gate.deadline - 0.01)
        self.assertFalse(transport.disconnecting)
        self.reactor.advance(0.02)
        self.assertTrue(transport.disconnecting)

    def test_a_real_peer_is_not_subject_to_the_deadline(self):
        """Once a configured server's valid frame arrived, the connection stays however quiet it gets later."""
        node = self.make_node()
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        self.reactor.advance(node.gate.deadline * 3)
        self.assertFalse(transport.disconnecting)

    def idle_from_many_hosts(self, node, count):
        """C{count} connections that said hello and nothing more, at most per_host from each address."""
        per_host = node.gate.per_host
        return [self.inbound(node, host=f"10.66.{n // per_host}.{n % per_host + 1}")[1] for n in range(count)]

    def test_too_many_unproven_connections_drop_the_oldest_so_a_peer_gets_in(self):
        """Past the cap, each new connection drops the oldest unproven one; the newest (a real peer) can speak."""
        node = self.make_node()
        idle = self.idle_from_many_hosts(node, node.gate.cap)
        protocol, transport = self.inbound(node)
        self.assertTrue(idle[0].disconnecting)
        self.assertFalse(any(t.disconnecting for t in idle[1:]))
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        self.assertFalse(transport.disconnecting)
        self.assertEqual(len(node.gate), node.gate.cap - 1)

    def test_one_address_gets_at_most_per_host_unproven_connections(self):
        """From one (unconfigured) address, connections past per_host are refused at once; the first ones stay."""
        node = self.make_node()
        first = [self.inbound(node, host="10.9.9.66")[1] for _ in range(node.gate.per_host)]
        extra = node.heartbeat_factory.buildProtocol(IPv4Address("TCP", "10.9.9.66", 40000))
        extra_transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.66", 40000))
        extra.makeConnection(extra_transport)
        self.assertTrue(extra_transport.disconnecting)
        self.assertEqual(extra_transport.value(), b"", "no hello for a refused connection")
        self.assertFalse(any(t.disconnecting for t in first))
        self.assertEqual(node.heartbeat_factory.rejected, 1)

    def test_a_peers_connection_that_has_not_spoken_yet_is_never_pushed_out(self):
        """The live peer said hello; before its first frame, a flood from many addresses arrives: it stays."""
        node = self.make_node()
        protocol, transport = self.inbound(node)  # 10.9.9.1: serv_b's backup_location, a configured server
        flood = self.idle_from_many_hosts(node, node.gate.cap * 2)
        self.assertFalse(transport.disconnecting)
        self.assertEqual(sum(t.disconnecting for t in flood), node.gate.cap + 1)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        self.assertEqual(node.sessions.received, 1)

    def test_a_newer_connection_from_the_live_peer_replaces_the_old_one_quietly(self):
        """One session per peer: the old connection is dropped and its loss is not taken for a crash."""
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.REFUSED, "connection refused")
        old, old_transport = self.inbound(node)
        old.dataReceived(frame_bytes(old, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=1))
        new, _ = self.inbound(node)
        new.dataReceived(frame_bytes(new, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=2))
        self.assertTrue(old_transport.disconnecting)
        old.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.probes, [])
        self.assertEqual(node.machine.role, BACKUP)


class TrustTests(NodeTestCase):
    """Only frames signed with the pair's key, from a server of the configuration, count."""

    def forge(self, node, ring=auth.KeyRing(keys=(b"f" * 40,)), name="serv_a", epoch=1):
        """One forger's connection: a hello, then a live heartbeat signed with C{ring}."""
        protocol, transport = self.inbound(node, host="10.9.9.1", ring=ring)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, name, wire.Role.LIVE, epoch=epoch))
        return transport

    def test_forged_heartbeats_do_not_hold_off_a_takeover(self):
        """Live heard once, then only forged heartbeats every 0.25 s: the backup takes over at its threshold."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1))
        forged = []
        for _ in range(7):  # 1.75 s of forgeries, inside the 2 s threshold
            self.reactor.advance(0.25)
            forged.append(self.forge(node))
        role_before_threshold = node.machine.role
        for _ in range(2):
            self.reactor.advance(0.25)
            forged.append(self.forge(node))
        self.assertEqual(role_before_threshold, BACKUP)
        self.assertEqual(node.machine.role, LIVE)
        self.assertTrue(all(t.disconnected for t in forged))
        self.assertEqual(node.sessions.received, 1)
        self.assertEqual(node.heartbeat_factory.rejected, 9)

    def test_a_forged_higher_epoch_changes_nothing(self):
        """A forged frame claiming a huge epoch neither moves this node's epoch nor its role."""
        node = self.make_node(name="serv_a", backup=False)
        self.answering_backup(node)
        epoch = node.machine.epoch
        self.forge(node, name="serv_b", epoch=10**6)
        self.assertEqual((node.machine.role, node.machine.epoch), (LIVE, epoch))

    def test_replayed_heartbeats_on_a_new_connection_do_not_feed_the_watchdog(self):
        """Bytes recorded from a real connection, played on new ones, are refused; the threshold still runs."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        recorded = frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1)
        protocol.dataReceived(recorded)
        replays = []
        for _ in range(9):
            self.reactor.advance(0.25)
            again, transport = self.inbound(node)
            again.dataReceived(recorded)
            replays.append(transport.disconnected)
        self.assertEqual(replays, [True] * 9)
        self.assertEqual(node.machine.role, LIVE)

    def test_a_signed_heartbeat_from_a_name_not_in_the_config_is_refused(self):
        """Even with the key, a sender that is no server of the configuration feeds nothing."""
        node = self.make_node()
        transport = self.forge(node, ring=RING, name="serv_x")
        self.assertTrue(transport.disconnected)
        self.assertEqual(node.sessions.received, 0)
        self.assertIsNone(node.peer.last_heard)

    def test_a_new_key_file_applies_to_new_connections(self):
        """After a reload with a new key, connections signed with it are heard and old-key ones refused."""
        node = self.make_node()
        new = auth.KeyRing(keys=(b"n" * 40,), source="/share/failover.key")
        node.apply_config(keyed(CONFIG, ring=new))
        self.assertEqual(node.status().to_json()["auth"]["key_ids"], list(new.key_ids))
        old_key = self.forge(node, ring=RING)
        new_key = self.forge(node, ring=new)
        self.assertTrue(old_key.disconnected)
        self.assertFalse(new_key.disconnected)
        self.assertEqual(node.sessions.received, 1)

    def test_a_withdrawn_key_opens_nothing_on_a_connection_that_sent_no_heartbeat(self):
        """A connection made with a key later withdrawn, whatever it sent before (a query, nothing), is closed and feeds nothing."""
        node = self.make_node()
        leaked = auth.KeyRing(keys=(b"l" * 40,), source="/share/failover.key")
        both = auth.KeyRing(keys=RING.keys + leaked.keys, source="/share/failover.key")
        node.apply_config(keyed(CONFIG, ring=both))
        queried, queried_transport = self.inbound(node, host="10.9.9.1", ring=leaked)
        queried.dataReceived(frame_bytes(queried, wire.Kind.QUERY, "serv_a", wire.Role.LIVE, epoch=1))
        silent, silent_transport = self.inbound(node, host="10.9.9.1", ring=leaked)
        node.apply_config(keyed(CONFIG, ring=RING))  # the leaked key withdrawn
        self.assertTrue(queried_transport.disconnected and silent_transport.disconnected)
        for protocol in (queried, silent):
            protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=1, seq=2))
        self.assertEqual(node.sessions.received, 0)
        self.assertEqual(node.machine.role, BACKUP)

    def test_a_reflected_hello_is_refused(self):
        """A hello that repeats the nonce of one of this node's own connections is a reflection: refused."""
        node = self.make_node()
        own = node.heartbeat_factory.buildProtocol(IPv4Address("TCP", "10.9.9.1", 40000))
        own.makeConnection(StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.1", 40000)))
        [own_hello] = strings(own.transport.value())
        reflected = node.heartbeat_factory.buildProtocol(IPv4Address("TCP", "10.9.9.1", 40001))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.1", 40001))
        reflected.makeConnection(transport)
        reflected.dataReceived(prefixed(own_hello))
        self.assertTrue(transport.disconnected)
        self.assertIn("reflected", reflected.refusal)

    def test_a_session_made_with_a_withdrawn_key_is_closed(self):
        """A key taken out of the file (a leaked one, say) keeps no session alive; the node stays backup."""
        node = self.make_node()
        before = self.forge(node, ring=RING)
        self.assertFalse(before.disconnected)
        both = auth.KeyRing(keys=(b"n" * 40,) + RING.keys, source="/share/failover.key")
        node.apply_config(keyed(CONFIG, ring=both))
        self.assertFalse(before.disconnected, "adding a key ends no session")
        node.apply_config(keyed(CONFIG, ring=auth.KeyRing(keys=(b"n" * 40,), source="/share/failover.key")))
        self.assertTrue(before.disconnected)
        self.assertEqual(node.machine.role, BACKUP)
