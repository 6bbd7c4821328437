"""
Outside commands (C{ip}, C{arping}, notify hooks), run without blocking the
reactor and never for longer than their time limit.

L{run} starts a program with C{reactor.spawnProcess} and fires with a
L{Result} once it has ended: its exit code or the signal that ended it,
what it wrote, and whether its time ran out. A program past its limit gets
SIGTERM, then SIGKILL a moment later. The Deferred never fails: a program
that cannot be started is a Result too, with C{error} set.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from typing import Mapping, Optional, Sequence

from twisted.internet import defer, protocol
from twisted.logger import Logger

SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
"""Searched after PATH for a program named without a slash."""

KILL_GRACE = 1.0
"""Seconds between SIGTERM and SIGKILL for a program past its time limit."""

PIPE_GRACE = 0.5
"""Seconds to wait, once a program has exited, for whatever it left behind to close its output."""

OUTPUT_LIMIT = 64 * 1024
"""Bytes of a program's output kept (and logged); the rest is counted, not kept."""

log = Logger()


@dataclass(frozen=True)
class Result:
    argv: tuple
    code: Optional[int] = None
    """The exit code, or None when a signal ended it (or it never started)."""
    signal: Optional[int] = None
    output: str = ""
    """stdout and stderr together, as text."""
    timed_out: bool = False
    error: Optional[str] = None
    """Why the program could not be started at all."""

    @property
    def ok(self) -> bool:
        return self.code == 0 and not self.timed_out and self.error is None

    def describe(self) -> str:
        """How it ended, in words, for a log line or a status reason."""
        if self.error is not None:
            return f"could not be started: {self.error}"
        if self.timed_out:
            return "ran past its time limit and was killed"
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit status {self.code}"

    @property
    def last_line(self) -> str:
        lines = [line.strip() for line in self.output.splitlines() if line.strip()]
        return lines[-1] if lines else ""


class _Collector(protocol.ProcessProtocol):
    def __init__(self, argv, name, done, stdin: Optional[bytes], reactor, log_output=True):
        self.log_output = log_output
        self.argv = argv
        self.name = name
        self.done = done
        self.stdin = stdin
        self.reactor = reactor
        self.chunks = []
        self.size = 0
        self.timed_out = False
        self.timers = []
        self.reason = None
        self.pid = None
        self.group = False

    def connectionMade(self):
        if self.stdin:
            self.transport.write(self.stdin)
        self.transport.closeStdin()

    def outReceived(self, data):
        if self.size < OUTPUT_LIMIT:
            self.chunks.append(data[: OUTPUT_LIMIT - self.size])
        self.size += len(data)

    errReceived = outReceived

    def processExited(self, reason):
        # A program may leave something behind that holds its output open
        # (a daemon it started): do not wait for that longer than a moment.
        self.reason = reason
        self._cancel_timers()
        if self.timed_out and self.group and self.pid is not None:
            # Past its limit: what it leaves behind (a child that ignored
            # SIGTERM) gets SIGKILL now, not never.
            _signal(self.pid, signal.SIGKILL, True)
        self.timers.append(self.reactor.callLater(PIPE_GRACE, self._finish))

    def processEnded(self, reason):
        self.reason = reason
        self._finish()

    def _cancel_timers(self):
        for timer in self.timers:
            if timer.active():
                timer.cancel()
        self.timers = []

    def _finish(self):
        if self.done.called:
            return
        self._cancel_timers()
        try:
            self.transport.loseConnection()
        except Exception:
            pass
        output = b"".join(self.chunks).decode("utf-8", "replace")
        code = getattr(self.reason.value, "exitCode", None)
        sig = getattr(self.reason.value, "signal", None)
        for line in output.splitlines() if self.log_output else ():
            if line.strip():
                log.info("{name}: {line}", name=self.name, line=line.rstrip())
        self.done.callback(Result(argv=tuple(self.argv), code=code, signal=sig, output=output, timed_out=self.timed_out))


def _signal(pid, number, group):
    """Signal the program, and its whole process group (a shell's children too) when it leads one."""
    try:
        if group:
            os.killpg(pid, number)
        else:
            os.kill(pid, number)
    except OSError:
        pass


def run(reactor, argv: Sequence[str], timeout: float, env: Optional[Mapping[str, str]] = None,
        name: Optional[str] = None, stdin: Optional[bytes] = None, log_output: bool = True,
        backstop: bool = False) -> defer.Deferred:
    """
    Run C{argv} (looked up on C{PATH} when it has no slash), at most
    C{timeout} seconds, in a session of its own (so that a time limit ends
    whatever it started, too).

    @param env: the whole environment of the program; by default this
        process's own.
    @param name: how its output lines are labelled in the log; by default
        the program's name.
    @param log_output: log each line it writes (else only the result has them).
    @param backstop: also run it under coreutils' C{timeout}, set a little
        past C{timeout}, so that it ends even if this process dies first
        (whose own timer would then never fire).
    @return: a Deferred firing with a L{Result}; never failing.
    """
    argv = [str(a) for a in argv]
    if not argv:
        return defer.succeed(Result(argv=(), error="empty command"))
    name = name or os.path.basename(argv[0])
    environment = dict(os.environ if env is None else env)
    program = argv[0]
    if os.sep not in program:
        # ip and arping live in /usr/sbin, which a service's PATH may leave out.
        found = which(program, environment.get("PATH", os.defpath) + os.pathsep + SYSTEM_PATH)
        if found is None:
            return defer.succeed(Result(argv=tuple(argv), error=f"{program}: not found on PATH"))
        program = found
    elif not (os.path.isfile(program) and os.access(program, os.X_OK)):
        return defer.succeed(Result(argv=tuple(argv), error=f"{program}: no such executable file"))
    setsid = which("setsid", environment.get("PATH", os.defpath) + os.pathsep + SYSTEM_PATH)
    command = [program, *argv[1:]]
    limit = which("timeout", environment.get("PATH", os.defpath) + os.pathsep + SYSTEM_PATH) if backstop else None
    if limit is not None:
        command = [limit, "--kill-after=1", f"{timeout + KILL_GRACE + 1:g}", *command]
    spawned = [setsid, *command] if setsid else command
    done = defer.Deferred()
    collector = _Collector(argv, name, done, stdin, reactor, log_output)
    try:
        transport = reactor.spawnProcess(collector, spawned[0], spawned, env=environment)
    except Exception as e:
        return defer.succeed(Result(argv=tuple(argv), error=f"{type(e).__name__}: {e}"))
    pid = transport.pid
    collector.pid, collector.group = pid, setsid is not None

    def expire():
        collector.timed_out = True
        log.warn("{name} ran past its time limit of {timeout:g}s: stopping it", name=name, timeout=timeout)
        _signal(pid, signal.SIGTERM, setsid is not None)
        collector.timers.append(reactor.callLater(KILL_GRACE, _signal, pid, signal.SIGKILL, setsid is not None))

    if not done.called:
        collector.timers.append(reactor.callLater(timeout, expire))
    return done


def which(program: str, path: str) -> Optional[str]:
    """The executable C{program} on C{path}, or None."""
    for folder in path.split(os.pathsep):
        candidate = os.path.join(folder or ".", program)
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None
