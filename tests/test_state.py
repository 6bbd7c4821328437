"""
Tests for L{iwayfailover.state}: the node's epoch, kept in its own state dir.
"""

import os
import shutil
import stat
import tempfile

from twisted.trial.unittest import TestCase

from iwayfailover.state import EpochStore, StateError, default_state_dir


def fresh_dir(test):
    """A new, empty temporary folder, removed after C{test}."""
    path = tempfile.mkdtemp(prefix="iwayfailover-test-")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


class EpochStoreTests(TestCase):
    def setUp(self):
        self.directory = fresh_dir(self)
        self.store = EpochStore(self.directory)

    def test_missing_file_is_epoch_zero(self):
        """With no epoch stored yet, the epoch is 0."""
        self.assertEqual(self.store.load(), 0)

    def test_saved_epoch_loads_back(self):
        """An epoch saved is the epoch loaded, also by another store on the same dir."""
        self.store.save(42)

        self.assertEqual(EpochStore(self.directory).load(), 42)

    def test_save_replaces_the_previous_epoch(self):
        """A second save replaces the first epoch."""
        self.store.save(3)

        self.store.save(4)

        self.assertEqual(self.store.load(), 4)

    def test_save_leaves_no_temporary_files(self):
        """After a save, the dir holds only the epoch file."""
        self.store.save(7)

        self.assertEqual(os.listdir(self.directory), ["epoch"])

    def test_garbage_in_the_file_is_a_state_error_naming_the_path(self):
        """An epoch file that does not hold a whole number raises StateError naming the file."""
        with open(self.store.path, "w") as f:
            f.write("not an epoch\n")

        error = self.assertRaises(StateError, self.store.load)

        self.assertIn(self.store.path, str(error))

    def test_negative_number_is_a_state_error(self):
        """An epoch file holding a negative number raises StateError."""
        with open(self.store.path, "w") as f:
            f.write("-1\n")

        self.assertRaises(StateError, self.store.load)

    def test_non_ascii_file_is_a_state_error_naming_the_path(self):
        """An epoch file with bytes that are not ASCII raises StateError naming the file."""
        with open(self.store.path, "wb") as f:
            f.write(b"\xff\xfe\n")

        error = self.assertRaises(StateError, self.store.load)

        self.assertIn(self.store.path, str(error))


class PrepareTests(TestCase):
    def test_prepare_creates_the_dir_private_to_the_user(self):
        """prepare() makes a missing state dir, with mode 0700."""
        directory = os.path.join(fresh_dir(self), "serv_a")

        EpochStore(directory).prepare()

        self.assertEqual(stat.S_IMODE(os.stat(directory).st_mode), 0o700)

    def test_prepare_creates_missing_parents(self):
        """prepare() makes the missing folders above the state dir too."""
        directory = os.path.join(fresh_dir(self), "state", "iwayfailover", "serv_a")

        EpochStore(directory).prepare()

        self.assertTrue(os.path.isdir(directory))

    def test_prepare_of_an_existing_dir_succeeds(self):
        """prepare() of a state dir that already exists keeps it."""
        directory = fresh_dir(self)
        EpochStore(directory).save(5)

        EpochStore(directory).prepare()

        self.assertEqual(EpochStore(directory).load(), 5)

    def test_dir_that_cannot_be_created_is_a_state_error_naming_it(self):
        """A state dir under a regular file raises StateError naming the dir."""
        blocker = os.path.join(fresh_dir(self), "blocker")
        with open(blocker, "w") as f:
            f.write("a file, not a folder\n")
        directory = os.path.join(blocker, "serv_a")

        error = self.assertRaises(StateError, EpochStore(directory).prepare)

        self.assertIn(f"state dir {directory}: cannot create it", str(error))


class DefaultStateDirTests(TestCase):
    def test_xdg_state_home_is_honoured(self):
        """With XDG_STATE_HOME set, the state dir is below it, named after the server."""
        self.patch(os, "environ", {"XDG_STATE_HOME": "/var/lib/someone/state", "HOME": "/home/someone"})

        self.assertEqual(default_state_dir("serv_a"), "/var/lib/someone/state/iwayfailover/serv_a")

    def test_without_xdg_state_home_it_is_under_local_state(self):
        """Without XDG_STATE_HOME, the state dir is ~/.local/state/iwayfailover/NAME."""
        self.patch(os, "environ", {"HOME": "/home/someone"})

        self.assertEqual(default_state_dir("serv_a"), "/home/someone/.local/state/iwayfailover/serv_a")

    def test_two_servers_get_two_dirs(self):
        """Two nodes on one host keep their state apart: the server name is part of the dir."""
        self.patch(os, "environ", {"XDG_STATE_HOME": "/var/lib/someone/state"})

        self.assertNotEqual(default_state_dir("serv_a"), default_state_dir("serv_b"))
