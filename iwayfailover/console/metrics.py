"""
C{GET /metrics}: the node's state in the Prometheus text format.

Every node has its own L{CollectorRegistry} (never the process-wide one: a
test process builds many nodes), holding one L{NodeCollector} that reads the
node's status snapshot (L{iwayfailover.status.NodeStatus}) when Prometheus
scrapes, so the numbers are never stale and nothing is counted twice.
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, exposition
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, InfoMetricFamily
from prometheus_client.exposition import generate_latest
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString
from twisted.logger import Logger
from twisted.web.resource import Resource

import iwayfailover
from iwayfailover.channel import STATES as LISTENER_STATES
from iwayfailover.core.events import BACKUP, HANDING_OVER, LIVE
from iwayfailover.core.events import STARTING as ROLE_STARTING
from iwayfailover.core.events import STOPPED as ROLE_STOPPED
from iwayfailover.status import TAKEOVER_KINDS

log = Logger()

ROLES = (ROLE_STARTING, BACKUP, LIVE, HANDING_OVER, ROLE_STOPPED)

# The classic text format (what generate_latest writes); newer clients call
# it by this name, older ones CONTENT_TYPE_LATEST.
CONTENT_TYPE = getattr(exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST)


class NodeCollector(Collector):
    """The metrics of one node, read from its status snapshot (L{INodeControl.status}) at each scrape."""

    def __init__(self, node):
        self._node = node

    def collect(self):
        status = self._node.status()
        server = status.server

        info = InfoMetricFamily("iwayfailover_build", "The iwayfailover version this node runs.")
        info.add_metric([], {"version": iwayfailover.__version__, "server": server})
        yield info

        role = GaugeMetricFamily(
            "iwayfailover_role", "1 for the role this node is in now, 0 for the others.", labels=["server", "role"]
        )
        for name in ROLES + (() if status.role in ROLES else (status.role,)):
            role.add_metric([server, name], 1.0 if name == status.role else 0.0)
        yield role

        yield GaugeMetricFamily(
            "iwayfailover_role_since_timestamp_seconds", "When the node took its current role (Unix time).",
            value=status.since,
        )
        yield GaugeMetricFamily(
            "iwayfailover_epoch", "The node's epoch, raised by every takeover.", value=status.epoch
        )

        yield GaugeMetricFamily(
            "iwayfailover_threshold_seconds", "Silence after which this node, as a backup, takes over.",
            value=status.settings.threshold,
        )
        yield GaugeMetricFamily(
            "iwayfailover_heartbeat_interval_seconds", "Seconds between heartbeats sent by a live node.",
            value=status.settings.heartbeat_interval,
        )

        takeovers = CounterMetricFamily(
            "iwayfailover_takeovers", "Takeovers by this node since it started, by kind of cause.", labels=["cause"]
        )
        for kind in sorted(set(TAKEOVER_KINDS) | set(status.takeovers)):
            takeovers.add_metric([kind], status.takeovers.get(kind, 0))
        yield takeovers

        if status.coordinator is None:
            yield from pair_metrics(status)
        yield from self._channels_and_config(status)

    def _channels_and_config(self, status):
        states = GaugeMetricFamily(
            "iwayfailover_listener_state", "1 for the state each listener is in now, 0 for the others.",
            labels=["listener", "state"],
        )
        for channel in sorted(status.channels, key=lambda c: c.name):  # the listeners (the floating IP is not one)
            for state in LISTENER_STATES + (() if channel.state in LISTENER_STATES else (channel.state,)):
                states.add_metric([channel.name, state], 1.0 if channel.state == state else 0.0)
        yield states

        config = status.config
        yield CounterMetricFamily(
            "iwayfailover_config_reloads", "Changed configurations applied since this node started.",
            value=config.reloads,
        )
        yield CounterMetricFamily(
            "iwayfailover_config_reload_failures",
            "Reads of the configuration refused (bad edit, unreadable share); the last good one kept running.",
            value=config.failures,
        )
        yield GaugeMetricFamily(
            "iwayfailover_config_reload_failing", "1 while the latest read of the configuration was refused.",
            value=0.0 if config.last_error is None else 1.0,
        )
        yield GaugeMetricFamily(
            "iwayfailover_config_from_local_copy",
            "1 while the node runs from its local copy of the configuration (the share could not be read at its start).",
            value=1.0 if config.from_copy else 0.0,
        )
        yield GaugeMetricFamily(
            "iwayfailover_config_local_copy_failing", "1 while the local copy of the configuration cannot be written.",
            value=0.0 if config.local_copy_error is None else 1.0,
        )

        if status.coordinator is not None:
            yield from group_metrics(status)


def pair_metrics(status):
    """A pair's heartbeat series (a group's members send no heartbeats: they have none)."""
    heartbeats = status.heartbeats
    yield CounterMetricFamily(
        "iwayfailover_heartbeats_sent", "Heartbeats sent to the backup location while live.", value=heartbeats.sent
    )
    yield CounterMetricFamily(
        "iwayfailover_heartbeats_received", "Heartbeats received on this node's heartbeat port.",
        value=heartbeats.received,
    )
    yield CounterMetricFamily(
        "iwayfailover_pulses_sent", "Pulses (heartbeats as sealed datagrams) sent to the backup while live.",
        value=heartbeats.pulses_sent,
    )
    yield CounterMetricFamily(
        "iwayfailover_pulses_received", "Pulses accepted: heartbeats from a live node, and answers to this node's pulses.",
        value=heartbeats.pulses_received,
    )
    yield CounterMetricFamily(
        "iwayfailover_pulses_rejected",
        "Datagrams refused on the pulse ports (not a pulse, an unknown session, a bad MAC, a repeat).",
        value=heartbeats.pulses_rejected,
    )
    yield CounterMetricFamily(
        "iwayfailover_heartbeats_rejected",
        "Heartbeat connections refused, on this node's port and on its link to the backup"
        " (bad hello, MAC, number or frame, foreign name, deadline, certificate).",
        value=heartbeats.rejected,
    )

    age = status.peer.last_heartbeat_age
    yield GaugeMetricFamily(
        "iwayfailover_last_heartbeat_age_seconds",
        "Seconds since the peer was last heard from (NaN: never heard since this node started).",
        value=math.nan if age is None else max(0.0, age),
    )
    yield GaugeMetricFamily(
        "iwayfailover_max_heartbeat_gap_seconds",
        "The longest pause between two live heartbeats this node heard as a backup: how close it came to a takeover.",
        value=heartbeats.max_gap,
    )
    yield GaugeMetricFamily(
        "iwayfailover_recent_max_heartbeat_gap_seconds",
        "The longest pause between two live heartbeats heard as a backup in the last five minutes (0: none heard).",
        value=max((gap for _, gap, _ in heartbeats.gaps.heard.recent), default=0.0),
    )
    yield GaugeMetricFamily(
        "iwayfailover_peer_connected", "1 while a heartbeat connection to the peer is up.",
        value=1.0 if status.peer.connected else 0.0,
    )
    yield gap_histogram(
        "iwayfailover_heartbeat_gap_seconds",
        "Gaps between two live heartbeats heard as a backup, in seconds: compare with the threshold.",
        heartbeats.gaps.heard,
    )
    yield gap_histogram(
        "iwayfailover_heartbeat_send_gap_seconds",
        "Gaps between two heartbeats sent as live, in seconds: this node's own lateness (a busy reactor, a pause).",
        heartbeats.gaps.sent,
    )


def gap_histogram(name, documentation, snapshot):
    """One direction's gaps (L{iwayfailover.gaps.GapSnapshot}) as a Prometheus histogram."""
    return HistogramMetricFamily(
        name, documentation,
        buckets=[(floatToGoString(bound), count) for bound, count in snapshot.buckets],
        sum_value=snapshot.total,
    )


def group_metrics(status):
    """A group member's metrics (coordinator = etcd): its lease keepalives, the store's reach, the members by role."""
    coordinator = status.coordinator
    yield CounterMetricFamily(
        "iwayfailover_lease_renewals", "Lease keepalives answered by the store since this node started.",
        value=coordinator.renewals,
    )
    yield CounterMetricFamily(
        "iwayfailover_lease_renewal_failures",
        "Lease keepalives that failed (no answer in time, an error, the lease gone) since this node started.",
        value=coordinator.renewal_failures,
    )
    yield HistogramMetricFamily(
        "iwayfailover_lease_renewal_seconds", "Round trips of the answered lease keepalives, in seconds.",
        buckets=[(floatToGoString(bound), count) for bound, count in coordinator.renewal_buckets],
        sum_value=coordinator.renewal_seconds_sum,
    )
    left = coordinator.lease_left
    yield GaugeMetricFamily(
        "iwayfailover_lease_left_seconds",
        "Seconds this node may still count its live lease as its own, on its own clock (NaN: it holds none).",
        value=math.nan if left is None else max(0.0, left),
    )
    yield GaugeMetricFamily(
        "iwayfailover_coordinator_connected", "1 while the store (etcd) answers this node.",
        value=1.0 if coordinator.connected else 0.0,
    )
    members = GaugeMetricFamily(
        "iwayfailover_group_members", "The group's members this node knows of, by the role each reports.",
        labels=["role"],
    )
    roles = [member.role for member in status.members]
    known = ROLES + ("absent", "unknown")
    for role in known + tuple(sorted(set(roles) - set(known))):
        members.add_metric([role], float(roles.count(role)))
    yield members


def node_registry(node) -> CollectorRegistry:
    """A registry of its own for C{node}, holding its L{NodeCollector}."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(NodeCollector(node))
    return registry


class MetricsResource(Resource):
    """
    C{GET /metrics}: 200 with the exposition. Who may read it is the
    console's guard's rule (L{iwayfailover.console.access}): this host's own
    clients without a login, anyone else with a login session; 401 otherwise.
    """

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._registry = node_registry(node)

    def render_GET(self, request):
        request.setHeader(b"cache-control", b"no-store")
        try:
            body = generate_latest(self._registry)
        except Exception:
            log.failure("collecting the metrics failed")
            request.setResponseCode(500)
            request.setHeader(b"content-type", b"text/plain; charset=utf-8")
            return b"collecting the metrics failed; see the node's log\n"
        request.setResponseCode(200)
        request.setHeader(b"content-type", CONTENT_TYPE.encode("ascii"))
        return body
