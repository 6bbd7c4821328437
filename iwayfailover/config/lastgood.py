"""
The last good configuration, kept on local disk.

Every configuration a node applies (at its start, and at each reload) is
copied, byte for byte, into its state dir. A node that starts while its
share cannot be read (missing, no permission, an I/O error, a read that
hangs) starts from that copy instead (L{iwayfailover.tap.start_config}),
says so, and goes back to the shared file as soon as a reload reads it
(L{iwayfailover.reload.ConfigPoller}). A shared file that is readable but
invalid is never a reason to use the copy: a bad edit is refused loudly,
as always, not hidden behind an older file.

Two files in the state dir:

    - C{last-good.ini}: the bytes read from the share, unchanged, so that
      C{diff} against the share works and the copy can be put back as it
      is;
    - C{last-good.json}: where they came from and when:
      C{{"config": the shared file's absolute path, "digest": the SHA-256
      of last-good.ini, "saved": the Unix time it was written}}.

A header comment in the copy would change its digest (the one the status
shows, and the one a reload compares); a sidecar keeps the copy identical
to the share. Each file is replaced atomically (L{replace_file}), the INI
first: a crash between the two leaves a digest that does not match, and
such a copy is refused, never used half-updated.

The heartbeat key (C{secret_file}) and other files the configuration names
are not copied: relative paths in the copy are resolved against the shared
file's folder, as they are in the shared file, and a file that cannot be
read stops the start with the line it always gives (docs/shared-configuration.md
says why, and what to keep on local disk).
"""

from __future__ import annotations

import configparser
import hashlib
import json
import os
import time
from dataclasses import dataclass
from typing import Callable, Optional

from twisted.logger import Logger

from iwayfailover.atomic import replace_file
from iwayfailover.config.schema import key_of
from iwayfailover.config.values import ConfigError

COPY_NAME = "last-good.ini"
ABOUT_NAME = "last-good.json"


class CopyRefused(Exception):
    """A local copy exists but must not be used; the message says why, in one line."""


def source_of(config_path: str) -> str:
    """The shared file as a copy records it: its absolute path, as given (not through symlinks)."""
    return os.path.abspath(config_path)


def describe_age(seconds: float) -> str:
    """An age for people: C{42 s}, C{17 min}, C{5.2 h}, C{3.1 days}."""
    seconds = max(0.0, seconds)
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    if seconds < 172800:
        return f"{seconds / 3600:.1f} h"
    return f"{seconds / 86400:.1f} days"


@dataclass(frozen=True)
class LocalCopy:
    """
    A local copy of the shared configuration, as found in a state dir or
    just written there.

    @ivar path: the copy (C{STATE_DIR/last-good.ini}).
    @ivar source: the shared file it was read from (absolute).
    @ivar digest: the SHA-256 of its bytes (the digest the status shows).
    @ivar saved: the Unix time it was written.
    @ivar text: its text (empty for one just written: the node runs it).
    """

    path: str
    source: str
    digest: str
    saved: float
    text: str = ""

    def reload_interval(self) -> float:
        """
        The copy's C{reload_interval}, read without parsing the rest (which
        may read files on the share: the etcd password file), or its
        default when it says none that can be read.
        """
        key = key_of("failover", "reload_interval")
        parser = configparser.ConfigParser(
            interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\x00no-default", strict=False,
        )
        try:
            parser.read_string(self.text)
            raw = parser.get("failover", "reload_interval", fallback="")
            return key.kind(self.path, "failover", "reload_interval", raw) if raw else key.default
        except (configparser.Error, ConfigError):
            return key.default


def find_copy(directory: str, config_path: str) -> Optional[LocalCopy]:
    """
    The local copy of C{config_path} kept in the state dir C{directory}.

    @return: the copy, or None where there is none.
    @raise CopyRefused: there is one, but it is of another shared file (the
        state dir was used with another --config), or it cannot be read, or
        it does not match its digest (damaged, or a write cut short).
    """
    copy_path = os.path.join(directory, COPY_NAME)
    about_path = os.path.join(directory, ABOUT_NAME)
    try:
        with open(about_path, "rb") as f:
            about = json.loads(f.read().decode("utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        raise CopyRefused(f"the local copy's record {about_path} cannot be read: {getattr(e, 'strerror', None) or e}") from None
    if not isinstance(about, dict) or not all(isinstance(about.get(k), t) for k, t in
                                                (("config", str), ("digest", str), ("saved", (int, float)))):
        raise CopyRefused(f"the local copy's record {about_path} is not one this node writes")
    source = source_of(config_path)
    if about["config"] != source:
        raise CopyRefused(
            f"the local copy in {directory} is of {about['config']}, not of {source}"
            " (this state dir was used with another --config): not used"
        )
    try:
        with open(copy_path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise CopyRefused(f"the local copy {copy_path} cannot be read: {e.strerror or e}") from None
    if hashlib.sha256(data).hexdigest() != about["digest"]:
        raise CopyRefused(f"the local copy {copy_path} does not match the digest in {about_path} (damaged, or a write cut short)")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise CopyRefused(f"the local copy {copy_path} is not UTF-8 text (byte {e.start})") from None
    return LocalCopy(path=copy_path, source=source, digest=about["digest"], saved=float(about["saved"]), text=text)


class LastGood:
    """
    Keeps the local copy of the configuration a node runs: L{keep} writes
    it after each configuration applied. A write that fails (a full disk, a
    state dir gone read-only) is logged once, kept in L{error} for the
    status, and never stops the node.

    @ivar copy: the copy on disk (without its text): the one found at start,
        or the last written; None while there is none.
    @ivar error: why the last write failed, or None.
    """

    log = Logger()

    def __init__(self, directory: str, config_path: str, found: Optional[LocalCopy] = None,
                 wall: Callable[[], float] = time.time):
        self.directory = directory
        self.source = source_of(config_path)
        self.copy_path = os.path.join(directory, COPY_NAME)
        self.about_path = os.path.join(directory, ABOUT_NAME)
        self.copy = None if found is None else LocalCopy(found.path, found.source, found.digest, found.saved)
        self.error: Optional[str] = None
        self._wall = wall

    def keep(self, config) -> bool:
        """
        Write C{config}'s text as the local copy, then its record. Never
        raises.

        @return: whether it was written.
        """
        data = config.text.encode("utf-8")
        digest = hashlib.sha256(data).hexdigest()
        if not config.text or digest != config.digest:
            return False  # not parsed from a file's text (made in code): nothing to copy
        saved = self._wall()
        about = json.dumps({"config": self.source, "digest": digest, "saved": saved}, indent=1) + "\n"
        try:
            replace_file(self.copy_path, data, prefix=".last-good.")
            replace_file(self.about_path, about.encode("utf-8"), prefix=".last-good.")
        except OSError as e:
            error = f"cannot write the local copy {self.copy_path}: {e.strerror or e}"
            if error != self.error:
                self.log.error(
                    "{error}; the node runs on, but could not start from it while its share is unreadable",
                    error=error,
                )
            self.error = error
            return False
        if self.error is not None:
            self.log.info("the local copy {copy} is written again", copy=self.copy_path)
            self.error = None
        self.copy = LocalCopy(self.copy_path, self.source, digest, saved)
        return True
