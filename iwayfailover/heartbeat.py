"""
The heartbeat Protocol/Factory pair: moves frames, decides nothing.

One protocol serves both directions: a node's heartbeat port accepts live
nodes' heartbeats and answers them, and a live node's connection to its
backup location sends heartbeats and reads the answers. What a frame means
is the business of the L{IFrameHandler} the factory is given.
"""

from __future__ import annotations

import collections
import os
from typing import Callable, Optional

from OpenSSL import SSL
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import Interface

from iwayfailover import auth, tls, wire

HELLO_TIMEOUT = 5.0
"""The longest a dialled heartbeat port may take to say hello."""


class IFrameHandler(Interface):
    def connection_made(protocol):
        """A heartbeat connection is up."""

    def frame_received(protocol, frame):
        """A valid L{wire.Frame} arrived on C{protocol}."""

    def connection_lost(protocol, reason):
        """A heartbeat connection is gone."""


class RefusalLog:
    """
    Logs refused frames at most once per peer host per C{every} seconds, with
    the number of refusals left unlogged in between: a hostile or confused
    sender must not be able to flood the log.
    """

    log = Logger()

    def __init__(self, clock, every: float = 10.0):
        self._clock = clock
        self._every = every
        self._last = {}
        self._quiet = {}

    def report(self, peer: str, why: str) -> None:
        now = self._clock.seconds()
        last = self._last.get(peer)
        if last is not None and now - last < self._every:
            self._quiet[peer] = self._quiet.get(peer, 0) + 1
            return
        if len(self._last) > 1024:  # bounded memory whatever the number of senders
            self._last.clear()
            self._quiet.clear()
        self._last[peer] = now
        unlogged = self._quiet.pop(peer, 0)
        self.log.warn(
            "refused heartbeat connection from {peer}: {why}{more}",
            peer=peer, why=why, more=f" ({unlogged} more refused since the last report)" if unlogged else "",
        )


class Gate:
    """
    Keeps a heartbeat port from being starved. A connection counts as
    unproven until it has delivered a valid frame from a configured server;
    each unproven one must do so within C{deadline} seconds, and at most
    C{cap} may be open at once: a new one makes room by dropping the oldest,
    so a real peer's new connection (which sends its first frame at once)
    always gets in. Proven connections are not counted.
    """

    def __init__(self, clock, deadline: float = 5.0, cap: int = 32):
        self._clock = clock
        self.deadline = deadline
        self.cap = cap
        self._unproven = collections.OrderedDict()

    def __len__(self):
        return len(self._unproven)

    def admit(self, protocol) -> None:
        while len(self._unproven) >= self.cap:
            oldest, call = self._unproven.popitem(last=False)
            if call.active():
                call.cancel()
            oldest.refuse(f"more than {self.cap} connections have sent no valid frame; dropping the oldest")
        self._unproven[protocol] = self._clock.callLater(self.deadline, self._expire, protocol)

    def proven(self, protocol) -> None:
        call = self._unproven.pop(protocol, None)
        if call is not None and call.active():
            call.cancel()

    gone = proven

    def _expire(self, protocol):
        self._unproven.pop(protocol, None)
        protocol.refuse(f"no valid frame within {self.deadline:g}s")


class HeartbeatProtocol(Int32StringReceiver):
    """
    Length-prefixed heartbeat frames on an authenticated connection (see
    L{iwayfailover.auth}): a hello each way, then sealed frames. The handler
    hears of the connection only once the hellos are exchanged, and of each
    frame only once its MAC and number are checked. Anything wrong drops the
    connection, with the reason logged (rate limited).
    """

    MAX_LENGTH = wire.MAX_FRAME + auth.OVERHEAD
    refused = False
    refusal = None
    session = None
    _hello_timer = None

    @property
    def peer(self) -> str:
        address = self.transport.getPeer()
        return getattr(address, "host", None) or str(address)

    @property
    def authenticated(self) -> bool:
        return self.session is not None

    def connectionMade(self):
        factory = self.factory
        if factory.gate is not None:
            factory.gate.admit(self)
        self._ring = factory.keys()
        self._nonce = factory.nonce()
        self.sendString(auth.hello(self._nonce))
        if factory.hello_timeout is not None:
            self._hello_timer = factory.clock.callLater(
                factory.hello_timeout, self.refuse, f"no hello within {factory.hello_timeout:g}s"
            )

    def stringReceived(self, data):
        if self.refused:
            return
        if self.session is None:
            self._hello_received(data)
            return
        try:
            frame = wire.decode(self.session.open(data))
        except (auth.AuthError, wire.FrameError) as e:
            self.factory.rejected += 1
            self.refuse(str(e))
            return
        self._call("frame_received", frame)
        if not self.refused and self.factory.gate is not None:
            self.factory.gate.proven(self)  # the handler accepted it

    def _hello_received(self, data):
        try:
            peer_nonce = auth.parse_hello(data)
        except auth.AuthError as e:
            self.factory.rejected += 1
            self.refuse(str(e))
            return
        self._cancel_hello_timer()
        self.session = auth.Session(self._ring, self.factory.initiating, self._nonce, peer_nonce)
        self._call("connection_made")

    def _cancel_hello_timer(self):
        if self._hello_timer is not None and self._hello_timer.active():
            self._hello_timer.cancel()
        self._hello_timer = None

    def lengthLimitExceeded(self, length):
        self.refuse(f"frame of {length} bytes is over the limit of {self.MAX_LENGTH}")

    def refuse(self, why: str) -> None:
        """Drop this connection, logging why (rate limited per peer)."""
        if self.refused:
            return
        self.refused = True
        self.refusal = why
        self._cancel_hello_timer()
        self.factory.refusals.report(self.peer, why)
        self.transport.abortConnection()

    def send(self, frame: wire.Frame) -> None:
        if not self.refused and self.transport is not None and self.session is not None:
            self.sendString(self.session.seal(wire.encode(frame)))

    def connectionLost(self, reason):
        self._cancel_hello_timer()
        if self.factory.gate is not None:
            self.factory.gate.gone(self)
        if self._unprocessed and not self.refused:
            self.refused = True
            self.factory.refusals.report(self.peer, f"connection closed inside a frame ({len(self._unprocessed)} bytes unread)")
        elif self.session is None and not self.refused and _tls_failure(reason):
            # A certificate refused on either side: say so, or a link that
            # never comes up would go unexplained.
            self.refused = True
            self.refusal = tls.describe_failure(reason)
            self.factory.rejected += 1
            self.factory.refusals.report(self.peer, self.refusal)
        self._call("connection_lost", reason)

    def _call(self, event, *args):
        # The handler's errors end at this connection; none reaches the reactor.
        try:
            getattr(self.factory.handler, event)(self, *args)
        except Exception:
            self.factory.log.failure("heartbeat handler failed on {event} from {peer}", event=event, peer=self.peer)
            if event != "connection_lost":
                self.refuse(f"internal error while handling {event}")


def _tls_failure(reason) -> bool:
    return reason is not None and (
        reason.check(SSL.Error) is not None or type(reason.value).__name__ in ("VerificationError", "CertificateError")
    )


class HeartbeatFactory(Factory):
    protocol = HeartbeatProtocol
    noisy = False  # a live node redials its backup often; no start/stop lines for each try
    log = Logger()

    rejected = 0
    """Frames and hellos refused for a bad MAC, number or format."""

    def __init__(self, handler: IFrameHandler, refusals: RefusalLog, keys: Callable[[], auth.KeyRing],
                 clock, initiating: bool, gate: Gate = None, hello_timeout: Optional[float] = HELLO_TIMEOUT,
                 nonce: Callable[[], bytes] = lambda: os.urandom(auth.NONCE_SIZE)):
        """
        @param keys: the node's current keys (they change when the key file does).
        @param initiating: does this factory dial out (the client side of the
            sessions) rather than accept?
        @param hello_timeout: drop a connection whose peer sends no hello in
            this many seconds (None: no limit, e.g. where a L{Gate} limits it).
        """
        self.handler = handler
        self.refusals = refusals
        self.keys = keys
        self.clock = clock
        self.initiating = initiating
        self.gate = gate
        self.hello_timeout = hello_timeout
        self.nonce = nonce
