"""
The administration console, in memory: every page, form and refusal
through C{treq.testing.StubTreq} against a real node on a
C{MemoryReactorClock}; the users file, the settings editor and the event
ring buffer as units; C{iwsrv adduser}.
"""

import io
import json
import os
import re
import stat
import sys

from twisted.cred.credentials import UsernamePassword
from twisted.cred.error import UnauthorizedLogin
from twisted.internet import defer
from twisted.internet.address import IPv4Address
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel
from twisted.trial.unittest import TestCase
from twisted.web.resource import Resource
from treq.testing import StubTreq
from zope.interface import implementer

from harness import temporary_directory
from iwayfailover import configfile, probe
from iwayfailover.config import ConfigError, parse_config
from iwayfailover.console import access, console_root
from iwayfailover.console import settings as form
from iwayfailover.console.users import (
    UsersFileChecker, UsersFileError, add_user, hash_password, parse_users, read_users, verify_password,
)
from iwayfailover.events import RecentEvents
from iwayfailover.listeners import ACTIVE, FAILED, WAITING
from iwayfailover.node import FailoverNode
from iwayfailover.state import EpochStore
from iwayfailover.status import INodeControl
from wirepeer import keyed, outranked

PASSWORD = "correct horse"
FAST = 2 ** 10  # scrypt cost for test users: the format is the same, the hashing quicker

CONFIG = """\
; the shared file, as an operator wrote it
[failover]
heartbeat_interval = 0.5   ; seconds
console_users = users

[server:serv_a]
backup_location = 10.9.9.2:1200
heartbeat_port = 1200
threshold = 2

[server:serv_b]
backup_location = 10.9.9.1:1200
heartbeat_port = 1200
threshold = 2   ; Threshold

[listener:web]
plugin = web --listen tcp:8080

[listener:broken]
plugin = web --listen tcp:8443
"""


API_TOKEN = "7c" * 32

class FakeService:
    """A listener's service: fails to start while its name is in C{failing}."""

    def __init__(self, spec, failing):
        self.spec = spec
        self.failing = failing
        self.running = False
        self.parent = None

    def privilegedStartService(self):
        pass

    def startService(self):
        if self.spec.name in self.failing:
            raise OSError("port 8443 is in use")
        self.running = True

    def stopService(self):
        self.running = False


@implementer(INodeControl)
class ThroughInterface:
    """
    A node seen through L{INodeControl} alone: a console built on it that
    reached for anything else of the node (its config, poller, peer,
    listeners, reactor, ...) would fail with an AttributeError naming it.
    Each call goes to the node as it is then (a test may replace a method).
    """

    def __init__(self, node):
        self._node = node

    def __getattr__(self, name):
        if name not in INodeControl.names():
            raise AttributeError(f"the console reached for node.{name}, which INodeControl does not offer")
        return getattr(self._node, name)


def sync(f, *args):
    return defer.maybeDeferred(f, *args)


class FromAddress(Resource):
    """The console root as reached from C{host} (StubTreq always comes from 127.0.0.1)."""

    def __init__(self, root, host, server=None):
        super().__init__()
        self.root = root
        self.host = host
        self.server = server  # the console's own address (None: as StubTreq has it)

    def getChildWithDefault(self, path, request):
        request.getClientAddress = lambda: IPv4Address("TCP", self.host, 40000)
        if self.server is not None:
            request.getHost = lambda: IPv4Address("TCP", self.server, 8081)
        return self.root.getChildWithDefault(path, request)


class ConsoleTestCase(TestCase):
    """
    A node (serv_b by default) with its console, a users file with user ops,
    and a logged-out client. The console sees the node through
    L{INodeControl} only (L{ThroughInterface}).
    """

    text = CONFIG
    name = "serv_b"
    backup = True

    def setUp(self):
        self.folder = temporary_directory(self)
        self.users = os.path.join(self.folder, "users")
        add_user(self.users, "ops", PASSWORD, n=FAST)
        self.path = os.path.join(self.folder, "iway.ini")
        with open(self.path, "w") as f:
            f.write(self.text)
        os.chmod(self.path, 0o640)
        self.reactor = MemoryReactorClock()
        self.failing = {"broken"}
        store = EpochStore(os.path.join(self.folder, "state"))
        store.prepare()
        self.node = FailoverNode(
            keyed(self.text, self.path), self.name, self.backup, store, self.reactor,
            build_listener=lambda spec: FakeService(spec, self.failing), now=self.reactor.seconds,
            query=lambda *args: defer.succeed(probe.Reply(None, probe.REFUSED, "connection refused")),
        )
        self.node.startService()
        self.addCleanup(lambda: self.node.running and self.node.stopService() and None)
        self.events = RecentEvents()
        self.root = console_root(ThroughInterface(self.node), clock=self.reactor, run=sync, events=self.events, api_token=API_TOKEN)
        self.client = StubTreq(self.root)
        self.cookie = None

    # -- requests --

    def request(self, method, url, client=None, cookie=True, **kwargs):
        client = client or self.client
        if cookie and self.cookie:
            kwargs.setdefault("cookies", {"iway_session_" + self.name: self.cookie})
        response = self.successResultOf(client.request(method, "http://console" + url, allow_redirects=False, **kwargs))
        body = self.successResultOf(client.content(response)).decode("utf-8")
        for header in response.headers.getRawHeaders("set-cookie") or ():
            value = header.split(";")[0].split("=", 1)[1]
            self.cookie = value or None
        return response, body

    def get(self, url, **kwargs):
        return self.request("GET", url, **kwargs)

    def post(self, url, data, **kwargs):
        return self.request("POST", url, data=data, **kwargs)

    def csrf(self, body):
        return re.search(r'name="csrf" value="([^"]*)"', body).group(1)

    def login(self, user="ops", password=PASSWORD, client=None):
        _, body = self.get("/login", client=client)
        return self.post("/login", {"user": user, "password": password, "csrf": self.csrf(body)}, client=client)

    def logged_in(self):
        response, _ = self.login()
        self.assertEqual(response.code, 303)
        _, body = self.get("/")
        self.token = self.csrf(body)
        return body

    def file_text(self):
        with open(self.path) as f:
            return f.read()


class AccessTests(ConsoleTestCase):
    """Every page and action needs a login; /api/status and /metrics are open on loopback only."""

    def test_every_page_without_login_redirects_to_the_login_page(self):
        """GET of /, /listeners, /settings and /log without a login answers 303 to /login."""
        for page in ("/", "/listeners", "/settings", "/log"):
            response, _ = self.get(page)
            self.assertEqual((response.code, response.headers.getRawHeaders("location")), (303, ["/login"]), page)

    def test_every_action_without_login_is_refused(self):
        """POST to /switchover, /settings, /listeners/restart and /logout without a login answers 403 and does nothing."""
        before = self.file_text()
        self.node.switchover = lambda cause=None: self.fail("switchover without a login")
        for page in ("/switchover", "/settings", "/listeners/restart", "/logout"):
            response, _ = self.post(page, {"confirm": "yes", "server:serv_b/threshold": "9", "listener": "broken"})
            self.assertEqual(response.code, 403, page)
        self.assertEqual(self.file_text(), before)

    def test_status_api_is_open_without_login_on_loopback(self):
        """GET /api/status from 127.0.0.1 answers the status without a login."""
        response, body = self.get("/api/status")
        self.assertEqual(response.code, 200)
        self.assertIn('"role": "backup"', body)

    def test_status_api_from_another_host_needs_a_login(self):
        """GET /api/status from 192.0.2.7 answers 401 without a login, 200 with one."""
        remote = StubTreq(FromAddress(self.root, "192.0.2.7"))
        response, body = self.get("/api/status", client=remote)
        self.assertEqual(response.code, 401)
        self.assertNotIn("role", body)
        self.login(client=remote)
        response, body = self.get("/api/status", client=remote)
        self.assertEqual(response.code, 200)

    def test_status_api_is_open_to_the_consoles_own_lan_address(self):
        """A console bound to 192.0.2.2 sees iwsrv status on this host come from 192.0.2.2: open; from 192.0.2.7: 401."""
        own = StubTreq(FromAddress(self.root, "192.0.2.2", server="192.0.2.2"))
        response, body = self.get("/api/status", client=own)
        self.assertEqual(response.code, 200)
        self.assertIn('"role": "backup"', body)
        other = StubTreq(FromAddress(self.root, "192.0.2.7", server="192.0.2.2"))
        response, _ = self.get("/api/status", client=other)
        self.assertEqual(response.code, 401)

    def test_from_this_host(self):
        """Loopback, a Unix socket, or the console's own (non-wildcard) address; nothing else."""
        from twisted.internet.address import IPv6Address, UNIXAddress
        from twisted.web.test.requesthelper import DummyRequest

        from iwayfailover.console.api import from_this_host

        def request(client, server):
            r = DummyRequest([b""])
            r.client = client
            r.getHost = lambda: server
            return r

        here = IPv4Address("TCP", "192.0.2.2", 8081)
        cases = [
            (IPv4Address("TCP", "127.0.0.1", 1), here, True),
            (IPv6Address("TCP", "::ffff:127.0.0.1", 1), IPv6Address("TCP", "::", 8081), True),
            (UNIXAddress(b"/run/x"), UNIXAddress(b"/run/x"), True),
            (IPv4Address("TCP", "192.0.2.2", 1), here, True),
            (IPv4Address("TCP", "192.0.2.7", 1), here, False),
            (IPv4Address("TCP", "0.0.0.0", 1), IPv4Address("TCP", "0.0.0.0", 8081), False),
            (IPv6Address("TCP", "2001:db8::2", 1), IPv6Address("TCP", "2001:db8::2", 8081), True),
            (IPv6Address("TCP", "2001:db8::7", 1), IPv6Address("TCP", "2001:db8::2", 8081), False),
        ]
        for client, server, expected in cases:
            self.assertEqual(from_this_host(request(client, server)), expected, (client, server))

    def test_metrics_is_open_on_loopback_only(self):
        """A /metrics child is readable without a login from 127.0.0.1 and refused (401) from elsewhere."""

        class Metrics(Resource):
            isLeaf = True

            def render_GET(self, request):
                return b"iway_up 1\n"

        self.root.putChild(b"metrics", Metrics())
        response, body = self.get("/metrics")
        self.assertEqual((response.code, body), (200, "iway_up 1\n"))
        response, body = self.get("/metrics", client=StubTreq(FromAddress(self.root, "192.0.2.7")))
        self.assertEqual(response.code, 401)
        self.assertNotIn("iway_up", body)

    def test_metrics_from_another_host_with_a_login(self):
        """The real /metrics: from 192.0.2.7, 401 without a login, 200 and the samples with one."""
        remote = StubTreq(FromAddress(self.root, "192.0.2.7"))
        response, body = self.get("/metrics", client=remote)
        self.assertEqual(response.code, 401)
        self.assertNotIn("iwayfailover_role", body)
        self.login(client=remote)
        response, body = self.get("/metrics", client=remote)
        self.assertEqual(response.code, 200)
        self.assertIn('iwayfailover_role{role="backup",server="serv_b"} 1.0', body)

    def test_unknown_path_after_login_is_not_found(self):
        """Logged in, a path the console does not serve answers 404."""
        self.logged_in()
        response, _ = self.get("/api/nothing")
        self.assertEqual(response.code, 404)

    def test_pages_from_another_host_need_a_login_too(self):
        """Being on loopback opens only the status API: pages from 127.0.0.1 still need a login."""
        response, _ = self.get("/settings")
        self.assertEqual(response.code, 303)

    def test_switchover_api_refuses_a_browser_without_login(self):
        """POST /api/switchover with an Origin header (any browser's POST) and no login is refused: no CSRF from a web page."""
        self.node.switchover = lambda cause=None: self.fail("a web page made a switchover")
        response, _ = self.post("/api/switchover", {}, headers={"Origin": "http://evil.example"})
        self.assertEqual(response.code, 403)

    def test_switchover_api_serves_iwsrv_with_the_console_token(self):
        """POST /api/switchover with the node's console token (iwsrv switchover's login) reaches the node."""
        asked = []
        self.node.switchover = lambda cause=None: asked.append(cause) or defer.succeed(
            {"from": "serv_b", "to": "serv_a", "epoch": 2, "gap": 0.01})
        response, body = self.post("/api/switchover", {}, headers={"Authorization": "Bearer " + API_TOKEN})
        self.assertEqual((response.code, len(asked)), (200, 1))

    def test_switchover_api_answers_500_when_the_result_cannot_be_read(self):
        """A switchover whose result lacks its fields: 500 with a JSON error, not a request left hanging."""
        self.node.switchover = lambda cause=None: defer.succeed({})
        response, body = self.post("/api/switchover", {}, headers={"Authorization": "Bearer " + API_TOKEN})
        self.assertEqual(response.code, 500)
        self.assertIn('"error"', body)
        self.assertEqual(len(self.flushLoggedErrors(KeyError)), 1)

    def test_switchover_api_refuses_loopback_without_login_or_token(self):
        """Being on this host is not a login: without a session or the token (or with a wrong one), refused."""
        self.node.switchover = lambda cause=None: self.fail("switched over without a login")
        for headers in ({}, {"Authorization": "Bearer " + "0" * 64}, {"Authorization": API_TOKEN}):
            response, _ = self.post("/api/switchover", {}, headers=headers)
            self.assertEqual(response.code, 403, headers)

    def test_security_headers_on_every_answer(self):
        """Pages, the login, the API, static files and a 404 all carry the security headers."""
        self.logged_in()
        for url in ("/", "/login", "/api/status", "/static/console.css", "/nothing"):
            response, _ = self.get(url)
            headers = response.headers
            csp = headers.getRawHeaders("content-security-policy")[0]
            self.assertIn("script-src 'self'", csp, url)
            self.assertNotIn("unsafe-inline", csp, url)
            self.assertIn("frame-ancestors 'none'", csp, url)
            self.assertEqual(headers.getRawHeaders("x-frame-options"), ["DENY"], url)
            self.assertEqual(headers.getRawHeaders("x-content-type-options"), ["nosniff"], url)
            self.assertEqual(headers.getRawHeaders("referrer-policy"), ["no-referrer"], url)

    def test_pages_have_no_inline_script(self):
        """Every page loads its one script from /static; no <script> with a body, no on* attributes."""
        for url in ("/login", "/", "/listeners", "/settings", "/log"):
            if url == "/":
                self.logged_in()
            _, body = self.get(url)
            self.assertEqual(re.findall(r"<script[^>]*>(.+?)</script>", body, re.S), [], url)
            self.assertIsNone(re.search(r"\son[a-z]+=", body), url)
            self.assertIn('<script src="/static/console.js"', body)

    def test_session_cookie_is_httponly_and_samesite_strict(self):
        """The session cookie is HttpOnly, SameSite=Strict, path /, and not Secure over plain HTTP."""
        response, _ = self.get("/login")
        cookie = response.headers.getRawHeaders("set-cookie")[0]
        # Named for the server: browsers share cookies between ports, so two consoles on one host must not clash.
        self.assertTrue(cookie.startswith("iway_session_serv_b="), cookie)
        self.assertIn("HttpOnly", cookie)
        self.assertIn("SameSite=strict", cookie)
        self.assertIn("Path=/", cookie)
        self.assertNotIn("Secure", cookie)

    def test_session_cookie_is_secure_over_tls(self):
        """Over TLS the session cookie is also Secure."""
        cookies = []

        class Request:
            def getCookie(self, name):
                return None

            def isSecure(self):
                return True

            def addCookie(self, *args, **kwargs):
                cookies.append(kwargs)

        access.Sessions(self.reactor).new(Request(), "ops")
        self.assertEqual((cookies[0]["secure"], cookies[0]["httpOnly"], cookies[0]["sameSite"]), (True, True, b"strict"))

    def test_session_expires_after_the_idle_timeout(self):
        """A session unused for longer than the idle timeout is gone: the next page asks for a login again."""
        self.logged_in()
        self.reactor.advance(access.IDLE_TIMEOUT + 1)
        response, _ = self.get("/")
        self.assertEqual(response.code, 303)

    def test_session_in_use_does_not_expire(self):
        """Each request starts the idle time again."""
        self.logged_in()
        for _ in range(3):
            self.reactor.advance(access.IDLE_TIMEOUT * 0.75)
            response, _ = self.get("/")
            self.assertEqual(response.code, 200)

    def test_status_polls_do_not_keep_a_session_alive(self):
        """The page's own polls of /api/status do not restart the idle time: a forgotten tab's session still ends."""
        self.logged_in()
        for _ in range(4):
            self.reactor.advance(access.IDLE_TIMEOUT / 3)
            self.get("/api/status")
        response, _ = self.get("/")
        self.assertEqual(response.code, 303)

    def test_many_anonymous_sessions_do_not_end_a_login(self):
        """More than MAX_SESSIONS cookieless GET /login (each makes a login form's session) leave a logged-in session alive."""
        self.logged_in()
        logged_in_cookie = self.cookie
        for _ in range(max(access.MAX_SESSIONS, access.MAX_ANONYMOUS_SESSIONS) + 1):
            response, _ = self.get("/login", cookie=False, client=StubTreq(self.root))  # a new client: no cookie jar
            self.assertEqual(response.code, 200)
        self.assertEqual(len(self.root.console.sessions._anonymous), access.MAX_ANONYMOUS_SESSIONS)
        self.cookie = logged_in_cookie
        response, body = self.get("/settings")
        self.assertEqual(response.code, 200)
        self.assertIn("Logged in as", body)

    def test_anonymous_sessions_are_capped(self):
        """The login form's sessions are kept up to their own limit, the oldest going first."""
        sessions = access.Sessions(self.reactor, anonymous_limit=3)
        class Request:
            getCookie = staticmethod(lambda name: None)
            addCookie = staticmethod(lambda *a, **k: None)
            isSecure = staticmethod(lambda: False)

        request = Request
        made = [sessions.new(request(), None) for _ in range(5)]
        self.assertEqual(list(sessions._anonymous), [s.token for s in made[2:]])
        self.assertEqual(len(sessions._sessions), 0)

    def test_new_password_ends_the_users_sessions_within_a_minute(self):
        """iwsrv adduser giving ops a new password ends ops's session at the next check (60 s); a login with the new one stays."""
        self.logged_in()
        add_user(self.users, "ops", "a new password", n=FAST)
        self.reactor.advance(30)
        self.assertEqual(self.get("/")[0].code, 200)  # not yet checked
        self.reactor.advance(30)
        self.assertEqual(self.get("/")[0].code, 303)
        response, _ = self.login(password="a new password")
        self.assertEqual(response.code, 303)
        self.reactor.advance(60)
        self.assertEqual(self.get("/")[0].code, 200)

    def test_user_removed_from_the_file_is_logged_out(self):
        """A user no longer in the users file loses its session at the next check; the others keep theirs."""
        add_user(self.users, "night", "another secret", n=FAST)
        self.logged_in()
        ops = self.cookie
        other = StubTreq(self.root)
        self.cookie = None
        self.login(user="night", password="another secret", client=other)
        night = self.cookie
        with open(self.users) as f:
            lines = [line for line in f if not line.startswith("ops:")]
        with open(self.users, "w") as f:
            f.writelines(lines)
        self.reactor.advance(60)
        self.cookie = ops
        self.assertEqual(self.get("/")[0].code, 303)
        self.cookie = night
        self.assertEqual(self.get("/", client=other)[0].code, 200)

    def test_unreadable_users_file_keeps_sessions(self):
        """A users file that cannot be parsed just now (a half-written edit) ends no session."""
        self.logged_in()
        with open(self.users, "w") as f:
            f.write("this is not a users line\n")
        self.reactor.advance(60)
        self.assertEqual(self.get("/")[0].code, 200)

    def test_logout_ends_the_session(self):
        """POST /logout (with the token) ends the session: the old cookie opens nothing."""
        self.logged_in()
        old = self.cookie
        response, _ = self.post("/logout", {"csrf": self.token})
        self.assertEqual(response.code, 303)
        self.cookie = old
        response, _ = self.get("/")
        self.assertEqual(response.code, 303)

    def test_login_makes_a_new_session(self):
        """The session cookie changes at login (no fixation of a session set before it)."""
        _, body = self.get("/login")
        before = self.cookie
        self.post("/login", {"user": "ops", "password": PASSWORD, "csrf": self.csrf(body)})
        self.assertNotEqual(self.cookie, before)


    def raw_http(self, data):
        """C{data} sent to the console's real site (ConsoleSite) over an in-memory transport; what it answered."""
        from twisted.internet.testing import StringTransport

        from iwayfailover.console import ConsoleSite

        protocol = ConsoleSite(self.root).buildProtocol(IPv4Address("TCP", "127.0.0.1", 8081))
        transport = StringTransport(peerAddress=IPv4Address("TCP", "127.0.0.1", 40000),
                                    hostAddress=IPv4Address("TCP", "127.0.0.1", 8081))
        protocol.makeConnection(transport)
        protocol.dataReceived(data)
        self.addCleanup(protocol.connectionLost, None)
        return transport.value()

    def test_request_body_over_64_kib_is_refused_with_413(self):
        """A POST body over 64 KiB (by its Content-Length, or chunked) is answered 413 and reaches no page."""
        from iwayfailover.console import MAX_BODY

        self.logged_in()
        before = self.file_text()
        cookie = f"iway_session_{self.name}={self.cookie}".encode()
        body = b"csrf=" + self.token.encode() + b"&server:serv_b/threshold=9&x=" + b"a" * MAX_BODY
        answer = self.raw_http(b"POST /settings HTTP/1.1\r\nHost: console\r\nCookie: " + cookie +
                               b"\r\nContent-Type: application/x-www-form-urlencoded\r\nContent-Length: %d\r\n\r\n" % len(body) + body)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertIn(b"larger than 64 KiB", answer)
        chunk = b"a" * 40000
        chunked = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(2)) + b"0\r\n\r\n"
        answer = self.raw_http(b"POST /login HTTP/1.1\r\nHost: console\r\nTransfer-Encoding: chunked\r\n"
                               b"Content-Type: application/x-www-form-urlencoded\r\n\r\n" + chunked)
        self.assertTrue(answer.startswith(b"HTTP/1.1 413 "), answer[:100])
        self.assertEqual(self.file_text(), before)

    def test_request_body_under_the_cap_is_served(self):
        """A small POST through the real site reaches the page (here: a login form without its token, 403)."""
        body = b"user=ops&password=x"
        answer = self.raw_http(b"POST /login HTTP/1.1\r\nHost: console\r\nContent-Type: application/x-www-form-urlencoded\r\n"
                               b"Content-Length: %d\r\n\r\n" % len(body) + body)
        self.assertTrue(answer.startswith(b"HTTP/1.1 403 "), answer[:100])

class CsrfTests(ConsoleTestCase):
    """Every POST carries the session's CSRF token, or is refused with 403."""

    def test_post_without_token_is_refused(self):
        """A logged-in POST to /settings without a token answers 403 and leaves the file alone."""
        self.logged_in()
        before = self.file_text()
        response, body = self.post("/settings", {"server:serv_b/threshold": "9", "digest": configfile.digest(before.encode())})
        self.assertEqual(response.code, 403)
        self.assertIn("CSRF", body)
        self.assertEqual(self.file_text(), before)

    def test_post_with_a_wrong_token_is_refused(self):
        """A token of another session, or made up, is refused with 403 on every action."""
        self.logged_in()
        self.node.switchover = lambda cause=None: self.fail("switchover with a bad token")
        for page in ("/switchover", "/settings", "/listeners/restart", "/logout"):
            response, _ = self.post(page, {"csrf": "x" * 43, "confirm": "yes", "listener": "broken"})
            self.assertEqual(response.code, 403, page)

    def test_login_forms_token_does_not_allow_actions(self):
        """An anonymous session's (the login form's) CSRF token does not let it POST /settings, /switchover or /listeners/restart: 403, nothing done."""
        self.node.listeners.start()  # `broken` is FAILED: a restart would start it
        before = self.file_text()
        self.node.switchover = lambda cause=None: self.fail("switchover without a login")
        self.node.restart_listener = lambda name: self.fail("restart without a login")
        _, body = self.get("/login")
        token = self.csrf(body)
        self.assertTrue(token)
        for page in ("/settings", "/switchover", "/listeners/restart"):
            response, body = self.post(page, {"csrf": token, "confirm": "yes", "listener": "broken",
                                              "server:serv_b/threshold": "9", "digest": configfile.digest(before.encode())})
            self.assertEqual(response.code, 403, page)
            self.assertIn("not logged in", body)
        self.assertEqual(self.file_text(), before)

    def test_refused_posts_are_warned_once_per_client_per_ten_seconds(self):
        """20 refused POSTs in a burst: one warning; the next one after 10 s says how many went unlogged."""
        from twisted.logger import globalLogPublisher

        logged = []
        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)

        def warnings():
            return [e for e in logged if e.get("log_level") == LogLevel.warn and "console: refused a " in e.get("log_format", "")]

        for _ in range(20):
            response, _ = self.post("/settings", {"csrf": "x"})
            self.assertEqual(response.code, 403)
        self.assertEqual(len(warnings()), 1)
        self.reactor.advance(10.5)
        self.post("/settings", {"csrf": "x"})
        self.assertEqual([e["more"] for e in warnings()], ["", " (19 more refused since the last report)"])

    def test_login_without_the_forms_token_is_refused(self):
        """POST /login with the right password but no token answers 403 and logs nobody in."""
        self.get("/login")
        response, _ = self.post("/login", {"user": "ops", "password": PASSWORD})
        self.assertEqual(response.code, 403)
        response, _ = self.get("/")
        self.assertEqual(response.code, 303)

    def test_every_form_carries_the_token(self):
        """Every form on every page has the session's CSRF token in it."""
        self.logged_in()
        self.node.listeners.start()  # makes `broken` FAILED: its restart form shows
        for url in ("/", "/listeners", "/settings", "/log"):
            _, body = self.get(url)
            forms = re.findall(r"<form.*?</form>", body, re.S)
            for found in forms:
                self.assertIn(f'name="csrf" value="{self.token}"', found, url)


class LoginTests(ConsoleTestCase):
    """Logins are checked against the users file, logged, and limited per address."""

    def test_right_password_logs_in(self):
        """ops with the right password is sent to the status page, which names the user."""
        response, _ = self.login()
        self.assertEqual(response.headers.getRawHeaders("location"), ["/"])
        _, body = self.get("/")
        self.assertIn("Logged in as <strong>ops</strong>", body)

    def test_wrong_password_is_refused_and_logged(self):
        """A wrong password answers 403 with a message, and a warning names the user and the address."""
        logged = []
        from twisted.logger import globalLogPublisher

        globalLogPublisher.addObserver(logged.append)
        self.addCleanup(globalLogPublisher.removeObserver, logged.append)
        response, body = self.login(password="wrong password")
        self.assertEqual(response.code, 403)
        self.assertIn("Wrong user name or password", body)
        warnings = [e for e in logged if e.get("log_level") == LogLevel.warn and "failed login" in e.get("log_format", "")]
        self.assertEqual([(e["user"], e["client"]) for e in warnings], [("ops", "127.0.0.1")])

    def test_unknown_user_is_refused(self):
        """A user not in the file is refused like a wrong password."""
        response, body = self.login(user="nobody")
        self.assertEqual(response.code, 403)
        self.assertIn("Wrong user name or password", body)

    def test_user_added_later_can_log_in_without_a_restart(self):
        """The users file is read at each login: a user added while the node runs can log in."""
        add_user(self.users, "night", "another secret", n=FAST)
        response, _ = self.login(user="night", password="another secret")
        self.assertEqual(response.code, 303)

    def held_logins(self):
        """The console rebuilt with a run that holds each password check until the test lets it go."""
        held = []

        def run(f, *args):
            d = defer.Deferred()
            held.append((f, args, d))
            return d

        def release():
            f, args, d = held.pop(0)
            try:
                d.callback(f(*args))
            except Exception:
                d.errback()
            self.client.flush()

        self.root = console_root(ThroughInterface(self.node), clock=self.reactor, run=run, events=self.events, api_token=API_TOKEN)
        self.client = StubTreq(self.root)
        return held, release

    def send_logins(self, count, client=None, clients=None):
        """C{count} login POSTs with a wrong password sent at once; their Deferred responses."""
        clients = clients or [client or self.client] * count
        tokens = []
        for c in clients:
            _, body = self.get("/login", client=c)
            tokens.append((self.cookie, self.csrf(body)))
        return [
            c.request("POST", "http://console/login", allow_redirects=False,
                      data={"user": "ops", "password": "wrong password", "csrf": csrf},
                      cookies={"iway_session_" + self.name: cookie})
            for c, (cookie, csrf) in zip(clients, tokens)
        ]

    def test_parallel_logins_from_one_address_get_no_more_tries(self):
        """20 wrong logins sent at once from one address: at most LOGIN_FAILURES are checked (403), the rest 429; one hash at a time."""
        held, release = self.held_logins()
        responses = self.send_logins(20)
        self.assertEqual(len(held), 1)  # one password hash at a time
        checked = 0
        while held:
            self.assertEqual(len(held), 1)
            release()
            checked += 1
        self.client.flush()
        codes = sorted(self.successResultOf(r).code for r in responses)
        self.assertEqual(checked, access.LOGIN_FAILURES)
        self.assertEqual(codes, [403] * access.LOGIN_FAILURES + [429] * (20 - access.LOGIN_FAILURES))

    def test_too_many_logins_waiting_get_503(self):
        """Logins from many addresses queue for the one hash; past MAX_WAITING_LOGINS waiting, 503."""
        from iwayfailover.console.pages import MAX_WAITING_LOGINS

        held, release = self.held_logins()
        clients = [StubTreq(FromAddress(self.root, f"192.0.2.{n}")) for n in range(1, MAX_WAITING_LOGINS + 3)]
        responses = self.send_logins(len(clients), clients=clients)
        late = [self.successResultOf(r) for r in responses[MAX_WAITING_LOGINS + 1:]]
        self.assertEqual([r.code for r in late], [503])
        self.assertIn("Too many logins at once", self.successResultOf(clients[-1].content(late[0])).decode())
        while held:
            self.assertEqual(len(held), 1)
            release()
        for c, r in zip(clients, responses[:MAX_WAITING_LOGINS + 1]):
            c.flush()
            self.assertEqual(self.successResultOf(r).code, 403)

    def test_logins_hash_on_the_consoles_own_thread(self):
        """By default a password hash runs on a thread pool of the console's own, not the reactor's shared one."""
        from iwayfailover.console import _login_thread

        class Reactor:
            triggers = []

            def addSystemEventTrigger(self, phase, event, f):
                self.triggers.append((phase, event, f))

            def callFromThread(self, f, *args, **kwargs):
                f(*args, **kwargs)

            def getThreadPool(self):
                raise AssertionError("the reactor's shared pool was used")

        import threading

        reactor = Reactor()
        run = _login_thread(reactor)
        done = threading.Event()
        names = []
        d = run(lambda: names.append(threading.current_thread().name) or done.set())
        self.assertTrue(done.wait(10))
        self.assertIn("iwayfailover-console-logins", names[0])
        [(phase, event, stop)] = reactor.triggers
        self.assertEqual((phase, event), ("during", "shutdown"))
        stop()
        self.assertIsNone(self.successResultOf(d))

    def test_failed_logins_are_rate_limited_per_address(self):
        """After 5 failures an address gets 429, even with the right password; another address does not."""
        for _ in range(access.LOGIN_FAILURES):
            self.login(password="wrong password")
        response, body = self.login()
        self.assertEqual(response.code, 429)
        self.assertIn("Too many failed logins", body)
        self.assertTrue(response.headers.getRawHeaders("retry-after"))
        remote = StubTreq(FromAddress(self.root, "192.0.2.7"))
        response, _ = self.login(client=remote)
        self.assertEqual(response.code, 303)

    def test_rate_limit_ends_after_the_window(self):
        """Once the window has passed, the address may log in again."""
        for _ in range(access.LOGIN_FAILURES):
            self.login(password="wrong password")
        self.reactor.advance(access.LOGIN_WINDOW + 1)
        response, _ = self.login()
        self.assertEqual(response.code, 303)

    def test_login_page_says_when_no_users_file_is_configured(self):
        """Without console_users, the login page says nobody can log in and how to fix it, and logins fail."""
        self.node.config = keyed(self.text.replace("console_users = users\n", ""), self.path)
        _, body = self.get("/login")
        self.assertIn("iwsrv adduser FILE USER", body)
        response, _ = self.login()
        self.assertEqual(response.code, 403)


class InterfaceTests(ConsoleTestCase):
    """The console is built on an INodeControl, and asks nothing else of a node."""

    def test_a_node_without_the_interface_is_refused(self):
        """console_root of an object that does not provide INodeControl raises TypeError at once."""

        class NotANode:
            """Has a status(), but does not say it provides INodeControl."""

            def status(self):
                return None

        self.assertRaises(TypeError, console_root, NotANode(), clock=self.reactor, run=sync)

    def test_the_status_api_is_the_snapshots_json(self):
        """GET /api/status answers the node's status snapshot as its JSON, unchanged."""
        response, body = self.get("/api/status")
        self.assertEqual(response.code, 200)
        self.assertEqual(json.loads(body), self.node.status().to_json())


class StatusPageTests(ConsoleTestCase):
    """/ shows role, epoch, since and why, the peer, and recent transitions."""

    def test_status_page_shows_the_node(self):
        """Role, epoch, cause, peer name and the transition into backup are on the page."""
        body = self.logged_in()
        self.assertIn('class="role role-backup"', body)
        self.assertIn("started as backup", body)
        self.assertIn('data-field="epoch">0<', body)
        self.assertIn("serv_a", body)
        self.assertIn("never heard", body)
        self.assertIn("<td>starting</td><td>backup</td>", body)

    def test_backup_offers_no_switchover(self):
        """A backup's status page has no switchover button; it says to use the live node."""
        body = self.logged_in()
        self.assertNotIn('action="/switchover"', body)
        self.assertIn("started on the live node", body)

    def test_left_pane_links_every_page(self):
        """The left pane links Status, Listeners, Backup Settings and Log, marking the current one."""
        body = self.logged_in()
        for link in ('<a href="/" class="current">Status</a>', '<a href="/listeners">Listeners</a>',
                     '<a href="/settings">Backup Settings</a>', '<a href="/log">Log</a>'):
            self.assertIn(link, body)


class LiveStatusPageTests(ConsoleTestCase):
    """A live node's status page offers a planned switchover, with a confirmation."""

    name = "serv_a"
    backup = False

    def setUp(self):
        super().setUp()
        self.asked = []

    def switch(self, result):
        def switchover(cause=None):
            self.asked.append(cause)
            return result

        self.node.switchover = switchover

    def test_live_node_offers_a_switchover(self):
        """The page has a switchover form naming the backup."""
        body = self.logged_in()
        self.assertIn('action="/switchover"', body)
        self.assertIn("Switch over to serv_b", body)

    def test_switchover_asks_for_confirmation_first(self):
        """The first POST shows a confirmation page and does not switch over."""
        self.logged_in()
        self.switch(defer.Deferred())
        response, body = self.post("/switchover", {"csrf": self.token})
        self.assertEqual(response.code, 200)
        self.assertIn("Yes, switch over to serv_b", body)
        self.assertIn('name="confirm" value="yes"', body)
        self.assertEqual(self.asked, [])

    def test_confirmed_switchover_is_made_and_reported(self):
        """confirm=yes calls the node's switchover (cause naming the user) and shows its outcome."""
        self.logged_in()
        self.switch(defer.succeed({"from": "serv_a", "to": "serv_b", "epoch": 3, "gap": 0.0123}))
        response, body = self.post("/switchover", {"csrf": self.token, "confirm": "yes"})
        self.assertEqual(response.code, 200)
        self.assertIn("Switched over from serv_a to serv_b (epoch 3); no listener served for 12.3 ms", body)
        self.assertIn("asked by ops on the console", self.asked[0])

    def test_refused_switchover_says_why(self):
        """A switchover the node refuses answers 409 with the node's reason."""
        from iwayfailover.node import SwitchoverRefused

        self.logged_in()
        self.switch(defer.fail(SwitchoverRefused("the backup serv_b has not answered recently")))
        response, body = self.post("/switchover", {"csrf": self.token, "confirm": "yes"})
        self.assertEqual(response.code, 409)
        self.assertIn("the backup serv_b has not answered recently", body)

    def test_switchover_on_the_real_node_refused_without_a_backup(self):
        """Through the real node: with no backup answering, the refusal reaches the page."""
        self.logged_in()
        response, body = self.post("/switchover", {"csrf": self.token, "confirm": "yes"})
        self.assertEqual(response.code, 409)
        self.assertIn("has not answered recently", body)


def banner_tag(body):
    """The opening tag of the Status page's FAILED-listeners banner."""
    return re.search(r'<div[^>]*data-live="failed-listeners"[^>]*>', body).group(0)


class FailedListenersBannerTests(ConsoleTestCase):
    """The Status page warns, naming them, while a live node serves with FAILED listeners."""

    name = "serv_a"
    backup = False

    def setUp(self):
        super().setUp()

    def test_a_live_node_with_a_failed_listener_shows_a_banner_naming_it(self):
        """The banner is shown, with the FAILED listener's name, its reason and its next automatic retry."""
        body = self.logged_in()
        self.assertNotIn("hidden", banner_tag(body))
        self.assertIn('role="alert"', banner_tag(body))
        self.assertIn('data-field="failed-count">1<', body)
        self.assertIn("<li><strong>broken</strong>: OSError: port 8443 is in use (automatic retry 1 in", body)
        self.assertNotIn("<strong>web</strong>", body)

    def test_the_banner_goes_once_the_listener_is_up(self):
        """Once an automatic retry brings the listener up, the banner is hidden and names nobody."""
        self.failing.clear()  # the port was let go of
        self.reactor.advance(1.0)
        self.assertEqual(self.node.listeners.listeners["broken"].state, ACTIVE)
        body = self.logged_in()
        self.assertIn("hidden", banner_tag(body))
        self.assertNotIn("<strong>broken</strong>", body)

    def test_a_backup_with_a_failed_listener_shows_no_banner(self):
        """A backup serves nobody anyway: a listener left FAILED from its live time raises no banner."""
        outranked(self.node, "serv_b", host="10.9.9.2")
        self.assertEqual(self.node.listeners.listeners["broken"].state, FAILED)
        body = self.logged_in()
        self.assertIn("hidden", banner_tag(body))
        self.assertNotIn("<strong>broken</strong>", body)


class RestartListenerApiTests(ConsoleTestCase):
    """POST /api/restart-listener: iwsrv restart-listener's way in, with the console token."""

    name = "serv_a"
    backup = False
    TOKEN = {"Authorization": "Bearer " + API_TOKEN}

    def setUp(self):
        super().setUp()

    def test_with_the_console_token_a_failed_listener_is_started_again(self):
        """With the token: the FAILED listener is started, and the answer is its status entry with its name."""
        self.failing.clear()
        response, body = self.post("/api/restart-listener?listener=broken", {}, headers=self.TOKEN)
        self.assertEqual(response.code, 200)
        answer = json.loads(body)
        self.assertEqual((answer["listener"], answer["state"]), ("broken", ACTIVE))
        self.assertEqual(self.node.listeners.listeners["broken"].state, ACTIVE)

    def test_a_restart_that_fails_again_answers_the_failed_entry(self):
        """Still failing: 200 with state FAILED and the reason (the caller decides what that means)."""
        response, body = self.post("/api/restart-listener", {"listener": "broken"}, headers=self.TOKEN)
        self.assertEqual(response.code, 200)
        answer = json.loads(body)
        self.assertEqual((answer["state"], answer["reason"]), (FAILED, "OSError: port 8443 is in use"))

    def test_a_listener_that_is_not_failed_or_unknown_is_refused_with_409(self):
        """An ACTIVE or unknown listener: 409 with the node's reason."""
        response, body = self.post("/api/restart-listener?listener=web", {}, headers=self.TOKEN)
        self.assertEqual(response.code, 409)
        self.assertIn("web is ACTIVE, not FAILED", json.loads(body)["error"])
        response, body = self.post("/api/restart-listener?listener=nope", {}, headers=self.TOKEN)
        self.assertEqual(response.code, 409)
        self.assertIn("no listener 'nope'", json.loads(body)["error"])

    def test_no_listener_named_is_400(self):
        """Without listener=NAME: 400 saying what to give."""
        response, body = self.post("/api/restart-listener", {}, headers=self.TOKEN)
        self.assertEqual(response.code, 400)
        self.assertIn("listener=NAME", body)

    def test_without_login_or_token_it_is_refused(self):
        """On this host but with no session and no (or a wrong) token: 403, nothing restarted."""
        self.node.restart_listener = lambda name: self.fail("restarted without a login")
        for headers in ({}, {"Authorization": "Bearer " + "0" * 64}):
            response, _ = self.post("/api/restart-listener?listener=broken", {}, headers=headers)
            self.assertEqual(response.code, 403, headers)

    def test_the_token_from_another_host_is_refused(self):
        """The token works from this host only."""
        self.node.restart_listener = lambda name: self.fail("restarted from another host")
        client = StubTreq(FromAddress(self.root, "192.0.2.7"))
        response, _ = self.request("POST", "/api/restart-listener?listener=broken", client=client, data={}, headers=self.TOKEN)
        self.assertEqual(response.code, 403)


class ListenersPageTests(ConsoleTestCase):
    """/listeners: the listener monitor, and restart of a FAILED listener."""

    def test_backup_shows_its_listeners_waiting(self):
        """A backup's listeners are WAITING, each with its since time."""
        self.logged_in()
        _, body = self.get("/listeners")
        self.assertIn('<span class="state state-WAITING" data-listener="web">WAITING</span>', body)
        self.assertIn('data-listener-since="web">', body)
        self.assertNotIn("Restart", body)

    def test_failed_listener_shows_its_reason_and_a_restart(self):
        """A FAILED listener shows the reason and a Restart button; an ACTIVE one has none."""
        self.node.listeners.start()
        self.logged_in()
        _, body = self.get("/listeners")
        self.assertIn("state-FAILED", body)
        self.assertIn("OSError: port 8443 is in use", body)
        self.assertIn('name="listener" value="broken"', body)
        self.assertNotIn('name="listener" value="web"', body)

    def restart(self, listener):
        """POST a Restart of C{listener}: the answer is a 303 to /listeners; the page there, got as a browser would."""
        response, _ = self.post("/listeners/restart", {"csrf": self.token, "listener": listener})
        self.assertEqual((response.code, response.headers.getRawHeaders("location")), (303, ["/listeners"]))
        return self.get("/listeners")[1]

    def test_restart_starts_a_failed_listener_again(self):
        """Restart of a FAILED listener on a live node starts it; the page it leads to says it is ACTIVE."""
        self.node.listeners.start()
        self.failing.clear()  # the port is free now
        self.logged_in()
        body = self.restart("broken")
        self.assertEqual(self.node.listeners.listeners["broken"].state, ACTIVE)
        self.assertIn("Listener broken is ACTIVE", body)

    def test_restart_redirects_and_its_notice_is_shown_once(self):
        """After a Restart the browser is on /listeners (post-redirect-get); a reload does not show the notice again."""
        self.node.listeners.start()
        self.failing.clear()
        self.logged_in()
        self.assertIn("Listener broken is ACTIVE", self.restart("broken"))
        _, again = self.get("/listeners")
        self.assertNotIn("Listener broken is ACTIVE", again)
        self.assertIn("state-ACTIVE", again)

    def test_restart_that_fails_again_says_why(self):
        """A restart that fails again shows the listener FAILED with its reason, as an error."""
        self.node.listeners.start()
        self.logged_in()
        body = self.restart("broken")
        self.assertEqual(self.node.listeners.listeners["broken"].state, FAILED)
        self.assertIn("Listener broken is FAILED: OSError: port 8443 is in use", body)
        self.assertIn('class="notice error"', body)

    def test_restart_on_a_backup_makes_it_waiting(self):
        """On a backup, a restarted FAILED listener is built and WAITING again."""
        self.node.listeners.start()
        self.node.listeners.stop(WAITING)
        self.assertEqual(self.node.listeners.listeners["broken"].state, FAILED)
        self.logged_in()
        self.restart("broken")
        self.assertEqual(self.node.listeners.listeners["broken"].state, WAITING)

    def test_restart_of_a_listener_not_failed_is_refused(self):
        """Only a FAILED listener can be restarted: for others /listeners says why, as an error."""
        self.logged_in()
        self.assertIn("web is WAITING, not FAILED", self.restart("web"))
        self.assertIn("no listener 'nope'", self.restart("nope"))

    def test_restart_that_errs_says_why(self):
        """A restart whose Deferred fails with an unexpected error: /listeners gives its message, not a request left hanging."""
        self.logged_in()
        self.node.restart_listener = lambda name: defer.fail(RuntimeError("the plugin blew up"))
        self.assertIn("could not be restarted: the plugin blew up", self.restart("broken"))
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)


class SettingsPageTests(ConsoleTestCase):
    """/settings: every server's Backup Settings and the [failover] settings, checked and saved safely."""

    def form_values(self, body):
        values = dict(re.findall(r'<input type="text" name="([^"]+)" id="[^"]+" value="([^"]*)"', body))
        self.assertIn('placeholder="default: 5"', body)  # an empty optional field shows its default
        values["csrf"] = self.csrf(body)
        values["digest"] = re.search(r'name="digest" value="([^"]+)"', body).group(1)
        return values

    def open_settings(self):
        self.logged_in()
        _, body = self.get("/settings")
        return self.form_values(body)

    def test_settings_show_every_server_and_the_failover_section(self):
        """Location of Backup, Heartbeat Port and Threshold of both servers, and the [failover] keys."""
        values = self.open_settings()
        self.assertEqual(values["server:serv_a/backup_location"], "10.9.9.2:1200")
        self.assertEqual(values["server:serv_b/backup_location"], "10.9.9.1:1200")
        self.assertEqual(values["server:serv_b/heartbeat_port"], "1200")
        self.assertEqual(values["server:serv_b/threshold"], "2")
        self.assertEqual(values["failover/heartbeat_interval"], "0.5")
        self.assertIn("failover/witness", values)
        _, body = self.get("/settings")
        for label in ("Location of Backup", "Heartbeat Port", "Threshold"):
            self.assertIn(label, body)

    def test_save_writes_the_file_keeping_comments_and_permissions(self):
        """A changed threshold is written; every comment and other line stays, and the mode is kept."""
        values = self.open_settings()
        values["server:serv_b/threshold"] = "4.5"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 200)
        self.assertIn("Saved.", body)
        text = self.file_text()
        self.assertEqual(text, CONFIG.replace("threshold = 2   ; Threshold", "threshold = 4.5   ; Threshold"))
        self.assertEqual(parse_config(text, self.path).server("serv_b").threshold, 4.5)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_saved_file_is_applied_by_this_node(self):
        """After a save the node's poller reads the file at once: the new threshold is in its status."""
        from iwayfailover.reload import ConfigPoller

        self.node.poller = ConfigPoller(
            self.reactor, self.node.config, 5.0, load=lambda path: keyed(open(path).read(), path), run=sync,
            apply=self.node.apply_config,
        )
        self.node.poller.startService()
        self.addCleanup(self.node.poller.stopService)
        values = self.open_settings()
        values["server:serv_b/threshold"] = "7"
        self.post("/settings", values)
        self.reactor.advance(self.node.poller.settle)  # read again once settled, then applied
        self.assertEqual(self.node.status().to_json()["settings"]["threshold"], 7.0)

    def test_invalid_value_is_shown_beside_its_field_and_nothing_is_saved(self):
        """threshold = soon: 400, the loader's message beside the threshold field, the file untouched, the typed value kept."""
        values = self.open_settings()
        before = self.file_text()
        values["server:serv_b/threshold"] = "soon"
        values["server:serv_a/backup_location"] = "nowhere"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 400)
        self.assertEqual(self.file_text(), before)
        threshold = re.search(r'name="server:serv_b/threshold"[^>]*value="soon"[^>]*/><span class="error">([^<]*)<', body)
        self.assertIn("not a number", threshold.group(1))
        location = re.search(r'name="server:serv_a/backup_location"[^>]*value="nowhere"[^>]*/><span class="error">([^<]*)<', body)
        self.assertIn("not a client endpoint", location.group(1))

    def test_rule_across_fields_is_shown_beside_the_field(self):
        """A threshold not above heartbeat_interval is refused beside that threshold."""
        values = self.open_settings()
        values["server:serv_a/threshold"] = "0.5"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 400)
        error = re.search(r'name="server:serv_a/threshold"[^>]*/><span class="error">([^<]*)<', body)
        self.assertIn("must be greater than [failover] heartbeat_interval", error.group(1))

    def test_unknown_preferred_server_is_refused(self):
        """preferred = serv_z names no server: refused beside the preferred field."""
        values = self.open_settings()
        values["failover/preferred"] = "serv_z"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 400)
        self.assertRegex(body, r'name="failover/preferred"[^>]*/><span class="error">no \[server:serv_z\] section')

    def test_change_made_elsewhere_is_not_overwritten(self):
        """If the file changed since the page was opened, nothing is written (409) and the other change stays."""
        values = self.open_settings()
        elsewhere = self.file_text().replace("threshold = 2\n", "threshold = 3\n", 1)
        with open(self.path, "w") as f:
            f.write(elsewhere)
        values["server:serv_b/threshold"] = "9"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 409)
        self.assertIn("changed since this page was opened", body)
        self.assertEqual(self.file_text(), elsewhere)

    def test_emptied_optional_key_is_removed(self):
        """Clearing an optional field (heartbeat_interval) removes the key; the default applies."""
        values = self.open_settings()
        values["failover/heartbeat_interval"] = ""
        response, _ = self.post("/settings", values)
        self.assertEqual(response.code, 200)
        self.assertNotIn("heartbeat_interval", self.file_text())

    def test_keys_and_users_are_not_editable(self):
        """console_users is shown read-only; a submitted value for it is ignored."""
        values = self.open_settings()
        self.assertNotIn("failover/console_users", values)
        values["failover/console_users"] = "/tmp/other"
        values["server:serv_b/threshold"] = "3"
        self.post("/settings", values)
        self.assertIn("console_users = users\n", self.file_text())


    def test_save_checks_run_off_the_reactor_thread(self):
        """The form's checks (which read files and find plugins) go through the console's run, as the file I/O does."""
        ran = []

        def run(f, *args):
            ran.append(f)
            return defer.maybeDeferred(f, *args)

        self.root = console_root(ThroughInterface(self.node), clock=self.reactor, run=run, events=self.events, api_token=API_TOKEN)
        self.client = StubTreq(self.root)
        values = self.open_settings()
        values["server:serv_b/threshold"] = "4.5"
        del ran[:]
        response, _ = self.post("/settings", values)
        self.assertEqual(response.code, 200)
        self.assertIn(form.check_form, ran)
        self.assertIn(configfile.write_config, ran)

    def test_file_with_crlf_line_endings_can_be_saved_and_keeps_them(self):
        """A CRLF file: the save is not refused as changed elsewhere (409), and every line still ends in CRLF."""
        crlf = CONFIG.replace("\n", "\r\n")
        with open(self.path, "wb") as f:
            f.write(crlf.encode("utf-8"))
        values = self.open_settings()
        values["server:serv_b/threshold"] = "4.5"
        values["failover/witness"] = "10.9.9.3:53"
        response, body = self.post("/settings", values)
        self.assertEqual(response.code, 200, body)
        with open(self.path, "rb") as f:
            saved = f.read().decode("utf-8")
        self.assertEqual(saved, crlf.replace("threshold = 2   ; Threshold", "threshold = 4.5   ; Threshold").replace(
            "console_users = users\r\n", "console_users = users\r\nwitness = 10.9.9.3:53\r\n"))

    def test_control_characters_cannot_plant_keys_over_two_saves(self):
        """A \\x0b (or \\u2028, \\x1c, ...) in a value is refused beside its field: a second save cannot turn it into an on_live line."""
        attack = "tcp:port=1200:host=10.9.9.2{}on_live = /usr/bin/touch /tmp/pwned"
        for breaker in ("\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u2029"):
            before = self.file_text()
            values = self.open_settings() if breaker == "\x0b" else self.form_values(self.get("/settings")[1])
            values["server:serv_a/backup_location"] = attack.format(breaker)
            response, body = self.post("/settings", values)
            self.assertEqual(response.code, 400, repr(breaker))
            self.assertRegex(body, r'name="server:serv_a/backup_location"[^>]*/><span class="error">one line of printable')
            self.assertEqual(self.file_text(), before)
            # a second, harmless save leaves no on_live either
            values = self.form_values(self.get("/settings")[1])
            values["server:serv_b/threshold"] = "3" if values["server:serv_b/threshold"] != "3" else "4"
            response, _ = self.post("/settings", values)
            self.assertEqual(response.code, 200)
            self.assertNotIn("on_live", self.file_text())
            self.assertIsNone(parse_config(self.file_text(), self.path).server("serv_a").client.on_live)

    def test_file_with_a_control_character_is_not_split_by_a_save(self):
        """A \\x0b already in the file (written by hand) stays inside its line: a save adds no key."""
        with open(self.path, "w") as f:
            f.write(CONFIG.replace("backup_location = 10.9.9.2:1200",
                                   "backup_location = tcp:port=1200:host=10.9.9.2\x0bon_live = /usr/bin/touch /tmp/pwned"))
        values = self.open_settings()
        values["server:serv_b/threshold"] = "3"
        response, _ = self.post("/settings", values)
        self.assertEqual(response.code, 200)
        self.assertIsNone(parse_config(self.file_text(), self.path).server("serv_a").client.on_live)
        self.assertIn("host=10.9.9.2\x0bon_live", self.file_text())


class LogPageTests(ConsoleTestCase):
    """/log: the node's recent events, newest first."""

    def test_log_shows_recent_events_newest_first(self):
        """Two events fed to the ring buffer appear, the later one first."""
        for n, text in enumerate(("first event", "second event")):
            self.events({"log_level": LogLevel.info, "log_namespace": "iwayfailover.node.FailoverNode",
                         "log_format": text, "log_time": 1764064800.0 + n})
        self.logged_in()
        _, body = self.get("/log")
        self.assertLess(body.index("second event"), body.index("first event"))
        self.assertIn("2025-11-25 10:00:01", body)


class RecentEventsTests(TestCase):
    """The ring buffer behind the Log page."""

    def event(self, level, namespace, text):
        return {"log_level": level, "log_namespace": namespace, "log_format": text, "log_time": 1.0}

    def test_keeps_only_the_last_events(self):
        """With room for 3, the 3 newest of 5 events are kept."""
        events = RecentEvents(size=3)
        for n in range(5):
            events(self.event(LogLevel.info, "iwayfailover.node", f"event {n}"))
        self.assertEqual([e.text for e in events.recent()], ["event 4", "event 3", "event 2"])

    def test_keeps_own_info_and_anyones_warnings(self):
        """This project's info events and any warning are kept; others' info and any debug are not."""
        events = RecentEvents()
        events(self.event(LogLevel.info, "iwayfailover.role", "own info"))
        events(self.event(LogLevel.info, "twisted.web", "other info"))
        events(self.event(LogLevel.warn, "twisted.web", "other warning"))
        events(self.event(LogLevel.debug, "iwayfailover.role", "own debug"))
        self.assertEqual([e.text for e in events.recent()], ["other warning", "own info"])

    def test_twisteds_chatter_is_left_out_even_under_this_projects_namespace(self):
        """
        Twisted's "Starting factory", "Stopping factory" and ClientService's
        "Scheduling retry" lines, logged under the namespace of a class of
        this project, are left out; this project's own lines and warnings
        from anyone (in a chatter format too) are kept.
        """
        from twisted.internet.protocol import Factory
        from twisted.logger import Logger, globalLogPublisher

        events = RecentEvents()
        globalLogPublisher.addObserver(events)
        self.addCleanup(globalLogPublisher.removeObserver, events)
        chatty = type("ChattyFactory", (Factory,), {"__module__": "iwayfailover.example", "noisy": True})()
        chatty.doStart()  # Twisted logs "Starting factory" under iwayfailover.example.ChattyFactory
        chatty.doStop()
        Logger(namespace="iwayfailover.example.Service", observer=events).info(
            "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
            attempt=1, endpoint="<TCP4ClientEndpoint object at 0x7f00>", delay=0.5,
        )
        Logger(namespace="iwayfailover.node", observer=events).info("own line")
        Logger(namespace="twisted.internet.protocol", observer=events).warn("Stopping factory {factory!r}", factory="f")
        self.assertEqual([e.text for e in events.recent()], ["Stopping factory 'f'", "own line"])

    def test_a_bad_event_does_not_raise(self):
        """An event whose format cannot be filled is kept as best it can be, without raising."""
        events = RecentEvents()
        events({"log_level": LogLevel.info, "log_namespace": "iwayfailover.x", "log_format": "{missing}"})
        self.assertEqual(len(events.recent()), 1)


class EventLogServiceTests(TestCase):
    """The ring buffer listens to the log only while the node runs."""

    def test_observes_while_running_only(self):
        """Started, it receives published events; stopped, it no longer does."""
        from twisted.logger import LogPublisher

        from iwayfailover.events import EventLogService

        publisher, events = LogPublisher(), RecentEvents()
        service = EventLogService(events, publisher)
        service.startService()
        publisher({"log_level": LogLevel.info, "log_namespace": "iwayfailover.x", "log_format": "while running"})
        service.stopService()
        publisher({"log_level": LogLevel.info, "log_namespace": "iwayfailover.x", "log_format": "after"})
        self.assertEqual([e.text for e in events.recent()], ["while running"])

    def test_make_service_gives_the_console_the_nodes_events(self):
        """makeService hangs the ring buffer on the node and hands it to the console's Log page."""
        from twisted.internet.testing import MemoryReactorClock

        from iwayfailover import tap
        from iwayfailover.console import ConsoleSite

        folder = temporary_directory(self)
        with open(os.path.join(folder, "iway.ini"), "w") as f:
            f.write("[failover]\ninsecure = true\n[server:serv_a]\nbackup_location = 127.0.0.1:1\n"
                    "heartbeat_port = 0\nthreshold = 3\nconsole = 0\n")
        options = tap.Options()
        options.parseOptions(["--config", os.path.join(folder, "iway.ini"), "--name", "serv_a",
                              "--state-dir", os.path.join(folder, "state")])
        node = tap.makeService(options, reactor=MemoryReactorClock())
        site = node.console_port.factory
        self.assertIsInstance(site, ConsoleSite)
        self.assertIs(site.resource.console.events, node.events)


class UsersFileTests(TestCase):
    """Password hashes and the users file."""

    def test_hash_verifies_its_password_only(self):
        """A scrypt hash verifies the password it was made from, and no other."""
        stored = hash_password("s3cret pass", n=FAST)
        self.assertTrue(stored.startswith("scrypt$1024$8$1$"))
        self.assertTrue(verify_password("s3cret pass", stored))
        self.assertFalse(verify_password("s3cret pasS", stored))

    def test_same_password_gets_a_different_salt(self):
        """Two hashes of one password differ (a fresh salt each)."""
        self.assertNotEqual(hash_password("same pass", n=FAST), hash_password("same pass", n=FAST))

    def test_default_cost_is_strong(self):
        """The default scrypt cost is N=2**14, r=8."""
        self.assertTrue(hash_password("a password").startswith("scrypt$16384$8$1$"))

    def test_add_user_writes_a_private_file_and_replaces_a_password(self):
        """The file is 0600; adding a user again changes its password without a second line."""
        path = os.path.join(temporary_directory(self), "users")
        self.assertTrue(add_user(path, "ops", "first password", n=FAST))
        self.assertFalse(add_user(path, "ops", "second password", n=FAST))
        add_user(path, "night", "third password", n=FAST)
        self.assertEqual(stat.S_IMODE(os.stat(path).st_mode), 0o600)
        users = read_users(path)
        self.assertEqual(sorted(users), ["night", "ops"])
        self.assertTrue(verify_password("second password", users["ops"]))

    def test_add_user_keeps_an_existing_files_mode_and_owner(self):
        """Rewriting a users file the node's group reads (0640, another owner) keeps its mode and owner."""
        path = os.path.join(temporary_directory(self), "users")
        add_user(path, "ops", "first password", n=FAST)
        os.chmod(path, 0o640)
        if os.geteuid() == 0:
            os.chown(path, 4321, 4322)
        before = os.stat(path)
        add_user(path, "night", "second password", n=FAST)
        after = os.stat(path)
        self.assertEqual(stat.S_IMODE(after.st_mode), 0o640)
        self.assertEqual((after.st_uid, after.st_gid), (before.st_uid, before.st_gid))
        self.assertEqual(sorted(read_users(path)), ["night", "ops"])

    def test_add_user_through_a_symlink_writes_the_target(self):
        """A users file reached through a symlink: the target gets the user, the link stays a link."""
        folder = temporary_directory(self)
        os.mkdir(os.path.join(folder, "share"))
        target = os.path.join(folder, "share", "users")
        add_user(target, "ops", "first password", n=FAST)
        link = os.path.join(folder, "users")
        os.symlink(target, link)
        add_user(link, "night", "second password", n=FAST)
        self.assertTrue(os.path.islink(link))
        self.assertEqual(sorted(read_users(target)), ["night", "ops"])

    def test_add_user_refuses_bad_names_and_short_passwords(self):
        """A name with a colon or a password under 8 characters is refused."""
        path = os.path.join(temporary_directory(self), "users")
        self.assertRaises(ValueError, add_user, path, "o:ps", "long enough")
        self.assertRaises(ValueError, add_user, path, "ops", "short")
        self.assertFalse(os.path.exists(path))

    def test_bad_line_names_the_file_and_line(self):
        """A line that is not NAME:scrypt$... is an error naming the line."""
        error = self.assertRaises(UsersFileError, parse_users, "ops:scrypt$1$2\nplain text\n", "/etc/users")
        self.assertIn("/etc/users line 2", str(error))

    def test_checker_accepts_the_right_password_only(self):
        """The twisted.cred checker gives the user name for the right password and UnauthorizedLogin otherwise."""
        path = os.path.join(temporary_directory(self), "users")
        add_user(path, "ops", PASSWORD, n=FAST)
        checker = UsersFileChecker(lambda: path)
        self.assertEqual(self.successResultOf(checker.requestAvatarId(UsernamePassword(b"ops", PASSWORD.encode()))), "ops")
        for user, password in ((b"ops", b"nope nope"), (b"nobody", PASSWORD.encode())):
            self.failureResultOf(checker.requestAvatarId(UsernamePassword(user, password)), UnauthorizedLogin)

    def test_checker_without_a_file_refuses_everyone(self):
        """No users file configured: every login is refused."""
        checker = UsersFileChecker(lambda: None)
        self.failureResultOf(checker.requestAvatarId(UsernamePassword(b"ops", b"x")), UnauthorizedLogin)


class ConsoleUsersConfigTests(TestCase):
    """The console_users key: a readable file, relative to the configuration file, in [failover] or a server."""

    SERVER = "[server:serv_a]\nbackup_location = h:1\nheartbeat_port = 2\nthreshold = 3\n"

    def setUp(self):
        self.folder = temporary_directory(self)
        self.path = os.path.join(self.folder, "iway.ini")
        add_user(os.path.join(self.folder, "users"), "ops", PASSWORD, n=FAST)

    def test_relative_path_is_relative_to_the_config_file(self):
        """console_users = users in [failover] names the file beside the configuration."""
        config = parse_config("[failover]\nconsole_users = users\n" + self.SERVER, self.path)
        self.assertEqual(config.failover.console_users, os.path.join(self.folder, "users"))

    def test_server_section_may_name_its_own(self):
        """console_users in a server section is that server's."""
        config = parse_config(self.SERVER + "console_users = users\n", self.path)
        self.assertEqual(config.server("serv_a").console_users, os.path.join(self.folder, "users"))

    def test_missing_file_is_refused(self):
        """A console_users file that does not exist is a config error naming the key and the path."""
        error = self.assertRaises(ConfigError, parse_config, "[failover]\nconsole_users = nope\n" + self.SERVER, self.path)
        self.assertEqual((error.section, error.key), ("failover", "console_users"))
        self.assertIn(os.path.join(self.folder, "nope"), str(error))


class SettingsFormTests(TestCase):
    """check_form: only the form's fields of the file's servers, and values that read back as typed."""

    TEXT = "[server:a]\nbackup_location = h:1\nheartbeat_port = 2\nthreshold = 3\n"

    def test_value_with_a_comment_marker_is_refused(self):
        """A value that the file would read back cut at ' ;' is refused beside its field."""
        new, errors = form.check_form(self.TEXT, "/x.ini", {("server:a", "backup_location"): "tcp:host=h:port=1 ;x"})
        self.assertIsNone(new)
        self.assertIn(("server:a", "backup_location"), errors)

    def test_server_not_in_the_file_is_not_added(self):
        """Fields of a server the file does not have are ignored: the form cannot add sections."""
        form_values = {("server:new", key): value for key, value in
                       (("backup_location", "h:1"), ("heartbeat_port", "2"), ("threshold", "3"))}
        new, errors = form.check_form(self.TEXT, "/x.ini", form_values)
        self.assertEqual((new, errors), (self.TEXT, {}))


class SettingsTextTests(TestCase):
    """Changing the shared file's text keeps everything else as it was."""

    TEXT = "[server:a]\nbackup_location = h:1\nheartbeat_port = 2\nthreshold = 3\n"

    def test_value_changed_in_place_with_its_comment(self):
        """threshold = 2 ; note becomes threshold = 5 ; note, in its own section only."""
        text = "[server:a]\nthreshold = 2   ; note\n\n[server:b]\nthreshold = 2\n"
        self.assertEqual(form.set_values(text, {("server:a", "threshold"): "5"}),
                         "[server:a]\nthreshold = 5   ; note\n\n[server:b]\nthreshold = 2\n")

    def test_missing_key_added_at_the_end_of_its_section(self):
        """A key not yet in the section goes after its last line, before the blank line."""
        text = "[failover]\nheartbeat_interval = 1\n\n[server:a]\nthreshold = 2\n"
        self.assertEqual(form.set_values(text, {("failover", "witness"): "10.0.0.1:53"}),
                         "[failover]\nheartbeat_interval = 1\nwitness = 10.0.0.1:53\n\n[server:a]\nthreshold = 2\n")

    def test_none_removes_the_key_and_its_continuation_lines(self):
        """None removes the line, and the indented lines that continue its value."""
        text = "[failover]\nwitness = a:1,\n  b:2\nfailback = no\n"
        self.assertEqual(form.set_values(text, {("failover", "witness"): None}), "[failover]\nfailback = no\n")

    def test_newline_in_a_value_is_refused(self):
        """A value with a line break could add keys: it is refused."""
        new, errors = form.check_form("[server:a]\nbackup_location = h:1\nheartbeat_port = 2\nthreshold = 3\n", "/x.ini",
                                      {("server:a", "threshold"): "3\n[failover]"})
        self.assertIsNone(new)
        self.assertEqual(list(errors), [("server:a", "threshold")])
        self.assertIn("one line of printable characters only", errors[("server:a", "threshold")])

    def test_lines_split_on_newline_only_like_configparser(self):
        """\\x0b, \\x1c, \\u2028 ... in the file stay inside their line; each line keeps its ending."""
        text = "[server:a]\r\nbackup_location = tcp:port=1:host=h\x0bon_live = x\u2028y\r\nthreshold = 3\n"
        self.assertEqual(form.set_values(text, {("server:a", "threshold"): "4"}),
                         "[server:a]\r\nbackup_location = tcp:port=1:host=h\x0bon_live = x\u2028y\r\nthreshold = 4\n")

    def test_control_character_in_a_value_is_refused(self):
        """A value that is not printable (\\x0b, \\x85, \\u2028, a tab...) is refused beside its field."""
        for breaker in ("\x0b", "\x0c", "\x1d", "\x85", "\u2028", "\t", "\x00"):
            new, errors = form.check_form(self.TEXT, "/x.ini",
                                          {("server:a", "backup_location"): f"tcp:port=1:host=h{breaker}on_live = x"})
            self.assertIsNone(new, repr(breaker))
            self.assertIn("printable", errors[("server:a", "backup_location")])

    def test_a_change_beyond_the_submitted_keys_is_refused(self):
        """The backstop: if the new text would change a key the form did not submit, nothing is saved."""
        original = form.set_values

        def leaky(text, changes):
            return original(text, changes).replace("heartbeat_port = 2", "heartbeat_port = 3")

        form.set_values = leaky
        self.addCleanup(setattr, form, "set_values", original)
        new, errors = form.check_form(self.TEXT, "/x.ini", {("server:a", "threshold"): "4"})
        self.assertIsNone(new)
        self.assertIn("heartbeat_port", errors[None])


class AdduserCommandTests(TestCase):
    """iwsrv adduser FILE USER."""

    def setUp(self):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)
        self.path = os.path.join(temporary_directory(self), "users")

    def test_password_from_stdin(self):
        """--password-stdin reads the first line; the file is 0600 and the password checks."""
        from iwayfailover.cli import adduser_main

        code = adduser_main([self.path, "ops", "--password-stdin"], stdin=io.StringIO("from stdin pw\n"))
        self.assertEqual((code, self.stderr.getvalue()), (0, ""))
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o600)
        self.assertTrue(verify_password("from stdin pw", read_users(self.path)["ops"]))
        self.assertIn("console_users", self.stdout.getvalue())

    def test_password_asked_twice_without_echo(self):
        """Without --password-stdin the password is asked twice with getpass."""
        from iwayfailover.cli import adduser_main

        prompts = []
        answers = iter(["typed twice", "typed twice"])
        code = adduser_main([self.path, "ops"], getpass=lambda prompt: prompts.append(prompt) or next(answers))
        self.assertEqual(code, 0)
        self.assertEqual(len(prompts), 2)
        self.assertTrue(verify_password("typed twice", read_users(self.path)["ops"]))

    def test_passwords_that_differ_write_nothing(self):
        """Two different answers: exit 1, no file."""
        from iwayfailover.cli import adduser_main

        answers = iter(["typed once", "typed twice"])
        code = adduser_main([self.path, "ops"], getpass=lambda prompt: next(answers))
        self.assertEqual(code, 1)
        self.assertIn("differ", self.stderr.getvalue())
        self.assertFalse(os.path.exists(self.path))

    def test_short_password_and_missing_user_are_refused(self):
        """A short password exits 1 naming the rule; a missing USER argument exits 2 with the usage."""
        from iwayfailover.cli import main

        code = main(["adduser", self.path])
        self.assertEqual(code, 2)
        self.assertIn("iwsrv adduser FILE USER", self.stderr.getvalue())
        from iwayfailover.cli import adduser_main

        code = adduser_main([self.path, "ops", "--password-stdin"], stdin=io.StringIO("short\n"))
        self.assertEqual(code, 1)
        self.assertIn("too short", self.stderr.getvalue())


@implementer(INodeControl)
class GroupMember:
    """
    A stand-in for a member of a group on etcd: a real node's status with a
    coordinator and the group's members added, and a switchover that
    records what it was asked (C{cause}, C{to}) and answers C{result}.
    """

    def __init__(self, node, coordinator, members):
        self._node = node
        self.coordinator = coordinator
        self.members = members
        self.asked = []
        self.result = defer.succeed({"from": "serv_a", "to": "serv_c", "epoch": 12, "gap": 0.004})

    def status(self):
        import dataclasses

        return dataclasses.replace(self._node.status(), coordinator=self.coordinator, members=self.members)

    def switchover(self, cause=None, to=None):
        self.asked.append((cause, to))
        return self.result

    def restart_listener(self, name):
        return self._node.restart_listener(name)

    def check_config(self, config):
        return self._node.check_config(config)

    def reload_config(self):
        return self._node.reload_config()


class GroupConsoleTests(ConsoleTestCase):
    """A group member's console: the coordinator's facts, the members, and a switchover to a chosen member."""

    name = "serv_a"
    backup = False

    def setUp(self):
        from iwayfailover.status import CoordinatorStatus, MemberStatus

        super().setUp()
        self.member = GroupMember(
            self.node,
            CoordinatorStatus(
                endpoints=("http://127.0.0.1:2379", "http://127.0.0.1:22379"), connected=True, live="serv_a",
                live_epoch=11, lease_ttl=3, lease_left=2.25,
            ),
            (
                MemberStatus("serv_a", "live", epoch=11, priority=10, since=1764064800.0, console="http://127.0.0.1:8081"),
                MemberStatus("serv_b", "backup", epoch=11, priority=5),
                MemberStatus("serv_c", "backup", epoch=11, may_campaign=False),
            ),
        )
        self.root = console_root(
            ThroughInterface(self.member), clock=self.reactor, run=sync, events=self.events, api_token=API_TOKEN,
        )
        self.client = StubTreq(self.root)

    def test_the_status_page_shows_the_coordinator(self):
        """Endpoints, connected, the live member with its epoch, the lease's TTL and time left; no pair peer."""
        body = self.logged_in()
        self.assertIn("etcd at <span data-field=\"coordinator-endpoints\">http://127.0.0.1:2379, http://127.0.0.1:22379</span>", body)
        self.assertIn('data-field="coordinator-connected">connected<', body)
        self.assertIn('data-field="coordinator-live">serv_a (epoch 11)<', body)
        self.assertIn('data-field="lease">TTL 3 s; 2.2 s left<', body)
        self.assertNotIn("Last heartbeat", body)

    def test_the_status_page_says_when_the_store_is_out_of_reach(self):
        """Not connected, with the last error; nobody live; no lease held."""
        from iwayfailover.status import CoordinatorStatus

        self.member.coordinator = CoordinatorStatus(endpoints=("http://127.0.0.1:2379",), last_error="connection refused")
        body = self.logged_in()
        self.assertIn("not connected (connection refused)", body)
        self.assertIn("nobody holds the live role", body)
        self.assertIn("TTL not granted yet; this node holds no live lease", body)

    def test_the_status_page_lists_every_member(self):
        """One row per member: role, epoch, priority, since, a console link where it has one; this node marked."""
        body = self.logged_in()
        table = re.search(r'<table data-live="members">.*?</table>', body, re.S).group(0)
        self.assertEqual(re.findall(r'data-member-role="(\w+)">([^<]*)<', table), [
            ("serv_a", "live"), ("serv_b", "backup"), ("serv_c", "backup (does not campaign)"),
        ])
        self.assertIn("<strong>serv_a</strong> (this node)", table)
        self.assertIn('<a href="http://127.0.0.1:8081">http://127.0.0.1:8081</a>', table)
        self.assertIn("<td>2025-11-25T10:00:00.000Z</td>", table)
        self.assertIn("<td>10</td>", table)

    def test_the_switchover_form_offers_the_other_members(self):
        """The form's target choice: the group's own pick first, then every other member."""
        body = self.logged_in()
        select = re.search(r'<select name="to".*?</select>', body, re.S).group(0)
        self.assertEqual(re.findall(r'<option value="([^"]*)">', select), ["", "serv_b", "serv_c"])

    def test_a_switchover_to_a_chosen_member_is_confirmed_then_made(self):
        """to=serv_c: the confirmation names serv_c and carries it; confirmed, the node is asked for serv_c."""
        self.logged_in()
        response, body = self.post("/switchover", {"csrf": self.token, "to": "serv_c"})
        self.assertIn("Yes, switch over to serv_c", body)
        self.assertIn('name="to" value="serv_c"', body)
        self.assertEqual(self.member.asked, [])

        response, body = self.post("/switchover", {"csrf": self.token, "confirm": "yes", "to": "serv_c"})

        self.assertEqual(response.code, 200)
        [(cause, to)] = self.member.asked
        self.assertEqual(to, "serv_c")
        self.assertIn("planned switchover to serv_c, asked by ops", cause)
        self.assertIn("Switched over from serv_a to serv_c (epoch 12)", body)

    def test_a_switchover_without_a_choice_leaves_it_to_the_group(self):
        """No to: the node is asked without one (the group picks by priority)."""
        self.logged_in()
        self.post("/switchover", {"csrf": self.token, "confirm": "yes", "to": ""})
        [(cause, to)] = self.member.asked
        self.assertIsNone(to)
        self.assertIn("the next member by priority", cause)

    def test_the_api_takes_to_as_a_json_body(self):
        """POST /api/switchover {"to": "serv_c"} (iwsrv switchover --to) reaches the node with to."""
        response, body = self.request(
            "POST", "/api/switchover", data=json.dumps({"to": "serv_c"}).encode(),
            headers={"Authorization": "Bearer " + API_TOKEN, "Content-Type": "application/json"},
        )
        self.assertEqual(response.code, 200, body)
        self.assertEqual(self.member.asked, [(None, "serv_c")])
        self.assertEqual(json.loads(body)["to"], "serv_c")

    def test_the_api_takes_to_as_a_form_field(self):
        """to=serv_b as a form field works as the JSON body does."""
        response, _ = self.post("/api/switchover", {"to": "serv_b"}, headers={"Authorization": "Bearer " + API_TOKEN})
        self.assertEqual((response.code, self.member.asked), (200, [(None, "serv_b")]))

    def test_the_api_refuses_a_to_that_is_no_name(self):
        """to = "../x" or a number: 400 naming what a server's name is, and no switchover."""
        for data in (json.dumps({"to": "../x"}), json.dumps({"to": 7}), "[1]", "{not json"):
            response, body = self.request(
                "POST", "/api/switchover", data=data.encode(),
                headers={"Authorization": "Bearer " + API_TOKEN, "Content-Type": "application/json"},
            )
            self.assertEqual(response.code, 400, data)
            self.assertIn('"error"', body)
        self.assertEqual(self.member.asked, [])

    def test_the_status_api_has_the_coordinator_and_members(self):
        """GET /api/status: the coordinator block and the members by name."""
        _, body = self.get("/api/status")
        data = json.loads(body)
        self.assertEqual(data["coordinator"]["live"], "serv_a")
        self.assertEqual(data["members"]["serv_b"]["role"], "backup")


class PairConsoleUnchangedTests(ConsoleTestCase):
    """A pair's console shows no group: no coordinator, no members table, no target choice."""

    name = "serv_a"
    backup = False

    def test_a_pair_page_has_no_group_parts(self):
        """The live pair node's page: the peer as before, no Members, no select."""
        body = self.logged_in()
        self.assertIn("Last heartbeat", body)
        self.assertNotIn("Members", body)
        self.assertNotIn("<select", body)

    def test_a_pair_switchover_through_the_api_passes_no_to(self):
        """Without to, the pair node is asked as before: switchover() with no argument."""
        asked = []
        self.node.switchover = lambda *args, **kwargs: asked.append((args, kwargs)) or defer.succeed(
            {"from": "serv_a", "to": "serv_b", "epoch": 2, "gap": 0.01})
        response, _ = self.post("/api/switchover", {}, headers={"Authorization": "Bearer " + API_TOKEN})
        self.assertEqual((response.code, asked), (200, [((), {})]))


class NoBackupBannerTests(ConsoleTestCase):
    """A live node whose backup is not connected says so on its Status page; a backup's page does not."""

    name = "serv_a"
    backup = False

    def banner(self, body):
        return re.search(r'<div[^>]*data-live="no-backup"[^>]*>', body).group(0)

    def test_a_live_node_without_its_backup_shows_the_warning(self):
        self.assertEqual(self.node.status().role, "live")
        body = self.logged_in()
        self.assertNotIn("hidden", self.banner(body))
        self.assertIn("No backup connected: </strong><span data-field=\"no-backup-peer\">serv_b</span>", body)


class NoBackupBannerOnABackupTests(ConsoleTestCase):
    def test_a_backup_keeps_the_warning_hidden(self):
        body = self.logged_in()
        self.assertIn("hidden", re.search(r'<div[^>]*data-live="no-backup"[^>]*>', body).group(0))


class PeerRoleTextTests(TestCase):
    """A peer not connected is shown as last seen in a role, not as being in it."""

    def test_connected_is_the_role_now_and_not_connected_is_last_seen(self):
        from iwayfailover.console.pages import peer_role_text
        from iwayfailover.status import PeerStatus

        self.assertEqual(peer_role_text(PeerStatus(name="serv_a", connected=True, role="live")), "live")
        self.assertEqual(peer_role_text(PeerStatus(name="serv_a", connected=False, role="live")), "last seen live")
        self.assertEqual(peer_role_text(PeerStatus(name="serv_a", connected=False, role=None)), "role unknown")
