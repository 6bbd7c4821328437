"""
The etcd client (L{iwayfailover.coordinators.etcdclient}) against real
etcd processes on loopback: a one-member cluster shared by the module for
keys, leases, transactions and watches; a three-member one for moving
between endpoints; throwaway ones for auth and TLS. The watch's stream
parser is also fed chunks cut anywhere, in memory.
"""

import json
import os
import socket
import time
import urllib.request

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.web.resource import Resource
from twisted.web.server import Site

from etcdharness import EtcdCluster, cluster_fixture, requires_etcd
from harness import allocate_port
from iwayfailover.coordinators.etcdclient import (
    EtcdClient, EtcdCompacted, EtcdError, EtcdUnavailable, KeyValue, Watch, WatchEvent,
)
from pki import Authority

pytestmark = requires_etcd

TIMEOUT = 1.0

etcd = cluster_fixture(members=1)
etcd3 = cluster_fixture(members=3)


@pytest.fixture
def clients():
    """make(endpoints, **options): EtcdClients that are all closed when the test ends."""
    made = []

    def make(endpoints, timeout=TIMEOUT, **options):
        client = EtcdClient(reactor, endpoints, timeout, **options)
        made.append(client)
        return client

    yield make
    for client in made:
        pytest_twisted.blockon(client.close())


@pytest.fixture
def prefix(request):
    """Keys of this test only, in the shared cluster."""
    return f"/test/{request.node.name}/"


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


# -- leases ------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_grant_keepalive_and_revoke_a_lease(etcd, clients):
    """A lease is granted with the TTL asked for, a keepalive renews it to that TTL, revoke ends it."""
    client = clients(etcd.endpoints)
    lease, ttl = yield client.grant(5)
    assert lease > 0 and ttl == 5
    assert (yield client.keepalive(lease)) == 5
    yield client.revoke(lease)
    assert (yield client.keepalive(lease)) == 0


@pytest_twisted.inlineCallbacks
def test_keepalive_of_a_missing_lease_answers_zero_and_revoke_is_quiet(etcd, clients):
    """etcd answers the keepalive of a lease it does not know without a TTL: 0; revoking it is not an error."""
    client = clients(etcd.endpoints)
    assert (yield client.keepalive(0x1234567)) == 0
    assert (yield client.revoke(0x1234567)) is None


@pytest_twisted.inlineCallbacks
def test_a_short_lease_gets_at_least_what_was_asked(etcd, clients):
    """grant(1) on these raft timings: etcd grants a TTL of at least 1 s (what it grants is what counts)."""
    client = clients(etcd.endpoints)
    lease, ttl = yield client.grant(1)
    assert ttl >= 1
    yield client.revoke(lease)


# -- keys and transactions ----------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_put_get_and_delete(etcd, clients, prefix):
    """A key put is read back with its revisions; a prefix read finds every key under it; a deleted key is gone."""
    client = clients(etcd.endpoints)
    first = yield client.put(prefix + "a", b"\x00one")
    second = yield client.put(prefix + "b", b"two")
    assert second > first
    revision, kvs = yield client.get(prefix + "a")
    assert revision >= second
    assert kvs == [KeyValue(prefix + "a", b"\x00one", first, first, 1, 0)]
    _, kvs = yield client.get(prefix, prefix=True)
    assert [(kv.key, kv.value) for kv in kvs] == [(prefix + "a", b"\x00one"), (prefix + "b", b"two")]
    yield client.delete(prefix + "a")
    _, kvs = yield client.get(prefix + "a")
    assert kvs == []


@pytest_twisted.inlineCallbacks
def test_create_if_absent_race_has_exactly_one_winner(etcd, clients, prefix):
    """Two clients create the same key at once: one wins with the key's create revision, the other sees the holder."""
    one, two = clients(etcd.endpoints), clients(etcd.endpoints)
    (lease_one, _), (lease_two, _) = yield defer.gatherResults([one.grant(5), two.grant(5)])
    results = yield defer.gatherResults([
        one.create_if_absent(prefix + "live", b"one", lease_one),
        two.create_if_absent(prefix + "live", b"two", lease_two),
    ])
    winners = [r for r in results if r[0]]
    losers = [r for r in results if not r[0]]
    assert len(winners) == 1 and len(losers) == 1
    (_, created, nobody), (_, _, holder) = winners[0], losers[0]
    assert nobody is None
    winner_lease, winner_value = (lease_one, b"one") if results[0][0] else (lease_two, b"two")
    assert (holder.value, holder.lease, holder.create_revision) == (winner_value, winner_lease, created)
    _, (kv,) = yield one.get(prefix + "live")
    assert kv.create_revision == created
    yield defer.gatherResults([one.revoke(lease_one), two.revoke(lease_two)])


@pytest_twisted.inlineCallbacks
def test_create_if_absent_deletes_the_other_keys_in_the_same_transaction(etcd, clients, prefix):
    """A won campaign deletes the keys in also_delete (the handover note); a lost one leaves them."""
    client = clients(etcd.endpoints)
    lease, _ = yield client.grant(5)
    yield client.put(prefix + "handover", b'{"from": "a", "to": "b"}')
    won, revision, _ = yield client.create_if_absent(prefix + "live", b"b", lease, also_delete=[prefix + "handover"])
    assert won
    _, kvs = yield client.get(prefix, prefix=True)
    assert [(kv.key, kv.create_revision) for kv in kvs] == [(prefix + "live", revision)]
    yield client.revoke(lease)


@pytest_twisted.inlineCallbacks
def test_delete_if_lease_refuses_another_lease(etcd, clients, prefix):
    """delete_if_lease with a lease that does not hold the key changes nothing and answers False."""
    client = clients(etcd.endpoints)
    (mine, _), (other, _) = yield defer.gatherResults([client.grant(5), client.grant(5)])
    yield client.create_if_absent(prefix + "live", b"me", mine)
    assert (yield client.delete_if_lease(prefix + "live", other, also_put=(prefix + "handover", b"x"))) is False
    _, kvs = yield client.get(prefix, prefix=True)
    assert [(kv.key, kv.lease) for kv in kvs] == [(prefix + "live", mine)]
    yield defer.gatherResults([client.revoke(mine), client.revoke(other)])


@pytest_twisted.inlineCallbacks
def test_delete_if_lease_with_the_holding_lease_deletes_and_puts(etcd, clients, prefix):
    """delete_if_lease with the key's own lease deletes it and writes also_put in the same transaction."""
    client = clients(etcd.endpoints)
    mine, _ = yield client.grant(5)
    yield client.create_if_absent(prefix + "live", b"me", mine)
    assert (yield client.delete_if_lease(prefix + "live", mine, also_put=(prefix + "handover", b"note"))) is True
    _, kvs = yield client.get(prefix, prefix=True)
    assert [(kv.key, kv.value, kv.lease) for kv in kvs] == [(prefix + "handover", b"note", 0)]
    yield client.revoke(mine)


@pytest_twisted.inlineCallbacks
def test_errors_from_etcd_name_the_endpoint_and_etcds_message(etcd, clients, prefix):
    """A put under a lease etcd does not know fails with etcd's message and the endpoint."""
    client = clients(etcd.endpoints)
    with pytest.raises(EtcdError) as caught:
        yield client.put(prefix + "k", b"v", lease=0x7777)
    assert "requested lease not found" in str(caught.value)
    assert caught.value.endpoint == etcd.endpoints[0] and caught.value.code == 5


# -- watches ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_lease_expiry_deletes_the_key_and_a_watch_sees_the_delete(etcd, clients, prefix):
    """A key under a lease that is not kept alive is deleted at the TTL; a watch from after its creation sees the DELETE."""
    client = clients(etcd.endpoints)
    lease, ttl = yield client.grant(1)
    won, created, _ = yield client.create_if_absent(prefix + "live", b"me", lease)
    assert won
    seen = Collector()
    watch = client.watch(prefix + "live", False, created + 1, seen)
    started = time.monotonic()
    events = yield seen.until(lambda events: events, ttl + 5, "the DELETE of the expired key")
    assert [(e.type, e.kv.key) for e in events] == [("DELETE", prefix + "live")]
    assert time.monotonic() - started < ttl + 3
    _, kvs = yield client.get(prefix + "live")
    assert kvs == []
    watch.cancel()
    assert (yield watch.done) is None


@pytest_twisted.inlineCallbacks
def test_watch_from_a_revision_sees_every_event_in_order(etcd, clients, prefix):
    """A prefix watch from an old revision replays what happened since, in order, then what happens next."""
    client = clients(etcd.endpoints)
    first = yield client.put(prefix + "a", b"1")
    yield client.put(prefix + "b", b"2")
    yield client.delete(prefix + "a")
    seen = Collector()
    watch = client.watch(prefix, True, first, seen)
    yield seen.until(lambda events: len(events) >= 3, 5, "the three past events")
    yield client.put(prefix + "a", b"3")
    events = yield seen.until(lambda events: len(events) >= 4, 5, "the new event")
    assert [(e.type, e.kv.key[len(prefix):], e.kv.value) for e in events] == [
        ("PUT", "a", b"1"), ("PUT", "b", b"2"), ("DELETE", "a", b""), ("PUT", "a", b"3"),
    ]
    revisions = [e.kv.mod_revision for e in events]
    assert revisions == sorted(revisions) and revisions[0] == first
    watch.cancel()
    yield watch.done


@pytest_twisted.inlineCallbacks
def test_a_watch_from_a_compacted_revision_ends_with_an_error(etcd, clients, prefix):
    """etcd cancels a watch whose start revision is compacted: done fails with EtcdCompacted naming the oldest revision kept."""
    client = clients(etcd.endpoints)
    first = yield client.put(prefix + "k", b"1")
    last = yield client.put(prefix + "k", b"2")
    etcd.etcdctl("compaction", str(last))
    watch = client.watch(prefix + "k", False, first, Collector())
    with pytest.raises(EtcdCompacted) as caught:
        yield within(watch.done, 5, "the watch to end")
    assert caught.value.compact_revision == last


def test_the_watch_stream_parser_takes_chunks_cut_anywhere():
    """Messages split across chunks, and several in one chunk, give the same events in order; progress is an empty batch."""
    lines = [
        {"result": {"header": {"revision": "7"}, "created": True}},
        {"result": {"header": {"revision": "9"}, "events": [
            {"kv": {"key": "L2E=", "value": "MQ==", "create_revision": "8", "mod_revision": "8", "version": "1"}},
            {"type": "DELETE", "kv": {"key": "L2E=", "mod_revision": "9"}},
        ]}},
        {"result": {"header": {"revision": "9"}}},
        {"result": {"header": {"revision": "10"}, "events": [
            {"kv": {"key": "L2I=", "value": "Mg==", "create_revision": "10", "mod_revision": "10", "version": "1", "lease": "42"}},
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
        assert batches == expected, cuts
        assert not watch.done.called


def test_bad_json_on_the_watch_stream_ends_the_watch_with_an_error():
    """A line of the stream that is not JSON ends the watch with an EtcdError that shows it, and nothing escapes."""
    batches = []
    watch = Watch(lambda events, revision: batches.append(events))
    failures = []
    watch.done.addErrback(failures.append)
    watch.feed(b'{"result": {"header": {"revision": "3"}, "created": true}}\n{"result": nope}\n')
    assert batches == []
    assert failures and failures[0].check(EtcdError) and "nope" in str(failures[0].value)


def test_an_error_in_on_events_ends_the_watch_and_does_not_escape():
    """on_events raising ends the watch with an EtcdError naming the exception."""

    def broken(events, revision):
        raise ZeroDivisionError("oops")

    watch = Watch(broken)
    failures = []
    watch.done.addErrback(failures.append)
    watch.feed(b'{"result": {"header": {"revision": "3"}, "events": [{"kv": {"key": "L2E="}}]}}\n')
    assert "ZeroDivisionError: oops" in str(failures[0].value)


# -- bad answers --------------------------------------------------------------------------


class Garbage(Resource):
    """An HTTP server that is not etcd: answers every POST with 200 and text that is not JSON."""

    isLeaf = True

    def render_POST(self, request):
        return b"<html>not etcd</html>"


@pytest_twisted.inlineCallbacks
def test_an_answer_that_is_not_json_is_an_etcd_error(clients):
    """An endpoint answering something that is not JSON gives an EtcdError naming it, and no crash."""
    port = reactor.listenTCP(0, Site(Garbage()), interface="127.0.0.1")
    try:
        endpoint = f"http://127.0.0.1:{port.getHost().port}"
        client = clients([endpoint])
        with pytest.raises(EtcdError) as caught:
            yield client.get("/k")
        assert caught.value.endpoint == endpoint and "not JSON" in caught.value.message
        watch = client.watch("/k", False, 0, Collector())
        with pytest.raises(EtcdError):
            yield within(watch.done, 5, "the watch on a server that is not etcd to fail")
    finally:
        yield port.stopListening()


# -- endpoints ----------------------------------------------------------------------------


@pytest.fixture
def silent_port():
    """A port on 127.0.0.1 that accepts connections (the kernel does) but never answers."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", allocate_port()))
        s.listen(8)
        yield s.getsockname()[1]


@pytest_twisted.inlineCallbacks
def test_unavailable_names_every_endpoint_and_why(clients, silent_port):
    """With no endpoint answering, EtcdUnavailable names each one: refused, and no answer within the timeout."""
    refused = f"http://127.0.0.1:{allocate_port()}"
    silent = f"http://127.0.0.1:{silent_port}"
    client = clients([refused, silent], timeout=0.3)
    with pytest.raises(EtcdUnavailable) as caught:
        yield client.get("/k")
    (first, why_first), (second, why_second) = caught.value.failures
    assert (first, second) == (refused, silent)
    assert "refused" in why_first.lower()
    assert why_second == "no answer within 0.3s"
    assert refused in str(caught.value) and silent in str(caught.value)


def follower(cluster):
    """The index of a running member that is not the leader."""
    leader = cluster.leader()
    return next(i for i, m in enumerate(cluster.members) if i != leader and m.alive())


@pytest_twisted.inlineCallbacks
def test_the_client_moves_to_another_endpoint_when_the_first_is_killed(etcd3, clients, prefix):
    """kill -9 of the member the client uses: the next request is answered by another, which the client keeps."""
    index = follower(etcd3)
    endpoints = [etcd3.endpoints[index]] + [e for i, e in enumerate(etcd3.endpoints) if i != index]
    client = clients(endpoints)
    yield client.put(prefix + "k", b"1")
    assert client.current == endpoints[0]
    etcd3.kill(index)
    try:
        _, (kv,) = yield client.get(prefix + "k")
        assert kv.value == b"1"
        assert client.current != endpoints[0]
        moved = client.current
        yield client.put(prefix + "k", b"2")
        assert client.current == moved
    finally:
        etcd3.restart(index)


@pytest_twisted.inlineCallbacks
def test_a_paused_member_times_out_and_another_answers(etcd3, clients, prefix):
    """SIGSTOP of the member the client uses: that try times out after the timeout and another member answers."""
    index = follower(etcd3)
    endpoints = [etcd3.endpoints[index]] + [e for i, e in enumerate(etcd3.endpoints) if i != index]
    client = clients(endpoints, timeout=0.5)
    yield client.put(prefix + "k", b"1")
    etcd3.pause(index)
    try:
        started = time.monotonic()
        lease, ttl = yield client.grant(3)
        elapsed = time.monotonic() - started
        assert 0.5 <= elapsed < 1.5
        assert client.current != endpoints[0]
        assert (yield client.keepalive(lease)) == 3
    finally:
        etcd3.resume(index)


# -- auth ---------------------------------------------------------------------------


PASSWORD = "s3cret pass"


@pytest.fixture(scope="module")
def etcd_auth():
    """A throwaway one-member cluster with auth on (user root)."""
    with EtcdCluster(1) as cluster:
        cluster.enable_auth(PASSWORD)
        yield cluster


@pytest_twisted.inlineCallbacks
def test_auth_with_the_right_password_reads_and_writes(etcd_auth, clients):
    """With user and password the client authenticates and its requests and watches pass."""
    client = clients(etcd_auth.endpoints, user="root", password=PASSWORD)
    revision = yield client.put("/auth/k", b"v")
    seen = Collector()
    watch = client.watch("/auth/k", False, revision, seen)
    yield seen.until(lambda events: events, 5, "the watch to replay the put")
    watch.cancel()
    _, (kv,) = yield client.get("/auth/k")
    assert kv.value == b"v"


@pytest_twisted.inlineCallbacks
def test_auth_with_a_wrong_password_is_refused_with_etcds_message(etcd_auth, clients):
    """A wrong password: EtcdError with etcd's message, not an endpoint failure."""
    client = clients(etcd_auth.endpoints, user="root", password="wrong")
    with pytest.raises(EtcdError) as caught:
        yield client.get("/auth/k")
    assert not isinstance(caught.value, EtcdUnavailable)
    assert "authentication failed" in caught.value.message


@pytest_twisted.inlineCallbacks
def test_without_credentials_an_auth_cluster_refuses(etcd_auth, clients):
    """No user given to a cluster with auth on: etcd's refusal comes back as an EtcdError."""
    client = clients(etcd_auth.endpoints)
    with pytest.raises(EtcdError) as caught:
        yield client.get("/auth/k")
    assert "user name is empty" in caught.value.message


@pytest_twisted.inlineCallbacks
def test_an_invalidated_token_is_replaced_once(etcd_auth, clients):
    """etcd forgets every token when auth is turned off and on: the client authenticates again and the request passes."""
    client = clients(etcd_auth.endpoints, user="root", password=PASSWORD)
    yield client.put("/auth/k", b"1")
    etcd_auth.etcdctl("auth", "disable", user=f"root:{PASSWORD}")
    etcd_auth.etcdctl("auth", "enable")
    revision = yield client.put("/auth/k", b"2")
    etcd_auth.etcdctl("auth", "disable", user=f"root:{PASSWORD}")
    etcd_auth.etcdctl("auth", "enable")
    seen = Collector()
    watch = client.watch("/auth/k", False, revision, seen)
    events = yield seen.until(lambda events: events, 5, "the watch to pass with a new token")
    assert events[0].kv.value == b"2"
    watch.cancel()


# -- TLS ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def etcd_tls(tmp_path_factory):
    """A one-member cluster serving https with a certificate for etcd.example and 127.0.0.1 only, requiring client certificates."""
    folder = str(tmp_path_factory.mktemp("etcd-tls"))
    ca = Authority(folder)
    server = ca.issue("etcd-server", dns=("etcd.example",), ips=("127.0.0.1",))
    client = ca.issue("etcd-client", dns=(), ips=())
    with EtcdCluster(1, tls=(*server, ca.path), client_ca=ca.path, client=client) as cluster:
        cluster.ca, cluster.client_pair = ca.path, client
        yield cluster


@pytest_twisted.inlineCallbacks
def test_tls_with_the_ca_and_a_client_certificate(etcd_tls, clients):
    """https to etcd verified against the CA, with a client certificate: requests pass."""
    cert, key = etcd_tls.client_pair
    client = clients(etcd_tls.endpoints, cacert=etcd_tls.ca, cert=cert, key=key)
    yield client.put("/tls/k", b"v")
    _, (kv,) = yield client.get("/tls/k")
    assert kv.value == b"v"


@pytest_twisted.inlineCallbacks
def test_tls_without_a_client_certificate_is_refused(etcd_tls, clients):
    """etcd requires a client certificate: without one the endpoint fails, and the error says TLS."""
    client = clients(etcd_tls.endpoints, cacert=etcd_tls.ca)
    with pytest.raises(EtcdUnavailable) as caught:
        yield client.get("/tls/k")
    assert "TLS" in caught.value.failures[0][1] or "SSL" in caught.value.failures[0][1]


@pytest_twisted.inlineCallbacks
def test_tls_to_a_server_whose_certificate_names_another_host_is_refused(etcd_tls, clients):
    """The same member reached as localhost (its certificate names etcd.example and 127.0.0.1): refused, saying why."""
    cert, key = etcd_tls.client_pair
    port = etcd_tls.members[0].client_port
    client = clients([f"https://localhost:{port}"], cacert=etcd_tls.ca, cert=cert, key=key)
    with pytest.raises(EtcdUnavailable) as caught:
        yield client.get("/tls/k")
    why = caught.value.failures[0][1]
    assert "host name" in why or "localhost" in why, why


@pytest_twisted.inlineCallbacks
def test_tls_with_another_ca_is_refused(etcd_tls, clients, tmp_path):
    """A CA that did not sign etcd's certificate: the handshake fails and the endpoint counts as failed."""
    other = Authority(str(tmp_path), name="another CA")
    cert, key = etcd_tls.client_pair
    client = clients(etcd_tls.endpoints, cacert=other.path, cert=cert, key=key)
    with pytest.raises(EtcdUnavailable) as caught:
        yield client.get("/tls/k")
    assert "TLS" in caught.value.failures[0][1]


# -- the end ------------------------------------------------------------------------


@pytest_twisted.inlineCallbacks
def test_close_ends_watches_and_refuses_new_requests(etcd, clients, prefix):
    """close() cancels the client's watches (done fires with None) and later requests fail with an EtcdError."""
    client = clients(etcd.endpoints)
    revision = yield client.put(prefix + "k", b"1")
    seen = Collector()
    watch = client.watch(prefix + "k", False, revision, seen)
    yield seen.until(lambda events: events, 5, "the watch to start")
    yield client.close()
    assert (yield watch.done) is None
    with pytest.raises(EtcdError):
        yield client.get(prefix + "k")
