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

    def startService(self):
        super().startService()
        if self.port is None:
            self.rebind(self.description)

    def rebind(self, description: str) -> defer.Deferred:
        """Listen on C{description}, then let go of the old port. Never fails."""
        d = defer.maybeDeferred(self._listen, description)

        def listening(port):
            old, self.port = self.port, port
            previous, self.description = self.description, description
            self.log.info("{label} moved from {previous} to {description}", label=self.label, previous=previous, description=description)
            if old is not None:
                return old.stopListening()

        def failed(failure):
            self.log.error(
                "cannot listen on {label} {description}: {why}; still on {current}",
                label=self.label, description=description, why=failure.getErrorMessage(), current=self.description,
            )

        return d.addCallbacks(listening, failed)

    def stopService(self):
        super().stopService()
        port, self.port = self.port, None
        if port is not None:
            return port.stopListening()
