"""
Writing the shared configuration safely. Both nodes, and people, edit the
one file on a share; a write must never leave half a file, and must never
overwrite a change it did not read.
"""

from __future__ import annotations

import hashlib
import os

from iwayfailover.atomic import replace_file


class ConfigConflict(Exception):
    """The file changed since it was read; the message says so, and nothing was written."""


def digest(data: bytes) -> str:
    """The digest L{iwayfailover.config.SharedConfig.digest} holds for the same text."""
    return hashlib.sha256(data).hexdigest()


def write_config(path: str, text: str, expected_digest: str) -> str:
    """
    Replace the file at C{path} with C{text}, only if it still holds what
    was read (its SHA-256 is C{expected_digest}).

    The new text goes to a temporary file in the same folder (the same
    share), is flushed to disk, takes the old file's permission bits (and
    owner, where allowed), and is renamed over the old file: readers see
    the old text or the new, never a mix.

    @return: the digest of the new text.
    @raise ConfigConflict: the file changed since it was read.
    @raise OSError: it could not be written; the old file is untouched.
    """
    # Through a symlink (e.g. to the share), replace the file it points to,
    # not the link: the other node reads the share, not this link.
    path = os.path.realpath(path)
    with open(path, "rb") as f:
        current = f.read()
    if digest(current) != expected_digest:
        raise ConfigConflict(
            f"{path} changed since it was read (someone else saved it); read it again and redo the change"
        )
    data = text.encode("utf-8")

    def still_as_read():  # last look: a save that raced ours wins, ours is dropped
        with open(path, "rb") as f:
            if digest(f.read()) != expected_digest:
                raise ConfigConflict(f"{path} changed while it was being written; nothing was written")

    replace_file(path, data, prefix=".iwayfailover-", like=os.stat(path), check=still_as_read)
    return digest(data)
