"""
Tests for L{iwayfailover.cli} (C{iwsrv status}) and the status resource it
asks (L{iwayfailover.console}).
"""

import io
import json
import os
import shutil
import sys
import tempfile

from treq.testing import StubTreq
from twisted.trial.unittest import TestCase

from iwayfailover.cli import console_client_string, format_status, main, status_main
from iwayfailover.console import console_root


def fresh_dir(test):
    """A new, empty temporary folder, removed after C{test}."""
    path = tempfile.mkdtemp(prefix="iwayfailover-test-")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path

CONFIG = """\
[server:serv_a]
backup_location = iam2:1200
heartbeat_port = 1200
threshold = 3
console = tcp:8081:interface=127.0.0.1

[server:serv_b]
backup_location = iam1:1200
heartbeat_port = 1200
threshold = 3
"""

STATUS = {
    "server": "serv_b",
    "role": "live",
    "epoch": 4,
    "since": "2026-11-25T10:00:00Z",
    "cause": "no heartbeat from serv_a for 3.0s",
    "peer": {"name": "serv_a", "connected": False, "last_heartbeat_age": 3.42},
    "listeners": {
        "web": {"state": "ACTIVE", "since": "2026-11-25T10:00:01Z"},
        "ftp": {"state": "FAILED", "since": "2026-11-25T10:00:01Z", "reason": "CannotListenError: port 21 in use"},
    },
}


class ConsoleClientStringTests(TestCase):
    """The client endpoint that reaches a console from its own host."""

    def test_tcp_with_an_interface_connects_to_that_interface(self):
        """A console on tcp:8081:interface=127.0.0.1 is reached at 127.0.0.1 port 8081."""
        self.assertEqual(console_client_string("tcp:8081:interface=127.0.0.1"), "tcp:host=127.0.0.1:port=8081")

    def test_tcp_without_an_interface_connects_to_localhost(self):
        """A console on every interface (tcp:8081) is reached at 127.0.0.1."""
        self.assertEqual(console_client_string("tcp:8081"), "tcp:host=127.0.0.1:port=8081")

    def test_tcp_with_keyword_port_on_any_interface_connects_to_localhost(self):
        """tcp:port=8081:interface=0.0.0.0 is reached at 127.0.0.1 port 8081."""
        self.assertEqual(
            console_client_string("tcp:port=8081:interface=0.0.0.0"), "tcp:host=127.0.0.1:port=8081"
        )

    def test_tcp6_on_any_interface_connects_to_ipv6_localhost(self):
        r"""A console on tcp6:8081:interface=\:\: is reached at ::1 (escaped) over tcp6."""
        self.assertEqual(console_client_string(r"tcp6:8081:interface=\:\:"), r"tcp6:host=\:\:1:port=8081")

    def test_tcp6_without_an_interface_connects_to_ipv6_localhost(self):
        """A console on tcp6:8081 (every IPv6 interface) is reached at ::1, not at an IPv4 address."""
        self.assertEqual(console_client_string("tcp6:8081"), r"tcp6:host=\:\:1:port=8081")

    def test_unix_socket_path_is_connected_to(self):
        """A console on unix:/run/x.sock is reached at that path."""
        self.assertEqual(console_client_string("unix:/run/x.sock"), "unix:path=/run/x.sock")

    def test_unix_socket_address_keyword_is_connected_to(self):
        """A console on unix:address=/run/x.sock is reached at that path."""
        self.assertEqual(console_client_string("unix:address=/run/x.sock"), "unix:path=/run/x.sock")

    def test_unsupported_endpoint_kind_is_a_value_error(self):
        """A console on an endpoint kind iwsrv cannot reach (ssl) raises ValueError naming it."""
        error = self.assertRaises(ValueError, console_client_string, "ssl:8443")

        self.assertIn("'ssl:8443'", str(error))


def line_starting(text, word):
    """The one line of C{text} whose first word is C{word}."""
    [line] = [line for line in text.splitlines() if line.split()[:1] == [word]]
    return line


class FormatStatusTests(TestCase):
    """The readable table iwsrv status prints."""

    def test_server_line_names_the_server(self):
        """The table has a server line with the server's name."""
        self.assertEqual(line_starting(format_status(STATUS), "server").split()[1:], ["serv_b"])

    def test_role_line_has_role_since_and_cause(self):
        """The role line says the role, since when and why."""
        line = line_starting(format_status(STATUS), "role")

        self.assertIn("live since 2026-11-25T10:00:00Z (no heartbeat from serv_a for 3.0s)", line)

    def test_epoch_line_has_the_epoch(self):
        """The table has an epoch line with the epoch."""
        self.assertEqual(line_starting(format_status(STATUS), "epoch").split()[1:], ["4"])

    def test_peer_line_has_name_connection_and_heartbeat_age(self):
        """The peer line gives the peer's name, whether it is connected and the last heartbeat's age."""
        line = line_starting(format_status(STATUS), "peer")

        self.assertIn("serv_a, not connected, last heartbeat 3.4s ago", line)

    def test_peer_never_heard_says_so(self):
        """A peer never heard from is shown as such."""
        status = dict(STATUS, peer={"name": "serv_a", "connected": True, "last_heartbeat_age": None})

        line = line_starting(format_status(status), "peer")

        self.assertIn("serv_a, connected, never heard", line)

    def test_one_line_per_listener_with_its_state(self):
        """Each listener has one line under the LISTENER header, with its state."""
        text = format_status(STATUS)
        below = text.splitlines()[text.splitlines().index(line_starting(text, "LISTENER")) + 1:]

        self.assertEqual([line.split()[:2] for line in below], [["web", "ACTIVE"], ["ftp", "FAILED"]])

    def test_failed_listener_line_has_its_reason(self):
        """A FAILED listener's line ends with the reason it failed."""
        line = line_starting(format_status(STATUS), "ftp")

        self.assertTrue(line.endswith("CannotListenError: port 21 in use"))


class StatusMainErrorTests(TestCase):
    """iwsrv status refuses, with exit status 2 and one line on stderr, what it cannot ask."""

    def setUp(self):
        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.config = os.path.join(fresh_dir(self), "iwayfailover.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG)

    def test_server_not_in_the_configuration(self):
        """A name with no [server:NAME] section exits 2, naming the sections there are."""
        code = status_main(["--config", self.config, "--name", "serv_c"])

        self.assertEqual(code, 2)
        self.assertIn("no section for server 'serv_c'", self.stderr.getvalue())
        self.assertIn("[server:serv_a], [server:serv_b]", self.stderr.getvalue())

    def test_server_without_a_console(self):
        """A server with no console key exits 2, saying the status API needs one."""
        code = status_main(["--config", self.config, "--name", "serv_b"])

        self.assertEqual(code, 2)
        self.assertIn("[server:serv_b] has no console key", self.stderr.getvalue())

    def test_bad_option(self):
        """An unknown option exits 2, naming the option."""
        code = status_main(["--no-such-option"])

        self.assertEqual(code, 2)
        self.assertTrue(self.stderr.getvalue().startswith("iwsrv status: "))
        self.assertIn("no-such-option", self.stderr.getvalue())

    def test_unreadable_configuration(self):
        """A configuration file that cannot be read exits 2, naming the file."""
        missing = os.path.join(fresh_dir(self), "missing.ini")

        code = status_main(["--config", missing, "--name", "serv_a"])

        self.assertEqual(code, 2)
        self.assertIn(missing, self.stderr.getvalue())


class FakeNode:
    """A node as the console sees it: something with a status()."""

    def __init__(self, status):
        self._status = status

    def status(self):
        return self._status


class StatusResourceTests(TestCase):
    """GET /api/status on the console."""

    def setUp(self):
        self.client = StubTreq(console_root(FakeNode(STATUS)))

    def test_status_is_ok(self):
        """GET /api/status answers 200."""
        response = self.successResultOf(self.client.get("http://console/api/status"))

        self.assertEqual(response.code, 200)

    def test_status_is_json(self):
        """GET /api/status answers with content-type application/json."""
        response = self.successResultOf(self.client.get("http://console/api/status"))

        self.assertEqual(response.headers.getRawHeaders(b"content-type"), [b"application/json"])

    def test_status_body_is_the_nodes_status(self):
        """The body of GET /api/status is the node's status object as JSON."""
        response = self.successResultOf(self.client.get("http://console/api/status"))

        body = self.successResultOf(self.client.content(response))

        self.assertEqual(json.loads(body), STATUS)

    def test_unknown_api_path_needs_a_login(self):
        """Only /api/status is open without a login: another API path answers 401 (a 404 only after a login)."""
        response = self.successResultOf(self.client.get("http://console/api/nothing"))

        self.assertEqual(response.code, 401)


class FromThisHostTests(TestCase):
    """Who may ask for a switchover (until the console has logins): this host only."""

    def request_from(self, address):
        class Request:
            def getClientAddress(self):
                return address

        return Request()

    def test_loopback_v4_v6_mapped_and_unix_are_this_host(self):
        """127.0.0.1, ::1, ::ffff:127.0.0.1 (IPv4 on a dual-stack port) and a Unix socket are this host."""
        from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress

        from iwayfailover.console.api import from_this_host

        for address in (IPv4Address("TCP", "127.0.0.1", 1), IPv6Address("TCP", "::1", 1),
                        IPv6Address("TCP", "::ffff:127.0.0.1", 1), UNIXAddress(b"/run/x.sock")):
            self.assertTrue(from_this_host(self.request_from(address)), address)

    def test_other_addresses_are_not_this_host(self):
        """Any other address, mapped or not, is refused."""
        from twisted.internet.address import IPv4Address, IPv6Address

        from iwayfailover.console.api import from_this_host

        for address in (IPv4Address("TCP", "192.0.2.1", 1), IPv6Address("TCP", "::ffff:192.0.2.1", 1)):
            self.assertFalse(from_this_host(self.request_from(address)), address)


class KeygenCommandTests(TestCase):
    """iwsrv keygen PATH."""

    def setUp(self):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def run_main(self, argv):
        code = main(argv)
        return code, self.stdout.getvalue(), self.stderr.getvalue()

    def test_keygen_writes_a_private_key_file_that_a_node_accepts(self):
        """The file is new, mode 0600, and parses as a key; the output says what to do next."""
        import stat

        from iwayfailover import auth

        path = os.path.join(fresh_dir(self), "failover.key")
        code, out, err = self.run_main(["keygen", path])
        self.assertEqual((code, err), (0, ""))
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        self.assertEqual(len(auth.read_key_file(path).keys), 1)
        self.assertIn("secret_file", out)

    def test_keygen_never_replaces_a_key(self):
        """An existing file is left alone, with exit status 1 and a line saying why."""
        path = os.path.join(fresh_dir(self), "failover.key")
        with open(path, "w") as f:
            f.write("k" * 40 + "\n")
        code, out, err = self.run_main(["keygen", path])
        self.assertEqual(code, 1)
        self.assertIn("not replacing", err)
        with open(path) as f:
            self.assertEqual(f.read(), "k" * 40 + "\n")

    def test_keygen_without_a_path_is_a_usage_error(self):
        """No PATH: exit status 2 with the usage."""
        code, out, err = self.run_main(["keygen"])
        self.assertEqual(code, 2)
        self.assertIn("iwsrv keygen PATH", err)
