"""
Polling the shared configuration: network shares give no change
notification, so the file is read every C{reload_interval} seconds.

A configuration is applied only when it was read whole and stable: a read
that differs from the running configuration is made again after a short
settle delay, and applied only if both reads give the same text (and keys)
and the file's size, modification time and inode did not move meanwhile.
A file still being written (a copy over a share writes in place: it is
first cut to nothing, then filled) is reported as changing and tried again
at the next poll; it is never applied half-written, however well its first
half parses.

The reads run outside the reactor thread, on a daemon thread of their own
(L{ReaderThread}): a hung share must neither stall heartbeats nor keep the
process from stopping. A thread blocked on a hung read cannot be killed, so
no other read starts while one is under way; one that has not finished
after L{hung_after} seconds is reported once, in C{last_error} and in the
log, and the node goes on with the configuration it runs. A bad edit keeps
the last good configuration running and is logged once until it changes
again.

Each configuration applied is handed to C{keep} (the node's local copy,
L{iwayfailover.config.lastgood}). A node started from that copy, its share
unreadable, goes back to the share at the first read of it that passes the
same rules: applied as any reload if it differs from the copy, nothing
restarted if it is the same.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from iwayfailover.config import ConfigError, SharedConfig

SETTLE_AT_MOST = 0.5
"""The longest wait, in seconds, between the two reads of a changed file."""

HUNG_AT_LEAST = 2.0
"""A read is reported as hung after one reload interval, and never sooner than this."""


def settle_delay(interval: float) -> float:
    """How long a changed file must stay the same before it is applied: min(0.5 s, interval / 2)."""
    return min(SETTLE_AT_MOST, interval / 2)


def hung_after(interval: float) -> float:
    """After how long a read that has not finished is reported: one interval, at least 2 s."""
    return max(interval, HUNG_AT_LEAST)


def file_stamp(path: str) -> Optional[tuple]:
    """
    What moves when a file is written or replaced: its size, modification
    time (in ns) and inode; C{None} when it cannot be looked at (the read
    that follows says why).
    """
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_size, st.st_mtime_ns, st.st_ino)


@dataclass(frozen=True)
class Reading:
    """
    One read of the shared file, made away from the reactor thread.

    @ivar config: the configuration read, or C{None} if it was refused.
    @ivar error: why it was refused (a L{ConfigError}'s message), or C{None}.
    @ivar before: L{file_stamp} just before the read.
    @ivar after: L{file_stamp} just after it.
    """

    config: Optional[SharedConfig]
    error: Optional[str]
    before: Optional[tuple]
    after: Optional[tuple]

    @property
    def whole(self) -> bool:
        """Did the file stay put while it was read?"""
        return self.before == self.after

    @property
    def outcome(self) -> tuple:
        """What two reads must agree on: the text and keys read, or the error."""
        if self.config is not None:
            return ("config", self.config.fingerprint)
        return ("error", self.error)

    @property
    def size(self) -> Optional[int]:
        return None if self.after is None else self.after[0]


def same_version(first: Reading, second: Reading) -> bool:
    """Two whole reads, the same outcome, and nothing moved between them."""
    return first.whole and second.whole and first.after == second.before and first.outcome == second.outcome


def describe_change(old: SharedConfig, new: SharedConfig, old_size: Optional[int], new_size: Optional[int]) -> str:
    """
    What a new configuration changes in the file, for the log: its size and
    the sections it lost or gained. A file much smaller than before, or one
    that lost its listeners, may be an operator's edit; it is applied, but
    the log says what went.
    """
    parts = []
    if old_size is not None and new_size is not None and old_size != new_size:
        parts.append(f"{old_size} -> {new_size} bytes")
    elif new_size is not None:
        parts.append(f"{new_size} bytes")

    def sections(config):
        return {f"[server:{n}]" for n in config.servers} | {f"[listener:{n}]" for n in config.listeners}

    before, after = sections(old), sections(new)
    if before - after:
        parts.append("sections removed: " + ", ".join(sorted(before - after)))
    if after - before:
        parts.append("sections added: " + ", ".join(sorted(after - before)))
    if before == after:
        parts.append("the same sections")
    return "; ".join(parts)


class ReaderThread:
    """
    A C{run} for L{ConfigPoller}: each call runs a blocking function on a new
    daemon thread and returns a L{Deferred} of its result, fired in the
    reactor thread.

    Not the reactor's thread pool: a read hung on a share would hold one of
    its threads for good, and stopping the reactor joins them, so the node
    could never stop. A daemon thread is left behind at exit. The poller
    never starts a read while another is under way, so at most one such
    thread is blocked at a time.
    """

    def __init__(self, reactor, name: str = "iwayfailover-config-read"):
        self._reactor = reactor
        self._name = name

    def __call__(self, f, *args) -> defer.Deferred:
        d = defer.Deferred()

        def work():
            try:
                result = f(*args)
            except BaseException:
                self._reactor.callFromThread(d.errback, Failure())
            else:
                self._reactor.callFromThread(d.callback, result)

        threading.Thread(target=work, name=self._name, daemon=True).start()
        return d


class ConfigPoller(Service):
    """
    @param load: reads and checks the configuration at a path, in whatever
        thread C{run} runs it; raises L{ConfigError}.
    @param run: runs a blocking function away from the reactor thread,
        returning a L{Deferred} of its result (e.g. a L{ReaderThread}).
    @param apply: called in the reactor thread with each new, good
        configuration.
    @param settle: seconds between the two reads of a changed file; by
        default L{settle_delay} of the interval.
    @param hung: seconds after which a read that has not finished is
        reported; by default L{hung_after} of the interval.
    @param stamp: what L{file_stamp} gives, for tests.
    @param keep: called in the reactor thread with each configuration
        applied (the local copy's L{iwayfailover.config.lastgood.LastGood.keep}).
    @param local_copy: the local copy C{current} was read from, when the
        node started from it because the share could not be read (why:
        C{share_error}); None when it started from the share.

    @ivar last_error: why the file is not applied (a refused edit, or a read
        that has not finished), or C{None}; shown in C{/api/status}.
    @ivar local_copy: the local copy the running configuration came from,
        until the share is read again; None when it came from the share.
    """

    log = Logger()

    def __init__(self, clock, current: SharedConfig, interval: float,
                 load: Callable[[str], SharedConfig], run, apply: Callable[[SharedConfig], None],
                 settle: Optional[float] = None, hung: Optional[float] = None,
                 stamp: Callable[[str], Optional[tuple]] = file_stamp,
                 keep: Optional[Callable[[SharedConfig], object]] = None,
                 local_copy=None, share_error: Optional[str] = None):
        self._clock = clock
        self.current = current
        self._load = load
        self._run = run
        self._apply = apply
        self._stamp = stamp
        self._settle_given, self._hung_given = settle, hung
        self._set_interval(interval)
        self._loop = None
        self._reading = False  # a read, or the settle wait between two, is under way
        self._hung_reported = False
        self._changing = False  # reported as changing; said once until it settles
        self._waiting = None  # (the DelayedCall, its Deferred) of the settle wait
        self._watch = None  # the DelayedCall that reports a read as hung
        self._size = None  # of the file the running configuration was read from, once known
        self._keep_copy = keep
        self.local_copy = local_copy
        self.last_error = share_error if local_copy is not None else None
        self.reloads = 0
        self.failures = 0

    def _set_interval(self, interval: float) -> None:
        self.interval = interval
        self.settle = settle_delay(interval) if self._settle_given is None else self._settle_given
        self.hung_after = hung_after(interval) if self._hung_given is None else self._hung_given

    def startService(self):
        super().startService()
        self._start_loop()

    def stopService(self):
        super().stopService()
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        self._loop = None
        if self._watch is not None and self._watch.active():
            self._watch.cancel()  # a stopped node reports no hung read
        if self._waiting is not None:
            call, d = self._waiting
            self._waiting = None
            call.cancel()
            d.callback(None)  # the cycle sees the poller stopped and ends

    def set_interval(self, interval: float) -> None:
        self._set_interval(interval)
        if self._loop is not None:
            self._loop.stop()
            self._start_loop()

    def _start_loop(self):
        self._loop = LoopingCall(self.poll)
        self._loop.clock = self._clock
        self._loop.start(self.interval, now=False)

    def poll(self) -> defer.Deferred:
        """
        Read the file; if it changed, read it again after the settle delay
        and apply it if both reads agree. Never fails. While a read (or the
        wait between two) is under way this does nothing: that read reports
        itself, and a hung one is reported once by its own timer.
        """
        if self._reading:
            return defer.succeed(None)
        self._reading = True
        path = self.current.path
        d = self._cycle(path)
        d.addErrback(lambda f: self.log.failure("reading the configuration {path} failed", f, path=path))

        def done(_):
            self._reading = False

        return d.addBoth(done)

    @defer.inlineCallbacks
    def _cycle(self, path):
        first = yield self._timed_read(path)
        if not self.running:
            return  # read before the node stopped; nothing to apply it to
        if self._unchanged(first):
            self._keep(first)
            return
        yield self._wait(self.settle)
        if not self.running:
            return
        second = yield self._timed_read(path)
        if not self.running:
            return
        if same_version(first, second):
            self._take(second)
        else:
            self._still_changing(path, first, second)

    def _read(self, path: str) -> Reading:
        """One read, in the reader's thread: stamps around the load."""
        before = self._stamp(path)
        try:
            config, error = self._load(path), None
        except ConfigError as e:
            config, error = None, str(e)
        return Reading(config, error, before, self._stamp(path))

    def _timed_read(self, path) -> defer.Deferred:
        started = self._clock.seconds()
        self._watch = watch = self._clock.callLater(self.hung_after, self._report_hung, path)
        d = defer.maybeDeferred(self._run, self._read, path)

        def finished(result):
            if watch.active():
                watch.cancel()
            if self._hung_reported:
                self._hung_reported = False
                self.log.info(
                    "reading the configuration {path} finished after {seconds:.1f} s",
                    path=path, seconds=self._clock.seconds() - started,
                )
            return result

        return d.addBoth(finished)

    def _report_hung(self, path):
        message = (
            f"reading {path} has not finished after {self.hung_after:g} s (is the share hung?);"
            " keeping the running configuration, no other read until this one ends"
        )
        self._hung_reported = True
        self.failures += 1
        self.last_error = message
        self.log.error("configuration not reloaded: {error}", error=message)

    def _wait(self, seconds) -> defer.Deferred:
        d = defer.Deferred()

        def due():
            self._waiting = None
            d.callback(None)

        self._waiting = (self._clock.callLater(seconds, due), d)
        return d

    def _unchanged(self, reading: Reading) -> bool:
        """Is this what runs already (or the error already reported)? Then it needs no second read."""
        if reading.config is not None:
            return reading.config.fingerprint == self.current.fingerprint
        return reading.error == self.last_error

    def _keep(self, reading: Reading):
        if reading.config is None:
            self.failures += 1  # the same refused edit, logged already
            return
        self._settled()
        if reading.whole and reading.size is not None:
            self._size = reading.size
        self._usable(reading.config, applied=False)

    def _usable(self, config: SharedConfig, applied: bool):
        """The share gave a good configuration: the error it gave before, or the local copy, is over."""
        if self.local_copy is not None:
            copy, self.local_copy = self.local_copy, None
            self.last_error = None
            self.log.info(
                "configuration {path} can be read again: back on the shared file, off the local copy {copy}; {what}",
                path=config.path, copy=copy.path,
                what="its changes are applied" if applied else "it is the same as the copy, nothing restarts",
            )
        elif self.last_error is not None:
            self.log.info("configuration {path} is usable again", path=config.path)
            self.last_error = None

    def _settled(self):
        self._changing = False

    def _take(self, reading: Reading):
        """Both reads agree: refuse the error, or apply the new configuration."""
        self._settled()
        if reading.config is None:
            self.failures += 1
            if reading.error != self.last_error:
                self.log.error("configuration not reloaded, keeping the last good one: {error}", error=reading.error)
            self.last_error = reading.error
            return
        config = reading.config
        if config.fingerprint == self.current.fingerprint:
            self._usable(config, applied=False)
            return
        self._usable(config, applied=True)
        old, old_size = self.current, self._size
        self.current, self._size = config, reading.size
        self.reloads += 1
        self.log.info(
            "configuration {path} changed ({what}); applying it",
            path=config.path, what=describe_change(old, config, old_size, reading.size),
        )
        try:
            self._apply(config)
        except Exception:
            self.log.failure("applying the configuration {path} failed", path=config.path)
            return
        if self._keep_copy is not None:
            try:
                self._keep_copy(config)
            except Exception:
                self.log.failure("keeping the local copy of {path} failed", path=config.path)

    def _still_changing(self, path, first: Reading, second: Reading):
        """Two reads disagree: the file is being written. Nothing is applied; the next poll tries again."""
        if self._changing:
            return
        self._changing = True
        sizes = f"{first.size} then {second.size} bytes" if first.size != second.size else "the same size"
        self.log.warn(
            "configuration {path} is changing; waiting for it to settle (two reads {settle:g} s apart differed:"
            " {sizes}); it is read again at the next poll and nothing of it is applied until then",
            path=path, settle=self.settle, sizes=sizes,
        )
