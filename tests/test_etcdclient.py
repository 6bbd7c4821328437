"""
The etcd client (L{iwayfailover.coordinators.etcdclient}) against real
etcd processes on loopback: a one-member cluster shared by the module for
keys, leases, transactions and watches; a three-member one for moving
between endpoints; throwaway ones for auth and TLS. The watch's stream
parser is also fed chunks cut anywhere, in memory.

Trial test cases, as the rest of the suite: pytest-twisted's reactor
greenlet and trial's own reactor spinning do not mix in one pytest run (the
trial tests that follow fail with a dirty reactor). The clusters come from
pytest fixtures shared by the module, handed to each class.
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import time

import pytest
from twisted.internet import defer, reactor
from twisted.trial import unittest
from twisted.web.resource import Resource
from twisted.web.server import Site

from etcdharness import EtcdCluster, cluster_fixture, requires_etcd
from harness import allocate_port, temporary_directory, wait_for
from iwayfailover.coordinators.etcdclient import (
    EtcdClient, EtcdCompacted, EtcdError, EtcdUnavailable, KeyValue, Watch, WatchEvent,
)
from pki import Authority

TIMEOUT = 1.0

etcd = cluster_fixture(members=1)
etcd3 = cluster_fixture(members=3)


@pytest.fixture(scope="class")
def one_member(request, etcd):
    request.cls.etcd = etcd


@pytest.fixture(scope="class")
def three_members(request, etcd3):
    request.cls.etcd = etcd3


def within(d, seconds, what):
    """C{d}, failing with a message naming C{what} if it has not fired after C{seconds}."""

    def timed_out(failure):
        failure.trap(defer.TimeoutError)
        raise AssertionError(f"timed out after {seconds}s waiting for {what}")

    return d.addTimeout(seconds, reactor).addErrback(timed_out)


class Collector:
    """on_events for a watch: keeps every event, and fires a Deferred once a condition on them holds."""

    def __init__(self):
        self.events = []
        self.revisions = []
        self._waiting = []

    def __call__(self, events, revision):
        self.events.extend(events)
        self.revisions.append(revision)
        for condition, d in list(self._waiting):
            if condition(self.events):
                self._waiting.remove((condition, d))
                d.callback(list(self.events))

    def until(self, condition, seconds, what):
        if condition(self.events):
            return defer.succeed(list(self.events))
        d = defer.Deferred()
        self._waiting.append((condition, d))
        return within(d, seconds, what)


class ClientTestCase(unittest.TestCase):
    """Makes clients that are closed when the test ends, and a key prefix of the test's own."""

    def client(self, endpoints, timeout=TIMEOUT, **options):
        client = EtcdClient(reactor, endpoints, timeout, **options)
        self.addCleanup(client.close)
        return client

    @property
    def prefix(self):
        return f"/test/{self.id()}/"


@requires_etcd
@pytest.mark.usefixtures("one_member")
class LeaseTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_grant_keepalive_and_revoke_a_lease(self):
        """A lease is granted with the TTL asked for, a keepalive renews it to that TTL, revoke ends it."""
        client = self.client(self.etcd.endpoints)
        lease, ttl = yield client.grant(5)
        self.assertEqual(ttl, 5)
        self.assertEqual((yield client.keepalive(lease)), 5)
        yield client.revoke(lease)
        self.assertEqual((yield client.keepalive(lease)), 0)

    @defer.inlineCallbacks
    def test_keepalive_of_a_missing_lease_answers_zero_and_revoke_is_quiet(self):
        """etcd answers the keepalive of a lease it does not know without a TTL: 0; revoking it is not an error."""
        client = self.client(self.etcd.endpoints)
        self.assertEqual((yield client.keepalive(0x1234567)), 0)
        self.assertIsNone((yield client.revoke(0x1234567)))

    @defer.inlineCallbacks
    def test_a_short_lease_gets_at_least_what_was_asked(self):
        """grant(1) on the test cluster's raft timings: etcd grants at least 1 s (what it grants is what counts)."""
        client = self.client(self.etcd.endpoints)
        lease, ttl = yield client.grant(1)
        self.assertGreaterEqual(ttl, 1)
        yield client.revoke(lease)

    def test_a_lease_ttl_is_whole_seconds(self):
        """grant() refuses a TTL that is not a whole number of seconds of at least 1, naming it."""
        client = self.client(self.etcd.endpoints)
        for bad in (0, 2.5, "3", True):
            failure = self.failureResultOf(client.grant(bad), ValueError)
            self.assertIn(repr(bad), str(failure.value))


@requires_etcd
@pytest.mark.usefixtures("one_member")
class KeyTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_put_get_and_delete(self):
        """A key put is read back with its revisions; a prefix read finds every key under it; a deleted key is gone."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        first = yield client.put(prefix + "a", b"\x00one")
        second = yield client.put(prefix + "b", b"two")
        self.assertGreater(second, first)
        revision, kvs = yield client.get(prefix + "a")
        self.assertGreaterEqual(revision, second)
        self.assertEqual(kvs, [KeyValue(prefix + "a", b"\x00one", first, first, 1, 0)])
        _, kvs = yield client.get(prefix, prefix=True)
        self.assertEqual([(kv.key, kv.value) for kv in kvs], [(prefix + "a", b"\x00one"), (prefix + "b", b"two")])
        yield client.delete(prefix + "a")
        _, kvs = yield client.get(prefix + "a")
        self.assertEqual(kvs, [])

    @defer.inlineCallbacks
    def test_create_if_absent_race_has_exactly_one_winner(self):
        """Two clients create the same key at once: one wins with the key's create revision, the other sees the holder."""
        one, two, prefix = self.client(self.etcd.endpoints), self.client(self.etcd.endpoints), self.prefix
        (lease_one, _), (lease_two, _) = yield defer.gatherResults([one.grant(5), two.grant(5)])
        results = yield defer.gatherResults([
            one.create_if_absent(prefix + "live", b"one", lease_one),
            two.create_if_absent(prefix + "live", b"two", lease_two),
        ])
        self.assertEqual(sorted(won for won, _, _ in results), [False, True])
        (_, created, nobody), (_, _, holder) = sorted(results, key=lambda r: not r[0])
        self.assertIsNone(nobody)
        winner = (lease_one, b"one") if results[0][0] else (lease_two, b"two")
        self.assertEqual((holder.lease, holder.value, holder.create_revision), (*winner, created))
        _, (kv,) = yield one.get(prefix + "live")
        self.assertEqual(kv.create_revision, created)
        yield defer.gatherResults([one.revoke(lease_one), two.revoke(lease_two)])

    @defer.inlineCallbacks
    def test_create_if_absent_deletes_the_other_keys_in_the_same_transaction(self):
        """A won campaign deletes the keys in also_delete (the handover note)."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        lease, _ = yield client.grant(5)
        yield client.put(prefix + "handover", b'{"from": "a", "to": "b"}')
        won, revision, _ = yield client.create_if_absent(prefix + "live", b"b", lease, also_delete=[prefix + "handover"])
        self.assertTrue(won)
        _, kvs = yield client.get(prefix, prefix=True)
        self.assertEqual([(kv.key, kv.create_revision) for kv in kvs], [(prefix + "live", revision)])
        yield client.revoke(lease)

    @defer.inlineCallbacks
    def test_a_lost_create_if_absent_leaves_the_other_keys(self):
        """A lost campaign deletes nothing: the handover note stays."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        (mine, _), (other, _) = yield defer.gatherResults([client.grant(5), client.grant(5)])
        yield client.create_if_absent(prefix + "live", b"a", mine)
        yield client.put(prefix + "handover", b"note")
        won, _, holder = yield client.create_if_absent(prefix + "live", b"b", other, also_delete=[prefix + "handover"])
        self.assertEqual((won, holder.lease), (False, mine))
        _, kvs = yield client.get(prefix, prefix=True)
        self.assertEqual([kv.key for kv in kvs], [prefix + "handover", prefix + "live"])
        yield defer.gatherResults([client.revoke(mine), client.revoke(other)])

    @defer.inlineCallbacks
    def test_delete_if_lease_refuses_another_lease(self):
        """delete_if_lease with a lease that does not hold the key changes nothing and answers False."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        (mine, _), (other, _) = yield defer.gatherResults([client.grant(5), client.grant(5)])
        yield client.create_if_absent(prefix + "live", b"me", mine)
        self.assertIs((yield client.delete_if_lease(prefix + "live", other, also_put=(prefix + "handover", b"x"))), False)
        _, kvs = yield client.get(prefix, prefix=True)
        self.assertEqual([(kv.key, kv.lease) for kv in kvs], [(prefix + "live", mine)])
        yield defer.gatherResults([client.revoke(mine), client.revoke(other)])

    @defer.inlineCallbacks
    def test_delete_if_lease_with_the_holding_lease_deletes_and_puts(self):
        """delete_if_lease with the key's own lease deletes it and writes also_put in the same transaction."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        mine, _ = yield client.grant(5)
        yield client.create_if_absent(prefix + "live", b"me", mine)
        self.assertIs((yield client.delete_if_lease(prefix + "live", mine, also_put=(prefix + "handover", b"note"))), True)
        _, kvs = yield client.get(prefix, prefix=True)
        self.assertEqual([(kv.key, kv.value, kv.lease) for kv in kvs], [(prefix + "handover", b"note", 0)])
        yield client.revoke(mine)

    @defer.inlineCallbacks
    def test_put_if_lease_renews_only_the_holders_key(self):
        """put_if_lease writes the key again (a new mod revision, the same create revision) only under its own lease."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        (mine, _), (other, _) = yield defer.gatherResults([client.grant(5), client.grant(5)])
        _, created, _ = yield client.create_if_absent(prefix + "live", b"one", mine)
        self.assertIs((yield client.put_if_lease(prefix + "live", b"two", other)), False)
        self.assertIs((yield client.put_if_lease(prefix + "live", b"two", mine)), True)
        _, (kv,) = yield client.get(prefix + "live")
        self.assertEqual((kv.value, kv.lease, kv.create_revision), (b"two", mine, created))
        self.assertGreater(kv.mod_revision, created)
        yield client.delete(prefix + "live")
        self.assertIs((yield client.put_if_lease(prefix + "live", b"three", mine)), False, "made a key that was gone")
        _, kvs = yield client.get(prefix + "live")
        self.assertEqual(kvs, [])
        yield defer.gatherResults([client.revoke(mine), client.revoke(other)])

    @defer.inlineCallbacks
    def test_delete_if_revision_deletes_only_the_revision_seen(self):
        """delete_if_revision refuses once the key has been written again since the revision given."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        lease, _ = yield client.grant(5)
        yield client.create_if_absent(prefix + "live", b"one", lease)
        _, (seen,) = yield client.get(prefix + "live")
        yield client.put_if_lease(prefix + "live", b"two", lease)
        self.assertIs((yield client.delete_if_revision(prefix + "live", seen.mod_revision)), False)
        _, (now,) = yield client.get(prefix + "live")
        self.assertIs((yield client.delete_if_revision(prefix + "live", now.mod_revision)), True)
        _, kvs = yield client.get(prefix + "live")
        self.assertEqual(kvs, [])
        yield client.revoke(lease)

    @defer.inlineCallbacks
    def test_errors_from_etcd_name_the_endpoint_and_etcds_message(self):
        """A put under a lease etcd does not know fails with etcd's message, its code and the endpoint."""
        client = self.client(self.etcd.endpoints)
        error = yield self.assertFailure(client.put(self.prefix + "k", b"v", lease=0x7777), EtcdError)
        self.assertIn("requested lease not found", str(error))
        self.assertEqual((error.endpoint, error.code), (self.etcd.endpoints[0], 5))


@requires_etcd
@pytest.mark.usefixtures("one_member")
class WatchTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_lease_expiry_deletes_the_key_and_a_watch_sees_the_delete(self):
        """A key under a lease that is not kept alive is deleted at the TTL; a watch from after its creation sees the DELETE."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        lease, ttl = yield client.grant(1)
        won, created, _ = yield client.create_if_absent(prefix + "live", b"me", lease)
        self.assertTrue(won)
        seen = Collector()
        watch = client.watch(prefix + "live", False, created + 1, seen)
        started = time.monotonic()
        events = yield seen.until(lambda events: events, ttl + 5, "the DELETE of the expired key")
        self.assertEqual([(e.type, e.kv.key) for e in events], [("DELETE", prefix + "live")])
        self.assertLess(time.monotonic() - started, ttl + 3)
        _, kvs = yield client.get(prefix + "live")
        self.assertEqual(kvs, [])
        watch.cancel()
        self.assertIsNone((yield watch.done))

    @defer.inlineCallbacks
    def test_watch_from_a_revision_sees_every_event_in_order(self):
        """A prefix watch from an old revision replays what happened since, in order, then what happens next."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        first = yield client.put(prefix + "a", b"1")
        yield client.put(prefix + "b", b"2")
        yield client.delete(prefix + "a")
        yield client.put(prefix[:-1] + "-not-under-it", b"x")
        seen = Collector()
        watch = client.watch(prefix, True, first, seen)
        yield seen.until(lambda events: len(events) >= 3, 5, "the three past events")
        yield client.put(prefix + "a", b"3")
        events = yield seen.until(lambda events: len(events) >= 4, 5, "the new event")
        self.assertEqual([(e.type, e.kv.key[len(prefix):], e.kv.value) for e in events], [
            ("PUT", "a", b"1"), ("PUT", "b", b"2"), ("DELETE", "a", b""), ("PUT", "a", b"3"),
        ])
        revisions = [e.kv.mod_revision for e in events]
        self.assertEqual(revisions, sorted(revisions))
        self.assertEqual(revisions[0], first)
        watch.cancel()
        yield watch.done

    @defer.inlineCallbacks
    def test_a_watch_from_a_compacted_revision_ends_with_an_error(self):
        """etcd cancels a watch whose start revision is compacted: done fails with EtcdCompacted naming the oldest revision kept."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        first = yield client.put(prefix + "k", b"1")
        last = yield client.put(prefix + "k", b"2")
        self.etcd.etcdctl("compaction", str(last))
        watch = client.watch(prefix + "k", False, first, Collector())
        error = yield self.assertFailure(within(watch.done, 5, "the watch to end"), EtcdCompacted)
        self.assertEqual(error.compact_revision, last)


class WatchStreamTests(unittest.SynchronousTestCase):
    """The watch's handling of its stream, fed in memory."""

    def test_the_watch_stream_parser_takes_chunks_cut_anywhere(self):
        """Messages split across chunks, and several in one chunk, give the same events in order; progress is an empty batch."""
        lines = [
            {"result": {"header": {"revision": "7"}, "created": True}},
            {"result": {"header": {"revision": "9"}, "events": [
                {"kv": {"key": "L2E=", "value": "MQ==", "create_revision": "8", "mod_revision": "8", "version": "1"}},
                {"type": "DELETE", "kv": {"key": "L2E=", "mod_revision": "9"}},
            ]}},
            {"result": {"header": {"revision": "9"}}},
            {"result": {"header": {"revision": "10"}, "events": [
                {"kv": {"key": "L2I=", "value": "Mg==", "create_revision": "10", "mod_revision": "10", "version": "1",
                        "lease": "42"}},
            ]}},
        ]
        stream = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
        expected = [
            ([WatchEvent("PUT", KeyValue("/a", b"1", 8, 8, 1, 0)), WatchEvent("DELETE", KeyValue("/a", b"", 0, 9, 0, 0))], 9),
            ([], 9),
            ([WatchEvent("PUT", KeyValue("/b", b"2", 10, 10, 1, 42))], 10),
        ]
        for cuts in ([1], [5, 60], [len(stream) - 1], list(range(1, len(stream))), [stream.index(b"\n") + 1]):
            batches = []
            watch = Watch(lambda events, revision: batches.append((events, revision)))
            edges = [0, *cuts, len(stream)]
            for start, end in zip(edges, edges[1:]):
                watch.feed(stream[start:end])
            self.assertEqual(batches, expected, cuts)
            self.assertNoResult(watch.done)

    def test_bad_json_on_the_watch_stream_ends_the_watch_with_an_error(self):
        """A line of the stream that is not JSON ends the watch with an EtcdError that shows it, and nothing escapes."""
        batches = []
        watch = Watch(lambda events, revision: batches.append(events))
        watch.feed(b'{"result": {"header": {"revision": "3"}, "created": true}}\n{"result": nope}\n')
        self.assertEqual(batches, [])
        self.assertIn("nope", str(self.failureResultOf(watch.done, EtcdError).value))

    def test_a_compaction_cancel_ends_the_watch_with_etcdcompacted(self):
        """etcd's answer to a compacted start revision (canceled, compact_revision) fails the watch with EtcdCompacted."""
        watch = Watch(lambda events, revision: None)
        watch.feed(b'{"result": {"header": {"revision": "3"}, "created": true}}\n')
        watch.feed(b'{"result": {"header": {}, "canceled": true, "compact_revision": "6"}}\n')
        self.assertEqual(self.failureResultOf(watch.done, EtcdCompacted).value.compact_revision, 6)

    def test_an_error_in_on_events_ends_the_watch_and_does_not_escape(self):
        """on_events raising ends the watch with an EtcdError naming the exception (and it is logged)."""

        def broken(events, revision):
            raise ZeroDivisionError("oops")

        watch = Watch(broken)
        watch.feed(b'{"result": {"header": {"revision": "3"}, "events": [{"kv": {"key": "L2E="}}]}}\n')
        self.assertIn("ZeroDivisionError: oops", str(self.failureResultOf(watch.done, EtcdError).value))
        self.assertEqual(len(self.flushLoggedErrors(ZeroDivisionError)), 1)


class Garbage(Resource):
    """An HTTP server that is not etcd: answers every POST with 200 and text that is not JSON."""

    isLeaf = True

    def render_POST(self, request):
        return b"<html>not etcd</html>"


class EndpointTests(ClientTestCase):
    """Endpoints that are not etcd members that answer."""

    @defer.inlineCallbacks
    def test_an_answer_that_is_not_json_is_an_etcd_error(self):
        """An endpoint answering something that is not JSON gives an EtcdError naming it (not a crash, not another try)."""
        port = reactor.listenTCP(0, Site(Garbage()), interface="127.0.0.1")
        self.addCleanup(port.stopListening)
        endpoint = f"http://127.0.0.1:{port.getHost().port}"
        client = self.client([endpoint])
        error = yield self.assertFailure(client.get("/k"), EtcdError)
        self.assertNotIsInstance(error, EtcdUnavailable)
        self.assertEqual(error.endpoint, endpoint)
        self.assertIn("not JSON", error.message)
        watch = client.watch("/k", False, 0, Collector())
        yield self.assertFailure(within(watch.done, 5, "the watch on a server that is not etcd to fail"), EtcdError)

    @defer.inlineCallbacks
    def test_unavailable_names_every_endpoint_and_why(self):
        """With no endpoint answering, EtcdUnavailable names each one: refused, and no answer within the timeout."""
        silent_socket = socket.socket()
        self.addCleanup(silent_socket.close)
        silent_socket.bind(("127.0.0.1", allocate_port()))
        silent_socket.listen(8)  # the kernel accepts; nobody answers
        refused = f"http://127.0.0.1:{allocate_port()}"
        silent = f"http://127.0.0.1:{silent_socket.getsockname()[1]}"
        client = self.client([refused, silent], timeout=0.3)
        error = yield self.assertFailure(client.get("/k"), EtcdUnavailable)
        (first, why_first), (second, why_second) = error.failures
        self.assertEqual((first, second), (refused, silent))
        self.assertIn("refused", why_first.lower())
        self.assertEqual(why_second, "no answer within 0.3s")
        self.assertIn(refused, str(error))
        self.assertIn(silent, str(error))

    def test_endpoints_must_be_http_urls(self):
        """A bad endpoint is refused at once, naming it and what is expected."""
        for bad in ("127.0.0.1:2379", "ftp://a:1", "http://a:99999", "http://a:1/v3"):
            with self.assertRaises(ValueError) as caught:
                EtcdClient(reactor, [bad], 1.0)
            self.assertIn(repr(bad), str(caught.exception))


def follower(cluster):
    """The index of a running member that is not the leader."""
    leader = cluster.leader()
    return next(i for i, m in enumerate(cluster.members) if i != leader and m.alive())


@requires_etcd
@pytest.mark.usefixtures("three_members")
class FailoverTests(ClientTestCase):
    def endpoints_from(self, index):
        """The cluster's endpoints, the one of member C{index} first."""
        return [self.etcd.endpoints[index]] + [e for i, e in enumerate(self.etcd.endpoints) if i != index]

    @defer.inlineCallbacks
    def test_the_client_moves_to_another_endpoint_when_the_first_is_killed(self):
        """kill -9 of the member the client uses: the next request is answered by another, which the client keeps."""
        index = follower(self.etcd)
        endpoints = self.endpoints_from(index)
        client, prefix = self.client(endpoints), self.prefix
        yield client.put(prefix + "k", b"1")
        self.assertEqual(client.current, endpoints[0])
        self.etcd.kill(index)
        self.addCleanup(self.etcd.restart, index)
        _, (kv,) = yield client.get(prefix + "k")
        self.assertEqual(kv.value, b"1")
        moved = client.current
        self.assertNotEqual(moved, endpoints[0])
        yield client.put(prefix + "k", b"2")
        self.assertEqual(client.current, moved)

    @defer.inlineCallbacks
    def test_killing_the_leader_a_request_is_answered_once_another_is_elected(self):
        """kill -9 of the leader the client uses: refused there, a follower waits for the election (or times out), one answers."""
        index = self.etcd.leader()
        endpoints = self.endpoints_from(index)
        client, prefix = self.client(endpoints, timeout=1.5), self.prefix
        yield client.put(prefix + "k", b"1")
        self.etcd.kill(index)
        self.addCleanup(self.etcd.restart, index)
        yield client.put(prefix + "k", b"2")
        self.assertNotEqual(client.current, endpoints[0])
        _, (kv,) = yield client.get(prefix + "k")
        self.assertEqual(kv.value, b"2")

    @defer.inlineCallbacks
    def test_a_paused_member_times_out_and_another_answers(self):
        """SIGSTOP of the member the client uses: that try times out after the timeout and another member answers."""
        index = follower(self.etcd)
        endpoints = self.endpoints_from(index)
        client = self.client(endpoints, timeout=0.5)
        yield client.put(self.prefix + "k", b"1")
        self.etcd.pause(index)
        self.addCleanup(self.etcd.resume, index)
        started = time.monotonic()
        lease, ttl = yield client.grant(3)
        elapsed = time.monotonic() - started
        self.assertTrue(0.5 <= elapsed < 1.5, elapsed)
        self.assertNotEqual(client.current, endpoints[0])
        self.assertEqual((yield client.keepalive(lease)), 3)


PASSWORD = "s3cret pass"


@pytest.fixture(scope="class")
def auth_cluster(request):
    """A throwaway one-member cluster with auth on (user root)."""
    with EtcdCluster(1) as cluster:
        cluster.enable_auth(PASSWORD)
        request.cls.etcd = cluster
        yield cluster


@requires_etcd
@pytest.mark.usefixtures("auth_cluster")
class AuthTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_auth_with_the_right_password_reads_writes_and_watches(self):
        """With user and password the client authenticates and its requests and watches pass."""
        client = self.client(self.etcd.endpoints, user="root", password=PASSWORD)
        revision = yield client.put("/auth/k", b"v")
        seen = Collector()
        watch = client.watch("/auth/k", False, revision, seen)
        yield seen.until(lambda events: events, 5, "the watch to replay the put")
        watch.cancel()
        _, (kv,) = yield client.get("/auth/k")
        self.assertEqual(kv.value, b"v")

    @defer.inlineCallbacks
    def test_auth_with_a_wrong_password_is_refused_with_etcds_message(self):
        """A wrong password: EtcdError with etcd's message, not an endpoint failure."""
        client = self.client(self.etcd.endpoints, user="root", password="wrong")
        error = yield self.assertFailure(client.get("/auth/k"), EtcdError)
        self.assertNotIsInstance(error, EtcdUnavailable)
        self.assertIn("authentication failed", error.message)

    @defer.inlineCallbacks
    def test_without_credentials_an_auth_cluster_refuses(self):
        """No user given to a cluster with auth on: etcd's refusal comes back as an EtcdError."""
        client = self.client(self.etcd.endpoints)
        error = yield self.assertFailure(client.get("/auth/k"), EtcdError)
        self.assertIn("user name is empty", error.message)

    def forget_tokens(self):
        """etcd forgets every token it gave when auth is turned off and on again."""
        self.etcd.etcdctl("auth", "disable", user=f"root:{PASSWORD}")
        self.etcd.etcdctl("auth", "enable")

    @defer.inlineCallbacks
    def test_an_invalidated_token_is_replaced_once(self):
        """A request refused for an invalid token: the client authenticates again and the request passes."""
        client = self.client(self.etcd.endpoints, user="root", password=PASSWORD)
        yield client.put("/auth/k", b"1")
        self.forget_tokens()
        yield client.put("/auth/k", b"2")
        _, (kv,) = yield client.get("/auth/k")
        self.assertEqual(kv.value, b"2")

    @defer.inlineCallbacks
    def test_a_watch_with_an_invalidated_token_is_created_with_a_new_one(self):
        """etcd cancels a watch created with an invalid token: the client authenticates again and creates it, once."""
        client = self.client(self.etcd.endpoints, user="root", password=PASSWORD)
        revision = yield client.put("/auth/w", b"1")
        self.forget_tokens()
        seen = Collector()
        watch = client.watch("/auth/w", False, revision, seen)
        events = yield seen.until(lambda events: events, 5, "the watch to pass with a new token")
        self.assertEqual(events[0].kv.value, b"1")
        watch.cancel()


@pytest.fixture(scope="class")
def tls_cluster(request, tmp_path_factory):
    """A one-member cluster serving https with a certificate for etcd.example and 127.0.0.1 only, requiring client certificates."""
    folder = str(tmp_path_factory.mktemp("etcd-tls"))
    ca = Authority(folder)
    server = ca.issue("etcd-server", dns=("etcd.example",), ips=("127.0.0.1",))
    client = ca.issue("etcd-client", dns=(), ips=())
    with EtcdCluster(1, tls=(*server, ca.path), client_ca=ca.path, client=client) as cluster:
        request.cls.etcd, request.cls.ca, request.cls.pair = cluster, ca.path, client
        request.cls.folder = folder
        yield cluster


@requires_etcd
@pytest.mark.usefixtures("tls_cluster")
class TLSTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_tls_with_the_ca_and_a_client_certificate(self):
        """https to etcd verified against the CA, with a client certificate: requests pass."""
        cert, key = self.pair
        client = self.client(self.etcd.endpoints, cacert=self.ca, cert=cert, key=key)
        yield client.put("/tls/k", b"v")
        _, (kv,) = yield client.get("/tls/k")
        self.assertEqual(kv.value, b"v")

    @defer.inlineCallbacks
    def test_tls_without_a_client_certificate_is_refused(self):
        """etcd requires a client certificate: without one the endpoint fails, and the reason says TLS."""
        client = self.client(self.etcd.endpoints, cacert=self.ca)
        error = yield self.assertFailure(client.get("/tls/k"), EtcdUnavailable)
        self.assertIn("TLS handshake failed", error.failures[0][1])

    @defer.inlineCallbacks
    def test_tls_to_a_server_whose_certificate_names_another_host_is_refused(self):
        """The same member reached as localhost (its certificate names etcd.example and 127.0.0.1): refused, saying why."""
        cert, key = self.pair
        client = self.client([f"https://localhost:{self.etcd.members[0].client_port}"], cacert=self.ca, cert=cert, key=key)
        error = yield self.assertFailure(client.get("/tls/k"), EtcdUnavailable)
        self.assertIn("does not match the host name", error.failures[0][1])

    @defer.inlineCallbacks
    def test_tls_with_another_ca_is_refused(self):
        """A CA that did not sign etcd's certificate: the handshake fails and the endpoint counts as failed."""
        other = Authority(temporary_directory(self), name="another CA")
        cert, key = self.pair
        client = self.client(self.etcd.endpoints, cacert=other.path, cert=cert, key=key)
        error = yield self.assertFailure(client.get("/tls/k"), EtcdUnavailable)
        self.assertIn("certificate verify failed", error.failures[0][1])


@requires_etcd
@pytest.mark.usefixtures("one_member")
class CloseTests(ClientTestCase):
    @defer.inlineCallbacks
    def test_close_ends_watches_and_refuses_new_requests(self):
        """close() cancels the client's watches (done fires with None) and later requests fail with an EtcdError."""
        client, prefix = self.client(self.etcd.endpoints), self.prefix
        revision = yield client.put(prefix + "k", b"1")
        seen = Collector()
        watch = client.watch(prefix + "k", False, revision, seen)
        yield seen.until(lambda events: events, 5, "the watch to start")
        yield client.close()
        self.assertIsNone((yield watch.done))
        yield self.assertFailure(client.get(prefix + "k"), EtcdError)

    @defer.inlineCallbacks
    def test_cancelling_a_request_tries_no_other_endpoint(self):
        """A request cancelled by its caller fails with CancelledError and leaves nothing behind."""
        client = self.client(self.etcd.endpoints)
        d = client.get(self.prefix + "k")
        d.cancel()
        yield self.assertFailure(d, defer.CancelledError)


# A test process that leaves without stopping its cluster: normally (atexit
# stops it) or killed (the kernel kills etcd with it).
LEAVER = """
import os, sys
from etcdharness import EtcdCluster
cluster = EtcdCluster(1)
cluster.pause(0)
print(cluster.members[0].process.pid, cluster.folder, flush=True)
if sys.argv[1] == "kill":
    os.kill(os.getpid(), 9)
"""


def gone(pid):
    """Has process C{pid} ended (reaped, or a zombie left for init to reap)?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


@requires_etcd
class HarnessTests(unittest.TestCase):
    def leave(self, how):
        child = subprocess.run(
            [sys.executable, "-c", LEAVER, how], cwd=os.path.dirname(os.path.abspath(__file__)),
            capture_output=True, text=True, timeout=60,
        )
        pid, folder = child.stdout.split()
        self.addCleanup(shutil.rmtree, folder, True)
        return int(pid), folder

    def test_a_test_process_that_exits_leaves_no_etcd_behind(self):
        """A cluster never stopped by its test process (a member even paused) is killed and its folder removed at exit."""
        pid, folder = self.leave("exit")
        wait_for(lambda: gone(pid), 10, f"etcd {pid} to be gone")
        self.assertFalse(os.path.exists(folder))

    def test_a_killed_test_process_leaves_no_etcd_behind(self):
        """kill -9 of the test process: the kernel kills its etcd (a paused one too)."""
        pid, _ = self.leave("kill")
        wait_for(lambda: gone(pid), 10, f"etcd {pid} to be gone")
