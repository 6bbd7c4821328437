"""
Pulses: heartbeat frames sent as sealed datagrams beside the TCP session.

A heartbeat connection delivers frames in order: one lost segment holds back
every later heartbeat until it is sent again, and the retransmission
timeouts double. A pulse is one datagram that stands alone, so a lost one
costs only itself. Pulses carry the same frames (L{iwayfailover.wire}) and
are sealed with keys of the heartbeat connection they belong to, so that a
pulse proves what a frame on that connection proves, and no more::

    magic    3 bytes  b"IWP"
    version  1 byte   1
    session  8 bytes  which connection: SHA-256(b"iwayfailover pulse id" + client_nonce + server_nonce)[:8]
    number   8 bytes  the sender's count of pulses on this session, from 1
    frame    the frame body
    mac      32 bytes HMAC-SHA256(pulse key, direction + session + number + frame)

    pulse key = HMAC-SHA256(session key, b"iwayfailover pulse")

with the session key and direction of L{iwayfailover.auth}. A pulse is
accepted only if its session is one this node holds, its MAC is right and
its number is higher than any accepted on that session: a pulse recorded
on an older connection, sent back the other way, repeated, or delivered
after a later one is refused. Unlike frames, numbers may skip: a gap is a
lost datagram, not an attack.

Every problem raises L{PulseError}; no other exception leaves L{PulseBook.open}
or L{decode}, whatever the bytes.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import struct
from typing import Optional, Tuple

from iwayfailover import auth

MAGIC = b"IWP"
VERSION = 1
SESSION_ID_SIZE = 8
_HEADER = struct.Struct("!3sB8sQ")
OVERHEAD = _HEADER.size + auth.MAC_SIZE
MAX_PULSE = OVERHEAD + 256
"""The largest pulse: the header, the largest frame body (L{iwayfailover.wire.MAX_FRAME}) and the MAC."""
MAX_SESSIONS = 8
"""Sessions a node holds pulse keys for at once (the newest): a peer's reconnections do not grow it."""


class PulseError(ValueError):
    """A datagram that is not a pulse this node accepts; the message says why."""


class PulseDuplicate(PulseError):
    """
    A pulse a little behind the newest taken on its session (within
    L{LATE_WINDOW}): most often its own copy, sent to the second address,
    that came second. Never taken (an older pulse is no fresher signal);
    dropped quietly, where an older one is refused as a replay.
    """


LATE_WINDOW = 64
"""How far behind the newest pulse of a session one may come and be dropped quietly rather than refused."""


def session_id(client_nonce: bytes, server_nonce: bytes) -> bytes:
    """The public name of a heartbeat connection's pulse session: the same on both sides."""
    return hashlib.sha256(b"iwayfailover pulse id" + client_nonce + server_nonce).digest()[:SESSION_ID_SIZE]


def _pulse_key(session_key: bytes) -> bytes:
    return hmac.new(session_key, b"iwayfailover pulse", hashlib.sha256).digest()


class PulseKeys:
    """
    One side's pulse keys for one heartbeat connection: the key it seals
    with, the keys it accepts, the directions, and its own count.

    Made from an authenticated connection's L{auth.Session} (L{from_session}).
    """

    def __init__(self, sid: bytes, send_key: bytes, receive_keys: Tuple[bytes, ...], out: bytes, into: bytes):
        self.id = sid
        self._send_key = send_key
        self._receive_keys = receive_keys
        self._out = out
        self._in = into
        self.sent = 0
        self.received = 0  # the highest number accepted

    @classmethod
    def from_session(cls, session: auth.Session) -> "PulseKeys":
        session_keys = session.session_keys()
        return cls(
            session_id(session.client_nonce, session.server_nonce),
            _pulse_key(session_keys[0]), tuple(_pulse_key(k) for k in session_keys[1]),
            session.out, session.into,
        )

    def seal(self, body: bytes) -> bytes:
        """A pulse of frame C{body}, numbered next."""
        self.sent += 1
        header = _HEADER.pack(MAGIC, VERSION, self.id, self.sent)
        mac = hmac.digest(self._send_key, self._out + header[4:] + body, "sha256")
        return header + body + mac

    def open(self, number: int, signed: bytes, body: bytes, mac: bytes) -> bytes:
        """
        C{body}, if the MAC over C{signed} is right and C{number} is new.

        @raise PulseError: a bad MAC, or a number not above the highest accepted.
        """
        message = self._in + signed
        if not any(hmac.compare_digest(hmac.digest(k, message, "sha256"), mac) for k in self._receive_keys):
            raise PulseError("bad MAC: forged, damaged, or sealed with a key this node does not hold")
        if self.received - LATE_WINDOW < number <= self.received:
            raise PulseDuplicate(f"pulse number {number} again, or late (the newest taken is {self.received})")
        if number <= self.received:
            raise PulseError(f"pulse number {number} is not above {self.received}: replayed, or overtaken by a later one")
        self.received = number
        return body


def decode(data: bytes) -> Tuple[bytes, int, bytes, bytes, bytes]:
    """
    The parts of a pulse: C{(session id, number, signed bytes, frame body, mac)}.

    @raise PulseError: not a pulse of this version, or of no possible size.
    """
    if len(data) < OVERHEAD + 1:
        raise PulseError(f"datagram of {len(data)} bytes is too short for a pulse (at least {OVERHEAD + 1})")
    if len(data) > MAX_PULSE:
        raise PulseError(f"datagram of {len(data)} bytes is over the limit of {MAX_PULSE}")
    magic, version, sid, number = _HEADER.unpack_from(data)
    if magic != MAGIC:
        raise PulseError(f"not a pulse (starts {data[:3]!r}, not {MAGIC!r})")
    if version != VERSION:
        raise PulseError(f"pulse of version {version}; this node speaks {VERSION}")
    body, mac = data[_HEADER.size:-auth.MAC_SIZE], data[-auth.MAC_SIZE:]
    return sid, number, data[4:-auth.MAC_SIZE], body, mac


class PulseBook:
    """
    The pulse sessions a node accepts pulses on: the newest L{MAX_SESSIONS},
    by session id. L{open} checks a datagram against them.
    """

    def __init__(self, limit: int = MAX_SESSIONS):
        self._sessions: "collections.OrderedDict[bytes, PulseKeys]" = collections.OrderedDict()
        self._limit = limit

    def add(self, keys: PulseKeys) -> None:
        self._sessions[keys.id] = keys
        self._sessions.move_to_end(keys.id)
        while len(self._sessions) > self._limit:
            self._sessions.popitem(last=False)

    def forget(self, keys: PulseKeys) -> None:
        if self._sessions.get(keys.id) is keys:
            del self._sessions[keys.id]

    def get(self, sid: bytes) -> Optional[PulseKeys]:
        return self._sessions.get(sid)

    def __len__(self) -> int:
        return len(self._sessions)

    def open(self, data: bytes) -> Tuple[PulseKeys, bytes]:
        """
        The session and the frame body of pulse C{data}.

        @raise PulseError: not a pulse, of no session held, a bad MAC, or an old number.
        """
        sid, number, signed, body, mac = decode(data)
        keys = self._sessions.get(sid)
        if keys is None:
            raise PulseError("pulse of a session this node does not hold (an old connection's, or a stranger's)")
        return keys, keys.open(number, signed, body, mac)
