"""
The group core's rules (coordinator = etcd), one at a time, with a
recorder: observations in, effects out, time advanced by hand. No store,
no sockets, no reactor: tests/sim/group.py runs the same core against a
simulated store, and test_group_e2e.py against a real etcd.
"""

from __future__ import annotations

import unittest

from corerecorder import CoreRecorder
from iwayfailover.core import events as ev
from iwayfailover.core.group import MARGIN, PLANTS, GroupCore, GroupSettings

ALPHA = GroupSettings(name="alpha", priority=10, threshold=3.0, interval=0.5)


class Recorder(CoreRecorder):
    """A group core, a hand-driven monotonic clock and every effect it asked for."""

    def __init__(self, settings=ALPHA, plants=frozenset()):
        super().__init__()
        self.core = GroupCore(settings, now=lambda: self.t, plants=plants)

    def win(self, epoch=7, lease=0x10, ttl=3.0, sent_at=None):
        campaign = self.last(ev.Campaign)
        assert campaign is not None, "no campaign was asked for"
        return self.feed(ev.CampaignResult(campaign.token, True, epoch=epoch, lease=lease,
                                           sent_at=self.t if sent_at is None else sent_at, ttl=ttl))

    def live(self, **kw):
        """Start live with the key free, and win."""
        self.feed(ev.Start(as_backup=False))
        self.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True), ("gamma", 1, True))))
        self.feed(ev.StoreState(None, revision=3))
        self.win(**kw)
        self.feed(ev.Served())
        self.feed(ev.StoreState("alpha", epoch=kw.get("epoch", 7), lease=kw.get("lease", 0x10), revision=7))
        assert self.core.role == ev.LIVE


class Starting(unittest.TestCase):
    def test_started_live_campaigns_at_once_when_the_key_is_free(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        self.assertEqual(r.core.role, ev.STARTING)
        self.assertEqual(r.of(ev.Campaign), [])
        r.feed(ev.StoreState(None, revision=3))
        self.assertEqual(len(r.of(ev.Campaign)), 1)
        self.assertEqual(r.last(ev.Campaign).ttl, 3.0)
        r.win(epoch=4)
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertEqual(r.core.epoch, 4)
        self.assertEqual(r.last(ev.Serve), ev.Serve(4))
        self.assertEqual(r.last(ev.SaveEpoch), ev.SaveEpoch(4))
        self.assertEqual(r.last(ev.Transition).kind, "start")

    def test_started_live_yields_to_a_holder(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.StoreState("beta", epoch=12, lease=5, revision=13))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.core.epoch, 12)
        self.assertEqual(r.of(ev.Campaign), [])
        self.assertEqual(r.last(ev.StopServing).final, ev.CHANNELS_WAITING)

    def test_started_as_backup_waits_a_threshold_before_taking_a_free_key(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=True))
        self.assertEqual(r.core.role, ev.BACKUP)
        r.feed(ev.StoreState(None, revision=3))
        r.advance(2.9)
        self.assertEqual(r.of(ev.Campaign), [], "a -b member took a free key before the threshold")
        r.advance(0.2)
        self.assertEqual(len(r.of(ev.Campaign)), 1)

    def test_a_backup_never_campaigns_while_the_key_is_held(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=True))
        r.feed(ev.StoreState("beta", epoch=12, lease=5, revision=13))
        r.advance(60)
        self.assertEqual(r.of(ev.Campaign), [])

    def test_a_store_out_of_reach_at_start_leaves_a_waiting_backup(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.StoreLost("connection refused"))
        self.assertEqual(r.core.role, ev.BACKUP)
        r.advance(10)
        self.assertEqual(r.of(ev.Campaign), [])
        r.feed(ev.StoreState(None, revision=3))
        self.assertEqual(len(r.of(ev.Campaign)), 1, "a member started live goes at once when the store answers")

    def test_a_key_left_by_an_earlier_run_is_let_go_of(self):
        r = Recorder()
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.StoreState("alpha", epoch=5, lease=0x99, revision=6))
        self.assertEqual(r.of(ev.Resign), [ev.Resign(0x99, reason="stale")])
        self.assertEqual(r.of(ev.Serve), [])


class Candidates(unittest.TestCase):
    def backup(self, settings):
        r = Recorder(settings)
        r.feed(ev.Start(as_backup=True))
        r.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True), ("gamma", 1, True))))
        r.feed(ev.StoreState("alpha", epoch=7, lease=0x10, revision=7))
        return r

    @staticmethod
    def vacate(r, **kw):
        """alpha, the live member, has gone: its member key and then its live key."""
        r.feed(ev.Candidates((("beta", 5, True), ("gamma", 1, True))))
        r.feed(ev.StoreState(None, revision=9, **kw))

    def test_the_best_candidate_goes_at_once_the_others_later_in_rank(self):
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        gamma = self.backup(GroupSettings(name="gamma", priority=1, threshold=3.0, interval=0.5))
        for r in (beta, gamma):
            r.feed(ev.Candidates((("beta", 5, True), ("gamma", 1, True))))  # alpha has gone
            r.feed(ev.StoreState(None, revision=9))
        self.assertEqual(len(beta.of(ev.Campaign)), 1, "the best candidate did not go at once")
        self.assertEqual(gamma.of(ev.Campaign), [])
        gamma.advance(gamma.core.settings.stagger)
        self.assertEqual(len(gamma.of(ev.Campaign)), 1)

    def test_a_later_candidate_does_not_campaign_once_the_key_is_taken(self):
        gamma = self.backup(GroupSettings(name="gamma", priority=1, threshold=3.0, interval=0.5))
        gamma.feed(ev.StoreState(None, revision=9))
        gamma.feed(ev.StoreState("beta", epoch=10, lease=0x20, revision=10))
        gamma.advance(5)
        self.assertEqual(gamma.of(ev.Campaign), [])
        self.assertEqual(gamma.core.epoch, 10)

    def test_a_lost_campaign_leaves_a_backup(self):
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        self.vacate(beta)
        token = beta.last(ev.Campaign).token
        beta.feed(ev.CampaignResult(token, False, epoch=10, holder="gamma"))
        self.assertEqual(beta.core.role, ev.BACKUP)
        self.assertEqual(beta.of(ev.Serve), [])
        self.assertEqual(len(beta.of(ev.Campaign)), 1, "campaigned again before the watch showed the winner's key")
        beta.feed(ev.StoreState("gamma", epoch=10, lease=0x30, revision=10))
        self.assertEqual(beta.core.holder, "gamma")

    def test_a_lost_campaign_answered_after_the_winner_let_go_campaigns_again(self):
        """The watch shows gamma's key come and go before beta's lost answer arrives: beta campaigns again."""
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        self.vacate(beta)
        token = beta.last(ev.Campaign).token
        beta.feed(ev.StoreState("gamma", epoch=10, lease=0x30, revision=10))
        beta.feed(ev.StoreState(None, released_by="gamma", revision=11))
        beta.feed(ev.CampaignResult(token, False, epoch=10, holder="gamma"))
        self.assertEqual(len(beta.of(ev.Campaign)), 2, "stuck: the key is free and nobody campaigns")

    def test_a_campaign_the_store_did_not_answer_is_asked_again(self):
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        self.vacate(beta)
        token = beta.last(ev.Campaign).token
        beta.feed(ev.CampaignResult(token, False, error="timed out"))
        beta.advance(1.1)
        self.assertEqual(len(beta.of(ev.Campaign)), 2)

    def test_the_silence_kind_and_the_clean_stop_kind(self):
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        self.vacate(beta)
        beta.win(epoch=10)
        self.assertEqual(beta.last(ev.Transition).kind, "silence")
        beta = self.backup(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        self.vacate(beta, released_by="alpha")
        beta.win(epoch=10)
        self.assertEqual(beta.last(ev.Transition).kind, "peer_shutdown")


class Lease(unittest.TestCase):
    def test_keepalives_every_interval(self):
        r = Recorder()
        r.live()
        r.clear()
        r.advance(0.5)
        self.assertEqual(r.of(ev.KeepAlive), [ev.KeepAlive(0x10)])
        r.advance(0.5)
        self.assertEqual(len(r.of(ev.KeepAlive)), 2)

    def test_without_answers_the_live_member_stops_before_the_lease_can_end(self):
        r = Recorder()
        r.live(sent_at=100.0)
        valid_until = 100.0 + 3.0
        guard = r.core.settings.guard(3.0)
        r.advance(valid_until - guard - r.t - 0.01)
        self.assertEqual(r.core.role, ev.LIVE)
        r.advance(0.02)
        self.assertEqual(r.core.role, ev.BACKUP)
        stop = r.last(ev.StopServing)
        self.assertIsNotNone(stop.within)
        self.assertLessEqual(valid_until - guard + stop.within, valid_until - MARGIN + 1e-9,
                             "the fence's stop may end after the store can give the key away")
        self.assertEqual(r.of(ev.Resign), [], "let go of the key before the channels stopped")
        r.feed(ev.StoppedServing())
        self.assertEqual(r.of(ev.Resign), [ev.Resign(0x10, reason="fenced")])

    def test_the_lease_counts_from_when_the_keepalive_was_sent(self):
        r = Recorder()
        r.live(sent_at=100.0)
        r.advance(0.5)
        sent = r.t
        r.advance(1.0)  # the answer is late
        r.feed(ev.KeepAliveResult(0x10, sent_at=sent, ttl=3.0))
        self.assertAlmostEqual(r.core.valid_until, sent + 3.0)
        self.assertEqual(r.core.role, ev.LIVE)

    def test_the_fence_from_answer_plant_counts_from_the_answer(self):
        r = Recorder(plants={"fence-from-answer"})
        r.live(sent_at=100.0)
        r.advance(0.5)
        sent = r.t
        r.advance(1.0)
        r.feed(ev.KeepAliveResult(0x10, sent_at=sent, ttl=3.0))
        self.assertAlmostEqual(r.core.valid_until, r.t + 3.0)

    def test_answered_keepalives_keep_it_live(self):
        r = Recorder()
        r.live()
        for _ in range(40):
            r.advance(0.5)
            ka = r.last(ev.KeepAlive)
            r.feed(ev.KeepAliveResult(ka.lease, sent_at=r.t, ttl=3.0))
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertEqual(r.of(ev.StopServing), [])

    def test_an_expired_lease_stops_at_once(self):
        r = Recorder()
        r.live()
        r.feed(ev.KeepAliveResult(0x10, sent_at=r.t, ttl=0))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.last(ev.StopServing).within, 0.0)

    def test_a_key_taken_by_another_stops_at_once(self):
        r = Recorder()
        r.live()
        r.feed(ev.StoreState("beta", epoch=20, lease=0x30, revision=20))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertEqual(r.last(ev.StopServing).within, 0.0)

    def test_an_older_state_is_ignored(self):
        r = Recorder()
        r.live(epoch=7)
        r.feed(ev.StoreState(None, revision=5))
        self.assertEqual(r.core.role, ev.LIVE)

    def test_a_stall_past_the_fence_stops_on_waking(self):
        r = Recorder()
        r.live(sent_at=100.0)
        r.t += 2.8  # paused: no timer ran
        r.feed(ev.Stalled(2.8))
        self.assertEqual(r.core.role, ev.BACKUP)
        self.assertLessEqual(r.last(ev.StopServing).within, 0.2)

    def test_the_no_lease_fence_plant_serves_on(self):
        r = Recorder(plants={"no-lease-fence"})
        r.live()
        r.advance(10)
        self.assertEqual(r.core.role, ev.LIVE)


class RenewalPeriod(unittest.TestCase):
    def test_renewals_come_at_most_a_quarter_of_the_ttl_apart(self):
        """interval 1 s with a TTL of 2 s: renewals every 0.5 s, so that the fence does not come before an answer can."""
        r = Recorder(GroupSettings(name="alpha", priority=10, threshold=2.0, interval=1.0))
        r.live(ttl=2.0)
        for _ in range(20):
            r.advance(0.5)
            ka = r.last(ev.KeepAlive)
            r.feed(ev.KeepAliveResult(ka.lease, sent_at=r.t - 0.01, ttl=2.0))
        self.assertEqual(r.core.role, ev.LIVE)
        self.assertEqual(len(r.of(ev.KeepAlive)), 20)


class CleanStopAndSwitchover(unittest.TestCase):
    def test_a_clean_stop_stops_the_channels_then_lets_go(self):
        r = Recorder()
        r.live()
        r.clear()
        r.feed(ev.Shutdown())
        self.assertEqual(r.last(ev.StopServing).final, ev.CHANNELS_STOPPED)
        self.assertEqual(r.of(ev.Resign), [])
        r.feed(ev.StoppedServing())
        self.assertEqual(r.of(ev.Resign), [ev.Resign(0x10)])
        self.assertEqual(r.core.role, ev.STOPPED)

    def test_the_resign_before_stop_plant_lets_go_first(self):
        r = Recorder(plants={"resign-before-stop"})
        r.live()
        r.clear()
        r.feed(ev.Shutdown())
        self.assertEqual([type(e) for e in r.effects if isinstance(e, (ev.Resign, ev.StopServing))],
                         [ev.Resign, ev.StopServing])

    def test_switchover_to_a_named_member(self):
        r = Recorder()
        r.live()
        r.clear()
        r.feed(ev.GroupSwitchoverAsked(to="gamma"))
        self.assertEqual(r.core.role, ev.HANDING_OVER)
        self.assertEqual(r.of(ev.Resign), [])
        r.advance(0.2)
        r.feed(ev.StoppedServing())
        self.assertEqual(r.of(ev.Resign), [ev.Resign(0x10, "gamma", "switchover")])
        # A renewal written before the release, seen on the watch after it: not "an earlier run".
        r.feed(ev.StoreState("alpha", epoch=7, lease=0x10, revision=8, renewed=8, ttl=3.0))
        self.assertEqual(len(r.of(ev.Resign)), 1)
        self.assertEqual(r.core.role, ev.BACKUP)
        r.feed(ev.StoreState(None, released_by="alpha", handover_to="gamma", revision=8))
        r.feed(ev.StoreState("gamma", epoch=9, lease=0x40, released_by="alpha", handover_to="gamma", revision=9))
        outcome = r.last(ev.SwitchoverOutcome)
        self.assertTrue(outcome.ok)
        self.assertEqual((outcome.to, outcome.epoch), ("gamma", 9))
        self.assertEqual(r.of(ev.Campaign), [], "the old live member campaigned against the member it named")

    def test_the_named_member_goes_at_once_the_others_wait(self):
        beta = Recorder(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5))
        gamma = Recorder(GroupSettings(name="gamma", priority=1, threshold=3.0, interval=0.5))
        for r in (beta, gamma):
            r.feed(ev.Start(as_backup=True))
            r.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True), ("gamma", 1, True))))
            r.feed(ev.StoreState("alpha", epoch=7, lease=0x10, revision=7))
            r.feed(ev.StoreState(None, released_by="alpha", handover_to="gamma", revision=8))
        self.assertEqual(len(gamma.of(ev.Campaign)), 1)
        self.assertEqual(gamma.last(ev.Transition).role, ev.BACKUP)
        self.assertEqual(beta.of(ev.Campaign), [])
        beta.advance(2.9)
        self.assertEqual(beta.of(ev.Campaign), [])
        beta.advance(0.2)
        self.assertEqual(len(beta.of(ev.Campaign)), 1, "nobody took the role after the named member failed to")
        gamma.win(epoch=9)
        self.assertEqual(gamma.last(ev.Transition).kind, "switchover")

    def test_switchover_refused(self):
        r = Recorder()
        r.live()
        r.feed(ev.GroupSwitchoverAsked(to="delta"))
        self.assertFalse(r.last(ev.SwitchoverOutcome).ok)
        self.assertIn("not a registered member", r.last(ev.SwitchoverOutcome).detail)
        self.assertEqual(r.core.role, ev.LIVE)
        r.feed(ev.Candidates((("alpha", 10, True),)))
        r.feed(ev.GroupSwitchoverAsked())
        self.assertIn("no other member", r.last(ev.SwitchoverOutcome).detail)
        backup = Recorder(GroupSettings(name="beta"))
        backup.feed(ev.Start(as_backup=True))
        backup.feed(ev.StoreState("alpha", epoch=7, lease=1, revision=7))
        backup.feed(ev.GroupSwitchoverAsked())
        self.assertIn("the live member is alpha", backup.last(ev.SwitchoverOutcome).detail)

    def test_failback_to_a_better_member_after_the_delay(self):
        r = Recorder(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5, failback=True,
                                   failback_delay=10))
        r.feed(ev.Start(as_backup=False))
        r.feed(ev.Candidates((("beta", 5, True),)))
        r.feed(ev.StoreState(None, revision=3))
        r.win()
        r.feed(ev.Served())
        for _ in range(30):  # keep the lease alive
            r.advance(0.5)
            r.feed(ev.KeepAliveResult(0x10, sent_at=r.t, ttl=3.0))
            if _ == 5:
                r.feed(ev.Candidates((("beta", 5, True), ("alpha", 10, True))))
        self.assertEqual(r.core.role, ev.HANDING_OVER)
        self.assertIn("failback to alpha", r.core.cause)


class FailbackOnTakingTheRole(unittest.TestCase):
    def test_a_member_that_takes_the_role_with_the_preferred_one_registered_fails_back(self):
        """The preferred member registered before this one won: no later change of the members says so, and still it fails back."""
        r = Recorder(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5, failback=True,
                                   preferred="alpha", failback_delay=1.0))
        r.feed(ev.Start(as_backup=True))
        r.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True))))
        r.feed(ev.StoreState("gamma", epoch=7, lease=0x10, revision=7))
        r.feed(ev.StoreState(None, released_by="gamma", revision=8))
        r.advance(r.core.settings.stagger)
        r.win(epoch=9)
        for _ in range(4):
            r.advance(0.5)
            r.feed(ev.KeepAliveResult(0x10, sent_at=r.t, ttl=3.0))
        self.assertEqual(r.core.role, ev.HANDING_OVER)
        self.assertIn("failback to alpha", r.core.cause)


class Channels(unittest.TestCase):
    def test_failed_channels_are_retried_while_live(self):
        r = Recorder()
        r.live()
        r.feed(ev.Served(failed=("web",)))
        r.advance(0.11)
        self.assertEqual(len(r.of(ev.RetryChannels)), 1)

    def test_plants_are_known(self):
        with self.assertRaises(ValueError):
            GroupCore(ALPHA, now=lambda: 0.0, plants={"nonsense"})
        self.assertIn("no-lease-fence", PLANTS)


if __name__ == "__main__":
    unittest.main()


class StaleKeys(unittest.TestCase):
    """A backup clears a key its holder has stopped renewing, after the holder's TTL, never sooner."""

    def backup(self, plants=frozenset()):
        r = Recorder(GroupSettings(name="beta", priority=5, threshold=3.0, interval=0.5), plants=plants)
        r.feed(ev.Start(as_backup=True))
        r.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True))))
        return r

    def renew(self, r, renewed, ttl=2.0):
        r.feed(ev.StoreState("alpha", epoch=7, lease=0x10, revision=renewed, renewed=renewed, ttl=ttl))

    def test_renewals_keep_the_key(self):
        r = self.backup()
        for n in range(40):
            self.renew(r, 7 + n)
            r.advance(0.25)
        self.assertEqual(r.of(ev.ClearStale), [])

    def test_a_key_not_renewed_for_its_ttl_is_cleared_at_the_revision_seen(self):
        r = self.backup()
        self.renew(r, 7)
        self.renew(r, 8)
        seen = r.t
        r.advance(2.0)
        self.assertEqual(r.of(ev.ClearStale), [], "cleared within the holder's TTL")
        r.advance(0.02)
        self.assertEqual(r.of(ev.ClearStale), [ev.ClearStale("alpha", 8)])
        self.assertGreaterEqual(r.t - seen, 2.0)

    def test_a_lower_candidate_waits_its_turn(self):
        r = Recorder(GroupSettings(name="gamma", priority=1, threshold=3.0, interval=0.5))
        r.feed(ev.Start(as_backup=True))
        r.feed(ev.Candidates((("alpha", 10, True), ("beta", 5, True), ("gamma", 1, True))))
        self.renew(r, 8)
        r.advance(2.02)
        self.assertEqual(r.of(ev.ClearStale), [])
        r.advance(r.core.settings.stagger)
        self.assertEqual(len(r.of(ev.ClearStale)), 1)

    def test_losing_the_store_times_the_renewal_again_from_its_return(self):
        r = self.backup()
        self.renew(r, 8)
        r.advance(1.5)
        r.feed(ev.StoreLost("timed out"))
        r.advance(1.0)
        self.renew(r, 8)  # the same renewal, seen again after the watch came back
        r.advance(1.9)
        self.assertEqual(r.of(ev.ClearStale), [])
        r.advance(0.2)
        self.assertEqual(len(r.of(ev.ClearStale)), 1)

    def test_the_live_member_never_clears_its_own_key(self):
        r = Recorder()
        r.live()
        r.feed(ev.StoreState("alpha", epoch=7, lease=0x10, revision=9, renewed=9, ttl=3.0))
        r.advance(1.0)
        self.assertEqual(r.of(ev.ClearStale), [])

    def test_the_early_clear_plant_clears_at_half_the_ttl(self):
        r = self.backup(plants={"early-clear"})
        self.renew(r, 8)
        r.advance(1.01)
        self.assertEqual(len(r.of(ev.ClearStale)), 1)
