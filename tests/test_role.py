"""The role state machine, driven with plain events and a fake clock."""

from twisted.trial import unittest
from zope.interface import implementer
from zope.interface.verify import verifyObject

from iwayfailover.role import BACKUP, HANDING_OVER, LIVE, STARTING, STOPPED, IRoleEffects, RoleMachine, outranks


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

    def shut_down_live(self):
        self.calls.append("shut_down_live")

    def hand_over(self):
        self.calls.append("hand_over")

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
        self.machine.take_over("no live signal for 3.001s")
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
        self.machine.take_over("silence")
        self.assertEqual(self.machine.epoch, 10)

    def test_takeover_records_time_and_cause(self):
        """Status shows since when and why the node has its role."""
        self.machine.start_backup("started as backup")
        self.wall.now = 2000.0
        self.machine.take_over("no live signal from serv_a for 3.002s")
        self.assertEqual(self.machine.since, 2000.0)
        self.assertEqual(self.machine.cause, "no live signal from serv_a for 3.002s")
        last = self.machine.transitions[-1]
        self.assertEqual((last.previous, last.role, last.epoch, last.at), (BACKUP, LIVE, 5, 2000.0))

    def test_a_late_silence_report_on_a_live_node_changes_nothing(self):
        """A second silence report cannot take over twice or raise the epoch again."""
        self.machine.start_backup("started as backup")
        self.machine.take_over("silence")
        del self.effects.calls[:]
        self.machine.take_over("silence again")
        self.assertEqual((self.machine.role, self.machine.epoch), (LIVE, 5))
        self.assertEqual(self.effects.calls, [])

    def test_stopping_a_live_node_shuts_it_down_with_a_handover(self):
        """A live node shutting down stops its listeners and stands down to its backup (one effect, in that order)."""
        self.machine.start_live("started as live")
        del self.effects.calls[:]
        self.machine.stop("shutting down")
        self.assertEqual(self.machine.role, STOPPED)
        self.assertEqual(self.effects.calls, ["shut_down_live"])

    def test_stopping_a_backup_disarms_the_watchdog(self):
        """A backup shutting down stops measuring silence, so it cannot take over while stopping."""
        self.machine.start_backup("started as backup")
        del self.effects.calls[:]
        self.machine.stop("shutting down")
        self.machine.take_over("silence while stopped")
        self.assertEqual(self.machine.role, STOPPED)
        self.assertEqual(self.effects.calls, ["disarm_watchdog"])

    def test_transition_history_is_bounded(self):
        """The history of transitions keeps only the most recent ones."""
        machine = RoleMachine(self.effects, "serv_b", wall=self.wall, history=2)
        machine.start_backup("a")
        machine.take_over("b")
        machine.stop("c")
        self.assertEqual([t.cause for t in machine.transitions], ["b", "c"])


class FencingTests(unittest.TestCase):
    """Two live nodes: the lower rank yields."""

    def setUp(self):
        self.effects = RecordedEffects()
        self.machine = RoleMachine(self.effects, "serv_b", epoch=4, wall=FakeWall())

    def test_higher_epoch_outranks(self):
        """The node with the higher epoch stays live, whatever the priorities and names."""
        self.assertTrue(outranks((5, 0, "z"), (4, 100, "a")))
        self.assertFalse(outranks((4, 100, "a"), (5, 0, "z")))

    def test_equal_epochs_higher_priority_outranks(self):
        """At the same epoch, the higher configured priority stays live."""
        self.assertTrue(outranks((4, 10, "z"), (4, 0, "a")))
        self.assertFalse(outranks((4, 0, "a"), (4, 10, "z")))

    def test_equal_epoch_and_priority_the_name_sorting_first_outranks(self):
        """At the same epoch and priority, the name that sorts first stays live."""
        self.assertTrue(outranks((4, 0, "serv_a"), (4, 0, "serv_b")))
        self.assertFalse(outranks((4, 0, "serv_b"), (4, 0, "serv_a")))

    def test_two_different_servers_always_agree_on_one_winner(self):
        """For any two distinct ranks exactly one outranks the other, so two live nodes settle to one."""
        ranks = [(e, p, n) for e in (0, 1) for p in (0, 1) for n in ("a", "b")]
        for mine in ranks:
            for theirs in ranks:
                if mine != theirs:
                    self.assertNotEqual(outranks(theirs, mine), outranks(mine, theirs), (mine, theirs))

    def test_a_live_node_yields_by_stopping_heartbeats_and_listeners_then_watching(self):
        """Yielding: stop heartbeating, stop listeners (to WAITING), become backup and arm the watchdog; the epoch stays."""
        self.machine.start_live("started as live")
        del self.effects.calls[:]
        self.machine.yield_to("serv_a outranks this node")
        self.assertEqual((self.machine.role, self.machine.epoch), (BACKUP, 4))
        self.assertEqual(self.effects.calls, ["stop_heartbeats", "deactivate_listeners", "arm_watchdog"])
        self.assertEqual(self.machine.cause, "serv_a outranks this node")

    def test_a_backup_ignores_a_yield(self):
        """A yield reaching a node that is already backup changes nothing."""
        self.machine.start_backup("started as backup")
        del self.effects.calls[:]
        self.machine.yield_to("late")
        self.assertEqual(self.machine.role, BACKUP)
        self.assertEqual(self.effects.calls, [])

    def test_a_node_still_starting_ignores_takeover_and_yield(self):
        """Events that cross the startup check do not move a node that has not started."""
        self.machine.take_over("early")
        self.machine.yield_to("early")
        self.assertEqual(self.machine.role, STARTING)
        self.assertEqual(self.effects.calls, [])


class HandoverTests(unittest.TestCase):
    """Planned switchover: hand the live role to the backup."""

    def setUp(self):
        self.effects = RecordedEffects()
        self.machine = RoleMachine(self.effects, "serv_a", epoch=2, wall=FakeWall())
        self.machine.start_live("started as live")
        del self.effects.calls[:]

    def test_hand_over_enters_handing_over_and_asks_for_the_handover(self):
        """A switchover moves the node to handing_over and asks the node to stop listeners and tell the backup."""
        self.machine.hand_over("planned switchover to serv_b")
        self.assertEqual(self.machine.role, HANDING_OVER)
        self.assertEqual(self.effects.calls, ["hand_over"])

    def test_confirmed_handover_makes_the_node_a_backup(self):
        """Once the backup confirms, the node stops heartbeating, becomes backup and watches the new live node."""
        self.machine.hand_over("switchover")
        del self.effects.calls[:]
        self.machine.handed_over("handed over to serv_b")
        self.assertEqual(self.machine.role, BACKUP)
        self.assertEqual(self.effects.calls, ["stop_heartbeats", "arm_watchdog"])

    def test_failed_handover_serves_again(self):
        """With no confirmation, the node is live again: listeners and heartbeats restart."""
        self.machine.hand_over("switchover")
        del self.effects.calls[:]
        self.machine.handover_failed("no confirmation")
        self.assertEqual(self.machine.role, LIVE)
        self.assertEqual(self.effects.calls, ["activate_listeners", "start_heartbeats"])

    def test_an_outranking_live_node_during_handover_makes_this_one_backup(self):
        """A live node of higher rank met during a handover ends it the same way: backup."""
        self.machine.hand_over("switchover")
        del self.effects.calls[:]
        self.machine.yield_to("serv_b is live with epoch 3")
        self.assertEqual(self.machine.role, BACKUP)
        self.assertEqual(self.effects.calls, ["stop_heartbeats", "arm_watchdog"])

    def test_a_takeover_report_during_handover_changes_nothing(self):
        """A node handing over cannot take over again."""
        self.machine.hand_over("switchover")
        del self.effects.calls[:]
        self.machine.take_over("silence")
        self.assertEqual((self.machine.role, self.machine.epoch), (HANDING_OVER, 2))
        self.assertEqual(self.effects.calls, [])

    def test_confirmations_on_a_live_node_change_nothing(self):
        """A stray confirmation or failure report on a live node is ignored."""
        self.machine.handed_over("stray")
        self.machine.handover_failed("stray")
        self.assertEqual(self.machine.role, LIVE)
        self.assertEqual(self.effects.calls, [])
