"""
End to end: a live node whose wall clock is stepped keeps heartbeating
(issue 11, failure 9).

The live node runs under libfaketime (Debian package libfaketime) with a
timestamp file: only its wall clock (CLOCK_REALTIME) is stepped, 5 s back
and then forward again; its monotonic clock is left alone. Its backup
(threshold 2 s, heartbeats every 0.2 s) must never take over. A node that
timed its heartbeats on the wall clock would fall silent for the 5 s of the
step, well past the threshold; 2 s rather than 1 s leaves room for the
stalls libfaketime itself causes on a loaded machine (a clock read behind
its lock and its timestamp file), which are not the node's.
"""

import email.utils
import glob
import http.client
import os
import time
import unittest

from harness import Pair, temporary_directory, wait_for

# Not libfaketimeMT: it serialises every clock read of the process behind
# one lock, and CPython's GIL hand-over (which reads the clock) then stalls
# a busy thread's neighbours for up to a second, which looks like the very
# fault this test is about.
LIBFAKETIME = next(iter(sorted(glob.glob("/usr/lib/*/faketime/libfaketime.so.1"))), None)

STEP = 5.0
"""How far the live node's wall clock is stepped back, in seconds."""


def write_atomically(path, text):
    """Replace C{path}'s content at once: libfaketime rereads it at every clock read."""
    temporary = path + ".tmp"
    with open(temporary, "w") as f:
        f.write(text)
    os.replace(temporary, path)


def console_date(port):
    """The Date header of a console's answer: the node's own wall clock (to the second), as a POSIX time."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2.0)
    try:
        connection.request("GET", "/api/status")
        response = connection.getresponse()
        response.read()
        return email.utils.parsedate_to_datetime(response.getheader("Date")).timestamp()
    finally:
        connection.close()


def faketime_segments(pid: int) -> list:
    """The shared memory segment and semaphore libfaketime makes for process C{pid} (in /dev/shm)."""
    return [f"/dev/shm/faketime_shm_{pid}", f"/dev/shm/sem.faketime_sem_{pid}"]


@unittest.skipIf(LIBFAKETIME is None, "libfaketime is not installed (Debian package libfaketime; make system-packages)")
class WallClockStepTests(unittest.TestCase):
    def setUp(self):
        workdir = temporary_directory(self)
        self.stamp = os.path.join(workdir, "faketime")
        write_atomically(self.stamp, "+0\n")
        self.pair = Pair(workdir, interval=0.2, threshold=2.0)
        self.addCleanup(self.pair.stop)
        # The timestamp file is read again at most once a second. Not
        # FAKETIME_NO_CACHE=1: reading it at every clock read, from the
        # reactor and from the configuration poller's thread at once, stalls
        # the node for a second or more after a step, even with its timers on
        # the monotonic clock: libfaketime's fault, not the node's.
        faked = {
            "LD_PRELOAD": LIBFAKETIME,
            "FAKETIME_TIMESTAMP_FILE": self.stamp,
            "FAKETIME_CACHE_DURATION": "1",
            "FAKETIME_DONT_FAKE_MONOTONIC": "1",
        }
        pair = self.pair
        pair.a.start(env=faked)
        self.addCleanup(self.remove_faketime_segments, pair.a)
        pair.a.wait_role("live", timeout=20)
        pair.b.start(backup=True)
        pair.b.wait_role("backup", timeout=20)
        wait_for(lambda: self.received() >= 2, 20, "serv_b to hear serv_a\n" + pair.b.log_tail())

    def received(self):
        """Heartbeats serv_b has heard so far; fails the test at once if either node has left its role."""
        # A generous timeout: under libfaketime a loaded machine can hold an answer for a second or so.
        a, b = self.pair.a.status(timeout=5), self.pair.b.status(timeout=5)
        self.assertIsNotNone(a, "serv_a stopped answering\n" + self.pair.a.log_tail())
        self.assertIsNotNone(b, "serv_b stopped answering\n" + self.pair.b.log_tail())
        self.assertEqual(b["role"], "backup", "serv_b took over\n" + self.pair.a.log_tail() + self.pair.b.log_tail())
        self.assertEqual(a["role"], "live", "serv_a left the live role\n" + self.pair.a.log_tail())
        return b["heartbeats"]["received"]

    def heartbeats_go_on(self, count, what):
        """Wait until serv_b has heard C{count} more heartbeats, both nodes keeping their roles all along."""
        target = self.received() + count
        wait_for(lambda: self.received() >= target, 10 + count * 0.2, f"{count} heartbeats {what}\n" + self.pair.b.log_tail())

    @staticmethod
    def remove_faketime_segments(node) -> None:
        """Stop the node first, then remove what libfaketime left in /dev/shm for it (it does not when stopped)."""
        node.stop()
        for path in faketime_segments(node.process.pid):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass

    def test_a_live_node_whose_wall_clock_steps_back_and_forward_keeps_heartbeating(self):
        """serv_a's wall clock 5 s back, then forward again: serv_b hears every heartbeat and never takes over."""
        console = self.pair.ports["console_a"]
        write_atomically(self.stamp, f"-{STEP:g}\n")
        # The step took hold in serv_a (its Date header is its own wall clock, to the second).
        wait_for(lambda: time.time() - console_date(console) >= STEP - 1.5, 5, "serv_a's wall clock to step back")
        # 30 heartbeats (6 s at 0.2 s): more than the step, three times the backup's threshold.
        self.heartbeats_go_on(30, "after serv_a's wall clock stepped back")
        write_atomically(self.stamp, "+0\n")
        wait_for(lambda: abs(time.time() - console_date(console)) < 1.5, 5, "serv_a's wall clock to step forward")
        self.heartbeats_go_on(30, "after serv_a's wall clock stepped forward")
        transitions = [t["to"] for t in self.pair.b.status()["transitions"]]
        self.assertNotIn("live", transitions, self.pair.b.log_tail())
        self.assertEqual([t["to"] for t in self.pair.a.status()["transitions"]].count("live"), 1, self.pair.a.log_tail())
