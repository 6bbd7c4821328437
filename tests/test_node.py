"""
A whole node on a MemoryReactorClock: heartbeats in and out through
in-memory transports, takeover, configuration changes and status.
"""

import json
import os
import struct

from twisted.application.service import Service
from twisted.internet.address import IPv4Address
from twisted.internet import defer
from twisted.internet.error import ConnectionDone
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.trial import unittest

from harness import temporary_directory
from iwayfailover import probe, tls, wire
from iwayfailover.config import ConfigError, parse_config
from iwayfailover.listeners import ACTIVE, FAILED, STOPPED, WAITING
from iwayfailover.links import CONNECT_TIMEOUT_FLOOR, UNANSWERED_LIMIT
from iwayfailover.node import FailoverNode
from iwayfailover.core.events import BACKUP, LIVE, STOPPED as ROLE_STOPPED
from iwayfailover.state import EpochStore
from wirepeer import RING, frame_bytes, frames_in, greet, keyed, peer_frame

CONFIG = """
[failover]
heartbeat_interval = 0.5

[server:serv_a]
backup_location = 10.9.9.2:1200
heartbeat_port = 1200
threshold = 2

[server:serv_b]
backup_location = 10.9.9.1:1200
heartbeat_port = 1200
threshold = 2

[listener:web]
plugin = fake --port 8080

[listener:broken]
plugin = fake --fail
servers = serv_a, serv_b

[listener:elsewhere]
plugin = fake
servers = serv_a
"""


class FakeListenerService(Service):
    """A listener's service: fails to start when its plugin line says --fail."""

    def __init__(self, spec, started):
        self.spec = spec
        self.started = started

    def startService(self):
        if "--fail" in self.spec.args:
            raise OSError("port 8443 is in use")
        super().startService()
        self.started.append(self.spec.name)


def dialled(reactor, endpoint):
    """
    Where C{endpoint} connects: the (host, port) it asks C{reactor} to dial
    when connected. The attempt is taken back off the reactor's records, so
    a test that reads the node's own connections there does not see it.
    """
    endpoint.connect(Factory.forProtocol(Protocol))
    host, port, _, _, _ = reactor.tcpClients.pop()
    reactor.connectors.pop()
    return host, port


class DatagramSocket:
    """
    A stand-in for the live node's pulse socket (C{socket.socket}): records
    what is sent, so that unit tests send nothing on the network. With it
    the node's pulses go from the in-memory reactor's timers
    (L{iwayfailover.pulsing.Pulser}).
    """

    def __init__(self, family, kind):
        self.family = family
        self.sent = []
        self.bound = None
        self.closed = False

    def bind(self, address):
        self.bound = address

    def sendto(self, data, address):
        self.sent.append((data, address))

    def setblocking(self, flag):
        pass

    def recvfrom(self, size):
        raise BlockingIOError  # the tests hand answers to the pulse thread's work directly

    def close(self):
        self.closed = True


class NodeTestCase(unittest.TestCase):
    text = CONFIG
    reactor_class = MemoryReactorClock
    ring = RING

    def make_node(self, name="serv_b", backup=True, text=None, answer=None, build=None):
        """
        A started node. Its probes are stand-ins: the startup check gets
        C{answer} (None: nobody answered), a crash probe gets
        C{self.crash_probe}, a witness check C{self.witness}.
        """
        self.reactor = self.reactor_class()
        self.started = []
        self.store = EpochStore(os.path.join(temporary_directory(self), "state"))
        self.store.prepare()
        self.queries, self.probes, self.witness_checks = [], [], []
        self.crash_probe = probe.Reply(None, probe.UNREACHABLE, "no answer within 0.5s")
        self.witness = getattr(self, "witness", None)  # a test may set it before the node starts

        def query(reactor, target, frame, timeout, refusals, keys):
            if frame.role == wire.Role.STARTING:  # the startup check
                self.queries.append((target, frame, timeout))
                if answer is None:
                    return defer.succeed(probe.Reply(None, probe.REFUSED, "connection refused"))
                return defer.succeed(probe.Reply(answer, probe.ANSWERED, "answered"))
            if isinstance(target, tls.FreshClientEndpoint):  # a TLS probe
                _, (host, port), _ = tls.split(target.description)
                self.probes.append(("tls", host, int(port), target.timeout))
            else:
                self.probes.append((*dialled(self.reactor, target), timeout))  # a crash probe
            return defer.succeed(self.crash_probe)

        def reach_any(reactor, addresses, timeout):
            self.witness_checks.append((tuple(addresses), timeout))
            return defer.succeed(self.witness)

        config = keyed(text or self.text, "/share/iway.ini", ring=self.ring)
        node = FailoverNode(
            config, name, backup, self.store, self.reactor,
            build_listener=build or (lambda spec: FakeListenerService(spec, self.started)),
            now=self.reactor.seconds, wall=lambda: 1764064800.0,
            reach_any=reach_any, query=query, pulse_sockets=DatagramSocket,
        )
        node.startService()
        # In-memory transports never report a close, so the cleanup does not wait for one.
        self.addCleanup(lambda: node.running and node.stopService() and None)
        return node

    def inbound(self, node, host="10.9.9.1", ring=RING):
        """A connection to the node's heartbeat port, as a live peer would open."""
        protocol = node.heartbeat_factory.buildProtocol(IPv4Address("TCP", host, 40000))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, 40000))
        protocol.makeConnection(transport)
        greet(protocol, transport, far_is_client=True, ring=ring)
        return protocol, transport

    def outbound(self, node):
        """Complete the live node's pending connection to its backup location."""
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        greet(protocol, transport, far_is_client=False)
        return (host, port), protocol, transport

    def answering_backup(self, node):
        """Connect a live node to its backup location, which answers once; the transport is then cleared."""
        _, protocol, transport = self.outbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=1))
        transport.clear()
        return protocol, transport

    def every_half_second(self, protocol, count, kind, name, role, seq=0):
        """Deliver C{count} frames on C{protocol}, one every 0.5 s of clock time; returns the last seq."""
        for _ in range(count):
            self.reactor.advance(0.5)
            seq += 1
            protocol.dataReceived(frame_bytes(protocol, kind, name, role, seq=seq))
        return seq

    def step(self, seconds, step=0.05):
        for _ in range(int(round(seconds / step))):
            self.reactor.advance(step)


class BackupNodeTests(NodeTestCase):
    def test_backup_holds_its_listeners_waiting(self):
        """A backup's listeners are WAITING and none of them is started."""
        node = self.make_node()
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual({n: s["state"] for n, s in node.listeners.status().items()}, {"web": WAITING, "broken": WAITING})
        self.assertEqual(self.started, [])

    def test_backup_only_gets_the_listeners_meant_for_it(self):
        """A listener whose servers list leaves this node out is not this node's."""
        node = self.make_node()
        self.assertNotIn("elsewhere", node.listeners.listeners)

    def test_heartbeats_from_the_live_peer_keep_the_backup_waiting(self):
        """While heartbeats arrive more often than the threshold, the backup stays backup."""
        node = self.make_node()
        protocol, transport = self.inbound(node)
        self.every_half_second(protocol, 20, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual(node.sessions.received, 20)

    def test_backup_reports_the_largest_gap_between_live_heartbeats(self):
        """Status shows the longest pause between two heartbeats a backup heard (how close it came to a takeover)."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        for seq, pause in enumerate((0.5, 0.5, 1.25, 0.5), start=1):
            self.reactor.advance(pause)
            protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=seq))
        self.assertEqual(node.status().to_json()["heartbeats"]["max_gap"], 1.25)

    def test_backup_answers_every_heartbeat_with_its_role_and_epoch(self):
        """Each heartbeat gets an answer echoing its sequence number, so the live node knows the backup is there."""
        node = self.make_node()
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=7))
        [answer] = frames_in(transport)
        self.assertEqual(
            (answer.kind, answer.name, answer.role, answer.epoch, answer.seq),
            (wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, 0, 7),
        )

    def test_backup_takes_over_after_threshold_of_silence(self):
        """Silence for the threshold: listeners start (one failure does not stop the other), epoch rises and is kept, heartbeats go to the backup location."""
        node = self.make_node()
        self.step(1.95)
        self.assertEqual(node.machine.role, BACKUP)
        self.step(0.1)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(node.machine.epoch, 1)
        self.assertEqual(self.store.load(), 1)
        states = node.listeners.status()
        self.assertEqual(states["web"]["state"], ACTIVE)
        self.assertEqual(states["broken"]["state"], FAILED)
        self.assertIn("port 8443 is in use", states["broken"]["reason"])
        self.assertEqual(self.started, ["web"])
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("10.9.9.1", 1200))

    def test_takeover_cause_names_the_peer_and_the_silence(self):
        """The cause of a takeover says whose signal was lost and for how long."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=3))
        self.step(2.05)
        self.assertEqual(node.machine.role, LIVE)
        self.assertIn("serv_a", node.machine.cause)
        self.assertIn("threshold 2s", node.machine.cause)
        self.assertEqual(node.machine.epoch, 5, "the new live goes above the epoch it heard, in its own slot")

    def test_frames_from_unknown_servers_do_not_feed_the_watchdog(self):
        """A heartbeat signed with a name not in the configuration is refused and keeps nobody backup."""
        node = self.make_node()
        self.step(1.5)
        protocol, transport = self.inbound(node, host="10.9.9.66")
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "intruder", wire.Role.LIVE))
        self.assertTrue(transport.disconnecting)
        self.step(0.6)
        self.assertEqual(node.machine.role, LIVE)

    def test_frames_carrying_the_nodes_own_name_are_refused(self):
        """A node hearing its own name (a backup_location pointing back at itself) refuses it."""
        node = self.make_node()
        self.step(1.5)
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_b", wire.Role.LIVE))
        self.assertTrue(transport.disconnecting)
        self.assertEqual(node.sessions.received, 0)

    def test_garbage_on_the_heartbeat_port_drops_the_connection_and_feeds_nothing(self):
        """Bytes that are not a frame drop the connection; the watchdog keeps counting."""
        node = self.make_node()
        self.step(1.5)
        protocol, transport = self.inbound(node)
        protocol.dataReceived(b"\x00\x00\x00\x05hello")
        self.assertTrue(transport.disconnecting)
        self.step(0.6)
        self.assertEqual(node.machine.role, LIVE)

    def test_heartbeat_from_a_backup_role_does_not_feed_the_watchdog(self):
        """Only a live server's heartbeats prove a live server is there."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        self.every_half_second(protocol, 5, wire.Kind.HEARTBEAT, "serv_a", wire.Role.BACKUP)
        self.step(1.5)  # the clock's 0.5 s jumps read as stalls of this node, each giving the live node a grace
        self.assertEqual(node.machine.role, LIVE)

    def test_lost_heartbeat_connection_is_shown_in_status(self):
        """When the live peer's connection closes, status shows it not connected."""
        node = self.make_node()
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        self.assertTrue(node.status().to_json()["peer"]["connected"])
        protocol.connectionLost(Failure(ConnectionDone("gone")))
        self.assertFalse(node.status().to_json()["peer"]["connected"])
        self.assertTrue(node.peer.lost)

    def full_state_dir(self):
        self.patch(self.store, "save", lambda epoch: (_ for _ in ()).throw(OSError(28, "No space left on device")))

    def test_no_takeover_under_an_epoch_that_could_not_be_saved(self):
        """A state dir that cannot be written holds the takeover back: an epoch not on disk could be used again."""
        node = self.make_node()
        self.full_state_dir()
        self.step(2.05)
        self.assertEqual((node.machine.role, node.machine.epoch), (BACKUP, 0))
        self.assertEqual(self.started, [])

    def test_unsaved_epoch_lets_the_takeover_go_on(self):
        """With unsaved_epoch = true the operator accepts an epoch kept in memory only: the takeover goes on."""
        text = CONFIG.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0.5\nunsaved_epoch = true")
        node = self.make_node(text=text)
        self.full_state_dir()
        self.step(2.05)
        self.assertEqual((node.machine.role, node.machine.epoch), (LIVE, 1))


class LiveNodeTests(NodeTestCase):
    def test_live_node_serves_and_dials_its_backup_location(self):
        """A node started live starts its listeners and connects to its backup location."""
        node = self.make_node(name="serv_a", backup=False)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(self.started, ["web", "elsewhere"])
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("10.9.9.2", 1200))

    def test_live_node_heartbeats_every_interval_with_rising_sequence_numbers(self):
        """On connection one heartbeat goes at once, then one every heartbeat_interval."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        self.reactor.advance(0.5)
        self.reactor.advance(0.5)
        frames = frames_in(transport)
        self.assertEqual([(f.kind, f.name, f.role, f.seq) for f in frames], [
            (wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, 1),
            (wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, 2),
            (wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, 3),
        ])

    def test_answers_show_the_backup_in_status(self):
        """The backup's answers tell the live node who its backup is and how recently it answered."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        self.reactor.advance(0.2)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=1))
        self.reactor.advance(0.3)
        peer = node.status().to_json()["peer"]
        self.assertEqual((peer["name"], peer["connected"], peer["role"]), ("serv_b", True, "backup"))
        self.assertAlmostEqual(peer["last_heartbeat_age"], 0.3, places=3)

    def test_unanswered_heartbeats_make_the_live_node_dial_again(self):
        """A backup that stops answering (hung) gets its connection dropped and redialled."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        self.step(0.5 * UNANSWERED_LIMIT, step=0.5)
        self.assertTrue(transport.disconnecting)

    def test_answered_heartbeats_keep_the_connection(self):
        """A backup that answers keeps its connection however long it runs."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        self.every_half_second(protocol, 28, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP)
        self.assertFalse(transport.disconnecting)

    def test_stopping_a_live_node_stops_its_listeners(self):
        """A live node shutting down leaves its listeners STOPPED."""
        node = self.make_node(name="serv_a", backup=False)
        self.successResultOf(node.stopService())
        self.assertEqual(node.machine.role, ROLE_STOPPED)
        self.assertEqual({s["state"] for s in node.listeners.status().values()} - {FAILED}, {STOPPED})


class ConfigChangeTests(NodeTestCase):
    def test_a_new_threshold_changes_a_running_backups_takeover_time(self):
        """Raising the threshold in the shared file postpones the takeover to the new threshold."""
        node = self.make_node()
        self.step(1.0)
        node.apply_config(keyed(CONFIG.replace("threshold = 2", "threshold = 5"), "/share/iway.ini"))
        self.step(3.9)
        self.assertEqual(node.machine.role, BACKUP)
        self.step(0.2)
        self.assertEqual(node.machine.role, LIVE)

    def test_a_listener_added_to_a_live_node_starts_at_once(self):
        """Listeners added to the shared file follow on a live node without a restart."""
        node = self.make_node(name="serv_a", backup=False)
        node.apply_config(keyed(CONFIG + "\n[listener:extra]\nplugin = fake\n", "/share/iway.ini"))
        self.assertEqual(node.listeners.status()["extra"]["state"], ACTIVE)

    def test_a_listener_removed_from_the_file_is_stopped_and_dropped(self):
        """A listener no longer in the shared file stops and leaves the status."""
        node = self.make_node(name="serv_a", backup=False)
        web = node.listeners.listeners["web"]
        node.apply_config(keyed(CONFIG.replace("[listener:web]\nplugin = fake --port 8080\n", ""), "/share/iway.ini"))
        self.assertNotIn("web", node.listeners.status())
        self.assertEqual(web.state, STOPPED)

    def test_a_new_heartbeat_interval_applies_to_the_sender(self):
        """A live node heartbeats at the new interval as soon as the file says so."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        node.apply_config(keyed(CONFIG.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0.25"), "/share/iway.ini"))
        transport.clear()
        self.reactor.advance(0.25)
        self.reactor.advance(0.25)
        self.assertEqual(len(frames_in(transport)), 2)

    def test_reload_log_line_lists_every_changed_key(self):
        """A reload that changes the threshold and adds a witness logs both, each with its old and new value."""
        node = self.make_node()
        events = []
        node.log = Logger(observer=events.append)
        text = CONFIG.replace("threshold = 2\n\n[listener:web]", "threshold = 5\n\n[listener:web]").replace(
            "heartbeat_interval = 0.5\n", "heartbeat_interval = 0.5\nwitness = 10.0.0.9:22\n")
        node.apply_config(keyed(text, "/share/iway.ini"))
        [line] = [formatEvent(e) for e in events if e.get("log_format", "").startswith("configuration reloaded")]
        self.assertEqual(
            line, "configuration reloaded: [failover] witness none -> 10.0.0.9:22; [server:serv_b] threshold 2 -> 5",
        )

    def test_a_configuration_without_this_node_is_refused(self):
        """A file in which this node's section is gone is not applied."""
        node = self.make_node()
        other = keyed(CONFIG.replace("[server:serv_b]", "[server:serv_c]").replace("serv_a, serv_b", "serv_a"), "/share/iway.ini")
        error = self.assertRaises(Exception, node.check_config, other)
        self.assertIn("serv_b", str(error))
        self.assertIn("serv_c", str(error))


class AnnouncedSettingsTests(NodeTestCase):
    """Every frame carries the sender's priority and threshold (frame version 2)."""

    def test_frames_announce_this_nodes_priority_and_threshold(self):
        """A backup's answer carries its own priority and threshold (in ms) from its section of the file."""
        node = self.make_node(text=CONFIG.replace("threshold = 2\n\n[listener:web]", "threshold = 2.5\npriority = -3\n\n[listener:web]"))
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
        [answer] = frames_in(transport)
        self.assertEqual((answer.priority, answer.threshold), (-3, 2500))

    def test_a_reloaded_priority_and_threshold_are_announced_in_the_next_frame(self):
        """After a reload, the live node's heartbeats announce its new priority and threshold."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, transport = self.outbound(node)
        node.apply_config(keyed(CONFIG.replace("threshold = 2\n\n[server:serv_b]", "threshold = 4\npriority = 9\n\n[server:serv_b]")))
        transport.clear()
        self.reactor.advance(0.5)
        [heartbeat] = frames_in(transport)
        self.assertEqual((heartbeat.kind, heartbeat.priority, heartbeat.threshold), (wire.Kind.HEARTBEAT, 9, 4000))

    def test_status_shows_the_priority_and_threshold_the_peer_announced(self):
        """peer.priority and peer.threshold are what the peer said (null before it is heard), not this node's copy."""
        node = self.make_node()
        self.assertEqual((node.status().to_json()["peer"]["priority"], node.status().to_json()["peer"]["threshold"]), (None, None))
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, priority=4, threshold=1500))
        peer = json.loads(json.dumps(node.status().to_json()))["peer"]
        self.assertEqual((peer["priority"], peer["threshold"]), (4, 1.5))

    def test_a_peer_announcing_settings_its_copy_does_not_hold_is_reported_once(self):
        """Announced priority 4 where this node's copy says 0: one warning naming both, not one per heartbeat."""
        from twisted.logger import formatEvent, globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        node = self.make_node()
        protocol, _ = self.inbound(node)
        self.every_half_second(protocol, 3, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE)
        before = [formatEvent(e) for e in events if "announces priority" in e.get("log_format", "")]
        self.assertEqual(before, [], "the copies agree: nothing to say")
        for seq in (10, 11, 12):
            self.reactor.advance(0.5)
            protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=seq, priority=4))
        [warning] = [formatEvent(e) for e in events if "announces priority" in e.get("log_format", "")]
        self.assertIn("serv_a announces priority 4 and threshold 2s", warning)
        self.assertIn("says priority 0 and threshold 2s", warning)
        self.assertEqual(node.machine.role, BACKUP)

    def test_a_priority_a_frame_cannot_carry_is_refused(self):
        """priority = 2147483648 does not fit a frame's signed 32 bits: refused at start and on reload, naming the range."""
        text = CONFIG.replace("threshold = 2\n\n[listener:web]", "threshold = 2\npriority = 2147483648\n\n[listener:web]")
        error = self.assertRaises(ConfigError, self.make_node, text=text)
        self.assertIn("[server:serv_b] priority = '2147483648': out of range", str(error))
        self.assertIn("-2147483648 to 2147483647", str(error))
        node = self.make_node(name="serv_a")
        self.assertRaises(ConfigError, node.check_config, keyed(text))
        self.assertIsNotNone(node.check_config(keyed(text.replace("2147483648", "2147483647"))))

    def test_a_threshold_a_frame_cannot_carry_is_refused(self):
        """A threshold over 2**32 - 1 ms (about 49.7 days) is refused on reload, naming the range."""
        node = self.make_node()
        error = self.assertRaises(ConfigError, node.check_config, keyed(CONFIG.replace("threshold = 2\n\n[listener", "threshold = 5000000\n\n[listener")))
        self.assertIn("threshold = '5000000.0': out of range", str(error))
        self.assertIn("0.001 to 4294967.295", str(error))


class StatusTests(NodeTestCase):
    def test_status_has_the_contract_fields(self):
        """GET /api/status carries server, role, epoch, since, peer and listeners (CONTRACT section 4), as JSON."""
        node = self.make_node()
        status = json.loads(json.dumps(node.status().to_json()))
        self.assertEqual(status["server"], "serv_b")
        self.assertEqual(status["role"], "backup")
        self.assertEqual(status["epoch"], 0)
        self.assertEqual(status["since"], "2025-11-25T10:00:00.000Z")
        self.assertTrue(set(status["peer"]) >= {"name", "connected", "last_heartbeat_age"})
        self.assertEqual(status["peer"]["name"], "serv_a")
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")
        self.assertEqual(status["settings"]["threshold"], 2.0)

    def test_the_node_offers_the_console_interface(self):
        """A node provides INodeControl, every method of it: all the console may ask of a node."""
        from zope.interface.verify import verifyObject

        from iwayfailover.status import INodeControl

        self.assertTrue(verifyObject(INodeControl, self.make_node()))

    def test_a_status_is_an_immutable_snapshot(self):
        """A status cannot be changed, nor its listeners or counts, and stays as it was when the node moves on."""
        import dataclasses
        import operator

        node = self.make_node()
        status = node.status()
        self.assertRaises(dataclasses.FrozenInstanceError, setattr, status, "role", LIVE)
        self.assertRaises(TypeError, operator.setitem, status.listeners, "web", None)
        self.assertRaises(TypeError, operator.setitem, status.takeovers, "crash", 1)

        self.step(2.05)

        self.assertEqual((status.role, status.listeners["web"].state), (BACKUP, WAITING))
        self.assertEqual((node.status().role, node.status().listeners["web"].state), (LIVE, ACTIVE))

    def test_status_keeps_what_the_json_leaves_out(self):
        """Takeovers by kind are in the snapshot (for the metrics) but not in the /api/status object."""
        node = self.make_node()
        self.step(2.05)
        status = node.status()
        self.assertEqual(dict(status.takeovers), {"silence": 1, "crash": 0, "switchover": 0, "peer_shutdown": 0})
        self.assertEqual(set(status.to_json()), {
            "server", "role", "epoch", "since", "cause", "peer", "listeners", "heartbeats", "settings", "auth",
            "config", "transitions",
        })

    def test_the_json_reads_back_as_the_same_status(self):
        """NodeStatus.from_json of a live node's /api/status object gives that object again, FAILED listener included."""
        from iwayfailover.status import NodeStatus

        node = self.make_node()
        self.step(2.05)
        shown = json.loads(json.dumps(node.status().to_json()))
        self.assertEqual(shown["listeners"]["broken"]["state"], FAILED)
        self.assertEqual(NodeStatus.from_json(shown).to_json(), shown)

    def test_reload_config_reads_the_file_at_once(self):
        """reload_config polls the configuration now, not at the next interval; without a running poller it does nothing."""
        from iwayfailover.reload import ConfigPoller

        node = self.make_node()
        node.reload_config()  # no poller yet: nothing to do, nothing raised
        reads = []
        node.poller = ConfigPoller(self.reactor, node.config, 60.0, lambda path: reads.append(path) or node.config,
                                   lambda f, *a: defer.maybeDeferred(f, *a), node.apply_config)
        node.reload_config()
        self.assertEqual(reads, [], "a poller that is not running is not asked")
        node.poller.startService()
        self.addCleanup(node.poller.stopService)

        node.reload_config()

        self.assertEqual(reads, ["/share/iway.ini"])


class PortChangeTests(NodeTestCase):
    def test_a_changed_heartbeat_port_is_rebound(self):
        """A new heartbeat_port in the shared file is listened on, and the old port let go."""
        from iwayfailover.ports import ServerPort

        node = self.make_node()
        node.heartbeat_port = ServerPort(self.reactor, node.settings.heartbeat_endpoint, node.heartbeat_factory, "heartbeat port")
        node.heartbeat_port.bind()
        released = []
        self.patch(node.heartbeat_port.port, "stopListening", lambda: released.append(True))
        node.apply_config(keyed(CONFIG.replace("heartbeat_port = 1200\nthreshold = 2\n\n[listener:web]", "heartbeat_port = 1300\nthreshold = 2\n\n[listener:web]"), "/share/iway.ini"))
        self.assertEqual([p for p, *_ in self.reactor.tcpServers], [1200, 1300])
        self.assertEqual(node.heartbeat_port.description, "tcp:1300")
        self.step(2 * 2 + 5 - 0.1)
        self.assertEqual(released, [], "the old port stays open while the peer may still dial it (make before break)")
        self.step(0.2)
        self.assertEqual(released, [True])


class DialTests(NodeTestCase):
    """The live node's dials of its backup location, bounded by the heartbeat interval (issue 11, failure 7)."""

    def dials(self):
        return len(self.reactor.tcpClients)

    def test_a_dial_that_gets_no_answer_is_given_up_and_made_again_within_the_interval(self):
        """A silent backup location holds a dial one interval (0.5 s here), not 30 s; the next dial follows at once."""
        self.make_node(name="serv_a", backup=False)
        [(host, port, _, _, _)] = self.reactor.tcpClients
        self.assertEqual((host, port), ("10.9.9.2", 1200))
        self.reactor.advance(0.49)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        self.reactor.advance(0.01)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        # The next dial: after the backoff's first step (0.1 s) and its jitter (at most 0.05 s).
        self.step(0.15, step=0.01)
        self.assertEqual(self.dials(), 2)
        # While the location stays silent: a dial at least every interval plus its timeout, for as long as it lasts.
        self.step(30, step=0.01)
        self.assertGreaterEqual(self.dials(), 2 + int(30 / 1.05))
        self.assertTrue(all(connector.stoppedConnecting for connector in self.reactor.connectors[:-1]))

    def test_a_tls_location_is_dialled_with_the_same_bound(self):
        """A tls: Location of Backup gets the interval as its connect timeout too, and is dialled again."""
        from pki import Authority

        ca = Authority(temporary_directory(self))
        self.make_node(name="serv_a", backup=False, text=CONFIG.replace(
            "backup_location = 10.9.9.2:1200", f"backup_location = tls:10.9.9.2:1200:trustRoots={ca.path}",
        ))
        [(host, port, _, timeout, _)] = self.reactor.tcpClients
        self.assertEqual(((host, port), timeout), (("10.9.9.2", 1200), 0.5))
        self.reactor.advance(0.5)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.step(0.15, step=0.01)
        self.assertEqual(self.dials(), 2)

    def test_a_very_short_interval_leaves_a_dial_time_for_a_round_trip(self):
        """With heartbeat_interval = 0.1 a dial is still given CONNECT_TIMEOUT_FLOOR (0.25 s)."""
        self.make_node(name="serv_a", backup=False, text=CONFIG.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0.1"))
        self.reactor.advance(CONNECT_TIMEOUT_FLOOR - 0.01)
        self.assertFalse(self.reactor.connectors[0].stoppedConnecting)
        self.reactor.advance(0.01)
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)

    def test_a_location_that_connects_but_never_says_hello_is_dropped_and_dialled_again(self):
        """A connection without a hello lasts as long as UNANSWERED_LIMIT heartbeats (2.5 s here), not 5 s."""
        node = self.make_node(name="serv_a", backup=False)
        host, port, factory, _, _ = self.reactor.tcpClients[-1]
        protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        transport = StringTransport(peerAddress=IPv4Address("TCP", host, port))
        protocol.makeConnection(transport)
        self.step(0.5 * UNANSWERED_LIMIT - 0.01, step=0.01)
        self.assertFalse(transport.disconnecting)
        self.step(0.02, step=0.02)
        self.assertTrue(transport.disconnecting)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.step(0.15, step=0.01)
        self.assertEqual(self.dials(), 2)
        self.assertFalse(node.sender.connected)

    def test_a_lost_link_is_dialled_again_at_once(self):
        """When the link to the backup drops, the next dial follows within the backoff's first step."""
        node = self.make_node(name="serv_a", backup=False)
        _, protocol, _ = self.outbound(node)
        self.assertTrue(node.sender.connected)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.assertFalse(node.sender.connected)
        self.step(0.15, step=0.01)
        self.assertEqual(self.dials(), 2)

    def test_stopping_gives_up_the_dial_under_way_and_dials_no_more(self):
        """A node that stops while dialling cancels that dial and makes no other."""
        node = self.make_node(name="serv_a", backup=False)
        self.successResultOf(node.stopService())
        self.assertTrue(self.reactor.connectors[0].stoppedConnecting)
        self.step(5, step=0.1)
        self.assertEqual(self.dials(), 1)


class FakeEndpoint:
    """
    A client endpoint whose dials fail with C{error}, connect to an
    in-memory transport (C{error} None, C{answer} true), or wait forever.
    """

    def __init__(self, error=None, answer=False):
        self.error = error
        self.answer = answer
        self.dials = []
        self.connections = []

    def connect(self, factory):
        d = defer.Deferred()
        self.dials.append(d)
        if self.error is not None:
            d.errback(self.error)
        elif self.answer:
            protocol = factory.buildProtocol(IPv4Address("TCP", "10.9.9.2", 1200))
            protocol.makeConnection(StringTransport())
            self.connections.append(protocol)
            d.callback(protocol)
        return d


class RedialTests(unittest.TestCase):
    def redialler(self, endpoint, every=60.0):
        from twisted.internet.protocol import Factory, Protocol
        from twisted.internet.task import Clock

        from iwayfailover.links import Redialler

        self.clock = Clock()
        return Redialler(self.clock, endpoint, Factory.forProtocol(Protocol), 0.25, lambda failures: 1.0, "backup location x", every)

    def test_redials_to_an_absent_backup_are_logged_sparingly(self):
        """The first failed dial of a run is logged, then at most one a minute, each saying how many went unlogged."""
        from twisted.internet.error import ConnectionRefusedError
        from twisted.logger import capturedLogs

        endpoint = FakeEndpoint(ConnectionRefusedError())
        dialler = self.redialler(endpoint)
        with capturedLogs() as events:
            dialler.start()
            for _ in range(600):  # ten minutes of dials, one a second
                self.clock.advance(1.0)
        lines = [e for e in events if e.get("location") == "backup location x"]
        self.assertEqual(len(endpoint.dials), 601)
        self.assertEqual(len(lines), 11)
        self.assertIn("Connection was refused", lines[0]["why"])
        self.assertEqual(lines[0]["unlogged"], "")
        self.assertEqual(lines[1]["unlogged"], " (59 more failed dials since the last report)")

    def test_a_new_run_of_failures_is_logged_at_once(self):
        """After a connection, the next failed dial is logged even within the minute."""
        from twisted.internet.error import ConnectionRefusedError
        from twisted.logger import capturedLogs

        endpoint = FakeEndpoint(ConnectionRefusedError())
        dialler = self.redialler(endpoint)
        with capturedLogs() as events:
            dialler.start()
            self.clock.advance(1.0)  # a second failure: not logged
            endpoint.error, endpoint.answer = None, True
            self.clock.advance(1.0)  # connected: the run of failures ends
            endpoint.error = ConnectionRefusedError()
            endpoint.connections[-1].connectionLost(Failure(ConnectionDone()))
            self.clock.advance(1.0)  # dialled again, and refused
        lines = [e for e in events if e.get("location") == "backup location x"]
        self.assertEqual(len(endpoint.dials), 4)
        self.assertEqual(len(lines), 2)

    def test_a_timed_out_dial_says_so(self):
        """A dial given up after its timeout is logged as such, and the next dial follows the policy's delay."""
        from twisted.logger import capturedLogs

        endpoint = FakeEndpoint()
        dialler = self.redialler(endpoint)
        with capturedLogs() as events:
            dialler.start()
            self.clock.advance(0.25)
        [line] = [e for e in events if e.get("location") == "backup location x"]
        self.assertEqual(line["why"], "no connection within 0.25s")
        self.assertEqual(len(endpoint.dials), 1)
        self.clock.advance(1.0)
        self.assertEqual(len(endpoint.dials), 2)

    def test_stopping_closes_the_connection_and_fires_once_it_is_closed(self):
        """stop() closes the connection it made and fires when that connection is gone; no dial follows."""
        endpoint = FakeEndpoint(answer=True)
        dialler = self.redialler(endpoint)
        dialler.start()
        [protocol] = endpoint.connections
        stopped = dialler.stop()
        self.assertTrue(protocol.transport.disconnecting)
        self.assertNoResult(stopped)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.successResultOf(stopped)
        self.clock.advance(10)
        self.assertEqual(len(endpoint.dials), 1)


class HeldPort(FakeListenerService):
    """A listener whose port is held (by the old live node) until the test lets go of it."""

    held = True

    def startService(self):
        if HeldPort.held and self.spec.name == "web":
            raise OSError("Address already in use")
        super().startService()


class RecoveryTests(NodeTestCase):
    """The decision core retries FAILED channels of a live node; the node carries the retries out."""

    def setUp(self):
        HeldPort.held = True

    def test_a_failed_listener_comes_up_by_itself_once_its_port_is_free(self):
        """web FAILED at takeover (port held): retried while live, ACTIVE within the retry cap once the port is free."""
        node = self.make_node(name="serv_a", backup=False, build=lambda spec: HeldPort(spec, self.started))
        self.assertEqual(node.listeners.listeners["web"].state, FAILED)
        self.assertIn("retry_in", node.status().to_json()["listeners"]["web"])
        self.step(3.0)
        self.assertEqual(node.listeners.listeners["web"].state, FAILED, "still held: still FAILED")
        HeldPort.held = False
        self.step(2.05)
        self.assertEqual(node.listeners.listeners["web"].state, ACTIVE)
        self.assertNotIn("retry_in", node.status().to_json()["listeners"]["web"])
        self.assertEqual(node.listeners.listeners["broken"].state, FAILED, "a listener that always fails stays FAILED")

    def test_a_backup_does_not_retry(self):
        """A node that yields stops retrying: nothing starts its FAILED listener while it is backup."""
        from wirepeer import outranked

        node = self.make_node(name="serv_a", backup=False, build=lambda spec: HeldPort(spec, self.started))
        outranked(node, "serv_b", host="10.9.9.2")
        HeldPort.held = False
        self.step(1.0)  # within its threshold: it stays backup
        self.assertEqual(node.machine.role, BACKUP)
        self.assertNotIn("web", self.started, "no retry while backup, though the port is free")
        self.assertNotIn("retry_in", node.status().to_json()["listeners"]["web"])


class StallTests(NodeTestCase):
    """The node notices its own stalls and tells the core."""

    def test_a_live_node_frozen_past_its_backups_threshold_stops_serving_on_waking(self):
        """A 2.5 s freeze (the reactor's clock jumps): the live node's listeners stop before it does anything else."""
        node = self.make_node(name="serv_a", backup=False)
        _, _, transport = self.outbound(node)
        transport.clear()
        self.crash_probe = probe.Reply(peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.LIVE, epoch=3), probe.ANSWERED, "live")
        self.reactor.advance(2.5)  # one jump: every timer comes due late, as after SIGCONT
        self.assertEqual(node.machine.role, BACKUP, "serv_b answered that it took over")
        self.assertIn("stalled", node.machine.cause)
        self.assertEqual(node.listeners.listeners["web"].state, WAITING)
        self.assertGreaterEqual(node.status().to_json()["heartbeats"]["largest_stall"], 2.0)
        self.assertNotIn(wire.Kind.HEARTBEAT, [f.kind for f in frames_in(transport)], "no heartbeat as live after waking")

    def test_a_woken_live_node_whose_backup_stayed_backup_serves_again_with_a_new_epoch(self):
        """The same freeze, but serv_b answers twice that it is still backup: serv_a serves again, under a new ballot."""
        node = self.make_node(name="serv_a", backup=False)
        self.outbound(node)
        epoch = node.machine.epoch
        self.crash_probe = probe.Reply(peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, epoch=1), probe.ANSWERED, "b")
        self.reactor.advance(2.5)
        self.assertEqual(node.machine.role, BACKUP, "first it lets a takeover under way finish")
        self.step(0.6)
        self.assertEqual(node.machine.role, LIVE)
        self.assertGreater(node.machine.epoch, epoch)
        self.assertEqual(node.listeners.listeners["web"].state, ACTIVE)

    def test_a_short_hiccup_changes_nothing(self):
        """A reactor turn 0.3 s late (well under the backup's 2 s threshold) leaves a live node live."""
        node = self.make_node(name="serv_a", backup=False)
        self.outbound(node)
        self.reactor.advance(0.3)
        self.step(1.0)
        self.assertEqual(node.machine.role, LIVE)


class MovedLocationTests(NodeTestCase):
    """After an edit moves the peer's heartbeat port, probes ask the old place too, for a while."""

    def test_a_probe_after_a_move_asks_both_places_and_an_answer_at_the_old_one_counts(self):
        """The backup read the edit first: the live node still answers at its old port, so no takeover."""
        node = self.make_node()
        protocol, _ = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=2))
        moved = CONFIG.replace("backup_location = 10.9.9.1:1200", "backup_location = 10.9.9.1:1300")
        node.apply_config(keyed(moved, "/share/iway.ini"))
        replies = {1300: probe.Reply(None, probe.REFUSED, "refused"),
                   1200: probe.Reply(peer_frame(wire.Kind.ANSWER, "serv_a", wire.Role.LIVE, epoch=2), probe.ANSWERED, "live")}
        asked = []

        def query(reactor, target, frame, timeout, refusals, keys):
            host, port = dialled(self.reactor, target)
            asked.append(port)
            return defer.succeed(replies[port])

        node._query = query
        protocol.connectionLost(Failure(ConnectionDone()))  # the fast path asks at once
        self.assertEqual(sorted(asked), [1200, 1300])
        self.assertEqual(node.machine.role, BACKUP)
        self.step(5 + 2 * 2 + 1)
        asked.clear()
        self.step(2.0)
        self.assertNotIn(1200, asked, "the old place is asked only for a while")


class RefusedHeartbeatsTests(NodeTestCase):
    """A backup that hangs up on every link without answering a heartbeat (another key): said once, then counted."""

    def redialled(self, node, dials):
        """Step the clock until the node has dialled its backup location more than C{dials} times."""
        for _ in range(100):
            if len(self.reactor.tcpClients) > dials:
                return
            self.reactor.advance(0.01)
        self.fail("the node did not dial its backup location again")

    def hung_up(self, node, steps=0.55):
        """One link: heartbeats sent for C{steps} seconds, none answered, then closed by the far end."""
        _, protocol, _ = self.outbound(node)
        self.dials = len(self.reactor.tcpClients)
        self.step(steps)
        protocol.connectionLost(Failure(ConnectionDone()))

    def lines(self, events):
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in events if "hangs up on this node's heartbeats" in e.get("log_format", "")]

    def test_the_first_link_hung_up_on_names_the_keys_and_the_next_ones_are_counted(self):
        from twisted.logger import capturedLogs

        node = self.make_node(name="serv_a", backup=False)
        with capturedLogs() as events:
            for _ in range(5):  # five links within a few seconds
                self.hung_up(node)
                self.redialled(node, self.dials)
        [line] = self.lines(events)
        self.assertIn("serv_b at", line)
        self.assertIn("(1 links in a row; the last one closed)", line)
        self.assertIn("Does it hold the same heartbeat key? This node's key ids: " + node.keys.key_ids[0], line)
        self.assertFalse([e for e in events if "heartbeat link to backup" in e.get("log_format", "")
                          and "ended" in e.get("log_format", "")])

        with capturedLogs() as events:
            self.step(10.0)  # past the report interval: the next one is said with the count
            self.redialled(node, self.dials)
            self.hung_up(node)
        [line] = self.lines(events)
        self.assertIn("links in a row", line)
        self.assertNotIn("(1 links", line)

    def test_an_answer_ends_it_and_says_so(self):
        from twisted.logger import capturedLogs, formatEvent

        node = self.make_node(name="serv_a", backup=False)
        self.hung_up(node)
        self.redialled(node, self.dials)
        with capturedLogs() as events:
            self.answering_backup(node)
        self.assertTrue([e for e in events if "answers this node's heartbeats again" in formatEvent(e)])

    def test_a_link_that_was_answered_ends_as_before(self):
        """A backup that answered, then died: the usual line about the link, not the refusal."""
        from twisted.logger import capturedLogs

        node = self.make_node(name="serv_a", backup=False)
        protocol, _ = self.answering_backup(node)
        with capturedLogs() as events:
            protocol.connectionLost(Failure(ConnectionDone()))
        self.assertEqual(self.lines(events), [])
        self.assertTrue([e for e in events if "it stopped, or its process died" in e.get("how", "")])


class ProbeDetailTests(NodeTestCase):
    def test_a_takeover_after_an_inconclusive_probe_says_what_the_probe_saw(self):
        """The crash probe found a port that said hello and hung up: the cause says so, with the key hint."""
        node = self.make_node()
        self.crash_probe = probe.Reply(None, probe.UNREACHABLE,
                                       "it said hello, then closed without answering (do both nodes hold the same key?)")
        protocol, _ = self.inbound(node)
        self.every_half_second(protocol, 2, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE)
        self.step(3.0)
        self.assertEqual(node.machine.role, LIVE)
        self.assertIn("its heartbeat port did not answer (it said hello, then closed without answering (do both nodes"
                      " hold the same key?))", node.machine.cause)
