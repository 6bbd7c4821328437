"""
A simulated etcd for the group simulator (tests/sim/group.py).

One linearizable store, as a client of an etcd cluster sees it: every
request is applied at one instant (when it reaches the leader), in one
total order; each write moves the store's revision on by one, and a key
keeps the revision that created it (C{create_revision}: the group's epoch).

Leases expire on the store's own clock, counted from the grant or the last
keepalive the store I{received} (never from when the client sent it); an
expiry deletes every key bound to the lease in one revision and tells the
watchers, in revision order. The transactions are the two the coordinator
uses: create-if-absent (with keys to delete in the same revision),
delete-if-lease (with a key to put in the same revision), put-if-lease (the
live member's renewal of its key) and delete-if-revision (a stale key cleared).

The store can pause (a SIGSTOP of the leader, a full disk's fsync): requests
wait, nothing expires; on resume, the leases that ran out meanwhile go first,
at once, then the requests that waited are applied in the order they came.
Its leader can change: requests wait for the election, nothing expires
meanwhile, and the new leader gives every lease its whole TTL again from the
moment it takes over (etcd's lessor Promote, without checkpoints).

Deliberately simpler than etcd: one clock (the store's and the nodes' run at
the same rate: etcd also assumes bounded drift), expiry exactly at the
deadline (etcd's lessor notices up to 500 ms later, which only helps the
holder's fence), no compaction, no auth, no multi-member split (a minority
member's reads are not modelled: the coordinator reads through the leader).
What reaches the store and what comes back (latency, cut-offs, timeouts) is
the world's business: the store only sees requests arrive.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Set, Tuple

MIN_TTL = 2
"""etcd 3.4 grants at least ceil(1.5 x election timeout) seconds: 2 s with the default 1 s election timeout."""


class LeaseNotFound(Exception):
    """etcd's "requested lease not found": a put (or a txn's put) under a lease that has gone."""


class Unavailable(Exception):
    """The store cannot apply a request now (it is paused or electing): the caller queues it."""


@dataclass(frozen=True)
class KeyValue:
    key: str
    value: object
    create_revision: int
    mod_revision: int
    version: int
    lease: int = 0


@dataclass(frozen=True)
class WatchEvent:
    """C{kind} PUT or DELETE; for a DELETE, C{kv} is the key as it was, with C{mod_revision} the deleting revision."""

    kind: str
    kv: KeyValue
    revision: int


@dataclass
class Lease:
    id: int
    ttl: int
    expires_at: float
    keys: Set[str] = field(default_factory=set)
    generation: int = 0


class Store:
    """
    The store's state and its requests, applied at once. C{now} gives the
    store's clock; C{at(delay, fn)} schedules its own expiries. Watchers are
    told of every change (C{on_change(events)}) synchronously; the world
    carries the events to each node.
    """

    def __init__(self, now: Callable[[], float], at: Callable, min_ttl: int = MIN_TTL):
        self.now = now
        self.at = at
        self.min_ttl = min_ttl
        self.revision = 1  # a fresh etcd cluster's revision
        self.kv: Dict[str, KeyValue] = {}
        self.leases: Dict[int, Lease] = {}
        self.lease_ids = itertools.count(0x694D5C31A1B2C00)
        self.paused = False
        self.electing = False
        self.waiting: List[Callable[[], None]] = []
        self.watchers: List[Callable[[List[WatchEvent]], None]] = []
        self.on_lease_gone: List[Callable[[int, str, List[KeyValue]], None]] = []
        """Told (lease, how, keys deleted) before the watchers, when a lease expires or is revoked."""

    # -- availability --

    @property
    def available(self) -> bool:
        return not self.paused and not self.electing

    def submit(self, request: Callable[[], None]) -> None:
        """Apply a request now, or when the store can again (in arrival order)."""
        if self.available:
            request()
        else:
            self.waiting.append(request)

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        if self.available:
            self._catch_up()

    def leader_change(self, election: float) -> None:
        """The leader is lost: an election of C{election} seconds, then every lease lives its TTL from then on."""
        if self.electing:
            return
        self.electing = True

        def elected():
            self.electing = False
            for lease in self.leases.values():
                self._arm(lease, self.now() + lease.ttl)
            if self.available:
                self._catch_up()

        self.at(election, elected)

    def _catch_up(self) -> None:
        """Back: the leases that ran out go first, at once; then the requests that waited, in order."""
        now = self.now()
        for lease in sorted(self.leases.values(), key=lambda x: (x.expires_at, x.id)):
            if lease.expires_at <= now:
                self._remove_lease(lease.id, "expired")
        waiting, self.waiting = self.waiting, []
        for request in waiting:
            if not self.available:
                self.waiting.append(request)
                continue
            request()

    # -- leases --

    def _arm(self, lease: Lease, expires_at: float) -> None:
        lease.generation += 1
        lease.expires_at = expires_at
        generation = lease.generation
        self.at(expires_at - self.now(), self._expire, lease.id, generation)

    def _expire(self, lease_id: int, generation: int) -> None:
        lease = self.leases.get(lease_id)
        if lease is None or lease.generation != generation:
            return
        if not self.available:
            return  # looked at again on resume (pause) or pushed on (election)
        self._remove_lease(lease_id, "expired")

    def grant(self, ttl: float) -> Tuple[int, int]:
        self._need()
        granted = max(self.min_ttl, int(-(-ttl // 1)))
        lease = Lease(next(self.lease_ids), granted, 0.0)
        self.leases[lease.id] = lease
        self._arm(lease, self.now() + granted)
        return lease.id, granted

    def keepalive(self, lease_id: int) -> int:
        """The TTL the lease has again from now, or 0: it has gone."""
        self._need()
        lease = self.leases.get(lease_id)
        if lease is None:
            return 0
        self._arm(lease, self.now() + lease.ttl)
        return lease.ttl

    def time_to_live(self, lease_id: int) -> float:
        lease = self.leases.get(lease_id)
        return -1.0 if lease is None else lease.expires_at - self.now()

    def revoke(self, lease_id: int) -> bool:
        self._need()
        if lease_id not in self.leases:
            return False
        self._remove_lease(lease_id, "revoked")
        return True

    def _remove_lease(self, lease_id: int, how: str) -> None:
        lease = self.leases.pop(lease_id)
        lease.generation += 1
        gone = [self.kv[k] for k in sorted(lease.keys) if k in self.kv]
        events = []
        if gone:
            self.revision += 1
            for kv in gone:
                del self.kv[kv.key]
                events.append(WatchEvent("DELETE", _replace_mod(kv, self.revision), self.revision))
        for fn in list(self.on_lease_gone):
            fn(lease_id, how, gone)
        self._notify(events)

    # -- keys --

    def get(self, key: str) -> Optional[KeyValue]:
        self._need()
        return self.kv.get(key)

    def range(self, prefix: str) -> Tuple[int, List[KeyValue]]:
        self._need()
        return self.revision, [kv for k, kv in sorted(self.kv.items()) if k.startswith(prefix)]

    def put(self, key: str, value: object, lease: int = 0) -> int:
        self._need()
        if lease and lease not in self.leases:
            raise LeaseNotFound(lease)
        self.revision += 1
        events = [self._put(key, value, lease)]
        self._notify(events)
        return self.revision

    def delete(self, key: str) -> int:
        self._need()
        if key not in self.kv:
            return self.revision
        self.revision += 1
        events = [self._delete(key)]
        self._notify(events)
        return self.revision

    def _put(self, key: str, value: object, lease: int) -> WatchEvent:
        old = self.kv.get(key)
        if old is not None and old.lease and old.lease in self.leases:
            self.leases[old.lease].keys.discard(key)
        kv = KeyValue(key, value, old.create_revision if old else self.revision, self.revision,
                      old.version + 1 if old else 1, lease)
        self.kv[key] = kv
        if lease:
            self.leases[lease].keys.add(key)
        return WatchEvent("PUT", kv, self.revision)

    def _delete(self, key: str) -> WatchEvent:
        kv = self.kv.pop(key)
        if kv.lease and kv.lease in self.leases:
            self.leases[kv.lease].keys.discard(key)
        return WatchEvent("DELETE", _replace_mod(kv, self.revision), self.revision)

    # -- the coordinator's transactions --

    def create_if_absent(self, key: str, value: object, lease: int,
                         also_delete: Tuple[str, ...] = ()) -> Tuple[bool, int, Optional[KeyValue]]:
        """
        One txn: if C{create_revision(key) == 0}, put it under C{lease} and
        delete C{also_delete}; else read it. (succeeded, revision, the holder's key if it failed).
        """
        self._need()
        existing = self.kv.get(key)
        if existing is not None:
            return False, self.revision, existing
        if lease and lease not in self.leases:
            raise LeaseNotFound(lease)
        self.revision += 1
        events = [self._put(key, value, lease)]
        events += [self._delete(k) for k in also_delete if k in self.kv]
        self._notify(events)
        return True, self.revision, None

    def delete_if_lease(self, key: str, lease: int, also_put: Optional[Tuple[str, object]] = None) -> bool:
        """One txn: if C{lease(key) == lease}, delete it (and put C{also_put}, unbound) in one revision."""
        self._need()
        existing = self.kv.get(key)
        if existing is None or existing.lease != lease:
            return False
        self.revision += 1
        events = [self._delete(key)]
        if also_put is not None:
            events.append(self._put(also_put[0], also_put[1], 0))
        self._notify(events)
        return True

    def put_if_lease(self, key: str, value: object, lease: int) -> bool:
        """One txn: if C{lease(key) == lease}, put it again (same lease): a new mod revision."""
        self._need()
        existing = self.kv.get(key)
        if existing is None or existing.lease != lease or lease not in self.leases:
            return False
        self.revision += 1
        self._notify([self._put(key, value, lease)])
        return True

    def delete_if_revision(self, key: str, mod_revision: int) -> bool:
        """One txn: if C{mod_revision(key) == mod_revision}, delete it."""
        self._need()
        existing = self.kv.get(key)
        if existing is None or existing.mod_revision != mod_revision:
            return False
        self.revision += 1
        self._notify([self._delete(key)])
        return True

    # -- helpers --

    def _need(self) -> None:
        if not self.available:
            raise Unavailable("paused" if self.paused else "electing a leader")

    def _notify(self, events: List[WatchEvent]) -> None:
        if events:
            for fn in list(self.watchers):
                fn(events)


def _replace_mod(kv: KeyValue, revision: int) -> KeyValue:
    return KeyValue(kv.key, kv.value, kv.create_revision, revision, kv.version, kv.lease)
