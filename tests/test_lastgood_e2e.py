"""
End-to-end: a real twistd node keeps a local copy of the configuration it
applies, starts from it when its share cannot be read (the file moved away;
a FIFO nobody writes for a share that hangs), says so in its log and its
/api/status, and goes back to the shared file by itself once it reads.
"""

import os

from twisted.trial import unittest

from harness import Pair, temporary_directory, wait_for

COPY = "last-good.ini"


class StartFromTheLocalCopyTests(unittest.TestCase):
    """serv_a of a pair, alone: started once from the share, then again without it."""

    def setUp(self):
        self.pair = Pair(temporary_directory(self), interval=0.2, threshold=1.0, reload_interval=0.2)
        self.addCleanup(self.pair.stop)
        self.node = self.pair.a
        self.copy = os.path.join(self.node.state_dir, COPY)
        self.away = self.pair.config_path + ".away"

    def start_once(self):
        """The node started from the share, its copy written, then stopped."""
        self.node.start()
        self.node.wait_role("live")
        wait_for(lambda: os.path.exists(self.copy), 10, "the local copy\n" + self.node.log_tail())
        with open(self.copy, "rb") as f, open(self.pair.config_path, "rb") as g:
            self.assertEqual(f.read(), g.read())
        self.node.stop()

    def source(self, status):
        return status["config"]["source"]

    def test_a_node_whose_share_is_gone_starts_from_its_copy_and_goes_back(self):
        """
        The shared file moved away: the node starts from its copy, live,
        and says so in its log and /api/status; the file back (the same
        text), it leaves the copy within a few reloads, restarting nothing.
        """
        self.start_once()
        os.rename(self.pair.config_path, self.away)

        self.node.start()
        status = self.node.wait_role("live")

        config = status["config"]
        self.assertEqual(self.source(status), "local copy")
        self.assertEqual(config["local_copy"], self.copy)
        self.assertEqual(config["path"], self.pair.config_path)
        self.assertIn("No such file or directory", config["last_error"])
        self.assertIsNotNone(config["local_copy_saved"])
        self.assertIn(f"running from the local copy {self.copy} of {self.pair.config_path}", self.node.log_text())
        web_since = status["listeners"]["web"]["since"]

        os.rename(self.away, self.pair.config_path)

        status = wait_for(
            lambda: (s := self.node.status()) and self.source(s) == "share" and s, 10,
            "the node to go back to the share\n" + self.node.log_tail(),
        )
        self.assertIsNone(status["config"]["last_error"])
        self.assertIn("back on the shared file, off the local copy", self.node.log_text())
        self.assertIn("nothing restarts", self.node.log_text())
        self.assertEqual((status["role"], status["listeners"]["web"]["since"]), ("live", web_since))

    def test_a_node_whose_share_hangs_starts_from_its_copy_after_a_bound(self):
        """
        The shared file a FIFO nobody writes (an open that never returns):
        the node gives the share one reload's hung bound (2 s), starts from
        its copy, and goes back to the file once reads of it end.
        """
        self.start_once()
        fifo = os.path.join(self.pair.workdir, "hung.fifo")
        os.mkfifo(fifo)
        os.link(fifo, self.pair.config_path + ".new")
        os.replace(self.pair.config_path + ".new", self.pair.config_path)

        self.node.start()
        status = self.node.wait_role("live", timeout=20)

        self.assertEqual(self.source(status), "local copy")
        self.assertIn("has not finished after 2 s", status["config"]["last_error"])
        self.assertIn("the share cannot be read", self.node.log_text())

        self.pair.write_config()  # the file back in place; then every read blocked on the FIFO ends

        def released():
            try:
                os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))
                return True
            except OSError:  # ENXIO: nobody is reading it
                return False

        wait_for(released, 10, "a reader blocked on the FIFO")
        wait_for(
            lambda: (s := self.node.status()) and self.source(s) == "share" and s["config"]["last_error"] is None, 15,
            "the node to go back to the share\n" + self.node.log_tail(),
        )

    def test_a_first_start_without_the_share_is_one_line_saying_there_is_no_copy(self):
        """No copy yet and no share: the node exits non-zero with one line naming the file and that no copy exists."""
        os.rename(self.pair.config_path, self.away)

        self.node.start()
        code = self.node.process.wait(timeout=30)
        error = self.node.process.stderr.read().decode()

        self.assertNotEqual(code, 0)
        lines = [line for line in error.splitlines() if line.strip()]
        self.assertEqual(len(lines), 1, error)
        self.assertIn(self.pair.config_path, lines[0])
        self.assertIn("no local copy of it in", lines[0])


class GroupMemberFromTheLocalCopyTests(unittest.TestCase):
    """A member of a group on a real etcd (coordinator = etcd) reads the shared file the same way."""

    @classmethod
    def setUpClass(cls):
        from etcdharness import ETCD, EtcdCluster

        if ETCD is None:
            raise unittest.SkipTest("etcd is not installed (Debian package etcd-server: `make system-packages` installs it)")
        cls.etcd = EtcdCluster(members=1)

    @classmethod
    def tearDownClass(cls):
        cls.etcd.stop()

    def test_a_member_whose_share_is_gone_starts_from_its_copy_and_goes_back(self):
        """alpha, alone in its group: started once, then without its share: live from the copy, then back on the file."""
        from groupharness import Group

        group = Group(temporary_directory(self), self.etcd.endpoints, names=("alpha",), threshold=2)
        self.addCleanup(group.stop)
        node = group["alpha"]
        copy = os.path.join(node.state_dir, COPY)
        group.start("alpha", backup=False)
        node.wait_role("live", timeout=20)
        wait_for(lambda: os.path.exists(copy), 10, "the local copy\n" + node.log_tail())
        node.stop()
        os.rename(group.config_path, group.config_path + ".away")

        group.start("alpha", backup=False)
        status = node.wait_role("live", timeout=20)

        self.assertEqual((status["config"]["source"], status["config"]["local_copy"]), ("local copy", copy))
        self.assertIn("running from the local copy", node.log_text())

        os.rename(group.config_path + ".away", group.config_path)
        wait_for(
            lambda: (s := node.status()) and s["config"]["source"] == "share", 10,
            "alpha to go back to the share\n" + node.log_tail(),
        )
        self.assertEqual(node.status()["role"], "live")
