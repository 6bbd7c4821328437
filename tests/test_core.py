"""
The decision core's rules, one at a time, with a recorder: observations
in, effects out, time advanced by hand. No sockets, no reactor.
"""

from __future__ import annotations

import unittest

from corerecorder import CoreRecorder
from iwayfailover.core import events as ev
from iwayfailover.core.ballot import Rank, next_epoch, outranks, slot_of
from iwayfailover.core.pair import RETRY_CAP, RETRY_FIRST, SAVE_NOTE_EVERY, CoreSettings, PairCore

SETTINGS = CoreSettings(name="serv_b", peer="serv_a", priority=0, threshold=1.0, interval=0.2,
                        peer_threshold=1.0, slot=1, modulus=2)


class Recorder(CoreRecorder):
    """A pair's core, a hand-driven monotonic clock and every effect the core asked for."""

    def __init__(self, settings=SETTINGS, epoch=0, plants=frozenset()):
        super().__init__()
        self.core = PairCore(settings, epoch, now=lambda: self.t, plants=plants)

    def save_epochs(self, error=None):
        """Answer the last SaveEpoch asked for, as the node's epoch store would."""
        save = self.last(ev.SaveEpoch)
        if save is not None:
            self.feed(ev.EpochSaved(save.epoch, error))

    def heartbeat(self, epoch=2, priority=0, sender="serv_a", role=ev.LIVE, kind=ev.HEARTBEAT, link=ev.IN, **kw):
        return self.feed(ev.Heard(sender=sender, kind=kind, role=role, epoch=epoch, priority=priority,
                                  threshold=1.0, link=link, **kw))


def backup(settings=SETTINGS, **kw):
    r = Recorder(settings, **kw)
    r.feed(ev.Start(as_backup=True))
    r.heartbeat()
    r.clear()
    return r


def live(settings=SETTINGS, **kw):
    r = backup(settings, **kw)
    r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
    probe = r.last(ev.Probe)
    r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.REFUSED))
    ask = r.last(ev.AskWitnesses)
    if ask is not None:
        r.feed(ev.WitnessResult(ask.token, "witness:22"))
        r.advance(1.0)  # with witnesses, even a refusal waits for the threshold
    r.save_epochs()
    r.feed(ev.LinkUp(ev.OUT))
    r.feed(ev.Served())
    r.clear()
    return r


class BallotTests(unittest.TestCase):
    def test_each_server_has_its_own_residue_class_of_epochs(self):
        """Two servers' takeovers from the same highest epoch never pick the same epoch."""
        a, b = slot_of("serv_a", ["serv_a", "serv_b"]), slot_of("serv_b", ["serv_b", "serv_a"])
        self.assertEqual((a, b), ((0, 2), (1, 2)))
        for highest in range(0, 20):
            ea, eb = next_epoch(highest, *a), next_epoch(highest, *b)
            self.assertNotEqual(ea, eb)
            self.assertGreater(min(ea, eb), highest)
            self.assertEqual((ea % 2, eb % 2), (0, 1))

    def test_rank_is_epoch_then_priority_then_name(self):
        """The higher epoch wins, then the higher priority, then the name sorting first."""
        self.assertTrue(outranks(Rank(3, 0, "b"), Rank(2, 99, "a")))
        self.assertTrue(outranks(Rank(2, 5, "b"), Rank(2, 0, "a")))
        self.assertTrue(outranks(Rank(2, 0, "a"), Rank(2, 0, "b")))
        self.assertFalse(outranks(Rank(2, 0, "b"), Rank(2, 0, "a")))


class AskBeforeTakingOverTests(unittest.TestCase):
    def test_backup_asks_the_live_node_before_the_threshold_and_decides_at_it(self):
        """Silence for threshold - window sends a probe; the takeover waits for the threshold itself."""
        r = backup()
        r.advance(0.74)
        self.assertEqual(r.of(ev.Probe), [])
        r.advance(0.02)
        probe = r.last(ev.Probe)
        self.assertEqual((probe.purpose, probe.timeout), (ev.PREVOTE, 0.25))
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.NO_ANSWER))
        self.assertEqual(r.of(ev.SaveEpoch), [], "no takeover before the threshold")
        r.advance(0.25)
        self.assertEqual(r.last(ev.SaveEpoch), ev.SaveEpoch(3))
        r.save_epochs()
        self.assertEqual(r.last(ev.Transition).role, ev.LIVE)
        self.assertEqual(r.last(ev.Transition).kind, "silence")
        self.assertEqual(r.last(ev.Serve), ev.Serve(3))

    def test_a_live_answer_means_no_takeover(self):
        """A live node that answers the question keeps its role; the backup measures silence again."""
        r = backup()
        r.advance(0.76)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.LIVE, epoch=2, sender="serv_a"))
        r.advance(0.5)
        self.assertEqual(r.of(ev.SaveEpoch), [])
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_a_heartbeat_during_the_question_ends_it(self):
        """A heartbeat that arrives while the question is out cancels the takeover."""
        r = backup()
        r.advance(0.8)
        r.heartbeat()
        r.advance(0.5)
        self.assertEqual(r.of(ev.SaveEpoch), [])

    def test_a_stalled_backup_asks_again_instead_of_acting_on_its_overdue_timer(self):
        """A backup that was itself paused past the threshold does not take over on waking: it asks first."""
        r = backup()
        r.t += 1.5  # SIGSTOP for 1.5 thresholds: its timers come due late, all at once
        r.feed(ev.Stalled(1.5))
        probe = r.last(ev.Probe)
        self.assertEqual(probe.purpose, ev.PREVOTE)
        for name, (token, at) in list(r.timers.items()):
            if at <= r.t:
                del r.timers[name]
                r.feed(ev.Deadline(name, token))
        self.assertEqual(r.of(ev.SaveEpoch), [], "no takeover on the overdue timers")
        r.heartbeat()  # the heartbeats waiting in its socket
        r.advance(0.5)
        self.assertEqual(r.of(ev.SaveEpoch), [])

    def test_a_backup_woken_from_a_stall_gives_the_live_node_an_interval_to_speak(self):
        """
        A stall of the whole host (both nodes stopped 1.5 s): on waking, a probe
        that gets no answer in its window does not decide; a heartbeat within
        an interval after that keeps the node backup. With no heartbeat at all it
        takes the role after that interval.
        """
        r = backup()
        r.t += 1.5
        r.feed(ev.Stalled(1.5))
        probe = r.last(ev.Probe)
        r.t += 0.25  # the probe's window: the live node, waking too, has not answered yet
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.NO_ANSWER))
        self.assertEqual(r.of(ev.SaveEpoch), [], "no takeover within an interval of waking")
        r.heartbeat()
        r.advance(0.5)
        self.assertEqual(r.of(ev.SaveEpoch), [])

        silent = backup()
        silent.t += 1.5
        silent.feed(ev.Stalled(1.5))
        probe = silent.last(ev.Probe)
        silent.t += 0.25
        silent.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.NO_ANSWER))
        self.assertEqual(silent.of(ev.SaveEpoch), [])
        silent.advance(0.5)
        [save] = silent.of(ev.SaveEpoch)

    def test_a_late_timer_alone_reveals_a_stall(self):
        """Without a Stalled observation, a deadline that comes far too late is treated as a stall too."""
        r = backup()
        r.advance(0.76)
        token, at = r.timers.pop("deadline")
        r.t = at + 2.0
        r.feed(ev.Deadline("deadline", token))
        self.assertEqual(r.of(ev.SaveEpoch), [])
        self.assertEqual(len(r.of(ev.Probe)), 2, "asked again from scratch")

    def test_of_two_backups_only_the_higher_rank_takes_the_role(self):
        """A backup whose peer answers that it is backup too and outranks it stands aside."""
        r = backup()
        r.advance(0.76)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=4, sender="serv_a"))
        r.advance(0.3)
        self.assertEqual(r.of(ev.SaveEpoch), [])

    def test_the_answer_of_a_lower_ranked_backup_lets_it_take_over(self):
        """A peer that answers it is backup, with a lower rank, does not hold the takeover back."""
        r = backup(epoch=5)
        r.advance(0.76)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=4, sender="serv_a"))
        self.assertEqual(r.last(ev.SaveEpoch), ev.SaveEpoch(7))


class FastPathTests(unittest.TestCase):
    def test_a_lost_link_and_a_refused_probe_take_over_at_once(self):
        """The crash fast path: the live node's link closes, its port refuses: takeover without the threshold."""
        r = backup()
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.REFUSED))
        r.save_epochs()
        self.assertEqual(r.last(ev.Transition).kind, "crash")

    def test_the_fast_path_passes_the_witness_gate_too(self):
        """With witnesses, a refused probe alone is not enough: a reset looks the same."""
        r = backup(CoreSettings(**{**SETTINGS.__dict__, "witnesses": True}))
        r.feed(ev.LinkDown(ev.IN, ev.RESET, from_live=True))
        ask = r.last(ev.AskWitnesses)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.REFUSED))
        self.assertEqual(r.of(ev.SaveEpoch), [], "waits for the witnesses")
        r.feed(ev.WitnessResult(ask.token, None))
        self.assertEqual(r.of(ev.SaveEpoch), [], "and, with witnesses, for the threshold: a reset is no proof")
        r.advance(1.0)
        self.assertEqual(r.of(ev.SaveEpoch), [])
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertIn("isolated", " ".join(n.text for n in r.of(ev.Note)))

    def test_with_witnesses_a_refusal_takes_over_at_the_threshold_not_at_once(self):
        """A refused probe and a reachable witness: the takeover waits for the threshold (the live node's fence time)."""
        r = backup(CoreSettings(**{**SETTINGS.__dict__, "witnesses": True}))
        r.feed(ev.LinkDown(ev.IN, ev.RESET, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        r.feed(ev.WitnessResult(r.last(ev.AskWitnesses).token, "witness:22"))
        self.assertEqual(r.of(ev.SaveEpoch), [])
        r.advance(0.99)
        self.assertEqual(r.of(ev.SaveEpoch), [])
        r.advance(0.02)
        self.assertEqual(len(r.of(ev.SaveEpoch)), 1)

    def test_a_link_that_the_live_node_only_redialled_changes_nothing(self):
        """The probe after a lost link is answered by a live node: no takeover."""
        r = backup()
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.LIVE, epoch=2, sender="serv_a"))
        r.advance(0.3)
        self.assertEqual(r.of(ev.SaveEpoch), [])


class EpochTests(unittest.TestCase):
    def test_no_serving_under_an_epoch_that_could_not_be_saved(self):
        """A failed save of the new epoch means no takeover, and a fault is reported."""
        r = backup()
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        r.save_epochs(error="No space left on device")
        self.assertEqual(r.of(ev.Serve), [])
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertTrue(r.last(ev.Note).fault)
        r.clear()
        r.advance(1.0)  # it asks again by the threshold rule, with a new epoch: the failed one is never offered again
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        self.assertEqual(r.last(ev.SaveEpoch), ev.SaveEpoch(5))

    def test_a_save_that_keeps_failing_is_reported_once_then_about_once_a_minute(self):
        """While the disk stays full the backup asks again at every window; the critical fault is said once a minute, with a count."""
        r = backup()
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        for _ in range(int(SAVE_NOTE_EVERY / 0.5) + 2):  # a little over a minute
            r.save_epochs(error="cannot write /state/epoch: No space left on device")
            r.advance(0.5)
        saves = r.of(ev.SaveEpoch)
        critical = [n for n in r.of(ev.Note) if n.level == "critical"]
        self.assertGreater(len(saves), SAVE_NOTE_EVERY / 0.5, "it went on asking, with a new epoch each time")
        self.assertEqual(len({s.epoch for s in saves}), len(saves))
        self.assertEqual(len(critical), 2, [n.text for n in critical[:3]])
        self.assertTrue(all(n.fault for n in critical))
        self.assertNotIn("more failed saves", critical[0].text)
        self.assertRegex(critical[1].text, r"No space left on device; .* \(\d+ more failed saves since the last report\)$")
        self.assertEqual(r.of(ev.Serve), [])
        r.save_epochs()  # room again
        self.assertEqual(r.last(ev.Serve), ev.Serve(saves[-1].epoch))
        self.assertEqual(r.core.role, ev.LIVE)

    def test_the_operator_may_allow_an_unsaved_epoch(self):
        """unsaved_epoch = true serves under an epoch kept in memory only, and says so."""
        r = backup(CoreSettings(**{**SETTINGS.__dict__, "unsaved_epoch": True}))
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        r.save_epochs(error="Read-only file system")
        self.assertEqual(r.last(ev.Serve), ev.Serve(3))
        self.assertEqual(r.last(ev.Note).level, "critical")

    def test_a_takeover_goes_above_every_epoch_heard(self):
        """The new epoch is above the peer's and in this server's own slot."""
        r = backup()
        r.heartbeat(epoch=10)
        r.feed(ev.LinkDown(ev.IN, ev.CLOSED, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        self.assertEqual(r.last(ev.SaveEpoch), ev.SaveEpoch(11))


class LiveTests(unittest.TestCase):
    def test_rank_comes_from_the_wire_not_the_local_copy(self):
        """Two live nodes: the one whose announced rank is lower yields, whatever this node's copy says."""
        settings = CoreSettings(**{**SETTINGS.__dict__, "priority": 5, "peer_priority": 0})
        r = live(settings)
        epoch = r.core.epoch
        r.heartbeat(epoch=epoch, priority=9)  # same epoch cannot happen between two servers; priority decides here
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.last(ev.StopServing), ev.StopServing("WAITING", 0.2), "gone within one heartbeat")

    def test_a_live_node_that_outranks_the_other_stays(self):
        """The higher epoch stays live and warns once."""
        r = live()
        r.heartbeat(epoch=1)
        r.heartbeat(epoch=1)
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertEqual(len([n for n in r.of(ev.Note) if "yields" in n.text]), 1)

    def test_heartbeats_every_interval_numbered(self):
        """A live node sends a heartbeat every interval, each with its own number."""
        r = live()
        r.advance(0.61)
        self.assertEqual([e.seq for e in r.of(ev.SendHeartbeat)], [2, 3, 4])

    def test_self_fence_counts_from_when_the_answered_heartbeat_was_sent(self):
        """The fence's stop ends well before the backup's threshold, counted from the send of the last answered beat."""
        r = live(CoreSettings(**{**SETTINGS.__dict__, "witnesses": True}))
        r.advance(0.2)
        beat = r.last(ev.SendHeartbeat)
        sent = r.t
        r.t += 0.03
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=beat.seq)
        self.assertEqual(r.core.last_answer, sent)
        r.advance(0.6)
        ask = r.last(ev.AskWitnesses)
        r.t += 0.1
        r.feed(ev.WitnessResult(ask.token, None))
        stop = r.last(ev.StopServing)
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertAlmostEqual(stop.within, (sent + 1.0 - r.t) / 2, msg="half the time left before the threshold")

    def test_a_live_node_stalled_past_its_backups_threshold_stops_serving_until_it_hears_it(self):
        """A woken live node stops serving at once and asks its peer before serving again."""
        r = live()
        r.t += 1.2
        r.feed(ev.Stalled(1.2))
        self.assertEqual(r.last(ev.StopServing), ev.StopServing("WAITING", 0.0))
        self.assertEqual(r.core.role, ev.BACKUP)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.LIVE, epoch=5, sender="serv_a"))
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_a_woken_live_node_whose_peer_stayed_backup_serves_again_under_a_new_epoch(self):
        """The peer answers that it is backup: the woken node lets a takeover under way finish, asks again, then serves."""
        r = live()
        epoch = r.core.epoch
        r.t += 1.2
        r.feed(ev.Stalled(1.2))
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=2, sender="serv_a"))
        self.assertEqual(r.of(ev.SaveEpoch), [], "the peer may be deciding to take over right now")
        r.advance(0.3)
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=2, sender="serv_a"))
        r.save_epochs()
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertGreater(r.core.epoch, epoch)


    def _stalled_with_answers(self, acked):
        """A live node (threshold 1, interval 0.2) whose reactor stalls 0.9s; C{acked}: (sent, answered) offsets."""
        r = live()
        r.advance(0.2)
        beat = r.last(ev.SendHeartbeat)
        r.t += 0.01
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=beat.seq)  # answered before the stall
        r.t += 0.14  # the stall begins 0.15s after that heartbeat was sent
        start = r.t
        for sent, answered in acked:  # pulses sent and answered while the reactor was busy, fed as it wakes
            r.t = start + 0.9
            r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=0, acked=(start + sent, start + answered))
        r.t = start + 0.9
        r.feed(ev.Stalled(0.9))
        return r

    def test_a_stall_the_backup_answered_pulses_through_is_no_reason_to_stop_serving(self):
        """
        Stalled 0.9s at a backup threshold of 1s, 0.15s after the last answered heartbeat was sent: without
        answers since, it stops serving (the backup may have heard nothing for 1.05s); with pulses sent and
        answered all through the stall (times from the pulse thread), it serves on.
        """
        self.assertEqual(self._stalled_with_answers([]).core.role, ev.BACKUP)
        answered = [(t / 10, t / 10 + 0.002) for t in range(1, 9)]
        r = self._stalled_with_answers(answered)
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertEqual(r.of(ev.StopServing), [])

    def test_answers_that_stop_partway_through_a_stall_bound_the_backups_silence_from_there(self):
        """Pulses answered for the first 0.1s of a 0.9s stall (the thread stopped, or they were lost): the backup may
        have heard nothing for 0.8s, and the node serves on; a 1.1s stall, 1.0s of silence: it stops."""
        r = self._stalled_with_answers([(0.05, 0.06), (0.1, 0.11)])
        self.assertEqual(r.core.role, ev.LIVE)
        r = live()
        r.advance(0.2)
        beat = r.last(ev.SendHeartbeat)
        r.t += 0.01
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=beat.seq)
        start = r.t
        r.t = start + 1.1
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=0, acked=(start + 0.1, start + 0.11))
        r.feed(ev.Stalled(1.1))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertIn("heard nothing for 1.000s", r.core.cause)

    def test_an_answer_in_any_order_bounds_from_the_latest_send_answered_before_it(self):
        """Answers overtaking each other: a late-sent pulse answered first does not hide the gap before it."""
        # In order of arrival: (sent 0.7, in at 0.71), then (sent 0.05, in at 0.75). Before 0.71 the latest
        # send known heard is the heartbeat 0.15s before the stall: a silence of up to 0.86s; then 0.2 to now.
        r = self._stalled_with_answers([(0.7, 0.71), (0.05, 0.75)])
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertAlmostEqual(r.core._unheard_bound(r.t - 0.9), 0.71 + 0.15, places=6)

    def test_an_answer_from_a_node_that_is_no_longer_backup_proves_nothing(self):
        """Only a backup's answer means it heard this node's live signal as such."""
        answered = [(t / 10, t / 10 + 0.002) for t in range(1, 9)]
        r = live()
        r.advance(0.2)
        start = r.t
        for sent, answer in answered:
            r.heartbeat(kind=ev.ANSWER, role=ev.STARTING, link=ev.OUT, seq=0, acked=(start + sent, start + answer))
        r.t = start + 0.9
        r.feed(ev.Stalled(0.9))
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_failed_channels_are_retried_with_a_capped_backoff(self):
        """Served with FAILED channels: retried after 0.1 s, doubling to the cap, while live."""
        r = live()
        delays = []
        for _ in range(8):
            r.feed(ev.Served(("web",)))
            timer = r.last(ev.StartTimer)
            delays.append(timer.delay)
            r.advance(timer.delay)
            self.assertIsInstance(r.effects[-1], ev.RetryChannels)
        self.assertEqual(delays[:3], [RETRY_FIRST, 2 * RETRY_FIRST, 4 * RETRY_FIRST])
        self.assertEqual(max(delays), RETRY_CAP)
        r.feed(ev.Served(()))
        r.feed(ev.Served(("web",)))
        self.assertEqual(r.last(ev.StartTimer).delay, RETRY_FIRST, "the backoff starts again once they came up")


class ReviewFindingsTests(unittest.TestCase):
    """Holes a review found in the rules, each closed."""

    def test_a_stand_down_of_a_term_already_over_is_answered_but_not_taken(self):
        """
        A planned switchover's standing-down frame (epoch 2) read late, after this backup had heard its
        peer live again under epoch 5 (it was stopped while the frame waited): answered, no takeover.
        The same frame at the live node's current epoch is a takeover.
        """
        r = backup()
        r.heartbeat(epoch=5)
        r.clear()
        r.heartbeat(epoch=2, kind=ev.STANDING_DOWN, switchover=True)
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.of(ev.SaveEpoch), [])
        self.assertEqual(len(r.of(ev.Answer)), 1)
        self.assertIn("it has announced epoch 5 since", " ".join(n.text for n in r.of(ev.Note)))
        r = backup()
        r.heartbeat(epoch=2, kind=ev.STANDING_DOWN, switchover=True)
        self.assertIsNotNone(r.last(ev.SaveEpoch), "a stand-down of the current term starts the takeover")

    def test_an_epoch_this_backup_failed_to_claim_does_not_make_the_live_nodes_stand_down_stale(self):
        """
        The crash fast path claimed an epoch and could not save it (a full disk); the live node was alive at
        epoch 2 all along. Its stand-down at epoch 2 is its current term: taken.
        """
        r = backup()
        r.heartbeat(epoch=2)
        r.feed(ev.LinkDown(ev.IN, ev.RESET, from_live=True))
        r.feed(ev.ProbeResult(ev.PREVOTE, r.last(ev.Probe).token, ev.REFUSED))
        r.save_epochs(error="No space left on device")
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertGreater(r.core.highest, 2)
        r.heartbeat(epoch=2)
        r.clear()
        r.heartbeat(epoch=2, kind=ev.STANDING_DOWN, switchover=True)
        self.assertIsNotNone(r.last(ev.SaveEpoch), "the switchover is taken")

    def test_a_peer_that_outranks_but_never_takes_the_role_is_passed_over_the_second_time(self):
        """A higher-ranked backup that stays backup (its disk is full) does not keep this node from serving for good."""
        r = backup(epoch=1)
        for asked in range(2):
            r.advance(1.0)
            probe = r.last(ev.Probe)
            r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=4, sender="serv_a"))
        self.assertEqual(len(r.of(ev.SaveEpoch)), 1, "stood aside once, then took the role")

    def test_a_probe_that_timed_out_while_this_node_was_stalled_proves_nothing(self):
        """NO_ANSWER arriving long after the probe's timeout: this node stalled; it asks again instead of taking over."""
        r = backup()
        r.advance(0.76)
        probe = r.last(ev.Probe)
        r.t += 0.9  # paused: the timeout fires on waking, before anything else
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.NO_ANSWER))
        self.assertEqual(r.of(ev.SaveEpoch), [])
        self.assertEqual(len(r.of(ev.Probe)), 2, "asked again")

    def test_a_slow_epoch_save_is_no_stall_of_the_new_live_node(self):
        """The reactor blocked by the save before going live: the stall after it counts only from going live."""
        r = live()
        r.t += 0.05
        r.feed(ev.Stalled(1.5))  # measured across the save, most of it before the node went live
        self.assertEqual(r.core.role, ev.LIVE)

    def test_a_node_shutting_down_never_takes_the_role_again(self):
        """After Shutdown a stall or a peer's answer cannot make a stopping node claim: the stop always finishes."""
        r = live()
        r.feed(ev.Shutdown())
        r.t += 2.0
        r.feed(ev.Stalled(2.0))
        self.assertEqual(r.of(ev.SaveEpoch), [])
        r.feed(ev.StoppedServing())
        self.assertEqual(r.core.role, ev.STOPPED)

    def test_a_shutting_down_live_node_heartbeats_until_its_channels_have_stopped(self):
        """A slow stop on SIGTERM must not let the backup's threshold pass: heartbeats go on until the channels stop."""
        r = live()
        r.feed(ev.Shutdown())
        r.clear()
        r.advance(1.0)
        self.assertGreaterEqual(len(r.of(ev.SendHeartbeat)), 4, "still heartbeating while the channels stop")
        self.assertEqual(r.core.wire_role, ev.LIVE)
        r.feed(ev.StoppedServing())
        self.assertEqual(r.core.role, ev.STOPPED)
        r.clear()
        r.advance(1.0)
        self.assertEqual(r.of(ev.SendHeartbeat), [], "none once stopped")

    def test_a_node_handing_over_that_stalls_past_the_threshold_stops_its_channels_at_once(self):
        """A stall in the middle of a switchover's slow stop: the channels are killed at once and the switchover given up."""
        r = live()
        r.advance(0.2)
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=r.last(ev.SendHeartbeat).seq)
        r.feed(ev.SwitchoverAsked())
        r.t += 1.2
        r.feed(ev.Stalled(1.2))
        self.assertEqual(r.last(ev.StopServing), ev.StopServing("WAITING", 0.0))
        self.assertFalse(r.last(ev.SwitchoverOutcome).ok)
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_a_short_stall_during_the_crash_path_does_not_bring_the_takeover_forward(self):
        """A link reset, then a 0.13 s stall: no answer still waits for the threshold."""
        r = backup()
        r.feed(ev.LinkDown(ev.IN, ev.RESET, from_live=True))
        r.t += 0.13
        r.feed(ev.Stalled(0.13))
        probe = r.last(ev.Probe)
        r.t += 0.25
        r.feed(ev.ProbeResult(ev.PREVOTE, probe.token, ev.NO_ANSWER))
        self.assertEqual(r.of(ev.SaveEpoch), [], "0.38 s of silence is not the 1 s threshold")

    def test_a_failed_save_after_a_failed_switchover_leaves_a_backup_not_a_node_stuck_handing_over(self):
        """The check finds the backup still backup, the new epoch cannot be saved: the node is a backup, not stuck."""
        r = live()
        r.advance(0.2)
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=r.last(ev.SendHeartbeat).seq)
        r.feed(ev.SwitchoverAsked())
        r.feed(ev.StoppedServing())
        r.advance(5.0)
        r.feed(ev.ProbeResult(ev.HANDOVER, r.last(ev.Probe).token, ev.ANSWERED, role=ev.BACKUP, epoch=2, sender="serv_a"))
        r.save_epochs(error="No space left on device")
        self.assertEqual(r.core.role, ev.BACKUP)
        r.heartbeat(epoch=9)  # the peer goes live later: met, no exception
        self.assertEqual(r.core.role, ev.BACKUP)


class SwitchoverTests(unittest.TestCase):
    def answered_live(self):
        r = live()
        r.advance(0.2)
        r.heartbeat(kind=ev.ANSWER, role=ev.BACKUP, link=ev.OUT, seq=r.last(ev.SendHeartbeat).seq)
        r.clear()
        return r

    def test_switchover_stops_serving_before_telling_the_backup(self):
        """The stand-down goes out only once every channel has stopped."""
        r = self.answered_live()
        r.feed(ev.SwitchoverAsked())
        self.assertEqual(r.of(ev.StandDown), [])
        r.feed(ev.StoppedServing())
        self.assertEqual(r.of(ev.StandDown), [ev.StandDown(True)])
        r.heartbeat(epoch=5, kind=ev.ANSWER, link=ev.OUT)
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertTrue(r.last(ev.SwitchoverOutcome).ok)

    def test_an_unconfirmed_switchover_asks_the_backup_before_serving_again(self):
        """No confirmation: the old live node asks; a backup that is still backup means serve again (new epoch)."""
        r = self.answered_live()
        epoch = r.core.epoch
        r.feed(ev.SwitchoverAsked())
        r.feed(ev.StoppedServing())
        r.advance(5.0)
        probe = r.last(ev.Probe)
        self.assertEqual(probe.purpose, ev.HANDOVER)
        self.assertEqual(r.of(ev.Serve), [], "nothing serves before the answer")
        r.feed(ev.ProbeResult(ev.HANDOVER, probe.token, ev.ANSWERED, role=ev.BACKUP, epoch=2, sender="serv_a"))
        r.save_epochs()
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertGreater(r.core.epoch, epoch)
        self.assertFalse(r.last(ev.SwitchoverOutcome).ok)

    def test_an_unanswered_check_leaves_the_old_live_node_backup(self):
        """No answer to the check: the backup may be live, so the old live node waits as backup."""
        r = self.answered_live()
        r.feed(ev.SwitchoverAsked())
        r.feed(ev.StoppedServing())
        r.feed(ev.LinkDown(ev.OUT, ev.CLOSED))
        probe = r.last(ev.Probe)
        self.assertEqual(probe.purpose, ev.HANDOVER, "a dropped link is noticed at once")
        r.feed(ev.ProbeResult(ev.HANDOVER, probe.token, ev.NO_ANSWER))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.of(ev.Serve), [])

    def test_switchover_refused_while_the_backup_is_not_answering(self):
        """A switchover is refused when the backup has not answered recently."""
        r = live()
        r.advance(1.0)
        r.feed(ev.SwitchoverAsked())
        self.assertFalse(r.last(ev.SwitchoverOutcome).ok)
        self.assertEqual(r.core.role, ev.LIVE)


class StartupTests(unittest.TestCase):
    def test_started_live_it_yields_to_a_live_peer(self):
        """A node started live whose peer answers live starts as backup."""
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.STARTUP, probe.token, ev.ANSWERED, role=ev.LIVE, epoch=4, sender="serv_a"))
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_started_together_the_lower_rank_waits(self):
        """Both started live at once: the node the other outranks (by the wire) starts as backup."""
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        probe = r.last(ev.Probe)
        r.feed(ev.ProbeResult(ev.STARTUP, probe.token, ev.ANSWERED, role=ev.STARTING, epoch=0, priority=0,
                              sender="serv_a"))
        self.assertEqual(r.core.role, ev.BACKUP, "serv_a sorts first")

    def test_a_backup_peer_is_asked_twice_before_the_node_starts_live(self):
        """The peer says backup: it may be deciding to take over right now, so the node asks again a window later."""
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.ProbeResult(ev.STARTUP, r.last(ev.Probe).token, ev.ANSWERED, role=ev.BACKUP, sender="serv_a"))
        self.assertEqual(r.of(ev.SaveEpoch), [])
        r.advance(0.25)
        r.feed(ev.ProbeResult(ev.STARTUP, r.last(ev.Probe).token, ev.ANSWERED, role=ev.LIVE, epoch=3, sender="serv_a"))
        self.assertEqual(r.core.role, ev.BACKUP, "it had taken over meanwhile")

    def test_no_answer_and_no_witness_reachable_starts_as_backup(self):
        """Started live, no answer, witnesses configured but none reachable: it waits as backup."""
        r = Recorder(CoreSettings(**{**SETTINGS.__dict__, "witnesses": True}))
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.ProbeResult(ev.STARTUP, r.last(ev.Probe).token, ev.NO_ANSWER))
        r.feed(ev.WitnessResult(r.last(ev.AskWitnesses).token, None))
        self.assertEqual(r.core.role, ev.BACKUP)

    def test_unknown_plants_are_refused(self):
        """A plant name the core does not know is an error, not silently ignored."""
        with self.assertRaises(ValueError):
            PairCore(SETTINGS, 0, now=lambda: 0.0, plants=frozenset({"no-such-rule"}))
