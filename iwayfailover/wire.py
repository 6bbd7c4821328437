"""
Heartbeat frames and their codec.

A frame travels behind a 4-byte big-endian length prefix (see
L{iwayfailover.heartbeat}); its body is::

    magic     2 bytes  b"IW"
    version   1 byte   2
    kind      1 byte   1 heartbeat, 2 answer, 3 query, 4 standing down
    role      1 byte   0 backup, 1 live, 2 starting
    flags     1 byte   bit 0: switchover (on a standing-down frame); others reserved, 0
    epoch     8 bytes  unsigned, big-endian
    seq       8 bytes  unsigned, big-endian
    priority  4 bytes  signed (two's complement), big-endian: the sender's priority
    threshold 4 bytes  unsigned, big-endian, 1 or more: the sender's threshold in
                       milliseconds (how long it waits, as backup, before taking over)
    namelen   1 byte   1..64
    name      namelen bytes of UTF-8

Nothing may follow the name. Every decoding problem raises L{FrameError};
no other exception leaves L{decode}, whatever the bytes.

The sender's priority and threshold travel in every frame so that rank and
fencing are decided from what the nodes say, never from each node's own copy
of the configuration, which may differ (a node that could not reload the
share). Version 1 (iwayfailover 0.3.x and older) had neither field; a node
of one version refuses the other's frames.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from iwayfailover.config import NAME_PATTERN

MAGIC = b"IW"
VERSION = 2
MAX_NAME = 64
_HEADER = struct.Struct("!2sBBBBQQiIB")
MAX_FRAME = 256
"""The largest frame body accepted; anything longer drops the connection."""

_U64 = 2**64

PRIORITY_MIN = -(2**31)
PRIORITY_MAX = 2**31 - 1
"""The priorities a frame can carry (a signed 32-bit field)."""
THRESHOLD_MAX_MS = 2**32 - 1
"""The longest threshold a frame can carry, in milliseconds (about 49.7 days); the shortest is 1 ms."""

FLAG_SWITCHOVER = 0x01
"""On a standing-down frame: a planned switchover, not a shutdown."""
KNOWN_FLAGS = FLAG_SWITCHOVER


class FrameError(ValueError):
    """A frame body that is not a valid frame; the message says why."""


class Kind(enum.IntEnum):
    HEARTBEAT = 1
    """A live node's signal, sent every heartbeat interval; answered."""
    ANSWER = 2
    """The answer to any other frame, with the answering node's role and epoch."""
    QUERY = 3
    """How do you stand? (the startup check); answered, feeds no watchdog."""
    STANDING_DOWN = 4
    """The live node has stopped serving: take over now; answered once live."""


class Role(enum.IntEnum):
    BACKUP = 0
    LIVE = 1
    STARTING = 2

    @property
    def label(self) -> str:
        return self.name.lower()


@dataclass(frozen=True)
class Frame:
    kind: Kind
    name: str
    role: Role
    epoch: int
    seq: int
    priority: int
    """The sender's C{priority}: breaks a tie of epochs between two live nodes."""
    threshold: int
    """The sender's threshold in milliseconds (see L{threshold_ms}): when it takes over as backup."""
    flags: int = 0

    def __post_init__(self):
        if not NAME_PATTERN.match(self.name):
            raise FrameError(f"bad sender name {self.name!r}")
        for label, value in (("epoch", self.epoch), ("seq", self.seq)):
            if not 0 <= value < _U64:
                raise FrameError(f"{label} {value} out of range")
        if not PRIORITY_MIN <= self.priority <= PRIORITY_MAX:
            raise FrameError(f"priority {self.priority} out of range ({PRIORITY_MIN} to {PRIORITY_MAX})")
        if not 1 <= self.threshold <= THRESHOLD_MAX_MS:
            raise FrameError(f"threshold {self.threshold} ms out of range (1 to {THRESHOLD_MAX_MS} ms)")
        if not 0 <= self.flags <= 0xFF or self.flags & ~KNOWN_FLAGS:
            raise FrameError(f"unknown flags {self.flags:#04x}")


def threshold_ms(seconds: float) -> int:
    """
    A threshold in seconds as a frame carries it: whole milliseconds.

    @raise FrameError: it does not fit (it rounds to 0 ms, or to over L{THRESHOLD_MAX_MS} ms).
    """
    ms = round(seconds * 1000)
    if not 1 <= ms <= THRESHOLD_MAX_MS:
        raise FrameError(f"threshold {seconds:g}s out of range (0.001 to {THRESHOLD_MAX_MS / 1000:.3f} s)")
    return ms


SEQ_OFFSET = 14
"""Where the sequence number sits in an encoded frame (after magic, version, kind, role, flags and epoch)."""
_SEQ = struct.Struct("!Q")


def with_seq(body: bytes, seq: int) -> bytes:
    """An encoded frame C{body} with its sequence number replaced (the same frame as encode() would make)."""
    return body[:SEQ_OFFSET] + _SEQ.pack(seq) + body[SEQ_OFFSET + _SEQ.size:]


def encode(frame: Frame) -> bytes:
    name = frame.name.encode("utf-8")
    return _HEADER.pack(
        MAGIC, VERSION, frame.kind, frame.role, frame.flags, frame.epoch, frame.seq, frame.priority, frame.threshold,
        len(name),
    ) + name


def decode(body: bytes) -> Frame:
    """
    Decode one frame body (without its length prefix).

    @raise FrameError: the body is not a frame this version understands.
    """
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes is over the limit of {MAX_FRAME}")
    if len(body) >= 3 and body[:2] == MAGIC and body[2] != VERSION:
        # Before the header size check: a version 1 frame is shorter than a version 2 header.
        raise FrameError(_version_problem(body[2]))
    if len(body) < _HEADER.size:
        raise FrameError(f"truncated frame: {len(body)} bytes, a header needs {_HEADER.size}")
    magic, version, kind, role, flags, epoch, seq, priority, threshold, namelen = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise FrameError(f"not a heartbeat frame (starts with {magic!r})")
    try:
        kind = Kind(kind)
    except ValueError:
        raise FrameError(f"unknown frame kind {kind}") from None
    try:
        role = Role(role)
    except ValueError:
        raise FrameError(f"unknown role {role}") from None
    if flags & ~KNOWN_FLAGS:
        raise FrameError(f"reserved flags set ({flags:#04x})")
    if threshold == 0:
        raise FrameError("threshold of 0 ms (a sender's threshold is at least 1 ms)")
    end = _HEADER.size + namelen
    if len(body) < end:
        raise FrameError(f"truncated frame: name of {namelen} bytes, {len(body) - _HEADER.size} present")
    if len(body) > end:
        raise FrameError(f"{len(body) - end} stray bytes after the frame")
    try:
        name = body[_HEADER.size:end].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("sender name is not UTF-8") from None
    return Frame(kind=kind, name=name, role=role, epoch=epoch, seq=seq, priority=priority, threshold=threshold, flags=flags)


def _version_problem(version: int) -> str:
    if version == 1:
        return (
            f"frame version 1, from iwayfailover 0.3.x or older; this node speaks frame version {VERSION}"
            " (0.4.0 and later): upgrade both nodes of the pair together"
        )
    return f"unsupported frame version {version} (this node speaks frame version {VERSION})"
