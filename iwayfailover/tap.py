"""
The twistd plugin's options and service: C{twistd iway-failover}.

L{makeService} is the wiring diagram of a node: the shared configuration
(or, when the share cannot be read, the local copy of the last one
applied: L{start_config}), the epoch from the state dir, the node (role
machine, watchdog, listeners, heartbeat sender), its heartbeat port, its
console and the configuration poller.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import os
import socket
import threading
import time
from typing import Optional

from twisted.logger import Logger
from twisted.python import usage

from iwayfailover import auth, steady, tls
from iwayfailover.config import (
    FALSE_WORDS, TRUE_WORDS, ConfigError, ConfigUnreadable, SharedConfig, backup_host, parse_config, read_config,
)
from iwayfailover.config.lastgood import CopyRefused, LastGood, LocalCopy, describe_age, find_copy
from iwayfailover.console import ConsoleSite, console_root
from iwayfailover.console.access import write_token
from iwayfailover.events import EventLogService, RecentEvents
from iwayfailover.listeners import check_listener_specs
from iwayfailover.node import FailoverNode, describe_keys
from iwayfailover.ports import ServerPort, StartupError
from iwayfailover.reload import ConfigPoller, ReaderThread, hung_after
from iwayfailover.state import EpochStore, StateError, default_state_dir
from iwayfailover.status import iso

log = Logger()

DEFAULT_CONFIG = "/etc/iwayfailover/iwayfailover.ini"

STARTUP_READ_TIMEOUT = 30.0
"""Seconds a node waits at start for its configuration to be read (a hung share) before it gives up."""


def default_config() -> str:
    return os.environ.get("IWAY_CONFIG") or DEFAULT_CONFIG


def default_name() -> str:
    return socket.gethostname().split(".")[0]


def host_name_used(name: str) -> str:
    """What to add to an error caused by a name that came from the host name (no C{--name})."""
    return f"(no --name given, so the host name {name!r} was used: pass --name NAME)"


def backup_from_environment(environ=None) -> bool:
    """
    C{IWAY_BACKUP}, the counterpart of the Java property C{iway.backup=true}.

    @raise usage.UsageError: it holds something else than a yes or a no.
    """
    environ = os.environ if environ is None else environ
    value = environ.get("IWAY_BACKUP", "").strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS or not value:
        return False
    raise usage.UsageError(
        f"IWAY_BACKUP={environ['IWAY_BACKUP']!r} is neither true nor false"
        f" (allowed: {', '.join(TRUE_WORDS)} for backup; {', '.join(FALSE_WORDS)}, empty or unset for live)"
    )


class Options(usage.Options):
    synopsis = "[--config PATH] [--name NAME] [--backup | -b] [--state-dir DIR]"
    longdesc = (
        "Runs one node of a hot-backup failover pair. A live node serves its listeners and heartbeats to its "
        "backup location; a backup holds its listeners WAITING and takes over when the live node is silent "
        "for longer than its threshold."
    )
    optFlags = [
        ["backup", "b", "Start as a backup (also: IWAY_BACKUP=true)."],
    ]
    optParameters = [
        ["config", "c", None, "The shared configuration (INI). [default: $IWAY_CONFIG or " + DEFAULT_CONFIG + "]"],
        ["name", None, None, "This node's [server:NAME] section. [default: the host name]"],
        ["state-dir", None, None, "Where this node keeps its epoch. [default: ~/.local/state/iwayfailover/NAME]"],
    ]

    def postOptions(self):
        if not self["config"]:
            self["config"] = default_config()
        self["named"] = bool(self["name"])
        if not self["name"]:
            self["name"] = default_name()
        self["backup"] = bool(self["backup"]) or backup_from_environment()
        if not self["state-dir"]:
            self["state-dir"] = default_state_dir(self["name"])


def load_checked_config(path: str, text: Optional[str] = None) -> SharedConfig:
    """
    Read the shared configuration and check its listeners' plugins.

    @param text: the file's text, read elsewhere (its local copy): parsed as
        if read from C{path}, so that relative paths in it are relative to
        the shared file's folder, as they are in the file.
    @raise ConfigUnreadable: the file cannot be read.
    @raise ConfigError: it is unusable; the message names the file, section,
        key, bad value and what is allowed.
    """
    config = read_config(path) if text is None else parse_config(text, path)
    check_listener_specs(config)
    return dataclasses.replace(config, keys=auth.load_keys(config))


def load_at_startup(path: str, timeout: Optional[float] = None) -> SharedConfig:
    """
    L{load_checked_config}, waited for at most C{timeout} seconds (by
    default L{STARTUP_READ_TIMEOUT}).

    The read runs on a daemon thread: a share that does not answer blocks
    that thread (it cannot be killed), not the start, which gives up with a
    message instead of hanging silently before anything is logged.

    @raise ConfigUnreadable: it cannot be read, or it has not been read
        after C{timeout} seconds.
    @raise ConfigError: it is unusable.
    """
    return _bounded(path, lambda: load_checked_config(path), STARTUP_READ_TIMEOUT if timeout is None else timeout)


def _bounded(path: str, load, timeout: float) -> SharedConfig:
    """C{load()} on a daemon thread, waited for at most C{timeout} seconds (see L{load_at_startup})."""
    outcome = {}
    finished = threading.Event()

    def read():
        try:
            outcome["config"] = load()
        except BaseException as e:
            outcome["error"] = e
        finally:
            finished.set()

    threading.Thread(target=read, name="iwayfailover-config-read", daemon=True).start()
    if not finished.wait(timeout):
        raise ConfigUnreadable(
            path, problem=f"reading the configuration has not finished after {timeout:g} s (is the share hung?)",
        )
    if "error" in outcome:
        raise outcome["error"]
    return outcome["config"]


@dataclasses.dataclass(frozen=True)
class Startup:
    """
    The configuration a node starts from (L{start_config}).

    @ivar config: the configuration, read and checked.
    @ivar found: the local copy found in the state dir (None: none usable).
    @ivar from_copy: it was read from C{found}, the share being unreadable.
    @ivar share_error: why the share could not be read (when C{from_copy}).
    """

    config: SharedConfig
    found: Optional[LocalCopy] = None
    from_copy: bool = False
    share_error: Optional[str] = None


def start_config(path: str, state_dir: str, timeout: Optional[float] = None) -> Startup:
    """
    The configuration to start from: the shared file at C{path}; or, when
    it cannot be read (missing, no permission, an I/O error, a read that has
    not finished), the local copy of the last one this node applied, kept
    in C{state_dir} (L{iwayfailover.config.lastgood}).

    The share is waited for at most C{timeout} seconds: by default
    L{STARTUP_READ_TIMEOUT} when there is no copy to fall back on, else as
    long as a reload waits before it calls a read hung (the copy's
    C{reload_interval}, at least 2 s). A shared file that is read but is
    invalid is refused as always: an edit gone wrong must not be hidden by
    an older copy.

    @raise ConfigError: the share is unusable and there is no copy to use
        (the message says why not), or the share is invalid.
    @raise StartupError: the share cannot be read and its local copy cannot
        be used either (a file it names cannot be read).
    """
    try:
        found, refused = find_copy(state_dir, path), None
    except CopyRefused as e:
        found, refused = None, str(e)
    if timeout is None:
        timeout = STARTUP_READ_TIMEOUT if found is None else hung_after(found.reload_interval())
    try:
        return Startup(load_at_startup(path, timeout), found)
    except ConfigUnreadable as e:
        if found is None:
            why = refused or f"no local copy of it in {state_dir} to start from (a node keeps one once it has applied the file)"
            raise ConfigUnreadable(e.path, problem=f"{e.problem}; {why}") from None
        share_error = str(e)
    except ConfigError as e:
        if found is not None:
            # Not the copy's case: say so, or its existence reads as if it should have been used.
            e.args = (f"{e}; a local copy exists ({found.path}, saved {iso(found.saved)}) but is used only"
                      " when the share cannot be read: fix the file",)
        raise
    try:
        config = _bounded(path, lambda: load_checked_config(path, found.text), STARTUP_READ_TIMEOUT)
    except ConfigError as e:
        raise StartupError(f"{share_error}; and its local copy {found.path} cannot be used: {e}") from None
    return Startup(config, found, from_copy=True, share_error=share_error)


def _local_addresses():
    names = {socket.gethostname(), socket.getfqdn(), "localhost"}
    addresses = set()
    for name in names:
        try:
            addresses.update(info[4][0] for info in socket.getaddrinfo(name, None))
        except OSError:
            pass
    return names, addresses


def same_host(host: str) -> bool:
    """Is C{host} this very machine (so that losing it would take both nodes)?"""
    try:
        if ipaddress.ip_address(host).is_loopback:
            return True
    except ValueError:
        pass
    names, addresses = _local_addresses()
    if host in names or host in addresses:
        return True
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return any(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in resolved) or bool(resolved & addresses)


def warn_about_keys(config: SharedConfig) -> None:
    """At every start: say so when heartbeats are unsigned or the key file is exposed."""
    ring = config.keys
    if ring.insecure:
        log.warn(
            "heartbeats are NOT authenticated (insecure = true in {path}): anyone who can reach a heartbeat"
            " port can stop or force a failover; make a key with `iwsrv keygen PATH` and set secret_file",
            path=config.path,
        )
        return
    problem = auth.exposure(ring.source)
    if problem is not None:
        log.warn("{problem}: whoever reads the key can forge heartbeats", problem=problem)


def pair_limits(config: SharedConfig) -> list:
    """
    What a pair configured this way cannot decide (see docs/safety.md): the
    lines warned about at every start, so that nobody learns them in an
    outage. Empty for a configuration with no such weakness.
    """
    failover = config.failover
    if not failover.witness:
        return [
            "no witness is configured: if the link between the two nodes is cut while both run, neither can"
            " tell a dead peer from a cut link, and both serve until it returns (then the lower rank stops"
            " within a heartbeat); set witness = HOST:PORT to a third host on each node's network path, or run"
            " a group on etcd for a real quorum (docs/safety.md)",
        ]
    lines = [
        "a witness arbitrates a cut between a node and the rest of the network, not a cut of the link between"
        " the two nodes alone: with the witness reachable from both, both serve until the link returns;"
        " a group on etcd decides that case too (docs/safety.md)",
        "with the witness down and the backup dead, a live node whose backup stopped answering keeps serving,"
        " but a node that starts or must take over then waits as backup until a witness answers",
    ]
    if not failover.self_fence:
        lines.append("self_fence = false: a live node cut off from its backup and every witness keeps serving")
    return lines


def steady_timers(reactor, monotonic=time.monotonic, wall=time.time) -> bool:
    """
    Make C{reactor}'s timers immune to steps of the wall clock.

    Twisted's reactors time C{callLater}, and so every L{LoopingCall}, on
    C{reactor.seconds()}, which is C{time.time()}: a wall clock stepped
    back 5 s (NTP, an operator, a VM resumed) would hold every timer for
    5 s, the live node's heartbeats included, and its backup would take
    over. Here C{reactor.seconds} becomes the monotonic clock, offset to
    read what the wall clock read at this moment, so calls already
    scheduled keep their times. Only a reactor timing on the wall clock is
    changed (the epoll, poll, select and asyncio reactors all do); another
    one, a test's L{Clock} for instance, is left as it is, and so is one
    already changed.

    What the node shows people as a time of day comes from the wall clock
    (the node's C{wall}), never from C{reactor.seconds()}.

    @return: whether the reactor was changed.
    """
    if getattr(reactor, "seconds", None) is not wall:
        return False
    offset = wall() - monotonic()

    def seconds() -> float:
        return monotonic() + offset

    reactor.seconds = seconds
    return True


def makeService(options, reactor=None):
    """
    Build a node from parsed L{Options}. A startup problem raises
    C{SystemExit} with one line that names it, before twistd detaches.
    """
    if reactor is None:
        from twisted.internet import reactor
    # Before the node schedules anything: its timers on a monotonic clock.
    steady_timers(reactor)
    try:
        return _build(options, reactor)
    except (ConfigError, StateError, StartupError) as e:
        raise SystemExit(f"iway-failover: {e}") from None


def steady_start(config, group: bool, reactor) -> None:
    """
    What keeps the heartbeat on time on a busy host (L{iwayfailover.steady}):
    C{realtime} and C{lock_memory} are tried now, before twistd detaches, and
    a node that cannot have them does not start; once the reactor runs (in
    the daemon, after the fork: memory locks are not inherited) the memory is
    locked for good and the objects made at start are frozen out of the
    collector's full passes.
    """
    failover = config.failover
    refused = []
    realtime = failover.realtime and not group
    if realtime and not failover.pulses:
        log.warn("realtime = true has no effect without pulses = true: only the pulse thread runs real-time")
    elif realtime:
        try:
            steady.check_realtime()
            log.info("realtime: the pulse thread runs under SCHED_FIFO priority {priority} while this node is live",
                     priority=steady.REALTIME_PRIORITY)
        except steady.SteadyError as e:
            refused.append(str(e))
    if failover.lock_memory:
        try:
            steady.lock_memory()
        except steady.SteadyError as e:
            refused.append(str(e))
    if refused:
        raise StartupError(f"{config.path}: " + "; and ".join(refused))

    def running():
        if failover.lock_memory:
            try:
                steady.lock_memory()
                log.info("lock_memory: this node's memory is locked in RAM (each page once first touched:"
                         " VmLck in /proc/PID/status counts the whole address space)")
            except steady.SteadyError as e:
                log.critical("{why}", why=e)
        steady.freeze_startup_objects()

    reactor.callWhenRunning(running)


def _build(options, reactor):
    startup = start_config(options["config"], options["state-dir"])
    config = startup.config
    name = options["name"]
    if not options.get("named", True):
        log.info("no --name given: using the host name {name}", name=name)
    try:
        server = config.server(name)
    except ConfigError as e:
        if options.get("named", True):
            raise
        raise StartupError(f"{e} {host_name_used(name)}") from None
    epochs = EpochStore(options["state-dir"])
    epochs.prepare()

    group = config.failover.coordinator == "etcd"
    if group:
        from iwayfailover.coordinators.etcd import GroupNode
        try:
            node = GroupNode(config, name, options["backup"], epochs, reactor)
        except tls.TLSConfigError as e:  # etcd_cacert, etcd_cert or etcd_key is not what it should be
            raise StartupError(f"{config.path}: [failover] etcd TLS files: {e}") from None
    else:
        node = FailoverNode(config, name, options["backup"], epochs, reactor)
        node.heartbeat_port = ServerPort(reactor, server.heartbeat_endpoint, node.heartbeat_factory, "heartbeat port")
        node.heartbeat_port.watchers.append(node.pulses_in)  # pulses on the same address, over UDP
        node.heartbeat_port.bind()
        node.heartbeat_port.setServiceParent(node)

    node.events = RecentEvents()  # the console's Log page; filled while EventLogService runs (below)
    if server.console is not None:
        try:
            token = write_token(options["state-dir"])
        except OSError as e:
            raise StateError(f"cannot write the console token in {options['state-dir']}: {e.strerror or e}") from None
        node.console_port = ServerPort(
            reactor, server.console, ConsoleSite(console_root(node, events=node.events, api_token=token, reactor=reactor)),
            "console",
        )
        node.console_port.bind()
        node.console_port.setServiceParent(node)
        if (server.console_users or config.failover.console_users) is None:
            log.warn(
                "the console of {server} has no console_users file: nobody can log in (only /api/status answers,"
                " on loopback); make one with `iwsrv adduser FILE USER` and set console_users = FILE",
                server=name,
            )

    node.last_good = LastGood(options["state-dir"], options["config"], found=startup.found)
    node.poller = ConfigPoller(
        reactor, config, config.failover.reload_interval,
        load=lambda path: node.check_config(load_checked_config(path)),
        run=ReaderThread(reactor),
        apply=node.apply_config,
        keep=node.last_good.keep,
        local_copy=startup.found if startup.from_copy else None,
        share_error=startup.share_error,
    )
    node.poller.setServiceParent(node)

    EventLogService(node.events).setServiceParent(node)
    steady_start(config, group, reactor)

    if startup.from_copy:
        copy = startup.found
        log.warn(
            "running from the local copy {copy} of {path}, saved {saved} ({age} ago): the share cannot be read:"
            " {why}; back to the shared file as soon as it can be read",
            copy=copy.path, path=config.path, saved=iso(copy.saved), age=describe_age(time.time() - copy.saved),
            why=startup.share_error,
        )
    else:
        node.last_good.keep(config)

    if group:
        log.info(
            "iway-failover {server} starting as {role} member of the group on etcd at {endpoints} ({prefix});"
            " lease TTL {ttl:g}s, state dir {state}",
            server=name, role="backup" if options["backup"] else "live", endpoints=", ".join(config.failover.etcd_endpoints),
            prefix=config.failover.etcd_prefix, ttl=server.threshold, state=epochs.directory,
        )
        return node
    host = backup_host(server.backup_location)
    if host is not None and same_host(host):
        log.warn(
            "the backup location of {server} ({location}) is this same host: the loss of this machine"
            " would take both nodes; put the backup on another host in production",
            server=name, location=server.backup_location,
        )
    warn_about_keys(config)
    for line in pair_limits(config):
        log.warn("pair limit: {limit}", limit=line)
    role = "backup" if options["backup"] else "live"
    log.info(
        "iway-failover {server} starting as {role} from {path}; epoch {epoch}, state dir {state}; heartbeat keys {keys}",
        server=name, role=role, path=config.path, epoch=node.machine.epoch, state=epochs.directory,
        keys=describe_keys(config.keys),
    )
    return node
