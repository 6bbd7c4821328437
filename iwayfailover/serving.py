"""
What a live node serves, in order: the floating IP, then its channels,
then the on_live hook; stopped the other way round. The decision core says
when (L{iwayfailover.core.events.Serve}, C{StopServing}, C{RetryChannels});
this module does it and reports back what came of it.
"""

from __future__ import annotations

from typing import Callable, Optional, Tuple

from twisted.internet import defer
from twisted.logger import Logger

from iwayfailover.channel import FAILED
from iwayfailover.core.events import BACKUP, LIVE
from iwayfailover.floating import FloatingAddress
from iwayfailover.hooks import Hooks
from iwayfailover.listeners import ListenerSet


class Serving:
    """
    The serving layer of one node.

    @param listeners: its channels.
    @param floating: its floating IP (perhaps not configured).
    @param hooks: its notify hooks.
    @param role: the node's role and epoch now, for the on_fault hook.
    """

    log = Logger()

    def __init__(self, reactor, listeners: ListenerSet, floating: FloatingAddress, hooks: Hooks,
                 role: Callable[[], Tuple[str, int]]):
        self._reactor = reactor
        self.listeners = listeners
        self.floating = floating
        self.hooks = hooks
        self._role = role
        self._faults = set()
        self._activation = None  # the going-live under way; None once stopped
        self.started = False  # the channels were started (and not yet stopped)
        self.stopping = defer.succeed(None)
        """All stop work under way (channels, the address, the heartbeat link): what a shutdown waits for."""
        self._stop_generation = 0
        # on_fault for a failure at any time (a channel out of restarts, an address lost), not only on going live.
        self.floating.on_failed = self.listeners.on_failed = self._failed_later

    def serve(self, epoch: int, cause: str) -> defer.Deferred:
        """
        Go live: the floating IP, then the channels, then on_live. Fires with
        the names of the channels that FAILED and a retry may bring up, or
        None if a stop came first.
        """
        self.started = True
        self._faults = set()  # a failure met again on this going live is reported again
        token = self._activation = object()

        def channels(_):
            if self._activation is token:
                return self.listeners.start()

        def served(_):
            if self._activation is not token:
                return None
            self.hooks.fire("on_live", LIVE, epoch, cause)
            self.check_faults()
            return self.failed_channels()

        d = self.floating.up().addCallback(channels).addCallback(served)
        return d.addErrback(lambda f: self.log.failure("going live: starting the listeners failed", f))

    def retry(self) -> defer.Deferred:
        """Start the FAILED channels again; fires with those still FAILED."""
        return self.listeners.retry_failed().addCallback(lambda _: self.failed_channels())

    def failed_channels(self) -> tuple:
        """The FAILED channels that a retry may bring up (a process channel keeps to its own restart_tries)."""
        return tuple(sorted(n for n, item in self.listeners.listeners.items()
                            if item.state == FAILED and item.retried_when_failed))

    def stop(self, final: str, within: Optional[float]) -> defer.Deferred:
        """
        Stop serving, leaving the channels C{final} (WAITING or STOPPED).
        With C{within} (a yield or a fence), the address goes at once beside
        the channels' stops and a process channel that has not exited in
        C{within} seconds gets SIGKILL; without, each channel has its own stop
        time and the address goes after them. Fires, once every stop under
        way is done, with what could not be let go of (the floating IP, if
        its removal FAILED), or with None if a newer stop came meanwhile.
        """
        self._activation = None
        if not self.started and not self.stopping.called:
            # Still stopping from before (a shutdown, or a fence, during a
            # switchover): done when that is done, with the address let go; a
            # bound given now shortens the stops under way.
            if within is not None:
                d = defer.gatherResults(
                    [self.listeners.stop(final, kill_after=within), self.floating.down(final)], consumeErrors=True)
            else:
                d = self.floating.down(final)
        elif not self.started:
            # Nothing was started: hold the channels WAITING, and let go of a
            # floating IP left behind by a crash of this node.
            self.listeners.hold()
            d = self.floating.down(final)
        elif within is not None:
            d = defer.gatherResults(
                [self.listeners.stop(final, kill_after=within), self.floating.down(final)], consumeErrors=True)
        else:
            d = self.listeners.stop(final).addCallback(lambda _: self.floating.down(final))
        self.started = False
        d.addErrback(lambda f: self.log.failure("stopping the listeners or letting go of the floating IP failed", f))
        self.track(d)
        generation = self._stop_generation = self._stop_generation + 1
        done = defer.Deferred()
        self.stopping.addBoth(lambda result: (
            done.callback(self._address_left() if generation == self._stop_generation else None), result)[1])
        return done

    def _address_left(self) -> tuple:
        """The floating IP, if stopping could not remove it (FAILED): the backup could not take it."""
        if self.floating.configured and self.floating.state == FAILED:
            self.check_faults()
            return (self.floating.name,)
        return ()

    def track(self, d: defer.Deferred) -> None:
        """Remember stop work under way, so that a shutdown waits for all of it."""
        if self.stopping.called:
            self.stopping = d
        else:
            self.stopping = defer.gatherResults([self.stopping, d], consumeErrors=True)

    def after_stops(self, then: Callable[[], None]) -> None:
        """Call C{then} once every stop under way is done (at once if none is)."""
        self.stopping.addBoth(lambda result: (then(), result)[1])

    def on_backup(self, epoch: int, cause: str) -> None:
        """The node is a backup: on_backup, once the channels and the floating IP have let go."""
        self.after_stops(lambda: self.hooks.fire("on_backup", BACKUP, epoch, cause))

    def fault(self, text: str) -> None:
        role, epoch = self._role()
        self.hooks.fire("on_fault", role, epoch, text)

    def _failed_later(self) -> None:
        # On the next turn of the reactor: a failure met inside a state change
        # is reported once that change has settled.
        self._reactor.callLater(0, self.check_faults)

    def check_faults(self) -> None:
        """Run on_fault for each listener (or the floating IP) newly FAILED."""
        items = dict(self.listeners.listeners)
        if self.floating.configured:
            items[self.floating.name] = self.floating
        failed = {(n, item.reason) for n, item in items.items() if item.state == FAILED}
        for name, reason in sorted(failed - self._faults):
            self.fault(f"{name} FAILED: {reason}")
        self._faults = failed
