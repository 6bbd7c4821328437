"""
End-to-end: the shared configuration read by real twistd nodes when the
share misbehaves. A FIFO in place of the file stands for a hung share (an
open that never returns); a file cut to nothing and filled in place, as a
copy over a share writes it, stands for a torn write.
"""

import ctypes
import os
import struct
import threading

from twisted.trial import unittest

from harness import PAIR_CONFIG, Pair, accepts, temporary_directory, wait_for

IN_CLOSE_NOWRITE = 0x10
IN_OPEN = 0x20
HUNG = "has not finished after"


class Reads:
    """
    Who opens and closes files in a folder (Linux inotify): lets a test
    hold a half-written file until a node has read it, without guessing how
    long that takes.
    """

    def __init__(self, folder):
        libc = ctypes.CDLL(None, use_errno=True)
        self.fd = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        if self.fd < 0:
            raise OSError(ctypes.get_errno(), "inotify_init1")
        if libc.inotify_add_watch(self.fd, os.fsencode(folder), IN_OPEN | IN_CLOSE_NOWRITE) < 0:
            os.close(self.fd)
            raise OSError(ctypes.get_errno(), "inotify_add_watch")
        self.opened = False

    def close(self):
        os.close(self.fd)

    def events(self):
        """(mask, name) of each event since the last call."""
        found = []
        while True:
            try:
                data = os.read(self.fd, 65536)
            except BlockingIOError:
                return found
            offset = 0
            while offset < len(data):
                _, mask, _, length = struct.unpack_from("iIII", data, offset)
                name = data[offset + 16:offset + 16 + length].rstrip(b"\0").decode()
                found.append((mask, name))
                offset += 16 + length

    def forget(self):
        """Drop what happened so far."""
        self.events()
        self.opened = False

    def read_through(self, name) -> bool:
        """Has someone opened C{name} since L{forget} and closed it without writing?"""
        for mask, seen in self.events():
            if seen != name:
                continue
            if mask & IN_OPEN:
                self.opened = True
            elif mask & IN_CLOSE_NOWRITE and self.opened:
                return True
        return False


class Sampler:
    """Both nodes' C{/api/status}, every 20 ms on a thread of its own, until stopped."""

    def __init__(self, pair):
        self.pair = pair
        self.samples = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="status-sampler", daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.samples.append(tuple(node.status() for node in (self.pair.a, self.pair.b)))
            self._stop.wait(0.02)

    def start(self):
        self._thread.start()
        return self

    def stop(self):
        self._stop.set()
        self._thread.join(10)


def listener_state(status, name="web"):
    if status is None:
        return "no answer"
    return status["listeners"].get(name, {}).get("state", "gone")


class HungShareTests(unittest.TestCase):
    """A read of the shared file that never returns: reported, and the node goes on serving."""

    def setUp(self):
        self.pair = Pair(temporary_directory(self), interval=0.2, threshold=1.0, reload_interval=0.2)
        self.addCleanup(self.pair.stop)
        self.fifo = os.path.join(self.pair.workdir, "hung.fifo")

    def hang_the_share(self):
        """Put a FIFO nobody writes in place of the file (atomically); a node that opens it blocks."""
        os.mkfifo(self.fifo)
        os.link(self.fifo, self.pair.config_path + ".new")
        os.replace(self.pair.config_path + ".new", self.pair.config_path)

    def release_the_share(self):
        """The file back in place, and every read blocked on the FIFO ends (a writer opens and closes it)."""
        self.pair.write_config()

        def opened():
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                return True
            except OSError:  # ENXIO: nobody is reading it
                return False

        wait_for(opened, 10, "a reader blocked on the FIFO")

    def hung_lines(self, node):
        return [line for line in node.log_text().splitlines() if HUNG in line]

    def test_a_hung_read_is_reported_once_and_the_nodes_keep_serving(self):
        """
        With the file a FIFO, each node's last_error names the hung read
        within 10 s and its log says so once; the live node keeps serving
        and the backup keeps hearing it; once the share answers again the
        end of the read is logged and last_error clears.
        """
        self.pair.start_both()
        wait_for(lambda: accepts(self.pair.web_port), 10, "the live node's listener")
        self.hang_the_share()

        for node in (self.pair.a, self.pair.b):
            status = wait_for(
                lambda: (s := node.status()) and HUNG in (s["config"]["last_error"] or "") and s,
                10, f"{node.name} to report the hung read\n{node.log_tail()}",
            )
            self.assertIn(f"reading {self.pair.config_path} {HUNG}", status["config"]["last_error"])
        wait_for(lambda: self.hung_lines(self.pair.a) and self.hung_lines(self.pair.b), 10, "the log lines")

        # Ten more reload intervals' worth of heartbeats: the nodes go on, and say it no more.
        received = self.pair.b.status()["heartbeats"]["received"]
        wait_for(
            lambda: self.pair.b.status()["heartbeats"]["received"] >= received + 10, 10,
            "serv_b to go on hearing serv_a\n" + self.pair.b.log_tail(),
        )
        self.assertEqual(self.pair.roles(), ("live", "backup"))
        self.assertEqual(listener_state(self.pair.a.status()), "ACTIVE")
        self.assertTrue(accepts(self.pair.web_port))
        self.assertEqual([len(self.hung_lines(node)) for node in (self.pair.a, self.pair.b)], [1, 1])

        self.release_the_share()
        for node in (self.pair.a, self.pair.b):
            wait_for(
                lambda: (s := node.status()) and s["config"]["last_error"] is None, 10,
                f"{node.name} to read the file again\n{node.log_tail()}",
            )
            self.assertIn("finished after", node.log_text())

    def test_a_node_whose_read_hangs_still_stops_on_sigterm(self):
        """A node with a read blocked on the share exits on SIGTERM within 10 s (the read does not hold the reactor's threads)."""
        self.pair.a.start()
        self.pair.a.wait_role("live")
        self.hang_the_share()
        wait_for(
            lambda: (s := self.pair.a.status()) and HUNG in (s["config"]["last_error"] or ""),
            10, "serv_a to report the hung read\n" + self.pair.a.log_tail(),
        )

        self.pair.a.process.terminate()

        self.assertIsNotNone(
            wait_for(lambda: self.pair.a.process.poll() is not None, 10, "serv_a to exit\n" + self.pair.a.log_tail())
        )


class TornWriteTests(unittest.TestCase):
    """A file written in place and read half-way through is never applied."""

    cycles = 3

    def setUp(self):
        # reload_interval 1 s: the two reads of a change are 0.5 s apart.
        self.pair = Pair(temporary_directory(self), interval=0.2, threshold=1.0, reload_interval=1.0)
        self.addCleanup(self.pair.stop)
        self.reads = Reads(self.pair.workdir)
        self.addCleanup(self.reads.close)

    def changing_lines(self):
        return sum(
            line.count("is changing; waiting for it to settle")
            for node in (self.pair.a, self.pair.b) for line in node.log_text().splitlines()
        )

    def write_torn(self, threshold):
        """
        Write the file in place with a new threshold, as a copy over a share
        does: cut to nothing, the part before the [listener:] sections, and
        the rest only once a node has read the file cut short.
        """
        self.pair.values["threshold"] = threshold
        text = (PAIR_CONFIG + self.pair.listeners).format(**self.pair.values).encode()
        cut = text.index(b"[listener:")
        name = os.path.basename(self.pair.config_path)
        with open(self.pair.config_path, "r+b") as f:
            f.truncate(0)
            f.write(text[:cut])
            f.flush()
            self.reads.forget()
            wait_for(lambda: self.reads.read_through(name), 10, "a node to read the file cut short", poll=0.001)
            f.write(text[cut:])

    def test_a_torn_write_is_never_applied_and_the_listener_stays_active(self):
        """
        Three times, the file is read cut just before its [listener:]
        sections (it still parses) and then completed: each time a node
        logs that the file is changing, the completed file is applied, and
        in every /api/status sample (every 20 ms) the live node's listener
        is ACTIVE and the backup's is WAITING.
        """
        self.pair.start_both()
        sampler = Sampler(self.pair).start()
        self.addCleanup(sampler.stop)

        for cycle in range(self.cycles):
            threshold = 1.5 + cycle / 2
            before = self.changing_lines()
            self.write_torn(threshold)
            wait_for(
                lambda: self.changing_lines() > before, 10,
                "a node to find the file changing\n" + self.pair.a.log_tail() + self.pair.b.log_tail(),
            )
            wait_for(
                lambda: all((node.status() or {}).get("settings", {}).get("threshold") == threshold
                            for node in (self.pair.a, self.pair.b)),
                10, f"both nodes to apply threshold {threshold}\n" + self.pair.a.log_tail() + self.pair.b.log_tail(),
            )
        sampler.stop()

        self.assertGreater(len(sampler.samples), 10)
        states = {(listener_state(a), listener_state(b)) for a, b in sampler.samples}
        self.assertEqual(states, {("ACTIVE", "WAITING")})
        self.assertEqual(self.pair.roles(), ("live", "backup"))
