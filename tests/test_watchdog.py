"""The threshold watchdog, with the scheduling clock and the monotonic clock under test control."""

from twisted.internet.task import Clock
from twisted.trial import unittest

from iwayfailover.watchdog import MAX_TICK, Watchdog


class Monotonic:
    """A monotonic clock that tests move; by default it follows the scheduling clock."""

    def __init__(self, clock):
        self.clock = clock
        self.offset = 0.0

    def __call__(self):
        return self.clock.seconds() + self.offset


class WatchdogTests(unittest.TestCase):
    def setUp(self):
        self.clock = Clock()
        self.monotonic = Monotonic(self.clock)
        self.reports = []
        self.watchdog = Watchdog(self.clock, 3.0, self.reports.append, now=self.monotonic)

    def advance_in_steps(self, seconds, step=0.001):
        for _ in range(int(round(seconds / step))):
            self.clock.advance(step)

    def test_silence_past_the_threshold_is_reported_once(self):
        """After threshold seconds with nothing heard, on_silence is called once, with the silence."""
        self.watchdog.start()
        self.clock.pump([0.5] * 10)
        self.assertEqual(len(self.reports), 1)
        self.assertGreaterEqual(self.reports[0], 3.0)
        self.assertFalse(self.watchdog.running)

    def test_no_report_before_the_threshold(self):
        """Just under the threshold of silence is not yet a dead live node."""
        self.watchdog.start()
        self.advance_in_steps(2.99, step=0.01)
        self.assertEqual(self.reports, [])

    def test_report_comes_within_a_millisecond_of_the_threshold_not_a_tick_late(self):
        """A one-off timer for the deadline itself fires the report at the threshold, not at the next tick."""
        watchdog = Watchdog(self.clock, 1.1, self.reports.append, now=self.monotonic)
        watchdog.start()  # tick = 0.275 s; a tick-only watchdog would report at 1.375 s
        self.advance_in_steps(1.101)
        self.assertEqual(len(self.reports), 1)
        self.assertLess(abs(self.reports[0] - 1.1), 0.0015)

    def test_heartbeats_keep_the_watchdog_quiet(self):
        """While the live signal arrives more often than the threshold, nothing is reported."""
        self.watchdog.start()
        for _ in range(100):
            self.clock.advance(1.0)
            self.watchdog.heard()
        self.assertEqual(self.reports, [])
        self.assertTrue(self.watchdog.running)

    def test_silence_counts_from_the_last_heartbeat(self):
        """The threshold is measured from the last heartbeat heard, not from the start."""
        self.watchdog.start()
        self.clock.advance(2.0)
        self.watchdog.heard()
        self.advance_in_steps(2.9, step=0.01)
        self.assertEqual(self.reports, [])
        self.advance_in_steps(0.2, step=0.01)
        self.assertEqual(len(self.reports), 1)

    def test_a_wall_clock_step_forward_causes_no_takeover(self):
        """An NTP step moves the scheduling clock but not the monotonic one: no takeover."""
        self.watchdog.start()
        self.monotonic.offset = -3600.0  # the reactor's clock jumps an hour ahead of the monotonic one
        self.clock.advance(3600.0)
        self.assertEqual(self.reports, [])

    def test_monotonic_silence_is_reported_whatever_the_wall_clock_says(self):
        """Silence is judged on the monotonic clock alone."""
        self.watchdog.start()
        self.monotonic.offset = 10.0  # monotonic time passed while the wall clock was stepped back
        self.clock.advance(0.5)
        self.assertEqual(len(self.reports), 1)
        self.assertGreaterEqual(self.reports[0], 10.0)

    def test_a_lower_threshold_applies_at_once(self):
        """A new threshold takes effect at once: silence already measured counts against it."""
        self.watchdog.start()
        self.clock.advance(1.5)
        self.watchdog.set_threshold(1.0)
        self.assertEqual(len(self.reports), 1)

    def test_a_higher_threshold_postpones_the_report(self):
        """Raising the threshold while silent postpones the takeover to the new threshold."""
        self.watchdog.start()
        self.clock.advance(2.0)
        self.watchdog.set_threshold(5.0)
        self.advance_in_steps(2.9, step=0.01)
        self.assertEqual(self.reports, [])
        self.advance_in_steps(0.2, step=0.01)
        self.assertEqual(len(self.reports), 1)

    def test_stopped_watchdog_reports_nothing(self):
        """A stopped watchdog leaves no timer behind."""
        self.watchdog.start()
        self.clock.advance(2.95)  # the deadline timer is armed by now
        self.watchdog.stop()
        self.assertEqual(self.clock.getDelayedCalls(), [])
        self.clock.advance(10)
        self.assertEqual(self.reports, [])

    def test_an_error_in_a_check_does_not_kill_the_watchdog(self):
        """A failing check is logged and the watchdog keeps checking."""
        broken = {"on": True}

        def now():
            if broken["on"]:
                raise RuntimeError("clock unavailable")
            return self.clock.seconds()

        watchdog = Watchdog(self.clock, 1.0, self.reports.append, now=self.clock.seconds)
        watchdog.start()
        watchdog._now = now
        self.clock.advance(watchdog.tick)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)
        broken["on"] = False
        self.clock.pump([0.25] * 8)
        self.assertEqual(len(self.reports), 1)

    def test_tick_is_bounded(self):
        """Checks come at least every MAX_TICK seconds, whatever the threshold."""
        watchdog = Watchdog(self.clock, 600.0, self.reports.append, now=self.monotonic)
        self.assertEqual(watchdog.tick, MAX_TICK)
        self.assertEqual(Watchdog(self.clock, 0.3, self.reports.append).tick, 0.15)
