"""
Short, bounded questions to the network, each answered by a Deferred that
never fails:

- L{reach}: can a TCP connection be made to host:port? The answer tells a
  refused connection (the host is up, nothing listens: a dead process) from
  a silent or unreachable one (the host, or the way to it, is down).
- L{query}: ask the node at a client endpoint how it stands (one QUERY
  frame, one ANSWER frame).
"""

from __future__ import annotations

from twisted.internet import defer, error
from twisted.internet.endpoints import HostnameEndpoint, clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from zope.interface import implementer

from iwayfailover import wire
from iwayfailover.heartbeat import HeartbeatFactory, IFrameHandler, RefusalLog

OPEN = "open"
REFUSED = "refused"
UNREACHABLE = "unreachable"

log = Logger()


class _Hangup(Protocol):
    def connectionMade(self):
        self.transport.abortConnection()


def reach(reactor, host: str, port: int, timeout: float) -> defer.Deferred:
    """
    Try a TCP connection to C{host}:C{port} for at most C{timeout} seconds.

    @return: a Deferred firing with L{OPEN} (accepted, then closed at
        once), L{REFUSED} (the host answered that nothing listens there) or
        L{UNREACHABLE} (no answer in time, no route, name not found).
    """
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    d = endpoint.connect(Factory.forProtocol(_Hangup))
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

    def connection_made(self, protocol):
        protocol.send(self._frame)

    def frame_received(self, protocol, frame):
        if frame.kind == wire.Kind.ANSWER and not self.answer.called:
            self.answer.callback(frame)
        protocol.transport.loseConnection()

    def connection_lost(self, protocol, reason):
        if not self.answer.called:
            self.answer.errback(reason)


def query(reactor, endpoint_string: str, frame: wire.Frame, timeout: float, refusals: RefusalLog) -> defer.Deferred:
    """
    Send C{frame} (a QUERY) to the node at C{endpoint_string} and wait at
    most C{timeout} seconds for its answer.

    @return: a Deferred firing with C{(answer_frame, None)}, or
        C{(None, why)} when there was no answer.
    """
    handler = _Query(frame)
    connected = clientFromString(reactor, endpoint_string).connect(HeartbeatFactory(handler, refusals))
    connected.addErrback(lambda failure: handler.answer.called or handler.answer.errback(failure))
    d = handler.answer
    d.addTimeout(timeout, reactor, onTimeoutCancel=lambda result, t: _timed_out(connected, t))

    def answered(frame):
        return (frame, None)

    def failed(failure):
        if failure.check(error.ConnectionRefusedError):
            return (None, "connection refused")
        if failure.check(defer.TimeoutError):
            return (None, f"no answer within {timeout:g}s")
        return (None, failure.getErrorMessage())

    return d.addCallbacks(answered, failed)


def _timed_out(connected, timeout):
    connected.cancel()
    if connected.called:
        # Connected, but no answer: close the connection the query opened.
        connected.addCallback(lambda protocol: protocol.transport.abortConnection())
    raise defer.TimeoutError(timeout)
