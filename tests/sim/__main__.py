"""
make simulate [SEEDS=N] [SEED=S] [PLANT=NAME]

Runs the real decision core of two nodes in simulated time, one schedule
of faults per seed, and checks the invariants after every event. The last
line: C{simulated N schedules (E events, H simulated hours) in T s: V
violations}. On a violation: exit status 1, the seed, the end of its event
trace and the command that replays it.
"""

from __future__ import annotations

import argparse
import sys
import time

from iwayfailover.core.pair import PLANTS

from sim.world import WORLD_PLANTS, World

TRACE_LINES = 60


def replay_command(seed: int, plant) -> str:
    return f"make simulate SEED={seed}" + (f" PLANT={plant}" if plant else "")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds to run (default 2000)")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seed", type=int, help="run this one seed and print its whole trace")
    parser.add_argument("--plant", choices=sorted(PLANTS | WORLD_PLANTS), help="switch one rule of the core off")
    parser.add_argument("--faults", type=int, default=5, help="faults per schedule (default 5)")
    parser.add_argument("--all", action="store_true", help="go on after a violation and count them all")
    options = parser.parse_args(argv)
    if options.seeds < 1:
        parser.error(f"--seeds {options.seeds}: give 1 or more")
    seeds = [options.seed] if options.seed is not None else range(options.first, options.first + options.seeds)
    started = time.perf_counter()
    events = 0
    simulated = 0.0
    violations = 0
    count = 0
    for seed in seeds:
        world = World(seed, plant=options.plant, faults=options.faults)
        violation = world.run()
        count += 1
        events += world.events
        simulated += world.t
        if options.seed is not None:
            print("\n".join(world.trace))
        if violation is not None:
            violations += 1
            print(f"seed {seed}: VIOLATION: {violation}")
            if options.seed is None:
                tail = world.trace[1:][-TRACE_LINES:]
                print(f"the scenario and the last {len(tail)} of {len(world.trace) - 1} events:")
                print("\n".join(world.trace[:1] + tail))
            print(f"replay: {replay_command(seed, options.plant)}")
            if not options.all:
                break
    elapsed = time.perf_counter() - started
    print(
        f"simulated {count} schedules ({events} events, {simulated / 3600:.2f} simulated hours)"
        f" in {elapsed:.1f} s: {violations} violations"
        + (f" (plant {options.plant})" if options.plant else "")
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
