"""
A client endpoint for the clients of a failover pair.

Failover moves the service, not its address: a client must know both nodes
and try the other when one does not answer. L{FailoverClientEndpoint} does
that for any Twisted client. It tries its addresses in order (the usual
live node first, then the backup), gives each try at most C{timeout}
seconds, and returns the first connection. A refused connection moves on at
once; a silent address (a host that is down or cut off) moves on when its
try times out, and that try is cancelled.

As a string, for C{clientFromString} (the plugin is in
C{twisted/plugins/iwayfailover_endpoints.py})::

    failover:iam1\\:8080:iam2\\:8080:timeout=2

Each positional argument is C{host:port} (C{[v6addr]:port}), or a client
endpoint string of its own (C{tls\\:iam1\\:443}), with its colons escaped;
L{failover_string} writes one from a list.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.error import ConnectError
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

DEFAULT_TIMEOUT = 5.0

log = Logger()


class FailoverConnectError(ConnectError):
    """
    No address of a L{FailoverClientEndpoint} could be reached.

    @ivar attempts: C{(address, why)} for each address, in the order tried.
    """

    def __init__(self, attempts: Sequence[Tuple[str, str]]):
        self.attempts = list(attempts)
        tried = "; ".join(f"{address}: {why}" for address, why in self.attempts)
        super().__init__(string=f"could not connect to any of {len(self.attempts)} addresses ({tried})")


def _why(failure) -> str:
    """A connect error's own message (Twisted's say what happened); others with their type."""
    value = failure.value
    text = failure.getErrorMessage()
    if isinstance(value, ConnectError) and text:
        return text
    return f"{type(value).__name__}: {text}" if text else type(value).__name__


def _describe(endpoint) -> str:
    host = getattr(endpoint, "_host", None) or getattr(endpoint, "_hostText", None)
    port = getattr(endpoint, "_port", None)
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if host is not None and port is not None:
        return f"[{host}]:{port}" if ":" in str(host) else f"{host}:{port}"
    return repr(endpoint)


@implementer(IStreamClientEndpoint)
class FailoverClientEndpoint:
    """
    Connect to the first of C{endpoints} that answers, each tried for at
    most C{timeout} seconds, in order.

    @param reactor: provides C{callLater}.
    @param endpoints: L{IStreamClientEndpoint}s, the usual live node first.
    @param timeout: seconds each try may take before it is cancelled and the
        next address is tried.
    @param names: how the endpoints are named in errors and the log (their
        host and port, by default).
    @param sticky: start each connect at the address that last worked (then
        the others, in order), so that after a failover to the backup a
        silent old live host costs no C{timeout} on every reconnect. By
        default every connect starts at the first address.
    """

    def __init__(self, reactor, endpoints: Sequence, timeout: float = DEFAULT_TIMEOUT, names: Optional[Sequence[str]] = None,
                 sticky: bool = False):
        if not endpoints:
            raise ValueError("a failover endpoint needs at least one address")
        if not timeout > 0:
            raise ValueError(f"timeout must be greater than 0, not {timeout!r}")
        self._reactor = reactor
        self.endpoints = list(endpoints)
        self.timeout = timeout
        self.names = list(names) if names is not None else [_describe(e) for e in self.endpoints]
        if len(self.names) != len(self.endpoints):
            raise ValueError("one name for each endpoint")
        self.sticky = sticky
        self.last_good: Optional[int] = None

    def order(self) -> List[int]:
        """The indices of the endpoints in the order the next connect tries them."""
        indices = list(range(len(self.endpoints)))
        if self.sticky and self.last_good is not None:
            indices.remove(self.last_good)
            indices.insert(0, self.last_good)
        return indices

    def __repr__(self):
        sticky = " sticky" if self.sticky else ""
        return f"<FailoverClientEndpoint {', '.join(self.names)} timeout={self.timeout:g}{sticky}>"

    def connect(self, protocolFactory) -> defer.Deferred:
        """
        Try each address in turn. Fires with the protocol of the first
        connection made, or fails with L{FailoverConnectError} naming every
        address and why it failed. Cancelling it cancels the try in flight.
        """
        return _Attempt(self, protocolFactory).result


class _Attempt:
    """One connect(): the tries, their timers, and the answer."""

    def __init__(self, endpoint: FailoverClientEndpoint, factory):
        self.endpoint = endpoint
        self.factory = factory
        self.failures: List[Tuple[str, str]] = []
        self.current: Optional[defer.Deferred] = None
        self.timer = None
        self.timed_out = False
        self.cancelled = False
        self.result = defer.Deferred(self._cancel)
        self.order = endpoint.order()
        self._try(0)

    def _try(self, step: int):
        endpoint = self.endpoint
        if step == len(self.order):
            self.result.errback(FailoverConnectError(self.failures))
            return
        index = self.order[step]
        self.timed_out = False
        try:
            attempt = endpoint.endpoints[index].connect(self.factory)
        except Exception:
            attempt = defer.fail()
        self.current = attempt
        if not attempt.called:
            self.timer = endpoint._reactor.callLater(endpoint.timeout, self._time_out, attempt)
        attempt.addCallbacks(self._connected, self._failed, callbackArgs=(index,), errbackArgs=(step,))

    def _time_out(self, attempt):
        self.timer = None
        self.timed_out = True
        attempt.cancel()

    def _stop_timer(self):
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def _connected(self, protocol, index):
        self._stop_timer()
        self.current = None
        if self.cancelled:
            # Cancelled, but the endpoint connected all the same: let go.
            transport = getattr(protocol, "transport", None)
            if transport is not None:
                transport.abortConnection()
            return
        self.endpoint.last_good = index
        self.result.callback(protocol)

    def _failed(self, failure, step):
        self._stop_timer()
        self.current = None
        if self.cancelled:
            return  # cancelled from outside: the result fails with CancelledError
        name = self.endpoint.names[self.order[step]]
        why = f"no connection within {self.endpoint.timeout:g}s" if self.timed_out else _why(failure)
        self.failures.append((name, why))
        if step + 1 < len(self.order):
            log.info(
                "could not connect to {address} ({why}); trying {next}",
                address=name, why=why, next=self.endpoint.names[self.order[step + 1]],
            )
        self._try(step + 1)

    def _cancel(self, result):
        self.cancelled = True
        self._stop_timer()
        current, self.current = self.current, None
        if current is not None:
            current.cancel()


# -- the string form --


def failover_string(addresses: Sequence[str], timeout: Optional[float] = None, sticky: bool = False) -> str:
    """
    The C{failover:} endpoint string for C{addresses} (each C{host:port} or
    a client endpoint string), with the colons and equals signs escaped.
    """
    def escape(text):
        return text.replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")

    parts = ["failover"] + [escape(a) for a in addresses]
    if timeout is not None:
        parts.append(f"timeout={timeout:g}")
    if sticky:
        parts.append("sticky=yes")
    return ":".join(parts)


def parse_failover(reactor, *addresses: str, **options: str) -> FailoverClientEndpoint:
    """
    Build a L{FailoverClientEndpoint} from the arguments of a C{failover:}
    string, as C{clientFromString} hands them over (unescaped).

    @raise ValueError: naming the bad argument and what is allowed.
    """
    from iwayfailover.config import client_endpoint_string

    allowed = r"failover:HOST\:PORT:HOST\:PORT[:timeout=SECONDS][:sticky=yes], each address host:port or an escaped client endpoint string"
    unknown = set(options) - {"timeout", "sticky"}
    if unknown:
        raise ValueError(f"failover endpoint: unknown option {sorted(unknown)[0]!r} (allowed: {allowed})")
    if not addresses:
        raise ValueError(f"failover endpoint: no addresses (allowed: {allowed})")
    timeout = DEFAULT_TIMEOUT
    if "timeout" in options:
        try:
            timeout = float(options["timeout"])
        except ValueError:
            timeout = float("nan")
        if not timeout > 0 or timeout == float("inf"):
            raise ValueError(f"failover endpoint: timeout={options['timeout']!r} is not a number of seconds greater than 0")
    sticky = False
    if "sticky" in options:
        word = options["sticky"].strip().lower()
        if word not in ("yes", "no", "true", "false", "on", "off", "1", "0"):
            raise ValueError(f"failover endpoint: sticky={options['sticky']!r} is not yes or no")
        sticky = word in ("yes", "true", "on", "1")
    endpoints = []
    for address in addresses:
        description = client_endpoint_string(address)
        if ":" not in description:
            raise ValueError(f"failover endpoint: {address!r} is not host:port or a client endpoint string (allowed: {allowed})")
        try:
            endpoint = clientFromString(reactor, description)
        except Exception as e:
            raise ValueError(f"failover endpoint: {address!r} is not a usable address ({e}) (allowed: {allowed})") from None
        port = getattr(endpoint, "_port", None)
        if isinstance(port, int) and not 0 < port < 65536:
            raise ValueError(f"failover endpoint: {address!r}: port {port} is out of range (1 to 65535)")
        endpoints.append(endpoint)
    return FailoverClientEndpoint(reactor, endpoints, timeout, names=list(addresses), sticky=sticky)
