"""
An etcd v3 client for Twisted, over etcd's JSON gateway (the grpc-gateway
that every etcd member serves on its client URLs) with treq.

Everything returns a Deferred and nothing blocks the reactor (but the
constructor, which reads the TLS files once, at start-up). Every request has
a timeout; a member that refuses, breaks the connection, does not answer in
time, or answers that it cannot serve now (gRPC code UNAVAILABLE: no
leader, request timed out) is passed over for the next endpoint, round
robin, and the client remembers the one that answered. When none answers
the request fails with L{EtcdUnavailable}, which names every endpoint and
why. Any other answer of etcd's, an error or JSON that does not parse, is an
L{EtcdError} naming the endpoint and etcd's own message.

The gateway's JSON: keys and values are base64, int64s are strings, fields
at their zero value are left out (a keepalive of a lease that no longer
exists answers without a TTL; an event without a type is a PUT; a txn whose
compare failed has no C{succeeded}). Streaming calls (watch, keepalive)
answer newline-delimited C{{"result": ...}} or C{{"error": ...}} objects.

A watch is a long streaming POST; it ends (L{Watch.done} fails) when etcd
cancels it (compaction: L{EtcdCompacted}), the stream ends or breaks. The
client never restarts a watch by itself: its owner re-watches, from the
revision it has seen.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple
from urllib.parse import urlsplit

from treq.client import HTTPClient
from twisted.internet import defer, ssl
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint, wrapClientTLS
from twisted.web.client import Agent, HTTPConnectionPool, ResponseDone
from twisted.web.http import PotentialDataLoss
from twisted.web.iweb import IAgentEndpointFactory, IPolicyForHTTPS
from zope.interface import implementer

from iwayfailover import tls

log = Logger()

# gRPC status codes etcd answers with (in "code" of an error body).
NOT_FOUND = 5
UNAVAILABLE = 14
UNAUTHENTICATED = 16

# The most a watch stream may hold back without a newline (one message).
MAX_MESSAGE = 16 * 1024 * 1024

_JSON = {b"Content-Type": [b"application/json"]}


class EtcdError(Exception):
    """
    etcd refused a request, or answered something this client cannot read.

    @ivar message: what went wrong (etcd's own message when it gave one).
    @ivar endpoint: the endpoint that answered, or None.
    @ivar code: etcd's gRPC status code, or None.
    """

    def __init__(self, message: str, endpoint: Optional[str] = None, code: Optional[int] = None):
        self.message = message
        self.endpoint = endpoint
        self.code = code
        super().__init__(f"etcd at {endpoint}: {message}" if endpoint else f"etcd: {message}")


class EtcdUnavailable(EtcdError):
    """
    No endpoint answered.

    @ivar failures: (endpoint, why) for each endpoint tried, in order.
    """

    def __init__(self, failures: Sequence[Tuple[str, str]]):
        self.failures = list(failures)
        reasons = "; ".join(f"{endpoint}: {why}" for endpoint, why in self.failures)
        super().__init__(f"no etcd endpoint answered ({reasons})")


class EtcdCompacted(EtcdError):
    """
    A watch asked for revisions etcd has compacted away: re-read the keys,
    and watch again from C{compact_revision} or later.
    """

    def __init__(self, compact_revision: int, endpoint: Optional[str] = None):
        self.compact_revision = compact_revision
        super().__init__(f"the watch's start revision is compacted (oldest kept: {compact_revision})", endpoint)


@dataclass(frozen=True)
class KeyValue:
    """A key as etcd holds it."""

    key: str
    value: bytes
    create_revision: int
    mod_revision: int
    version: int
    lease: int


@dataclass(frozen=True)
class WatchEvent:
    """A change a watch saw: C{type} is "PUT" or "DELETE" (the kv of a DELETE has the key and mod_revision only)."""

    type: str
    kv: KeyValue


class _Unreachable(Exception):
    """An endpoint that gave no answer: the request goes to the next one."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class _BadAnswer(Exception):
    """An answer this client cannot read."""


# -- encoding ------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _key(key: str) -> str:
    if not isinstance(key, str):
        raise TypeError(f"an etcd key is a str, not {type(key).__name__}: {key!r}")
    return _b64(key.encode("utf-8"))


def _value(value: bytes) -> str:
    if not isinstance(value, bytes):
        raise TypeError(f"an etcd value is bytes, not {type(value).__name__}: {value!r}")
    return _b64(value)


def _prefix_end(key: str) -> str:
    """etcd's range end for every key starting with C{key} (the prefix with its last byte below 0xff raised by one)."""
    raw = bytearray(key.encode("utf-8"))
    while raw:
        if raw[-1] < 0xFF:
            raw[-1] += 1
            return _b64(bytes(raw))
        raw.pop()
    return _b64(b"\0")  # every key


def _int(raw) -> int:
    if raw is None:
        return 0
    if isinstance(raw, bool) or not isinstance(raw, (int, str)):
        raise _BadAnswer(f"expected an integer, got {raw!r}")
    try:
        return int(raw)
    except ValueError:
        raise _BadAnswer(f"expected an integer, got {raw!r}") from None


def _unb64(raw) -> bytes:
    if raw is None:
        return b""
    if not isinstance(raw, str):
        raise _BadAnswer(f"expected base64 text, got {raw!r}")
    try:
        return base64.b64decode(raw, validate=True)
    except (binascii.Error, ValueError):
        raise _BadAnswer(f"not base64: {raw[:80]!r}") from None


def _object(raw, what: str) -> dict:
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise _BadAnswer(f"{what} is not a JSON object: {str(raw)[:80]}")
    return raw


def _kv(raw) -> KeyValue:
    raw = _object(raw, "a key-value")
    return KeyValue(
        key=_unb64(raw.get("key")).decode("utf-8", "replace"),
        value=_unb64(raw.get("value")),
        create_revision=_int(raw.get("create_revision")),
        mod_revision=_int(raw.get("mod_revision")),
        version=_int(raw.get("version")),
        lease=_int(raw.get("lease")),
    )


def _revision(answer: dict) -> int:
    return _int(_object(answer.get("header"), "the header").get("revision"))


def _error_in(obj: dict) -> Optional[Tuple[str, Optional[int]]]:
    """etcd's (message, code) if C{obj} is an error answer: C{{"error", "message", "code"}} or a stream's C{{"error": {...}}}."""
    error = obj.get("error")
    if not error:
        return None
    if isinstance(error, dict):
        code = error.get("grpc_code", error.get("code"))
        return str(error.get("message") or error), code if isinstance(code, int) else None
    code = obj.get("code")
    return str(obj.get("message") or error), code if isinstance(code, int) else None


def _token_refused(error: EtcdError) -> bool:
    """Does etcd want a (new) token: the one sent is invalid or expired, or none was sent?"""
    return error.code == UNAUTHENTICATED or "invalid auth token" in error.message or "user name is empty" in error.message


class JsonLines:
    """
    The objects of a newline-delimited JSON stream, from chunks cut anywhere:
    a chunk may end inside a message or hold several.
    """

    def __init__(self, limit: int = MAX_MESSAGE):
        self._buffer = b""
        self._limit = limit

    def feed(self, data: bytes) -> List[object]:
        """The messages completed by C{data}. @raise _BadAnswer: a line is not JSON, or too long."""
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        if len(self._buffer) > self._limit:
            raise _BadAnswer(f"a message longer than {self._limit} bytes")
        messages = []
        for line in lines:
            if line.strip():
                try:
                    messages.append(json.loads(line))
                except ValueError as e:
                    raise _BadAnswer(f"bad JSON ({e}): {line[:120]!r}") from None
        return messages


def _describe(failure: Failure) -> str:
    """Words for why a request to an endpoint got no answer."""
    value = failure.value
    reasons = getattr(value, "reasons", None)  # ResponseFailed, ResponseNeverReceived, RequestNotSent...
    if isinstance(reasons, list) and reasons and isinstance(reasons[0], Failure):
        return _describe(reasons[0])
    if tls.is_failure(failure):
        return tls.describe_failure(failure)
    text = str(value).strip()
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


# -- TLS -------------------------------------------------------------------


@implementer(IPolicyForHTTPS)
class _TLSPolicy:
    """Verify each etcd member against C{trust} (None: the system's roots), host name checked; present C{client} if given."""

    def __init__(self, trust, client):
        self._trust = trust
        self._client = client

    def creatorForNetloc(self, hostname: bytes, port: int):
        return ssl.optionsForClientTLS(
            hostname.decode("ascii"), trustRoot=self._trust, clientCertificate=self._client,
        )


def _tls_policy(cacert, cert, key) -> _TLSPolicy:
    trust = None
    if cacert is not None:
        trust = ssl.trustRootFromCertificates(tls.load_certificates(cacert, "etcd CA certificate (etcd_cacert)"))
    client = None
    if (cert is None) != (key is None):
        raise ValueError("etcd TLS: a client certificate needs both etcd_cert and etcd_key")
    if cert is not None:
        client = tls.private_certificate(cert, key, "etcd client")
    return _TLSPolicy(trust, client)


@implementer(IStreamClientEndpoint)
class _Quiet:
    """An endpoint whose connections' factories log no "Starting factory" lines (one per request while etcd is away)."""

    def __init__(self, endpoint):
        self._endpoint = endpoint

    def connect(self, protocolFactory):
        protocolFactory.noisy = False
        return self._endpoint.connect(protocolFactory)


@implementer(IAgentEndpointFactory)
class _Connections:
    """
    Where the agent connects: straight to an IP address given as one
    (HostnameEndpoint would wait 0.3 s before it reports a refusal), through
    name resolution otherwise; wrapped in TLS for https.
    """

    def __init__(self, reactor, policy, timeout):
        self._reactor = reactor
        self._policy = policy
        self._timeout = timeout

    def endpointForURI(self, uri):
        host = uri.host.decode("ascii")
        try:
            address = ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            endpoint = HostnameEndpoint(self._reactor, host, uri.port, timeout=self._timeout)
        else:
            kind = TCP6ClientEndpoint if address.version == 6 else TCP4ClientEndpoint
            endpoint = kind(self._reactor, str(address), uri.port, timeout=self._timeout)
        if uri.scheme == b"https":
            endpoint = wrapClientTLS(self._policy.creatorForNetloc(uri.host.strip(b"[]"), uri.port), endpoint)
        return _Quiet(endpoint)


def _endpoint(url: str) -> str:
    parts = urlsplit(url.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/") or parts.query:
        raise ValueError(f"etcd endpoint {url!r}: expected http://HOST:PORT or https://HOST:PORT")
    try:
        parts.port
    except ValueError:
        raise ValueError(f"etcd endpoint {url!r}: the port is not a number from 0 to 65535") from None
    return f"{parts.scheme}://{parts.netloc}"


# -- the client -------------------------------------------------------------------


class EtcdClient:
    """
    etcd v3 over the JSON gateway of C{endpoints} (C{http://} or C{https://}
    URLs of the members). C{timeout}: seconds each try at an endpoint may
    take. TLS: C{cacert} (the CA that signed the members' certificates;
    without it the system's roots), C{cert}/C{key} (a client certificate,
    when etcd asks for one). Auth: C{user}/C{password}; the token is sent in
    the Authorization header, and fetched again once when etcd says it is
    invalid or expired.
    """

    def __init__(self, reactor, endpoints: Sequence[str], timeout: float, cacert=None, cert=None, key=None,
                 user: Optional[str] = None, password: Optional[str] = None):
        if isinstance(endpoints, str) or not endpoints:
            raise ValueError(f"etcd endpoints: expected a list of URLs, got {endpoints!r}")
        if not timeout > 0:
            raise ValueError(f"etcd timeout: expected seconds above 0, got {timeout!r}")
        if (user is None) != (password is None):
            raise ValueError("etcd auth needs both a user and a password")
        self._endpoints = [_endpoint(e) for e in endpoints]
        self._reactor = reactor
        self._timeout = timeout
        self._user = user
        self._password = password
        self._token: Optional[str] = None
        self._current = 0
        self._closed = False
        self._pending = set()
        self._watches = set()
        self._pool = HTTPConnectionPool(reactor, persistent=True)
        # A member has a few requests out at once (a renewal, its member key, a
        # campaign): kept connections for all of them, rather than a new
        # connection (and two log lines) for every request past the second.
        self._pool.maxPersistentPerHost = 8
        policy = _tls_policy(cacert, cert, key) if any(e.startswith("https:") for e in self._endpoints) else None
        self._connections = _Connections(reactor, policy, timeout)
        agent = Agent.usingEndpointFactory(reactor, self._connections, pool=self._pool)
        self._http = HTTPClient(agent)

    @property
    def timeout(self) -> float:
        """Seconds one try of a request at one endpoint may take (connecting included)."""
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        if not seconds > 0:
            raise ValueError(f"etcd timeout: expected seconds above 0, got {seconds!r}")
        self._timeout = self._connections._timeout = seconds

    @property
    def endpoints(self) -> List[str]:
        return list(self._endpoints)

    @property
    def current(self) -> str:
        """The endpoint the next request goes to first (the last that answered)."""
        return self._endpoints[self._current]

    # -- leases

    @defer.inlineCallbacks
    def grant(self, ttl: int):
        """A new lease: C{(lease_id, granted_ttl)} (etcd may grant more than asked)."""
        if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"a lease TTL is whole seconds, at least 1: {ttl!r}")

        def parse(answer):
            lease = _int(answer.get("ID"))
            if not lease:
                raise _BadAnswer("a grant without a lease ID")
            return lease, _int(answer.get("TTL"))

        return (yield self._call("/v3/lease/grant", {"TTL": ttl}, parse))

    @defer.inlineCallbacks
    def keepalive(self, lease_id: int):
        """Renew a lease once: its TTL from now, or 0 when the lease no longer exists (etcd then answers without a TTL)."""
        return (yield self._call(
            "/v3/lease/keepalive", {"ID": str(lease_id)}, lambda answer: max(0, _int(answer.get("TTL"))), stream=True,
        ))

    @defer.inlineCallbacks
    def revoke(self, lease_id: int):
        """Revoke a lease, deleting its keys; a lease that no longer exists is not an error."""
        try:
            yield self._call("/v3/lease/revoke", {"ID": str(lease_id)}, lambda answer: None)
        except EtcdUnavailable:
            raise
        except EtcdError as e:
            if e.code != NOT_FOUND or "lease not found" not in e.message:
                raise

    # -- keys

    @defer.inlineCallbacks
    def get(self, key: str, prefix: bool = False):
        """C{(revision, [KeyValue])}: C{key}, or every key under it when C{prefix}, at the store's revision."""
        body = {"key": _key(key)}
        if prefix:
            body["range_end"] = _prefix_end(key)

        def parse(answer):
            kvs = answer.get("kvs") or []
            if not isinstance(kvs, list):
                raise _BadAnswer(f"kvs is not a list: {str(kvs)[:80]}")
            return _revision(answer), [_kv(raw) for raw in kvs]

        return (yield self._call("/v3/kv/range", body, parse))

    @defer.inlineCallbacks
    def put(self, key: str, value: bytes, lease: int = 0):
        """Write C{key}, bound to C{lease} if not 0; the store's revision after it."""
        body = {"key": _key(key), "value": _value(value)}
        if lease:
            body["lease"] = str(lease)
        return (yield self._call("/v3/kv/put", body, _revision))

    @defer.inlineCallbacks
    def delete(self, key: str):
        """Delete C{key} (absent is fine); the store's revision after it."""
        return (yield self._call("/v3/kv/deleterange", {"key": _key(key)}, _revision))

    @defer.inlineCallbacks
    def create_if_absent(self, key: str, value: bytes, lease: int, also_delete: Sequence[str] = ()):
        """
        One transaction: if C{key} does not exist, put it bound to C{lease}
        and delete each key of C{also_delete}; else read it.

        Returns C{(succeeded, revision, existing)}: on success the revision
        is the new key's create revision and C{existing} None; on failure
        the store's revision and C{existing} the C{KeyValue} that holds the
        key. If a try at one endpoint timed out after etcd applied it, the
        retry finds the key bound to C{lease}: only this lease's holder
        could have written that, so it counts as a success (with the key's
        create revision).
        """
        also_delete = list(also_delete)
        if key in also_delete:
            raise ValueError(f"create_if_absent: {key!r} cannot be created and deleted in one transaction")
        success = [{"request_put": {"key": _key(key), "value": _value(value), "lease": str(lease)}}]
        success += [{"request_delete_range": {"key": _key(other)}} for other in also_delete]
        body = {
            "compare": [{"key": _key(key), "target": "CREATE", "result": "EQUAL", "create_revision": "0"}],
            "success": success,
            "failure": [{"request_range": {"key": _key(key)}}],
        }

        def parse(answer):
            revision = _revision(answer)
            if answer.get("succeeded"):
                return True, revision, None
            existing = None
            for response in answer.get("responses") or []:
                kvs = _object(_object(response, "a txn response").get("response_range"), "response_range").get("kvs") or []
                if kvs:
                    existing = _kv(kvs[0])
            if existing is not None and lease and existing.lease == lease:
                return True, existing.create_revision, None
            return False, revision, existing

        return (yield self._call("/v3/kv/txn", body, parse))

    @defer.inlineCallbacks
    def delete_if_lease(self, key: str, lease: int, also_put: Optional[Tuple[str, bytes]] = None):
        """
        One transaction: if C{key} is bound to C{lease}, delete it (and put
        C{also_put}, a C{(key, value)}, if given). True if it did.
        """
        success = [{"request_delete_range": {"key": _key(key)}}]
        if also_put is not None:
            other, value = also_put
            if other == key:
                raise ValueError(f"delete_if_lease: {key!r} cannot be deleted and put in one transaction")
            success.append({"request_put": {"key": _key(other), "value": _value(value)}})
        body = {
            "compare": [{"key": _key(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}],
            "success": success,
        }
        return (yield self._call("/v3/kv/txn", body, lambda answer: bool(answer.get("succeeded"))))

    @defer.inlineCallbacks
    def put_if_lease(self, key: str, value: bytes, lease: int):
        """One transaction: if C{key} is bound to C{lease}, write it again (under the same lease). True if it did."""
        body = {
            "compare": [{"key": _key(key), "target": "LEASE", "result": "EQUAL", "lease": str(lease)}],
            "success": [{"request_put": {"key": _key(key), "value": _value(value), "lease": str(lease)}}],
        }
        return (yield self._call("/v3/kv/txn", body, lambda answer: bool(answer.get("succeeded"))))

    @defer.inlineCallbacks
    def delete_if_revision(self, key: str, mod_revision: int):
        """One transaction: if C{key} was last written at C{mod_revision}, delete it. True if it did."""
        body = {
            "compare": [{"key": _key(key), "target": "MOD", "result": "EQUAL", "mod_revision": str(int(mod_revision))}],
            "success": [{"request_delete_range": {"key": _key(key)}}],
        }
        return (yield self._call("/v3/kv/txn", body, lambda answer: bool(answer.get("succeeded"))))

    # -- watches

    def watch(self, key: str, prefix: bool, start_revision: int,
              on_events: Callable[[List[WatchEvent], int], None]) -> "Watch":
        """
        Watch C{key} (or every key under it) from C{start_revision} (0: from
        now on). C{on_events(events, revision)} gets each batch in order,
        with the store's revision; a progress notification is an empty
        batch. The L{Watch}'s C{done} fails with an L{EtcdError} when the
        watch ends (L{EtcdCompacted} when the start revision is compacted);
        it fires with None after L{Watch.cancel}.
        """
        request = {"key": _key(key), "start_revision": str(int(start_revision)), "progress_notify": True}
        if prefix:
            request["range_end"] = _prefix_end(key)
        watch = Watch(on_events, cancel=self._cancel_watch)
        if self._closed:
            watch.fail(EtcdError("the client is closed"))
            return watch
        self._watches.add(watch)
        watch.done.addBoth(self._forget_watch, watch)
        self._open_watch(watch, {"create_request": request}, may_reauthenticate=True)
        return watch

    def _forget_watch(self, result, watch):
        self._watches.discard(watch)
        return result

    def _cancel_watch(self, watch):
        if watch.opening is not None:
            watch.opening.cancel()

    def _open_watch(self, watch, body, may_reauthenticate):
        d = self._headers(authenticate=True)

        def require_leader(headers):
            # A member cut off from its cluster's leader ends the watch (etcd's
            # "hasleader" metadata, passed by the gateway), rather than holding
            # a stream that will never deliver again.
            headers[b"Grpc-Metadata-Hasleader"] = [b"true"]
            return headers

        d.addCallback(require_leader)
        d.addCallback(lambda headers: self._post_anywhere("/v3/watch", body, headers, None, stream_response=True))
        watch.opening = d

        def opened(result):
            watch.opening = None
            endpoint, response = result
            if watch.finished:
                _abort(response)
                return
            watch.attach(endpoint, response, self._reactor, self._timeout, reopen)

        def failed(reason):
            watch.opening = None
            if not watch.finished:
                watch.fail(reason.value if reason.check(EtcdError) else EtcdError(_describe(reason)))

        def reopen(error):
            # A watch etcd refused at creation for want of a valid token:
            # fetch a new token and create it again, once.
            if may_reauthenticate and self._user is not None and _token_refused(error) and not self._closed:
                self._token = None
                self._open_watch(watch, body, may_reauthenticate=False)
                return True
            return False

        d.addCallbacks(opened, failed)

    # -- the end

    def close(self):
        """Cancel every watch and request in flight and close the connections: a Deferred that fires when they are closed."""
        self._closed = True
        watches = list(self._watches)
        for watch in watches:
            watch.cancel()
        for d in list(self._pending):
            d.cancel()
        closing = [watch.closed() for watch in watches] + [self._pool.closeCachedConnections()]
        return defer.gatherResults(closing).addCallback(lambda _: None)

    # -- requests

    def _headers(self, authenticate: bool):
        """The headers of a request: with the Authorization token when the client has a user (authenticating first if needed)."""
        headers = dict(_JSON)
        if not authenticate or self._user is None:
            return defer.succeed(headers)
        if self._token is not None:
            headers[b"Authorization"] = [self._token.encode("ascii")]
            return defer.succeed(headers)

        def parse(answer):
            token = answer.get("token")
            if not isinstance(token, str) or not token:
                raise _BadAnswer("an authentication answer without a token")
            return token

        def got(token):
            self._token = token
            headers[b"Authorization"] = [token.encode("ascii")]
            return headers

        d = self._call("/v3/auth/authenticate", {"name": self._user, "password": self._password}, parse, authenticate=False)
        return d.addCallback(got)

    @defer.inlineCallbacks
    def _call(self, path: str, body: dict, parse, stream: bool = False, authenticate: bool = True):
        """POST C{body} to C{path} at the first endpoint that answers; C{parse} of the answer."""
        for attempt in (1, 2):
            headers = yield self._headers(authenticate)
            try:
                _, result = yield self._post_anywhere(path, body, headers, parse, stream=stream)
                return result
            except EtcdUnavailable:
                raise
            except EtcdError as e:
                if attempt == 1 and authenticate and self._user is not None and _token_refused(e):
                    log.info("etcd refused the auth token ({message}); authenticating again", message=e.message)
                    self._token = None
                    continue
                raise

    def _post_anywhere(self, path, body, headers, parse, stream=False, stream_response=False):
        """
        Try each endpoint once, from the one that last answered: the first
        answer, as C{(endpoint, parse(answer))} (or C{(endpoint, response)}
        for a C{stream_response}). L{EtcdUnavailable} if none answered.
        Cancelling the Deferred cancels the try in flight and tries no more.
        """
        if self._closed:
            return defer.fail(EtcdError("the client is closed"))
        data = json.dumps(body).encode("utf-8")
        failures = []
        start = self._current
        count = len(self._endpoints)
        attempt = None
        cancelled = False

        def cancel(_):
            nonlocal cancelled
            cancelled = True
            if attempt is not None:
                attempt.cancel()

        outer = defer.Deferred(cancel)

        def try_at(step):
            nonlocal attempt
            if step == count:
                outer.errback(EtcdUnavailable(failures))
                return
            index = (start + step) % count
            endpoint = self._endpoints[index]
            if stream_response:
                attempt = self._open_once(endpoint, path, data, headers)
            else:
                attempt = self._post_once(endpoint, path, data, headers, parse, stream)

            def answered(result):
                self._moved_to(index)
                outer.callback((endpoint, result))

            def failed(reason):
                if reason.check(_Unreachable):
                    failures.append((endpoint, reason.value.reason))
                elif reason.check(EtcdError) and reason.value.code == UNAVAILABLE:
                    failures.append((endpoint, reason.value.message))
                else:
                    if reason.check(EtcdError) and reason.value.endpoint is not None:
                        self._moved_to(index)
                    outer.errback(reason)
                    return
                if self._closed:
                    outer.errback(EtcdError("the client is closed"))
                else:
                    try_at(step + 1)

            def settled(result):
                if cancelled:
                    return None  # the caller has its CancelledError already
                if isinstance(result, Failure):
                    failed(result)
                else:
                    answered(result)
                return None

            attempt.addBoth(settled)

        try_at(0)
        return outer

    def _moved_to(self, index):
        if index != self._current:
            log.info("etcd: now using {endpoint} (was {previous})",
                     endpoint=self._endpoints[index], previous=self._endpoints[self._current])
            self._current = index

    def _timed(self, d):
        """C{d}, cancelled after the timeout; the list it returns is non-empty if that happened."""
        timed_out = []
        self._pending.add(d)

        def expire():
            timed_out.append(True)
            d.cancel()

        call = self._reactor.callLater(self._timeout, expire)

        def settle(result):
            self._pending.discard(d)
            if call.active():
                call.cancel()
            return result

        d.addBoth(settle)
        return timed_out

    @defer.inlineCallbacks
    def _post_once(self, endpoint, path, data, headers, parse, stream):
        d = self._http.post(endpoint + path, data=data, headers=headers, unbuffered=True)
        d.addCallback(lambda response: _read_body(response).addCallback(lambda body: (response.code, body)))
        timed_out = self._timed(d)
        try:
            status, raw = yield d
        except _BadAnswer as e:
            raise EtcdError(str(e), endpoint) from None
        except Exception:
            raise self._not_answered(timed_out) from None
        answer = _decode(endpoint, status, raw, stream)
        try:
            return parse(answer)
        except (_BadAnswer, ValueError, TypeError, KeyError, AttributeError, IndexError) as e:
            raise EtcdError(f"unexpected answer to {path} ({e}): {raw[:200]!r}", endpoint) from None

    def _not_answered(self, timed_out) -> Exception:
        """What to raise, in an C{except} block, for a try that got no answer: closed, timed out, or why not."""
        if self._closed:
            return EtcdError("the client is closed")
        if timed_out:
            return _Unreachable(f"no answer within {self._timeout:.3g}s")
        return _Unreachable(_describe(Failure()))

    @defer.inlineCallbacks
    def _open_once(self, endpoint, path, data, headers):
        """The response of a streaming POST, once its headers are in (its body not read); an HTTP error is an EtcdError."""
        d = self._http.post(endpoint + path, data=data, headers=headers, unbuffered=True)
        timed_out = self._timed(d)
        try:
            response = yield d
        except Exception:
            raise self._not_answered(timed_out) from None
        if response.code != 200:
            raw = yield _read_some(response, self._reactor, self._timeout)
            _decode(endpoint, response.code, raw, True)  # raises etcd's error
            raise EtcdError(f"HTTP {response.code} to {path}", endpoint)
        return response


def _close(transport):
    """Drop the connection a response body comes on (the body's transport, a producer, offers stopProducing)."""
    abort = getattr(transport, "abortConnection", None)
    (abort or transport.stopProducing)()


class _Body(Protocol):
    def __init__(self, d, limit):
        self.d = d
        self.limit = limit
        self.parts = []
        self.size = 0

    def dataReceived(self, data):
        if self.d.called:
            return
        self.size += len(data)
        self.parts.append(data)
        if self.size > self.limit:
            self.d.errback(_BadAnswer(f"an answer longer than {self.limit} bytes"))
            _close(self.transport)

    def connectionLost(self, reason=ConnectionDone):
        if self.d.called:
            return
        if reason.check(ResponseDone, PotentialDataLoss):
            self.d.callback(b"".join(self.parts))
        else:
            self.d.errback(reason)


def _read_body(response, limit=MAX_MESSAGE):
    """The body of C{response}; cancelling drops the connection."""
    protocol = None

    def cancel(d):
        if protocol is not None and protocol.transport is not None:
            _close(protocol.transport)

    d = defer.Deferred(cancel)
    protocol = _Body(d, limit)
    response.deliverBody(protocol)
    return d


def _read_some(response, reactor, timeout):
    """The body of an error answer, or b"" if it does not come within the timeout."""
    d = _read_body(response)
    call = reactor.callLater(timeout, d.cancel)

    def settle(result):
        if call.active():
            call.cancel()
        return b"" if isinstance(result, Failure) else result

    return d.addBoth(settle)


def _decode(endpoint: str, status: int, raw: bytes, stream: bool) -> dict:
    """The JSON object of an answer; an EtcdError for etcd's error answers and for what does not parse."""
    text = raw
    if stream:
        lines = [line for line in raw.split(b"\n") if line.strip()]
        text = lines[0] if lines else b""
    try:
        answer = json.loads(text)
    except ValueError:
        if status != 200:
            raise EtcdError(f"HTTP {status}: {raw[:200].decode('utf-8', 'replace').strip()}", endpoint) from None
        raise EtcdError(f"an answer that is not JSON: {raw[:200]!r}", endpoint) from None
    if not isinstance(answer, dict):
        raise EtcdError(f"an answer that is not a JSON object: {raw[:200]!r}", endpoint)
    error = _error_in(answer)
    if error is not None:
        raise EtcdError(error[0], endpoint, error[1])
    if status != 200:
        raise EtcdError(f"HTTP {status}: {raw[:200]!r}", endpoint)
    if stream:
        if not isinstance(answer.get("result"), dict):
            raise EtcdError(f"a stream message without a result: {raw[:200]!r}", endpoint)
        answer = answer["result"]
    return answer


def _abort(response):
    """Close the connection a streaming response came on (its body unread)."""

    class Drop(Protocol):
        def connectionMade(self):
            _close(self.transport)

    response.deliverBody(Drop())


class _Stream(Protocol):
    """The body of a watch's response, handed to its L{Watch}."""

    def __init__(self, watch):
        self.watch = watch
        self.lost = False
        self.waiting = []

    def dataReceived(self, data):
        self.watch.feed(data)

    def connectionLost(self, reason=ConnectionDone):
        self.lost = True
        waiting, self.waiting = self.waiting, []
        for d in waiting:
            d.callback(None)
        self.watch.ended(reason)

    def abort(self):
        if self.transport is not None:
            _close(self.transport)


class Watch:
    """
    A watch on etcd (see L{EtcdClient.watch}).

    @ivar done: fires with None after L{cancel}, or fails with an
        L{EtcdError} when the watch ends for any other reason: etcd canceled
        it (L{EtcdCompacted} for a compacted start revision), the stream
        ended or broke, no answer came in time, or C{on_events} raised.
    """

    def __init__(self, on_events: Callable[[List[WatchEvent], int], None], cancel: Callable[["Watch"], None] = None):
        self.done = defer.Deferred()
        self.finished = False
        self.created = False
        self.endpoint: Optional[str] = None
        self.opening = None
        self._on_events = on_events
        self._on_cancel = cancel
        self._lines = JsonLines()
        self._stream: Optional[_Stream] = None
        self._creation_timer = None
        self._reopen = None

    def cancel(self) -> None:
        """Stop watching: C{done} fires with None, the stream's connection closes."""
        if self.finished:
            return
        self._finish(None)
        if self._on_cancel is not None:
            self._on_cancel(self)

    def attach(self, endpoint, response, reactor, timeout, reopen=None):
        """Read the watch's stream from C{response}; fail unless etcd confirms the watch within C{timeout} seconds."""
        self.endpoint = endpoint
        self._reopen = reopen
        self._stream = _Stream(self)
        self._creation_timer = reactor.callLater(
            timeout, lambda: self.fail(EtcdError(f"the watch was not created within {timeout:g}s", endpoint)),
        )
        response.deliverBody(self._stream)

    def closed(self):
        """A Deferred that fires once the stream's connection is gone (at once if it has none)."""
        if self._stream is None or self._stream.lost or self._stream.transport is None:
            return defer.succeed(None)
        d = defer.Deferred()
        self._stream.waiting.append(d)
        return d

    def feed(self, data: bytes) -> None:
        """Bytes of the stream as they come, cut anywhere."""
        if self.finished:
            return
        try:
            messages = self._lines.feed(data)
        except _BadAnswer as e:
            self.fail(EtcdError(f"watch stream: {e}", self.endpoint))
            return
        for message in messages:
            if self.finished:
                return
            self._message(message)

    def ended(self, reason: Failure) -> None:
        """The stream's connection is gone."""
        if self.finished:
            return
        if reason.check(ResponseDone, ConnectionDone):
            self.fail(EtcdError("the watch stream ended", self.endpoint))
        else:
            self.fail(EtcdError(f"the watch stream broke: {_describe(reason)}", self.endpoint))

    def fail(self, error: EtcdError) -> None:
        """End the watch with C{error}."""
        if not self.finished:
            self._finish(Failure(error))

    def _finish(self, result):
        self.finished = True
        if self._creation_timer is not None and self._creation_timer.active():
            self._creation_timer.cancel()
        if self._stream is not None:
            self._stream.abort()
        self.done.callback(result) if not isinstance(result, Failure) else self.done.errback(result)

    def _message(self, message) -> None:
        try:
            if not isinstance(message, dict):
                raise _BadAnswer(f"not a JSON object: {str(message)[:120]}")
            error = _error_in(message)
            if error is not None:
                self.fail(EtcdError(error[0], self.endpoint, error[1]))
                return
            result = _object(message.get("result"), "a watch result")
            revision = _revision(result)
            compacted = _int(result.get("compact_revision"))
            if compacted:
                self.fail(EtcdCompacted(compacted, self.endpoint))
                return
            if result.get("canceled"):
                reason = EtcdError(result.get("cancel_reason") or "etcd canceled the watch", self.endpoint)
                if not self.created and self._reopen is not None and self._reopen(reason):
                    self._stop_quietly()
                    return
                self.fail(reason)
                return
            if result.get("created"):
                self.created = True
                if self._creation_timer is not None and self._creation_timer.active():
                    self._creation_timer.cancel()
            events = [
                WatchEvent("DELETE" if raw.get("type") == "DELETE" else "PUT", _kv(raw.get("kv")))
                for raw in (_object(e, "an event") for e in result.get("events") or [])
            ]
        except _BadAnswer as e:
            self.fail(EtcdError(f"unexpected watch message ({e}): {str(message)[:200]}", self.endpoint))
            return
        if result.get("created") and not events:
            return
        try:
            self._on_events(events, revision)
        except Exception as e:
            log.failure("etcd watch: on_events failed")
            self.fail(EtcdError(f"on_events raised {type(e).__name__}: {e}", self.endpoint))

    def _stop_quietly(self):
        """Drop this stream without ending the watch: it is being opened again."""
        stream, self._stream = self._stream, None
        stream.watch = _Ignored
        stream.abort()
        if self._creation_timer is not None and self._creation_timer.active():
            self._creation_timer.cancel()
        self._lines = JsonLines()


class _IgnoredWatch:
    def feed(self, data):
        pass

    def ended(self, reason):
        pass


_Ignored = _IgnoredWatch()
