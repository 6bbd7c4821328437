"""
The shared configuration: one INI file, read by every node, parsed into
immutable settings (L{iwayfailover.config.settings}).

Each key's value is checked by its kind in the table of keys
(L{iwayfailover.config.schema.KEYS}); here are the file's structure and the
rules between keys. Whether a listener's plugin exists is checked by
L{iwayfailover.listeners.check_listener_specs}, and both run through
L{iwayfailover.tap.load_checked_config}.
"""

from __future__ import annotations

import configparser
import difflib
import hashlib

from iwayfailover.config.schema import (
    ETCD, PAIR, CLIENT, PROCESS, SECTION_KINDS, key_of, keys_of, section_kind, unknown_key,
)
from iwayfailover.config.settings import (
    ClientSettings, FailoverSettings, ListenerSettings, ServerSettings, SharedConfig,
)
from iwayfailover.config.values import NAME_ALLOWED, NAME_PATTERN, ConfigError, ConfigUnreadable, folder_of, read_password

_SECTIONS_ALLOWED = "[failover], [server:NAME], [listener:NAME]"


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
        raise ConfigError(path, problem=f"cannot parse {_bad_lines(text, e)}",
                          allowed="[section] headers and key = value lines") from None
    except configparser.Error as e:
        raise ConfigError(path, problem=str(e).splitlines()[0]) from None

    coordinator = _coordinator(path, parser)
    failover = FailoverSettings()
    servers = {}
    listeners = {}
    for section in parser.sections():
        items = dict(parser.items(section))
        kind, _, name = section.partition(":")
        if section == "failover":
            failover = _parse_failover(path, items, coordinator)
            continue
        if kind not in ("server", "listener") or not name:
            raise ConfigError(path, section, problem="unknown section" + _section_meant(section), allowed=_SECTIONS_ALLOWED)
        if not NAME_PATTERN.match(name):
            raise ConfigError(path, section, problem=f"bad {kind} name {name!r}", allowed=NAME_ALLOWED)
        if kind == "server":
            servers[name] = _parse_server(path, section, name, items, coordinator)
        else:
            listeners[name] = _parse_listener(path, section, name, items)

    if not servers:
        raise ConfigError(path, problem="no [server:NAME] section", allowed="at least one [server:NAME] section")
    for server in servers.values():
        if coordinator == ETCD:
            _check_lease_ttl(path, server)
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
        _check_client(path, server.name, server.client.over(failover.client))
    for listener in listeners.values():
        for server in listener.servers or ():
            if server not in servers:
                raise ConfigError(
                    path, f"listener:{listener.name}", "servers", ", ".join(listener.servers),
                    f"no [server:{server}] section", "names of the [server:NAME] sections: " + ", ".join(sorted(servers)),
                )

    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
    return SharedConfig(path=path, digest=digest, failover=failover, servers=servers, listeners=listeners, text=text)


def _bad_lines(text: str, error: configparser.ParsingError) -> str:
    """
    The lines configparser could not parse, as written (trimmed), each once,
    by its number in C{text}: C{line 18: [broken} (configparser keeps each
    line's repr, on some versions the repr of a repr).
    """
    lines = text.splitlines()
    numbers = sorted({n for n, _ in error.errors})
    shown = [f"line {n}: {lines[n - 1].strip()}" if 0 < n <= len(lines) else f"line {n}" for n in numbers[:3]]
    more = len(numbers) - len(shown)
    return ", ".join(shown) + (f" and {more} more" if more > 0 else "")


def _section_meant(section: str) -> str:
    """For an unknown section, the one meant (C{[listner:web]}: C{; did you mean [listener:web]?}), or ''."""
    kind, colon, name = section.partition(":")
    if kind in ("server", "listener") and not name:
        return f"; a {kind} section needs a name: [{kind}:NAME]"
    kinds = [k for k in SECTION_KINDS if (k != "failover") == bool(colon)]
    near = difflib.get_close_matches(kind.lower(), kinds, n=1)
    if not near or (near[0] == kind and name):
        return ""
    return f"; did you mean [{near[0]}{colon}{name}]?"


def _coordinator(path, parser) -> str:
    """
    The [failover] section's coordinator (L{PAIR} when not set), read first:
    which keys a section needs, takes or refuses depends on it.
    """
    if not parser.has_section("failover") or not parser.has_option("failover", "coordinator"):
        return PAIR
    return key_of("failover", "coordinator").kind(path, "failover", "coordinator", parser.get("failover", "coordinator"))


def _values(path, section, items, coordinator=PAIR):
    """
    Each key of C{items} checked by its kind: C{(own, client)}, the values of
    the section's own keys and of its floating IP and notify hooks.

    @raise ConfigError: an unknown key, a key the coordinator does not take,
        a required key missing or empty, or a bad value.
    """
    kind = section_kind(section)
    _known(path, section, items)
    for key in keys_of(kind):
        if key.name in items and not key.used_with(coordinator) and key.refused_elsewhere:
            raise ConfigError(
                path, section, key.name, items[key.name],
                f"only with coordinator = {key.only}; this file's coordinator is {coordinator}",
                f"drop the key, or set coordinator = {key.only} in [failover]",
            )
    required = [key.name for key in keys_of(kind) if key.required and key.used_with(coordinator)]
    for name in required:
        if not items.get(name):
            if kind == "server" and coordinator == PAIR:
                problem = "missing; every server keeps all of " + ", ".join(required[:-1]) + f" and {required[-1]}, whichever role it starts in"
            elif kind == "server":
                problem = f"missing; with coordinator = {coordinator} every server sets " + ", ".join(required)
            else:
                problem = f"missing; coordinator = {coordinator} needs it"
            raise ConfigError(path, section, name, problem=problem, allowed=key_of(kind, name).kind.allowed)
    own, client = {}, {}
    for key in keys_of(kind):
        if key.name not in items or (key.blank_unsets and not items[key.name]):
            continue
        value = key.kind(path, section, key.name, items[key.name])
        (client if key.group == CLIENT else own)[key.name] = value
    return own, client


def _known(path, section, items):
    """@raise ConfigError: a key of C{items} that the section does not take."""
    for name in items:
        if key_of(section_kind(section), name) is None:
            raise unknown_key(path, section, name)


def _parse_failover(path, items, coordinator=PAIR) -> FailoverSettings:
    own, client = _values(path, "failover", items, coordinator)
    if own.get("insecure") and "secret_file" in own:
        raise ConfigError(
            path, "failover", "insecure", items["insecure"], "set together with secret_file",
            "either secret_file (heartbeats signed with its key) or insecure = true (unsigned), not both",
        )
    password = _check_etcd(path, items, own) if coordinator == ETCD else None
    return FailoverSettings(**own, etcd_password=password, client=ClientSettings(**client))


def _check_etcd(path, items, own):
    """
    The rules between the etcd keys: TLS files only for https endpoints, a
    certificate with its key, a user with a password file.

    @return: the password in C{etcd_password_file}, or None.
    """
    scheme = own["etcd_endpoints"][0].partition(":")[0]
    if scheme == "http":
        for name in ("etcd_cacert", "etcd_cert", "etcd_key"):
            if name in own:
                raise ConfigError(
                    path, "failover", name, items[name],
                    "a TLS file, but the etcd_endpoints are http:// (no TLS): it would not be used",
                    "https:// endpoints to talk TLS to etcd, or drop the key",
                )
    for name, other in (("etcd_cert", "etcd_key"), ("etcd_key", "etcd_cert"), ("etcd_user", "etcd_password_file"),
                        ("etcd_password_file", "etcd_user")):
        if name in own and other not in own:
            raise ConfigError(
                path, "failover", other, problem=f"missing: {name} is set, and the two go together",
                allowed=f"both {name} and {other}, or neither",
            )
    if "etcd_cert" in own and "etcd_user" in own:
        # etcd 3.4's JSON gateway answers such a request with HTTP 400 ("CommonName
        # of client sending a request against gateway will be ignored").
        raise ConfigError(
            path, "failover", "etcd_user", items["etcd_user"],
            "set together with etcd_cert: etcd's JSON gateway refuses a request that carries both a client"
            " certificate and a user's token",
            "one of the two: a client certificate (etcd_cert, etcd_key) or etcd's auth (etcd_user,"
            " etcd_password_file); etcd_cacert goes with either",
        )
    if "etcd_password_file" not in own:
        return None
    return read_password(path, "failover", "etcd_password_file", own["etcd_password_file"])


def _parse_server(path, section, name, items, coordinator=PAIR) -> ServerSettings:
    own, client = _values(path, section, items, coordinator)
    return ServerSettings(name=name, **own, folder=folder_of(path), client=ClientSettings(**client))


def _check_lease_ttl(path, server):
    """With coordinator = etcd a server's threshold is its leases' TTL, which etcd grants in whole seconds."""
    threshold = server.threshold
    if threshold != int(threshold) or threshold < 2:
        raise ConfigError(
            path, f"server:{server.name}", "threshold", f"{threshold:g}",
            "with coordinator = etcd the threshold is the TTL of the server's leases: etcd grants whole seconds,"
            " and at least 2 (with its default election timeout)",
            "a whole number of seconds, 2 or more, e.g. 3",
        )


def _parse_listener(path, section, name, items) -> ListenerSettings:
    process = [key.name for key in keys_of("listener", PROCESS) if key.name != "command"]
    _known(path, section, items)  # an unknown key before the rules between keys
    if "command" in items and "plugin" in items:
        raise ConfigError(
            path, section, "command", items["command"], "set together with plugin",
            "either plugin = (a twistd plugin) or command = (a program), not both",
        )
    if "command" not in items:
        for key in [k for k in process if k in items]:
            raise ConfigError(path, section, key, items[key], "only for a command listener", "set command = ... too, or drop the key")
        if not items.get("plugin"):
            raise ConfigError(
                path, section, "plugin", problem="missing (or give command = ...)", allowed=key_of("listener", "plugin").kind.allowed,
            )
    own, _ = _values(path, section, items)
    words = own.pop("plugin", ("",))
    return ListenerSettings(name=name, plugin=words[0], args=words[1:], **own)


def _check_client(path, server, effective: ClientSettings):
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

    @raise ConfigUnreadable: the file cannot be read.
    @raise ConfigError: it is invalid.
    """
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise ConfigUnreadable(path, problem=f"cannot read the configuration: {e.strerror or e}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(path, problem=f"not UTF-8 text (byte {e.start})") from None
    return parse_config(text, path)
