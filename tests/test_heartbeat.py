"""
The heartbeat Protocol/Factory: frames in, frames out, a bad frame drops the
connection, and refusals are logged at most once per peer per interval.
"""

import struct

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import Logger, formatEvent
from twisted.python.failure import Failure
from twisted.test import iosim
from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from iwayfailover import auth, wire
from iwayfailover.heartbeat import HeartbeatFactory, HeartbeatProtocol, IFrameHandler, RefusalLog
from wirepeer import RING, greet, peer_frame, prefixed, strings

PEER = IPv4Address("TCP", "192.0.2.7", 40000)
HOST = IPv4Address("TCP", "192.0.2.1", 1200)


def frame(seq=1, name="serv_a", kind=wire.Kind.HEARTBEAT, role=wire.Role.LIVE):
    return peer_frame(kind, name, role, epoch=2, seq=seq)


GARBAGE = prefixed(b"GE" + b"\x00" * 60)
"""Bytes of a plausible size that no key signed."""


@implementer(IFrameHandler)
class RecordingHandler:
    """Records, in order, what the protocol told it; can be told to fail."""

    def __init__(self, fail_on=()):
        self.events = []
        self.fail_on = fail_on

    def _record(self, event, *args):
        self.events.append((event,) + args)
        if event in self.fail_on:
            raise RuntimeError(f"handler broke on {event}")

    def connection_made(self, protocol):
        self._record("connection_made", protocol)

    def frame_received(self, protocol, frame):
        self._record("frame_received", protocol, frame)

    def connection_lost(self, protocol, reason):
        self._record("connection_lost", protocol, reason)

    @property
    def frames(self):
        return [e[2] for e in self.events if e[0] == "frame_received"]


class ProtocolHarness:
    """Builds a HeartbeatProtocol on a StringTransport, with log events captured."""

    def setUp(self):
        self.make_fixtures()

    def make_fixtures(self):
        """
        A fresh clock and refusal log, with nothing recorded yet: setUp's
        work, and what a property test calls before each of its examples
        (it registers no cleanup, so calling it again leaves nothing behind).
        """
        self.clock = Clock()
        self.refusal_events = []
        self.handler_failures = []
        self.refusals = RefusalLog(self.clock)
        self.refusals.log = Logger(observer=self.refusal_events.append)

    def connect(self, handler=None, hello=True):
        """The accepting side of a connection; the far end has said hello unless C{hello} is false."""
        self.handler = handler if handler is not None else RecordingHandler()
        self.factory = HeartbeatFactory(self.handler, self.refusals, lambda: RING, self.clock, initiating=False)
        self.factory.log = Logger(observer=self.handler_failures.append)
        self.protocol = self.factory.buildProtocol(PEER)
        self.transport = StringTransport(hostAddress=HOST, peerAddress=PEER)
        self.protocol.makeConnection(self.transport)
        if hello:
            self.far = greet(self.protocol, self.transport, far_is_client=True)
        return self.protocol

    def on_the_wire(self, f):
        """C{f} sealed by the far end of the connection, next in its order."""
        return prefixed(self.far.seal(wire.encode(f)))

    def sent(self):
        """The frames the protocol wrote since the handshake, opened by the far end."""
        return [wire.decode(self.far.open(body)) for body in strings(self.transport.value())]

    def refusal_lines(self):
        return [formatEvent(e) for e in self.refusal_events]


class HeartbeatProtocolReceiveTests(ProtocolHarness, unittest.TestCase):
    """Incoming bytes become frames for the handler."""

    def test_recorder_provides_the_handler_interface(self):
        """The test double really provides IFrameHandler."""
        verifyObject(IFrameHandler, RecordingHandler())

    def test_factory_builds_heartbeat_protocols_bound_to_it(self):
        """buildProtocol gives a HeartbeatProtocol whose factory is the factory."""
        protocol = self.connect()

        self.assertIsInstance(protocol, HeartbeatProtocol)
        self.assertIs(protocol.factory, self.factory)

    def test_connection_made_reaches_the_handler(self):
        """A new connection is announced to the handler with its protocol."""
        protocol = self.connect()

        self.assertEqual(self.handler.events, [("connection_made", protocol)])

    def test_frame_in_one_piece_reaches_the_handler(self):
        """A whole frame in one dataReceived is handed over, decoded."""
        protocol = self.connect()

        protocol.dataReceived(self.on_the_wire(frame(seq=5)))

        self.assertEqual(self.handler.events[-1], ("frame_received", protocol, frame(seq=5)))

    def test_frame_split_byte_by_byte_reaches_the_handler_once_complete(self):
        """A frame arriving one byte at a time is handed over once, after its last byte."""
        protocol = self.connect()
        data = self.on_the_wire(frame(seq=6))

        for i in range(len(data) - 1):
            protocol.dataReceived(data[i:i + 1])
        before_last = list(self.handler.frames)
        protocol.dataReceived(data[-1:])

        self.assertEqual(before_last, [])
        self.assertEqual(self.handler.frames, [frame(seq=6)])

    def test_several_frames_in_one_chunk_each_reach_the_handler(self):
        """Three frames in one dataReceived are handed over in order."""
        protocol = self.connect()

        protocol.dataReceived(b"".join(self.on_the_wire(frame(seq=n)) for n in (1, 2, 3)))

        self.assertEqual(self.handler.frames, [frame(seq=1), frame(seq=2), frame(seq=3)])

    def test_frames_split_across_chunk_boundaries_reach_the_handler(self):
        """Two frames cut at an odd place across two chunks are both handed over."""
        protocol = self.connect()
        data = self.on_the_wire(frame(seq=1)) + self.on_the_wire(frame(seq=2))

        protocol.dataReceived(data[:37])
        protocol.dataReceived(data[37:])

        self.assertEqual(self.handler.frames, [frame(seq=1), frame(seq=2)])

    def test_good_frames_keep_the_connection_open(self):
        """Valid frames do not close the connection."""
        protocol = self.connect()

        protocol.dataReceived(self.on_the_wire(frame()))

        self.assertFalse(self.transport.disconnecting)
        self.assertFalse(self.transport.disconnected)


class HeartbeatProtocolRefusalTests(ProtocolHarness, unittest.TestCase):
    """Bad input drops the connection and is reported."""

    def test_garbage_frame_aborts_the_connection(self):
        """A frame that does not decode aborts (not merely closes) the connection."""
        protocol = self.connect()

        protocol.dataReceived(GARBAGE)

        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.handler.frames, [])

    def test_garbage_frame_is_reported_with_peer_and_reason(self):
        """The refusal log names the peer host and why the frame was refused."""
        protocol = self.connect()

        protocol.dataReceived(GARBAGE)

        [line] = self.refusal_lines()
        self.assertIn("192.0.2.7", line)
        self.assertIn("bad MAC", line)

    def test_a_signed_body_that_is_not_a_frame_is_refused_by_the_decoder(self):
        """A correctly signed body that does not decode is refused with the decoder's reason."""
        protocol = self.connect()

        protocol.dataReceived(prefixed(self.far.seal(b"GE" + b"\x00" * 30)))

        [line] = self.refusal_lines()
        self.assertIn("not a heartbeat frame", line)
        self.assertTrue(self.transport.disconnected)

    def test_frames_after_garbage_in_the_same_chunk_are_not_delivered(self):
        """Once a frame is refused, valid frames behind it in the same bytes are dropped."""
        protocol = self.connect()

        protocol.dataReceived(self.on_the_wire(frame(seq=1)) + GARBAGE + self.on_the_wire(frame(seq=2)))

        self.assertEqual(self.handler.frames, [frame(seq=1)])

    def test_oversize_length_prefix_aborts_before_the_body_arrives(self):
        """A length prefix over MAX_FRAME aborts at once, without waiting for the body."""
        protocol = self.connect()

        protocol.dataReceived(struct.pack("!I", 2**31))

        self.assertTrue(self.transport.disconnected)
        [line] = self.refusal_lines()
        self.assertIn("over the limit", line)

    def test_length_prefix_just_over_max_frame_aborts(self):
        """A length prefix one over the largest sealed frame is refused."""
        protocol = self.connect()

        protocol.dataReceived(struct.pack("!I", HeartbeatProtocol.MAX_LENGTH + 1))

        self.assertTrue(self.transport.disconnected)

    def test_length_prefix_of_max_frame_waits_for_the_body(self):
        """A length prefix of exactly the largest sealed frame (MAX_FRAME plus the seal) is not refused by its size."""
        protocol = self.connect()

        protocol.dataReceived(struct.pack("!I", HeartbeatProtocol.MAX_LENGTH))

        self.assertFalse(self.transport.disconnecting)
        self.assertEqual(self.refusal_lines(), [])

    def test_connection_closed_mid_frame_is_reported(self):
        """A connection lost with part of a frame unread is reported as a refusal."""
        protocol = self.connect()
        protocol.dataReceived(self.on_the_wire(frame())[:10])

        protocol.connectionLost(Failure(ConnectionDone()))

        [line] = self.refusal_lines()
        self.assertIn("192.0.2.7", line)
        self.assertIn("closed inside a frame", line)

    def test_connection_closed_between_frames_is_not_reported(self):
        """A connection lost after whole frames only is no refusal."""
        protocol = self.connect()
        protocol.dataReceived(self.on_the_wire(frame()))

        protocol.connectionLost(Failure(ConnectionDone()))

        self.assertEqual(self.refusal_lines(), [])

    def test_refused_connection_is_reported_only_once(self):
        """After an oversize prefix, more bytes and the close add no second report."""
        protocol = self.connect()
        protocol.dataReceived(struct.pack("!I", 2**31))

        protocol.dataReceived(GARBAGE)
        protocol.connectionLost(Failure(ConnectionLost()))
        self.clock.advance(60)  # no rate limit would hide a second report now

        self.assertEqual(len(self.refusal_lines()), 1)

    def test_connection_lost_reaches_the_handler_with_the_reason(self):
        """The handler hears of the lost connection, with its reason."""
        protocol = self.connect()
        reason = Failure(ConnectionDone())

        protocol.connectionLost(reason)

        self.assertEqual(self.handler.events[-1], ("connection_lost", protocol, reason))

    def test_connection_lost_reaches_the_handler_after_a_refusal(self):
        """A refused connection is still reported lost to the handler."""
        protocol = self.connect()
        protocol.dataReceived(GARBAGE)

        protocol.connectionLost(Failure(ConnectionLost()))

        self.assertEqual(self.handler.events[-1][0], "connection_lost")


class HandlerFailureTests(ProtocolHarness, unittest.TestCase):
    """A failing handler costs its connection, never the reactor."""

    def test_handler_error_on_a_frame_does_not_escape_data_received(self):
        """An exception from frame_received stays inside the protocol."""
        protocol = self.connect(RecordingHandler(fail_on={"frame_received"}))

        protocol.dataReceived(self.on_the_wire(frame()))  # must not raise

        self.assertEqual(self.handler.frames, [frame()])

    def test_handler_error_on_a_frame_drops_the_connection(self):
        """After frame_received raises, the connection is aborted."""
        protocol = self.connect(RecordingHandler(fail_on={"frame_received"}))

        protocol.dataReceived(self.on_the_wire(frame()))

        self.assertTrue(self.transport.disconnected)

    def test_handler_error_on_a_frame_stops_delivery(self):
        """Frames behind the one the handler failed on are not delivered."""
        protocol = self.connect(RecordingHandler(fail_on={"frame_received"}))

        protocol.dataReceived(self.on_the_wire(frame(seq=1)) + self.on_the_wire(frame(seq=2)))

        self.assertEqual(self.handler.frames, [frame(seq=1)])

    def test_handler_error_is_logged_with_its_traceback(self):
        """The handler's exception is logged as a failure, naming the event."""
        protocol = self.connect(RecordingHandler(fail_on={"frame_received"}))

        protocol.dataReceived(self.on_the_wire(frame()))

        [event] = self.handler_failures
        self.assertIsInstance(event["log_failure"].value, RuntimeError)
        self.assertIn("frame_received", formatEvent(event))

    def test_handler_error_on_connection_made_drops_the_connection(self):
        """If connection_made raises, the connection is aborted and nothing escapes."""
        self.connect(RecordingHandler(fail_on={"connection_made"}))

        self.assertTrue(self.transport.disconnected)

    def test_handler_error_on_connection_lost_does_not_escape(self):
        """An exception from connection_lost stays inside the protocol, and is logged."""
        protocol = self.connect(RecordingHandler(fail_on={"connection_lost"}))

        protocol.connectionLost(Failure(ConnectionDone()))  # must not raise

        self.assertEqual(len(self.handler_failures), 1)


class SendTests(ProtocolHarness, unittest.TestCase):
    """Outgoing frames."""

    def test_send_writes_a_length_prefixed_sealed_frame(self):
        """send() writes the 4-byte big-endian length, then the frame sealed for the far end."""
        protocol = self.connect()
        body = wire.encode(frame(seq=9))

        protocol.send(frame(seq=9))

        data = self.transport.value()
        (length,) = struct.unpack("!I", data[:4])
        self.assertEqual(length, len(data) - 4)
        self.assertEqual(length, len(body) + auth.OVERHEAD)
        self.assertEqual(self.far.open(data[4:]), body)

    def test_sent_frames_follow_one_another(self):
        """Two sends write two sealed frames, in order."""
        protocol = self.connect()

        protocol.send(frame(seq=1))
        protocol.send(frame(seq=2))

        self.assertEqual(self.sent(), [frame(seq=1), frame(seq=2)])

    def test_nothing_is_sent_before_the_far_end_says_hello(self):
        """A frame sent before the handshake ends is not written (there is no session to seal it)."""
        protocol = self.connect(hello=False)
        self.transport.clear()

        protocol.send(frame(seq=1))

        self.assertEqual(self.transport.value(), b"")

    def test_send_on_a_refused_connection_writes_nothing(self):
        """Once a connection is refused, send() stays silent."""
        protocol = self.connect()
        protocol.dataReceived(GARBAGE)

        protocol.send(frame())

        self.assertEqual(self.transport.value(), b"")


class RefusalLogTests(unittest.TestCase):
    """Refusals are logged at most once per peer per interval, with a count."""

    def setUp(self):
        self.clock = Clock()
        self.events = []
        self.refusals = RefusalLog(self.clock, every=10.0)
        self.refusals.log = Logger(observer=self.events.append)

    def lines(self):
        return [formatEvent(e) for e in self.events]

    def test_many_hosts_together_get_a_budget_of_lines(self):
        """A thousand addresses at once (an IPv6 range, say): 20 lines per interval, the rest counted in the next one."""
        for n in range(1000):
            self.refusals.report(f"2001:db8::{n:x}", "bad MAC")
        self.assertEqual(len(self.events), 20)
        self.clock.advance(10)
        self.refusals.report("192.0.2.9", "bad MAC")
        self.assertEqual(len(self.events), 21)
        self.assertIn("980 refusals from other hosts not logged", self.lines()[-1])

    def test_first_refusal_is_logged_as_a_warning(self):
        """The first refusal from a peer is logged at once, with peer and reason."""
        self.refusals.report("192.0.2.7", "bad magic")

        [event] = self.events
        self.assertEqual(event["log_level"].name, "warn")
        self.assertEqual((event["peer"], event["why"]), ("192.0.2.7", "bad magic"))
        self.assertIn("192.0.2.7", formatEvent(event))
        self.assertIn("bad magic", formatEvent(event))

    def test_refusals_within_the_interval_are_not_logged(self):
        """Further refusals from the same peer within `every` seconds add no line."""
        self.refusals.report("192.0.2.7", "bad magic")

        self.clock.advance(9.9)
        self.refusals.report("192.0.2.7", "bad magic")
        self.refusals.report("192.0.2.7", "bad magic")

        self.assertEqual(len(self.events), 1)

    def test_refusal_after_the_interval_is_logged(self):
        """A refusal `every` seconds after the last line is logged again."""
        self.refusals.report("192.0.2.7", "bad magic")

        self.clock.advance(10.0)
        self.refusals.report("192.0.2.7", "bad version")

        self.assertEqual(len(self.events), 2)
        self.assertIn("bad version", self.lines()[1])

    def test_next_line_counts_the_suppressed_refusals(self):
        """The next logged line says how many refusals went unlogged since the last."""
        self.refusals.report("192.0.2.7", "bad magic")
        self.clock.advance(1)
        self.refusals.report("192.0.2.7", "bad magic")
        self.refusals.report("192.0.2.7", "bad magic")
        self.refusals.report("192.0.2.7", "bad magic")

        self.clock.advance(10)
        self.refusals.report("192.0.2.7", "bad magic")

        self.assertIn("3 more refused", self.lines()[1])

    def test_first_line_has_no_count(self):
        """A line with no suppressed refusals before it mentions no count."""
        self.refusals.report("192.0.2.7", "bad magic")

        self.assertNotIn("more refused", self.lines()[0])

    def test_count_starts_again_after_it_is_logged(self):
        """Suppressed refusals are counted once: the line after next starts from zero."""
        self.refusals.report("192.0.2.7", "bad magic")
        self.refusals.report("192.0.2.7", "bad magic")
        self.clock.advance(10)
        self.refusals.report("192.0.2.7", "bad magic")

        self.clock.advance(10)
        self.refusals.report("192.0.2.7", "bad magic")

        self.assertIn("1 more refused", self.lines()[1])
        self.assertNotIn("more refused", self.lines()[2])

    def test_peers_are_limited_separately(self):
        """A refusal from a second peer is logged even while the first is quiet."""
        self.refusals.report("192.0.2.7", "bad magic")

        self.refusals.report("192.0.2.8", "bad magic")

        self.assertEqual([e["peer"] for e in self.events], ["192.0.2.7", "192.0.2.8"])

    def test_suppressed_counts_are_kept_per_peer(self):
        """Refusals suppressed for one peer are not counted in another peer's line."""
        self.refusals.report("192.0.2.7", "bad magic")
        self.refusals.report("192.0.2.7", "bad magic")

        self.refusals.report("192.0.2.8", "bad magic")

        self.assertNotIn("more refused", self.lines()[1])

    def test_default_interval_is_ten_seconds(self):
        """Without `every`, a peer is logged at most once per 10 seconds."""
        refusals = RefusalLog(self.clock)
        refusals.log = Logger(observer=self.events.append)
        refusals.report("192.0.2.7", "bad magic")

        self.clock.advance(9.5)
        refusals.report("192.0.2.7", "bad magic")
        self.clock.advance(0.5)
        refusals.report("192.0.2.7", "bad magic")

        self.assertEqual(len(self.events), 2)


class InMemoryConnectionTests(unittest.TestCase):
    """A client and a server HeartbeatProtocol joined in memory."""

    def connected(self, server_ring=RING, client_ring=RING):
        """Both handlers, both protocols and the pump of a client joined to a server, hellos exchanged."""
        clock = Clock()
        self.refusal_events = []
        refusals = RefusalLog(clock)
        refusals.log = Logger(observer=self.refusal_events.append)
        server_handler = RecordingHandler()
        client_handler = RecordingHandler()
        server_factory = HeartbeatFactory(server_handler, refusals, lambda: server_ring, clock, initiating=False)
        client_factory = HeartbeatFactory(client_handler, refusals, lambda: client_ring, clock, initiating=True)
        client, server, pump = iosim.connectedServerAndClient(
            lambda: server_factory.buildProtocol(PEER),
            lambda: client_factory.buildProtocol(HOST),
        )
        pump.flush()
        return server_handler, client_handler, client, server, pump

    def test_both_sides_are_introduced_once_the_hellos_cross(self):
        """Each handler hears of the connection, and both hold a session."""
        server_handler, client_handler, client, server, pump = self.connected()

        self.assertEqual([e[0] for e in server_handler.events], ["connection_made"])
        self.assertEqual([e[0] for e in client_handler.events], ["connection_made"])
        self.assertTrue(client.authenticated and server.authenticated)

    def test_frames_flow_both_ways_many_times(self):
        """A hundred heartbeats and answers cross without a refusal."""
        server_handler, client_handler, client, server, pump = self.connected()

        for n in range(1, 101):
            client.send(frame(seq=n))
            server.send(frame(seq=n, name="serv_b", kind=wire.Kind.ANSWER, role=wire.Role.BACKUP))
        pump.flush()

        self.assertEqual([f.seq for f in server_handler.frames], list(range(1, 101)))
        self.assertEqual([f.seq for f in client_handler.frames], list(range(1, 101)))

    def test_a_second_key_in_the_ring_is_accepted_while_keys_change(self):
        """A node holding [new, old] talks with one still holding [old, new]: either key verifies."""
        old, new = b"o" * 40, b"n" * 40
        server_handler, client_handler, client, server, pump = self.connected(
            server_ring=auth.KeyRing(keys=(new, old)), client_ring=auth.KeyRing(keys=(old, new)),
        )

        client.send(frame(seq=1))
        server.send(frame(seq=1, name="serv_b", kind=wire.Kind.ANSWER, role=wire.Role.BACKUP))
        pump.flush()

        self.assertEqual(len(server_handler.frames), 1)
        self.assertEqual(len(client_handler.frames), 1)

    def test_nodes_with_different_keys_refuse_each_other(self):
        """A frame signed with another key is refused with a line saying so."""
        server_handler, client_handler, client, server, pump = self.connected(
            server_ring=auth.KeyRing(keys=(b"s" * 40,)), client_ring=auth.KeyRing(keys=(b"c" * 40,)),
        )

        client.send(frame(seq=1))
        pump.flush()

        self.assertEqual(server_handler.frames, [])
        self.assertIn("bad MAC", formatEvent(self.refusal_events[0]))

    def test_a_node_without_a_key_and_one_with_a_key_refuse_each_other(self):
        """insecure = true on one side only: the keyed side refuses the unsigned frames."""
        server_handler, client_handler, client, server, pump = self.connected(client_ring=auth.KeyRing.unsigned())

        client.send(frame(seq=1))
        pump.flush()

        self.assertEqual(server_handler.frames, [])

    def test_two_insecure_nodes_talk(self):
        """With insecure = true on both sides, frames flow (checked for damage only)."""
        unsigned = auth.KeyRing.unsigned()
        server_handler, client_handler, client, server, pump = self.connected(unsigned, unsigned)

        client.send(frame(seq=1))
        pump.flush()

        self.assertEqual(server_handler.frames, [frame(seq=1)])

    def test_frame_sent_by_a_client_reaches_the_server_handler(self):
        """A frame sent on the live node's side arrives, decoded, at the backup's handler."""
        server_handler, client_handler, client, server, pump = self.connected()

        client.send(frame(seq=42))
        pump.flush()

        self.assertEqual(server_handler.frames, [frame(seq=42)])
        self.assertEqual(client_handler.frames, [])

    def test_answer_sent_by_the_server_reaches_the_client_handler(self):
        """The backup's answer travels back to the live node's handler."""
        server_handler, client_handler, client, server, pump = self.connected()
        answer = frame(seq=42, name="serv_b", kind=wire.Kind.ANSWER, role=wire.Role.BACKUP)

        server.send(answer)
        pump.flush()

        self.assertEqual(client_handler.frames, [answer])


class HandshakeTests(ProtocolHarness, unittest.TestCase):
    """The hello each way at connect time."""

    def test_each_side_says_hello_with_a_fresh_nonce_at_once(self):
        """On connect a protocol writes exactly one hello; two connections use different nonces."""
        self.connect(hello=False)
        [first] = strings(self.transport.value())
        self.connect(hello=False)
        [second] = strings(self.transport.value())

        self.assertEqual(len(first), auth.HELLO_SIZE)
        self.assertNotEqual(auth.parse_hello(first), auth.parse_hello(second))

    def test_the_handler_hears_of_the_connection_only_after_the_hello(self):
        """Before the far end's hello the handler knows nothing; after it, connection_made."""
        protocol = self.connect(hello=False)
        before = list(self.handler.events)

        greet(protocol, self.transport, far_is_client=True)

        self.assertEqual(before, [])
        self.assertEqual(self.handler.events, [("connection_made", protocol)])

    def test_a_frame_instead_of_a_hello_is_refused(self):
        """An old-style unsigned frame where the hello belongs is refused, naming the likely cause."""
        protocol = self.connect(hello=False)

        protocol.dataReceived(prefixed(wire.encode(frame())))

        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.handler.events, [])
        self.assertIn("before the hello", self.refusal_lines()[0])

    def test_a_hello_of_another_version_is_refused(self):
        """A hello of an unknown version is refused with both versions named."""
        protocol = self.connect(hello=False)

        protocol.dataReceived(prefixed(auth.HELLO_MAGIC + bytes([9]) + bytes(16)))

        self.assertIn("version 9", self.refusal_lines()[0])
        self.assertTrue(self.transport.disconnected)

    def test_a_silent_far_end_is_dropped_after_the_hello_timeout(self):
        """No hello within the timeout: the connection is refused."""
        self.connect(hello=False)

        self.clock.advance(self.factory.hello_timeout - 0.01)
        still_open = not self.transport.disconnected
        self.clock.advance(0.02)

        self.assertTrue(still_open)
        self.assertTrue(self.transport.disconnected)
        self.assertIn("no hello within", self.refusal_lines()[0])

    def test_the_hello_timer_ends_with_the_handshake(self):
        """After the hello, the timeout no longer applies."""
        self.connect()

        self.clock.advance(60)

        self.assertFalse(self.transport.disconnected)
        self.assertEqual(self.clock.getDelayedCalls(), [])


class SealTests(ProtocolHarness, unittest.TestCase):
    """Every frame after the hello must carry a good MAC and the next number."""

    def assertRefusedUnheard(self, reason):
        self.assertEqual(self.handler.frames, [])
        self.assertTrue(self.transport.disconnected)
        self.assertEqual(self.factory.rejected, 1)
        self.assertIn(reason, self.refusal_lines()[0])

    def test_a_forged_frame_is_refused_and_not_handed_over(self):
        """A frame signed with a key this node does not hold never reaches the handler."""
        protocol = self.connect()
        forger = auth.Session(auth.KeyRing(keys=(b"f" * 40,)), True, bytes(16), bytes(16))

        protocol.dataReceived(prefixed(forger.seal(wire.encode(frame()))))

        self.assertRefusedUnheard("bad MAC")

    def test_a_changed_frame_is_refused(self):
        """One bit changed in a signed frame (here its epoch) makes it a forgery."""
        protocol = self.connect()
        sealed = bytearray(self.far.seal(wire.encode(frame())))
        sealed[auth.NUMBER_SIZE + 13] ^= 0x01

        protocol.dataReceived(prefixed(bytes(sealed)))

        self.assertRefusedUnheard("bad MAC")

    def test_a_replayed_frame_is_refused(self):
        """The same signed frame sent twice on a connection: the second is refused as replayed."""
        protocol = self.connect()
        once = self.on_the_wire(frame(seq=1))
        protocol.dataReceived(once)

        protocol.dataReceived(once)

        self.assertEqual(self.handler.frames, [frame(seq=1)])
        self.assertTrue(self.transport.disconnected)
        self.assertIn("replayed", self.refusal_lines()[0])

    def test_reordered_frames_are_refused(self):
        """The second frame arriving first is refused as out of order."""
        protocol = self.connect()
        first, second = self.on_the_wire(frame(seq=1)), self.on_the_wire(frame(seq=2))

        protocol.dataReceived(second + first)

        self.assertRefusedUnheard("out of order")

    def test_a_frame_recorded_on_another_connection_is_refused(self):
        """A frame signed for an earlier connection (other nonces) fails on a new one."""
        self.connect()
        recorded = self.on_the_wire(frame(seq=1))
        protocol = self.connect()  # a new connection, with a new nonce on this side

        protocol.dataReceived(recorded)

        self.assertRefusedUnheard("bad MAC")

    def test_a_frame_sent_back_to_its_sender_is_refused(self):
        """A node's own sealed frame reflected back at it fails (the direction is signed)."""
        protocol = self.connect()
        protocol.send(frame(seq=1, name="serv_b", kind=wire.Kind.ANSWER, role=wire.Role.BACKUP))
        [own] = strings(self.transport.value())

        protocol.dataReceived(prefixed(own))

        self.assertRefusedUnheard("bad MAC")

    def test_a_truncated_frame_is_refused(self):
        """A signed frame with its last bytes cut off (length prefix adjusted) is refused."""
        protocol = self.connect()
        sealed = self.far.seal(wire.encode(frame()))

        protocol.dataReceived(prefixed(sealed[:-5]))

        self.assertRefusedUnheard("bad MAC")

    def test_a_frame_shorter_than_its_seal_is_refused(self):
        """A body too short to hold a number and a MAC is refused for its size."""
        protocol = self.connect()

        protocol.dataReceived(prefixed(b"x" * 10))

        self.assertRefusedUnheard("too short")


class ProtocolFuzzTests(ProtocolHarness, unittest.TestCase):
    """Any bytes from the network, before or after the hello, are refused or ignored; no exception escapes."""

    @settings(max_examples=200, deadline=None)
    @given(st.binary(max_size=600), st.booleans())
    def test_any_bytes_deliver_no_frame_and_raise_nothing(self, data, after_hello):
        """Whatever bytes arrive, in pieces, before or after the hello: no frame reaches the handler and nothing raises."""
        self.make_fixtures()
        self.connect(hello=after_hello)
        for start in range(0, len(data), 37):  # in pieces, as TCP may deliver them
            self.protocol.dataReceived(data[start:start + 37])
        self.assertEqual(self.handler.frames, [])
        self.assertEqual(self.handler_failures, [])
