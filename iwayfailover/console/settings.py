"""
Backup Settings: the fields of the shared configuration that the console
edits (the keys of L{iwayfailover.config.schema.KEYS} with a label: their
checks, help and defaults are the table's), and the change of the file's
text that keeps every other line, comment and key as it was.
"""

from __future__ import annotations

import configparser
import re
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Tuple

from iwayfailover.config import ConfigError, parse_config, schema


@dataclass(frozen=True)
class Field:
    key: str
    label: str
    check: Callable  # (path, section, key, text) -> value; raises ConfigError
    help: str = ""
    optional: bool = False
    default: str = ""


def _fields(kind: str) -> Tuple[Field, ...]:
    """The form's fields of a section of C{kind}: the keys of the table that have a label, in its order."""
    return tuple(
        Field(key.name, key.label, key.kind, key.help, optional=not key.required or key.only is not None,
              default="" if key.required else key.default_text)
        for key in schema.keys_of(kind) if key.label is not None
    )


SERVER_FIELDS = _fields("server")
FAILOVER_FIELDS = _fields("failover")

READ_ONLY = {kind: tuple(key.name for key in schema.keys_of(kind) if key.shown) for kind in ("failover", "server")}
"""Shown, never edited here: who may log in, heartbeat keys and the console's own address."""


def fields_of(section: str):
    return FAILOVER_FIELDS if section == "failover" else SERVER_FIELDS


def raw_values(text: str) -> Dict[str, Dict[str, str]]:
    """Every section's keys and values as written (no checks): what the form shows."""
    parser = configparser.ConfigParser(
        interpolation=None, inline_comment_prefixes=(";", "#"), default_section="\x00no-default", strict=False,
    )
    parser.optionxform = str
    try:
        parser.read_string(text)
    except configparser.Error:
        return {}
    return {section: dict(parser.items(section)) for section in parser.sections()}


def server_sections(text: str) -> List[str]:
    return [s for s in raw_values(text) if s.startswith("server:")]


_SECTION = re.compile(r"^\s*\[(?P<name>[^\]]*)\]")
_KEY = re.compile(r"^(?P<key>[^\s=:;#\[][^=:]*?)\s*[=:]\s*(?P<value>.*?)(?P<comment>\s+[;#].*)?$")


def set_values(text: str, changes: Dict[Tuple[str, str], Optional[str]]) -> str:
    """
    C{text} with each C{(section, key)} of C{changes} set to its value
    (None: the key removed). Other lines, comments included, stay as they
    were; a key not in its section yet is added at the section's end.
    """
    # Lines as configparser sees them: split on \n only (str.splitlines also
    # splits on \x0b, \x1c, \u2028, ... which the loader reads as text in a
    # line), each keeping its own ending (a CRLF file stays CRLF).
    lines = [line for line in re.split(r"(?<=\n)", text) if line]
    first = lines[0] if lines else ""
    newline = "\r\n" if first.endswith("\r\n") else "\n"
    pending = dict(changes)
    out: List[str] = []  # lines without their endings
    endings: List[str] = []
    section = None
    skipping = False  # continuation lines of a replaced value

    def add_missing(section_name):
        added = [f"{key} = {value}" for (s, key), value in list(pending.items()) if s == section_name and value is not None]
        for (s, key) in [k for k in pending if k[0] == section_name]:
            del pending[(s, key)]
        if added:
            # after the section's last non-blank line
            tail = []
            while out and not out[-1].strip():
                tail.append((out.pop(), endings.pop()))
            if endings and not endings[-1]:
                endings[-1] = newline
            out.extend(added)
            endings.extend(newline for _ in added)
            for line, ending in reversed(tail):
                out.append(line)
                endings.append(ending)

    for raw in lines:
        line = raw.rstrip("\r\n")
        ending = raw[len(line):]
        header = _SECTION.match(line)
        if header:
            add_missing(section)
            section = header.group("name").strip()
            skipping = False
            out.append(line)
            endings.append(ending)
            continue
        if skipping and line[:1] in (" ", "\t") and line.strip() and not line.strip()[0] in ";#":
            continue
        skipping = False
        match = _KEY.match(line)
        if match and (section, match.group("key").strip()) in pending:
            key = match.group("key").strip()
            value = pending.pop((section, key))
            skipping = True
            if value is not None:
                out.append(f"{key} = {value}{match.group('comment') or ''}")
                endings.append(ending or newline)
            continue
        out.append(line)
        endings.append(ending)
    add_missing(section)
    for (s, key), value in pending.items():  # a section not in the file yet
        if value is not None:
            if endings and not endings[-1]:
                endings[-1] = newline
            out.extend(["", f"[{s}]", f"{key} = {value}"])
            endings.extend([newline] * 3)
    if endings and not endings[-1]:
        endings[-1] = newline
    return "".join(line + ending for line, ending in zip(out, endings))


def check_form(text: str, path: str, form: Dict[Tuple[str, str], str], check_whole=None):
    """
    Check the values of a submitted form against the loader's rules.

    @param text: the file as it is now.
    @param form: C{(section, key)} -> the value typed (stripped).
    @param check_whole: called with the parsed new configuration for checks
        beyond the syntax (e.g. the listeners' plugins); raises ConfigError.
    @return: C{(new_text, errors)}: the new text when all is well (None if
        not), and C{(section, key)} (or C{None} for the whole file) -> message.
    """
    current = raw_values(text)
    errors: Dict[Optional[Tuple[str, str]], str] = {}
    changes: Dict[Tuple[str, str], Optional[str]] = {}
    for (section, key), value in form.items():
        field = next((f for f in fields_of(section) if f.key == key), None)
        if field is None or (section != "failover" and section not in current):
            continue  # only the fields of the form, of servers the file has
        if not value.isprintable() and current.get(section, {}).get(key) == value:
            continue  # as the file has it (written by hand): not a change
        if not value.isprintable():
            # line breaks of any kind, or control characters: they could add keys to the file
            errors[(section, key)] = "one line of printable characters only (no line breaks or control characters)"
            continue
        if value == "" and field.optional:
            if key in current.get(section, {}):
                changes[(section, key)] = None
            continue
        try:
            field.check(path, section, key, value)
        except ConfigError as e:
            errors[(section, key)] = _describe(e)
            continue
        if current.get(section, {}).get(key) != value:
            changes[(section, key)] = value
    if errors:
        return None, errors
    new_text = set_values(text, changes) if changes else text
    try:
        config = parse_config(new_text, path)
        if check_whole is not None:
            check_whole(config)
    except ConfigError as e:
        place = (e.section, e.key) if (e.section, e.key) in form else None
        errors[place] = _describe(e) if place is not None else str(e)
        return None, errors
    written = raw_values(new_text)
    for (section, key), value in changes.items():
        if value is not None and written.get(section, {}).get(key) != value:
            # e.g. "h:1 ; x": the file would read back as something else
            errors[(section, key)] = "would not read back as typed (a ; or # after a space starts a comment)"
    if errors:
        return None, errors
    # Last check: the new file differs from the old in the submitted keys only.
    before = raw_values(text)
    for section in set(before) | set(written):
        for key in set(before.get(section, {})) | set(written.get(section, {})):
            if (section, key) not in changes and before.get(section, {}).get(key) != written.get(section, {}).get(key):
                errors[None] = (f"The change would also have changed [{section}] {key}, which the form"
                                " did not submit; edit the file by hand")
                return None, errors
    return new_text, errors


def _describe(error: ConfigError) -> str:
    text = error.problem
    if error.allowed:
        text += f" (allowed: {error.allowed})"
    return text
