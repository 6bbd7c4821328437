"""
The shared configuration: one INI file, read by every node, parsed into
immutable settings.

Only syntax and values are checked here; whether a listener's plugin exists
is checked by L{iwayfailover.listeners.check_listener_specs}, and both run
through L{iwayfailover.tap.load_checked_config}.
"""

from __future__ import annotations

import configparser
import hashlib
import ipaddress
import math
import os
import re
import shlex
from dataclasses import dataclass, field
from typing import Mapping, Optional, Tuple

from iwayfailover import tls

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
NAME_ALLOWED = "1 to 64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"

_DIGITS = re.compile(r"^[0-9]+\Z")

# host:port, [v6]:port
_HOST_PORT = re.compile(r"^(?:\[(?P<v6>[0-9A-Fa-f:.]+)\]|(?P<host>[A-Za-z0-9_.-]+)):(?P<port>\d{1,5})$")


class ConfigError(Exception):
    """
    The shared configuration is unusable. The message names the file, the
    section, the key, the bad value and what is allowed.
    """

    def __init__(self, path, section=None, key=None, value=None, problem="", allowed=None):
        self.path = path
        self.section = section
        self.key = key
        self.value = value
        self.problem = problem
        self.allowed = allowed
        where = str(path)
        if section is not None:
            where += f": [{section}]"
        if key is not None:
            where += f" {key}"
            if value is not None:
                where += f" = {value!r}"
        message = f"{where}: {problem}"
        if allowed:
            message += f" (allowed: {allowed})"
        super().__init__(message)


@dataclass(frozen=True)
class FailoverSettings:
    heartbeat_interval: float = 1.0
    reload_interval: float = 5.0
    secret_file: Optional[str] = None
    insecure: bool = False
    witness: Tuple[Tuple[str, int], ...] = ()
    self_fence: bool = True
    failback: bool = False
    preferred: Optional[str] = None
    failback_delay: float = 30.0
    console_users: Optional[str] = None
    client: "ClientSettings" = field(default_factory=lambda: ClientSettings())


@dataclass(frozen=True)
class ServerSettings:
    name: str
    backup_location: str
    heartbeat_port: str
    threshold: float
    console: Optional[str] = None
    priority: int = 0
    console_users: Optional[str] = None
    folder: str = field(default="", repr=False, compare=False)
    """The configuration file's folder: relative TLS file paths are relative to it."""
    client: "ClientSettings" = field(default_factory=lambda: ClientSettings())

    @property
    def backup_endpoint(self) -> str:
        """The Location of Backup as a client endpoint string (TLS file paths made absolute)."""
        return tls.resolve_files(client_endpoint_string(self.backup_location), self.folder)

    @property
    def heartbeat_endpoint(self) -> str:
        """The Heartbeat Port as a server endpoint string (TLS file paths made absolute)."""
        return tls.resolve_files(server_endpoint_string(self.heartbeat_port), self.folder)


@dataclass(frozen=True)
class ListenerSettings:
    name: str
    plugin: str
    args: Tuple[str, ...]
    servers: Optional[Tuple[str, ...]] = None
    # A process channel (command = ...) instead of a plugin: the program and
    # its arguments, and how it is restarted and stopped (iwayfailover.process).
    command: Tuple[str, ...] = ()
    stop_timeout: float = 10.0
    restart_tries: int = 5
    restart_backoff: float = 1.0
    cwd: Optional[str] = None
    env: Tuple[Tuple[str, str], ...] = ()

    def runs_on(self, server: str) -> bool:
        return self.servers is None or server in self.servers

    @property
    def command_line(self) -> str:
        if self.command:
            return shlex.join(self.command)
        return shlex.join((self.plugin,) + self.args)


@dataclass(frozen=True)
class SharedConfig:
    path: str
    digest: str
    failover: FailoverSettings
    servers: Mapping[str, ServerSettings] = field(default_factory=dict)
    listeners: Mapping[str, ListenerSettings] = field(default_factory=dict)
    keys: Optional[object] = field(default=None, repr=False, compare=False)
    """The heartbeat keys (an L{iwayfailover.auth.KeyRing}), once read by
    L{iwayfailover.tap.load_checked_config}; never shown."""

    @property
    def fingerprint(self) -> tuple:
        """What a reload compares: the file's digest and the ids of its keys."""
        return (self.digest, getattr(self.keys, "key_ids", None))

    def server(self, name: str) -> ServerSettings:
        """
        This node's section.

        @raise ConfigError: there is no C{[server:NAME]} section; the message
            lists the sections there are.
        """
        try:
            return self.servers[name]
        except KeyError:
            there = ", ".join(f"[server:{n}]" for n in sorted(self.servers)) or "none"
            raise ConfigError(
                self.path,
                f"server:{name}",
                problem=f"no section for server {name!r}; the servers defined are: {there}",
            ) from None

    def listeners_for(self, server: str) -> Mapping[str, ListenerSettings]:
        return {n: spec for n, spec in self.listeners.items() if spec.runs_on(server)}

    def client_settings(self, server: str) -> "ClientSettings":
        """The floating IP and notify hooks of C{server}: its own section's keys win over [failover]'s."""
        return self.server(server).client.over(self.failover.client)


def client_endpoint_string(location: str) -> str:
    """
    C{host:port} (or C{[v6]:port}) becomes a TCP client endpoint string; any
    other text is taken as a client endpoint string already.
    """
    match = _HOST_PORT.match(location.strip())
    if match is None:
        return location.strip()
    if match.group("v6"):
        host = match.group("v6").replace(":", r"\:")
        return f"tcp:host={host}:port={match.group('port')}"
    return f"tcp:host={match.group('host')}:port={match.group('port')}"


def server_endpoint_string(port: str) -> str:
    """A bare port number becomes C{tcp:PORT}; other text is a server endpoint string."""
    text = port.strip()
    return f"tcp:{text}" if _DIGITS.match(text) else text


def endpoint_port(description: str) -> Optional[int]:
    """The port number of a server endpoint string (C{1200}, C{tcp:1200:...}, C{ssl:port=1200}), if it has one."""
    parts = re.split(r"(?<!\\):", description.strip())
    if len(parts) == 1 and _DIGITS.match(parts[0]):
        return int(parts[0])
    for part in parts[1:]:
        if _DIGITS.match(part):
            return int(part)
        if part.startswith("port=") and _DIGITS.match(part[5:]):
            return int(part[5:])
    return None


def endpoint_interface(description: str) -> Optional[str]:
    """The address a server endpoint string is bound to, if it names a particular one (not 0.0.0.0 or ::)."""
    found = re.search(r"(?:^|(?<!\\):)interface=((?:\\:|[^:])+)", description)
    if found is None:
        return None
    address = found.group(1).replace("\\:", ":")
    return None if address in ("", "0.0.0.0", "::") else address


def backup_host(location: str) -> Optional[str]:
    """The host part of a Location of Backup, where it has one."""
    match = _HOST_PORT.match(location.strip())
    if match is not None:
        return match.group("v6") or match.group("host")
    kind, args, kwargs = tls.split(location)
    if kind == "tls":
        return kwargs.get("host") or (args[0] if args else None)
    found = re.search(r"(?:^|:)host=([^:]+)", location)
    return found.group(1) if found else None


# The parsers are given a stand-in reactor: they only build endpoint objects,
# which touch no reactor until they listen or connect.
_NO_REACTOR = object()

_FAILOVER_KEYS = {
    "heartbeat_interval", "reload_interval", "secret_file", "insecure",
    "witness", "self_fence", "failback", "preferred", "failback_delay", "console_users",
}
_SERVER_KEYS = {"backup_location", "heartbeat_port", "threshold", "console", "priority", "console_users"}
# Keys allowed in [failover] and in every [server:NAME] (the server's own win):
# the floating IP and the notify hooks (see _parse_client below).
_CLIENT_KEYS = {"virtual_ip", "interface", "on_live", "on_backup", "on_fault", "hook_timeout"}
TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")
_SERVER_REQUIRED = ("backup_location", "heartbeat_port", "threshold")
_LISTENER_KEYS = {"plugin", "servers"}
_COMMAND_KEYS = {"command", "stop_timeout", "restart_tries", "restart_backoff", "cwd", "env"}
_SECTIONS_ALLOWED = "[failover], [server:NAME], [listener:NAME]"


def _positive_seconds(path, section, key, text):
    allowed = "a number of seconds greater than 0, e.g. 1 or 0.25"
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(path, section, key, text, "not a number", allowed) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(path, section, key, text, "must be greater than 0", allowed)
    return value


def _boolean(path, section, key, text):
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(path, section, key, text, "not a yes or no", "true, false, yes, no, on, off, 1, 0")


def _integer(path, section, key, text):
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(path, section, key, text, "not a whole number", "a whole number, e.g. 0, 10 or -5") from None


def _witnesses(path, section, key, text):
    allowed = "host:port[, host:port ...]: TCP addresses this node must reach before it takes over"
    witnesses = []
    for item in (part.strip() for part in text.split(",")):
        match = _HOST_PORT.match(item)
        if match is None or not 0 < int(match.group("port")) <= 65535:
            raise ConfigError(path, section, key, text, f"{item!r} is not host:port", allowed)
        witnesses.append((match.group("v6") or match.group("host"), int(match.group("port"))))
    return tuple(witnesses)


def _port(path, section, key, text):
    allowed = (
        "a port number 0-65535 or a server endpoint string such as tcp:1200:interface=10.0.0.1"
        " or ssl:1200:privateKey=node.key:certKey=node.crt[:caCerts=ca.crt]"
    )
    if _DIGITS.match(text):
        if int(text) > 65535:
            raise ConfigError(path, section, key, text, "port out of range", allowed)
        return text
    try:
        endpoint = tls.server_endpoint(_NO_REACTOR, tls.resolve_files(text, _folder(path)))
    except tls.TLSConfigError as e:
        raise ConfigError(path, section, key, text, str(e), allowed) from None
    except Exception as e:
        raise ConfigError(path, section, key, text, f"not a server endpoint ({e})", allowed) from None
    _check_endpoint_port(path, section, key, text, endpoint, allowed)
    return text


def _check_endpoint_port(path, section, key, text, endpoint, allowed):
    port = getattr(endpoint, "_port", None)
    if isinstance(port, int) and not 0 <= port <= 65535:
        raise ConfigError(path, section, key, text, "port out of range", allowed)


def _location(path, section, key, text):
    allowed = (
        "host:port, [ipv6]:port, or a client endpoint string such as tcp:host=iam2:port=1200"
        " or tls:iam2:1200:trustRoots=ca.crt[:certificate=node.crt:privateKey=node.key]"
    )
    match = _HOST_PORT.match(text)
    if match is not None and int(match.group("port")) > 65535:
        raise ConfigError(path, section, key, text, "port out of range", allowed)
    try:
        endpoint = tls.client_endpoint(_NO_REACTOR, tls.resolve_files(client_endpoint_string(text), _folder(path)))
    except tls.TLSConfigError as e:
        raise ConfigError(path, section, key, text, str(e), allowed) from None
    except Exception as e:
        raise ConfigError(path, section, key, text, f"not a client endpoint ({e})", allowed) from None
    _check_endpoint_port(path, section, key, text, endpoint, allowed)
    return text


def _folder(path) -> str:
    return os.path.dirname(os.path.abspath(path))


def _unknown_keys(path, section, keys, known):
    for key in keys:
        if key not in known:
            raise ConfigError(
                path, section, key, problem="unknown key", allowed=", ".join(sorted(known))
            )


def parse_config(text: str, path: str) -> SharedConfig:
    """
    Parse the shared configuration C{text}, read from C{path}.

    @raise ConfigError: with the file, section, key, bad value and what is
        allowed.
    """
    parser = configparser.ConfigParser(
        interpolation=None,
        inline_comment_prefixes=(";", "#"),
        # A [DEFAULT] section would silently add keys to every section: treat
        # it as the unknown section it is here.
        default_section="\x00no-default",
        strict=True,
        empty_lines_in_values=False,
    )
    parser.optionxform = str  # keys are case-sensitive, as written in the contract
    try:
        parser.read_string(text, source=path)
    except configparser.DuplicateSectionError as e:
        raise ConfigError(path, e.section, problem=f"section appears twice (line {e.lineno})") from None
    except configparser.DuplicateOptionError as e:
        raise ConfigError(path, e.section, e.option, problem=f"key appears twice in the section (line {e.lineno})") from None
    except configparser.MissingSectionHeaderError as e:
        raise ConfigError(path, problem=f"line {e.lineno}: text before the first [section]: {e.line.strip()!r}") from None
    except configparser.ParsingError as e:
        lines = ", ".join(f"line {n}: {line.strip()!r}" for n, line in e.errors[:3])
        raise ConfigError(path, problem=f"cannot parse {lines}", allowed="[section] headers and key = value lines") from None
    except configparser.Error as e:
        raise ConfigError(path, problem=str(e).splitlines()[0]) from None

    failover = FailoverSettings()
    servers = {}
    listeners = {}
    for section in parser.sections():
        items = dict(parser.items(section))
        kind, _, name = section.partition(":")
        if section == "failover":
            failover = _parse_failover(path, section, items)
            continue
        if kind not in ("server", "listener") or not name:
            raise ConfigError(path, section, problem="unknown section", allowed=_SECTIONS_ALLOWED)
        if not NAME_PATTERN.match(name):
            raise ConfigError(path, section, problem=f"bad {kind} name {name!r}", allowed=NAME_ALLOWED)
        if kind == "server":
            servers[name] = _parse_server(path, section, name, items)
        else:
            listeners[name] = _parse_listener(path, section, name, items)

    if not servers:
        raise ConfigError(path, problem="no [server:NAME] section", allowed="at least one [server:NAME] section")
    for server in servers.values():
        if server.threshold <= failover.heartbeat_interval:
            raise ConfigError(
                path, f"server:{server.name}", "threshold", str(server.threshold),
                f"must be greater than [failover] heartbeat_interval ({failover.heartbeat_interval:g}),"
                " or every pause between two heartbeats would look like a dead live server",
                "a number of seconds; 3 x heartbeat_interval or more is advised",
            )
    if failover.failback and failover.preferred is None:
        raise ConfigError(
            path, "failover", "failback", "true", "failback needs a preferred server to give the role back to",
            "set preferred = NAME in [failover], or failback = false",
        )
    if failover.preferred is not None and failover.preferred not in servers:
        raise ConfigError(
            path, "failover", "preferred", failover.preferred, f"no [server:{failover.preferred}] section",
            "the name of a [server:NAME] section: " + ", ".join(sorted(servers)),
        )
    for server in servers.values():
        _check_client(path, server.name, server.client.over(failover.client), server.client)
    for listener in listeners.values():
        for server in listener.servers or ():
            if server not in servers:
                raise ConfigError(
                    path, f"listener:{listener.name}", "servers", ", ".join(listener.servers),
                    f"no [server:{server}] section", "names of the [server:NAME] sections: " + ", ".join(sorted(servers)),
                )

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return SharedConfig(path=path, digest=digest, failover=failover, servers=servers, listeners=listeners)


def _parse_failover(path, section, items) -> FailoverSettings:
    _unknown_keys_or_client(path, section, items, _FAILOVER_KEYS)
    values = {"client": _parse_client(path, section, items)}
    for key in ("heartbeat_interval", "reload_interval", "failback_delay"):
        if key in items:
            values[key] = _positive_seconds(path, section, key, items[key])
    for key in ("self_fence", "failback", "insecure"):
        if key in items:
            values[key] = _boolean(path, section, key, items[key])
    if "secret_file" in items:
        values["secret_file"] = _secret_file(path, section, items["secret_file"])
    if items.get("witness"):
        values["witness"] = _witnesses(path, section, "witness", items["witness"])
    if items.get("preferred"):
        values["preferred"] = items["preferred"].strip()
    if "console_users" in items:
        values["console_users"] = _users_file(path, section, items["console_users"])
    if values.get("insecure") and "secret_file" in values:
        raise ConfigError(
            path, section, "insecure", items["insecure"], "set together with secret_file",
            "either secret_file (heartbeats signed with its key) or insecure = true (unsigned), not both",
        )
    return FailoverSettings(**values)


def _secret_file(path, section, text):
    allowed = "the path of a readable key file; a relative path is relative to the configuration file"
    resolved = os.path.join(_folder(path), os.path.expanduser(text))
    if not os.path.isfile(resolved) and len(text) >= 32 and not re.search(r"[/\\.~]", text):
        # Not echoed: it may be the key itself, which must never reach a log.
        raise ConfigError(
            path, section, "secret_file", None,
            f"no such file, and the value ({len(text)} characters, not shown) looks like a key, not the path of a key file",
            "the path of a file holding the key: write one with `iwsrv keygen PATH` and name PATH here",
        )
    return _readable_file(path, section, "secret_file", text, allowed)


def _users_file(path, section, text):
    """The console's users file: a readable file, a relative path relative to the configuration file."""
    allowed = "the path of a file written by `iwsrv adduser FILE USER`; a relative path is relative to the configuration file"
    return _readable_file(path, section, "console_users", text, allowed)


def _readable_file(path, section, key, text, allowed):
    """The absolute path of a file named by C{key} (relative to the configuration's folder), which must be readable."""
    if not text:
        raise ConfigError(path, section, key, text, "empty", allowed)
    resolved = os.path.join(_folder(path), os.path.expanduser(text))
    if not os.path.isfile(resolved):
        raise ConfigError(path, section, key, text, f"no such file: {resolved}", allowed)
    if not os.access(resolved, os.R_OK):
        raise ConfigError(path, section, key, text, f"not readable by this user: {resolved}", allowed)
    return resolved


def console_endpoint_string(console: str) -> str:
    """A bare console port listens on loopback only; an endpoint string is kept as written."""
    text = console.strip()
    return f"tcp:{text}:interface=127.0.0.1" if _DIGITS.match(text) else text


def _parse_server(path, section, name, items) -> ServerSettings:
    _unknown_keys_or_client(path, section, items, _SERVER_KEYS)
    for key in _SERVER_REQUIRED:
        if key not in items or not items[key]:
            raise ConfigError(
                path, section, key, problem="missing; every server keeps all three of backup_location,"
                " heartbeat_port and threshold, whichever role it starts in",
            )
    console = items.get("console")
    if console is not None:
        console = _port(path, section, "console", console)
        console = console_endpoint_string(console)
    return ServerSettings(
        name=name,
        backup_location=_location(path, section, "backup_location", items["backup_location"]),
        heartbeat_port=_port(path, section, "heartbeat_port", items["heartbeat_port"]),
        threshold=_positive_seconds(path, section, "threshold", items["threshold"]),
        console=console,
        priority=_integer(path, section, "priority", items["priority"]) if "priority" in items else 0,
        console_users=_users_file(path, section, items["console_users"]) if "console_users" in items else None,
        folder=_folder(path),
        client=_parse_client(path, section, items),
    )


def _parse_listener(path, section, name, items) -> ListenerSettings:
    _unknown_keys(path, section, items, _LISTENER_KEYS | _COMMAND_KEYS)
    allowed = "a twistd plugin name and its options, e.g. web --listen tcp:8080 --path /srv/www"
    servers = None
    if "servers" in items:
        servers = tuple(s.strip() for s in items["servers"].split(",") if s.strip())
        if not servers:
            raise ConfigError(path, section, "servers", items["servers"], "empty", "a comma-separated list of server names")
    if "command" in items:
        if "plugin" in items:
            raise ConfigError(
                path, section, "command", items["command"], "set together with plugin",
                "either plugin = (a twistd plugin) or command = (a program), not both",
            )
        return _parse_command(path, section, name, items, servers)
    for key in sorted(_COMMAND_KEYS & set(items)):
        raise ConfigError(path, section, key, items[key], "only for a command listener", "set command = ... too, or drop the key")
    text = items.get("plugin")
    if not text:
        raise ConfigError(path, section, "plugin", problem="missing (or give command = ...)", allowed=allowed)
    try:
        words = shlex.split(text)
    except ValueError as e:
        raise ConfigError(path, section, "plugin", text, f"cannot split into words ({e})", allowed) from None
    return ListenerSettings(name=name, plugin=words[0], args=tuple(words[1:]), servers=servers)


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")


def _parse_command(path, section, name, items, servers) -> ListenerSettings:
    text = items["command"]
    allowed = "a program and its arguments, split as a shell would (no pipes or redirections), e.g. /usr/bin/worker --port 9000"
    try:
        words = tuple(shlex.split(text))
    except ValueError as e:
        raise ConfigError(path, section, "command", text, f"cannot split into words ({e})", allowed) from None
    if not words or not words[0]:
        raise ConfigError(path, section, "command", text, "empty", allowed)
    values = {}
    for key in ("stop_timeout", "restart_backoff"):
        if key in items:
            values[key] = _positive_seconds(path, section, key, items[key])
    if "restart_tries" in items:
        tries = _integer(path, section, "restart_tries", items["restart_tries"])
        if tries < 0:
            raise ConfigError(path, section, "restart_tries", items["restart_tries"], "must not be negative", "a whole number, 0 or more")
        values["restart_tries"] = tries
    if items.get("cwd"):
        cwd = os.path.join(os.path.dirname(os.path.abspath(path)), os.path.expanduser(items["cwd"]))
        values["cwd"] = os.path.normpath(cwd)
    if items.get("env"):
        env_allowed = "NAME=value words, split as a shell would, e.g. PORT=9000 MODE='hot standby'"
        try:
            assignments = shlex.split(items["env"])
        except ValueError as e:
            raise ConfigError(path, section, "env", items["env"], f"cannot split into words ({e})", env_allowed) from None
        env = []
        for word in assignments:
            key, equals, value = word.partition("=")
            if not equals or not _ENV_NAME.match(key):
                raise ConfigError(path, section, "env", items["env"], f"{word!r} is not NAME=value", env_allowed)
            env.append((key, value))
        values["env"] = tuple(env)
    return ListenerSettings(name=name, plugin="", args=(), servers=servers, command=words, **values)
# -- the floating IP and the notify hooks (issue 7) --

DEFAULT_HOOK_TIMEOUT = 10.0
"""Seconds a notify hook may run before it is killed."""

_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}\Z")
_INTERFACE_ALLOWED = "a network interface name of 1 to 15 of A-Z a-z 0-9 _ . @ -, e.g. eth0 or bond0.100"
_VIRTUAL_IP_ALLOWED = "an IPv4 or IPv6 address with its prefix length, e.g. 10.0.0.100/24 or 2001:db8::100/64"
_HOOK_ALLOWED = "a command and its arguments, split like a shell would (no pipes, no $VARIABLES), e.g. /usr/local/bin/notify live"
HOOK_KEYS = ("on_live", "on_backup", "on_fault")


@dataclass(frozen=True)
class ClientSettings:
    """
    What gets clients to the live node: the floating IP it holds while live,
    and the commands it runs when its role changes. Each may be set in
    [failover] or in a server's section; None means not set there.
    """

    virtual_ip: Optional[str] = None
    interface: Optional[str] = None
    on_live: Optional[Tuple[str, ...]] = None
    on_backup: Optional[Tuple[str, ...]] = None
    on_fault: Optional[Tuple[str, ...]] = None
    hook_timeout: Optional[float] = None

    def over(self, fallback: "ClientSettings") -> "ClientSettings":
        """These settings, with C{fallback}'s wherever these have none."""
        return ClientSettings(**{
            name: getattr(self, name) if getattr(self, name) is not None else getattr(fallback, name)
            for name in self.__dataclass_fields__
        })

    @property
    def timeout(self) -> float:
        return self.hook_timeout if self.hook_timeout is not None else DEFAULT_HOOK_TIMEOUT

    def hook(self, name: str) -> Optional[Tuple[str, ...]]:
        return getattr(self, name)


def _unknown_keys_or_client(path, section, keys, known):
    """L{_unknown_keys} for a section that also takes the client keys (listed after its own)."""
    for key in keys:
        if key not in known and key not in _CLIENT_KEYS:
            raise ConfigError(
                path, section, key, problem="unknown key",
                allowed=", ".join(sorted(known)) + "; floating IP and notify hooks: " + ", ".join(sorted(_CLIENT_KEYS)),
            )


def _virtual_ip(path, section, text):
    try:
        interface = ipaddress.ip_interface(text.strip())
    except ValueError as e:
        raise ConfigError(path, section, "virtual_ip", text, f"not an address with a prefix ({e})", _VIRTUAL_IP_ALLOWED) from None
    if "/" not in text:
        raise ConfigError(path, section, "virtual_ip", text, "the prefix length is missing", _VIRTUAL_IP_ALLOWED)
    address = interface.ip
    if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local:
        raise ConfigError(
            path, section, "virtual_ip", text, "a loopback, multicast, link-local or unspecified address cannot float",
            _VIRTUAL_IP_ALLOWED,
        )
    if address.version == 4 and interface.network.prefixlen < 31 and address in (
        interface.network.network_address, interface.network.broadcast_address
    ):
        raise ConfigError(path, section, "virtual_ip", text, "that is the network's own or broadcast address", _VIRTUAL_IP_ALLOWED)
    return interface.with_prefixlen


def _parse_client(path, section, items) -> ClientSettings:
    values = {}
    if "virtual_ip" in items:
        values["virtual_ip"] = _virtual_ip(path, section, items["virtual_ip"])
    if "interface" in items:
        text = items["interface"].strip()
        if not _INTERFACE_NAME.match(text) or text in (".", ".."):
            raise ConfigError(path, section, "interface", items["interface"], "not an interface name", _INTERFACE_ALLOWED)
        values["interface"] = text
    for key in HOOK_KEYS:
        if key in items:
            try:
                words = shlex.split(items[key])
            except ValueError as e:
                raise ConfigError(path, section, key, items[key], f"cannot split into words ({e})", _HOOK_ALLOWED) from None
            if not words or not words[0]:
                raise ConfigError(path, section, key, items[key], "empty", _HOOK_ALLOWED)
            values[key] = tuple(words)
    if "hook_timeout" in items:
        values["hook_timeout"] = _positive_seconds(path, section, "hook_timeout", items["hook_timeout"])
    return ClientSettings(**values)


def _check_client(path, server, effective: ClientSettings, own: ClientSettings):
    """A floating IP needs an interface to put it on, wherever each is set."""
    if (effective.virtual_ip is None) != (effective.interface is None):
        present, missing = ("virtual_ip", "interface") if effective.interface is None else ("interface", "virtual_ip")
        raise ConfigError(
            path, f"server:{server}", missing,
            problem=f"{present} is set for this server (here or in [failover]) but {missing} is not",
            allowed="both virtual_ip (e.g. 10.0.0.100/24) and interface (e.g. eth0), in [failover] or in the server's section",
        )


def read_config(path: str) -> SharedConfig:
    """
    Read and parse the shared configuration at C{path}.

    @raise ConfigError: unreadable or invalid.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigError(path, problem=f"cannot read the configuration: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, problem=f"not UTF-8 text (byte {e.start})") from None
    return parse_config(text, path)
