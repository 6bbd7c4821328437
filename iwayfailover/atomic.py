"""Replacing a file so that a crash leaves the old content or the new, never half of one."""

from __future__ import annotations

import os
import tempfile
from typing import Callable, Optional


def replace_file(path: str, data: bytes, prefix: str, like: Optional[os.stat_result] = None,
                 check: Optional[Callable[[], None]] = None) -> None:
    """
    Write C{data} to a temporary file in C{path}'s folder (the same file
    system, so the rename is atomic), flush it to disk, give it the
    permission bits (and owner, where allowed) of C{like}, call C{check} (a
    last chance to refuse, by raising), then rename it over C{path} and
    flush the folder. On any error the temporary file is removed and
    C{path} is untouched.

    @raise OSError: it could not be written.
    """
    folder = os.path.dirname(os.path.abspath(path))
    fd, temporary = tempfile.mkstemp(prefix=prefix, suffix=".tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if like is not None:
            os.chmod(temporary, like.st_mode & 0o7777)
            try:
                os.chown(temporary, like.st_uid, like.st_gid)
            except PermissionError:
                # Not root: the owner cannot be given away, but the group can
                # (to one of ours), and the group's read bit depends on it.
                try:
                    os.chown(temporary, -1, like.st_gid)
                except PermissionError:
                    pass  # the mode is kept all the same
        if check is not None:
            check()
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
        return
    try:
        os.fsync(directory)
    except OSError:
        pass  # some network file systems cannot sync a folder
    finally:
        os.close(directory)
