"""
Short, bounded questions to the network, each answered by a Deferred that
never fails:

- L{reach}: can a TCP connection be made to host:port? The answer tells a
  refused connection (the host is up, nothing listens: a dead process) from
  a silent or unreachable one (the host, or the way to it, is down).
- L{query}: ask the node at a client endpoint how it stands (one QUERY
  frame, one ANSWER frame). A node that answers is alive; a refused
  connection, or one closed before the node said hello, means no live
  process is there; a timeout, an unreachable host, or a close after the
  hello (a node that refused this one's key) proves nothing.
"""

from __future__ import annotations

import errno
import ipaddress
from typing import NamedTuple, Optional

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from iwayfailover import wire
from iwayfailover.heartbeat import HeartbeatFactory, IFrameHandler, RefusalLog

OPEN = "open"
REFUSED = "refused"
UNREACHABLE = "unreachable"
ANSWERED = "answered"
CLOSED = "closed"


class Reply(NamedTuple):
    """What a query got: the answer frame (if any), the outcome, and why, in words."""

    frame: Optional[wire.Frame]
    outcome: str
    why: str

    @property
    def gone(self) -> bool:
        """Proof that no node process is there: refused, or closed before a hello."""
        return self.outcome in (REFUSED, CLOSED)

log = Logger()


class _Hangup(Protocol):
    def connectionMade(self):
        self.transport.abortConnection()


class _HangupFactory(Factory):
    protocol = _Hangup
    noisy = False


def endpoint(reactor, host, port, timeout):
    # An address needs no name lookup (which would go through a thread pool
    # and eat into a short timeout); only names are resolved.
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return HostnameEndpoint(reactor, host, port, timeout=timeout)
    if address.version == 6:
        return TCP6ClientEndpoint(reactor, host, port, timeout=timeout)
    return TCP4ClientEndpoint(reactor, host, port, timeout=timeout)


def reach(reactor, host: str, port: int, timeout: float) -> defer.Deferred:
    """
    Try a TCP connection to C{host}:C{port} for at most C{timeout} seconds.

    @return: a Deferred firing with L{OPEN} (accepted, then closed at
        once), L{REFUSED} (the host answered that nothing listens there) or
        L{UNREACHABLE} (no answer in time, no route, name not found).
    """
    d = endpoint(reactor, host, port, timeout).connect(_HangupFactory())
    d.addTimeout(timeout, reactor)

    def refused(failure):
        return REFUSED if failure.check(error.ConnectionRefusedError) else UNREACHABLE

    return d.addCallbacks(lambda _: OPEN, refused)


def reach_any(reactor, addresses, timeout: float) -> defer.Deferred:
    """
    Try every C{(host, port)} at once. Fires with the first address whose
    host answered (accepted or refused a connection), or None if none did.
    """
    if not addresses:
        return defer.succeed(None)
    attempts = [reach(reactor, host, port, timeout) for host, port in addresses]
    d = defer.gatherResults(attempts)
    return d.addCallback(
        lambda outcomes: next((a for a, o in zip(addresses, outcomes) if o in (OPEN, REFUSED)), None)
    )


@implementer(IFrameHandler)
class _Query:
    def __init__(self, frame: wire.Frame):
        self._frame = frame
        self.answer = defer.Deferred()
        self.protocol = None

    def connection_made(self, protocol):
        self.protocol = protocol
        protocol.send(self._frame)

    def frame_received(self, protocol, frame):
        if frame.kind == wire.Kind.ANSWER and not self.answer.called:
            self.answer.callback(frame)
        protocol.transport.loseConnection()

    def connection_lost(self, protocol, reason):
        if self.answer.called:
            return
        if protocol.authenticated or protocol.refused:
            # A process said hello (or something this node refused): it was
            # alive when it closed, so the close proves nothing about its
            # death; most likely one side refused the other's key.
            why = "it said hello, then closed without answering (do both nodes hold the same key?)"
            if protocol.refused:
                why = f"the connection was refused: {protocol.refusal}"
            self.answer.errback(Inconclusive(why))
            return
        self.answer.errback(reason)


class Inconclusive(Exception):
    """The connection ended in a way that proves neither life nor death."""


def query(reactor, target, frame: wire.Frame, timeout: float, refusals: RefusalLog, keys) -> defer.Deferred:
    """
    Send C{frame} (a QUERY) to the node at C{target} (a client endpoint) and
    wait at most C{timeout} seconds for its answer, on a connection
    authenticated with C{keys} (an L{iwayfailover.auth.KeyRing}).

    @return: a Deferred firing with a L{Reply}; it never fails.
    """
    handler = _Query(frame)
    factory = HeartbeatFactory(handler, refusals, lambda: keys, reactor, initiating=True, hello_timeout=None)
    connected = target.connect(factory)
    opened = []  # the connection, once made: closed on a timeout, hello or no hello

    def made(protocol):
        opened.append(protocol)
        return protocol

    connected.addCallbacks(made, lambda failure: None if handler.answer.called else handler.answer.errback(failure))
    d = handler.answer
    d.addTimeout(timeout, reactor, onTimeoutCancel=lambda result, t: _timed_out(connected, opened, t))

    def answered(frame):
        return Reply(frame, ANSWERED, f"{frame.name} answered as {frame.role.label}")

    def failed(failure):
        if failure.check(error.ConnectionRefusedError):
            return Reply(None, REFUSED, "connection refused")
        if failure.check(error.ConnectError) and getattr(failure.value, "osError", None) == errno.ECONNRESET:
            # Reset while connecting: the host's stack answered for a port
            # whose process was dying (a kill -9 caught mid-accept): refused.
            return Reply(None, REFUSED, "connection reset while connecting")
        if failure.check(defer.TimeoutError):
            return Reply(None, UNREACHABLE, f"no answer within {timeout:g}s")
        if failure.check(error.ConnectionDone, error.ConnectionLost):
            return Reply(None, CLOSED, "connection closed before a hello or an answer")
        return Reply(None, UNREACHABLE, failure.getErrorMessage())

    return d.addCallbacks(answered, failed)


def _timed_out(connected, opened, timeout):
    connected.cancel()  # still connecting: give up
    for protocol in opened:
        # Connected, but no hello or no answer: close the connection the query opened.
        protocol.transport.abortConnection()
    raise defer.TimeoutError(timeout)
