"""
Recovery end to end, with real twistd nodes on 127.0.0.1 (issue 11):

- a listener whose port is held by another socket when its node takes over
  is FAILED, then ACTIVE by itself once the port is let go of, without
  anyone pressing Restart (and C{iwsrv restart-listener} says why it
  cannot come up meanwhile);
- a node that fences itself kills a process channel that takes 2 s to honour
  SIGTERM, before its backup's threshold has passed.
"""

import os
import re
import socket
import subprocess
import time

from twisted.trial import unittest

from harness import IWSRV, Pair, accepts, allocate_port, temporary_directory, wait_for
from test_process_e2e import group_members


def held_port():
    """A listening socket on 127.0.0.1 (another program's port), and its port number."""
    holder = socket.socket()
    holder.bind(("127.0.0.1", 0))
    holder.listen(8)
    return holder, holder.getsockname()[1]


class ListenerRetryTests(unittest.TestCase):
    def setUp(self):
        self.workdir = temporary_directory(self)
        self.pair = Pair(self.workdir, interval=0.2, threshold=1.0)
        self.addCleanup(self.pair.stop)

    def web_b(self):
        return ((self.pair.b.status() or {}).get("listeners") or {}).get("web_b") or {}

    def test_a_listener_whose_port_is_held_at_takeover_comes_up_by_itself_once_it_is_let_go(self):
        """Address already in use at takeover: FAILED with a retry pending, then ACTIVE by itself once the port is free."""
        holder, port = held_port()
        self.addCleanup(holder.close)
        self.pair.listeners = f"\n[listener:web_b]\nplugin = web --listen tcp:{port}:interface=127.0.0.1 --path {{www}}\nservers = serv_b\n"
        self.pair.write_config()
        self.pair.start_both()
        self.pair.a.kill()
        self.pair.b.wait_role("live")
        failed = wait_for(
            lambda: (w := self.web_b()).get("state") == "FAILED" and "retry_in" in w and w, 10,
            "serv_b's web_b to be FAILED with a retry pending\n" + self.pair.b.log_tail(),
        )
        self.assertIn("Address already in use", failed["reason"])
        wait_for(lambda: self.web_b().get("retries", 0) >= 2, 10, "two automatic retries\n" + self.pair.b.log_tail())

        restart = subprocess.run(
            [IWSRV, "restart-listener", "web_b", "--config", self.pair.config_path, "--name", "serv_b",
             "--state-dir", self.pair.b.state_dir],
            capture_output=True, text=True, timeout=60,
        )
        self.assertEqual(restart.returncode, 1, restart.stdout + restart.stderr)
        self.assertEqual(restart.stderr.count("\n"), 1, restart.stderr)
        self.assertIn("iwsrv restart-listener: listener web_b on serv_b is FAILED again:", restart.stderr)
        self.assertIn("Address already in use", restart.stderr)

        holder.close()
        wait_for(lambda: self.web_b().get("state") == "ACTIVE", 15, "web_b to come up by itself\n" + self.pair.b.log_tail())
        self.assertTrue(accepts(port), "serv_b's web_b serves")
        self.assertNotIn("retry_in", self.web_b())
        self.assertRegex(self.pair.b.log_text(), r"listener web_b is ACTIVE after \d+ automatic retries")


# Takes 2 s to honour SIGTERM (the trap's sleep), as a worker finishing its requests would.
SLOW_TO_STOP = """\
trap 'echo "slow $PPID got TERM"; sleep 2; echo "slow $PPID exits"; exit 0' TERM
echo "slow $PPID started"
while true; do sleep 0.05; done
"""


def silent_address():
    """
    A loopback address whose connections neither succeed nor are refused (a
    witness that does not answer): a listening socket whose accept queue is
    full, so that the kernel drops new SYNs. Returns (its sockets, port).
    """
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = listener.getsockname()[1]
    sockets = [listener]
    for _ in range(8):
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        sockets.append(filler)
    return sockets, port


class SelfFenceTests(unittest.TestCase):
    THRESHOLD = 4.0

    def setUp(self):
        if not os.path.isdir("/proc/self"):
            raise unittest.SkipTest("needs /proc (Linux) to see every process of a group")
        self.workdir = temporary_directory(self)
        sockets, witness = silent_address()
        for s in sockets:
            self.addCleanup(s.close)
        probe = socket.socket()
        probe.settimeout(0.3)
        try:
            probe.connect(("127.0.0.1", witness))
            raise unittest.SkipTest("could not make a loopback address that does not answer (its SYNs were accepted)")
        except socket.timeout:
            pass
        except OSError as e:
            raise unittest.SkipTest(f"could not make a loopback address that does not answer: {e}")
        finally:
            probe.close()
        self.pair = Pair(self.workdir, interval=0.2, threshold=self.THRESHOLD, failover_extra=f"witness = 127.0.0.1:{witness}")
        self.pids = []
        self.addCleanup(self.kill_leftovers)
        self.addCleanup(self.pair.stop)

    def kill_leftovers(self):
        for pid in self.pids:
            try:
                os.killpg(pid, 9)
            except OSError:
                pass

    def test_a_self_fence_kills_a_worker_slow_to_stop_before_the_backups_threshold(self):
        """Backup gone, witness silent: serv_a fences itself and its worker, 2 s slow to stop, is SIGKILLed before the threshold."""
        path = os.path.join(self.workdir, "worker.sh")
        with open(path, "w") as f:
            f.write(SLOW_TO_STOP)
        self.pair.listeners = f"\n[listener:worker]\ncommand = sh {path}\nstop_timeout = 10\n"
        self.pair.write_config()
        # The backup first, so that serv_a has an answering backup from its start.
        self.pair.b.start(backup=True)
        self.pair.b.wait_role("backup")
        self.pair.a.start()
        self.pair.a.wait_role("live")
        a = self.pair.a
        pid = wait_for(
            lambda: (w := (a.status() or {}).get("listeners", {}).get("worker", {})).get("state") == "ACTIVE" and w.get("pid"),
            10, "serv_a's worker to run\n" + a.log_tail(),
        )
        self.pids.append(pid)
        wait_for(lambda: f"slow {pid} started" in a.log_text(), 10, "the worker to set its trap\n" + a.log_tail())
        wait_for(lambda: (self.pair.b.status() or {}).get("heartbeats", {}).get("received", 0) >= 2, 10,
                 "serv_b to hear serv_a\n" + self.pair.b.log_tail())

        cut = time.monotonic()
        self.pair.b.kill()
        wait_for(lambda: not group_members(pid), self.THRESHOLD + 5, f"the worker's group {pid} to be gone\n" + a.log_tail())
        gone = time.monotonic() - cut

        log = a.log_text()
        self.assertIn("self-fenced", (a.status() or {}).get("cause", ""), a.log_tail())
        self.assertIn(f"slow {pid} got TERM", log)
        self.assertNotIn(f"slow {pid} exits", log, "killed, not left to finish its 2 s")
        bound = float(re.search(r"still there ([0-9.]+)s after SIGTERM: sent SIGKILL", log).group(1))
        self.assertLessEqual(bound, self.THRESHOLD / 4, "at most half of the time left after half the threshold")
        self.assertLess(gone, self.THRESHOLD, f"the worker outlived the backup's threshold: gone {gone:.3f}s after the cut")
        self.assertEqual(a.status()["listeners"]["worker"]["state"], "WAITING")
