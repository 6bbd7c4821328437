"""
Tests for L{iwayfailover.pulsing}: a node's pulses on the network, with an
in-memory reactor whose UDP ports record what they send.

A live node pulses to where its heartbeat connection reached the backup,
with that connection's keys, and goes on after the connection drops; a
backup takes each pulse from the live node as a heartbeat (no takeover
while they come, though the connection is gone) and answers it by pulse.
"""


from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionLost
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from twisted.python.failure import Failure

from iwayfailover import wire
from iwayfailover.core.events import BACKUP, LIVE
from iwayfailover.pulse import PulseBook, PulseKeys
from iwayfailover.pulsing import PULSE_SEQ, PULSES_PER_THRESHOLD, pulse_period
from test_node import CONFIG, DatagramSocket, NodeTestCase
from test_pulse import connection
from wirepeer import peer_frame


class FakeUDPPort:
    """A listening UDP port of L{UDPReactor}: records every datagram written."""

    def __init__(self, reactor, number, interface, protocol):
        self.reactor = reactor
        self.number = number
        self.interface = interface
        self.protocol = protocol
        self.written = []
        self.listening = True

    def write(self, data, address):
        self.written.append((data, address))

    def getHost(self):
        return IPv4Address("UDP", self.interface or "0.0.0.0", self.number)

    def stopListening(self):
        self.listening = False
        self.protocol.doStop()

    def connect(self, host, port):  # pragma: no cover - not used
        raise NotImplementedError


class UDPReactor(MemoryReactorClock):
    """A memory reactor that can also listen on UDP (IReactorUDP's listenUDP, recorded)."""

    def __init__(self):
        super().__init__()
        self.udp = []

    def listenUDP(self, port, protocol, interface="", maxPacketSize=8192):
        udp = FakeUDPPort(self, port or 40000 + len(self.udp), interface, protocol)
        protocol.makeConnection(udp)
        self.udp.append(udp)
        return udp


class FakeTCPPort:
    """A heartbeat port as ServerPort tells its watchers of it."""

    def __init__(self, host, port):
        self._address = IPv4Address("TCP", host, port)

    def getHost(self):
        return self._address


PULSES_ON = CONFIG.replace("heartbeat_interval = 0.5", "heartbeat_interval = 0.5\npulses = true")


class PulseTestCase(NodeTestCase):
    reactor_class = UDPReactor
    text = PULSES_ON


def sent(node):
    """What the live node's pulse socket has sent: (datagram, address)."""
    work = node.pulser.work
    return [] if work is None else work.sock.sent


class LivePulseTests(PulseTestCase):
    """A live node's pulses."""

    def connected(self, node):
        """The live node's connection to its backup, answered once; the backup's pulse keys, and where it dialled."""
        (host, port), protocol, transport = self.outbound(node)
        protocol.dataReceived(self.answer(protocol))
        return protocol, transport.far, (host, port)

    def answer(self, protocol, seq=1):
        from wirepeer import frame_bytes

        return frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=seq)

    def pulses(self, node, far):
        """The frames of every pulse the node sent, opened with the keys of the backup's session C{far}, and where each went."""
        book = PulseBook()
        book.add(PulseKeys.from_session(far))
        return [(wire.decode(book.open(data)[1]), address) for data, address in sent(node)]

    def test_a_live_node_pulses_its_heartbeat_to_where_it_reached_the_backup(self):
        """Threshold 2 s, interval 0.5 s: a pulse every 1/6 s, each a live heartbeat of serv_a, to the dialled address."""
        node = self.make_node(name="serv_a", backup=False)
        _, far, where = self.connected(node)
        self.step(2.0, step=0.01)  # fine steps: a pulse due every 1/6 s goes at that time, give or take 0.01 s
        pulses = self.pulses(node, far)
        self.assertGreaterEqual(len(pulses), 11)
        self.assertLessEqual(len(pulses), 13)
        for number, (frame, address) in enumerate(pulses, 1):
            self.assertEqual((frame.kind, frame.name, frame.role), (wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE))
            self.assertEqual(frame.epoch, node.core.epoch)
            self.assertEqual(frame.seq, PULSE_SEQ | number, "each pulse has a number of its own, for its answer")
            self.assertEqual(address, where)

    def test_pulses_go_on_with_the_old_keys_after_the_connection_drops(self):
        """The link is lost (a lossy network): pulses keep coming, still sealed for the backup's session."""
        node = self.make_node(name="serv_a", backup=False)
        protocol, far, _ = self.connected(node)
        self.step(0.5)
        before = len(self.pulses(node, far))
        protocol.connectionLost(Failure(ConnectionLost("lost on the way")))
        self.step(2.0)
        self.assertGreaterEqual(len(self.pulses(node, far)) - before, 7)

    def test_a_new_connection_is_pulsed_on_only_once_the_backup_answered_on_it(self):
        """
        The link drops and is made again; until the backup answers on the new
        one (it may not hold its keys yet) pulses keep the old keys; after, the new.
        """
        node = self.make_node(name="serv_a", backup=False)
        protocol, old_far, _ = self.connected(node)
        protocol.connectionLost(Failure(ConnectionLost("lost on the way")))
        self.step(0.5)  # redialled
        (_, _), new_protocol, new_transport = self.outbound(node)
        new_far = new_transport.far
        written = sent(node)
        written.clear()
        self.step(1.0)
        old_book, new_book = PulseBook(), PulseBook()
        old_book.add(PulseKeys.from_session(old_far))
        new_book.add(PulseKeys.from_session(new_far))
        sealed_old = [data for data, _ in written]
        self.assertTrue(sealed_old)
        for data in sealed_old:
            old_book.open(data)  # each opens with the old session's keys
        new_protocol.dataReceived(self.answer(new_protocol))  # the backup answers on the new link
        written.clear()
        self.step(1.0)
        sealed_new = [data for data, _ in written]
        self.assertTrue(sealed_new)
        for data in sealed_new:
            new_book.open(data)

    def test_the_backups_answer_pulses_are_heard(self):
        """The link is lost; an answer pulse from serv_b still tells the live node its backup is there."""
        node = self.make_node(name="serv_a", backup=False)
        protocol, far, _ = self.connected(node)
        protocol.connectionLost(Failure(ConnectionLost("lost on the way")))
        self.step(2.0)
        [(frame, _)] = self.pulses(node, far)[-1:]
        answer = PulseKeys.from_session(far).seal(wire.encode(
            peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=frame.seq)))
        self.step(0.01)
        node.pulser.work.received(answer, ("10.9.9.2", 1200))
        node.pulser.drain()
        self.assertEqual(node.status().peer.last_heartbeat_age, 0.0)
        self.assertEqual(node.pulser.counts.received, 1)

    def test_an_answer_tells_the_core_when_its_pulse_was_sent_and_when_the_answer_came(self):
        """The answer echoes the pulse's own number: the core hears the send and arrival times, and the heartbeat repeated."""
        node = self.make_node(name="serv_a", backup=False)
        protocol, far, _ = self.connected(node)
        self.step(1.0, step=0.01)
        [(frame, _)] = self.pulses(node, far)[-1:]
        sent_at, beat = self.reactor.seconds(), node.sender.last_seq
        self.step(0.02)
        heard = []
        feed = node._feed
        node._feed = lambda observation, *a: (heard.append(observation), feed(observation, *a))
        answer = PulseKeys.from_session(far).seal(wire.encode(
            peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=frame.seq)))
        node.pulser.work.received(answer, ("10.9.9.2", 1200))
        node.pulser.drain()
        [observation] = heard
        self.assertAlmostEqual(observation.acked[0], sent_at, delta=0.011)
        self.assertEqual(observation.acked[1], self.reactor.seconds())
        self.assertTrue(0 < observation.seq <= beat, "the number of the heartbeat the pulse repeated")
        self.assertEqual(node.core._acks[-1], observation.acked)

    def stalled_live_node(self, answered_meanwhile):
        """
        A live node (backup threshold 2 s) whose reactor does not turn for 1.6 s (its timers all come late,
        at once); with C{answered_meanwhile}, its pulse thread pulsed and read the backup's answers meanwhile.
        """
        node = self.make_node(name="serv_a", backup=False)
        protocol, far, _ = self.connected(node)
        self.step(1.0, step=0.01)
        start = self.reactor.seconds()
        keys = PulseKeys.from_session(far)
        if answered_meanwhile:
            for k in range(1, 10):
                sent = start + k * 0.16
                frame = peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=node.sender.last_seq)
                node.pulser.work.inbox.append(("answer", keys, frame, ("10.9.9.2", 1200), (sent, sent + 0.002)))
        epoch = node.core.epoch
        # The core's own heartbeat timer must be the first to come late (the stall watch's tick, which
        # takes the thread's answers too, may come first or not): the watch is stopped.
        node.stalls.stop()
        self.reactor.advance(1.6)  # one jump: every timer due meanwhile runs late
        return node, epoch

    def test_a_late_timers_stall_check_knows_the_answers_the_thread_read_meanwhile(self):
        """
        The answers wait in the thread's queue; they reach the core before the first late timer does, so
        its stall check knows the backup heard this node all along, and the node serves on. Without them
        (the thread heard nothing back) the same stall stops it serving (1.6 s + 0.5 s >= 2 s).
        """
        node, epoch = self.stalled_live_node(answered_meanwhile=True)
        self.assertEqual((node.core.role, node.core.epoch), (LIVE, epoch), node.core.cause)
        self.assertNotIn("stall", node.core.cause)
        self.assertFalse(node.pulser.waiting())
        node, epoch = self.stalled_live_node(answered_meanwhile=False)
        self.assertIn("rejoining after a stall of", node.core.cause)  # it stood down, asked, and took the role again
        self.assertGreater(node.core.epoch, epoch)

    def test_pulses_that_get_no_answer_are_said_once_and_their_return_too(self):
        """A firewall dropping UDP: after 10 s of pulses and no answer, one warning naming the port; then answers again."""
        from twisted.logger import capturedLogs, formatEvent

        node = self.make_node(name="serv_a", backup=False)
        _, far, _ = self.connected(node)
        with capturedLogs() as events:
            self.step(25.0, step=0.05)
        lines = [formatEvent(e) for e in events if "pulses" in formatEvent(e)]
        warned = [line for line in lines if "none answered" in line]
        self.assertEqual(len(warned), 1, lines)
        self.assertIn("is UDP to port 1200 open", warned[0])
        self.assertTrue(node.pulser.unanswered)
        with capturedLogs() as events:
            for _ in range(3):  # the backup answers again
                [(frame, _)] = self.pulses(node, far)[-1:]
                answer = PulseKeys.from_session(far).seal(wire.encode(
                    peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=frame.seq)))
                node.pulser.work.received(answer, ("10.9.9.2", 1200))
                self.step(5.0, step=0.05)
        self.assertIn("pulses to 10.9.9.2:1200 are answered again", [formatEvent(e) for e in events])
        self.assertFalse(node.pulser.unanswered)

    def test_a_backup_node_does_not_pulse(self):
        node = self.make_node()
        self.step(2.0)
        self.assertEqual(sent(node), [])

    def test_pulses_off_sends_none(self):
        self.text = CONFIG  # pulses are off unless the configuration turns them on
        node = self.make_node(name="serv_a", backup=False)
        self.connected(node)
        self.step(2.0)
        self.assertEqual(sent(node), [])

    def test_pulses_turned_on_and_off_by_a_reload_while_live_follow_at_once(self):
        """pulses = true read while live: pulses start without a new link; false again: they stop."""
        from wirepeer import keyed

        self.text = CONFIG
        node = self.make_node(name="serv_a", backup=False)
        self.connected(node)
        self.step(1.0)
        self.assertEqual(sent(node), [])
        node.apply_config(keyed(PULSES_ON, "/share/iway.ini"))
        self.step(1.0)
        self.assertGreaterEqual(len(sent(node)), 5)
        node.apply_config(keyed(CONFIG, "/share/iway.ini"))
        self.step(0.01)
        count = len(sent(node))
        self.step(1.0)
        self.assertEqual(len(sent(node)), count)

    def test_a_node_that_stops_being_live_stops_pulsing(self):
        """Shut down: no pulse after the node stood down."""
        node = self.make_node(name="serv_a", backup=False)
        _, far, _ = self.connected(node)
        self.step(1.0)
        written = sent(node)
        node.stopService()
        self.step(0.01)
        count = len(written)
        self.assertGreater(count, 0)
        self.step(2.0)
        self.assertEqual(len(written), count)

    def test_a_node_handing_over_pulses_live_no_more_once_it_has_stood_down(self):
        """
        A switchover: once its channels have stopped and it has told its backup, the frame the thread
        pulses is withdrawn at once (not at the next tick), so no pulse says live after the stand-down.
        """
        from iwayfailover.core import events as ev

        node = self.make_node(name="serv_a", backup=False)
        self.connected(node)
        self.step(0.5, step=0.01)
        self.assertIsNotNone(node.pulser.work.template)
        node._feed(ev.SwitchoverAsked())
        self.reactor.advance(0)  # the channels stop (in memory: at once), then the stand-down goes out
        self.assertNotEqual(node.core.wire_role, LIVE)
        self.assertIsNone(node.pulser.work.template)

    def test_an_unsigned_pair_sends_no_pulses(self):
        """insecure = true: anyone could make a pulse, so none is sent (nor taken: see the backup's tests)."""
        from iwayfailover import auth

        self.ring = auth.KeyRing.unsigned()
        node = self.make_node(name="serv_a", backup=False)
        self.connected(node)
        self.step(2.0)
        self.assertFalse(node.pulses_on())
        self.assertEqual(sent(node), [])

    def test_a_tls_link_sends_no_pulses(self):
        """Beside a TLS link (private names, roles, epochs), pulses, which are signed but not encrypted, are off."""
        from harness import temporary_directory
        from pki import Authority

        authority = Authority(temporary_directory(self))
        self.text = PULSES_ON.replace("backup_location = 10.9.9.2:1200",
                                   f"backup_location = tls:10.9.9.2:1200:trustRoots={authority.path}")
        node = self.make_node(name="serv_a", backup=False)
        self.assertFalse(node.pulses_on())

    def test_a_backup_at_an_ipv6_address_is_pulsed_from_an_ipv6_port(self):
        """The connection reached [::1]: the UDP port is opened on :: (an IPv4 one could not send there)."""
        import socket

        from iwayfailover.pulsing import Pulser

        made = []
        reactor = UDPReactor()
        client, _ = connection()
        pulser = Pulser(reactor, lambda: None, lambda *a: None, lambda *a: None, lambda: 1.0,
                        now=reactor.seconds, sockets=lambda *a: made.append(DatagramSocket(*a)) or made[-1])
        pulser.session(PulseKeys.from_session(client), ("::1", 1200))
        pulser.session(PulseKeys.from_session(client), ("10.9.9.2", 1200))
        self.assertEqual([(s.family, s.bound, s.closed) for s in made],
                         [(socket.AF_INET6, ("::", 0), True), (socket.AF_INET, ("0.0.0.0", 0), False)])

    def test_with_the_backups_second_address_each_pulse_goes_both_ways(self):
        """serv_b's second_address: every pulse, the same datagram, to where the link reached it and to the second address."""
        self.text = PULSES_ON.replace("[server:serv_b]\n", "[server:serv_b]\nsecond_address = 10.9.8.2\n")
        node = self.make_node(name="serv_a", backup=False)
        self.connected(node)
        self.step(1.0, step=0.01)
        written = sent(node)
        first = [a for _, a in written if a[0] == "10.9.9.2"]
        second = [a for _, a in written if a[0] == "10.9.8.2"]
        self.assertGreaterEqual(len(first), 5)
        self.assertEqual(set(second), {("10.9.8.2", 1200)})
        self.assertEqual([d for d, a in written if a[0] == "10.9.9.2"], [d for d, a in written if a[0] == "10.9.8.2"])
        self.assertEqual(node.pulser.sent, len(first), "a pulse counts once")

    def test_a_second_address_of_the_other_family_is_skipped_with_a_warning(self):
        self.text = PULSES_ON.replace("[server:serv_b]\n", "[server:serv_b]\nsecond_address = fd00::2\n")
        from twisted.logger import capturedLogs, formatEvent

        node = self.make_node(name="serv_a", backup=False)
        with capturedLogs() as events:
            self.connected(node)
            self.step(0.5, step=0.01)
        self.assertEqual({a[0] for _, a in sent(node)}, {"10.9.9.2"})
        lines = [formatEvent(e) for e in events]
        self.assertTrue(any("not of the family" in line for line in lines), lines)

    def test_the_period_puts_twelve_pulses_in_a_threshold_at_least(self):
        self.assertEqual(pulse_period(0.5, 2.0), 2.0 / PULSES_PER_THRESHOLD)
        self.assertEqual(pulse_period(0.03, 0.15), 0.15 / PULSES_PER_THRESHOLD)
        self.assertEqual(pulse_period(0.1, 10.0), 0.1)
        self.assertEqual(pulse_period(0.001, 0.002), 0.005)


class BackupPulseTests(PulseTestCase):
    """A backup hearing pulses."""

    def listening(self, node):
        """The backup's pulse port, as it opens when its heartbeat port listens (tap does this)."""
        node.pulses_in.port_opened(FakeTCPPort("10.9.9.2", 1200))
        [port] = self.reactor.udp
        self.assertEqual((port.number, port.interface), (1200, "10.9.9.2"))
        return port

    def live_session(self, node):
        """serv_a connects to the backup's heartbeat port, heartbeats once; serv_a's pulse keys."""
        from wirepeer import frame_bytes

        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=1))
        return protocol, PulseKeys.from_session(transport.far)

    def pulse(self, port, keys, kind=wire.Kind.HEARTBEAT, name="serv_a", role=wire.Role.LIVE, seq=1,
              source=("10.9.9.1", 41000)):
        port.protocol.datagramReceived(keys.seal(wire.encode(peer_frame(kind, name, role, seq=seq))), source)

    def cut_and_pulse(self, node, seconds):
        """The connection from serv_a is lost; serv_a pulses every 0.25 s for C{seconds} (when C{pulse})."""
        port = self.listening(node)
        protocol, keys = self.live_session(node)
        protocol.connectionLost(Failure(ConnectionLost("lost on the way")))
        for seq in range(2, 2 + int(seconds / 0.25)):
            self.reactor.advance(0.25)
            self.pulse(port, keys, seq=seq)
        return port, keys

    def test_pulses_keep_a_backup_from_taking_over_when_the_connection_is_lost(self):
        """A lossy link takes the connection: 5 s of pulses (2.5 thresholds) and the backup stays backup."""
        node = self.make_node()
        self.cut_and_pulse(node, 5.0)
        self.assertEqual(node.machine.role, BACKUP)
        self.assertEqual(node.status().peer.role, "live")

    def test_without_pulses_the_same_loss_is_a_takeover(self):
        """The same cut with pulses off (the default): the pulses are not taken, and the backup takes over at its threshold."""
        self.text = CONFIG  # pulses are off unless the configuration turns them on
        node = self.make_node()
        self.cut_and_pulse(node, 5.0)
        self.assertEqual(node.machine.role, LIVE)

    def test_each_pulse_is_answered_by_pulse_to_where_it_came_from(self):
        node = self.make_node()
        port, keys = self.cut_and_pulse(node, 1.0)
        answers = [(wire.decode(keys.open(*self.parts(data))), address) for data, address in port.written]
        self.assertEqual(len(answers), 4)
        for frame, address in answers:
            self.assertEqual((frame.kind, frame.name, frame.role), (wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP))
            self.assertEqual(address, ("10.9.9.1", 41000))
        self.assertEqual([frame.seq for frame, _ in answers], [2, 3, 4, 5])

    @staticmethod
    def parts(data):
        from iwayfailover.pulse import decode

        _, number, signed, body, mac = decode(data)
        return number, signed, body, mac

    def test_an_unsigned_backup_takes_no_pulse(self):
        """insecure = true on the backup: a pulse (which anyone could make) does not keep it from taking over."""
        from iwayfailover import auth

        self.ring = auth.KeyRing.unsigned()
        node = self.make_node()
        self.cut_and_pulse(node, 5.0)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(node.pulses_in.counts.received, 0)

    def test_a_probes_connection_gives_no_pulse_session(self):
        """A connection that only asked how this node stands (a QUERY) is no heartbeat link: pulses on its keys are refused."""
        from wirepeer import frame_bytes

        node = self.make_node()
        port = self.listening(node)
        protocol, transport = self.inbound(node)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.QUERY, "serv_a", wire.Role.STARTING, seq=1))
        self.pulse(port, PulseKeys.from_session(transport.far), seq=2)
        self.assertEqual((node.pulses_in.counts.received, node.pulses_in.counts.rejected), (0, 1))

    def test_a_replayed_pulse_is_refused_and_counted_and_a_copy_of_the_latest_is_dropped_quietly(self):
        """An older pulse after a newer one: refused and counted; the latest again (its second-address copy): neither."""
        from iwayfailover.pulse import LATE_WINDOW

        node = self.make_node()
        port = self.listening(node)
        _, keys = self.live_session(node)
        pulses = [keys.seal(wire.encode(peer_frame(wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=n)))
                  for n in range(1, LATE_WINDOW + 3)]
        for pulse in pulses:
            port.protocol.datagramReceived(pulse, ("10.9.9.1", 41000))
        port.protocol.datagramReceived(pulses[-1], ("10.9.8.1", 41000))  # the copy by the second address
        port.protocol.datagramReceived(pulses[-3], ("10.9.8.1", 41000))  # a copy that came slower still
        counts = node.pulses_in.counts
        self.assertEqual((counts.received, counts.rejected, counts.duplicates), (len(pulses), 0, 2))
        port.protocol.datagramReceived(pulses[0], ("10.9.9.1", 41000))  # 65 behind: a replay
        self.assertEqual((counts.received, counts.rejected, counts.duplicates), (len(pulses), 1, 2))

    def test_only_heartbeats_of_known_servers_are_taken(self):
        """An answer or a standing-down in a pulse, or a stranger's name: refused, nothing heard, no answer."""
        node = self.make_node()
        port = self.listening(node)
        _, keys = self.live_session(node)
        heard = node.status().peer.last_heartbeat_age
        self.reactor.advance(1.0)
        self.pulse(port, keys, kind=wire.Kind.STANDING_DOWN, seq=2)
        self.pulse(port, keys, kind=wire.Kind.ANSWER, seq=3)
        self.pulse(port, keys, name="intruder", seq=4)
        self.assertEqual(port.written, [])
        self.assertEqual((node.pulses_in.counts.received, node.pulses_in.counts.rejected), (0, 3))
        self.assertEqual(node.machine.role, BACKUP)
        self.assertGreater(node.status().peer.last_heartbeat_age, heard)

    def test_pulses_count_in_the_gaps_heard(self):
        """Heartbeats on the connection every 0.5 s and pulses between them: the gaps heard are 0.25 s."""
        node = self.make_node()
        port = self.listening(node)
        protocol, keys = self.live_session(node)
        from wirepeer import frame_bytes

        for seq in range(2, 10):
            self.reactor.advance(0.25)
            if seq % 2:
                protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=seq))
            else:
                self.pulse(port, keys, seq=seq)
        self.assertAlmostEqual(node.status().heartbeats.gaps.heard.largest, 0.25)

    def test_a_backup_with_a_second_address_listens_there_too_and_takes_each_pulse_once(self):
        """second_address = 10.9.8.2: UDP on the heartbeat port's number there too; a pulse's copy is a duplicate, not a refusal."""
        self.text = PULSES_ON.replace("[server:serv_b]\n", "[server:serv_b]\nsecond_address = 10.9.8.2\n")
        node = self.make_node()
        node.pulses_in.port_opened(FakeTCPPort("10.9.9.2", 1200))
        self.assertEqual([(p.number, p.interface) for p in self.reactor.udp], [(1200, "10.9.9.2"), (1200, "10.9.8.2")])
        node.pulses_in.port_closed(FakeTCPPort("10.9.9.2", 1200))
        self.assertEqual([p.listening for p in self.reactor.udp], [False, False])

    def test_the_pulse_port_follows_the_heartbeat_port(self):
        node = self.make_node()
        port = self.listening(node)
        node.pulses_in.port_opened(FakeTCPPort("10.9.9.2", 1300))
        node.pulses_in.port_closed(FakeTCPPort("10.9.9.2", 1200))
        self.assertFalse(port.listening)
        self.assertEqual([(p.number, p.listening) for p in self.reactor.udp], [(1200, False), (1300, True)])


class ServerPortWatcherTests(PulseTestCase):
    """ServerPort tells its watchers of each port it opens and closes (the pulse port follows the heartbeat port)."""

    def test_bind_rebind_and_stop_are_told(self):
        from twisted.internet.protocol import Factory, Protocol

        from iwayfailover.ports import ServerPort

        reactor = MemoryReactorClock()
        told = []

        class Watcher:
            def port_opened(self, port):
                told.append(("opened", port.getHost().port))

            def port_closed(self, port):
                told.append(("closed", port.getHost().port))

        server = ServerPort(reactor, "tcp:1200:interface=127.0.0.1", Factory.forProtocol(Protocol), "heartbeat port")
        server.watchers.append(Watcher())
        server.bind()
        server.rebind("tcp:1300:interface=127.0.0.1")
        server.startService()
        server.stopService()
        self.assertEqual(told, [("opened", 1200), ("opened", 1300), ("closed", 1200), ("closed", 1300)])




class PulseThreadTests(TestCase):
    """
    The real pulse thread, on a real reactor and loopback sockets: it pulses
    while the reactor is busy (this test's own code holds the reactor's
    thread), stops once the reactor has not turned for the bound, and its
    answers reach the reactor with the times the thread took.
    """

    PERIOD = 0.02
    THRESHOLD = 0.4  # the bound: 0.2 s after the reactor's last turn

    def setUp(self):
        import socket

        from twisted.internet import reactor

        from iwayfailover.pulsing import Pulser

        self.backup = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(self.backup.close)
        self.backup.bind(("127.0.0.1", 0))
        client, server = connection()
        self.far = PulseKeys.from_session(server)
        self.answers = []
        self.refused = []
        self.pulser = Pulser(
            reactor, lambda: peer_frame(wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=3, seq=7),
            lambda origin, frame, acked: self.answers.append((frame, acked)),
            lambda host, why: self.refused.append(why), lambda: self.THRESHOLD,
        )
        self.addCleanup(self.pulser.close)
        self.pulser.session(PulseKeys.from_session(client), self.backup.getsockname())
        self.pulser.start(lambda: self.PERIOD)

    def busy(self, seconds_quiet, first_within=2.0):
        """
        Hold the reactor's thread (busy: nothing else turns) while reading the
        pulses, answering each, until none has come for C{seconds_quiet} after
        the first (which may take C{first_within}: a loaded machine), 5 s at most.
        Returns [(arrival time, frame)].
        """
        import socket
        import time as clock

        book = PulseBook()
        book.add(self.far)
        got = []
        deadline = clock.monotonic() + 5.0
        self.backup.settimeout(first_within)
        while clock.monotonic() < deadline:
            if got:
                self.backup.settimeout(seconds_quiet)
            try:
                data, address = self.backup.recvfrom(2048)
            except socket.timeout:
                break
            keys, body = book.open(data)
            frame = wire.decode(body)
            got.append((clock.monotonic(), frame))
            answer = peer_frame(wire.Kind.ANSWER, "serv_b", wire.Role.BACKUP, seq=frame.seq)
            self.backup.sendto(keys.seal(wire.encode(answer)), address)
        return got

    def test_pulses_go_on_while_the_reactor_is_busy_and_stop_at_the_bound(self):
        import time as clock

        work = self.pulser.work
        stamp = work.stamp
        busy_since = clock.monotonic()
        got = self.busy(seconds_quiet=0.3)
        busy_until = clock.monotonic()
        bound = self.THRESHOLD / 2
        self.assertGreaterEqual(len(got), 3, "pulses go on while the reactor is busy")
        sent = [work.sent_at[n][0] for n in range(1, work.number + 1)]
        self.assertEqual(len(sent), len(got), "every pulse sent arrived (loopback)")
        self.assertLessEqual(max(sent) - stamp, bound, "none once the reactor's stamp is older than the bound")
        self.assertGreaterEqual(busy_until - max(sent), 0.3, "the reactor stayed busy on, and no pulse came")
        self.assertEqual({(f.kind, f.name, f.role, f.epoch) for _, f in got},
                         {(wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, 3)})
        self.assertEqual([f.seq & ~PULSE_SEQ for _, f in got], list(range(1, len(got) + 1)))
        self.assertEqual(self.answers, [], "answers wait for the reactor")

        from twisted.internet import task, reactor

        def handed_over():
            self.assertTrue(self.pulser.waiting(), "the thread read the answers; the reactor takes them")
            self.pulser.drain()
            self.assertEqual(len(self.answers), len(got))
            for (arrived, _), (frame, (sent, answered)) in zip(got, self.answers):
                self.assertEqual(frame.seq, 7, "the heartbeat number the pulse repeated")
                self.assertTrue(busy_since - self.PERIOD <= sent <= arrived <= answered < busy_until,
                                "both times taken by the thread while the reactor was busy")
            self.assertEqual(self.refused, [])

        return task.deferLater(reactor, 0.05, handed_over)

    def test_no_pulse_after_stop_and_the_thread_ends_at_close(self):
        self.busy(seconds_quiet=0.1)  # a few pulses, till the bound
        thread = self.pulser._thread
        self.assertTrue(thread.is_alive())

        from twisted.internet import task, reactor

        def stopped():
            self.pulser.stop()
            before = self.pulser.work.number  # pulses sent before the stop may still be in the socket
            after = [f.seq & ~PULSE_SEQ for _, f in self.busy(seconds_quiet=3 * self.PERIOD, first_within=0.3)]
            self.assertEqual([n for n in after if n > before], [])
            self.assertEqual(self.pulser.work.number, before)
            self.pulser.close()
            self.assertFalse(thread.is_alive())

        return task.deferLater(reactor, 0.05, stopped)

    def test_a_failing_pulse_thread_is_logged_on_the_reactor_and_ends(self):
        """Whatever goes wrong in the thread is logged, with its traceback, on the reactor; nothing escapes."""
        from twisted.internet import task, reactor
        from twisted.logger import globalLogPublisher

        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        thread = self.pulser._thread

        def boom():
            raise RuntimeError("broken on purpose")

        self.pulser.work.turn = boom
        self.pulser._wake()
        thread.join(5.0)
        self.assertFalse(thread.is_alive())

        def logged():
            [event] = [e for e in events if "the pulse thread failed" in e.get("log_format", "")]
            self.assertIn("broken on purpose", event["log_failure"].getTraceback())
            self.flushLoggedErrors(RuntimeError)

        return task.deferLater(reactor, 0.05, logged)
