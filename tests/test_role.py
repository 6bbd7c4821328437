"""The role state machine, driven with plain events and a fake clock."""

from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from iwayfailover.role import BACKUP, LIVE, STARTING, STOPPED, IRoleEffects, RoleMachine


@implementer(IRoleEffects)
class RecordedEffects:
    """Records, in order, what the role machine asked for."""

    def __init__(self):
        self.calls = []

    def hold_listeners(self):
        self.calls.append("hold_listeners")

    def activate_listeners(self):
        self.calls.append("activate_listeners")

    def deactivate_listeners(self):
        self.calls.append("deactivate_listeners")

    def start_heartbeats(self):
        self.calls.append("start_heartbeats")

    def stop_heartbeats(self):
        self.calls.append("stop_heartbeats")

    def arm_watchdog(self):
        self.calls.append("arm_watchdog")

    def disarm_watchdog(self):
        self.calls.append("disarm_watchdog")

    def save_epoch(self, epoch):
        self.calls.append(("save_epoch", epoch))


class FakeWall:
    def __init__(self, now=1000.0):
        self.now = now

    def __call__(self):
        return self.now


class RoleMachineTests(unittest.TestCase):
    def setUp(self):
        self.effects = RecordedEffects()
        self.wall = FakeWall()
        self.machine = RoleMachine(self.effects, "serv_b", epoch=4, wall=self.wall)

    def test_recorder_provides_the_interface(self):
        """The test double really provides IRoleEffects, so the tests speak for the node."""
        verifyObject(IRoleEffects, self.effects)

    def test_a_new_machine_is_starting(self):
        """Before it is started, a node is neither backup nor live."""
        self.assertEqual(self.machine.role, STARTING)
        self.assertEqual(self.effects.calls, [])

    def test_starting_as_backup_holds_listeners_and_arms_the_watchdog(self):
        """A backup keeps its listeners WAITING and starts measuring the live node's silence."""
        self.machine.start_backup("started as backup")
        self.assertEqual(self.machine.role, BACKUP)
        self.assertEqual(self.effects.calls, ["hold_listeners", "arm_watchdog"])
        self.assertEqual(self.machine.epoch, 4)

    def test_starting_as_live_starts_listeners_then_heartbeats_without_a_new_epoch(self):
        """A node started live serves and heartbeats; starting is not a takeover, so the epoch stays."""
        self.machine.start_live("started as live")
        self.assertEqual(self.machine.role, LIVE)
        self.assertEqual(self.effects.calls, ["activate_listeners", "start_heartbeats"])
        self.assertEqual(self.machine.epoch, 4)

    def test_takeover_raises_and_keeps_the_epoch_before_serving(self):
        """Silence past the threshold: the watchdog stops, the epoch rises by one and is saved before listeners start."""
        self.machine.start_backup("started as backup")
        del self.effects.calls[:]
        self.machine.silence("no live signal for 3.001s")
        self.assertEqual(self.machine.role, LIVE)
        self.assertEqual(self.machine.epoch, 5)
        self.assertEqual(
            self.effects.calls,
            ["disarm_watchdog", ("save_epoch", 5), "activate_listeners", "start_heartbeats"],
        )

    def test_takeover_goes_above_the_highest_epoch_heard_from_a_peer(self):
        """The newest live node carries the highest epoch of the pair, whatever its own record said."""
        self.machine.start_backup("started as backup")
        self.machine.observe_peer_epoch(9)
        self.machine.observe_peer_epoch(7)
        self.machine.silence("silence")
        self.assertEqual(self.machine.epoch, 10)

    def test_takeover_records_time_and_cause(self):
        """Status shows since when and why the node has its role."""
        self.machine.start_backup("started as backup")
        self.wall.now = 2000.0
        self.machine.silence("no live signal from serv_a for 3.002s")
        self.assertEqual(self.machine.since, 2000.0)
        self.assertEqual(self.machine.cause, "no live signal from serv_a for 3.002s")
        last = self.machine.transitions[-1]
        self.assertEqual((last.previous, last.role, last.epoch, last.at), (BACKUP, LIVE, 5, 2000.0))

    def test_a_late_silence_report_on_a_live_node_changes_nothing(self):
        """A second silence report cannot take over twice or raise the epoch again."""
        self.machine.start_backup("started as backup")
        self.machine.silence("silence")
        del self.effects.calls[:]
        self.machine.silence("silence again")
        self.assertEqual((self.machine.role, self.machine.epoch), (LIVE, 5))
        self.assertEqual(self.effects.calls, [])

    def test_stopping_a_live_node_stops_heartbeats_and_listeners(self):
        """A live node shutting down stops heartbeating and stops its listeners."""
        self.machine.start_live("started as live")
        del self.effects.calls[:]
        self.machine.stop("shutting down")
        self.assertEqual(self.machine.role, STOPPED)
        self.assertEqual(self.effects.calls, ["stop_heartbeats", "deactivate_listeners"])

    def test_stopping_a_backup_disarms_the_watchdog(self):
        """A backup shutting down stops measuring silence, so it cannot take over while stopping."""
        self.machine.start_backup("started as backup")
        del self.effects.calls[:]
        self.machine.stop("shutting down")
        self.machine.silence("silence while stopped")
        self.assertEqual(self.machine.role, STOPPED)
        self.assertEqual(self.effects.calls, ["disarm_watchdog"])

    def test_transition_history_is_bounded(self):
        """The history of transitions keeps only the most recent ones."""
        machine = RoleMachine(self.effects, "serv_b", wall=self.wall, history=2)
        machine.start_backup("a")
        machine.silence("b")
        machine.stop("c")
        self.assertEqual([t.cause for t in machine.transitions], ["b", "c"])
