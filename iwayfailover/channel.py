"""
What every channel shares, whatever runs it: the states a listener goes
through and the one way to move it between them (L{set_state}).

A plugin listener (L{iwayfailover.listeners.Listener}), a process channel
(L{iwayfailover.process.ProcessChannel}) and the floating IP
(L{iwayfailover.floating.FloatingAddress}) build on this module alone, so
that none of them imports another: C{listeners} builds both kinds of
channel, and C{process} needs nothing of C{listeners}.
"""

from __future__ import annotations

from twisted.logger import Logger

WAITING = "WAITING"
"""Configured and checked, not serving: a backup holds its channels so."""
STARTING = "STARTING"
ACTIVE = "ACTIVE"
STOPPING = "STOPPING"
STOPPED = "STOPPED"
FAILED = "FAILED"
"""Could not start, or lost: the C{reason} says why."""

STATES = (WAITING, STARTING, ACTIVE, STOPPING, STOPPED, FAILED)
"""Every state of a channel, in the order of a life: waiting, up, down, or failed."""

ADDRESS_PREFIX = "vip:"
"""The floating IP is the channel named C{vip:ADDRESS} (C{vip:10.0.0.100/24})."""

log = Logger(namespace="iwayfailover.listeners")  # where listeners logged this before it moved here


def set_state(item, state, reason, logger) -> None:
    """
    Move a listener-like C{item} to C{state} (with C{reason}), log it on
    C{logger}, and tell C{item.on_failed} when it is FAILED.
    """
    previous, item.state, item.reason, item.since = item.state, state, reason, item._wall()
    if getattr(item, "retrying", False) and state in (STARTING, FAILED):
        # An automatic retry: its ListenerSet logs the outcome, sparingly.
        logger.debug("listener {listener} {previous} -> {state} (retry): {reason}", listener=item.name,
                     previous=previous, state=state, reason=reason or "")
        if state == FAILED:
            notify_failed(item)
    elif state == FAILED:
        logger.error("listener {listener} {previous} -> FAILED: {reason}", listener=item.name, previous=previous, reason=reason)
        notify_failed(item)
    elif reason:
        logger.info("listener {listener} {previous} -> {state}: {reason}", listener=item.name, previous=previous, state=state,
                    reason=reason)
    else:
        logger.info("listener {listener} {previous} -> {state}", listener=item.name, previous=previous, state=state)


def notify_failed(item) -> None:
    """Tell C{item.on_failed}, if set, that C{item} is FAILED; its errors end here."""
    if item.on_failed is None:
        return
    try:
        item.on_failed()
    except Exception:
        log.failure("reporting the failure of {name} failed", name=getattr(item, "name", "?"))
