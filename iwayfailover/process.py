"""
Process channels: an external program that runs while its node is live.

A C{[listener:NAME]} with C{command = ...} instead of C{plugin = ...} is a
L{ProcessChannel}. Takeover spawns the program; each line it writes to its
standard output or error goes to the node's log under the listener's name.
If it dies while the node is live it is started again after a pause that
doubles each time (C{restart_backoff}, at most L{MAX_BACKOFF}); after
C{restart_tries} restarts that each died within L{HEALTHY_AFTER} seconds the
channel is FAILED with the last reason. When the node yields (or stops) the
program's whole process group gets SIGTERM, and SIGKILL once
C{stop_timeout} seconds have passed; when the node yields or fences itself,
SIGKILL comes sooner if the time left before its peer may take over is
shorter (see L{iwayfailover.node.FailoverNode.deactivate_listeners}).

The program runs in a session (and process group) of its own, so that a stop
reaches every process it started. A small launcher leads that session and,
on Linux, gets the kernel's word when the node dies (C{PR_SET_PDEATHSIG}),
on which it kills the whole session: a node killed with C{kill -9} leaves
neither the program nor any process it started to serve beside the new live
node.
"""

from __future__ import annotations

import errno
import os
import signal
import sys
import time
from typing import Callable, Optional

from twisted.internet import defer
from twisted.internet.protocol import ProcessProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from iwayfailover.config import ListenerSettings
from iwayfailover.channel import ACTIVE, FAILED, STARTING, STOPPING, WAITING, set_state

# A run that lasted this long was a good start: the next death counts from 1.
HEALTHY_AFTER = 10.0
# The pause before a restart doubles up to this many seconds.
MAX_BACKOFF = 60.0
# Longer lines of the program's output are logged in pieces of this size.
MAX_LINE = 4096

log = Logger()

# Run first in the child, and stays as the leader of the program's session:
# a new session; on Linux, a signal from the kernel when the node dies
# (PR_SET_PDEATHSIG), on which it kills the whole session, so that neither
# the program nor anything it started outlives a node killed with kill -9.
# A stop's SIGTERM is the program's to answer (the launcher ignores it); the
# launcher ends as the program ends, with its status or its signal.
# argv: node's pid, program, its arguments.
_LAUNCHER = """\
import os, signal, sys
os.setsid()
def node_died(number, frame):
    os.killpg(0, signal.SIGKILL)
signal.signal(signal.SIGUSR1, node_died)
for number in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
    signal.signal(number, signal.SIG_IGN)
if sys.platform.startswith("linux"):
    try:
        import ctypes
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGUSR1), 0, 0, 0)  # PR_SET_PDEATHSIG
    except Exception:
        pass
if os.getppid() != int(sys.argv[1]):
    os.killpg(0, signal.SIGKILL)  # the node died before the promise was in place
child = os.fork()
if child == 0:
    for number in (signal.SIGUSR1, signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    except OSError as e:
        sys.stderr.write("cannot run %s: %s\\n" % (sys.argv[2], e.strerror or e))
        os._exit(127)
while True:
    try:
        _, status = os.waitpid(child, 0)
        break
    except ChildProcessError:
        os._exit(1)
if os.WIFSIGNALED(status):
    number = os.WTERMSIG(status)
    try:
        signal.signal(number, signal.SIG_DFL)
    except (OSError, ValueError):
        pass
    os.kill(os.getpid(), number)
os._exit(os.WEXITSTATUS(status) if os.WIFEXITED(status) else 1)
"""


def launcher_argv(command) -> list:
    """The argv that runs C{command} in a session of its own, killed with the node."""
    return [sys.executable, "-I", "-S", "-c", _LAUNCHER, str(os.getpid()), *command]


def describe_exit(reason: Failure) -> str:
    """C{exited with status 3}, C{killed by signal 9 (SIGKILL)}, from a processEnded reason."""
    value = reason.value
    number = getattr(value, "signal", None)
    if number:
        try:
            name = signal.Signals(number).name
        except ValueError:
            name = "?"
        return f"killed by signal {number} ({name})"
    code = getattr(value, "exitCode", None)
    return f"exited with status {code if code is not None else '?'}"


def signal_group(pid: int, number: int, leader: bool = True) -> bool:
    """
    Send signal C{number} to the process group led by C{pid}. While the
    leader itself is there (C{leader}) and has no group of its own yet (the
    moment between spawn and C{setsid}), to C{pid} alone; once it is gone its
    pid may belong to someone else, so only the group is signalled. False if
    nothing was there.
    """
    try:
        os.killpg(pid, number)
        return True
    except OSError:
        pass
    if not leader:
        return False
    try:
        os.kill(pid, number)
        return True
    except OSError:
        return False


def group_alive(pid: int) -> bool:
    """
    Is any process of the group C{pid} still running? Zombies do not count:
    a leftover reparented to an init that is slow to reap (as in many
    containers) has ended all the same.
    """
    try:
        os.killpg(pid, 0)
    except OSError as e:
        if e.errno != errno.EPERM:
            return False
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True  # no /proc: the group is there, zombies or not
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rfind(b")") + 2:].split()
        if len(fields) > 2 and fields[2] == str(pid).encode() and fields[0] not in (b"Z", b"X"):
            return True
    return False


class _Output(ProcessProtocol):
    """Carries one run's output into the log, line by line, and its end to the channel."""

    def __init__(self, channel: "ProcessChannel", run: int):
        self.channel = channel
        self.run = run
        self._pending = {1: b"", 2: b""}

    def connectionMade(self):
        self.transport.closeStdin()

    def childDataReceived(self, fd, data):
        try:
            self._received(fd, data)
        except Exception:
            log.failure("listener {listener}: error while logging its output", listener=self.channel.name)

    def _received(self, fd, data):
        if fd not in self._pending:
            return
        buffered = self._pending[fd] + data
        *lines, rest = buffered.split(b"\n")
        while len(rest) > MAX_LINE:
            lines.append(rest[:MAX_LINE])
            rest = rest[MAX_LINE:]
        self._pending[fd] = rest
        for line in lines:
            for start in range(0, max(len(line), 1), MAX_LINE):
                self._emit(fd, line[start:start + MAX_LINE])

    def _emit(self, fd, raw):
        text = raw.rstrip(b"\r").decode("utf-8", errors="replace")
        self.channel.output(text, "stdout" if fd == 1 else "stderr")

    def processEnded(self, reason):
        try:
            for fd, rest in self._pending.items():
                if rest:
                    self._emit(fd, rest)
            self._pending = {1: b"", 2: b""}
        finally:
            try:
                self.channel.ended(self.run, reason)
            except Exception:
                log.failure("listener {listener}: error after its program ended", listener=self.channel.name)


class ProcessChannel:
    """
    One C{command} listener: the same face as L{iwayfailover.listeners.Listener}
    (C{state}, C{since}, C{reason}, C{hold}, C{prepare}, C{start}, C{stop},
    C{status}), so that the node treats both kinds alike.
    """

    on_failed = None
    """Called (with no argument) each time the channel becomes FAILED."""

    retried_when_failed = False
    """Its own restarts (C{restart_tries}, C{restart_backoff}) decide when it
    is FAILED for good: its L{iwayfailover.listeners.ListenerSet} does not
    try it again by itself."""

    retrying = False
    """Never set: see L{iwayfailover.listeners.Listener.retrying}."""

    def __init__(self, spec: ListenerSettings, reactor, wall: Callable[[], float] = time.time,
                 signal_group: Optional[Callable[..., bool]] = None,
                 group_alive: Optional[Callable[[int], bool]] = None):
        self.spec = spec
        self._reactor = reactor
        self._wall = wall
        # None: this module's own, looked up at each use.
        self._signal_group = signal_group
        self._group_alive_check = group_alive
        self.log = Logger(namespace=f"iwayfailover.channel.{spec.name}")
        self.state = WAITING
        self.since = wall()
        self.reason: Optional[str] = None
        self.pid: Optional[int] = None
        self.restarts = 0  # restarts since the last good run
        self._live = False  # the node wants the program running
        self._transport = None
        self._run = 0
        self._started_at = 0.0
        self._restart_call = None
        self._kill_call = None
        self._term_at = 0.0  # when the stop in flight sent SIGTERM
        self._kill_timeout = spec.stop_timeout  # and how long after it SIGKILL comes
        self._stopping: Optional[defer.Deferred] = None
        self._final = WAITING

    @property
    def name(self) -> str:
        return self.spec.name

    def _set(self, state, reason=None):
        set_state(self, state, reason, log)

    def _signal(self, pid, number, leader=True):
        return (self._signal_group or signal_group)(pid, number, leader=leader)

    def _group_alive(self, pid):
        return (self._group_alive_check or group_alive)(pid)

    # -- the Listener face --

    def prepare(self) -> None:
        """Nothing to build ahead: a program is spawned when the node goes live."""

    def hold(self) -> None:
        """Be WAITING, as a backup's listeners are."""
        self._live = False
        if self._transport is None and self._stopping is None:
            self._cancel_restart()
            if self.state != WAITING:
                self._set(WAITING)

    def start(self) -> defer.Deferred:
        """
        Spawn the program: ACTIVE once it runs, FAILED if it cannot be
        spawned. Fires then; never fails.
        """
        if self._stopping is not None:
            return self._after_stop().addCallback(lambda _: self.start())
        self._live = True
        if self._transport is not None or self._restart_call is not None:
            return defer.succeed(None)
        self.restarts = 0
        self._spawn()
        return defer.succeed(None)

    def _spawn(self):
        if self.state != STARTING:
            self._set(STARTING)
        self._run += 1
        env = dict(os.environ)
        env.update(dict(self.spec.env))
        try:
            self._transport = self._reactor.spawnProcess(
                _Output(self, self._run), sys.executable, launcher_argv(self.spec.command),
                env=env, path=self.spec.cwd, usePTY=False, childFDs={0: "w", 1: "r", 2: "r"},
            )
        except Exception as e:
            self._transport = None
            self._live = False
            self._set(FAILED, f"could not start {self.spec.command[0]}: {type(e).__name__}: {e}")
            return
        self.pid = self._transport.pid
        self._started_at = self._reactor.seconds()
        self.log.info("started {command} (pid {pid})", command=self.spec.command_line, pid=self.pid, listener=self.name)
        self._set(ACTIVE)

    def output(self, line: str, stream: str) -> None:
        """A line the program wrote: into the log under the listener's name."""
        self.log.info("{line}", line=line, stream=stream, listener=self.name, pid=self.pid)

    def ended(self, run: int, reason: Failure) -> None:
        """The program of run C{run} is gone."""
        if run != self._run:
            return
        why = describe_exit(reason)
        pid, self.pid, self._transport = self.pid, None, None
        if self._stopping is not None:
            self.log.info("stopped (pid {pid}): {why}", pid=pid, why=why, listener=self.name)
            if pid is not None and self._kill_call is not None and self._group_alive(pid):
                return  # processes it started outlived it: SIGKILL for them at the deadline
            if pid is not None:
                self._signal(pid, signal.SIGKILL, leader=False)
            self._stopped()
            return
        # Whatever it started dies with it, so that restarts pile nothing up.
        if pid is not None:
            self._signal(pid, signal.SIGKILL, leader=False)
        ran = self._reactor.seconds() - self._started_at
        if ran >= HEALTHY_AFTER:
            self.restarts = 0
        if not self._live:
            return
        if self.restarts >= self.spec.restart_tries:
            tries = f"after {self.restarts} restarts" if self.restarts else f"(restart_tries = {self.spec.restart_tries})"
            self._live = False
            self._set(FAILED, f"{why} {tries}")
            return
        delay = min(self.spec.restart_backoff * 2 ** self.restarts, MAX_BACKOFF)
        self.restarts += 1
        self.log.warn(
            "{why} (pid {pid}) while live; restart {n} of {tries} in {delay:g}s",
            why=why, pid=pid, n=self.restarts, tries=self.spec.restart_tries, delay=delay, listener=self.name,
        )
        self._set(STARTING, f"{why}; restart {self.restarts} of {self.spec.restart_tries} in {delay:g}s")
        self._restart_call = self._reactor.callLater(delay, self._restart)

    def _restart(self):
        self._restart_call = None
        if self._live and self._transport is None and self._stopping is None:
            self._spawn()

    def _cancel_restart(self):
        if self._restart_call is not None:
            if self._restart_call.active():
                self._restart_call.cancel()
            self._restart_call = None

    def stop(self, final: str = WAITING, kill_after: Optional[float] = None) -> defer.Deferred:
        """
        Stop the program: SIGTERM to its process group, SIGKILL after
        C{stop_timeout}, or after C{kill_after} seconds if that is sooner (a
        node fencing itself must be rid of its program before its peer may
        take over); STOPPING until it is gone, then C{final}. A stop already
        in flight gets the sooner deadline too. Fires once the program has
        exited; never fails.
        """
        self._live = False
        self._final = final
        self._cancel_restart()
        timeout = self.spec.stop_timeout if kill_after is None else max(0.0, min(kill_after, self.spec.stop_timeout))
        if self._stopping is not None:
            call = self._kill_call
            if call is not None and call.active() and call.getTime() > self._reactor.seconds() + timeout:
                call.reset(timeout)
                self._kill_timeout = (self._reactor.seconds() - self._term_at) + timeout
            return self._after_stop()
        if self._transport is None:
            self._settle()
            return defer.succeed(None)
        self._stopping = defer.Deferred()
        waiter = self._after_stop()
        self._set(STOPPING)
        pid = self.pid
        self._term_at, self._kill_timeout = self._reactor.seconds(), timeout
        self._kill_call = self._reactor.callLater(timeout, self._kill_group, pid)
        if not self._signal(pid, signal.SIGTERM):
            self.log.info("pid {pid} was already gone", pid=pid, listener=self.name)
        return waiter

    def _kill_group(self, pid):
        """The deadline: SIGKILL whatever of the group is left."""
        self._kill_call = None
        if self._signal(pid, signal.SIGKILL, leader=self._transport is not None):
            self.log.warn(
                "pid {pid} (or a process it started) still there {timeout:g}s after SIGTERM: sent SIGKILL",
                pid=pid, timeout=round(self._kill_timeout, 3), listener=self.name,
            )
        if self._transport is None:
            # Only processes the leader left behind were there; they are not
            # this node's children, so there is no exit to wait for.
            self._stopped()

    def _stopped(self):
        if self._kill_call is not None and self._kill_call.active():
            self._kill_call.cancel()
        self._kill_call = None
        stopping, self._stopping = self._stopping, None
        self._settle()
        if stopping is not None:
            stopping.callback(None)

    def _after_stop(self) -> defer.Deferred:
        waiter = defer.Deferred()
        self._stopping.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    def _settle(self):
        final = self._final
        if self.state != final and not (final == WAITING and self.state == FAILED):
            self._set(final)

    def status(self) -> dict:
        result = {"state": self.state, "since": self.since}
        if self.reason:
            result["reason"] = self.reason
        if self.pid is not None:
            result["pid"] = self.pid
        if self.restarts:
            result["restarts"] = self.restarts
        return result
