"""
The kinds of value a key of the shared configuration holds: for each, the
check that turns its text into a value (or a L{ConfigError} naming the file,
section, key and value, and what is allowed), what is allowed, and how a
value is shown in logs and docs. L{iwayfailover.config.schema} gives every
key its kind.
"""

from __future__ import annotations

import ipaddress
import math
import os
import re
import shlex
import stat
import urllib.parse
from dataclasses import dataclass
from typing import Any, Callable, Optional

from iwayfailover import tls
from iwayfailover.auth import exposed

NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}\Z")
NAME_ALLOWED = "1 to 64 of A-Z a-z 0-9 _ . - (starting with a letter or digit)"

TRUE_WORDS = ("true", "yes", "on", "1")
FALSE_WORDS = ("false", "no", "off", "0")

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


class ConfigUnreadable(ConfigError):
    """
    The shared file itself could not be read (missing, no permission, an
    I/O error, or a read that did not finish): not a bad edit. Only this
    lets a node start from its local copy (L{iwayfailover.config.lastgood}).
    """


@dataclass(frozen=True)
class ValueKind:
    """
    One kind of value: C{kind(path, section, key, text)} is the value, or
    raises L{ConfigError}.

    @ivar name: a short name, for the reference's type column.
    @ivar allowed: what is allowed, as errors and the reference say it.
    @ivar check: C{(path, section, key, text) -> value}.
    @ivar show: a value as text, for logs and the reference.
    """

    name: str
    allowed: str
    check: Callable[[str, str, str, str], Any]
    show: Callable[[Any], str] = str

    def __call__(self, path, section, key, text):
        return self.check(path, section, key, text)


def folder_of(path) -> str:
    """The folder of the configuration file at C{path}: relative paths in it are relative to this."""
    return os.path.dirname(os.path.abspath(path))


# -- endpoints --

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


def console_endpoint_string(console: str) -> str:
    """A bare console port listens on loopback only; an endpoint string is kept as written."""
    text = console.strip()
    return f"tcp:{text}:interface=127.0.0.1" if _DIGITS.match(text) else text


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


# -- the checks --

# The checks are given a stand-in reactor: they only build endpoint objects,
# which touch no reactor until they listen or connect.
_NO_REACTOR = object()

_SECONDS_ALLOWED = "a number of seconds greater than 0, e.g. 1 or 0.25"


def positive_seconds(path, section, key, text):
    try:
        value = float(text)
    except ValueError:
        raise ConfigError(path, section, key, text, "not a number", _SECONDS_ALLOWED) from None
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(path, section, key, text, "must be greater than 0", _SECONDS_ALLOWED)
    return value


_BOOLEAN_ALLOWED = "true, false, yes, no, on, off, 1, 0"


def boolean(path, section, key, text):
    value = text.strip().lower()
    if value in TRUE_WORDS:
        return True
    if value in FALSE_WORDS:
        return False
    raise ConfigError(path, section, key, text, "not a yes or no", _BOOLEAN_ALLOWED)


_INTEGER_ALLOWED = "a whole number, e.g. 0, 10 or -5"


def integer(path, section, key, text):
    try:
        return int(text, 10)
    except ValueError:
        raise ConfigError(path, section, key, text, "not a whole number", _INTEGER_ALLOWED) from None


_COUNT_ALLOWED = "a whole number, 0 or more"


def count(path, section, key, text):
    try:
        value = int(text, 10)
    except ValueError:
        raise ConfigError(path, section, key, text, "not a whole number", _COUNT_ALLOWED) from None
    if value < 0:
        raise ConfigError(path, section, key, text, "must not be negative", _COUNT_ALLOWED)
    return value


_WITNESS_ALLOWED = "host:port[, host:port ...]: TCP addresses this node must reach before it takes over"


def witnesses(path, section, key, text):
    found = []
    for item in (part.strip() for part in text.split(",")):
        match = _HOST_PORT.match(item)
        if match is None or not 0 < int(match.group("port")) <= 65535:
            raise ConfigError(path, section, key, text, f"{item!r} is not host:port", _WITNESS_ALLOWED)
        found.append((match.group("v6") or match.group("host"), int(match.group("port"))))
    return tuple(found)


def _show_witnesses(value) -> str:
    return ", ".join(f"[{host}]:{port}" if ":" in host else f"{host}:{port}" for host, port in value)


_PORT_ALLOWED = (
    "a port number 0-65535 or a server endpoint string such as tcp:1200:interface=10.0.0.1"
    " or ssl:1200:privateKey=node.key:certKey=node.crt[:caCerts=ca.crt]"
)


def port(path, section, key, text):
    if _DIGITS.match(text):
        if int(text) > 65535:
            raise ConfigError(path, section, key, text, "port out of range", _PORT_ALLOWED)
        return text
    try:
        endpoint = tls.server_endpoint(_NO_REACTOR, tls.resolve_files(text, folder_of(path)))
    except tls.TLSConfigError as e:
        raise ConfigError(path, section, key, text, str(e), _PORT_ALLOWED) from None
    except Exception as e:
        raise ConfigError(path, section, key, text, f"not a server endpoint ({e})", _PORT_ALLOWED) from None
    _check_endpoint_port(path, section, key, text, endpoint, _PORT_ALLOWED)
    return text


def console_port(path, section, key, text):
    """A L{port}; a bare port number listens on loopback only."""
    return console_endpoint_string(port(path, section, key, text))


def _check_endpoint_port(path, section, key, text, endpoint, allowed):
    number = getattr(endpoint, "_port", None)
    if isinstance(number, int) and not 0 <= number <= 65535:
        raise ConfigError(path, section, key, text, "port out of range", allowed)


_LOCATION_ALLOWED = (
    "host:port, [ipv6]:port, or a client endpoint string such as tcp:host=iam2:port=1200"
    " or tls:iam2:1200:trustRoots=ca.crt[:certificate=node.crt:privateKey=node.key]"
)


def location(path, section, key, text):
    match = _HOST_PORT.match(text)
    if match is not None and int(match.group("port")) > 65535:
        raise ConfigError(path, section, key, text, "port out of range", _LOCATION_ALLOWED)
    try:
        endpoint = tls.client_endpoint(_NO_REACTOR, tls.resolve_files(client_endpoint_string(text), folder_of(path)))
    except tls.TLSConfigError as e:
        raise ConfigError(path, section, key, text, str(e), _LOCATION_ALLOWED) from None
    except Exception as e:
        raise ConfigError(path, section, key, text, f"not a client endpoint ({e})", _LOCATION_ALLOWED) from None
    _check_endpoint_port(path, section, key, text, endpoint, _LOCATION_ALLOWED)
    return text


_SECRET_FILE_ALLOWED = (
    "the path of a readable key file (make one with `iwsrv keygen PATH`); a relative path is relative to the"
    " configuration file"
)


def secret_file(path, section, key, text):
    resolved = os.path.join(folder_of(path), os.path.expanduser(text))
    if not os.path.isfile(resolved) and len(text) >= 32 and not re.search(r"[/\\.~]", text):
        # Not echoed: it may be the key itself, which must never reach a log.
        raise ConfigError(
            path, section, key, None,
            f"no such file, and the value ({len(text)} characters, not shown) looks like a key, not the path of a key file",
            "the path of a file holding the key: write one with `iwsrv keygen PATH` and name PATH here",
        )
    return readable_file(path, section, key, text, _SECRET_FILE_ALLOWED)


_USERS_FILE_ALLOWED = (
    "the path of a file written by `iwsrv adduser FILE USER`; a relative path is relative to the configuration file"
)


def users_file(path, section, key, text):
    """The console's users file: a readable file, a relative path relative to the configuration file."""
    return readable_file(path, section, key, text, _USERS_FILE_ALLOWED)


def readable_file(path, section, key, text, allowed):
    """The absolute path of a file named by C{key} (relative to the configuration's folder), which must be readable."""
    if not text:
        raise ConfigError(path, section, key, text, "empty", allowed)
    resolved = os.path.join(folder_of(path), os.path.expanduser(text))
    if not os.path.isfile(resolved):
        raise ConfigError(path, section, key, text, f"no such file: {resolved}", allowed)
    if not os.access(resolved, os.R_OK):
        raise ConfigError(path, section, key, text, f"not readable by this user: {resolved}", allowed)
    return resolved


def server_name(path, section, key, text):
    """A server's name; that it names a [server:NAME] section is checked once the whole file is read."""
    return text.strip()


_SERVER_NAMES_ALLOWED = "a comma-separated list of server names"


def server_names(path, section, key, text):
    names = tuple(s.strip() for s in text.split(",") if s.strip())
    if not names:
        raise ConfigError(path, section, key, text, "empty", _SERVER_NAMES_ALLOWED)
    return names


_VIRTUAL_IP_ALLOWED = "an IPv4 or IPv6 address with its prefix length, e.g. 10.0.0.100/24 or 2001:db8::100/64"


def virtual_ip(path, section, key, text):
    try:
        interface = ipaddress.ip_interface(text.strip())
    except ValueError as e:
        raise ConfigError(path, section, key, text, f"not an address with a prefix ({e})", _VIRTUAL_IP_ALLOWED) from None
    if "/" not in text:
        raise ConfigError(path, section, key, text, "the prefix length is missing", _VIRTUAL_IP_ALLOWED)
    address = interface.ip
    if address.is_loopback or address.is_multicast or address.is_unspecified or address.is_link_local:
        raise ConfigError(
            path, section, key, text, "a loopback, multicast, link-local or unspecified address cannot float",
            _VIRTUAL_IP_ALLOWED,
        )
    if address.version == 4 and interface.network.prefixlen < 31 and address in (
        interface.network.network_address, interface.network.broadcast_address
    ):
        raise ConfigError(path, section, key, text, "that is the network's own or broadcast address", _VIRTUAL_IP_ALLOWED)
    return interface.with_prefixlen


_ADDRESS_ALLOWED = "an IPv4 or IPv6 address (no host name: pulses are sent without a lookup), e.g. 192.168.2.11 or fd00:2::11"


def address(path, section, key, text):
    try:
        value = ipaddress.ip_address(text.strip())
    except ValueError:
        raise ConfigError(path, section, key, text, "not an IP address", _ADDRESS_ALLOWED) from None
    if value.is_multicast or value.is_unspecified or value == ipaddress.IPv4Address("255.255.255.255"):
        raise ConfigError(path, section, key, text, "a multicast, broadcast or unspecified address is no server's",
                          _ADDRESS_ALLOWED)
    return str(value)


_INTERFACE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.@-]{0,14}\Z")
_INTERFACE_ALLOWED = "a network interface name of 1 to 15 of A-Z a-z 0-9 _ . @ -, e.g. eth0 or bond0.100"


def interface_name(path, section, key, text):
    name = text.strip()
    if not _INTERFACE_NAME.match(name) or name in (".", ".."):
        raise ConfigError(path, section, key, text, "not an interface name", _INTERFACE_ALLOWED)
    return name


def _words(allowed):
    """The check of a command line: split as a shell would, not empty."""
    def check(path, section, key, text):
        try:
            words = tuple(shlex.split(text))
        except ValueError as e:
            raise ConfigError(path, section, key, text, f"cannot split into words ({e})", allowed) from None
        if not words or not words[0]:
            raise ConfigError(path, section, key, text, "empty", allowed)
        return words
    return check


_HOOK_ALLOWED = "a command and its arguments, split like a shell would (no pipes, no $VARIABLES), e.g. /usr/local/bin/notify live"
_PLUGIN_ALLOWED = "a twistd plugin name and its options, e.g. web --listen tcp:8080 --path /srv/www"
_COMMAND_ALLOWED = (
    "a program and its arguments, split as a shell would (no pipes or redirections), e.g. /usr/bin/worker --port 9000"
)


def relative_folder(path, section, key, text):
    """A folder; a relative one is relative to the configuration file."""
    return os.path.normpath(os.path.join(folder_of(path), os.path.expanduser(text)))


_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\Z")
_ENV_ALLOWED = "NAME=value words, split as a shell would, e.g. PORT=9000 MODE='hot standby'"


def environment(path, section, key, text):
    try:
        assignments = shlex.split(text)
    except ValueError as e:
        raise ConfigError(path, section, key, text, f"cannot split into words ({e})", _ENV_ALLOWED) from None
    env = []
    for word in assignments:
        name, equals, value = word.partition("=")
        if not equals or not _ENV_NAME.match(name):
            raise ConfigError(path, section, key, text, f"{word!r} is not NAME=value", _ENV_ALLOWED)
        env.append((name, value))
    return tuple(env)


# -- groups on etcd --

COORDINATORS = ("pair", "etcd")
_COORDINATOR_ALLOWED = "pair (two nodes, heartbeat links) or etcd (a group whose live role is a lease-bound key in etcd)"


def coordinator(path, section, key, text):
    value = text.strip().lower()
    if value not in COORDINATORS:
        raise ConfigError(path, section, key, text, "not a coordinator", _COORDINATOR_ALLOWED)
    return value


_ETCD_ENDPOINTS_ALLOWED = (
    "comma-separated etcd client URLs, each http:// or https:// with a host and a port and no path,"
    " all of one scheme, e.g. http://10.0.0.5:2379, http://10.0.0.6:2379"
)


def etcd_endpoint(path, section, key, text, item) -> str:
    """One etcd client URL of C{text}, as C{scheme://host:port} (an IPv6 host in brackets)."""
    def refuse(problem):
        return ConfigError(path, section, key, text, f"{item!r}: {problem}", _ETCD_ENDPOINTS_ALLOWED)

    if not item:
        raise refuse("an empty endpoint (two commas, or a comma at an end)")
    if any(c.isspace() for c in item):
        raise refuse("has a space in it")
    try:
        url = urllib.parse.urlsplit(item)
        number = url.port
    except ValueError as e:
        raise refuse(f"not a URL ({e})") from None
    if url.scheme.lower() not in ("http", "https") or not item.lower().startswith(url.scheme.lower() + "://"):
        raise refuse("not an http:// or https:// URL")
    if url.username is not None or url.password is not None:
        raise refuse("a user or password in the URL (set etcd_user and etcd_password_file instead)")
    if not url.hostname:
        raise refuse("no host")
    if number is None:
        raise refuse("no port (etcd's client port is usually 2379: http://HOST:2379)")
    if not 0 < number <= 65535:
        raise refuse("port out of range")
    if url.path not in ("", "/") or url.query or url.fragment:
        raise refuse("has a path, query or fragment; an endpoint is scheme://host:port only")
    host = f"[{url.hostname}]" if ":" in url.hostname else url.hostname
    return f"{url.scheme.lower()}://{host}:{number}"


def etcd_endpoints(path, section, key, text):
    found = []
    for item in (part.strip() for part in text.split(",")):
        endpoint = etcd_endpoint(path, section, key, text, item)
        if endpoint in found:
            raise ConfigError(path, section, key, text, f"{item!r} is named twice", _ETCD_ENDPOINTS_ALLOWED)
        found.append(endpoint)
    schemes = sorted({endpoint.partition(":")[0] for endpoint in found})
    if len(schemes) > 1:
        raise ConfigError(
            path, section, key, text, "mixes http:// and https:// endpoints: the connection to etcd is either TLS or not",
            _ETCD_ENDPOINTS_ALLOWED,
        )
    return tuple(found)


_ETCD_PREFIX_ALLOWED = "a key path starting with / and not ending with /, without spaces, e.g. /iwayfailover/orders"


def etcd_prefix(path, section, key, text):
    value = text.strip()
    if not value.startswith("/"):
        raise ConfigError(path, section, key, text, "does not start with /", _ETCD_PREFIX_ALLOWED)
    if value.endswith("/"):
        raise ConfigError(path, section, key, text, "ends with / (the keys are PREFIX/live, PREFIX/members/NAME)", _ETCD_PREFIX_ALLOWED)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(path, section, key, text, "has a space or a control character in it", _ETCD_PREFIX_ALLOWED)
    return value


_PEM_FILE_ALLOWED = "the path of a readable PEM file; a relative path is relative to the configuration file"


def pem_file(path, section, key, text):
    """A TLS file (CA certificates, a certificate or its key): readable, relative to the configuration file."""
    return readable_file(path, section, key, text.strip(), _PEM_FILE_ALLOWED)


_ETCD_USER_ALLOWED = "an etcd user name, without spaces (its password is in etcd_password_file)"


def etcd_user(path, section, key, text):
    value = text.strip()
    if not value:
        raise ConfigError(path, section, key, text, "empty", _ETCD_USER_ALLOWED)
    if any(c.isspace() or not c.isprintable() for c in value):
        raise ConfigError(path, section, key, text, "has a space or a control character in it", _ETCD_USER_ALLOWED)
    return value


_PASSWORD_FILE_ALLOWED = (
    "the path of a file holding the password on its first line, readable and writable by its owner only"
    " (chmod 600); a relative path is relative to the configuration file"
)


def password_file(path, section, key, text):
    """
    A file holding a password: readable by this user, relative to the
    configuration file, and neither readable nor writable by its group or
    other users (unlike the heartbeat key file, which is only warned about:
    etcd's password opens the store that decides who is live).
    """
    resolved = readable_file(path, section, key, text.strip(), _PASSWORD_FILE_ALLOWED)
    loose = exposed(resolved)
    if loose:
        raise ConfigError(
            path, section, key, text,
            f"{resolved} has mode {stat.S_IMODE(os.stat(resolved).st_mode):04o}: {', '.join(loose)};"
            f" run: chmod 600 {resolved}",
            _PASSWORD_FILE_ALLOWED,
        )
    return resolved


def read_password(path, section, key, file_path) -> str:
    """
    The password in the file at C{file_path}: its first line, stripped.

    @raise ConfigError: it cannot be read, is not UTF-8 text, or its first
        line is empty. The password itself is never in the message.
    """
    try:
        with open(file_path, "rb") as f:
            data = f.read(4096 + 1)
    except OSError as e:
        raise ConfigError(path, section, key, file_path, f"cannot read it: {e.strerror or e}", _PASSWORD_FILE_ALLOWED) from None
    if len(data) > 4096:
        raise ConfigError(path, section, key, file_path, "over 4 KiB; it holds a password on one line", _PASSWORD_FILE_ALLOWED)
    try:
        lines = data.decode("utf-8").splitlines()
    except UnicodeDecodeError:
        raise ConfigError(path, section, key, file_path, "not UTF-8 text", _PASSWORD_FILE_ALLOWED) from None
    password = lines[0].strip() if lines else ""
    if not password:
        raise ConfigError(path, section, key, file_path, "its first line is empty: no password", _PASSWORD_FILE_ALLOWED)
    return password


def _show_number(value) -> str:
    return f"{value:g}"


def _show_words(value) -> str:
    return shlex.join(value)


# -- the kinds --

SECONDS = ValueKind("seconds", _SECONDS_ALLOWED, positive_seconds, _show_number)
BOOLEAN = ValueKind("true/false", _BOOLEAN_ALLOWED, boolean, lambda value: "true" if value else "false")
INTEGER = ValueKind("whole number", _INTEGER_ALLOWED, integer)
COUNT = ValueKind("count", _COUNT_ALLOWED, count)
WITNESSES = ValueKind("addresses", _WITNESS_ALLOWED, witnesses, _show_witnesses)
PORT = ValueKind("server endpoint", _PORT_ALLOWED, port)
CONSOLE = ValueKind("server endpoint", _PORT_ALLOWED, console_port)
LOCATION = ValueKind("client endpoint", _LOCATION_ALLOWED, location)
SECRET_FILE = ValueKind("file", _SECRET_FILE_ALLOWED, secret_file)
USERS_FILE = ValueKind("file", _USERS_FILE_ALLOWED, users_file)
SERVER_NAME = ValueKind("server name", "the name of a [server:NAME] section", server_name)
SERVER_NAMES = ValueKind("server names", _SERVER_NAMES_ALLOWED, server_names, ", ".join)
VIRTUAL_IP = ValueKind("address/prefix", _VIRTUAL_IP_ALLOWED, virtual_ip)
INTERFACE = ValueKind("interface", _INTERFACE_ALLOWED, interface_name)
ADDRESS = ValueKind("address", _ADDRESS_ALLOWED, address)
HOOK = ValueKind("command", _HOOK_ALLOWED, _words(_HOOK_ALLOWED), _show_words)
PLUGIN = ValueKind("plugin line", _PLUGIN_ALLOWED, _words(_PLUGIN_ALLOWED), _show_words)
COMMAND = ValueKind("command", _COMMAND_ALLOWED, _words(_COMMAND_ALLOWED), _show_words)
FOLDER = ValueKind("folder", "a folder; a relative path is relative to the configuration file", relative_folder)
ENVIRONMENT = ValueKind(
    "NAME=value ...", _ENV_ALLOWED, environment, lambda value: " ".join(shlex.quote(f"{k}={v}") for k, v in value),
)
COORDINATOR = ValueKind("pair or etcd", _COORDINATOR_ALLOWED, coordinator)
ETCD_ENDPOINTS = ValueKind("URLs", _ETCD_ENDPOINTS_ALLOWED, etcd_endpoints, ", ".join)
ETCD_PREFIX = ValueKind("key path", _ETCD_PREFIX_ALLOWED, etcd_prefix)
PEM_FILE = ValueKind("file", _PEM_FILE_ALLOWED, pem_file)
ETCD_USER = ValueKind("user name", _ETCD_USER_ALLOWED, etcd_user)
PASSWORD_FILE = ValueKind("file", _PASSWORD_FILE_ALLOWED, password_file)
