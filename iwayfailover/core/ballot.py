"""
Ranks and ballots: which live node stays, and which epoch a takeover uses.

An epoch is a ballot number. Each server of the configuration owns one
residue class: server number C{slot} (its place among the configuration's
server names, sorted) uses only epochs C{e} with C{e % modulus == slot}.
A takeover takes the smallest such epoch above every epoch the node has
seen or used, so two servers can never use the same epoch, and one server
never uses an epoch twice: epochs are fencing tokens.
"""

from __future__ import annotations

from typing import Iterable, NamedTuple, Tuple


class Rank(NamedTuple):
    """What decides between two live nodes: higher epoch, then higher priority, then the name sorting first."""

    epoch: int
    priority: int
    name: str


def outranks(theirs: Rank, mine: Rank) -> bool:
    """
    Does a live node of rank C{theirs} win over one of rank C{mine}? Two
    different servers never tie, so both always agree which one stays.
    """
    if theirs.epoch != mine.epoch:
        return theirs.epoch > mine.epoch
    if theirs.priority != mine.priority:
        return theirs.priority > mine.priority
    return theirs.name < mine.name


def slot_of(name: str, names: Iterable[str]) -> Tuple[int, int]:
    """
    This server's ballot slot and the modulus: its index among the sorted
    names of every server, and how many there are (at least 2).
    """
    ordered = sorted(set(names) | {name})
    return ordered.index(name), max(2, len(ordered))


def next_epoch(highest: int, slot: int, modulus: int) -> int:
    """The smallest epoch above C{highest} that belongs to C{slot}."""
    epoch = highest + 1
    return epoch + (slot - epoch) % modulus
