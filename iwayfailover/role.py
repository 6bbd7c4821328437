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
STARTING = "starting"
STOPPED = "stopped"


class IRoleEffects(Interface):
    """What the role machine asks of the node it governs."""

    def hold_listeners():
        """Keep every listener WAITING: configured, not listening."""

    def activate_listeners():
        """Start every listener of this node."""

    def deactivate_listeners():
        """Stop every listener; they end STOPPED."""

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
        "Built, not started yet."

    @_machine.state()
    def _backup(self):
        "Shadowing a live node: listeners WAITING, watchdog armed."

    @_machine.state()
    def _live(self):
        "Serving: listeners started, heartbeating to the backup location."

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
    def silence(self, cause):
        "The live signal has been silent for longer than the threshold."

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
        silence,
        enter=_live,
        outputs=[_disarm_watchdog, _raise_epoch, _become_live, _activate_listeners, _start_heartbeats],
    )
    _backup.upon(stop, enter=_stopped, outputs=[_disarm_watchdog, _become_stopped])

    # A late silence report (the watchdog fired as the role changed) changes nothing.
    _live.upon(silence, enter=_live, outputs=[])
    _live.upon(stop, enter=_stopped, outputs=[_stop_heartbeats, _deactivate_listeners, _become_stopped])

    _stopped.upon(silence, enter=_stopped, outputs=[])
    _stopped.upon(stop, enter=_stopped, outputs=[])

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
