"""
The one table of the shared configuration's keys, L{KEYS}: for each key its
section, the kind of value it holds (its check), its default, what it means,
and how the console and a reload treat it. From it come the parser's
per-key checks and unknown-key errors (L{iwayfailover.config.parse}), the
fields of the settings classes (L{iwayfailover.config.settings}), the
console's Backup Settings form (L{iwayfailover.console.settings}), the list
of keys a reload changed (L{changed_keys}) and the key reference
docs/configuration.md (L{iwayfailover.config.reference}).

Adding a key is one line in L{KEYS}; rules between keys (a threshold above
the heartbeat interval, failback needing a preferred server, ...) stay in
the parser.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, List, Optional, Tuple

from iwayfailover.config.values import (
    ADDRESS, BOOLEAN, COMMAND, CONSOLE, COUNT, ENVIRONMENT, FOLDER, HOOK, INTEGER, INTERFACE, LOCATION, PLUGIN, PORT,
    SECONDS, SECRET_FILE, SERVER_NAME, SERVER_NAMES, USERS_FILE, VIRTUAL_IP, WITNESSES, ConfigError, ValueKind,
    COORDINATOR, ETCD_ENDPOINTS, ETCD_PREFIX, ETCD_USER, PASSWORD_FILE, PEM_FILE,
)

FAILOVER = ("failover",)
SERVER = ("server",)
BOTH = ("failover", "server")
"""A key of [failover] that a server's own section may set too: the server's value wins."""
LISTENER = ("listener",)

SECTION_KINDS = ("failover", "server", "listener")
SECTION_TITLES = {"failover": "[failover]", "server": "[server:NAME]", "listener": "[listener:NAME]"}

CLIENT = "floating IP and notify hooks"
"""The group of the keys that get clients to the live node (L{iwayfailover.config.settings.ClientSettings})."""
PROCESS = "process channel"
"""The group of a listener's keys that only a process channel (C{command = ...}) takes."""

LIVE = "at once"
NEXT_START = "at the next start"

PAIR = "pair"
ETCD = "etcd"
"""The coordinators ([failover] coordinator): a pair on heartbeat links, or a group on etcd."""


@dataclass(frozen=True)
class Key:
    """
    One key of the shared configuration.

    @ivar name: the key as written in the file.
    @ivar sections: the kinds of section that take it (L{FAILOVER}, L{SERVER},
        L{BOTH}, L{LISTENER}).
    @ivar kind: its kind of value: the check, what is allowed, how a value is shown.
    @ivar default: the value when the key is not set (None: not set; for a
        required key, unused).
    @ivar help: what it means, in a line (the reference and the console's hint).
    @ivar label: set for a key the console's Backup Settings form edits: the field's label.
    @ivar shown: the form shows the key's value but does not edit it.
    @ivar group: L{CLIENT}, L{PROCESS}, or "" for the section's own keys.
    @ivar required: every section of its kind must set it (not empty).
    @ivar blank_unsets: an empty value is as if the key were not set.
    @ivar stored: the settings class has a field of the key's name (False:
        the parser stores it otherwise, and C{read} reads it back).
    @ivar read: for a key not C{stored}: its value from the settings.
    @ivar unset: how "not set" reads, where that is not the default's value.
    @ivar applied: when a changed value takes effect: L{LIVE} or L{NEXT_START}.
    @ivar only: the one coordinator (L{PAIR} or L{ETCD}) the key is used
        with, or None for both; C{required} holds with that coordinator only.
    @ivar refused_elsewhere: with another coordinator the key is an error
        (True), or is allowed and ignored (False).
    """

    name: str
    sections: Tuple[str, ...]
    kind: ValueKind
    default: Any
    help: str
    label: Optional[str] = None
    shown: bool = False
    group: str = ""
    required: bool = False
    blank_unsets: bool = False
    stored: bool = True
    read: Optional[Callable[[Any], Any]] = field(default=None, compare=False)
    unset: Optional[str] = None
    applied: str = LIVE
    only: Optional[str] = None
    refused_elsewhere: bool = True

    def used_with(self, coordinator: str) -> bool:
        """Is the key used with C{coordinator} (L{PAIR} or L{ETCD})?"""
        return self.only is None or self.only == coordinator

    def value_of(self, settings) -> Any:
        """The key's value in C{settings} (the settings of one section, or None for a section not there)."""
        if settings is None:
            return None
        if self.group == CLIENT:
            settings = settings.client
        return getattr(settings, self.name) if self.read is None else self.read(settings)

    def show(self, value) -> str:
        """C{value} as text; C{None} (not set) as the default's text."""
        if value is None or value == ():
            if self.unset is not None:
                return self.unset
            if self.default is None or self.default == () or self.required:
                return "none"
            value = self.default
        return self.kind.show(value)

    @property
    def default_text(self) -> str:
        """The default as the reference and the console's placeholder show it."""
        if self.required:
            return "required" if self.only is None else f"required with coordinator = {self.only}"
        return self.show(None)


def _plugin_line(listener):
    return (listener.plugin,) + listener.args if listener.plugin else None


KEYS: Tuple[Key, ...] = (
    # [failover]
    Key("coordinator", FAILOVER, COORDINATOR, PAIR, "what decides which node is live: pair (two nodes on heartbeat links) or etcd (a group of any size whose live role is a key under a lease in etcd)", shown=True, applied=NEXT_START),
    Key("heartbeat_interval", FAILOVER, SECONDS, 1.0, "seconds between heartbeats sent by a live node (with coordinator = etcd: between the live node's lease keepalives)", label="Heartbeat interval"),
    Key("reload_interval", FAILOVER, SECONDS, 5.0, "seconds between reads of this file", label="Reload interval"),
    Key("secret_file", FAILOVER, SECRET_FILE, None, "the key that signs and checks every heartbeat, made by `iwsrv keygen PATH`; required in a pair unless insecure = true; a group on etcd needs none (its members send no heartbeats)", shown=True),
    Key("insecure", FAILOVER, BOOLEAN, False, "run with unsigned heartbeats (a test bench only; warned about at every start); not together with secret_file", shown=True),
    Key("pulses", FAILOVER, BOOLEAN, False, "for lossy links: a live node also sends its heartbeat as sealed UDP datagrams (pulses) to the port number of its backup's heartbeat port, at least 12 per threshold, and the backup answers them the same way: a lost packet then costs one pulse, not every heartbeat queued behind it on the TCP link; signed with the connection's keys, so never sent with insecure = true, nor beside ssl:/tls: links (pulses are not encrypted); the live node sends them from a thread of its own, which a busy reactor does not hold up (for up to half the backup's threshold), so they also keep a pair together through short stalls of the reactor (thresholds of 0.3 s and below); they cost CPU (at interval 0.03 s / threshold 0.15 s 3 to 4 % of a core more per node: docs/benchmarks.md); they need UDP open on the heartbeat ports between the hosts, both ways (a live node whose pulses get no answer for 10 s says so)", label="Pulses", only=PAIR),
    Key("realtime", FAILOVER, BOOLEAN, False, "the live node's pulse thread runs under real-time scheduling (SCHED_FIFO, priority 1), as corosync's token does, so that a host busy with other work does not delay its pulses; needs root, CAP_SYS_NICE or LimitRTPRIO=1 (a node that cannot have it refuses to start, naming the grant); only the pulse thread is real-time, never the reactor (with pulses = true)", label="Real-time pulses", only=PAIR, applied=NEXT_START),
    Key("lock_memory", FAILOVER, BOOLEAN, False, "lock the node's memory in RAM (mlockall), so that no heartbeat waits for a page to come back from swap; needs root, CAP_IPC_LOCK or LimitMEMLOCK=infinity (a finite limit fails later, as the node grows; a node that cannot lock at start refuses to start, naming the grant)", label="Lock memory", applied=NEXT_START),
    Key("witness", FAILOVER, WITNESSES, (), "addresses a backup must reach before it takes over on silence, and without which a cut-off live node fences itself", label="Witness", blank_unsets=True, only=PAIR),
    Key("self_fence", FAILOVER, BOOLEAN, True, "a live node that reaches neither its backup nor any witness stops serving (needs witness)", label="Self-fence", only=PAIR),
    Key("failback", FAILOVER, BOOLEAN, False, "give the live role back to the preferred server once it is a healthy backup", label="Failback"),
    Key("preferred", FAILOVER, SERVER_NAME, None, "the server failback returns the role to", label="Preferred server", blank_unsets=True),
    Key("unsaved_epoch", FAILOVER, BOOLEAN, False, "take the live role even when the new epoch cannot be saved in the state dir (a full or read-only disk); epochs may then repeat after a restart, so they no longer fence", label="Serve with an unsaved epoch"),
    Key("failback_delay", FAILOVER, SECONDS, 30.0, "seconds the preferred server must have been a healthy backup before failback", label="Failback delay"),
    Key("etcd_endpoints", FAILOVER, ETCD_ENDPOINTS, (), "the etcd cluster's client URLs; every node of the group names the same cluster", required=True, only=ETCD, shown=True, applied=NEXT_START),
    Key("etcd_prefix", FAILOVER, ETCD_PREFIX, "/iwayfailover", "the group's keys live under it (PREFIX/live, PREFIX/members/NAME); one prefix for each group sharing an etcd", only=ETCD, shown=True, applied=NEXT_START),
    Key("etcd_cacert", FAILOVER, PEM_FILE, None, "the CA certificates that sign etcd's server certificates (https endpoints only; without it, the system's trusted CAs); the host name is checked", only=ETCD, shown=True, applied=NEXT_START, unset="the system's trusted CAs"),
    Key("etcd_cert", FAILOVER, PEM_FILE, None, "this node's client certificate for etcd (https endpoints only; with etcd_key)", only=ETCD, shown=True, applied=NEXT_START),
    Key("etcd_key", FAILOVER, PEM_FILE, None, "the private key of etcd_cert", only=ETCD, shown=True, applied=NEXT_START),
    Key("etcd_user", FAILOVER, ETCD_USER, None, "the etcd user this node authenticates as (with etcd_password_file); none: etcd's auth is off", only=ETCD, shown=True, applied=NEXT_START),
    Key("etcd_password_file", FAILOVER, PASSWORD_FILE, None, "the file whose first line is etcd_user's password; readable by its owner only (chmod 600)", only=ETCD, shown=True, applied=NEXT_START),
    Key("console_users", BOTH, USERS_FILE, None, "the console's users and password hashes, made by `iwsrv adduser FILE USER`; without it nobody can log in", shown=True),
    # [server:NAME]
    Key("backup_location", SERVER, LOCATION, None, "where this server heartbeats to when live", label="Location of Backup", required=True, only=PAIR, refused_elsewhere=False),
    Key("heartbeat_port", SERVER, PORT, None, "where this server hears heartbeats; it listens in both roles", label="Heartbeat Port", required=True, only=PAIR, refused_elsewhere=False),
    Key("threshold", SERVER, SECONDS, None, "seconds without a live signal before this server, as backup, takes over; more than heartbeat_interval, 3 x or more is advised. With coordinator = etcd: the TTL of this server's leases, whole seconds, 2 or more: a crashed live node's role is free after at most this", label="Threshold", required=True),
    Key("console", SERVER, CONSOLE, None, "the administration console, status API and metrics (a bare port: on 127.0.0.1 only); re-bound at once, but a console added or removed takes effect at the next start", shown=True),
    Key("second_address", SERVER, ADDRESS, None, "a second path to this server, as corosync's second link: its address on another network (a second NIC, VLAN or switch), where it also listens for pulses on its heartbeat port's number (UDP); with pulses = true its live peer sends every pulse both ways, so that the loss of one network is no takeover. The heartbeat connection and the probe still use backup_location", label="Second address", only=PAIR, applied=NEXT_START),
    Key("priority", SERVER, INTEGER, 0, "breaks a tie between two live nodes of the same epoch: the higher stays live (with coordinator = etcd: when several could take the role, the higher campaigns first)", label="Priority"),
    # [failover] or [server:NAME]: getting clients to the live node
    Key("virtual_ip", BOTH, VIRTUAL_IP, None, "the floating IP the live node holds (needs interface)", group=CLIENT),
    Key("interface", BOTH, INTERFACE, None, "the network interface the floating IP is put on", group=CLIENT),
    Key("on_live", BOTH, HOOK, None, "a command run when this node has gone live, once its floating IP and listeners are up", group=CLIENT),
    Key("on_backup", BOTH, HOOK, None, "a command run when this node is a backup (started as one, yielded, handed over), once its listeners and floating IP are down", group=CLIENT),
    Key("on_fault", BOTH, HOOK, None, "a command run when a listener or the floating IP becomes FAILED, or the node could not keep its epoch; once per failure", group=CLIENT),
    Key("hook_timeout", BOTH, SECONDS, 10.0, "seconds a notify hook may run before it is killed", group=CLIENT),
    # [listener:NAME]
    Key("plugin", LISTENER, PLUGIN, None, "a twistd plugin and its options, as after `twistd` on a command line (or command instead)", stored=False, read=_plugin_line),
    Key("servers", LISTENER, SERVER_NAMES, None, "the servers that run this channel", unset="every server"),
    Key("served_by", LISTENER, BOOLEAN, False, "a web channel (a plugin serving a twisted.web site, as twistd's web plugin does): every answer carries the header X-Served-By: NAME (ROLE, epoch N) of the node that served it"),
    Key("command", LISTENER, COMMAND, (), "a program and its arguments, run while live instead of a plugin (a process channel)", group=PROCESS),
    Key("stop_timeout", LISTENER, SECONDS, 10.0, "seconds a stopping program has between SIGTERM and SIGKILL", group=PROCESS),
    Key("restart_tries", LISTENER, COUNT, 5, "restarts after deaths while live before the channel is FAILED", group=PROCESS),
    Key("restart_backoff", LISTENER, SECONDS, 1.0, "seconds before the first restart; doubles with each quick death, at most 60", group=PROCESS),
    Key("cwd", LISTENER, FOLDER, None, "the program's working folder", group=PROCESS, blank_unsets=True, unset="the node's"),
    Key("env", LISTENER, ENVIRONMENT, (), "variables added to the node's environment for the program", group=PROCESS, blank_unsets=True),
)


def section_kind(section: str) -> str:
    """C{failover}, C{server} or C{listener}: the kind of a section's name (C{server:serv_a} is a server)."""
    return section.partition(":")[0]


def keys_of(kind: str, group: Optional[str] = None) -> Tuple[Key, ...]:
    """The keys a section of C{kind} takes (of C{group} only, if given), in the table's order."""
    return tuple(k for k in KEYS if kind in k.sections and (group is None or k.group == group))


def key_of(kind: str, name: str) -> Optional[Key]:
    """The key C{name} of a section of C{kind}, if it takes one."""
    return next((k for k in keys_of(kind) if k.name == name), None)


def known_keys_text(kind: str) -> str:
    """The keys a section of C{kind} takes, as an unknown-key error lists them."""
    keys = keys_of(kind)
    text = ", ".join(sorted(k.name for k in keys if k.group != CLIENT))
    client = sorted(k.name for k in keys if k.group == CLIENT)
    if client:
        text += f"; {CLIENT}: " + ", ".join(client)
    return text


def unknown_key(path, section: str, name: str) -> ConfigError:
    """
    The error for a key that a section does not take: with the key meant,
    for a near miss (C{treshold}), or the section that takes it.
    """
    kind = section_kind(section)
    known = [k.name for k in keys_of(kind)]
    problem = "unknown key"
    elsewhere = [SECTION_TITLES[other] for other in SECTION_KINDS if other != kind and key_of(other, name)]
    by_case = [k for k in known if k.lower() == name.lower()]
    near = by_case or difflib.get_close_matches(name, known, n=1)
    if elsewhere:
        problem += f" in this section; {name} belongs in " + " or ".join(elsewhere)
    elif by_case:
        problem += f"; did you mean {by_case[0]}? (keys are case-sensitive)"
    elif near:
        problem += f"; did you mean {near[0]}?"
    return ConfigError(path, section, name, problem=problem, allowed=known_keys_text(kind))


def settings_fields(keys: Iterable[Key], defaults: bool = True):
    """
    A class decorator: the class becomes a frozen dataclass with a field for
    each stored key of C{keys} besides the fields it declares (those without
    a default first, then the keys, required ones first, then those it
    declares with a default). A key required with one coordinator only
    (C{backup_location}: pair) is a field with a default, as with the other
    coordinator it is not set.

    @param defaults: each key's field defaults to the key's default; if
        False, to None (not set here).
    """
    def build(cls):
        declared = dict(cls.__dict__.get("__annotations__", {}))
        first = {name: kind for name, kind in declared.items() if name not in cls.__dict__}
        last = {name: kind for name, kind in declared.items() if name in cls.__dict__}
        required, optional = {}, {}
        for key in keys:
            if not key.stored:
                continue
            if key.required and key.only is None and defaults:
                required[key.name] = Any
            else:
                optional[key.name] = Any
                setattr(cls, key.name, key.default if defaults else None)
        cls.__annotations__ = {**first, **required, **optional, **last}
        return dataclass(frozen=True)(cls)
    return build


def changed_keys(old, new, server: Optional[str] = None) -> List[str]:
    """
    The keys whose values differ between two configurations, as
    C{"[section] key old -> new"} lines; a section added or removed counts
    as one whose keys were all unset. A key that a server inherits from
    [failover] shows as C{[failover]'s} where the server leaves it unset.

    @param old: a L{iwayfailover.config.SharedConfig}.
    @param new: another.
    @param server: only what this server reads: [failover], its own
        section, and the listeners that run on it (before or after).
    """
    lines = []

    def compare(section, before, after):
        kind = section_kind(section)
        for key in keys_of(kind):
            a, b = key.value_of(before), key.value_of(after)
            if a == b:
                continue
            shown = [key.show(v) for v in (a, b)]
            if kind == "server" and "failover" in key.sections:
                shown = ["[failover]'s" if v is None else s for v, s in zip((a, b), shown)]
            if shown[0] != shown[1]:
                note = " (takes effect at the next start)" if key.applied == NEXT_START else ""
                lines.append(f"[{section}] {key.name} {shown[0]} -> {shown[1]}{note}")

    compare("failover", old.failover, new.failover)
    servers = [server] if server is not None else sorted(set(old.servers) | set(new.servers))
    for name in servers:
        compare(f"server:{name}", old.servers.get(name), new.servers.get(name))
    for name in sorted(set(old.listeners) | set(new.listeners)):
        before, after = old.listeners.get(name), new.listeners.get(name)
        if server is None or any(spec is not None and spec.runs_on(server) for spec in (before, after)):
            compare(f"listener:{name}", before, after)
    return lines
