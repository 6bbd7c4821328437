"""Safe writes of the shared configuration."""

import os
import shutil
import stat
import tempfile

from twisted.trial import unittest

from iwayfailover import atomic
from iwayfailover.config import parse_config
from iwayfailover.configfile import ConfigConflict, digest, write_config

TEXT = "[server:serv_a]\nbackup_location = iam2:1200\nheartbeat_port = 1200\nthreshold = 3\n"


class WriteConfigTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="iwayfailover-test-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.path = os.path.join(self.folder, "iway.ini")
        with open(self.path, "w") as f:
            f.write(TEXT)
        os.chmod(self.path, 0o640)
        self.read_digest = digest(TEXT.encode())

    def test_the_digest_is_the_one_the_parser_gives(self):
        """The digest to compare with is the one a loaded configuration carries."""
        self.assertEqual(parse_config(TEXT, self.path).digest, self.read_digest)

    def test_a_write_replaces_the_text_and_returns_the_new_digest(self):
        """With the file as it was read, the new text replaces it."""
        new = TEXT.replace("threshold = 3", "threshold = 5")
        self.assertEqual(write_config(self.path, new, self.read_digest), digest(new.encode()))
        with open(self.path) as f:
            self.assertEqual(f.read(), new)

    def test_a_change_it_did_not_read_is_not_overwritten(self):
        """Someone saved the file after it was read: nothing is written, and the error says why."""
        with open(self.path, "a") as f:
            f.write("; an operator's edit\n")
        error = self.assertRaises(ConfigConflict, write_config, self.path, "[server:x]\n", self.read_digest)
        self.assertIn("changed since it was read", str(error))
        with open(self.path) as f:
            self.assertIn("an operator's edit", f.read())

    def test_permissions_are_kept(self):
        """The new file has the old one's permission bits (not the temporary file's 0600)."""
        write_config(self.path, TEXT + "\n", self.read_digest)
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)

    def test_no_temporary_file_is_left_behind(self):
        """After a write, and after a refused one, the folder holds the configuration only."""
        write_config(self.path, TEXT + "\n", self.read_digest)
        self.assertRaises(ConfigConflict, write_config, self.path, TEXT, self.read_digest)
        self.assertEqual(os.listdir(self.folder), ["iway.ini"])

    def test_a_failed_write_leaves_the_old_file_whole(self):
        """If the new text cannot be put in place, the old file is untouched and no temporary file stays."""
        self.patch(os, "replace", lambda a, b: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        self.assertRaises(OSError, write_config, self.path, "[broken", self.read_digest)
        with open(self.path) as f:
            self.assertEqual(f.read(), TEXT)
        self.assertEqual(os.listdir(self.folder), ["iway.ini"])

    def test_a_symlinked_path_replaces_the_file_it_points_to(self):
        """Saving through a symlink (to the share) writes the target; the link stays a link."""
        share = os.path.join(self.folder, "share")
        os.mkdir(share)
        target = os.path.join(share, "iway.ini")
        os.rename(self.path, target)
        os.symlink(target, self.path)
        new = TEXT.replace("threshold = 3", "threshold = 5")
        write_config(self.path, new, self.read_digest)
        self.assertTrue(os.path.islink(self.path))
        with open(target) as f:
            self.assertEqual(f.read(), new)
        self.assertEqual(stat.S_IMODE(os.stat(target).st_mode), 0o640)
        self.assertEqual(sorted(os.listdir(self.folder)), ["iway.ini", "share"])
        self.assertEqual(os.listdir(share), ["iway.ini"])


class ReplaceFileTests(unittest.TestCase):
    def setUp(self):
        self.folder = tempfile.mkdtemp(prefix="iwayfailover-test-")
        self.addCleanup(shutil.rmtree, self.folder, True)
        self.path = os.path.join(self.folder, "f")

    def test_group_is_kept_when_the_owner_cannot_be(self):
        """Not root: chown of uid and gid fails; the group alone is still given."""
        calls = []
        real_chown = os.chown

        def chown(path, uid, gid):
            calls.append((uid, gid))
            if uid != -1:
                raise PermissionError(1, "Operation not permitted")
            real_chown(path, uid, gid)

        self.patch(atomic.os, "chown", chown)
        like = os.stat(self.folder)
        like = os.stat_result((0o100640, like.st_ino, like.st_dev, 1, 4321, 4322) + tuple(like)[6:])
        atomic.replace_file(self.path, b"data\n", prefix=".t.", like=like)
        self.assertEqual(calls, [(4321, 4322), (-1, 4322)])
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
        if os.geteuid() == 0:
            self.assertEqual(os.stat(self.path).st_gid, 4322)

    def test_neither_owner_nor_group_allowed_still_writes(self):
        """If the group cannot be given either, the file is written with its mode all the same."""
        self.patch(atomic.os, "chown", lambda *a: (_ for _ in ()).throw(PermissionError(1, "Operation not permitted")))
        like = os.stat_result((0o100640,) + tuple(os.stat(self.folder))[1:])
        atomic.replace_file(self.path, b"data\n", prefix=".t.", like=like)
        with open(self.path, "rb") as f:
            self.assertEqual(f.read(), b"data\n")
        self.assertEqual(stat.S_IMODE(os.stat(self.path).st_mode), 0o640)
