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
        @param on_tick: called at every tick, before a stall is reported
            (the node refreshes its pulse thread's stamp there: one timer for both).
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

    def _check(self) -> None:
        try:
            late = self._now() - self._due
            if self._on_tick is not None:
                self._on_tick()
            self._due = self._now() + self.tick
            self._call = self._reactor.callLater(self.tick, self._check)
            self.largest = max(self.largest, late)
            if late > self.tick:
                self._on_stall(late)
        except Exception:
            self.log.failure("stall check failed; it keeps running")
