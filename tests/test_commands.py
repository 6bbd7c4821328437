"""
The outside-command runner: real short programs, run through the reactor's
spawnProcess, bounded in time, never failing their Deferred.
"""

import os
import time

from twisted.internet import defer, reactor, task
from twisted.logger import LogLevel, globalLogPublisher
from twisted.trial.unittest import TestCase

from iwayfailover import commands


class Events:
    """Log events published while a test runs."""

    def __init__(self, testcase):
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        testcase.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def text(self):
        from twisted.logger import formatEvent
        return "\n".join(formatEvent(e) for e in self.events)


def alive(pid):
    """Is C{pid} running (a zombie waiting for a parent to reap it is not)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def until_gone(pid, timeout=5.0):
    """
    A Deferred of whether C{pid} has ended, once it has or C{timeout}
    seconds have passed; it polls without holding up the reactor.
    """
    deadline = time.monotonic() + timeout

    def poll():
        if not alive(pid) or time.monotonic() >= deadline:
            return not alive(pid)
        return task.deferLater(reactor, 0.01, poll)

    return defer.maybeDeferred(poll)


class RunTests(TestCase):
    def run_sh(self, script, timeout=5.0, **kwargs):
        return commands.run(reactor, ["/bin/sh", "-c", script], timeout, **kwargs)

    def test_exit_status_and_output_are_reported(self):
        """A program's exit code and what it wrote on stdout and stderr come back in the result."""
        d = self.run_sh("echo to-out; echo to-err >&2; exit 3")

        def check(result):
            self.assertEqual(result.code, 3)
            self.assertFalse(result.ok)
            self.assertIn("to-out", result.output)
            self.assertIn("to-err", result.output)
            self.assertEqual(result.describe(), "exit status 3")

        return d.addCallback(check)

    def test_success_is_ok(self):
        """Exit status 0, in time, is ok."""
        return self.run_sh("true").addCallback(lambda result: self.assertTrue(result.ok))

    def test_environment_is_the_one_given(self):
        """The program gets exactly the environment passed in."""
        d = self.run_sh('echo "[$IWAY_X][$HOME]"', env={"IWAY_X": "yes", "PATH": "/usr/bin:/bin"})
        return d.addCallback(lambda result: self.assertEqual(result.output.strip(), "[yes][]"))

    def test_output_lines_are_logged_with_the_name(self):
        """Each output line goes to the log, labelled with the name given."""
        events = Events(self)
        d = self.run_sh("echo hello there", name="hook on_live")
        return d.addCallback(lambda _: self.assertIn("hook on_live: hello there", events.text()))

    def test_a_program_past_its_time_limit_is_killed_with_its_children(self):
        """A program running too long is stopped (SIGTERM to its whole group); the result says it timed out."""
        started = time.monotonic()
        d = self.run_sh("sleep 30 & echo $!; wait", timeout=0.3)

        def check(result):
            self.assertTrue(result.timed_out)
            self.assertFalse(result.ok)
            self.assertLess(time.monotonic() - started, 5)
            self.assertIn("time limit", result.describe())
            child = int(result.output.split()[0])
            # The shell's own child went with it: nothing is left running.
            return until_gone(child).addCallback(self.assertTrue, "the shell's child outlived it")

        return d.addCallback(check)

    def test_a_program_ignoring_sigterm_is_killed(self):
        """One that ignores SIGTERM gets SIGKILL a moment later."""
        self.patch(commands, "KILL_GRACE", 0.2)
        d = self.run_sh("trap '' TERM; echo ready; while :; do sleep 0.05; done", timeout=0.3)

        def check(result):
            self.assertTrue(result.timed_out)
            self.assertEqual(result.signal, 9)

        return d.addCallback(check)

    def test_a_child_ignoring_sigterm_is_killed_when_its_parent_obeys(self):
        """Past the limit the program ends on SIGTERM, but a child of it ignores it: SIGKILL reaches the child at once."""
        d = self.run_sh("(trap '' TERM; sleep 30) & echo $!; wait", timeout=0.3)

        def check(result):
            self.assertTrue(result.timed_out)
            child = int(result.output.split()[0])
            return until_gone(child).addCallback(self.assertTrue, "the child that ignored SIGTERM outlived the time limit")

        return d.addCallback(check)

    def test_a_backstop_runs_the_program_under_coreutils_timeout(self):
        """With backstop, the program's parent is coreutils' timeout, set past the limit: it ends even if the node dies."""
        d = self.run_sh("tr '\\0' ' ' < /proc/$PPID/cmdline", timeout=2.0, backstop=True)

        def check(result):
            self.assertTrue(result.ok, result.describe())
            words = result.output.split()
            self.assertTrue(words[0].endswith("/timeout"), words)
            self.assertIn("--kill-after=1", words)
            self.assertEqual(float(words[words.index("--kill-after=1") + 1]), 2.0 + commands.KILL_GRACE + 1)

        return d.addCallback(check)

    def test_a_missing_program_is_a_result_not_an_exception(self):
        """A program not on PATH gives a result with the error; the Deferred does not fail."""
        d = commands.run(reactor, ["no-such-program-iway"], 1.0)

        def check(result):
            self.assertFalse(result.ok)
            self.assertIn("not found on PATH", result.error)
            self.assertIn("could not be started", result.describe())

        return d.addCallback(check)

    def test_a_missing_path_is_a_result_not_an_exception(self):
        """A program given by a path that does not exist gives a result with the error."""
        d = commands.run(reactor, ["/nonexistent/iway-hook"], 1.0)
        return d.addCallback(lambda result: self.assertIn("no such executable file", result.error))

    def test_a_program_leaving_a_daemon_behind_is_not_waited_for(self):
        """A program that exits while something it started still holds its output ends all the same."""
        started = time.monotonic()
        d = self.run_sh("sleep 5 & echo $!; exit 0", timeout=10)

        def check(result):
            os.kill(int(result.output.split()[0]), 9)
            self.assertEqual(result.code, 0)
            self.assertLess(time.monotonic() - started, 4)

        return d.addCallback(check)

    def test_the_reactor_runs_while_a_program_runs(self):
        """The reactor is not blocked: a timer fires while a slow program is still running."""
        ticks = []
        call = reactor.callLater(0.05, ticks.append, "tick")
        self.addCleanup(lambda: call.active() and call.cancel())
        d = self.run_sh("sleep 0.5")

        def check(result):
            self.assertEqual(result.code, 0)
            self.assertEqual(ticks, ["tick"])

        return d.addCallback(check)
