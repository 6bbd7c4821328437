"""
End-to-end: groups on a real etcd (Debian's etcd-server), real twistd
members on 127.0.0.1, each with a channel that records when it serves
(groupharness). TTL (threshold) 2 s, keepalives every 0.25 s.

What is judged is the serving record (two members serving at once is
measured, never assumed) and the members' own /api/status, sampled while
things happen.

(trial test cases, not pytest functions: pytest-twisted runs every plain
pytest function under a reactor of its own, which breaks the trial tests
that follow it.)
"""

from __future__ import annotations

import json
import os
import pathlib
import random
import shutil
import signal
import subprocess
import tempfile
import threading
import time

from twisted.trial import unittest

from etcdharness import ETCD, EtcdCluster
from groupharness import Group
from harness import IWSRV, temporary_directory, wait_for
from iwayfailover.status import unix_time

TTL = 2
SLACK = 1.0
"""The issue's bound beyond the TTL for a crash, and for a paused store."""


class Sampler:
    """
    Every member's /api/status, read over and over in a thread, and every
    sample that shows two live members. L{verdict} fails a test on two live
    members, and on a sampler that died or read nothing (which would prove
    nothing).
    """

    def __init__(self, group: Group, every: float = 0.02):
        self.group = group
        self.every = every
        self.samples = 0
        self.answers = 0
        self.two_live = []
        self.error = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self):
        try:
            while not self._stop.is_set():
                self._sample()
                self._stop.wait(self.every)
        except Exception as e:  # reported by verdict()
            self.error = e

    def _sample(self):
        began = time.time()
        lives = {}
        for name, node in self.group.nodes.items():
            s = node.status(timeout=0.3)
            if s is None:
                continue
            self.answers += 1
            if s["role"] == "live":
                lives[name] = unix_time(s["since"])
        self.samples += 1
        # Two members live at once by their own word: each says it has
        # been live since before this sample began, and still was when read.
        both = [name for name, since in lives.items() if since < began]
        if len(both) > 1:
            self.two_live.append((began, sorted(both)))

    def verdict(self, least=3):
        assert self.error is None, f"the sampler failed: {self.error!r}"
        assert self.answers >= least, f"the sampler read only {self.answers} statuses in {self.samples} samples"
        assert self.two_live == [], f"samples showing two live members: {self.two_live}"


def store_folder(testcase) -> str:
    """A folder for an etcd's data on tmpfs where there is one (etcd syncs every write), removed when the test ends."""
    folder = tempfile.mkdtemp(prefix="iwayfailover-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
    testcase.addCleanup(shutil.rmtree, folder, True)
    return folder


class GroupTestCase(unittest.TestCase):
    """One one-member etcd for every test of the class; a group of alpha, beta and gamma on it for each."""

    members = 1

    @classmethod
    def setUpClass(cls):
        if ETCD is None:
            raise unittest.SkipTest("etcd is not installed (Debian package etcd-server: `make system-packages` installs it)")
        cls.folder = tempfile.mkdtemp(prefix="iwayfailover-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)
        cls.etcd = EtcdCluster(members=cls.members, folder=cls.folder)

    @classmethod
    def tearDownClass(cls):
        cls.etcd.stop()
        shutil.rmtree(cls.folder, True)

    def setUp(self):
        self.group = Group(temporary_directory(self), self.etcd.endpoints, threshold=TTL)
        self.addCleanup(self.group.stop)


def first_start_after(group, moment, timeout):
    return wait_for(lambda: group.started_after(moment), timeout,
                    "another member to start serving\n" + group.log_tails())


class GroupTests(GroupTestCase):
    def test_a_group_of_three_one_live_and_every_member_shown(self):
        group = self.group
        group.start_all()
        status = group["beta"].status()
        assert status["coordinator"]["kind"] == "etcd"
        assert status["coordinator"]["connected"] is True
        assert status["coordinator"]["live"] == "alpha"
        assert set(status["members"]) == {"alpha", "beta", "gamma"}
        assert status["members"]["alpha"]["role"] == "live"
        assert status["members"]["gamma"]["role"] == "backup"
        alpha = group["alpha"].status()
        assert 0 < alpha["coordinator"]["lease_left"] <= TTL
        assert alpha["epoch"] == status["epoch"] > 0, "the group's fencing token differs between members"
        text = subprocess.run([IWSRV, "status", "--config", group.config_path, "--name", "gamma"],
                              capture_output=True, text=True, timeout=20)
        assert text.returncode == 0, text.stderr
        for name in ("alpha", "beta", "gamma"):
            assert name in text.stdout
        assert group.live() == ["alpha"]

    def test_kill_9_of_the_live_member_brings_the_next_within_the_ttl(self):
        group = self.group
        group.start_all()
        epoch = group["alpha"].status()["epoch"]
        with Sampler(group) as sampler:
            killed = time.time()
            group.kill("alpha")
            at, name = first_start_after(group, killed, TTL + 5)
            group.wait_live(exclude=("alpha",))
        assert name == "beta", "the best candidate (priority) did not take the role"
        wait_for(lambda: ((group["beta"].status() or {}).get("members") or {}).get("alpha", {}).get("role") == "absent",
                 TTL + 5,
                 "beta to show alpha absent")
        assert at - killed <= TTL + SLACK, f"took {at - killed:.3f}s"
        assert group.overlap() == 0.0
        sampler.verdict()
        assert group["beta"].status()["epoch"] > epoch, "the epoch did not rise"

    def test_sigterm_of_the_live_member_hands_over_within_half_a_second(self):
        group = self.group
        group.start_all()
        with Sampler(group) as sampler:
            stopped = time.time()
            group["alpha"].signal(signal.SIGTERM)
            at, name = first_start_after(group, stopped, 5)
            group["alpha"].process.wait(timeout=10)
        assert at - stopped <= 0.5, f"took {at - stopped:.3f}s"
        assert group.overlap() == 0.0
        sampler.verdict()
        status = group[name].status()
        assert status["transitions"][-1]["cause"].startswith("alpha stopped")

    def test_switchover_to_a_named_member(self):
        group = self.group
        group.start_all()
        done = subprocess.run(
            [IWSRV, "switchover", "--config", group.config_path, "--name", "alpha", "--state-dir", group["alpha"].state_dir,
             "--to", "gamma", "--yes", "--json"],
            capture_output=True, text=True, timeout=30, cwd=group.workdir,
        )
        assert done.returncode == 0, done.stderr + group.log_tails()
        answer = json.loads(done.stdout)
        assert (answer["from"], answer["to"]) == ("alpha", "gamma")
        assert group.wait_live() == "gamma"
        assert group.overlap() == 0.0
        assert group["alpha"].status()["role"] == "backup"

    def test_a_paused_store_stops_the_live_member_by_its_ttl_and_one_comes_back(self):
        # A store of its own: pausing the class's etcd would hold the other tests.
        cluster = EtcdCluster(members=1, folder=store_folder(self))
        self.addCleanup(cluster.stop)
        group = Group(temporary_directory(self), cluster.endpoints, threshold=TTL)
        self.addCleanup(group.stop)
        group.start_all()
        with Sampler(group) as sampler:
            paused = time.time()
            cluster.pause(0)
            wait_for(lambda: any(name == "alpha" and what == "stop" and at > paused
                                 for at, name, what in group.serving_events()),
                     TTL + SLACK + 2, "alpha to stop serving\n" + group.log_tails())
            stop = max(at for at, name, what in group.serving_events() if name == "alpha" and what == "stop")
            assert stop - paused <= TTL + SLACK, f"alpha served {stop - paused:.3f}s into the pause"
            assert group["alpha"].status()["role"] == "backup"
            # What the store last said of the others is not shown as how they stand.
            wait_for(lambda: ((group["beta"].status() or {}).get("members") or {}).get("alpha", {}).get("role")
                     == "unknown", 5, "beta to show alpha's role as unknown while the store is away")
            cluster.resume(0)
            live = group.wait_live(timeout=TTL * 3 + 5)
            wait_for(lambda: group.live() == [live], 5, "one live member")
        assert group.overlap() == 0.0
        sampler.verdict()

    def test_kill_of_the_etcd_leader_in_a_three_member_cluster(self):
        """The live member's first endpoint is the etcd leader, killed: it renews through another, and stays live."""
        cluster = EtcdCluster(members=3, folder=store_folder(self))
        self.addCleanup(cluster.stop)
        leader = cluster.leader()
        endpoints = [cluster.endpoints[leader]] + [e for n, e in enumerate(cluster.endpoints) if n != leader]
        group = Group(temporary_directory(self), endpoints, threshold=TTL)
        self.addCleanup(group.stop)
        group.start_all()
        with Sampler(group) as sampler:
            before = group["alpha"].status()
            cluster.kill(leader)
            assert cluster.leader(timeout=10) != leader
            # The store elects a new leader; the live member's renewals go on
            # through another member (two TTLs' worth), and it stays live.
            wait_for(lambda: (s := group["alpha"].status()) is not None
                     and s["coordinator"]["renewals"] >= before["coordinator"]["renewals"] + 2 * TTL / 0.25,
                     4 * TTL + 10, "alpha to keep its lease alive through the new leader\n" + group.log_tails())
        after = group["alpha"].status()
        assert after["role"] == "live" and after["epoch"] == before["epoch"], group.log_tails()
        assert len(after["transitions"]) == len(before["transitions"]), "alpha lost the role and took it again"
        assert group.live() == ["alpha"]
        assert after["coordinator"]["connected"] is True
        assert group.overlap() == 0.0
        sampler.verdict()

    def test_a_restart_storm_of_five_members(self):
        etcd = self.etcd
        tmp_path = pathlib.Path(temporary_directory(self))
        names = ("m1", "m2", "m3", "m4", "m5")
        group = Group(str(tmp_path), etcd.endpoints, names=names, threshold=TTL)
        rng = random.Random(int(os.environ.get("STORM_SEED", "12")))
        try:
            group.start(names[0], backup=False)
            for name in names[1:]:
                group.start(name)
            group.wait_live(timeout=20)
            with Sampler(group) as sampler:
                for round_ in range(20):
                    name = rng.choice(names)
                    node = group[name]
                    action = rng.choice(("kill", "term", "restart"))
                    if node.process is not None and node.process.poll() is None:
                        if action == "kill":
                            group.kill(name)
                        else:
                            node.signal(signal.SIGTERM)
                            node.process.wait(timeout=15)
                    if action != "kill" or rng.random() < 0.7:
                        node.start(backup=rng.random() < 0.5)
                    # Some restarts come before the last one has settled.
                    wait_for(lambda: any(s is not None for s in group.statuses().values()), 10, "a member to answer")
                for name in names:
                    if group[name].process.poll() is not None:
                        group[name].start(backup=True)
                live = group.wait_live(timeout=TTL * 3 + 10)
                wait_for(lambda: all((group[n].status() or {}).get("role") in ("live", "backup") for n in names),
                         20, "every member up\n" + group.log_tails())
            sampler.verdict()
            assert group.overlap() == 0.0, group.intervals()
            assert group.live() == [live]
        finally:
            group.stop()

    def test_a_live_key_no_member_wrote_holds_the_role_and_is_reported(self):
        """A key under the prefix that no member wrote (no lease, a value that names no server): nobody campaigns, the log says what to remove."""
        group = self.group
        etcd = self.etcd
        etcd.etcdctl("put", group.prefix + "/live", "not json")
        group.start("alpha", backup=False)
        group["alpha"].wait_role("backup")
        wait_for(lambda: "was not written by a member of this group" in group["alpha"].log_text(), 10,
                 "alpha to report the key\n" + group.log_tails())
        assert "etcdctl del " + group.prefix + "/live" in group["alpha"].log_text()
        assert group.live() == []
        etcd.etcdctl("del", group.prefix + "/live")
        assert group.wait_live() == "alpha"

    def test_a_group_over_tls_with_etcds_auth(self):
        """Members reach etcd over https (its CA from the shared file) as an etcd user with a password file."""
        tmp_path = pathlib.Path(temporary_directory(self))
        from pki import Authority

        (tmp_path / "pki").mkdir()
        ca = Authority(str(tmp_path / "pki"))
        server = ca.issue("etcd-server", dns=("localhost",), ips=("127.0.0.1",))
        password = tmp_path / "group" / "etcd-password"
        password.parent.mkdir()
        password.write_text("s3cret pass\n")
        password.chmod(0o600)
        # etcd's JSON gateway takes a client certificate or a user, not both
        # (the configuration refuses the two together): the server's
        # certificate checked against the CA, and the user's password.
        with EtcdCluster(1, folder=str(tmp_path / "etcd"), tls=(*server, ca.path)) as cluster:
            cluster.enable_auth("s3cret pass")
            extra = f"etcd_cacert = {ca.path}\netcd_user = root\netcd_password_file = etcd-password\n"
            group = Group(str(tmp_path / "group"), cluster.endpoints, names=("alpha", "beta"), threshold=TTL,
                          failover_extra=extra)
            try:
                assert all(e.startswith("https://") for e in cluster.endpoints)
                group.start_all()
                killed = time.time()
                group.kill("alpha")
                at, name = first_start_after(group, killed, TTL + 5)
                assert name == "beta" and at - killed <= TTL + SLACK
                assert group.overlap() == 0.0
            finally:
                group.stop()

    def test_moving_the_groups_prefix_tells_to_stop_every_member_first(self):
        """An edit of etcd_prefix is not applied to a running member, and it says loudly why a lone restart would be wrong."""
        group = self.group
        group.start_all()
        group.write_config(prefix=group.prefix + "-moved")
        for name in group.names:
            wait_for(lambda: "Stop EVERY member of the group first" in group[name].log_text(), 10,
                     f"{name} to warn about the moved prefix\n" + group.log_tails())
        assert group.live() == ["alpha"]

    def test_members_started_before_the_store_say_so_and_take_the_role_once_it_answers(self):
        """Started before etcd: each member says it cannot reach the store (status too), and one is live once etcd runs."""
        tmp_path = pathlib.Path(temporary_directory(self))
        cluster = EtcdCluster(members=1, folder=store_folder(self), start=False)
        self.addCleanup(cluster.stop)
        group = Group(str(tmp_path / "group"), cluster.endpoints, names=("alpha", "beta"), threshold=TTL)
        self.addCleanup(group.stop)
        group.start("alpha", backup=False)
        group.start("beta")
        for name in group.names:
            wait_for(lambda: "cannot reach the store" in group[name].log_text(), 10,
                     f"{name} to say it cannot reach the store\n" + group.log_tails())
        status = wait_for(lambda: group["beta"].status(), 10, "beta's status")
        assert status["coordinator"]["connected"] is False
        assert status["coordinator"]["last_error"]
        assert group.live() == []
        cluster.start()
        assert group.wait_live(timeout=15) == "alpha"
        wait_for(lambda: "reaches the store again" in group["beta"].log_text(), 10, "beta to say the store is back")
        # Each try to reach the store made a connection: none of them logged Twisted's factory lines.
        assert "Starting factory _HTTP11ClientFactory" not in group["beta"].log_text()
        assert group["beta"].status()["coordinator"]["last_error"] is None

    def test_failback_to_the_preferred_member(self):
        """failback with preferred = alpha: alpha, back as a backup, gets the role again after failback_delay."""
        group = Group(temporary_directory(self), self.etcd.endpoints, threshold=TTL,
                      failover_extra="failback = true\npreferred = alpha\nfailback_delay = 1\n")
        self.addCleanup(group.stop)
        group.start_all()
        group.kill("alpha")
        assert group.wait_live(exclude=("alpha",), timeout=TTL + 5) == "beta"
        group.start("alpha", backup=True)
        wait_for(lambda: group.live() == ["alpha"], 15, "alpha to get the role back\n" + group.log_tails())
        assert "failback to alpha" in json.dumps(group["beta"].status()["transitions"])
        assert group.overlap() == 0.0
