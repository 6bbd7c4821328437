"""
A simulated world for the decision core: two nodes of a pair, their
network, their processes, a witness and their disks, in simulated time,
driven by one seeded random generator.

The nodes run the real L{iwayfailover.core.pair.PairCore}. Everything the
core cannot see is simulated here, and modelled on what a node observes:
frames that arrive (in order, per connection, late after a cut heals),
links that drop and how, probes that are answered, refused or time out,
timers that come due (late, after a pause), channels that bind or fail
to bind a port the other node still holds, and stops that take time.

After every event the invariants are checked (see L{World.check}).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field, replace
from typing import Dict, List, Optional

from iwayfailover.core import events as ev
from iwayfailover.core.ballot import slot_of
from iwayfailover.core.pair import (
    PLANTS, RETRY_CAP, STARTUP_CHECK_TIMEOUT, SWITCHOVER_CONFIRM, CoreSettings, PairCore,
)

from sim.schedule import Schedule, Violation

WORLD_PLANTS = frozenset({"no-port-grace", "pulse-after-hangup", "pulse-without-stamp", "ack-lost-pulses"})
"""
Rules of the node around the core that the world models, and can switch off: a moved port closed at
once; pulses that go on, claiming the live role, after the node stopped being live (the node sends them
only while live, and stops at the core's Hangup); a pulse thread that pulses on while the reactor is
stuck (it pulses only while the reactor's stamp is younger than half the backup's threshold); a pulse
thread that takes a pulse sent for one the backup answered (a lost pulse is not answered).
"""

A, B = "serv_a", "serv_b"
NAMES = (A, B)
UNANSWERED_LIMIT = 5
"""As the node's sender: heartbeats without an answer before it drops the link and dials again."""
PULSE_SESSIONS = 8
"""As iwayfailover.pulse.MAX_SESSIONS: the newest sessions a node takes pulses on."""


def pulse_period(interval: float, peer_threshold: float) -> float:
    """As iwayfailover.pulsing.pulse_period."""
    return max(0.005, min(interval, peer_threshold / 12))


def stamp_bound(peer_threshold: float) -> float:
    """As iwayfailover.pulsing.stamp_bound: the pulse thread pulses while the reactor turned this recently."""
    return peer_threshold / 2


class PulseReply:
    """Where a pulse came from, as the core's Answer sees it: answered by pulse on the same session."""

    def __init__(self, sender: str, session: int, sent_at: float):
        self.sender, self.session, self.sent_at = sender, session, sent_at
        self.alive = True




@dataclass
class Scenario:
    """The world's fixed shape, drawn from the seed."""

    threshold: float
    interval: float
    witness: bool
    self_fence: bool
    failback: bool
    same_port: bool
    slow_stop: Dict[str, float]
    priorities: Dict[str, Dict[str, int]]
    """Each node's own copy of the configuration's priorities: copies may differ."""
    start: str
    overlap: bool = False
    """Faults may come while the one before still lasts."""
    faults: List[tuple] = field(default_factory=list)
    pulses: bool = False
    """The nodes send pulses (heartbeats as datagrams beside the connection)."""
    pulse_loss: float = 0.0
    """The share of pulses lost on the way, each on its own."""

    def describe(self) -> str:
        return (
            f"threshold {self.threshold:g}s, interval {self.interval:g}s, witness {'yes' if self.witness else 'no'}"
            f"{' (self_fence)' if self.witness and self.self_fence else ''}, failback {'yes' if self.failback else 'no'},"
            f" {'one host and one port' if self.same_port else 'two hosts'}, channel stop times {self.slow_stop},"
            f" priority copies {self.priorities}, start {self.start}{', overlapping faults' if self.overlap else ''},"
            f" pulses {'on (%d%% lost)' % round(100 * self.pulse_loss) if self.pulses else 'off'}"
        )


class Conn:
    """One TCP connection between two nodes' processes (a heartbeat link or a probe)."""

    def __init__(self, ident: int, dialer: str, acceptor: str, kind: str):
        self.id = ident
        self.dialer, self.acceptor, self.kind = dialer, acceptor, kind
        self.alive = True
        self.established = False
        self.from_live = False
        self.stood_down = False
        self.held = {dialer: [], acceptor: []}  # frames for that node, held by a cut in their direction
        self.last_arrival = {dialer: 0.0, acceptor: 0.0}
        self.dead_for = set()  # the ends that have learnt the connection is closed

    def other(self, name: str) -> str:
        return self.acceptor if name == self.dialer else self.dialer


class Node:
    """One server's process (or its absence) and the sim's effectors for its core."""

    def __init__(self, world: "World", name: str, settings: CoreSettings):
        self.world = world
        self.name = name
        self.settings = settings
        self.core: Optional[PairCore] = None
        self.incarnation = 0
        self.paused_at: Optional[float] = None
        self.busy = False  # paused_at is set because the reactor is busy: the pulse thread runs on
        self.inbox: List[tuple] = []
        self.disk_epoch = 0
        self.disk_full = False
        # serving layer
        self.stop_due: Optional[float] = None  # when the stop under way ends (its generation: stopping_generation)
        self.stopping_generation = -1
        self.channels_up = False
        self.holding_port = False
        self.serve_generation = 0
        self.stopping = False
        # links
        self.out: Optional[Conn] = None
        self.dialling = False
        self.dial_generation = 0
        self.seq = 0
        self.unanswered = 0
        self.current_conn: Optional[Conn] = None
        self.shutting_down = False
        self.host_down = False  # powered off: nothing answers, nothing is closed
        # pulses
        self.last_seq = 0  # the latest heartbeat the core asked for: pulses repeat it
        self.pulse_session: Optional[int] = None  # the newest outgoing connection's: pulses are sealed for it
        self.pulse_number = 0
        self.pulse_generation = 0
        self.book: Dict[int, int] = {}  # sessions this process takes pulses on -> the highest number taken
        self.ports = {A: 1200, B: 1200}
        """This node's copy of where each server's heartbeat port is."""
        self.old_peer_port = (None, 0.0)
        self.listening = {1200}
        self.opened = {1200}
        """Every port this process has listened on."""
        """The heartbeat ports this node's process has open (an old one kept a while after a move)."""

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def running(self) -> bool:
        return self.up and not self.paused

    @property
    def serving(self) -> bool:
        """What the safety invariant counts: channels up in a process that runs."""
        return self.running and self.channels_up

    def frame_fields(self) -> dict:
        core = self.core
        return dict(sender=self.name, role=core.wire_role, epoch=core.epoch,
                    priority=self.settings.priority, threshold=self.settings.threshold)


class World(Schedule):
    def __init__(self, seed: int, plant: Optional[str] = None, faults: int = 5):
        self.seed = seed
        self.rng = random.Random(seed)
        # Pulses draw from a generator of their own, so that a seed's other events stay as they were.
        self.prng = random.Random(seed * 1000003 + 17)
        self.plant = plant
        super().__init__()
        self.scenario = self._draw(faults)
        self._settle = None
        sc = self.scenario
        self.nodes: Dict[str, Node] = {}
        for name in NAMES:
            peer = B if name == A else A
            slot, modulus = slot_of(name, NAMES)
            own = sc.priorities[name]
            settings = CoreSettings(
                name=name, peer=peer, priority=own[name], threshold=sc.threshold, interval=sc.interval,
                peer_threshold=sc.threshold, peer_priority=own[peer], witnesses=sc.witness,
                self_fence=sc.self_fence, failback=sc.failback, preferred=A if sc.failback else None,
                failback_delay=max(1.0, 3 * sc.threshold), slot=slot, modulus=modulus,
            )
            self.nodes[name] = Node(self, name, settings)
        # the network: cut[(x, y)] is True while x's packets do not reach y
        self.cut = {(A, B): False, (B, A): False, (A, "w"): False, (B, "w"): False}
        self.resets = False  # a firewall resetting every connection between the two
        self.tcp_stall = False  # TCP between the two carries nothing (held, as by a cut); datagrams pass
        self.stall_started: Optional[float] = None
        self.busy_since = {A: None, B: None}  # the reactor busy (the pulse thread running) since
        self.lost_while_busy = {A: False, B: False}  # a pulse to or from the node was lost since its reactor got busy
        self.udp_drop = False  # datagrams between the two are dropped (a firewall rule); TCP passes  # the reactor busy (the pulse thread running) since
        self.file_ports = {A: 1200, B: 1200}  # the shared file as it is now: what a starting process reads
        self.file_edit = None  # the last edit of priorities and failback, likewise
        self.witness_up = True
        # invariant bookkeeping
        self.epochs_used: Dict[int, str] = {}
        self.whole_since = 0.0
        self.stable_since = 0.0
        self.link_whole_since = 0.0
        self.unpaused_since = {A: 0.0, B: 0.0}
        self.live_since = {A: None, B: None}
        self.overlap_since: Optional[float] = None
        self.heal_at = -1e9
        self.arbiter_since = -1e9  # when a witness last became reachable from one node only
        self._arbiter_before = False
        self.transitions_since_fault = 0

    # -- drawing a scenario --

    def _draw(self, count: int) -> Scenario:
        r = self.rng
        threshold = r.choice([0.3, 1.0, 3.0])
        interval = round(threshold / r.choice([3, 5]), 4)
        witness = r.random() < 0.4
        divergent = r.random() < 0.3
        if divergent:
            priorities = {A: {A: 10, B: 0}, B: {A: 0, B: 10}}
        else:
            pa, pb = r.choice([(0, 0), (10, 0), (0, 10)])
            priorities = {A: {A: pa, B: pb}, B: {A: pa, B: pb}}
        sc = Scenario(
            threshold=threshold, interval=interval, witness=witness, self_fence=witness and r.random() < 0.8,
            failback=r.random() < 0.2, same_port=r.random() < 0.35,
            slow_stop={n: r.choice([0.0, 0.0, 0.02, 2.0]) for n in NAMES}, priorities=priorities,
            start=r.choice(["a-live", "a-live", "both-live", "both-backup", "b-live"]),
            overlap=r.random() < 0.3,
        )
        kinds = ["crash", "stop", "pause", "pause", "partition", "oneway", "resets", "switchover", "disk",
                 "both-restart", "power", "edit", "ports"]
        p = self.prng
        sc.pulses = p.random() < 0.7
        sc.pulse_loss = p.choice([0.0, 0.0, 0.3]) if sc.pulses else 0.0
        if p.random() < 0.5:
            kinds += ["tcp-stall"]
        if sc.pulses:
            kinds += ["busy", "busy", "udp-drop"]
        if witness:
            kinds += ["witness-down", "witness-cut", "witness-cut"]
        for _ in range(count):
            kind = r.choice(kinds)
            who = r.choice(["live", "backup", A, B])
            factor = r.choice([0.3, 0.8, 1.5, 3.0])
            sc.faults.append((kind, who, round(factor * threshold + r.random() * interval, 4),
                              r.random() < 0.5, r.random()))
        return sc

    # -- the event loop --

    def run(self) -> Optional[str]:
        """Run the whole scenario; return the first violation, or None."""
        sc = self.scenario
        self.log(f"scenario: {sc.describe()}")
        self._start_pair()
        t = self.settle_time() + STARTUP_CHECK_TIMEOUT
        for fault in sc.faults:
            t += self.rng.uniform(0.2, 1.0) * sc.threshold
            self.at(t - self.t, self._fault, fault)
            if sc.overlap and self.rng.random() < 0.5:
                t += self.rng.uniform(0.0, fault[2])  # the next fault comes while this one lasts
            else:
                t += fault[2] + self.settle_time()
        t += self.settle_time()
        self.at(t - self.t, lambda: None)
        return self.run_until(t)

    def settle_time(self) -> float:
        """How long a whole network and steady processes take to come to one serving node, at most."""
        if self._settle is None:
            self._settle = self._settle_time()
        return self._settle

    def _settle_time(self) -> float:
        sc = self.scenario
        window = min(1.0, sc.threshold / 4)
        slow = max(sc.slow_stop.values())
        retry = RETRY_CAP if sc.same_port else 0.0  # a port held by the other node is retried at most this late
        return sc.threshold + 2 * sc.interval + 2 * window + retry + slow + 0.5

    # -- processes --

    def _start_pair(self) -> None:
        start = self.scenario.start
        modes = {"a-live": {A: False, B: True}, "b-live": {A: True, B: False},
                 "both-live": {A: False, B: False}, "both-backup": {A: True, B: True}}[start]
        self.start_nodes(modes)

    def start_node(self, name: str, as_backup: bool) -> None:
        self.start_nodes({name: as_backup})

    def start_nodes(self, modes: Dict[str, bool]) -> None:
        """Start processes at once: each binds its heartbeat port before any of them asks the other."""
        started = []
        for name, as_backup in modes.items():
            node = self.nodes[name]
            if node.up:
                continue
            node.incarnation += 1
            node.paused_at = None
            node.busy = False
            self.busy_since[name] = None
            node.shutting_down = False
            node.out = None
            node.dialling = False
            node.unanswered = 0
            node.last_seq, node.pulse_session, node.pulse_number, node.book = 0, None, 0, {}
            # A starting process reads the file as it is now.
            node.ports = dict(self.file_ports)
            node.old_peer_port = (None, 0.0)
            if self.file_edit is not None:
                priorities, failback = self.file_edit
                peer = node.settings.peer
                node.settings = replace(node.settings, priority=priorities[name], peer_priority=priorities[peer],
                                        failback=failback, preferred=A if failback else None)
            plants = frozenset([self.plant]) if self.plant else frozenset()
            node.core = PairCore(node.settings, node.disk_epoch, now=lambda: self.t,
                                 plants=plants & PLANTS)
            node.listening = {node.ports[name]}
            node.opened = set(node.listening)
            self._views_changed()
            self.unpaused_since[name] = self.t
            self.disturbed(self.t + STARTUP_CHECK_TIMEOUT)  # its startup check may take that long
            self.log(f"{name}: process starts{' as backup (-b)' if as_backup else ' (live unless its peer is)'},"
                     f" epoch {node.disk_epoch} on disk")
            started.append((node, as_backup))
        for node, as_backup in started:
            self.feed(node, ev.Start(as_backup))

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            return
        self.log(f"{name}: kill -9")
        self._process_gone(node)

    def _process_gone(self, node: Node) -> None:
        node.core = None
        node.incarnation += 1
        node.paused_at = None
        node.busy = False
        self.busy_since[node.name] = None
        node.inbox = []
        node.channels_up = False
        node.holding_port = False
        node.stopping = False
        node.serve_generation += 1
        node.dial_generation += 1
        self.live_since[node.name] = None
        for conn in self.conns_of(node.name):
            if node.host_down:
                conn.alive = False  # no FIN, no RST: the far end hears nothing
                conn.dead_for.add(node.name)
            else:
                self.close_conn(conn, node.name, ev.CLOSED)
        self.disturbed(self.t)

    def pause(self, name: str, busy: bool = False) -> None:
        """SIGSTOP (the whole process stops), or with C{busy} a reactor held up while the pulse thread runs."""
        node = self.nodes[name]
        if node.running:
            node.paused_at = self.t
            node.busy = busy
            if busy:
                self.busy_since[name] = self.t
                self.lost_while_busy[name] = False
            self.log(f"{name}: {'reactor busy' if busy else 'SIGSTOP'}")
            tick = max(0.02, min(0.1, min(1.0, node.settings.threshold / 4) / 2))
            due = self.t + self.rng.uniform(0, tick)
            inc = node.incarnation

            def watch():
                late = self.t - due
                if late > tick:
                    self.feed(node, ev.Stalled(late))

            def queue_watch():
                if node.incarnation == inc and node.paused:
                    node.inbox.append(("timer", watch))
            self.at(due - self.t, queue_watch)

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up or not node.paused:
            return
        stalled = self.t - node.paused_at
        busy, node.paused_at, node.busy = node.busy, None, False
        since_busy, self.busy_since[name] = self.busy_since[name], None
        peer = self.nodes[B if name == A else A]
        sc = self.scenario
        # Judged once the reactor has caught up (the thread's answers and the late timers are taken at once).
        kept = (busy and node.core.role == ev.LIVE and sc.pulses and not self.lost_while_busy[name]
                and self._link_whole()
                and node.pulse_session is not None and node.last_seq and peer.running
                and self.unpaused_since[peer.name] < since_busy and self.live_since[name] < since_busy
                and stalled < stamp_bound(node.core.peer_threshold) + node.core.peer_threshold
                - pulse_period(sc.interval, node.core.peer_threshold) - 0.05)
        self.unpaused_since[name] = self.t
        self.disturbed(self.t)
        self.log(f"{name}: {'reactor free' if busy else 'SIGCONT'} after {stalled:.3f}s")
        incarnation = node.incarnation
        # The node takes the answers its pulse thread read first (before it tells
        # the core anything else), then Twisted runs the timers that came due,
        # before it reads sockets; what waits in them is read a moment later, in order.
        inbox, node.inbox = node.inbox, []
        for wanted in ("thread", "timer"):
            for kind, fn in inbox:
                if kind == wanted:
                    if node.incarnation != incarnation or node.paused:
                        return
                    fn()
        # (Fenced: backup at once; a failback's handover due meanwhile is no fence.)
        if kept and node.up and node.core.role == ev.BACKUP and peer.core is not None and peer.core.role != ev.LIVE:
            raise Violation(f"pulse thread: {name} stopped serving after its reactor was busy for only"
                            f" {stalled:.3f}s, while its pulse thread pulsed and its backup answered")
        backlog = [fn for kind, fn in inbox if kind not in ("thread", "timer")]
        if backlog:
            self.at(self.rng.uniform(0.001, 0.005), self._read_backlog, node, incarnation, backlog)

    def _read_backlog(self, node: Node, incarnation: int, backlog: list) -> None:
        for fn in backlog:
            if node.incarnation != incarnation:
                return
            if node.paused:
                node.inbox.append(("io", fn))
                continue
            fn()

    def when_running(self, node: Node, kind: str, fn) -> bool:
        """Deliver now, or hold it for the process's resumption. False: the process is gone."""
        if not node.up:
            return False
        if node.paused:
            node.inbox.append((kind, fn))
            return False
        return True

    # -- feeding the core and carrying out its effects --

    def feed(self, node: Node, observation, conn: Optional[Conn] = None) -> None:
        if not node.running:
            return
        node.current_conn = conn
        effects = node.core.handle(observation)
        for effect in effects:
            if not node.up:
                break
            self.carry_out(node, effect)

    def carry_out(self, node: Node, e) -> None:
        name = node.name
        core = node.core
        if isinstance(e, ev.StartTimer):
            incarnation = node.incarnation
            self.at(e.delay, self._timer, node, incarnation, e.name, e.token)
        elif isinstance(e, ev.CancelTimer):
            pass  # the core ignores a token it no longer holds
        elif isinstance(e, ev.Transition):
            self._transition(node, e)
        elif isinstance(e, ev.Serve):
            node.serve_generation += 1
            self.at(self.rng.uniform(0.0005, 0.003), self._bind, node, node.incarnation, node.serve_generation)
        elif isinstance(e, ev.RetryChannels):
            self.at(self.rng.uniform(0.0005, 0.003), self._bind, node, node.incarnation, node.serve_generation)
        elif isinstance(e, ev.StopServing):
            stop = self.scenario.slow_stop[name]
            if e.within is not None:
                stop = min(stop, e.within)
            if not node.channels_up and not node.holding_port:
                stop = 0.0
            if node.stop_due is not None and node.stopping_generation == node.serve_generation:
                stop = min(stop, node.stop_due - self.t)  # a stop under way is never put off
            node.serve_generation += 1
            node.stopping_generation = node.serve_generation
            node.stop_due = self.t + stop
            if stop <= 0.0:
                node.channels_up = node.holding_port = False  # killed on the spot
            self.at(stop, self._stopped, node, node.incarnation, node.serve_generation)
        elif isinstance(e, ev.Dial):
            node.dialling = True
            node.dial_generation += 1
            self._dial(node, node.dial_generation)
            if self.scenario.pulses:
                node.pulse_generation += 1
                sc = self.scenario
                self.at(pulse_period(sc.interval, sc.threshold), self._pulse_tick, node, node.incarnation,
                        node.pulse_generation)
        elif isinstance(e, ev.Hangup):
            node.dialling = False
            node.dial_generation += 1
            if "pulse-after-hangup" not in self.plants:
                node.pulse_generation += 1
            if node.out is not None:
                self.close_conn(node.out, name, ev.CLOSED)
        elif isinstance(e, ev.SendHeartbeat):
            node.last_seq = e.seq
            if node.out is not None and node.out.established:
                if node.unanswered >= UNANSWERED_LIMIT:
                    node.unanswered = 0
                    self.log(f"{name}: backup has not answered {UNANSWERED_LIMIT} heartbeats; dialling again")
                    self.close_conn(node.out, name, ev.RESET)
                    return
                node.unanswered += 1
                self.send(node.out, name, dict(kind=ev.HEARTBEAT, seq=e.seq, **node.frame_fields()))
        elif isinstance(e, ev.Answer):
            conn = e.reply if e.reply is not None else node.current_conn
            if isinstance(conn, PulseReply):
                self._send_pulse(node, conn.sender, conn.session,
                                 dict(kind=ev.ANSWER, seq=e.seq, **node.frame_fields()), answer=True,
                                 sent_at=conn.sent_at)
            elif conn is not None and conn.alive:
                self.send(conn, name, dict(kind=ev.ANSWER, seq=e.seq, **node.frame_fields()))
        elif isinstance(e, ev.StandDown):
            if node.out is not None and node.out.established:
                node.seq += 1
                self.send(node.out, name, dict(kind=ev.STANDING_DOWN, seq=node.seq, switchover=e.switchover,
                                               **node.frame_fields()))

        elif isinstance(e, ev.Probe):
            self._probe(node, e)
        elif isinstance(e, ev.AskWitnesses):
            self._ask_witness(node, e)
        elif isinstance(e, ev.SaveEpoch):
            if node.disk_full:
                self.feed(node, ev.EpochSaved(e.epoch, "No space left on device"))
            else:
                node.disk_epoch = e.epoch
                self.feed(node, ev.EpochSaved(e.epoch))
        elif isinstance(e, ev.AnnounceAgain):
            pass  # no neighbours' caches in this world
        elif isinstance(e, ev.Note):
            self.log(f"{name}: [{e.level}] {e.text}")
        elif isinstance(e, ev.SwitchoverOutcome):
            self.log(f"{name}: switchover {'done' if e.ok else 'failed'}: {e.detail}")
        else:
            raise AssertionError(f"unknown effect {e!r}")
        if core is not None and node.core is core and core.role == ev.STOPPED and node.shutting_down:
            # The process exits once stopped (the clean stop's end).
            node.shutting_down = False
            self.log(f"{name}: process exits")
            self._process_gone(node)

    def _timer(self, node: Node, incarnation: int, name: str, token: int) -> None:
        if node.incarnation != incarnation:
            return
        fire = lambda: self.feed(node, ev.Deadline(name, token))  # noqa: E731
        if self.when_running(node, "timer", fire):
            fire()

    def _transition(self, node: Node, e: ev.Transition) -> None:
        self.log(f"{node.name}: {e.previous} -> {e.role} (epoch {e.epoch}) [{e.kind}] {e.cause}")
        self.transitions_since_fault += 1
        if e.role == ev.HANDING_OVER:
            # A planned switchover (or failback) stops serving for a moment, and
            # waits up to max(5 s, threshold) for a confirmation, then asks.
            sc = self.scenario
            self.disturbed(self.t + max(sc.slow_stop.values()) + max(SWITCHOVER_CONFIRM, sc.threshold)
                           + min(1.0, sc.threshold / 4))
        if e.role == ev.LIVE:
            self.live_since[node.name] = self.t
            self._check_takeover(node, e)
        else:
            self.live_since[node.name] = None

    # -- serving --

    def _bind(self, node: Node, incarnation: int, generation: int) -> None:
        if node.incarnation != incarnation or node.serve_generation != generation or not node.running:
            if node.incarnation == incarnation and node.paused and node.serve_generation == generation:
                node.inbox.append(("io", lambda: self._bind(node, incarnation, generation)))
            return
        other = self.nodes[B if node.name == A else A]
        if self.scenario.same_port and other.holding_port:
            self.log(f"{node.name}: channel web FAILED: Address already in use")
            self.feed(node, ev.Served(("web",)))
            return
        node.channels_up = node.holding_port = True
        self.feed(node, ev.Served(()))

    def _stopped(self, node: Node, incarnation: int, generation: int) -> None:
        if node.incarnation != incarnation or node.serve_generation != generation:
            return
        node.channels_up = node.holding_port = False
        fire = lambda: self.feed(node, ev.StoppedServing())  # noqa: E731
        if self.when_running(node, "io", fire):
            fire()

    # -- the network --

    def reachable(self, x: str, y: str) -> bool:
        return not self.cut[(x, y)] and not self.cut[(y, x)]

    def delay(self) -> float:
        return self.rng.uniform(0.0001, 0.002) if self.rng.random() < 0.97 else self.rng.uniform(0.002, 0.04)

    def conns_of(self, name: str) -> List[Conn]:
        seen = []
        for node in self.nodes.values():
            if node.out is not None and node.out.alive and name in (node.out.dialer, node.out.acceptor):
                seen.append(node.out)
        seen.extend(c for c in self.accepted if c.alive and name in (c.dialer, c.acceptor) and c not in seen)
        return seen

    @property
    def accepted(self) -> List[Conn]:
        if not hasattr(self, "_accepted"):
            self._accepted = []
        self._accepted = [c for c in self._accepted if c.alive]
        return self._accepted

    def _dial(self, node: Node, generation: int) -> None:
        if not node.running or not node.dialling or node.dial_generation != generation:
            if node.up and node.paused and node.dial_generation == generation:
                node.inbox.append(("io", lambda: self._dial(node, generation)))
            return
        if node.out is not None and node.out.alive:
            return
        peer = self.nodes[node.settings.peer]
        interval = node.settings.interval
        retry = lambda: self._dial(node, generation)  # noqa: E731
        if not self.reachable(node.name, peer.name) or self.tcp_stall or peer.host_down:
            # Connect attempts are bounded by the heartbeat interval, then dialled again.
            self.at(interval + self.rng.uniform(0, interval / 10), retry)
            return
        if self.resets or not peer.up or node.ports[peer.name] not in peer.listening:
            self.at(self.rng.uniform(interval / 10, interval), retry)
            return
        if peer.paused:
            self.at(interval, retry)  # the hello is not answered in time
            return
        conn = Conn(next(self.counter), node.name, peer.name, "link")
        conn.established = True
        node.out = conn
        node.unanswered = 0
        # Both ends hold the new connection's pulse keys: the dialler pulses on them from now on.
        node.pulse_session, node.pulse_number = conn.id, 0
        node.book[conn.id] = 0
        peer.book[conn.id] = 0
        for book in (node.book, peer.book):
            while len(book) > PULSE_SESSIONS:
                del book[min(book)]
        self.accepted.append(conn)
        self.log(f"{node.name}: heartbeat link to {peer.name} is up (#{conn.id})")
        self.feed(node, ev.LinkUp(ev.OUT))

    def send(self, conn: Conn, sender: str, frame: dict) -> None:
        receiver = conn.other(sender)
        if receiver in conn.dead_for and sender not in conn.dead_for:
            # The far end is gone (its process or host restarted): a reset comes back, if it can.
            if not self.nodes[receiver].host_down and self.reachable(sender, receiver) and conn.kind == "link":
                self.at(2 * self.delay(), self._link_down, conn, sender, ev.RESET)
            return
        if self.cut[(sender, receiver)] or self.tcp_stall or conn.held[receiver]:
            conn.held[receiver].append(frame)  # TCP retransmits it after the heal, in order
            return
        self._transmit(conn, receiver, frame)

    def _transmit(self, conn: Conn, receiver: str, frame: dict) -> None:
        arrival = max(self.t + self.delay(), conn.last_arrival[receiver] + 1e-6)
        conn.last_arrival[receiver] = arrival
        self.at(arrival - self.t, self._arrive, conn, receiver, frame)

    def _arrive(self, conn: Conn, receiver: str, frame: dict) -> None:
        if receiver in conn.dead_for:
            return
        node = self.nodes[receiver]
        if not node.up:
            return
        deliver = lambda: self._deliver(conn, node, frame)  # noqa: E731
        if self.when_running(node, "io", deliver):
            deliver()

    def _deliver(self, conn: Conn, node: Node, frame: dict) -> None:
        if node.name in conn.dead_for:
            return
        link = ev.OUT if conn.dialer == node.name else ev.IN
        if conn.kind == "probe":
            link = "probe"
        if link == ev.IN and conn.kind == "link":
            conn.from_live = frame["role"] == ev.LIVE
            if frame["kind"] == ev.STANDING_DOWN:
                conn.stood_down = True
        if link == ev.OUT and frame["kind"] == ev.ANSWER:
            node.unanswered = 0
        if conn.kind == "probe" and conn.dialer == node.name:
            self._probe_answered(conn, node, frame)
            return
        self.feed(node, ev.Heard(link=link if link != "probe" else ev.IN, reply=conn, **frame), conn)

    def close_conn(self, conn: Conn, closer: str, how: str) -> None:
        """C{closer}'s end closes; the other end learns it when the news can reach it."""
        if closer in conn.dead_for:
            return
        first = conn.alive
        conn.alive = False
        conn.dead_for.add(closer)
        for name in (conn.dialer, conn.acceptor):
            node = self.nodes[name]
            if node.out is conn:
                node.out = None
        other = conn.other(closer)
        if conn.kind != "link":
            conn.dead_for.add(other)
            return
        closer_node = self.nodes[closer]
        if closer_node.up and closer_node.running and conn.dialer == closer:
            self.feed(closer_node, ev.LinkDown(ev.OUT, ev.LOCAL))
            if closer_node.dialling and closer_node.up:
                gen = closer_node.dial_generation
                self.at(self.rng.uniform(closer_node.settings.interval / 10, closer_node.settings.interval / 5),
                        self._dial, closer_node, gen)
        if not first or self.cut[(closer, other)] or conn.held[other]:
            return  # the other end never hears of it
        # The close travels behind the data sent before it.
        arrival = max(self.t + self.delay(), conn.last_arrival[other] + 1e-6)
        self.at(arrival - self.t, self._link_down, conn, other, how)

    def _link_down(self, conn: Conn, name: str, how: str) -> None:
        node = self.nodes[name]
        if not node.up or name in conn.dead_for:
            return

        def tell():
            if name in conn.dead_for:
                return
            conn.dead_for.add(name)
            if conn.dialer == name:
                if node.out is conn:
                    node.out = None
                self.feed(node, ev.LinkDown(ev.OUT, how))
                if node.dialling and node.up:
                    self.at(self.rng.uniform(node.settings.interval / 10, node.settings.interval),
                            self._dial, node, node.dial_generation)
            else:
                self.feed(node, ev.LinkDown(ev.IN, how, from_live=conn.from_live, stood_down=conn.stood_down))

        if self.when_running(node, "io", tell):
            tell()

    def reset_links(self) -> None:
        """A firewall resets every connection between the two nodes."""
        for conn in list(self.accepted):
            if conn.kind == "link":
                conn.alive = False
                for name in (conn.dialer, conn.acceptor):
                    n = self.nodes[name]
                    if n.out is conn:
                        n.out = None
                    self.at(self.delay(), self._link_down, conn, name, ev.RESET)

    def heal_held(self) -> None:
        """A cut healed: what TCP held back is delivered, in order."""
        for conn in list(self.accepted):
            for receiver, frames in conn.held.items():
                sender = conn.other(receiver)
                if frames and not self.cut[(sender, receiver)]:
                    conn.held[receiver] = []
                    for frame in frames:
                        self._transmit(conn, receiver, frame)

    # -- probes and witnesses --

    def _probe(self, node: Node, e: ev.Probe) -> None:
        peer = self.nodes[node.settings.peer]
        incarnation = node.incarnation
        reply = lambda outcome, **kw: self._probe_result(node, incarnation, e, outcome, kw)  # noqa: E731
        if not self.reachable(node.name, peer.name) or self.tcp_stall or peer.host_down:
            self.at(e.timeout, lambda: self._probe_result(node, incarnation, e, ev.NO_ANSWER, {}, kind="timer"))
            return
        old_port, until = node.old_peer_port
        open_port = node.ports[peer.name] in peer.listening or (self.t < until and old_port in peer.listening)
        if self.resets or not peer.up or not open_port:
            self.at(2 * self.delay(), reply, ev.REFUSED)
            return
        conn = Conn(next(self.counter), node.name, peer.name, "probe")
        conn.token = e
        conn.prober_incarnation = incarnation
        conn.answered = False
        self.accepted.append(conn)
        self.at(e.timeout, self._probe_timeout, conn, node, incarnation, e)
        self.send(conn, node.name, dict(kind=ev.QUERY, seq=0, **node.frame_fields()))

    def _probe_answered(self, conn: Conn, node: Node, frame: dict) -> None:
        if conn.answered or node.incarnation != conn.prober_incarnation:
            return
        conn.answered = True
        conn.alive = False
        conn.dead_for.update((conn.dialer, conn.acceptor))
        e = conn.token
        self.feed(node, ev.ProbeResult(e.purpose, e.token, ev.ANSWERED, role=frame["role"], epoch=frame["epoch"],
                                       priority=frame["priority"], sender=frame["sender"],
                                       threshold=frame["threshold"]))

    def _probe_timeout(self, conn: Conn, node: Node, incarnation: int, e: ev.Probe) -> None:
        if conn.answered:
            return
        conn.answered = True
        conn.alive = False
        conn.dead_for.update((conn.dialer, conn.acceptor))
        self._probe_result(node, incarnation, e, ev.NO_ANSWER, {}, kind="timer")

    def _probe_result(self, node: Node, incarnation: int, e: ev.Probe, outcome: str, kw: dict, kind="io") -> None:
        if node.incarnation != incarnation:
            return
        fire = lambda: self.feed(node, ev.ProbeResult(e.purpose, e.token, outcome, **kw))  # noqa: E731
        if self.when_running(node, kind, fire):
            fire()

    def _ask_witness(self, node: Node, e: ev.AskWitnesses) -> None:
        incarnation = node.incarnation
        ok = self.witness_up and not self.cut[(node.name, "w")]

        def answer():
            if node.incarnation != incarnation:
                return
            fire = lambda: self.feed(node, ev.WitnessResult(e.token, "witness:7" if ok else None))  # noqa: E731
            if self.when_running(node, "io" if ok else "timer", fire):
                fire()

        self.at(2 * self.delay() if ok else e.timeout, answer)

    # -- pulses --

    def _pulse_tick(self, node: Node, incarnation: int, generation: int) -> None:
        """
        The pulse thread's turn. It runs while the reactor is busy, but pulses only while the reactor's
        stamp (its last turn) is younger than L{stamp_bound}; stopped with the process (SIGSTOP), it
        pulses again first thing on waking (and the reactor stamps as it wakes).
        """
        if node.incarnation != incarnation or node.pulse_generation != generation or not node.up:
            return
        if node.paused and not node.busy:
            node.inbox.append(("timer", lambda: self._pulse_tick(node, incarnation, generation)))
            return
        sc = self.scenario
        core = node.core
        self.at(pulse_period(sc.interval, core.peer_threshold), self._pulse_tick, node, incarnation, generation)
        if node.busy and self.t - node.paused_at > stamp_bound(core.peer_threshold) \
                and "pulse-without-stamp" not in self.plants:
            return  # the reactor has not turned for too long: this node is not alive
        live = core.role == ev.LIVE and core.wire_role == ev.LIVE
        if "pulse-after-hangup" in self.plants:
            live = True
        if not live or node.pulse_session is None or not node.last_seq:
            return
        fields = node.frame_fields()
        fields["role"] = ev.LIVE
        self._send_pulse(node, node.settings.peer, node.pulse_session, dict(kind=ev.HEARTBEAT, seq=node.last_seq, **fields))

    @property
    def plants(self) -> frozenset:
        return frozenset([self.plant]) if self.plant else frozenset()

    def _send_pulse(self, node: Node, to: str, session: int, frame: dict, answer: bool = False,
                    sent_at: Optional[float] = None) -> None:
        """
        A datagram: lost on a cut, to a powered-off host, or by chance; else it arrives on its own, in any
        order. A heartbeat pulse carries its send time (the real one, a number the thread keeps the time
        of); an answer carries it back.
        """
        receiver = self.nodes[to]
        if answer:
            node.answer_numbers = getattr(node, "answer_numbers", {})
            number = node.answer_numbers[session] = node.answer_numbers.get(session, 0) + 1
        else:
            node.pulse_number += 1
            number = node.pulse_number
            sent_at = self.t
        if (self.cut[(node.name, to)] or receiver.host_down or self.udp_drop
                or self.prng.random() < self.scenario.pulse_loss):
            self.lost_while_busy[node.name] = self.lost_while_busy[to] = True
            if not answer and "ack-lost-pulses" in self.plants and node.busy:
                # The planted thread takes the pulse it sent for one answered, as if the backup had heard it.
                answer_frame = dict(frame, kind=ev.ANSWER, sender=to, role=ev.BACKUP, epoch=receiver.core.epoch
                                    if receiver.core is not None else 0)
                self.at(0.001, self._pulse_arrive, node, node.incarnation, session, None, answer_frame, True, sent_at)
            return
        delay = self.prng.uniform(0.0001, 0.002) if self.prng.random() < 0.97 else self.prng.uniform(0.002, 0.04)
        self.at(delay, self._pulse_arrive, receiver, receiver.incarnation, session, number, frame, answer, sent_at)

    def _pulse_arrive(self, node: Node, incarnation: int, session: int, number: Optional[int], frame: dict,
                      answer: bool, sent_at: float) -> None:
        if node.incarnation != incarnation or not node.up:
            return  # a process that has since gone (or restarted) holds no key of that session
        if not hasattr(node, "answers"):
            node.answers = {}
        if answer and node.pulse_session is not None:
            node.answers.setdefault(node.pulse_session, 0)

        def check() -> bool:
            book = node.answers if answer else node.book
            if number is None:
                return True  # planted
            if session not in book or number <= book[session]:
                return False  # a session it does not hold, a repeat, or overtaken by a later pulse
            book[session] = number
            return True

        if answer:
            # Answers come to the pulse thread, which notes when (a busy reactor does not delay it;
            # a stopped process does) and hands them to the reactor before its late timers.
            def take(answered=None):
                if answered is not None or check():
                    when = self.t if answered is None else answered
                    self.feed(node, ev.Heard(link=ev.OUT, acked=(sent_at, when), **frame))
            if node.paused and node.busy:
                if check():
                    answered = self.t
                    node.inbox.append(("thread", lambda: take(answered)))
                return
            if self.when_running(node, "io", take):
                take()
            return

        def take_heartbeat():
            if check():
                self.feed(node, ev.Heard(link=ev.IN, reply=PulseReply(frame["sender"], session, sent_at), **frame))
        if self.when_running(node, "io", take_heartbeat):
            take_heartbeat()

    # -- faults --

    def _fault(self, fault: tuple) -> None:
        kind, who, duration, flag, pick = fault
        self.transitions_since_fault = 0
        lives = [n for n in NAMES if self.nodes[n].up and self.nodes[n].core.role == ev.LIVE]
        live = lives[0] if lives else A
        name = {"live": live, "backup": B if live == A else A}.get(who, who)
        other = B if name == A else A
        self.log(f"FAULT {kind} on {name} for {duration:g}s")
        self.disturbed(self.t)
        if kind == "crash":
            self.crash(name)
            self.at(duration, self.start_node, name, flag)
        elif kind == "power":
            self.nodes[name].host_down = True
            self.log(f"{name}: its host powers off")
            self._process_gone(self.nodes[name])
            self.at(duration, self._power_on, name, flag)
        elif kind == "stop":
            node = self.nodes[name]
            if node.running:
                node.shutting_down = True
                self.feed(node, ev.Shutdown())
            self.at(duration + max(self.scenario.slow_stop.values()) + 0.1, self._restart_after_stop, name, flag)
        elif kind == "pause":
            self.pause(name)
            self.at(duration, self.resume, name)
        elif kind == "udp-drop":
            # Datagrams dropped (a firewall rule for UDP), TCP passing; with the flag, the live node's reactor
            # is busy meanwhile, so that its backup hears nothing and asks a reactor that cannot answer.
            self.udp_drop = True
            self.at(duration, self._heal)
            if flag:
                self.pause(live, busy=True)
                self.at(pick * duration, self.resume, live)
        elif kind == "busy":
            # The reactor held up (a listener's long turn, the collector, a starved CPU) while the pulse
            # thread runs on.
            self.pause(name, busy=True)
            self.at(duration, self.resume, name)
        elif kind in ("partition", "oneway"):
            self.cut[(name, other)] = True
            if kind == "partition":
                self.cut[(other, name)] = True
            self._network_changed()
            self.at(duration, self._heal)
        elif kind == "tcp-stall":
            # TCP between the two carries nothing for a while (a lossy link holding a segment back,
            # a firewall dropping TCP only); datagrams still pass.
            self.tcp_stall = True
            self.stall_started = self.t
            self._network_changed()
            self.at(duration, self._heal)
        elif kind == "resets":
            self.resets = True
            self.reset_links()
            self._network_changed()
            self.at(duration, self._heal)
        elif kind == "witness-down":
            self.witness_up = False
            self._network_changed()
            self.at(duration, self._heal)
        elif kind == "witness-cut":
            self.cut[(name, "w")] = True
            self._network_changed()
            self.at(duration, self._heal)
        elif kind == "disk":
            self.nodes[name].disk_full = True
            self._network_changed()
            self.at(duration, self._heal)
            # and make it matter: the live node goes away meanwhile
            live = [n for n in NAMES if self.nodes[n].up and self.nodes[n].core.role == ev.LIVE]
            if live and live[0] != name:
                self.crash(live[0])
                self.at(duration, self.start_node, live[0], True)
        elif kind == "switchover":
            live = [n for n in NAMES if self.nodes[n].running and self.nodes[n].core.role == ev.LIVE]
            if live:
                backup = B if live[0] == A else A
                self.feed(self.nodes[live[0]], ev.SwitchoverAsked())
                if flag:  # and the backup dies in the middle of it
                    self.at(pick * self.scenario.interval, self.crash, backup)
                    self.at(duration, self.start_node, backup, True)
        elif kind == "edit":
            # An edit of the shared file, read by each node at its own time
            # (within a reload interval): priorities and failback change, and
            # for a while the two copies differ.
            r = self.rng
            edited = {n: r.choice([0, 5, 10]) for n in NAMES}
            failback = r.random() < 0.5
            self.file_edit = (edited, failback)
            first, second = (A, B) if flag else (B, A)
            self.at(pick * self.scenario.interval, self._apply_edit, first, edited, failback)
            self.at(duration, self._apply_edit, second, edited, failback)
        elif kind == "ports":
            # Both heartbeat ports moved in one edit; each node reads it at its own time.
            moved = {A: self.file_ports[A] + 1, B: self.file_ports[B] + 1}
            self.file_ports = moved
            first, second = (A, B) if flag else (B, A)
            reload = min(1.0, 2 * self.scenario.threshold)
            self.at(pick * reload, self._move_ports, first, moved)
            self.at(self.rng.uniform(0, reload), self._move_ports, second, moved)
        elif kind == "both-restart":
            for n in NAMES:
                self.crash(n)
            self.at(duration, self.start_nodes, {A: flag, B: not flag if pick < 0.5 else flag})
        else:
            raise AssertionError(kind)

    def _apply_edit(self, name: str, priorities: Dict[str, int], failback: bool) -> None:
        node = self.nodes[name]
        priorities, failback = self.file_edit  # a read gets the file as it is now, the newest edit
        peer = node.settings.peer
        node.settings = replace(node.settings, priority=priorities[name], peer_priority=priorities[peer],
                                failback=failback, preferred=A if failback else None)
        self.log(f"{name}: reads the edited file (priorities {priorities}, failback {'on' if failback else 'off'})")
        if node.running:
            self.feed(node, ev.NewSettings(node.settings))
        elif node.up:
            node.inbox.append(("io", lambda: self.feed(node, ev.NewSettings(node.settings))))

    def _move_ports(self, name: str, ports: Dict[str, int]) -> None:
        """A node applies the moved ports: listens on its new one (keeping the old one a while) and redials."""
        node = self.nodes[name]
        if node.up and node.paused:  # a paused process reads nothing: it reads the file once it runs
            node.inbox.append(("io", lambda: self._move_ports(name, ports)))
            return
        ports = dict(self.file_ports)  # a read gets the file as it is now, the newest edit
        old_own, old_peer = node.ports[name], node.ports[node.settings.peer]
        if old_peer != ports[node.settings.peer]:
            # As the node does: probes ask the old place too, for a while.
            node.old_peer_port = (old_peer, self.t + 2 * self.scenario.threshold + min(1.0, 2 * self.scenario.threshold))
        node.ports = dict(ports)
        self.log(f"{name}: reads the edit moving both heartbeat ports to {ports}")
        self._views_changed()
        if not node.up:
            return
        node.listening.add(ports[name])
        node.opened.add(ports[name])
        if old_own == ports[name]:
            pass  # read again: nothing moves
        elif "no-port-grace" in (self.plant or ""):
            node.listening.discard(old_own)
        else:
            # Make before break, as ServerPort.rebind(keep_old=...): the old port stays a while.
            keep = 2 * self.scenario.threshold + min(1.0, 2 * self.scenario.threshold)
            incarnation = node.incarnation
            def retire():
                if node.incarnation == incarnation and old_own != node.ports[name]:
                    node.listening.discard(old_own)
                    self._views_changed()

            self.at(keep, retire)
        self._views_changed()
        if old_peer != ports[node.settings.peer] and node.dialling and node.out is not None:
            self.close_conn(node.out, name, ev.CLOSED)  # the sender starts again, at the new location

    def _views_changed(self) -> None:
        """The nodes' views of each other's ports came apart, or back together (a heal, for the invariants)."""
        whole = self._link_whole()
        if whole and self.link_whole_since is None:
            self.link_whole_since = self.heal_at = self.t
            self.heal_held()
        elif not whole:
            self.link_whole_since = None

    def disturbed(self, until: float) -> None:
        """Processes are not steady until C{until}: liveness is judged from then on (never from earlier)."""
        self.stable_since = max(self.stable_since, until)

    def _power_on(self, name: str, as_backup: bool) -> None:
        self.nodes[name].host_down = False
        self.start_node(name, as_backup)

    def _restart_after_stop(self, name: str, as_backup: bool) -> None:
        node = self.nodes[name]
        if node.up:
            self.crash(name)  # did not stop in time: the operator kills it
        self.start_node(name, as_backup)

    def _network_changed(self) -> None:
        if self.arbiter() and not self._arbiter_before:
            self.arbiter_since = self.t
        self._arbiter_before = self.arbiter()
        self.whole_since = None
        self.link_whole_since = None if not self._link_whole() else self.link_whole_since

    def _link_whole(self) -> bool:
        return not self.resets and not self.tcp_stall and self.reachable(A, B) and self._views_agree()

    def _views_agree(self) -> bool:
        """One node at least dials the other where it listens (an edit read by one node only may split them)."""
        a, b = self.nodes[A], self.nodes[B]
        # A port the peer's process has listened on counts, even once closed:
        # closing it early is the node's fault (no-port-grace), not a cut.
        # One way is enough: then the backup can still ask the live node.
        return (not b.up or a.ports[B] in b.opened) or (not a.up or b.ports[A] in a.opened)

    def _heal(self) -> None:
        for key in self.cut:
            self.cut[key] = False
        self.resets = False
        self.tcp_stall = False
        self.stall_started = None
        self.udp_drop = False
        self.witness_up = True
        for node in self.nodes.values():
            node.disk_full = False
        self._arbiter_before = False
        self.log("network healed (links, witness, disks)")
        self.heal_at = self.t
        self.whole_since = self.t
        if self.link_whole_since is None:
            self.link_whole_since = self.t
        self.heal_held()

    # -- invariants --

    def arbiter(self) -> bool:
        """Can a witness tell the two apart: reachable from exactly one of them?"""
        if not self.scenario.witness or not self.witness_up:
            return False
        return (not self.cut[(A, "w")]) != (not self.cut[(B, "w")])

    def check(self) -> None:
        serving = [n for n, node in self.nodes.items() if node.channels_up and node.core is not None
                   and node.paused_at is None]
        if len(serving) == 2:
            if self.overlap_since is None:
                self.overlap_since = self.t
            partitioned = not self._link_whole()
            if partitioned and not self.arbiter():
                pass  # no arbiter can decide while the link is cut: allowed
            elif partitioned and self.t - self.arbiter_since <= self.scenario.threshold:
                pass  # an arbiter has just become able to decide: the cut-off node fences within a threshold
            elif not partitioned and self.t - self.heal_at <= self.overlap_grace():
                pass  # the lower rank stops within a heartbeat or so of the link returning
            else:
                why = "with a witness reachable from one side only" if partitioned else (
                    f"for {self.t - self.overlap_since:.3f}s with the link whole")
                raise Violation(f"safety: both nodes serve {why}")
        else:
            self.overlap_since = None
        # liveness
        whole = self.whole_since is not None
        # One host, one port: a paused process still holds it, and nobody can serve until it runs.
        held = self.scenario.same_port and any(n.paused and n.holding_port for n in self.nodes.values())
        if whole and not held and any(self.nodes[n].running for n in NAMES):
            settled = max(self.whole_since, self.stable_since) + self.settle_time()
            if self.t > settled and len(serving) != 1:
                raise Violation(
                    f"liveness: {len(serving)} nodes serve although the network has been whole and the processes"
                    f" steady for {self.t - max(self.whole_since, self.stable_since):.3f}s"
                )
        if self.transitions_since_fault > 12:
            raise Violation(f"liveness: {self.transitions_since_fault} role changes since the last fault (flapping)")

    def overlap_grace(self) -> float:
        """After the link returns: redial (bounded by the interval), one heartbeat, the stop."""
        sc = self.scenario
        return 3 * sc.interval + 0.1

    def _check_takeover(self, node: Node, e: ev.Transition) -> None:
        previous = self.epochs_used.get(e.epoch)
        if previous is not None:
            raise Violation(f"epoch {e.epoch} used twice: by {previous}, then by {node.name}")
        self.epochs_used[e.epoch] = node.name
        if e.kind not in ("silence", "crash", "start"):
            return
        other = self.nodes[B if node.name == A else A]
        sc = self.scenario
        busy = self.busy_since[other.name]
        if (busy is not None and other.up and other.core.role == ev.LIVE and sc.pulses
                and not self.lost_while_busy[other.name] and self._link_whole() and other.pulse_session is not None and other.last_seq
                and self.t - busy < stamp_bound(sc.threshold) - 0.01 and self.live_since[other.name] < busy
                and self.unpaused_since[node.name] < busy):
            # What the pulse thread is for: a reactor busy for less than the stamp's bound goes on pulsing,
            # and its backup hears it.
            raise Violation(f"pulse thread: {node.name} took the role ({e.kind}) from {other.name}, whose reactor"
                            f" has been busy for only {self.t - busy:.3f}s while its pulse thread pulsed")
        if not other.running or other.core.role != ev.LIVE or self.live_since[other.name] is None:
            return
        if (self.tcp_stall and sc.pulses and not sc.pulse_loss and not self.udp_drop and not sc.overlap and not any(self.cut.values())
                and not self.resets and self.live_since[other.name] < self.stall_started
                and self.unpaused_since[other.name] < self.stall_started
                and self.unpaused_since[node.name] < self.stall_started):
            # What pulses are for: TCP held up, datagrams passing, nobody paused: the live node's pulses
            # reach its backup all along, and it must not take over.
            raise Violation(f"pulses: {node.name} took the role ({e.kind}) from {other.name}, which kept pulsing"
                            f" through a TCP stall of {self.t - self.stall_started:.3f}s")
        window = min(1.0, self.scenario.threshold / 4)
        since = max(self.unpaused_since[other.name], self.live_since[other.name],
                    self.link_whole_since if self.link_whole_since is not None else self.t)
        if self.t - since > window + 0.05:
            raise Violation(
                f"safety: {node.name} took the role ({e.kind}) from {other.name}, which is live, running and"
                f" reachable for {self.t - since:.3f}s"
            )
