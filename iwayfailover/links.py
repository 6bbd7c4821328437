"""
The heartbeat links of a node, as the decision core sees them: the live
side's link to its backup location (L{HeartbeatSender}, dialled again and
again by a L{Redialler} while the backup is away), the sessions peers open
to this node's heartbeat port (L{Session}), and how a link ended
(L{link_end}).

Links move frames and report what happened; they decide nothing.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Optional

from twisted.application.internet import backoffPolicy
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

from iwayfailover import tls, wire
from iwayfailover.gaps import GapRecord
from iwayfailover.pulse import PulseKeys
from iwayfailover.core import events as ev
from iwayfailover.heartbeat import HELLO_TIMEOUT, HeartbeatFactory, IFrameHandler

UNANSWERED_LIMIT = 5
"""Heartbeats a live node sends without an answer before it drops the
connection to its backup and dials again (the backup may be hung)."""

CONNECT_TIMEOUT_FLOOR = 0.25
"""The shortest time one dial of the backup location is given (see
L{connect_timeout}): a very short heartbeat interval must still leave a
connection time for a round trip."""


FLAP_REPORT_EVERY = 10.0
"""Seconds between the lines that count links the backup hangs up on without answering."""


def link_end(reason) -> str:
    """How a connection ended, for the core: closed by the far end, or reset (or aborted) on the way."""
    return ev.CLOSED if reason.check(error.ConnectionDone) else ev.RESET


@dataclass
class Session:
    """One connection a peer opened to this node's heartbeat port, and what it has shown."""

    protocol: object
    peer: Optional[str] = None
    from_live: bool = False
    """Its last heartbeat came from a live node."""
    stood_down: bool = False
    """The peer said on it that it stopped serving."""
    replaced: bool = False
    """This node closed it (a newer connection from the peer, withdrawn keys): no sign of death."""
    pulsing: bool = False
    """Its pulse keys are in the node's book (it carried a heartbeat)."""


def connect_timeout(interval: float) -> float:
    """
    How long one dial of the backup location may take: one heartbeat
    interval, but never less than L{CONNECT_TIMEOUT_FLOOR}. Dialled with
    the default timeout (30 s), a host silent during a partition would hold
    a dial, and so the link, for half a minute after the partition heals.
    """
    return max(interval, CONNECT_TIMEOUT_FLOOR)


def hello_timeout(interval: float) -> float:
    """
    How long a dialled backup location may take to say hello (a TLS
    handshake included): as long as L{UNANSWERED_LIMIT} heartbeats, after
    which an answered link is given up too, within L{connect_timeout} and
    L{HELLO_TIMEOUT}.
    """
    return min(HELLO_TIMEOUT, max(UNANSWERED_LIMIT * interval, connect_timeout(interval)))


class _Watched(WrappingFactory):
    """Tells its L{Redialler} when a connection it made ends."""

    noisy = False  # no start and stop lines at each dial

    def __init__(self, factory, lost):
        super().__init__(factory)
        self._lost = lost

    def unregisterProtocol(self, protocol):
        super().unregisterProtocol(protocol)
        self._lost(protocol)


class Redialler:
    """
    Keeps one connection to an endpoint: dials it, and dials again after a
    failed dial or a lost connection, until stopped.

    Every dial is abandoned after C{timeout} seconds, whatever the endpoint
    string says; the next starts C{delay(failures)} seconds after a failure
    (C{failures} counting the failed dials in a row, 1 after a lost
    connection), as with the retry policy of a ClientService.

    Failed dials are logged sparingly: while the backup is away the live
    node dials it every heartbeat interval, and a line per dial (ten a
    second at 0.1 s) would drown the log. The first failure of a run is
    logged, then at most one every C{every} seconds, with the number of
    failures left unlogged in between.
    """

    log = Logger()

    def __init__(self, clock, endpoint, factory, timeout: float, delay, location: str, every: float = 60.0):
        """
        @param clock: an L{IReactorTime} for the timeouts and delays.
        @param endpoint: the L{IStreamClientEndpoint} to dial.
        @param factory: the protocol factory of the connections.
        @param location: the endpoint in words, for the log.
        """
        self._clock = clock
        self._endpoint = endpoint
        self._factory = _Watched(factory, self._lost)
        self.timeout = timeout
        self._delay = delay
        self._location = location
        self._every = every
        self._running = False
        self._dialling: Optional[defer.Deferred] = None
        self._next_dial = None
        self._connection = None
        self._closed = []  # Deferreds of stop, fired when the connection is gone
        self.failures = 0
        self.dials = 0
        self._logged_at: Optional[float] = None
        self._unlogged = 0

    @property
    def running(self) -> bool:
        return self._running

    def start(self) -> None:
        """Dial now (and again until stopped)."""
        if not self._running:
            self._running = True
            self._dial()

    def stop(self) -> defer.Deferred:
        """Dial no more and close the connection: fires once it is closed."""
        self._running = False
        if self._next_dial is not None and self._next_dial.active():
            self._next_dial.cancel()
        self._next_dial = None
        if self._dialling is not None:
            self._dialling.cancel()
        if self._connection is None:
            return defer.succeed(None)
        closed = defer.Deferred()
        self._closed.append(closed)
        self._connection.loseConnection()
        return closed

    def _dial(self) -> None:
        self._next_dial = None
        self.dials += 1
        try:
            dialling = self._endpoint.connect(self._factory)
        except Exception:
            dialling = defer.fail()
        self._dialling = dialling
        dialling.addTimeout(self.timeout, self._clock, onTimeoutCancel=self._timed_out)
        dialling.addCallbacks(self._connected, self._failed)
        dialling.addErrback(lambda f: self.log.failure("dialling {location} failed", f, location=self._location))

    @staticmethod
    def _timed_out(result, timeout):
        raise defer.TimeoutError(f"no connection within {timeout:g}s")

    def _connected(self, protocol) -> None:
        self._dialling = None
        self.failures = 0
        self._connection = protocol
        if not self._running:  # connected as it was being stopped
            protocol.loseConnection()

    def _failed(self, failure) -> None:
        self._dialling = None
        if not self._running:
            return
        self.failures += 1
        self._report(failure)
        self._next_dial = self._clock.callLater(self._delay(self.failures), self._dial)

    def _lost(self, protocol) -> None:
        if protocol is not self._connection:
            return
        self._connection = None
        closed, self._closed = self._closed, []
        for d in closed:
            d.callback(None)
        if self._running:
            self._next_dial = self._clock.callLater(self._delay(1), self._dial)

    def _report(self, failure) -> None:
        now = self._clock.seconds()
        if self.failures > 1 and self._logged_at is not None and now - self._logged_at < self._every:
            self._unlogged += 1
            return
        self._logged_at = now
        unlogged, self._unlogged = self._unlogged, 0
        self.log.info(
            "cannot connect to {location}: {why}; dialling again{unlogged}",
            location=self._location, why=failure.getErrorMessage(),
            unlogged=f" ({unlogged} more failed dials since the last report)" if unlogged else "",
        )


@implementer(IFrameHandler)
class HeartbeatSender:
    """
    The live side: keeps a connection to the backup location (redialled with
    a short backoff while the backup is away) and sends on it the heartbeats
    the core asks for. It tells the node when the link comes up or goes
    down and passes the backup's answers on.
    """

    log = Logger()

    def __init__(self, node):
        self._node = node
        self._dialler: Optional[Redialler] = None
        self._protocol = None
        self._unanswered = 0
        self._answered = False  # on the current link
        self._link_keys = None  # the current link's pulse keys
        self._flapping = False  # links hung up on without an answer, reported
        self._flap_reported = 0.0
        self._dropped = 0
        self.sent = 0
        self.last_seq = 0  # of the latest heartbeat the core asked for (pulses repeat it)
        self.gaps = GapRecord(node.now, node.wall)  # between the heartbeats sent
        self._factory: Optional[HeartbeatFactory] = None
        self._rejected_before = 0  # by the factories of earlier starts

    @property
    def rejected(self) -> int:
        """Connections to the backup refused on this side: its certificate, its hello, its frames."""
        return self._rejected_before + (self._factory.rejected if self._factory is not None else 0)

    @property
    def running(self) -> bool:
        return self._dialler is not None

    @property
    def connected(self) -> bool:
        return self._protocol is not None

    def start(self) -> None:
        """Dial the backup location (again, with the settings now in force)."""
        self.stop()
        self.gaps.forget()  # a new tenure (or new settings): its first heartbeat ends no gap
        node = self._node
        interval = node.config.failover.heartbeat_interval
        # Every dial, and the hello that proves the link, bounded by the
        # interval: after a silent partition heals, the nodes find each other
        # within about one interval, not after a connect timeout of 30 s.
        timeout = connect_timeout(interval)
        endpoint = tls.connector(node.reactor, node.settings.backup_endpoint, timeout=timeout)
        factory = HeartbeatFactory(
            self, node.refusals, lambda: node.keys, node.reactor, initiating=True, own_nonces=node.own_nonces,
            hello_timeout=hello_timeout(interval),
        )
        self._rejected_before = self.rejected
        self._factory = factory
        # The backup must hear from us again well within its threshold after
        # it comes back, so the redial delay never grows past one interval.
        policy = backoffPolicy(
            initialDelay=interval / 10, maxDelay=interval, factor=2, jitter=lambda: random.random() * interval / 10
        )
        self._dialler = Redialler(
            node.reactor, endpoint, factory, timeout, policy, f"backup location {node.settings.backup_location}",
        )
        self._dialler.start()
        self.pulse()

    def pulse(self) -> None:
        """Pulse beside the link while the node's settings allow pulses; stop otherwise."""
        node = self._node
        if node.pulses_on():
            node.pulser.start(node.pulse_period)
            node.pulses_started()
        else:
            node.pulser.stop()

    def stop(self) -> defer.Deferred:
        """Close the link and dial no more (and pulse no more); fires once it is closed."""
        self._node.pulser.stop()
        dialler, self._dialler = self._dialler, None
        if dialler is None:
            return defer.succeed(None)
        return dialler.stop()

    def beat(self, seq: int) -> None:
        """Send heartbeat number C{seq}, if connected. Never raises."""
        self.last_seq = seq
        try:
            protocol = self._protocol
            if protocol is None:
                return
            if self._unanswered >= UNANSWERED_LIMIT:
                self.log.warn(
                    "backup {peer} has not answered {count} heartbeats; dialling it again",
                    peer=self._node.peer.name, count=self._unanswered,
                )
                self._unanswered = 0
                protocol.transport.abortConnection()
                return
            self._unanswered += 1
            protocol.send(self._node.frame(wire.Kind.HEARTBEAT, seq))
            self.sent += 1
            self.gaps.beat()
        except Exception:
            self.log.failure("sending a heartbeat failed")

    def _unanswered_link_ended(self, reason) -> None:
        """
        The backup closed a link on which it answered none of this node's
        heartbeats: it refuses them (most often another heartbeat key). Said
        once, with the key ids to compare, then counted in a line every
        L{FLAP_REPORT_EVERY} seconds while it goes on (it redials several
        times a second), until a heartbeat is answered again.
        """
        node = self._node
        peer = node.peer.name or "the backup"
        now = node.now()
        self._dropped += 1
        if self._flapping and now - self._flap_reported < FLAP_REPORT_EVERY:
            return
        ids = ", ".join(node.keys.key_ids) or "none: insecure = true"
        self.log.warn(
            "{peer} at {location} hangs up on this node's heartbeats without answering any ({count} links in a row;"
            " {how}): it refuses them. Does it hold the same heartbeat key? This node's key ids: {ids}; compare"
            " `iwsrv status` on both, and look for 'bad MAC' in {peer}'s log. Without answers this node cannot"
            " tell whether {peer} is live too.",
            peer=peer, location=node.settings.backup_location, count=self._dropped, ids=ids,
            how=f"the last one {'closed' if link_end(reason) == ev.CLOSED else 'reset'}",
        )
        self._flapping = True
        self._flap_reported = now

    def _end_flapping(self) -> None:
        if self._flapping:
            self.log.info("{peer} answers this node's heartbeats again, after {count} links it hung up on",
                          peer=self._node.peer.name or "the backup", count=self._dropped)
        self._flapping = False
        self._dropped = 0

    def stand_down(self, switchover: bool) -> bool:
        """Tell the backup this node has stopped serving; False if it is not connected."""
        if self._protocol is None:
            return False
        flags = wire.FLAG_SWITCHOVER if switchover else 0
        self._protocol.send(self._node.frame(wire.Kind.STANDING_DOWN, 0, flags))
        return True

    # IFrameHandler, for the connection to the backup location

    def connection_made(self, protocol):
        self._protocol = protocol
        self._unanswered = 0
        self._answered = False
        peer = protocol.transport.getPeer()
        self._link_keys = None
        if protocol.session is not None and getattr(peer, "port", None) is not None:
            # Pulses go where this connection reached the backup (an address, no lookup),
            # sealed with its keys once the backup answers on it; they keep them after it
            # drops, as the backup does.
            self._link_keys = PulseKeys.from_session(protocol.session)
            self._node.pulser.session(self._link_keys, (peer.host, peer.port))
        self._node.peer.connections.add(protocol)
        if not self._flapping:
            self.log.info("heartbeat link to backup location {location} is up", location=self._node.settings.backup_location)
        self._node.out_link_up()

    def frame_received(self, protocol, frame):
        if frame.kind != wire.Kind.ANSWER:
            protocol.refuse(f"expected an answer, got a {frame.kind.name.lower()} frame")
            return
        if not self._node.known_peer(protocol, frame):
            return
        self._unanswered = 0
        if not self._answered:
            self._answered = True
            self._end_flapping()
            if self._link_keys is not None:
                self._node.pulser.confirm(self._link_keys)  # the backup holds this link's pulse keys now
        self._node.heard(protocol, frame, ev.OUT)

    def connection_lost(self, protocol, reason):
        self._node.peer.connections.discard(protocol)
        if self._protocol is protocol:
            self._protocol = None
            # A send gap is this node's own lateness between two heartbeats on a link;
            # the time without a link is not one (the backup's side counts it, as heard).
            self.gaps.forget()
            how = link_end(reason)
            if self.running and not self._answered and self._unanswered:
                # Heartbeats sent, none answered, and the backup hung up: it refuses them.
                self._unanswered_link_ended(reason)
            elif self.running:
                # What the node makes of it, not the transport's words ("Connection was
                # closed cleanly." after a kill -9 of the backup).
                peer = self._node.peer.name or "the backup"
                self.log.warn(
                    "heartbeat link to backup {peer} at {location} ended ({how}); this node stays {role}"
                    " and dials it again",
                    peer=peer, location=self._node.settings.backup_location, role=self._node.core.role,
                    how=f"closed by {peer}: it stopped, or its process died" if how == ev.CLOSED
                    else f"reset on the way: {reason.getErrorMessage()}",
                )
            self._node.out_link_lost(how)


@implementer(IFrameHandler)
class InboundSessions:
    """
    The connections peers open to this node's heartbeat port: one session
    per peer (a newer connection replaces the old one), what each has shown
    (from a live node, stood down), and how each ended, told to the node.

    @ivar received: heartbeats heard.
    @ivar heard: the gaps between the live heartbeats heard as a backup.
    """

    log = Logger()

    def __init__(self, node):
        self._node = node
        self.factory = None  # the heartbeat port's factory, set by the node
        self._sessions = {}  # protocol -> Session, for every connection
        self._current = {}  # peer name -> its newest Session
        self.received = 0
        self.heard = GapRecord(node.now, node.wall)

    def connection_made(self, protocol):
        self._sessions[protocol] = Session(protocol)

    def live_signal(self, frame) -> None:
        """A heartbeat from a live node that came as a pulse: counted in the gaps heard, as one on a connection is."""
        if frame.role == wire.Role.LIVE and self._node.core.role == ev.BACKUP:
            self.heard.beat()

    def frame_received(self, protocol, frame):
        node = self._node
        if not node.known_peer(protocol, frame):
            return
        session = self._sessions.setdefault(protocol, Session(protocol))
        if frame.kind == wire.Kind.HEARTBEAT:
            self.received += 1
            old = self._current.get(frame.name)
            if old is not None and old is not session:
                old.replaced = True
                old.protocol.transport.abortConnection()
                self.log.info("a newer heartbeat connection from {peer} replaces the old one", peer=frame.name)
            self._current[frame.name] = session
            if not session.pulsing and protocol.session is not None:
                # A heartbeat link (not a probe's connection): pulses of its session are taken from now on.
                session.pulsing = True
                node.pulses_in.add(PulseKeys.from_session(protocol.session))
            node.peer.connections.add(protocol)
            session.peer = frame.name
            session.from_live = frame.role == wire.Role.LIVE
            if session.from_live and node.core.role == ev.BACKUP:
                self.heard.beat()
        elif frame.kind == wire.Kind.STANDING_DOWN:
            session.stood_down = True
        elif frame.kind != wire.Kind.QUERY:
            protocol.refuse(f"unexpected {frame.kind.name.lower()} frame on the heartbeat port")
            return
        node.heard(protocol, frame, ev.IN)

    def connection_lost(self, protocol, reason):
        session = self._sessions.pop(protocol, None)
        node = self._node
        node.peer.connections.discard(protocol)
        if session is None or session.peer is None:
            return
        if self._current.get(session.peer) is session:
            del self._current[session.peer]
        how = ev.LOCAL if session.replaced else link_end(reason)
        if session.from_live and not session.stood_down and how != ev.LOCAL:
            node.peer.lost = True
        node.in_link_lost(how, session.from_live, session.stood_down)

    @property
    def max_gap(self) -> float:
        """The largest gap between two live heartbeats heard as a backup."""
        return self.heard.largest

    def gaps_from_now(self) -> None:
        """The node became a backup: measure gaps between live heartbeats from the next one on."""
        self.heard.forget()

    def end_all(self) -> None:
        """Close every connection to the heartbeat port, proven or not, as no sign of death."""
        for protocol in list(self.factory.open if self.factory is not None else ()):
            session = self._sessions.get(protocol)
            if session is not None:
                session.replaced = True  # not a sign of death: no crash probe
            protocol.transport.abortConnection()
