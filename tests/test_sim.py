"""
The deterministic simulation of a pair and of a group on etcd (tests/sim):
a short run of each in the suite, its replay, proof that it catches each
rule switched off, and the simulated etcd's own rules. The long runs are
`make simulate` and `make simulate GROUP=1` (2,000 seeds each).
"""

from __future__ import annotations

import contextlib
import io
import unittest

from iwayfailover.core.group import PLANTS as GROUP_PLANTS
from iwayfailover.core.pair import PLANTS

from sim.__main__ import main
from sim.group import GroupWorld
from sim.store import MIN_TTL, LeaseNotFound, Store, Unavailable
from sim.world import WORLD_PLANTS, World

PLANT_SEEDS = 400
"""Each planted bug must be caught within this many seeds (far fewer than make simulate's 2,000)."""


def run(*argv):
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        status = main(list(argv))
    return status, out.getvalue()


class SimulationTests(unittest.TestCase):
    def test_a_short_run_holds_every_invariant(self):
        """150 schedules of faults: no violation, and the closing line says how much was simulated."""
        status, out = run("--seeds", "150")
        last = out.strip().splitlines()[-1]
        self.assertEqual(status, 0, out[-3000:])
        self.assertRegex(last, r"^simulated 150 schedules \(\d+ events, [\d.]+ simulated hours\) in [\d.]+ s: 0 violations$")

    def test_a_seed_replays_the_same_trace(self):
        """The same seed gives the same events, to the line: a failing seed can be replayed."""
        first, second = World(42), World(42)
        first.run()
        second.run()
        self.assertEqual(first.trace, second.trace)
        self.assertGreater(len(first.trace), 20)
        other = World(43)
        other.run()
        self.assertNotEqual(first.trace, other.trace)

    def test_every_plant_is_caught_with_a_seed_to_replay(self):
        """Switching any one rule off is caught within a few hundred seeds, with the replay command."""
        for plant in sorted(PLANTS | WORLD_PLANTS):
            with self.subTest(plant=plant):
                status, out = run("--seeds", str(PLANT_SEEDS), "--plant", plant)
                self.assertEqual(status, 1, f"{plant} not caught in {PLANT_SEEDS} seeds:\n{out[-2000:]}")
                self.assertRegex(out, rf"replay: make simulate SEED=\d+ PLANT={plant}\n")
                self.assertRegex(out, r"1 violations \(plant " + plant + r"\)\n$")

    def test_a_violation_prints_the_trace_and_exits_1(self):
        """One seed with a plant: its whole trace, the violation and the replay command."""
        status, out = run("--seeds", str(PLANT_SEEDS), "--plant", "no-listener-retry")
        seed = int(out.split("replay: make simulate SEED=")[1].split()[0])
        status, out = run("--seed", str(seed), "--plant", "no-listener-retry")
        self.assertEqual(status, 1)
        self.assertIn("scenario: threshold", out)
        self.assertIn(f"seed {seed}: VIOLATION: liveness", out)


GROUP_SEEDS = 80
"""Seeds of the group's short run in the suite (make simulate GROUP=1 runs 2,000)."""


class GroupSimulationTests(unittest.TestCase):
    def test_a_short_group_run_holds_every_invariant(self):
        """Schedules of faults for groups of 3 to 5 members on the simulated etcd: no violation."""
        status, out = run("--group", "--seeds", str(GROUP_SEEDS))
        last = out.strip().splitlines()[-1]
        self.assertEqual(status, 0, out[-3000:])
        self.assertRegex(last, rf"^simulated {GROUP_SEEDS} schedules \(\d+ events, [\d.]+ simulated hours\)"
                               r" in [\d.]+ s: 0 violations \[group\]$")

    def test_a_group_seed_replays_the_same_trace(self):
        """The same seed gives the same group trace, to the line; --members fixes the group's size."""
        first, second = GroupWorld(42), GroupWorld(42)
        first.run()
        second.run()
        self.assertEqual(first.trace, second.trace)
        self.assertGreater(len(first.trace), 20)
        other = GroupWorld(43)
        other.run()
        self.assertNotEqual(first.trace, other.trace)
        self.assertEqual(len(GroupWorld(7, members=5).nodes), 5)

    def test_every_group_plant_is_caught_with_a_seed_to_replay(self):
        """Switching any one rule of the group core off is caught within a few hundred seeds."""
        for plant in sorted(GROUP_PLANTS):
            with self.subTest(plant=plant):
                status, out = run("--group", "--seeds", str(PLANT_SEEDS), "--plant", plant)
                self.assertEqual(status, 1, f"{plant} not caught in {PLANT_SEEDS} seeds:\n{out[-2000:]}")
                self.assertRegex(out, rf"replay: make simulate SEED=\d+ PLANT={plant} GROUP=1\n")
                self.assertRegex(out, r"1 violations \(plant " + plant + r"\) \[group\]\n$")

    def test_a_pair_plant_is_refused_for_a_group(self):
        """--plant names a rule of the simulator asked for; --members goes with --group, 3 to 5."""
        for argv, message in ((["--group", "--plant", "no-prevote"], "not a plant of the group simulator"),
                              (["--plant", "no-lease-fence"], "not a plant of the pair simulator"),
                              (["--members", "4"], "--members goes with --group"),
                              (["--group", "--members", "6"], "give 3, 4 or 5")):
            with self.subTest(argv=argv):
                err = io.StringIO()
                with contextlib.redirect_stderr(err), self.assertRaises(SystemExit):
                    run(*argv)
                self.assertIn(message, err.getvalue())


class SimulatedStoreTests(unittest.TestCase):
    """The simulated etcd keeps etcd's rules that the group's safety rests on."""

    def setUp(self):
        self.t = 0.0
        self.timers = []
        self.store = Store(lambda: self.t, lambda delay, fn, *args: self.timers.append((self.t + delay, fn, args)))
        self.seen = []
        self.store.watchers.append(self.seen.extend)

    def advance(self, to):
        while True:
            due = sorted((w, i) for i, (w, _, _) in enumerate(self.timers) if w <= to)
            if not due:
                break
            when, i = due[0]
            _, fn, args = self.timers.pop(i)
            self.t = when
            fn(*args)
        self.t = to

    def test_a_lease_lives_its_ttl_from_the_last_keepalive_received(self):
        """Expiry counts from the keepalive's receipt; it deletes the bound key in one revision, watched."""
        lease, ttl = self.store.grant(1.2)
        self.assertEqual(ttl, MIN_TTL)  # etcd grants whole seconds, at least its minimum
        won, revision, _ = self.store.create_if_absent("/k", "a", lease)
        self.assertTrue(won)
        self.assertEqual(self.store.kv["/k"].create_revision, revision)
        self.advance(1.5)
        self.assertEqual(self.store.keepalive(lease), ttl)
        self.advance(1.5 + ttl - 0.001)
        self.assertIn("/k", self.store.kv)
        self.advance(1.5 + ttl)
        self.assertNotIn("/k", self.store.kv)
        self.assertEqual([(e.kind, e.kv.key) for e in self.seen], [("PUT", "/k"), ("DELETE", "/k")])
        self.assertEqual(self.store.keepalive(lease), 0)

    def test_create_if_absent_has_one_winner_and_delete_if_lease_checks_the_lease(self):
        """The coordinator's two txns: the loser sees the holder; only the holder's lease deletes."""
        a, _ = self.store.grant(2)
        b, _ = self.store.grant(2)
        self.store.put("/h", "old")
        self.assertTrue(self.store.create_if_absent("/k", "a", a, also_delete=("/h",))[0])
        self.assertNotIn("/h", self.store.kv)
        won, _, holder = self.store.create_if_absent("/k", "b", b)
        self.assertFalse(won)
        self.assertEqual(holder.value, "a")
        self.assertFalse(self.store.delete_if_lease("/k", b))
        self.assertTrue(self.store.delete_if_lease("/k", a, also_put=("/h", "to b")))
        self.assertEqual(self.store.kv["/h"].value, "to b")
        self.store.revoke(b)
        with self.assertRaises(LeaseNotFound):
            self.store.create_if_absent("/k", "b", b)

    def test_a_paused_store_expires_nothing_then_expires_at_once(self):
        """Paused: requests wait, no lease ends; on resume the spent leases go first, then the requests."""
        lease, ttl = self.store.grant(2)
        self.store.put("/k", "a", lease)
        self.store.pause()
        self.advance(ttl + 5)
        self.assertIn("/k", self.store.kv)
        answers = []
        self.store.submit(lambda: answers.append(self.store.keepalive(lease)))
        self.assertEqual(answers, [])
        self.store.resume()
        self.assertNotIn("/k", self.store.kv)
        self.assertEqual(answers, [0])

    def test_a_new_leader_gives_every_lease_its_whole_ttl(self):
        """A leader change: requests wait for the election; then each lease lives its TTL from then on."""
        lease, ttl = self.store.grant(2)
        self.store.put("/k", "a", lease)
        self.advance(1.0)
        self.store.leader_change(0.5)
        with self.assertRaises(Unavailable):
            self.store.get("/k")
        self.advance(1.5)
        self.assertAlmostEqual(self.store.time_to_live(lease), ttl)
        self.advance(1.5 + ttl - 0.001)
        self.assertIn("/k", self.store.kv)
        self.advance(1.5 + ttl)
        self.assertNotIn("/k", self.store.kv)
