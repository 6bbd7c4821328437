"""
Tests for L{iwayfailover.process}: a process channel's life on a fake
reactor (spawn, output, restarts with backoff, FAILED, SIGTERM then
SIGKILL), and its settings in the shared configuration.

Real programs run by a real node are in L{test_process_e2e}.
"""

import os
import signal
import sys

from twisted.internet.error import ProcessDone, ProcessTerminated
from twisted.internet.task import Clock
from twisted.logger import capturedLogs
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from harness import temporary_directory, wait_for
from iwayfailover.config import ConfigError, ListenerSettings, parse_config
from iwayfailover.listeners import ACTIVE, FAILED, STARTING, STOPPED, STOPPING, WAITING, ListenerSet, check_listener_specs
from iwayfailover import process as process_module
from iwayfailover.process import HEALTHY_AFTER, MAX_BACKOFF, MAX_LINE, ProcessChannel, describe_exit, launcher_argv


class FakeProcess:
    """What spawnProcess returns: a pid, and the protocol it drives."""

    def __init__(self, pid, protocol, args, env, path):
        self.pid = pid
        self.protocol = protocol
        self.args = args
        self.env = env
        self.path = path

    def closeStdin(self):
        pass

    def exit(self, code=0, signal_number=None):
        """The program ends: with C{code}, or killed by C{signal_number}."""
        if signal_number is None and code == 0:
            reason = ProcessDone(0)
        else:
            reason = ProcessTerminated(exitCode=None if signal_number else code, signal=signal_number)
        self.pid = None
        self.protocol.processEnded(Failure(reason))

    def say(self, data, fd=1):
        self.protocol.childDataReceived(fd, data)


class ProcessReactor(Clock):
    """A Clock whose spawnProcess makes L{FakeProcess}es, or raises L{refuse}."""

    def __init__(self):
        super().__init__()
        self.spawned = []
        self.refuse = None
        # Above any pid_max (at most 2**22): should a signal escape a fake, it reaches no process.
        self._next_pid = 5_000_000

    def spawnProcess(self, protocol, executable, args=(), env=None, path=None, uid=None, gid=None, usePTY=False, childFDs=None):
        if self.refuse is not None:
            raise self.refuse
        self._next_pid += 1
        process = FakeProcess(self._next_pid, protocol, args, env, path)
        self.spawned.append(process)
        protocol.makeConnection(process)
        return process


class Signals:
    """Records the signals a channel sends; C{alive} says which groups answer."""

    def __init__(self):
        self.sent = []
        self.alive = set()

    def signal_group(self, pid, number, leader=True):
        self.sent.append((pid, number, leader))
        return True

    def group_alive(self, pid):
        return pid in self.alive


def command_spec(name="worker", **changes):
    values = dict(name=name, plugin="", args=(), command=("/bin/worker", "--port", "9000"),
                  stop_timeout=5.0, restart_tries=3, restart_backoff=1.0)
    values.update(changes)
    return ListenerSettings(**values)


class ChannelTestCase(TestCase):
    def channel(self, **changes):
        self.reactor = ProcessReactor()
        self.signals = Signals()
        return ProcessChannel(
            command_spec(**changes), self.reactor, wall=self.reactor.seconds,
            signal_group=self.signals.signal_group, group_alive=self.signals.group_alive,
        )

    @property
    def process(self):
        return self.reactor.spawned[-1]


class StartTests(ChannelTestCase):
    def test_new_channel_is_waiting_and_runs_nothing(self):
        """A process channel starts WAITING, as a backup's listeners are, with no program running."""
        channel = self.channel()
        self.assertEqual(channel.state, WAITING)
        channel.hold()
        self.assertEqual(self.reactor.spawned, [])

    def test_start_spawns_the_command_and_is_active_with_its_pid(self):
        """start() spawns the program with its arguments and the channel is ACTIVE, its pid in the status."""
        channel = self.channel()
        self.successResultOf(channel.start())
        self.assertEqual(channel.state, ACTIVE)
        self.assertEqual(self.process.args[-3:], ["/bin/worker", "--port", "9000"])
        self.assertEqual(channel.status()["pid"], self.process.pid)

    def test_program_runs_through_the_launcher_in_a_session_of_its_own(self):
        """The program is spawned through a launcher that calls setsid, arms PR_SET_PDEATHSIG, kills its session on it, and runs the program."""
        argv = launcher_argv(("/bin/worker", "-x"))
        self.assertEqual(argv[0], sys.executable)
        script = argv[argv.index("-c") + 1]
        self.assertIn("os.setsid()", script)
        self.assertIn("prctl(1, int(signal.SIGUSR1)", script)
        self.assertIn("os.killpg(0, signal.SIGKILL)", script)
        self.assertIn("os.execvp(sys.argv[2], sys.argv[2:])", script)
        self.assertEqual(argv[-3:], [str(os.getpid()), "/bin/worker", "-x"])

    def test_env_and_cwd_are_given_to_the_program(self):
        """env = adds to the node's environment; cwd = is the program's folder."""
        channel = self.channel(env=(("PORT", "9000"),), cwd="/srv/worker")
        channel.start()
        self.assertEqual(self.process.env["PORT"], "9000")
        self.assertEqual(self.process.env.get("PATH"), os.environ.get("PATH"))
        self.assertEqual(self.process.path, "/srv/worker")

    def test_a_program_that_cannot_be_spawned_is_failed_and_start_still_succeeds(self):
        """An error from spawnProcess makes the channel FAILED with the reason; start() does not fail."""
        channel = self.channel()
        self.reactor.refuse = OSError(24, "Too many open files")
        self.successResultOf(channel.start())
        self.assertEqual(channel.state, FAILED)
        self.assertIn("Too many open files", channel.reason)

    def test_start_of_a_running_channel_spawns_nothing_more(self):
        """A second start() while the program runs leaves it alone."""
        channel = self.channel()
        channel.start()
        channel.start()
        self.assertEqual(len(self.reactor.spawned), 1)


class OutputTests(ChannelTestCase):
    def lines(self, events):
        return [(e["line"], e["stream"]) for e in events if "line" in e]

    def test_each_output_line_is_logged_under_the_listeners_name(self):
        """stdout and stderr lines go to the log in the namespace iwayfailover.channel.NAME, with the stream."""
        channel = self.channel()
        channel.start()
        with capturedLogs() as events:
            self.process.say(b"ready on 9000\nsecond line\n")
            self.process.say(b"oops\n", fd=2)
        self.assertEqual(self.lines(events), [("ready on 9000", "stdout"), ("second line", "stdout"), ("oops", "stderr")])
        self.assertEqual({e["log_namespace"] for e in events}, {"iwayfailover.channel.worker"})
        self.assertEqual({e["listener"] for e in events}, {"worker"})

    def test_a_line_in_pieces_is_logged_once_whole(self):
        """Output that arrives in pieces is logged as the lines it makes, a last unfinished line at exit."""
        channel = self.channel()
        channel.start()
        with capturedLogs() as events:
            self.process.say(b"hal")
            self.process.say(b"f a line\r\nno newline")
            self.process.exit(0)
        self.assertEqual(self.lines(events), [("half a line", "stdout"), ("no newline", "stdout")])

    def test_a_very_long_line_is_logged_in_bounded_pieces(self):
        """A line longer than MAX_LINE, even one with no newline yet, is logged in pieces of MAX_LINE."""
        channel = self.channel()
        channel.start()
        with capturedLogs() as events:
            self.process.say(b"x" * (MAX_LINE * 2 + 10))
        logged = self.lines(events)
        self.assertEqual([len(line) for line, _ in logged], [MAX_LINE, MAX_LINE])

    def test_undecodable_output_is_logged_with_replacement_characters(self):
        """Bytes that are not UTF-8 do not break the log: they are replaced."""
        channel = self.channel()
        channel.start()
        with capturedLogs() as events:
            self.process.say(b"caf\xe9\n")
        self.assertEqual(self.lines(events), [("caf\ufffd", "stdout")])


class RestartTests(ChannelTestCase):
    def test_a_program_that_dies_while_live_is_started_again_after_the_backoff(self):
        """A death while live makes the channel STARTING with the reason, and it runs again after restart_backoff."""
        channel = self.channel(restart_backoff=0.5)
        channel.start()
        self.process.exit(3)
        self.assertEqual(channel.state, STARTING)
        self.assertIn("exited with status 3", channel.reason)
        self.reactor.advance(0.49)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.reactor.advance(0.01)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(channel.state, ACTIVE)
        self.assertEqual(channel.status()["restarts"], 1)

    def test_the_pause_before_each_restart_doubles(self):
        """Successive quick deaths wait restart_backoff, then twice, then four times as long."""
        channel = self.channel(restart_backoff=1.0, restart_tries=5)
        channel.start()
        waits = []
        for _ in range(3):
            self.process.exit(1)
            before = len(self.reactor.spawned)
            start = self.reactor.seconds()
            while len(self.reactor.spawned) == before:
                self.reactor.advance(0.25)
            waits.append(self.reactor.seconds() - start)
        self.assertEqual(waits, [1.0, 2.0, 4.0])

    def test_the_pause_is_capped(self):
        """The pause before a restart never exceeds MAX_BACKOFF."""
        channel = self.channel(restart_backoff=MAX_BACKOFF / 2, restart_tries=5)
        channel.start()
        self.process.exit(1)
        self.reactor.advance(MAX_BACKOFF / 2)
        self.process.exit(1)
        self.reactor.advance(MAX_BACKOFF)
        self.process.exit(1)
        self.assertIn(f"in {MAX_BACKOFF:g}s", channel.reason)

    def test_a_program_that_keeps_dying_is_failed_after_restart_tries(self):
        """After restart_tries restarts that each died, the channel is FAILED with the exit and the count."""
        channel = self.channel(restart_tries=2, restart_backoff=0.1)
        channel.start()
        for _ in range(2):
            self.process.exit(3)
            self.reactor.advance(1)
        self.assertEqual(channel.state, ACTIVE)
        self.process.exit(3)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 3)
        self.assertEqual(channel.state, FAILED)
        self.assertEqual(channel.reason, "exited with status 3 after 2 restarts")

    def test_restart_tries_zero_fails_at_the_first_death(self):
        """With restart_tries = 0 a death is FAILED at once, and the reason says so."""
        channel = self.channel(restart_tries=0)
        channel.start()
        self.process.exit(signal_number=9)
        self.assertEqual(channel.state, FAILED)
        self.assertEqual(channel.reason, "killed by signal 9 (SIGKILL) (restart_tries = 0)")

    def test_a_long_run_counts_the_next_death_afresh(self):
        """A program that ran HEALTHY_AFTER seconds has its restart count reset when it dies."""
        channel = self.channel(restart_tries=1, restart_backoff=0.1)
        channel.start()
        self.process.exit(1)
        self.reactor.advance(0.1)
        self.reactor.advance(HEALTHY_AFTER)
        self.process.exit(1)
        self.assertEqual(channel.state, STARTING)
        self.reactor.advance(0.1)
        self.assertEqual(channel.state, ACTIVE)
        self.assertEqual(len(self.reactor.spawned), 3)

    def test_whatever_a_dead_program_started_is_killed_before_the_restart(self):
        """After a death the rest of its process group gets SIGKILL (group only: its pid may be reused)."""
        channel = self.channel()
        channel.start()
        pid = self.process.pid
        self.process.exit(1)
        self.assertEqual(self.signals.sent, [(pid, signal.SIGKILL, False)])

    def test_a_clean_exit_while_live_is_restarted_too(self):
        """A channel runs while live: an exit with status 0 is restarted as well."""
        channel = self.channel(restart_backoff=0.1)
        channel.start()
        self.process.exit(0)
        self.reactor.advance(0.1)
        self.assertEqual(len(self.reactor.spawned), 2)

    def test_a_new_start_after_failed_tries_again_from_zero(self):
        """A FAILED channel is started afresh at the next takeover, with its count at zero."""
        channel = self.channel(restart_tries=0)
        channel.start()
        self.process.exit(1)
        channel.stop(WAITING)
        self.assertEqual(channel.state, FAILED)
        channel.start()
        self.assertEqual(channel.state, ACTIVE)
        self.assertNotIn("restarts", channel.status())


class StopTests(ChannelTestCase):
    def test_stop_sends_sigterm_to_the_group_and_is_stopping_until_it_exits(self):
        """stop() sends SIGTERM to the program's process group; STOPPING until it exits, then WAITING."""
        channel = self.channel()
        channel.start()
        pid = self.process.pid
        stopped = channel.stop()
        self.assertEqual(self.signals.sent, [(pid, signal.SIGTERM, True)])
        self.assertEqual(channel.state, STOPPING)
        self.assertNoResult(stopped)
        self.process.exit(signal_number=signal.SIGTERM)
        self.successResultOf(stopped)
        self.assertEqual(channel.state, WAITING)
        self.assertNotIn("pid", channel.status())

    def test_a_stopped_program_is_not_restarted(self):
        """A program that exits because it was stopped is not started again."""
        channel = self.channel(restart_backoff=0.1)
        channel.start()
        channel.stop()
        self.process.exit(0)
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 1)

    def test_a_program_that_ignores_sigterm_gets_sigkill_after_stop_timeout(self):
        """No exit within stop_timeout: SIGKILL to the group, not a moment before."""
        channel = self.channel(stop_timeout=5.0)
        channel.start()
        pid = self.process.pid
        stopped = channel.stop()
        self.reactor.advance(4.99)
        self.assertEqual([s[1] for s in self.signals.sent], [signal.SIGTERM])
        self.reactor.advance(0.01)
        self.assertEqual(self.signals.sent[-1], (pid, signal.SIGKILL, True))
        self.assertNoResult(stopped)
        self.process.exit(signal_number=signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertEqual(channel.state, WAITING)

    def test_processes_left_by_the_program_get_sigkill_at_the_deadline(self):
        """If the program exits on SIGTERM but processes it started are still there, they get SIGKILL at stop_timeout."""
        channel = self.channel(stop_timeout=5.0)
        channel.start()
        pid = self.process.pid
        self.signals.alive.add(pid)
        stopped = channel.stop()
        self.process.exit(0)
        self.assertEqual(channel.state, STOPPING)
        self.assertNoResult(stopped)
        self.reactor.advance(5.0)
        self.assertEqual(self.signals.sent[-1], (pid, signal.SIGKILL, False))
        self.successResultOf(stopped)
        self.assertEqual(channel.state, WAITING)

    def test_stop_with_final_stopped_ends_stopped(self):
        """A node shutting down stops its channels to STOPPED."""
        channel = self.channel()
        channel.start()
        stopped = channel.stop(STOPPED)
        self.process.exit(0)
        self.successResultOf(stopped)
        self.assertEqual(channel.state, STOPPED)

    def test_stop_during_the_backoff_cancels_the_restart(self):
        """Yielding while a restart is pending: nothing is spawned, the channel is WAITING at once."""
        channel = self.channel(restart_backoff=1.0)
        channel.start()
        self.process.exit(1)
        self.successResultOf(channel.stop())
        self.reactor.advance(100)
        self.assertEqual(len(self.reactor.spawned), 1)
        self.assertEqual(channel.state, WAITING)

    def test_start_during_a_stop_waits_for_the_old_program_to_exit(self):
        """A takeover during a slow stop spawns the program again only after the old one is gone."""
        channel = self.channel()
        channel.start()
        old = self.process
        channel.stop()
        started = channel.start()
        self.assertEqual(len(self.reactor.spawned), 1)
        old.exit(0)
        self.successResultOf(started)
        self.assertEqual(len(self.reactor.spawned), 2)
        self.assertEqual(channel.state, ACTIVE)

    def test_a_second_stop_waits_for_the_stop_in_flight(self):
        """stop() twice: both fire once the program has exited, and only one SIGTERM is sent."""
        channel = self.channel()
        channel.start()
        first, second = channel.stop(), channel.stop()
        self.assertNoResult(second)
        self.process.exit(0)
        self.successResultOf(first)
        self.successResultOf(second)
        self.assertEqual([s[1] for s in self.signals.sent].count(signal.SIGTERM), 1)


class FenceStopTests(ChannelTestCase):
    """stop(kill_after=...): a node yielding or fencing itself must be rid of its program in the time left."""

    def test_kill_after_sooner_than_stop_timeout_sends_sigkill_then(self):
        """kill_after = 0.3 with stop_timeout = 5: SIGTERM, then SIGKILL to the group 0.3 s later, not a moment before."""
        channel = self.channel(stop_timeout=5.0)
        channel.start()
        pid = self.process.pid
        stopped = channel.stop(WAITING, kill_after=0.3)
        self.reactor.advance(0.29)
        self.assertEqual([s[1] for s in self.signals.sent], [signal.SIGTERM])
        self.reactor.advance(0.01)
        self.assertEqual(self.signals.sent[-1], (pid, signal.SIGKILL, True))
        self.assertNoResult(stopped)
        self.process.exit(signal_number=signal.SIGKILL)
        self.successResultOf(stopped)
        self.assertEqual(channel.state, WAITING)

    def test_kill_after_never_lengthens_stop_timeout(self):
        """kill_after longer than stop_timeout: SIGKILL at stop_timeout all the same."""
        channel = self.channel(stop_timeout=1.0)
        channel.start()
        channel.stop(WAITING, kill_after=30.0)
        self.reactor.advance(1.0)
        self.assertEqual([s[1] for s in self.signals.sent], [signal.SIGTERM, signal.SIGKILL])

    def test_a_stop_in_flight_gets_the_sooner_deadline(self):
        """A planned stop under way (stop_timeout 5 s) and then a fence's stop with 0.2 s: SIGKILL 0.2 s after the second."""
        channel = self.channel(stop_timeout=5.0)
        channel.start()
        first = channel.stop(WAITING)
        self.reactor.advance(1.0)
        second = channel.stop(WAITING, kill_after=0.2)
        self.reactor.advance(0.19)
        self.assertEqual([s[1] for s in self.signals.sent], [signal.SIGTERM])
        self.reactor.advance(0.01)
        self.assertEqual([s[1] for s in self.signals.sent], [signal.SIGTERM, signal.SIGKILL])
        self.process.exit(signal_number=signal.SIGKILL)
        self.successResultOf(first)
        self.successResultOf(second)

    def test_a_listener_set_passes_kill_after_to_its_channels(self):
        """ListenerSet.stop(kill_after=...) bounds each process channel's stop."""
        reactor = ProcessReactor()
        signals = Signals()
        self.patch(process_module, "signal_group", signals.signal_group)
        self.patch(process_module, "group_alive", signals.group_alive)
        listeners = ListenerSet(reactor=reactor, wall=reactor.seconds)
        listeners.configure({"worker": command_spec(stop_timeout=10.0)})
        listeners.start()
        stopped = listeners.stop(WAITING, kill_after=0.5)
        reactor.advance(0.5)
        self.assertEqual([s[1] for s in signals.sent], [signal.SIGTERM, signal.SIGKILL])
        self.assertNoResult(stopped)
        reactor.spawned[-1].exit(signal_number=signal.SIGKILL)
        self.successResultOf(stopped)


class DescribeExitTests(TestCase):
    def test_exit_status(self):
        """An exit is described by its status."""
        self.assertEqual(describe_exit(Failure(ProcessTerminated(exitCode=3))), "exited with status 3")

    def test_signal(self):
        """A death by signal names the signal."""
        self.assertEqual(describe_exit(Failure(ProcessTerminated(signal=15))), "killed by signal 15 (SIGTERM)")

    def test_clean_exit(self):
        """Status 0 is described too."""
        self.assertEqual(describe_exit(Failure(ProcessDone(0))), "exited with status 0")


CONFIG = """
[server:serv_a]
backup_location = 10.0.0.2:1200
heartbeat_port = 1200
threshold = 3

[listener:worker]
"""


class ConfigTests(TestCase):
    def parse(self, lines, path="/share/iway.ini"):
        return parse_config(CONFIG + lines, path)

    def test_command_listener_settings(self):
        """command is split as a shell would; stop_timeout, restart_tries, restart_backoff, env, cwd are read."""
        config = self.parse(
            "command = /usr/bin/worker --name 'a b'\nstop_timeout = 2.5\nrestart_tries = 7\n"
            "restart_backoff = 0.5\nenv = PORT=9000 MODE='hot standby'\ncwd = work\n"
        )
        spec = config.listeners["worker"]
        self.assertEqual(spec.command, ("/usr/bin/worker", "--name", "a b"))
        self.assertEqual((spec.stop_timeout, spec.restart_tries, spec.restart_backoff), (2.5, 7, 0.5))
        self.assertEqual(spec.env, (("PORT", "9000"), ("MODE", "hot standby")))
        self.assertEqual(spec.cwd, "/share/work")
        self.assertEqual(spec.command_line, "/usr/bin/worker --name 'a b'")

    def test_defaults(self):
        """A bare command stops within 10 s and is restarted 5 times, 1 s apart at first."""
        spec = self.parse("command = worker\n").listeners["worker"]
        self.assertEqual((spec.stop_timeout, spec.restart_tries, spec.restart_backoff), (10.0, 5, 1.0))

    def test_plugin_and_command_together_are_refused(self):
        """A listener is a plugin or a command, not both."""
        with self.assertRaises(ConfigError) as caught:
            self.parse("command = worker\nplugin = web\n")
        self.assertIn("[listener:worker] command = 'worker': set together with plugin", str(caught.exception))

    def test_neither_plugin_nor_command_is_refused(self):
        """A listener with neither key is an error that names both."""
        with self.assertRaises(ConfigError) as caught:
            self.parse("servers = serv_a\n")
        self.assertIn("plugin: missing (or give command = ...)", str(caught.exception))

    def test_process_keys_on_a_plugin_listener_are_refused(self):
        """stop_timeout and its kin mean nothing for a plugin: an error, not silence."""
        with self.assertRaises(ConfigError) as caught:
            self.parse("plugin = web\nstop_timeout = 3\n")
        self.assertIn("stop_timeout = '3': only for a command listener", str(caught.exception))

    def test_bad_values_are_refused_naming_the_key(self):
        """Bad numbers, an empty or unsplittable command and a bad env word are errors naming the key."""
        cases = {
            "command = worker\nstop_timeout = 0\n": "stop_timeout = '0': must be greater than 0",
            "command = worker\nrestart_tries = -1\n": "restart_tries = '-1': must not be negative",
            "command = worker\nrestart_tries = many\n": "restart_tries = 'many': not a whole number",
            "command = worker 'oops\n": "cannot split into words",
            "command = ''\n": "command = \"''\": empty",
            "command = worker\nenv = PORT\n": "'PORT' is not NAME=value",
        }
        for lines, message in cases.items():
            with self.assertRaises(ConfigError, msg=lines) as caught:
                self.parse(lines)
            self.assertIn(message, str(caught.exception))

    def test_check_refuses_a_program_not_found(self):
        """A command whose program is not on PATH is refused at startup and reload, naming it."""
        config = self.parse("command = no-such-program-iway --x\n")
        with self.assertRaises(ConfigError) as caught:
            check_listener_specs(config)
        self.assertIn("no program 'no-such-program-iway' that this user can run", str(caught.exception))

    def test_check_accepts_a_program_on_path_and_refuses_a_missing_cwd(self):
        """A program found on PATH passes; a cwd that is not a folder is refused."""
        check_listener_specs(self.parse("command = sh -c true\n"))
        folder = temporary_directory(self)
        with self.assertRaises(ConfigError) as caught:
            check_listener_specs(self.parse("command = sh\ncwd = missing\n", os.path.join(folder, "iway.ini")))
        self.assertIn("cwd", str(caught.exception))
        self.assertIn("no such folder", str(caught.exception))

    def test_a_relative_program_is_found_in_cwd_and_must_be_executable(self):
        """command = ./run.sh is looked for in cwd; a file that is not executable is refused."""
        folder = temporary_directory(self)
        script = os.path.join(folder, "run.sh")
        with open(script, "w") as f:
            f.write("#!/bin/sh\nexit 0\n")
        config_path = os.path.join(folder, "iway.ini")
        with self.assertRaises(ConfigError) as caught:
            check_listener_specs(self.parse("command = ./run.sh\ncwd = .\n", config_path))
        self.assertIn("no program './run.sh' that this user can run", str(caught.exception))
        os.chmod(script, 0o755)
        check_listener_specs(self.parse("command = ./run.sh\ncwd = .\n", config_path))

    def test_a_listener_set_makes_a_process_channel_for_a_command(self):
        """The node's listeners hold a ProcessChannel for a command and treat it like a plugin listener."""
        reactor = ProcessReactor()
        self.patch(process_module, "signal_group", Signals().signal_group)
        listeners = ListenerSet(reactor=reactor, wall=reactor.seconds)
        listeners.configure({"worker": command_spec()})
        self.assertIsInstance(listeners.listeners["worker"], ProcessChannel)
        listeners.start()
        self.assertEqual(listeners.status()["worker"]["state"], ACTIVE)
        self.assertEqual(len(reactor.spawned), 1)


class ReloadTests(TestCase):
    def listener_set(self):
        """A ListenerSet whose process channels spawn and signal only fakes."""
        self.reactor = ProcessReactor()
        self.signals = Signals()
        self.patch(process_module, "signal_group", self.signals.signal_group)
        self.patch(process_module, "group_alive", self.signals.group_alive)
        return ListenerSet(reactor=self.reactor, wall=self.reactor.seconds)

    def test_a_changed_command_starts_only_after_the_old_program_has_exited(self):
        """A reload that changes a running channel's command stops the old program first, then spawns the new one."""
        listeners = self.listener_set()
        reactor = self.reactor
        listeners.configure({"worker": command_spec()})
        listeners.start()
        old = reactor.spawned[-1]
        listeners.configure({"worker": command_spec(command=("/bin/worker", "--port", "9001"))})
        self.assertEqual(len(reactor.spawned), 1, "the new program waits for the old one")
        old.exit(signal_number=signal.SIGTERM)
        self.assertEqual(len(reactor.spawned), 2)
        self.assertEqual(reactor.spawned[-1].args[-1], "9001")
        self.assertEqual(listeners.status()["worker"]["state"], ACTIVE)

    def test_a_removed_channel_is_stopped(self):
        """A channel removed from the configuration of a live node has its program stopped."""
        listeners = self.listener_set()
        listeners.configure({"worker": command_spec(stop_timeout=0.5)})
        listeners.start()
        pid = self.reactor.spawned[-1].pid
        listeners.configure({})
        self.assertEqual(listeners.status(), {})
        self.assertEqual(self.signals.sent, [(pid, signal.SIGTERM, True)])
        self.reactor.advance(0.5)
        self.assertEqual(self.signals.sent[-1], (pid, signal.SIGKILL, True))


class ListenerSetRetryTests(TestCase):
    def test_a_failed_process_channel_is_left_to_its_restart_tries(self):
        """restart_tries = 0 and a death: FAILED for good; the set's automatic retries of FAILED listeners leave it alone."""
        reactor = ProcessReactor()
        self.patch(process_module, "signal_group", Signals().signal_group)
        listeners = ListenerSet(reactor=reactor, wall=reactor.seconds)
        listeners.configure({"worker": command_spec(restart_tries=0)})
        listeners.start()
        reactor.spawned[-1].exit(3)
        self.assertEqual(listeners.status()["worker"]["state"], FAILED)

        reactor.pump([1.0] * 100)

        self.assertEqual(len(reactor.spawned), 1)
        self.assertNotIn("retry_in", listeners.status()["worker"])


class GroupTests(TestCase):
    """signal_group and group_alive on a real process group (a sleep in a session of its own)."""

    def sleeper(self):
        import subprocess

        process = subprocess.Popen(["sleep", "30"], start_new_session=True)

        def end():
            if process.poll() is None:
                process.kill()
            process.wait(timeout=10)

        self.addCleanup(end)
        return process

    def test_a_running_group_is_alive_and_a_zombie_is_not(self):
        """A group with a running process is alive; once its only process is a zombie (killed, not yet reaped), it is not."""
        if not os.path.isdir("/proc/self"):
            self.skipTest("needs /proc")
        process = self.sleeper()
        self.assertTrue(process_module.group_alive(process.pid))
        os.kill(process.pid, signal.SIGKILL)

        def zombie():
            with open(f"/proc/{process.pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] == "Z"

        wait_for(zombie, 5, "the killed sleep to be a zombie")
        self.assertFalse(process_module.group_alive(process.pid), "a zombie has ended")
        process.wait(timeout=10)
        self.assertFalse(process_module.group_alive(process.pid))

    def test_signal_group_reaches_the_group(self):
        """signal_group sends the signal to the process group led by the pid."""
        process = self.sleeper()
        self.assertTrue(process_module.signal_group(process.pid, signal.SIGTERM))
        self.assertEqual(process.wait(timeout=10), -signal.SIGTERM)

    def test_without_the_leader_only_a_group_is_signalled(self):
        """leader=False: a pid with no group of its own is not signalled (it may be someone else's by now)."""
        self.assertFalse(process_module.signal_group(5_000_001, signal.SIGTERM, leader=False))


def imported_modules(module) -> set:
    """Every C{iwayfailover} module that C{module}'s source imports, at module level or inside a function."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(module))
    found = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.add(node.module)
            found.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in found if name.startswith("iwayfailover.")}


class ImportTests(TestCase):
    """Process channels and plugin listeners share L{iwayfailover.channel}, not each other: no import cycle."""

    def test_process_imports_without_loading_listeners(self):
        """A fresh interpreter imports iwayfailover.process without iwayfailover.listeners being loaded at all."""
        import subprocess

        code = "import sys, iwayfailover.process; print('iwayfailover.listeners' in sys.modules)"
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)

        self.assertEqual((result.returncode, result.stdout.strip()), (0, "False"), result.stderr)

    def test_neither_module_imports_the_other_back(self):
        """process imports nothing of listeners, and channel (what both share) imports neither."""
        from iwayfailover import channel, listeners

        self.assertNotIn("iwayfailover.listeners", imported_modules(process_module))
        self.assertFalse({"iwayfailover.listeners", "iwayfailover.process"} & imported_modules(channel))
        self.assertIn("iwayfailover.process", imported_modules(listeners))

    def test_the_states_are_the_same_objects_everywhere(self):
        """The states and set_state imported from listeners are channel's own (old imports keep working)."""
        from iwayfailover import channel, listeners

        for name in ("WAITING", "STARTING", "ACTIVE", "STOPPING", "STOPPED", "FAILED", "set_state", "notify_failed"):
            self.assertIs(getattr(listeners, name), getattr(channel, name), name)
        self.assertEqual(channel.STATES, (WAITING, STARTING, ACTIVE, STOPPING, STOPPED, FAILED))
