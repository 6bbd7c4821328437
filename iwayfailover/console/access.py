"""
Who may see and do what on the console: sessions with an idle timeout, a
CSRF token per session, a per-address limit on failed logins, the security
headers of every answer, and the guard at the root of the console's tree.

The rule the guard applies:

- C{/login} and C{/static/...} are open to all;
- C{/api/status}, C{/api/gaps} and C{/metrics} are open without a login to this host's
  own clients (loopback or Unix socket), as monitoring expects;
- C{POST /api/switchover} and C{POST /api/restart-listener} are open
  without a login session to a client that shows the node's console token
  (C{Authorization: Bearer ...}): a random value the node writes at every
  start to C{console.token} in its state dir, readable by the node's user
  only, which is how C{iwsrv switchover} and C{iwsrv restart-listener} log in;
- everything else needs a login;
- every POST except those carries the session's CSRF token, or is
  refused with 403.
"""

from __future__ import annotations

import collections
import hmac
import json
import secrets
from typing import Optional, Tuple

from twisted.logger import Logger
from twisted.web.resource import Resource

from iwayfailover.console.api import from_this_host

log = Logger(namespace="iwayfailover.console")

SESSION_COOKIE = b"iway_session"
"""The session cookie's name; a console adds its server's name (iway_session_serv_a)."""
IDLE_TIMEOUT = 15 * 60.0
"""Seconds a session lives without a request."""
MAX_SESSIONS = 1000
"""Logged-in sessions kept at most (the least recently used goes first)."""
MAX_ANONYMOUS_SESSIONS = 1000
"""Sessions of the login form kept at most: their own store, so that anyone
fetching /login many times ends only other anonymous sessions, never a login."""

LOGIN_FAILURES = 5
"""Failed logins from one address within L{LOGIN_WINDOW} seconds before it must wait."""
LOGIN_WINDOW = 60.0
MAX_TRACKED_ADDRESSES = 10000

CONTENT_SECURITY_POLICY = (
    b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self';"
    b" form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

OPEN = (b"login", b"static")
OPEN_ON_LOOPBACK = ("api/status", "api/gaps", "metrics")
CLI_ON_LOOPBACK = ("api/switchover", "api/restart-listener")
TOKEN_FILE = "console.token"


def write_token(state_dir: str) -> str:
    """A new console token, written to C{state_dir}/console.token (mode 0600); returns it."""
    import os

    from iwayfailover.atomic import replace_file

    token = secrets.token_hex(32)
    path = os.path.join(state_dir, TOKEN_FILE)
    replace_file(path, (token + "\n").encode("ascii"), prefix=".console.token.")
    os.chmod(path, 0o600)
    return token


def read_token(state_dir: str) -> str:
    """The console token in C{state_dir}. @raise OSError: it cannot be read."""
    import os

    with open(os.path.join(state_dir, TOKEN_FILE), encoding="ascii", errors="replace") as f:
        return f.read().strip()


def token_valid(request, token: Optional[str]) -> bool:
    """Does the request carry C{Authorization: Bearer TOKEN}?"""
    if not token:
        return False
    given = request.getHeader(b"authorization") or b""
    return hmac.compare_digest(given, b"Bearer " + token.encode("ascii"))


class Session:
    def __init__(self, token: str, user: Optional[str], now: float):
        self.token = token
        self.user = user
        self.csrf = secrets.token_urlsafe(32)
        self.last_seen = now
        self.stamp: Optional[str] = None  # the user's stored hash at login: a new password ends the session
        self.notice: Optional[Tuple[str, bool]] = None
        """A notice (text, is an error) for the next page this session sees, shown once: how an
        action that answered with a redirect went (post, redirect, get)."""


class Sessions:
    """
    The console's sessions, in memory (a restart logs everyone out). A
    session unused for C{idle_timeout} seconds is gone; a login makes a new
    one (no fixation). Anonymous sessions carry the login form's CSRF token.
    """

    def __init__(self, clock, idle_timeout: float = IDLE_TIMEOUT, limit: int = MAX_SESSIONS, cookie: bytes = SESSION_COOKIE,
                 anonymous_limit: int = MAX_ANONYMOUS_SESSIONS):
        self._clock = clock
        # Cookies do not tell ports apart: two consoles on one host need two names.
        self.cookie = cookie
        self.idle_timeout = idle_timeout
        self._limit = limit
        self._anonymous_limit = anonymous_limit
        self._sessions: "collections.OrderedDict[str, Session]" = collections.OrderedDict()
        self._anonymous: "collections.OrderedDict[str, Session]" = collections.OrderedDict()

    def _store(self, session: Session):
        return self._sessions if session.user is not None else self._anonymous

    def get(self, request, touch: bool = True) -> Optional[Session]:
        """
        The live session of C{request}'s cookie, if any. Its idle time starts
        again, unless C{touch} is false (a page's own status polls must not
        keep a forgotten session alive).
        """
        token = request.getCookie(self.cookie)
        if not token:
            return None
        token = token.decode("ascii", "replace")
        session = self._sessions.get(token) or self._anonymous.get(token)
        if session is None:
            return None
        store = self._store(session)
        now = self._clock.seconds()
        if now - session.last_seen > self.idle_timeout:
            del store[token]
            return None
        if touch:
            session.last_seen = now
            store.move_to_end(token)
        return session

    def new(self, request, user: Optional[str]) -> Session:
        """A new session for C{user} (None: not logged in yet), set as C{request}'s cookie."""
        old = self.get(request)
        if old is not None:
            self._store(old).pop(old.token, None)
        session = Session(secrets.token_urlsafe(32), user, self._clock.seconds())
        store = self._store(session)
        store[session.token] = session
        while len(store) > (self._limit if user is not None else self._anonymous_limit):
            store.popitem(last=False)  # of its own kind only: an anonymous session never ends a login
        request.addCookie(
            self.cookie, session.token.encode("ascii"), path=b"/", httpOnly=True, sameSite=b"strict",
            secure=True if request.isSecure() else None,
        )
        return session

    def logged_in(self):
        """The logged-in sessions (not the login form's)."""
        return list(self._sessions.values())

    def discard(self, session: Session) -> None:
        """End C{session} (its cookie stays in the browser, but leads nowhere)."""
        self._store(session).pop(session.token, None)

    def end(self, request) -> None:
        session = self.get(request)
        if session is not None:
            self._store(session).pop(session.token, None)
        request.addCookie(
            self.cookie, b"", path=b"/", httpOnly=True, sameSite=b"strict", max_age=b"0",
            secure=True if request.isSecure() else None,
        )


class LoginLimiter:
    """
    At most L{LOGIN_FAILURES} failed logins per client address within
    L{LOGIN_WINDOW} seconds. A login being checked counts as a failure until
    its answer is known (L{begin}, L{end}): many logins sent at once from one
    address get no more tries than one after the other.
    """

    def __init__(self, clock, failures: int = LOGIN_FAILURES, window: float = LOGIN_WINDOW):
        self._clock = clock
        self._failures = failures
        self._window = window
        self._seen: "collections.OrderedDict[str, collections.deque]" = collections.OrderedDict()
        self._in_flight: "collections.Counter[str]" = collections.Counter()

    def wait(self, address: str) -> float:
        """Seconds C{address} must wait before it may try again (0: it may now)."""
        times = self._seen.get(address) or collections.deque()
        in_flight = self._in_flight.get(address, 0)
        if not times and not in_flight:
            return 0.0
        now = self._clock.seconds()
        while times and now - times[0] >= self._window:
            times.popleft()
        if len(times) + in_flight < self._failures:
            return 0.0
        if len(times) >= self._failures:
            return self._window - (now - times[0])
        return 1.0  # logins of this address still being checked: their answers decide

    def begin(self, address: str) -> None:
        """A login from C{address} is being checked: it counts until L{end}."""
        self._in_flight[address] += 1

    def end(self, address: str) -> None:
        self._in_flight[address] -= 1
        if self._in_flight[address] <= 0:
            del self._in_flight[address]

    def failed(self, address: str) -> None:
        times = self._seen.setdefault(address, collections.deque(maxlen=self._failures))
        times.append(self._clock.seconds())
        self._seen.move_to_end(address)
        while len(self._seen) > MAX_TRACKED_ADDRESSES:
            self._seen.popitem(last=False)

    def succeeded(self, address: str) -> None:
        self._seen.pop(address, None)


def client_address(request) -> str:
    address = request.getClientAddress()
    return str(getattr(address, "host", None) or getattr(address, "name", None) or "unix socket")


def security_headers(request) -> None:
    request.setHeader(b"content-security-policy", CONTENT_SECURITY_POLICY)
    request.setHeader(b"x-frame-options", b"DENY")
    request.setHeader(b"x-content-type-options", b"nosniff")
    request.setHeader(b"referrer-policy", b"no-referrer")
    request.setHeader(b"cache-control", b"no-store")
    if request.isSecure():
        request.setHeader(b"strict-transport-security", b"max-age=31536000")


def csrf_valid(request, session: Optional[Session]) -> bool:
    sent = (request.args.get(b"csrf") or [b""])[0]
    if session is None or not sent:
        return False
    return hmac.compare_digest(sent, session.csrf.encode("ascii"))


class Refused(Resource):
    """An answer refusing the request: JSON for the APIs, a short page otherwise."""

    isLeaf = True

    def __init__(self, code: int, message: str, as_json: bool = False):
        super().__init__()
        self.code = code
        self.message = message
        self.as_json = as_json

    def render(self, request):
        request.setResponseCode(self.code)
        if self.as_json:
            request.setHeader(b"content-type", b"application/json")
            return json.dumps({"error": self.message}).encode("utf-8") + b"\n"
        request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        return self.message.encode("utf-8") + b"\n"


class SeeOther(Resource):
    isLeaf = True

    def __init__(self, location: bytes):
        super().__init__()
        self.location = location

    def render(self, request):
        request.setResponseCode(303)
        request.setHeader(b"location", self.location)
        return b""


class RefusalWarnings:
    """
    Warns of refused POSTs at most once per client address per C{every}
    seconds, with the number left unlogged in between: a client posting in
    a loop must not flood the node's log.
    """

    def __init__(self, clock, every: float = 10.0, limit: int = 1024):
        self._clock = clock
        self._every = every
        self._limit = limit
        self._last: "collections.OrderedDict[str, float]" = collections.OrderedDict()
        self._quiet: "collections.Counter[str]" = collections.Counter()

    def warn(self, client: str, text: str, **fields) -> None:
        now = self._clock.seconds()
        last = self._last.get(client)
        if last is not None and now - last < self._every:
            self._quiet[client] += 1
            return
        unlogged = self._quiet.pop(client, 0)
        self._last[client] = now
        self._last.move_to_end(client)
        while len(self._last) > self._limit:  # bounded memory whatever the number of clients
            gone, _ = self._last.popitem(last=False)
            self._quiet.pop(gone, None)
        log.warn(text + "{more}", client=client, more=f" ({unlogged} more refused since the last report)" if unlogged else "",
                 **fields)


class GuardedRoot(Resource):
    """
    The root of the console's tree: applies the access rule (see the module)
    before any child sees the request, and adds the security headers to every
    answer. Children are added with C{putChild} as on any L{Resource}.
    """

    def __init__(self, sessions: Sessions, api_token: Optional[str] = None):
        super().__init__()
        self.sessions = sessions
        self.api_token = api_token
        self.refusals = RefusalWarnings(sessions._clock)

    def getChildWithDefault(self, path, request):
        security_headers(request)
        full = "/".join(p.decode("utf-8", "replace") for p in [path, *request.postpath]).rstrip("/")
        session = self.sessions.get(request, touch=full not in OPEN_ON_LOOPBACK)
        request.console_session = session
        is_post = request.method == b"POST"
        is_api = path in (b"api", b"metrics")

        if path in OPEN:
            pass
        elif session is not None and session.user is not None:
            pass
        elif full in OPEN_ON_LOOPBACK and not is_post and from_this_host(request):
            return super().getChildWithDefault(path, request)
        elif full in CLI_ON_LOOPBACK and token_valid(request, self.api_token):
            return super().getChildWithDefault(path, request)  # iwsrv switchover, restart-listener: the token is their login
        elif is_api or is_post:
            if is_post:
                self.refusals.warn(client_address(request), "console: refused a {method} to /{path} from {client} without a login",
                                   method="POST", path=full)
            return Refused(401 if not is_post else 403,
                           "refused: not logged in (or the session has expired); log in at /login and try again",
                           as_json=is_api)
        else:
            return SeeOther(b"/login")

        if is_post and not csrf_valid(request, session):
            self.refusals.warn(client_address(request),
                               "console: refused a POST to /{path} from {client}: missing or wrong CSRF token", path=full)
            return Refused(403, "refused: the form's CSRF token is missing or out of date; reload the page and try again")
        return super().getChildWithDefault(path, request)
