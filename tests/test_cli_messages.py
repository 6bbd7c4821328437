"""
What C{iwsrv} says when something is wrong: one line naming the mistake and
what to do (a fresh user's trial, issue 13): a name taken from the host
name, a configuration that is not there, a mistyped option or argument of a
command, C{--version} and C{--help} of a command, Ctrl-C while a node is
asked, a node that is not running, and the paths C{keygen} and C{adduser}
tell to set.
"""

import io
import os
import signal
import socket
import subprocess
import sys

from twisted.internet import defer
from twisted.trial.unittest import TestCase

from harness import IWSRV, temporary_directory
from iwayfailover import cli
from iwayfailover.tap import host_name_used

CONFIG = """\
[server:serv_a]
backup_location = iam2:1200
heartbeat_port = 1200
threshold = 3
console = tcp:{port}:interface=127.0.0.1

[server:serv_b]
backup_location = iam1:1200
heartbeat_port = 1200
threshold = 3
console = tcp:8082:interface=127.0.0.1

[listener:web]
plugin = web --listen tcp:8080 --path /srv/www
"""


class Output:
    """Standard output and error of the code under test, as text."""

    def capture(self):
        self.stdout, self.stderr = io.StringIO(), io.StringIO()
        self.patch(sys, "stdout", self.stdout)
        self.patch(sys, "stderr", self.stderr)

    def write_config(self, text=None, port=8081):
        path = os.path.join(temporary_directory(self), "iwayfailover.ini")
        with open(path, "w") as f:
            f.write(CONFIG.format(port=port) if text is None else text)
        return path

    def environ(self, name, value):
        """Set (or, with None, unset) the environment variable C{name} for this test."""
        saved = os.environ.get(name)
        self.addCleanup(lambda: os.environ.pop(name, None) if saved is None else os.environ.__setitem__(name, saved))
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


class HostNameTests(Output, TestCase):
    """Without --name the host name is asked for; when it has no section, the error says where the name came from."""

    def setUp(self):
        self.capture()
        self.patch(cli, "default_name", lambda: "build7")
        self.config = self.write_config()

    def test_status_names_the_host_name_and_the_option(self):
        """iwsrv status with no --name on host build7: the file's error, then that build7 is the host name, and --name."""
        code = cli.main(["status", "--config", self.config])

        self.assertEqual(code, 2)
        self.assertEqual(self.stderr.getvalue(), f"iwsrv status: {self.config}: [server:build7]: no section for server"
                         f" 'build7'; the servers defined are: [server:serv_a], [server:serv_b] {host_name_used('build7')}\n")

    def test_restart_listener_and_switchover_say_it_too(self):
        """The other commands that ask a node by name say the same."""
        for argv in (["restart-listener", "web", "--config", self.config], ["switchover", "--yes", "--config", self.config]):
            self.capture()
            self.assertEqual(cli.main(argv), 2)
            self.assertIn(host_name_used("build7"), self.stderr.getvalue())

    def test_a_name_given_is_not_called_the_host_name(self):
        """--name build7: the error is the file's alone."""
        code = cli.main(["status", "--config", self.config, "--name", "build7"])

        self.assertEqual(code, 2)
        self.assertIn("no section for server 'build7'", self.stderr.getvalue())
        self.assertNotIn("host name", self.stderr.getvalue())


class NoConfigurationTests(Output, TestCase):
    """A configuration that cannot be read: the error says how to name one, or where a node's copy would be."""

    def setUp(self):
        self.capture()
        self.folder = temporary_directory(self)
        self.missing = os.path.join(self.folder, "missing.ini")
        self.environ("XDG_STATE_HOME", os.path.join(self.folder, "state"))

    def test_no_config_option_nor_environment_says_how_to_name_one(self):
        """No --config, no $IWAY_CONFIG, nothing at the default path: pass --config PATH, or set IWAY_CONFIG."""
        self.environ("IWAY_CONFIG", None)
        self.patch(cli, "default_config", lambda: self.missing)

        code = cli.main(["status", "--name", "serv_a"])

        self.assertEqual(code, 2)
        self.assertEqual(self.stderr.getvalue(), f"iwsrv status: {self.missing}: cannot read the configuration: No such"
                         " file or directory (no --config given and IWAY_CONFIG is not set: pass --config PATH, or set"
                         " IWAY_CONFIG=PATH)\n")

    def test_the_default_path_down_with_a_copy_still_uses_the_copy(self):
        """No --config, the default file unreadable but the node's copy of it there: the copy is used, no hint."""
        from iwayfailover.config import parse_config
        from iwayfailover.config.lastgood import LastGood

        self.environ("IWAY_CONFIG", None)
        self.patch(cli, "default_config", lambda: self.missing)
        state = os.path.join(self.folder, "state", "iwayfailover", "serv_c")
        os.makedirs(state)
        LastGood(state, self.missing).keep(parse_config(CONFIG.format(port=8081), self.missing))

        code = cli.main(["status", "--name", "serv_c"])

        self.assertEqual(code, 2)  # no serv_c in the copy: said after the copy was read
        self.assertIn("using the node's local copy", self.stderr.getvalue())
        self.assertNotIn("--config PATH", self.stderr.getvalue())

    def test_a_share_down_with_no_copy_in_the_default_state_dir_says_pass_state_dir(self):
        """--config given but unreadable, no copy in the default state dir: where it looked, and --state-dir DIR."""
        code = cli.main(["status", "--config", self.missing, "--name", "serv_a"])

        self.assertEqual(code, 2)
        looked = os.path.join(self.folder, "state", "iwayfailover", "serv_a")
        self.assertIn(f"No such file or directory; the node's copy of it is not in {looked}: pass --state-dir DIR",
                      self.stderr.getvalue())
        self.assertEqual(self.stderr.getvalue().count("\n"), 1)

    def test_the_same_from_iway_config(self):
        """$IWAY_CONFIG names the file: it was meant, so the hint is the state dir's, not --config's."""
        self.environ("IWAY_CONFIG", self.missing)

        code = cli.main(["status", "--name", "serv_a"])

        self.assertEqual(code, 2)
        self.assertIn("pass --state-dir DIR", self.stderr.getvalue())
        self.assertNotIn("--config PATH", self.stderr.getvalue())

    def test_with_a_state_dir_given_and_no_copy_there_it_says_so(self):
        """--state-dir DIR with no copy in it: no copy there either (no advice to pass what was passed)."""
        code = cli.main(["status", "--config", self.missing, "--name", "serv_a", "--state-dir", self.folder])

        self.assertEqual(code, 2)
        self.assertIn(f"; no copy of it in {self.folder} either", self.stderr.getvalue())
        self.assertNotIn("pass --state-dir", self.stderr.getvalue())


class CommandUsageTests(Output, TestCase):
    """A command's usage error: one line, the mistake in plain words, did-you-mean, and its --help; exit 2."""

    def setUp(self):
        self.capture()

    def usage(self, *argv):
        code = cli.main(list(argv))
        self.assertEqual(code, 2)
        err = self.stderr.getvalue()
        self.assertEqual(err.count("\n"), 1, err)
        return err.rstrip("\n")

    def test_a_mistyped_option_has_did_you_mean_and_the_commands_help(self):
        """iwsrv status --nmae x: unknown option '--nmae'; did you mean --name? and `iwsrv status --help`."""
        self.assertEqual(self.usage("status", "--nmae", "x"), "iwsrv status: unknown option '--nmae'; did you mean"
                         " --name? (`iwsrv status --help` lists its options)")

    def test_a_mistyped_flag_has_did_you_mean(self):
        """iwsrv status --jsno: did you mean --json?"""
        self.assertIn("unknown option '--jsno'; did you mean --json?", self.usage("status", "--jsno"))

    def test_an_option_without_its_value_names_the_value(self):
        """iwsrv status -c: the option needs a value, shown as in the synopsis (--config PATH)."""
        self.assertEqual(self.usage("status", "-c"), "iwsrv status: option -c needs a value: --config PATH"
                         " (`iwsrv status --help` lists its options)")

    def test_switchover_options_are_checked_the_same_way(self):
        """iwsrv switchover --too x: did you mean --to?, and switchover's help."""
        err = self.usage("switchover", "--too", "x")

        self.assertIn("did you mean --to?", err)
        self.assertTrue(err.endswith("(`iwsrv switchover --help` lists its options)"), err)

    def test_restart_listener_without_a_listener_says_what_is_missing(self):
        """iwsrv restart-listener: the listener's name is missing, with the synopsis."""
        self.assertEqual(self.usage("restart-listener"), "iwsrv restart-listener: the listener's name is missing:"
                         " iwsrv restart-listener [options] LISTENER (`iwsrv restart-listener --help` lists its options)")

    def test_an_argument_status_does_not_take_is_named(self):
        """iwsrv status extra: the unexpected argument, and that status takes only options."""
        self.assertEqual(self.usage("status", "--config", "x.ini", "extra"), "iwsrv status: unexpected argument"
                         " 'extra': iwsrv status takes only options (`iwsrv status --help` lists its options)")

    def test_keygen_and_adduser_say_what_is_missing(self):
        """keygen with no path, adduser with no user: what is missing, and the command's help."""
        self.assertIn("iwsrv keygen: the new key file's path is missing: iwsrv keygen PATH", self.usage("keygen"))
        self.capture()
        self.assertIn("iwsrv adduser: the user's name is missing: iwsrv adduser FILE USER", self.usage("adduser", "x"))

    def test_a_command_cut_short_is_the_command_it_begins(self):
        """iwsrv restart: did you mean `iwsrv restart-listener`? (not status, closer in spelling)."""
        self.assertIn("did you mean `iwsrv restart-listener`?", self.usage("restart"))

    def test_the_node_options_value_error_is_plain_too(self):
        """iwsrv -c (running a node): the option needs a value, and `iwsrv --help`."""
        self.assertEqual(self.usage("-c"), "iwsrv: option -c needs a value: --config PATH"
                         " (`iwsrv --help` lists the commands and options)")


class VersionAndHelpTests(Output, TestCase):
    """Every command's --version is iwsrv's; every --help starts with a usage line of iwsrv."""

    def setUp(self):
        self.capture()

    def exits(self, *argv):
        error = self.assertRaises(SystemExit, cli.main, list(argv))
        self.assertIn(error.code, (0, None))
        return self.stdout.getvalue()

    def test_a_commands_version_is_iwayfailovers(self):
        """iwsrv status --version (and every other command's) prints what iwsrv --version prints."""
        for command in ("status", "switchover", "restart-listener", "keygen", "adduser"):
            self.capture()
            self.assertEqual(self.exits(command, "--version"), cli.version_line() + "\n", command)

    def test_a_commands_help_lists_iwayfailovers_version(self):
        """iwsrv status --help: --version is iwayfailover's, not "Display Twisted version"."""
        text = self.exits("status", "--help")

        self.assertTrue(text.startswith("Usage: iwsrv status "), text)
        self.assertIn("Display iwayfailover's and Twisted's versions and exit.", text)
        self.assertNotIn("Display Twisted version", text)

    def test_the_nodes_help_starts_with_a_usage_line(self):
        """iwsrv -b --help: "Usage: iwsrv [-b] ..." first, and it points at the other commands."""
        text = self.exits("-b", "--help")

        self.assertEqual(text.splitlines()[0], "Usage: iwsrv [-b] [--config PATH] [--name NAME] [--state-dir DIR]")
        self.assertIn("iwsrv --help", " ".join(text.split()))

    def test_the_nodes_version_is_iwayfailovers(self):
        """iwsrv -b --version: iwsrv's version line, not twistd's."""
        self.assertEqual(self.exits("-b", "--version"), cli.version_line() + "\n")


class NotListeningTests(TestCase):
    """A console where nothing listens: the command says so, in words, with the address it tried."""

    def test_a_refused_connection_says_nothing_listens_there(self):
        """Connection refused: nothing listens on 127.0.0.1:8081; the server is not running, or its console is elsewhere."""
        from twisted.internet.error import ConnectionRefusedError

        class Server:
            name, console = "serv_a", "tcp:8081:interface=127.0.0.1"

        error = self.failureResultOf(cli._reach(Server(), defer.fail(ConnectionRefusedError())), cli.CommandError).value

        self.assertEqual(str(error), "cannot ask serv_a on tcp:8081:interface=127.0.0.1: nothing listens on"
                         " 127.0.0.1:8081 (connection refused): serv_a is not running, or its console is elsewhere")

    def test_the_address_of_each_kind_of_console(self):
        """tcp on every interface: loopback; tcp6: [::1]; a Unix socket: its path."""
        self.assertEqual(cli.console_address("tcp:8081"), "127.0.0.1:8081")
        self.assertEqual(cli.console_address(r"tcp6:8081:interface=\:\:1"), "[::1]:8081")
        self.assertEqual(cli.console_address("unix:/run/iway.sock"), "/run/iway.sock")


class RestartListenerMeantTests(TestCase):
    """A listener the node does not have, and the file names one close to it: did you mean."""

    def refused(self, listener):
        from iwayfailover.config import parse_config

        config = parse_config(CONFIG.format(port=8081), "/share/iway.ini")

        def call(client, method, path, timeout, headers=None):
            return defer.succeed((409, {"error": f"serv_a has no listener {listener!r}"}))

        d = cli.restart_listener(config, "serv_a", listener, call, lambda server: "5e" * 32)
        return str(self.failureResultOf(d, cli.CommandError).value)

    def test_a_mistyped_listener_has_did_you_mean_from_the_file(self):
        """restart-listener wbe: the node's refusal, then: did you mean web?"""
        self.assertEqual(self.refused("wbe"), "serv_a refused to restart listener wbe: serv_a has no listener 'wbe';"
                         " did you mean web?")

    def test_nothing_close_has_no_guess(self):
        """restart-listener ftp, and the file has only web: no did-you-mean."""
        self.assertNotIn("did you mean", self.refused("ftp"))


class PathsToSetTests(Output, TestCase):
    """keygen and adduser tell the path to set in the file: absolute, since the file reads a relative one from its folder."""

    def setUp(self):
        self.capture()
        self.folder = os.path.realpath(temporary_directory(self))
        here = os.getcwd()
        os.chdir(self.folder)
        self.addCleanup(os.chdir, here)

    def test_keygen_of_a_relative_path_gives_the_absolute_one(self):
        """iwsrv keygen conf/failover.key: set secret_file = /abs/conf/failover.key, and why."""
        os.mkdir("conf")

        self.assertEqual(cli.main(["keygen", "conf/failover.key"]), 0)

        out = self.stdout.getvalue()
        self.assertIn(f"set secret_file = {os.path.join(self.folder, 'conf', 'failover.key')} in [failover]", out)
        self.assertIn("a relative path there is read from the configuration file's folder", out)

    def test_adduser_of_a_relative_path_gives_the_absolute_one(self):
        """iwsrv adduser users ops: set console_users = /abs/users."""
        code = cli.adduser_main(["users", "ops", "--password-stdin"], stdin=io.StringIO("a good password\n"))

        self.assertEqual(code, 0)
        self.assertIn(f"set console_users = {os.path.join(self.folder, 'users')} in [failover]", self.stdout.getvalue())


class AskingARealConsoleTests(Output, TestCase):
    """iwsrv status as a process, against a socket of this test: one that never answers, one that refuses."""

    def iwsrv(self, config):
        process = subprocess.Popen([IWSRV, "status", "--config", config, "--name", "serv_a"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

        def reap():
            if process.poll() is None:
                process.kill()
            process.communicate(timeout=30)

        self.addCleanup(reap)
        return process

    def socket(self):
        """A TCP socket bound to a free loopback port, kept (and so the port) until the test ends."""
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(s.close)
        s.bind(("127.0.0.1", 0))
        return s, s.getsockname()[1]

    def test_ctrl_c_while_a_node_does_not_answer_is_interrupted(self):
        """A node that accepts and never answers (paused): Ctrl-C ends iwsrv status with "interrupted", status 130."""
        listening, port = self.socket()
        listening.listen(1)
        listening.settimeout(30)
        process = self.iwsrv(self.write_config(port=port))
        connection, _ = listening.accept()  # iwsrv has connected and waits for the answer
        self.addCleanup(connection.close)

        process.send_signal(signal.SIGINT)
        out, err = process.communicate(timeout=30)

        self.assertEqual((process.returncode, err, out), (130, "iwsrv status: interrupted\n", ""))

    def test_a_refused_connection_still_names_the_files_error(self):
        """Nothing listens on the console and the file has an error: the refusal, then the file's error, status 1."""
        bound, port = self.socket()  # bound, not listening: a connection to it is refused
        text = CONFIG.format(port=port).replace("threshold = 3\nconsole", "threshold = 3\n[broken\nconsole", 1)
        config = self.write_config(text)
        line = text.splitlines().index("[broken") + 1

        process = self.iwsrv(config)
        out, err = process.communicate(timeout=30)

        self.assertEqual(process.returncode, 1, err)
        self.assertEqual(err.splitlines(), [
            f"iwsrv status: cannot ask serv_a on tcp:{port}:interface=127.0.0.1: nothing listens on 127.0.0.1:{port}"
            " (connection refused): serv_a is not running, or its console is elsewhere",
            "iwsrv status: the shared file has an error (the nodes keep running their last good configuration):"
            f" {config}: cannot parse line {line}: [broken (allowed: [section] headers and key = value lines)",
        ])
