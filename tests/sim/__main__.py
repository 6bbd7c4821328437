"""
make simulate [SEEDS=N] [SEED=S] [PLANT=NAME] [GROUP=1 [MEMBERS=3..5]]

Runs the real decision core of two nodes (or, with --group, of a group of
3 to 5 members on a simulated etcd) in simulated time, one schedule of
faults per seed, and checks the invariants after every event. The last
line: C{simulated N schedules (E events, H simulated hours) in T s: V
violations}. On a violation: exit status 1, the seed, the end of its event
trace and the command that replays it.
"""

from __future__ import annotations

import argparse
import sys
import time

from iwayfailover.core.group import PLANTS as GROUP_PLANTS
from iwayfailover.core.pair import PLANTS

from sim.group import GroupWorld
from sim.world import WORLD_PLANTS, World

TRACE_LINES = 60


def replay_command(seed: int, plant, group: bool = False, members=None) -> str:
    return (f"make simulate SEED={seed}" + (f" PLANT={plant}" if plant else "") + (" GROUP=1" if group else "")
            + (f" MEMBERS={members}" if group and members else ""))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="make simulate", description=__doc__.strip().splitlines()[0])
    parser.add_argument("--seeds", type=int, default=2000, help="how many seeds to run (default 2000)")
    parser.add_argument("--first", type=int, default=1, help="the first seed (default 1)")
    parser.add_argument("--seed", type=int, help="run this one seed and print its whole trace")
    parser.add_argument("--plant", choices=sorted(PLANTS | WORLD_PLANTS | GROUP_PLANTS),
                        help="switch one rule of the core off")
    parser.add_argument("--faults", type=int, default=5, help="faults per schedule (default 5)")
    parser.add_argument("--all", action="store_true", help="go on after a violation and count them all")
    parser.add_argument("--group", action="store_true", help="a group of 3 to 5 members on a simulated etcd")
    parser.add_argument("--members", type=int, help="with --group: this many members (3 to 5; default: drawn per seed)")
    options = parser.parse_args(argv)
    if options.members is not None and not options.group:
        parser.error("--members goes with --group")
    if options.members is not None and not 3 <= options.members <= 5:
        parser.error(f"--members {options.members}: give 3, 4 or 5")
    if options.plant is not None:
        known = GROUP_PLANTS if options.group else PLANTS | WORLD_PLANTS
        if options.plant not in known:
            parser.error(f"--plant {options.plant} is not a plant of the {'group' if options.group else 'pair'}"
                         f" simulator (its plants: {', '.join(sorted(known))})")
    if options.seeds < 1:
        parser.error(f"--seeds {options.seeds}: give 1 or more")
    seeds = [options.seed] if options.seed is not None else range(options.first, options.first + options.seeds)
    started = time.perf_counter()
    events = 0
    simulated = 0.0
    violations = 0
    count = 0
    for seed in seeds:
        if options.group:
            world = GroupWorld(seed, plant=options.plant, faults=options.faults, members=options.members)
        else:
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
            print(f"replay: {replay_command(seed, options.plant, options.group, options.members)}")
            if not options.all:
                break
    elapsed = time.perf_counter() - started
    print(
        f"simulated {count} schedules ({events} events, {simulated / 3600:.2f} simulated hours)"
        f" in {elapsed:.1f} s: {violations} violations"
        + (f" (plant {options.plant})" if options.plant else "")
        + (" [group]" if options.group else "")
    )
    return 1 if violations else 0


if __name__ == "__main__":
    sys.exit(main())
