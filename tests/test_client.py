"""
Tests for L{iwayfailover.client}: the failover client endpoint on a Clock
with stand-in endpoints (refused, silent, connecting), its string form
through Twisted's plugin scan, and a real refused and silent address on
loopback.
"""

import os
import socket
import subprocess
import sys
import sysconfig

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectionRefusedError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import TestCase
from zope.interface import implementer, verify

from harness import refused_port
from iwayfailover.client import FailoverClientEndpoint, FailoverConnectError, failover_string, parse_failover


@implementer(IStreamClientEndpoint)
class RefusedEndpoint:
    """An address where nothing listens: refused at once."""

    def __init__(self):
        self.tries = 0

    def connect(self, factory):
        self.tries += 1
        return defer.fail(ConnectionRefusedError("Connection refused"))


@implementer(IStreamClientEndpoint)
class SilentEndpoint:
    """An address that never answers (a host that is down): the try hangs until cancelled."""

    def __init__(self):
        self.tries = 0
        self.cancelled = 0

    def connect(self, factory):
        self.tries += 1

        def cancel(d):
            self.cancelled += 1

        return defer.Deferred(cancel)


@implementer(IStreamClientEndpoint)
class WorkingEndpoint:
    """An address that connects: fires with the factory's protocol, at once or when told."""

    def __init__(self, later=False):
        self.tries = 0
        self.later = later
        self.pending = None

    def connect(self, factory):
        self.tries += 1
        protocol = factory.buildProtocol(None)
        if self.later:
            self.pending = (defer.Deferred(), protocol)
            return self.pending[0]
        return defer.succeed(protocol)


class EndpointTests(TestCase):
    def endpoint(self, *endpoints, timeout=2.0, names=None, sticky=False):
        self.clock = Clock()
        return FailoverClientEndpoint(
            self.clock, endpoints, timeout, names=names or [f"addr{n}" for n in range(1, len(endpoints) + 1)], sticky=sticky,
        )

    def test_it_is_a_stream_client_endpoint(self):
        """FailoverClientEndpoint provides IStreamClientEndpoint."""
        self.assertTrue(verify.verifyObject(IStreamClientEndpoint, self.endpoint(WorkingEndpoint())))

    def test_the_first_address_is_used_when_it_answers(self):
        """The live node first: when it connects, the backup is not tried."""
        live, backup = WorkingEndpoint(), WorkingEndpoint()
        protocol = self.successResultOf(self.endpoint(live, backup).connect(Factory.forProtocol(Protocol)))
        self.assertIsInstance(protocol, Protocol)
        self.assertEqual((live.tries, backup.tries), (1, 0))

    def test_a_refused_first_address_moves_on_to_the_second_at_once(self):
        """A refused connection (the live process is gone) tries the next address with no wait."""
        dead, backup = RefusedEndpoint(), WorkingEndpoint()
        connected = self.endpoint(dead, backup).connect(Factory.forProtocol(Protocol))
        self.assertIsInstance(self.successResultOf(connected), Protocol)
        self.assertEqual((dead.tries, backup.tries), (1, 1))

    def test_a_silent_first_address_is_cancelled_after_the_timeout_and_the_second_used(self):
        """A silent address is given timeout seconds, then its try is cancelled and the next address tried."""
        silent, backup = SilentEndpoint(), WorkingEndpoint()
        connected = self.endpoint(silent, backup, timeout=2.0).connect(Factory.forProtocol(Protocol))
        self.clock.advance(1.99)
        self.assertNoResult(connected)
        self.assertEqual(backup.tries, 0)
        self.clock.advance(0.01)
        self.assertEqual(silent.cancelled, 1)
        self.assertIsInstance(self.successResultOf(connected), Protocol)
        self.assertEqual(backup.tries, 1)

    def test_no_timer_is_left_once_connected(self):
        """The per-try timer goes when the try ends: nothing is left scheduled."""
        backup = WorkingEndpoint(later=True)
        connected = self.endpoint(SilentEndpoint(), backup).connect(Factory.forProtocol(Protocol))
        self.clock.advance(2.0)
        self.clock.advance(0.5)
        backup.pending[0].callback(backup.pending[1])
        self.successResultOf(connected)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_every_address_failing_fails_naming_each_and_why(self):
        """All fail: FailoverConnectError lists every address with its reason, in order."""
        connected = self.endpoint(RefusedEndpoint(), SilentEndpoint(), timeout=1.5, names=["iam1:8080", "iam2:8080"]).connect(
            Factory.forProtocol(Protocol)
        )
        self.clock.advance(1.5)
        failure = self.failureResultOf(connected, FailoverConnectError)
        self.assertEqual(failure.value.attempts[0][0], "iam1:8080")
        self.assertIn("Connection refused", failure.value.attempts[0][1])
        self.assertEqual(failure.value.attempts[1], ("iam2:8080", "no connection within 1.5s"))
        self.assertIn("could not connect to any of 2 addresses", str(failure.value))
        self.assertIn("iam2:8080: no connection within 1.5s", str(failure.value))

    def test_each_connect_starts_again_from_the_first_address(self):
        """The order holds for every connect: the first address is tried first again."""
        first, second = RefusedEndpoint(), WorkingEndpoint()
        endpoint = self.endpoint(first, second)
        endpoint.connect(Factory.forProtocol(Protocol))
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual((first.tries, second.tries), (2, 2))

    def test_sticky_starts_at_the_address_that_last_worked(self):
        """sticky: after a connect through the second address, the next connect tries it first, and no timeout is spent on the silent first."""
        silent, backup = SilentEndpoint(), WorkingEndpoint()
        endpoint = self.endpoint(silent, backup, sticky=True)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.clock.advance(2.0)
        self.assertEqual((silent.tries, backup.tries), (1, 1))
        self.successResultOf(endpoint.connect(Factory.forProtocol(Protocol)))
        self.assertEqual((silent.tries, backup.tries), (1, 2))

    def test_sticky_falls_back_to_the_others_in_order(self):
        """sticky: when the address that last worked fails, the others are tried from the first."""
        first, second, third = WorkingEndpoint(), RefusedEndpoint(), WorkingEndpoint()
        endpoint = self.endpoint(first, second, third, sticky=True)
        endpoint.last_good = 1
        self.successResultOf(endpoint.connect(Factory.forProtocol(Protocol)))
        self.assertEqual((first.tries, second.tries, third.tries), (1, 1, 0))
        self.assertEqual(endpoint.last_good, 0)

    def test_cancelling_cancels_the_try_in_flight_and_tries_no_more(self):
        """Cancelling the connect cancels the try under way; no later address is tried and no timer is left."""
        silent, backup = SilentEndpoint(), WorkingEndpoint()
        connected = self.endpoint(silent, backup).connect(Factory.forProtocol(Protocol))
        connected.cancel()
        self.failureResultOf(connected, defer.CancelledError)
        self.assertEqual(silent.cancelled, 1)
        self.assertEqual(backup.tries, 0)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_an_endpoint_that_raises_counts_as_a_failed_address(self):
        """An endpoint whose connect raises is one more failed address, not an exception out of connect."""

        @implementer(IStreamClientEndpoint)
        class Raising:
            def connect(self, factory):
                raise RuntimeError("no route")

        connected = self.endpoint(Raising(), RefusedEndpoint()).connect(Factory.forProtocol(Protocol))
        failure = self.failureResultOf(connected, FailoverConnectError)
        self.assertEqual(failure.value.attempts[0], ("addr1", "RuntimeError: no route"))

    def test_no_endpoints_or_a_bad_timeout_is_refused(self):
        """An empty list or a timeout that is not positive is a ValueError at once."""
        self.assertRaises(ValueError, FailoverClientEndpoint, Clock(), [], 1.0)
        self.assertRaises(ValueError, FailoverClientEndpoint, Clock(), [WorkingEndpoint()], 0)


def dialled(reactor, endpoints):
    """Where each endpoint connects: the (host, port) it asks C{reactor} to dial when connected."""
    places = []
    for endpoint in endpoints:
        endpoint.connect(Factory.forProtocol(Protocol))
        host, port, _, _, _ = reactor.tcpClients[-1]
        places.append((host, port))
    return places


class StringTests(TestCase):
    def test_the_endpoint_plugin_file_is_installed(self):
        """The wheel carries twisted/plugins/iwayfailover_endpoints.py (setup.cfg's package_data lists it)."""
        site = sysconfig.get_paths()["purelib"]
        self.assertTrue(os.path.isfile(os.path.join(site, "twisted", "plugins", "iwayfailover_endpoints.py")))

    def test_client_from_string_finds_the_failover_plugin(self):
        """clientFromString(reactor, "failover:...") builds a FailoverClientEndpoint through the installed plugin."""
        reactor = MemoryReactorClock()
        endpoint = clientFromString(reactor, r"failover:iam1\:8080:iam2\:8080:timeout=2")
        self.assertIsInstance(endpoint, FailoverClientEndpoint)
        self.assertEqual(endpoint.names, ["iam1:8080", "iam2:8080"])
        self.assertEqual(endpoint.timeout, 2.0)
        self.assertEqual(dialled(reactor, endpoint.endpoints), [("iam1", 8080), ("iam2", 8080)])

    def test_an_address_may_be_a_whole_client_endpoint_string(self):
        """Each address is host:port, [v6]:port or an escaped endpoint string such as tcp:host=...:port=...."""
        reactor = MemoryReactorClock()
        endpoint = clientFromString(reactor, r"failover:[\:\:1]\:8080:tcp\:host\=iam2\:port\=81\:timeout\=1")
        self.assertEqual(dialled(reactor, endpoint.endpoints), [("::1", 8080), ("iam2", 81)])

    def test_failover_string_escapes_what_clientfromstring_unescapes(self):
        """failover_string() writes the string that gives back the same addresses."""
        text = failover_string(["iam1:8080", "tcp:host=iam2:port=81", "[::1]:82"], timeout=0.5)
        endpoint = clientFromString(MemoryReactorClock(), text)
        self.assertEqual(endpoint.names, ["iam1:8080", "tcp:host=iam2:port=81", "[::1]:82"])
        self.assertEqual(endpoint.timeout, 0.5)
        self.assertFalse(endpoint.sticky)
        self.assertTrue(clientFromString(MemoryReactorClock(), failover_string(["a:1", "b:2"], sticky=True)).sticky)

    def test_the_default_timeout(self):
        """Without timeout=, each try may take 5 seconds."""
        self.assertEqual(clientFromString(MemoryReactorClock(), r"failover:a\:1").timeout, 5.0)

    def test_bad_strings_are_refused_naming_the_problem(self):
        """No address, a bad timeout, an unknown option or an address that is no endpoint: a ValueError saying which."""
        cases = {
            (): "no addresses",
            ("a:1",): None,
            ("nonsense",): "'nonsense' is not host:port",
            ("nosuchkind:x",): "'nosuchkind:x' is not a usable address",
            ("iam1:99999",): "port 99999 is out of range",
            ("iam1:0",): "port 0 is out of range",
        }
        for addresses, message in cases.items():
            if message is None:
                parse_failover(MemoryReactorClock(), *addresses)
                continue
            with self.assertRaises(ValueError) as caught:
                parse_failover(MemoryReactorClock(), *addresses)
            self.assertIn(message, str(caught.exception))
        for options, message in (({"timeout": "soon"}, "timeout='soon'"), ({"timeout": "-1"}, "timeout='-1'"),
                                 ({"retries": "2"}, "unknown option 'retries'"), ({"sticky": "maybe"}, "sticky='maybe'")):
            with self.assertRaises(ValueError) as caught:
                parse_failover(MemoryReactorClock(), "a:1", **options)
            self.assertIn(message, str(caught.exception))


# Run in a child process: the real reactor, never this test process's.
REAL = r"""
import sys
from twisted.internet import task
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol

def main(reactor, description):
    endpoint = clientFromString(reactor, description)
    started = reactor.seconds()
    def connected(protocol):
        peer = protocol.transport.getPeer()
        print("connected", peer.port, round(reactor.seconds() - started, 2))
        protocol.transport.loseConnection()
    def failed(failure):
        print("failed", failure.getErrorMessage())
    return endpoint.connect(Factory.forProtocol(Protocol)).addCallbacks(connected, failed)

task.react(main, sys.argv[1:])
"""


class RealAddressTests(TestCase):
    """Real sockets on loopback, a real reactor in a child process."""

    def listening(self, backlog=8):
        server = socket.socket()
        self.addCleanup(server.close)
        server.bind(("127.0.0.1", 0))
        server.listen(backlog)
        return server

    def silent(self):
        """A port that takes no more connections: listening, never accepting, its queue full."""
        server = self.listening(backlog=0)
        port = server.getsockname()[1]
        for _ in range(200):
            client = socket.socket()
            self.addCleanup(client.close)
            client.settimeout(0.2)
            try:
                client.connect(("127.0.0.1", port))
            except (socket.timeout, BlockingIOError):
                return port
        self.skipTest("could not fill the listen queue of a loopback socket here")

    def connect(self, *addresses, timeout):
        result = subprocess.run(
            [sys.executable, "-c", REAL, failover_string([f"127.0.0.1:{p}" for p in addresses], timeout)],
            capture_output=True, text=True, timeout=30,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        return result.stdout.split()

    def test_a_refused_first_address_connects_to_the_second(self):
        """Nothing listens on the first port: the connection is made to the second, well within the timeout."""
        backup = self.listening().getsockname()[1]
        words = self.connect(refused_port(self), backup, timeout=5)
        self.assertEqual(words[:2], ["connected", str(backup)])
        self.assertLess(float(words[2]), 2.0)

    def test_a_silent_first_address_connects_to_the_second_after_the_timeout(self):
        """The first port never answers: after the per-try timeout the second is used."""
        silent = self.silent()
        backup = self.listening().getsockname()[1]
        words = self.connect(silent, backup, timeout=0.5)
        self.assertEqual(words[:2], ["connected", str(backup)])
        self.assertGreaterEqual(float(words[2]), 0.5)

    def test_all_addresses_dead_fails_naming_each(self):
        """Both refused: the failure names both addresses."""
        first, second = refused_port(self), refused_port(self)
        output = " ".join(self.connect(first, second, timeout=1))
        self.assertIn(f"127.0.0.1:{first}:", output)
        self.assertIn(f"127.0.0.1:{second}:", output)
        self.assertIn("could not connect to any of 2 addresses", output)
