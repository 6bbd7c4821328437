"""
The last good configuration on local disk (L{iwayfailover.config.lastgood}):
every configuration applied is copied to the state dir; a node whose share
cannot be read at its start starts from that copy, says so, and goes back
to the share at the first good read of it.
"""

import json
import os
import time

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.logger import LogLevel, Logger, formatEvent, globalLogPublisher
from twisted.trial.unittest import TestCase

from harness import temporary_directory, wait_for
from iwayfailover import auth, tap
from iwayfailover.cli import format_status
from iwayfailover.config import ConfigError, ConfigUnreadable, parse_config
from iwayfailover.config.lastgood import ABOUT_NAME, COPY_NAME, CopyRefused, LastGood, LocalCopy, describe_age, find_copy
from iwayfailover.console.pages import config_banner
from iwayfailover.ports import StartupError
from iwayfailover.reload import ConfigPoller
from iwayfailover.status import ConfigStatus, NodeStatus
from test_console import ConsoleTestCase

CONFIG = """\
[failover]
heartbeat_interval = 1
reload_interval = 0.5
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

GROUP = """\
[failover]
coordinator = etcd
etcd_endpoints = http://127.0.0.1:2379
heartbeat_interval = 0.5

[server:alpha]
threshold = 2

[server:beta]
threshold = 2
"""


class Share:
    """A shared folder with the configuration and its key, and a node's state dir elsewhere."""

    def __init__(self, testcase, text=CONFIG):
        root = temporary_directory(testcase)
        self.folder = os.path.join(root, "share")
        os.makedirs(self.folder)
        self.path = os.path.join(self.folder, "iway.ini")
        self.key = os.path.join(self.folder, "failover.key")
        self.state = os.path.join(root, "state")
        os.makedirs(self.state)
        self.write(text)
        auth.write_new_key_file(self.key)

    def write(self, text):
        with open(self.path, "w") as f:
            f.write(text)

    def gone(self):
        """The shared file cannot be read: it is moved away, as an unmounted share would lose it."""
        os.rename(self.path, self.path + ".away")

    def back(self):
        os.rename(self.path + ".away", self.path)

    def keep(self, text=None, wall=lambda: 1767225600.0):
        """A copy kept as a node keeps it after applying the file (its text now, or C{text})."""
        config = parse_config(text if text is not None else open(self.path).read(), self.path)
        LastGood(self.state, self.path, wall=wall).keep(config)
        return config


def logged(testcase):
    """Every event logged from now until the test ends, as text, with its level."""
    events = []

    def observer(event):
        events.append((event["log_level"], formatEvent(event)))

    globalLogPublisher.addObserver(observer)
    testcase.addCleanup(globalLogPublisher.removeObserver, observer)
    return events


class LocalCopyTests(TestCase):
    """Writing the copy and finding it again."""

    def test_the_copy_holds_the_files_bytes_and_a_record_of_where_from(self):
        """keep() writes the exact text to last-good.ini, and the share's path, digest and time to last-good.json."""
        share = Share(self)
        text = CONFIG.replace("threshold = 3\n", "threshold = 3   ; três\n", 1)
        config = share.keep(text)

        with open(os.path.join(share.state, COPY_NAME), "rb") as f:
            self.assertEqual(f.read(), text.encode("utf-8"))
        with open(os.path.join(share.state, ABOUT_NAME)) as f:
            about = json.load(f)
        self.assertEqual(about, {"config": share.path, "digest": config.digest, "saved": 1767225600.0})

    def test_the_copy_is_readable_by_this_user_only(self):
        """The copy and its record are written mode 0600, as mkstemp makes them."""
        share = Share(self)
        share.keep()
        for name in (COPY_NAME, ABOUT_NAME):
            self.assertEqual(os.stat(os.path.join(share.state, name)).st_mode & 0o777, 0o600, name)

    def test_a_copy_kept_is_found_for_the_same_config_path(self):
        """find_copy gives back the text, digest, time and source of the copy, and its reload_interval."""
        share = Share(self)
        config = share.keep()

        copy = find_copy(share.state, share.path)

        self.assertEqual((copy.text, copy.digest, copy.saved, copy.source), (CONFIG, config.digest, 1767225600.0, share.path))
        self.assertEqual(copy.path, os.path.join(share.state, COPY_NAME))
        self.assertEqual(copy.reload_interval(), 0.5)

    def test_no_copy_is_none(self):
        """A state dir with no copy gives None, not an error."""
        self.assertIsNone(find_copy(Share(self).state, "/share/iway.ini"))

    def test_a_copy_of_another_config_is_refused_naming_both(self):
        """A state dir used with another --config: its copy is refused with a line naming both files."""
        share = Share(self)
        share.keep()

        error = self.assertRaises(CopyRefused, find_copy, share.state, "/elsewhere/other.ini")

        self.assertIn(f"is of {share.path}, not of /elsewhere/other.ini", str(error))
        self.assertEqual(len(str(error).splitlines()), 1)

    def test_a_copy_that_does_not_match_its_digest_is_refused(self):
        """A copy changed after its record (damaged, or a write cut short between the two files) is refused."""
        share = Share(self)
        share.keep()
        with open(os.path.join(share.state, COPY_NAME), "a") as f:
            f.write("[server:serv_c]\n")

        error = self.assertRaises(CopyRefused, find_copy, share.state, share.path)

        self.assertIn("does not match the digest", str(error))

    def test_a_failed_write_is_logged_once_kept_and_never_raised(self):
        """A state dir that cannot be written: keep() returns False, logs one error for two tries, and says why."""
        share = Share(self)
        config = parse_config(CONFIG, share.path)
        broken = os.path.join(share.state, "not-a-folder")
        with open(broken, "w"):
            pass
        keeper = LastGood(broken, share.path)
        events = []
        keeper.log = Logger(observer=events.append)

        self.assertFalse(keeper.keep(config))
        self.assertFalse(keeper.keep(config))

        self.assertEqual(len([e for e in events if e["log_level"] == LogLevel.error]), 1)
        self.assertIn("cannot write the local copy", keeper.error)
        self.assertIsNone(keeper.copy)

    def test_a_write_that_works_again_clears_the_error(self):
        """After a failed write, one that works clears the error and is logged."""
        share = Share(self)
        config = parse_config(CONFIG, share.path)
        keeper = LastGood(share.state, share.path)
        keeper.error = "cannot write the local copy: No space left on device"
        events = []
        keeper.log = Logger(observer=events.append)

        self.assertTrue(keeper.keep(config))

        self.assertIsNone(keeper.error)
        self.assertEqual(keeper.copy.digest, config.digest)
        self.assertIn("written again", formatEvent(events[0]))

    def test_ages_read_as_people_say_them(self):
        """describe_age: seconds, minutes, hours, days."""
        self.assertEqual([describe_age(s) for s in (5, 600, 3 * 3600, 3 * 86400)], ["5 s", "10 min", "3.0 h", "3.0 days"])


class StartConfigTests(TestCase):
    """start_config: the share, or the local copy when the share cannot be read."""

    def test_a_readable_share_is_used_even_with_a_copy(self):
        """The share can be read: it is what the node starts from, whatever the copy holds."""
        share = Share(self)
        share.keep(CONFIG.replace("threshold = 3", "threshold = 9"))

        startup = tap.start_config(share.path, share.state)

        self.assertFalse(startup.from_copy)
        self.assertEqual(startup.config.server("serv_a").threshold, 3.0)

    def test_an_unreadable_share_with_a_copy_starts_from_the_copy(self):
        """The shared file gone: the node starts from its copy, knows why, and the config keeps the share's path."""
        share = Share(self)
        share.keep()
        share.gone()

        startup = tap.start_config(share.path, share.state)

        self.assertTrue(startup.from_copy)
        self.assertEqual(startup.config.path, share.path)
        self.assertEqual(startup.config.text, CONFIG)
        self.assertIn("cannot read the configuration: No such file or directory", startup.share_error)
        self.assertEqual(len(startup.config.keys.key_ids), 1)

    def test_relative_paths_in_the_copy_are_relative_to_the_share(self):
        """secret_file = failover.key in the copy is the share folder's key, not the state dir's."""
        share = Share(self)
        share.keep()
        share.gone()

        config = tap.start_config(share.path, share.state).config

        self.assertEqual(config.failover.secret_file, share.key)
        self.assertEqual(config.keys.source, share.key)

    def test_a_copy_whose_key_cannot_be_read_either_is_one_line_naming_the_key(self):
        """Share and key both gone: the start stops with one line naming the share, the copy and the key file."""
        share = Share(self)
        share.keep()
        share.gone()
        os.remove(share.key)

        error = self.assertRaises(StartupError, tap.start_config, share.path, share.state)

        self.assertIn(share.path, str(error))
        self.assertIn(f"its local copy {os.path.join(share.state, COPY_NAME)} cannot be used", str(error))
        self.assertIn(share.key, str(error))
        self.assertEqual(len(str(error).splitlines()), 1)

    def test_an_unreadable_share_without_a_copy_says_there_is_none(self):
        """No copy: today's unreadable-file error, and a line that no local copy exists."""
        share = Share(self)
        share.gone()

        error = self.assertRaises(ConfigUnreadable, tap.start_config, share.path, share.state)

        self.assertIn("cannot read the configuration", str(error))
        self.assertIn(f"no local copy of it in {share.state}", str(error))
        self.assertEqual(len(str(error).splitlines()), 1)

    def test_a_copy_of_another_config_is_not_used(self):
        """A state dir used with another --config: its copy is not picked, and the error says so."""
        share = Share(self)
        other = os.path.join(share.folder, "other.ini")
        with open(other, "w") as f:
            f.write(CONFIG)
        LastGood(share.state, other).keep(parse_config(CONFIG, other))
        share.gone()

        error = self.assertRaises(ConfigUnreadable, tap.start_config, share.path, share.state)

        self.assertIn(f"is of {other}, not of {share.path}", str(error))

    def test_a_readable_but_invalid_share_is_refused_not_covered_by_the_copy(self):
        """A bad edit on a readable share stops the start as always: the copy would hide it."""
        share = Share(self)
        share.keep()
        share.write(CONFIG.replace("threshold = 3", "threshold = soon", 1))

        error = self.assertRaises(ConfigError, tap.start_config, share.path, share.state)

        self.assertNotIsInstance(error, ConfigUnreadable)
        self.assertIn("'soon': not a number", str(error))

    def test_a_hung_share_with_a_copy_starts_from_it_after_one_reload_interval(self):
        """A share whose open hangs: with a copy, the node waits as a reload would (interval, at least 2 s), not 30 s."""
        share = Share(self)
        share.keep()
        os.remove(share.path)
        os.mkfifo(share.path)
        self.addCleanup(release_fifo, share.path)
        self.patch(tap, "STARTUP_READ_TIMEOUT", 60.0)

        started = time.monotonic()
        startup = tap.start_config(share.path, share.state)
        waited = time.monotonic() - started

        self.assertTrue(startup.from_copy)
        self.assertIn("has not finished after 2 s", startup.share_error)
        self.assertLess(waited, 10.0)


def release_fifo(path):
    """Let every reader blocked on the FIFO at C{path} go: a writer that opens and closes gives them end of file."""
    def opened():
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
            return True
        except OSError:  # ENXIO: no reader (left)
            return False

    try:
        wait_for(opened, 5, "a reader of the FIFO")
    except AssertionError:
        pass  # nobody was blocked


class MakeServiceFromCopyTests(TestCase):
    """makeService: the copy written at a start from the share, used at a start without it."""

    def options(self, share, name="serv_a"):
        options = tap.Options()
        options.parseOptions(["--config", share.path, "--name", name, "--state-dir", share.state])
        return options

    def test_a_start_from_the_share_keeps_a_copy(self):
        """A node started from the share writes its local copy, and its status names it."""
        share = Share(self)

        node = tap.makeService(self.options(share), reactor=MemoryReactorClock())

        copy = find_copy(share.state, share.path)
        self.assertEqual(copy.text, CONFIG)
        config = node.status().config
        self.assertEqual((config.source, config.local_copy, config.local_copy_saved), ("share", copy.path, copy.saved))

    def test_a_start_without_the_share_runs_the_copy_and_says_so(self):
        """Share unreadable: the node runs the copy, warns naming the copy and the share's error, and its status says so."""
        share = Share(self)
        tap.makeService(self.options(share), reactor=MemoryReactorClock())
        share.gone()
        events = logged(self)

        node = tap.makeService(self.options(share), reactor=MemoryReactorClock())

        config = node.status().config
        self.assertEqual(config.source, "local copy")
        self.assertEqual(config.local_copy, os.path.join(share.state, COPY_NAME))
        self.assertIn("No such file or directory", config.last_error)
        self.assertEqual(config.path, share.path)
        warnings = [text for level, text in events if level == LogLevel.warn and "local copy" in text]
        self.assertEqual(len(warnings), 1)
        self.assertIn(f"running from the local copy {config.local_copy} of {share.path}", warnings[0])
        self.assertIn("the share cannot be read", warnings[0])
        self.assertIn(" ago)", warnings[0])

    def test_a_start_from_the_copy_does_not_rewrite_it(self):
        """Started from the copy, the node leaves it as it was (its saved time is when it was read from the share)."""
        share = Share(self)
        tap.makeService(self.options(share), reactor=MemoryReactorClock())
        before = find_copy(share.state, share.path)
        share.gone()

        tap.makeService(self.options(share), reactor=MemoryReactorClock())

        self.assertEqual(find_copy(share.state, share.path).saved, before.saved)

    def test_a_group_member_starts_from_its_copy_too(self):
        """coordinator = etcd: a member whose share is unreadable starts from its copy, as a pair's node does."""
        from iwayfailover.coordinators.etcd import GroupNode

        share = Share(self, GROUP)
        tap.makeService(self.options(share, "alpha"), reactor=MemoryReactorClock())
        share.gone()

        node = tap.makeService(self.options(share, "alpha"), reactor=MemoryReactorClock())

        self.assertIsInstance(node, GroupNode)
        self.assertEqual(node.status().config.source, "local copy")

    def test_no_share_and_no_copy_exits_with_one_line(self):
        """The first start on an unreadable share: one line, naming the file and that there is no copy."""
        share = Share(self)
        share.gone()

        error = self.assertRaises(SystemExit, tap.makeService, self.options(share), MemoryReactorClock())

        self.assertIn("no local copy of it", str(error.code))
        self.assertEqual(len(str(error.code).splitlines()), 1)


def run_at_once(f, *args):
    return defer.maybeDeferred(f, *args)


POLLED = CONFIG.replace("secret_file = failover.key", "insecure = true")
"""A configuration that names no file, parsed where no share is."""


class BackToTheShareTests(TestCase):
    """The poller of a node started from its copy goes back to the share at the first good read of it."""

    INTERVAL = 5.0
    SETTLE = 0.5

    def setUp(self):
        self.clock = Clock()
        self.copy_config = parse_config(POLLED, "/share/iway.ini")
        self.copy = LocalCopy("/state/last-good.ini", "/share/iway.ini", self.copy_config.digest, 1767225600.0)
        self.share = ConfigUnreadable("/share/iway.ini", problem="cannot read the configuration: Input/output error")
        self.applied, self.kept, self.events = [], [], []

    def load(self, path):
        if isinstance(self.share, Exception):
            raise self.share
        return self.share

    def poller(self):
        poller = ConfigPoller(
            self.clock, self.copy_config, self.INTERVAL, self.load, run_at_once, self.applied.append,
            keep=self.kept.append, local_copy=self.copy, share_error="cannot read the configuration: Input/output error",
        )
        poller.log = Logger(observer=self.events.append)
        poller.startService()
        self.addCleanup(lambda: poller.running and poller.stopService())
        return poller

    def infos(self):
        return [formatEvent(e) for e in self.events if e["log_level"] == LogLevel.info]

    def test_while_the_share_stays_unreadable_the_copy_runs(self):
        """Reads that keep failing leave the node on its copy, with the share's error, and apply nothing."""
        poller = self.poller()

        self.clock.pump([self.INTERVAL] * 3)

        self.assertIs(poller.local_copy, self.copy)
        self.assertIn("Input/output error", poller.last_error)
        self.assertEqual((self.applied, self.kept), ([], []))

    def test_a_share_with_the_copys_content_ends_copy_mode_restarting_nothing(self):
        """The share reads the same as the copy: off the copy at once, nothing applied, and the log says so."""
        poller = self.poller()
        self.share = parse_config(POLLED, "/share/iway.ini")

        self.clock.advance(self.INTERVAL)

        self.assertIsNone(poller.local_copy)
        self.assertIsNone(poller.last_error)
        self.assertEqual(self.applied, [])
        self.assertIn("back on the shared file, off the local copy /state/last-good.ini", self.infos()[-1])
        self.assertIn("the same as the copy, nothing restarts", self.infos()[-1])

    def test_a_changed_share_is_applied_after_two_reads_and_kept(self):
        """The share reads differently: applied as any reload once two reads agree, then kept as the new copy."""
        poller = self.poller()
        changed = parse_config(POLLED.replace("threshold = 3", "threshold = 4", 1), "/share/iway.ini")
        self.share = changed

        self.clock.advance(self.INTERVAL)
        self.assertIs(poller.local_copy, self.copy)  # one read is not enough
        self.clock.advance(self.SETTLE)

        self.assertIsNone(poller.local_copy)
        self.assertEqual((self.applied, self.kept), ([changed], [changed]))

    def test_a_readable_but_invalid_share_keeps_the_copy_running(self):
        """The share comes back with a bad edit: the node stays on its copy and shows the edit's error."""
        poller = self.poller()
        self.share = ConfigError("/share/iway.ini", "server:serv_a", "threshold", "soon", "not a number")

        self.clock.pump([self.INTERVAL, self.SETTLE])

        self.assertIs(poller.local_copy, self.copy)
        self.assertIn("'soon': not a number", poller.last_error)
        self.assertEqual(self.applied, [])

    def test_every_reload_applied_is_kept(self):
        """A node on its share keeps a copy of each changed configuration it applies, and of nothing refused."""
        poller = ConfigPoller(self.clock, self.copy_config, self.INTERVAL, self.load, run_at_once, self.applied.append,
                              keep=self.kept.append)
        poller.startService()
        self.addCleanup(poller.stopService)
        changed = parse_config(POLLED.replace("threshold = 3", "threshold = 4", 1), "/share/iway.ini")
        self.share = changed
        self.clock.pump([self.INTERVAL, self.SETTLE])
        self.share = ConfigError("/share/iway.ini", problem="bad")
        self.clock.pump([self.INTERVAL, self.SETTLE])

        self.assertEqual(self.kept, [changed])


COPY_STATUS = ConfigStatus(
    path="/share/iway.ini", digest="ab" * 32, last_error="/share/iway.ini: cannot read the configuration: Input/output error",
    source="local copy", local_copy="/var/lib/iwayfailover/serv_a/last-good.ini", local_copy_saved=1767225600.0,
)


class ShowingItTests(TestCase):
    """The status JSON, the console's banner and iwsrv status."""

    def status(self, config):
        return NodeStatus(server="serv_a", role="live", epoch=1, since=1767225600.0, config=config)

    def test_the_status_json_has_the_source_and_the_copy(self):
        """config in /api/status: source, local_copy and its saved time added, the old keys kept; read back the same."""
        data = COPY_STATUS.to_json()

        self.assertEqual(data, {
            "path": "/share/iway.ini", "digest": "ab" * 32, "last_error": COPY_STATUS.last_error, "source": "local copy",
            "local_copy": "/var/lib/iwayfailover/serv_a/last-good.ini", "local_copy_saved": "2026-01-01T00:00:00.000Z",
            "local_copy_error": None,
        })
        self.assertEqual(ConfigStatus.from_json(data), COPY_STATUS)

    def test_the_console_banner_names_the_copy_its_time_and_why(self):
        """Running from the copy: a banner with the share's path, the copy, when it was saved and the share's error."""
        from twisted.web.template import flattenString

        html = self.successResultOf(flattenString(None, config_banner(self.status(COPY_STATUS)))).decode()

        self.assertIn("Running from the local copy", html)
        self.assertIn("of /share/iway.ini (/var/lib/iwayfailover/serv_a/last-good.ini) saved 2026-01-01T00:00:00.000Z", html)
        self.assertIn("the share cannot be read: ", html)
        self.assertIn("Input/output error", html)
        self.assertIn('role="alert"', html)

    def test_a_banner_only_on_the_copy(self):
        """On the share, no banner at all; on the copy, one."""
        self.assertEqual(config_banner(self.status(ConfigStatus(path="/share/iway.ini"))), "")
        self.assertNotEqual(config_banner(self.status(COPY_STATUS)), "")

    def test_iwsrv_status_says_it_runs_from_the_copy(self):
        """iwsrv status: a config line naming the copy, its time, the share and why."""
        data = self.status(COPY_STATUS).to_json()

        text = format_status(data)

        line = next(line for line in text.splitlines() if line.startswith("config"))
        self.assertIn("RUNNING FROM THE LOCAL COPY /var/lib/iwayfailover/serv_a/last-good.ini of /share/iway.ini", line)
        self.assertIn("saved 2026-01-01T00:00:00.000Z: the share cannot be read", line)
        self.assertIn("Input/output error", line)

    def test_iwsrv_status_says_when_the_copy_cannot_be_kept(self):
        """A copy that could not be written shows as its own line."""
        data = self.status(ConfigStatus(path="/share/iway.ini", local_copy_error="cannot write X: No space left on device")).to_json()

        self.assertIn("NOT KEPT: cannot write X: No space left on device", format_status(data))


class ConsoleBannerTests(ConsoleTestCase):
    """The console of a real node started from its copy: a banner on every page, gone once the share is back."""

    name = "serv_a"
    backup = False

    def setUp(self):
        super().setUp()
        copy = LocalCopy(os.path.join(self.folder, "state", COPY_NAME), self.path, self.node.config.digest, 1767225600.0)
        self.share = ConfigUnreadable(self.path, problem="cannot read the configuration: Input/output error")
        self.node.poller = ConfigPoller(
            self.reactor, self.node.config, 5.0, self.load, run_at_once, self.node.apply_config,
            local_copy=copy, share_error=str(self.share),
        )
        self.node.poller.setServiceParent(self.node)

    def load(self, path):
        if isinstance(self.share, Exception):
            raise self.share
        return self.share

    def test_every_page_shows_the_banner(self):
        """Status, Listeners and Log each carry the banner naming the copy and the share's error."""
        self.logged_in()
        for page in ("/", "/listeners", "/log"):
            _, body = self.get(page)
            self.assertIn('data-live="local-copy"', body, page)
            self.assertIn(f"of {self.path} ({os.path.join(self.folder, 'state', COPY_NAME)}) saved 2026-01-01T00:00:00.000Z",
                          body, page)
            self.assertIn("Input/output error", body, page)

    def test_the_banner_goes_once_the_share_reads_again(self):
        """The share reads the same as the copy: the next page has no banner, and /api/status says share."""
        self.logged_in()
        self.share = self.node.config

        self.reactor.advance(5.0)

        _, body = self.get("/")
        self.assertNotIn('data-live="local-copy"', body)
        _, body = self.get("/api/status")
        self.assertEqual(json.loads(body)["config"]["source"], "share")

    def test_the_banner_is_shown_only_after_a_login(self):
        """Before a login the login page shows nothing about the node; once logged in, the banner is there."""
        _, body = self.get("/login")
        self.assertNotIn('data-live="local-copy"', body)

        self.assertIn('data-live="local-copy"', self.logged_in())


class IwsrvFindsTheConsoleInTheCopyTests(TestCase):
    """iwsrv's commands find the node's console in its local copy while the share cannot be read."""

    def setUp(self):
        import io
        import sys

        self.stderr = io.StringIO()
        self.patch(sys, "stderr", self.stderr)
        self.share = Share(self)
        state_home = os.path.dirname(self.share.state)
        self.share.state = os.path.join(state_home, "iwayfailover", "serv_b")  # the default state dir of serv_b
        os.makedirs(self.share.state)
        saved = os.environ.get("XDG_STATE_HOME")
        os.environ["XDG_STATE_HOME"] = state_home
        self.addCleanup(lambda: os.environ.pop("XDG_STATE_HOME") if saved is None
                        else os.environ.__setitem__("XDG_STATE_HOME", saved))

    def test_status_reads_the_copy_and_says_so(self):
        """Share gone: with no copy, the unreadable file is the error; with one, iwsrv reads it and says so."""
        from iwayfailover.cli import status_main

        self.share.gone()
        self.assertEqual(status_main(["--config", self.share.path, "--name", "serv_b"]), 2)
        self.assertIn("cannot read the configuration", self.stderr.getvalue())
        self.assertNotIn("local copy", self.stderr.getvalue())
        self.share.back()
        self.share.keep()
        self.share.gone()

        code = status_main(["--config", self.share.path, "--name", "serv_b"])

        self.assertEqual(code, 2)  # serv_b has no console; the copy says so
        self.assertIn(f"using the node's local copy {os.path.join(self.share.state, COPY_NAME)}", self.stderr.getvalue())
        self.assertIn("[server:serv_b] has no console key", self.stderr.getvalue())

    def test_status_reads_the_copy_in_the_state_dir_given(self):
        """--state-dir names where the copy is (a node run by systemd keeps it in /var/lib/iwayfailover/NAME)."""
        from iwayfailover.cli import status_main

        elsewhere = os.path.join(os.path.dirname(self.share.folder), "var-lib")
        os.makedirs(elsewhere)
        self.share.state = elsewhere
        self.share.keep()
        self.share.gone()

        code = status_main(["--config", self.share.path, "--name", "serv_b", "--state-dir", elsewhere])

        self.assertEqual(code, 2)
        self.assertIn(f"using the node's local copy {os.path.join(elsewhere, COPY_NAME)}", self.stderr.getvalue())
