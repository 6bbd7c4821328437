"""
End to end, real twistd nodes on loopback: what keeps the heartbeat on
time on a busy host (iwayfailover.steady) is granted or refused as a
service manager would grant it.

Refused: the node runs under setpriv and prlimit without the capability
and with a zero limit (what a unit without AmbientCapabilities= or
LimitRTPRIO= gives), and must not start: one line that names the grant.
Granted (root, as in CI): the live node's pulse thread, and only it, runs
under SCHED_FIFO, its memory is locked, and its heartbeat sockets are
marked as network control traffic.
"""

import os
import subprocess

from twisted.trial.unittest import TestCase

from harness import Pair, temporary_directory, wait_for

WITHOUT_REALTIME = ("setpriv", "--bounding-set=-sys_nice", "prlimit", "--rtprio=0", "--")
WITHOUT_LOCKING = ("setpriv", "--bounding-set=-ipc_lock", "prlimit", "--memlock=65536", "--")
GRANTED_BY_LIMITS = ("prlimit", "--rtprio=1:1", "--memlock=unlimited", "--", "setpriv", "--bounding-set=-sys_nice,-ipc_lock", "--")
"""The grant docs/operations.md gives (LimitRTPRIO=1, LimitMEMLOCK=infinity), without either capability."""


def policies(pid):
    """{thread id: scheduling policy} of every thread of process C{pid} (/proc/PID/task/TID/stat, field 41)."""
    found = {}
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue  # a thread that has just ended
        found[int(tid)] = int(fields[41 - 3])
    return found


def locked_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    return 0


class SteadyNodeTests(TestCase):
    def pair(self, extra):
        pair = Pair(temporary_directory(self), interval=0.1, threshold=0.5, failover_extra=extra)
        self.addCleanup(pair.stop)
        return pair

    def assert_refused(self, extra, prefix, first, grants):
        """
        serv_a, with C{extra} in [failover], started under C{prefix}, must exit by itself, unsuccessfully,
        saying C{first} and naming every one of C{grants}, with no traceback.
        """
        node = self.pair(extra).a
        node.start(prefix=prefix)
        wait_for(lambda: node.process.poll() is not None, 20.0, f"{node.name} to refuse to start\n{node.log_tail()}")
        said = node.process.stderr.read().decode("utf-8", "replace") + node.log_text()
        self.assertNotEqual(node.process.returncode, 0, said)
        for text in (first, *grants):
            self.assertIn(text, said)
        self.assertNotIn("Traceback", said)

    def test_a_node_denied_real_time_scheduling_refuses_to_start_naming_the_grant(self):
        self.assert_refused("pulses = true\nrealtime = true", WITHOUT_REALTIME,
                            "realtime = true needs the right to real-time scheduling",
                            ("CAP_SYS_NICE", "AmbientCapabilities=CAP_SYS_NICE", "LimitRTPRIO=1"))

    def test_a_node_denied_locked_memory_refuses_to_start_naming_the_grant(self):
        self.assert_refused("lock_memory = true", WITHOUT_LOCKING, "lock_memory = true could not lock the node's memory",
                            ("CAP_IPC_LOCK", "LimitMEMLOCK=infinity", "now 64 KiB"))

    def test_a_node_denied_both_names_both_grants_in_one_line(self):
        self.assert_refused("pulses = true\nrealtime = true\nlock_memory = true",
                            ("setpriv", "--bounding-set=-sys_nice,-ipc_lock", "prlimit", "--rtprio=0", "--memlock=65536", "--"),
                            "realtime = true needs the right to real-time scheduling",
                            ("; and lock_memory = true could not lock", "RestrictRealtime=no", "LimitMEMLOCK=infinity"))

    def granted(self, prefix=()):
        """A pair with pulses, realtime and lock_memory, run under C{prefix}: serv_a's real-time thread and locked memory."""
        pair = self.pair("pulses = true\nrealtime = true\nlock_memory = true")
        pair.a.start(prefix=prefix)
        pair.a.wait_role("live", timeout=20)
        pair.b.start(backup=True, prefix=prefix)
        pair.b.wait_role("backup", timeout=20)
        wait_for(lambda: (pair.b.status() or {}).get("heartbeats", {}).get("pulses", {}).get("received", 0) > 5,
                 10.0, "serv_b to hear serv_a's pulses\n" + pair.a.log_tail() + pair.b.log_tail())
        pid = pair.a.process.pid
        found = wait_for(lambda: (p := policies(pid)) and list(p.values()).count(os.SCHED_FIFO) == 1 and p,
                         10.0, f"one real-time thread in serv_a: {policies(pid)}")
        self.assertEqual(found[pid], os.SCHED_OTHER, "the reactor's thread is not real-time")
        self.assertGreater(locked_kib(pid), 1024, "the node's memory is locked")
        self.assertEqual([p for t, p in policies(pair.b.process.pid).items() if p != os.SCHED_OTHER], [],
                         "a backup sends no pulses: no real-time thread")
        self.assertNotIn("is not real-time", pair.a.log_text())

    def test_granted_by_capabilities_the_pulse_thread_alone_is_real_time_and_the_memory_is_locked(self):
        """CAP_SYS_NICE and CAP_IPC_LOCK (root has both; a unit gives them with AmbientCapabilities=)."""
        if os.geteuid() != 0:
            self.skipTest("needs root (CI runs as root), or CAP_SYS_NICE and CAP_IPC_LOCK")
        self.granted()

    def test_granted_by_resource_limits_alone_as_the_documented_drop_in_does(self):
        """LimitRTPRIO=1 and LimitMEMLOCK=infinity, both capabilities dropped (docs/operations.md's drop-in)."""
        raised = subprocess.run(["prlimit", "--rtprio=1:1", "--memlock=unlimited", "--", "true"], capture_output=True)
        if raised.returncode != 0:
            self.skipTest("this machine cannot raise a hard resource limit (no CAP_SYS_RESOURCE here):"
                          f" {raised.stderr.decode().strip()}")
        self.granted(GRANTED_BY_LIMITS)

    def test_heartbeat_connections_are_marked_network_control(self):
        pair = self.pair("").start_both()
        port = str(pair.ports["hb_b"])

        def marked():
            lines = subprocess.run(["ss", "-tnH", "--tos", "state", "established"], capture_output=True, text=True,
                                   check=True).stdout.splitlines()
            link = [line for line in lines if f":{port} " in line]
            return len(link) == 2 and all("tos:0xc0" in line and "class_id:0x6" in line for line in link) and link

        wait_for(marked, 10.0, "the heartbeat link to serv_b marked on both ends (tos 0xc0, priority 6)")
