"""The twistd plugin's options and the structure makeService builds."""

import json
import os
import socket
import time

from twisted.application.service import IService
from twisted.internet.error import CannotListenError
from twisted.internet.selectreactor import SelectReactor
from twisted.internet.task import Clock, LoopingCall
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import formatEvent, globalLogPublisher
from twisted.python import usage
from twisted.trial import unittest

from harness import temporary_directory, wait_for
from iwayfailover import auth, tap
from iwayfailover.node import FailoverNode
from iwayfailover.ports import ServerPort
from iwayfailover.events import EventLogService
from iwayfailover.reload import ConfigPoller

CONFIG = """
[failover]
heartbeat_interval = 1
secret_file = failover.key

[server:serv_a]
backup_location = 192.0.2.2:1200
heartbeat_port = 1201
threshold = 3
console = tcp:8081:interface=127.0.0.1

[server:serv_b]
backup_location = 192.0.2.1:1201
heartbeat_port = 1200
threshold = 3
"""


class EnvironmentMixin:
    def set_environ(self, **values):
        saved = {k: os.environ.get(k) for k in values}

        def restore():
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v

        self.addCleanup(restore)
        for k, v in values.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class OptionsTests(EnvironmentMixin, unittest.TestCase):
    def parse(self, *argv):
        options = tap.Options()
        options.parseOptions(list(argv))
        return options

    def test_default_role_is_live(self):
        """Without -b and without IWAY_BACKUP, a node starts live."""
        self.set_environ(IWAY_BACKUP=None)
        self.assertFalse(self.parse("--config", "x.ini", "--name", "serv_a")["backup"])

    def test_backup_flag_long_and_short(self):
        """--backup and -b both start a backup."""
        self.set_environ(IWAY_BACKUP=None)
        self.assertTrue(self.parse("--config", "x.ini", "--backup")["backup"])
        self.assertTrue(self.parse("--config", "x.ini", "-b")["backup"])

    def test_iway_backup_environment_means_backup(self):
        """IWAY_BACKUP set to true, 1, yes or on (any case) starts a backup, like -b."""
        for value in ("true", "1", "yes", "on", "TRUE", " On "):
            self.set_environ(IWAY_BACKUP=value)
            self.assertTrue(self.parse("--config", "x.ini")["backup"], value)

    def test_iway_backup_false_words_mean_live(self):
        """IWAY_BACKUP set to false, 0, no, off or empty leaves the node live."""
        for value in ("false", "0", "no", "off", ""):
            self.set_environ(IWAY_BACKUP=value)
            self.assertFalse(self.parse("--config", "x.ini")["backup"], value)

    def test_iway_backup_with_another_word_is_an_error_naming_it(self):
        """A value that is neither yes nor no is refused, naming the variable and its value."""
        self.set_environ(IWAY_BACKUP="maybe")
        error = self.assertRaises(usage.UsageError, self.parse, "--config", "x.ini")
        self.assertIn("IWAY_BACKUP='maybe'", str(error))

    def test_defaults_name_config_and_state_dir(self):
        """The name defaults to the host name, the config to $IWAY_CONFIG, the state dir to a per-user folder of that name."""
        self.set_environ(IWAY_CONFIG="/share/iway.ini", XDG_STATE_HOME="/var/tmp/state", IWAY_BACKUP=None)
        options = self.parse()
        host = socket.gethostname().split(".")[0]
        self.assertEqual(options["config"], "/share/iway.ini")
        self.assertEqual(options["name"], host)
        self.assertEqual(options["state-dir"], os.path.join("/var/tmp/state", "iwayfailover", host))


class MakeServiceTests(EnvironmentMixin, unittest.TestCase):
    def options(self, text=CONFIG, name="serv_a", backup=False):
        folder = temporary_directory(self)
        path = os.path.join(folder, "iway.ini")
        with open(path, "w") as f:
            f.write(text)
        auth.write_new_key_file(os.path.join(folder, "failover.key"))
        self.set_environ(IWAY_BACKUP=None)
        options = tap.Options()
        argv = ["--config", path, "--name", name, "--state-dir", os.path.join(folder, "state")]
        options.parseOptions(argv + (["-b"] if backup else []))
        return options

    def test_make_service_builds_the_node_with_its_ports_and_poller(self):
        """makeService gives a node with a heartbeat port, a console and a configuration poller, ports bound at once."""
        reactor = MemoryReactorClock()
        node = tap.makeService(self.options(), reactor=reactor)
        self.assertIsInstance(node, FailoverNode)
        IService(node)
        children = list(node)
        self.assertEqual([type(c) for c in children], [ServerPort, ServerPort, ConfigPoller, EventLogService])
        self.assertEqual([c.label for c in children[:2]], ["heartbeat port", "console"])
        self.assertEqual([(port, interface) for port, _, _, interface in reactor.tcpServers], [(1201, ""), (8081, "127.0.0.1")])

    GROUP = (
        "[failover]\ncoordinator = etcd\netcd_endpoints = https://127.0.0.1:2379\netcd_cacert = ca.pem\n"
        "heartbeat_interval = 0.5\n\n[server:alpha]\nthreshold = 2\n\n[server:beta]\nthreshold = 2\n"
    )

    def test_make_service_builds_a_group_member_with_no_heartbeat_port(self):
        """coordinator = etcd: makeService gives a GroupNode (no heartbeat port), and starts nothing yet."""
        from iwayfailover.coordinators.etcd import GroupNode

        options = self.options(self.GROUP.replace("etcd_cacert = ca.pem\n", "").replace("https", "http"), name="alpha")
        node = tap.makeService(options, reactor=MemoryReactorClock())
        self.assertIsInstance(node, GroupNode)
        self.assertNotIn(ServerPort, [type(c) for c in node])

    def test_an_etcd_cacert_that_is_no_certificate_is_one_line(self):
        """A group whose etcd_cacert is not PEM: makeService stops with one line naming the file, not a traceback."""
        options = self.options(self.GROUP, name="alpha")
        with open(os.path.join(os.path.dirname(options["config"]), "ca.pem"), "w") as f:
            f.write("not a certificate\n")
        error = self.assertRaises(SystemExit, tap.makeService, options, MemoryReactorClock())
        self.assertIn("ca.pem", str(error))
        self.assertIn("etcd TLS files", str(error))
        self.assertEqual(len(str(error).splitlines()), 1)

    def test_make_service_puts_a_wall_clock_reactors_timers_on_the_monotonic_clock(self):
        """makeService gives a reactor timed on time.time a monotonic seconds() that reads as the wall clock did."""
        reactor = MemoryReactorClock()
        reactor.seconds = time.time  # as every real reactor is timed
        tap.makeService(self.options(), reactor=reactor)
        self.assertIsNot(reactor.seconds, time.time)
        self.assertLess(abs(reactor.seconds() - time.time()), 1.0)

    def test_no_console_key_no_console(self):
        """A server without a console key gets no console port."""
        node = tap.makeService(self.options(name="serv_b", backup=True), reactor=MemoryReactorClock())
        self.assertEqual([c.label for c in node if isinstance(c, ServerPort)], ["heartbeat port"])
        self.assertTrue(node.start_as_backup)

    def hung_share(self, options):
        """The configuration file replaced by a FIFO nobody writes: opening it blocks, as a hung share does."""
        path = options["config"]
        os.remove(path)
        os.mkfifo(path)

        def release():
            # Let the abandoned reader thread go: a writer that opens and closes gives it end of file.
            def opened():
                try:
                    os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
                    return True
                except OSError:  # ENXIO: no reader yet
                    return False

            wait_for(opened, 5, "the reader of the FIFO")

        self.addCleanup(release)
        return path

    def test_a_startup_read_gives_the_checked_configuration(self):
        """load_at_startup reads the file and its key file, as load_checked_config does."""
        path = self.options()["config"]

        config = tap.load_at_startup(path, timeout=10)

        self.assertEqual(config.server("serv_a").threshold, 3.0)
        self.assertEqual(len(config.keys.key_ids), 1)

    def test_a_startup_read_that_hangs_gives_up_naming_the_file(self):
        """A read that has not finished after the timeout raises a ConfigError naming the file and how long."""
        path = self.hung_share(self.options())

        error = self.assertRaises(tap.ConfigError, tap.load_at_startup, path, 0.2)

        self.assertIn(path, str(error))
        self.assertIn("has not finished after 0.2 s", str(error))

    def test_make_service_on_a_hung_share_exits_with_one_line(self):
        """makeService on a file whose read hangs stops after STARTUP_READ_TIMEOUT with one line naming it."""
        options = self.options()
        path = self.hung_share(options)
        self.patch(tap, "STARTUP_READ_TIMEOUT", 0.2)

        error = self.assertRaises(SystemExit, tap.makeService, options, MemoryReactorClock())

        message = str(error.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(path, message)
        self.assertIn("has not finished", message)

    def test_unknown_server_name_exits_with_one_line_listing_the_sections(self):
        """A name with no section stops startup with one line naming the sections there are."""
        error = self.assertRaises(SystemExit, tap.makeService, self.options(name="serv_x"), MemoryReactorClock())
        message = str(error.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn("serv_x", message)
        self.assertIn("[server:serv_a], [server:serv_b]", message)

    def unnamed_options(self, host):
        """Options with no --name, on a host called C{host}."""
        self.patch(tap, "default_name", lambda: host)
        named = self.options()
        options = tap.Options()
        options.parseOptions(["--config", named["config"], "--state-dir", named["state-dir"]])
        return options

    def test_no_name_logs_that_the_host_name_is_used(self):
        """Without --name the node says which name it took: the host name."""
        events = []
        globalLogPublisher.addObserver(events.append)
        self.addCleanup(globalLogPublisher.removeObserver, events.append)
        node = tap.makeService(self.unnamed_options("serv_a"), reactor=MemoryReactorClock())
        self.assertEqual(node.name, "serv_a")
        self.assertIn("no --name given: using the host name serv_a", [formatEvent(e) for e in events])

    def test_no_name_and_no_section_of_the_host_name_says_so(self):
        """Without --name, a host name with no section stops startup with one line saying the host name was used."""
        error = self.assertRaises(SystemExit, tap.makeService, self.unnamed_options("build7"), MemoryReactorClock())
        message = str(error.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn("[server:serv_a], [server:serv_b]", message)
        self.assertIn("(no --name given, so the host name 'build7' was used: pass --name NAME)", message)

    def test_bad_value_exits_with_one_line_naming_file_section_and_key(self):
        """A bad value stops startup with one line naming the file, section, key and value."""
        options = self.options(text=CONFIG.replace("threshold = 3\nconsole", "threshold = soon\nconsole"))
        error = self.assertRaises(SystemExit, tap.makeService, options, MemoryReactorClock())
        message = str(error.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(options["config"], message)
        self.assertIn("[server:serv_a] threshold = 'soon'", message)

    def test_a_port_in_use_exits_with_one_line(self):
        """A heartbeat port that cannot be had stops startup with one line naming it."""
        port = 41200
        text = CONFIG.replace("heartbeat_port = 1201", f"heartbeat_port = tcp:{port}:interface=127.0.0.1")

        class BusyReactor(MemoryReactorClock):
            def listenTCP(self, port, factory, backlog=50, interface=""):
                raise CannotListenError(interface, port, OSError(98, "Address already in use"))

        error = self.assertRaises(SystemExit, tap.makeService, self.options(text=text), BusyReactor())
        message = str(error.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(f"heartbeat port tcp:{port}:interface=127.0.0.1", message)
        self.assertIn("Address already in use", message)

    def test_unknown_listener_plugin_exits_naming_the_listener(self):
        """A listener naming a plugin that is not installed stops startup, naming its section and key."""
        text = CONFIG + "\n[listener:web]\nplugin = no-such-plugin --x\n"
        error = self.assertRaises(SystemExit, tap.makeService, self.options(text=text), MemoryReactorClock())
        self.assertIn("[listener:web] plugin", str(error.code))
        self.assertIn("no twistd plugin named 'no-such-plugin'", str(error.code))

    def test_same_host_backup_location_is_detected(self):
        """A backup location on this very host is recognised (loopback, this host's name)."""
        self.assertTrue(tap.same_host("127.0.0.1"))
        self.assertTrue(tap.same_host("::1"))
        self.assertTrue(tap.same_host("localhost"))
        self.assertTrue(tap.same_host(socket.gethostname()))
        self.assertFalse(tap.same_host("192.0.2.7"))


class TrustAtStartTests(EnvironmentMixin, unittest.TestCase):
    """A node starts only with a key, or with insecure = true said out loud."""

    def start(self, text, key=True, mode=0o600):
        """makeService on C{text}, with log events captured; returns (node or SystemExit, events, folder)."""
        folder = temporary_directory(self)
        path = os.path.join(folder, "iway.ini")
        with open(path, "w") as f:
            f.write(text)
        if key:
            auth.write_new_key_file(os.path.join(folder, "failover.key"))
            os.chmod(os.path.join(folder, "failover.key"), mode)
        self.set_environ(IWAY_BACKUP=None)
        options = tap.Options()
        options.parseOptions(["--config", path, "--name", "serv_a", "--state-dir", os.path.join(folder, "state")])
        events = []
        observer = events.append
        globalLogPublisher.addObserver(observer)
        self.addCleanup(globalLogPublisher.removeObserver, observer)
        try:
            outcome = tap.makeService(options, reactor=MemoryReactorClock())
        except SystemExit as e:
            outcome = e
        return outcome, [formatEvent(e) for e in events], folder

    def test_no_key_and_no_insecure_refuses_to_start(self):
        """Without secret_file or insecure = true, startup stops with one line naming secret_file and keygen."""
        outcome, _, _ = self.start(CONFIG.replace("secret_file = failover.key\n", ""), key=False)
        self.assertIsInstance(outcome, SystemExit)
        message = str(outcome.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn("[failover] secret_file: missing", message)
        self.assertIn("iwsrv keygen", message)
        self.assertIn("insecure = true", message)

    def test_a_missing_key_file_names_iwsrv_keygen(self):
        """secret_file names a file that is not there: startup stops with one line naming it and `iwsrv keygen PATH`."""
        outcome, _, folder = self.start(CONFIG, key=False)
        self.assertIsInstance(outcome, SystemExit)
        message = str(outcome.code)
        self.assertEqual(message.count("\n"), 0)
        self.assertIn(f"no such file: {os.path.join(folder, 'failover.key')}", message)
        self.assertIn("make one with `iwsrv keygen PATH`", message)

    def test_insecure_starts_and_warns(self):
        """insecure = true starts an unsigned node, with a warning at start."""
        outcome, lines, _ = self.start(CONFIG.replace("secret_file = failover.key", "insecure = true"), key=False)
        self.assertIsInstance(outcome, FailoverNode)
        self.assertTrue(outcome.keys.insecure)
        self.assertTrue(any("NOT authenticated" in line for line in lines), lines)

    def test_a_key_file_too_short_refuses_to_start(self):
        """A key file holding a short password stops startup, naming the file and the length needed."""
        text = CONFIG.replace("secret_file = failover.key", "secret_file = short.key")
        folder = temporary_directory(self)
        with open(os.path.join(folder, "short.key"), "w") as f:
            f.write("hunter2\n")
        path = os.path.join(folder, "iway.ini")
        with open(path, "w") as f:
            f.write(text)
        self.set_environ(IWAY_BACKUP=None)
        options = tap.Options()
        options.parseOptions(["--config", path, "--name", "serv_a", "--state-dir", os.path.join(folder, "state")])
        error = self.assertRaises(SystemExit, tap.makeService, options, MemoryReactorClock())
        self.assertIn("short.key", str(error.code))
        self.assertIn(f"at least {auth.MIN_KEY_LENGTH}", str(error.code))
        self.assertNotIn("hunter2", str(error.code))

    def test_a_key_file_others_can_read_is_warned_about(self):
        """A key file of mode 0644 starts, with a warning naming the file and the chmod that fixes it."""
        outcome, lines, folder = self.start(CONFIG, mode=0o644)
        self.assertIsInstance(outcome, FailoverNode)
        warning = [line for line in lines if "chmod 600" in line]
        self.assertEqual(len(warning), 1, lines)
        self.assertIn(os.path.join(folder, "failover.key"), warning[0])

    def test_a_private_key_file_starts_quietly(self):
        """A key file of mode 0600 gives no warning about the key."""
        outcome, lines, _ = self.start(CONFIG)
        self.assertIsInstance(outcome, FailoverNode)
        self.assertFalse([line for line in lines if "key" in line.lower() and "chmod" in line], lines)

    def test_the_key_never_appears_in_status_or_the_start_log(self):
        """Status shows the key file and a key id, never the key; nor does the log."""
        outcome, lines, folder = self.start(CONFIG, mode=0o644)
        with open(os.path.join(folder, "failover.key")) as f:
            key = f.read().strip()
        status = json.dumps(outcome.status().to_json()) + repr(outcome.status())
        self.assertEqual(outcome.status().to_json()["auth"]["mode"], "hmac-sha256")
        self.assertEqual(outcome.status().to_json()["auth"]["key_ids"], list(outcome.keys.key_ids))
        self.assertNotIn(key, status)
        self.assertNotIn(key[:16], status)
        self.assertFalse([line for line in lines if key[:16] in line])
        self.assertNotIn(key[:16], repr(outcome.config))


class PairLimitTests(EnvironmentMixin, unittest.TestCase):
    """At every start the node says what its pair cannot decide, so that nobody learns it in an outage."""

    start = TrustAtStartTests.start

    def test_without_a_witness_the_start_warns_that_a_cut_link_leaves_both_serving(self):
        """No witness: one warning naming the cut link, the witness key and the group mode."""
        outcome, lines, _ = self.start(CONFIG)
        self.assertIsInstance(outcome, FailoverNode)
        [line] = [line for line in lines if "pair limit" in line]
        self.assertIn("no witness is configured", line)
        self.assertIn("witness = HOST:PORT", line)
        self.assertIn("etcd", line)

    def test_with_a_witness_the_start_warns_what_it_cannot_arbitrate(self):
        """With a witness: the cut of the link alone, and a witness down with a dead backup, are named."""
        outcome, lines, _ = self.start(CONFIG.replace("[failover]\n", "[failover]\nwitness = 127.0.0.1:9\n", 1))
        limits = [line for line in lines if "pair limit" in line]
        self.assertEqual(len(limits), 2, lines)
        self.assertIn("not a cut of the link between the two nodes alone", limits[0])
        self.assertIn("witness down and the backup dead", limits[1])

    def test_self_fence_off_is_named_too(self):
        """self_fence = false adds its own warning."""
        _, lines, _ = self.start(CONFIG.replace("[failover]\n", "[failover]\nwitness = 127.0.0.1:9\nself_fence = false\n", 1))
        self.assertTrue(any("self_fence = false" in line for line in lines if "pair limit" in line), lines)


class Clocks:
    """A stand-in wall clock and monotonic clock, moved by hand."""

    def __init__(self, wall: float, monotonic: float):
        self.wall_time, self.monotonic_time = wall, monotonic
        self.wall = lambda: self.wall_time
        self.monotonic = lambda: self.monotonic_time

    def advance(self, seconds: float) -> None:
        """Time passes: both clocks move."""
        self.wall_time += seconds
        self.monotonic_time += seconds


class Unwoken(SelectReactor):
    """A real reactor that is never run, stepped by hand with runUntilCurrent: no waker pipe to open."""

    def installWaker(self):
        pass


class SteadyTimersTests(unittest.TestCase):
    """The running node's timers are immune to steps of the wall clock (issue 11, failure 9)."""

    def reactor(self, clocks):
        reactor = Unwoken()
        reactor.seconds = clocks.wall  # timed on the wall clock, as every real reactor is
        return reactor

    def test_a_step_back_of_the_wall_clock_does_not_hold_the_timers(self):
        """With the wall clock stepped 5 s back, a 0.2 s LoopingCall still runs every 0.2 s, and a call made earlier still fires."""
        clocks = Clocks(wall=1_764_064_800.0, monotonic=1000.0)
        reactor = self.reactor(clocks)
        earlier = []
        reactor.callLater(1.0, earlier.append, "fired")  # scheduled on the wall clock, before the change
        self.assertTrue(tap.steady_timers(reactor, monotonic=clocks.monotonic, wall=clocks.wall))
        beats = []
        loop = LoopingCall(beats.append, "beat")
        loop.clock = reactor
        loop.start(0.2, now=False)
        self.addCleanup(loop.stop)
        clocks.wall_time -= 5.0  # NTP or an operator steps the wall clock back
        self.assertLess(reactor.timeout(), 0.21)  # how long the loop may sleep: not 5.2 s
        for _ in range(5):
            clocks.advance(0.21)
            reactor.runUntilCurrent()
        self.assertEqual((len(beats), earlier), (5, ["fired"]))
        clocks.wall_time += 10.0  # and forward: nothing fires early
        reactor.runUntilCurrent()
        self.assertEqual(len(beats), 5)

    def test_the_reactor_reads_as_the_wall_clock_did_when_changed(self):
        """seconds() goes on from the wall clock's reading at the change, moving with the monotonic clock only."""
        clocks = Clocks(wall=1_764_064_800.0, monotonic=1000.0)
        reactor = self.reactor(clocks)
        tap.steady_timers(reactor, monotonic=clocks.monotonic, wall=clocks.wall)
        self.assertEqual(reactor.seconds(), 1_764_064_800.0)
        clocks.wall_time -= 5.0
        clocks.monotonic_time += 2.0
        self.assertEqual(reactor.seconds(), 1_764_064_802.0)

    def test_a_reactor_with_a_clock_of_its_own_is_left_alone(self):
        """A reactor not timed on the wall clock (a test's Clock), or one already changed, is not changed again."""
        clock = Clock()
        seconds = clock.seconds
        self.assertFalse(tap.steady_timers(clock))
        self.assertEqual(clock.seconds, seconds)
        clocks = Clocks(wall=1_764_064_800.0, monotonic=1000.0)
        reactor = self.reactor(clocks)
        self.assertTrue(tap.steady_timers(reactor, monotonic=clocks.monotonic, wall=clocks.wall))
        changed = reactor.seconds
        self.assertFalse(tap.steady_timers(reactor, monotonic=clocks.monotonic, wall=clocks.wall))
        self.assertIs(reactor.seconds, changed)


class InvalidShareWithACopyTests(unittest.TestCase):
    """A share that is read but invalid stops the start, and a local copy beside it is said not to be for that case."""

    def setUp(self):
        from iwayfailover.config import parse_config
        from iwayfailover.config.lastgood import LastGood

        root = temporary_directory(self)
        self.path = os.path.join(root, "iway.ini")
        self.state = os.path.join(root, "state")
        os.makedirs(self.state)
        auth.write_new_key_file(os.path.join(root, "failover.key"))
        with open(self.path, "w") as f:
            f.write(CONFIG)
        self.copy = LastGood(self.state, self.path, wall=lambda: 1767225600.0)
        self.parse = lambda: parse_config(CONFIG, self.path)

    def start(self):
        from iwayfailover.config import ConfigError

        with open(self.path, "w") as f:
            f.write(CONFIG.replace("threshold = 3", "threshold = soon", 1))
        return self.assertRaises(ConfigError, tap.start_config, self.path, self.state)

    def test_the_error_says_the_copy_is_used_only_when_the_share_cannot_be_read(self):
        """With a copy kept: the file's error, then that the copy exists (where, saved when) and is not for a file with errors."""
        self.copy.keep(self.parse())

        message = str(self.start())

        self.assertIn("'soon': not a number", message)
        self.assertIn(f"; a local copy exists ({os.path.join(self.state, 'last-good.ini')}, saved 2026-01-01T00:00:00", message)
        self.assertTrue(message.endswith("but is used only when the share cannot be read: fix the file"), message)

    def test_without_a_copy_the_error_is_the_files_alone(self):
        """No copy kept: the error does not speak of one."""
        self.assertNotIn("local copy", str(self.start()))
