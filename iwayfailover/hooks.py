"""
Notify hooks: commands a node runs when its role changes, as keepalived's
notify scripts.

  - C{on_live}: the node went live (its floating IP and listeners are up).
  - C{on_backup}: the node is a backup (started as one, yielded, handed over;
    its listeners and floating IP are down).
  - C{on_fault}: something failed: a listener or the floating IP is FAILED,
    or the node could not keep its epoch.

Each is a command line split like a shell would (no shell runs it), set in
[failover] or in the server's section (the server's wins). It runs with the
node's environment plus C{IWAY_SERVER}, C{IWAY_ROLE}, C{IWAY_EPOCH},
C{IWAY_CAUSE} and C{IWAY_EVENT}, at most C{hook_timeout} seconds, one hook
at a time in the order of the events, never blocking the reactor; its exit
status is logged.
"""

from __future__ import annotations

import os
from typing import Callable

from twisted.internet import defer
from twisted.logger import Logger

from iwayfailover import commands
from iwayfailover.config import HOOK_KEYS, ClientSettings

log = Logger()


class Hooks:
    """
    @param settings: a callable returning this node's L{ClientSettings} now
        (a reload may change them).
    """

    def __init__(self, reactor, server: str, settings: Callable[[], ClientSettings], run=commands.run, environ=os.environ):
        self._reactor = reactor
        self._server = server
        self._settings = settings
        self._run = run
        self._environ = environ
        self._queue: defer.Deferred = defer.succeed(None)
        self.results = []
        """(event, L{commands.Result}) of the hooks run lately, newest last."""

    def environment(self, event: str, role: str, epoch: int, cause: str) -> dict:
        env = dict(self._environ)
        env.update(
            IWAY_SERVER=self._server, IWAY_ROLE=role, IWAY_EPOCH=str(epoch), IWAY_CAUSE=cause, IWAY_EVENT=event,
        )
        return env

    def fire(self, event: str, role: str, epoch: int, cause: str) -> defer.Deferred:
        """
        Run the hook for C{event} (one of L{HOOK_KEYS}) if one is set, after
        any hook still running. Fires when it has ended; never fails.
        """
        if event not in HOOK_KEYS:
            raise ValueError(f"no such hook: {event}")
        settings = self._settings()
        argv = settings.hook(event)
        if argv is None:
            return defer.succeed(None)
        env = self.environment(event, role, epoch, cause)
        timeout = settings.timeout
        done = defer.Deferred()

        def start(_):
            log.info("running {event} hook: {command}", event=event, command=" ".join(argv))
            d = self._run(self._reactor, list(argv), timeout, env=env, name=f"{event} hook", backstop=True)
            d.addCallback(ended)
            d.addErrback(lambda f: log.failure("{event} hook: unexpected error", f, event=event))
            return d

        def ended(result):
            self.results = (self.results + [(event, result)])[-20:]
            if result.ok:
                log.info("{event} hook ended: {how}", event=event, how=result.describe())
            elif result.timed_out:
                log.error("{event} hook {how} ({timeout:g}s, hook_timeout)", event=event, how=result.describe(), timeout=timeout)
            else:
                log.error("{event} hook failed: {how}", event=event, how=result.describe())

        self._queue.addCallback(start)
        self._queue.addBoth(lambda result: (done.callback(None), None)[1])
        return done

    def drain(self) -> defer.Deferred:
        """Fires once every hook fired so far has ended (each within its time limit)."""
        done = defer.Deferred()
        self._queue.addBoth(lambda result: (done.callback(None), None)[1])
        return done
