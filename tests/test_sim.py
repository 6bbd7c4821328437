"""
The deterministic simulation of a pair (tests/sim): a short run in the
suite, its replay, and proof that it catches each rule switched off.
The long run is `make simulate` (2,000 seeds).
"""

from __future__ import annotations

import contextlib
import io
import unittest

from iwayfailover.core.pair import PLANTS

from sim.__main__ import main
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
