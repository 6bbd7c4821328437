"""
Listeners ("channels"): the services a node runs only while it is live.

Each C{[listener:NAME]} names a twistd plugin and its options, exactly as
they would follow C{twistd} on a command line. A backup holds its listeners
WAITING: configured, checked, not listening. Takeover builds each one's
service afresh from its plugin and starts it; one that fails is FAILED with
the reason, and the others start all the same. While the node stays live, a
FAILED plugin listener is tried again by itself (a port still held by the
old live node is let go of sooner or later): after L{RETRY_FIRST_DELAY}
seconds, then after a pause that doubles up to L{RETRY_MAX_DELAY}.
"""

from __future__ import annotations

import os
import random
import shutil
import time
from typing import Callable, Dict, Mapping, Optional

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceCollection, IServiceMaker
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.plugin import getPlugins
from twisted.python import usage

# The channel states, set_state and notify_failed live in iwayfailover.channel
# (shared with process channels and the floating IP); still importable from here.
from iwayfailover.channel import ACTIVE, FAILED, STARTING, STOPPED, STOPPING, WAITING, notify_failed, set_state  # noqa: F401
from iwayfailover.config import ConfigError, ListenerSettings, SharedConfig
from iwayfailover.process import ProcessChannel

OWN_TAPNAME = "iway-failover"

RETRY_FIRST_DELAY = 0.25
"""Seconds a live node waits before it tries a FAILED listener again by itself."""
RETRY_MAX_DELAY = 10.0
"""The pause before each further retry doubles, up to this many seconds."""
RETRY_JITTER = 0.1
"""Each pause is shortened by up to this share of it, at random, so that
listeners that failed together are not all tried again at the same moment."""
RETRY_LOG_EVERY = 60.0
"""A retry that fails for the reason already logged is logged again at most
once in this many seconds (a changed reason is logged at once)."""

log = Logger()

_makers: Optional[Dict[str, IServiceMaker]] = None


def service_makers() -> Dict[str, IServiceMaker]:
    """Every installed twistd plugin, by its tapname (looked up once)."""
    global _makers
    if _makers is None:
        _makers = {maker.tapname: maker for maker in getPlugins(IServiceMaker)}
    return _makers


def _parsed_options(spec: ListenerSettings):
    maker = service_makers().get(spec.plugin)
    if maker is None or spec.plugin == OWN_TAPNAME:
        raise LookupError(spec.plugin)
    options = maker.options()
    options.parseOptions(list(spec.args))
    return maker, options


def plugin_service(spec: ListenerSettings) -> IService:
    """Build the service of C{spec} from its twistd plugin, as twistd would."""
    maker, options = _parsed_options(spec)
    return maker.makeService(options)


def check_listener_specs(config: SharedConfig) -> None:
    """
    Check that every listener names an installed twistd plugin and that the
    plugin accepts the options given.

    @raise ConfigError: naming the listener, its C{plugin} key and the problem.
    """
    for spec in config.listeners.values():
        section = f"listener:{spec.name}"
        if spec.command:
            check_command(config, spec)
            continue
        try:
            _parsed_options(spec)
        except LookupError:
            names = ", ".join(sorted(n for n in service_makers() if n != OWN_TAPNAME))
            raise ConfigError(
                config.path, section, "plugin", spec.command_line,
                f"no twistd plugin named {spec.plugin!r} is installed", f"one of: {names}",
            ) from None
        except usage.UsageError as e:
            raise ConfigError(
                config.path, section, "plugin", spec.command_line,
                f"the {spec.plugin} plugin refused its options: {e}", f"see: twistd {spec.plugin} --help",
            ) from None
        except BaseException as e:
            # A plugin's option parsing may do anything: import a class
            # named on the command line, exit, fail to import its own module.
            if isinstance(e, (KeyboardInterrupt, GeneratorExit)):
                raise
            raise ConfigError(
                config.path, section, "plugin", spec.command_line,
                f"the {spec.plugin} plugin could not take its options: {type(e).__name__}: {e}",
                f"see: twistd {spec.plugin} --help",
            ) from None


def check_command(config: SharedConfig, spec: ListenerSettings) -> None:
    """
    Check that a process channel's program can be found and run here, and
    that its C{cwd} is a folder.

    @raise ConfigError: naming the listener, its key and the problem.
    """
    section = f"listener:{spec.name}"
    if spec.cwd is not None and not os.path.isdir(spec.cwd):
        raise ConfigError(config.path, section, "cwd", spec.cwd, "no such folder", "an existing folder; a relative path is relative to this file")
    program = spec.command[0]
    env_path = dict(spec.env).get("PATH", os.environ.get("PATH", os.defpath))
    if os.sep in program:
        found = os.path.join(spec.cwd or os.getcwd(), program)
        if not (os.path.isfile(found) and os.access(found, os.X_OK)):
            found = None
    else:
        found = shutil.which(program, path=env_path)
    if found is None:
        raise ConfigError(
            config.path, section, "command", spec.command_line, f"no program {program!r} that this user can run",
            "an executable file: a path, or a name found on PATH",
        )


def make_channel(spec: ListenerSettings, build, wall, reactor):
    """A L{Listener} for a plugin, a L{iwayfailover.process.ProcessChannel} for a command."""
    if spec.command:
        if reactor is None:
            from twisted.internet import reactor
        return ProcessChannel(spec, reactor, wall)
    return Listener(spec, build, wall)


def _endpoint_services(top: IService):
    """Every L{StreamServerEndpointService} in the tree below C{top}."""
    pending = [top]
    while pending:
        current = pending.pop()
        if isinstance(current, StreamServerEndpointService):
            yield current
        if IServiceCollection.providedBy(current):
            pending.extend(current)


class Listener:
    """One channel and its state."""

    retried_when_failed = True
    """A FAILED plugin listener is tried again by its L{ListenerSet} while the
    node is live (a process channel has its own restart policy instead)."""

    retrying = False
    """True while its L{ListenerSet} tries it again: its STARTING and FAILED are logged at debug level."""

    def __init__(self, spec: ListenerSettings, build: Callable[[ListenerSettings], IService] = plugin_service, wall=time.time):
        self.spec = spec
        self._build = build
        self._wall = wall
        self.state = WAITING
        self.since = wall()
        self.reason: Optional[str] = None
        self._service: Optional[IService] = None
        self._prepared: Optional[IService] = None
        self._stopping: Optional[defer.Deferred] = None
        self._final = WAITING

    @property
    def name(self) -> str:
        return self.spec.name

    def prepare(self) -> None:
        """
        Build the service ahead of a takeover, so that starting it is all a
        takeover has to do (a hot backup). A failure here is only logged:
        the build is tried again, and reported, when the listener starts.
        """
        if self._prepared is not None or self._service is not None or self._stopping is not None:
            return
        try:
            self._prepared = self._build(self.spec)
        except Exception as e:
            log.warn(
                "listener {listener} could not be prepared ({why}); it will be built again when it starts",
                listener=self.name, why=f"{type(e).__name__}: {e}",
            )

    on_failed: Optional[Callable[[], None]] = None
    """Called (with no argument) each time the listener becomes FAILED, whenever that is."""

    def _set(self, state, reason=None):
        set_state(self, state, reason, log)

    def hold(self) -> None:
        """Be WAITING (a backup's listeners are), with the service built and ready to start."""
        if self._service is None:
            if self.state != WAITING:
                self._set(WAITING)
            self.prepare()

    def start(self) -> defer.Deferred:
        """
        Build and start the service. Fires when it is ACTIVE or FAILED; never
        fails.
        """
        if self._service is not None:
            return defer.succeed(None)
        if self._stopping is not None:
            # The old service still holds its ports: start once it has let go.
            return self._after_stop().addCallback(lambda _: self.start())
        self._set(STARTING)
        try:
            service, self._prepared = self._prepared, None
            if service is None:
                service = self._build(self.spec)
            endpoints = list(_endpoint_services(service))
            for endpoint in endpoints:
                # Report a port that cannot be bound here, with its reason,
                # rather than only in the log.
                endpoint._raiseSynchronously = True
            self._service = service
            service.privilegedStartService()
            service.startService()
        except Exception as e:
            self._abandon(f"{type(e).__name__}: {e}")
            return defer.succeed(None)
        waiting = [e._waitingForPort for e in endpoints if getattr(e, "_waitingForPort", None) is not None]
        started = defer.gatherResults(waiting, consumeErrors=True)

        def listening(ports):
            if self._service is not service:
                return  # stopped while it was starting
            if any(port is None for port in ports):
                # StreamServerEndpointService has logged the error itself.
                self._abandon("a port of the service could not listen (the reason is in the log)")
            else:
                self._set(ACTIVE)

        def failed(failure):
            if self._service is service:
                self._abandon(failure.getErrorMessage())

        started.addCallbacks(listening, failed)
        return started

    def _abandon(self, reason):
        service, self._service = self._service, None
        self._set(FAILED, reason)
        if service is not None:
            self._release(service)

    def _after_stop(self) -> defer.Deferred:
        """A Deferred that fires once the stop in flight has ended."""
        waiter = defer.Deferred()
        self._stopping.addBoth(lambda result: (waiter.callback(None), result)[1])
        return waiter

    def _release(self, service: IService) -> defer.Deferred:
        """
        Stop C{service}, letting go of every port it bound, even when it
        failed half-way through starting (its own C{running} still false).
        Never fails; until it fires, the listener has a stop in flight.
        """
        if service.running:
            d = defer.maybeDeferred(service.stopService)
        else:
            started = [e for e in _endpoint_services(service) if getattr(e, "_waitingForPort", None) is not None]
            d = defer.gatherResults([defer.maybeDeferred(e.stopService) for e in started], consumeErrors=True)

        stopping = self._stopping = defer.Deferred()

        def released(result):
            if isinstance(result, Failure):
                log.failure("listener {listener}: error while stopping", result, listener=self.name)
            if self._stopping is stopping:
                self._stopping = None
            stopping.callback(None)

        d.addBoth(released)
        return stopping

    def stop(self, final: str = WAITING, kill_after: Optional[float] = None) -> defer.Deferred:
        """
        Stop the service: STOPPING, then C{final} (WAITING for a node that
        became backup, STOPPED for one shutting down). Fires once every port
        is let go, including those of a stop already in flight. Never fails.
        (C{kill_after} is for process channels: a service stops in-process.)
        """
        self._final = final
        service, self._service = self._service, None
        if service is None:
            if self._stopping is not None:
                return self._after_stop().addCallback(lambda _: self._settle())
            self._settle()
            return defer.succeed(None)
        self._set(STOPPING)
        return self._release(service).addCallback(lambda _: self._settle())

    def _settle(self):
        """After a stop: the final state asked for, and a fresh service for the next takeover."""
        if self._service is not None or self._stopping is not None:
            return  # started again, or another stop began, meanwhile
        final = self._final
        if self.state != final and not (final == WAITING and self.state == FAILED):
            self._set(final)
        if final == WAITING:
            self.prepare()

    def status(self) -> dict:
        result = {"state": self.state, "since": self.since}
        if self.reason:
            result["reason"] = self.reason
        return result


class _Retries:
    """The automatic retries of one FAILED listener."""

    def __init__(self):
        self.count = 0  # retries made since the listener was last up (or started by a takeover)
        self.call = None  # the next one, when one is pending
        self.logged_at: Optional[float] = None
        self.logged_reason: Optional[str] = None

    def cancel(self) -> None:
        if self.call is not None and self.call.active():
            self.call.cancel()
        self.call = None


class ListenerSet:
    """
    This node's listeners, kept in step with the configuration. While live
    (between L{start} and L{hold} or L{stop}) a FAILED plugin listener is
    tried again by itself, with a capped exponential backoff (see the module).

    @param reactor: the clock of the retries, and the reactor of process
        channels; None: the global reactor, looked up when first needed.
    @param jitter: a random number in [0, 1), for the retries' jitter.
    """

    def __init__(self, build: Callable[[ListenerSettings], IService] = plugin_service, wall=time.time, reactor=None,
                 jitter: Callable[[], float] = random.random, auto_retry: bool = True):
        self._build = build
        self.auto_retry = auto_retry
        """Retry FAILED listeners on this set's own timer; False: the owner calls L{retry_failed} when it decides."""
        self._wall = wall
        self._reactor = reactor  # for process channels and retries
        self._jitter = jitter
        self.listeners: Dict[str, Listener] = {}
        self._retries: Dict[str, _Retries] = {}
        self.active = False
        self.on_failed: Optional[Callable[[], None]] = None
        """Called each time one of the listeners becomes FAILED."""

    @property
    def _clock(self):
        if self._reactor is None:
            from twisted.internet import reactor

            self._reactor = reactor
        return self._reactor

    def configure(self, specs: Mapping[str, ListenerSettings]) -> defer.Deferred:
        """
        Follow a (new) configuration: add listeners, remove those no longer
        there, rebuild those whose plugin line changed. While active, added
        and changed ones are started.
        """
        work = []
        replaced = {}
        for name in list(self.listeners):
            if name not in specs or specs[name] != self.listeners[name].spec:
                old = self.listeners.pop(name)
                self._forget_retries(name)
                log.info("listener {listener} removed or changed by the configuration", listener=name)
                stopped = old.stop(STOPPED)
                if name in specs:
                    replaced[name] = stopped
                else:
                    work.append(stopped)
        for name, spec in specs.items():
            if name not in self.listeners:
                listener = self.listeners[name] = make_channel(spec, self._build, self._wall, self._reactor)
                listener.on_failed = lambda listener=listener: self._failed(listener)
                if not self.active:
                    listener.prepare()
            if name not in replaced:
                work.append(defer.maybeDeferred(self._start_if_active, name))
        for name, stopped in replaced.items():
            # A changed listener starts only once its old self has let go of
            # its ports (now that its new self is in place, even if the stop
            # was immediate).
            work.append(stopped.addCallback(lambda _, n=name: self._start_if_active(n)))
        return defer.gatherResults(work)

    def _failed(self, listener):
        try:
            if (self.auto_retry and self.active and self.listeners.get(listener.name) is listener
                    and listener.retried_when_failed):
                self._schedule_retry(listener)
        finally:
            if self.on_failed is not None:
                self.on_failed()

    # -- automatic retries --

    def _schedule_retry(self, listener) -> None:
        retries = self._retries.setdefault(listener.name, _Retries())
        if retries.call is not None:
            return
        delay = min(RETRY_FIRST_DELAY * 2 ** retries.count, RETRY_MAX_DELAY) * (1 - RETRY_JITTER * self._jitter())
        now, reason = self._clock.seconds(), listener.reason
        if retries.count == 0:
            log.info(
                "listener {listener} will be tried again in {delay:.2f}s, then at longer intervals (at most"
                " {cap:g}s) while this node is live", listener=listener.name, delay=delay, cap=RETRY_MAX_DELAY,
            )
            retries.logged_at, retries.logged_reason = now, reason
        elif reason != retries.logged_reason or now - retries.logged_at >= RETRY_LOG_EVERY:
            log.warn(
                "listener {listener} still FAILED after {retries} automatic retries: {reason}; next retry in {delay:.2f}s",
                listener=listener.name, retries=retries.count, reason=reason, delay=delay,
            )
            retries.logged_at, retries.logged_reason = now, reason
        retries.call = self._clock.callLater(delay, self._retry, listener)

    def retry_failed(self) -> defer.Deferred:
        """
        Try every FAILED listener that is retried when FAILED (plugin
        listeners) again now, while live: for an owner that decides when
        (C{auto_retry=False}). Fires once each is ACTIVE or FAILED again.
        """
        work = []
        for listener in list(self.listeners.values()):
            if self.active and listener.state == FAILED and listener.retried_when_failed:
                self._retries.setdefault(listener.name, _Retries())
                work.append(self._retry(listener))
        return defer.gatherResults([d for d in work if d is not None], consumeErrors=True)

    def _retry(self, listener) -> Optional[defer.Deferred]:
        """Try a FAILED listener again (the pending retry has come). Never raises."""
        retries = self._retries.get(listener.name)
        if retries is None:
            return None
        retries.call = None
        if not self.active or self.listeners.get(listener.name) is not listener or listener.state != FAILED:
            return None
        retries.count += 1
        listener.retrying = True
        try:
            d = listener.start()
        except Exception:
            listener.retrying = False
            log.failure("listener {listener}: automatic retry failed", listener=listener.name)
            if self.auto_retry:
                self._schedule_retry(listener)
            return None

        def done(result):
            listener.retrying = False
            if listener.state == ACTIVE and self._retries.get(listener.name) is retries:
                log.info("listener {listener} is ACTIVE after {retries} automatic retries", listener=listener.name,
                         retries=retries.count)
                self._forget_retries(listener.name)
            return result

        return d.addBoth(done).addErrback(lambda f: log.failure("listener {listener}: automatic retry failed", f,
                                                                listener=listener.name))

    def _forget_retries(self, name: Optional[str] = None) -> None:
        """Cancel the pending retries of listener C{name} (None: of every listener) and their count."""
        for key in ([name] if name is not None else list(self._retries)):
            retries = self._retries.pop(key, None)
            if retries is not None:
                retries.cancel()

    # --

    def _start_if_active(self, name):
        listener = self.listeners.get(name)
        if self.active and listener is not None and listener.state == WAITING:
            return listener.start()

    def hold(self) -> None:
        self.active = False
        self._forget_retries()
        for listener in self.listeners.values():
            listener.hold()

    def start(self) -> defer.Deferred:
        """Start every listener; a failure of one does not stop the others."""
        self.active = True
        self._forget_retries()
        return defer.gatherResults([listener.start() for listener in self.listeners.values()])

    def restart(self, name: str) -> defer.Deferred:
        """
        Try a FAILED listener again now: started if this node is live, built
        and WAITING if it is a backup. Fires when it is ACTIVE, WAITING or
        FAILED again; never fails. A pending automatic retry is replaced
        (should this start fail too, they begin again from the shortest pause).

        @raise KeyError: there is no such listener.
        @raise ValueError: it is not FAILED.
        """
        listener = self.listeners[name]
        if listener.state != FAILED:
            raise ValueError(f"listener {name} is {listener.state}, not FAILED")
        self._forget_retries(name)
        if self.active:
            return listener.start()
        listener.hold()
        return defer.succeed(None)

    def stop(self, final: str = WAITING, kill_after: Optional[float] = None) -> defer.Deferred:
        """
        Stop every listener (see L{Listener.stop}); C{kill_after}: the most
        seconds a process channel may take to exit before SIGKILL (see
        L{iwayfailover.process.ProcessChannel.stop}).
        """
        self.active = False
        self._forget_retries()
        return defer.gatherResults([listener.stop(final, kill_after) for listener in self.listeners.values()])

    def status(self) -> dict:
        """
        Each listener's status by name; a FAILED one with an automatic retry
        pending also has C{retries} (made so far) and C{retry_in} (seconds).
        """
        result = {}
        for name, listener in sorted(self.listeners.items()):
            entry = result[name] = listener.status()
            retries = self._retries.get(name)
            if retries is not None:
                if retries.count:
                    entry["retries"] = retries.count
                if retries.call is not None and retries.call.active():
                    entry["retry_in"] = round(max(0.0, retries.call.getTime() - self._clock.seconds()), 3)
        return result
