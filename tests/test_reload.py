"""
Tests for L{iwayfailover.reload.ConfigPoller}: the shared configuration is
read every C{reload_interval} seconds and a change is applied once it was
read whole and stable; a hung read is reported.
"""

import threading

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import LogLevel, Logger, formatEvent
from twisted.trial.unittest import TestCase

from iwayfailover.config import ConfigError, parse_config
from iwayfailover.reload import ConfigPoller, ReaderThread, hung_after, settle_delay

PATH = "/srv/share/iwayfailover.ini"
INTERVAL = 5.0
SETTLE = 0.5  # min(0.5, INTERVAL / 2): the wait between the two reads of a changed file
HUNG = 5.0  # max(INTERVAL, 2): a read not finished by then is reported


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
    """A fake C{run}: every read stays pending until the test finishes it."""

    def __init__(self):
        self.pending = []

    def run(self, f, *args):
        d = defer.Deferred()
        self.pending.append((d, f, args))
        return d

    def finish(self, index=0):
        """The read number C{index} ends now: it runs and its result is delivered."""
        d, f, args = self.pending[index]
        d.callback(f(*args))


def run_at_once(f, *args):
    return defer.maybeDeferred(f, *args)


class PollerTestCase(TestCase):
    """A poller over a fake share, its clock and what it logged and applied."""

    def setUp(self):
        self.clock = Clock()
        self.current = shared_config(threshold=3)
        self.share = FakeShare(self.current)
        self.applied = []
        self.events = []

    def poller(self, run=run_at_once, apply=None, interval=INTERVAL, **kwargs):
        """A started poller over the fake share, logging to C{self.events}."""
        poller = ConfigPoller(
            self.clock, self.current, interval, self.share.load, run, apply or self.applied.append, **kwargs
        )
        poller.log = Logger(namespace="test", observer=self.events.append)
        poller.startService()
        self.addCleanup(lambda: poller.running and poller.stopService())
        return poller

    def errors(self):
        return [e for e in self.events if e["log_level"] == LogLevel.error]

    def logged(self, level):
        """The text of each event logged at C{level}."""
        return [formatEvent(e) for e in self.events if e["log_level"] == level]


class ConfigPollerTests(PollerTestCase):
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

        self.clock.pump([INTERVAL, SETTLE, INTERVAL - SETTLE, SETTLE, INTERVAL - SETTLE])

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

        self.clock.pump([INTERVAL, SETTLE])

        self.assertIs(poller.current, self.current)
        self.assertEqual(self.applied, [])

    def test_bad_configuration_is_logged_once(self):
        """The same ConfigError on two reads in a row is logged only once, with its message."""
        self.poller()
        self.share.result = bad_edit()

        self.clock.pump([INTERVAL, SETTLE, INTERVAL - SETTLE, SETTLE, INTERVAL - SETTLE])

        errors = self.errors()
        self.assertEqual(len(errors), 1)
        self.assertEqual(errors[0]["error"], str(bad_edit()))

    def test_another_bad_configuration_is_logged_again(self):
        """A different ConfigError after a first one is logged too."""
        self.poller()
        self.share.result = bad_edit("three")
        self.clock.pump([INTERVAL, SETTLE])
        self.share.result = bad_edit("four")

        self.clock.pump([INTERVAL - SETTLE, SETTLE])

        self.assertEqual([e["error"] for e in self.errors()], [str(bad_edit("three")), str(bad_edit("four"))])

    def test_bad_configuration_counts_every_failed_read(self):
        """Every read that gives a ConfigError counts as a failure."""
        poller = self.poller()
        self.share.result = bad_edit()

        self.clock.pump([INTERVAL, SETTLE, INTERVAL - SETTLE])

        self.assertEqual(poller.failures, 2)

    def test_bad_configuration_sets_last_error(self):
        """last_error holds the message of the ConfigError, once two reads gave it."""
        poller = self.poller()
        self.share.result = bad_edit()

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(poller.last_error, str(bad_edit()))

    def test_good_read_clears_last_error(self):
        """A good read after a bad one clears last_error, even when the file is as before."""
        poller = self.poller()
        self.share.result = bad_edit()
        self.clock.pump([INTERVAL, SETTLE])
        self.assertIsNotNone(poller.last_error)
        self.share.result = self.current

        self.clock.advance(INTERVAL)

        self.assertIsNone(poller.last_error)

    def test_poll_during_a_pending_read_does_not_read_again(self):
        """A poll while the previous read is still pending starts no second read and logs nothing itself."""
        hung = HungShare()
        poller = self.poller(run=hung.run)
        poller.poll()

        d = poller.poll()

        self.successResultOf(d)
        self.assertEqual(len(hung.pending), 1)
        self.assertEqual(self.events, [])

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
        hung.finish(0)

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
        self.clock.pump([INTERVAL, SETTLE])

        self.clock.advance(INTERVAL)

        self.assertEqual(len(self.share.reads), 3)  # the change read twice, then the next poll
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

        self.share.result = shared_config(threshold=7)
        hung.finish(0)

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

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(self.applied, [rotated])
        self.assertIs(poller.current, rotated)

    def test_the_same_keys_read_again_are_no_change(self):
        """Reading the same INI and the same keys again applies nothing."""
        import dataclasses

        from iwayfailover import auth

        self.current = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"a" * 40,)))
        self.poller()
        self.share.result = dataclasses.replace(self.current, keys=auth.KeyRing(keys=(b"a" * 40,)))

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(self.applied, [])


WITH_LISTENER = (
    "[server:serv_a]\n"
    "backup_location = iam2:1200\n"
    "heartbeat_port = 1200\n"
    "threshold = {threshold}\n"
    "\n"
    "[listener:web]\n"
    "plugin = web --listen tcp:8080 --path /srv/www\n"
)


def with_listener(threshold=3):
    """A configuration with a listener; another threshold gives another digest."""
    return parse_config(WITH_LISTENER.format(threshold=threshold), PATH)


def torn(threshold=3):
    """The same file cut just before its [listener:] section, as a copy in place leaves it for a moment: it parses."""
    text = WITH_LISTENER.format(threshold=threshold)
    return parse_config(text[:text.index("[listener:")], PATH)


class Sequence:
    """A fake C{load} and C{stamp}: each read gives the next (result, stamp before, stamp after); the last one stays."""

    def __init__(self, *reads):
        self.reads = list(reads)
        self.count = 0
        self._now = None

    def load(self, path):
        self.count += 1
        result = self._now[0]
        if isinstance(result, Exception):
            raise result
        return result

    def stamp(self, path):
        # Called before and after each load: before takes the next read's values.
        if self._now is None or self._after_taken:
            self._now = self.reads.pop(0) if len(self.reads) > 1 else self.reads[0]
            self._after_taken = False
            return self._now[1]
        self._after_taken = True
        return self._now[2]


def steady(result, stamp=(100, 1, 7)):
    """A read of a file that did not move while it was read."""
    return (result, stamp, stamp)


class StableReadTests(PollerTestCase):
    """A change is applied only when two reads, a settle delay apart, agree and the file did not move."""

    def setUp(self):
        super().setUp()
        self.current = with_listener(threshold=3)

    def sequence_poller(self, *reads, **kwargs):
        self.share = Sequence(*reads)
        return self.poller(stamp=self.share.stamp, **kwargs)

    def test_a_change_is_applied_only_after_its_second_read(self):
        """A changed file read once is not applied; read again SETTLE later with the same result, it is."""
        new = with_listener(threshold=4)
        self.sequence_poller(steady(new))

        self.clock.advance(INTERVAL)
        self.assertEqual((self.applied, self.share.count), ([], 1))

        self.clock.advance(SETTLE)
        self.assertEqual((self.applied, self.share.count), ([new], 2))

    def test_a_torn_file_that_parses_is_never_applied(self):
        """A file read cut before its listeners, then whole: the cut one is never applied, the whole one at the next poll."""
        complete = with_listener(threshold=4)
        poller = self.sequence_poller(steady(torn(threshold=4), (60, 1, 7)), steady(complete, (100, 2, 7)))

        self.clock.pump([INTERVAL, SETTLE])
        self.assertEqual(self.applied, [])
        self.assertIs(poller.current, self.current)

        self.clock.pump([INTERVAL - SETTLE, SETTLE])
        self.assertEqual(self.applied, [complete])

    def test_a_file_still_changing_is_reported_as_changing(self):
        """Two reads that differ log a warning that the file is changing and waits to settle, naming the file."""
        self.sequence_poller(steady(torn(threshold=4), (60, 1, 7)), steady(with_listener(threshold=4), (100, 2, 7)))

        self.clock.pump([INTERVAL, SETTLE])

        warnings = self.logged(LogLevel.warn)
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"configuration {PATH} is changing; waiting for it to settle", warnings[0])
        self.assertIn("60 then 100 bytes", warnings[0])

    def test_a_file_changing_at_every_poll_is_reported_once(self):
        """A file that differs at every read is reported once as changing, and nothing is applied."""
        reads = [steady(with_listener(threshold=t), (100, t, 7)) for t in range(4, 12)]
        self.sequence_poller(*reads)

        self.clock.pump([INTERVAL, SETTLE, INTERVAL - SETTLE, SETTLE, INTERVAL - SETTLE, SETTLE])

        self.assertEqual(self.applied, [])
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)

    def test_a_settled_file_is_reported_as_changing_again_at_its_next_change(self):
        """Once a file settled, its next change that is caught mid-write is reported again."""
        self.sequence_poller(
            steady(torn(4), (60, 1, 7)), steady(with_listener(4), (100, 2, 7)), steady(with_listener(4), (100, 2, 7)),
            steady(with_listener(4), (100, 2, 7)), steady(torn(5), (60, 3, 7)), steady(with_listener(5), (100, 4, 7)),
        )

        self.clock.pump([INTERVAL, SETTLE, INTERVAL - SETTLE, SETTLE, INTERVAL - SETTLE, SETTLE])

        self.assertEqual(len(self.logged(LogLevel.warn)), 2)
        self.assertEqual(self.applied, [with_listener(4)])

    def test_the_same_text_with_a_moved_file_is_not_applied(self):
        """Both reads give the same text but the file's mtime moved between them: not applied yet."""
        new = with_listener(threshold=4)
        self.sequence_poller(steady(new, (100, 1, 7)), steady(new, (100, 2, 7)))

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(self.applied, [])
        self.assertEqual(len(self.logged(LogLevel.warn)), 1)

    def test_a_read_during_which_the_file_moved_is_not_applied(self):
        """A first read whose file grew while it was read is not applied, though the second read agrees with it."""
        new = with_listener(threshold=4)
        self.sequence_poller((new, (60, 1, 7), (100, 2, 7)), steady(new, (100, 2, 7)))

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(self.applied, [])

    def test_an_error_seen_only_mid_write_is_not_reported(self):
        """A refused first read and a good second one: no error is logged or shown, and nothing is applied yet."""
        poller = self.sequence_poller(steady(bad_edit(), (50, 1, 7)), steady(with_listener(4), (100, 2, 7)))

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual((self.errors(), poller.last_error, self.applied), ([], None, []))

    def test_a_stable_operator_edit_that_drops_sections_is_applied_and_the_log_says_what_went(self):
        """A smaller file without its listener, the same in both reads, is applied; the log gives the sizes and the section removed."""
        smaller = torn(threshold=3)
        self.sequence_poller(steady(self.current, (100, 1, 7)), steady(smaller, (60, 2, 7)))
        self.clock.advance(INTERVAL)  # the running file, as it is: its size is known

        self.clock.pump([INTERVAL, SETTLE])

        self.assertEqual(self.applied, [smaller])
        info = [line for line in self.logged(LogLevel.info) if "applying it" in line]
        self.assertEqual(info, [f"configuration {PATH} changed (100 -> 60 bytes; sections removed: [listener:web]); applying it"])

    def test_a_change_waiting_for_its_second_read_is_dropped_at_stop(self):
        """A poller stopped between the two reads of a change reads no more and applies nothing."""
        poller = self.sequence_poller(steady(with_listener(threshold=4)))
        self.clock.advance(INTERVAL)

        poller.stopService()
        self.clock.advance(SETTLE)

        self.assertEqual((self.share.count, self.applied), (1, []))
        self.assertFalse(poller._reading)

    def test_the_settle_delay_follows_the_interval(self):
        """With a 0.4 s interval the second read comes 0.2 s after the first; set_interval moves it too."""
        new = with_listener(threshold=4)
        poller = self.sequence_poller(steady(new), interval=0.4)
        self.clock.advance(0.4)
        self.clock.advance(0.19)
        self.assertEqual(self.applied, [])
        self.clock.advance(0.01)
        self.assertEqual(self.applied, [new])

        poller.set_interval(10.0)
        self.assertEqual(poller.settle, 0.5)

    def test_settle_delay_is_half_the_interval_at_most_half_a_second(self):
        """settle_delay is min(0.5 s, interval / 2)."""
        self.assertEqual([settle_delay(i) for i in (0.2, 1.0, 5.0, 60.0)], [0.1, 0.5, 0.5, 0.5])


class HungReadTests(PollerTestCase):
    """A read that does not finish (a hung share) is reported once, and the node keeps what it runs."""

    def started(self):
        self.hung = HungShare()
        poller = self.poller(run=self.hung.run)
        self.clock.advance(INTERVAL)  # the read starts, and hangs
        return poller

    def test_a_hung_read_is_reported_after_hung_after_seconds(self):
        """No report before HUNG seconds; then last_error names the file and how long, and one error is logged."""
        poller = self.started()
        self.clock.advance(HUNG - 0.01)
        self.assertEqual((poller.last_error, self.errors()), (None, []))

        self.clock.advance(0.01)

        expected = f"reading {PATH} has not finished after 5 s"
        self.assertIn(expected, poller.last_error)
        self.assertEqual(len(self.errors()), 1)
        self.assertIn(expected, formatEvent(self.errors()[0]))

    def test_a_hung_read_is_reported_once_and_not_read_again(self):
        """While the read hangs, many intervals later: one error logged, one failure counted, one read started."""
        poller = self.started()

        self.clock.pump([INTERVAL] * 10)

        self.assertEqual((len(self.errors()), poller.failures, len(self.hung.pending)), (1, 1, 1))
        self.assertIs(poller.current, self.current)

    def test_a_hung_read_that_ends_is_logged_and_clears_the_error(self):
        """A hung read that ends with the running file: its end is logged with its duration, and last_error is cleared."""
        poller = self.started()
        self.clock.advance(HUNG + 2)

        self.hung.finish(0)

        self.assertIsNone(poller.last_error)
        self.assertIn(f"reading the configuration {PATH} finished after 7.0 s", self.logged(LogLevel.info))

    def test_a_stopped_poller_reports_no_hung_read(self):
        """A node stopped while a read hangs does not report it later."""
        poller = self.started()

        poller.stopService()
        self.clock.advance(HUNG)

        self.assertEqual((poller.last_error, self.errors()), (None, []))

    def test_hung_after_is_one_interval_at_least_two_seconds(self):
        """hung_after is max(interval, 2 s)."""
        self.assertEqual([hung_after(i) for i in (0.2, 2.0, 5.0)], [2.0, 2.0, 5.0])


class FakeReactor:
    """callFromThread only: records each call and says so."""

    def __init__(self):
        self.calls = []
        self.called = threading.Event()

    def callFromThread(self, f, *args):
        self.calls.append((f, args))
        self.called.set()


class ReaderThreadTests(TestCase):
    """L{ReaderThread} runs a read on a daemon thread and hands its result back through the reactor."""

    def run_one(self, f):
        reactor = FakeReactor()
        d = ReaderThread(reactor)(f)
        self.assertTrue(reactor.called.wait(10), "the reader thread did not finish within 10 s")
        self.assertNoResult(d)  # not fired from the reader's thread
        [(call, args)] = reactor.calls
        call(*args)
        return d

    def test_the_read_runs_on_a_daemon_thread_and_its_result_comes_back_through_the_reactor(self):
        """The function runs on another thread, a daemon one (a hung read must not keep the process from exiting)."""
        seen = []

        def read():
            seen.append(threading.current_thread())
            return "text"

        d = self.run_one(read)

        self.assertEqual(self.successResultOf(d), "text")
        [thread] = seen
        self.assertIsNot(thread, threading.current_thread())
        self.assertTrue(thread.daemon)

    def test_an_exception_comes_back_as_a_failure(self):
        """An exception raised by the read fires the Deferred's errback with it."""

        def read():
            raise OSError("share gone")

        d = self.run_one(read)

        self.failureResultOf(d, OSError)
