"""
What is this node's own and must survive a restart: its epoch, kept in the
node's state dir (never on the shared network folder).
"""

from __future__ import annotations

import os

from iwayfailover.atomic import replace_file


class StateError(Exception):
    """The state dir or a file in it is unusable; the message names it."""


def default_state_dir(server: str) -> str:
    """
    The per-user state folder for C{server}: C{$XDG_STATE_HOME/iwayfailover/NAME},
    by default C{~/.local/state/iwayfailover/NAME}. The server's name keeps two
    nodes of one host apart.
    """
    base = os.environ.get("XDG_STATE_HOME") or os.path.join(os.path.expanduser("~"), ".local", "state")
    return os.path.join(base, "iwayfailover", server)


class EpochStore:
    """The epoch, as one decimal number in C{DIR/epoch}."""

    def __init__(self, directory: str):
        self.directory = directory
        self.path = os.path.join(directory, "epoch")

    def prepare(self) -> None:
        """
        Make the state dir if need be and check that it can be written.

        @raise StateError: it cannot.
        """
        try:
            os.makedirs(self.directory, mode=0o700, exist_ok=True)
        except OSError as e:
            raise StateError(f"state dir {self.directory}: cannot create it: {e.strerror or e}") from None
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise StateError(f"state dir {self.directory}: not writable by this user")

    def load(self) -> int:
        """
        The stored epoch, 0 where none was stored yet.

        @raise StateError: the file is unreadable or does not hold an epoch.
        """
        try:
            with open(self.path, encoding="ascii") as f:
                text = f.read().strip()
        except FileNotFoundError:
            return 0
        except (OSError, UnicodeDecodeError) as e:
            raise StateError(f"epoch file {self.path}: cannot read it: {e}") from None
        if not text.isdigit():
            raise StateError(
                f"epoch file {self.path}: holds {text[:40]!r}, not a whole number;"
                " restore it or remove it (a removed epoch counts from 0)"
            )
        return int(text)

    def save(self, epoch: int) -> None:
        """
        Keep C{epoch}: written to a temporary file in the same folder, flushed
        to disk, then renamed over the old one, so a crash leaves the old
        epoch or the new one, never half of one.

        @raise OSError: it could not be written.
        """
        replace_file(self.path, f"{epoch}\n".encode("ascii"), prefix=".epoch.")
