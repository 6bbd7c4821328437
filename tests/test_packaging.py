"""
The twistd plugin ships in the installed (not editable) copy and twistd
finds it: the place twistd plugins most often break.
"""

import os
import subprocess
import sysconfig

from twisted.application.service import IServiceMaker
from twisted.plugin import getPlugins
from twisted.trial import unittest

import iwayfailover
from harness import TWISTD

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SITE = sysconfig.get_paths()["purelib"]


class PackagingTests(unittest.TestCase):
    def test_tests_run_against_the_installed_copy(self):
        """The package under test is the installed one, not the source folder (make test installs it)."""
        self.assertTrue(
            os.path.abspath(iwayfailover.__file__).startswith(os.path.abspath(SITE)),
            f"iwayfailover imported from {iwayfailover.__file__}; run `make test`, which installs it",
        )

    def test_plugin_module_is_installed(self):
        """The wheel carries twisted/plugins/iwayfailover_plugin.py (find: would have skipped it)."""
        self.assertTrue(os.path.isfile(os.path.join(SITE, "twisted", "plugins", "iwayfailover_plugin.py")))

    def test_source_has_no_init_in_the_plugin_folders(self):
        """twisted/ and twisted/plugins/ of this project have no __init__.py, which would hide Twisted's own plugins."""
        self.assertFalse(os.path.exists(os.path.join(SOURCE_TREE, "twisted", "__init__.py")))
        self.assertFalse(os.path.exists(os.path.join(SOURCE_TREE, "twisted", "plugins", "__init__.py")))

    def test_get_plugins_yields_iway_failover(self):
        """Twisted's plugin scan finds the iway-failover service maker, pointing at iwayfailover.tap."""
        makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
        self.assertIn("iway-failover", makers)
        self.assertEqual(makers["iway-failover"].module, "iwayfailover.tap")
        self.assertIn("web", makers, "Twisted's own plugins must still be found")

    def test_twistd_help_lists_the_plugin(self):
        """twistd --help lists iway-failover among its commands."""
        result = subprocess.run([TWISTD, "--help"], capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("iway-failover", result.stdout)

    def test_twistd_plugin_help_shows_its_options(self):
        """twistd iway-failover --help documents --backup/-b, --config, --name and --state-dir."""
        result = subprocess.run([TWISTD, "iway-failover", "--help"], capture_output=True, text=True, timeout=60)
        for option in ("--backup", "-b", "--config", "--name", "--state-dir"):
            self.assertIn(option, result.stdout)
