"""
The example client (examples/failover_client.py) against a real pair: it
holds a connection to the live node's web channel through a failover
endpoint and, when the live node is killed, its next connection reaches the
new live node.
"""

import os
import subprocess
import sys
import threading

from twisted.trial import unittest

from harness import Pair, temporary_directory, wait_for

EXAMPLE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "examples", "failover_client.py")


class Lines:
    """The lines a child process prints, gathered by a thread as they come."""

    def __init__(self, stream):
        self.lines = []
        self._thread = threading.Thread(target=self._read, args=(stream,), daemon=True)
        self._thread.start()

    def _read(self, stream):
        for line in stream:
            self.lines.append(line.rstrip("\n"))

    def has(self, text):
        return any(text in line for line in list(self.lines))

    def after(self, text, later):
        """Is there a line with C{later} after the first line with C{text}?"""
        lines = list(self.lines)
        for n, line in enumerate(lines):
            if text in line:
                return any(later in rest for rest in lines[n + 1:])
        return False


class FailoverClientTests(unittest.TestCase):
    def setUp(self):
        if not os.path.isfile(EXAMPLE):
            raise unittest.SkipTest(f"needs the source tree's example: {EXAMPLE}")
        # Each node serves its own port, as two hosts would serve the same one.
        self.pair = Pair(temporary_directory(self), interval=0.2, threshold=1.0, own_listeners=True)
        self.addCleanup(self.pair.stop)

    def client(self, *addresses):
        process = subprocess.Popen(
            [sys.executable, EXAMPLE, *addresses, "--timeout", "1", "--every", "0.1"],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )

        def stop():
            process.kill()
            process.wait(timeout=10)
            process.stdout.close()

        self.addCleanup(stop)
        return Lines(process.stdout)

    def test_the_client_reconnects_to_the_new_live_node_after_kill_9(self):
        """Connected to serv_a's channel; serv_a is killed; the client's next connection, through the failover, reaches serv_b's."""
        self.pair.start_both()
        a = f"127.0.0.1:{self.pair.ports['web_a']}"
        b = f"127.0.0.1:{self.pair.ports['web_b']}"
        out = self.client(a, b)
        wait_for(lambda: out.has(f"{a} answered HTTP/1.1 200 OK"), 10, f"the client served by serv_a: {out.lines}")
        self.assertFalse(out.has(f"connected to {b}"), "the live node's address is tried first")

        self.pair.a.kill()
        self.pair.b.wait_role("live")
        wait_for(
            lambda: out.after(f"lost the connection to {a}", f"{b} answered HTTP/1.1 200 OK"), 10,
            f"the client to reconnect to serv_b: {out.lines}\n{self.pair.b.log_tail()}",
        )
        self.assertTrue(out.after(f"lost the connection to {a}", f"could not connect to {a} ("), "the failover endpoint tried serv_a first")
        self.assertTrue(out.after(f"could not connect to {a} (", f"connected to {b}"))

    def test_the_client_takes_a_failover_string(self):
        """The example also takes a failover: endpoint string as it is, found through the endpoint plugin."""
        self.pair.b.start()  # serv_a is not running: its address refuses
        self.pair.b.wait_role("live")
        a = self.pair.ports["web_a"]
        b = self.pair.ports["web_b"]
        out = self.client(rf"failover:127.0.0.1\:{a}:127.0.0.1\:{b}:timeout=1")
        wait_for(lambda: out.has(f"127.0.0.1:{b} answered HTTP/1.1 200 OK"), 10, f"the client served by serv_b: {out.lines}")
