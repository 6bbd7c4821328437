"""
`make run` from outside, as a new user runs it: a second `make run` while a
pair runs refuses before it starts anything, exits non-zero and leaves the
running pair's pid files alone; a run removes only the pid files it wrote.

Each test runs the project's Makefile with `make -C` in a folder of its own
(its .run/ there), on a pair configuration with ports of its own
(L{harness.Pair}), with the installed copy's bin folder as the Makefile's
venv and its prerequisites (the install's stamp, the key, the console users)
taken as made (`make -o`); the tests of what a refused run installs give it
a venv of their own instead, whose python logs its calls and installs nothing.
"""

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys

from twisted.trial import unittest

from harness import Pair, temporary_directory, wait_for

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAKEFILE = os.path.join(SOURCE_TREE, "Makefile")
VENV = os.path.dirname(os.path.dirname(sys.executable))


class MakeRunTests(unittest.TestCase):
    def setUp(self):
        if not os.path.isfile(MAKEFILE) or shutil.which("make") is None:
            raise unittest.SkipTest("needs the source tree's Makefile and make")
        self.folder = temporary_directory(self)
        self.pair = Pair(os.path.join(self.folder, "pair"), interval=0.2, threshold=1.0)
        os.makedirs(os.path.join(self.folder, "conf"))
        with open(os.path.join(self.folder, "conf", "console-password"), "w") as f:
            f.write("not-a-real-password\n")
        self.run_folder = os.path.join(self.folder, ".run")
        self.runs = []
        self.addCleanup(self.stop_all)

    def make_argv(self, venv=VENV, installed=True):
        """
        `make run` in the test's folder with C{venv} as its venv, the key and
        console users taken as made, and the install too if C{installed}.
        """
        argv = [
            "make", "--no-print-directory", "-f", MAKEFILE, "-C", self.folder, "run", f"VENV={venv}",
            f"CONF={self.pair.config_path}", "-o", "conf/failover.key", "-o", "conf/console-users",
        ]
        return argv + (["-o", f"{venv}/.installed"] if installed else [])

    def start_run(self):
        """`make run` in a process group of its own (as in a terminal), its output in a file."""
        out = open(os.path.join(self.folder, f"make-{len(self.runs)}.out"), "w+")
        self.addCleanup(out.close)
        process = subprocess.Popen(self.make_argv(), stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        self.runs.append(process)
        return process, out

    def make_run_once(self, argv=None):
        """A `make run` expected to return at once: its exit status and output."""
        process = subprocess.Popen(argv or self.make_argv(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True, start_new_session=True)
        self.runs.append(process)  # killed with all it started, should it start anything
        try:
            text, _ = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("make run did not return within 60 s (it started the pair?)")
        return process.returncode, text

    def stop_all(self):
        for process in self.runs:
            try:
                os.killpg(process.pid, signal.SIGKILL)  # make, its shell and every node it started
            except ProcessLookupError:
                pass
            process.wait(timeout=10)

    def pid_file(self, name):
        path = os.path.join(self.run_folder, f"{name}.pid")
        try:
            with open(path) as f:
                return f.read().strip()
        except FileNotFoundError:
            return None

    def write_pid_file(self, name, pid):
        os.makedirs(self.run_folder, exist_ok=True)
        with open(os.path.join(self.run_folder, f"{name}.pid"), "w") as f:
            f.write(f"{pid}\n")

    def test_second_make_run_refuses_and_leaves_the_running_pair_alone(self):
        """
        While a `make run` pair runs, a second `make run` says what runs and
        how to stop it, exits non-zero, starts nothing and keeps the pid
        files; Ctrl-C then stops the first, which removes its own pid files.
        """
        first, out = self.start_run()
        wait_for(lambda: self.pair.roles() == ("live", "backup"), 30, "the first make run's serv_a live, serv_b backup")
        pids = (self.pair_pid("serv_a"), self.pair_pid("serv_b"))
        self.assertTrue(all(pids), pids)

        code, text = self.make_run_once()

        self.assertNotEqual(code, 0, text)
        self.assertIn(f"serv_a runs already (pid {pids[0]}, in .run/serv_a.pid): stop it first", text)
        self.assertNotIn("console login", text)  # refused before the banner
        self.assertEqual((self.pid_file("serv_a"), self.pid_file("serv_b")), pids)
        self.assertEqual(self.pair.roles(), ("live", "backup"))

        os.killpg(first.pid, signal.SIGINT)
        first.wait(timeout=30)
        wait_for(lambda: self.pid_file("serv_a") is None and self.pid_file("serv_b") is None, 10,
                 "the first make run to remove the pid files it wrote")
        out.seek(0)
        banner = out.read()
        self.assertIn(f"iwsrv -b --config {self.pair.config_path} --name serv_a --state-dir .run/serv_a", banner)
        self.assertIn(f"iwsrv -b --config {self.pair.config_path} --name serv_b --state-dir .run/serv_b", banner)

    def pair_pid(self, name):
        return wait_for(lambda: self.pid_file(name), 10, f".run/{name}.pid")

    def test_make_run_refuses_when_a_port_of_the_pair_is_taken(self):
        """
        Something listening on a port of the pair (the web channel's, read
        from the configuration): `make run` names it and exits non-zero, and
        a stale pid file (a pid that is no node) is neither a refusal nor
        touched.
        """
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", self.pair.web_port))
        busy.listen(1)
        unrelated = str(os.getpid())  # alive, but its command line names no node
        self.write_pid_file("serv_a", unrelated)

        code, text = self.make_run_once()

        self.assertNotEqual(code, 0, text)
        self.assertIn(f"something already listens on 127.0.0.1 port {self.pair.web_port}", text)
        if shutil.which("ss"):  # iproute2's ss names what holds it: this test's process
            self.assertIn(f"port {self.pair.web_port} (held by ", text)
            self.assertIn(f", pid {os.getpid()})", text)
        self.assertNotIn("runs already", text)
        self.assertEqual((self.pid_file("serv_a"), self.pid_file("serv_b")), (unrelated, None))
        self.assertIsNone(self.pair.a.status())

    def logging_venv(self):
        """
        A venv for the Makefile whose bin/python logs each call's arguments to
        a file and refuses `-m pip` (else it runs this Python), with an install
        stamp older than the package's files: a make that installs would run
        pip now. Returns the venv's path and a function giving the calls.
        """
        venv = os.path.join(self.folder, "logging-venv")
        calls = os.path.join(self.folder, "python-calls")
        os.makedirs(os.path.join(venv, "bin"))
        python = os.path.join(venv, "bin", "python")
        with open(python, "w") as f:
            f.write(f'#!/bin/sh\nprintf "%s\\n" "$*" >> {shlex.quote(calls)}\n'
                    f'[ "$1 $2" = "-m pip" ] && exit 3\nexec {shlex.quote(sys.executable)} "$@"\n')
        os.chmod(python, 0o755)
        stamp = os.path.join(venv, ".installed")
        open(stamp, "w").close()
        os.utime(stamp, (1, 1))
        with open(os.path.join(self.folder, "setup.cfg"), "w") as f:  # newer than the stamp
            f.write("[metadata]\nname = iwayfailover\n")

        def logged():
            try:
                with open(calls) as f:
                    return f.read().splitlines()
            except FileNotFoundError:
                return []

        return venv, logged

    def a_running_serv_a(self):
        """A process whose command line names serv_a, in .run/serv_a.pid (as a running pair's is)."""
        process = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.read()", "serv_a"],
                                   stdin=subprocess.PIPE)
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.kill)
        self.write_pid_file("serv_a", process.pid)
        return process.pid

    def assert_refused_installing_nothing(self, code, text, said, venv, logged):
        """`make run` failed saying C{said}, ran no pip and left the install stamp as it was."""
        self.assertNotEqual(code, 0, text)
        self.assertIn(said, text)
        self.assertEqual([call for call in logged() if call.startswith("-m pip")], [])
        self.assertEqual(os.stat(os.path.join(venv, ".installed")).st_mtime, 1)

    def test_a_refused_make_run_installs_nothing(self):
        """
        A pair runs (its pid file names a live serv_a) and the package's files
        are newer than the venv's install: `make run` refuses before it
        installs (no pip, the stamp untouched), so the running pair's copy is
        not rewritten under it.
        """
        venv, logged = self.logging_venv()
        pid = self.a_running_serv_a()

        code, text = self.make_run_once(self.make_argv(venv, installed=False))

        self.assert_refused_installing_nothing(
            code, text, f"serv_a runs already (pid {pid}, in .run/serv_a.pid)", venv, logged)

    def test_a_make_run_refused_for_a_port_installs_nothing(self):
        """
        A port of the pair is taken and the package's files are newer than
        the venv's install: `make run` reads the ports with the installed copy
        it has, refuses naming the port, and installs nothing.
        """
        venv, logged = self.logging_venv()
        busy = socket.socket()
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", self.pair.web_port))
        busy.listen(1)

        code, text = self.make_run_once(self.make_argv(venv, installed=False))

        self.assert_refused_installing_nothing(
            code, text, f"something already listens on 127.0.0.1 port {self.pair.web_port}", venv, logged)

    def test_a_refused_make_run_makes_no_venv(self):
        """With no venv (so no pair runs from it), the pid files alone refuse, before a venv is made."""
        venv = os.path.join(self.folder, "no-venv")
        pid = self.a_running_serv_a()

        code, text = self.make_run_once(self.make_argv(venv, installed=False))

        self.assertNotEqual(code, 0, text)
        self.assertIn(f"serv_a runs already (pid {pid}, in .run/serv_a.pid)", text)
        self.assertFalse(os.path.exists(venv))

    def test_a_node_brought_back_by_the_banners_line_writes_its_pid_file(self):
        """
        serv_a killed, the banner's line brings it back as the backup with its
        own pid in .run/serv_a.pid, so `kill -9 $(cat .run/serv_a.pid)` stops
        the node that runs now.
        """
        first, out = self.start_run()
        wait_for(lambda: self.pair.roles() == ("live", "backup"), 30, "serv_a live, serv_b backup")
        os.kill(int(self.pair_pid("serv_a")), signal.SIGKILL)
        wait_for(lambda: self.pair.roles() == (None, "live"), 30, "serv_b to take over")
        out.seek(0)
        lines = [line.strip() for line in out.read().splitlines() if "--name serv_a --state-dir" in line]
        self.assertEqual(len(lines), 1, lines)

        back = subprocess.Popen(shlex.split(lines[0]), cwd=self.folder, stdin=subprocess.DEVNULL,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        self.runs.append(back)
        wait_for(lambda: self.pair.roles() == ("backup", "live"), 30, "serv_a back as the backup")

        self.assertEqual(self.pid_file("serv_a"), str(back.pid))
        os.kill(int(self.pid_file("serv_a")), signal.SIGKILL)
        self.assertEqual(back.wait(timeout=10), -signal.SIGKILL)
