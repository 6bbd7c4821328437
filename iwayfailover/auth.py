"""
Authenticated heartbeat connections: the shared key, the connect-time
challenge, and a MAC on every frame.

Every heartbeat connection opens with a hello each way::

    magic   3 bytes  b"IWH"
    version 1 byte   2
    nonce   16 bytes random, fresh for every connection

Each side then derives, for every key it holds, a session key from the key
and both nonces (client's first)::

    session = HMAC-SHA256(key, b"iwayfailover session" + client_nonce + server_nonce)

and every frame after the hello travels sealed::

    number  8 bytes  this side's count of frames sent on this connection, from 1
    frame   the frame body (see L{iwayfailover.wire})
    mac     32 bytes HMAC-SHA256(session, direction + number + frame)

C{direction} is C{b"C"} for frames the connecting side sends and C{b"S"}
for the accepting side's. A frame is accepted only if its MAC is right and
its number is the next one expected, so a frame recorded on another
connection (other nonces), sent back the other way (other direction),
repeated or taken out of order is refused; so is any frame changed or cut
short, and any frame made without the key.

The key file holds one key per line (at least 32 characters each; C{iwsrv
keygen} writes 64 hex digits). The first line signs; every line is accepted,
so a key can be changed without a gap: add the new key as a second line,
then move it first, then remove the old one, waiting one reload interval
between the steps.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import stat
from dataclasses import dataclass, field
from typing import Optional, Tuple

HELLO_MAGIC = b"IWH"
HELLO_VERSION = 2
NONCE_SIZE = 16
HELLO_SIZE = len(HELLO_MAGIC) + 1 + NONCE_SIZE
MAC_SIZE = 32
NUMBER_SIZE = 8
OVERHEAD = NUMBER_SIZE + MAC_SIZE
MIN_KEY_LENGTH = 32
MAX_KEYS = 8

CLIENT = b"C"
SERVER = b"S"


class AuthError(ValueError):
    """A hello or sealed frame that must be refused; the message says why."""


class KeyFileError(ValueError):
    """An unusable key file; the message says what is wrong with it."""


@dataclass(frozen=True)
class KeyRing:
    """
    The keys a node holds: the first signs, all verify. C{insecure} rings
    hold one empty key: frames are still checked for damage, but anyone can
    make them.
    """

    keys: Tuple[bytes, ...] = field(repr=False)
    source: Optional[str] = None
    insecure: bool = False

    @classmethod
    def unsigned(cls) -> "KeyRing":
        return cls(keys=(b"",), source=None, insecure=True)

    @property
    def key_ids(self) -> Tuple[str, ...]:
        """A short public name for each key (so two nodes can be compared), never the key."""
        return tuple(hmac.new(k, b"iwayfailover key id", hashlib.sha256).hexdigest()[:12] for k in self.keys)

    def status(self) -> dict:
        if self.insecure:
            return {"mode": "insecure", "key_file": None, "key_ids": []}
        return {"mode": "hmac-sha256", "key_file": self.source, "key_ids": list(self.key_ids)}


def parse_key_file(data: bytes, source: str) -> KeyRing:
    """
    The keys in a key file's bytes.

    @raise KeyFileError: no key, a key too short, too many keys, or not text.
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise KeyFileError("not UTF-8 text (make a key with: iwsrv keygen PATH)") from None
    keys = []
    for number, line in enumerate(text.splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if len(line) < MIN_KEY_LENGTH:
            raise KeyFileError(
                f"the key on line {number} has {len(line)} characters; at least {MIN_KEY_LENGTH} are needed"
                " (make one with: iwsrv keygen PATH)"
            )
        keys.append(line.encode("utf-8"))
    if not keys:
        raise KeyFileError("no key in it (make one with: iwsrv keygen PATH)")
    if len(keys) > MAX_KEYS:
        raise KeyFileError(f"{len(keys)} keys; at most {MAX_KEYS} (one signs, the others are accepted while changing keys)")
    return KeyRing(keys=tuple(keys), source=source)


def read_key_file(path: str) -> KeyRing:
    """
    Read the key file at C{path}.

    @raise KeyFileError: unreadable or unusable.
    """
    try:
        with open(path, "rb") as f:
            data = f.read(64 * 1024 + 1)
    except OSError as e:
        raise KeyFileError(f"cannot read it: {e.strerror or e}") from None
    if len(data) > 64 * 1024:
        raise KeyFileError("over 64 KiB; a key file holds a few short lines")
    return parse_key_file(data, path)


def exposure(path: str) -> Optional[str]:
    """
    Why the key file at C{path} is exposed, or None: it should be readable
    and writable by its owner only.
    """
    try:
        mode = os.stat(path).st_mode
        loose = exposed(path)
    except OSError:
        return None
    if not loose:
        return None
    return f"key file {path} has mode {stat.S_IMODE(mode):04o}: {', '.join(loose)}; run: chmod 600 {path}"


def exposed(file_path) -> list:
    """
    Who, besides its owner, may read or change the file at C{file_path}
    (empty: nobody): for a key file, and for etcd's password file.

    @raise OSError: it cannot be looked at.
    """
    mode = os.stat(file_path).st_mode
    loose = []
    if mode & stat.S_IRGRP:
        loose.append("its group can read it")
    if mode & stat.S_IROTH:
        loose.append("every user can read it")
    if mode & (stat.S_IWGRP | stat.S_IWOTH):
        loose.append("others can change it")
    return loose


def new_key() -> str:
    """A new random key: 32 bytes as 64 hex digits."""
    return secrets.token_hex(32)


def write_new_key_file(path: str) -> None:
    """
    Create C{path} holding one new key, readable and writable by its owner
    only. Never replaces a file: an existing key is refused.

    @raise OSError: the file exists, or cannot be created.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.fchmod(fd, 0o600)  # whatever the umask
        os.write(fd, (new_key() + "\n").encode("ascii"))
        os.fsync(fd)
    finally:
        os.close(fd)


def hello(nonce: bytes) -> bytes:
    return HELLO_MAGIC + bytes([HELLO_VERSION]) + nonce


def parse_hello(data: bytes) -> bytes:
    """
    The nonce of a hello.

    @raise AuthError: not a hello this version understands.
    """
    if data[:2] == b"IW" and data[2:3] != b"H":
        raise AuthError("sent a frame before the hello: an iwayfailover older than 0.3.0, without signed heartbeats?")
    if len(data) != HELLO_SIZE or not data.startswith(HELLO_MAGIC):
        raise AuthError(f"expected a hello ({HELLO_SIZE} bytes starting {HELLO_MAGIC!r}), got {len(data)} other bytes")
    if data[3] != HELLO_VERSION:
        raise AuthError(f"hello of version {data[3]}; this node speaks {HELLO_VERSION}")
    return data[4:]


def _session_key(key: bytes, client_nonce: bytes, server_nonce: bytes) -> bytes:
    return hmac.new(key, b"iwayfailover session" + client_nonce + server_nonce, hashlib.sha256).digest()


class Session:
    """
    One side of an authenticated connection, once both hellos are known:
    seals the frames it sends, opens (checks) the ones it receives.

    @param client: is this the connecting side?
    """

    def __init__(self, ring: KeyRing, client: bool, own_nonce: bytes, peer_nonce: bytes):
        client_nonce, server_nonce = (own_nonce, peer_nonce) if client else (peer_nonce, own_nonce)
        self.client_nonce, self.server_nonce = client_nonce, server_nonce
        self._keys = [_session_key(k, client_nonce, server_nonce) for k in ring.keys]
        self._send_key = self._keys[0]
        self._out = CLIENT if client else SERVER
        self._in = SERVER if client else CLIENT
        self.insecure = ring.insecure
        self.sent = 0
        self.received = 0

    @property
    def out(self) -> bytes:
        """The direction of the frames this side sends (C{b"C"} or C{b"S"})."""
        return self._out

    @property
    def into(self) -> bytes:
        """The direction of the frames this side receives."""
        return self._in

    def session_keys(self) -> Tuple[bytes, Tuple[bytes, ...]]:
        """
        The session key this side seals with, and those it accepts now (only
        the peer's, once a frame has shown which it is): for the pulses of
        L{iwayfailover.pulse}, derived from them.
        """
        return self._send_key, tuple(self._keys)

    def seal(self, body: bytes) -> bytes:
        self.sent += 1
        number = self.sent.to_bytes(NUMBER_SIZE, "big")
        mac = hmac.new(self._send_key, self._out + number + body, hashlib.sha256).digest()
        return number + body + mac

    def open(self, data: bytes) -> bytes:
        """
        The frame body inside sealed C{data}.

        @raise AuthError: too short, a bad MAC, or not the next number.
        """
        if len(data) < OVERHEAD + 1:
            raise AuthError(f"sealed frame of {len(data)} bytes is too short (at least {OVERHEAD + 1})")
        number, body, mac = data[:NUMBER_SIZE], data[NUMBER_SIZE:-MAC_SIZE], data[-MAC_SIZE:]
        message = self._in + number + body
        for i, key in enumerate(self._keys):
            if hmac.compare_digest(hmac.new(key, message, hashlib.sha256).digest(), mac):
                if i:
                    self._keys = [key]  # the peer signs with this key: check only it from now on
                break
        else:
            if self.insecure:
                raise AuthError("bad MAC: damaged, or signed with a key while this node has none (insecure = true)")
            raise AuthError("bad MAC: forged, damaged, or signed with a key this node does not hold")
        expected = self.received + 1
        got = int.from_bytes(number, "big")
        if got != expected:
            what = "replayed" if got < expected else "out of order (frames missing before it)"
            raise AuthError(f"frame number {got} {what}; expected {expected}")
        self.received = got
        return body


def load_keys(config) -> KeyRing:
    """
    The keys a configuration asks for: its C{secret_file}, or an unsigned
    ring where it says C{insecure = true}.

    @raise ConfigError: neither is set, or the key file is unusable.
    """
    from iwayfailover.config import ConfigError

    failover = config.failover
    if failover.secret_file is None:
        if failover.insecure or failover.coordinator == "etcd":
            # A group on etcd sends no heartbeats between its members: the
            # store's TLS and auth (etcd_cacert, etcd_user...) guard the role.
            return KeyRing.unsigned()
        raise ConfigError(
            config.path, "failover", "secret_file",
            problem="missing: without a key anyone who can reach a heartbeat port can stop or force a failover",
            allowed="the path of a key file made with `iwsrv keygen PATH`, or insecure = true to run unsigned on a network you trust",
        )
    try:
        return read_key_file(failover.secret_file)
    except KeyFileError as e:
        raise ConfigError(config.path, "failover", "secret_file", failover.secret_file, str(e)) from None
