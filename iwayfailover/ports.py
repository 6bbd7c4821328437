"""
A server port that can move: the heartbeat port and the console follow the
shared configuration without a restart.
"""

from __future__ import annotations

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from iwayfailover import tls


class StartupError(Exception):
    """The node cannot start; the message says what and why, in one line."""


class ServerPort(Service):
    """
    Listens on a server endpoint string with a factory.

    L{bind} listens at once and raises L{StartupError} if it cannot (used at
    start-up, so the error reaches the operator before twistd detaches);
    L{rebind} moves to a new endpoint, keeping the old one if the new one
    cannot be had.
    """

    log = Logger()

    def __init__(self, reactor, description: str, factory, label: str):
        self._reactor = reactor
        self.description = description
        self.factory = factory
        self.label = label
        self.port = None
        self._retiring = {}  # old ports kept after a move -> the call that closes them
        self.watchers = []  # told of each listening port opened and closed: port_opened(port), port_closed(port)

    def _tell(self, event: str, port) -> None:
        for watcher in self.watchers:
            try:
                getattr(watcher, event)(port)
            except Exception:
                self.log.failure("{label}: a watcher failed on {event}", label=self.label, event=event)

    def _listen(self, description):
        return tls.server_endpoint(self._reactor, description).listen(self.factory)

    def bind(self) -> None:
        if self.port is not None:
            return
        outcome = []
        self._listen(self.description).addBoth(outcome.append)
        if not outcome:
            raise StartupError(f"{self.label} {self.description}: the endpoint did not listen at once")
        if isinstance(outcome[0], Failure):
            raise StartupError(f"cannot listen on {self.label} {self.description}: {outcome[0].getErrorMessage()}")
        self.port = outcome[0]
        self.log.info("{label} listening on {description}", label=self.label, description=self.description)
        self._tell("port_opened", self.port)

    def startService(self):
        super().startService()
        if self.port is None:
            self.rebind(self.description)

    def rebind(self, description: str, keep_old: float = 0.0) -> defer.Deferred:
        """
        Listen on C{description}, then let go of the old port: at once, or
        C{keep_old} seconds later (make before break: a peer that has not
        read the new configuration yet still finds this node where it
        was). Never fails.
        """
        d = defer.maybeDeferred(self._listen, description)

        def listening(port):
            old, self.port = self.port, port
            previous, self.description = self.description, description
            self.log.info(
                "{label} moved from {previous} to {description}{kept}", label=self.label, previous=previous,
                description=description, kept=f" (the old one kept for {keep_old:g}s)" if keep_old and old else "",
            )
            self._tell("port_opened", port)
            if old is None:
                return None
            if keep_old > 0:
                retiring = self._reactor.callLater(keep_old, self._retire, old)
                self._retiring[old] = retiring
                return None
            self._tell("port_closed", old)
            return old.stopListening()

        def failed(failure):
            self.log.error(
                "cannot listen on {label} {description}: {why}; still on {current}",
                label=self.label, description=description, why=failure.getErrorMessage(), current=self.description,
            )

        return d.addCallbacks(listening, failed)

    def _retire(self, port):
        self._retiring.pop(port, None)
        self.log.info("{label}: the old port is closed now", label=self.label)
        self._tell("port_closed", port)
        return port.stopListening()

    def stopService(self):
        super().stopService()
        for port, call in list(self._retiring.items()):
            if call.active():
                call.cancel()
            self._retiring.pop(port, None)
            self._tell("port_closed", port)
            port.stopListening()
        port, self.port = self.port, None
        if port is not None:
            self._tell("port_closed", port)
            return port.stopListening()
