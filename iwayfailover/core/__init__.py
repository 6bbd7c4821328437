"""
The decision core: every rule that decides a node's role, in one place,
with no I/O.

Observations go in (L{iwayfailover.core.events}), effects come out; the
clock is injected. The node wires sockets, timers and files to it; the
simulator (tests/sim) drives the same core in simulated time.
"""
