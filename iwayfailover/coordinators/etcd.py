"""
A member of a group on etcd (C{coordinator = etcd}): the group core
(L{iwayfailover.core.group}) wired to the store (L{etcdclient}), its timers
and the same serving layer as a pair's node (floating IP, then channels,
then hooks).

The store holds, under the group's prefix:

    PREFIX/live              {"name": NAME}: the live role, bound to the live member's lease;
                             its create revision is the group's epoch
    PREFIX/handover          {"from": NAME, "to": NAME or null}: who last let the key go, and
                             to whom (a switchover); deleted by the campaign that next wins
    PREFIX/members/NAME      each running member: priority, role, epoch, console; under the
                             member's own lease, so a member that stops or is cut off leaves

Every decision is the core's. This class reads and watches the prefix and
registers the member (its health check of the store, every heartbeat
interval), turns what it finds into observations, and carries out the
core's campaigns, keepalives and resignations.
"""

from __future__ import annotations

import json
import math
import socket
import time
from typing import Dict, Optional

from twisted.internet import defer
from twisted.internet.task import LoopingCall
from zope.interface import implementer

from iwayfailover.config import ConfigError, SharedConfig, changed_keys, endpoint_interface, endpoint_port
from iwayfailover.coordinators.etcdclient import EtcdClient, EtcdError, EtcdUnavailable
from iwayfailover.core import events as ev
from iwayfailover.core.events import BACKUP, LIVE, STOPPED
from iwayfailover.core.group import GroupCore, group_settings_for
from iwayfailover.floating import FloatingAddress
from iwayfailover.hooks import Hooks
from iwayfailover.listeners import ListenerSet, plugin_service
from iwayfailover import commands, servedby
from iwayfailover.node import CoreNode, RoleRecord
from iwayfailover.serving import Serving
from iwayfailover.stall import StallWatch
from iwayfailover.state import EpochStore
from iwayfailover.status import (
    TAKEOVER_KINDS, AuthStatus, HeartbeatStatus, INodeControl, LeaseStats, MemberStatus,
    NodeStatus, PeerStatus, SettingsStatus,
)

MEMBER_ROLES = (ev.STARTING, BACKUP, LIVE, ev.HANDING_OVER, STOPPED)
"""The roles a member key may say; anything else reads as unknown."""

RECONNECT_FIRST = 0.1
RECONNECT_CAP = 2.0
"""Seconds between two tries to read and watch the store again after it was lost: 0.1 s doubling to 2 s."""


def request_timeout(interval: float, ttl: float) -> float:
    """How long one request to the store may take: two keepalive intervals, within [0.25 s, TTL / 3]."""
    return max(0.25, min(2 * interval, ttl / 3))


def client_for(config: SharedConfig, reactor, timeout: float) -> EtcdClient:
    """The store client of a configuration's C{[failover]} etcd settings."""
    f = config.failover
    return EtcdClient(
        reactor, list(f.etcd_endpoints), timeout=timeout, cacert=f.etcd_cacert, cert=f.etcd_cert, key=f.etcd_key,
        user=f.etcd_user, password=f.etcd_password,
    )


def console_url(endpoint: Optional[str], host_name=socket.gethostname) -> Optional[str]:
    """
    The URL of a console bound by a C{tcp:} endpoint (None for other kinds):
    its interface, or this host's name when it listens on every interface.
    No DNS lookup: it is worked out on the reactor's thread.
    """
    if not endpoint or not endpoint.startswith("tcp:"):
        return None
    port = endpoint_port(endpoint)
    if port is None:
        return None
    host = endpoint_interface(endpoint)
    if host in (None, "", "0.0.0.0", "::"):
        host = host_name()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _json(value: bytes) -> Optional[dict]:
    try:
        data = json.loads(value)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


def _number(value, least=0.0, most=1e12) -> Optional[float]:
    """A finite number within bounds from a value read off the store (not a bool), else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) and least <= value <= most else None


@implementer(INodeControl)
class GroupNode(CoreNode):
    """
    One member of a group on etcd. Same serving layer, console and status
    as a pair's L{iwayfailover.node.FailoverNode}; the live role is the
    store's key.

    @param client: the store client (L{client_for} by default).
    """

    console_port = None
    heartbeat_port = None

    def __init__(self, config: SharedConfig, name: str, start_as_backup: bool, epochs: EpochStore, reactor,
                 build_listener=plugin_service, now=time.monotonic, wall=time.time, run_command=None, client=None):
        super().__init__()
        self.config = config
        self.name = name
        self.check_config(config)
        self.settings = config.server(name)
        self.start_as_backup = start_as_backup
        self._init_common(reactor, now, wall, epochs)
        self.core = GroupCore(group_settings_for(config, name), now=now, epoch=epochs.load())
        self.machine = RoleRecord(self.core, wall)
        self.listeners = ListenerSet(servedby.builder(build_listener, self.served_by), wall=wall, reactor=reactor,
                                     auto_retry=False)
        self.listeners.configure(config.listeners_for(name))
        client_settings = config.client_settings(name)
        run_command = run_command or commands.run
        self.floating = FloatingAddress(reactor, client_settings.virtual_ip, client_settings.interface,
                                        run=run_command, wall=wall)
        self.hooks = Hooks(reactor, name, lambda: self.config.client_settings(self.name), run=run_command)
        self.serving = Serving(reactor, self.listeners, self.floating, self.hooks,
                               role=lambda: (self.core.role, self.core.epoch))
        self._console_url = console_url(self.settings.console)
        self.prefix = config.failover.etcd_prefix.rstrip("/")
        self.timeout = request_timeout(config.failover.heartbeat_interval, self.settings.threshold)
        self.client = client if client is not None else client_for(config, reactor, self.timeout)
        self.stats = LeaseStats()
        self._kv: Dict[str, object] = {}
        self._published = None
        self._candidates = None
        self._connected = False
        self._connecting = False
        self._reconnect_delay = RECONNECT_FIRST
        self._reconnect = None
        self._watch = None
        self._member_lease = 0
        self._registering = False
        self._since_registered = None
        self._renewals = 0
        self._lost_since = None  # when the store was last lost (None: it answers)
        self.store_error: Optional[str] = None  # why the store could not be reached, while it cannot
        self._odd_key = None  # the last unusable live key reported: (mod revision, problem)
        self._member_writing = None  # a Deferred while a write of the member key is under way
        self._member_dirty = False
        self._member_epoch = None  # the epoch the member key was last written with
        self._member_written = False  # the member key holds this member's last value
        self._requests = set()  # store requests under way: a shutdown waits for them
        self._running = False
        self._tick = LoopingCall(self._check_store)
        self._tick.clock = reactor
        self.stalls = StallWatch(reactor, now, self._stall_tick(), lambda late: self._feed(ev.Stalled(late)))

    def _stall_tick(self) -> float:
        return max(0.02, min(0.1, self.config.failover.heartbeat_interval / 4))

    # -- keys --

    @property
    def live_key(self) -> str:
        return self.prefix + "/live"

    @property
    def handover_key(self) -> str:
        return self.prefix + "/handover"

    @property
    def members_prefix(self) -> str:
        return self.prefix + "/members/"

    # -- service --

    def startService(self):
        super().startService()
        self._running = True
        self.stalls.start()
        self._feed(ev.Start(self.start_as_backup))
        self._tick.start(self.config.failover.heartbeat_interval, now=True)

    def stopService(self):
        stopped = self._stopped = defer.Deferred()
        self._feed(ev.Shutdown())
        self.stalls.stop()
        if self.core.role == STOPPED:
            self.serving.after_stops(lambda: stopped.called or stopped.callback(None))

        def rest(_):
            self._cancel_timers()
            self._running = False
            if self._tick.running:
                self._tick.stop()
            if self._reconnect is not None and self._reconnect.active():
                self._reconnect.cancel()
            return self._drain().addCallback(lambda _: self._leave())

        stopped.addCallback(rest)
        return defer.gatherResults([stopped, defer.maybeDeferred(super().stopService), self.hooks.drain()],
                                   consumeErrors=True)

    @defer.inlineCallbacks
    def _drain(self):
        """Wait for every store request under way, and for those they lead to (a won campaign's resignation)."""
        while self._requests:
            yield defer.DeferredList(list(self._requests))

    @defer.inlineCallbacks
    def _leave(self):
        """Take this member's key out of the group, and close the client."""
        if self._watch is not None:
            self._watch.cancel()
        lease, self._member_lease = self._member_lease, 0
        if lease:
            try:
                yield self.client.revoke(lease)
            except EtcdError as e:
                self.log.warn("could not take {server} out of the group's members: {why}", server=self.name, why=e)
        yield self.client.close()

    def _track(self, d: defer.Deferred) -> defer.Deferred:
        self._requests.add(d)
        d.addBoth(lambda result: (self._requests.discard(d), result)[1])
        return d

    # -- the store: read, watch, register --

    def _check_store(self) -> None:
        """Every heartbeat interval: keep this member registered (the health check of the store), connect if need be."""
        if not self._running:
            return
        waiting = self._reconnect is not None and self._reconnect.active()
        if not self._connected and not self._connecting and not waiting:
            self._connect()
        if not self._registering:
            self._track(self._keep_registered())

    @defer.inlineCallbacks
    def _keep_registered(self):
        self._registering = True
        try:
            if self._member_lease:
                ttl = yield self.client.keepalive(self._member_lease)
                if ttl > 0:
                    if not self._member_written:
                        yield self._put_member()  # a write that failed before
                    self._check_watch()
                    return
                self._member_lease = 0
            lease, _ = yield self.client.grant(math.ceil(self.settings.threshold))
            self._member_lease = lease
            yield self._put_member()
        except EtcdUnavailable as e:
            self._store_lost(f"the store did not answer: {e}")
        except EtcdError as e:
            # The store answered, with an error (a lease gone in a race, a
            # permission): registered again at the next tick.
            self._member_lease = 0
            self.log.warn("{server} could not keep its member key: {why}", server=self.name, why=e)
        except Exception:
            self.log.failure("keeping {server} registered failed", server=self.name)
        finally:
            self._registering = False

    def _check_watch(self) -> None:
        """
        Requests answered at another endpoint than the one the watch streams
        from: that member may have died silently (no reset, so the stream
        just goes quiet), and the watch is made again where the requests go.
        """
        watch = self._watch
        if watch is not None and watch.endpoint is not None and watch.endpoint != self.client.current:
            self._resync(f"the watch's etcd endpoint {watch.endpoint} no longer answers requests"
                         f" ({self.client.current} does)")

    def _member_value(self) -> bytes:
        return json.dumps({
            "name": self.name, "priority": self.settings.priority, "role": self.core.role, "epoch": self.core.epoch,
            "may_campaign": self.core.role != STOPPED, "console": self._console_url,
            "since": self.machine.since,
        }).encode()

    @defer.inlineCallbacks
    def _put_member(self):
        """
        Write this member's key, one write at a time: a change made while a
        write is under way is written after it, so that the store never ends
        with an older value than the member's.
        """
        if self._member_writing is not None:
            self._member_dirty = True
            yield self._member_writing
            return
        self._member_writing = defer.Deferred()
        try:
            while True:
                self._member_dirty = False
                if not self._member_lease:
                    return
                epoch, self._member_written = self.core.epoch, False
                yield self.client.put(self.members_prefix + self.name, self._member_value(), lease=self._member_lease)
                self._member_epoch, self._member_written = epoch, True
                if not self._member_dirty:
                    return
        finally:
            done, self._member_writing = self._member_writing, None
            done.callback(None)

    def _update_member(self) -> None:
        if self._member_lease and self._running:
            d = self._track(self._put_member())
            d.addErrback(lambda f: f.trap(EtcdError) and None)
            d.addErrback(lambda f: self.log.failure("updating {server}'s member key failed", f, server=self.name))

    @defer.inlineCallbacks
    def _connect(self):
        self._connecting = True
        try:
            revision, kvs = yield self.client.get(self.prefix + "/", prefix=True)
            self._kv = {kv.key: kv for kv in kvs}
            self._connected = True
            self._reconnect_delay = RECONNECT_FIRST
            if self._lost_since is not None:
                self.log.info("{server} reaches the store again, after {gap:.3f}s", server=self.name,
                              gap=self.now() - self._lost_since)
            self._lost_since, self.store_error = None, None
            self._publish(revision)
            watch = self._watch = self.client.watch(self.prefix + "/", prefix=True, start_revision=revision + 1,
                                                    on_events=self._events)
            watch.done.addBoth(self._watch_ended, watch)
        except EtcdError as e:
            self._store_lost(f"cannot read {self.prefix}/: {e}")
        except Exception:
            self.log.failure("reading the store failed")
            self._store_lost("reading the store failed (see the log)")
        finally:
            self._connecting = False

    def _events(self, events, revision: int) -> None:
        for event in events:
            if event.type == "DELETE":
                self._kv.pop(event.kv.key, None)
            else:
                self._kv[event.kv.key] = event.kv
        self._publish(revision)

    def _watch_ended(self, result, watch) -> None:
        if watch is not self._watch or not self._running:
            return
        self._watch = None
        why = result.getErrorMessage() if hasattr(result, "getErrorMessage") else "the store closed it"
        self._store_lost(f"the watch of {self.prefix}/ ended: {why}")

    def _store_lost(self, detail: str) -> None:
        if not self._running:
            return
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.cancel()
        self.store_error = detail
        if self._connected:
            self._connected = False
            self._published = None
            self._lost_since = self.now()
            self.log.warn("{server} lost the store: {detail}; a live member stops serving by its lease's end,"
                          " and nobody takes the role until the store answers", server=self.name, detail=detail)
            self._feed(ev.StoreLost(detail))
        else:
            if self._lost_since is None:
                self._lost_since = self.now()
                self.log.warn("{server} cannot reach the store: {detail}; it waits as a backup and tries again,"
                              " every {cap:g}s at most", server=self.name, detail=detail, cap=RECONNECT_CAP)
            if self.core.role == ev.STARTING:
                self._feed(ev.StoreLost(detail))
        if self._reconnect is None or not self._reconnect.active():
            delay, self._reconnect_delay = self._reconnect_delay, min(RECONNECT_CAP, 2 * self._reconnect_delay)
            self._reconnect = self.reactor.callLater(delay, self._retry_connect)

    def _resync(self, why: str) -> None:
        """Read the store and watch it again, without telling the core it was lost."""
        if not self._running or self._connecting:
            return
        self.log.info("{server} reads the store again: {why}", server=self.name, why=why)
        if self._watch is not None:
            watch, self._watch = self._watch, None
            watch.cancel()
        self._connect()

    def _retry_connect(self) -> None:
        if self._running and not self._connected and not self._connecting:
            self._connect()

    def _publish(self, revision: int) -> None:
        """Tell the core how the store stands, when that has changed."""
        live = self._kv.get(self.live_key)
        holder, epoch, lease, renewed, ttl = None, 0, 0, 0, 0.0
        if live is not None:
            data = _json(live.value) or {}
            holder = data.get("name") if isinstance(data.get("name"), str) else None
            epoch, lease, renewed = live.create_revision, live.lease, live.mod_revision
            problem = None
            if holder is None:
                problem = f"its value is not a member's ({live.value[:80]!r})"
            elif holder not in self.config.servers:
                problem = f"it names {holder!r}, which is not a server of {self.config.path}"
            elif not lease:
                problem = "it is bound to no lease, so it would never expire"
            if problem is not None:
                # Not written by a member of this group: nobody takes the role
                # while it is there (it may be another group's under the same
                # prefix), and the operator is told what to remove.
                if self._odd_key != (live.mod_revision, problem):
                    self._odd_key = (live.mod_revision, problem)
                    self.log.critical(
                        "the live key {key} was not written by a member of this group: {problem}; no member takes"
                        " the live role while it is there (is etcd_prefix shared with another group?); remove it"
                        " with `etcdctl del {key}` if it is stale", key=self.live_key, problem=problem)
                holder = holder or "(unreadable value)"
            ttl = _number(data.get("ttl"), least=1, most=86400) or 0.0  # 0: unknown, no early clearing
        handover = self._kv.get(self.handover_key)
        released_by = to = None
        if handover is not None:
            data = _json(handover.value) or {}
            if data.get("reason", "stopped") in ("stopped", "switchover"):  # a fenced or lost key reads as a crash
                released_by = data.get("from") if isinstance(data.get("from"), str) else None
            to = data.get("to") if isinstance(data.get("to"), str) else None
        state = (holder, epoch, lease, released_by, to, renewed, ttl)
        members = []
        for key, kv in self._kv.items():
            if key.startswith(self.members_prefix):
                data = _json(kv.value) or {}
                name = key[len(self.members_prefix):]
                priority = _number(data.get("priority"), least=-1e9, most=1e9)
                # A member whose key says it is live (or stopping) does not campaign: it
                # holds the role, or its key outlives a crash, and is no failback target.
                may = data.get("may_campaign", True) is True and data.get("role") not in (LIVE, ev.HANDING_OVER, STOPPED)
                if name in self.config.servers and priority is not None and priority == int(priority):
                    members.append((name, int(priority), may))
        members = tuple(sorted(members))
        if members != self._candidates:
            self._candidates = members
            self._feed(ev.Candidates(members))
        if state != self._published:
            self._published = state
            self._feed(ev.StoreState(holder, epoch=epoch, lease=lease, released_by=released_by, handover_to=to,
                                     revision=revision, renewed=renewed, ttl=ttl))
            if self.core.epoch != self._member_epoch:
                self._update_member()  # the group's epoch, as every member shows it

    # -- effects of the group core --

    def _carry_out_own(self, effect, protocol) -> None:
        kind = type(effect)
        if kind is ev.Campaign:
            self._track(self._campaign(effect))
        elif kind is ev.KeepAlive:
            self._track(self._keepalive(effect.lease))
        elif kind is ev.Resign:
            self._track(self._resign(effect.lease, effect.to, effect.reason))
        elif kind is ev.ClearStale:
            self._track(self._clear_stale(effect))
        else:
            raise AssertionError(f"unknown effect {effect!r}")

    @defer.inlineCallbacks
    def _campaign(self, effect: ev.Campaign):
        sent_at = self.now()
        lease = 0
        try:
            lease, ttl = yield self.client.grant(math.ceil(effect.ttl))
            value = self._live_value(ttl)
            won, revision, existing = yield self.client.create_if_absent(
                self.live_key, value, lease, also_delete=(self.handover_key,))
        except EtcdError as e:
            if lease:
                self._revoke_quietly(lease)  # the key, if it was made after all, goes with it
            self._feed(ev.CampaignResult(effect.token, False, error=str(e)))
            return
        except Exception:
            self.log.failure("campaign failed")
            self._feed(ev.CampaignResult(effect.token, False, error="the campaign failed (see the log)"))
            return
        if won:
            self._feed(ev.CampaignResult(effect.token, True, epoch=revision, lease=lease, sent_at=sent_at, ttl=ttl))
            return
        self._revoke_quietly(lease)
        holder = None
        epoch = 0
        if existing is not None:
            holder = (_json(existing.value) or {}).get("name") or "(unreadable value)"
            epoch = existing.create_revision
        self._feed(ev.CampaignResult(effect.token, False, epoch=epoch, holder=holder))

    def _revoke_quietly(self, lease: int) -> None:
        d = self._track(self.client.revoke(lease))
        d.addErrback(lambda f: self.log.info("revoking lease {lease:x} failed: {why}", lease=lease,
                                             why=f.getErrorMessage()))

    def _live_value(self, ttl: float) -> bytes:
        self._renewals += 1
        return json.dumps({"name": self.name, "ttl": ttl, "renewal": self._renewals}).encode()

    @defer.inlineCallbacks
    def _keepalive(self, lease: int):
        # The key is written first, the lease kept alive after: the other
        # members time this write, and this member counts its lease from
        # when the write was sent (see ClearStale in the group core).
        sent_at = self.now()
        try:
            ours = yield self.client.put_if_lease(self.live_key, self._live_value(self.core.ttl), lease)
            ttl = (yield self.client.keepalive(lease)) if ours else 0
        except EtcdError as e:
            self.stats.failed(str(e))
            self._feed(ev.KeepAliveResult(lease, sent_at, error=str(e)))
            return
        except Exception:
            self.log.failure("keepalive failed")
            self._feed(ev.KeepAliveResult(lease, sent_at, error="the keepalive failed (see the log)"))
            return
        if ttl > 0:
            self.stats.renewed(self.now() - sent_at)
        else:
            self.stats.failed(f"lease {lease:x} has expired")
        self._feed(ev.KeepAliveResult(lease, sent_at, ttl=ttl))

    @defer.inlineCallbacks
    def _clear_stale(self, effect: ev.ClearStale):
        try:
            cleared = yield self.client.delete_if_revision(self.live_key, effect.renewed)
        except EtcdError as e:
            self.log.info("clearing {holder}'s stale live key failed: {why}", holder=effect.holder, why=e)
            return
        except Exception:
            self.log.failure("clearing a stale live key failed")
            return
        if cleared:
            self.log.warn("{holder} did not renew the live key for its TTL: cleared it", holder=effect.holder)
        else:
            # Renewed since the revision this member saw, and its watch has not
            # shown it: the watch may have stopped delivering. Read again.
            self._resync(f"the live key had changed since revision {effect.renewed}, unseen on the watch")

    @defer.inlineCallbacks
    def _resign(self, lease: int, to: Optional[str], reason: str):
        note = json.dumps({"from": self.name, "to": to, "reason": reason}).encode()
        try:
            yield self.client.delete_if_lease(self.live_key, lease, also_put=(self.handover_key, note))
            yield self.client.revoke(lease)
        except EtcdError as e:
            self._feed(ev.Resigned(lease, str(e)))
            return
        except Exception:
            self.log.failure("resigning failed")
            self._feed(ev.Resigned(lease, "resigning failed (see the log)"))
            return
        self._feed(ev.Resigned(lease))

    def _transition(self, t: ev.Transition) -> None:
        self.machine.record(t)
        self._update_member()  # before a stop may end the service: the others see this member stopped
        self.log.info(
            "{server} role {previous} -> {role} (epoch {epoch}): {cause}",
            server=self.name, previous=t.previous, role=t.role, epoch=t.epoch, cause=t.cause,
        )
        if t.role == LIVE and t.kind in TAKEOVER_KINDS:
            self.takeovers[t.kind] += 1
            self.log.warn("took the live role: {cause}; now live with epoch {epoch}", cause=t.cause, epoch=t.epoch)
        elif t.role == BACKUP:
            self.serving.on_backup(t.epoch, t.cause)
        elif t.role == STOPPED and self._stopped is not None:
            stopped = self._stopped
            self.serving.after_stops(lambda: stopped.called or stopped.callback(None))

    # -- planned switchover --

    def switchover(self, cause: Optional[str] = None, to: Optional[str] = None) -> defer.Deferred:
        """
        Move the live role to member C{to} (None: the best registered one):
        stop every listener, then let go of the key naming C{to}, which takes
        it at once.

        @return: a Deferred firing with C{{"from", "to", "epoch", "gap"}} once
            C{to} holds the key, or failing with L{SwitchoverRefused}.
        """
        from iwayfailover.status import SwitchoverRefused
        if self._switchover is not None:
            return defer.fail(SwitchoverRefused("a switchover is already under way"))
        d = self._switchover = defer.Deferred()
        self._feed(ev.GroupSwitchoverAsked(to, cause))
        return d

    # -- configuration --

    def check_config(self, config: SharedConfig) -> SharedConfig:
        """
        Refuse a configuration in which this member has no section, or that
        is not a group's.

        @raise ConfigError: naming what is wrong.
        """
        config.server(self.name)
        if config.failover.coordinator != "etcd":
            raise ConfigError(config.path, "failover", "coordinator", config.failover.coordinator,
                              "changed", "etcd, as this member was started with: a coordinator changes only at a"
                              " restart of every member")
        return config

    def apply_config(self, config: SharedConfig) -> None:
        """Apply a new, checked configuration at once."""
        old_failover = self.config.failover
        changes = changed_keys(self.config, config, self.name)
        old = self.settings
        self.config, self.settings = config, config.server(self.name)
        self._feed(ev.NewSettings(group_settings_for(config, self.name)))
        self.stalls.tick = self._stall_tick()
        failover = config.failover
        self.timeout = request_timeout(failover.heartbeat_interval, self.settings.threshold)
        self.client.timeout = self.timeout
        if failover.heartbeat_interval != old_failover.heartbeat_interval and self._tick.running:
            self._tick.stop()
            self._tick.start(failover.heartbeat_interval, now=False)
        if failover.reload_interval != old_failover.reload_interval and self.poller is not None:
            self.poller.set_interval(failover.reload_interval)
        store = ("etcd_endpoints", "etcd_prefix", "etcd_cacert", "etcd_cert", "etcd_key", "etcd_user",
                 "etcd_password_file")
        moved = [k for k in store if getattr(failover, k, None) != getattr(old_failover, k, None)]
        if moved:
            changes.append(f"{', '.join(moved)}: at the next start")
            if {"etcd_endpoints", "etcd_prefix"} & set(moved):
                # A member restarted alone would campaign in another group (another
                # store or prefix) while this one still serves in the old: two live.
                self.log.critical(
                    "{keys} changed in {path}: this member keeps the group it started in until it is restarted,"
                    " and a member restarted alone would join another group, where nobody holds the role, while"
                    " the old group's live member serves on. Stop EVERY member of the group first, then start them"
                    " again", keys=" and ".join(k for k in ("etcd_endpoints", "etcd_prefix") if k in moved),
                    path=config.path)
        self._console_url = console_url(self.settings.console)
        if self.settings.console != old.console and self.console_port is not None and self.settings.console:
            self.console_port.rebind(self.settings.console)
        self._update_member()
        self._apply_serving_config(config)
        self.log.info("configuration reloaded: {changes}", changes="; ".join(changes) or "no change for this server")

    # -- status --

    def status(self) -> NodeStatus:
        """One snapshot of how this member and its group stand."""
        channels, address = self._channels_status()
        members = []
        for key, kv in sorted(self._kv.items()):
            if not key.startswith(self.members_prefix):
                continue
            # Read off the store, written by other processes: only values of the
            # right kind and range are shown (a bad one must not break the status).
            data = _json(kv.value) or {}
            epoch, priority = _number(data.get("epoch"), most=2 ** 63), _number(data.get("priority"), -1e9, 1e9)
            console = data.get("console")
            name = key[len(self.members_prefix):]
            role = data["role"] if data.get("role") in MEMBER_ROLES else "unknown"
            if name == self.name:
                role = self.core.role
            elif not self._connected:
                role = "unknown"  # the store is out of reach: what it last said may be stale
            members.append(MemberStatus(
                name=name,
                role=role,
                epoch=int(epoch) if epoch is not None else None,
                priority=int(priority) if priority is not None else 0,
                may_campaign=data.get("may_campaign", True) is True,
                since=_number(data.get("since"), least=0, most=32503680000),  # up to the year 3000
                console=console if isinstance(console, str) and console.startswith(("http://", "https://")) else None,
            ))
        # Every server of the group the shared file lists and the store does
        # not: not running, or not reaching the store.
        registered = {member.name for member in members}
        members.extend(
            MemberStatus(name=name, role="absent", priority=server.priority, may_campaign=False)
            for name, server in sorted(self.config.servers.items()) if name not in registered
        )
        members.sort(key=lambda member: member.name)
        core = self.core
        holder = core.holder if self._connected else None
        return NodeStatus(
            server=self.name,
            role=self.machine.role,
            epoch=self.machine.epoch,
            since=self.machine.since,
            cause=self.machine.cause,
            peer=PeerStatus(name=holder if holder != self.name else None, connected=self._connected,
                            role=LIVE if holder and holder != self.name else None,
                            epoch=core.holder_epoch if holder and holder != self.name else None),
            channels=channels,
            address=address,
            heartbeats=HeartbeatStatus(largest_stall=self.stalls.largest),
            settings=SettingsStatus(
                threshold=self.settings.threshold,
                heartbeat_interval=self.config.failover.heartbeat_interval,
                reload_interval=self.config.failover.reload_interval,
                console_users=self.settings.console_users or self.config.failover.console_users,
            ),
            auth=AuthStatus(mode="none"),  # a group signs nothing: its members send no heartbeats
            config=self._config_status(),
            transitions=tuple(self.machine.transitions),
            takeovers=self._takeover_counts(),
            coordinator=self.stats.status(
                kind="etcd", endpoints=tuple(self.config.failover.etcd_endpoints), connected=self._connected,
                live=holder, live_epoch=core.holder_epoch if holder else None,
                lease_ttl=core.ttl or math.ceil(self.settings.threshold), lease_left=core.lease_left,
                **({"last_error": self.store_error} if self.store_error else {}),
            ),
            members=tuple(members),
        )
