"""
Real etcd clusters for tests: one or three `etcd` processes on 127.0.0.1,
on ports from L{harness.allocate_port}, with data dirs in a temporary
folder, raft timings fit for tests, and nothing left behind: every process
is killed and reaped and the folder removed by L{EtcdCluster.stop}, which
the context manager, the fixtures and (as a last resort) atexit call.

Synchronous on purpose (subprocess, urllib with timeouts): the tests that
use it drive real processes; the client under test runs on the reactor.
"""

from __future__ import annotations

import atexit
import ctypes
import json
import os
import shutil
import signal
import ssl
import subprocess
import tempfile
import urllib.error
import urllib.request

import pytest

from harness import allocate_port, wait_for

ETCD = shutil.which("etcd")
ETCDCTL = shutil.which("etcdctl")

requires_etcd = pytest.mark.skipif(
    ETCD is None or ETCDCTL is None,
    reason="etcd is not installed (Debian package etcd-server: `make system-packages` installs it)",
)

# Raft timings for tests: a leader is elected, and a dead one replaced, in
# well under a second. The least lease TTL etcd grants follows from them
# (about 1.5 x the election timeout, rounded up: 1 s here).
HEARTBEAT_MS = 50
ELECTION_MS = 500

_running = set()
_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent():
    """In the child before exec: the kernel kills it when the test process dies, however it dies (atexit does not run on kill -9)."""
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@atexit.register
def _stop_all():
    for cluster in list(_running):
        cluster.stop()


class Member:
    """One etcd process of a cluster."""

    def __init__(self, name, client_port, peer_port, data_dir, log_path, scheme):
        self.name = name
        self.client_port = client_port
        self.peer_port = peer_port
        self.data_dir = data_dir
        self.log_path = log_path
        self.client_url = f"{scheme}://127.0.0.1:{client_port}"
        self.peer_url = f"http://127.0.0.1:{peer_port}"
        self.process = None

    def alive(self):
        return self.process is not None and self.process.poll() is None

    def log_tail(self, lines=20):
        try:
            with open(self.log_path, encoding="utf-8", errors="replace") as f:
                return f"--- etcd {self.name} ---\n" + "".join(f.readlines()[-lines:])
        except OSError:
            return f"--- no log for etcd {self.name} ---"


class EtcdCluster:
    """
    C{members} etcd processes forming one cluster, started at once (see
    L{start}). C{folder}: where data dirs and logs go (default: a new
    temporary folder, removed by L{stop}). C{tls}: C{(cert, key, ca)}: the
    members serve https with that certificate and key, and the harness and
    etcdctl trust C{ca}; with C{client_ca} the members also require a client
    certificate signed by it, and the harness presents C{client}, a
    C{(cert, key)}. C{extra}: more etcd arguments, for every member.
    """

    def __init__(self, members=1, folder=None, tls=None, client_ca=None, client=None, extra=(), start=True):
        if members not in (1, 3, 5):
            raise ValueError(f"an etcd cluster for tests has 1, 3 or 5 members, not {members}")
        self.own_folder = folder is None
        self.folder = folder or tempfile.mkdtemp(prefix="iwayfailover-etcd-")
        os.makedirs(self.folder, exist_ok=True)
        self.tls = tls
        self.client_ca = client_ca
        self.client = client
        self.extra = list(extra)
        scheme = "https" if tls else "http"
        # A token of its own, so that members of two clusters never join each other.
        self.token = f"iway-test-{os.getpid()}-{id(self):x}"
        self.members = []
        for n in range(members):
            name = f"etcd{n}-{os.getpid()}"
            self.members.append(Member(
                name, allocate_port(), allocate_port(),
                os.path.join(self.folder, f"{name}.data"), os.path.join(self.folder, f"{name}.log"), scheme,
            ))
        self.stopped = False
        if start:
            self.start()

    # -- life

    def start(self, timeout=30.0):
        """Start every member and wait until each says it is healthy (the cluster has a leader)."""
        _running.add(self)
        for member in self.members:
            self._spawn(member, "new")
        self.wait_healthy(timeout)
        return self

    def _argv(self, member, state):
        initial = ",".join(f"{m.name}={m.peer_url}" for m in self.members)
        argv = [
            ETCD, "--name", member.name, "--data-dir", member.data_dir,
            "--listen-client-urls", member.client_url, "--advertise-client-urls", member.client_url,
            "--listen-peer-urls", member.peer_url, "--initial-advertise-peer-urls", member.peer_url,
            "--initial-cluster", initial, "--initial-cluster-state", state,
            "--initial-cluster-token", self.token,
            "--heartbeat-interval", str(HEARTBEAT_MS), "--election-timeout", str(ELECTION_MS),
            "--logger", "zap", "--log-outputs", "stderr",
        ]
        if self.tls:
            cert, key, _ = self.tls
            argv += ["--cert-file", cert, "--key-file", key]
            if self.client_ca:
                argv += ["--client-cert-auth", "--trusted-ca-file", self.client_ca]
        return argv + self.extra

    def _spawn(self, member, state):
        with open(member.log_path, "ab") as log:
            member.process = subprocess.Popen(
                self._argv(member, state), stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                preexec_fn=_die_with_parent,
            )

    def restart(self, index, timeout=30.0):
        """Start a member again that was killed (its data dir kept), and wait until it is healthy."""
        member = self.members[index]
        if member.alive():
            raise RuntimeError(f"etcd {member.name} is still running")
        self._spawn(member, "existing")
        wait_for(lambda: self.healthy(index), timeout, f"etcd {member.name} to be healthy again\n{member.log_tail()}")

    def stop(self):
        """Kill every member (stopped or not), reap it, and remove the folder if it is this cluster's own."""
        for member in self.members:
            if member.process is not None and member.process.poll() is None:
                member.process.kill()
                try:
                    member.process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    pass
        _running.discard(self)
        if not self.stopped:
            self.stopped = True
            if self.own_folder:
                shutil.rmtree(self.folder, ignore_errors=True)
            else:
                for member in self.members:
                    shutil.rmtree(member.data_dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        return False

    # -- what tests do to members

    def kill(self, index):
        """kill -9 a member, and reap it."""
        member = self.members[index]
        if member.alive():
            member.process.kill()
            member.process.wait(timeout=10)

    def pause(self, index):
        """SIGSTOP a member: it holds its ports but answers nothing."""
        self.members[index].process.send_signal(signal.SIGSTOP)

    def resume(self, index):
        self.members[index].process.send_signal(signal.SIGCONT)

    # -- what tests ask

    @property
    def endpoints(self):
        """The members' client URLs."""
        return [m.client_url for m in self.members]

    def _context(self):
        if not self.tls:
            return None
        context = ssl.create_default_context(cafile=self.tls[2])
        if self.client is not None:
            context.load_cert_chain(*self.client)
        return context

    def _request(self, index, path, body=None, timeout=1.0):
        """JSON from a member's gateway (GET without a body, POST with one); None if it does not answer."""
        url = self.members[index].client_url + path
        data = None if body is None else json.dumps(body).encode()
        try:
            with urllib.request.urlopen(url, data=data, timeout=timeout, context=self._context()) as response:
                return json.loads(response.read())
        except (OSError, ValueError, urllib.error.URLError):
            return None

    def healthy(self, index):
        answer = self._request(index, "/health")
        return bool(answer) and answer.get("health") == "true"

    def wait_healthy(self, timeout=30.0):
        for index, member in enumerate(self.members):
            if member.alive():
                wait_for(
                    lambda: self.healthy(index) or self._dead(member), timeout,
                    f"etcd {member.name} to be healthy\n{member.log_tail()}",
                )
                if not member.alive():
                    raise AssertionError(f"etcd {member.name} exited with {member.process.returncode}\n{member.log_tail()}")

    def _dead(self, member):
        return not member.alive()

    def status(self, index):
        """A member's /v3/maintenance/status answer, or None."""
        return self._request(index, "/v3/maintenance/status", {})

    def leader(self, timeout=10.0):
        """The index of the member that is leader now (as the running members agree), waiting up to C{timeout} for one."""

        def find():
            ids = {}
            leaders = set()
            for index, member in enumerate(self.members):
                if not member.alive():
                    continue
                status = self.status(index)
                if status:
                    ids[status["header"]["member_id"]] = index
                    if status.get("leader") and status["leader"] != "0":
                        leaders.add(status["leader"])
            if len(leaders) == 1:
                (leader,) = leaders
                if leader in ids:
                    return (ids[leader],)
            return None

        return wait_for(find, timeout, "the etcd cluster to agree on a leader")[0]

    def etcdctl(self, *args, user=None, timeout=10.0):
        """Run etcdctl against the first running member; its stdout (fails the test with its output on an error)."""
        running = [m for m in self.members if m.alive()]
        argv = [ETCDCTL, "--endpoints", running[0].client_url, "--dial-timeout", "3s", "--command-timeout", "5s"]
        if user:
            argv += ["--user", user]
        if self.tls:
            argv += ["--cacert", self.tls[2]]
        if self.client is not None:
            argv += ["--cert", self.client[0], "--key", self.client[1]]
        env = dict(os.environ, ETCDCTL_API="3")
        result = subprocess.run([*argv, *args], capture_output=True, text=True, timeout=timeout, env=env)
        if result.returncode != 0:
            raise AssertionError(f"etcdctl {' '.join(args)} failed: {result.stdout}{result.stderr}")
        return result.stdout

    def enable_auth(self, password):
        """Add the user root with C{password} and turn etcd's auth on."""
        self.etcdctl("user", "add", f"root:{password}")
        self.etcdctl("auth", "enable")


def cluster_fixture(members=1, scope="module", **options):
    """A pytest fixture giving an L{EtcdCluster} that is stopped when its scope ends, whatever happens."""

    @pytest.fixture(scope=scope)
    def fixture():
        cluster = EtcdCluster(members, start=False, **options)
        try:
            cluster.start()
            yield cluster
        finally:
            cluster.stop()

    return fixture

