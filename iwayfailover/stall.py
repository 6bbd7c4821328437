"""
Noticing that this process itself did not run: SIGSTOP, a VM pause, swap,
a reactor turn taken by something else. What a stall means for the role is
the decision core's business (L{iwayfailover.core.events.Stalled}); this
module only measures it.
"""

from __future__ import annotations

from twisted.logger import Logger


class StallWatch:
    """
    Notices that this process itself did not run: a timer every C{tick}
    seconds that measures how late it comes. The decision core hears of
    every stall (L{ev.Stalled}) and knows which ones matter.
    """

    log = Logger()

    def __init__(self, reactor, now, tick: float, on_stall, on_tick=None):
        """
        @param on_tick: called at every tick, after a stall is reported
            (the node refreshes its pulse thread's stamp there: one timer for
            both; after, so that a node that must stop serving has done so
            before its pulse thread may pulse again).
        """
        self._reactor = reactor
        self._now = now
        self.tick = tick
        self._on_stall = on_stall
        self._on_tick = on_tick
        self._call = None
        self._due = None
        self.largest = 0.0

    def start(self) -> None:
        self.stop()
        self._due = self._now() + self.tick
        self._call = self._reactor.callLater(self.tick, self._check)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def hurry(self, tick: float) -> None:
        """
        Tick every C{tick} seconds from now on, and next within C{tick} if it
        was due later. A check already overdue (a stall not yet reported) is
        left as it is: moving it would hide the stall.
        """
        self.tick = tick
        now = self._now()
        if self._call is not None and self._call.active() and self._due > now + tick:
            self._call.cancel()
            self._due = now + tick
            self._call = self._reactor.callLater(tick, self._check)

    def _check(self) -> None:
        late = self._now() - self._due
        self._due = self._now() + self.tick
        self._call = self._reactor.callLater(self.tick, self._check)  # first: nothing below can stop the watch
        self.largest = max(self.largest, late)
        if late > self.tick:
            self._safely(self._on_stall, late)
        if self._on_tick is not None:
            self._safely(self._on_tick)

    def _safely(self, call, *args) -> None:
        try:
            call(*args)
        except Exception:
            self.log.failure("stall check failed; it keeps running")
