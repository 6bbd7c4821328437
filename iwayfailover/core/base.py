"""
What every decision core shares (L{iwayfailover.core.pair.PairCore} of a
pair, L{iwayfailover.core.group.GroupCore} of a group on etcd): one entry
point, L{CoreBase.handle}, and the effects of timers, log lines and role
changes as records. A core sets C{role}, C{cause}, C{since}, C{epoch},
C{now}, C{_tokens} (an iterator of ints) and C{_timers} (name -> (token,
due)) in its constructor, and handles each observation C{X} in C{_on_X}.
"""

from __future__ import annotations

from iwayfailover.core.events import CancelTimer, Note, StartTimer, Transition


class CoreBase:
    _out: list

    @staticmethod
    def known_plants(plants, known) -> frozenset:
        """C{plants} (rules switched off for the simulator), refused unless each is one of C{known}."""
        unknown = set(plants) - known
        if unknown:
            raise ValueError(f"unknown plants {sorted(unknown)}; known: {sorted(known)}")
        return frozenset(plants)

    def handle(self, observation) -> list:
        """Take one observation; return the effects it calls for, in order."""
        self._out = []
        getattr(self, "_on_" + type(observation).__name__)(observation)
        out, self._out = self._out, []
        return out

    def _emit(self, effect) -> None:
        self._out.append(effect)

    def _note(self, level: str, text: str, fault: bool = False) -> None:
        self._emit(Note(level, text, fault))

    def _arm(self, name: str, delay: float) -> None:
        token = next(self._tokens)
        delay = max(0.0, delay)
        self._timers[name] = (token, self.now() + delay)
        self._emit(StartTimer(name, token, delay))

    def _disarm(self, *names: str) -> None:
        for name in names:
            if self._timers.pop(name, None) is not None:
                self._emit(CancelTimer(name))

    def _set_role(self, role: str, cause: str, kind: str = "") -> None:
        previous = self.role
        self.role, self.cause, self.since = role, cause, self.now()
        self._emit(Transition(previous, role, self.epoch, cause, kind))
