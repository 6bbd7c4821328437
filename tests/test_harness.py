"""
The end-to-end harness's port allocation: ports outside the kernel's
ephemeral range, never handed out twice by two test processes, never one
something is bound to; and refused ports that stay refused.
"""

import os
import socket
import subprocess
import sys

from twisted.trial import unittest

from harness import allocate_port, allocation_range, refused_port, temporary_directory

HERE = os.path.dirname(os.path.abspath(__file__))

# Says it is ready, waits for the word to go, then allocates as fast as it can.
ALLOCATE = """
import sys
from harness import allocate_port
print("ready", flush=True)
sys.stdin.readline()
print(" ".join(str(allocate_port(sys.argv[1])) for _ in range(int(sys.argv[2]))))
"""


class RangeTests(unittest.TestCase):
    def proc_file(self, text):
        """A stand-in for /proc/sys/net/ipv4/ip_local_port_range holding C{text}."""
        path = os.path.join(temporary_directory(self), "ip_local_port_range")
        with open(path, "w") as f:
            f.write(text)
        return path

    def test_the_default_ephemeral_range_leaves_20000_to_32767(self):
        """With Linux's default ephemeral range 32768-60999, tests take 20000-32767."""
        self.assertEqual(allocation_range(self.proc_file("32768\t60999\n")), range(20000, 32768))

    def test_a_low_ephemeral_range_puts_the_test_ports_above_it(self):
        """An ephemeral range 10000-40000 leaves 40001-65535, where the test ports go."""
        self.assertEqual(allocation_range(self.proc_file("10000 40000\n")), range(40001, 65536))

    def test_an_ephemeral_range_that_leaves_no_room_is_an_error_naming_it(self):
        """An ephemeral range covering nearly every port is refused, naming the range and the file."""
        path = self.proc_file("1024 65000\n")
        error = self.assertRaises(RuntimeError, allocation_range, path)
        self.assertIn("1024-65000", str(error))
        self.assertIn(path, str(error))

    def test_allocated_ports_are_outside_this_hosts_ephemeral_range(self):
        """A port handed out here is one the kernel never picks for an outbound connection or a bind to port 0."""
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low, high = (int(n) for n in f.read().split())
        cursor = os.path.join(temporary_directory(self), "ports")
        for port in (allocate_port(cursor) for _ in range(5)):
            self.assertFalse(low <= port <= high, port)
            self.assertGreaterEqual(port, 20000)


class AllocationTests(unittest.TestCase):
    """
    Allocation from a cursor file of the test's own, over ports taken for
    the test from the shared allocator (so free, and no other test's).
    """

    def setUp(self):
        self.cursor = os.path.join(temporary_directory(self), "ports")

    def test_each_port_is_handed_out_once_and_the_cursor_wraps(self):
        """Allocation walks the ports in order, each once, and starts again at the first after the last."""
        ports = [allocate_port() for _ in range(3)]
        got = [allocate_port(self.cursor, ports) for _ in range(4)]
        self.assertEqual(got, [ports[0], ports[1], ports[2], ports[0]])

    def test_a_port_something_is_bound_to_is_skipped(self):
        """A port in use (here a listening socket) is passed over for the next one."""
        ports = [allocate_port() for _ in range(2)]
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", ports[0]))
        busy.listen(1)
        self.assertEqual(allocate_port(self.cursor, ports), ports[1])

    def test_an_unreadable_cursor_starts_at_the_first_port(self):
        """A cursor file holding something that is not one of the ports is read as the first port."""
        ports = [allocate_port() for _ in range(2)]
        for text in ("garbage", "99999"):
            with open(self.cursor, "w") as f:
                f.write(text)
            self.assertEqual(allocate_port(self.cursor, ports), ports[0], text)

    def test_two_processes_never_get_the_same_port(self):
        """Test processes allocating at the same moment from one cursor file get distinct ports."""
        count, each = 4, 300
        children = [
            subprocess.Popen(
                [sys.executable, "-c", ALLOCATE, self.cursor, str(each)], cwd=HERE,
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )
            for _ in range(count)
        ]
        for child in children:
            self.addCleanup(lambda c=child: c.poll() is None and (c.kill(), c.wait()))
            self.assertEqual(child.stdout.readline(), "ready\n", "a child did not start")
        ports = []
        for child in children:  # all go at once
            child.stdin.write("go\n")
            child.stdin.flush()
        for child in children:
            out, err = child.communicate(timeout=60)
            self.assertEqual(child.returncode, 0, err)
            ports += [int(p) for p in out.split()]
        self.assertEqual(len(ports), count * each)
        self.assertEqual(len(set(ports)), count * each)


class RefusedPortTests(unittest.TestCase):
    def test_a_refused_port_refuses_and_cannot_be_taken_while_the_test_runs(self):
        """Connecting to it is refused, and binding it elsewhere fails, until the test's cleanup."""
        port = refused_port(self)
        self.assertRaises(ConnectionRefusedError, socket.create_connection, ("127.0.0.1", port), 2)
        with socket.socket() as other:
            self.assertRaises(OSError, other.bind, ("127.0.0.1", port))
