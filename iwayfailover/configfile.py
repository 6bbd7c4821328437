"""
Writing the shared configuration safely. Both nodes, and people, edit the
one file on a share; a write must never leave half a file, and must never
overwrite a change it did not read.
"""

from __future__ import annotations

import hashlib
import os
import tempfile


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
    with open(path, "rb") as f:
        current = f.read()
    if digest(current) != expected_digest:
        raise ConfigConflict(
            f"{path} changed since it was read (someone else saved it); read it again and redo the change"
        )
    data = text.encode("utf-8")
    folder = os.path.dirname(os.path.abspath(path))
    before = os.stat(path)
    fd, temporary = tempfile.mkstemp(prefix=".iwayfailover-", suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(temporary, before.st_mode & 0o7777)
        try:
            os.chown(temporary, before.st_uid, before.st_gid)
        except PermissionError:
            pass  # not ours to give away; the mode is kept all the same
        with open(path, "rb") as f:  # last look: a save that raced ours wins, ours is dropped
            if digest(f.read()) != expected_digest:
                raise ConfigConflict(f"{path} changed while it was being written; nothing was written")
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except OSError:
            pass
        raise
    try:
        directory = os.open(folder, os.O_RDONLY)
    except OSError:
        return digest(data)
    try:
        os.fsync(directory)
    except OSError:
        pass  # some network file systems cannot sync a folder
    finally:
        os.close(directory)
    return digest(data)
