"""
The threshold watchdog: measures how long the live signal has been silent
and says so once it passes the threshold.

Silence is measured on a monotonic clock, so a step of the wall clock (NTP,
an operator's C{date -s}) can neither cause a takeover nor hold one back
by itself. A coarse L{LoopingCall} tick (half the threshold, at most 0.5 s) keeps the cost low; when the
deadline falls before the next tick, a one-off timer is armed for the
deadline itself, so the report comes within the reactor's timer precision
of the threshold, not up to a whole tick late.
"""

from __future__ import annotations

import time
from typing import Callable

from twisted.internet.task import LoopingCall
from twisted.logger import Logger

MAX_TICK = 0.5
"""The longest pause between two routine checks, in seconds."""


class Watchdog:
    """
    @param clock: an L{IReactorTime} that schedules the checks.
    @param threshold: seconds of silence that count as a dead live node.
    @param on_silence: called once with the silence measured, in seconds,
        when it passes C{threshold}; the watchdog is then stopped.
    @param now: the monotonic clock silence is measured on.
    """

    log = Logger()

    def __init__(self, clock, threshold: float, on_silence: Callable[[float], None], now=time.monotonic):
        self._clock = clock
        self._now = now
        self._on_silence = on_silence
        self.threshold = threshold
        self._last = now()
        self._loop = None
        self._deadline_call = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def tick(self) -> float:
        # Coarse on purpose: the deadline timer, armed once the deadline is
        # less than a tick away, gives the precision.
        return min(self.threshold / 2, MAX_TICK)

    def silence(self) -> float:
        """Seconds since the live signal was last heard (or since L{start})."""
        return self._now() - self._last

    def heard(self) -> None:
        """The live signal was heard just now."""
        self._last = self._now()

    def start(self) -> None:
        """Start measuring; the silence counts from now."""
        self.stop()
        self._last = self._now()
        self._start_loop()

    def resume(self) -> None:
        """Check again, counting the silence from the last heartbeat heard (not from now)."""
        self.stop()
        self._start_loop()

    def stop(self) -> None:
        if self._loop is not None:
            loop, self._loop = self._loop, None
            if loop.running:
                loop.stop()
        self._cancel_deadline()

    def set_threshold(self, threshold: float) -> None:
        """Apply a new threshold at once; silence already measured still counts."""
        self.threshold = threshold
        if self._loop is not None:
            self._loop.stop()
            self._cancel_deadline()
            self._start_loop()

    def _start_loop(self):
        self._loop = LoopingCall(self._check)
        self._loop.clock = self._clock
        self._loop.start(self.tick, now=True)

    def _cancel_deadline(self):
        if self._deadline_call is not None:
            if self._deadline_call.active():
                self._deadline_call.cancel()
            self._deadline_call = None

    def _on_deadline(self):
        self._deadline_call = None
        self._check()

    def _check(self) -> None:
        # An exception here would stop the LoopingCall for good: a dead
        # watchdog is the worst bug a failover tool can have.
        try:
            if self._loop is None:
                return
            silence = self.silence()
            if silence >= self.threshold:
                self.stop()
                self._on_silence(silence)
                return
            remaining = self.threshold - silence
            if remaining < self.tick and self._deadline_call is None:
                self._deadline_call = self._clock.callLater(remaining, self._on_deadline)
        except Exception:
            self.log.failure("watchdog check failed; it keeps running")
