"""
End-to-end harness: real twistd processes on 127.0.0.1, on ports handed out
by L{allocate_port} (see there why not the kernel's ephemeral ports).

Every wait is on a condition with a deadline; every process a test starts
is killed and reaped when the test ends, whatever its outcome.
"""

from __future__ import annotations

import errno
import fcntl
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
from typing import Sequence

from iwayfailover import auth

BIN = os.path.dirname(sys.executable)
TWISTD = os.path.join(BIN, "twistd")
IWSRV = os.path.join(BIN, "iwsrv")


def temporary_directory(testcase) -> str:
    """A new folder, removed with everything in it when C{testcase} ends."""
    path = tempfile.mkdtemp(prefix="iwayfailover-test-")
    testcase.addCleanup(shutil.rmtree, path, True)
    return path


# Ports for the processes a test starts.
#
# Binding port 0, closing the socket and handing the number to a process
# that binds it later is a race: the number comes from the kernel's
# ephemeral range, from which the kernel also picks the source port of every
# outbound connection and every other port-0 bind on the host, so anything
# may take it in between. A process that picks its own port (listens on port
# 0) and reports it would avoid that, but a node does not say which port it
# got (not in /api/status; Twisted's "Site starting on N" log lines do not
# name the listener or the console), and most of these ports must be in the shared file before either node starts: both
# nodes read each other's heartbeat port there, iwsrv finds the console
# there, and a shared listener's port is the same on both nodes.
#
# So the ports come from a range outside the ephemeral one (20000 up to the
# start of the ephemeral range, when that starts at 32768 as by default).
# The kernel never picks a port there by itself, neither for an outbound
# connection nor for a bind to port 0, so only something binding that very
# number could take it: a service with a fixed port (the bind check below
# skips any port already in use) or another test process, which takes its
# ports from the same cursor under the same lock, so two test processes
# never hand out the same port until the cursor has gone round the whole
# range. The cursor file is the one file the tests leave in the temporary
# folder, on purpose: it holds one number, and removing a lock file that
# another process may hold would break the lock. Processes share it when
# they share TMPDIR.

_PORTS_FILE = os.path.join(tempfile.gettempdir(), "iwayfailover-test-ports")
_TEST_PORTS_FROM = 20000
_CURSOR_WIDTH = 8


def allocation_range(path: str = "/proc/sys/net/ipv4/ip_local_port_range") -> range:
    """
    The ports L{allocate_port} hands out: from 20000 to just below the
    kernel's ephemeral range, or above it when that leaves more room.

    @raise RuntimeError: if the ephemeral range leaves fewer than 1000 ports outside it.
    """
    try:
        with open(path) as f:
            low, high = (int(n) for n in f.read().split())
    except (OSError, ValueError):
        low, high = 32768, 60999  # Linux's default
    below = range(_TEST_PORTS_FROM, max(low, _TEST_PORTS_FROM))
    above = range(max(high + 1, _TEST_PORTS_FROM), 65536)
    chosen = max(below, above, key=len)
    if len(chosen) < 1000:
        raise RuntimeError(
            f"the ephemeral port range {low}-{high} ({path}) leaves no room for test ports above {_TEST_PORTS_FROM}"
        )
    return chosen


def _bindable(port: int) -> bool:
    """
    Could a server bind C{port} now, on any IPv4 address? With SO_REUSEADDR
    as Twisted's ports set it, so a port a test has finished with and left
    in TIME_WAIT counts as free, and one something listens on does not.
    """
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("0.0.0.0", port))
        except OSError as e:
            if e.errno in (errno.EADDRINUSE, errno.EACCES):
                return False
            raise
    return True


def allocate_port(path: str = None, ports: Sequence[int] = None) -> int:
    """
    A TCP port for a process a test starts, that no other test process has
    been given and nothing is bound to: the next free port of C{ports}
    (L{allocation_range}) after the shared cursor in C{path} (the temporary
    folder's C{iwayfailover-test-ports}), read and moved on under an
    exclusive lock. The cursor wraps round at the end of C{ports}.
    """
    ports = ports or allocation_range()
    fd = os.open(path or _PORTS_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            cursor = int(os.pread(fd, _CURSOR_WIDTH, 0) or b"0")
        except ValueError:
            cursor = 0
        start = ports.index(cursor) if cursor in ports else 0
        for step in range(len(ports)):
            index = (start + step) % len(ports)
            if _bindable(ports[index]):
                break
        else:
            raise RuntimeError(f"no free port in {ports[0]}-{ports[-1]}")
        # Written over in place at a fixed width: no truncation, which on
        # ext4 makes the close wait for the disk.
        os.pwrite(fd, str(ports[(index + 1) % len(ports)]).rjust(_CURSOR_WIDTH).encode(), 0)
        return ports[index]
    finally:
        os.close(fd)  # and with it the lock


def refused_port(testcase) -> int:
    """
    A port on 127.0.0.1 that refuses connections until C{testcase} ends: a
    socket of this process is bound to it and never listens (Linux answers
    a connection to it with a reset), so nothing else can take the port
    meanwhile.
    """
    s = socket.socket()
    testcase.addCleanup(s.close)
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


class _UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path, timeout):
        super().__init__("localhost", timeout=timeout)
        self._path = path

    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(self.timeout)
        self.sock.connect(self._path)


def _console_connection(console, timeout=1.0):
    """An HTTP connection to a console given as tcp:PORT:interface=HOST or unix:PATH."""
    kind, _, rest = console.partition(":")
    if kind == "unix":
        return _UnixHTTPConnection(rest, timeout)
    port, _, interface = rest.partition(":interface=")
    return http.client.HTTPConnection(interface or "127.0.0.1", int(port), timeout=timeout)


class Node:
    """One iway-failover node run by twistd in the foreground."""

    def __init__(self, workdir, config_path, name, console, netns=None):
        self.workdir = workdir
        self.config_path = config_path
        self.name = name
        self.console = console
        self.netns = netns
        self.state_dir = os.path.join(workdir, f"state-{name}")
        self.logfile = os.path.join(workdir, f"{name}.log")
        self.process = None

    def start(self, backup=False, env=None, extra=(), prefix=()):
        """Run the node; C{prefix}: a command it runs under (setpriv, prlimit: what a service manager grants)."""
        argv = [
            *prefix, TWISTD, "--nodaemon", "--pidfile=", f"--logfile={self.logfile}",
            "iway-failover", "--config", self.config_path, "--name", self.name, "--state-dir", self.state_dir,
            *extra,
        ]
        if backup:
            argv.append("--backup")
        if self.netns:
            argv = ["ip", "netns", "exec", self.netns, *argv]
        environment = dict(os.environ)
        environment.pop("IWAY_BACKUP", None)
        environment.update(env or {})
        self.process = subprocess.Popen(
            argv, cwd=self.workdir, env=environment,
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )
        return self

    def status(self, timeout=1.0):
        """The node's /api/status object, or None if it does not answer within C{timeout} seconds."""
        return self.api("/api/status", timeout)

    def gaps(self, timeout=1.0):
        """The node's /api/gaps object (its heartbeat gaps), or None if it does not answer within C{timeout} seconds."""
        return self.api("/api/gaps", timeout)

    def api(self, path, timeout=1.0):
        """GET C{path} of the node's console as JSON, or None if it does not answer 200 within C{timeout} seconds."""
        try:
            connection = _console_connection(self.console, timeout)
            connection.request("GET", path)
            response = connection.getresponse()
            body = response.read()
            connection.close()
        except (OSError, http.client.HTTPException):  # down, or closed mid-answer (stopping)
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

    def log_text(self):
        try:
            with open(self.logfile, encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError:
            return ""

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
{trust}
{failover_extra}

[server:serv_a]
backup_location = {location_a}
heartbeat_port = {heartbeat_a}
threshold = {threshold}
console = {console_a}

[server:serv_b]
backup_location = {location_b}
heartbeat_port = {heartbeat_b}
threshold = {threshold}
console = {console_b}
"""

SHARED_LISTENER = """
[listener:web]
plugin = web --listen tcp:{web}:interface=127.0.0.1 --path {www}
"""

# On one loopback host a SIGSTOPped node still holds its listener's port, so
# each node gets a listener of its own.
OWN_LISTENERS = """
[listener:web_a]
plugin = web --listen tcp:{web_a}:interface=127.0.0.1 --path {www}
servers = serv_a

[listener:web_b]
plugin = web --listen tcp:{web_b}:interface=127.0.0.1 --path {www}
servers = serv_b
"""


class Pair:
    """Two nodes, serv_a and serv_b, each the other's backup, sharing one configuration file."""

    def __init__(self, workdir, interval=0.2, threshold=1.0, reload_interval=0.2, own_listeners=False,
                 failover_extra="", hosts=("127.0.0.1", "127.0.0.1"), consoles=None, listener_count=None, listener_servers=None,
                 signed=True, tls=None, console_users=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.www = os.path.join(workdir, "www")
        os.makedirs(self.www, exist_ok=True)
        with open(os.path.join(self.www, "index.html"), "w") as f:
            f.write("served by the live node\n")
        self.ports = {k: allocate_port() for k in ("hb_a", "hb_b", "console_a", "console_b", "web", "web_a", "web_b")}
        consoles = consoles or (
            f"tcp:{self.ports['console_a']}:interface=127.0.0.1", f"tcp:{self.ports['console_b']}:interface=127.0.0.1"
        )
        self.values = dict(
            self.ports, interval=interval, threshold=threshold, reload_interval=reload_interval, www=self.www,
            failover_extra=failover_extra, host_a=hosts[0], host_b=hosts[1], console_a=consoles[0], console_b=consoles[1],
        )
        # Plain TCP heartbeat links, or TLS ones: C{tls} gives the extra
        # parameters of each side's ssl: port and tls: location, by server.
        self.values.update(
            location_a=f"{hosts[1]}:{self.ports['hb_b']}", location_b=f"{hosts[0]}:{self.ports['hb_a']}",
            heartbeat_a=f"tcp:{self.ports['hb_a']}:interface={hosts[0]}",
            heartbeat_b=f"tcp:{self.ports['hb_b']}:interface={hosts[1]}",
        )
        if tls is not None:
            for me, other, hb, other_hb, host, other_host in (
                ("a", "b", "hb_a", "hb_b", hosts[0], hosts[1]), ("b", "a", "hb_b", "hb_a", hosts[1], hosts[0]),
            ):
                server, client = tls[f"serv_{me}"]
                self.values[f"heartbeat_{me}"] = f"ssl:{self.ports[hb]}:interface={host}:{server}"
                name = tls.get("host_names", {}).get(f"serv_{other}", other_host)
                self.values[f"location_{me}"] = f"tls:{name}:{self.ports[other_hb]}:{client}"
        self.listeners = OWN_LISTENERS if own_listeners else SHARED_LISTENER
        self.listener_ports = [self.ports["web"]]
        if listener_count is not None:
            # N channels served by whichever node is live, each on a port of its own.
            self.listener_ports = [allocate_port() for _ in range(listener_count)]
            servers = f"servers = {listener_servers}\n" if listener_servers else ""
            self.listeners = "".join(
                f"\n[listener:web{n}]\nplugin = web --listen tcp:{port}:interface=127.0.0.1 --path {{www}}\n{servers}"
                for n, port in enumerate(self.listener_ports, start=1)
            )
        if console_users:
            # The console's logins: {user: password}, in a users file beside the shared file.
            from iwayfailover.console.users import add_user

            for user, password in console_users.items():
                add_user(os.path.join(workdir, "users"), user, password)
            self.values["failover_extra"] += "\nconsole_users = users\n"
        self.config_path = os.path.join(workdir, "iwayfailover.ini")
        # Heartbeats signed with a key made for this pair, beside the shared file.
        self.key_path = os.path.join(workdir, "failover.key")
        if signed:
            auth.write_new_key_file(self.key_path)
        self.values["trust"] = "secret_file = failover.key" if signed else "insecure = true"
        self.write_config()
        self.a = Node(workdir, self.config_path, "serv_a", consoles[0])
        self.b = Node(workdir, self.config_path, "serv_b", consoles[1])

    def write_config(self, **changes):
        """Write the shared file atomically, as an editor saving over a share would."""
        self.values.update(changes)
        temporary = self.config_path + ".tmp"
        with open(temporary, "w") as f:
            f.write((PAIR_CONFIG + self.listeners).format(**self.values))
        os.replace(temporary, self.config_path)

    def stop(self):
        for node in (self.a, self.b):
            node.stop()

    def start_both(self, timeout=20.0):
        """serv_a live, serv_b backup, and serv_b hearing serv_a's heartbeats."""
        self.a.start()
        self.a.wait_role("live", timeout=timeout)
        self.b.start(backup=True)
        self.b.wait_role("backup", timeout=timeout)
        wait_for(
            lambda: (self.b.status() or {}).get("heartbeats", {}).get("received", 0) >= 2,
            timeout, "serv_b to hear serv_a\n" + self.b.log_tail(),
        )
        return self

    def roles(self):
        """Both nodes' roles right now (None for a node that does not answer)."""
        return tuple((node.status() or {}).get("role") for node in (self.a, self.b))

    @property
    def web_port(self):
        return self.ports["web"]
