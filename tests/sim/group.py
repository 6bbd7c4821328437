"""
A simulated world for the group core: 3 to 5 members of a group on etcd,
their processes, their paths to the store and the store itself
(L{sim.store.Store}), in simulated time, driven by one seeded random
generator.

Each member runs the real L{iwayfailover.core.group.GroupCore}. The world
plays the rest of the node, as the etcd coordinator does: it carries the
core's requests to the store (grant then create-if-absent for a campaign,
keepalives, delete-if-lease then revoke for a resignation) with latencies
and the coordinator's timeout (a keepalive writes the live key again if it
is still bound to the lease, then keeps the lease alive; a stale key is
cleared only at the revision seen), keeps the member's own key under a lease of
its own alive every interval, watches the prefix (a read, then the events
in revision order) and tells the core what changed, and says so when the
store is out of reach. Each member's monotonic clock has its own offset.

After every event the invariants are checked (see L{GroupWorld.check}).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Dict, List, Optional

from iwayfailover.core import events as ev
from iwayfailover.core.group import PLANTS, GroupCore, GroupSettings

from sim.schedule import Schedule, Violation
from sim.store import LeaseNotFound, Store, WatchEvent

PREFIX = "/iwayfailover"
LIVE_KEY = PREFIX + "/live"
HANDOVER_KEY = PREFIX + "/handover"
RELEASED = ("stopped", "switchover")
"""Reasons of a resignation that name who let the key go (the others read as a crash), as the coordinator does."""
MEMBERS = PREFIX + "/members/"
NAMES = ("alpha", "bravo", "charlie", "delta", "echo")
STALL_TICK = 0.05
"""The node's stall watch notices a stall longer than this."""
MAX_LATENCY = 0.04
"""The slowest one-way trip between a member and the store (the usual one is a millisecond or two)."""
SLOW_LATENCY = 0.6
"""The slowest one-way trip on a path that loses packets (a retransmission or two)."""




@dataclass
class GroupScenario:
    members: int
    threshold: int
    interval: float
    timeout: float
    """The coordinator's timeout of one request to the store."""
    min_ttl: int
    failback: bool
    failback_delay: float
    priorities: Dict[str, int]
    slow_stop: Dict[str, float]
    backups: Dict[str, bool]
    """Which members start with -b."""
    overlap: bool = False
    faults: List[tuple] = field(default_factory=list)

    def describe(self) -> str:
        return (
            f"{self.members} members, threshold {self.threshold}s (the store grants at least {self.min_ttl}s),"
            f" interval {self.interval:g}s, request timeout {self.timeout:g}s,"
            f" failback {'after %gs' % self.failback_delay if self.failback else 'no'}, priorities {self.priorities},"
            f" channel stop times {self.slow_stop}, started with -b: {sorted(n for n, b in self.backups.items() if b)}"
            f"{', overlapping faults' if self.overlap else ''}"
        )


class Member:
    """One member's process (or its absence), its coordinator's state and its serving layer."""

    def __init__(self, name: str, settings: GroupSettings):
        self.name = name
        self.settings = settings
        self.core: Optional[GroupCore] = None
        self.incarnation = 0
        self.offset = 0.0
        self.paused_at: Optional[float] = None
        self.inbox: List[tuple] = []
        self.as_backup = False
        self.shutting_down = False
        self.resigns = 0  # resignations in flight (a stopping process waits for them)
        # the coordinator
        self.member_lease = 0
        self.connected = False
        self.lost_reported = False
        self.watch_gen = 0
        self.watch_active = False
        self.view: Dict[str, object] = {}
        self.view_revision = 0
        self.campaign_view = set()  # the member keys in view when the last campaign was sent
        self.last_arrival = 0.0
        self.reading = False
        self.seen_holder = False
        # serving
        self.channels_up = False
        self.serving_lease = 0
        self.serve_generation = 0
        self.stop_due: Optional[float] = None
        self.stopping_generation = -1
        self.leases: Dict[int, int] = {}  # epoch -> lease, of the campaigns this incarnation won
        self.frozen = False
        self.waking = False
        self.woke_stopped = False

    @property
    def up(self) -> bool:
        return self.core is not None

    @property
    def paused(self) -> bool:
        return self.paused_at is not None

    @property
    def running(self) -> bool:
        return self.up and not self.paused


class GroupWorld(Schedule):
    def __init__(self, seed: int, plant: Optional[str] = None, faults: int = 5, members: Optional[int] = None):
        self.seed = seed
        self.rng = random.Random(seed)
        self.plant = plant
        super().__init__()
        self.scenario = self._draw(faults, members)
        sc = self.scenario
        self.names = NAMES[:sc.members]
        self.store = Store(lambda: self.t, self.at, min_ttl=sc.min_ttl)
        self.store.watchers.append(self._store_changed)
        self.store.on_lease_gone.append(self._lease_gone)
        self.nodes: Dict[str, Member] = {}
        for name in self.names:
            self.nodes[name] = Member(name, self._settings(name))
        # cut[name] = (requests lost, answers and events lost)
        self.cut: Dict[str, tuple] = {n: (False, False) for n in self.names}
        self.slow: Dict[str, bool] = {n: False for n in self.names}
        """A path to the store that loses packets: each trip waits for TCP's retransmissions."""
        self.trouble_until: Dict[str, float] = {n: 0.0 for n in self.names}
        """Until when a member's path to the store (or its process) was not steady, for the priority check."""
        self.store_steady_since = 0.0
        # invariant bookkeeping
        self.stable_since = 0.0
        self.last_epoch = 0
        self.last_epoch_by: Optional[str] = None
        self.lives_since_fault = 0
        self.freed_at: Optional[float] = None
        self.freed_for: Optional[str] = None
        self.freed_from: Optional[str] = None
        """The member the last release of the live key named (None: it expired or was let go of for anyone)."""
        self.named_free = False
        """The live key is free for a member a switchover named: the others give it the threshold."""

    def _settings(self, name: str) -> GroupSettings:
        sc = self.scenario
        return GroupSettings(name=name, priority=sc.priorities[name], threshold=float(sc.threshold),
                             interval=sc.interval, failback=sc.failback, preferred=None,
                             failback_delay=sc.failback_delay)

    # -- drawing a scenario --

    def _draw(self, count: int, members: Optional[int]) -> GroupScenario:
        r = self.rng
        members = members or r.choice([3, 3, 4, 5])
        names = NAMES[:members]
        threshold = r.choice([2, 3, 5])
        # Any interval the configuration allows (below the threshold): the
        # core renews at most a quarter of the TTL apart whatever it is.
        interval = r.choice([0.2, 0.5, 1.0, threshold / 2, threshold * 0.9])
        timeout = min(r.choice([0.5, 1.0]), threshold / 2)
        kind = r.choice(["equal", "distinct", "distinct", "one-high"])
        if kind == "equal":
            priorities = {n: 0 for n in names}
        elif kind == "distinct":
            values = r.sample([0, 5, 10, 20, 30], members)
            priorities = dict(zip(names, values))
        else:
            priorities = {n: 0 for n in names}
            priorities[r.choice(names)] = 10
        start = r.choice(["all-live", "one-live", "all-backup", "mixed"])
        if start == "all-live":
            backups = {n: False for n in names}
        elif start == "all-backup":
            backups = {n: True for n in names}
        elif start == "one-live":
            first = r.choice(names)
            backups = {n: n != first for n in names}
        else:
            backups = {n: r.random() < 0.5 for n in names}
        sc = GroupScenario(
            members=members, threshold=threshold, interval=interval, timeout=timeout,
            min_ttl=r.choice([2, 2, 2, 3]), failback=r.random() < 0.25,
            failback_delay=r.choice([1.0, float(threshold)]), priorities=priorities,
            slow_stop={n: r.choice([0.0, 0.0, 0.02, 0.5, 2.0]) for n in names}, backups=backups,
            overlap=r.random() < 0.3,
        )
        kinds = ["crash", "crash", "stop", "pause", "pause", "store-pause", "leader", "cut", "cut", "slow", "slow",
                 "switchover", "switchover", "storm"]
        for _ in range(count):
            kind = r.choice(kinds)
            who = r.choice(["live", "live", "backup"] + list(names))
            factor = r.choice([0.3, 0.8, 1.5, 3.0])
            sc.faults.append((kind, who, round(factor * threshold + r.random() * interval, 4),
                              r.random() < 0.5, r.random()))
        return sc

    # -- the event loop --

    def run(self) -> Optional[str]:
        sc = self.scenario
        self.log(f"scenario: {sc.describe()}")
        self.start_nodes({n: sc.backups[n] for n in self.names})
        pace = self.settle_time(waits=True)  # the schedule's spacing, drawn before anything runs
        t = pace
        for fault in sc.faults:
            t += self.rng.uniform(0.2, 1.0) * sc.threshold
            self.at(t - self.t, self._fault, fault)
            if sc.overlap and self.rng.random() < 0.5:
                t += self.rng.uniform(0.0, fault[2])
            else:
                t += fault[2] + pace
        t += pace
        self.at(t - self.t, lambda: None)
        return self.run_until(t)

    def ttl(self) -> int:
        return max(self.scenario.threshold, self.scenario.min_ttl)

    def settle_time(self, waits: Optional[bool] = None) -> float:
        """
        From the moment every fault has healed and the processes are steady,
        how long until exactly one member serves, at most:

         - the TTL: a holder that died (or was paused, or fenced itself) keeps
           the key until its lease ends on the store;
         - the TTL again while a member started with -b has seen no holder yet
           (it waits the threshold after seeing none) or a switchover named a
           member (the others give it the threshold: it may be gone);
         - stagger x members: the best member that can campaign may rank last;
         - the coordinator finding the store again: a member keepalive every
           interval, the one in flight timing out, then a read;
         - a campaign's two round trips and the watch's event, each way at most
           MAX_LATENCY; a campaign that failed is tried again after STORE_RETRY
           (one such retry);
         - 0.3 s. A stop under way needs no time of its own: a fence ends it
           before the lease can end (invariant 3), and a switchover's stop
           counts as a disturbance until it is over.
        """
        sc = self.scenario
        from iwayfailover.core.group import STORE_RETRY
        stagger = self.nodes[self.names[0]].settings.stagger if hasattr(self, "nodes") else 0.25
        if waits is None:
            waits = self.named_free or any(
                n.up and n.as_backup and not n.seen_holder for n in self.nodes.values())
        return ((2 if waits else 1) * self.ttl() + stagger * sc.members + sc.interval + sc.timeout
                + 6 * MAX_LATENCY + STORE_RETRY + 0.3)

    def disturbed(self, until: float) -> None:
        self.stable_since = max(self.stable_since, until)

    # -- clocks --

    def clock(self, node: Member) -> float:
        """The member's monotonic clock: its own offset, the same rate."""
        return self.t + node.offset

    # -- processes --

    def start_nodes(self, modes: Dict[str, bool]) -> None:
        started = []
        for name, as_backup in modes.items():
            node = self.nodes[name]
            if node.up:
                continue
            node.incarnation += 1
            node.offset = self.rng.uniform(-1000.0, 1000.0) if node.incarnation > 1 else self.rng.uniform(0, 500.0)
            node.paused_at = None
            node.inbox = []
            node.shutting_down = False
            node.as_backup = as_backup
            node.resigns = 0
            node.member_lease = 0
            node.connected = False
            node.lost_reported = False
            node.watch_gen += 1
            node.watch_active = False
            node.view = {}
            node.view_revision = 0
            node.reading = False
            node.seen_holder = False
            node.leases = {}
            node.frozen = False
            plants = frozenset([self.plant]) if self.plant in PLANTS else frozenset()
            node.core = GroupCore(node.settings, now=lambda n=node: self.clock(n), plants=plants)
            self.disturbed(self.t)
            self.log(f"{name}: process starts{' as backup (-b)' if as_backup else ''}")
            self.troubled(name)
            started.append(node)
        for node in started:
            self.feed(node, ev.Start(node.as_backup))
        for node in started:
            if node.up:
                self._register(node, node.incarnation)
                self.at(node.settings.interval, self._member_tick, node, node.incarnation)

    def crash(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up:
            return
        self.log(f"{name}: kill -9")
        self._process_gone(node)

    def _process_gone(self, node: Member) -> None:
        node.core = None
        node.incarnation += 1
        node.paused_at = None
        node.inbox = []
        node.channels_up = False
        node.serving_lease = 0
        node.serve_generation += 1
        node.watch_active = False
        node.frozen = False
        self.disturbed(self.t)

    def pause(self, name: str) -> None:
        node = self.nodes[name]
        if node.running:
            node.paused_at = self.t
            self.troubled(name)
            self.log(f"{name}: SIGSTOP")
            self.disturbed(self.t)

    def resume(self, name: str) -> None:
        node = self.nodes[name]
        if not node.up or not node.paused:
            return
        stalled = self.t - node.paused_at
        node.paused_at = None
        self.troubled(name)
        self.disturbed(self.t)
        self.log(f"{name}: SIGCONT after {stalled:.3f}s{' (its lease has expired: frozen)' if node.frozen else ''}")
        incarnation = node.incarnation
        # Twisted runs the timers that came due before it reads sockets; then
        # the stall watch reports; what waits in the sockets is read a moment later.
        inbox, node.inbox = node.inbox, []
        node.waking = True
        try:
            for kind, fn in inbox:
                if kind == "timer":
                    if node.incarnation != incarnation or node.paused:
                        return
                    fn()
            if node.incarnation != incarnation:
                return
            if stalled > STALL_TICK:
                self.feed(node, ev.Stalled(stalled))
        finally:
            node.waking = False
        if node.incarnation == incarnation and node.frozen:
            if node.channels_up:
                raise Violation(f"safety: {node.name} woke with its lease expired on the store and did not stop"
                                " serving before reading its sockets")
            node.frozen = False
        backlog = [fn for kind, fn in inbox if kind != "timer"]
        if backlog:
            self.at(self.rng.uniform(0.001, 0.005), self._read_backlog, node, incarnation, backlog)

    def _read_backlog(self, node: Member, incarnation: int, backlog: list) -> None:
        for fn in backlog:
            if node.incarnation != incarnation:
                return
            if node.paused:
                node.inbox.append(("io", fn))
                continue
            fn()

    def when_running(self, node: Member, incarnation: int, kind: str, fn) -> None:
        """Run C{fn} in the member's process now, or when it runs again; never in another incarnation."""
        if not node.up or node.incarnation != incarnation:
            return
        if node.paused:
            node.inbox.append((kind, fn))
            return
        fn()

    def _shutdown(self, name: str) -> None:
        node = self.nodes[name]
        if not node.running:
            return
        self.log(f"{name}: SIGTERM")
        node.shutting_down = True
        self.feed(node, ev.Shutdown())
        self._maybe_exit(node)

    def _maybe_exit(self, node: Member) -> None:
        if node.up and node.shutting_down and node.core.role == ev.STOPPED and node.resigns == 0 \
                and not node.channels_up:
            self.log(f"{node.name}: process exits")
            if node.member_lease:
                self.request(node, "revoke member lease", lambda: self.store.revoke(node.member_lease), None)
            self._process_gone(node)

    # -- feeding the core and carrying out its effects --

    def feed(self, node: Member, observation) -> None:
        if not node.running:
            return
        effects = node.core.handle(observation)
        for effect in effects:
            if not node.up:
                break
            self.carry_out(node, effect)
        self._maybe_exit(node)

    def carry_out(self, node: Member, e) -> None:
        name = node.name
        if node.waking and node.frozen and isinstance(e, (ev.Serve, ev.RetryChannels)):
            raise Violation(f"safety: {name} woke with its lease expired on the store and asked to serve ({e!r})")
        if isinstance(e, ev.StartTimer):
            incarnation = node.incarnation
            self.at(e.delay, lambda: self.when_running(
                node, incarnation, "timer", lambda: self.feed(node, ev.Deadline(e.name, e.token))))
        elif isinstance(e, ev.CancelTimer):
            pass
        elif isinstance(e, ev.Transition):
            self._transition(node, e)
        elif isinstance(e, ev.Serve):
            self._serve(node, e)
        elif isinstance(e, ev.RetryChannels):
            incarnation, generation = node.incarnation, node.serve_generation
            self.at(self.rng.uniform(0.0005, 0.003), lambda: self.when_running(
                node, incarnation, "io", lambda: node.serve_generation == generation
                and self.feed(node, ev.Served(()))))
        elif isinstance(e, ev.StopServing):
            self._stop(node, e)
        elif isinstance(e, ev.Campaign):
            self._campaign(node, e)
        elif isinstance(e, ev.KeepAlive):
            self._keepalive(node, e)
        elif isinstance(e, ev.Resign):
            self._resign(node, e)
        elif isinstance(e, ev.ClearStale):
            self._clear_stale(node, e)
        elif isinstance(e, ev.SaveEpoch):
            pass
        elif isinstance(e, ev.Note):
            self.log(f"{name}: [{e.level}] {e.text}")
        elif isinstance(e, ev.SwitchoverOutcome):
            self.log(f"{name}: switchover {'done' if e.ok else 'failed'}: {e.detail}")
        else:
            raise AssertionError(f"unknown effect {e!r}")

    def _transition(self, node: Member, e: ev.Transition) -> None:
        self.log(f"{node.name}: {e.previous} -> {e.role} (epoch {e.epoch}) [{e.kind}] {e.cause}")
        if e.role == ev.LIVE:
            self.lives_since_fault += 1
            if e.kind in ("silence", "peer_shutdown"):
                self._check_rank(node)
        if e.role == ev.HANDING_OVER:
            # A planned switchover (or failback): nothing serves for a moment.
            self.disturbed(self.t + max(self.scenario.slow_stop.values()))

    # -- serving --

    def _serve(self, node: Member, e: ev.Serve) -> None:
        lease = node.leases.get(e.epoch)
        held = self.store.kv.get(LIVE_KEY)
        if lease is None or held is None or held.lease != lease or held.create_revision != e.epoch:
            raise Violation(
                f"safety: {node.name} serves under epoch {e.epoch}, but the store's live key is "
                + (f"{held.value['name']}'s (epoch {held.create_revision}, lease {held.lease:x})" if held else "absent")
                + (f" and this member's lease for that epoch is {lease:x}" if lease else
                   " and this member never won that epoch"))
        if e.epoch < self.last_epoch or (e.epoch == self.last_epoch and self.last_epoch_by != node.name):
            raise Violation(f"safety: {node.name} serves under epoch {e.epoch} after {self.last_epoch_by} served"
                            f" under {self.last_epoch}")
        self.last_epoch, self.last_epoch_by = e.epoch, node.name
        node.serve_generation += 1
        node.channels_up = True
        node.serving_lease = lease
        incarnation, generation = node.incarnation, node.serve_generation
        failed = ("web",) if self.rng.random() < 0.05 else ()
        self.log(f"{node.name}: serves under epoch {e.epoch}{' (channel web FAILED)' if failed else ''}")
        self.at(self.rng.uniform(0.0005, 0.003), lambda: self.when_running(
            node, incarnation, "io", lambda: node.serve_generation == generation
            and self.feed(node, ev.Served(failed))))

    def _stop(self, node: Member, e: ev.StopServing) -> None:
        stop = self.scenario.slow_stop[node.name]
        if e.within is not None:
            stop = min(stop, e.within)
        if not node.channels_up:
            stop = 0.0
        if node.stop_due is not None and node.stopping_generation == node.serve_generation:
            stop = min(stop, max(0.0, node.stop_due - self.t))  # a stop under way is never put off
        node.serve_generation += 1
        node.stopping_generation = node.serve_generation
        node.stop_due = self.t + stop
        incarnation, generation = node.incarnation, node.serve_generation
        if stop <= 0.0:
            self._channels_down(node)
            self.at(0.0005, lambda: self.when_running(
                node, incarnation, "io", lambda: self._stopped(node, generation)))
            return

        def done():
            if node.incarnation != incarnation or node.serve_generation != generation:
                return
            # The channels are processes of the node's process group: paused with it.
            if node.paused:
                node.inbox.append(("timer", done))
                return
            self._channels_down(node)
            self._stopped(node, generation)

        self.at(stop, done)

    def _channels_down(self, node: Member) -> None:
        if node.channels_up:
            self.log(f"{node.name}: channels stopped")
        node.channels_up = False
        node.serving_lease = 0
        node.stop_due = None

    def _stopped(self, node: Member, generation: int) -> None:
        if node.serve_generation == generation:
            self.feed(node, ev.StoppedServing())

    # -- the path to the store --

    def latency(self, name: Optional[str] = None) -> float:
        r = self.rng
        if name is not None and self.slow[name]:
            return r.uniform(0.05, SLOW_LATENCY)
        return r.uniform(0.0003, 0.002) if r.random() < 0.97 else r.uniform(0.002, MAX_LATENCY)

    def request(self, node: Member, what: str, apply, answer, timeout: Optional[float] = None) -> None:
        """
        Send one request from C{node}'s process to the store: C{apply()} runs
        at the store when it arrives (and the store can take it); its result
        comes back to C{answer(result)} in the member's process, or
        C{answer(Timeout)} at the coordinator's timeout. An exception from the
        store is an answer too (an error).
        """
        incarnation = node.incarnation
        state = {"done": False}
        timeout = self.scenario.timeout if timeout is None else timeout

        def expire():
            if state["done"]:
                return
            state["done"] = True
            if answer is not None:
                answer(TimedOut(f"{what}: no answer from the store within {timeout:g}s"))

        def reply(result):
            if self.cut[node.name][1]:
                return  # the answer is lost on the way back
            self.at(self.latency(node.name),
                    lambda: self.when_running(node, incarnation, "io", lambda: deliver(result)))

        def deliver(result):
            if state["done"]:
                return
            state["done"] = True
            if answer is not None:
                answer(result)

        def arrive():
            def applied():
                try:
                    result = apply()
                except LeaseNotFound as e:
                    result = StoreError(f"{what}: requested lease not found ({e.args[0]:x})")
                reply(result)
            self.store.submit(applied)

        if answer is not None:
            self.at(timeout, lambda: self.when_running(node, incarnation, "timer", expire))
        if not self.cut[node.name][0]:
            self.at(self.latency(node.name), arrive)

    # -- the coordinator: registration, the watch, the member keepalive --

    def _member_value(self, node: Member) -> dict:
        return {"name": node.name, "priority": node.settings.priority, "may_campaign": True}

    def _register(self, node: Member, incarnation: int) -> None:
        """Grant the member's lease, put its member key, read the prefix and watch it."""
        if node.incarnation != incarnation or node.reading:
            return
        node.reading = True

        def granted(result):
            if isinstance(result, Failure):
                return self._store_failed(node, result)
            lease, _ = result
            node.member_lease = lease
            self.request(node, "register", lambda: self.store.put(MEMBERS + node.name, self._member_value(node),
                                                                  lease), put_done)

        def put_done(result):
            if isinstance(result, Failure):
                return self._store_failed(node, result)
            node.reading = False
            self._read(node)

        self.request(node, "grant member lease", lambda: self.store.grant(node.settings.threshold), granted)

    def _read(self, node: Member) -> None:
        """Read the prefix and start the watch at the same revision (one stream, in order)."""
        node.reading = True
        node.watch_gen += 1
        gen = node.watch_gen
        incarnation = node.incarnation

        def apply():
            revision, kvs = self.store.range(PREFIX + "/")
            node.watch_active = node.incarnation == incarnation and node.watch_gen == gen
            return revision, kvs

        def answer(result):
            node.reading = False
            if node.watch_gen != gen:
                return
            if isinstance(result, Failure):
                node.watch_active = False
                return self._store_failed(node, result)
            revision, kvs = result
            node.view = {kv.key: kv for kv in kvs}
            node.view_revision = revision
            node.connected = True
            node.lost_reported = False
            self.log(f"{node.name}: reads the store at revision {revision} and watches it")
            self._tell_members(node)
            self._tell_state(node)

        self._ordered_request(node, "read", apply, answer)

    def _ordered_request(self, node: Member, what: str, apply, answer) -> None:
        """A read whose answer travels on the watch's stream: nothing of the watch overtakes it."""
        incarnation = node.incarnation
        state = {"done": False}
        timeout = self.scenario.timeout

        def expire():
            if not state["done"]:
                state["done"] = True
                answer(TimedOut(f"{what}: no answer from the store within {timeout:g}s"))

        def deliver(result):
            if not state["done"]:
                state["done"] = True
                answer(result)

        def arrive():
            def applied():
                result = apply()
                self._on_stream(node, incarnation, lambda: deliver(result))
            self.store.submit(applied)

        self.at(timeout, lambda: self.when_running(node, incarnation, "timer", expire))
        if not self.cut[node.name][0]:
            self.at(self.latency(node.name), arrive)

    def _on_stream(self, node: Member, incarnation: int, fn) -> None:
        """Carry something down the member's watch stream, in order; a cut breaks the stream."""
        if self.cut[node.name][1] or not node.up or node.incarnation != incarnation:
            node.watch_active = False
            return
        arrival = max(self.t + self.latency(node.name), node.last_arrival + 1e-6)
        node.last_arrival = arrival
        self.at(arrival - self.t, lambda: self.when_running(node, incarnation, "io", fn))

    def _store_changed(self, events: List[WatchEvent]) -> None:
        for node in self.nodes.values():
            if not node.up or not node.watch_active:
                continue
            gen, incarnation = node.watch_gen, node.incarnation
            if self.cut[node.name][1]:
                node.watch_active = False  # the stream breaks: the member learns it from its next request
                continue
            self._on_stream(node, incarnation, lambda n=node, g=gen: self._watched(n, g, events))
        self._check_key_gone(events)

    def _watched(self, node: Member, gen: int, events: List[WatchEvent]) -> None:
        if node.watch_gen != gen or not node.connected:
            return
        live_before = self._state_of(node)
        members_before = self._members_of(node)
        for e in events:
            if e.kind == "PUT":
                node.view[e.kv.key] = e.kv
            else:
                node.view.pop(e.kv.key, None)
            node.view_revision = e.revision
        if self._members_of(node) != members_before:
            self._tell_members(node)
        if self._state_of(node) != live_before:
            self._tell_state(node)

    def _state_of(self, node: Member) -> tuple:
        live = node.view.get(LIVE_KEY)
        handover = node.view.get(HANDOVER_KEY)
        return (live.value["name"] if live else None, live.create_revision if live else 0,
                live.lease if live else 0,
                handover.value["from"] if handover and handover.value.get("reason") in RELEASED else None,
                handover.value["to"] if handover else None, live.mod_revision if live else 0,
                float(live.value.get("ttl", 0)) if live else 0.0)

    def _members_of(self, node: Member) -> tuple:
        return tuple(sorted((kv.value["name"], kv.value["priority"], kv.value["may_campaign"])
                            for key, kv in node.view.items() if key.startswith(MEMBERS)))

    def _tell_state(self, node: Member) -> None:
        holder, epoch, lease, released_by, to, renewed, ttl = self._state_of(node)
        if holder is not None:
            node.seen_holder = True
        self.feed(node, ev.StoreState(holder, epoch, lease=lease, released_by=released_by, handover_to=to,
                                      revision=node.view_revision, renewed=renewed, ttl=ttl))

    def _tell_members(self, node: Member) -> None:
        self.feed(node, ev.Candidates(self._members_of(node)))

    def _store_failed(self, node: Member, failure: "Failure") -> None:
        node.reading = False
        node.connected = False
        node.watch_active = False
        node.watch_gen += 1
        if not node.lost_reported:
            node.lost_reported = True
            self.feed(node, ev.StoreLost(failure.detail))

    def _member_tick(self, node: Member, incarnation: int) -> None:
        """Every interval: keep the member's lease alive; find the store again when it was lost."""
        if node.incarnation != incarnation:
            return
        self.at(node.settings.interval, self._member_tick, node, incarnation)
        if node.paused:
            return  # the loop's next turn runs once the process runs (a missed turn is not run twice)
        if node.shutting_down or node.reading:
            return
        if not node.member_lease:
            self._register(node, incarnation)
            return
        lease = node.member_lease

        def answer(result):
            if isinstance(result, Failure):
                return self._store_failed(node, result)
            if result <= 0:
                node.member_lease = 0
                self._register(node, incarnation)
            elif (not node.connected or not node.watch_active) and not node.reading:
                self._read(node)

        self.request(node, "member keepalive", lambda: self.store.keepalive(lease), answer)

    # -- the core's requests --

    def _campaign(self, node: Member, e: ev.Campaign) -> None:
        sent_at = self.clock(node)
        # The members the core could rank when it chose to campaign (a member
        # registering while the campaign is on its way could not stop it).
        node.campaign_view = {key for key in node.view if key.startswith(MEMBERS)}

        def granted(result):
            if isinstance(result, Failure):
                return self.feed(node, ev.CampaignResult(e.token, False, error=result.detail))
            lease, ttl = result
            value = {"name": node.name, "epoch": 0, "ttl": ttl}

            def created(result):
                if isinstance(result, Failure):
                    # Whether the key was made is unknown: let its lease go (best effort).
                    self.request(node, "revoke", lambda: self.store.revoke(lease), None)
                    return self.feed(node, ev.CampaignResult(e.token, False, error=result.detail))
                won, revision, existing = result
                if won:
                    node.leases[revision] = lease
                    return self.feed(node, ev.CampaignResult(e.token, True, epoch=revision, lease=lease,
                                                             sent_at=sent_at, ttl=float(ttl)))
                self.request(node, "revoke", lambda: self.store.revoke(lease), None)
                self.feed(node, ev.CampaignResult(e.token, False, epoch=existing.create_revision,
                                                  holder=existing.value["name"]))

            self.request(node, "campaign txn", lambda: self._campaign_txn(node, value, lease), created)

        self.request(node, "grant", lambda: self.store.grant(e.ttl), granted)

    def _campaign_txn(self, node: Member, value: dict, lease: int):
        result = self.store.create_if_absent(LIVE_KEY, value, lease, also_delete=(HANDOVER_KEY,))
        if result[0]:
            self.log(f"store: {node.name} creates the live key at revision {result[1]} (lease {lease:x})")
        return result

    def _keepalive(self, node: Member, e: ev.KeepAlive) -> None:
        """Write the live key again if it is still bound to the lease, then keep the lease alive."""
        sent_at = self.clock(node)

        def written(result):
            if isinstance(result, Failure):
                return self.feed(node, ev.KeepAliveResult(e.lease, sent_at, error=result.detail))
            if not result:
                return self.feed(node, ev.KeepAliveResult(e.lease, sent_at, ttl=0.0))
            self.request(node, "keepalive", lambda: self.store.keepalive(e.lease), kept)

        def kept(result):
            if isinstance(result, Failure):
                return self.feed(node, ev.KeepAliveResult(e.lease, sent_at, error=result.detail))
            self.feed(node, ev.KeepAliveResult(e.lease, sent_at, ttl=float(result)))

        def renew():
            held = self.store.kv.get(LIVE_KEY)
            value = dict(held.value) if held is not None else {}
            return self.store.put_if_lease(LIVE_KEY, value, e.lease)

        self.request(node, "renewal txn", renew, written)

    def _clear_stale(self, node: Member, e: ev.ClearStale) -> None:
        def clear():
            done = self.store.delete_if_revision(LIVE_KEY, e.renewed)
            if done:
                self.log(f"store: {node.name} clears {e.holder}'s stale live key (revision {e.renewed})")
            return done

        self.request(node, "clear stale", clear, lambda result: None)

    def _resign(self, node: Member, e: ev.Resign) -> None:
        node.resigns += 1
        handover = (HANDOVER_KEY, {"from": node.name, "to": e.to, "reason": e.reason})

        def done(error=None):
            node.resigns -= 1
            self.feed(node, ev.Resigned(e.lease, error))

        def deleted(result):
            if isinstance(result, Failure):
                return done(result.detail)
            self.request(node, "revoke", lambda: self.store.revoke(e.lease),
                         lambda r: done(r.detail if isinstance(r, Failure) else None))

        self.request(node, "resign txn", lambda: self.store.delete_if_lease(LIVE_KEY, e.lease, also_put=handover),
                     deleted)

    # -- what the store did, checked --

    def _lease_gone(self, lease: int, how: str, keys) -> None:
        if any(kv.key == LIVE_KEY for kv in keys):
            self.log(f"store: lease {lease:x} {how}: the live key ({keys[0].value['name'] if keys else ''}) goes")

    def _check_key_gone(self, events: List[WatchEvent]) -> None:
        for e in events:
            if e.kind == "PUT" and e.kv.key == LIVE_KEY:
                self.named_free = False
            if e.kind != "DELETE" or e.kv.key != LIVE_KEY:
                continue
            self.freed_at = self.t
            handover = self.store.kv.get(HANDOVER_KEY)
            self.freed_for = handover.value["to"] if handover else None
            self.freed_from = e.kv.value["name"]
            self.named_free = self.freed_for is not None
            for node in self.nodes.values():
                if node.up and node.channels_up and node.serving_lease == e.kv.lease:
                    if node.paused:
                        node.frozen = True
                        self.log(f"{node.name}: its live key is gone while it is paused (frozen)")
                    else:
                        raise Violation(f"safety: {node.name}'s channels still serve when the store deletes its"
                                        f" live key (lease {e.kv.lease:x}, epoch {e.kv.create_revision})")

    # -- faults --

    def _fault(self, fault: tuple) -> None:
        kind, who, duration, flag, pick = fault
        self.lives_since_fault = 0
        holder = self.store.kv.get(LIVE_KEY)
        live = holder.value["name"] if holder else self.names[0]
        others = [n for n in self.names if n != live]
        name = {"live": live, "backup": others[int(pick * len(others))]}.get(who, who)
        self.log(f"FAULT {kind} on {name} for {duration:g}s")
        if kind in ("cut", "slow"):
            self.troubled(name)
        self.disturbed(self.t)
        if kind == "crash":
            self.crash(name)
            self.at(duration, self._start_one, name, flag)
        elif kind == "stop":
            self._shutdown(name)
            self.at(duration + max(self.scenario.slow_stop.values()) + self.scenario.timeout * 2 + 0.1,
                    self._restart_after_stop, name, flag)
        elif kind == "pause":
            self.pause(name)
            self.at(duration, self.resume, name)
        elif kind == "store-pause":
            self.log("store: paused")
            self.store.pause()
            self.store_steady_since = float("inf")
            self.at(duration, self._store_resume)
        elif kind == "leader":
            election = round(0.05 + pick * 1.0, 4)
            self.log(f"store: the leader is lost; electing a new one takes {election:g}s")
            self.store.leader_change(election)
            self.store_steady_since = float("inf")
            self.at(election, self._elected)
        elif kind == "cut":
            mode = (True, True) if pick < 0.5 else (True, False) if pick < 0.75 else (False, True)
            self.cut[name] = mode
            how = "both ways" if all(mode) else "requests lost" if mode[0] else "answers lost"
            self.log(f"{name}: cut off from the store ({how})")
            self.at(duration, self._heal, name)
        elif kind == "slow":
            # A path that loses packets, then, most often, cut off altogether for as long again.
            self.slow[name] = True
            self.log(f"{name}: its path to the store loses packets (trips of up to {SLOW_LATENCY:g}s)")
            if flag or pick < 0.5:
                self.at(duration, self._cut_after_slow, name, duration)
            else:
                self.at(duration, self._heal, name)
        elif kind == "switchover":
            if holder is None or not self.nodes[live].running:
                return
            to = None if flag else others[int(pick * len(others))]
            self.log(f"{live}: asked to switch over to {to or 'the best member'}")
            self.feed(self.nodes[live], ev.GroupSwitchoverAsked(to, "operator"))
            if to is not None and pick < 0.3:  # and the member named dies in the middle of it
                self.at(pick * self.scenario.interval, self.crash, to)
                self.at(duration, self._start_one, to, True)
        elif kind == "storm":
            for n in self.names:
                self.crash(n)
            modes = {n: self.rng.random() < 0.5 for n in self.names}
            gaps = {n: self.rng.uniform(0, duration) for n in self.names}
            for n in self.names:
                self.at(gaps[n], self._start_one, n, modes[n])
        else:
            raise AssertionError(kind)

    def _start_one(self, name: str, as_backup: bool) -> None:
        self.start_nodes({name: as_backup})

    def _restart_after_stop(self, name: str, as_backup: bool) -> None:
        if self.nodes[name].up:
            self.crash(name)  # did not stop in time: the operator kills it
        self._start_one(name, as_backup)

    def _elected(self) -> None:
        self.disturbed(self.t)
        self.store_steady_since = self.t

    def _store_resume(self) -> None:
        self.log("store: resumes")
        self.store.resume()
        self.store_steady_since = self.t
        self.disturbed(self.t)

    def _cut_after_slow(self, name: str, duration: float) -> None:
        self.slow[name] = False
        self.cut[name] = (True, True)
        self.log(f"{name}: cut off from the store (both ways)")
        self.at(duration, self._heal, name)

    def _heal(self, name: str) -> None:
        self.cut[name] = (False, False)
        self.slow[name] = False
        self.troubled(name)
        self.log(f"{name}: reaches the store again")
        self.disturbed(self.t)

    # -- invariants --

    def troubled(self, name: str) -> None:
        """A member's process or path was disturbed: the priority check leaves it out for a while."""
        sc = self.scenario
        from iwayfailover.core.group import STORE_RETRY
        self.trouble_until[name] = max(self.trouble_until[name],
                                       self.t + sc.interval + 2 * sc.timeout + STORE_RETRY + 0.2)

    def _check_rank(self, winner: Member) -> None:
        """
        (5) A key that expired or was let go of without naming a successor goes
        to the best member (priority, then name) that could take it: one whose
        process and path to the store were steady, that had seen a holder (a
        -b member that has not waits the threshold), registered in the
        winner's view when it sent its campaign, not serving nor stopping. The last holder is not
        waited for (the core does not count it in the ranks).
        """
        tf = self.freed_at
        if tf is None or self.freed_for is not None or self.store_steady_since >= tf:
            return
        steady = lambda n: (self.trouble_until[n] < tf and not self.slow[n]  # noqa: E731
                            and not any(self.cut[n]))
        if not steady(winner.name):
            return
        key = lambda n: (-self.scenario.priorities[n], n)  # noqa: E731
        for name in self.names:
            other = self.nodes[name]
            if key(name) >= key(winner.name) or name == self.freed_from:
                continue  # the last holder is not waited for: its key went stale, expired or was let go of
            if (other.running and not other.shutting_down and other.seen_holder and not other.channels_up
                    and other.stop_due is None and steady(name) and other.connected
                    and MEMBERS + name in winner.campaign_view and MEMBERS + name in self.store.kv):
                raise Violation(f"priority: {winner.name} took the free live key ahead of {name}, which ranks"
                                f" above it and could campaign ({self.t - tf:.3f}s after the key was freed)")

    def check(self) -> None:
        # (1) Never two members serving at once. A paused process still holds
        # its sockets and counts, unless its key has gone on the store (frozen:
        # it must stop before it reads a socket again; checked as it wakes).
        serving = [n for n, node in self.nodes.items() if node.up and node.channels_up and not node.frozen]
        if len(serving) > 1:
            raise Violation(f"safety: {' and '.join(serving)} serve at once")
        # (4) Liveness.
        healed = (self.store.available and not any(a or b for a, b in self.cut.values()) and not any(self.slow.values())
                  and any(node.running and not node.shutting_down for node in self.nodes.values()))
        if healed and self.t > self.stable_since + self.settle_time():
            running = [n for n, node in self.nodes.items() if node.running and node.channels_up]
            if len(running) != 1:
                raise Violation(f"liveness: {len(running)} members serve although the store and the paths to it"
                                f" have been whole and the processes steady for {self.t - self.stable_since:.3f}s")
        if self.lives_since_fault > self.scenario.members + 3:
            raise Violation(f"liveness: {self.lives_since_fault} members went live since the last fault (flapping)")


class Failure:
    def __init__(self, detail: str):
        self.detail = detail


class TimedOut(Failure):
    pass


class StoreError(Failure):
    pass
