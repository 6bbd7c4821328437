"""
The role state machine: is this node backup or live, and what must happen
when that changes.

It does no I/O. It takes events (started, silence past the threshold,
stopping) and calls the effects it needs on an L{IRoleEffects} provider:
the node service in production, a recorder in tests.
"""

from __future__ import annotations

import collections
import time
from dataclasses import dataclass

from automat import MethodicalMachine
from twisted.logger import Logger
from zope.interface import Interface

BACKUP = "backup"
LIVE = "live"
HANDING_OVER = "handing_over"
STARTING = "starting"
STOPPED = "stopped"


class IRoleEffects(Interface):
    """What the role machine asks of the node it governs."""

    def hold_listeners():
        """Keep every listener WAITING: configured, not listening."""

    def activate_listeners():
        """Start every listener of this node."""

    def deactivate_listeners():
        """Stop every listener; they end WAITING (the node stays, as a backup)."""

    def shut_down_live():
        """
        The live node is shutting down: stop every listener (STOPPED), then
        tell the backup this node is standing down, then stop heartbeating.
        """

    def hand_over():
        """
        Planned switchover: stop every listener (WAITING), then tell the
        backup to take over; report to the role machine with C{handed_over}
        or C{handover_failed}.
        """

    def start_heartbeats():
        """Begin to heartbeat to this node's backup location."""

    def stop_heartbeats():
        """Stop heartbeating."""

    def arm_watchdog():
        """Start measuring the silence of the live node."""

    def disarm_watchdog():
        """Stop measuring silence."""

    def save_epoch(epoch):
        """Keep C{epoch} in the state dir, atomically, before it is used."""


def outranks(theirs, mine) -> bool:
    """
    Does a live node of rank C{theirs} win over one of rank C{mine}? A rank
    is C{(epoch, priority, name)}: the higher epoch wins, then the higher
    priority, then the name that sorts first. Two different servers never
    tie, so two live nodes always agree which of them stays.
    """
    (their_epoch, their_priority, their_name), (my_epoch, my_priority, my_name) = theirs, mine
    if their_epoch != my_epoch:
        return their_epoch > my_epoch
    if their_priority != my_priority:
        return their_priority > my_priority
    return their_name < my_name


@dataclass(frozen=True)
class Transition:
    at: float
    previous: str
    role: str
    epoch: int
    cause: str


class RoleMachine:
    """
    The role of one node.

    @ivar role: C{"starting"}, C{"backup"}, C{"live"} or C{"stopped"}.
    @ivar epoch: raised by every takeover; above every epoch this node has
        heard from a peer, so that the newest live node always carries the
        highest one.
    @ivar since: wall-clock time of the last change of role.
    @ivar cause: why the last change happened.
    """

    _machine = MethodicalMachine()
    log = Logger()

    def __init__(self, effects: IRoleEffects, server: str, epoch: int = 0, wall=time.time, history: int = 50):
        self._effects = effects
        self._wall = wall
        self.server = server
        self.epoch = epoch
        self.peer_epoch = 0
        self.role = STARTING
        self.since = wall()
        self.cause = "starting"
        self.transitions = collections.deque(maxlen=history)

    def observe_peer_epoch(self, epoch: int) -> None:
        """Note the epoch a peer announced; the next takeover goes above it."""
        self.peer_epoch = max(self.peer_epoch, epoch)

    # -- states --

    @_machine.state(initial=True)
    def _starting(self):
        "Built, not started yet (or checking how its peer stands)."

    @_machine.state()
    def _backup(self):
        "Shadowing a live node: listeners WAITING, watchdog armed."

    @_machine.state()
    def _live(self):
        "Serving: listeners started, heartbeating to the backup location."

    @_machine.state()
    def _handing_over(self):
        "Planned switchover under way: listeners stopping or stopped, backup told to take over."

    @_machine.state()
    def _stopped(self):
        "Shut down."

    # -- inputs --

    @_machine.input()
    def start_backup(self, cause):
        "The node starts in the backup role."

    @_machine.input()
    def start_live(self, cause):
        "The node starts in the live role."

    @_machine.input()
    def take_over(self, cause):
        "The live node is gone: silent past the threshold, stood down, or its process found dead."

    @_machine.input()
    def yield_to(self, cause):
        "Another live node outranks this one, or this one is cut off: stop serving, be a backup."

    @_machine.input()
    def hand_over(self, cause):
        "A planned switchover: give the live role to the backup."

    @_machine.input()
    def handed_over(self, cause):
        "The backup confirmed it is live."

    @_machine.input()
    def handover_failed(self, cause):
        "The backup did not confirm in time: serve again."

    @_machine.input()
    def stop(self, cause):
        "The node is shutting down."

    # -- outputs --

    @_machine.output()
    def _become_backup(self, cause):
        self._record(BACKUP, cause)

    @_machine.output()
    def _become_live(self, cause):
        self._record(LIVE, cause)

    @_machine.output()
    def _become_handing_over(self, cause):
        self._record(HANDING_OVER, cause)

    @_machine.output()
    def _become_stopped(self, cause):
        self._record(STOPPED, cause)

    @_machine.output()
    def _raise_epoch(self, cause):
        self.epoch = max(self.epoch, self.peer_epoch) + 1
        self._effects.save_epoch(self.epoch)

    @_machine.output()
    def _hold_listeners(self, cause):
        self._effects.hold_listeners()

    @_machine.output()
    def _activate_listeners(self, cause):
        self._effects.activate_listeners()

    @_machine.output()
    def _deactivate_listeners(self, cause):
        self._effects.deactivate_listeners()

    @_machine.output()
    def _shut_down_live(self, cause):
        self._effects.shut_down_live()

    @_machine.output()
    def _hand_over(self, cause):
        self._effects.hand_over()

    @_machine.output()
    def _start_heartbeats(self, cause):
        self._effects.start_heartbeats()

    @_machine.output()
    def _stop_heartbeats(self, cause):
        self._effects.stop_heartbeats()

    @_machine.output()
    def _arm_watchdog(self, cause):
        self._effects.arm_watchdog()

    @_machine.output()
    def _disarm_watchdog(self, cause):
        self._effects.disarm_watchdog()

    # -- transitions --

    _starting.upon(start_backup, enter=_backup, outputs=[_become_backup, _hold_listeners, _arm_watchdog])
    _starting.upon(start_live, enter=_live, outputs=[_become_live, _activate_listeners, _start_heartbeats])
    _starting.upon(stop, enter=_stopped, outputs=[_become_stopped])

    # Takeover: the epoch is raised and kept before anything serves under it.
    _backup.upon(
        take_over,
        enter=_live,
        outputs=[_disarm_watchdog, _raise_epoch, _become_live, _activate_listeners, _start_heartbeats],
    )
    _backup.upon(stop, enter=_stopped, outputs=[_disarm_watchdog, _become_stopped])

    # Yielding: stop serving first, then shadow the node that stays live.
    _live.upon(
        yield_to,
        enter=_backup,
        outputs=[_stop_heartbeats, _deactivate_listeners, _become_backup, _arm_watchdog],
    )
    _live.upon(hand_over, enter=_handing_over, outputs=[_become_handing_over, _hand_over])
    _live.upon(stop, enter=_stopped, outputs=[_become_stopped, _shut_down_live])

    # The listeners of a node handing over are already stopping.
    _handing_over.upon(handed_over, enter=_backup, outputs=[_stop_heartbeats, _become_backup, _arm_watchdog])
    _handing_over.upon(yield_to, enter=_backup, outputs=[_stop_heartbeats, _become_backup, _arm_watchdog])
    _handing_over.upon(handover_failed, enter=_live, outputs=[_become_live, _activate_listeners, _start_heartbeats])
    _handing_over.upon(stop, enter=_stopped, outputs=[_become_stopped, _shut_down_live])

    # Late or crossing events change nothing: a second takeover report on a
    # live node, a yield on a node that is already backup, and anything
    # after the node stopped.
    for _state in (_starting, _live, _handing_over, _stopped):
        _state.upon(take_over, enter=_state, outputs=[])
    for _state in (_starting, _backup, _stopped):
        _state.upon(yield_to, enter=_state, outputs=[])
        _state.upon(hand_over, enter=_state, outputs=[])
        _state.upon(handed_over, enter=_state, outputs=[])
        _state.upon(handover_failed, enter=_state, outputs=[])
    _live.upon(handed_over, enter=_live, outputs=[])
    _live.upon(handover_failed, enter=_live, outputs=[])
    _handing_over.upon(hand_over, enter=_handing_over, outputs=[])
    _stopped.upon(stop, enter=_stopped, outputs=[])
    del _state

    def _record(self, role, cause):
        previous = self.role
        self.role = role
        self.since = self._wall()
        self.cause = cause
        self.transitions.append(Transition(self.since, previous, role, self.epoch, cause))
        self.log.info(
            "{server} role {previous} -> {role} (epoch {epoch}): {cause}",
            server=self.server, previous=previous, role=role, epoch=self.epoch, cause=cause,
        )
