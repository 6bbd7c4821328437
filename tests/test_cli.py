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
from zope.interface import implementer

from iwayfailover.cli import console_client_string, format_status, main, status_main
from iwayfailover.console import console_root
from iwayfailover.status import INodeControl, NodeStatus
from harness import temporary_directory


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

    def test_failed_listener_line_has_its_next_automatic_retry(self):
        """A FAILED listener with a retry pending shows which retry comes and in how long."""
        status = dict(STATUS, listeners={"ftp": dict(STATUS["listeners"]["ftp"], retries=2, retry_in=1.5)})

        line = line_starting(format_status(status), "ftp")

        self.assertIn("CannotListenError: port 21 in use (automatic retry 3 in 1.5s)", line)

    def test_failed_listener_line_has_its_reason(self):
        """A FAILED listener's line ends with the reason it failed."""
        line = line_starting(format_status(STATUS), "ftp")

        self.assertTrue(line.endswith("CannotListenError: port 21 in use"))


    def test_auth_line_shows_mode_key_ids_and_file(self):
        """A signed node's auth line gives the MAC, the key ids (never the keys) and the key file."""
        status = dict(STATUS, auth={"mode": "hmac-sha256", "key_file": "/share/failover.key", "key_ids": ["ab12", "cd34"]})

        line = line_starting(format_status(status), "auth")

        self.assertIn("hmac-sha256, key ids ab12, cd34 from /share/failover.key", line)

    def test_auth_line_warns_of_unsigned_heartbeats(self):
        """An insecure node's auth line says heartbeats are not signed."""
        status = dict(STATUS, auth={"mode": "insecure", "key_file": None, "key_ids": []})

        self.assertIn("not signed", line_starting(format_status(status), "auth"))

    def test_heartbeats_line_has_the_counters(self):
        """The heartbeats line gives sent, received, rejected and the longest gap."""
        status = dict(STATUS, heartbeats={"sent": 5, "received": 120, "rejected": 2, "max_gap": 0.31})

        line = line_starting(format_status(status), "heartbeats")

        self.assertIn("sent 5, received 120, rejected 2; longest gap heard 0.31s", line)

    def test_a_refused_reload_is_shown(self):
        """A configuration the node could not reload is shown with the error."""
        status = dict(STATUS, config={"path": "/share/iway.ini", "last_error": "threshold: 'x' is not a number"})

        self.assertIn("threshold: 'x' is not a number", line_starting(format_status(status), "config"))

    def test_peer_line_has_the_peers_role_and_epoch_when_known(self):
        """A connected peer shows the role and epoch it announced."""
        status = dict(STATUS, peer=dict(STATUS["peer"], role="backup", epoch=4, connected=True))

        self.assertIn("(it is backup, epoch 4)", line_starting(format_status(status), "peer"))

    def test_a_peer_no_longer_connected_is_last_seen_not_is(self):
        """After a kill -9 of the live node, its survivor does not say the dead node is live: it was last seen so."""
        status = dict(STATUS, peer=dict(STATUS["peer"], role="live", epoch=3, connected=False))

        line = line_starting(format_status(status), "peer")
        self.assertIn("not connected, last heartbeat 3.4s ago (last seen live, epoch 3)", line)
        self.assertNotIn("it is live", line)

    def test_no_listeners_says_so(self):
        """A node with no listeners says so instead of an empty table."""
        self.assertIn("no listeners for this server", format_status(dict(STATUS, listeners={})))


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


FULL_STATUS = {
    "server": "serv_b",
    "role": "live",
    "epoch": 4,
    "since": "2026-11-25T10:00:00.120Z",
    "cause": "no heartbeat from serv_a for 3.0s",
    "peer": {"name": "serv_a", "connected": False, "last_heartbeat_age": 3.42, "role": "backup", "epoch": 3,
             "priority": 0, "threshold": 3.0},
    "listeners": {
        "web": {"state": "ACTIVE", "since": "2026-11-25T10:00:01.000Z"},
        "ftp": {"state": "FAILED", "since": "2026-11-25T10:00:01.000Z", "reason": "CannotListenError: port 21 in use",
                "retries": 2, "retry_in": 1.5},
        "worker": {"state": "ACTIVE", "since": "2026-11-25T10:00:01.250Z", "pid": 4242, "restarts": 1},
        "vip:10.0.0.100/24": {"state": "ACTIVE", "since": "2026-11-25T10:00:00.500Z",
                              "warning": "no arping: install iputils-arping"},
    },
    "heartbeats": {"sent": 5, "received": 120, "max_gap": 0.31, "rejected": 2, "largest_stall": 0.012,
                   "pulses": {"sent": 0, "received": 0, "rejected": 0}},
    "settings": {"backup_location": "iam1:1200", "heartbeat_port": "1200", "threshold": 3.0,
                 "heartbeat_interval": 1.0, "reload_interval": 5.0},
    "auth": {"mode": "hmac-sha256", "key_file": "/share/failover.key", "key_ids": ["5f12d3346e55"]},
    "config": {"path": "/share/iway.ini", "digest": "ab" * 32, "last_error": None, "source": "share",
               "local_copy": "/var/lib/iwayfailover/serv_b/last-good.ini", "local_copy_saved": "2026-11-25T09:58:59.500Z",
               "local_copy_error": None},
    "transitions": [
        {"at": "2026-11-25T09:59:00.000Z", "from": "starting", "to": "backup", "epoch": 3, "cause": "started as backup"},
        {"at": "2026-11-25T10:00:00.120Z", "from": "backup", "to": "live", "epoch": 4,
         "cause": "no heartbeat from serv_a for 3.0s"},
    ],
}
"""A whole /api/status object, every section and every kind of channel entry, as a node writes it."""


@implementer(INodeControl)
class FakeNode:
    """A node as the console sees it (an INodeControl): its status() is the snapshot read from C{status}, a JSON object."""

    def __init__(self, status):
        self._status = status

    def status(self):
        return NodeStatus.from_json(self._status)


class StatusResourceTests(TestCase):
    """GET /api/status on the console."""

    def setUp(self):
        self.client = StubTreq(console_root(FakeNode(FULL_STATUS)))

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

        self.assertEqual(json.loads(body), FULL_STATUS)

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


PAIR_CONFIG = CONFIG + "console = tcp:8082:interface=127.0.0.1\n"  # both servers with a console


def node_status(server, role, peer, epoch=3):
    return {
        "server": server, "role": role, "epoch": epoch, "since": "2026-11-25T10:00:00Z",
        "peer": {"name": peer, "connected": True, "last_heartbeat_age": 0.2}, "listeners": {},
    }


class SwitchingNode(FakeNode):
    """A node as the switchover resource sees it: its switchover() gives C{outcome}."""

    def __init__(self, status, outcome=None):
        super().__init__(status)
        self.outcome = outcome
        self.asked = 0

    def switchover(self, cause=None):
        from twisted.internet import defer

        self.asked += 1
        if isinstance(self.outcome, Exception):
            return defer.fail(self.outcome)
        return defer.succeed(self.outcome)


TOKEN = "5e" * 32


class ConsoleTokenTests(TestCase):
    """iwsrv switchover logs in with the token the node writes to its state dir."""

    def test_the_token_the_node_wrote_is_read(self):
        from iwayfailover.cli import console_token
        from iwayfailover.console.access import write_token

        folder = temporary_directory(self)
        written = write_token(folder)
        self.assertEqual(console_token("serv_a", folder), written)
        self.assertEqual(os.stat(os.path.join(folder, "console.token")).st_mode & 0o777, 0o600)
        self.assertNotEqual(write_token(folder), written, "a new token at every start")

    def test_a_missing_token_names_the_file_and_what_to_do(self):
        from iwayfailover.cli import CommandError, console_token

        folder = temporary_directory(self)
        error = self.assertRaises(CommandError, console_token, "serv_a", folder)
        self.assertEqual(error.code, 2)
        self.assertIn(os.path.join(folder, "console.token"), str(error))
        self.assertIn("as the user it runs as", str(error))

    def test_a_file_that_is_no_token_is_refused(self):
        from iwayfailover.cli import CommandError, console_token

        folder = temporary_directory(self)
        with open(os.path.join(folder, "console.token"), "w") as f:
            f.write("not a token\n")
        error = self.assertRaises(CommandError, console_token, "serv_a", folder)
        self.assertIn("does not hold a console token", str(error))


class SwitchoverCommandTests(TestCase):
    """iwsrv switchover, against the consoles' real resources in memory (one per server)."""

    def setUp(self):
        from iwayfailover.config import parse_config

        self.config = parse_config(PAIR_CONFIG, "/share/iway.ini")
        self.questions = []
        self.answer = True
        self.a = SwitchingNode(
            node_status("serv_a", "live", "serv_b"), {"from": "serv_a", "to": "serv_b", "epoch": 4, "gap": 0.0123}
        )
        self.b = SwitchingNode(node_status("serv_b", "backup", "serv_a"))
        self.token = TOKEN

    def call(self, client, method, path, timeout, headers=None):
        """The consoles: serv_a's on port 8081, serv_b's on 8082; anything else refuses."""
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        nodes = {"tcp:host=127.0.0.1:port=8081": self.a, "tcp:host=127.0.0.1:port=8082": self.b}
        if nodes.get(client) is None:
            return defer.fail(ConnectionRefusedError("Connection refused"))
        treq = StubTreq(console_root(nodes[client], api_token=TOKEN))
        d = treq.request(method.decode(), "http://console" + path.decode(), headers=headers)
        return d.addCallback(lambda response: treq.json_content(response).addCallback(lambda body: (response.code, body)))

    def confirm(self, question):
        self.questions.append(question)
        return self.answer

    def switch(self, name):
        from iwayfailover.cli import switchover

        return switchover(self.config, name, self.call, self.confirm, lambda server: self.token)

    def test_a_wrong_token_is_refused(self):
        """A token that is not the node's: the console refuses the switchover; nothing is handed over."""
        from iwayfailover.cli import CommandError

        self.token = "0" * 64
        failure = self.failureResultOf(self.switch("serv_a"), CommandError)
        self.assertIn("serv_a refused the switchover", str(failure.value))
        self.assertEqual(self.a.asked, 0)

    def test_asked_of_the_live_node_it_hands_over_after_confirmation(self):
        """Named the live node: one question naming both servers, then the live node's answer."""
        body = self.successResultOf(self.switch("serv_a"))

        self.assertEqual(body, {"from": "serv_a", "to": "serv_b", "epoch": 4, "gap_ms": 12.3})
        [question] = self.questions
        self.assertIn("hand the live role to serv_b?", question)
        self.assertIn("serv_a is live (epoch 3)", question)
        self.assertEqual(self.a.asked, 1)

    def test_asked_of_the_backup_it_asks_the_live_node(self):
        """Named the backup: the command finds the live node from the backup's status and asks it."""
        self.successResultOf(self.switch("serv_b"))

        self.assertEqual((self.a.asked, self.b.asked), (1, 0))

    def test_not_confirmed_changes_nothing(self):
        """Answered no: nothing is asked of the node; the command fails saying nothing changed."""
        from iwayfailover.cli import CommandError

        self.answer = False

        failure = self.failureResultOf(self.switch("serv_a"), CommandError)

        self.assertIn("not confirmed; nothing changed", str(failure.value))
        self.assertEqual(self.a.asked, 0)

    def test_a_refusal_is_named_with_the_nodes_reason(self):
        """The live node refuses (409): the error names the node and its reason."""
        from iwayfailover.cli import CommandError
        from iwayfailover.node import SwitchoverRefused

        self.a.outcome = SwitchoverRefused("the backup serv_b has not answered recently")

        failure = self.failureResultOf(self.switch("serv_a"), CommandError)

        self.assertEqual(str(failure.value), "serv_a refused the switchover: the backup serv_b has not answered recently")

    def test_no_live_node_is_said_before_asking(self):
        """Both backup: no question, an error saying neither is live."""
        from iwayfailover.cli import CommandError

        self.a._status = node_status("serv_a", "backup", "serv_b")

        failure = self.failureResultOf(self.switch("serv_b"), CommandError)

        self.assertIn("neither server is live", str(failure.value))
        self.assertEqual(self.questions, [])

    def test_an_unreachable_console_is_named(self):
        """A console that refuses the connection: the error names the server and its console."""
        from iwayfailover.cli import CommandError

        self.b = None  # serv_b's console is down

        failure = self.failureResultOf(self.switch("serv_b"), CommandError)

        self.assertIn("cannot ask serv_b on tcp:8082:interface=127.0.0.1: nothing listens on 127.0.0.1:8082", str(failure.value))

    def test_a_console_that_does_not_answer_in_time_is_named(self):
        """A timed-out request: the error names the server and says it did not answer in time."""
        from twisted.internet import defer

        from iwayfailover.cli import CommandError, switchover

        def silent(client, method, path, timeout):
            return defer.fail(defer.TimeoutError())

        failure = self.failureResultOf(switchover(self.config, "serv_a", silent, self.confirm), CommandError)

        self.assertRegex(str(failure.value), r"^no answer from serv_a at tcp:8081:interface=127.0.0.1 in [0-9.]+ s")


class SwitchoverMainTests(TestCase):
    """iwsrv switchover's checks that need no network."""

    def setUp(self):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.config = os.path.join(fresh_dir(self), "iwayfailover.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG)

    def test_without_a_terminal_and_without_yes_it_refuses_to_ask(self):
        """No terminal to confirm on and no --yes: the question is refused, saying to pass --yes."""
        from iwayfailover.cli import CommandError, ask_on_terminal

        self.patch(sys, "stdin", io.StringIO("y\n"))

        error = self.assertRaises(CommandError, ask_on_terminal, "Switch?")

        self.assertIn("pass --yes", str(error))
        self.assertEqual(error.code, 2)

    def test_a_server_without_a_console_is_refused_before_any_network(self):
        """A server with no console key exits 2 naming it."""
        from iwayfailover.cli import switchover_main

        code = switchover_main(["--yes", "--config", self.config, "--name", "serv_b"])

        self.assertEqual(code, 2)
        self.assertIn("[server:serv_b] has no console key", self.stderr.getvalue())

    def test_yes_is_an_option(self):
        """--yes and -y parse (and skip the question)."""
        from iwayfailover.cli import SwitchoverOptions

        for flag in ("--yes", "-y"):
            options = SwitchoverOptions()
            options.parseOptions([flag, "--config", self.config])
            self.assertTrue(options["yes"])


class RestartingNode(FakeNode):
    """A node as the restart-listener resource sees it: restart_listener() sets the entry to C{after}."""

    def __init__(self, status, after=None, refusal=None):
        super().__init__(status)
        self.after = after
        self.refusal = refusal
        self.asked = []

    def restart_listener(self, name):
        from twisted.internet import defer

        from iwayfailover.node import ListenerRestartRefused

        self.asked.append(name)
        if self.refusal is not None:
            raise ListenerRestartRefused(self.refusal)
        self._status["listeners"][name] = self.after
        return defer.succeed(None)


class RestartListenerCommandTests(TestCase):
    """iwsrv restart-listener, against the node's real console resources in memory."""

    def setUp(self):
        from iwayfailover.config import parse_config

        self.config = parse_config(PAIR_CONFIG, "/share/iway.ini")
        status = node_status("serv_a", "live", "serv_b")
        status["listeners"] = {"ftp": {"state": "FAILED", "since": "2026-11-25T10:00:01Z", "reason": "port 21 in use"}}
        self.node = RestartingNode(status, after={"state": "ACTIVE", "since": "2026-11-25T10:00:09.000Z"})
        self.token = TOKEN
        self.paths = []

    def call(self, client, method, path, timeout, headers=None):
        """serv_a's console on port 8081; anything else refuses."""
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        if client != "tcp:host=127.0.0.1:port=8081":
            return defer.fail(ConnectionRefusedError("Connection refused"))
        self.paths.append((method, path))
        treq = StubTreq(console_root(self.node, api_token=TOKEN))
        d = treq.request(method.decode(), "http://console" + path.decode(), headers=headers)
        return d.addCallback(lambda response: treq.json_content(response).addCallback(lambda body: (response.code, body)))

    def restart(self, listener="ftp", name="serv_a"):
        from iwayfailover.cli import restart_listener

        return restart_listener(self.config, name, listener, self.call, lambda server: self.token)

    def test_a_failed_listener_is_restarted_through_the_api(self):
        """The command posts to /api/restart-listener with the token and returns the listener's new entry."""
        body = self.successResultOf(self.restart())

        self.assertEqual(body, {"listener": "ftp", "state": "ACTIVE", "since": "2026-11-25T10:00:09.000Z"})
        self.assertEqual(self.node.asked, ["ftp"])
        self.assertEqual(self.paths, [(b"POST", b"/api/restart-listener?listener=ftp")])

    def test_a_name_with_odd_characters_is_quoted(self):
        """A listener name is sent quoted in the query string, and reaches the node whole."""
        self.node.refusal = "serv_a has no listener 'a b&c'"
        self.failureResultOf(self.restart("a b&c"))

        self.assertEqual(self.node.asked, ["a b&c"])

    def test_a_wrong_token_is_refused(self):
        """A token that is not the node's: the console refuses; nothing is restarted."""
        from iwayfailover.cli import CommandError

        self.token = "0" * 64

        failure = self.failureResultOf(self.restart(), CommandError)

        self.assertIn("serv_a refused to restart listener ftp", str(failure.value))
        self.assertEqual(self.node.asked, [])

    def test_a_refusal_is_named_with_the_nodes_reason(self):
        """The node refuses (409): one line naming the node, the listener and the node's reason."""
        from iwayfailover.cli import CommandError

        self.node.refusal = "listener ftp is ACTIVE, not FAILED"

        failure = self.failureResultOf(self.restart(), CommandError)

        self.assertEqual(str(failure.value), "serv_a refused to restart listener ftp: listener ftp is ACTIVE, not FAILED")
        self.assertEqual(failure.value.code, 1)

    def test_a_listener_failed_again_is_an_error_with_the_reason(self):
        """Restarted but FAILED again: the command fails with the listener's reason."""
        from iwayfailover.cli import CommandError

        self.node.after = {"state": "FAILED", "since": "2026-11-25T10:00:09.000Z", "reason": "port 21 in use"}

        failure = self.failureResultOf(self.restart(), CommandError)

        self.assertEqual(str(failure.value), "listener ftp on serv_a is FAILED again: port 21 in use")

    def test_an_unreachable_console_is_named(self):
        """A console that refuses the connection: the error names the server and its console."""
        from iwayfailover.cli import CommandError

        failure = self.failureResultOf(self.restart(name="serv_b"), CommandError)

        self.assertIn("cannot ask serv_b on tcp:8082:interface=127.0.0.1: nothing listens on 127.0.0.1:8082", str(failure.value))

    def test_a_console_that_does_not_answer_in_time_is_named(self):
        """A timed-out request: the error names the server and says it did not answer in time."""
        from twisted.internet import defer

        from iwayfailover.cli import CommandError, restart_listener

        def silent(client, method, path, timeout, headers=None):
            return defer.fail(defer.TimeoutError())

        failure = self.failureResultOf(restart_listener(self.config, "serv_a", "ftp", silent), CommandError)

        self.assertRegex(str(failure.value), r"^no answer from serv_a at tcp:8081:interface=127.0.0.1 in [0-9.]+ s")


class RestartListenerMainTests(TestCase):
    """iwsrv restart-listener's checks that need no network, and its options."""

    def setUp(self):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.config = os.path.join(fresh_dir(self), "iwayfailover.ini")
        with open(self.config, "w") as f:
            f.write(CONFIG)

    def test_a_server_without_a_console_is_refused_before_any_network(self):
        """A server with no console key exits 2 with one line naming it."""
        code = main(["restart-listener", "web", "--config", self.config, "--name", "serv_b"])

        self.assertEqual(code, 2)
        self.assertEqual(self.stderr.getvalue().count("\n"), 1)
        self.assertIn("iwsrv restart-listener: [server:serv_b] has no console key", self.stderr.getvalue())

    def test_without_a_listener_name_it_is_a_usage_error(self):
        """No listener named: exit 2 with one line."""
        code = main(["restart-listener", "--config", self.config, "--name", "serv_a"])

        self.assertEqual(code, 2)
        self.assertTrue(self.stderr.getvalue().startswith("iwsrv restart-listener: "))
        self.assertEqual(self.stderr.getvalue().count("\n"), 1)

    def test_an_unreadable_token_exits_2_naming_the_file(self):
        """No console token in the state dir: exit 2, one line naming the file and the command to run where."""
        state = fresh_dir(self)

        code = main(["restart-listener", "web", "--config", self.config, "--name", "serv_a", "--state-dir", state])

        self.assertEqual(code, 2)
        self.assertIn(os.path.join(state, "console.token"), self.stderr.getvalue())
        self.assertIn("run iwsrv restart-listener on serv_a's host", self.stderr.getvalue())
        self.assertEqual(self.stderr.getvalue().count("\n"), 1)

    def test_the_listener_may_come_before_or_after_the_options(self):
        """Both `restart-listener web --name serv_a` and `restart-listener --name serv_a web` parse."""
        from iwayfailover.cli import RestartListenerOptions

        for argv in (["web", "--name", "serv_a", "--config", self.config], ["--name", "serv_a", "--config", self.config, "web"]):
            options = RestartListenerOptions()
            options.parseOptions(argv)
            self.assertEqual((options["listener"], options["name"], options["config"]), ("web", "serv_a", self.config))


GROUP_STATUS = {
    "server": "beta", "role": "backup", "epoch": 7, "since": "2026-11-25T10:00:00.000Z", "cause": "started as backup",
    "peer": {"name": None, "connected": False, "last_heartbeat_age": None},
    "listeners": {"web": {"state": "WAITING", "since": "2026-11-25T10:00:00.000Z"}},
    "settings": {"threshold": 3.0, "heartbeat_interval": 0.5, "reload_interval": 5.0},
    "coordinator": {
        "kind": "etcd", "endpoints": ["http://127.0.0.1:2379"], "connected": True, "live": "alpha", "live_epoch": 7,
        "lease_ttl": None, "lease_left": None, "renewals": 0, "renewal_failures": 0, "last_error": None,
    },
    "members": {
        "alpha": {"role": "live", "epoch": 7, "priority": 10, "may_campaign": True, "since": "2026-11-25T09:00:00.000Z",
                  "console": "http://127.0.0.1:8081"},
        "beta": {"role": "backup", "epoch": 7, "priority": 5, "may_campaign": True, "since": None, "console": None},
        "gamma": {"role": "backup", "epoch": 6, "priority": 0, "may_campaign": False, "since": None, "console": None},
    },
}
"""/api/status of a backup member of a group of three on etcd."""


class FormatGroupStatusTests(TestCase):
    """iwsrv status of a group member: the coordinator, the lease, and every member with its role."""

    def test_the_coordinator_line_names_the_store_and_the_live_member(self):
        """coordinator: etcd at its endpoints, connected, live: alpha (epoch 7)."""
        line = line_starting(format_status(GROUP_STATUS), "coordinator")

        self.assertIn("etcd at http://127.0.0.1:2379, connected; live: alpha (epoch 7)", line)

    def test_a_store_out_of_reach_says_why(self):
        """Not connected: the last error is shown; nobody known live."""
        status = dict(GROUP_STATUS, coordinator=dict(GROUP_STATUS["coordinator"], connected=False, live=None,
                                                     last_error="connection refused"))

        line = line_starting(format_status(status), "coordinator")

        self.assertIn("NOT connected (connection refused); nobody holds the live role", line)

    def test_the_lease_line_has_ttl_time_left_and_renewals(self):
        """A live member's lease: TTL, seconds left, keepalive period, renewals and failures."""
        status = dict(GROUP_STATUS, coordinator=dict(GROUP_STATUS["coordinator"], lease_ttl=3, lease_left=2.38,
                                                     renewals=40, renewal_failures=1))

        line = line_starting(format_status(status), "lease")

        self.assertIn("TTL 3s, 2.4s left; keepalive every 0.5s; renewals 40, failed 1", line)

    def test_every_member_is_a_row_with_its_role(self):
        """A MEMBER table: each member's role, epoch and priority; this node starred; one not campaigning said so."""
        text = format_status(GROUP_STATUS)

        self.assertEqual(line_starting(text, "MEMBER").split(), ["MEMBER", "ROLE", "EPOCH", "PRIORITY", "SINCE", "CONSOLE"])
        self.assertEqual(line_starting(text, "alpha").split(),
                         ["alpha", "live", "7", "10", "2026-11-25T09:00:00.000Z", "http://127.0.0.1:8081"])
        self.assertEqual(line_starting(text, "beta").split(), ["beta", "*", "backup", "7", "5"])
        self.assertEqual(line_starting(text, "gamma").split(), ["gamma", "backup", "(no", "campaign)", "6", "0"])

    def test_a_group_status_has_no_pair_lines(self):
        """No peer, heartbeats or threshold lines in a group: the coordinator and the lease stand for them."""
        words = [line.split()[0] for line in format_status(GROUP_STATUS).splitlines() if line.split()]

        self.assertNotIn("peer", words)
        self.assertNotIn("threshold", words)
        self.assertIn("web", words)

    def test_a_pair_status_has_no_member_table(self):
        """The pair's table is as it was: a peer line, no MEMBER header."""
        words = [line.split()[0] for line in format_status(FULL_STATUS).splitlines() if line.split()]

        self.assertIn("peer", words)
        self.assertNotIn("MEMBER", words)
        self.assertNotIn("coordinator", words)


GROUP_CONFIG = """\
[failover]
coordinator = etcd
etcd_endpoints = http://127.0.0.1:2379

[server:alpha]
threshold = 3
console = tcp:8081:interface=127.0.0.1

[server:beta]
threshold = 3
console = tcp:8082:interface=127.0.0.1

[server:gamma]
threshold = 3
console = tcp:8083:interface=127.0.0.1
"""


def member_status(server, role, live="alpha"):
    """/api/status of C{server} in the group of GROUP_CONFIG, where C{live} holds the role."""
    members = {name: dict(GROUP_STATUS["members"][name], role="live" if name == live else "backup")
               for name in ("alpha", "beta", "gamma")}
    return dict(GROUP_STATUS, server=server, role=role, members=members,
                coordinator=dict(GROUP_STATUS["coordinator"], live=live))


@implementer(INodeControl)
class GroupSwitchingNode(FakeNode):
    """A group member as its console sees it: its switchover() records C{to} and answers C{outcome}."""

    def __init__(self, status, outcome=None):
        super().__init__(status)
        self.outcome = outcome
        self.asked = []

    def switchover(self, cause=None, to=None):
        from twisted.internet import defer

        self.asked.append(to)
        return defer.succeed(self.outcome)


class GroupSwitchoverCommandTests(TestCase):
    """iwsrv switchover in a group: the live member is found, and --to is sent to it."""

    def setUp(self):
        from iwayfailover.config import parse_config

        self.config = parse_config(GROUP_CONFIG, "/share/iway.ini")
        self.questions = []
        self.asked_consoles = []
        self.nodes = {
            8081: GroupSwitchingNode(member_status("alpha", "live"), {"from": "alpha", "to": "gamma", "epoch": 9, "gap": 0.002}),
            8082: GroupSwitchingNode(member_status("beta", "backup")),
            8083: GroupSwitchingNode(member_status("gamma", "backup")),
        }
        self.down = set()

    def call(self, client, method, path, timeout, headers=None, body=None):
        """The members' consoles on 8081-8083, in memory; a port in C{down} refuses."""
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        port = int(client.rsplit("=", 1)[1])
        self.asked_consoles.append((port, method, path))
        if port in self.down or port not in self.nodes:
            return defer.fail(ConnectionRefusedError("Connection refused"))
        treq = StubTreq(console_root(self.nodes[port], api_token=TOKEN))
        headers = dict(headers or {})
        data = None
        if body is not None:
            headers[b"Content-Type"] = b"application/json"
            data = json.dumps(body).encode()
        d = treq.request(method.decode(), "http://console" + path.decode(), headers=headers, data=data)
        return d.addCallback(lambda response: treq.json_content(response).addCallback(lambda body: (response.code, body)))

    def confirm(self, question):
        self.questions.append(question)
        return True

    def switch(self, name, to=None):
        from iwayfailover.cli import switchover

        return switchover(self.config, name, self.call, self.confirm, lambda server: TOKEN, to=to)

    def test_without_a_name_the_live_member_is_found_and_asked(self):
        """No --name: the members' consoles are asked until the live one is found, and it hands over."""
        body = self.successResultOf(self.switch(None))

        self.assertEqual(body["from"], "alpha")
        self.assertEqual(self.nodes[8081].asked, [None])
        [question] = self.questions
        self.assertIn("alpha is live (epoch 7) in a group", question)
        self.assertIn("beta (backup), gamma (backup)", question)
        self.assertIn("hand the live role to the next member by priority?", question)

    def test_asked_of_a_backup_it_follows_the_live_member_it_names(self):
        """--name gamma (a backup): its coordinator.live names alpha, which is asked next; beta never."""
        self.successResultOf(self.switch("gamma"))

        self.assertEqual([port for port, _, _ in self.asked_consoles], [8083, 8081, 8081])
        self.assertEqual(self.nodes[8081].asked, [None])

    def test_to_is_sent_to_the_live_member(self):
        """--to gamma: the live member's console gets {"to": "gamma"}; the question names gamma."""
        body = self.successResultOf(self.switch(None, to="gamma"))

        self.assertEqual(self.nodes[8081].asked, ["gamma"])
        self.assertEqual(body["to"], "gamma")
        self.assertIn("hand the live role to gamma?", self.questions[0])

    def test_a_member_down_is_passed_over(self):
        """alpha's console does not answer: the search goes on to beta, which names gamma live, and gamma is asked."""
        self.down.add(8081)
        self.nodes[8082] = GroupSwitchingNode(member_status("beta", "backup", live="gamma"))
        self.nodes[8083] = GroupSwitchingNode(member_status("gamma", "live", live="gamma"),
                                              {"from": "gamma", "to": "beta", "epoch": 9, "gap": 0.001})

        self.successResultOf(self.switch(None))

        self.assertEqual([port for port, _, _ in self.asked_consoles], [8081, 8082, 8083, 8083])
        self.assertEqual(self.nodes[8083].asked, [None])

    def test_no_live_member_is_an_error_naming_why(self):
        """Nobody live and every console asked: the command says so, with the consoles it could not reach."""
        from iwayfailover.cli import CommandError

        self.down.add(8083)
        for port in (8081, 8082):
            self.nodes[port] = GroupSwitchingNode(member_status(("alpha", "beta")[port - 8081], "backup", live=None))

        failure = self.failureResultOf(self.switch(None), CommandError)

        self.assertIn("no member of the group is live", str(failure.value))
        self.assertIn("cannot ask gamma", str(failure.value))
        self.assertEqual(self.questions, [])

    def test_to_a_server_not_in_the_file_is_refused_before_any_network(self):
        """--to delta: no such section; the members are named, and no console is asked."""
        from iwayfailover.cli import CommandError

        failure = self.failureResultOf(self.switch(None, to="delta"), CommandError)

        self.assertIn("--to delta: no [server:delta] section", str(failure.value))
        self.assertIn("alpha, beta, gamma", str(failure.value))
        self.assertEqual(self.asked_consoles, [])

    def test_to_the_live_member_itself_is_refused(self):
        """--to alpha while alpha is live: nothing to hand over, nothing asked of alpha."""
        from iwayfailover.cli import CommandError

        failure = self.failureResultOf(self.switch(None, to="alpha"), CommandError)

        self.assertIn("alpha is the live member already", str(failure.value))
        self.assertEqual(self.nodes[8081].asked, [])


class SwitchoverToOptionTests(TestCase):
    """iwsrv switchover --to parses; a pair passes it to the live node, which refuses any node but its peer."""

    def test_to_is_an_option(self):
        """--to NAME is kept; without it, None."""
        from iwayfailover.cli import SwitchoverOptions

        config = os.path.join(fresh_dir(self), "iway.ini")
        options = SwitchoverOptions()
        options.parseOptions(["--to", "gamma", "--config", config])
        self.assertEqual(options["to"], "gamma")
        options = SwitchoverOptions()
        options.parseOptions(["--config", config])
        self.assertIsNone(options["to"])


class OutputTests(TestCase):
    """iwsrv as a command in a pipeline: its version, and a reader that goes away."""

    def iwsrv(self, *argv, stdout):
        import subprocess

        from harness import IWSRV

        return subprocess.run([IWSRV, *argv], stdout=stdout, stderr=subprocess.PIPE, text=True, timeout=60)

    def test_version_names_iwayfailover_and_twisted(self):
        """iwsrv --version: iwayfailover's version, then Twisted's (not Twisted's alone, as twistd would)."""
        import subprocess

        import twisted

        import iwayfailover

        done = self.iwsrv("--version", stdout=subprocess.PIPE)
        self.assertEqual(done.returncode, 0, done.stderr)
        self.assertEqual(done.stdout.strip(),
                         f"iwsrv (iwayfailover) {iwayfailover.__version__}, Twisted {twisted.__version__}")

    def test_a_reader_that_went_away_gets_no_traceback(self):
        """iwsrv --help into a pipe whose reader has closed (as `| head` does): no traceback, the status of SIGPIPE."""
        read, write = os.pipe()
        os.close(read)
        try:
            done = self.iwsrv("--help", stdout=write)
        finally:
            os.close(write)
        self.assertEqual(done.returncode, 141)
        self.assertNotIn("Traceback", done.stderr)
        self.assertEqual(done.stderr, "")


class UsageTests(TestCase):
    """Running a node with bad arguments: one line naming the mistake, status 2 (not twistd's whole usage)."""

    def run_main(self, argv, environ=None):
        err = io.StringIO()
        saved = sys.stderr, os.environ.get("IWAY_BACKUP")
        sys.stderr = err
        if environ is not None:
            os.environ["IWAY_BACKUP"] = environ
        try:
            code = main(argv)
        finally:
            sys.stderr = saved[0]
            if saved[1] is None:
                os.environ.pop("IWAY_BACKUP", None)
            else:
                os.environ["IWAY_BACKUP"] = saved[1]
        return code, err.getvalue()

    def test_a_mistyped_command_is_one_line_with_did_you_mean(self):
        code, err = self.run_main(["stauts"])
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("did you mean `iwsrv status`?", err)

    def test_a_mistyped_option_is_one_line_with_did_you_mean(self):
        code, err = self.run_main(["--confg", "x.ini"])
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("did you mean --config?", err)

    def test_a_bad_iway_backup_is_one_line(self):
        code, err = self.run_main(["--config", "x.ini"], environ="maybe")
        self.assertEqual(code, 2)
        self.assertEqual(err.count("\n"), 1, err)
        self.assertIn("IWAY_BACKUP='maybe'", err)

    def test_help_has_no_markup_and_lists_the_state_dir_of_switchover(self):
        from iwayfailover.cli import help_text

        text = help_text()
        self.assertNotRegex(text, r"[A-Z]\{")
        switchover = text[text.index("iwsrv switchover"):].split("\n")[0]
        self.assertIn("--state-dir", switchover)


class NoAnswerTests(TestCase):
    """A node that accepts and never answers: one line saying so, with the time waited."""

    def test_a_request_cancelled_by_its_timeout_reads_no_answer(self):
        from twisted.internet import defer
        from twisted.python.failure import Failure
        from twisted.web.client import ResponseNeverReceived

        from iwayfailover.cli import CommandError, _reach

        class Server:
            name, console = "serv_a", "tcp:8081:interface=127.0.0.1"

        d = _reach(Server(), defer.fail(ResponseNeverReceived([Failure(defer.CancelledError())])), timeout=5)
        error = self.failureResultOf(d, CommandError).value
        self.assertEqual(str(error), "no answer from serv_a at tcp:8081:interface=127.0.0.1 in 5 s (is it hung, or paused?)")

    def test_a_refusal_names_the_connection_error(self):
        from twisted.internet import defer
        from twisted.internet.error import ConnectionRefusedError

        from iwayfailover.cli import CommandError, _reach

        class Server:
            name, console = "serv_a", "tcp:8081:interface=127.0.0.1"

        d = _reach(Server(), defer.fail(ConnectionRefusedError()))
        error = self.failureResultOf(d, CommandError).value
        self.assertIn("cannot ask serv_a on tcp:8081", str(error))
        self.assertIn("refused", str(error))
        self.assertNotIn("Failure", str(error))
