"""
Tests for L{iwayfailover.steady}: heartbeat sockets marked as network
control traffic, the real-time check (made on a thread of its own, so
nothing else changes), and the collector's freeze after start. Refusals
and the grants they name are tried on real nodes in test_steady_e2e.
"""

import gc
import os
import socket
import threading

from twisted.trial.unittest import TestCase

from iwayfailover import steady


class MarkTests(TestCase):
    def test_an_ipv4_socket_is_marked_network_control_and_first_in_the_hosts_queues(self):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        self.assertTrue(steady.mark_heartbeat_socket(sock))
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IP, socket.IP_TOS), steady.NETWORK_CONTROL)
        self.assertEqual(sock.getsockopt(socket.SOL_SOCKET, socket.SO_PRIORITY), steady.SOCKET_PRIORITY)

    def test_an_ipv6_socket_gets_the_same_traffic_class(self):
        sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        self.addCleanup(sock.close)
        self.assertTrue(steady.mark_heartbeat_socket(sock))
        self.assertEqual(sock.getsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS), steady.NETWORK_CONTROL)


class RealtimeCheckTests(TestCase):
    def test_the_check_changes_no_thread_of_the_caller(self):
        """Tried on a thread made for it: the calling thread keeps its policy, whatever the answer."""
        before = os.sched_getscheduler(0)
        try:
            steady.check_realtime()
        except steady.SteadyError as e:
            self.assertIn("CAP_SYS_NICE", str(e))  # not root here: the refusal names the grant
        self.assertEqual(os.sched_getscheduler(0), before)
        self.assertEqual(before, os.SCHED_OTHER)

    def test_a_thread_that_enters_realtime_runs_under_fifo(self):
        if os.geteuid() != 0:
            self.skipTest("needs root or CAP_SYS_NICE (CI runs as root)")
        seen = []

        def run():
            seen.append((steady.enter_realtime(), os.sched_getscheduler(0), os.sched_getparam(0).sched_priority))

        thread = threading.Thread(target=run)
        thread.start()
        thread.join()
        self.assertEqual(seen, [(None, os.SCHED_FIFO, steady.REALTIME_PRIORITY)])
        self.assertEqual(os.sched_getscheduler(0), os.SCHED_OTHER)


class FreezeTests(TestCase):
    def test_objects_made_before_are_left_out_of_the_collectors_passes(self):
        self.addCleanup(gc.unfreeze)
        kept = [object() for _ in range(1000)]
        steady.freeze_startup_objects()
        self.assertGreaterEqual(gc.get_freeze_count(), len(kept))
