"""
Tests for L{iwayfailover.listeners}: a listener's states, a node's set of
listeners following the configuration, and the twistd plugins behind them.
"""

import errno
import shutil
import tempfile

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, MultiService, Service
from twisted.internet import defer
from twisted.internet.endpoints import serverFromString
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IStreamServerEndpoint
from twisted.internet.protocol import Factory
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactor
from twisted.logger import Logger, LogLevel
from twisted.trial.unittest import TestCase
from zope.interface import implementer

from iwayfailover import listeners as listeners_module
from iwayfailover.config import ConfigError, ListenerSettings, parse_config
from iwayfailover.listeners import (
    ACTIVE,
    FAILED,
    STARTING,
    STOPPED,
    STOPPING,
    WAITING,
    Listener,
    RETRY_FIRST_DELAY,
    RETRY_LOG_EVERY,
    RETRY_MAX_DELAY,
    ListenerSet,
    check_listener_specs,
    plugin_service,
)

CONFIG_PATH = "/srv/share/iwayfailover.ini"


def fresh_dir(test):
    """A new, empty temporary folder, removed after C{test}."""
    path = tempfile.mkdtemp(prefix="iwayfailover-test-")
    test.addCleanup(shutil.rmtree, path, ignore_errors=True)
    return path


def spec(name="web", *args):
    """A listener's settings; the plugin line itself is never run here."""
    return ListenerSettings(name=name, plugin="web", args=args or ("--listen", "tcp:8080"))


@implementer(IStreamServerEndpoint)
class RefusingEndpoint:
    """An endpoint whose port is taken: listen fails at once."""

    def listen(self, factory):
        return defer.fail(CannotListenError("", 8080, OSError(errno.EADDRINUSE, "Address already in use")))


@implementer(IStreamServerEndpoint)
class PendingEndpoint:
    """An endpoint whose listen answers only when the test says so."""

    def __init__(self):
        self.listening = defer.Deferred()

    def listen(self, factory):
        return self.listening


def endpoint_service(endpoint):
    """A plugin's service as twistd plugins build them: a MultiService with an endpoint service."""
    top = MultiService()
    StreamServerEndpointService(endpoint, Factory()).setServiceParent(top)
    return top


class BrokenService(Service):
    """A service that cannot start."""

    def startService(self):
        raise RuntimeError("no licence for this channel")


class SlowStoppingService(Service):
    """A service whose stop completes only when the test fires C{stopping}."""

    def __init__(self):
        self.stopping = defer.Deferred()
        self.stop_calls = 0

    def stopService(self):
        super().stopService()
        self.stop_calls += 1
        return self.stopping


class FailingStopService(Service):
    """A service whose stop raises."""

    def stopService(self):
        super().stopService()
        raise RuntimeError("stuck")


class Builds:
    """A fake C{build}: the service for each listener name, and the specs built."""

    def __init__(self, **makers):
        self.makers = makers
        self.built = []
        self.services = []

    def __call__(self, settings):
        self.built.append(settings)
        service = self.makers[settings.name]()
        self.services.append(service)
        return service


def record_transitions(test):
    """The transition events every listener logs from now on during C{test}."""
    events = []
    test.patch(listeners_module, "log", Logger(namespace="test", observer=events.append))
    return events


def states(events):
    """The states the logged transitions went to (FAILED is logged with a reason, not a state)."""
    return [e.get("state", FAILED) for e in events if "previous" in e]


def listening_service():
    """A service whose port listens at once (on a MemoryReactor)."""
    return endpoint_service(serverFromString(MemoryReactor(), "tcp:0"))


class ListenerTests(TestCase):
    """One listener and its states."""

    def test_new_listener_is_waiting(self):
        """A listener that was never started is WAITING, with no reason."""
        listener = Listener(spec(), Builds(web=listening_service))

        self.assertEqual((listener.state, listener.reason), (WAITING, None))

    def test_start_builds_the_service_from_its_spec(self):
        """Starting a listener builds its service afresh from its own settings."""
        build = Builds(web=listening_service)
        settings = spec()
        listener = Listener(settings, build)

        listener.start()

        self.assertEqual(build.built, [settings])

    def test_listener_is_starting_while_its_port_is_pending(self):
        """A listener whose port has not answered yet is STARTING."""
        endpoint = PendingEndpoint()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(endpoint)))

        d = listener.start()

        self.assertEqual(listener.state, STARTING)
        self.assertNoResult(d)

    def test_listener_is_active_once_its_port_listens(self):
        """A STARTING listener becomes ACTIVE when its pending port listens."""
        endpoint = PendingEndpoint()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(endpoint)))
        d = listener.start()

        endpoint.listening.callback(object())

        self.assertIsNone(self.successResultOf(d))
        self.assertEqual(listener.state, ACTIVE)

    def test_listener_with_port_that_listens_at_once_is_active(self):
        """A service whose port listens at once leaves the listener ACTIVE, listening on the reactor."""
        reactor = MemoryReactor()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(serverFromString(reactor, "tcp:0"))))

        self.successResultOf(listener.start())

        self.assertEqual(listener.state, ACTIVE)
        self.assertEqual(len(reactor.tcpServers), 1)

    def test_service_that_cannot_start_is_failed_with_the_reason(self):
        """A service whose startService raises leaves the listener FAILED with the exception as reason."""
        listener = Listener(spec(), Builds(web=BrokenService))

        listener.start()

        self.assertEqual(listener.state, FAILED)
        self.assertEqual(listener.reason, "RuntimeError: no licence for this channel")

    def test_port_that_cannot_listen_is_failed_with_the_reason(self):
        """A port that cannot be bound leaves the listener FAILED with why it could not listen."""
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(RefusingEndpoint())))

        listener.start()

        self.assertEqual(listener.state, FAILED)
        self.assertIn("Address already in use", listener.reason)

    def test_start_that_fails_still_succeeds(self):
        """The Deferred of a failing start fires with None: a FAILED listener is a state, not an error."""
        listener = Listener(spec(), Builds(web=BrokenService))

        result = self.successResultOf(listener.start())

        self.assertIsNone(result)

    def test_status_of_failed_listener_has_its_reason(self):
        """The status of a FAILED listener reports its state, since when and the reason."""
        listener = Listener(spec(), Builds(web=BrokenService), wall=lambda: 1234.5)
        listener.start()

        status = listener.status()

        self.assertEqual(
            status, {"state": FAILED, "since": 1234.5, "reason": "RuntimeError: no licence for this channel"}
        )

    def test_stop_is_stopping_until_the_service_has_stopped(self):
        """While its service's stopService has not finished, a listener is STOPPING."""
        service = SlowStoppingService()
        listener = Listener(spec(), Builds(web=lambda: service))
        listener.start()

        d = listener.stop()

        self.assertEqual(listener.state, STOPPING)
        self.assertNoResult(d)

    def test_stop_calls_stop_service_then_waits(self):
        """Stopping calls the service's stopService; once it is done the listener is WAITING."""
        service = SlowStoppingService()
        listener = Listener(spec(), Builds(web=lambda: service))
        listener.start()
        d = listener.stop()

        service.stopping.callback(None)

        self.successResultOf(d)
        self.assertEqual((service.stop_calls, listener.state), (1, WAITING))

    def test_stop_with_final_stopped_ends_stopped(self):
        """A listener stopped for a shutdown ends STOPPED rather than WAITING."""
        listener = Listener(spec(), Builds(web=listening_service))
        listener.start()

        self.successResultOf(listener.stop(STOPPED))

        self.assertEqual(listener.state, STOPPED)

    def test_stop_stops_listening_on_the_port(self):
        """Stopping an ACTIVE listener lets go of its port."""
        endpoint = PendingEndpoint()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(endpoint)))
        listener.start()
        port = StoppablePort()
        endpoint.listening.callback(port)

        self.successResultOf(listener.stop())

        self.assertTrue(port.stopped)

    def test_stop_that_raises_still_ends_in_final_state(self):
        """A service whose stopService raises is logged, and the listener still ends WAITING."""
        listener = Listener(spec(), Builds(web=FailingStopService))
        listener.start()

        d = listener.stop()

        self.successResultOf(d)
        self.assertEqual(listener.state, WAITING)
        self.assertEqual(len(self.flushLoggedErrors(RuntimeError)), 1)

    def test_listener_stopped_while_starting_does_not_become_active(self):
        """A port that listens after its listener was stopped does not make the listener ACTIVE."""
        endpoint = PendingEndpoint()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(endpoint)))
        listener.start()
        self.successResultOf(listener.stop())

        endpoint.listening.callback(StoppablePort())

        self.assertEqual(listener.state, WAITING)

    def test_listener_stopped_while_starting_goes_straight_to_stopping_then_waiting(self):
        """A listener stopped while STARTING goes only STOPPING then WAITING: its abandoned start reports nothing."""
        transitions = record_transitions(self)
        endpoint = PendingEndpoint()
        listener = Listener(spec(), Builds(web=lambda: endpoint_service(endpoint)))
        listener.start()

        self.successResultOf(listener.stop())

        self.assertEqual(states(transitions), [STARTING, STOPPING, WAITING])

    def test_stop_to_waiting_keeps_a_failed_listener_failed(self):
        """Stopping a FAILED listener towards WAITING keeps FAILED and its reason visible."""
        listener = Listener(spec(), Builds(web=BrokenService))
        listener.start()

        self.successResultOf(listener.stop())

        self.assertEqual((listener.state, listener.reason), (FAILED, "RuntimeError: no licence for this channel"))

    def test_hold_makes_a_failed_listener_waiting(self):
        """hold() puts a FAILED listener back to WAITING, without a reason."""
        listener = Listener(spec(), Builds(web=BrokenService))
        listener.start()

        listener.hold()

        self.assertEqual((listener.state, listener.reason), (WAITING, None))

    def test_start_of_a_running_listener_builds_nothing_more(self):
        """Starting a listener that already runs its service builds no second one."""
        build = Builds(web=listening_service)
        listener = Listener(spec(), build)
        listener.start()

        listener.start()

        self.assertEqual(len(build.built), 1)


class StoppablePort:
    """A listening port that records whether it was told to stop."""

    stopped = False

    def stopListening(self):
        self.stopped = True


class ListenerSetTests(TestCase):
    """A node's listeners, following the configuration."""

    def test_configure_while_held_adds_waiting_listeners_built_ahead_not_started(self):
        """Configured listeners of a node that is not live are WAITING: built ahead (a hot backup), not started."""
        build = Builds(web=listening_service, ftp=listening_service)
        listeners = ListenerSet(build)

        self.successResultOf(listeners.configure({"web": spec("web"), "ftp": spec("ftp")}))

        self.assertEqual(
            {name: l.state for name, l in listeners.listeners.items()}, {"web": WAITING, "ftp": WAITING}
        )
        self.assertEqual(sorted(s.name for s in build.built), ["ftp", "web"])
        self.assertFalse(any(service.running for service in build.services))

    def test_start_uses_the_service_built_ahead(self):
        """A takeover starts the service prepared while WAITING; it does not build another."""
        build = Builds(web=listening_service)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web")})

        listeners.start()

        self.assertEqual(len(build.built), 1)
        self.assertTrue(build.services[0].running)
        self.assertEqual(listeners.listeners["web"].state, ACTIVE)

    def test_a_listener_stopped_to_waiting_is_prepared_again(self):
        """After a yield, a fresh service is built for the next takeover (a stopped one is not reused)."""
        build = Builds(web=listening_service)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web")})
        listeners.start()

        self.successResultOf(listeners.stop(WAITING))

        self.assertEqual(len(build.built), 2)
        self.assertFalse(build.services[1].running)

    def test_a_failure_to_prepare_is_retried_and_reported_at_start(self):
        """A service that cannot be built ahead stays WAITING; at takeover the build is tried again and FAILED says why."""
        attempts = []

        def broken(settings):
            attempts.append(settings)
            raise OSError("no such directory: /srv/www")

        listeners = ListenerSet(broken, reactor=Clock())
        listeners.configure({"web": spec("web")})
        self.assertEqual(listeners.listeners["web"].state, WAITING)

        listeners.start()

        self.assertEqual(len(attempts), 2)
        self.assertEqual(listeners.listeners["web"].state, FAILED)
        self.assertIn("no such directory", listeners.listeners["web"].reason)

    def test_start_makes_every_listener_active(self):
        """start() starts every configured listener."""
        listeners = ListenerSet(Builds(web=listening_service, ftp=listening_service))
        listeners.configure({"web": spec("web"), "ftp": spec("ftp")})

        self.successResultOf(listeners.start())

        self.assertEqual({n: l.state for n, l in listeners.listeners.items()}, {"web": ACTIVE, "ftp": ACTIVE})

    def test_failure_of_one_listener_does_not_keep_others_from_starting(self):
        """A listener that cannot start is FAILED, while the other listeners still become ACTIVE."""
        listeners = ListenerSet(
            Builds(
                broken=BrokenService,
                refused=lambda: endpoint_service(RefusingEndpoint()),
                web=listening_service,
            ),
            reactor=Clock(),
        )
        listeners.configure({"broken": spec("broken"), "refused": spec("refused"), "web": spec("web")})

        self.successResultOf(listeners.start())

        self.assertEqual(
            {n: l.state for n, l in listeners.listeners.items()},
            {"broken": FAILED, "refused": FAILED, "web": ACTIVE},
        )

    def test_configure_while_active_starts_an_added_listener(self):
        """A listener added to the configuration of a live node starts at once."""
        listeners = ListenerSet(Builds(web=listening_service, ftp=listening_service))
        listeners.configure({"web": spec("web")})
        listeners.start()

        self.successResultOf(listeners.configure({"web": spec("web"), "ftp": spec("ftp")}))

        self.assertEqual(listeners.listeners["ftp"].state, ACTIVE)

    def test_configure_removes_and_stops_a_listener_no_longer_there(self):
        """A listener dropped from the configuration is removed and its service stopped."""
        build = Builds(web=listening_service, ftp=SlowStoppingService)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web"), "ftp": spec("ftp")})
        listeners.start()
        ftp_service = build.services[1]
        ftp = listeners.listeners["ftp"]

        listeners.configure({"web": spec("web")})
        ftp_service.stopping.callback(None)

        self.assertNotIn("ftp", listeners.listeners)
        self.assertEqual((ftp_service.stop_calls, ftp.state), (1, STOPPED))

    def test_configure_keeps_an_unchanged_listener_running(self):
        """A listener whose settings did not change is neither stopped nor rebuilt."""
        build = Builds(web=SlowStoppingService)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web")})
        listeners.start()
        web = listeners.listeners["web"]

        listeners.configure({"web": spec("web")})

        self.assertIs(listeners.listeners["web"], web)
        self.assertEqual((len(build.built), build.services[0].stop_calls, web.state), (1, 0, ACTIVE))

    def test_configure_replaces_a_changed_listener(self):
        """A listener whose plugin line changed is replaced by one with the new settings."""
        listeners = ListenerSet(Builds(web=listening_service))
        listeners.configure({"web": spec("web")})
        old = listeners.listeners["web"]
        changed = spec("web", "--listen", "tcp:8081")

        self.successResultOf(listeners.configure({"web": changed}))

        self.assertIsNot(listeners.listeners["web"], old)
        self.assertEqual(listeners.listeners["web"].spec, changed)

    def test_changed_listener_starts_only_after_the_old_one_stopped(self):
        """While live, a changed listener is built and started only once its old service's stop has fired."""
        build = Builds(web=SlowStoppingService)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web")})
        listeners.start()
        old_service = build.services[0]
        changed = spec("web", "--listen", "tcp:8081")

        d = listeners.configure({"web": changed})
        before = (build.built[1:], listeners.listeners["web"].state)
        old_service.stopping.callback(None)

        self.assertEqual(before, ([], WAITING))
        self.successResultOf(d)
        self.assertEqual((build.built[1:], listeners.listeners["web"].state), ([changed], ACTIVE))

    def test_a_changed_listener_whose_old_service_stops_at_once_is_started(self):
        """While live, a changed listener whose old service stops synchronously is started all the same."""
        build = Builds(web=Service)
        listeners = ListenerSet(build)
        listeners.configure({"web": spec("web")})
        listeners.start()
        changed = spec("web", "--listen", "tcp:8081")

        self.successResultOf(listeners.configure({"web": changed}))

        self.assertEqual((build.built[1:], listeners.listeners["web"].state), ([changed], ACTIVE))

    def test_hold_makes_listeners_waiting(self):
        """hold() puts the listeners of a node that became backup in WAITING."""
        listeners = ListenerSet(Builds(web=BrokenService))
        listeners.configure({"web": spec("web")})
        listeners.start()

        listeners.hold()

        self.assertEqual(listeners.listeners["web"].state, WAITING)

    def test_configure_after_hold_starts_nothing(self):
        """A listener added while the node is held stays WAITING."""
        build = Builds(web=listening_service, ftp=listening_service)
        listeners = ListenerSet(build)
        listeners.start()
        listeners.hold()

        listeners.configure({"ftp": spec("ftp")})

        self.assertEqual(listeners.listeners["ftp"].state, WAITING)
        self.assertFalse(build.services[-1].running)

    def test_stop_ends_every_listener_in_the_final_state(self):
        """stop(STOPPED) stops every listener and leaves them STOPPED."""
        listeners = ListenerSet(Builds(web=listening_service, ftp=listening_service))
        listeners.configure({"web": spec("web"), "ftp": spec("ftp")})
        listeners.start()

        self.successResultOf(listeners.stop(STOPPED))

        self.assertEqual({n: l.state for n, l in listeners.listeners.items()}, {"web": STOPPED, "ftp": STOPPED})

    def test_status_lists_listeners_by_name(self):
        """status() maps each listener's name to its status, in name order."""
        listeners = ListenerSet(Builds(), wall=lambda: 7.0)
        listeners.configure({"web": spec("web"), "ftp": spec("ftp")})

        status = listeners.status()

        self.assertEqual(list(status), ["ftp", "web"])
        self.assertEqual(status["web"], {"state": WAITING, "since": 7.0})


def shared_config(plugin_line):
    """A shared configuration with one listener running C{plugin_line}."""
    text = (
        "[server:serv_a]\n"
        "backup_location = iam2:1200\n"
        "heartbeat_port = 1200\n"
        "threshold = 3\n"
        "\n"
        "[listener:web]\n"
        f"plugin = {plugin_line}\n"
    )
    return parse_config(text, CONFIG_PATH)


class PluginTests(TestCase):
    """Listeners run real twistd plugins (here Twisted's own C{web})."""

    def web_line(self):
        """A C{web} plugin line serving a fresh temporary folder."""
        path = fresh_dir(self)
        return f"web --listen tcp:0 --path {path}"

    def test_plugin_service_builds_the_plugins_service(self):
        """plugin_service builds the web plugin's service, with a server endpoint for --listen."""
        settings = shared_config(self.web_line()).listeners["web"]

        service = plugin_service(settings)

        self.assertTrue(IService.providedBy(service))
        self.assertEqual(len([s for s in service if isinstance(s, StreamServerEndpointService)]), 1)

    def test_check_accepts_an_installed_plugin_with_good_options(self):
        """check_listener_specs accepts the web plugin with options it understands."""
        config = shared_config(self.web_line())

        self.assertIsNone(check_listener_specs(config))

    def test_check_refuses_an_unknown_plugin_naming_section_and_key(self):
        """An unknown plugin name is a ConfigError naming the listener's section and its plugin key."""
        config = shared_config("no-such-plugin --port 80")

        error = self.assertRaises(ConfigError, check_listener_specs, config)

        self.assertEqual((error.path, error.section, error.key), (CONFIG_PATH, "listener:web", "plugin"))
        self.assertIn("no twistd plugin named 'no-such-plugin'", str(error))

    def test_unknown_plugin_error_lists_the_installed_plugins(self):
        """The error for an unknown plugin lists the installed plugins, without iway-failover itself."""
        config = shared_config("no-such-plugin")

        error = self.assertRaises(ConfigError, check_listener_specs, config)

        names = error.allowed.removeprefix("one of: ").split(", ")
        self.assertIn("web", names)
        self.assertNotIn("iway-failover", names)

    def test_check_refuses_options_the_plugin_refuses(self):
        """Options the plugin does not accept are a ConfigError saying the plugin refused them."""
        config = shared_config("web --no-such-option")

        error = self.assertRaises(ConfigError, check_listener_specs, config)

        self.assertEqual((error.section, error.key), ("listener:web", "plugin"))
        self.assertIn("the web plugin refused its options", str(error))
        self.assertIn("no-such-option", str(error))

    def test_check_turns_any_error_of_the_plugins_options_into_a_config_error(self):
        """A plugin whose option parsing fails in another way (an import) is a ConfigError too, not a crash."""
        config = shared_config(f"web --path {fresh_dir(self)} --class no.such.Resource")

        error = self.assertRaises(ConfigError, check_listener_specs, config)

        self.assertEqual((error.section, error.key), ("listener:web", "plugin"))
        self.assertIn("the web plugin could not take its options", str(error))
        self.assertIn("no.such", str(error))

    def test_check_refuses_iway_failover_itself(self):
        """A listener may not run iway-failover itself, though it is an installed plugin."""
        config = shared_config("iway-failover --config /etc/other.ini")

        error = self.assertRaises(ConfigError, check_listener_specs, config)

        self.assertEqual((error.section, error.key), ("listener:web", "plugin"))
        self.assertIn("'iway-failover'", str(error))

    def test_plugin_service_refuses_iway_failover_itself(self):
        """plugin_service will not build a node inside a node."""
        settings = ListenerSettings(name="web", plugin="iway-failover", args=())

        self.assertRaises(LookupError, plugin_service, settings)


@implementer(IStreamServerEndpoint)
class GrantingEndpoint:
    """An endpoint that listens at once on a port the test can inspect."""

    def __init__(self):
        self.port = StoppablePort()

    def listen(self, factory):
        return defer.succeed(self.port)


class ReleaseTests(TestCase):
    """Whatever a listener bound is let go, whatever happened while it started or stopped."""

    def test_a_half_started_listener_lets_go_of_the_ports_it_did_bind(self):
        """Two ports, the second taken: FAILED, and the first port is released (a backup must not keep serving it)."""
        first = GrantingEndpoint()
        top = MultiService()
        StreamServerEndpointService(first, Factory()).setServiceParent(top)
        StreamServerEndpointService(RefusingEndpoint(), Factory()).setServiceParent(top)
        listener = Listener(spec("web"), build=lambda settings: top)

        listener.start()

        self.assertEqual(listener.state, FAILED)
        self.assertTrue(first.port.stopped)

    def test_a_start_during_a_slow_stop_waits_for_the_stop(self):
        """A start asked for while the old service is still stopping begins only once the old one let go."""
        old, new = SlowStoppingService(), Service()
        services = [old, new]
        listener = Listener(spec("web"), build=lambda settings: services.pop(0))
        listener.start()
        listener.stop(WAITING)

        started = listener.start()

        self.assertNoResult(started)
        self.assertFalse(new.running)
        old.stopping.callback(None)
        self.successResultOf(started)
        self.assertTrue(new.running)
        self.assertEqual(listener.state, ACTIVE)

    def test_a_second_stop_waits_for_the_stop_in_flight(self):
        """Stopping a listener whose stop is in flight fires only when the ports are really released."""
        old = SlowStoppingService()
        listener = Listener(spec("web"), build=lambda settings: old)
        listener.start()
        listener.stop(WAITING)

        again = listener.stop(STOPPED)

        self.assertNoResult(again)
        old.stopping.callback(None)
        self.successResultOf(again)
        self.assertEqual(listener.state, STOPPED)


class HeldPort:
    """
    A port held by another process (the old live node) until the test lets
    go of it: while C{held}, a listener built on it cannot listen.
    """

    def __init__(self):
        self.held = True
        self.broken = False  # a service that fails for another reason
        self.builds = []  # the clock's time of each build

    def builder(self, clock):
        def build(settings):
            self.builds.append(clock.seconds())
            if self.broken:
                return BrokenService()
            return endpoint_service(RefusingEndpoint() if self.held else serverFromString(MemoryReactor(), "tcp:0"))

        return build


class RetryTests(TestCase):
    """A live node tries a FAILED listener again by itself, with a capped backoff."""

    def live_set(self, jitter=lambda: 0.0, names=("web",)):
        """A started ListenerSet on a Clock whose listeners' port is held by someone else."""
        self.clock = Clock()
        self.port = HeldPort()
        listeners = ListenerSet(self.port.builder(self.clock), wall=self.clock.seconds, reactor=self.clock, jitter=jitter)
        listeners.configure({name: spec(name) for name in names})
        listeners.start()
        return listeners

    def advance(self, seconds):
        """Move the clock on by C{seconds}, stopping at each timer on the way (as a running reactor would)."""
        end = self.clock.seconds() + seconds
        while True:
            due = [call.getTime() for call in self.clock.getDelayedCalls() if call.getTime() <= end]
            if not due:
                break
            self.clock.advance(max(0.0, min(due) - self.clock.seconds()))
        self.clock.advance(end - self.clock.seconds())

    def pauses(self):
        """The pauses between the builds of the listener (the first, built ahead, is the takeover's start)."""
        times = self.port.builds
        return [round(b - a, 6) for a, b in zip(times, times[1:])]

    def test_a_listener_whose_port_was_held_becomes_active_by_itself_once_it_is_let_go(self):
        """Address already in use at takeover: FAILED, and ACTIVE by itself once the port is free, with no one pressing Restart."""
        listeners = self.live_set()
        web = listeners.listeners["web"]
        self.assertEqual(web.state, FAILED)
        self.advance(RETRY_FIRST_DELAY)
        self.assertEqual(web.state, FAILED)

        self.port.held = False
        self.advance(2 * RETRY_FIRST_DELAY)

        self.assertEqual((web.state, web.reason), (ACTIVE, None))

    def test_the_pause_doubles_from_a_quarter_second_up_to_the_cap(self):
        """Retries come after 0.25 s, 0.5 s, 1 s ... doubling, and never more than RETRY_MAX_DELAY apart."""
        self.live_set()

        self.advance(100)

        pauses = self.pauses()
        self.assertEqual(pauses[:7], [0.25, 0.5, 1.0, 2.0, 4.0, 8.0, RETRY_MAX_DELAY])
        self.assertEqual(set(pauses[6:]), {RETRY_MAX_DELAY})

    def test_jitter_shortens_a_pause_by_a_tenth_at_most(self):
        """With the largest jitter, the first retry comes at 0.9 x 0.25 s, not later than 0.25 s."""
        listeners = self.live_set(jitter=lambda: 0.999999)

        self.advance(0.9 * RETRY_FIRST_DELAY - 0.001)
        before = len(self.port.builds)
        self.advance(0.002)

        self.assertEqual((before, len(self.port.builds)), (1, 2))
        self.assertEqual(listeners.listeners["web"].state, FAILED)

    def test_status_shows_the_retries_made_and_when_the_next_comes(self):
        """A FAILED listener's status entry has retry_in (seconds to the next retry) and retries (made so far)."""
        listeners = self.live_set()
        first = listeners.status()["web"]
        self.advance(RETRY_FIRST_DELAY)
        second = listeners.status()["web"]
        self.advance(0.2)
        third = listeners.status()["web"]

        self.assertEqual((first["retry_in"], "retries" in first), (0.25, False))
        self.assertEqual((second["retry_in"], second["retries"]), (0.5, 1))
        self.assertEqual((third["retry_in"], third["retries"]), (0.3, 1))

    def test_a_listener_that_came_up_loses_its_retry_count(self):
        """Once up, the status of a retried listener has neither retries nor retry_in."""
        listeners = self.live_set()
        self.advance(RETRY_FIRST_DELAY + 0.5)
        self.port.held = False
        self.advance(1.0)

        self.assertEqual(listeners.status()["web"], {"state": ACTIVE, "since": self.clock.seconds()})

    def test_a_new_takeover_starts_the_backoff_again_from_the_shortest_pause(self):
        """After yielding and going live again, the first retry of a FAILED listener comes after 0.25 s again."""
        listeners = self.live_set()
        self.advance(10.0)
        self.successResultOf(listeners.stop(WAITING))
        listeners.start()
        built = len(self.port.builds)

        self.advance(RETRY_FIRST_DELAY)

        self.assertEqual(len(self.port.builds), built + 1)

    def test_no_retry_once_the_node_is_backup_again(self):
        """hold() and stop() end the retries: a backup's or a stopped node's listeners are never started by them."""
        for leave in (lambda l: l.hold(), lambda l: l.stop(WAITING), lambda l: l.stop(STOPPED)):
            listeners = self.live_set()
            self.assertEqual(len(self.clock.getDelayedCalls()), 1, "a retry was pending")
            leave(listeners)
            built = len(self.port.builds)
            self.port.held = False

            self.advance(100)

            self.assertEqual(len(self.port.builds), built)
            self.assertNotEqual(listeners.listeners["web"].state, ACTIVE)
            self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_listener_removed_from_the_configuration_is_not_retried(self):
        """A FAILED listener dropped by a reload is not tried again, and its retry is cancelled."""
        listeners = self.live_set()
        self.assertEqual(len(self.clock.getDelayedCalls()), 1, "a retry was pending")

        self.successResultOf(listeners.configure({}))
        self.advance(100)

        self.assertEqual(self.port.builds, [0.0])
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_a_changed_listener_starts_afresh_and_its_old_self_is_not_retried(self):
        """A FAILED listener whose plugin line changed: only its new self is started and retried, from 0.25 s."""
        listeners = self.live_set()
        self.advance(5.0)
        old = listeners.listeners["web"]
        changed = spec("web", "--listen", "tcp:8081")

        listeners.configure({"web": changed})
        builds = len(self.port.builds)
        self.advance(RETRY_FIRST_DELAY)

        self.assertIsNot(listeners.listeners["web"], old)
        self.assertEqual(old.state, STOPPED)
        self.assertEqual(len(self.port.builds), builds + 1)
        self.assertEqual(listeners.status()["web"]["retries"], 1)

    def test_a_restart_by_hand_replaces_the_pending_retry(self):
        """restart() tries at once; if it fails again the retries begin again from the shortest pause."""
        listeners = self.live_set()
        self.advance(20.0)
        self.assertEqual(listeners.status()["web"]["retry_in"], 5.75)  # the retry of 25.75 s

        self.successResultOf(listeners.restart("web"))

        self.assertEqual(listeners.status()["web"]["retry_in"], RETRY_FIRST_DELAY)
        self.assertNotIn("retries", listeners.status()["web"])
        self.assertEqual(len(self.clock.getDelayedCalls()), 1)

    def test_a_pending_start_is_not_retried_meanwhile(self):
        """While a retried listener's port has not answered, no other retry is made."""
        self.clock = Clock()
        endpoints = [RefusingEndpoint(), PendingEndpoint()]
        listeners = ListenerSet(lambda settings: endpoint_service(endpoints.pop(0)), reactor=self.clock, jitter=lambda: 0.0)
        listeners.configure({"web": spec("web")})
        listeners.start()
        self.advance(RETRY_FIRST_DELAY)

        self.assertEqual(listeners.listeners["web"].state, STARTING)
        self.assertEqual(self.clock.getDelayedCalls(), [])

    def test_every_failure_still_reaches_on_failed(self):
        """The set's on_failed (the node's on_fault check) hears every failure, retries included."""
        listeners = self.live_set()
        heard = []
        listeners.on_failed = lambda: heard.append(self.clock.seconds())

        self.advance(RETRY_FIRST_DELAY + 0.5)

        self.assertEqual(heard, [0.25, 0.75])

    def test_failed_retries_are_logged_sparingly(self):
        """A minute of retries failing for the same reason: the first failure and one reminder, not a line per retry."""
        events = record_transitions(self)
        listeners = self.live_set()

        self.advance(RETRY_LOG_EVERY + 30)

        loud = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertGreater(len(self.port.builds), 10)
        self.assertEqual(len(loud), 2, [e["log_format"] for e in loud])
        self.assertEqual(loud[0]["log_level"], LogLevel.error)
        self.assertIn("still FAILED after", loud[1]["log_format"])
        self.assertEqual(listeners.listeners["web"].state, FAILED)

    def test_a_retry_failing_for_a_new_reason_is_logged_at_once(self):
        """A retry that fails for another reason than the one logged is logged at once, with the new reason."""
        events = record_transitions(self)
        self.live_set()
        self.advance(RETRY_FIRST_DELAY)
        events.clear()
        self.port.broken = True

        self.advance(2 * RETRY_FIRST_DELAY)

        [warning] = [e for e in events if e["log_level"] >= LogLevel.warn]
        self.assertEqual((warning["retries"], warning["reason"]), (2, "RuntimeError: no licence for this channel"))

    def test_a_listener_that_comes_up_is_logged_as_such(self):
        """Coming up after retries is logged (info), naming the number of retries."""
        events = record_transitions(self)
        self.live_set()
        self.advance(RETRY_FIRST_DELAY + 0.5)
        self.port.held = False
        self.advance(1.0)

        up = [e for e in events if "automatic retries" in e["log_format"] and "ACTIVE" in e["log_format"]]
        self.assertEqual([e["retries"] for e in up], [3])

    def test_process_channels_are_left_to_their_own_restarts(self):
        """A set never retries a listener that says it is not to be retried (process channels: restart_tries decides)."""
        listeners = self.live_set(names=("web", "ftp"))
        web = listeners.listeners["web"]
        self.patch(web, "retried_when_failed", False)
        listeners.stop(WAITING)
        listeners.start()

        self.advance(100)

        self.assertEqual(web.state, FAILED)
        self.assertNotIn("retry_in", listeners.status()["web"])
        self.assertIn("retry_in", listeners.status()["ftp"], "the other listener is retried")
