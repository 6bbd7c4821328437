"""
One failover node: the role machine wired to the network, timers and
listeners.

The node provides L{IRoleEffects} (what the role machine asks for) and is
the L{IFrameHandler} of its heartbeat port; L{HeartbeatSender} is the live
side's link to its backup location.
"""

from __future__ import annotations

import collections
import datetime
import random
import time
from typing import Optional

from twisted.application.internet import backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.protocols.policies import WrappingFactory
from zope.interface import implementer

from iwayfailover import commands, probe, tls, wire
from iwayfailover.config import ConfigError, SharedConfig, backup_host, changed_keys, endpoint_interface, endpoint_port
from iwayfailover.heartbeat import HELLO_TIMEOUT, Gate, HeartbeatFactory, IFrameHandler, RefusalLog
from iwayfailover.floating import FloatingAddress
from iwayfailover.hooks import Hooks
from iwayfailover.listeners import FAILED, STOPPED, WAITING, ListenerSet, plugin_service
from iwayfailover.role import BACKUP, HANDING_OVER, LIVE, STARTING, IRoleEffects, RoleMachine, outranks
from iwayfailover.state import EpochStore
from iwayfailover.watchdog import Watchdog

UNANSWERED_LIMIT = 5
"""Heartbeats a live node sends without an answer before it drops the
connection to its backup and dials again (the backup may be hung)."""

FENCE_STOP_SHARE = 0.5
"""The share of the time left before the backup may take over that a process
channel of a node yielding or fencing itself has to exit, before SIGKILL."""

CONNECT_TIMEOUT_FLOOR = 0.25
"""The shortest time one dial of the backup location is given (see
L{connect_timeout}): a very short heartbeat interval must still leave a
connection time for a round trip."""

STARTUP_CHECK_TIMEOUT = 2.0
"""The longest a node started live waits to hear how its backup location stands."""

_WIRE_ROLES = {LIVE: wire.Role.LIVE, STARTING: wire.Role.STARTING}

TAKEOVER_KINDS = ("silence", "crash", "switchover", "peer_shutdown")
"""Why a backup took over, in one word: its live peer's signal went silent for
the threshold, a probe found the peer's process gone, or the peer stood down
for a planned switchover or because it was shutting down."""


class SwitchoverRefused(Exception):
    """A planned switchover cannot be made now; the message says why."""


class ListenerRestartRefused(Exception):
    """A listener cannot be restarted (unknown, or not FAILED); the message says why."""


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def describe_keys(ring) -> str:
    """Key ids (public) for the log; never the keys."""
    return "unsigned (insecure = true)" if ring.insecure else "ids " + ",".join(ring.key_ids)


class Peer:
    """What this node knows of the other node of the pair."""

    def __init__(self, name: Optional[str], now):
        self.name = name
        self._now = now
        self.last_heard: Optional[float] = None
        self.role: Optional[str] = None
        self.epoch: Optional[int] = None
        self.priority: Optional[int] = None
        """The priority the peer last announced in its frames."""
        self.threshold: Optional[float] = None
        """The threshold, in seconds, the peer last announced: when it takes over as backup."""
        self.connections = set()
        self.lost = False

    def heard(self, frame: wire.Frame) -> Optional[float]:
        """Note a frame; return the gap, in seconds, if the peer had been lost."""
        gap = None
        if self.lost and self.last_heard is not None:
            gap = self._now() - self.last_heard
        self.lost = False
        self.name = frame.name
        self.role = frame.role.label
        self.epoch = frame.epoch
        self.priority = frame.priority
        self.threshold = frame.threshold / 1000
        self.last_heard = self._now()
        return gap

    def status(self) -> dict:
        age = None if self.last_heard is None else round(self._now() - self.last_heard, 3)
        return {
            "name": self.name,
            "connected": bool(self.connections),
            "last_heartbeat_age": age,
            "role": self.role,
            "epoch": self.epoch,
            "priority": self.priority,
            "threshold": self.threshold,
        }


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
    a short backoff while the backup is away) and sends a heartbeat on it
    every heartbeat interval.
    """

    log = Logger()

    def __init__(self, node: "FailoverNode"):
        self._node = node
        self._dialler: Optional[Redialler] = None
        self._loop: Optional[LoopingCall] = None
        self._protocol = None
        self._seq = 0
        self._unanswered = 0
        self.sent = 0
        self.last_answer = node.now()
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

    def silence(self) -> float:
        """Seconds since the backup last answered (or since heartbeating began)."""
        return self._node.now() - self.last_answer

    def healthy(self) -> bool:
        """Is the backup connected and answering (within two heartbeat intervals)?"""
        return self.connected and self.silence() <= 2 * self._node.config.failover.heartbeat_interval + 0.25

    def start(self) -> None:
        self.stop()
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
        self.last_answer = node.now()
        self._dialler = Redialler(
            node.reactor, endpoint, factory, timeout, policy, f"backup location {node.settings.backup_location}",
        )
        self._dialler.start()
        self.resume()

    def stop(self) -> defer.Deferred:
        dialler, self._dialler = self._dialler, None
        self.pause()
        if dialler is None:
            return defer.succeed(None)
        return dialler.stop()

    def pause(self) -> None:
        """Stop sending heartbeats; keep the connection."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def resume(self) -> None:
        self.pause()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = self._node.reactor
        self._loop.start(self._node.config.failover.heartbeat_interval, now=False)

    def beat(self) -> None:
        """Send one heartbeat, if connected. Never raises."""
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
            self._seq += 1
            self._unanswered += 1
            protocol.send(self._node.frame(wire.Kind.HEARTBEAT, self._seq))
            self.sent += 1
        except Exception:
            self.log.failure("sending a heartbeat failed")

    def stand_down(self, switchover: bool) -> bool:
        """Tell the backup this node has stopped serving; False if it is not connected."""
        if self._protocol is None:
            return False
        self._seq += 1
        flags = wire.FLAG_SWITCHOVER if switchover else 0
        self._protocol.send(self._node.frame(wire.Kind.STANDING_DOWN, self._seq, flags))
        return True

    # IFrameHandler, for the connection to the backup location

    def connection_made(self, protocol):
        self._protocol = protocol
        self._unanswered = 0
        self._node.peer.connections.add(protocol)
        self.log.info("heartbeat link to backup location {location} is up", location=self._node.settings.backup_location)
        if self._loop is not None:
            self.beat()

    def frame_received(self, protocol, frame):
        if frame.kind != wire.Kind.ANSWER:
            protocol.refuse(f"expected an answer, got a {frame.kind.name.lower()} frame")
            return
        if not self._node.known_peer(protocol, frame):
            return
        self._unanswered = 0
        self.last_answer = self._node.now()
        self._node.heard_from_peer(frame)
        self._node.answer_from_backup(frame)

    def connection_lost(self, protocol, reason):
        self._node.peer.connections.discard(protocol)
        if self._protocol is protocol:
            self._protocol = None
            self._node.backup_link_lost()
            if self.running:
                self._node.peer.lost = True
                self.log.warn(
                    "heartbeat link to backup location {location} lost: {why}",
                    location=self._node.settings.backup_location, why=reason.getErrorMessage(),
                )


class _Handover:
    """A planned switchover under way."""

    def __init__(self, started: float):
        self.deferred = defer.Deferred()
        self.started = started
        self.stopped_at: Optional[float] = None
        self.timeout = None


@implementer(IRoleEffects, IFrameHandler)
class FailoverNode(MultiService):
    """
    @param config: the shared configuration.
    @param name: this node's server name.
    @param start_as_backup: start in the backup role; otherwise ask the
        backup location how it stands first, and start live unless it is.
    @param epochs: where the epoch is kept.
    @param reactor: for timers and connections (a L{Clock} or
        L{MemoryReactor} in tests).
    @param now: the monotonic clock silence is measured on.
    @param wall: the wall clock, for the times shown to people.
    @param reach_any: L{probe.reach_any}, or a stand-in.
    @param query: L{probe.query}, or a stand-in.
    @param run_command: runs outside commands (floating IP, notify hooks):
        L{commands.run} by default, or a stand-in.
    """

    log = Logger()

    # Wired in by makeService (iwayfailover.tap): ServerPort and ConfigPoller children.
    heartbeat_port = None
    console_port = None
    poller = None

    def __init__(self, config: SharedConfig, name: str, start_as_backup: bool, epochs: EpochStore, reactor,
                 build_listener=plugin_service, now=time.monotonic, wall=time.time,
                 reach_any=probe.reach_any, query=probe.query, run_command=None):
        super().__init__()
        if config.keys is None:
            raise ValueError("a configuration without its keys: read it with tap.load_checked_config")
        self.config = config
        self.keys = config.keys
        self.name = name
        self.check_config(config)
        self.settings = config.server(name)
        self.start_as_backup = start_as_backup
        self.reactor = reactor
        self.now = now
        self._epochs = epochs
        self._wall = wall
        self._reach_any = reach_any
        self._query = query
        self.machine = RoleMachine(self, name, epoch=epochs.load(), wall=wall)
        self.watchdog = Watchdog(reactor, self.settings.threshold, self._silence, now=now)
        self.listeners = ListenerSet(build_listener, wall=wall, reactor=reactor)
        self.listeners.configure(config.listeners_for(name))
        # Getting clients to the live node (issue 7): the floating IP, held
        # while live, and the notify hooks run on each change of role.
        client = config.client_settings(name)
        run_command = run_command or commands.run
        self.floating = FloatingAddress(reactor, client.virtual_ip, client.interface, run=run_command, wall=wall)
        # on_fault for a failure at any time (a channel out of restarts, an address lost), not only on going live.
        self.floating.on_failed = self.listeners.on_failed = self._failed_later
        self.hooks = Hooks(reactor, name, lambda: self.config.client_settings(self.name), run=run_command)
        self._activation = None
        self._faults = set()
        others = [n for n in config.servers if n != name]
        self.peer = Peer(others[0] if len(others) == 1 else None, now)
        self.refusals = RefusalLog(reactor)
        self.gate = Gate(reactor, peers=self._peer_addresses)
        self.own_nonces = set()  # of every heartbeat connection, both ways: see the reflection check
        # The gate limits how long an accepted connection may take to prove itself.
        self.heartbeat_factory = HeartbeatFactory(
            self, self.refusals, lambda: self.keys, reactor, initiating=False, gate=self.gate, hello_timeout=None,
            own_nonces=self.own_nonces,
        )
        self._sessions = {}  # server name -> its current heartbeat connection to this node
        self.sender = HeartbeatSender(self)
        self.received = 0
        self.max_gap = 0.0
        # Takeovers since this process started, by kind of cause (TAKEOVER_KINDS), for /metrics.
        self.takeovers = collections.Counter()
        self._last_live_heartbeat: Optional[float] = None
        self._stopping = defer.succeed(None)
        self._activating = defer.succeed(None)
        self._handover: Optional[_Handover] = None
        self._lease: Optional[LoopingCall] = None
        self._resume_call = None
        self._probing_witness = False
        self._isolation_logged = False
        self._fence_warned = False
        self._failback_since: Optional[float] = None
        self._two_lives_logged = None
        self._differs_logged = None

    # -- derived settings --

    @property
    def peer_threshold(self) -> float:
        """
        The threshold of this node's backup: when it will take over if this
        node goes quiet. The one the peer last announced in its frames; this
        node's copy of the configuration only until the peer is first heard
        (the copies may differ: a node that could not reload the share).
        """
        if self.peer.threshold is not None:
            return self.peer.threshold
        server = self.config.servers.get(self.peer.name or "")
        return server.threshold if server is not None else self.settings.threshold

    @property
    def probe_timeout(self) -> float:
        """How long a probe (witness, crashed peer) may take: a quarter of the threshold, at most 1 s."""
        return min(1.0, self.peer_threshold / 4)

    @property
    def lease_tick(self) -> float:
        return min(0.25, self.peer_threshold / 8)

    def rank(self):
        """This node's rank, as its frames announce it: (epoch, priority, name)."""
        return (self.machine.epoch, self.settings.priority, self.name)

    def rank_of(self, frame: wire.Frame):
        """
        The sender's rank, from what its frame says: never from this node's
        copy of the configuration, so that two nodes whose copies differ
        still agree which of them outranks the other.
        """
        return (frame.epoch, frame.priority, frame.name)

    def outranked_by(self, frame: wire.Frame) -> bool:
        return outranks(self.rank_of(frame), self.rank())

    # -- service --

    def startService(self):
        super().startService()
        if self.start_as_backup:
            self.machine.start_backup("started as backup")
        else:
            self._startup_check()

    def stopService(self):
        self._cancel_handover(SwitchoverRefused("the node is shutting down"))
        self._cancel_resume()
        self.machine.stop("node shutting down")
        # Hooks still running end within their time limits before the node does.
        return defer.gatherResults([self._stopping, defer.maybeDeferred(super().stopService), self.hooks.drain()])

    def _startup_check(self):
        location = self.settings.backup_location
        timeout = min(STARTUP_CHECK_TIMEOUT, max(0.5, 2 * self.config.failover.heartbeat_interval))
        self.log.info(
            "started as live: first asking {location} how it stands (at most {timeout:g}s)",
            location=location, timeout=timeout,
        )
        target = tls.connector(self.reactor, self.settings.backup_endpoint, timeout=timeout)
        d = self._query(self.reactor, target, self.frame(wire.Kind.QUERY, 0), timeout, self.refusals, self.keys)
        d.addCallback(self._startup_checked)
        d.addErrback(
            lambda f: self.log.failure("startup check failed", f) or self._startup_checked(probe.Reply(None, "error", "error"))
        )

    def _startup_checked(self, reply):
        answer, why = reply.frame, reply.why
        if not self.running or self.machine.role != STARTING:
            return
        location = self.settings.backup_location
        if answer is None or answer.name == self.name or answer.name not in self.config.servers:
            self.machine.start_live(f"started as live; {location} did not answer ({why or 'not a known server'})")
            return
        self.heard_from_peer(answer)
        if answer.role == wire.Role.LIVE:
            self.machine.start_backup(
                f"started as live, but {answer.name} at {location} is live (epoch {answer.epoch}): started as backup instead"
            )
        elif answer.role == wire.Role.STARTING and self.outranked_by(answer):
            self.machine.start_backup(
                f"started as live together with {answer.name}, which outranks this node: started as backup instead"
            )
        else:
            self.machine.start_live(f"started as live; {answer.name} at {location} is {answer.role.label}")

    # -- IRoleEffects --

    def hold_listeners(self):
        self.listeners.hold()
        # A floating IP left behind by a crash of this node goes now.
        self._track_stopping(self.floating.down(WAITING))

    def activate_listeners(self):
        # The floating IP first: a listener may bind it.
        token = self._activation = object()
        epoch, cause = self.machine.epoch, self.machine.cause
        self._faults = set()  # a failure met again on this going live is reported again

        def listeners(_):
            if self._activation is token:
                return self.listeners.start()

        def live(_):
            if self._activation is token:
                self.hooks.fire("on_live", LIVE, epoch, cause)
                self.check_faults()

        self._activating = self.floating.up().addCallback(listeners).addCallback(live)

    def _then_release_address(self, stopped: defer.Deferred, final: str) -> defer.Deferred:
        """After the listeners have stopped, let go of the floating IP."""
        self._activation = None
        return stopped.addCallback(lambda _: self.floating.down(final))

    def _failed_later(self) -> None:
        # On the next turn of the reactor: a failure met inside a state change
        # is reported once that change has settled.
        self.reactor.callLater(0, self.check_faults)

    def check_faults(self) -> None:
        """Run on_fault for each listener (or the floating IP) newly FAILED."""
        items = dict(self.listeners.listeners)
        if self.floating.configured:
            items[self.floating.name] = self.floating
        failed = {(n, item.reason) for n, item in items.items() if item.state == FAILED}
        for name, reason in sorted(failed - self._faults):
            self.hooks.fire("on_fault", self.machine.role, self.machine.epoch, f"{name} FAILED: {reason}")
        self._faults = failed

    def _track_stopping(self, d: defer.Deferred) -> None:
        """Remember stop work under way, so that stopService waits for all of it."""
        if self._stopping.called:
            self._stopping = d
        else:
            self._stopping = defer.gatherResults([self._stopping, d], consumeErrors=True)

    def fence_stop_bound(self) -> float:
        """
        How long a process channel may take to exit when this node yields or
        fences itself, before it gets SIGKILL: a share (L{FENCE_STOP_SHARE})
        of the time left before the backup's threshold has passed since it
        last answered (its silence then is about this node's), so that the
        program is gone before the backup may take over. Never more than a
        channel's own C{stop_timeout} (see L{ListenerSet.stop}).
        """
        left = self.peer_threshold - self.sender.silence()
        return max(0.0, FENCE_STOP_SHARE * left)

    def deactivate_listeners(self):
        # Yielding to another live node, or fencing itself: the address goes
        # at once, beside the listeners' stops, so that it is never held while
        # the other node serves; a process channel that does not exit in the
        # time left gets SIGKILL (a planned stop keeps its stop_timeout).
        self._activation = None
        self._track_stopping(defer.gatherResults(
            [self.listeners.stop(WAITING, kill_after=self.fence_stop_bound()), self.floating.down(WAITING)], consumeErrors=True,
        ).addErrback(lambda f: self.log.failure("yield: stopping the listeners or letting go of the floating IP failed", f)))

    def shut_down_live(self):
        self._stop_lease()
        stopped = self._then_release_address(self.listeners.stop(STOPPED), STOPPED)

        def stand_down(_):
            if self.sender.stand_down(switchover=False):
                self.log.info("listeners stopped; told backup {peer} that this node is standing down", peer=self.peer.name)
            return self.sender.stop()

        self._track_stopping(stopped.addCallback(stand_down))

    def hand_over(self):
        self._stop_lease()
        self.sender.pause()
        handover = self._handover
        stopped = self._then_release_address(self.listeners.stop(WAITING), WAITING)
        self._track_stopping(stopped)

        def tell(_):
            if handover is not self._handover:
                return
            if self.floating.configured and self.floating.state == FAILED:
                self.check_faults()
                self._fail_handover(
                    f"the floating IP {self.floating.address} could not be removed ({self.floating.reason});"
                    " the backup could not take it"
                )
                return
            handover.stopped_at = self.now()
            if not self.sender.stand_down(switchover=True):
                self._fail_handover(f"the link to backup {self.peer.name} went down during the switchover")

        stopped.addCallback(tell)

    def start_heartbeats(self):
        self.sender.start()
        self._start_lease()

    def stop_heartbeats(self):
        self._stop_lease()
        self._track_stopping(self.sender.stop())

    def arm_watchdog(self):
        # Every way into the backup role ends here: on_backup once the
        # listeners and the floating IP have let go.
        epoch, cause = self.machine.epoch, self.machine.cause
        waiter = defer.Deferred()
        self._stopping.addBoth(lambda result: (waiter.callback(None), result)[1])
        waiter.addCallback(lambda _: self.hooks.fire("on_backup", BACKUP, epoch, cause))
        self._isolation_logged = False
        self._last_live_heartbeat = None
        self.watchdog.start()

    def disarm_watchdog(self):
        self._cancel_resume()
        self.watchdog.stop()

    def save_epoch(self, epoch):
        try:
            self._epochs.save(epoch)
        except OSError as e:
            # Serving matters more than the record; the epoch in memory is
            # still above every one seen, and is announced in every frame.
            self.log.critical(
                "could not keep epoch {epoch} in {path}: {why}; going on with it in memory only",
                epoch=epoch, path=self._epochs.path, why=e,
            )
            self.hooks.fire("on_fault", self.machine.role, epoch, f"could not keep epoch {epoch} in {self._epochs.path}: {e}")

    # -- takeover on silence, with the witness check --

    def _silence(self, silence: float) -> None:
        cause = (
            f"no live signal from {self.peer.name or 'any live server'} for {silence:.3f}s"
            f" (threshold {self.settings.threshold:g}s)"
        )
        witnesses = self.config.failover.witness
        if not witnesses:
            self._take_over(cause, silence)
            return
        d = self._reach_any(self.reactor, witnesses, self.probe_timeout)

        def checked(witness):
            if self.machine.role != BACKUP:
                return
            silence = self.watchdog.silence()
            if silence < self.settings.threshold:
                self._resume_watchdog()  # the live signal came back while we asked
            elif witness is not None:
                self._take_over(f"{cause}; witness {witness[0]}:{witness[1]} reachable", silence)
            else:
                if not self._isolation_logged:
                    self._isolation_logged = True
                    self.log.warn(
                        "no live signal for {silence:.3f}s, but no witness is reachable either: this node is the"
                        " isolated one and stays backup",
                        silence=silence,
                    )
                self._cancel_resume()
                self._resume_call = self.reactor.callLater(max(self.probe_timeout, self.watchdog.tick), self._resume_watchdog)

        d.addCallback(checked)
        d.addErrback(lambda f: self.log.failure("witness check failed", f) or self._resume_watchdog())

    def _resume_watchdog(self):
        self._resume_call = None
        if self.machine.role == BACKUP and self.running:
            self.watchdog.resume()

    def _cancel_resume(self):
        if self._resume_call is not None and self._resume_call.active():
            self._resume_call.cancel()
        self._resume_call = None

    def _take_over(self, cause: str, silence: Optional[float] = None, kind: str = "silence") -> None:
        if self.machine.role != BACKUP:
            return
        self.machine.take_over(cause)
        if self.machine.role == LIVE:
            self.takeovers[kind] += 1
            self.log.warn(
                "took over from {peer}: {cause}; now live with epoch {epoch}",
                peer=self.peer.name, cause=cause, epoch=self.machine.epoch, silence=silence,
            )

    # -- the live node's lease: self-fencing and failback --

    def _lease_needed(self) -> bool:
        failover = self.config.failover
        return bool(failover.witness and failover.self_fence) or (failover.failback and failover.preferred != self.name)

    def _start_lease(self):
        self._stop_lease()
        self._fence_warned = False
        self._failback_since = None
        if not self._lease_needed():
            return  # nothing to watch for: no timer at all
        self._lease = LoopingCall(self._lease_check)
        self._lease.clock = self.reactor
        self._lease.start(self.lease_tick, now=False)

    def _stop_lease(self):
        if self._lease is not None and self._lease.running:
            self._lease.stop()
        self._lease = None

    def _lease_check(self):
        try:
            if self.machine.role != LIVE:
                return
            self._check_failback()
            failover = self.config.failover
            if not failover.witness or not failover.self_fence or self._probing_witness:
                return
            # Fence well before the backup's threshold: by then this node must
            # have stopped serving if it is the one cut off.
            limit = self.peer_threshold / 2
            if self.sender.silence() < limit:
                self._fence_warned = False
                return
            self._probing_witness = True
            d = self._reach_any(self.reactor, failover.witness, self.probe_timeout)

            def checked(witness):
                self._probing_witness = False
                silence = self.sender.silence()
                if self.machine.role != LIVE or silence < limit:
                    return
                if witness is None:
                    self.machine.yield_to(
                        f"self-fenced: no answer from backup {self.peer.name} for {silence:.3f}s and no witness reachable"
                    )
                elif not self._fence_warned:
                    self._fence_warned = True
                    self.log.warn(
                        "backup {peer} has not answered for {silence:.3f}s; witness {host}:{port} is reachable,"
                        " so this node stays live",
                        peer=self.peer.name, silence=silence, host=witness[0], port=witness[1],
                    )

            d.addCallback(checked)
            d.addErrback(lambda f: self.log.failure("witness check failed", f))
        except Exception:
            self._probing_witness = False
            self.log.failure("lease check failed; it keeps running")

    def _check_failback(self):
        failover = self.config.failover
        since = self._failback_since
        if not failover.failback or failover.preferred in (None, self.name) or since is None or self._handover:
            return
        if not self.sender.healthy():
            self._failback_since = None
            return
        if self.now() - since >= failover.failback_delay:
            self._failback_since = None
            self.log.info(
                "failback: {preferred} has been a healthy backup for {delay:g}s; giving the live role back",
                preferred=failover.preferred, delay=failover.failback_delay,
            )
            d = self.switchover(cause=f"failback to the preferred server {failover.preferred}")
            d.addErrback(lambda f: self.log.warn("failback did not happen: {why}", why=f.getErrorMessage()))

    def backup_link_lost(self):
        self._failback_since = None

    # -- planned switchover --

    def switchover(self, cause: Optional[str] = None) -> defer.Deferred:
        """
        Move the live role to the backup: stop every listener, then tell the
        backup to take over, so that the two never serve at once.

        @return: a Deferred firing with C{{"from", "to", "epoch", "gap"}} once
            the backup confirms it is live (C{gap}: seconds during which
            neither node's listeners served, as seen from this node), or
            failing with L{SwitchoverRefused}.
        """
        role = self.machine.role
        if role != LIVE:
            live = f"; ask the live node {self.peer.name}" if role == BACKUP and self.peer.name else ""
            return defer.fail(SwitchoverRefused(f"{self.name} is {role}, not live{live}"))
        if not self.sender.healthy():
            return defer.fail(SwitchoverRefused(
                f"the backup {self.peer.name or self.settings.backup_location} has not answered recently;"
                " a switchover now could leave nobody serving"
            ))
        handover = self._handover = _Handover(self.now())
        timeout = max(5.0, self.peer_threshold)
        handover.timeout = self.reactor.callLater(
            timeout, self._fail_handover, f"{self.peer.name} did not confirm it is live within {timeout:g}s"
        )
        self.machine.hand_over(cause or f"planned switchover to {self.peer.name}")
        return handover.deferred

    def _end_handover(self) -> Optional[_Handover]:
        """The switchover under way, if any, now ended: its timeout cancelled."""
        handover, self._handover = self._handover, None
        if handover is not None and handover.timeout is not None and handover.timeout.active():
            handover.timeout.cancel()
        return handover

    def _confirm_handover(self, frame: wire.Frame):
        handover = self._end_handover()
        if handover is None:
            return
        stopped_at = handover.stopped_at if handover.stopped_at is not None else handover.started
        gap = self.now() - stopped_at
        self.machine.handed_over(
            f"handed over to {frame.name} (epoch {frame.epoch}); no listener served for {gap * 1000:.1f} ms"
        )
        handover.deferred.callback({"from": self.name, "to": frame.name, "epoch": frame.epoch, "gap": gap})

    def _fail_handover(self, why: str):
        handover = self._end_handover()
        if handover is None:
            return
        self.machine.handover_failed(f"switchover failed: {why}; serving again")
        handover.deferred.errback(SwitchoverRefused(why))

    def _cancel_handover(self, reason: Exception):
        handover = self._end_handover()
        if handover is not None:
            handover.deferred.errback(reason)

    # -- frames --

    def frame(self, kind: wire.Kind, seq: int, flags: int = 0) -> wire.Frame:
        role = _WIRE_ROLES.get(self.machine.role, wire.Role.BACKUP)
        return wire.Frame(
            kind=kind, name=self.name, role=role, epoch=self.machine.epoch, seq=seq, flags=flags,
            priority=self.settings.priority, threshold=wire.threshold_ms(self.settings.threshold),
        )

    def known_peer(self, protocol, frame: wire.Frame) -> bool:
        """Refuse frames from this node's own name or from unknown servers."""
        if frame.name == self.name:
            protocol.refuse(
                f"frame carries this node's own name {frame.name!r}: is a backup_location pointing back at this node?"
            )
            return False
        if frame.name not in self.config.servers:
            protocol.refuse(f"sender {frame.name!r} is not a server of {self.config.path}")
            return False
        return True

    def heard_from_peer(self, frame: wire.Frame) -> None:
        tick = self.lease_tick
        gap = self.peer.heard(frame)
        if gap is not None:
            self.log.info("heartbeat from {peer} restored after {gap:.3f}s", peer=frame.name, gap=gap)
        self.machine.observe_peer_epoch(frame.epoch)
        self._compare_announced(frame)
        if self.machine.role == LIVE and self._lease is not None and self.lease_tick != tick:
            self._start_lease()  # the backup announced another threshold: fence in time for it

    def _compare_announced(self, frame: wire.Frame) -> None:
        """Warn (once for each difference) when the peer announces settings this node's copy does not hold."""
        server = self.config.servers.get(frame.name)
        if server is None:
            return
        announced = (frame.priority, frame.threshold)
        copy = (server.priority, round(server.threshold * 1000))
        if announced == copy:
            self._differs_logged = None
            return
        if self._differs_logged == (frame.name, announced, copy):
            return
        self._differs_logged = (frame.name, announced, copy)
        self.log.warn(
            "{peer} announces priority {priority} and threshold {threshold:g}s, but this node's copy of {path}"
            " says priority {copy_priority} and threshold {copy_threshold:g}s: the two nodes read different"
            " configurations (has one of them failed to reload it?); rank and fencing follow what {peer} announces",
            peer=frame.name, priority=frame.priority, threshold=frame.threshold / 1000, path=self.config.path,
            copy_priority=server.priority, copy_threshold=server.threshold,
        )

    def _meet_live(self, frame: wire.Frame) -> None:
        """This live node heard from another live node: the lower rank yields."""
        if self.outranked_by(frame):
            self.machine.yield_to(
                f"{frame.name} is live too with epoch {frame.epoch}, which outranks this node"
                f" (epoch {self.machine.epoch}): yielding"
            )
        elif self._two_lives_logged != (frame.name, frame.epoch):
            self._two_lives_logged = (frame.name, frame.epoch)
            self.log.warn(
                "{peer} is live too (epoch {epoch}); this node outranks it, so {peer} yields",
                peer=frame.name, epoch=frame.epoch,
            )
            # Neighbours may have last heard of the floating IP from the other node.
            self.floating.announce_again()

    def answer_from_backup(self, frame: wire.Frame) -> None:
        """An answer on the link to this node's backup location."""
        role = self.machine.role
        if frame.role == wire.Role.LIVE:
            if role == HANDING_OVER:
                self._confirm_handover(frame)
            elif role == LIVE:
                self._meet_live(frame)
        elif role == LIVE and frame.role == wire.Role.BACKUP:
            if frame.name == self.config.failover.preferred:
                if self._failback_since is None:
                    self._failback_since = self.now()
            else:
                self._failback_since = None

    # IFrameHandler, for the heartbeat port

    def connection_made(self, protocol):
        pass

    def frame_received(self, protocol, frame):
        if not self.known_peer(protocol, frame):
            return
        if frame.kind == wire.Kind.QUERY:
            protocol.send(self.frame(wire.Kind.ANSWER, frame.seq))
        elif frame.kind == wire.Kind.STANDING_DOWN:
            self._standing_down(protocol, frame)
        elif frame.kind == wire.Kind.HEARTBEAT:
            self._heartbeat(protocol, frame)
        else:
            protocol.refuse(f"unexpected {frame.kind.name.lower()} frame on the heartbeat port")

    def _end_sessions(self, why: str) -> None:
        """Close every heartbeat connection, both ways, proven or not; the sender redials."""
        for protocol in list(self.heartbeat_factory.open):
            protocol.replaced = True  # not a sign of death: no crash probe
            protocol.transport.abortConnection()
        self.log.info("closing every heartbeat connection: {why}", why=why)
        if self.sender.running:
            self.sender.start()

    def _peer_addresses(self) -> frozenset:
        """
        The addresses the configured servers are known by (where this node
        dials them, where their heartbeat ports are bound): the gate never
        lets others push their connections out.
        """
        addresses = set()
        for name, server in self.config.servers.items():
            if name == self.name:
                host = backup_host(server.backup_location)
            else:
                host = endpoint_interface(server.heartbeat_endpoint)
            if host:
                addresses.add(host.strip("[]"))
        return frozenset(addresses)

    def _heartbeat(self, protocol, frame):
        self.received += 1
        old = self._sessions.get(frame.name)
        if old is not None and old is not protocol:
            # One session per peer: a newer connection from it replaces the old one.
            old.replaced = True
            old.transport.abortConnection()
            self.log.info("a newer heartbeat connection from {peer} replaces the old one", peer=frame.name)
        self._sessions[frame.name] = protocol
        self.peer.connections.add(protocol)
        protocol.peer_name = frame.name
        protocol.from_live = frame.role == wire.Role.LIVE
        self.heard_from_peer(frame)
        if frame.role == wire.Role.LIVE:
            role = self.machine.role
            if role == BACKUP:
                self.watchdog.heard()
                self._isolation_logged = False
                self._note_gap()
            elif role == LIVE:
                self._meet_live(frame)
            elif role == HANDING_OVER:
                self._confirm_handover(frame)
        protocol.send(self.frame(wire.Kind.ANSWER, frame.seq))

    def _note_gap(self):
        """Keep the largest gap between two live heartbeats heard as a backup."""
        now = self.now()
        if self._last_live_heartbeat is not None:
            self.max_gap = max(self.max_gap, now - self._last_live_heartbeat)
        self._last_live_heartbeat = now

    def _standing_down(self, protocol, frame):
        protocol.stood_down = True
        self.heard_from_peer(frame)
        if self.machine.role != BACKUP:
            protocol.send(self.frame(wire.Kind.ANSWER, frame.seq))
            return
        switchover = bool(frame.flags & wire.FLAG_SWITCHOVER)
        why = "planned switchover" if switchover else "shutting down"
        self._take_over(f"{frame.name} stood down ({why})", kind="switchover" if switchover else "peer_shutdown")
        # Answer once the listeners are up: the old live node measures the gap to this answer.
        self._activating.addCallback(lambda _: protocol.send(self.frame(wire.Kind.ANSWER, frame.seq)))

    def connection_lost(self, protocol, reason):
        name = getattr(protocol, "peer_name", None)
        if name is not None and self._sessions.get(name) is protocol:
            del self._sessions[name]
        if protocol not in self.peer.connections:
            return
        self.peer.connections.discard(protocol)
        if self.machine.role != BACKUP or not getattr(protocol, "from_live", False) or getattr(protocol, "replaced", False):
            return
        self.peer.lost = True
        if getattr(protocol, "stood_down", False):
            return
        self.log.warn(
            "heartbeat from {peer} lost: {why}; checking at once whether its process is gone",
            peer=self.peer.name, why=reason.getErrorMessage(),
        )
        self._probe_crash(protocol)

    def _probe_crash(self, protocol):
        """
        The live node's connection closed without a standing-down message.
        Ask its heartbeat port at once: a refused connection, or one closed
        without an answer, means its process is gone while its host is up:
        take over now. An answer means it is alive (it only redialled); no
        answer in time leaves the threshold rule in charge.
        """
        name = protocol.peer_name
        server = self.config.servers.get(name)
        target, where = (None, "it is not in the configuration")
        if server is not None:
            target, where = self._crash_probe_target(server, protocol.peer)
        if target is None:
            self.log.info(
                "cannot probe {peer}'s heartbeat port ({why}); the threshold rule stays in charge", peer=name, why=where,
            )
            return
        d = self._query(self.reactor, target, self.frame(wire.Kind.QUERY, 0), self.probe_timeout, self.refusals, self.keys)

        def probed(reply):
            if reply.gone and self.machine.role == BACKUP and self.peer.lost:
                self._take_over(
                    f"{name} is gone: its heartbeat connection closed and a probe of {where} found"
                    f" {reply.why} (its process is dead, its host is up)",
                    kind="crash",
                )
            else:
                self.log.info(
                    "probe of {peer}'s heartbeat port {where}: {why}; the threshold rule stays in charge",
                    peer=name, where=where, why=reply.why,
                )

        d.addCallback(probed)
        d.addErrback(lambda f: self.log.failure("crash probe failed", f))

    def _crash_probe_target(self, server, source_host):
        """
        Where to ask a peer's heartbeat port, and how to name it: (client
        endpoint, words), or (None, why not).
        """
        description = server.heartbeat_endpoint
        kind = description.split(":", 1)[0]
        port = endpoint_port(description)
        if port is None:
            return None, f"no port in {description}"
        if kind in ("tcp", "tcp6"):
            # The address its heartbeat port is bound to, where the configuration
            # names one; otherwise (bound to every address) the one it dialled from.
            host = endpoint_interface(description) or source_host
            return probe.endpoint(self.reactor, host, port, self.probe_timeout), f"{host}:{port}"
        location = self.settings.backup_endpoint
        if kind == "ssl" and location.startswith("tls:") and tls.client_port(location) == port:
            # A TLS port is asked the way this node dials it when live: its
            # own Location of Backup, certificates and host name check included.
            endpoint = tls.connector(self.reactor, location, timeout=self.probe_timeout)
            return endpoint, self.settings.backup_location
        return None, f"{kind}: ports are probed only as tcp, or as ssl when this node's backup_location is a tls: string to that port"

    # -- configuration --

    def check_config(self, config: SharedConfig) -> SharedConfig:
        """
        Refuse a configuration in which this node has no section, or in which
        a server's priority or threshold cannot travel in a heartbeat frame
        (see L{wire}).

        @raise ConfigError: it has none, or such a value.
        """
        config.server(self.name)
        for server in config.servers.values():
            section = f"server:{server.name}"
            if not wire.PRIORITY_MIN <= server.priority <= wire.PRIORITY_MAX:
                raise ConfigError(
                    config.path, section, "priority", str(server.priority), "out of range",
                    f"a whole number from {wire.PRIORITY_MIN} to {wire.PRIORITY_MAX}",
                )
            try:
                wire.threshold_ms(server.threshold)
            except wire.FrameError:
                raise ConfigError(
                    config.path, section, "threshold", str(server.threshold), "out of range",
                    f"a number of seconds from 0.001 to {wire.THRESHOLD_MAX_MS / 1000:.3f}",
                ) from None
        return config

    def apply_config(self, config: SharedConfig) -> None:
        """Apply a new, checked configuration at once."""
        old, new = self.settings, config.server(self.name)
        old_failover, failover = self.config.failover, config.failover
        old_lease = (self._lease_needed(), self.lease_tick)
        changes = changed_keys(self.config, config, self.name)
        self.config, self.settings = config, new
        if config.keys.key_ids != self.keys.key_ids or config.keys.insecure != self.keys.insecure:
            changes.append(f"heartbeat keys {describe_keys(self.keys)} -> {describe_keys(config.keys)}")
            withdrawn = set(self.keys.key_ids) - set(config.keys.key_ids) or config.keys.insecure != self.keys.insecure
            self.keys = config.keys
            if withdrawn:
                # A key taken out of the file may be a leaked one: no session
                # made with it may outlive it. The links are made again at
                # once (within one heartbeat interval) under the keys now held.
                self._end_sessions("a heartbeat key was withdrawn")
        if failover.heartbeat_interval != old_failover.heartbeat_interval and self.sender.running:
            self.sender.start()  # the redial backoff is bounded by the interval too
        if failover.reload_interval != old_failover.reload_interval and self.poller is not None:
            self.poller.set_interval(failover.reload_interval)
        if new.threshold != old.threshold:
            self.watchdog.set_threshold(new.threshold)
        if new.heartbeat_endpoint != old.heartbeat_endpoint and self.heartbeat_port is not None:
            self.heartbeat_port.rebind(new.heartbeat_endpoint)
        if new.backup_endpoint != old.backup_endpoint and self.sender.running:
            self.sender.start()
        if new.console != old.console:
            if self.console_port is not None and new.console is not None:
                self.console_port.rebind(new.console)
            elif new.console is not None or old.console is not None:
                changes.append("the console change takes effect at the next start")
        if self.machine.role == LIVE and old_lease != (self._lease_needed(), self.lease_tick):
            self._start_lease()  # witness, self_fence, failback or the backup's threshold changed
        client = config.client_settings(self.name)
        address_settled = defer.succeed(None)
        if (client.virtual_ip, client.interface) != (self.floating.address, self.floating.interface):
            address_settled = self.floating.configure(client.virtual_ip, client.interface)
        # Listeners follow once the new address is in place: one may bind it.
        specs = config.listeners_for(self.name)
        address_settled.addBoth(lambda _: self.listeners.configure(specs)).addCallback(lambda _: self.check_faults())
        address_settled.addErrback(lambda f: self.log.failure("applying the listeners of the new configuration failed", f))
        self.log.info(
            "configuration reloaded: {changes}", changes="; ".join(changes) or "no change for this server"
        )

    # -- listeners, for the console --

    def restart_listener(self, name: str) -> defer.Deferred:
        """
        Try one FAILED listener again (see L{ListenerSet.restart}).

        @raise ListenerRestartRefused: no such listener, or it is not FAILED.
        """
        try:
            d = self.listeners.restart(name)
        except KeyError:
            raise ListenerRestartRefused(f"{self.name} has no listener {name!r}") from None
        except ValueError as e:
            raise ListenerRestartRefused(str(e)) from None
        self.log.info("listener {listener} restarted on request", listener=name)
        return d

    # -- status --

    def status(self) -> dict:
        listeners = self.listeners.status()
        if self.floating.configured:
            listeners[self.floating.name] = self.floating.status()
        for entry in listeners.values():
            entry["since"] = iso(entry["since"])
        return {
            "server": self.name,
            "role": self.machine.role,
            "epoch": self.machine.epoch,
            "since": iso(self.machine.since),
            "cause": self.machine.cause,
            "peer": self.peer.status(),
            "listeners": listeners,
            "heartbeats": {
                "sent": self.sender.sent, "received": self.received, "max_gap": round(self.max_gap, 4),
                # refused on the heartbeat port, and by this node as a sender
                "rejected": self.heartbeat_factory.rejected + self.sender.rejected,
            },
            "settings": {
                "backup_location": self.settings.backup_location,
                "heartbeat_port": self.settings.heartbeat_port,
                "threshold": self.settings.threshold,
                "heartbeat_interval": self.config.failover.heartbeat_interval,
                "reload_interval": self.config.failover.reload_interval,
            },
            "auth": self.keys.status(),
            "config": {
                "path": self.config.path,
                "digest": self.config.digest,
                "last_error": None if self.poller is None else self.poller.last_error,
            },
            "transitions": [
                {"at": iso(t.at), "from": t.previous, "to": t.role, "epoch": t.epoch, "cause": t.cause}
                for t in self.machine.transitions
            ],
        }

