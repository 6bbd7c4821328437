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
import socket
from typing import Callable, Optional

from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.protocols.basic import Int32StringReceiver
from zope.interface import Interface

from iwayfailover import auth, steady, tls, wire

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

    def __init__(self, clock, every: float = 10.0, budget: int = 20):
        """
        @param budget: at most this many lines every C{every} seconds from
            all hosts together (many addresses, e.g. from an IPv6 range, must
            not flood the log either); the rest are counted in the next line.
        """
        self._clock = clock
        self._every = every
        self._budget = budget
        self._last = {}
        self._quiet = {}
        self._window = None
        self._lines = 0
        self._held_back = 0

    def report(self, peer: str, why: str) -> None:
        now = self._clock.seconds()
        last = self._last.get(peer)
        if last is not None and now - last < self._every:
            self._quiet[peer] = self._quiet.get(peer, 0) + 1
            return
        if self._window is None or now - self._window >= self._every:
            self._window, self._lines = now, 0
        if self._lines >= self._budget:
            self._held_back += 1
            return
        self._lines += 1
        if len(self._last) > 1024:  # bounded memory whatever the number of senders
            self._last.clear()
            self._quiet.clear()
        self._last[peer] = now
        unlogged = self._quiet.pop(peer, 0)
        others, self._held_back = self._held_back, 0
        more = f" ({unlogged} more refused since the last report)" if unlogged else ""
        if others:
            more += f" ({others} refusals from other hosts not logged: too many at once)"
        self.log.warn("refused heartbeat connection from {peer}: {why}{more}", peer=peer, why=why, more=more)


class Gate:
    """
    Keeps a heartbeat port from being starved. A connection counts as
    unproven until it has delivered a valid frame from a configured server;
    each unproven one must do so within C{deadline} seconds. At most
    C{per_host} may be open from one address (unless it is one of the
    C{peers}, the configured servers' addresses), and at most C{cap} in
    all: a new one makes room by dropping the oldest connection of the
    address that holds the most, so one noisy address, or many, cannot push
    out a peer's new connection. Proven connections are not counted.
    """

    def __init__(self, clock, deadline: float = 5.0, cap: int = 32, per_host: int = 4,
                 peers: Callable[[], frozenset] = frozenset):
        self._clock = clock
        self.deadline = deadline
        self.cap = cap
        self.per_host = per_host
        self.peers = peers
        self._unproven = collections.OrderedDict()  # protocol -> (host, deadline call)

    def __len__(self):
        return len(self._unproven)

    def admit(self, protocol) -> None:
        host, peers = protocol.peer, self.peers()
        counts = collections.Counter(h for h, _ in self._unproven.values())
        if host not in peers and counts[host] >= self.per_host:
            protocol.refuse(f"more than {self.per_host} connections from {host} have sent no valid frame")
            return
        while len(self._unproven) >= self.cap:
            # The oldest of the busiest address; the configured servers' last.
            busiest = max(counts, key=lambda h: (h not in peers, counts[h]))
            victim = next(p for p, (h, _) in self._unproven.items() if h == busiest)
            self._drop(victim)
            counts[busiest] -= 1
            if not counts[busiest]:
                del counts[busiest]
            victim.refuse(f"more than {self.cap} connections have sent no valid frame; dropping the oldest from {busiest}")
        self._unproven[protocol] = (host, self._clock.callLater(self.deadline, self._expire, protocol))

    def _drop(self, protocol) -> None:
        entry = self._unproven.pop(protocol, None)
        if entry is not None and entry[1].active():
            entry[1].cancel()

    def proven(self, protocol) -> None:
        self._drop(protocol)

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
        factory.open.add(self)
        handle = getattr(self.transport, "getHandle", None)
        if handle is not None and isinstance(handle(), socket.socket):
            steady.mark_heartbeat_socket(handle())  # network control traffic: first in the queues
        self._ring = factory.keys()
        self._nonce = factory.nonce()
        factory.own_nonces.add(self._nonce)
        if factory.gate is not None:
            factory.gate.admit(self)
            if self.refused:
                return
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
        ring = self.factory.keys()
        if ring is not self._ring:
            if withdrawn(self._ring, ring):
                self.refuse("its session was made with a heartbeat key that has since been withdrawn")
                return
            self._ring = ring  # only keys added: the session stands
        try:
            frame = wire.decode(self.session.open(data))
        except (auth.AuthError, wire.FrameError) as e:
            self.refuse(str(e))
            return
        self._call("frame_received", frame)
        if not self.refused and self.factory.gate is not None:
            self.factory.gate.proven(self)  # the handler accepted it

    def _hello_received(self, data):
        try:
            peer_nonce = auth.parse_hello(data)
        except auth.AuthError as e:
            self.refuse(str(e))
            return
        if peer_nonce in self.factory.own_nonces:
            # A man in the middle joining this node's own connections to
            # each other, so that its frames come back to it as a peer's.
            self.refuse("its hello repeats a nonce this node sent: a reflected connection")
            return
        self._cancel_hello_timer()
        self._ring = self.factory.keys()  # the keys held now, not at connect
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
        self.factory.rejected += 1
        self._cancel_hello_timer()
        self.factory.refusals.report(self.peer, why)
        self.transport.abortConnection()

    def send(self, frame: wire.Frame) -> None:
        if not self.refused and self.transport is not None and self.session is not None:
            self.sendString(self.session.seal(wire.encode(frame)))

    def connectionLost(self, reason):
        self._cancel_hello_timer()
        self.factory.open.discard(self)
        self.factory.own_nonces.discard(getattr(self, "_nonce", None))
        if self.factory.gate is not None:
            self.factory.gate.gone(self)
        if self._unprocessed and not self.refused:
            self._note_refusal(f"connection closed inside a frame ({len(self._unprocessed)} bytes unread)")
        elif self.session is None and not self.refused and tls.is_failure(reason):
            # A certificate refused on either side: say so, or a link that
            # never comes up would go unexplained.
            self._note_refusal(tls.describe_failure(reason))
        self._call("connection_lost", reason)

    def _note_refusal(self, why: str) -> None:
        """A refusal found as the connection ended: logged and counted like the others."""
        self.refused = True
        self.refusal = why
        self.factory.rejected += 1
        self.factory.refusals.report(self.peer, why)

    def _call(self, event, *args):
        # The handler's errors end at this connection; none reaches the reactor.
        try:
            getattr(self.factory.handler, event)(self, *args)
        except Exception:
            self.factory.log.failure("heartbeat handler failed on {event} from {peer}", event=event, peer=self.peer)
            if event != "connection_lost":
                self.refuse(f"internal error while handling {event}")


def withdrawn(old: auth.KeyRing, new: auth.KeyRing) -> bool:
    """Does C{new} lack a key of C{old} (or change whether frames are signed)?"""
    return old.insecure != new.insecure or any(key not in new.keys for key in old.keys)


class HeartbeatFactory(Factory):
    protocol = HeartbeatProtocol
    noisy = False  # a live node redials its backup often; no start/stop lines for each try
    log = Logger()

    rejected = 0
    """Connections refused: a bad hello, MAC, number or frame, a foreign name, a deadline, a certificate."""

    def __init__(self, handler: IFrameHandler, refusals: RefusalLog, keys: Callable[[], auth.KeyRing],
                 clock, initiating: bool, gate: Gate = None, hello_timeout: Optional[float] = HELLO_TIMEOUT,
                 nonce: Callable[[], bytes] = lambda: os.urandom(auth.NONCE_SIZE), own_nonces: Optional[set] = None):
        """
        @param keys: the node's current keys (they change when the key file does).
        @param initiating: does this factory dial out (the client side of the
            sessions) rather than accept?
        @param hello_timeout: drop a connection whose peer sends no hello in
            this many seconds (None: no limit, e.g. where a L{Gate} limits it).
        @param own_nonces: the nonces of the node's open connections, shared by
            its factories: a hello that repeats one is a reflection.
        """
        self.handler = handler
        self.refusals = refusals
        self.keys = keys
        self.clock = clock
        self.initiating = initiating
        self.gate = gate
        self.hello_timeout = hello_timeout
        self.nonce = nonce
        self.open = set()  # every connection of this factory, authenticated or not
        self.own_nonces = own_nonces if own_nonces is not None else set()
