"""
The decision core of a group on etcd (C{coordinator = etcd}): one member's
role rules, sans I/O, in the style of L{iwayfailover.core.pair}.

The live role is the store's key C{PREFIX/live}, created only if absent,
bound to a lease of TTL C{threshold}. Its create revision is the group's
epoch: a fencing token that rises across the whole group and is never used
twice. The coordinator (L{iwayfailover.coordinators.etcd}) turns the
store's answers and its watch into observations, and carries out the
effects; the simulator (tests/sim/group.py) does the same with a simulated
store.

The rules, each a property the simulator checks:

 - B{Campaign only for a free key}, through the store's create-if-absent
   transaction: two campaigns at once have one winner. The best member
   (priority, then name) that may campaign goes at once; the others follow
   C{rank * stagger} later, each only if the key is still free. A member
   started with C{-b} that finds no holder at its start waits C{threshold}
   first (the live member may be starting too).
 - B{A live member proves its lease or stops}: a lease kept alive at
   C{sent_at} lives at least until C{sent_at + ttl} on the store, counted
   from when the keepalive was I{sent} (on this member's monotonic clock),
   never from when its answer came. Without a newer answer the member
   starts to stop C{guard} before then, with a bound that ends the stop
   before the store can hand the key to anyone else.
 - B{A stale key is cleared, never a live one}: the live member writes
   its key again at every keepalive, and counts its lease from when that
   write was sent. A backup that has seen no renewal for the holder's TTL
   (on its own clock, from when it saw the last one, which was after the
   holder sent it) knows the holder has stopped serving by its fence, and
   deletes the key only if it is still at the revision it saw: the store's
   own expiry sweep (every 500 ms in etcd) is not waited for.
 - B{Stop first, then let go}: a clean stop or a switchover stops every
   channel before it gives up the key (which lets the next member campaign
   at once).
 - B{A key that is gone is gone}: a live member that sees the key held by
   another, or no longer held by its lease, or told the lease has expired,
   stops at once.
 - B{Own stalls}: a member woken from a stall fires its late timers first;
   a fence that came due while it was stopped stops it at once.
 - B{Channels recover}: while live, FAILED channels are retried with a
   capped backoff.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from typing import Callable, Dict, FrozenSet, Optional, Tuple

from iwayfailover.core.base import CoreBase
from iwayfailover.core.events import (
    BACKUP, CHANNELS_STOPPED, CHANNELS_WAITING, HANDING_OVER, LIVE, STARTING, STOPPED,
    Campaign, ClearStale, CampaignResult, Candidates, Deadline, GroupSwitchoverAsked, KeepAlive, KeepAliveResult,
    NewSettings, Note, Resign, Resigned, RetryChannels, SaveEpoch, Serve, Served, Shutdown, Stalled, Start,
    StopServing, StoppedServing, StoreLost, StoreState, SwitchoverOutcome, 
)

PLANTS = frozenset({"no-lease-fence", "fence-from-answer", "resign-before-stop", "campaign-at-once", "early-clear"})
"""
Rules the simulator can switch off one at a time, to show that it catches
their absence. Never set in production: C{no-lease-fence} (a live member
serves on without proof of its lease), C{fence-from-answer} (the lease is
counted from when a keepalive's answer came, not from when it was sent),
C{resign-before-stop} (a switchover or a clean stop lets go of the key
before its channels have stopped), C{campaign-at-once} (every member
campaigns as soon as the key is free, whatever its rank: safe, but the
group's choice no longer follows priority), C{early-clear} (a backup
clears a key whose renewals stopped after half the holder's TTL).
"""

RETRY_FIRST = 0.1
RETRY_CAP = 2.0
RETRY_NOTE_EVERY = 30

MARGIN = 0.05
"""Seconds a fenced member's channels must be gone before its lease can end on the store (clock rates, the last kill)."""

SWITCHOVER_CONFIRM = 5.0
"""The least time a switchover waits for the named member to hold the key."""

STORE_RETRY = 1.0
"""Seconds between campaigns when the store did not answer one."""

STALE_MARGIN = 0.01
"""
Seconds beyond the holder's TTL, after the last renewal of the live key
this member saw, before it clears the key: with L{MARGIN}, the slack
between the holder's fence and the clearing (clock rates).
"""


@dataclass(frozen=True)
class GroupSettings:
    """What the core needs of the configuration, for one member."""

    name: str
    priority: int = 0
    threshold: float = 3.0
    """The lease TTL asked for, in seconds."""
    interval: float = 0.5
    """Seconds between keepalives of the live member."""
    failback: bool = False
    preferred: Optional[str] = None
    failback_delay: float = 30.0

    @property
    def period(self) -> float:
        """
        Seconds between two renewals of the live member: the heartbeat
        interval, at most a quarter of the TTL, so that a renewal or two may
        be slow or lost before the fence.
        """
        return min(self.interval, self.threshold / 4)

    @property
    def stagger(self) -> float:
        """Seconds between the campaigns of two candidates next in rank."""
        return min(0.25, self.threshold / 10)

    def guard(self, ttl: float) -> float:
        """
        How long before its lease can end a live member without a newer
        answer starts to stop: two renewal periods or a quarter of the TTL,
        whichever is more, at most half the TTL.
        """
        return min(ttl / 2, max(2 * self.period, ttl / 4))


@dataclass
class _Handover:
    to: str
    cause: str
    started: float
    stage: str = "stopping"  # stopping -> released
    stopped_at: Optional[float] = None


class GroupCore(CoreBase):
    """
    The role of one member of a group, and every rule that changes it.

    @ivar role: starting, backup, live, handing_over or stopped.
    @ivar epoch: the group's epoch as this member knows it: its own while
        live, else the newest holder's.
    @ivar holder: the member that holds the live key (None: free; unknown
        while the store is out of reach, see C{store_known}).
    """

    def __init__(self, settings: GroupSettings, now: Callable[[], float], epoch: int = 0,
                 plants: FrozenSet[str] = frozenset()):
        self.plants = self.known_plants(plants, PLANTS)
        self.settings = settings
        self.now = now
        self.role = STARTING
        self.cause = "starting"
        self.since = now()
        self.epoch = epoch
        self._saved_epoch = epoch
        self.serving = False
        self.holder: Optional[str] = None
        self.holder_epoch = 0
        self.store_known = False
        self.store_error: Optional[str] = None
        self.revision = 0
        self.lease = 0
        self.ttl = 0.0
        self.valid_until: Optional[float] = None
        """While live: the store cannot end this member's lease before this (monotonic) time."""
        self.members: Dict[str, Tuple[int, bool]] = {}
        self._as_backup = True
        self._seen_holder = False
        self._campaign: Optional[int] = None
        self._lost_lease = 0  # a lease whose key this member still has to let go of
        self._handover: Optional[_Handover] = None
        self._shutting_down = False
        self._stop_pending = False
        self._release_after_stop = False
        self._retry_attempt = 0
        self._failback_since: Optional[float] = None
        self._vacant_since: Optional[float] = None
        self._handover_to: Optional[str] = None
        self._released_by: Optional[str] = None
        self._renewal: Optional[Tuple[str, int]] = None  # (holder, mod revision) of the last renewal seen
        self._renewal_ttl = 0.0
        self._last_holder: Optional[str] = None
        self._await_revision = 0  # the create revision of the key a lost campaign met
        self._released = set()  # leases this member let go of (a late renewal seen on the watch is not "an earlier run")
        self._tokens = itertools.count(1)
        self._timers: Dict[str, Tuple[int, float]] = {}
        self._out: list = []

    @property
    def lease_left(self) -> Optional[float]:
        """While live: the seconds the lease is proven for."""
        if self.valid_until is None:
            return None
        return max(0.0, self.valid_until - self.now())

    # -- helpers --

    def _stop_serving(self, final: str, within: Optional[float] = None) -> None:
        self.serving = False
        self._stop_pending = True
        self._disarm("retry")
        self._emit(StopServing(final, within))

    def rank(self) -> int:
        """
        This member's place among the members that may campaign (0: first).
        The member that held the key last is not counted: its key went stale,
        expired or was let go of, and its member key may outlive it a while.
        """
        me = (-self.settings.priority, self.settings.name)
        ahead = [name for name, (priority, may) in self.members.items()
                 if may and name not in (self.settings.name, self._last_holder) and (-priority, name) < me]
        return len(ahead)

    # -- starting --

    def _on_Start(self, obs: Start) -> None:
        if self.role != STARTING:
            return
        self._as_backup = obs.as_backup
        if obs.as_backup:
            self._set_role(BACKUP, "started as a backup: never takes the role while another member holds it")
            self._emit(StopServing(CHANNELS_WAITING))
        # Started live: it stays starting until the store says who holds the key.

    # -- the store --

    def _on_StoreLost(self, obs: StoreLost) -> None:
        self.store_known = False
        self.store_error = obs.detail
        self._vacant_since = None
        self._renewal = None  # timed again from the next state seen
        self._disarm("campaign", "stale")
        if self.role == STARTING:
            self._set_role(BACKUP, f"the store is out of reach ({obs.detail}): waiting as a backup until it answers")
            self._emit(StopServing(CHANNELS_WAITING))
        # A live member serves on while its lease is proven: the fence decides.

    def _on_StoreState(self, obs: StoreState) -> None:
        if obs.revision and obs.revision < self.revision:
            return  # older than what this member has seen
        if obs.holder == self.settings.name and obs.lease != self.lease and self._campaign is not None:
            self.store_known = True
            return  # this member's own campaign, seen on the watch before its answer
        self.revision = max(self.revision, obs.revision)
        self.store_known = True
        self.store_error = None
        self.holder = obs.holder
        self._handover_to = obs.handover_to
        self._released_by = obs.released_by
        if obs.holder is not None:
            self._seen_holder = True
            self._last_holder = obs.holder
            self.holder_epoch = obs.epoch
            self._vacant_since = None
            self._disarm("campaign")
            self._time_renewal(obs)
        else:
            self._renewal = None
            self._disarm("stale")
            if self._vacant_since is None:
                self._vacant_since = self.now()
        if self.role in (LIVE, HANDING_OVER) and self.lease:
            if obs.holder == self.settings.name and obs.lease == self.lease:
                return  # still this member's key
            self._lost_key(f"the live key is {'held by ' + obs.holder if obs.holder else 'gone'}"
                           f" (epoch {obs.epoch}) while this member held it with epoch {self.epoch}")
            return
        if self._handover is not None and self._handover.stage == "released":
            if obs.holder == self._handover.to:
                self._handed_over(obs.holder, obs.epoch)
            elif obs.holder is not None and obs.holder != self.settings.name:
                self._handover_failed(f"{obs.holder} took the role instead of {self._handover.to}")
        if obs.holder is not None:
            if obs.holder == self.settings.name and obs.lease != self.lease and self._campaign is None:
                # A key under this member's name that it does not hold: left by
                # an earlier run of this process. Nothing serves under it.
                if obs.lease in self._released:
                    return  # a renewal of a lease it has let go of, seen late; its Resign is on its way
                if obs.lease != self._lost_lease:
                    self._lost_lease = obs.lease
                    self._note("info", f"the live key still names this member under lease {obs.lease:x}, which"
                                       " it does not hold (an earlier run, or a resignation the store did not"
                                       " confirm): letting it go")
                    self._emit(Resign(obs.lease, reason="stale"))
                return
            self.epoch = obs.epoch  # the group's, as the store has it (not this member's own older count)
            if self.role == STARTING:
                self._set_role(BACKUP, f"{obs.holder} holds the live role (epoch {obs.epoch})")
                self._emit(StopServing(CHANNELS_WAITING))
            return
        self._consider_campaign()

    def _time_renewal(self, obs: StoreState) -> None:
        """A renewal of another member's key: time the next one."""
        if obs.holder == self.settings.name or not obs.renewed or obs.ttl <= 0:
            self._renewal = None
            self._disarm("stale")
            return
        if self._renewal == (obs.holder, obs.renewed):
            return
        self._renewal, self._renewal_ttl = (obs.holder, obs.renewed), obs.ttl
        wait = obs.ttl / 2 if "early-clear" in self.plants else obs.ttl + STALE_MARGIN
        self._arm("stale", wait + self.rank() * self.settings.stagger)

    def _clear_stale(self) -> None:
        if self._renewal is None or not self.store_known or self._shutting_down:
            return
        if self.role not in (STARTING, BACKUP) or self.holder != self._renewal[0]:
            return
        holder, renewed = self._renewal
        self._note("info", f"{holder} has not renewed the live key for {self._renewal_ttl:g}s (its TTL):"
                           " clearing it, as its lease would be at the store's next expiry sweep")
        self._emit(ClearStale(holder, renewed))
        self._arm("stale", self._renewal_ttl)  # again, if the store did not take it

    def _consider_campaign(self) -> None:
        """The key is free: campaign now, or after this member's turn."""
        if self._shutting_down or self.role not in (STARTING, BACKUP) or self._campaign is not None:
            return
        if not self.store_known or self.holder is not None or self._stop_pending:
            return
        if self.revision < self._await_revision:
            return  # the watch has not yet shown the key a lost campaign met
        s = self.settings
        if self._handover_to == s.name or not self._as_backup and not self._seen_holder:
            delay = 0.0
        elif "campaign-at-once" in self.plants:
            delay = 0.0
        elif self._handover_to is not None and self._handover_to in self.members:
            delay = s.threshold  # the member a switchover named goes first
        else:
            delay = self.rank() * s.stagger
            if self._as_backup and not self._seen_holder:
                delay = max(delay, s.threshold)
        if delay <= 0:
            self._disarm("campaign")
            self._start_campaign()
        elif "campaign" not in self._timers:
            self._arm("campaign", delay)

    def _start_campaign(self) -> None:
        self._campaign = next(self._tokens)
        self._emit(Campaign(self._campaign, self.settings.threshold))

    def _on_CampaignResult(self, r: CampaignResult) -> None:
        if r.token != self._campaign:
            if r.won:
                self._emit(Resign(r.lease))  # not asked for any more
            return
        self._campaign = None
        if r.error is not None:
            self._note("warn", f"campaign for the live role failed: {r.error}")
            if self.holder is None and self.role in (STARTING, BACKUP):
                self._arm("campaign", STORE_RETRY)
            return
        if not r.won:
            # Who holds the key is the watch's to say: this answer may be
            # older than what the watch has shown since (the winner may have
            # let go already), so it only tells that another member won.
            if r.holder is not None:
                self.epoch = max(self.epoch, r.epoch)
                self._seen_holder = True
                self._await_revision = max(self._await_revision, r.epoch)
            if self.role == STARTING:
                self._set_role(BACKUP, f"{r.holder or 'another member'} took the live role first (epoch {r.epoch})")
                self._emit(StopServing(CHANNELS_WAITING))
            self._consider_campaign()  # the key may be free again by now
            return
        if self._shutting_down or self.role not in (STARTING, BACKUP):
            self._emit(Resign(r.lease))
            return
        counted_from = self.now() if "fence-from-answer" in self.plants else r.sent_at
        valid_until = counted_from + r.ttl
        if self.now() >= valid_until - self.settings.guard(r.ttl):
            # The answer came so late that the lease is nearly spent already.
            self._emit(Resign(r.lease))
            self._note("warn", f"won the live role with epoch {r.epoch}, but the store answered"
                               f" {self.now() - r.sent_at:.3f}s after it was asked: letting it go")
            self._arm("campaign", STORE_RETRY)
            return
        kind = ("switchover" if self._handover_to == self.settings.name
                else "start" if not self._seen_holder
                else "peer_shutdown" if self._released_by is not None else "silence")
        cause = {
            "switchover": f"{self._released_by} handed the live role to this member",
            "start": "no member held the live role",
            "peer_shutdown": f"{self._released_by} stopped and let the live role go",
            "silence": "the live key was freed without a clean stop (its holder crashed, was cut off from the"
                     " store, or stopped renewing it)",
        }[kind]
        self.lease, self.ttl, self.valid_until = r.lease, r.ttl, valid_until
        self.revision = max(self.revision, r.epoch)
        self.epoch = self.holder_epoch = r.epoch
        self.holder = self.settings.name
        self._seen_holder = True
        self._vacant_since = None
        self._failback_since = None
        if r.epoch < self._saved_epoch:
            self._note("warn", f"the group's epoch {r.epoch} is below the {self._saved_epoch} this member kept:"
                               " was the etcd cluster made anew? Epochs follow the store's revisions from now on")
        self._emit(SaveEpoch(r.epoch))
        self._set_role(LIVE, cause, kind)
        self.serving = True
        self._retry_attempt = 0
        self._emit(Serve(r.epoch))
        self._arm("keepalive", self.settings.period)
        self._arm_fence()
        self._check_failback()  # the preferred member may be registered already: no change will say so

    # -- the lease --

    def _arm_fence(self) -> None:
        if self.valid_until is None or "no-lease-fence" in self.plants:
            return
        self._arm("fence", self.valid_until - self.settings.guard(self.ttl) - self.now())

    def _keepalive(self) -> None:
        if self.lease and self.role in (LIVE, HANDING_OVER):
            self._emit(KeepAlive(self.lease))
            self._arm("keepalive", self.settings.period)

    def _on_KeepAliveResult(self, r: KeepAliveResult) -> None:
        if r.lease != self.lease or not self.lease:
            return
        if r.error is not None:
            return  # proves nothing: the fence decides
        if r.ttl <= 0:
            self._lost_key(f"the store says lease {r.lease:x} has expired")
            return
        counted_from = self.now() if "fence-from-answer" in self.plants else r.sent_at
        until = counted_from + r.ttl
        if self.valid_until is None or until > self.valid_until:
            self.valid_until = until
            self.ttl = r.ttl
            if self.role in (LIVE, HANDING_OVER):
                self._arm_fence()

    def _fence(self) -> None:
        if not self.lease or self.valid_until is None:
            return
        left = self.valid_until - self.now()
        if self.serving or self._stop_pending:
            within = max(0.0, left - MARGIN)
            if self.role in (LIVE, HANDING_OVER):
                self._set_role(BACKUP, f"the lease could not be renewed: {max(0.0, left):.3f}s left of it;"
                                       " stopping before the store can give the role to another member")
                self._emit(Note("critical", "the store has not answered keepalives: this member stopped serving"
                                            " so that the next live member cannot overlap it", True))
            if self._handover is not None:
                self._handover_failed("the lease could not be renewed while the channels stopped")
            self._stop_serving(CHANNELS_STOPPED if self._shutting_down else CHANNELS_WAITING, within)
            self._release_after_stop = True
        self._disarm("keepalive")

    def _lost_key(self, why: str) -> None:
        """The key is no longer this member's: stop at once."""
        lease = self.lease
        self.lease, self.valid_until = 0, None
        self._disarm("keepalive", "fence")
        if self._handover is not None:
            self._handover_failed(why)
        if self.serving or self._stop_pending:
            self._stop_serving(CHANNELS_STOPPED if self._shutting_down else CHANNELS_WAITING, 0.0)
        if self.role in (LIVE, HANDING_OVER):
            self._set_role(BACKUP, why + ": stopped serving at once")
            self._note("critical", why, True)
        if lease:
            self._released.add(lease)
            self._emit(Resign(lease, reason="lost"))

    def _release(self, to: Optional[str] = None, reason: str = "stopped") -> None:
        lease = self.lease
        self.lease, self.valid_until = 0, None
        self._disarm("keepalive", "fence")
        if lease:
            self._released.add(lease)
            self._emit(Resign(lease, to, reason))

    def _on_Resigned(self, obs: Resigned) -> None:
        if obs.error is not None:
            self._note("warn", f"letting go of the live key failed ({obs.error}); it expires with its lease")
        if obs.lease == self._lost_lease:
            self._lost_lease = 0

    def _on_EpochSaved(self, obs) -> None:
        # The group's epoch lives in the store; the local copy is for people.
        if obs.error is not None:
            self._note("warn", f"the epoch {obs.epoch} could not be kept locally ({obs.error}); the store keeps it")

    # -- serving --

    def _on_Served(self, obs: Served) -> None:
        if self.role != LIVE or not self.serving:
            return
        if not obs.failed:
            self._retry_attempt = 0
            return
        delay = min(RETRY_CAP, RETRY_FIRST * 2 ** self._retry_attempt)
        if self._retry_attempt % RETRY_NOTE_EVERY == 0:
            self._note("warn", f"serving with FAILED channels {', '.join(obs.failed)}; trying them again in"
                               f" {delay:g}s, then at most every {RETRY_CAP:g}s while live")
        self._retry_attempt += 1
        self._arm("retry", delay)

    def _on_StoppedServing(self, obs: StoppedServing) -> None:
        self._stop_pending = False
        if self.serving:
            return  # overtaken by a new start
        if self._handover is not None and self._handover.stage == "stopping":
            if obs.failed:
                why = f"{', '.join(obs.failed)} could not be removed; {self._handover.to} could not take it"
                self._handover = None
                self._emit(SwitchoverOutcome(False, why))
                self._set_role(LIVE, f"switchover failed: {why}: serving again")
                self.serving = True
                self._emit(Serve(self.epoch))
                return
            self._handover.stage = "released"
            self._handover.stopped_at = self.now()
            if "resign-before-stop" not in self.plants:
                self._release(self._handover.to, "switchover")
            self._set_role(BACKUP, f"handed the live role to {self._handover.to}")
            self._arm("handover", max(SWITCHOVER_CONFIRM, self.settings.threshold))
        elif self._shutting_down:
            self._release()
            if self.role != STOPPED:
                self._set_role(STOPPED, "member shutting down")
        elif self._release_after_stop:
            self._release_after_stop = False
            self._release(reason="fenced")
        self._consider_campaign()

    # -- planned switchover and failback --

    def _best_other(self) -> Optional[str]:
        others = sorted((-p, n) for n, (p, may) in self.members.items() if may and n != self.settings.name)
        return others[0][1] if others else None

    def _on_GroupSwitchoverAsked(self, obs: GroupSwitchoverAsked) -> None:
        if self.role != LIVE:
            where = f"; the live member is {self.holder}" if self.holder and self.holder != self.settings.name else ""
            self._emit(SwitchoverOutcome(False, f"{self.settings.name} is {self.role}, not live{where}"))
            return
        to = obs.to or self._best_other()
        if to is None:
            self._emit(SwitchoverOutcome(False, "no other member is registered: a switchover now would leave"
                                                " nobody serving"))
            return
        if to == self.settings.name:
            self._emit(SwitchoverOutcome(False, f"{to} is this member, and live already"))
            return
        if to not in self.members or not self.members[to][1]:
            known = ", ".join(sorted(n for n, (_, may) in self.members.items() if may and n != self.settings.name))
            self._emit(SwitchoverOutcome(False, f"{to} is not a registered member that may take the role"
                                                f" (registered: {known or 'none'})"))
            return
        self._begin_switchover(to, obs.cause or f"planned switchover to {to}")

    def _begin_switchover(self, to: str, cause: str) -> None:
        self._handover = _Handover(to, cause, self.now())
        self._failback_since = None
        self._set_role(HANDING_OVER, cause)
        if "resign-before-stop" in self.plants:
            self._release(to, "switchover")
        self._stop_serving(CHANNELS_WAITING)

    def _handed_over(self, to: str, epoch: int) -> None:
        h, self._handover = self._handover, None
        self._disarm("handover")
        gap = self.now() - (h.stopped_at or h.started)
        self._emit(SwitchoverOutcome(True, f"{to} holds the live role with epoch {epoch}", to=to, epoch=epoch,
                                     gap=gap))

    def _handover_failed(self, why: str) -> None:
        self._handover = None
        self._disarm("handover")
        self._emit(SwitchoverOutcome(False, why))

    def _failback_target(self) -> Optional[str]:
        s = self.settings
        if not s.failback:
            return None
        if s.preferred is not None:
            if s.preferred != s.name and self.members.get(s.preferred, (0, False))[1]:
                return s.preferred
            return None
        best = self._best_other()
        if best is not None and self.members[best][0] > s.priority:
            return best
        return None

    def _check_failback(self) -> None:
        if self.role != LIVE or self._handover is not None:
            self._failback_since = None
            return
        target = self._failback_target()
        if target is None:
            self._failback_since = None
            self._disarm("failback")
            return
        if self._failback_since is None:
            self._failback_since = self.now()
            self._arm("failback", self.settings.failback_delay)
        elif self.now() - self._failback_since >= self.settings.failback_delay:
            self._failback_since = None
            self._note("info", f"failback: {target} has been a registered member for"
                               f" {self.settings.failback_delay:g}s; giving the live role to it")
            self._begin_switchover(target, f"failback to {target}")

    def _on_Candidates(self, obs: Candidates) -> None:
        self.members = {name: (priority, may) for name, priority, may in obs.members}
        self._check_failback()
        if "campaign" in self._timers and self.holder is None and self.store_known:
            # A better candidate may have gone: this member's turn is now sooner.
            token, due = self._timers["campaign"]
            if self._handover_to is None and not (self._as_backup and not self._seen_holder):
                if self.now() + self.rank() * self.settings.stagger < due:
                    self._disarm("campaign")
                    self._consider_campaign()

    # -- timers --

    def _on_Deadline(self, obs: Deadline) -> None:
        entry = self._timers.get(obs.name)
        if entry is None or entry[0] != obs.token:
            return
        del self._timers[obs.name]
        {
            "campaign": lambda: self._campaign_due(),
            "keepalive": self._keepalive,
            "fence": self._fence,
            "retry": lambda: self.role == LIVE and self.serving and self._emit(RetryChannels()),
            "handover": lambda: self._handover is not None and self._handover_failed(
                f"{self._handover.to} did not take the role within"
                f" {max(SWITCHOVER_CONFIRM, self.settings.threshold):g}s; the group campaigns for it"),
            "failback": self._check_failback,
            "stale": self._clear_stale,
        }[obs.name]()

    def _campaign_due(self) -> None:
        if self._shutting_down or self.role not in (STARTING, BACKUP) or self._campaign is not None:
            return
        if self.store_known and self.holder is None and not self._stop_pending:
            self._start_campaign()

    def _on_Stalled(self, obs: Stalled) -> None:
        # Late timers have already run (the fence among them); a fence that is
        # due by now but was armed later than the stall is checked here too.
        if self.valid_until is not None and (self.serving or self._stop_pending) and "no-lease-fence" not in self.plants:
            if self.now() >= self.valid_until - self.settings.guard(self.ttl):
                self._disarm("fence")
                self._fence()

    # -- settings and shutdown --

    def _on_NewSettings(self, obs: NewSettings) -> None:
        old, self.settings = self.settings, obs.settings
        if self.role == LIVE and old.period != self.settings.period:
            self._arm("keepalive", self.settings.period)
        self._check_failback()

    def _on_Shutdown(self, obs: Shutdown) -> None:
        if self.role == STOPPED or self._shutting_down:
            return
        self._shutting_down = True
        was_serving = self.serving or self._stop_pending
        for name in list(self._timers):
            if name not in ("keepalive", "fence"):
                self._disarm(name)
        if self._handover is not None:
            self._handover_failed("the member is shutting down")
        if was_serving:
            # Keepalives and the fence go on until the channels have stopped;
            # then the key is let go of, and the next member takes over at once.
            if "resign-before-stop" in self.plants:
                self._release()
            self._stop_serving(CHANNELS_STOPPED)
        else:
            self._release()
            # The stop first: a shutdown waits for the stops under way when it
            # sees the member stopped.
            self._emit(StopServing(CHANNELS_STOPPED))
            self._set_role(STOPPED, "member shutting down")


def group_settings_for(config, name: str) -> GroupSettings:
    """The core's settings of member C{name} of a L{SharedConfig}."""
    server = config.server(name)
    failover = config.failover
    return GroupSettings(
        name=name, priority=server.priority, threshold=server.threshold, interval=failover.heartbeat_interval,
        failback=failover.failback, preferred=failover.preferred, failback_delay=failover.failback_delay,
    )
