"""
What goes into the decision core (observations) and what comes out of it
(effects). Plain frozen records: the core never touches a socket, a timer
or a file, so each rule is a unit test with a list of these.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional, Tuple

# Roles, as the status API and the wire name them.
STARTING = "starting"
BACKUP = "backup"
LIVE = "live"
HANDING_OVER = "handing_over"
STOPPED = "stopped"

# What channels are left as when they stop (listener states).
CHANNELS_WAITING = "WAITING"
CHANNELS_STOPPED = "STOPPED"

# Frame kinds, as heard.
HEARTBEAT = "heartbeat"
ANSWER = "answer"
QUERY = "query"
STANDING_DOWN = "standing_down"

# Links: the live node's connection to its backup location, and the
# sessions the peer opened to this node's heartbeat port.
OUT = "out"
IN = "in"

# How a link ended.
CLOSED = "closed"          # the peer's end closed (a clean close or its process died)
RESET = "reset"            # reset or aborted on the way
LOCAL = "local"            # this node closed it (redial, new keys, role change)

# What a probe (a QUERY on a fresh connection) found.
ANSWERED = "answered"
REFUSED = "refused"        # nothing listens: the process is gone, or a firewall resets
GONE = "gone"              # accepted, then closed before any hello: no node process there
NO_ANSWER = "no_answer"    # timed out or unreachable: proves nothing

# Why a probe was sent.
STARTUP = "startup"
PREVOTE = "prevote"
REJOIN = "rejoin"
HANDOVER = "handover"


# -- observations --

@dataclass(frozen=True)
class Start:
    """The node starts: as a backup (C{-b}), or asking first (started live)."""

    as_backup: bool


@dataclass(frozen=True)
class Heard:
    """A frame from the peer, authenticated, on a link."""

    sender: str
    kind: str
    role: str
    epoch: int
    priority: int
    threshold: float
    link: str = IN
    seq: int = 0
    switchover: bool = False
    reply: object = field(default=None, compare=False, repr=False)
    """Where an answer to this frame goes (the connection it came on): opaque to the core, copied into L{Answer}."""
    acked: Optional[Tuple[float, float]] = None
    """
    On an answer to a heartbeat sent off the reactor (a pulse from the pulse
    thread): when that heartbeat was sent and when the answer came in, both on
    this node's monotonic clock and both taken by the thread, so that a reactor
    that was busy meanwhile does not make them late. None: the core takes the
    send time from the heartbeat's number and the time it is told as the answer's.
    """


@dataclass(frozen=True)
class LinkDown:
    """A heartbeat link ended, and how (L{CLOSED}, L{RESET}, L{LOCAL})."""

    link: str
    how: str
    from_live: bool = False
    stood_down: bool = False


@dataclass(frozen=True)
class LinkUp:
    link: str


@dataclass(frozen=True)
class Deadline:
    """A timer the core armed has come due."""

    name: str
    token: int


@dataclass(frozen=True)
class ProbeResult:
    """What a probe of the peer's heartbeat port found; with the answer's fields when it answered."""

    purpose: str
    token: int
    outcome: str
    role: Optional[str] = None
    epoch: int = 0
    priority: int = 0
    sender: Optional[str] = None
    threshold: float = 0.0
    detail: Optional[str] = None
    """What the probe saw, in words, when the peer did not answer (for the cause people read; decides nothing)."""


@dataclass(frozen=True)
class WitnessResult:
    token: int
    reachable: Optional[str]
    """The witness that answered (host:port), or None: none reachable."""


@dataclass(frozen=True)
class EpochSaved:
    epoch: int
    error: Optional[str] = None


@dataclass(frozen=True)
class Served:
    """The serving layer is up; C{failed} names the channels that could not start."""

    failed: Tuple[str, ...] = ()


@dataclass(frozen=True)
class StoppedServing:
    """Every channel has stopped and the floating IP is gone, or, C{failed}, could not be removed."""

    failed: Tuple[str, ...] = ()


@dataclass(frozen=True)
class SwitchoverAsked:
    cause: Optional[str] = None


@dataclass(frozen=True)
class Stalled:
    """This node's own process did not run for C{seconds} (paused, swapped, starved)."""

    seconds: float


@dataclass(frozen=True)
class NewSettings:
    settings: "object"


@dataclass(frozen=True)
class Shutdown:
    pass


# -- effects --

@dataclass(frozen=True)
class Transition:
    """The role changed; C{kind} says why in one word for takeovers (silence, crash, switchover, peer_shutdown, start)."""

    previous: str
    role: str
    epoch: int
    cause: str
    kind: str = ""


@dataclass(frozen=True)
class Serve:
    """Start serving under C{epoch}: floating IP, then channels, then hooks; report with L{Served}."""

    epoch: int


@dataclass(frozen=True)
class StopServing:
    """
    Stop every channel and let go of the floating IP, leaving them C{final}
    (WAITING or STOPPED); report with L{StoppedServing}. C{within}: the
    seconds by which every channel must be gone (killed if need be), or
    None for each channel's own stop time.
    """

    final: str
    within: Optional[float] = None


@dataclass(frozen=True)
class AnnounceAgain:
    """Announce the floating IP again (neighbours may have last heard of it from another node)."""


@dataclass(frozen=True)
class RetryChannels:
    """Start again every channel that FAILED."""


@dataclass(frozen=True)
class Dial:
    """Keep a heartbeat link to the backup location (redialled while it is away)."""


@dataclass(frozen=True)
class Hangup:
    """Close the link to the backup location and stop redialling it."""


@dataclass(frozen=True)
class SendHeartbeat:
    """Send heartbeat number C{seq} on the link to the backup location (dropped if it is down)."""

    seq: int


@dataclass(frozen=True)
class Answer:
    """Answer frame C{seq} with this node's role and epoch as they are once these effects are carried out."""

    link: str
    seq: int
    reply: object = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class StandDown:
    switchover: bool


@dataclass(frozen=True)
class Probe:
    purpose: str
    token: int
    timeout: float


@dataclass(frozen=True)
class AskWitnesses:
    token: int
    timeout: float


@dataclass(frozen=True)
class SaveEpoch:
    epoch: int


@dataclass(frozen=True)
class StartTimer:
    name: str
    token: int
    delay: float


@dataclass(frozen=True)
class CancelTimer:
    name: str


@dataclass(frozen=True)
class SwitchoverOutcome:
    ok: bool
    detail: str
    to: Optional[str] = None
    epoch: int = 0
    gap: float = 0.0
    """Seconds no channel served, from this node's last stop to the backup's confirmation."""


@dataclass(frozen=True)
class Note:
    """A line for the log: C{level} is info, warn or critical; C{fault} also fires on_fault."""

    level: str
    text: str
    fault: bool = False


# -- groups on etcd (coordinator = etcd): see iwayfailover.core.group --
#
# The live role is the key PREFIX/live, created only if absent under a lease
# of TTL threshold. Its create revision is the group's epoch (a fencing token
# that rises across the whole group and is never used twice).

@dataclass(frozen=True)
class StoreState:
    """
    How the store stands, read or watched: who holds the live key (None: no
    one), under which epoch (its create revision) and lease, who gave it up
    last (C{released_by}) and to whom, for a planned switchover (C{handover_to}).
    """

    holder: Optional[str]
    epoch: int = 0
    lease: int = 0
    """The lease the live key is bound to (0: no key)."""
    released_by: Optional[str] = None
    """The member that last gave the key up on purpose (a clean stop or a switchover); None: it expired or was never held."""
    handover_to: Optional[str] = None
    revision: int = 0
    """The store's revision this state was read at: an older one than already seen is ignored."""
    renewed: int = 0
    """The live key's mod revision: the live member writes it again at every keepalive (see L{KeepAlive})."""
    ttl: float = 0.0
    """The TTL of the holder's lease, as the holder wrote it in the key (0: unknown)."""


@dataclass(frozen=True)
class StoreLost:
    """The store could not be read or watched (out of reach, paused, refused): what it holds is unknown."""

    detail: str


@dataclass(frozen=True)
class Candidates:
    """The members registered now (their member keys alive): C{(name, priority, may_campaign)} each."""

    members: Tuple[Tuple[str, int, bool], ...]


@dataclass(frozen=True)
class CampaignResult:
    """
    What a campaign (L{Campaign}) found: C{won}, with the new C{epoch} and
    the C{lease} the key is bound to, valid until at least C{sent_at + ttl}
    (C{sent_at}: on this node's monotonic clock, when the lease was asked
    for); or lost to C{holder} (its C{epoch}); or C{error}: the store did
    not answer, and whether the key was made is unknown.
    """

    token: int
    won: bool
    epoch: int = 0
    lease: int = 0
    sent_at: float = 0.0
    ttl: float = 0.0
    holder: Optional[str] = None
    error: Optional[str] = None


@dataclass(frozen=True)
class KeepAliveResult:
    """
    The store's answer to a keepalive of C{lease} sent at C{sent_at}: the
    lease now lives C{ttl} more seconds (0: it has expired or been revoked);
    or C{error}: no answer, which proves nothing.
    """

    lease: int
    sent_at: float
    ttl: float = 0.0
    error: Optional[str] = None


@dataclass(frozen=True)
class Resigned:
    """The live key and its lease were given up (L{Resign}); C{error}: the store did not confirm it."""

    lease: int
    error: Optional[str] = None


@dataclass(frozen=True)
class GroupSwitchoverAsked:
    """Move the live role to C{to} (None: the best registered candidate)."""

    to: Optional[str] = None
    cause: Optional[str] = None


@dataclass(frozen=True)
class Campaign:
    """
    Ask the store for a lease of C{ttl} seconds, then create the live key
    under it only if no one holds it; report with L{CampaignResult}. A lost
    campaign's lease is revoked by the coordinator.
    """

    token: int
    ttl: float


@dataclass(frozen=True)
class KeepAlive:
    """
    Renew the live role once: write the live key again, only if it is still
    bound to C{lease}, then keep the lease alive; report with
    L{KeepAliveResult}, C{sent_at} being when the write was sent, and a TTL
    of 0 if the key was no longer bound to the lease. The write lets every
    other member time the holder's renewals on its own clock (see
    L{ClearStale}).
    """

    lease: int


@dataclass(frozen=True)
class ClearStale:
    """
    Delete the live key only if its mod revision is still C{renewed}: the
    holder has not renewed it for longer than its TTL, so it has stopped
    serving by its own fence, and its lease only waits for the store's
    next expiry sweep. Report nothing: the watch shows the outcome.
    """

    holder: str
    renewed: int


@dataclass(frozen=True)
class Resign:
    """
    Give up the live key (only if it is still bound to C{lease}) and revoke
    the lease; with C{to}, name the member the role is handed to. Report with
    L{Resigned}.
    """

    lease: int
    to: Optional[str] = None
    reason: str = "stopped"
    """Why, as the handover note tells the others: stopped (a clean stop), switchover, fenced, lost, stale."""

