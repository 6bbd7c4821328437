"""
The systemd template unit in conf/systemd, checked by systemd-analyze
verify (Debian's systemd, installed by make test) as an instance
(iwayfailover@serv_a), with ExecStart pointed at this install's iwsrv, with
and without the drop-in docs/operations.md shows; and the install steps of
docs/operations.md, which must name the paths and the user the unit uses.
"""

import os
import re
import textwrap
import shutil
import subprocess
import tempfile

from twisted.trial import unittest

from harness import IWSRV

SOURCE_TREE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
UNIT = os.path.join(SOURCE_TREE, "conf", "systemd", "iwayfailover@.service")
OPERATIONS = os.path.join(SOURCE_TREE, "docs", "operations.md")
README = os.path.join(SOURCE_TREE, "README.md")


def install_section():
    """docs/operations.md's install steps: its prose, and the lines of its indented blocks (comments dropped)."""
    with open(OPERATIONS) as f:
        text = f.read()
    section = text[text.index("## Install a node as a systemd service"):text.index("What the unit does:")]
    lines = [re.sub(r"\s+# .*$", "", line[4:]) for line in section.splitlines() if line.startswith("    ")]
    return section, lines


def unit_settings(text):
    """The unit's Key=value lines as a dict (the last value of a repeated key)."""
    return dict(line.split("=", 1) for line in text.splitlines() if re.match(r"^[A-Za-z]+=", line))


class UnitTests(unittest.TestCase):
    def setUp(self):
        if shutil.which("systemd-analyze") is None:
            raise unittest.SkipTest("systemd-analyze is not installed (Debian package systemd: make system-packages)")
        self.folder = tempfile.mkdtemp(prefix="iwayfailover-unit-")
        self.addCleanup(shutil.rmtree, self.folder, True)

    def verify(self, text, drop_in=None):
        """
        systemd-analyze verify of the template as instance serv_a, with
        C{drop_in} as a drop-in of the template if given: (exit status, what it printed).
        """
        with open(os.path.join(self.folder, "iwayfailover@.service"), "w") as f:
            f.write(text)
        if drop_in is not None:
            os.makedirs(os.path.join(self.folder, "iwayfailover@.service.d"), exist_ok=True)
            with open(os.path.join(self.folder, "iwayfailover@.service.d", "share.conf"), "w") as f:
                f.write(drop_in)
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

    def documented_drop_in(self):
        """The drop-in docs/operations.md has `systemctl edit iwayfailover@.service` write."""
        _, lines = install_section()
        start = lines.index("[Service]")
        block = lines[start:]
        ends = [n for n, line in enumerate(block) if not re.match(r"^(\[Service\]|[A-Za-z]+=.*)$", line)]
        return "\n".join(block[:ends[0] if ends else len(block)]) + "\n"

    def test_the_unit_verifies_with_the_documented_drop_in(self):
        """The drop-in that points the unit at the share (IWAY_CONFIG, ReadWritePaths) verifies without a warning."""
        drop_in = self.documented_drop_in()
        self.assertIn("Environment=IWAY_CONFIG=", drop_in)
        self.assertEqual(self.verify(self.unit(), drop_in), (0, ""))

    def test_the_check_reads_the_drop_in(self):
        """A bad key in the drop-in is reported (so the drop-in's pass means something)."""
        code, said = self.verify(self.unit(), self.documented_drop_in() + "BogusKey=1\n")
        self.assertIn("BogusKey", said)

    def test_the_documented_grant_of_realtime_and_locked_memory_verifies(self):
        """The drop-in docs/operations.md gives for realtime and lock_memory: resource limits, no capability."""
        with open(OPERATIONS) as f:
            text = f.read()
        block = re.search(r"\n\n((?:    .*\n)*    LimitRTPRIO=.*\n(?:    .*\n)*)", text).group(1)
        drop_in = textwrap.dedent(block)
        self.assertEqual(drop_in, "[Service]\nRestrictRealtime=no\nLimitRTPRIO=1\nLimitMEMLOCK=infinity\n")
        self.assertEqual(self.verify(self.unit(), drop_in), (0, ""))
        from iwayfailover import steady

        self.assertIn("LimitRTPRIO=1", steady.REALTIME_GRANT, "the node's refusal names the same grant")


class DocumentedInstallTests(unittest.TestCase):
    """docs/operations.md's install steps and the unit agree on every path and the user."""

    def setUp(self):
        if not (os.path.isfile(OPERATIONS) and os.path.isfile(UNIT)):
            raise unittest.SkipTest("needs the source tree's docs/operations.md and conf/systemd")
        with open(UNIT) as f:
            self.unit = unit_settings(f.read())
        self.prose, self.lines = install_section()

    def line(self, pattern):
        """The one step that matches C{pattern}, as a match."""
        found = [m for m in (re.match(pattern, line) for line in self.lines) if m]
        self.assertEqual(len(found), 1, (pattern, self.lines))
        return found[0]

    def test_the_venv_is_where_the_unit_runs_iwsrv_and_its_plugin_cache_is_built(self):
        """The venv made and installed into is the one ExecStart runs; then its plugin cache is built."""
        venv = self.line(r"python3 -m venv (\S+)$").group(1)
        self.assertTrue(self.unit["ExecStart"].startswith(f"{venv}/bin/iwsrv "), self.unit["ExecStart"])
        self.line(re.escape(f"{venv}/bin/pip install ") + r"\S+$")
        self.line(re.escape(f'{venv}/bin/python -c "from twisted.plugin import IPlugin, getPlugins; list(getPlugins(IPlugin))"') + "$")
        self.assertIn("dropin.cache: error number 13", self.prose)

    def test_the_user_made_is_the_units_and_owns_the_key_and_the_console_users(self):
        """The system user made is the unit's User= and Group=, and is given the key and the users file."""
        user = self.line(r"useradd --system .* (\S+)$").group(1)
        self.assertEqual((self.unit["User"], self.unit["Group"]), (user, user))
        key = self.line(r"\S+/bin/iwsrv keygen (\S+)$").group(1)
        users = self.line(r"\S+/bin/iwsrv adduser (\S+) \S+$").group(1)
        self.line(re.escape(f"chown {user}:{user} {key} {users}") + "$")
        self.line(re.escape(f"chmod 0600 {key} {users}") + "$")

    def test_the_node_files_are_beside_the_units_default_configuration(self):
        """The key and users file are made in the folder of the unit's default IWAY_CONFIG, which is made."""
        default = self.unit["Environment"].split("IWAY_CONFIG=", 1)[1]
        folder = os.path.dirname(default)
        self.line(re.escape(f"mkdir -p {folder}") + "$")
        self.assertEqual(os.path.dirname(self.line(r"\S+/bin/iwsrv keygen (\S+)$").group(1)), folder)
        self.assertEqual(os.path.dirname(self.line(r"\S+/bin/iwsrv adduser (\S+) \S+$").group(1)), folder)
        self.assertIn(f"`{default}`, the unit's default", self.prose)

    def test_the_readmes_key_is_the_key_the_steps_make(self):
        """The README's shared-file example names the key file the install steps make, on local disk."""
        key = self.line(r"\S+/bin/iwsrv keygen (\S+)$").group(1)
        with open(README) as f:
            self.assertRegex(f.read(), r"\n    secret_file = " + re.escape(key) + r"\s")
        self.assertIn(f"secret_file = {key}", self.prose)

    def test_the_unit_file_installed_is_the_one_in_the_tree_and_its_state_dir_is_documented(self):
        """The step that installs the unit names conf/systemd's file; the state dir the docs name is StateDirectory=."""
        source = self.line(r"install -m 0644 (\S+) /etc/systemd/system/$").group(1)
        self.assertEqual(os.path.join(SOURCE_TREE, source), UNIT)
        self.assertEqual(self.unit["StateDirectory"], "iwayfailover/%i")
        self.assertIn("`/var/lib/iwayfailover/NAME`", self.prose)
