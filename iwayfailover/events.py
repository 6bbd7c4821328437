"""
The node's recent events, for the console's Log page: a bounded ring buffer
fed by a twisted.logger observer while the node runs.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass

from twisted.application.service import Service
from twisted.logger import LogLevel, formatEvent, globalLogPublisher

HISTORY = 200

TWISTED_CHATTER = frozenset({
    "Starting factory {factory!r}",
    "Stopping factory {factory!r}",
    "Scheduling retry {attempt} to connect {endpoint} in {delay} seconds.",
})
"""
The formats of Twisted's own info lines about its machinery. Twisted logs
them on a logger named after the object's class (C{_loggerFor}), so a
factory or a ClientService of this project, or of a channel built on one,
would put them under an C{iwayfailover} namespace: they are kept out of the
Log page by their format (the twistd log file still has them).
"""


@dataclass(frozen=True)
class Event:
    at: float
    level: str
    source: str
    text: str


class RecentEvents:
    """
    A twisted.logger observer keeping the last C{size} events: those of this
    project at info level and above (not Twisted's chatter, L{TWISTED_CHATTER}),
    and warnings and errors from anywhere.
    """

    def __init__(self, size: int = HISTORY):
        self.events = collections.deque(maxlen=size)

    def __call__(self, event):
        try:
            level = event.get("log_level")
            namespace = str(event.get("log_namespace") or "")
            if level is None or level < LogLevel.info:
                return
            if level < LogLevel.warn and (not namespace.startswith("iwayfailover")
                                          or event.get("log_format") in TWISTED_CHATTER):
                return
            text = formatEvent(event)
            failure = event.get("log_failure")
            if failure is not None:
                text = f"{text}: {failure.getErrorMessage()}"
            source = namespace.rsplit(".", 1)[-1] if namespace else "?"
            self.events.append(Event(event.get("log_time") or 0.0, level.name, source, text))
        except Exception:
            pass  # an observer must never raise into the logging system

    def recent(self, limit: int = HISTORY):
        """The newest events first."""
        return list(reversed(self.events))[:limit]


class EventLogService(Service):
    """Hangs a L{RecentEvents} on a log publisher while it runs."""

    def __init__(self, events: RecentEvents, publisher=globalLogPublisher):
        self.events = events
        self._publisher = publisher

    def startService(self):
        super().startService()
        self._publisher.addObserver(self.events)

    def stopService(self):
        self._publisher.removeObserver(self.events)
        return super().stopService()
