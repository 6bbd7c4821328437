"""
Tests for L{iwayfailover.ports.ServerPort}: a server port that binds at
start-up and can move to another endpoint.
"""

import errno

from twisted.internet.error import CannotListenError
from twisted.internet.protocol import Factory
from twisted.internet.testing import MemoryReactor
from twisted.logger import LogLevel, Logger
from twisted.trial.unittest import TestCase

from iwayfailover.ports import ServerPort, StartupError


class RecordingPort:
    """A listening port that notes in the reactor's log when it is stopped."""

    def __init__(self, events, number):
        self._events = events
        self.number = number

    def stopListening(self):
        self._events.append(("stop", self.number))


class RecordingReactor(MemoryReactor):
    """
    A MemoryReactor that notes every listen and stop in C{events}, and
    refuses the TCP ports in C{refused} as a taken port would.
    """

    def __init__(self, refused=()):
        super().__init__()
        self.refused = set(refused)
        self.events = []

    def listenTCP(self, port, factory, backlog=50, interface=""):
        if port in self.refused:
            raise CannotListenError(interface, port, OSError(errno.EADDRINUSE, "Address already in use"))
        super().listenTCP(port, factory, backlog, interface)
        self.events.append(("listen", port))
        return RecordingPort(self.events, port)


class ServerPortTests(TestCase):
    def setUp(self):
        self.factory = Factory()
        self.events = []

    def server_port(self, reactor, description="tcp:1200"):
        port = ServerPort(reactor, description, self.factory, "heartbeat port")
        port.log = Logger(namespace="test", observer=self.events.append)
        return port

    def test_bind_listens_on_the_configured_port_with_the_factory(self):
        """bind() listens on the endpoint's TCP port, serving the given factory."""
        reactor = MemoryReactor()
        port = self.server_port(reactor, "tcp:1200:interface=127.0.0.1")

        port.bind()

        self.assertEqual(reactor.tcpServers[0][:2], (1200, self.factory))
        self.assertEqual(reactor.tcpServers[0][3], "127.0.0.1")

    def test_bind_that_cannot_listen_raises_startup_error_naming_label_and_endpoint(self):
        """A bind that fails raises StartupError naming the port's label, its endpoint and the reason."""
        port = self.server_port(RecordingReactor(refused={1200}), "tcp:1200")

        error = self.assertRaises(StartupError, port.bind)

        self.assertIn("heartbeat port tcp:1200", str(error))
        self.assertIn("Address already in use", str(error))

    def test_bind_that_cannot_listen_keeps_no_port(self):
        """After a failed bind, the ServerPort holds no port."""
        port = self.server_port(RecordingReactor(refused={1200}), "tcp:1200")

        self.assertRaises(StartupError, port.bind)

        self.assertIsNone(port.port)

    def test_bind_twice_listens_once(self):
        """A second bind() of a bound ServerPort does not listen again."""
        reactor = MemoryReactor()
        port = self.server_port(reactor)
        port.bind()

        port.bind()

        self.assertEqual(len(reactor.tcpServers), 1)

    def test_start_service_listens_when_not_bound(self):
        """Starting a ServerPort that was not bound makes it listen."""
        reactor = RecordingReactor()
        port = self.server_port(reactor)

        port.startService()

        self.assertEqual(reactor.events, [("listen", 1200)])

    def test_start_service_after_bind_does_not_listen_again(self):
        """Starting a ServerPort that bind() already bound keeps that one port."""
        reactor = RecordingReactor()
        port = self.server_port(reactor)
        port.bind()

        port.startService()

        self.assertEqual(reactor.events, [("listen", 1200)])

    def test_rebind_listens_on_the_new_endpoint_then_stops_the_old_port(self):
        """rebind() listens on the new endpoint first, and only then stops the old port."""
        reactor = RecordingReactor()
        port = self.server_port(reactor, "tcp:1200")
        port.bind()

        self.successResultOf(port.rebind("tcp:1300"))

        self.assertEqual(reactor.events, [("listen", 1200), ("listen", 1300), ("stop", 1200)])

    def test_rebind_takes_the_new_description_and_port(self):
        """After a rebind, description and port are the new ones."""
        reactor = RecordingReactor()
        port = self.server_port(reactor, "tcp:1200")
        port.bind()

        port.rebind("tcp:1300")

        self.assertEqual((port.description, port.port.number), ("tcp:1300", 1300))

    def test_failed_rebind_keeps_the_old_port_and_description(self):
        """A rebind to an endpoint that cannot listen keeps the old port listening and the old description."""
        reactor = RecordingReactor(refused={1300})
        port = self.server_port(reactor, "tcp:1200")
        port.bind()
        old = port.port

        port.rebind("tcp:1300")

        self.assertIs(port.port, old)
        self.assertEqual(port.description, "tcp:1200")
        self.assertEqual(reactor.events, [("listen", 1200)])

    def test_failed_rebind_is_logged_with_both_endpoints(self):
        """A failed rebind logs an error naming the refused endpoint and the one still in use."""
        port = self.server_port(RecordingReactor(refused={1300}), "tcp:1200")
        port.bind()

        port.rebind("tcp:1300")

        errors = [e for e in self.events if e["log_level"] == LogLevel.error]
        self.assertEqual(len(errors), 1)
        self.assertEqual((errors[0]["description"], errors[0]["current"]), ("tcp:1300", "tcp:1200"))
        self.assertIn("Address already in use", errors[0]["why"])

    def test_failed_rebind_does_not_fail(self):
        """The Deferred of a failed rebind fires with None."""
        port = self.server_port(RecordingReactor(refused={1300}), "tcp:1200")
        port.bind()

        result = self.successResultOf(port.rebind("tcp:1300"))

        self.assertIsNone(result)

    def test_rebind_to_a_malformed_endpoint_keeps_the_old_port(self):
        """A rebind to text that is no endpoint string keeps the old port and does not fail."""
        port = self.server_port(RecordingReactor(), "tcp:1200")
        port.bind()
        old = port.port

        self.successResultOf(port.rebind("no-such-kind:1300"))

        self.assertEqual((port.port, port.description), (old, "tcp:1200"))

    def test_stop_service_stops_listening(self):
        """Stopping the service stops the port and forgets it."""
        reactor = RecordingReactor()
        port = self.server_port(reactor)
        port.bind()
        port.startService()

        port.stopService()

        self.assertEqual(reactor.events, [("listen", 1200), ("stop", 1200)])
        self.assertIsNone(port.port)
