"""
The key reference docs/configuration.md, written from the table of keys
(L{iwayfailover.config.schema.KEYS}):

    python -m iwayfailover.config.reference > docs/configuration.md

(C{make docs} does this). A test fails when the file in the source tree is
not what this writes.
"""

from __future__ import annotations

import sys
from typing import List

from iwayfailover.config.schema import CLIENT, PROCESS, SECTION_TITLES, Key, keys_of
from iwayfailover.config.values import COORDINATORS

_INTRO = """\
# The shared configuration: every key

<!-- Written by `make docs` (python -m iwayfailover.config.reference) from the table of keys
in iwayfailover/config/schema.py; edit the table, not this file. -->

One INI file, read by every node; see docs/shared-configuration.md for a worked example. Numbers may be
fractional. Inline comments start with `;` or `#` after a space. Unknown sections and keys,
a `[DEFAULT]` section, duplicate keys and bad values are errors naming the file, section,
key, value and what is allowed.

*Applied*: when a changed value takes effect. Each node reads the file every
`reload_interval` seconds; "at once" means at that read, without a restart. A key whose
meaning starts with an *italic name* is a field of the console's Backup Settings form,
under that name.
"""

_SECTIONS = {
    "failover": "For every node.",
    "server": "One for each node (NAME: 1 to 64 of `A-Z a-z 0-9 _ . -`). The floating IP and notify hooks"
              " of `[failover]` may be set here too; a key set in both sections takes the server's value.",
    "listener": "The channels, run only while their node is live: a twistd plugin (`plugin`) or a program"
                " (`command`), not both.",
}

_GROUPS = {
    "": "",
    CLIENT: "The floating IP and the notify hooks, in `[failover]` or in a server's section (the server's wins):",
    PROCESS: "A process channel's keys (with `command` only):",
}


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _row(key: Key) -> str:
    meaning = f"*{key.label}*: {key.help}" if key.label else key.help
    if key.only is not None:
        others = " or ".join(c for c in COORDINATORS if c != key.only)
        meaning += f" (coordinator = {key.only} only; " + (
            f"an error with {others})" if key.refused_elsewhere else f"allowed but not used with {others})"
        )
    return "| " + " | ".join([
        f"`{key.name}`", _cell(meaning), _cell(f"{key.kind.name}: {key.kind.allowed}"), _cell(key.default_text),
        key.applied,
    ]) + " |"


def render() -> str:
    """The text of docs/configuration.md."""
    lines: List[str] = [_INTRO]
    for kind, title in SECTION_TITLES.items():
        lines += [f"## {title}", "", _SECTIONS[kind], ""]
        for group, heading in _GROUPS.items():
            keys = [key for key in keys_of(kind, group) if not (group == CLIENT and kind == "server")]
            if not keys:
                continue
            if heading:
                lines += [heading, ""]
            lines += ["| key | meaning | type and allowed values | default | applied |", "|---|---|---|---|---|"]
            lines += [_row(key) for key in keys]
            lines.append("")
    return "\n".join(lines)


def main() -> None:
    sys.stdout.write(render())


if __name__ == "__main__":
    main()
