"""
Process channels end to end: real twistd nodes running real programs
(short /bin/sh scripts), watched through /api/status and /proc.

Every program's process group is checked to be empty when a test says the
program is gone, and killed when the test ends whatever its outcome.
"""

import os
import signal
import subprocess

from twisted.trial import unittest

from harness import IWSRV, Pair, temporary_directory, wait_for

# Says it started, honours SIGTERM by saying so, and keeps a child of its own
# (the sleep) so that the whole process group is seen to go.
POLITE = """\
trap 'echo "worker $PPID got TERM"; exit 0' TERM
echo "worker $PPID started on $IWAY_TEST_NODE"
while true; do sleep 0.05; done
"""

# Ignores SIGTERM, and so do its children (an ignored signal stays ignored across exec).
STUBBORN = """\
trap '' TERM
echo "stubborn $PPID started"
while true; do sleep 0.05; done
"""

# A program that starts a long-lived process of its own, as servers do.
PARENT = """\
sleep 300 &
echo "parent $PPID started"
wait
"""

CRASHING = """\
echo "crashing $PPID"
exit 3
"""


def group_members(pgid):
    """The live (not zombie) processes of process group C{pgid}, from /proc."""
    members = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                stat = f.read()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2:].split()
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state not in ("Z", "X"):
            members.append(int(entry))
    return members


def running(script):
    """The process groups (one per channel run: its launcher's pid) of live processes whose command line names C{script}."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                words = f.read().split(b"\0")
            with open(f"/proc/{entry}/stat") as f:
                state, _, group = f.read().rsplit(")", 1)[1].split()[:3]
        except OSError:
            continue
        if script.encode() in words and state not in ("Z", "X") and int(group) not in found:
            found.append(int(group))
    return sorted(found)


class ChannelTestCase(unittest.TestCase):
    def setUp(self):
        if not os.path.isdir("/proc/self"):
            raise unittest.SkipTest("needs /proc (Linux) to see every process of a group")
        self.workdir = temporary_directory(self)
        self.pair = Pair(self.workdir, interval=0.2, threshold=1.0)
        self.seen = set()
        self.addCleanup(self.kill_leftovers)  # runs last: after the nodes have stopped
        self.addCleanup(self.pair.stop)

    def kill_leftovers(self):
        for pgid in self.seen:
            try:
                os.killpg(pgid, signal.SIGKILL)
            except OSError:
                pass

    def channel(self, script, **keys):
        """Make the pair's only listener a process channel running C{script}."""
        path = os.path.join(self.workdir, "worker.sh")
        with open(path, "w") as f:
            f.write(script)
        lines = "".join(f"{key} = {value}\n" for key, value in keys.items())
        self.pair.listeners = f"\n[listener:worker]\ncommand = sh {path}\n{lines}"
        self.pair.write_config()
        return path

    def worker(self, node):
        return ((node.status() or {}).get("listeners") or {}).get("worker") or {}

    def wait_pid(self, node, other_than=None, timeout=10.0):
        """The pid of C{node}'s running worker (a new one, if C{other_than})."""
        pid = wait_for(
            lambda: (w := self.worker(node)).get("state") == "ACTIVE" and w.get("pid") not in (None, other_than) and w["pid"],
            timeout, f"{node.name}'s worker to run\n{node.log_tail()}",
        )
        self.seen.add(pid)
        return pid

    def wait_said(self, node, text, timeout=10.0):
        """Wait for the program's line C{text} in C{node}'s log (it has set its traps by then)."""
        wait_for(
            lambda: f"[iwayfailover.channel.worker#info] {text}" in node.log_text(),
            timeout, f"the program to say {text!r}\n{node.log_tail()}",
        )

    def assert_gone(self, pgid, what, timeout=5.0):
        wait_for(lambda: not group_members(pgid), timeout, f"every process of {what} (group {pgid}) to be gone: {group_members(pgid)}")


class ProcessChannelTests(ChannelTestCase):
    def test_live_node_starts_the_program_and_logs_its_output_under_the_listeners_name(self):
        """A live node runs the command in a session of its own; its output is in the node's log as channel.worker."""
        self.channel(POLITE, env="IWAY_TEST_NODE=serv_a")
        self.pair.a.start()
        self.pair.a.wait_role("live")
        pid = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"worker {pid} started on serv_a")
        self.assertIn(pid, group_members(pid), "the program leads a process group of its own")

    def test_a_program_killed_while_live_is_restarted(self):
        """kill -9 of the program: the channel starts it again (a new pid), and says why in the log."""
        self.channel(POLITE, restart_backoff=0.1)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        first = self.wait_pid(self.pair.a)
        os.kill(first, signal.SIGKILL)
        second = self.wait_pid(self.pair.a, other_than=first)
        self.assertNotEqual(first, second)
        self.assertEqual(self.worker(self.pair.a).get("restarts"), 1)
        self.assertIn("killed by signal 9 (SIGKILL)", self.pair.a.log_text())
        self.assert_gone(first, "the killed program")

    def test_a_program_that_keeps_crashing_is_failed_after_restart_tries(self):
        """A program that exits with status 3 at once is restarted restart_tries times, then FAILED with the reason."""
        self.channel(CRASHING, restart_tries=2, restart_backoff=0.05)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        worker = wait_for(
            lambda: (w := self.worker(self.pair.a)).get("state") == "FAILED" and w, 10,
            "the worker to be FAILED\n" + self.pair.a.log_tail(),
        )
        self.assertEqual(worker["reason"], "exited with status 3 after 2 restarts")
        self.assertEqual(self.pair.a.log_text().count("[iwayfailover.channel.worker#info] crashing "), 3)
        self.assertEqual(self.pair.a.status()["role"], "live", "a failed channel does not change the role")

    def test_stopping_the_node_sends_sigterm_and_leaves_no_process(self):
        """A node stopped with SIGTERM stops its program with SIGTERM, which it honours; nothing of its group is left."""
        self.channel(POLITE, stop_timeout=5)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        pid = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"worker {pid} started")
        self.pair.a.stop()
        self.assert_gone(pid, "the program")
        self.assertIn(f"worker {pid} got TERM", self.pair.a.log_text())
        self.assertNotIn("sent SIGKILL", self.pair.a.log_text())

    def test_a_program_that_ignores_sigterm_gets_sigkill_after_stop_timeout(self):
        """trap '' TERM: the program and its children are killed with SIGKILL once stop_timeout has passed."""
        self.channel(STUBBORN, stop_timeout=0.5)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        pid = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"stubborn {pid} started")
        self.pair.a.signal(signal.SIGTERM)
        self.pair.a.process.wait(timeout=10)
        self.assert_gone(pid, "the stubborn program")
        log = self.pair.a.log_text()
        self.assertIn("still there 0.5s after SIGTERM: sent SIGKILL", log)
        self.assertIn("killed by signal 9 (SIGKILL)", log)

    def test_a_node_killed_with_kill_9_takes_its_program_with_it(self):
        """kill -9 of the node itself: the kernel tells the launcher (PR_SET_PDEATHSIG), which kills the session; no orphan serves on."""
        self.channel(POLITE)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        pid = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"worker {pid} started")
        self.pair.a.kill()
        self.assert_gone(pid, "the program of the killed node")

    def test_a_node_killed_with_kill_9_leaves_nothing_its_program_started(self):
        """The program's own long-lived children die with the node too, not only the program."""
        self.channel(PARENT)
        self.pair.a.start()
        self.pair.a.wait_role("live")
        pid = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"parent {pid} started")
        self.assertGreaterEqual(len(group_members(pid)), 3, "launcher, sh and sleep")
        self.pair.a.kill()
        self.assert_gone(pid, "the program and its child")


class PairChannelTests(ChannelTestCase):
    def test_backup_runs_the_program_only_from_takeover_and_the_old_live_leaves_none(self):
        """The backup's channel is WAITING with no process; after a switchover the new live runs it and the old one's is gone."""
        script = self.channel(POLITE, stop_timeout=5)
        self.pair.start_both()
        old = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"worker {old} started")
        self.assertEqual(running(script), [old], "only the live node runs the program")
        self.assertEqual(self.worker(self.pair.b), {"state": "WAITING", "since": self.worker(self.pair.b)["since"]})
        result = subprocess.run(
            [IWSRV, "switchover", "--yes", "--config", self.pair.config_path, "--name", "serv_a", "--state-dir", self.pair.a.state_dir],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr + self.pair.a.log_tail() + self.pair.b.log_tail())
        self.assert_gone(old, "the old live node's program")
        new = self.wait_pid(self.pair.b)
        self.assertNotEqual(old, new)
        wait_for(lambda: running(script) == [new], 5, f"only serv_b's program to run: {running(script)}")
        self.assertEqual(self.worker(self.pair.a)["state"], "WAITING")
        self.assertIn(f"worker {old} got TERM", self.pair.a.log_text())

    def test_takeover_after_kill_9_starts_the_program_on_the_backup(self):
        """kill -9 of the live node: its program dies with it and the backup's starts."""
        self.channel(POLITE)
        self.pair.start_both()
        old = self.wait_pid(self.pair.a)
        self.wait_said(self.pair.a, f"worker {old} started")
        self.pair.a.kill()
        self.pair.b.wait_role("live")
        self.wait_pid(self.pair.b)
        self.assert_gone(old, "the dead node's program")
