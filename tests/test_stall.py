"""
Tests for L{iwayfailover.stall.StallWatch} on a hand-driven clock: it
reports how late its own timer came, keeps running whatever its callers
raise, and a change of pace never hides a stall it has not reported yet.
"""

from twisted.internet.task import Clock
from twisted.trial.unittest import TestCase

from iwayfailover.stall import StallWatch


class StallWatchTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.calls = []
        self.watch = StallWatch(self.clock, self.clock.seconds, 0.1, lambda late: self.calls.append(("stall", round(late, 3))),
                                on_tick=lambda: self.calls.append(("tick",)))
        self.watch.start()

    def test_a_late_tick_is_a_stall_reported_before_the_tick(self):
        """The stall first (a node that must stop serving does so), then the tick (the pulse thread's stamp)."""
        self.clock.advance(0.1)
        self.assertEqual(self.calls, [("tick",)])
        self.calls.clear()
        self.clock.advance(0.6)  # one jump: the timer comes 0.5 s late
        self.assertEqual(self.calls, [("stall", 0.5), ("tick",)])

    def test_hurrying_brings_the_next_tick_forward(self):
        self.watch.hurry(0.02)
        self.clock.advance(0.02)
        self.assertEqual(self.calls, [("tick",)])
        self.clock.advance(0.02)
        self.assertEqual(self.calls, [("tick",), ("tick",)])

    def test_hurrying_never_hides_a_stall_not_reported_yet(self):
        """A caller running first after a stall (a poller's timer) hurries the watch: the overdue check still reports it."""
        self.clock.rightNow += 0.7  # the process did not run; nothing has fired yet
        self.watch.hurry(0.02)
        self.clock.advance(0)
        self.assertEqual(self.calls[0], ("stall", 0.6))

    def test_an_exception_in_either_call_stops_nothing(self):
        def boom(*args):
            raise RuntimeError("broken on purpose")

        watch = StallWatch(self.clock, self.clock.seconds, 0.1, boom, on_tick=boom)
        watch.start()
        self.clock.advance(0.5)
        self.clock.advance(0.1)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 3, "a stall and two ticks, each logged")
        self.assertTrue(watch._call.active())
