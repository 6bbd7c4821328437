"""
Faults with real twistd processes on loopback: a crash, a clean stop, a
pause past the threshold, a restart of the old live node, two nodes started
live together, and a planned switchover.
"""

import signal
import subprocess
import threading
import time

from twisted.trial import unittest

from harness import IWSRV, Pair, accepts, temporary_directory, wait_for


class FaultTestCase(unittest.TestCase):
    interval = 0.2
    threshold = 1.0
    own_listeners = False

    def setUp(self):
        self.pair = Pair(
            temporary_directory(self), interval=self.interval, threshold=self.threshold, own_listeners=self.own_listeners
        )
        self.addCleanup(self.pair.stop)

    def logs(self):
        return self.pair.a.log_tail() + "\n" + self.pair.b.log_tail()

    def start_pair(self):
        self.pair.start_both()

    def sample_roles(self, seconds):
        """Both roles, sampled until C{seconds} have passed; fails at once on a sample with two live nodes."""
        deadline = time.monotonic() + seconds
        samples = []
        while time.monotonic() < deadline:
            roles = self.pair.roles()
            samples.append(roles)
            self.assertNotEqual(roles, ("live", "live"), "two live nodes at once\n" + self.logs())
        return samples


class CrashAndStopTests(FaultTestCase):
    """At threshold 5 s, a dead or stopping live node is replaced well under a second."""

    interval = 0.5
    threshold = 5.0
    own_listeners = True  # the backup's own port: a connection there proves the backup serves

    def test_kill_9_of_the_live_is_taken_over_well_under_a_second(self):
        """kill -9: the backup's probe finds the live's port refused and takes over at once, not after 5 s."""
        self.start_pair()
        killed = time.monotonic()
        self.pair.a.kill()
        wait_for(lambda: accepts(self.pair.ports["web_b"]), 1.0, "the backup's listener\n" + self.logs(), poll=0.002)
        elapsed = time.monotonic() - killed
        self.assertLess(elapsed, 1.0)
        status = self.pair.b.status()
        self.assertEqual(status["role"], "live")
        self.assertIn("serv_a is gone", status["cause"])

    def test_sigterm_of_the_live_hands_over_well_under_a_second(self):
        """SIGTERM: the live node stops its listeners, stands down, and the backup takes over at once."""
        self.start_pair()
        stopped = time.monotonic()
        self.pair.a.signal(signal.SIGTERM)
        wait_for(lambda: accepts(self.pair.ports["web_b"]), 1.0, "the backup's listener\n" + self.logs(), poll=0.002)
        elapsed = time.monotonic() - stopped
        self.assertLess(elapsed, 1.0)
        self.assertIn("stood down (shutting down)", self.pair.b.status()["cause"])
        self.assertEqual(self.pair.a.process.wait(timeout=30), -signal.SIGTERM)


class PauseTests(FaultTestCase):
    """SIGSTOP past the threshold, then SIGCONT: the woken node must not serve."""

    own_listeners = True

    def test_woken_live_node_yields_within_two_heartbeat_intervals(self):
        """After SIGCONT exactly one node is live within two heartbeat intervals and the woken node's listener refuses."""
        self.start_pair()
        self.pair.a.signal(signal.SIGSTOP)
        self.pair.b.wait_role("live", timeout=self.threshold + 2)
        wait_for(lambda: accepts(self.pair.ports["web_b"]), 2, "serv_b's listener")
        woken = time.monotonic()
        self.pair.a.signal(signal.SIGCONT)
        status = wait_for(
            lambda: (s := self.pair.a.status()) and s["role"] == "backup" and s["listeners"]["web_a"]["state"] == "WAITING" and s,
            2 * self.interval, "the woken serv_a to yield\n" + self.logs(), poll=0.005,
        )
        self.assertLess(time.monotonic() - woken, 2 * self.interval)
        self.assertFalse(accepts(self.pair.ports["web_a"]), "the woken node still serves")
        self.assertEqual(self.pair.b.status()["role"], "live")
        self.assertIn("stalled", status["cause"], "it stopped serving on waking, before hearing anyone")
        samples = self.sample_roles(1.0)
        self.assertEqual(set(samples), {("backup", "live")})


class RestartTests(FaultTestCase):
    def test_old_live_restarted_without_b_comes_up_as_backup(self):
        """The old live node, restarted without -b while the other is live, comes up as backup; never two lives."""
        self.start_pair()
        self.pair.a.kill()
        self.pair.b.wait_role("live")
        self.pair.a.start()  # no -b
        wait_for(lambda: self.pair.a.status() is not None, 10, "serv_a to answer")
        samples = self.sample_roles(2.0)
        self.assertEqual(samples[-1], ("backup", "live"))
        status = self.pair.a.status()
        self.assertIn("is live", status["cause"])
        self.assertEqual(status["listeners"]["web"]["state"], "WAITING")

    def test_two_nodes_started_live_together_settle_to_exactly_one(self):
        """Both nodes started live at the same moment: exactly one is live, and it stays so."""
        self.pair.a.start()
        self.pair.b.start()
        wait_for(lambda: None not in self.pair.roles() and "starting" not in self.pair.roles(), 10, "both nodes to start")
        samples = self.sample_roles(2.0)
        self.assertEqual(set(samples[-10:]), {samples[-1]})
        self.assertEqual(sorted(samples[-1]), ["backup", "live"])


class SwitchoverTests(FaultTestCase):
    def switchover_on_a_terminal(self, name, answer):
        """Run iwsrv switchover with a terminal as its stdin, answering C{answer} to its question."""
        import os
        import pty

        controller, terminal = pty.openpty()
        try:
            os.write(controller, answer.encode() + b"\n")
            return subprocess.run(
                [IWSRV, "switchover", "--config", self.pair.config_path, "--name", name, "--state-dir", self.pair.a.state_dir],
                stdin=terminal, capture_output=True, text=True, timeout=60,
            )
        finally:
            os.close(terminal)
            os.close(controller)

    def test_iwsrv_switchover_asks_on_a_terminal_and_answered_no_changes_nothing(self):
        """On a terminal the question names the live node and its backup; "n" leaves both roles as they were."""
        self.start_pair()

        result = self.switchover_on_a_terminal("serv_b", "n")

        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertRegex(result.stderr, r"serv_a is live \(epoch \d+\); its backup serv_b is connected")
        self.assertIn("hand the live role to serv_b? [y/N]", result.stderr)
        self.assertIn("iwsrv switchover: switchover not confirmed; nothing changed", result.stderr)
        self.assertEqual(self.pair.roles(), ("live", "backup"))

    def test_iwsrv_switchover_swaps_the_roles_and_reports_the_gap(self):
        """iwsrv switchover, asked of the backup and confirmed, moves the live role to it; the gap is printed; never two lives."""
        self.start_pair()
        unconfirmed = subprocess.run(
            [IWSRV, "switchover", "--config", self.pair.config_path, "--name", "serv_b", "--state-dir", self.pair.a.state_dir],
            capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
        )
        self.assertEqual(unconfirmed.returncode, 2, unconfirmed.stderr)
        self.assertEqual(unconfirmed.stderr, "iwsrv switchover: no terminal to confirm on; pass --yes to switch over without asking\n")
        self.assertEqual(self.pair.roles(), ("live", "backup"), "nothing changes without confirmation")
        result = self.switchover_on_a_terminal("serv_b", "y")
        self.assertEqual(result.returncode, 0, result.stderr + self.logs())
        self.assertRegex(result.stdout, r"switched over from serv_a to serv_b \(epoch 3\); no listener served for [0-9.]+ ms")
        self.assertEqual(self.pair.roles(), ("backup", "live"))
        wait_for(lambda: accepts(self.pair.web_port), 2, "serv_b's listener")
        wait_for(lambda: self.pair.a.status()["peer"]["connected"], 5, "serv_a to hear serv_b")

    def test_iwsrv_switchover_without_the_live_nodes_token_changes_nothing(self):
        """Without the live node's console token (another user, another host), iwsrv switchover cannot log in."""
        self.start_pair()
        result = subprocess.run(
            [IWSRV, "switchover", "--yes", "--config", self.pair.config_path, "--name", "serv_a",
             "--state-dir", self.pair.b.state_dir + "-nowhere"],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("cannot read serv_a's console token", result.stderr)
        self.assertEqual(self.pair.roles(), ("live", "backup"))

    def test_switchover_without_a_backup_is_refused(self):
        """With no backup running, the live node refuses to switch over and keeps serving."""
        self.pair.a.start()
        self.pair.a.wait_role("live")
        result = subprocess.run(
            [IWSRV, "switchover", "--yes", "--config", self.pair.config_path, "--name", "serv_a", "--state-dir", self.pair.a.state_dir],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(result.returncode, 1)
        self.assertIn("refused the switchover", result.stderr)
        self.assertEqual(self.pair.a.status()["role"], "live")


class FloodTests(FaultTestCase):
    def test_idle_and_garbage_connections_cause_no_false_takeover_and_lose_no_heartbeat(self):
        """200 idle or garbage connections against a backup: it stays backup and counts every heartbeat the live sent."""
        import socket

        self.start_pair()
        port = self.pair.ports["hb_b"]
        before_sent = self.pair.a.status()["heartbeats"]["sent"]
        before_received = self.pair.b.status()["heartbeats"]["received"]
        held, opened = [], 0
        pace = threading.Event()
        deadline = time.monotonic() + 5.0  # the flood is bounded in time and in count
        try:
            while time.monotonic() < deadline and opened < 5000:
                pace.wait(0.002)
                sock = socket.create_connection(("127.0.0.1", port), timeout=1)
                opened += 1
                if opened % 2:
                    try:
                        sock.sendall(b"\x00\x00\x00\x10garbage-garbage!")  # refused at once
                    except OSError:
                        pass
                held.append(sock)
                if len(held) > 200:
                    held.pop(0).close()
                if opened % 50 == 0:
                    self.assertEqual(self.pair.b.status()["role"], "backup")
            self.assertGreaterEqual(opened, 200)
            a, b = self.pair.a.status(), self.pair.b.status()
        finally:
            for sock in held:
                sock.close()
        self.assertEqual((a["role"], b["role"]), ("live", "backup"))
        sent = a["heartbeats"]["sent"] - before_sent
        received = b["heartbeats"]["received"] - before_received
        self.assertGreater(sent, 10)
        self.assertLessEqual(abs(sent - received), 1, "a heartbeat was lost (one may be in flight)")


class Forger(threading.Thread):
    """
    Sends forged live heartbeats for serv_a to a heartbeat port, on a new
    connection each time: signed with a wrong key, or unsigned in the old
    format. Bounded in count and time; counts the connections it made.
    """

    def __init__(self, port, seconds=10.0, most=2000):
        super().__init__(daemon=True)
        self.port = port
        self.until = time.monotonic() + seconds
        self.most = most
        self.sent = 0
        self.done = threading.Event()

    def forged(self, sock, n):
        import os
        import struct

        from iwayfailover import auth, wire
        from wirepeer import peer_frame

        frame = peer_frame(wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, epoch=10**6, seq=n)
        if n % 2:
            return struct.pack("!I", len(wire.encode(frame))) + wire.encode(frame)  # no hello, no seal
        sock.settimeout(1)
        hello = b""
        while len(hello) < 4 + auth.HELLO_SIZE:
            chunk = sock.recv(4 + auth.HELLO_SIZE - len(hello))
            if not chunk:
                raise OSError("closed")
            hello += chunk
        mine = os.urandom(16)
        session = auth.Session(auth.KeyRing(keys=(b"not the pair's key".ljust(40, b"!"),)), True, mine, auth.parse_hello(hello[4:]))
        sealed = session.seal(wire.encode(frame))
        return struct.pack("!I", auth.HELLO_SIZE) + auth.hello(mine) + struct.pack("!I", len(sealed)) + sealed

    def run(self):
        import socket

        pace = threading.Event()
        while not self.done.is_set() and time.monotonic() < self.until and self.sent < self.most:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(self.forged(sock, self.sent + 1))
                    self.sent += 1
            except OSError:
                pass
            pace.wait(0.02)

    def stop(self):
        self.done.set()
        self.join(timeout=5)


class ForgeryTests(FaultTestCase):
    """Forged heartbeats arriving all the while cannot keep a backup from taking over."""

    own_listeners = True

    def forging(self):
        forger = Forger(self.pair.ports["hb_b"])
        forger.start()
        self.addCleanup(forger.stop)
        wait_for(lambda: forger.sent >= 20, 5, "the forger to get going")
        self.assertEqual(self.pair.b.status()["role"], "backup")
        return forger

    def test_live_killed_while_forged_heartbeats_arrive_is_taken_over_at_once(self):
        """kill -9 of the live under a stream of forgeries: the backup serves well within the threshold."""
        self.start_pair()
        forger = self.forging()
        killed = time.monotonic()
        self.pair.a.kill()
        wait_for(lambda: accepts(self.pair.ports["web_b"]), self.threshold, "the backup's listener\n" + self.logs(), poll=0.002)
        self.assertLess(time.monotonic() - killed, self.threshold)
        status = self.pair.b.status()
        self.assertEqual(status["role"], "live")
        self.assertLess(status["epoch"], 10**6, "a forged epoch was believed")
        self.assertGreaterEqual(forger.sent, 20)

    def test_live_paused_while_forged_heartbeats_arrive_is_taken_over_at_the_threshold(self):
        """SIGSTOP of the live (no crash to detect) under forgeries: the backup takes over at its threshold."""
        self.start_pair()
        self.forging()
        paused = time.monotonic()
        self.pair.a.signal(signal.SIGSTOP)
        self.addCleanup(lambda: self.pair.a.process.poll() is None and self.pair.a.signal(signal.SIGCONT))
        wait_for(lambda: accepts(self.pair.ports["web_b"]), self.threshold + 1.0, "the backup's listener\n" + self.logs(), poll=0.005)
        elapsed = time.monotonic() - paused
        self.assertGreaterEqual(elapsed, self.threshold - self.interval)
        self.assertLess(elapsed, self.threshold + 1.0)
        self.assertIn("refused heartbeat connection from 127.0.0.1", self.pair.b.log_text())
        self.assertGreaterEqual(self.pair.b.status()["heartbeats"]["rejected"], 20)
