"""Bounded network questions: their outcomes, driven on a MemoryReactorClock."""

import struct

from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial import unittest

from iwayfailover import auth, probe, wire
from iwayfailover.heartbeat import RefusalLog
from wirepeer import RING, frames_in, greet, peer_frame, prefixed

QUESTION = peer_frame(wire.Kind.QUERY, "serv_b", wire.Role.BACKUP, epoch=0, seq=0)


class QueryTests(unittest.TestCase):
    def setUp(self):
        self.reactor = MemoryReactorClock()
        target = probe.endpoint(self.reactor, "10.9.9.1", 1200, 0.5)
        self.reply = probe.query(self.reactor, target, QUESTION, 0.5, RefusalLog(Clock()), RING)
        self.factory = self.reactor.tcpClients[-1][2]

    def connect(self, hello=True, ring=RING):
        """Complete the connection; the node there says hello unless C{hello} is false."""
        protocol = self.factory.buildProtocol(IPv4Address("TCP", "10.9.9.1", 1200))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "10.9.9.1", 1200))
        protocol.makeConnection(transport)
        if hello:
            greet(protocol, transport, far_is_client=False, ring=ring)
        return protocol, transport

    def test_the_query_goes_to_the_address_given(self):
        """An IP address is dialled directly (no name lookup) on the port given."""
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("10.9.9.1", 1200))

    def test_the_query_frame_is_sent_on_connection(self):
        """Once connected, the query frame goes out at once."""
        _, transport = self.connect()
        self.assertEqual(frames_in(transport), [QUESTION])

    def test_an_answer_is_answered(self):
        """An answer frame gives ANSWERED with the frame: the node is alive."""
        protocol, transport = self.connect()
        answer = peer_frame(wire.Kind.ANSWER, "serv_a", wire.Role.LIVE, epoch=3, seq=0)
        protocol.dataReceived(prefixed(transport.far.seal(wire.encode(answer))))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.frame, reply.outcome, reply.gone), (answer, probe.ANSWERED, False))

    def test_a_refused_connection_means_gone(self):
        """A refused connection: nothing listens, the process is gone."""
        self.factory.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.REFUSED, True))

    def test_a_connection_reset_while_connecting_means_gone(self):
        """Reset during the connect (a process killed as it accepted): the host answered for a dead port."""
        import errno

        from twisted.internet.error import getConnectError

        self.factory.clientConnectionFailed(None, Failure(getConnectError((errno.ECONNRESET, "Connection reset by peer"))))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.REFUSED, True))

    def test_another_connect_error_proves_nothing(self):
        """No route, or any other failure to connect, is not proof of death."""
        import errno

        from twisted.internet.error import getConnectError

        self.factory.clientConnectionFailed(None, Failure(getConnectError((errno.EHOSTUNREACH, "No route to host"))))
        self.assertFalse(self.successResultOf(self.reply).gone)

    def test_a_connection_closed_without_an_answer_means_gone(self):
        """Accepted, then closed before any hello (a dying process's backlog): gone."""
        protocol, _ = self.connect(hello=False)
        protocol.connectionLost(Failure(ConnectionDone()))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.CLOSED, True))

    def test_a_tls_handshake_refused_before_the_hello_proves_nothing(self):
        """A TLS port that refused this node's certificate (or whose certificate it refused) is a live process."""
        from OpenSSL import SSL

        protocol, _ = self.connect(hello=False)
        protocol.connectionLost(Failure(SSL.Error([("SSL routines", "", "certificate verify failed")])))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.UNREACHABLE, False))
        self.assertIn("certificate verify failed", reply.why)

    def test_a_close_after_the_hello_proves_nothing(self):
        """A node that said hello was alive: its closing unanswered (it refused this key) is no proof of death."""
        protocol, _ = self.connect()
        protocol.connectionLost(Failure(ConnectionDone()))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.UNREACHABLE, False))
        self.assertIn("same key", reply.why)

    def test_an_answer_signed_with_another_key_proves_nothing(self):
        """An answer this node refuses (another key) ends the probe inconclusive, not gone."""
        protocol, transport = self.connect(ring=auth.KeyRing(keys=(b"x" * 40,)))
        answer = peer_frame(wire.Kind.ANSWER, "serv_a", wire.Role.LIVE, epoch=3, seq=0)
        protocol.dataReceived(prefixed(transport.far.seal(wire.encode(answer))))
        protocol.connectionLost(Failure(ConnectionDone()))
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.UNREACHABLE, False))
        self.assertIn("bad MAC", reply.why)

    def test_no_answer_in_time_proves_nothing_and_closes_the_connection(self):
        """Connected but silent past the timeout (a hung process): unreachable, not gone; the connection is closed."""
        _, transport = self.connect()
        self.reactor.advance(0.5)
        reply = self.successResultOf(self.reply)
        self.assertEqual((reply.outcome, reply.gone), (probe.UNREACHABLE, False))
        self.assertTrue(transport.disconnecting)

    def test_a_port_that_never_says_hello_is_closed_at_the_timeout(self):
        """Accepted but no hello (a hung process, a stalled TLS handshake): unreachable, and the connection is closed."""
        _, transport = self.connect(hello=False)
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(self.reply).outcome, probe.UNREACHABLE)
        self.assertTrue(transport.disconnecting)

    def test_no_connection_in_time_proves_nothing(self):
        """A connection attempt that hangs (a dead host, a cut cable) times out as unreachable."""
        self.reactor.advance(0.5)
        self.assertEqual(self.successResultOf(self.reply).outcome, probe.UNREACHABLE)


class ReachTests(unittest.TestCase):
    def test_accepted_connection_is_open_and_closed_at_once(self):
        """A connection that is accepted counts as open and is hung up at once."""
        reactor = MemoryReactorClock()
        d = probe.reach(reactor, "10.9.9.9", 22, 1.0)
        protocol = reactor.tcpClients[-1][2].buildProtocol(None)
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.assertEqual(self.successResultOf(d), probe.OPEN)
        self.assertTrue(transport.disconnecting)

    def test_refused_connection_is_refused(self):
        """A refusal is told apart from silence."""
        reactor = MemoryReactorClock()
        d = probe.reach(reactor, "10.9.9.9", 22, 1.0)
        reactor.tcpClients[-1][2].clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        self.assertEqual(self.successResultOf(d), probe.REFUSED)

    def test_silence_is_unreachable(self):
        """No answer within the timeout is unreachable."""
        reactor = MemoryReactorClock()
        d = probe.reach(reactor, "10.9.9.9", 22, 1.0)
        reactor.advance(1.0)
        self.assertEqual(self.successResultOf(d), probe.UNREACHABLE)

    def test_ipv6_addresses_are_dialled_directly(self):
        """An IPv6 address needs no lookup either."""
        reactor = MemoryReactorClock()
        probe.reach(reactor, "::1", 22, 1.0)
        self.assertEqual(reactor.tcpClients[-1][:2], ("::1", 22))


class ReachAnyTests(unittest.TestCase):
    def test_first_witness_whose_host_answers_is_returned(self):
        """Witnesses are tried at once; one that refused still proves its host is reachable."""
        reactor = MemoryReactorClock()
        d = probe.reach_any(reactor, [("10.9.9.8", 22), ("10.9.9.9", 22)], 1.0)
        first, second = reactor.tcpClients[-2][2], reactor.tcpClients[-1][2]
        second.clientConnectionFailed(None, Failure(ConnectionRefusedError()))
        reactor.advance(1.0)
        self.assertEqual(self.successResultOf(d), ("10.9.9.9", 22))
        self.assertIsNotNone(first)

    def test_no_witness_reachable_is_none(self):
        """When every witness is silent, the answer is None."""
        reactor = MemoryReactorClock()
        d = probe.reach_any(reactor, [("10.9.9.8", 22)], 1.0)
        reactor.advance(1.0)
        self.assertIsNone(self.successResultOf(d))

    def test_no_witnesses_is_none_at_once(self):
        """No witness configured: nothing to ask."""
        self.assertIsNone(self.successResultOf(probe.reach_any(MemoryReactorClock(), [], 1.0)))
