"""
End-to-end: real twistd processes on 127.0.0.1, ephemeral ports, the
shared configuration in a temporary folder.
"""

import json
import os
import signal
import subprocess
import time

from twisted.trial import unittest

from harness import IWSRV, TWISTD, Pair, accepts, temporary_directory, wait_for


class PairTestCase(unittest.TestCase):
    interval = 0.2
    threshold = 1.0

    def setUp(self):
        self.pair = Pair(temporary_directory(self), interval=self.interval, threshold=self.threshold)
        self.addCleanup(self.pair.stop)

    def start_pair(self):
        """serv_a live, serv_b backup, and the backup hearing the live node."""
        self.pair.start_both()

    def assert_log_tails(self):
        return self.pair.a.log_tail() + "\n" + self.pair.b.log_tail()


class BackupTests(PairTestCase):
    def test_backup_listener_is_waiting_and_its_port_refuses(self):
        """A backup shows its listener WAITING and nothing listens on the listener's port."""
        self.pair.b.start(backup=True)
        status = self.pair.b.wait_role("backup")
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")
        self.assertFalse(accepts(self.pair.web_port))

    def test_live_node_serves_its_listener(self):
        """The live node's listener is ACTIVE and accepts connections."""
        self.pair.a.start()
        status = self.pair.a.wait_role("live")
        wait_for(lambda: accepts(self.pair.web_port), 5, "the live node's web listener")
        status = self.pair.a.status()
        self.assertEqual(status["listeners"]["web"]["state"], "ACTIVE")

    def test_iway_backup_environment_starts_a_backup(self):
        """IWAY_BACKUP=true works like -b."""
        self.pair.b.start(env={"IWAY_BACKUP": "true"})
        status = self.pair.b.wait_role("backup")
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")


class TakeoverTests(PairTestCase):
    def test_kill_9_of_the_live_brings_the_backup_listener_up_within_threshold_plus_1s(self):
        """kill -9 of the live node: the backup's listener accepts within threshold + 1 s, it is live and its epoch rose."""
        self.start_pair()
        live_epoch = self.pair.a.status()["epoch"]
        self.assertFalse(accepts(self.pair.web_port) and self.pair.b.status()["listeners"]["web"]["state"] != "WAITING")
        killed = time.monotonic()
        self.pair.a.kill()
        wait_for(lambda: accepts(self.pair.web_port), self.threshold + 1.0, "the backup's listener\n" + self.assert_log_tails(), poll=0.005)
        elapsed = time.monotonic() - killed
        status = self.pair.b.status()
        self.assertEqual(status["role"], "live")
        self.assertGreater(status["epoch"], live_epoch, "a new ballot, above the dead live node's")
        self.assertEqual(status["listeners"]["web"]["state"], "ACTIVE")
        self.assertLess(elapsed, self.threshold + 1.0)
        with open(os.path.join(self.pair.b.state_dir, "epoch")) as f:
            self.assertEqual(int(f.read()), status["epoch"], "saved before it served")

    def test_lost_links_are_logged_as_what_the_node_concluded(self):
        """
        After a kill -9 the survivor's log says what it made of the lost
        link (and what it does next), not the transport's "Connection was
        closed cleanly.": the live node of its backup, the backup of its live node.
        """
        self.start_pair()
        self.pair.b.kill()
        location = f"127.0.0.1:{self.pair.ports['hb_b']}"
        wait_for(lambda: f"heartbeat link to backup serv_b at {location} ended (closed by serv_b: it stopped, or its"
                         " process died); this node stays live and dials it again" in self.pair.a.log_text(),
                 5, "serv_a's line on the lost link\n" + self.assert_log_tails())
        self.pair.b.start(backup=True)
        wait_for(lambda: (self.pair.b.status() or {}).get("heartbeats", {}).get("received", 0) >= 2, 20,
                 "serv_b to hear serv_a again\n" + self.assert_log_tails())
        self.pair.a.kill()
        self.pair.b.wait_role("live")
        self.assertIn("heartbeat link from serv_a (live) ended (closed by serv_a: it stopped without standing down,"
                      " or its process died); asking serv_a's heartbeat port at once whether it still runs",
                      self.pair.b.log_text())
        self.assertNotIn("closed cleanly", self.pair.a.log_text() + self.pair.b.log_text())

    def test_old_live_restarted_as_backup_hears_the_new_live(self):
        """The old live, restarted with -b after a takeover, is a backup that receives the new live's heartbeats."""
        self.start_pair()
        self.pair.a.kill()
        self.pair.b.wait_role("live")
        self.pair.a.start(backup=True)
        self.pair.a.wait_role("backup")
        status = wait_for(
            lambda: (s := self.pair.a.status()) and s["peer"]["connected"] and s["peer"]["last_heartbeat_age"] is not None and s,
            10, "the restarted serv_a to hear serv_b\n" + self.assert_log_tails(),
        )
        self.assertEqual(status["peer"]["name"], "serv_b")
        self.assertEqual(status["peer"]["role"], "live")
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")
        received = status["heartbeats"]["received"]
        wait_for(lambda: self.pair.a.status()["heartbeats"]["received"] > received + 2, 5, "more heartbeats")
        self.assertEqual(self.pair.b.status()["role"], "live")

    def test_threshold_edit_changes_a_running_backups_takeover_time(self):
        """An edit of the threshold in the shared file changes when a running backup takes over a silent live node."""
        self.start_pair()
        self.pair.write_config(threshold=3.0)
        wait_for(lambda: self.pair.b.status()["settings"]["threshold"] == 3.0, 10, "serv_b to apply the new threshold")
        # SIGSTOP: the live node falls silent with its connections open, so only the threshold can end it.
        stopped = time.monotonic()
        self.pair.a.signal(signal.SIGSTOP)
        self.pair.b.wait_role("live", timeout=6)
        elapsed = time.monotonic() - stopped
        self.assertGreaterEqual(elapsed, 3.0 - self.interval)  # silence counts from the last heartbeat before the stop
        self.assertLess(elapsed, 4.0)
        self.assertIn("threshold 3s", self.pair.b.status()["cause"])

    def test_a_bad_edit_keeps_the_last_good_configuration(self):
        """A broken edit of the shared file is refused, shown in status, and the node goes on with what it had."""
        self.start_pair()
        with open(self.pair.config_path, "a") as f:
            f.write("\n[server:serv_c]\nthreshold = never\n")
        status = wait_for(
            lambda: (s := self.pair.b.status()) and s["config"]["last_error"] and s,
            10, "serv_b to report the bad edit",
        )
        self.assertIn("threshold", status["config"]["last_error"])
        self.assertEqual(status["role"], "backup")
        self.assertEqual(status["settings"]["threshold"], self.threshold)


class CommandLineTests(PairTestCase):
    def test_bad_config_exits_non_zero_with_one_clear_line(self):
        """A bad configuration stops twistd with a non-zero exit and one line naming file, section and key."""
        self.pair.write_config(threshold="0")
        node = self.pair.b.start(backup=True)
        code = node.process.wait(timeout=30)
        stderr = node.process.stderr.read().decode()
        self.assertNotEqual(code, 0)
        lines = [line for line in stderr.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, stderr)
        self.assertIn(self.pair.config_path, lines[0])
        self.assertIn("[server:serv_a] threshold = '0'", lines[0])

    def test_unknown_name_exits_non_zero_naming_the_sections(self):
        """A --name with no section is a startup error that names the sections there are."""
        result = subprocess.run(
            [TWISTD, "--nodaemon", "--pidfile=", "iway-failover", "--config", self.pair.config_path, "--name", "nobody",
             "--state-dir", os.path.join(self.pair.workdir, "state-nobody")],
            capture_output=True, text=True, timeout=60,
        )
        self.assertNotEqual(result.returncode, 0)
        self.assertIn("[server:serv_a], [server:serv_b]", result.stderr)

    def test_iwsrv_runs_a_backup_in_the_foreground_and_reports_status(self):
        """iwsrv -b runs the node; iwsrv status --json prints the status object; iwsrv status a table."""
        self.pair.a.start()
        self.pair.a.wait_role("live")
        process = subprocess.Popen(
            [IWSRV, "-b", "--config", self.pair.config_path, "--name", "serv_b", "--state-dir", self.pair.b.state_dir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        self.pair.b.process = process
        self.pair.b.wait_role("backup")
        result = subprocess.run(
            [IWSRV, "status", "--config", self.pair.config_path, "--name", "serv_b", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 0, result.stderr)
        status = json.loads(result.stdout)
        self.assertEqual((status["server"], status["role"]), ("serv_b", "backup"))
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")
        table = subprocess.run(
            [IWSRV, "status", "--config", self.pair.config_path, "--name", "serv_b"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertRegex(table.stdout, r"role\s+backup")
        self.assertRegex(table.stdout, r"web\s+WAITING")

    def test_iwsrv_status_works_while_the_shared_file_is_invalid(self):
        """
        A wrong key in the shared file does not hide a running node: iwsrv
        status finds its console in the raw section, prints the status, and
        says on one line after it that the file has an error, naming it.
        """
        self.pair.a.start()
        self.pair.a.wait_role("live")
        self.pair.write_config(threshold="fast")  # every server's threshold: the file no longer parses
        table = subprocess.run(
            [IWSRV, "status", "--config", self.pair.config_path, "--name", "serv_a"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(table.returncode, 0, table.stderr)
        self.assertRegex(table.stdout, r"role\s+live")
        last = table.stdout.strip().splitlines()[-1]
        self.assertTrue(last.startswith("the shared file has an error (the nodes keep running their last good"
                                        " configuration): "), last)
        self.assertIn(f"{self.pair.config_path}: [server:serv_a] threshold = 'fast'", last)
        as_json = subprocess.run(
            [IWSRV, "status", "--config", self.pair.config_path, "--name", "serv_a", "--json"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(as_json.returncode, 0, as_json.stderr)
        self.assertEqual(json.loads(as_json.stdout)["role"], "live")
        self.assertIn("threshold = 'fast'", as_json.stderr)

    def test_iwsrv_status_of_a_node_not_running_fails_clearly(self):
        """Asking a node that is not running exits non-zero and says it cannot reach it."""
        result = subprocess.run(
            [IWSRV, "status", "--config", self.pair.config_path, "--name", "serv_a"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("cannot ask serv_a", result.stderr)
        self.assertEqual(len(result.stderr.splitlines()), 1, "one line, no traceback: " + result.stderr)
        self.assertTrue(result.stderr.startswith("iwsrv status: cannot ask serv_a on "), result.stderr)

    def test_sigterm_stops_a_live_node_and_its_listener(self):
        """A live node stopped with SIGTERM exits cleanly and lets go of its listener's port."""
        self.pair.a.start()
        self.pair.a.wait_role("live")
        wait_for(lambda: accepts(self.pair.web_port), 5, "the web listener")
        self.pair.a.signal(signal.SIGTERM)
        # twistd ends by re-raising the signal that stopped it, as a Unix program should.
        self.assertEqual(self.pair.a.process.wait(timeout=30), -signal.SIGTERM)
        self.assertFalse(accepts(self.pair.web_port))
        log = self.pair.a.log_tail(lines=200)
        self.assertIn("listener web STOPPING -> STOPPED", log)
        self.assertIn("Server Shut Down", log)
