"""
Polling the shared configuration: network shares give no change
notification, so the file is read every C{reload_interval} seconds.

The read runs outside the reactor thread (a hung share must not stall
heartbeats). A change is handed to the node; a bad edit or an unreadable
share keeps the last good configuration running and is logged once until it
changes again.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger

from iwayfailover.config import ConfigError, SharedConfig


class ConfigPoller(Service):
    """
    @param load: reads and checks the configuration at a path, in whatever
        thread C{run} runs it; raises L{ConfigError}.
    @param run: runs a blocking function away from the reactor thread,
        returning a L{Deferred} of its result (e.g. C{deferToThread}).
    @param apply: called in the reactor thread with each new, good
        configuration.
    """

    log = Logger()

    def __init__(self, clock, current: SharedConfig, interval: float,
                 load: Callable[[str], SharedConfig], run, apply: Callable[[SharedConfig], None]):
        self._clock = clock
        self.current = current
        self.interval = interval
        self._load = load
        self._run = run
        self._apply = apply
        self._loop = None
        self._reading = False
        self.last_error = None
        self.reloads = 0
        self.failures = 0

    def startService(self):
        super().startService()
        self._start_loop()

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None

    def set_interval(self, interval: float) -> None:
        self.interval = interval
        if self._loop is not None:
            self._loop.stop()
            self._start_loop()

    def _start_loop(self):
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)

    def poll(self) -> defer.Deferred:
        """Read the file once; apply it if it changed. Never fails."""
        if self._reading:
            self.log.warn("configuration {path}: the previous read has not finished (is the share hung?)", path=self.current.path)
            return defer.succeed(None)
        self._reading = True
        d = self._run(self._load, self.current.path)
        d.addCallbacks(self._loaded, self._refused)
        d.addErrback(lambda f: self.log.failure("applying the configuration failed", f))

        def done(_):
            self._reading = False

        return d.addBoth(done)

    def _loaded(self, config: SharedConfig):
        if not self.running:
            return  # read before the node stopped; nothing to apply it to
        if self.last_error is not None:
            self.log.info("configuration {path} is usable again", path=config.path)
            self.last_error = None
        if config.fingerprint == self.current.fingerprint:
            return
        self.current = config
        self.reloads += 1
        self.log.info("configuration {path} changed; applying it", path=config.path)
        self._apply(config)

    def _refused(self, failure):
        failure.trap(ConfigError)
        message = str(failure.value)
        self.failures += 1
        if message != self.last_error:
            self.log.error("configuration not reloaded, keeping the last good one: {error}", error=message)
        self.last_error = message
