"""
One failover node: the decision core (L{iwayfailover.core.pair}) wired to
its heartbeat links (L{iwayfailover.links}), timers, serving layer
(floating IP, then channels, then hooks) and epoch store.

Every role rule lives in the core. The node turns what happens on sockets
and timers into observations for it, and carries out the effects it asks
for; L{FailoverNode.status} is the one snapshot (L{iwayfailover.status.NodeStatus})
the status API, metrics, console and C{iwsrv} read, and the console asks no
more of a node than L{iwayfailover.status.INodeControl} offers.
"""

from __future__ import annotations

import collections
import dataclasses
import time
from types import MappingProxyType
from typing import Optional

from twisted.application.service import MultiService
from twisted.internet import defer
from twisted.logger import Logger
from zope.interface import implementer

from iwayfailover import commands, probe, servedby, tls, wire
from iwayfailover.config import ConfigError, SharedConfig, backup_host, changed_keys, endpoint_interface
from iwayfailover.core import events as ev
from iwayfailover.core.events import BACKUP, LIVE, STARTING, STOPPED
from iwayfailover.core.pair import PairCore, settings_for
from iwayfailover.floating import FloatingAddress
from iwayfailover.gaps import GapHistory
from iwayfailover.heartbeat import Gate, HeartbeatFactory, RefusalLog
from iwayfailover.hooks import Hooks
from iwayfailover.links import HeartbeatSender, InboundSessions
from iwayfailover.pulsing import PulseReceiver, Pulser, pulse_period
from iwayfailover.channel import FAILED
from iwayfailover.listeners import ListenerSet, plugin_service
from iwayfailover.serving import Serving
from iwayfailover.stall import StallWatch
from iwayfailover.state import EpochStore
from iwayfailover.status import (  # noqa: F401 (SwitchoverRefused, ListenerRestartRefused: still importable from here)
    LOCAL_COPY, SHARE, TAKEOVER_KINDS, AuthStatus, ChannelStatus, ConfigStatus, HeartbeatStatus, INodeControl,
    ListenerRestartRefused, NodeStatus, PeerStatus, SettingsStatus, SwitchoverRefused, Transition,
)

FRAME_KINDS = {
    wire.Kind.HEARTBEAT: ev.HEARTBEAT, wire.Kind.ANSWER: ev.ANSWER,
    wire.Kind.QUERY: ev.QUERY, wire.Kind.STANDING_DOWN: ev.STANDING_DOWN,
}


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

    def status(self) -> PeerStatus:
        return PeerStatus(
            name=self.name, connected=bool(self.connections),
            last_heartbeat_age=None if self.last_heard is None else self._now() - self.last_heard,
            role=self.role, epoch=self.epoch, priority=self.priority, threshold=self.threshold,
        )


class RoleRecord:
    """
    The role as people and the status API see it: the core's role, epoch and
    cause, the wall-clock time of the last change, and the recent changes.
    """

    def __init__(self, core: PairCore, wall, history: int = 50):
        self._core = core
        self._wall = wall
        self.since = wall()
        self.transitions = collections.deque(maxlen=history)

    @property
    def role(self) -> str:
        return self._core.role

    @property
    def epoch(self) -> int:
        return self._core.epoch

    @property
    def cause(self) -> str:
        return self._core.cause

    def record(self, t: ev.Transition) -> None:
        self.since = self._wall()
        self.transitions.append(Transition(self.since, t.previous, t.role, t.epoch, t.cause))


def best_reply(replies):
    """Of the replies of one peer asked at two places: an answer, else a sign of life, else a refusal."""
    for outcome in (probe.ANSWERED, probe.UNREACHABLE):
        for reply in replies:
            if reply.outcome == outcome:
                return reply
    return replies[0]


PROBE_OUTCOMES = {probe.REFUSED: ev.REFUSED, probe.CLOSED: ev.GONE}
"""How a probe's reply reads to the core; anything else proves nothing (no answer)."""


class CoreNode(MultiService):
    """
    What every node does with its decision core, whatever its coordinator:
    feed it observations, carry out the effects common to all cores
    (timers, serving, transitions, the epoch store, switchover outcomes,
    log lines), restart a listener, reload the configuration, and show its
    channels. L{FailoverNode} (a pair) and
    L{iwayfailover.coordinators.etcd.GroupNode} (a group on etcd) add their
    coordinator's own effects in C{_carry_out_own}.
    """

    log = Logger()
    poller = None
    last_good = None  # the local copy of the configuration (a LastGood), kept by tap
    core = None
    serving = None

    def served_by(self) -> str:
        """This node as a web channel with served_by = true names it to each client: C{serv_a (live, epoch 3)}."""
        return f"{self.name} ({self.core.role}, epoch {self.core.epoch})"

    def _init_common(self, reactor, now, wall, epochs) -> None:
        self.reactor = reactor
        self.now = now
        self.wall = wall  # the wall clock, for times shown to people only
        self._wall = wall
        self._epochs = epochs
        self.takeovers = collections.Counter()
        self._timers = {}
        self._switchover: Optional[defer.Deferred] = None
        self._stopped: Optional[defer.Deferred] = None
        self._retry_due: Optional[float] = None

    def _before_feed(self) -> None:
        """What the node tells the core before any observation (the pulse thread's answers: FailoverNode)."""

    def _feed(self, observation, protocol=None) -> None:
        """Give the core an observation and carry out what it asks for. Never raises."""
        self._before_feed()
        try:
            effects = self.core.handle(observation)
        except Exception:
            self.log.failure("the decision core failed on {observation!r}", observation=observation)
            return
        for effect in effects:
            try:
                if not self._carry_out_common(effect):
                    self._carry_out_own(effect, protocol)
            except Exception:
                self.log.failure("carrying out {effect!r} failed", effect=effect)

    def _carry_out_own(self, effect, protocol) -> None:
        raise AssertionError(f"unknown effect {effect!r}")

    def _carry_out_common(self, effect) -> bool:
        kind = type(effect)
        if kind is ev.StartTimer:
            self._cancel_timer(effect.name)
            self._timers[effect.name] = self.reactor.callLater(
                effect.delay, self._timer_due, effect.name, effect.token)
            if effect.name == "retry":
                self._retry_due = self.now() + effect.delay
        elif kind is ev.CancelTimer:
            self._cancel_timer(effect.name)
        elif kind is ev.Transition:
            self._transition(effect)
        elif kind is ev.Serve:
            self.serving.serve(self.core.epoch, self.core.cause).addCallback(self._served)
        elif kind is ev.StopServing:
            self.serving.stop(effect.final, effect.within).addCallback(self._stopped_serving)
        elif kind is ev.RetryChannels:
            self._retry_due = None
            self.serving.retry().addCallback(self._served)
        elif kind is ev.SaveEpoch:
            self._save_epoch(effect.epoch)
        elif kind is ev.SwitchoverOutcome:
            self._switchover_done(effect)
        elif kind is ev.Note:
            getattr(self.log, effect.level)("{text}", text=effect.text)  # info, warn or critical
            if effect.fault:
                self.serving.fault(effect.text)
        else:
            return False
        return True

    def _timer_due(self, name: str, token: int) -> None:
        self._timers.pop(name, None)
        self._feed(ev.Deadline(name, token))

    def _cancel_timer(self, name: str) -> None:
        call = self._timers.pop(name, None)
        if call is not None and call.active():
            call.cancel()
        if name == "retry":
            self._retry_due = None

    def _cancel_timers(self) -> None:
        for call in self._timers.values():
            if call.active():
                call.cancel()
        self._timers.clear()

    def _transition(self, t: ev.Transition) -> None:
        raise NotImplementedError

    def _served(self, failed) -> None:
        if failed is not None:
            self._feed(ev.Served(failed))

    def _stopped_serving(self, left) -> None:
        if left is not None:
            self._feed(ev.StoppedServing(left))

    def _save_epoch(self, epoch: int) -> None:
        try:
            self._epochs.save(epoch)
        except OSError as e:
            self._feed(ev.EpochSaved(epoch, f"cannot write {self._epochs.path}: {e.strerror or e}"))
            return
        self._feed(ev.EpochSaved(epoch))

    def _switchover_done(self, outcome: ev.SwitchoverOutcome) -> None:
        d, self._switchover = self._switchover, None
        if outcome.ok:
            self.log.info("switchover: {detail}", detail=outcome.detail)
        else:
            self.log.warn("switchover failed: {detail}", detail=outcome.detail)
        if d is None:
            return
        if outcome.ok:
            d.callback({"from": self.name, "to": outcome.to, "epoch": outcome.epoch, "gap": outcome.gap})
        else:
            d.errback(SwitchoverRefused(outcome.detail))

    def reload_config(self) -> None:
        """
        Read the shared configuration again now, as the next poll would (the
        console has just saved it); see L{INodeControl.reload_config}.
        """
        if self.poller is not None and self.poller.running:
            self.poller.poll()  # (a read under way picks the new file up itself)

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

    def _apply_serving_config(self, config: SharedConfig) -> None:
        """The floating IP, then the listeners, of a new configuration."""
        client = config.client_settings(self.name)
        address_settled = defer.succeed(None)
        if (client.virtual_ip, client.interface) != (self.floating.address, self.floating.interface):
            address_settled = self.floating.configure(client.virtual_ip, client.interface)
        # Listeners follow once the new address is in place: one may bind it.
        specs = config.listeners_for(self.name)
        address_settled.addBoth(lambda _: self.listeners.configure(specs)).addCallback(lambda _: self.serving.check_faults())
        address_settled.addErrback(lambda f: self.log.failure("applying the listeners of the new configuration failed", f))

    def _channels_status(self):
        """The channels and the floating address, as the snapshot shows them."""
        retry_in = None if self._retry_due is None else round(max(0.0, self._retry_due - self.now()), 3)
        channels = []
        for name, entry in self.listeners.status().items():
            channel = ChannelStatus.from_entry(name, entry, float)
            if retry_in is not None and channel.state == FAILED:
                channel = dataclasses.replace(channel, retry_in=retry_in)  # the retry the core has armed
            channels.append(channel)
        address = None
        if self.floating.configured:
            address = ChannelStatus.from_entry(self.floating.name, self.floating.status(), float)
        return tuple(channels), address

    def _config_status(self) -> ConfigStatus:
        poller, last_good = self.poller, self.last_good
        from_copy = None if poller is None else poller.local_copy
        copy = from_copy or (None if last_good is None else last_good.copy)
        return ConfigStatus(
            path=self.config.path,
            digest=self.config.digest,
            last_error=None if poller is None else poller.last_error,
            reloads=0 if poller is None else poller.reloads,
            failures=0 if poller is None else poller.failures,
            source=LOCAL_COPY if from_copy is not None else SHARE,
            local_copy=None if copy is None else copy.path,
            local_copy_saved=None if copy is None else copy.saved,
            local_copy_error=None if last_good is None else last_good.error,
        )

    def _takeover_counts(self):
        takeovers = dict.fromkeys(TAKEOVER_KINDS, 0)
        takeovers.update(self.takeovers)
        return MappingProxyType(takeovers)


@implementer(INodeControl)
class FailoverNode(CoreNode):
    """
    One node: the decision core (L{PairCore}) wired to its heartbeat links,
    timers, serving layer (floating IP, channels, hooks) and epoch store.
    Every decision is the core's; this class turns sockets and timers into
    observations and carries out the effects the core asks for.

    @param config: the shared configuration.
    @param name: this node's server name.
    @param start_as_backup: start in the backup role; otherwise ask the
        backup location how it stands first, and start live unless it is.
    @param epochs: where the epoch is kept.
    @param reactor: for timers and connections (a L{Clock} or
        L{MemoryReactor} in tests).
    @param now: the monotonic clock every decision is timed on.
    @param wall: the wall clock, for the times shown to people.
    @param reach_any: L{probe.reach_any}, or a stand-in.
    @param query: L{probe.query}, or a stand-in.
    @param run_command: runs outside commands (floating IP, notify hooks):
        L{commands.run} by default, or a stand-in.
    @param pulse_sockets: None (pulses from a thread of their own, on a real
        UDP socket), or for unit tests a stand-in for C{socket.socket}
        (L{Pulser}).
    """

    # Wired in by makeService (iwayfailover.tap): ServerPort and ConfigPoller children.
    heartbeat_port = None
    console_port = None

    def __init__(self, config: SharedConfig, name: str, start_as_backup: bool, epochs: EpochStore, reactor,
                 build_listener=plugin_service, now=time.monotonic, wall=time.time,
                 reach_any=probe.reach_any, query=probe.query, run_command=None, pulse_sockets=None):
        super().__init__()
        if config.keys is None:
            raise ValueError("a configuration without its keys: read it with tap.load_checked_config")
        self.config = config
        self.keys = config.keys
        self.name = name
        self.check_config(config)
        self.settings = config.server(name)
        self.start_as_backup = start_as_backup
        self._init_common(reactor, now, wall, epochs)
        self._reach_any = reach_any
        self._query = query
        self.core = PairCore(settings_for(config, name), epoch=epochs.load(), now=now)
        self.machine = RoleRecord(self.core, wall)
        self.listeners = ListenerSet(servedby.builder(build_listener, self.served_by), wall=wall, reactor=reactor,
                                     auto_retry=False)
        self.listeners.configure(config.listeners_for(name))
        client = config.client_settings(name)
        run_command = run_command or commands.run
        self.floating = FloatingAddress(reactor, client.virtual_ip, client.interface, run=run_command, wall=wall)
        self.hooks = Hooks(reactor, name, lambda: self.config.client_settings(self.name), run=run_command)
        self.serving = Serving(reactor, self.listeners, self.floating, self.hooks,
                               role=lambda: (self.core.role, self.core.epoch))
        self.peer = Peer(self.core.peer_name, now)
        self.refusals = RefusalLog(reactor)
        self.gate = Gate(reactor, peers=self._peer_addresses)
        self.own_nonces = set()  # of every heartbeat connection, both ways: see the reflection check
        self.sessions = InboundSessions(self)
        self.heartbeat_factory = HeartbeatFactory(
            self.sessions, self.refusals, lambda: self.keys, reactor, initiating=False, gate=self.gate,
            hello_timeout=None, own_nonces=self.own_nonces,
        )
        self.sessions.factory = self.heartbeat_factory
        self.sender = HeartbeatSender(self)
        # Pulses: heartbeats as sealed datagrams beside the connections (iwayfailover.pulsing).
        self._pulses = self._pulses_allowed()
        self.pulses_in = PulseReceiver(reactor, self._pulse_heard, self.refusals.report)
        self.pulser = Pulser(reactor, self._pulse_frame, self._pulse_answered, self.refusals.report,
                             peer_threshold=lambda: self.peer_threshold, now=now, sockets=pulse_sockets,
                             second_address=self._peer_second_address)
        self.pulser.realtime = config.failover.realtime  # read at start only: applied at the next start
        self.pulses_in.second = self.settings.second_address  # applied at the next start
        self._old_location = None  # (the backup location before the last edit moved it, asked until)
        self._differs_logged = None
        self.stalls = StallWatch(reactor, now, self._stall_tick(), lambda late: self._feed(ev.Stalled(late)),
                                 on_tick=self._stall_watch_tick)

    def _stall_tick(self) -> float:
        """The stall watch's tick; while pulsing, also the pulse thread's stamp: four times per its bound at least."""
        tick = max(0.02, min(0.1, self.core.settings.window / 2))
        stamp = self.pulser.tick_interval()
        return tick if stamp is None else min(tick, stamp)

    def _stall_watch_tick(self) -> None:
        self.pulser.tick()
        self.stalls.tick = self._stall_tick()

    def pulses_started(self) -> None:
        """The pulse thread has begun: the stall watch ticks at the stamp's pace from now on."""
        self.stalls.hurry(self._stall_tick())

    def _before_feed(self) -> None:
        # The pulse thread's answers come first: a stall check (a late timer's) must know them.
        if self.pulser.waiting():
            self.pulser.drain()

    # -- derived settings --

    @property
    def peer_threshold(self) -> float:
        """The threshold this node's backup announced (its own copy until it is heard)."""
        return self.core.peer_threshold

    # -- service --

    def startService(self):
        super().startService()
        self.stalls.start()
        self._feed(ev.Start(self.start_as_backup))

    def stopService(self):
        stopped = self._stopped = defer.Deferred()
        self._feed(ev.Shutdown())
        if self.core.role == STOPPED and not stopped.called:
            self.serving.after_stops(lambda: stopped.called or stopped.callback(None))

        def rest(_):
            # The stall watch ran till now: it keeps the pulse thread's stamp fresh while the
            # channels stop (the node is live, and pulses, until they have).
            self.stalls.stop()
            self._cancel_timers()
            self.pulser.close()
            self.pulses_in.stop()
            return defer.gatherResults([self.serving.stopping, self.sender.stop()], consumeErrors=True)

        stopped.addCallback(rest)
        # Hooks still running end within their time limits before the node does.
        return defer.gatherResults([stopped, defer.maybeDeferred(super().stopService), self.hooks.drain()])

    # -- the core: observations in, effects out --

    def _carry_out_own(self, effect, protocol) -> None:
        kind = type(effect)
        if kind is ev.SendHeartbeat:
            self.sender.beat(effect.seq)
        elif kind is ev.Answer:
            target = effect.reply if effect.reply is not None else protocol
            if target is not None and target.transport is not None and target.connected:
                target.send(self.frame(wire.Kind.ANSWER, effect.seq))
        elif kind is ev.AnnounceAgain:
            self.floating.announce_again()
        elif kind is ev.Dial:
            self.sender.start()
        elif kind is ev.Hangup:
            self.serving.track(self.sender.stop())
        elif kind is ev.StandDown:
            self.pulser.refresh()  # its channels have stopped: no pulse says live from now on
            if self.sender.stand_down(effect.switchover) and not effect.switchover:
                self.log.info("listeners stopped; told backup {peer} that this node is standing down", peer=self.peer.name)
        elif kind is ev.Probe:
            self._probe(effect)
        elif kind is ev.AskWitnesses:
            self._ask_witnesses(effect)
        else:
            raise AssertionError(f"unknown effect {effect!r}")

    def _transition(self, t: ev.Transition) -> None:
        self.pulser.refresh()  # no pulse claims the old role once the core has left it
        self.machine.record(t)
        self.log.info(
            "{server} role {previous} -> {role} (epoch {epoch}): {cause}",
            server=self.name, previous=t.previous, role=t.role, epoch=t.epoch, cause=t.cause,
        )
        if t.role == LIVE:
            if t.kind in TAKEOVER_KINDS:
                self.takeovers[t.kind] += 1
                self.log.warn("took over from {peer}: {cause}; now live with epoch {epoch}",
                              peer=self.peer.name, cause=t.cause, epoch=t.epoch)
        elif t.role == BACKUP:
            self.serving.on_backup(t.epoch, t.cause)
            self.sessions.gaps_from_now()
        elif t.role == STOPPED and self._stopped is not None:
            stopped = self._stopped
            self.serving.after_stops(lambda: stopped.called or stopped.callback(None))

    # -- questions to the network --

    def _probe(self, effect: ev.Probe) -> None:
        locations = [self.settings.backup_endpoint]
        if self._old_location is not None and self.now() < self._old_location[1]:
            # Moved by the last edit: the peer may not have read it yet, so it is
            # asked at both places, and an answer at either counts.
            locations.append(self._old_location[0])
        asked = [
            self._query(self.reactor, tls.connector(self.reactor, location, timeout=effect.timeout),
                        self.frame(wire.Kind.QUERY, 0), effect.timeout, self.refusals, self.keys)
            for location in locations
        ]
        d = asked[0] if len(asked) == 1 else defer.gatherResults(asked).addCallback(best_reply)

        def replied(reply):
            frame = reply.frame
            if frame is not None and frame.name != self.name and frame.name in self.config.servers:
                self._note_peer(frame)
                return ev.ProbeResult(effect.purpose, effect.token, ev.ANSWERED, role=frame.role.label,
                                      epoch=frame.epoch, priority=frame.priority, sender=frame.name,
                                      threshold=frame.threshold / 1000)
            if frame is None and reply.outcome in PROBE_OUTCOMES:
                return ev.ProbeResult(effect.purpose, effect.token, PROBE_OUTCOMES[reply.outcome], detail=reply.why)
            return ev.ProbeResult(effect.purpose, effect.token, ev.NO_ANSWER, detail=reply.why)

        def failed(f):
            self.log.failure("probe of {location} failed", f, location=self.settings.backup_location)
            return ev.ProbeResult(effect.purpose, effect.token, ev.NO_ANSWER)

        d.addCallbacks(replied, failed).addCallback(self._feed)

    def _ask_witnesses(self, effect: ev.AskWitnesses) -> None:
        d = self._reach_any(self.reactor, self.config.failover.witness, effect.timeout)

        def answered(witness):
            where = None if witness is None else f"{witness[0]}:{witness[1]}"
            self._feed(ev.WitnessResult(effect.token, where))

        def failed(f):
            self.log.failure("witness check failed", f)
            self._feed(ev.WitnessResult(effect.token, None))

        d.addCallbacks(answered, failed)

    # -- frames --

    def frame(self, kind: wire.Kind, seq: int, flags: int = 0) -> wire.Frame:
        role = {LIVE: wire.Role.LIVE, STARTING: wire.Role.STARTING}.get(self.core.wire_role, wire.Role.BACKUP)
        return wire.Frame(
            kind=kind, name=self.name, role=role, epoch=self.core.epoch, seq=seq, flags=flags,
            priority=self.settings.priority, threshold=wire.threshold_ms(self.settings.threshold),
        )

    # -- pulses --

    def pulses_on(self) -> bool:
        """Are pulses sent and taken (L{_pulses_allowed}, as of the settings in force)?"""
        return self._pulses

    def _pulses_allowed(self) -> bool:
        """
        Pulses where the configuration asks for them (C{pulses = true}), and
        only where they are as safe as the connection: never without a key
        (anyone could make them), and not beside TLS links (pulses are
        signed, not encrypted: TLS keeps names, roles and epochs private).
        Worked out once per configuration: it is asked at every pulse.
        """
        return (self.config.failover.pulses and not self.keys.insecure
                and not tls.is_tls(self.settings.backup_endpoint) and not tls.is_tls(self.settings.heartbeat_endpoint))

    def _peer_second_address(self) -> Optional[str]:
        """The backup's second_address, as this node's copy of the configuration has it."""
        peer = self.config.servers.get(self.core.peer_name or self.core.settings.peer)
        return None if peer is None else peer.second_address

    def pulse_period(self) -> float:
        return pulse_period(self.config.failover.heartbeat_interval, self.peer_threshold)

    def _pulse_frame(self) -> Optional[wire.Frame]:
        """The heartbeat to send as a pulse now: only while live, and only once a heartbeat has been sent."""
        if not self.pulses_on() or self.core.role != LIVE or self.core.wire_role != LIVE or not self.sender.last_seq:
            return None
        return self.frame(wire.Kind.HEARTBEAT, self.sender.last_seq)

    def _pulse_heard(self, origin, frame: wire.Frame) -> None:
        """A pulse on the heartbeat port's number: a live node's heartbeat, taken as if its connection had brought it."""
        if frame.kind != wire.Kind.HEARTBEAT:
            origin.refuse(f"a {frame.kind.name.lower()} frame in a pulse (pulses carry heartbeats only)")
            return
        if not self.pulses_on():
            origin.refuse("pulses are off on this node (pulses = false, insecure = true, or a TLS link)")
            return
        if not self.known_peer(origin, frame):
            return
        self.sessions.live_signal(frame)
        self.heard(origin, frame, ev.IN)

    def _pulse_answered(self, origin, frame: wire.Frame, acked=None) -> None:
        """A pulse back to the live node: the backup's answer to a pulse."""
        if frame.kind != wire.Kind.ANSWER:
            origin.refuse(f"a {frame.kind.name.lower()} frame in an answer pulse")
            return
        if self.known_peer(origin, frame):
            self.pulser.confirm(origin.keys)  # answered on a new connection's keys: the backup holds them
            self.heard(origin, frame, ev.OUT, acked=acked)

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

    def _note_peer(self, frame: wire.Frame) -> None:
        gap = self.peer.heard(frame)
        if gap is not None:
            self.log.info("heartbeat from {peer} restored after {gap:.3f}s", peer=frame.name, gap=gap)
        self._compare_announced(frame)

    def heard(self, protocol, frame: wire.Frame, link: str, acked=None) -> None:
        """An authenticated frame from a known peer, on a link: tell the core (L{ev.Heard}, C{acked} included)."""
        self._note_peer(frame)
        self._feed(ev.Heard(
            sender=frame.name, kind=FRAME_KINDS[frame.kind], role=frame.role.label, epoch=frame.epoch,
            priority=frame.priority, threshold=frame.threshold / 1000, link=link, seq=frame.seq,
            switchover=bool(frame.flags & wire.FLAG_SWITCHOVER), reply=protocol, acked=acked,
        ), protocol)

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

    # the link to the backup location (see HeartbeatSender)

    def out_link_up(self) -> None:
        self._feed(ev.LinkUp(ev.OUT))

    def out_link_lost(self, how: str) -> None:
        self._feed(ev.LinkDown(ev.OUT, how))

    def in_link_lost(self, how: str, from_live: bool, stood_down: bool) -> None:
        self._feed(ev.LinkDown(ev.IN, how, from_live=from_live, stood_down=stood_down))

    def _end_sessions(self, why: str) -> None:
        """Close every heartbeat connection, both ways, proven or not; the sender redials."""
        self.sessions.end_all()
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

    # -- planned switchover --

    def switchover(self, cause: Optional[str] = None, to: Optional[str] = None) -> defer.Deferred:
        """
        Move the live role to the backup: stop every listener, then tell the
        backup to take over, so that the two never serve at once.

        @param to: the node to hand the role to: a pair's only choice is its
            peer (None: the peer).
        @return: a Deferred firing with C{{"from", "to", "epoch", "gap"}} once
            the backup confirms it is live (C{gap}: seconds during which
            neither node's listeners served, as seen from this node), or
            failing with L{SwitchoverRefused}.
        """
        if to is not None and to != self.peer.name:
            return defer.fail(SwitchoverRefused(f"a pair hands the live role to its peer {self.peer.name} only, not {to}"))
        if self._switchover is not None:
            return defer.fail(SwitchoverRefused("a switchover is already under way"))
        d = self._switchover = defer.Deferred()
        self._feed(ev.SwitchoverAsked(cause))
        return d

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
        self._feed(ev.NewSettings(settings_for(config, self.name)))
        pulses, self._pulses = self._pulses, self._pulses_allowed()
        if pulses != self._pulses and self.sender.running:
            self.sender.pulse()  # pulses turned on or off while live: at once, as the key promises
        self.stalls.tick = self._stall_tick()
        if failover.heartbeat_interval != old_failover.heartbeat_interval and self.sender.running:
            self.sender.start()  # the redial backoff is bounded by the interval too
        if failover.reload_interval != old_failover.reload_interval and self.poller is not None:
            self.poller.set_interval(failover.reload_interval)
        # How long the peer may take to read an edit that moves a port.
        keep = 2 * max(self.peer_threshold, new.threshold) + failover.reload_interval
        if new.heartbeat_endpoint != old.heartbeat_endpoint and self.heartbeat_port is not None:
            # Make before break: the old port stays open while the peer may
            # not have read the new configuration yet, so that a port move
            # never looks like a dead process to it.
            self.heartbeat_port.rebind(new.heartbeat_endpoint, keep_old=keep)
        if new.backup_endpoint != old.backup_endpoint:
            # The peer may read the edit later: for a while, probes ask the old place too.
            self._old_location = (old.backup_endpoint, self.now() + keep)
            if self.sender.running:
                self.sender.start()
        if new.console != old.console:
            if self.console_port is not None and new.console is not None:
                self.console_port.rebind(new.console)
            elif new.console is not None or old.console is not None:
                changes.append("the console change takes effect at the next start")
        self._apply_serving_config(config)
        self.log.info(
            "configuration reloaded: {changes}", changes="; ".join(changes) or "no change for this server"
        )

    # -- status --

    def status(self) -> NodeStatus:
        """One snapshot of how this node stands: what the API, metrics, console and iwsrv show."""
        channels, address = self._channels_status()
        return NodeStatus(
            server=self.name,
            role=self.machine.role,
            epoch=self.machine.epoch,
            since=self.machine.since,
            cause=self.machine.cause,
            peer=self.peer.status(),
            channels=channels,
            address=address,
            heartbeats=HeartbeatStatus(
                sent=self.sender.sent, received=self.sessions.received,
                # refused on the heartbeat port, and by this node as a sender
                rejected=self.heartbeat_factory.rejected + self.sender.rejected,
                max_gap=self.sessions.max_gap, largest_stall=self.stalls.largest,
                pulses_sent=self.pulser.sent,
                pulses_received=self.pulses_in.counts.received + self.pulser.counts.received,
                pulses_rejected=self.pulses_in.counts.rejected + self.pulser.counts.rejected,
                gaps=GapHistory(
                    heard=self.sessions.heard.snapshot(awaiting=self.core.role == BACKUP),
                    sent=self.sender.gaps.snapshot(awaiting=self.core.role == LIVE),
                    at=self.wall(),
                ),
            ),
            settings=SettingsStatus(
                backup_location=self.settings.backup_location,
                heartbeat_port=self.settings.heartbeat_port,
                threshold=self.settings.threshold,
                heartbeat_interval=self.config.failover.heartbeat_interval,
                reload_interval=self.config.failover.reload_interval,
                console_users=self.settings.console_users or self.config.failover.console_users,
            ),
            auth=AuthStatus.from_json(self.keys.status()),
            config=self._config_status(),
            transitions=tuple(self.machine.transitions),
            takeovers=self._takeover_counts(),
        )
