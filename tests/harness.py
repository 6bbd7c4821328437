"""
End-to-end harness: real twistd processes on 127.0.0.1 and ephemeral ports.

Every wait is on a condition with a deadline; every process a test starts
is killed and reaped when the test ends, whatever its outcome.
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
IWSRV = os.path.join(BIN, "iwsrv")


def temporary_directory(testcase) -> str:
    """A new folder, removed with everything in it when C{testcase} ends."""
    path = tempfile.mkdtemp(prefix="iwayfailover-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


def free_port() -> int:
    """An ephemeral TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition, timeout: float, what: str, poll: float = 0.02):
    """
    Call C{condition} until it returns something true, or fail after
    C{timeout} seconds naming C{what}. Returns the true value.
    """
    deadline = time.monotonic() + timeout
    pause = threading.Event()
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        pause.wait(poll)


def accepts(port: int, host: str = "127.0.0.1") -> bool:
    """Does something accept TCP connections on C{port}?"""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


class Node:
    """One iway-failover node run by twistd in the foreground."""

    def __init__(self, workdir, config_path, name, console_port):
        self.workdir = workdir
        self.config_path = config_path
        self.name = name
        self.console_port = console_port
        self.state_dir = os.path.join(workdir, f"state-{name}")
        self.logfile = os.path.join(workdir, f"{name}.log")
        self.process = None

    def start(self, backup=False, env=None, extra=()):
        argv = [
            TWISTD, "--nodaemon", "--pidfile=", f"--logfile={self.logfile}",
            "iway-failover", "--config", self.config_path, "--name", self.name, "--state-dir", self.state_dir,
            *extra,
        ]
        if backup:
            argv.append("--backup")
        environment = dict(os.environ)
        environment.pop("IWAY_BACKUP", None)
        environment.update(env or {})
        self.process = subprocess.Popen(
            argv, cwd=self.workdir, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        return self

    def status(self):
        """The node's /api/status object, or None if it does not answer."""
        try:
            connection = http.client.HTTPConnection("127.0.0.1", self.console_port, timeout=1)
            connection.request("GET", "/api/status")
            response = connection.getresponse()
            body = response.read()
            connection.close()
        except OSError:
            return None
        if response.status != 200:
            return None
        return json.loads(body)

    def wait_role(self, role, timeout=10.0):
        return wait_for(
            lambda: (s := self.status()) is not None and s["role"] == role and s,
            timeout, f"{self.name} to report role {role}\n{self.log_tail()}",
        )

    def signal(self, number):
        self.process.send_signal(number)

    def kill(self):
        """kill -9, and reap it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=10)

    def stop(self):
        """End the process whatever state it is in (stopped, running, gone)."""
        if self.process is None or self.process.poll() is not None:
            return
        try:
            self.process.send_signal(signal.SIGCONT)
            self.process.terminate()
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.kill()
        finally:
            if self.process.stderr:
                self.process.stderr.close()

    def log_tail(self, lines=40):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return "--- log of %s ---\n%s" % (self.name, "".join(f.readlines()[-lines:]))
        except OSError:
            return f"--- no log for {self.name} ---"


PAIR_CONFIG = """\
[failover]
heartbeat_interval = {interval}
reload_interval = {reload_interval}

[server:serv_a]
backup_location = 127.0.0.1:{hb_b}
heartbeat_port = tcp:{hb_a}:interface=127.0.0.1
threshold = {threshold}
console = tcp:{console_a}:interface=127.0.0.1

[server:serv_b]
backup_location = 127.0.0.1:{hb_a}
heartbeat_port = tcp:{hb_b}:interface=127.0.0.1
threshold = {threshold}
console = tcp:{console_b}:interface=127.0.0.1

[listener:web]
plugin = web --listen tcp:{web}:interface=127.0.0.1 --path {www}
"""


class Pair:
    """Two nodes, serv_a and serv_b, each the other's backup, sharing one configuration file."""

    def __init__(self, workdir, interval=0.2, threshold=1.0, reload_interval=0.2):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.www = os.path.join(workdir, "www")
        os.makedirs(self.www, exist_ok=True)
        with open(os.path.join(self.www, "index.html"), "w") as f:
            f.write("served by the live node\n")
        self.ports = {k: free_port() for k in ("hb_a", "hb_b", "console_a", "console_b", "web")}
        self.values = dict(self.ports, interval=interval, threshold=threshold, reload_interval=reload_interval, www=self.www)
        self.config_path = os.path.join(workdir, "iwayfailover.ini")
        self.write_config()
        self.a = Node(workdir, self.config_path, "serv_a", self.ports["console_a"])
        self.b = Node(workdir, self.config_path, "serv_b", self.ports["console_b"])

    @property
    def web_port(self):
        return self.ports["web"]

    def write_config(self, **changes):
        """Write the shared file atomically, as an editor saving over a share would."""
        self.values.update(changes)
        temporary = self.config_path + ".tmp"
        with open(temporary, "w") as f:
            f.write(PAIR_CONFIG.format(**self.values))
        os.replace(temporary, self.config_path)

    def stop(self):
        for node in (self.a, self.b):
            node.stop()
