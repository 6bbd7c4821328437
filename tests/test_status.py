"""
A group's part of the status snapshot: the coordinator block, the members
table, and the lease keepalive counts (L{LeaseStats}) they are made from.
A pair's status stays exactly as it was.
"""

import json

from twisted.trial import unittest

from iwayfailover.status import (
    RENEWAL_BUCKETS, CoordinatorStatus, LeaseStats, MemberStatus, NodeStatus, PeerStatus,
)

SINCE = 1764064800.0  # 2025-11-25T10:00:00Z


def group_status(**changes):
    """A member alpha of a three-node group, live under epoch 7."""
    fields = dict(
        server="alpha", role="live", epoch=7, since=SINCE,
        coordinator=CoordinatorStatus(
            endpoints=("http://127.0.0.1:2379",), connected=True, live="alpha", live_epoch=7, lease_ttl=3, lease_left=2.4,
            renewals=5,
        ),
        members=(
            MemberStatus("alpha", "live", epoch=7, priority=10, since=SINCE, console="http://127.0.0.1:8081"),
            MemberStatus("beta", "backup", epoch=7, priority=5),
            MemberStatus("gamma", "backup", epoch=6, may_campaign=False),
        ),
    )
    fields.update(changes)
    return NodeStatus(**fields)


class GroupJSONTests(unittest.TestCase):
    """/api/status of a group member: CONTRACT section 5's coordinator and members."""

    def test_the_coordinator_block_has_the_contract_fields(self):
        """kind, endpoints, connected, live, lease_ttl and lease_left, as plain JSON."""
        data = json.loads(json.dumps(group_status().to_json()))

        coordinator = data["coordinator"]
        self.assertEqual(
            {k: coordinator[k] for k in ("kind", "endpoints", "connected", "live", "lease_ttl", "lease_left")},
            {"kind": "etcd", "endpoints": ["http://127.0.0.1:2379"], "connected": True, "live": "alpha",
             "lease_ttl": 3, "lease_left": 2.4},
        )
        self.assertEqual(coordinator["live_epoch"], 7)
        self.assertEqual(coordinator["renewals"], 5)

    def test_members_are_keyed_by_name_with_role_and_epoch(self):
        """members: {"alpha": {"role": "live", "epoch": 7, ...}, ...}, every member."""
        data = json.loads(json.dumps(group_status().to_json()))

        self.assertEqual(sorted(data["members"]), ["alpha", "beta", "gamma"])
        self.assertEqual(data["members"]["alpha"], {
            "role": "live", "epoch": 7, "priority": 10, "may_campaign": True, "since": "2025-11-25T10:00:00.000Z",
            "console": "http://127.0.0.1:8081",
        })
        self.assertEqual(data["members"]["gamma"]["may_campaign"], False)
        self.assertIsNone(data["members"]["beta"]["since"])

    def test_lease_left_is_rounded_to_the_millisecond(self):
        """2.4004999 s left shows as 2.4; no lease shows as null."""
        data = group_status(coordinator=CoordinatorStatus(lease_left=2.4004999)).to_json()
        self.assertEqual(data["coordinator"]["lease_left"], 2.4)
        self.assertIsNone(group_status(coordinator=CoordinatorStatus()).to_json()["coordinator"]["lease_left"])

    def test_a_pair_status_has_neither_block(self):
        """Without a coordinator, the object has exactly the keys it had before groups."""
        data = NodeStatus(server="serv_a", role="live", epoch=3, since=SINCE, peer=PeerStatus(name="serv_b")).to_json()

        self.assertEqual(list(data), [
            "server", "role", "epoch", "since", "cause", "peer", "listeners", "heartbeats", "settings", "auth", "config",
            "transitions",
        ])

    def test_a_group_status_reads_back_from_its_json(self):
        """from_json(to_json()) keeps the coordinator facts and every member (not the histogram, which the JSON leaves out)."""
        status = group_status()

        back = NodeStatus.from_json(json.loads(json.dumps(status.to_json())))

        self.assertEqual(back.members, status.members)
        self.assertEqual(back.coordinator.live, "alpha")
        self.assertEqual(back.coordinator.endpoints, ("http://127.0.0.1:2379",))
        self.assertEqual(back.coordinator.lease_left, 2.4)
        self.assertTrue(back.group)

    def test_a_pair_status_reads_back_without_a_coordinator(self):
        """An object without the blocks (a pair, an older node) reads back as a pair's."""
        data = NodeStatus(server="serv_a", role="live", epoch=3, since=SINCE).to_json()

        back = NodeStatus.from_json(data)

        self.assertIsNone(back.coordinator)
        self.assertEqual(back.members, ())
        self.assertFalse(back.group)


class LeaseStatsTests(unittest.TestCase):
    """LeaseStats: one call per keepalive, the coordinator's counts out."""

    def test_nothing_recorded_is_all_zero(self):
        """A new LeaseStats: no renewals, no failures, every bucket 0, no error."""
        status = LeaseStats().status()

        self.assertEqual((status.renewals, status.renewal_failures, status.renewal_seconds_sum), (0, 0, 0.0))
        self.assertEqual(status.renewal_buckets, tuple((bound, 0) for bound in RENEWAL_BUCKETS))
        self.assertIsNone(status.last_error)

    def test_renewals_fill_cumulative_buckets(self):
        """Round trips of 3 ms, 30 ms and 3 s: counted, summed, and in the buckets at and above each."""
        stats = LeaseStats()
        for latency in (0.003, 0.03, 3.0):
            stats.renewed(latency)

        status = stats.status()

        self.assertEqual(status.renewals, 3)
        self.assertAlmostEqual(status.renewal_seconds_sum, 3.033)
        self.assertEqual(dict(status.renewal_buckets), {
            0.005: 1, 0.01: 1, 0.025: 1, 0.05: 2, 0.1: 2, 0.25: 2, 0.5: 2, 1.0: 2, 2.5: 2, float("inf"): 3,
        })

    def test_a_latency_on_a_bound_counts_in_that_bucket(self):
        """Prometheus buckets are "less than or equal": 0.1 s is in le=0.1."""
        stats = LeaseStats()
        stats.renewed(0.1)

        self.assertEqual(dict(stats.buckets)[0.1], 1)
        self.assertEqual(dict(stats.buckets)[0.05], 0)

    def test_a_failure_counts_and_is_the_last_error_until_a_renewal(self):
        """failed(why) counts and keeps why; the next answered keepalive clears it, not the count."""
        stats = LeaseStats()
        stats.failed("no answer in 1 s")

        self.assertEqual((stats.status().renewal_failures, stats.status().last_error), (1, "no answer in 1 s"))
        stats.renewed(0.01)
        self.assertEqual((stats.status().renewal_failures, stats.status().last_error), (1, None))
        self.assertEqual(stats.status().renewals, 1)

    def test_the_facts_given_complete_the_status(self):
        """status(**facts): the node's own facts beside the counts."""
        stats = LeaseStats()
        stats.renewed(0.002)

        status = stats.status(endpoints=("http://e:2379",), connected=True, live="beta", live_epoch=9, lease_ttl=3, lease_left=1.5)

        self.assertEqual(status, CoordinatorStatus(
            endpoints=("http://e:2379",), connected=True, live="beta", live_epoch=9, lease_ttl=3, lease_left=1.5,
            renewals=1, renewal_seconds_sum=0.002, renewal_buckets=stats.buckets,
        ))

    def test_a_status_does_not_change_with_later_renewals(self):
        """The snapshot is taken at one moment: later calls do not reach it."""
        stats = LeaseStats()
        status = stats.status()
        stats.renewed(0.01)

        self.assertEqual(status.renewals, 0)
        self.assertEqual(dict(status.renewal_buckets)[float("inf")], 0)
