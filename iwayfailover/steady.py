"""
Keeping the heartbeat on time when the host is busy, as corosync does for
its token: heartbeat sockets marked as network control traffic, the pulse
thread under real-time scheduling (C{realtime = true}), the process's memory
locked in RAM (C{lock_memory = true}), and the objects made at start left
out of the garbage collector's full passes (L{freeze_startup_objects}).

The two settings are off by default: each needs a privilege (a capability
or a resource limit) that an operator grants on purpose. A node asked for
one it cannot have refuses to start, with one line that names the grant
(L{check_realtime}, L{lock_memory}); it never runs quietly without it.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import gc
import os
import resource
import socket
import threading
from typing import Optional

REALTIME_PRIORITY = 1
"""The pulse thread's SCHED_FIFO priority: the lowest real-time one, above every ordinary thread, below the kernel's own."""

NETWORK_CONTROL = 0xC0
"""DSCP CS6 (network control) in the IP TOS / IPv6 traffic class byte: routers and qdiscs serve it first."""
SOCKET_PRIORITY = 6
"""SO_PRIORITY 6 (TC_PRIO_INTERACTIVE), the highest an unprivileged process may set: first in the host's own queues."""

_MCL_CURRENT, _MCL_FUTURE, _MCL_ONFAULT = 1, 2, 4

REALTIME_GRANT = (
    "realtime = true needs the right to real-time scheduling: give the node CAP_SYS_NICE (root has it unless"
    " its capabilities are bounded; systemd: AmbientCapabilities=CAP_SYS_NICE) or a real-time priority limit"
    f" of at least {REALTIME_PRIORITY} (systemd: LimitRTPRIO={REALTIME_PRIORITY}; ulimit -r), and under systemd"
    " RestrictRealtime=no"
)


class SteadyError(Exception):
    """A setting this process is not allowed to carry out; the message names the grant it needs."""


def mark_heartbeat_socket(sock) -> bool:
    """
    Mark C{sock} (a socket of the heartbeat path) as network control
    traffic: first in this host's queues and, where the network honours
    DSCP, in its queues too. Best effort: False if the system refused.
    """
    ok = True
    for level, option, value in (  # the TOS first: setting it resets the priority
        (socket.IPPROTO_IPV6, getattr(socket, "IPV6_TCLASS", None), NETWORK_CONTROL)
        if sock.family == socket.AF_INET6 else (socket.IPPROTO_IP, socket.IP_TOS, NETWORK_CONTROL),
        (socket.SOL_SOCKET, getattr(socket, "SO_PRIORITY", None), SOCKET_PRIORITY),
    ):
        if option is None:
            ok = False
            continue
        try:
            sock.setsockopt(level, option, value)
        except OSError:
            ok = False
    return ok


def enter_realtime(priority: int = REALTIME_PRIORITY) -> Optional[str]:
    """Put the calling thread (only it: Linux schedules threads) under SCHED_FIFO; the reason it could not, or None."""
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(priority))
    except (OSError, AttributeError) as e:
        return f"{REALTIME_GRANT} ({getattr(e, 'strerror', None) or e})"
    return None


def check_realtime() -> None:
    """
    Can a thread of this process run under SCHED_FIFO? Tried on a thread
    made for the purpose, so that nothing else changes.

    @raise SteadyError: it cannot; the message names the grant.
    """
    result = []
    thread = threading.Thread(target=lambda: result.append(enter_realtime()), name="iwayfailover realtime check")
    thread.start()
    thread.join()
    if result[0] is not None:
        raise SteadyError(result[0])


def _libc():
    return ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


def lock_memory(libc=None) -> None:
    """
    Lock this process's memory in RAM (mlockall, current and future pages,
    each locked once it is first touched where the kernel can: MCL_ONFAULT),
    so that no heartbeat waits for a page to come back from swap.

    @raise SteadyError: not allowed, or over the limit; the message names the grant.
    """
    libc = libc or _libc()
    flags = _MCL_CURRENT | _MCL_FUTURE
    for extra in (_MCL_ONFAULT, 0):  # MCL_ONFAULT: Linux 4.4 and later
        if libc.mlockall(flags | extra) == 0:
            return
        error = ctypes.get_errno()
        if error != errno.EINVAL:
            break
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft // 1024} KiB"
    raise SteadyError(
        f"lock_memory = true could not lock the node's memory ({os.strerror(error)}): give the node CAP_IPC_LOCK"
        f" (root has it unless its capabilities are bounded; systemd: AmbientCapabilities=CAP_IPC_LOCK) or no limit on locked memory"
        f" (systemd: LimitMEMLOCK=infinity; ulimit -l unlimited; now {limit})"
    )


def freeze_startup_objects() -> None:
    """
    Move every object made so far (modules, configuration, the node) out of
    the collector's generations: full collections, which stop the reactor,
    then look only at what was made since.
    """
    gc.collect()
    gc.freeze()
