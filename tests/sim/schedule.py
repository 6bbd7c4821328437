"""
Simulated time, shared by the pair's world (world.py) and the group's
(group.py): an event queue ordered by time (then by when each event was
scheduled), a trace, and the loop that runs it, checking the world's
invariants after every event.
"""

from __future__ import annotations

import heapq
import itertools
import traceback
from typing import Optional


class Violation(Exception):
    pass


class Schedule:
    """A world runs on this: C{at} schedules, C{log} traces, C{run_until} runs. Subclasses define C{check}."""

    def __init__(self):
        self.t = 0.0
        self.queue = []
        self.counter = itertools.count()
        self.trace = []
        self.events = 0
        self.violation: Optional[str] = None

    def at(self, delay: float, fn, *args) -> None:
        heapq.heappush(self.queue, (self.t + max(0.0, delay), next(self.counter), fn, args))

    def log(self, text: str) -> None:
        self.trace.append(f"{self.t:9.4f} {text}")

    def check(self) -> None:
        raise NotImplementedError

    def run_until(self, end: float) -> Optional[str]:
        """Run every event due by C{end}, checking after each; return the first violation, or None."""
        try:
            while self.queue and self.violation is None:
                when, _, fn, args = heapq.heappop(self.queue)
                if when > end:
                    break
                self.t = when
                fn(*args)
                self.events += 1
                self.check()
        except Violation as e:
            self.violation = str(e)
        except Exception as e:  # a crash of the core is a finding too
            self.violation = f"exception: {e!r}\n{traceback.format_exc()}"
        return self.violation
