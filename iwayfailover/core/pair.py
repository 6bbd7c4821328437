"""
The decision core of a pair: one node's role rules, sans I/O.

Feed it observations with L{PairCore.handle}; it returns the effects to
carry out, in order. Time comes from the injected monotonic C{now}; timers
are effects (L{StartTimer}) whose expiry comes back as L{Deadline}.

The rules, each a property the simulator (tests/sim) checks:

 - B{Ask before taking over} (Raft's PreVote). A backup whose live signal
   has been silent for C{threshold - window} asks the live node's
   heartbeat port how it stands (and the witnesses, if any), and decides at
   C{threshold}: a live answer means no takeover. A link lost without a
   standing-down frame starts the same question at once (the crash fast
   path); a refused probe is then evidence, not proof, and passes the same
   gate (witnesses included) as every other takeover.
 - B{Own stalls}. A timer that comes due much later than armed, or a
   L{Stalled} observation, means this process did not run: silence measured
   across the stall proves nothing, so a backup asks again from scratch,
   and a live node whose stall may have outlasted its backup's threshold
   stops serving until it has heard its peer. "May have" is judged by the
   heartbeats the backup answered (L{PairCore._unheard_bound}): pulses
   sent and answered while the reactor was busy count, lost ones do not.
 - B{Rank from the wire}. Between two live nodes (or two backups that
   could both take over) the rank is (epoch, priority, name) as each node
   announces it, never this node's copy of the other's settings.
 - B{Epochs are fencing tokens}. Each takeover uses the next epoch of this
   server's own ballot slot (L{ballot.next_epoch}), saved before anything
   serves under it; a save that fails means no takeover, unless the
   operator allowed serving under an unsaved epoch.
 - B{A self-fence completes in time}: the stop it asks for carries the time
   left before the backup's threshold can pass.
 - B{A switchover that is not confirmed is checked} before the old live
   node serves again, and a dead backup is noticed as soon as its link
   drops.
 - B{Channels recover}: while live, FAILED channels are retried with a
   capped backoff.
"""

from __future__ import annotations

import collections
import itertools
from dataclasses import dataclass
from typing import Callable, FrozenSet, List, Optional

from iwayfailover.core import ballot
from iwayfailover.core.base import CoreBase
from iwayfailover.core.events import (
    ANSWER, ANSWERED, BACKUP, AnnounceAgain, CHANNELS_STOPPED, CHANNELS_WAITING, GONE, HANDING_OVER, HANDOVER, HEARTBEAT,
    LIVE, LOCAL, NO_ANSWER, OUT, PREVOTE, QUERY, REFUSED, STANDING_DOWN, STARTING, STARTUP, STOPPED, Answer, AskWitnesses, Deadline, Dial,
    EpochSaved, Hangup, Heard, LinkDown, LinkUp, NewSettings, Probe, ProbeResult, RetryChannels, SaveEpoch,
    SendHeartbeat, Serve, Served, Shutdown, Stalled, StandDown, Start, StopServing, StoppedServing,
    SwitchoverAsked, SwitchoverOutcome, WitnessResult,
)

PLANTS = frozenset({"no-epoch-fencing", "no-prevote", "no-listener-retry", "local-priority", "no-stall-check"})
"""Rules the simulator can switch off one at a time, to show that it catches their absence. Never set in production."""

STARTUP_CHECK_TIMEOUT = 2.0
"""The longest a node started live waits to hear how its backup location stands."""

ACKS_KEPT = 512
"""Answered heartbeats a live node remembers, to bound its backup's silence across a stall of its own."""

FENCE_MARGIN = 0.01
"""Seconds of slack in deciding whether a stall may have outlasted the backup's threshold."""

FENCE_STOP_SHARE = 0.5
"""A self-fencing node's channels get this share of the time left before the backup's threshold, then SIGKILL."""

RETRY_FIRST = 0.1
RETRY_CAP = 2.0
"""FAILED channels of a live node are tried again after 0.1 s, doubling up to 2 s."""

RETRY_NOTE_EVERY = 30
"""Retries between two log lines about channels still FAILED (about a minute at the cap)."""

SWITCHOVER_CONFIRM = 5.0
"""The least time a switchover waits for the backup's confirmation before asking it how it stands."""

SAVE_NOTE_EVERY = 60.0
"""Seconds between two critical lines (and on_fault hooks) about an epoch that still cannot be saved."""


@dataclass(frozen=True)
class CoreSettings:
    """What the core needs of the configuration, for one node."""

    name: str
    peer: Optional[str]
    priority: int = 0
    threshold: float = 3.0
    interval: float = 1.0
    peer_threshold: float = 3.0
    """This node's copy of its peer's threshold: used only until the peer has announced its own."""
    peer_priority: int = 0
    """This node's copy of its peer's priority: never used to rank (only by the local-priority plant)."""
    witnesses: bool = False
    self_fence: bool = True
    failback: bool = False
    preferred: Optional[str] = None
    failback_delay: float = 30.0
    unsaved_epoch: bool = False
    """Serve even when the new epoch could not be saved (an operator's opt-in; epochs may then repeat after a restart)."""
    slot: int = 0
    modulus: int = 2

    @property
    def window(self) -> float:
        """How long a question to the peer or the witnesses may take: a quarter of the threshold, at most 1 s."""
        return min(1.0, self.threshold / 4)


@dataclass
class _Prevote:
    """A question in flight: may this backup take over?"""

    token: int
    not_before: float
    kind: str
    cause: str
    probe: Optional[ProbeResult] = None
    witness: Optional[WitnessResult] = None
    witness_needed: bool = False
    rejoin: bool = False
    """Asked by a live node woken from a stall: its peer may be deciding to take over right now."""


@dataclass
class _Handover:
    """A planned switchover under way."""

    started: float
    cause: str
    stage: str = "stopping"  # stopping -> told -> checking
    stopped_at: Optional[float] = None
    why: str = ""


@dataclass
class _Claim:
    """A takeover waiting for its epoch to be saved."""

    epoch: int
    kind: str
    cause: str
    answer: Optional[Answer] = None


class PairCore(CoreBase):
    """
    The role of one node of a pair, and every rule that changes it.

    @ivar role: starting, backup, live, handing_over or stopped.
    @ivar epoch: the ballot this node last took the role with.
    @ivar serving: the serving layer has been asked to serve (and not yet to stop).
    """

    def __init__(self, settings: CoreSettings, epoch: int, now: Callable[[], float], plants: FrozenSet[str] = frozenset()):
        self.plants = self.known_plants(plants, PLANTS)
        self.settings = settings
        self.now = now
        self.role = STARTING
        self.epoch = epoch
        self.highest = epoch
        self.peer_highest = 0
        """The highest epoch the peer has announced (frames, probe answers): not this node's own claims."""
        self.cause = "starting"
        self.since = now()
        self.serving = False
        self.peer_name = settings.peer
        self.peer_role: Optional[str] = None
        self.peer_epoch: Optional[int] = None
        self.peer_priority: Optional[int] = None
        self.announced_threshold: Optional[float] = None
        self.last_heard: Optional[float] = None
        self.last_live = now()
        self.last_answer: Optional[float] = None
        """When this node sent the newest heartbeat its backup has answered: the backup heard it no earlier."""
        self.out_up = False
        self._beat_seq = 0
        self._beats_sent = {}
        self._acks = collections.deque(maxlen=ACKS_KEPT)  # (sent, answered) of the heartbeats the backup answered
        self._tokens = itertools.count(1)
        self._timers = {}
        self._probes = {}
        self._prevote: Optional[_Prevote] = None
        self._gate = None
        self._claim: Optional[_Claim] = None
        self._handover: Optional[_Handover] = None
        self._fence_token: Optional[int] = None
        self._fence_warned = False
        self._failback_since: Optional[float] = None
        self._retry_attempt = 0
        self._isolated_noted = False
        self._two_lives_noted = None
        self._shutting_down = False
        self._pending_answer: Optional[Answer] = None
        self._asked = {}  # token -> (when asked, timeout), for every question out
        self._stood_aside_for = None  # (peer, epoch) this backup last let take the role
        self._stop_pending = False  # channels asked to stop, not yet stopped
        self._asked_again = False  # a node started live asks a backup peer twice
        self._stop_bounded = False  # a shutdown's stop already given a bound
        self._save_noted_at: Optional[float] = None
        self._save_unnoted = 0
        self._out: List[object] = []

    # -- what this node says on the wire, and about itself --

    @property
    def wire_role(self) -> str:
        """
        The role announced in frames. A node handing over is live while its
        channels are still stopping (the backup must not take over yet), and
        no longer live once they have stopped; a stopped node is no longer live.
        """
        if self.role == HANDING_OVER and self._stop_pending:
            return LIVE
        return self.role if self.role in (LIVE, STARTING) else BACKUP

    @property
    def peer_threshold(self) -> float:
        """The threshold the peer announced, or this node's copy of it before anything was heard."""
        return self.announced_threshold if self.announced_threshold is not None else self.settings.peer_threshold

    def rank(self) -> ballot.Rank:
        return ballot.Rank(self.epoch, self.settings.priority, self.settings.name)

    def healthy_backup(self) -> bool:
        """Is the backup connected and answering (within two heartbeat intervals)?"""
        return (
            self.out_up and self.last_answer is not None
            and self.now() - self.last_answer <= 2 * self.settings.interval + 0.25
        )

    # -- effects --

    def _probe(self, purpose: str, timeout: float, token: Optional[int] = None) -> None:
        token = next(self._tokens) if token is None else token
        self._probes[purpose] = token
        self._asked["probe", token] = (self.now(), timeout)
        self._emit(Probe(purpose, token, timeout))

    def _ask_witnesses(self, token: int) -> None:
        self._asked["witness", token] = (self.now(), self.settings.window)
        self._emit(AskWitnesses(token, self.settings.window))

    def _late(self, key: tuple) -> Optional[float]:
        """
        How much later than its timeout an unanswered question's result
        came (None: in time). Far too late means this process stalled
        meanwhile: the silence it reports proves nothing.
        """
        asked = self._asked.pop(key, None)
        if asked is None:
            return None
        late = self.now() - (asked[0] + asked[1])
        return late if late > self._stall_bound() else None

    def _start_serving(self) -> None:
        self.serving = True
        self._emit(Serve(self.epoch))

    def _stop_serving(self, final: str, within: Optional[float] = None) -> None:
        self.serving = False
        self._stop_pending = True
        self._disarm("retry")
        self._emit(StopServing(final, within))

    # -- starting --

    def _on_Start(self, obs: Start) -> None:
        if self.role != STARTING:
            return
        if obs.as_backup:
            self._become_backup("started as backup", final=True)
            return
        s = self.settings
        timeout = self._startup_timeout()
        self._note("info", f"started as live: first asking {s.peer or 'the backup location'} how it stands"
                   f" (at most {timeout:g}s)")
        self._probe(STARTUP, timeout)

    def _startup_timeout(self) -> float:
        """How long a node started live waits for its peer's answer: two intervals, 0.5 s to 2 s."""
        return min(STARTUP_CHECK_TIMEOUT, max(0.5, 2 * self.settings.interval))

    def _startup_checked(self, r: ProbeResult) -> None:
        peer = r.sender or self.peer_name or "the backup location"
        if r.outcome == ANSWERED and r.role == LIVE:
            self._become_backup(f"started as live, but {peer} is live (epoch {r.epoch}): started as backup instead",
                                final=True)
        elif r.outcome == ANSWERED and r.role == STARTING and self._outranked_by(r.epoch, r.priority, peer):
            self._become_backup(f"started as live together with {peer}, which outranks this node:"
                                " started as backup instead", final=True)
        elif r.outcome == ANSWERED and r.role == BACKUP and not self._asked_again:
            # A backup may be deciding to take over right now (it heard nothing
            # from this node while it was down): let that finish, then ask again.
            self._asked_again = True
            self._arm("startup", self.settings.window)
        elif r.outcome == ANSWERED:
            self._claim_role("start", f"started as live; {peer} is {r.role}")
        else:
            self._through_gate("start", f"started as live; {peer} did not answer ({r.detail or r.outcome})")

    # -- backup: watching the live signal --

    def _become_backup(self, cause: str, final: bool = False, within: Optional[float] = None, kind: str = "") -> None:
        """Leave whatever role this is for backup: stop serving first, then watch."""
        if self.serving or final or (self._stop_pending and within is not None):
            self._stop_serving(CHANNELS_WAITING, within)  # a stop under way gets the shorter bound
        if self._handover is not None:
            self._emit(SwitchoverOutcome(False, f"the switchover was given up: {cause}"))
        if self.role in (LIVE, HANDING_OVER):
            self._emit(Hangup())
        self._disarm("beat", "lease", "handover", "deadline")
        self._handover = None
        self._fence_token = None
        self._prevote = None
        self._claim = None
        self._set_role(BACKUP, cause, kind)
        self.last_live = self.now()
        self._isolated_noted = False
        self._arm_suspect()

    def _arm_suspect(self) -> None:
        s = self.settings
        self._arm("suspect", self.last_live + s.threshold - s.window - self.now())

    def _heard_live_signal(self) -> None:
        self._stood_aside_for = None
        self.last_live = self.now()
        self._isolated_noted = False
        self._prevote = None
        self._disarm("deadline")
        self._arm_suspect()

    def _suspect(self) -> None:
        s = self.settings
        if self._prevote is not None or self._claim is not None:
            return
        if self.now() - self.last_live < s.threshold - s.window - 1e-9:
            self._arm_suspect()
            return
        if "no-prevote" in self.plants:
            self._arm("deadline", self.last_live + s.threshold - self.now())
            return
        silence = self.now() - self.last_live
        self._start_prevote(
            self.last_live + s.threshold, "silence",
            f"no live signal from {self.peer_name or 'any live server'} for {s.threshold:g}s or more"
            f" (threshold {s.threshold:g}s; silent {silence:.3f}s when asked)",
        )

    def _start_prevote(self, not_before: float, kind: str, cause: str) -> None:
        s = self.settings
        pv = self._prevote = _Prevote(next(self._tokens), not_before, kind, cause, witness_needed=s.witnesses)
        self._disarm("suspect")
        self._probe(PREVOTE, s.window, token=pv.token)
        if s.witnesses:
            self._ask_witnesses(pv.token)
        self._arm("deadline", max(not_before - self.now(), s.window))

    def _prevote_decide(self, forced: bool = False) -> None:
        """Decide a pending question, if what is known suffices (or, C{forced}, with what is known)."""
        pv = self._prevote
        if pv is None or self.role != BACKUP:
            return
        r = pv.probe
        if r is None and not forced:
            return
        outcome = r.outcome if r is not None else NO_ANSWER
        if outcome == ANSWERED:
            # The peer answered and is not live (a live answer ended the question already).
            peer = (r.sender, r.epoch)
            outranked = self._outranked_by(r.epoch, r.priority, r.sender or self.peer_name or "?")
            if (outranked or pv.rejoin) and self._stood_aside_for != peer:
                # Once: a peer that outranks this node but is still not live when
                # asked again (it cannot take the role: its disk is full, say)
                # does not keep this node from taking it. A node woken from a
                # stall lets a peer that may be taking over right now finish
                # first, and asks again a window later.
                self._stood_aside_for = peer
                if pv.rejoin and not outranked:
                    self._stand_aside(f"{r.sender} may be taking over after this node's stall; asking again shortly",
                                      soon=True)
                else:
                    self._stand_aside(f"{r.sender} is {r.role} too and outranks this node: it takes the role")
                return
            self._finish_prevote()
            self._claim_role(pv.kind, f"{pv.cause}; {r.sender} answered that it is {r.role}")
            return
        if outcome == NO_ANSWER and self.now() < pv.not_before - 1e-9:
            return  # the threshold has not passed: wait for the deadline
        if pv.witness_needed and self.now() < pv.not_before - 1e-9:
            # With witnesses, even a refusal waits for the threshold: a reset
            # cannot be told from a crash, and a live node cut off from its
            # witnesses fences itself in time for the threshold, not sooner.
            return
        evidence = {REFUSED: "its heartbeat port refused the connection", GONE: "its heartbeat port closed without an answer",
                    NO_ANSWER: "its heartbeat port did not answer"}[outcome]
        if outcome == NO_ANSWER and r is not None and r.detail:
            evidence = f"{evidence} ({r.detail})"
        kind = "crash" if outcome in (REFUSED, GONE) and pv.kind == "crash" else pv.kind
        cause = f"{pv.cause}; {evidence}"
        if outcome in (REFUSED, GONE):
            cause = f"{self.peer_name} is gone: {cause} (its process is dead, or a firewall resets it)"
        if pv.witness_needed:
            if pv.witness is None and not forced:
                return
            if pv.witness is None or pv.witness.reachable is None:
                self._isolated(cause)
                return
            self._finish_prevote()
            self._claim_role(kind, f"{cause}; witness {pv.witness.reachable} reachable")
            return
        self._finish_prevote()
        self._claim_role(kind, cause)

    def _finish_prevote(self) -> None:
        self._prevote = None
        self._disarm("deadline")

    def _stand_aside(self, why: str, soon: bool = False) -> None:
        self._finish_prevote()
        self._note("info", f"not taking over: {why}")
        s = self.settings
        # soon: the next question in one window, else a whole threshold of silence from now.
        self.last_live = self.now() - (s.threshold - 2 * s.window if soon else 0.0)
        self._arm_suspect()

    def _isolated(self, cause: str) -> None:
        self._finish_prevote()
        if not self._isolated_noted:
            self._isolated_noted = True
            self._note("warn", f"{cause}, but no witness is reachable either: this node is the isolated one and"
                               " stays backup")
        self._arm("suspect", self.settings.window)

    # -- taking the role --

    def _through_gate(self, kind: str, cause: str) -> None:
        """Take the role if the witnesses (if any) agree this node is not the isolated one."""
        if not self.settings.witnesses:
            self._claim_role(kind, cause)
            return
        token = next(self._tokens)
        self._gate = (token, kind, cause)
        self._ask_witnesses(token)

    def _claim_role(self, kind: str, cause: str, answer: Optional[Answer] = None) -> None:
        if self._shutting_down:
            return
        s = self.settings
        highest = max(self.epoch, self.highest)
        if "no-epoch-fencing" in self.plants:
            epoch = highest + 1
        else:
            epoch = ballot.next_epoch(highest, s.slot, s.modulus)
        self._disarm("suspect", "deadline")
        self._prevote = None
        self._claim = _Claim(epoch, kind, cause, answer)
        self._emit(SaveEpoch(epoch))

    def _on_EpochSaved(self, obs: EpochSaved) -> None:
        claim = self._claim
        if claim is None or claim.epoch != obs.epoch:
            return
        self._claim = None
        self.highest = max(self.highest, claim.epoch)  # never offered again, saved or not
        if obs.error is None:
            self._save_noted_at, self._save_unnoted = None, 0
        else:
            unsaved_ok = self.settings.unsaved_epoch or "no-epoch-fencing" in self.plants
            if not unsaved_ok:
                # Asked again at every window while the disk stays full: said
                # the first time, then about once a minute, so that the log
                # and the on_fault hooks (run one after another) keep up.
                now = self.now()
                if self._save_noted_at is None or now - self._save_noted_at >= SAVE_NOTE_EVERY:
                    more = f" ({self._save_unnoted} more failed saves since the last report)" if self._save_unnoted else ""
                    self._note("critical", f"could not keep epoch {claim.epoch}: {obs.error}; not taking the role under"
                                           f" an epoch that is not on disk (unsaved_epoch = true allows it){more}", fault=True)
                    self._save_noted_at, self._save_unnoted = now, 0
                else:
                    self._save_unnoted += 1
                if self.role == BACKUP:
                    self._arm("suspect", self.settings.window)
                else:
                    self._become_backup(f"{claim.cause}; but epoch {claim.epoch} could not be saved",
                                        final=self.role == STARTING)
                return
            self._note("critical", f"could not keep epoch {claim.epoch}: {obs.error}; going on with it in memory"
                                   " only (unsaved_epoch = true)", fault=True)
        self._go_live(claim)

    def _go_live(self, claim: _Claim) -> None:
        s = self.settings
        self.epoch = claim.epoch
        self._prevote = None
        self._disarm("suspect", "deadline")
        self._set_role(LIVE, claim.cause, claim.kind)
        self._start_serving()
        self._pending_answer = claim.answer
        self._emit(Dial())
        self.last_answer = self.now()
        self._acks.clear()
        self._failback_since = None
        self._fence_warned = False
        self._retry_attempt = 0
        self._arm("beat", s.interval)
        self._arm_lease()

    # -- live --

    def _lease_needed(self) -> bool:
        s = self.settings
        return (s.witnesses and s.self_fence) or (s.failback and s.preferred not in (None, s.name))

    def _arm_lease(self) -> None:
        if self._lease_needed():
            self._arm("lease", min(0.25, self.peer_threshold / 8))
        else:
            self._disarm("lease")

    def _still_serving(self) -> bool:
        """Live, or handing over with channels that have not stopped yet."""
        return self.role == LIVE or (self.role == HANDING_OVER and self._stop_pending)

    def _lease(self) -> None:
        s = self.settings
        if not self._still_serving():
            return
        self._arm_lease()
        self._check_failback()
        if not (s.witnesses and s.self_fence) or self._fence_token is not None or self.last_answer is None:
            return
        silence = self.now() - self.last_answer
        if silence < self.peer_threshold / 2:
            self._fence_warned = False
            return
        self._fence_token = next(self._tokens)
        self._ask_witnesses(self._fence_token)

    def _fence_checked(self, obs: WitnessResult) -> None:
        self._fence_token = None
        if not self._still_serving() or self.last_answer is None:
            return
        silence = self.now() - self.last_answer
        if silence < self.peer_threshold / 2:
            return
        if obs.reachable is None:
            # Stop well before the backup's threshold can pass, counted from
            # the send of the last heartbeat it answered: half the time left.
            within = max(0.0, FENCE_STOP_SHARE * (self.last_answer + self.peer_threshold - self.now()))
            self._become_backup(
                f"self-fenced: no answer from backup {self.peer_name} for {silence:.3f}s and no witness reachable",
                within=within,
            )
        elif not self._fence_warned:
            self._fence_warned = True
            self._note("warn", f"backup {self.peer_name} has not answered for {silence:.3f}s; witness"
                               f" {obs.reachable} is reachable, so this node stays live")

    def _check_failback(self) -> None:
        s = self.settings
        if not s.failback or s.preferred in (None, s.name) or self._failback_since is None:
            return
        if not self.healthy_backup():
            self._failback_since = None
            return
        if self.now() - self._failback_since >= s.failback_delay:
            self._failback_since = None
            self._note("info", f"failback: {s.preferred} has been a healthy backup for {s.failback_delay:g}s;"
                               " giving the live role back")
            self._begin_switchover(f"failback to the preferred server {s.preferred}")

    def _meet_live(self, h: Heard) -> None:
        if self._shutting_down:
            # Finishing a stop: a higher-ranked live node serves already, so the
            # channels still stopping get one heartbeat interval, no more.
            if self._stop_pending and not self._stop_bounded and self._outranked_by(h.epoch, h.priority, h.sender):
                self._stop_bounded = True
                self._emit(StopServing(CHANNELS_STOPPED, self.settings.interval))
            return
        if self._outranked_by(h.epoch, h.priority, h.sender):
            self._become_backup(
                f"{h.sender} is live too with epoch {h.epoch}, which outranks this node (epoch {self.epoch}):"
                " yielding", within=self.settings.interval,
            )
        elif self._two_lives_noted != (h.sender, h.epoch):
            self._two_lives_noted = (h.sender, h.epoch)
            self._note("warn", f"{h.sender} is live too (epoch {h.epoch}); this node outranks it, so {h.sender}"
                               " yields")
            self._emit(AnnounceAgain())

    def _outranked_by(self, epoch: int, priority: int, name: str) -> bool:
        if "local-priority" in self.plants:
            priority = self.settings.peer_priority
        return ballot.outranks(ballot.Rank(epoch, priority, name), self.rank())

    def _on_Served(self, obs: Served) -> None:
        if self.role != LIVE or not self.serving:
            return
        answer, self._pending_answer = self._pending_answer, None
        if answer is not None:
            self._emit(answer)  # the old live node measures its switchover gap to this answer
        if not obs.failed:
            self._retry_attempt = 0
            return
        if "no-listener-retry" in self.plants:
            return
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** self._retry_attempt)
        if self._retry_attempt % RETRY_NOTE_EVERY == 0:  # the first time, then about once a minute
            self._note("warn", f"serving with FAILED channels {', '.join(obs.failed)}; trying them again in"
                               f" {delay:g}s, then at most every {RETRY_CAP:g}s while live")
        self._retry_attempt += 1
        self._arm("retry", delay)

    # -- planned switchover --

    def _on_SwitchoverAsked(self, obs: SwitchoverAsked) -> None:
        if self.role != LIVE:
            live = f"; ask the live node {self.peer_name}" if self.role == BACKUP and self.peer_name else ""
            self._emit(SwitchoverOutcome(False, f"{self.settings.name} is {self.role}, not live{live}"))
            return
        if not self.healthy_backup():
            self._emit(SwitchoverOutcome(False, f"the backup {self.peer_name} has not answered recently;"
                                                " a switchover now could leave nobody serving"))
            return
        self._begin_switchover(obs.cause or f"planned switchover to {self.peer_name}")

    def _begin_switchover(self, cause: str) -> None:
        self._handover = _Handover(self.now(), cause)
        # Heartbeats and the fence go on while the channels stop: until then
        # this node still serves, and must stop in time if it is cut off.
        self._set_role(HANDING_OVER, cause)
        self._stop_serving(CHANNELS_WAITING)

    def _handover_stopped(self) -> None:
        ho = self._handover
        ho.stage, ho.stopped_at = "told", self.now()
        self._disarm("beat", "lease")
        if not self.out_up:
            self._handover_check("the link to the backup was down when the listeners had stopped")
            return
        self._emit(StandDown(switchover=True))
        self._arm("handover", max(SWITCHOVER_CONFIRM, self.peer_threshold))

    def _handover_check(self, why: str) -> None:
        """The backup did not confirm (or its link dropped): ask it how it stands before anything else."""
        ho = self._handover
        if ho is None or ho.stage != "told":
            return
        ho.stage = "checking"
        ho.why = why
        self._disarm("handover")
        self._probe(HANDOVER, self.settings.window)

    def _handover_checked(self, r: ProbeResult) -> None:
        ho = self._handover
        if ho is None or ho.stage != "checking":
            return
        why = ho.why
        peer = r.sender or self.peer_name
        if r.outcome == ANSWERED and r.role == LIVE:
            self._handed_over(peer, r.epoch)
        elif r.outcome == ANSWERED:
            self._handover = None
            self._emit(SwitchoverOutcome(False, f"{why}; {peer} answered that it is {r.role}: serving again"))
            self._claim_role("switchover", f"switchover failed: {why}; {peer} is still {r.role}: serving again")
        elif r.outcome in (REFUSED, GONE):
            self._handover = None
            self._emit(SwitchoverOutcome(False, f"{why}; {peer}'s process is gone"))
            self._through_gate("crash", f"switchover failed: {why}; {peer}'s process is gone: serving again")
        else:
            self._handover = None
            self._emit(SwitchoverOutcome(False, f"{why}; {peer} did not answer: this node waits as backup"))
            self._become_backup(f"switchover not confirmed: {why}; {peer} did not answer, so it may be live:"
                                " this node takes over by the threshold rule if it is not")

    def _handed_over(self, peer: str, epoch: int) -> None:
        ho = self._handover
        if ho is None and self._shutting_down:
            return  # finishing its stop: the peer is live, nothing to hand over
        if ho is None:
            # Ended already (a failed check): a live peer is simply met.
            self._become_backup(f"{peer} is live (epoch {epoch})")
            return
        stopped_at = ho.stopped_at if ho.stopped_at is not None else ho.started
        gap = self.now() - stopped_at
        self._handover = None
        # Channels still stopping (the peer took over on its own meanwhile): one heartbeat, no more.
        within = self.settings.interval if self._stop_pending else None
        self._become_backup(f"handed over to {peer} (epoch {epoch}); no listener served for {gap * 1000:.1f} ms",
                            within=within)
        self._emit(SwitchoverOutcome(True, f"handed over to {peer}", to=peer, epoch=epoch, gap=gap))

    # -- observations --

    def _on_Heard(self, h: Heard) -> None:
        now = self.now()
        # A frame of a term already over: the peer has announced a higher epoch since (its epochs only grow).
        stale = h.epoch < self.peer_highest
        self.peer_highest = max(self.peer_highest, h.epoch)
        self.peer_name, self.peer_role, self.peer_epoch = h.sender, h.role, h.epoch
        self.peer_priority, self.last_heard = h.priority, now
        if h.threshold > 0:
            self.announced_threshold = h.threshold
        self.highest = max(self.highest, h.epoch)
        role = self.role
        if h.kind == STANDING_DOWN:
            answer = Answer(h.link, h.seq, h.reply)
            if role == BACKUP and self._claim is None and not stale:
                why = "planned switchover" if h.switchover else "shutting down"
                self._claim_role("switchover" if h.switchover else "peer_shutdown",
                                 f"{h.sender} stood down ({why})", answer=answer)
                return
            if role == BACKUP and self._claim is None:
                # Read late (this process was stopped while it waited): the peer has been live
                # again since, under a higher epoch. Taking the role now would be a second live node.
                self._note("info", f"not taking over: {h.sender} stood down at epoch {h.epoch}, but it has"
                                   f" announced epoch {self.peer_highest} since")
            self._emit(answer)
            return
        if h.role == LIVE:
            if role == BACKUP:
                self._heard_live_signal()
            elif role == LIVE:
                self._meet_live(h)
            elif role == HANDING_OVER:
                self._handed_over(h.sender, h.epoch)
            elif role == STARTING:
                self._become_backup(f"started as live, but {h.sender} is live (epoch {h.epoch}):"
                                    " started as backup instead", final=True)
        elif self._still_serving() and h.kind == ANSWER and h.link == OUT:
            sent, answered = h.acked if h.acked is not None else (self._beats_sent.get(h.seq), now)
            if sent is not None and (self.last_answer is None or sent > self.last_answer):
                self.last_answer = sent
            if sent is not None and h.role == BACKUP:
                self._acks.append((sent, answered))  # the backup heard this node's live signal in between
            self._fence_warned = False
            s = self.settings
            if s.failback and h.sender == s.preferred:
                if self._failback_since is None:
                    self._failback_since = now
            else:
                self._failback_since = None
        if h.kind in (HEARTBEAT, QUERY):
            self._emit(Answer(h.link, h.seq, h.reply))

    def _on_LinkUp(self, obs: LinkUp) -> None:
        if obs.link == OUT:
            self.out_up = True
            if self.role == LIVE:
                self._beat()  # the backup hears at once from a node that has just (re)connected

    def _on_LinkDown(self, obs: LinkDown) -> None:
        if obs.link == OUT:
            self.out_up = False
            self._failback_since = None
            if self.role == HANDING_OVER:
                self._handover_check("the link to the backup dropped during the switchover")
            return
        if self.role != BACKUP or not obs.from_live or obs.stood_down or obs.how == LOCAL:
            return
        if self._prevote is not None or self._claim is not None:
            return
        peer = self.peer_name
        how = f"closed by {peer}: it stopped without standing down, or its process died" if obs.how == "closed" \
            else "reset on the way"
        self._note("warn", f"heartbeat link from {peer} (live) ended ({how}); asking {peer}'s heartbeat port at"
                           f" once whether it still runs")
        if "no-prevote" in self.plants:
            return
        # A refused or closed probe decides at once; no answer proves nothing
        # and waits for the threshold, as the silence would.
        self._start_prevote(self.last_live + self.settings.threshold, "crash",
                            f"{self.peer_name}'s heartbeat link was lost ({obs.how})")

    def _on_ProbeResult(self, r: ProbeResult) -> None:
        if self._probes.get(r.purpose) != r.token:
            return
        del self._probes[r.purpose]
        late = self._late(("probe", r.token))
        if r.outcome == NO_ANSWER and late is not None and "no-stall-check" not in self.plants:
            # Timed out while this process itself did not run: ask again.
            self._stalled(late)
            if self._probes.get(r.purpose) is None and r.purpose != PREVOTE:
                self._probe(r.purpose, self.settings.window if r.purpose != STARTUP else self._startup_timeout())
            return
        if r.outcome == ANSWERED and r.sender is not None:
            self.peer_name, self.peer_role, self.peer_epoch = r.sender, r.role, r.epoch
            self.peer_priority, self.last_heard = r.priority, self.now()
            if r.threshold > 0:
                self.announced_threshold = r.threshold
            self.highest = max(self.highest, r.epoch)
            self.peer_highest = max(self.peer_highest, r.epoch)
        if r.purpose == STARTUP:
            if self.role == STARTING:
                self._startup_checked(r)
        elif r.purpose == PREVOTE:
            pv = self._prevote
            if pv is None or pv.token != r.token or self.role != BACKUP:
                return
            if "no-prevote" in self.plants:
                return
            if r.outcome == ANSWERED and r.role in (LIVE, HANDING_OVER):
                self._finish_prevote()
                self._note("info", f"not taking over: {r.sender} answered that it is live (epoch {r.epoch})")
                self._heard_live_signal()
                return
            pv.probe = r
            self._prevote_decide()
        elif r.purpose == HANDOVER:
            self._handover_checked(r)

    def _on_WitnessResult(self, obs: WitnessResult) -> None:
        late = self._late(("witness", obs.token))
        if obs.reachable is None and late is not None and "no-stall-check" not in self.plants:
            # No witness answered, but this process itself did not run meanwhile: ask again.
            if self._prevote is not None and self._prevote.token == obs.token:
                self._stalled(late)
                return
            if self._gate is not None and self._gate[0] == obs.token:
                _, kind, cause = self._gate
                self._gate = None
                self._through_gate(kind, cause)
                return
            if self._fence_token == obs.token:
                self._fence_token = None  # the next lease tick asks again
                return
        pv = self._prevote
        if pv is not None and pv.token == obs.token:
            pv.witness = obs
            self._prevote_decide()
        elif self._gate is not None and self._gate[0] == obs.token:
            _, kind, cause = self._gate
            self._gate = None
            if self.role not in (STARTING, BACKUP, HANDING_OVER):
                return
            if obs.reachable is not None:
                self._claim_role(kind, f"{cause}; witness {obs.reachable} reachable")
            elif self.role == BACKUP:
                self._isolated(cause)
            else:
                self._become_backup(f"{cause}; no witness reachable either: this node may be the isolated one,"
                                    " so it waits as backup", final=self.role == STARTING)
        elif self._fence_token is not None and self._fence_token == obs.token:
            self._fence_checked(obs)

    def _on_Deadline(self, obs: Deadline) -> None:
        entry = self._timers.get(obs.name)
        if entry is None or entry[0] != obs.token:
            return
        del self._timers[obs.name]
        late = self.now() - entry[1]
        if late > self._stall_bound() and not {"no-stall-check", "no-prevote"} & self.plants:
            self._stalled(late)
            if obs.name in ("suspect", "deadline"):
                return  # the question is asked again from scratch
        handler = {
            "suspect": self._suspect,
            "deadline": self._deadline,
            "beat": self._beat,
            "lease": self._lease,
            "retry": self._retry,
            "startup": lambda: self.role == STARTING and self._probe(
                STARTUP, self._startup_timeout()),
            "handover": lambda: self._handover_check(
                f"{self.peer_name} did not confirm it is live within"
                f" {max(SWITCHOVER_CONFIRM, self.peer_threshold):g}s"),
        }[obs.name]
        handler()

    def _deadline(self) -> None:
        if self.role != BACKUP:
            return
        if "no-prevote" in self.plants and self._prevote is None:
            silence = self.now() - self.last_live
            self._claim_role("silence", f"no live signal from {self.peer_name or 'any live server'} for"
                                        f" {silence:.3f}s (threshold {self.settings.threshold:g}s)")
            return
        self._prevote_decide(forced=True)

    def _beat(self) -> None:
        if self._still_serving():
            self._beat_seq += 1
            self._beats_sent[self._beat_seq] = self.now()
            self._beats_sent.pop(self._beat_seq - 64, None)
            self._emit(SendHeartbeat(self._beat_seq))
            self._arm("beat", self.settings.interval)

    def _retry(self) -> None:
        if self.role == LIVE and self.serving:
            self._emit(RetryChannels())

    def _stall_bound(self) -> float:
        """A timer this late means the process itself did not run."""
        return max(0.05, self.settings.window / 2)

    def _on_Stalled(self, obs: Stalled) -> None:
        if obs.seconds > self._stall_bound() and not {"no-stall-check", "no-prevote"} & self.plants:
            self._stalled(obs.seconds)

    def _stalled(self, seconds: float) -> None:
        s = self.settings
        if self._shutting_down:
            return
        if self.role == BACKUP:
            if self._claim is not None:
                return
            if self._prevote is None and self.now() - self.last_live < s.threshold - s.window:
                return
            if "no-prevote" in self.plants:
                return
            kind = self._prevote.kind if self._prevote is not None else "silence"
            rejoin = self._prevote is not None and self._prevote.rejoin
            self._prevote = None
            # Asked again from scratch; no answer decides no sooner than the threshold would,
            # nor before the live node has had a heartbeat interval past the question's window
            # to speak since this node woke: a stall of the whole host (a hypervisor's pause, a
            # machine too busy to run either node) stops the live node as well, and it speaks
            # again a moment after it wakes (its late heartbeat timer first). Silence measured
            # across the stall proves nothing.
            grace = self.now() + s.window + s.interval
            self._start_prevote(max(grace, self.last_live + s.threshold), kind,
                                f"no live signal from {self.peer_name or 'any live server'} while this node was"
                                f" itself stalled for {seconds:.3f}s")
            self._prevote.rejoin = rejoin
            return
        if self.role == LIVE:
            # Only the part of the stall since this node went live counts (a
            # slow epoch save before it is no gap in its heartbeats).
            seconds = min(seconds, self.now() - self.since)
        if not self._still_serving():
            return
        silence = self._unheard_bound(self.now() - seconds)
        if silence is None:
            # Nothing answered to go by: the backup heard the last heartbeat before the stall at the latest.
            silence = seconds + s.interval
        if silence >= self.peer_threshold - FENCE_MARGIN:
            self._become_backup(f"this node was stalled for {seconds:.3f}s, long enough for its backup to take over"
                                f" (it may have heard nothing for {silence:.3f}s):"
                                " not serving until it has heard its peer", within=0.0)
            self._start_prevote(self.now(), "silence", f"rejoining after a stall of {seconds:.3f}s")
            self._prevote.rejoin = True

    def _unheard_bound(self, since: float) -> Optional[float]:
        """
        The longest the backup can have gone without hearing this node's live
        signal, at any moment from C{since} until now, by the heartbeats it
        answered; None when no answer came in by C{since} (nothing to go by).

        An answer to a heartbeat sent at C{s} that came in at C{a} proves the
        backup heard this node at some moment between the two. So at any time
        C{t} its silence is at most C{t} less the latest send time among the
        answers in by C{t}: the bound is largest just before each answer came
        in, and now. Heartbeats sent off the reactor (pulses) are answered
        while the reactor is busy; their times come from the pulse thread
        (L{Heard.acked}), so a busy reactor that went on pulsing, and was
        heard, need not stop serving. A pulse lost either way is not answered,
        so loss makes the bound longer, never shorter.
        """
        latest = None
        longest = 0.0
        for sent, answered in sorted(self._acks, key=lambda ack: ack[1]):
            if answered > since:
                if latest is None:
                    return None
                longest = max(longest, answered - latest)
            latest = sent if latest is None else max(latest, sent)
        if latest is None:
            return None
        return max(longest, self.now() - latest)

    def _on_StoppedServing(self, obs: StoppedServing) -> None:
        self._stop_pending = False
        if self.serving:
            return  # a stop overtaken by a new start
        if self._handover is not None and self._handover.stage == "stopping":
            if obs.failed:
                # Whatever could not be let go of, the backup could not take:
                # it is never told, and this node serves again.
                why = f"{', '.join(obs.failed)} could not be removed; the backup could not take it"
                self._handover = None
                self._emit(SwitchoverOutcome(False, why))
                self._claim_role("switchover", f"switchover failed: {why}: serving again")
                return
            self._handover_stopped()
        elif self._shutting_down and self.role != STOPPED:
            self._emit(StandDown(switchover=False))
            self._emit(Hangup())
            self._set_role(STOPPED, "node shutting down")

    def _on_NewSettings(self, obs: NewSettings) -> None:
        old, self.settings = self.settings, obs.settings
        if self.role == BACKUP and self._prevote is None and self._claim is None and old.threshold != self.settings.threshold:
            self._arm_suspect()
        if self.role == LIVE:
            if old.interval != self.settings.interval:
                self._arm("beat", self.settings.interval)
            self._arm_lease()

    def _on_Shutdown(self, obs: Shutdown) -> None:
        if self.role == STOPPED or self._shutting_down:
            return
        self._shutting_down = True
        was_serving = self.role in (LIVE, HANDING_OVER)
        # Heartbeats and the fence go on until the channels have stopped (a
        # slow stop must not let the backup's threshold pass); nothing else does.
        keep = ("beat", "lease") if was_serving else ()
        for name in list(self._timers):
            if name not in keep:
                self._disarm(name)
        self._prevote = self._claim = self._gate = None
        if self._handover is not None:
            self._emit(SwitchoverOutcome(False, "the node is shutting down"))
            self._handover = None
        if was_serving:
            self._stop_serving(CHANNELS_STOPPED)  # then stand down: see _on_StoppedServing
        else:
            self._set_role(STOPPED, "node shutting down")


def settings_for(config, name: str) -> CoreSettings:
    """The core's settings of server C{name} of a L{SharedConfig}."""
    server = config.server(name)
    others = [n for n in config.servers if n != name]
    peer = others[0] if len(others) == 1 else None
    peer_server = config.servers.get(peer) if peer else None
    failover = config.failover
    # A pair's ballot slots come from the two names alone, so two copies of the
    # file that list other servers besides still give the two different slots.
    slot, modulus = ballot.slot_of(name, [name, peer] if peer else config.servers)
    return CoreSettings(
        name=name, peer=peer, priority=server.priority, threshold=server.threshold,
        interval=failover.heartbeat_interval,
        peer_threshold=peer_server.threshold if peer_server else server.threshold,
        peer_priority=peer_server.priority if peer_server else 0,
        witnesses=bool(failover.witness), self_fence=failover.self_fence, failback=failover.failback,
        preferred=failover.preferred, failback_delay=failover.failback_delay,
        unsaved_epoch=failover.unsaved_epoch, slot=slot, modulus=modulus,
    )


