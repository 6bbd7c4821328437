"""
One failover node: the role machine wired to the network, timers and
listeners.

The node provides L{IRoleEffects} (what the role machine asks for) and is
the L{IFrameHandler} of its heartbeat port; L{HeartbeatSender} is the live
side's link to its backup location.
"""

from __future__ import annotations

import datetime
import random
import time
from typing import Optional

from twisted.application.internet import ClientService, backoffPolicy
from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.internet.endpoints import clientFromString
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from zope.interface import implementer

from iwayfailover import wire
from iwayfailover.config import SharedConfig
from iwayfailover.heartbeat import HeartbeatFactory, IFrameHandler, RefusalLog
from iwayfailover.listeners import STOPPED, ListenerSet, plugin_service
from iwayfailover.role import BACKUP, LIVE, IRoleEffects, RoleMachine
from iwayfailover.state import EpochStore
from iwayfailover.watchdog import Watchdog

UNANSWERED_LIMIT = 5
"""Heartbeats a live node sends without an answer before it drops the
connection to its backup and dials again (the backup may be hung)."""


def iso(wall: float) -> str:
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


class Peer:
    """What this node knows of the other node of the pair."""

    def __init__(self, name: Optional[str], now):
        self.name = name
        self._now = now
        self.last_heard: Optional[float] = None
        self.role: Optional[str] = None
        self.epoch: Optional[int] = None
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
        }


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
        self._client: Optional[ClientService] = None
        self._loop: Optional[LoopingCall] = None
        self._protocol = None
        self._seq = 0
        self._unanswered = 0
        self.sent = 0

    @property
    def running(self) -> bool:
        return self._client is not None

    def start(self) -> None:
        self.stop()
        node = self._node
        interval = node.config.failover.heartbeat_interval
        endpoint = clientFromString(node.reactor, node.settings.backup_endpoint)
        factory = HeartbeatFactory(self, node.refusals)
        # The backup must hear from us again well within its threshold after
        # it comes back, so the redial delay never grows past one interval.
        policy = backoffPolicy(
            initialDelay=interval / 10, maxDelay=interval, factor=2, jitter=lambda: random.random() * interval / 10
        )
        self._client = ClientService(endpoint, factory, retryPolicy=policy, clock=node.reactor)
        self._client.startService()
        self._loop = LoopingCall(self.beat)
        self._loop.clock = node.reactor
        self._loop.start(interval, now=False)

    def stop(self) -> defer.Deferred:
        client, self._client = self._client, None
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if client is None:
            return defer.succeed(None)
        return client.stopService()

    def set_interval(self, interval: float) -> None:
        if self._loop is not None:
            self._loop.stop()
            self._loop.start(interval, now=False)

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

    # IFrameHandler, for the connection to the backup location

    def connection_made(self, protocol):
        self._protocol = protocol
        self._unanswered = 0
        self._node.peer.connections.add(protocol)
        self.log.info("heartbeat link to backup location {location} is up", location=self._node.settings.backup_location)
        self.beat()

    def frame_received(self, protocol, frame):
        if frame.kind != wire.Kind.ANSWER:
            protocol.refuse(f"expected an answer, got a {frame.kind.name.lower()} frame")
            return
        if not self._node.known_peer(protocol, frame):
            return
        self._unanswered = 0
        self._node.heard_from_peer(frame)

    def connection_lost(self, protocol, reason):
        self._node.peer.connections.discard(protocol)
        if self._protocol is protocol:
            self._protocol = None
            if self.running:
                self._node.peer.lost = True
                self.log.warn(
                    "heartbeat link to backup location {location} lost: {why}",
                    location=self._node.settings.backup_location, why=reason.getErrorMessage(),
                )


@implementer(IRoleEffects, IFrameHandler)
class FailoverNode(MultiService):
    """
    @param config: the shared configuration.
    @param name: this node's server name.
    @param start_as_backup: start in the backup role.
    @param epochs: where the epoch is kept.
    @param reactor: for timers and connections (a L{Clock} or
        L{MemoryReactor} in tests).
    @param now: the monotonic clock silence is measured on.
    @param wall: the wall clock, for the times shown to people.
    """

    log = Logger()

    # Wired in by makeService (iwayfailover.tap): ServerPort and ConfigPoller children.
    heartbeat_port = None
    console_port = None
    poller = None

    def __init__(self, config: SharedConfig, name: str, start_as_backup: bool, epochs: EpochStore, reactor,
                 build_listener=plugin_service, now=time.monotonic, wall=time.time):
        super().__init__()
        self.config = config
        self.name = name
        self.settings = config.server(name)
        self.start_as_backup = start_as_backup
        self.reactor = reactor
        self._epochs = epochs
        self._now = now
        self._wall = wall
        self.machine = RoleMachine(self, name, epoch=epochs.load(), wall=wall)
        self.watchdog = Watchdog(reactor, self.settings.threshold, self._silence, now=now)
        self.listeners = ListenerSet(build_listener, wall=wall)
        self.listeners.configure(config.listeners_for(name))
        others = [n for n in config.servers if n != name]
        self.peer = Peer(others[0] if len(others) == 1 else None, now)
        self.refusals = RefusalLog(reactor)
        self.heartbeat_factory = HeartbeatFactory(self, self.refusals)
        self.sender = HeartbeatSender(self)
        self.received = 0
        self._stopping = defer.succeed(None)

    # -- service --

    def startService(self):
        super().startService()
        if self.start_as_backup:
            self.machine.start_backup("started as backup")
        else:
            self.machine.start_live("started as live")

    def stopService(self):
        self.machine.stop("node shutting down")
        stopping = self._stopping
        return defer.gatherResults([stopping, defer.maybeDeferred(super().stopService)])

    # -- IRoleEffects --

    def hold_listeners(self):
        self.listeners.hold()

    def activate_listeners(self):
        self.listeners.start()

    def deactivate_listeners(self):
        self._stopping = self.listeners.stop(STOPPED)

    def start_heartbeats(self):
        self.sender.start()

    def stop_heartbeats(self):
        self._stopping = defer.gatherResults([self._stopping, self.sender.stop()])

    def arm_watchdog(self):
        self.watchdog.start()

    def disarm_watchdog(self):
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

    # -- the watchdog --

    def _silence(self, silence: float) -> None:
        self.machine.silence(
            f"no live signal from {self.peer.name or 'any live server'} for {silence:.3f}s"
            f" (threshold {self.settings.threshold:g}s)"
        )
        if self.machine.role == LIVE:
            self.log.warn(
                "took over from {peer} after {silence:.3f}s of silence; now live with epoch {epoch}",
                peer=self.peer.name, silence=silence, epoch=self.machine.epoch,
            )

    # -- frames --

    def frame(self, kind: wire.Kind, seq: int) -> wire.Frame:
        role = wire.Role.LIVE if self.machine.role == LIVE else wire.Role.BACKUP
        return wire.Frame(kind=kind, name=self.name, role=role, epoch=self.machine.epoch, seq=seq)

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
        gap = self.peer.heard(frame)
        if gap is not None:
            self.log.info("heartbeat from {peer} restored after {gap:.3f}s", peer=frame.name, gap=gap)
        self.machine.observe_peer_epoch(frame.epoch)

    # IFrameHandler, for the heartbeat port

    def connection_made(self, protocol):
        pass

    def frame_received(self, protocol, frame):
        if frame.kind != wire.Kind.HEARTBEAT:
            protocol.refuse(f"expected a heartbeat, got a {frame.kind.name.lower()} frame")
            return
        if not self.known_peer(protocol, frame):
            return
        self.received += 1
        self.peer.connections.add(protocol)
        if frame.role == wire.Role.LIVE and self.machine.role == BACKUP:
            self.watchdog.heard()
        self.heard_from_peer(frame)
        protocol.send(self.frame(wire.Kind.ANSWER, frame.seq))

    def connection_lost(self, protocol, reason):
        if protocol in self.peer.connections:
            self.peer.connections.discard(protocol)
            if self.machine.role == BACKUP:
                self.peer.lost = True
                self.log.warn(
                    "heartbeat from {peer} lost: {why}; taking over after {threshold:g}s of silence",
                    peer=self.peer.name, why=reason.getErrorMessage(), threshold=self.settings.threshold,
                )

    # -- configuration --

    def check_config(self, config: SharedConfig) -> SharedConfig:
        """
        Refuse a configuration in which this node has no section.

        @raise ConfigError: it has none.
        """
        config.server(self.name)
        return config

    def apply_config(self, config: SharedConfig) -> None:
        """Apply a new, checked configuration at once."""
        old, new = self.settings, config.server(self.name)
        old_failover, failover = self.config.failover, config.failover
        self.config, self.settings = config, new
        changes = []
        if failover.heartbeat_interval != old_failover.heartbeat_interval:
            changes.append(f"heartbeat_interval {old_failover.heartbeat_interval:g} -> {failover.heartbeat_interval:g}")
            self.sender.set_interval(failover.heartbeat_interval)
        if failover.reload_interval != old_failover.reload_interval:
            changes.append(f"reload_interval {old_failover.reload_interval:g} -> {failover.reload_interval:g}")
            if self.poller is not None:
                self.poller.set_interval(failover.reload_interval)
        if new.threshold != old.threshold:
            changes.append(f"threshold {old.threshold:g} -> {new.threshold:g}")
            self.watchdog.set_threshold(new.threshold)
        if new.heartbeat_endpoint != old.heartbeat_endpoint:
            changes.append(f"heartbeat_port {old.heartbeat_port} -> {new.heartbeat_port}")
            if self.heartbeat_port is not None:
                self.heartbeat_port.rebind(new.heartbeat_endpoint)
        if new.backup_endpoint != old.backup_endpoint:
            changes.append(f"backup_location {old.backup_location} -> {new.backup_location}")
            if self.sender.running:
                self.sender.start()
        if new.console != old.console:
            changes.append(f"console {old.console} -> {new.console}")
            if self.console_port is not None and new.console is not None:
                self.console_port.rebind(new.console)
            elif new.console is not None or old.console is not None:
                changes[-1] += " (takes effect at the next start)"
        before = {n: listener.spec.command_line for n, listener in self.listeners.listeners.items()}
        after = {n: s.command_line for n, s in config.listeners_for(self.name).items()}
        if before != after:
            changes.append(f"listeners {sorted(before)} -> {sorted(after)}")
        self.listeners.configure(config.listeners_for(self.name))
        self.log.info(
            "configuration reloaded: {changes}", changes="; ".join(changes) or "no change for this server"
        )

    # -- status --

    def status(self) -> dict:
        listeners = self.listeners.status()
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
            "heartbeats": {"sent": self.sender.sent, "received": self.received},
            "settings": {
                "backup_location": self.settings.backup_location,
                "heartbeat_port": self.settings.heartbeat_port,
                "threshold": self.settings.threshold,
                "heartbeat_interval": self.config.failover.heartbeat_interval,
                "reload_interval": self.config.failover.reload_interval,
            },
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

