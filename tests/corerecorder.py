"""
A decision core (a pair's or a group's) with a hand-driven monotonic clock
and every effect it asked for: the rule tests of test_core.py and
test_group_core.py feed it observations and read the effects.
"""

from iwayfailover.core import events as ev


class CoreRecorder:
    """Subclasses set C{self.core}, built with C{now=lambda: self.t}."""

    def __init__(self):
        self.t = 100.0
        self.effects = []
        self.timers = {}

    def feed(self, observation):
        out = self.core.handle(observation)
        self.effects.extend(out)
        for e in out:
            if isinstance(e, ev.StartTimer):
                self.timers[e.name] = (e.token, self.t + e.delay)
            elif isinstance(e, ev.CancelTimer):
                self.timers.pop(e.name, None)
        return out

    def advance(self, seconds):
        """Let time pass, firing the core's timers as they come due (on time)."""
        end = self.t + seconds
        while True:
            due = [(at, name, token) for name, (token, at) in self.timers.items() if at <= end]
            if not due:
                break
            at, name, token = min(due)
            self.t = max(self.t, at)
            del self.timers[name]
            self.feed(ev.Deadline(name, token))
        self.t = end

    def of(self, kind):
        return [e for e in self.effects if isinstance(e, kind)]

    def last(self, kind):
        found = self.of(kind)
        return found[-1] if found else None

    def clear(self):
        self.effects = []
