"""
How a node stands, as one immutable snapshot, and the few things the
console may ask of a node.

L{NodeStatus} is what L{iwayfailover.node.FailoverNode.status} returns: the
role, the peer, every channel, the heartbeat counters, the settings in
force, the configuration's state and the recent transitions, all taken at
one moment. C{GET /api/status} (and so C{iwsrv status}) shows its
L{NodeStatus.to_json}; the console's pages and C{/metrics} read the same
object, which also keeps what the JSON leaves out (takeovers by kind,
configuration reloads, unrounded ages and Unix times).

In a group (coordinator = etcd) it adds the store's facts
(L{CoordinatorStatus}, its lease counts kept by L{LeaseStats}) and every
member (L{MemberStatus}).

L{INodeControl} is all of a node that the console (pages, C{/api/*} and
C{/metrics}) uses: it never reaches into the node's parts.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple

from zope.interface import Interface

from iwayfailover.channel import ADDRESS_PREFIX, FAILED
from iwayfailover.core.events import LIVE
from iwayfailover.gaps import GapHistory

TAKEOVER_KINDS = ("silence", "crash", "switchover", "peer_shutdown")
"""Why a backup took over, in one word: its live peer's signal went silent for
the threshold, its link dropped and a probe found its process gone, or the
peer stood down for a planned switchover or because it was shutting down."""


class SwitchoverRefused(Exception):
    """A planned switchover cannot be made now; the message says why."""


class ListenerRestartRefused(Exception):
    """A listener cannot be restarted (unknown, or not FAILED); the message says why."""


class INodeControl(Interface):
    """
    What the console may ask of a node, and all it may: a snapshot of how it
    stands, a planned switchover, a FAILED listener tried again, and, for
    the Backup Settings page, the node's checks of a configuration and a
    read of the saved file now.
    """

    def status():
        """
        How the node stands now.

        @rtype: L{NodeStatus}
        """

    def switchover(cause=None, to=None):
        """
        Hand the live role to the backup.

        @param cause: why, as the transitions and the log will say it
            (None: a planned switchover).
        @param to: in a group (coordinator = etcd), the member to hand the
            role to (None: the one the group's rules pick). A pair's node
            takes no C{to}: the console passes it only when one was asked for.
        @return: a Deferred firing with C{{"from", "to", "epoch", "gap"}}
            (C{gap}: seconds during which no listener served), or failing
            with L{SwitchoverRefused}.
        """

    def restart_listener(name):
        """
        Try one FAILED listener again.

        @return: a Deferred that fires once it is done (the listener's state
            is then in L{status}).
        @raise ListenerRestartRefused: no such listener, or it is not FAILED.
        """

    def check_config(config):
        """
        The node's own checks of a parsed configuration, as a reload makes
        them (its server section, values that must fit a heartbeat frame).
        Reads nothing but C{config}: it may run in any thread.

        @return: C{config}.
        @raise iwayfailover.config.ConfigError: naming what is wrong.
        """

    def reload_config():
        """
        Read the shared configuration file again now, as the next poll would
        (the console has just saved it): a good change is applied as any
        reload is; a read already under way picks the new file up itself.
        """


def iso(wall: float) -> str:
    """A Unix time as the status shows it: UTC, to the millisecond (C{2026-11-25T10:00:00.000Z})."""
    return datetime.datetime.fromtimestamp(wall, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")[:-4] + "Z"


def unix_time(text: str) -> float:
    """
    The Unix time of a time written as L{iso} writes it (the fraction may
    be left out).

    @raise ValueError: not such a time.
    """
    for layout in ("%Y-%m-%dT%H:%M:%S.%fZ", "%Y-%m-%dT%H:%M:%SZ"):
        try:
            moment = datetime.datetime.strptime(text, layout)
        except ValueError:
            continue
        return moment.replace(tzinfo=datetime.timezone.utc).timestamp()
    raise ValueError(f"not a UTC time like 2026-11-25T10:00:00.000Z: {text!r}")


def _rounded(value: Optional[float], digits: int) -> Optional[float]:
    return None if value is None else round(value, digits)


def _frozen(mapping) -> Mapping:
    return MappingProxyType(dict(mapping or {}))


@dataclass(frozen=True)
class PeerStatus:
    """
    The other node of the pair as this node knows it. C{role}, C{epoch},
    C{priority} and C{threshold} (seconds) are what it last announced (None
    before it is heard).
    """

    name: Optional[str] = None
    connected: bool = False
    """A heartbeat connection from it is up."""
    last_heartbeat_age: Optional[float] = None
    """Seconds since it was last heard (None: never); the JSON rounds it to the millisecond."""
    role: Optional[str] = None
    epoch: Optional[int] = None
    priority: Optional[int] = None
    threshold: Optional[float] = None

    def to_json(self) -> dict:
        return {
            "name": self.name, "connected": self.connected,
            "last_heartbeat_age": _rounded(self.last_heartbeat_age, 3),
            "role": self.role, "epoch": self.epoch, "priority": self.priority, "threshold": self.threshold,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "PeerStatus":
        return cls(
            name=data.get("name"), connected=bool(data.get("connected")), last_heartbeat_age=data.get("last_heartbeat_age"),
            role=data.get("role"), epoch=data.get("epoch"), priority=data.get("priority"), threshold=data.get("threshold"),
        )


@dataclass(frozen=True)
class ChannelStatus:
    """
    One channel (a listener, or the floating IP) and its state (see
    L{iwayfailover.channel}).
    """

    name: str
    state: str
    since: float
    """The Unix time it took its state."""
    reason: Optional[str] = None
    """Why it is FAILED (or was stopped)."""
    retries: Optional[int] = None
    """Automatic retries made since it was last up, when there were any."""
    retry_in: Optional[float] = None
    """Seconds until the next automatic retry of a FAILED channel, when one is pending."""
    extra: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    """What its kind adds, in its order: a process channel's C{pid} and C{restarts}, the floating IP's C{warning}."""

    COMMON = ("state", "since", "reason", "retries", "retry_in")

    def to_json(self) -> dict:
        entry = {"state": self.state, "since": iso(self.since)}
        if self.reason:
            entry["reason"] = self.reason
        entry.update(self.extra)
        if self.retries is not None:
            entry["retries"] = self.retries
        if self.retry_in is not None:
            entry["retry_in"] = self.retry_in
        return entry

    @classmethod
    def from_entry(cls, name: str, entry: Mapping, since) -> "ChannelStatus":
        """From a channel's own status entry (as L{iwayfailover.listeners.Listener.status} gives it), its C{since} read by C{since}."""
        return cls(
            name=name, state=entry["state"], since=since(entry["since"]), reason=entry.get("reason") or None,
            retries=entry.get("retries"), retry_in=entry.get("retry_in"),
            extra=_frozen((k, v) for k, v in entry.items() if k not in cls.COMMON),
        )

    @classmethod
    def from_json(cls, name: str, data: Mapping) -> "ChannelStatus":
        return cls.from_entry(name, data, unix_time)


@dataclass(frozen=True)
class HeartbeatStatus:
    """Heartbeat counters since the node started."""

    sent: int = 0
    """Heartbeats sent to the backup location while live."""
    received: int = 0
    """Heartbeats received on the heartbeat port."""
    rejected: int = 0
    """Connections refused, on the heartbeat port and by this node as a sender."""
    max_gap: float = 0.0
    """The longest pause, in seconds, between two live heartbeats heard as a backup."""
    largest_stall: float = 0.0
    """The longest time, in seconds, this process itself did not run."""
    pulses_sent: int = 0
    """Pulses (heartbeats as sealed datagrams) sent to the backup while live."""
    pulses_received: int = 0
    """Pulses accepted: heartbeats from a live node, and answers to this node's pulses."""
    pulses_rejected: int = 0
    """Datagrams refused on the pulse ports (not a pulse, an unknown session, a bad MAC, a repeat)."""
    gaps: GapHistory = GapHistory()
    """The gaps between heartbeats, heard and sent: histograms and the last minutes (C{/metrics}, C{/api/gaps}, the
    console's chart); not in the status JSON."""

    def to_json(self) -> dict:
        return {
            "sent": self.sent, "received": self.received, "max_gap": round(self.max_gap, 4),
            "rejected": self.rejected, "largest_stall": round(self.largest_stall, 4),
            "pulses": {"sent": self.pulses_sent, "received": self.pulses_received, "rejected": self.pulses_rejected},
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "HeartbeatStatus":
        return cls(
            sent=data.get("sent", 0), received=data.get("received", 0), rejected=data.get("rejected", 0),
            max_gap=data.get("max_gap", 0.0), largest_stall=data.get("largest_stall", 0.0),
            pulses_sent=(data.get("pulses") or {}).get("sent", 0),
            pulses_received=(data.get("pulses") or {}).get("received", 0),
            pulses_rejected=(data.get("pulses") or {}).get("rejected", 0),
        )


@dataclass(frozen=True)
class SettingsStatus:
    """The settings of this node in force (after the last reload)."""

    backup_location: Optional[str] = None
    heartbeat_port: Optional[str] = None
    threshold: float = 0.0
    heartbeat_interval: float = 0.0
    reload_interval: float = 0.0
    console_users: Optional[str] = None
    """The file of the console's users (None: nobody can log in); not in the JSON."""

    def to_json(self) -> dict:
        return {
            "backup_location": self.backup_location, "heartbeat_port": self.heartbeat_port,
            "threshold": self.threshold, "heartbeat_interval": self.heartbeat_interval,
            "reload_interval": self.reload_interval,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "SettingsStatus":
        return cls(
            backup_location=data.get("backup_location"), heartbeat_port=data.get("heartbeat_port"),
            threshold=data.get("threshold", 0.0), heartbeat_interval=data.get("heartbeat_interval", 0.0),
            reload_interval=data.get("reload_interval", 0.0),
        )


@dataclass(frozen=True)
class AuthStatus:
    """How heartbeats are checked (mode: signed, insecure; none in a group, whose members send none): never a key, only key ids."""

    mode: str = "insecure"
    key_file: Optional[str] = None
    key_ids: Tuple[str, ...] = ()

    def to_json(self) -> dict:
        return {"mode": self.mode, "key_file": self.key_file, "key_ids": list(self.key_ids)}

    @classmethod
    def from_json(cls, data: Mapping) -> "AuthStatus":
        return cls(mode=data.get("mode", "insecure"), key_file=data.get("key_file"), key_ids=tuple(data.get("key_ids") or ()))


SHARE, LOCAL_COPY = "share", "local copy"
"""Where the configuration in force was read from (L{ConfigStatus.source})."""


@dataclass(frozen=True)
class ConfigStatus:
    """The shared configuration in force, where it was read from, and how its reloads went."""

    path: Optional[str] = None
    digest: Optional[str] = None
    last_error: Optional[str] = None
    """Why the file as it is now is not applied, or None."""
    reloads: int = 0
    """Changed configurations applied since the node started; not in the JSON."""
    failures: int = 0
    """Reads of the file refused since the node started; not in the JSON."""
    source: str = SHARE
    """L{SHARE}, or L{LOCAL_COPY} while the node runs from its local copy (the share could not be read at its start)."""
    local_copy: Optional[str] = None
    """The local copy of the last configuration applied (in the state dir), or None while there is none."""
    local_copy_saved: Optional[float] = None
    """The Unix time the local copy was written."""
    local_copy_error: Optional[str] = None
    """Why the local copy could not be written the last time, or None."""

    @property
    def from_copy(self) -> bool:
        """Does the node run from its local copy?"""
        return self.source == LOCAL_COPY

    def to_json(self) -> dict:
        return {
            "path": self.path, "digest": self.digest, "last_error": self.last_error, "source": self.source,
            "local_copy": self.local_copy,
            "local_copy_saved": None if self.local_copy_saved is None else iso(self.local_copy_saved),
            "local_copy_error": self.local_copy_error,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "ConfigStatus":
        saved = data.get("local_copy_saved")
        return cls(
            path=data.get("path"), digest=data.get("digest"), last_error=data.get("last_error"),
            source=data.get("source") or SHARE, local_copy=data.get("local_copy"),
            local_copy_saved=None if saved is None else unix_time(saved), local_copy_error=data.get("local_copy_error"),
        )


@dataclass(frozen=True)
class Transition:
    """One change of role: when (Unix time), from and to what, under which epoch, and why."""

    at: float
    previous: Optional[str]
    role: str
    epoch: int
    cause: Optional[str]

    def to_json(self) -> dict:
        return {"at": iso(self.at), "from": self.previous, "to": self.role, "epoch": self.epoch, "cause": self.cause}

    @classmethod
    def from_json(cls, data: Mapping) -> "Transition":
        return cls(unix_time(data["at"]), data.get("from"), data["to"], data["epoch"], data.get("cause"))


RENEWAL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, float("inf"))
"""The upper bounds, in seconds, of the lease renewals' latency histogram (Prometheus's defaults up to 2.5 s)."""


@dataclass(frozen=True)
class CoordinatorStatus:
    """
    The store a group's live role is held on (coordinator = etcd) as this
    node sees it: C{/api/status}'s C{coordinator} block.
    """

    kind: str = "etcd"
    endpoints: Tuple[str, ...] = ()
    connected: bool = False
    """The store answered the node's last request."""
    live: Optional[str] = None
    """The member that holds the live role (None: nobody, or not known)."""
    live_epoch: Optional[int] = None
    """The group's epoch of that hold: its fencing token."""
    lease_ttl: Optional[int] = None
    """Seconds: the TTL etcd granted this node's lease (None: no lease)."""
    lease_left: Optional[float] = None
    """Seconds this node may still count its lease as its own, on its own clock (None: it holds no live lease)."""
    renewals: int = 0
    """Lease keepalives answered since the node started."""
    renewal_failures: int = 0
    """Lease keepalives that failed (no answer in time, an error, the lease gone)."""
    renewal_seconds_sum: float = 0.0
    """The answered keepalives' round trips, in seconds, added up."""
    renewal_buckets: Tuple[Tuple[float, int], ...] = tuple((bound, 0) for bound in RENEWAL_BUCKETS)
    """C{(upper bound, cumulative count)} of the answered keepalives' round trips, bounds L{RENEWAL_BUCKETS}; not in the JSON."""
    last_error: Optional[str] = None
    """Why the last request to the store failed, while it has not succeeded since."""

    def to_json(self) -> dict:
        return {
            "kind": self.kind, "endpoints": list(self.endpoints), "connected": self.connected, "live": self.live,
            "live_epoch": self.live_epoch, "lease_ttl": self.lease_ttl, "lease_left": _rounded(self.lease_left, 3),
            "renewals": self.renewals, "renewal_failures": self.renewal_failures,
            "renewal_seconds_sum": round(self.renewal_seconds_sum, 6), "last_error": self.last_error,
        }

    @classmethod
    def from_json(cls, data: Mapping) -> "CoordinatorStatus":
        return cls(
            kind=data.get("kind", "etcd"), endpoints=tuple(data.get("endpoints") or ()), connected=bool(data.get("connected")),
            live=data.get("live"), live_epoch=data.get("live_epoch"), lease_ttl=data.get("lease_ttl"),
            lease_left=data.get("lease_left"), renewals=data.get("renewals", 0),
            renewal_failures=data.get("renewal_failures", 0), renewal_seconds_sum=data.get("renewal_seconds_sum", 0.0),
            renewal_buckets=(), last_error=data.get("last_error"),
        )


class LeaseStats:
    """
    The counts of a node's lease keepalives, kept as they happen: the node
    calls L{renewed} or L{failed} for each, and L{status} makes the
    L{CoordinatorStatus} of a snapshot from them and the facts it adds.
    """

    def __init__(self):
        self.renewals = 0
        self.failures = 0
        self.seconds_sum = 0.0
        self.last_error: Optional[str] = None
        self._counts = [0] * len(RENEWAL_BUCKETS)

    def renewed(self, latency: float) -> None:
        """A keepalive was answered C{latency} seconds after it was sent; the last error is over."""
        latency = max(0.0, latency)
        self.renewals += 1
        self.seconds_sum += latency
        self._counts[next(i for i, bound in enumerate(RENEWAL_BUCKETS) if latency <= bound)] += 1
        self.last_error = None

    def failed(self, why: str) -> None:
        """A keepalive (or another request to the store) failed, for the reason C{why}."""
        self.failures += 1
        self.last_error = why

    @property
    def buckets(self) -> Tuple[Tuple[float, int], ...]:
        """C{(upper bound, cumulative count)} for each of L{RENEWAL_BUCKETS}."""
        total, cumulative = 0, []
        for bound, count in zip(RENEWAL_BUCKETS, self._counts):
            total += count
            cumulative.append((bound, total))
        return tuple(cumulative)

    def status(self, **facts) -> CoordinatorStatus:
        """
        A L{CoordinatorStatus} of these counts, with C{facts} (C{endpoints},
        C{connected}, C{live}, C{live_epoch}, C{lease_ttl}, C{lease_left}, ...)
        as its other fields.
        """
        counts = dict(
            renewals=self.renewals, renewal_failures=self.failures, renewal_seconds_sum=self.seconds_sum,
            renewal_buckets=self.buckets, last_error=self.last_error,
        )
        counts.update(facts)
        return CoordinatorStatus(**counts)


@dataclass(frozen=True)
class MemberStatus:
    """One member of a group as its entry under PREFIX/members/ (or the live key) shows it."""

    name: str
    role: str
    epoch: Optional[int] = None
    """The group's epoch the member last reported."""
    priority: int = 0
    may_campaign: bool = True
    """It may campaign when the key is free (False: it is stopping, or absent)."""
    since: Optional[float] = None
    """The Unix time it took its role, as it reported it (None: not known)."""
    console: Optional[str] = None
    """Its console's URL (http://host:port), where it has one."""

    def to_json(self) -> dict:
        return {
            "role": self.role, "epoch": self.epoch, "priority": self.priority, "may_campaign": self.may_campaign,
            "since": None if self.since is None else iso(self.since), "console": self.console,
        }

    @classmethod
    def from_json(cls, name: str, data: Mapping) -> "MemberStatus":
        since = data.get("since")
        return cls(
            name=name, role=data.get("role", "unknown"), epoch=data.get("epoch"), priority=data.get("priority", 0),
            may_campaign=bool(data.get("may_campaign", True)), since=None if since is None else unix_time(since),
            console=data.get("console"),
        )


@dataclass(frozen=True)
class NodeStatus:
    """
    How one node stands at one moment; see the module. L{to_json} is the
    C{/api/status} object (docs/monitoring.md, I{Status API}).
    """

    server: str
    role: str
    epoch: int
    since: float
    """The Unix time the node took its role."""
    cause: Optional[str] = None
    """Why the node has its role."""
    peer: PeerStatus = PeerStatus()
    channels: Tuple[ChannelStatus, ...] = ()
    """The node's listeners, by name."""
    address: Optional[ChannelStatus] = None
    """The floating IP, when one is configured."""
    heartbeats: HeartbeatStatus = HeartbeatStatus()
    settings: SettingsStatus = SettingsStatus()
    auth: AuthStatus = AuthStatus()
    config: ConfigStatus = ConfigStatus()
    transitions: Tuple[Transition, ...] = ()
    """The recent changes of role, oldest first."""
    takeovers: Mapping[str, int] = field(default_factory=lambda: MappingProxyType(dict.fromkeys(TAKEOVER_KINDS, 0)))
    """Takeovers since the node started, by kind (every one of L{TAKEOVER_KINDS}); not in the JSON."""
    coordinator: Optional[CoordinatorStatus] = None
    """In a group (coordinator = etcd): the store as this node sees it; None for a pair."""
    members: Tuple[MemberStatus, ...] = ()
    """In a group: every member this node knows of (itself included), in the order the node gives."""

    @property
    def listeners(self) -> Mapping[str, ChannelStatus]:
        """Every channel by name, as the status shows them: the listeners, then the floating IP."""
        items = {channel.name: channel for channel in self.channels}
        if self.address is not None:
            items[self.address.name] = self.address
        return MappingProxyType(items)

    def failed(self) -> Mapping[str, ChannelStatus]:
        """The FAILED channels (the floating IP included) of a live node, by name; none for any other role."""
        if self.role != LIVE:
            return MappingProxyType({})
        return MappingProxyType({name: c for name, c in self.listeners.items() if c.state == FAILED})

    def to_json(self) -> dict:
        """The C{/api/status} object: plain JSON types, times as L{iso} text."""
        return {
            "server": self.server,
            "role": self.role,
            "epoch": self.epoch,
            "since": iso(self.since),
            "cause": self.cause,
            "peer": self.peer.to_json(),
            "listeners": {name: channel.to_json() for name, channel in self.listeners.items()},
            "heartbeats": self.heartbeats.to_json(),
            "settings": self.settings.to_json(),
            "auth": self.auth.to_json(),
            "config": self.config.to_json(),
            "transitions": [t.to_json() for t in self.transitions],
            **self._group_json(),
        }

    def _group_json(self) -> dict:
        """A group's C{coordinator} and C{members}; nothing for a pair, whose object stays as it was."""
        if self.coordinator is None:
            return {}
        return {
            "coordinator": self.coordinator.to_json(),
            "members": {member.name: member.to_json() for member in self.members},
        }

    @property
    def group(self) -> bool:
        """Is this node a member of a group (coordinator = etcd)?"""
        return self.coordinator is not None

    @classmethod
    def from_json(cls, data: Mapping) -> "NodeStatus":
        """
        A status read back from its JSON (the floating IP, named
        C{vip:ADDRESS}, apart from the listeners). C{server}, C{role}, C{epoch} and C{since}
        are needed; a section left out (as older nodes do) reads as empty.
        Nothing that the JSON leaves out is known: no takeovers, no reloads.

        @raise KeyError: one of the needed keys is missing.
        @raise ValueError: a time is not written as L{iso} writes it.
        """
        channels, address = [], None
        for name, entry in (data.get("listeners") or {}).items():
            channel = ChannelStatus.from_json(name, entry)
            if name.startswith(ADDRESS_PREFIX):
                address = channel
            else:
                channels.append(channel)
        return cls(
            server=data["server"], role=data["role"], epoch=data["epoch"], since=unix_time(data["since"]),
            cause=data.get("cause"),
            peer=PeerStatus.from_json(data.get("peer") or {}),
            channels=tuple(channels), address=address,
            heartbeats=HeartbeatStatus.from_json(data.get("heartbeats") or {}),
            settings=SettingsStatus.from_json(data.get("settings") or {}),
            auth=AuthStatus.from_json(data.get("auth") or {}),
            config=ConfigStatus.from_json(data.get("config") or {}),
            transitions=tuple(Transition.from_json(t) for t in data.get("transitions") or ()),
            takeovers=MappingProxyType({}),
            coordinator=CoordinatorStatus.from_json(data["coordinator"]) if data.get("coordinator") else None,
            members=tuple(MemberStatus.from_json(name, entry) for name, entry in (data.get("members") or {}).items()),
        )
