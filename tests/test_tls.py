"""
TLS heartbeat links: endpoint strings, the endpoints they make, the
configuration rules for them, and real TLS handshakes between heartbeat
protocols joined in memory (certificates made here with `cryptography`).
"""

import os
import subprocess

from twisted.internet.endpoints import HostnameEndpoint, SSL4ServerEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial import unittest

from iwayfailover import config, tls, wire
from iwayfailover.heartbeat import HeartbeatFactory, RefusalLog
from harness import temporary_directory
from pki import Authority
from test_config import PATH, ConfigErrorAssertions, server_section
from test_heartbeat import RecordingHandler, frame
from wirepeer import RING


def temporary_folder(case):
    return temporary_directory(case)


class EndpointStringTests(unittest.TestCase):
    def test_split_undoes_escapes_and_separates_keywords(self):
        """Positional and keyword parts come apart; escaped colons stay inside their part."""
        kind, args, kwargs = tls.split(r"tls:fe80\:\:1:1200:trustRoots=C\:/ca.pem")
        self.assertEqual((kind, args, kwargs), ("tls", ["fe80::1", "1200"], {"trustRoots": "C:/ca.pem"}))

    def test_join_gives_back_an_equivalent_string(self):
        """join() escapes again, so split(join(parts)) is the parts."""
        parts = ("ssl", ["1200"], {"interface": "::1", "caCerts": "/etc/ca.pem"})
        self.assertEqual(tls.split(tls.join(*parts)), parts)

    def test_relative_files_are_made_absolute_against_the_folder(self):
        """Key, certificate and CA paths are relative to the configuration's folder."""
        resolved = tls.resolve_files("ssl:1200:privateKey=node.key:certKey=node.crt:caCerts=ca.crt", "/share/pair")
        _, _, kwargs = tls.split(resolved)
        self.assertEqual(
            kwargs, {"privateKey": "/share/pair/node.key", "certKey": "/share/pair/node.crt", "caCerts": "/share/pair/ca.crt"},
        )

    def test_absolute_paths_and_plain_strings_are_left_alone(self):
        """Absolute file paths, and endpoints that are not TLS, come back unchanged."""
        self.assertEqual(tls.resolve_files("tls:b:1200:trustRoots=/etc/ca.pem", "/share"), "tls:b:1200:trustRoots=/etc/ca.pem")
        self.assertEqual(tls.resolve_files("tcp:1200:interface=10.0.0.1", "/share"), "tcp:1200:interface=10.0.0.1")

    def test_the_port_of_a_tls_location(self):
        self.assertEqual(tls.client_port("tls:iam2:1200:trustRoots=ca.pem"), 1200)
        self.assertEqual(tls.client_port("tls:host=iam2:port=1201"), 1201)
        self.assertIsNone(tls.client_port("tls:iam2"))


class PKI:
    """A CA and certificates for two nodes, written to a temporary folder."""

    def make_pki(self):
        self.folder = temporary_folder(self)
        self.ca = Authority(self.folder)
        self.server_crt, self.server_key = self.ca.issue("serv_b", dns=("localhost", "serv-b.example"), ips=("127.0.0.1",))
        self.client_crt, self.client_key = self.ca.issue("serv_a", dns=("serv-a.example",), ips=("127.0.0.2",))


class ClientEndpointTests(PKI, unittest.TestCase):
    def setUp(self):
        self.make_pki()
        self.reactor = MemoryReactorClock()

    def test_ssl_client_strings_are_refused_because_they_check_no_host_name(self):
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "ssl:host=iam2:port=1200")
        self.assertIn("host name", str(error))
        self.assertIn("tls:HOST:PORT", str(error))

    def test_ssl_in_any_case_is_refused(self):
        """Twisted's parsers take SSL: and Ssl: as ssl:, which would dial without any check: refused alike."""
        for kind in ("SSL", "Ssl", "sSL"):
            error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, f"{kind}:host=iam2:port=1200")
            self.assertIn("host name", str(error))

    def test_other_client_kinds_are_refused(self):
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tor:iam2:1200")
        self.assertIn("allowed kinds: tcp, tcp6, unix, tls", str(error))

    def test_an_empty_trust_root_is_refused_rather_than_falling_back_to_the_system(self):
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2:1200:trustRoots=")
        self.assertIn("trustRoots is empty", str(error))

    def test_tls_in_capitals_is_checked_like_tls(self):
        endpoint = tls.client_endpoint(self.reactor, f"TLS:127.0.0.1:1200:trustRoots={self.ca.path}")
        self.assertIsInstance(endpoint._wrappedEndpoint, TCP4ClientEndpoint)

    def test_a_fresh_endpoint_reads_its_files_at_each_connect(self):
        """An unreadable trust root fails that connect (a failed Deferred, retried by the caller), not its maker."""
        from twisted.internet.protocol import Factory, Protocol

        roots = os.path.join(self.folder, "roots.pem")
        endpoint = tls.connector(self.reactor, f"tls:127.0.0.1:1200:trustRoots={roots}")
        self.assertIsInstance(endpoint, tls.FreshClientEndpoint)
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)), tls.TLSConfigError)
        self.assertIn(roots, str(failure.value))
        os.link(self.ca.path, roots)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(self.reactor.tcpClients[-1][:2], ("127.0.0.1", 1200))

    def test_a_tls_location_needs_a_host_and_a_port(self):
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2")
        self.assertIn("tls:HOST:PORT", str(error))

    def test_unknown_tls_parameters_are_named(self):
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2:1200:trustroots=x")
        self.assertIn("trustroots", str(error))

    def test_a_missing_trust_root_file_is_named(self):
        missing = os.path.join(self.folder, "nope.pem")
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:trustRoots={missing}")
        self.assertIn(missing, str(error))
        self.assertIn("trustRoots", str(error))

    def test_a_file_with_no_certificate_is_refused(self):
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:trustRoots={self.server_key}",
        )
        self.assertIn("no PEM certificate", str(error))

    def test_a_private_key_without_its_certificate_is_refused(self):
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:privateKey={self.client_key}",
        )
        self.assertIn("privateKey without certificate", str(error))

    def test_a_key_that_does_not_match_the_certificate_is_refused(self):
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor,
            f"tls:iam2:1200:certificate={self.client_crt}:privateKey={self.server_key}",
        )
        self.assertIn("does not match", str(error))

    def test_an_address_is_dialled_directly_and_a_name_is_resolved(self):
        """The wrapped endpoint is TCP to an IP address, or a HostnameEndpoint for a name."""
        roots = f"trustRoots={self.ca.path}"
        self.assertIsInstance(tls.client_endpoint(self.reactor, f"tls:127.0.0.1:1200:{roots}")._wrappedEndpoint, TCP4ClientEndpoint)
        self.assertIsInstance(tls.client_endpoint(self.reactor, rf"tls:\:\:1:1200:{roots}")._wrappedEndpoint, TCP6ClientEndpoint)
        self.assertIsInstance(tls.client_endpoint(self.reactor, f"tls:iam2:1200:{roots}")._wrappedEndpoint, HostnameEndpoint)

    def test_plain_locations_go_to_twisteds_parser(self):
        self.assertIsInstance(tls.client_endpoint(self.reactor, "tcp:host=10.0.0.2:port=1200"), TCP4ClientEndpoint)


class ServerEndpointTests(PKI, unittest.TestCase):
    def setUp(self):
        self.make_pki()
        self.reactor = MemoryReactorClock()

    def test_a_port_with_ca_certificates_requires_client_certificates(self):
        endpoint = tls.server_endpoint(
            self.reactor, f"ssl:1200:interface=127.0.0.1:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={self.ca.path}",
        )
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        self.assertEqual((endpoint._port, endpoint._interface), (1200, "127.0.0.1"))
        options = endpoint._sslContextFactory
        self.assertTrue(options.verify and options.requireCertificate)

    def test_a_folder_of_ca_certificates_is_read(self):
        """caCerts may name a folder; its .pem files are read."""
        folder = os.path.join(self.folder, "cas")
        os.makedirs(folder)
        with open(self.ca.path, "rb") as f, open(os.path.join(folder, "ca.pem"), "wb") as g:
            g.write(f.read())
        endpoint = tls.server_endpoint(
            self.reactor, f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={folder}",
        )
        self.assertEqual(len(endpoint._sslContextFactory.caCerts), 1)

    def test_a_missing_ca_file_is_named(self):
        missing = os.path.join(self.folder, "ca-missing.pem")
        error = self.assertRaises(
            tls.TLSConfigError, tls.server_endpoint, self.reactor,
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={missing}",
        )
        self.assertIn(missing, str(error))

    def test_unknown_parameters_of_a_mutual_port_are_named(self):
        error = self.assertRaises(
            tls.TLSConfigError, tls.server_endpoint, self.reactor,
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={self.ca.path}:sslmethod=TLSv1",
        )
        self.assertIn("sslmethod", str(error))

    def test_a_port_without_ca_certificates_is_plain_server_tls(self):
        endpoint = tls.server_endpoint(self.reactor, f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}")
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        self.assertFalse(endpoint._sslContextFactory.verify)

    def test_every_tls_port_refuses_versions_before_1_2(self):
        from OpenSSL import SSL

        for mutual in ("", f":caCerts={self.ca.path}"):
            endpoint = tls.server_endpoint(self.reactor, f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}{mutual}")
            options = endpoint._sslContextFactory._options
            self.assertTrue(options & SSL.OP_NO_TLSv1 and options & SSL.OP_NO_TLSv1_1, mutual or "plain")

    def test_an_older_tls_method_cannot_be_asked_for(self):
        error = self.assertRaises(
            tls.TLSConfigError, tls.server_endpoint, self.reactor,
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:sslmethod=TLSv1_METHOD",
        )
        self.assertIn("sslmethod", str(error))


class ConfigTests(PKI, ConfigErrorAssertions, unittest.TestCase):
    """The configuration loader applies the TLS rules, with errors that name the key."""

    def setUp(self):
        self.make_pki()

    def text(self, **keys):
        return server_section("serv_a", **keys) + server_section("serv_b")

    def test_relative_tls_paths_are_relative_to_the_config_file(self):
        for name in ("node.crt", "node.key", "ca.crt"):
            source = {"node.crt": self.server_crt, "node.key": self.server_key, "ca.crt": self.ca.path}[name]
            with open(source, "rb") as f, open(os.path.join(self.folder, name), "wb") as g:
                g.write(f.read())
        path = os.path.join(self.folder, "iway.ini")
        parsed = config.parse_config(
            self.text(
                heartbeat_port="ssl:1200:privateKey=node.key:certKey=node.crt:caCerts=ca.crt",
                backup_location="tls:iam2:1200:trustRoots=ca.crt:certificate=node.crt:privateKey=node.key",
            ),
            path,
        )
        server = parsed.servers["serv_a"]
        self.assertIn(f"caCerts={os.path.join(self.folder, 'ca.crt')}".replace(":", "\\:"), server.heartbeat_endpoint)
        self.assertEqual(tls.split(server.backup_endpoint)[2]["trustRoots"], os.path.join(self.folder, "ca.crt"))
        self.assertEqual(config.backup_host(server.backup_location), "iam2")

    def test_a_missing_certificate_is_a_config_error_naming_the_key(self):
        error = self.assertRefused(
            self.text(heartbeat_port=f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts=absent.crt"),
            "server:serv_a", "heartbeat_port",
        )
        self.assertIn("absent.crt", str(error))

    def test_an_ssl_location_is_a_config_error_that_suggests_tls(self):
        error = self.assertRefused(self.text(backup_location="ssl:host=iam2:port=1200"), "server:serv_a", "backup_location")
        self.assertIn("tls:HOST:PORT", str(error))


class HandshakeTests(PKI, unittest.TestCase):
    """
    Heartbeat protocols joined in memory through the TLS layer the endpoints
    build: certificates, host names and client certificates really checked.
    """

    def setUp(self):
        self.make_pki()
        self.reactor = MemoryReactorClock()
        self.clock = Clock()
        self.refusal_events = []
        self.refusals = RefusalLog(self.clock)
        self.refusals.log = Logger(observer=self.refusal_events.append)

    def join(self, port, location, server_ring=RING):
        """Server and client factories, handlers and the pump of one TLS heartbeat connection."""
        server_side = tls.server_endpoint(self.reactor, port)
        client_side = tls.client_endpoint(self.reactor, location)
        self.server_handler, self.client_handler = RecordingHandler(), RecordingHandler()
        self.server = HeartbeatFactory(self.server_handler, self.refusals, lambda: server_ring, self.clock, initiating=False)
        self.client = HeartbeatFactory(self.client_handler, self.refusals, lambda: RING, self.clock, initiating=True)
        # The TLS layer gathers small writes until the clock turns: its own clock here.
        self.tls_clock = Clock()
        server_tls = TLSMemoryBIOFactory(server_side._sslContextFactory, False, self.server, clock=self.tls_clock)
        client_tls = client_side._wrapperFactory(self.client)
        client_tls._clock = self.tls_clock
        _, _, pump = iosim.connectedServerAndClient(
            lambda: server_tls.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40000)),
            lambda: client_tls.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1200)),
        )
        self.settle(pump)
        return pump

    def settle(self, pump):
        """Deliver everything written, until both sides are quiet."""
        for _ in range(20):
            self.tls_clock.advance(0)
            pump.flush()

    def refusal_lines(self):
        return [e["why"] for e in self.refusal_events]

    def port(self, mutual=False):
        text = f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}"
        return text + (f":caCerts={self.ca.path}" if mutual else "")

    def client_certificate(self, crt=None, key=None):
        return f":certificate={crt or self.client_crt}:privateKey={key or self.client_key}"

    def assertHeartbeatsFlow(self, pump):
        self.assertEqual([e[0] for e in self.server_handler.events], ["connection_made"])
        protocol = self.client_handler.events[0][1]
        protocol.send(frame(seq=1))
        self.settle(pump)
        self.assertEqual([f.seq for f in self.server_handler.frames], [1])
        self.assertEqual((self.server.rejected, self.client.rejected), (0, 0))

    def test_a_certificate_the_client_trusts_for_the_host_carries_heartbeats(self):
        pump = self.join(self.port(), f"tls:localhost:1200:trustRoots={self.ca.path}")
        self.assertHeartbeatsFlow(pump)

    def test_an_ip_address_is_checked_against_the_certificates_addresses(self):
        pump = self.join(self.port(), f"tls:127.0.0.1:1200:trustRoots={self.ca.path}")
        self.assertHeartbeatsFlow(pump)

    def test_mutual_tls_with_a_client_certificate_carries_heartbeats(self):
        pump = self.join(self.port(mutual=True), f"tls:serv-b.example:1200:trustRoots={self.ca.path}" + self.client_certificate())
        self.assertHeartbeatsFlow(pump)

    def test_a_certificate_from_another_ca_is_refused_with_a_clear_reason(self):
        stranger = Authority(temporary_folder(self), name="stranger CA")
        self.join(self.port(), f"tls:localhost:1200:trustRoots={stranger.path}")
        self.assertNotIn("connection_made", [e[0] for e in self.server_handler.events])
        self.assertEqual(self.client.rejected, 1)
        self.assertTrue(any("certificate verify failed" in line for line in self.refusal_lines()), self.refusal_lines())

    def test_a_certificate_for_another_host_name_is_refused_with_a_clear_reason(self):
        self.join(self.port(), f"tls:serv-c.example:1200:trustRoots={self.ca.path}")
        self.assertNotIn("connection_made", [e[0] for e in self.server_handler.events])
        self.assertEqual(self.client.rejected, 1)
        self.assertTrue(any("does not match the host name" in line for line in self.refusal_lines()), self.refusal_lines())

    def test_mutual_tls_refuses_a_client_without_a_certificate(self):
        self.join(self.port(mutual=True), f"tls:localhost:1200:trustRoots={self.ca.path}")
        self.assertNotIn("connection_made", [e[0] for e in self.server_handler.events])
        self.assertEqual(self.server.rejected, 1)
        self.assertTrue(any("TLS handshake failed" in line for line in self.refusal_lines()), self.refusal_lines())

    def test_mutual_tls_refuses_a_client_certificate_from_another_ca(self):
        stranger = Authority(temporary_folder(self), name="stranger CA")
        crt, key = stranger.issue("intruder", dns=("serv-a.example",))
        self.join(self.port(mutual=True), f"tls:localhost:1200:trustRoots={self.ca.path}" + self.client_certificate(crt, key))
        self.assertNotIn("connection_made", [e[0] for e in self.server_handler.events])
        self.assertEqual(self.server.rejected, 1)
        self.assertTrue(any("certificate verify failed" in line for line in self.refusal_lines()), self.refusal_lines())

    def test_tls_does_not_replace_the_heartbeat_key(self):
        """A peer with a good certificate but without the key gets no frame through."""
        from iwayfailover import auth

        other = auth.KeyRing(keys=(b"another key, thirty-two bytes long!",))
        pump = self.join(self.port(), f"tls:localhost:1200:trustRoots={self.ca.path}", server_ring=other)
        protocol = self.client_handler.events[0][1]
        protocol.send(frame(seq=1))
        self.settle(pump)
        self.assertEqual(self.server_handler.frames, [])
        self.assertEqual(self.server.rejected, 1)


SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExampleTests(unittest.TestCase):
    """conf/make-certs.sh (the README's openssl steps) and conf/tls.ini make a working mutual-TLS pair."""

    def setUp(self):
        import shutil

        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl is not installed (make test installs Debian's openssl)")
        self.folder = temporary_folder(self)
        shutil.copy(os.path.join(SOURCE_TREE, "conf", "tls.ini"), self.folder)
        result = subprocess.run(
            [os.path.join(SOURCE_TREE, "conf", "make-certs.sh"), os.path.join(self.folder, "tls"),
             "serv_a=DNS:localhost,IP:127.0.0.1", "serv_b=DNS:localhost,IP:127.0.0.1"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        from iwayfailover import auth

        auth.write_new_key_file(os.path.join(self.folder, "failover.key"))
        from iwayfailover.console.users import add_user

        add_user(os.path.join(self.folder, "console-users"), "ops", "a test password", n=2)

    def test_the_script_writes_private_keys_for_the_owner_only(self):
        for name in ("ca.key", "serv_a.key", "serv_b.key"):
            self.assertEqual(os.stat(os.path.join(self.folder, "tls", name)).st_mode & 0o077, 0, name)

    def test_the_script_explains_its_arguments(self):
        result = subprocess.run(
            [os.path.join(SOURCE_TREE, "conf", "make-certs.sh"), self.folder, "serv_a"], capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("NAME=SUBJECT_ALT_NAMES", result.stderr)

    def test_the_example_configuration_loads_and_its_nodes_shake_hands(self):
        """serv_a's Location of Backup completes mutual TLS with serv_b's heartbeat port."""
        parsed = config.read_config(os.path.join(self.folder, "tls.ini"))
        case = HandshakeTests("test_mutual_tls_with_a_client_certificate_carries_heartbeats")
        case.setUp()
        pump = case.join(parsed.servers["serv_b"].heartbeat_endpoint, parsed.servers["serv_a"].backup_endpoint)
        case.assertHeartbeatsFlow(pump)
