"""
TLS heartbeat links: endpoint strings, the endpoints they make, the
configuration rules for them, and real TLS handshakes between heartbeat
protocols joined in memory (certificates made here with `cryptography`).
"""

import os
import subprocess
import tempfile
import unittest as pyunit

from OpenSSL import SSL
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import HostnameEndpoint, SSL4ServerEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import Logger
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim
from twisted.trial import unittest

from iwayfailover import auth, config, tls
from iwayfailover.heartbeat import HeartbeatFactory, RefusalLog
from harness import temporary_directory
from pki import Authority
from test_config import ConfigErrorAssertions, server_section
from test_heartbeat import RecordingHandler, frame
from wirepeer import RING


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
        """client_port() reads the port of a tls: string, positional or keyword; None when it names none."""
        self.assertEqual(tls.client_port("tls:iam2:1200:trustRoots=ca.pem"), 1200)
        self.assertEqual(tls.client_port("tls:host=iam2:port=1201"), 1201)
        self.assertIsNone(tls.client_port("tls:iam2"))


class PKI:
    """
    A CA and certificates for two nodes, written to a temporary folder that
    is removed when the test that asked for them ends (its own cleanup).
    """

    def make_pki(self):
        self.folder = temporary_directory(self)
        self.ca = Authority(self.folder)
        self.server_crt, self.server_key = self.ca.issue("serv_b", dns=("localhost", "serv-b.example"), ips=("127.0.0.1",))
        self.client_crt, self.client_key = self.ca.issue("serv_a", dns=("serv-a.example",), ips=("127.0.0.2",))


def dialled(reactor):
    """The (host, port) of the last TCP connection C{reactor} was asked to make."""
    host, port, _, _, _ = reactor.tcpClients[-1]
    return host, port


class ClientEndpointTests(PKI, unittest.TestCase):
    def setUp(self):
        self.make_pki()
        self.reactor = MemoryReactorClock()

    def test_ssl_client_strings_are_refused_because_they_check_no_host_name(self):
        """An ssl: Location of Backup is refused, and the error points to tls:HOST:PORT."""
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "ssl:host=iam2:port=1200")
        self.assertIn("host name", str(error))
        self.assertIn("tls:HOST:PORT", str(error))

    def test_ssl_in_any_case_is_refused(self):
        """Twisted's parsers take SSL: and Ssl: as ssl:, which would dial without any check: refused alike."""
        for kind in ("SSL", "Ssl", "sSL"):
            error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, f"{kind}:host=iam2:port=1200")
            self.assertIn("host name", str(error))

    def test_other_client_kinds_are_refused(self):
        """A client kind other than tcp, tcp6, unix and tls is refused, naming the allowed ones."""
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tor:iam2:1200")
        self.assertIn("allowed kinds: tcp, tcp6, unix, tls", str(error))

    def test_an_empty_trust_root_is_refused_rather_than_falling_back_to_the_system(self):
        """trustRoots= with nothing after it is an error, not the system's CAs."""
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2:1200:trustRoots=")
        self.assertIn("trustRoots is empty", str(error))

    def test_tls_in_capitals_is_checked_like_tls(self):
        """TLS: builds the same host-checking TLS endpoint as tls:, dialling the host and port it names."""
        endpoint = tls.client_endpoint(self.reactor, f"TLS:127.0.0.1:1200:trustRoots={self.ca.path}")
        self.assertIsInstance(endpoint, tls.TLSClientEndpoint)
        self.assertEqual((endpoint.host, endpoint.port), ("127.0.0.1", 1200))
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(dialled(self.reactor), ("127.0.0.1", 1200))

    def test_a_fresh_endpoint_reads_its_files_at_each_connect(self):
        """An unreadable trust root fails that connect (a failed Deferred, retried by the caller), not its maker."""
        roots = os.path.join(self.folder, "roots.pem")
        endpoint = tls.connector(self.reactor, f"tls:127.0.0.1:1200:trustRoots={roots}")
        self.assertIsInstance(endpoint, tls.FreshClientEndpoint)
        failure = self.failureResultOf(endpoint.connect(Factory.forProtocol(Protocol)), tls.TLSConfigError)
        self.assertIn(roots, str(failure.value))
        os.link(self.ca.path, roots)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(dialled(self.reactor), ("127.0.0.1", 1200))

    def test_a_tls_location_needs_a_host_and_a_port(self):
        """tls:HOST without a port is refused, showing the form wanted."""
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2")
        self.assertIn("tls:HOST:PORT", str(error))

    def test_unknown_tls_parameters_are_named(self):
        """A misspelt parameter (trustroots) is named in the error."""
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, "tls:iam2:1200:trustroots=x")
        self.assertIn("trustroots", str(error))

    def test_a_missing_trust_root_file_is_named(self):
        """A trust root file that does not exist is named, with the parameter it was given to."""
        missing = os.path.join(self.folder, "nope.pem")
        error = self.assertRaises(tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:trustRoots={missing}")
        self.assertIn(missing, str(error))
        self.assertIn("trustRoots", str(error))

    def test_a_file_with_no_certificate_is_refused(self):
        """A trust root file holding no PEM certificate (here a private key) is refused."""
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:trustRoots={self.server_key}",
        )
        self.assertIn("no PEM certificate", str(error))

    def test_a_private_key_without_its_certificate_is_refused(self):
        """privateKey alone, without certificate, is refused."""
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor, f"tls:iam2:1200:privateKey={self.client_key}",
        )
        self.assertIn("privateKey without certificate", str(error))

    def test_a_key_that_does_not_match_the_certificate_is_refused(self):
        """A client certificate with another certificate's key is refused as not matching."""
        error = self.assertRaises(
            tls.TLSConfigError, tls.client_endpoint, self.reactor,
            f"tls:iam2:1200:certificate={self.client_crt}:privateKey={self.server_key}",
        )
        self.assertIn("does not match", str(error))

    def test_an_address_is_dialled_directly_and_a_name_is_resolved(self):
        """The TCP endpoint under TLS is TCP to an IP address, or a HostnameEndpoint for a name."""
        roots = f"trustRoots={self.ca.path}"
        self.assertIsInstance(tls.client_endpoint(self.reactor, f"tls:127.0.0.1:1200:{roots}").endpoint, TCP4ClientEndpoint)
        self.assertIsInstance(tls.client_endpoint(self.reactor, rf"tls:\:\:1:1200:{roots}").endpoint, TCP6ClientEndpoint)
        self.assertIsInstance(tls.client_endpoint(self.reactor, f"tls:iam2:1200:{roots}").endpoint, HostnameEndpoint)

    def test_plain_locations_go_to_twisteds_parser(self):
        """A tcp: Location of Backup is Twisted's own TCP endpoint, dialling what it names."""
        endpoint = tls.client_endpoint(self.reactor, "tcp:host=10.0.0.2:port=1200")
        self.assertIsInstance(endpoint, TCP4ClientEndpoint)
        endpoint.connect(Factory.forProtocol(Protocol))
        self.assertEqual(dialled(self.reactor), ("10.0.0.2", 1200))


class ServerEndpointTests(PKI, unittest.TestCase):
    """
    What a heartbeat port listens with, read from the reactor it listened on
    (MemoryReactor records the port, TLS options, backlog and interface of
    each listenSSL call) and from the OpenSSL context those options make.
    """

    def setUp(self):
        self.make_pki()
        self.reactor = MemoryReactorClock()

    def listen(self, description):
        """Listen on the heartbeat port string; returns the (port, options, backlog, interface) of the TLS port."""
        endpoint = tls.server_endpoint(self.reactor, description)
        self.assertIsInstance(endpoint, SSL4ServerEndpoint)
        endpoint.listen(Factory.forProtocol(Protocol))
        port, _, options, backlog, interface = self.reactor.sslServers[-1]
        return port, options, backlog, interface

    def test_a_port_with_ca_certificates_requires_client_certificates(self):
        """With caCerts the port listens where it says and its context asks for, and insists on, a client certificate."""
        port, options, backlog, interface = self.listen(
            f"ssl:1200:interface=127.0.0.1:backlog=7:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={self.ca.path}",
        )
        self.assertEqual((port, backlog, interface), (1200, 7, "127.0.0.1"))
        required = SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT
        self.assertEqual(options.getContext().get_verify_mode() & required, required)

    def test_a_folder_of_ca_certificates_is_read(self):
        """caCerts may name a folder; a client certificate signed by a CA in one of its .pem files is accepted."""
        folder = os.path.join(self.folder, "cas")
        os.makedirs(folder)
        with open(self.ca.path, "rb") as f, open(os.path.join(folder, "ca.pem"), "wb") as g:
            g.write(f.read())
        link = TLSLink(
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={folder}",
            f"tls:localhost:1200:trustRoots={self.ca.path}:certificate={self.client_crt}:privateKey={self.client_key}",
        )
        link.assertHeartbeatsFlow(self)

    def test_a_missing_ca_file_is_named(self):
        """A caCerts file that does not exist is named in the error."""
        missing = os.path.join(self.folder, "ca-missing.pem")
        error = self.assertRaises(
            tls.TLSConfigError, tls.server_endpoint, self.reactor,
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={missing}",
        )
        self.assertIn(missing, str(error))

    def test_unknown_parameters_of_a_mutual_port_are_named(self):
        """A parameter a heartbeat port does not take (sslmethod) is named."""
        error = self.assertRaises(
            tls.TLSConfigError, tls.server_endpoint, self.reactor,
            f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts={self.ca.path}:sslmethod=TLSv1",
        )
        self.assertIn("sslmethod", str(error))

    def test_a_port_without_ca_certificates_is_plain_server_tls(self):
        """Without caCerts the port asks for no client certificate."""
        port, options, _, interface = self.listen(f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}")
        self.assertEqual((port, interface), (1200, ""))
        self.assertEqual(options.getContext().get_verify_mode(), SSL.VERIFY_NONE)

    def test_every_tls_port_refuses_versions_before_1_2(self):
        """Plain or mutual, the port's OpenSSL context has TLS 1.0 and 1.1 switched off."""
        for mutual in ("", f":caCerts={self.ca.path}"):
            _, options, _, _ = self.listen(f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}{mutual}")
            flags = options.getContext().set_options(0)  # adds nothing; gives back the context's options
            self.assertTrue(flags & SSL.OP_NO_TLSv1 and flags & SSL.OP_NO_TLSv1_1, mutual or "plain")

    def test_an_older_tls_method_cannot_be_asked_for(self):
        """sslmethod=TLSv1_METHOD is refused: a heartbeat port cannot be made to speak an old TLS."""
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
        """Relative key, certificate and CA paths in heartbeat_port and backup_location are made absolute against the file's folder."""
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
        """A heartbeat_port naming a CA file that is not there is refused, naming the section, key and file."""
        error = self.assertRefused(
            self.text(heartbeat_port=f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}:caCerts=absent.crt"),
            "server:serv_a", "heartbeat_port",
        )
        self.assertIn("absent.crt", str(error))

    def test_an_ssl_location_is_a_config_error_that_suggests_tls(self):
        """An ssl: backup_location is refused, naming the key and suggesting tls:HOST:PORT."""
        error = self.assertRefused(self.text(backup_location="ssl:host=iam2:port=1200"), "server:serv_a", "backup_location")
        self.assertIn("tls:HOST:PORT", str(error))


class TLSLink:
    """
    One heartbeat connection made through the endpoints themselves: the
    heartbeat port string listens and the Location of Backup string dials on
    a MemoryReactorClock, and iosim carries the bytes between the TLS layers
    they build, so certificates, host names and client certificates are
    really checked. A plain object: it writes no file and needs no cleanup,
    so any test can use it.
    """

    def __init__(self, port, location, server_ring=RING):
        self.reactor = MemoryReactorClock()
        self.refusal_events = []
        self.refusals = RefusalLog(self.reactor)
        self.refusals.log = Logger(observer=self.refusal_events.append)
        self.server_handler, self.client_handler = RecordingHandler(), RecordingHandler()
        self.server = HeartbeatFactory(self.server_handler, self.refusals, lambda: server_ring, self.reactor, initiating=False)
        self.client = HeartbeatFactory(self.client_handler, self.refusals, lambda: RING, self.reactor, initiating=True)
        tls.server_endpoint(self.reactor, port).listen(self.server)
        _, _, options, _, _ = self.reactor.sslServers[-1]
        # What a real reactor's listenSSL puts in front of the factory; its
        # timer (small writes gathered until the clock turns) on this reactor.
        server_tls = TLSMemoryBIOFactory(options, False, self.server, clock=self.reactor)
        tls.client_endpoint(self.reactor, location).connect(self.client)
        self.reactor.advance(0)  # a HostnameEndpoint dials on the next turn
        host, port_number, client_factory, _, _ = self.reactor.tcpClients[-1]
        _, _, self.pump = iosim.connectedServerAndClient(
            lambda: server_tls.buildProtocol(IPv4Address("TCP", "127.0.0.2", 40000)),
            lambda: client_factory.buildProtocol(IPv4Address("TCP", host, port_number)),
            clock=self.reactor,
        )
        self.settle()

    def settle(self):
        """Deliver everything written, until both sides are quiet."""
        for _ in range(20):
            self.reactor.advance(0)
            self.pump.flush()

    def refusal_lines(self):
        return [e["why"] for e in self.refusal_events]

    def server_accepted(self):
        """Did a heartbeat connection reach the server's handler?"""
        return "connection_made" in [e[0] for e in self.server_handler.events]

    def assertHeartbeatsFlow(self, case):
        """The connection is up on both sides and a frame sent by the client reaches the server (checked with C{case})."""
        case.assertEqual([e[0] for e in self.server_handler.events], ["connection_made"])
        case.assertEqual([e[0] for e in self.client_handler.events], ["connection_made"])
        protocol = self.client_handler.events[0][1]
        protocol.send(frame(seq=1))
        self.settle()
        case.assertEqual([f.seq for f in self.server_handler.frames], [1])
        case.assertEqual((self.server.rejected, self.client.rejected), (0, 0))


class HandshakeTests(PKI, unittest.TestCase):
    """
    Heartbeat protocols joined in memory through the TLS layer the endpoints
    build (L{TLSLink}): certificates, host names and client certificates
    really checked.
    """

    def setUp(self):
        self.make_pki()

    def port(self, mutual=False):
        text = f"ssl:1200:privateKey={self.server_key}:certKey={self.server_crt}"
        return text + (f":caCerts={self.ca.path}" if mutual else "")

    def client_certificate(self, crt=None, key=None):
        return f":certificate={crt or self.client_crt}:privateKey={key or self.client_key}"

    def test_a_certificate_the_client_trusts_for_the_host_carries_heartbeats(self):
        """A server certificate from the trusted CA, naming the host dialled, carries heartbeats."""
        TLSLink(self.port(), f"tls:localhost:1200:trustRoots={self.ca.path}").assertHeartbeatsFlow(self)

    def test_an_ip_address_is_checked_against_the_certificates_addresses(self):
        """Dialled by IP address, the certificate's IP subjectAltName is what matches."""
        TLSLink(self.port(), f"tls:127.0.0.1:1200:trustRoots={self.ca.path}").assertHeartbeatsFlow(self)

    def test_mutual_tls_with_a_client_certificate_carries_heartbeats(self):
        """A mutual-TLS port accepts a client certificate from its CA, and heartbeats flow."""
        location = f"tls:serv-b.example:1200:trustRoots={self.ca.path}" + self.client_certificate()
        TLSLink(self.port(mutual=True), location).assertHeartbeatsFlow(self)

    def test_a_certificate_from_another_ca_is_refused_with_a_clear_reason(self):
        """A server certificate the client's trust roots did not sign is refused; the refusal says the verify failed."""
        stranger = Authority(temporary_directory(self), name="stranger CA")
        link = TLSLink(self.port(), f"tls:localhost:1200:trustRoots={stranger.path}")
        self.assertFalse(link.server_accepted())
        self.assertEqual(link.client.rejected, 1)
        self.assertTrue(any("certificate verify failed" in line for line in link.refusal_lines()), link.refusal_lines())

    def test_a_certificate_for_another_host_name_is_refused_with_a_clear_reason(self):
        """A trusted certificate that does not name the host dialled is refused as a host name mismatch."""
        link = TLSLink(self.port(), f"tls:serv-c.example:1200:trustRoots={self.ca.path}")
        self.assertFalse(link.server_accepted())
        self.assertEqual(link.client.rejected, 1)
        self.assertTrue(any("does not match the host name" in line for line in link.refusal_lines()), link.refusal_lines())

    def test_mutual_tls_refuses_a_client_without_a_certificate(self):
        """A mutual-TLS port refuses a client that presents no certificate."""
        link = TLSLink(self.port(mutual=True), f"tls:localhost:1200:trustRoots={self.ca.path}")
        self.assertFalse(link.server_accepted())
        self.assertEqual(link.server.rejected, 1)
        self.assertTrue(any("TLS handshake failed" in line for line in link.refusal_lines()), link.refusal_lines())

    def test_mutual_tls_refuses_a_client_certificate_from_another_ca(self):
        """A mutual-TLS port refuses a client certificate its caCerts did not sign."""
        stranger = Authority(temporary_directory(self), name="stranger CA")
        crt, key = stranger.issue("intruder", dns=("serv-a.example",))
        link = TLSLink(self.port(mutual=True), f"tls:localhost:1200:trustRoots={self.ca.path}" + self.client_certificate(crt, key))
        self.assertFalse(link.server_accepted())
        self.assertEqual(link.server.rejected, 1)
        self.assertTrue(any("certificate verify failed" in line for line in link.refusal_lines()), link.refusal_lines())

    def test_the_tls_layer_runs_on_the_endpoints_reactor(self):
        """A frame written over TLS waits for a turn of the reactor the endpoint was given (not the global one), then arrives."""
        link = TLSLink(self.port(), f"tls:localhost:1200:trustRoots={self.ca.path}")
        protocol = link.client_handler.events[0][1]
        protocol.send(frame(seq=1))
        link.pump.flush(advanceClock=False)
        self.assertEqual(link.server_handler.frames, [])
        link.reactor.advance(0)
        link.pump.flush(advanceClock=False)
        self.assertEqual([f.seq for f in link.server_handler.frames], [1])

    def test_tls_does_not_replace_the_heartbeat_key(self):
        """A peer with a good certificate but without the key gets no frame through."""
        other = auth.KeyRing(keys=(b"another key, thirty-two bytes long!",))
        link = TLSLink(self.port(), f"tls:localhost:1200:trustRoots={self.ca.path}", server_ring=other)
        protocol = link.client_handler.events[0][1]
        protocol.send(frame(seq=1))
        link.settle()
        self.assertEqual(link.server_handler.frames, [])
        self.assertEqual(link.server.rejected, 1)


SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class ExampleTests(unittest.TestCase):
    """conf/make-certs.sh (docs/security.md's openssl steps) and conf/tls.ini make a working mutual-TLS pair."""

    def setUp(self):
        import shutil

        if shutil.which("openssl") is None:
            raise unittest.SkipTest("openssl is not installed (make test installs Debian's openssl)")
        self.folder = temporary_directory(self)
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
        """The CA's and the nodes' private keys are readable by their owner only."""
        for name in ("ca.key", "serv_a.key", "serv_b.key"):
            self.assertEqual(os.stat(os.path.join(self.folder, "tls", name)).st_mode & 0o077, 0, name)

    def test_the_script_explains_its_arguments(self):
        """A wrong argument gets exit status 2 and the usage, naming NAME=SUBJECT_ALT_NAMES."""
        result = subprocess.run(
            [os.path.join(SOURCE_TREE, "conf", "make-certs.sh"), self.folder, "serv_a"], capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 2)
        self.assertIn("NAME=SUBJECT_ALT_NAMES", result.stderr)

    def test_the_example_configuration_loads_and_its_nodes_shake_hands(self):
        """serv_a's Location of Backup completes mutual TLS with serv_b's heartbeat port."""
        parsed = config.read_config(os.path.join(self.folder, "tls.ini"))
        link = TLSLink(parsed.servers["serv_b"].heartbeat_endpoint, parsed.servers["serv_a"].backup_endpoint)
        link.assertHeartbeatsFlow(self)


class NothingLeftBehindTests(unittest.SynchronousTestCase):
    """The TLS tests remove every certificate, private key and folder they write."""

    WRITERS = (ClientEndpointTests, ServerEndpointTests, ConfigTests, HandshakeTests, ExampleTests)

    def test_the_tls_tests_leave_no_private_key_or_folder_behind(self):
        """
        Every test above that writes keys and certificates, run with the
        temporary folder pointed at an empty folder of this test's, passes
        and leaves that folder empty: each one removed what it made.
        """
        scratch = temporary_directory(self)
        self.patch(tempfile, "tempdir", scratch)
        loader = pyunit.TestLoader()
        suite = pyunit.TestSuite(loader.loadTestsFromTestCase(case) for case in self.WRITERS)
        result = pyunit.TestResult()
        suite.run(result)
        self.assertEqual(result.errors + result.failures, [])
        self.assertGreater(result.testsRun, 0)
        self.assertEqual(result.testsRun, suite.countTestCases())
        self.assertEqual(os.listdir(scratch), [])
