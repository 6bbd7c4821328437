"""
The notify hooks (issue 7, part 4) running real commands: each hook's
environment as the hook sees it, its time limit, its failure logged with the
exit status, and the reactor free while it runs. The node's wiring (which
hook runs when) is in test_floating.py; test_hooks_e2e below runs them in a
real pair.
"""

import os
import shlex

from twisted.internet import defer, reactor
from twisted.logger import formatEvent, globalLogPublisher
from twisted.trial import unittest

from harness import Pair, temporary_directory, wait_for
from iwayfailover.config import ClientSettings
from iwayfailover.hooks import Hooks


def read_env(path):
    """KEY=VALUE lines (as env prints them) into a dict."""
    with open(path) as f:
        return dict(line.rstrip("\n").split("=", 1) for line in f if "=" in line)


def dump_env_to(folder):
    """A hook command line that writes its environment to FOLDER/EVENT.env."""
    return ("/bin/sh", "-c", 'env > "$0/$IWAY_EVENT.env"', folder)


class HookProcessTests(unittest.TestCase):
    def setUp(self):
        self.folder = temporary_directory(self)
        self.events = []
        globalLogPublisher.addObserver(self.events.append)
        self.addCleanup(globalLogPublisher.removeObserver, self.events.append)

    def log_text(self):
        return "\n".join(formatEvent(e) for e in self.events)

    def hooks(self, **settings):
        return Hooks(reactor, "serv_b", lambda: ClientSettings(**settings), environ={"PATH": "/usr/bin:/bin", "KEEP": "me"})

    @defer.inlineCallbacks
    def test_each_hook_gets_its_environment(self):
        """on_live, on_backup and on_fault each see IWAY_SERVER, IWAY_ROLE, IWAY_EPOCH, IWAY_CAUSE (and the node's own environment)."""
        command = dump_env_to(self.folder)
        hooks = self.hooks(on_live=command, on_backup=command, on_fault=command)
        yield hooks.fire("on_live", "live", 4, "no live signal from serv_a for 3.012s (threshold 3s)")
        yield hooks.fire("on_backup", "backup", 5, "serv_a is live too with epoch 6")
        yield hooks.fire("on_fault", "live", 7, "web FAILED: OSError: port 8080 is in use")
        expected = {
            "on_live": ("live", "4", "no live signal from serv_a for 3.012s (threshold 3s)"),
            "on_backup": ("backup", "5", "serv_a is live too with epoch 6"),
            "on_fault": ("live", "7", "web FAILED: OSError: port 8080 is in use"),
        }
        for event, (role, epoch, cause) in expected.items():
            env = read_env(os.path.join(self.folder, f"{event}.env"))
            self.assertEqual(env["IWAY_SERVER"], "serv_b", event)
            self.assertEqual(env["IWAY_ROLE"], role, event)
            self.assertEqual(env["IWAY_EPOCH"], epoch, event)
            self.assertEqual(env["IWAY_CAUSE"], cause, event)
            self.assertEqual(env["KEEP"], "me", event)
        self.assertIn("on_fault hook ended: exit status 0", self.log_text())

    @defer.inlineCallbacks
    def test_a_hook_past_its_time_limit_is_killed_and_logged(self):
        """A hook running longer than hook_timeout is killed; the log says so, naming hook_timeout."""
        hooks = self.hooks(on_live=("/bin/sh", "-c", "sleep 30"), hook_timeout=0.3)
        yield hooks.fire("on_live", "live", 1, "test")
        [(event, result)] = hooks.results
        self.assertTrue(result.timed_out)
        self.assertIn("on_live hook ran past its time limit and was killed (0.3s, hook_timeout)", self.log_text())

    @defer.inlineCallbacks
    def test_a_failing_hook_is_logged_with_its_exit_status(self):
        """A hook exiting non-zero: its exit status and its output are in the log."""
        hooks = self.hooks(on_backup=("/bin/sh", "-c", "echo cannot reach the load balancer >&2; exit 4"))
        yield hooks.fire("on_backup", "backup", 1, "test")
        text = self.log_text()
        self.assertIn("on_backup hook failed: exit status 4", text)
        self.assertIn("on_backup hook: cannot reach the load balancer", text)

    @defer.inlineCallbacks
    def test_a_missing_hook_program_is_logged(self):
        """A hook whose program does not exist: logged, nothing raised."""
        hooks = self.hooks(on_fault=("/nonexistent/notify",))
        yield hooks.fire("on_fault", "live", 1, "test")
        self.assertIn("on_fault hook failed: could not be started: /nonexistent/notify: no such executable file", self.log_text())

    @defer.inlineCallbacks
    def test_the_reactor_is_not_blocked_while_a_hook_runs(self):
        """A timer due while a hook runs fires on time: the hook does not block the reactor."""
        hooks = self.hooks(on_live=("/bin/sh", "-c", "sleep 0.5"))
        ticks = []
        call = reactor.callLater(0.05, ticks.append, "tick")
        self.addCleanup(lambda: call.active() and call.cancel())
        d = hooks.fire("on_live", "live", 1, "test")
        self.assertEqual(ticks, [])
        yield d
        self.assertEqual(ticks, ["tick"])

    def test_no_hook_set_runs_nothing(self):
        """Without the key, firing the event does nothing."""
        self.assertIsNone(self.successResultOf(self.hooks().fire("on_live", "live", 1, "test")))


class HookPairTests(unittest.TestCase):
    """Real twistd nodes on loopback, their hooks writing their environment to files."""

    def test_hooks_in_a_real_failover(self):
        """kill -9 of the live node: the backup's on_live runs with its new role, epoch and cause; on_backup ran when it started."""
        workdir = temporary_directory(self)
        out = os.path.join(workdir, "hooks")
        os.makedirs(out)
        script = shlex.quote('env > "$0/$IWAY_SERVER.$IWAY_EVENT.env"')
        hook = f"/bin/sh -c {script} {out}"
        pair = Pair(workdir, failover_extra=f"on_live = {hook}\non_backup = {hook}\non_fault = {hook}")
        self.addCleanup(pair.stop)
        pair.start_both()
        path = lambda server, event: os.path.join(out, f"{server}.{event}.env")
        # The log says when a hook has ended, and so its file is whole.
        wait_for(lambda: "on_backup hook ended" in pair.b.log_text(), 10, "serv_b's on_backup hook\n" + pair.b.log_tail())
        wait_for(lambda: "on_live hook ended" in pair.a.log_text(), 10, "serv_a's on_live hook\n" + pair.a.log_tail())
        self.assertTrue(os.path.exists(path("serv_a", "on_live")))
        backup = read_env(path("serv_b", "on_backup"))
        self.assertEqual((backup["IWAY_ROLE"], backup["IWAY_EPOCH"], backup["IWAY_CAUSE"]), ("backup", "0", "started as backup"))
        pair.a.kill()
        status = pair.b.wait_role("live")
        wait_for(lambda: "on_live hook ended" in pair.b.log_text(), 10, "serv_b's on_live hook to end\n" + pair.b.log_tail())
        live = read_env(path("serv_b", "on_live"))
        self.assertEqual(live["IWAY_SERVER"], "serv_b")
        self.assertEqual(live["IWAY_ROLE"], "live")
        self.assertEqual(live["IWAY_EPOCH"], str(status["epoch"]))
        self.assertEqual(live["IWAY_CAUSE"], status["cause"])
        self.assertIn("serv_a", live["IWAY_CAUSE"])
        self.assertIn("on_live hook ended: exit status 0", pair.b.log_text())
        self.assertFalse(os.path.exists(path("serv_b", "on_fault")))
