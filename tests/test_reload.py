"""
Tests for L{iwayfailover.reload.ConfigPoller}: the shared configuration is
read every C{reload_interval} seconds and a change is applied.
"""

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, Logger
from twisted.trial.unittest import TestCase

from iwayfailover.config import ConfigError, parse_config
from iwayfailover.reload import ConfigPoller

PATH = "/srv/share/iwayfailover.ini"
INTERVAL = 5.0


def shared_config(threshold=3):
    """A shared configuration; another threshold gives another digest."""
    text = (
        "[server:serv_a]\n"
        "backup_location = iam2:1200\n"
        "heartbeat_port = 1200\n"
        f"threshold = {threshold}\n"
    )
    return parse_config(text, PATH)


def bad_edit(value="three"):
    return ConfigError(PATH, "server:serv_a", "threshold", value, "not a number")


class FakeShare:
    """A fake C{load}: returns C{result}, or raises it if it is an exception."""

    def __init__(self, result):
        self.result = result
        self.reads = []

    def load(self, path):
        self.reads.append(path)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result


class HungShare:
    """A fake C{run}: every read stays pending until the test fires it."""

    def __init__(self):
        self.pending = []

    def run(self, f, *args):
        d = defer.Deferred()
        self.pending.append(d)
        return d


def run_at_once(f, *args):
    return defer.maybeDeferred(f, *args)


class ConfigPollerTests(TestCase):
    def setUp(self):
        self.clock = Clock()
        self.current = shared_config(threshold=3)
        self.share = FakeShare(self.current)
        self.applied = []
        self.events = []

    def poller(self, run=run_at_once, apply=None):
        """A started poller over the fake share, logging to C{self.events}."""
        poller = ConfigPoller(
            self.clock, self.current, INTERVAL, self.share.load, run, apply or self.applied.append
        )
        poller.log = Logger(namespace="test", observer=self.events.append)
        poller.startService()
        self.addCleanup(lambda: poller.running and poller.stopService())
        return poller

    def errors(self):
        return [e for e in self.events if e["log_level"] == LogLevel.error]

    def test_nothing_is_read_before_the_first_interval(self):
        """A started poller does not read the file until one interval has passed."""
        self.poller()

        self.clock.advance(INTERVAL - 0.1)

        self.assertEqual(self.share.reads, [])

    def test_file_is_read_once_per_interval(self):
        """The file at the current configuration's path is read every interval."""
        self.poller()

        self.clock.pump([INTERVAL, INTERVAL])

        self.assertEqual(self.share.reads, [PATH, PATH])

    def test_changed_configuration_is_applied_once(self):
        """A configuration with a new digest is applied once, and later reads of it are not applied again."""
        poller = self.poller()
        new = shared_config(threshold=4)
        self.share.result = new

        self.clock.pump([INTERVAL, INTERVAL])

        self.assertEqual(self.applied, [new])
        self.assertEqual((poller.current, poller.reloads), (new, 1))

    def test_unchanged_configuration_is_not_applied(self):
        """A read that gives the same digest applies nothing."""
        poller = self.poller()
        self.share.result = shared_config(threshold=3)

        self.clock.advance(INTERVAL)

        self.assertEqual((self.applied, poller.reloads), ([], 0))

    def test_bad_configuration_keeps_the_current_one(self):
        """A ConfigError from the read keeps the current configuration and applies nothing."""
        poller = self.poller()
        self.share.result = bad_edit()

        self.clock.advance(INTERVAL)

        self.assertIs(poller.current, self.current)
        self.assertEqual(self.applied, [])

    def test_bad_configuration_is_logged_once(self):
        """The same ConfigError on two reads in a row is logged only once, with its message."""
        self.poller()
        self.share.result = bad_edit()

        self.clock.pump([INTERVAL, INTERVAL])

        errors = self.errors()
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"], str(bad_edit()))

    def test_another_bad_configuration_is_logged_again(self):
        """A different ConfigError after a first one is logged too."""
        self.poller()
        self.share.result = bad_edit("three")
        self.clock.advance(INTERVAL)
        self.share.result = bad_edit("four")

        self.clock.advance(INTERVAL)

        self.assertEqual([e["error"] for e in self.errors()], [str(bad_edit("three")), str(bad_edit("four"))])

    def test_bad_configuration_counts_every_failed_read(self):
        """Every read that gives a ConfigError counts as a failure."""
        poller = self.poller()
        self.share.result = bad_edit()

        self.clock.pump([INTERVAL, INTERVAL])

        self.assertEqual(poller.failures, 2)

    def test_bad_configuration_sets_last_error(self):
        """last_error holds the message of the ConfigError."""
        poller = self.poller()
        self.share.result = bad_edit()

        self.clock.advance(INTERVAL)

        self.assertEqual(poller.last_error, str(bad_edit()))

    def test_good_read_clears_last_error(self):
        """A good read after a bad one clears last_error, even when the file is as before."""
        poller = self.poller()
        self.share.result = bad_edit()
        self.clock.advance(INTERVAL)
        self.share.result = self.current

        self.clock.advance(INTERVAL)

        self.assertIsNone(poller.last_error)

    def test_poll_during_a_pending_read_does_not_read_again(self):
        """A poll while the previous read is still pending starts no second read and says so."""
        hung = HungShare()
        poller = self.poller(run=hung.run)
        poller.poll()

        d = poller.poll()

        self.successResultOf(d)
        self.assertEqual(len(hung.pending), 1)
        self.assertEqual([e["log_level"] for e in self.events], [LogLevel.warn])

    def test_pending_read_holds_further_polls(self):
        """While a read hangs, later intervals start no other read."""
        hung = HungShare()
        self.poller(run=hung.run)

        self.clock.pump([INTERVAL, INTERVAL, INTERVAL])

        self.assertEqual(len(hung.pending), 1)

    def test_polling_resumes_once_the_pending_read_completes(self):
        """Once a hung read completes, the next interval reads again."""
        hung = HungShare()
        self.poller(run=hung.run)
        self.clock.pump([INTERVAL, INTERVAL])
        hung.pending[0].callback(self.current)

        self.clock.advance(INTERVAL)

        self.assertEqual(len(hung.pending), 2)

    def test_set_interval_changes_the_polling_period(self):
        """After set_interval(2), the file is read every 2 seconds."""
        poller = self.poller()

        poller.set_interval(2.0)
        self.clock.pump([2.0, 2.0])

        self.assertEqual((poller.interval, len(self.share.reads)), (2.0, 2))

    def test_exception_in_apply_does_not_stop_polling(self):
        """An exception raised while applying a configuration is logged and polling goes on."""

        def apply(config):
            raise RuntimeError("cannot apply")

        self.poller(apply=apply)
        self.share.result = shared_config(threshold=4)
        self.clock.advance(INTERVAL)

        self.clock.advance(INTERVAL)

        self.assertEqual(len(self.share.reads), 2)
        self.assertEqual([e["log_failure"].type for e in self.events if "log_failure" in e], [RuntimeError])

    def test_unexpected_read_error_does_not_stop_polling(self):
        """A read that fails with something other than a ConfigError is logged and polling goes on."""
        self.poller()
        self.share.result = OSError("share gone")
        self.clock.advance(INTERVAL)

        self.clock.advance(INTERVAL)

        self.assertEqual(len(self.share.reads), 2)
        self.assertEqual([e["log_failure"].type for e in self.events if "log_failure" in e], [OSError] * 2)

    def test_stop_service_stops_polling(self):
        """A stopped poller reads no more."""
        poller = self.poller()

        poller.stopService()
        self.clock.advance(INTERVAL * 3)

        self.assertEqual(self.share.reads, [])

    def test_a_read_that_finishes_after_stop_is_not_applied(self):
        """A change read while the node was stopping is dropped: a stopped node must not re-bind ports."""
        hung = HungShare()
        poller = self.poller(run=hung.run)
        self.clock.advance(INTERVAL)
        poller.stopService()

        hung.pending[0].callback(shared_config(threshold=7))

        self.assertEqual(self.applied, [])


class KeyChangeTests(ConfigPollerTests):
    """The key file is part of what a reload compares."""

    def test_a_changed_key_file_is_applied_though_the_ini_is_the_same(self):
        """Same INI text, new keys: the new configuration is applied."""
        import dataclasses

        from iwayfailover import auth

        self.current = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"a" * 40,)))
        poller = self.poller()
        rotated = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"b" * 40, b"a" * 40)))
        self.share.result = rotated

        self.clock.advance(INTERVAL)

        self.assertEqual(self.applied, [rotated])
        self.assertIs(poller.current, rotated)

    def test_the_same_keys_read_again_are_no_change(self):
        """Reading the same INI and the same keys again applies nothing."""
        import dataclasses

        from iwayfailover import auth

        self.current = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"a" * 40,)))
        self.poller()
        self.share.result = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"a" * 40,)))

        self.clock.advance(INTERVAL)

        self.assertEqual(self.applied, [])
