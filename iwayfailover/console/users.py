"""
The console's users: a file of C{name:hash} lines, written by
C{iwsrv adduser FILE USER}, checked by a twisted.cred checker.

A hash is C{scrypt$N$r$p$SALT$KEY} (salt and key in URL-safe base64): a
fresh 16-byte salt per password, compared in constant time. The file is
read at every login, so a user added or removed counts at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import re
import secrets
from typing import Callable, Dict, Optional

from twisted.cred import error
from twisted.cred.checkers import ICredentialsChecker
from twisted.cred.credentials import IUsernamePassword
from twisted.internet import defer
from zope.interface import implementer

from iwayfailover.atomic import replace_file

USER_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}\Z")
USER_ALLOWED = "1 to 64 of A-Z a-z 0-9 _ . @ - (starting with a letter or digit)"
MIN_PASSWORD = 8

SCRYPT_N = 2 ** 14
SCRYPT_R = 8
SCRYPT_P = 1
_MAX_N = 2 ** 20  # a hand-edited file must not make a login take minutes


class UsersFileError(Exception):
    """The users file, or a line in it, is unusable; the message says where and why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode("ascii").rstrip("=")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=256 * n * r + 2 ** 20, dklen=32)


def hash_password(password: str, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """A salted scrypt hash of C{password}, in the users file's form."""
    salt = secrets.token_bytes(16)
    return f"scrypt${n}${r}${p}${_b64(salt)}${_b64(_scrypt(password, salt, n, r, p))}"


def verify_password(password: str, stored: str) -> bool:
    """
    Does C{password} match the C{stored} hash? The comparison takes the same
    time wherever the two differ.

    @raise UsersFileError: C{stored} is not a hash this module wrote.
    """
    try:
        scheme, n, r, p, salt, key = stored.split("$")
        n, r, p = int(n), int(r), int(p)
        salt, key = _unb64(salt), _unb64(key)
    except ValueError:
        raise UsersFileError("not a scrypt$N$r$p$SALT$KEY hash") from None
    if scheme != "scrypt" or not (2 <= n <= _MAX_N and n & (n - 1) == 0) or not (1 <= r <= 32 and 1 <= p <= 16):
        raise UsersFileError("not a scrypt hash with sane parameters")
    return hmac.compare_digest(_scrypt(password, salt, n, r, p), key)


# Checked against when the user does not exist, so that a wrong name takes
# as long as a wrong password.
_DUMMY = hash_password(secrets.token_hex(8))


def parse_users(text: str, path: str = "users") -> Dict[str, str]:
    """
    The users of a users file: name to hash.

    @raise UsersFileError: a line is not C{name:hash}, naming the line.
    """
    users = {}
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, colon, stored = line.partition(":")
        if not colon or not USER_PATTERN.match(name) or not stored.startswith("scrypt$"):
            raise UsersFileError(f"{path} line {number}: not NAME:scrypt$... (write it with iwsrv adduser)")
        users[name] = stored
    return users


def read_users(path: str) -> Dict[str, str]:
    """
    @raise UsersFileError: the file cannot be read or parsed.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return parse_users(f.read(), path)
    except (OSError, UnicodeDecodeError) as e:
        raise UsersFileError(f"cannot read the users file {path}: {getattr(e, 'strerror', None) or e}") from None


def add_user(path: str, user: str, password: str, n: int = SCRYPT_N) -> bool:
    """
    Add C{user} to the users file at C{path} (made if missing), or give it a
    new password. The file is replaced atomically and is left mode 0600.

    @return: True if the user was new.
    @raise ValueError: a bad user name or a password too short.
    @raise UsersFileError: the existing file cannot be read.
    @raise OSError: it could not be written.
    """
    if not USER_PATTERN.match(user):
        raise ValueError(f"bad user name {user!r} (allowed: {USER_ALLOWED})")
    if len(password) < MIN_PASSWORD:
        raise ValueError(f"the password is too short (at least {MIN_PASSWORD} characters)")
    path = os.path.realpath(path)  # through a symlink (to the share): the file it points to
    lines = []
    like = None
    if os.path.exists(path):
        like = os.stat(path)  # rewriting keeps its mode and owner (a new file stays 0600)
        with open(path, encoding="utf-8") as f:
            text = f.read()
        parse_users(text, path)  # refuse to rewrite a file we cannot read
        lines = text.splitlines()
    entry = f"{user}:{hash_password(password, n=n)}"
    new = True
    for index, line in enumerate(lines):
        if line.strip().partition(":")[0] == user:
            lines[index] = entry
            new = False
    if new:
        lines.append(entry)
    # mkstemp makes the temporary file 0600; with no `like`, that mode stays.
    replace_file(path, ("\n".join(lines) + "\n").encode("utf-8"), prefix=".iwayfailover-users-", like=like)
    return new


def users_now(path: Optional[str]) -> Optional[Dict[str, str]]:
    """
    The users file's users and hashes as they are now: {} when no file is
    configured or it is gone (nobody may stay logged in), None when it
    cannot be read or parsed right now (keep things as they are).
    """
    if path is None or not os.path.exists(path):
        return {}
    try:
        return read_users(path)
    except UsersFileError:
        return None


class ConsoleUser:
    """Who is logged in: the avatar of the console's realm."""

    def __init__(self, name: str):
        self.name = name


@implementer(ICredentialsChecker)
class UsersFileChecker:
    """
    Checks user names and passwords against a users file.

    @param path: a function returning the file's path now (it follows
        configuration reloads), or None when no file is configured.
    @param run: runs a blocking function away from the reactor thread and
        returns a Deferred of its result (scrypt takes tens of milliseconds).
    """

    credentialInterfaces = (IUsernamePassword,)

    def __init__(self, path: Callable[[], Optional[str]], run=None):
        self._path = path
        self._run = run or (lambda f, *a: defer.maybeDeferred(f, *a))
        self.verified: Dict[str, str] = {}
        """user -> the stored hash of its last good login (to end sessions when it changes)"""

    def requestAvatarId(self, credentials):
        return self._run(self._check, credentials.username, credentials.password)

    def _check(self, username, password):
        if isinstance(username, bytes):
            username = username.decode("utf-8", "replace")
        if isinstance(password, bytes):
            password = password.decode("utf-8", "replace")
        path = self._path()
        if path is None:
            raise error.UnauthorizedLogin("no console_users file is configured")
        try:
            stored = read_users(path).get(username)
        except UsersFileError as e:
            raise error.UnauthorizedLogin(str(e)) from None
        if stored is None:
            verify_password(password, _DUMMY)
            raise error.UnauthorizedLogin("no such user")
        try:
            if verify_password(password, stored):
                self.verified[username] = stored
                return username
        except UsersFileError as e:
            raise error.UnauthorizedLogin(f"{path}: user {username}: {e}") from None
        raise error.UnauthorizedLogin("wrong password")
