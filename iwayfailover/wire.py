"""
Heartbeat frames and their codec.

A frame travels behind a 4-byte big-endian length prefix (see
L{iwayfailover.heartbeat}); its body is::

    magic   2 bytes  b"IW"
    version 1 byte   1
    kind    1 byte   1 heartbeat, 2 answer, 3 query, 4 standing down
    role    1 byte   0 backup, 1 live, 2 starting
    flags   1 byte   bit 0: switchover (on a standing-down frame); others reserved, 0
    epoch   8 bytes  unsigned, big-endian
    seq     8 bytes  unsigned, big-endian
    namelen 1 byte   1..64
    name    namelen bytes of UTF-8

Nothing may follow the name. Every decoding problem raises L{FrameError};
no other exception leaves L{decode}, whatever the bytes.
"""

from __future__ import annotations

import enum
import struct
from dataclasses import dataclass

from iwayfailover.config import NAME_PATTERN

MAGIC = b"IW"
VERSION = 1
MAX_NAME = 64
_HEADER = struct.Struct("!2sBBBBQQB")
MAX_FRAME = 256
"""The largest frame body accepted; anything longer drops the connection."""

_U64 = 2**64

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
    flags: int = 0

    def __post_init__(self):
        if not NAME_PATTERN.match(self.name):
            raise FrameError(f"bad sender name {self.name!r}")
        for label, value in (("epoch", self.epoch), ("seq", self.seq)):
            if not 0 <= value < _U64:
                raise FrameError(f"{label} {value} out of range")
        if not 0 <= self.flags <= 0xFF or self.flags & ~KNOWN_FLAGS:
            raise FrameError(f"unknown flags {self.flags:#04x}")


def encode(frame: Frame) -> bytes:
    name = frame.name.encode("utf-8")
    return _HEADER.pack(MAGIC, VERSION, frame.kind, frame.role, frame.flags, frame.epoch, frame.seq, len(name)) + name


def decode(body: bytes) -> Frame:
    """
    Decode one frame body (without its length prefix).

    @raise FrameError: the body is not a frame this version understands.
    """
    if len(body) > MAX_FRAME:
        raise FrameError(f"frame of {len(body)} bytes is over the limit of {MAX_FRAME}")
    if len(body) < _HEADER.size:
        raise FrameError(f"truncated frame: {len(body)} bytes, a header needs {_HEADER.size}")
    magic, version, kind, role, flags, epoch, seq, namelen = _HEADER.unpack_from(body)
    if magic != MAGIC:
        raise FrameError(f"not a heartbeat frame (starts with {magic!r})")
    if version != VERSION:
        raise FrameError(f"unsupported frame version {version} (this node speaks {VERSION})")
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
    end = _HEADER.size + namelen
    if len(body) < end:
        raise FrameError(f"truncated frame: name of {namelen} bytes, {len(body) - _HEADER.size} present")
    if len(body) > end:
        raise FrameError(f"{len(body) - end} stray bytes after the frame")
    try:
        name = body[_HEADER.size:end].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError("sender name is not UTF-8") from None
    return Frame(kind=kind, name=name, role=role, epoch=epoch, seq=seq, flags=flags)
