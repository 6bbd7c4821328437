"""
The systemd template unit in conf/systemd, checked by systemd-analyze
verify (Debian's systemd, installed by make test) as an instance
(iwayfailover@serv_a), with ExecStart pointed at this install's iwsrv.
"""

import os
import shutil
import subprocess
import tempfile

from twisted.trial import unittest

from harness import IWSRV

UNIT = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "systemd",
                    "iwayfailover@.service")


class UnitTests(unittest.TestCase):
    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            raise unittest.SkipTest("systemd-analyze is not installed (Debian package systemd: make system-packages)")
        self.folder = tempfile.mkdtemp(prefix="iwayfailover-unit-")
        self.addCleanup(shutil.rmtree, self.folder, True)

    def verify(self, text):
        """systemd-analyze verify of the template as instance serv_a: (exit status, what it printed)."""
        with open(os.path.join(self.folder, "iwayfailover@.service"), "w") as f:
            f.write(text)
        done = subprocess.run(
            ["systemd-analyze", "verify", "--man=no", os.path.join(self.folder, "iwayfailover@serv_a.service")],
            capture_output=True, text=True, timeout=60,
        )
        return done.returncode, (done.stdout + done.stderr).strip()

    def unit(self):
        with open(UNIT) as f:
            text = f.read()
        self.assertIn("ExecStart=/opt/iwayfailover/bin/iwsrv ", text)
        return text.replace("/opt/iwayfailover/bin/iwsrv", IWSRV)

    def test_the_unit_verifies_without_a_warning(self):
        code, said = self.verify(self.unit())
        self.assertEqual((code, said), (0, ""))

    def test_the_check_catches_a_bad_unit(self):
        """The same check fails on a key systemd does not know and on a bad Restart= (so a pass means something)."""
        code, said = self.verify(self.unit().replace("Restart=on-failure", "Restart=sometimes\nBogusKey=1"))
        self.assertIn("BogusKey", said)
        self.assertIn("sometimes", said)

    def test_the_unit_runs_the_node_in_the_foreground_with_its_own_state(self):
        text = self.unit()
        self.assertIn("--name %i --state-dir ${STATE_DIRECTORY}", text)
        self.assertIn("StateDirectory=iwayfailover/%i", text)
        self.assertIn("Restart=on-failure", text)
        self.assertIn("NoNewPrivileges=yes", text)
