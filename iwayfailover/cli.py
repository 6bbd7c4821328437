"""
C{iwsrv}: the node in the foreground, and questions to a running node.

    iwsrv [-b] [--config PATH] [--name NAME] [--state-dir DIR]   run a node (twistd -n iway-failover)
    iwsrv status [--config PATH] [--name NAME] [--state-dir DIR] [--json]
                                                                 ask a running node how it stands
    iwsrv switchover [--config PATH] [--name NAME] [--state-dir DIR] [--to NAME] [--yes] [--json]
                                                                 hand the live role to the backup (or member NAME)
    iwsrv restart-listener LISTENER [--config PATH] [--name NAME] [--state-dir DIR] [--json]
                                                                 try a FAILED listener again
    iwsrv --version                                              iwayfailover's and Twisted's versions
    iwsrv keygen PATH                                            write a new heartbeat key (mode 0600)
    iwsrv adduser FILE USER [--password-stdin]                   add a console user (asks the password twice)
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys

from twisted.python import usage

from iwayfailover.config import (
    ConfigError, ConfigUnreadable, endpoint_interface, endpoint_port, parse_config, read_config, server_endpoint_string,
)
from iwayfailover import tap
from iwayfailover.tap import default_config, default_name, host_name_used

STATUS_TIMEOUT = 5.0
SWITCHOVER_TIMEOUT = 60.0
"""Longest wait for a switchover: the live node gives up on its own after its backup's threshold (at least 5 s)."""
RESTART_TIMEOUT = 30.0
"""Longest wait for a listener's restart (its ports bound, or its program spawned)."""


class CommandOptions(usage.Options):
    """
    The options of one iwsrv command (C{command}): C{--version} is
    iwayfailover's, and arguments it does not take are a usage error that
    says so (not "Wrong number of arguments.").
    """

    command = "?"

    def opt_version(self):
        """Display iwayfailover's and Twisted's versions and exit."""
        print(version_line())
        sys.exit(0)

    def parseArgs(self, *args):
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}: iwsrv {self.command} takes only options")


def option_meant(options: usage.Options, given: str) -> str:
    """For an unknown option C{given}, C{"; did you mean --name?"} (the closest of C{options}'), or ''."""
    import difflib

    names = [f"--{long}" for long, *_ in options.optParameters + options.optFlags] + ["--help", "--version"]
    close = difflib.get_close_matches("--" + given.lstrip("-"), names, n=1)
    return f"; did you mean {close[0]}?" if close else ""


def usage_problem(options: usage.Options, error: usage.UsageError) -> str:
    """
    The mistake of a L{usage.UsageError} in plain words (getopt's messages
    reworded, an unknown option with the one meant).
    """
    text = str(error)
    unknown = re.fullmatch(r"option (\S+) not recognized", text)
    if unknown:
        return f"unknown option {unknown.group(1)!r}" + option_meant(options, unknown.group(1))
    value = re.fullmatch(r"option (\S+) requires argument", text)
    if value:
        given = value.group(1)
        long = next((f"--{long}" for long, short, *_ in options.optParameters if given in (f"-{short}", f"--{long}")), given)
        metavar = re.search(rf"{re.escape(long)} ([A-Z]+)", getattr(options, "synopsis", None) or "")
        return f"option {given} needs a value: {long} {metavar.group(1) if metavar else 'VALUE'}"
    flag = re.fullmatch(r"option (\S+) must not have an argument", text)
    if flag:
        return f"option {flag.group(1)} takes no value"
    prefix = re.fullmatch(r"option (\S+) not a unique prefix", text)
    if prefix:
        return f"option {prefix.group(1)} is the start of more than one option; spell it out"
    return text


def usage_line(command: str, options: usage.Options, error: usage.UsageError) -> str:
    """The one line a usage error of C{iwsrv COMMAND} prints."""
    return f"iwsrv {command}: {usage_problem(options, error)} (`iwsrv {command} --help` lists its options)"


class NodeOptions(tap.Options):
    """
    C{iwsrv [options]}: the node's options, checked before twistd parses
    them again; with iwsrv's usage line and C{--version}.
    """

    synopsis = "Usage: iwsrv [-b] [--config PATH] [--name NAME] [--state-dir DIR]"
    longdesc = tap.Options.longdesc + (
        " iwsrv runs it in the foreground (twistd -n iway-failover); `iwsrv --help` lists the other commands"
        " (status, switchover, restart-listener, keygen, adduser)."
    )
    opt_version = CommandOptions.opt_version

    def parseArgs(self, *args):
        if args:
            raise usage.UsageError(f"unexpected argument {args[0]!r}: a node takes only options (a command comes first)")


class StatusOptions(CommandOptions):
    command = "status"
    synopsis = "Usage: iwsrv status [--config PATH] [--name NAME] [--state-dir DIR] [--json]"
    optFlags = [["json", "j", "Print the status object as JSON."]]
    optParameters = [
        ["config", "c", None, "The shared configuration. [default: $IWAY_CONFIG or /etc/iwayfailover/iwayfailover.ini]"],
        ["name", None, None, "The server to ask. [default: the host name]"],
        ["state-dir", None, None, "The node's state dir: its local copy of the configuration is read there while"
         " the shared file cannot be read. [default: ~/.local/state/iwayfailover/NAME]"],
    ]

    def postOptions(self):
        # Where the file's path came from, for the hint when it cannot be read.
        self["config_from"] = "option" if self["config"] else "IWAY_CONFIG" if os.environ.get("IWAY_CONFIG") else "default"
        self["config"] = self["config"] or default_config()
        self["named"] = self["name"] is not None
        self["name"] = self["name"] or default_name()


def console_client_string(console: str) -> str:
    """
    A client endpoint string that reaches a console listening on the server
    endpoint string C{console} from this host.
    """
    description = server_endpoint_string(console)
    kind, _, rest = description.partition(":")
    if kind in ("tcp", "tcp6"):
        # Bound to every address (or none named): reach it over loopback.
        host = endpoint_interface(description) or ("::1" if kind == "tcp6" else "127.0.0.1")
        escaped = host.replace(":", "\\:")
        return f"{kind}:host={escaped}:port={endpoint_port(description)}"
    if kind == "unix":
        parts = re.split(r"(?<!\\):", rest)
        path = next((p[len("address="):] for p in parts if p.startswith("address=")), parts[0])
        return f"unix:path={path}"
    raise ValueError(f"iwsrv status cannot reach a console on {console!r} (tcp, tcp6 and unix are supported)")


def call_console(reactor, client_string: str, method: bytes, path: bytes, timeout: float = STATUS_TIMEOUT,
                 headers: dict = None, body: dict = None):
    """
    A Deferred of C{(http_code, json_body)} from a node's console;
    C{headers}: extra request headers; C{body}: an object sent as JSON.
    """
    from twisted.internet.endpoints import clientFromString
    from twisted.web.client import Agent, readBody
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer

    @implementer(IAgentEndpointFactory)
    class Console:
        def endpointForURI(self, uri):
            return clientFromString(reactor, client_string)

    agent = Agent.usingEndpointFactory(reactor, Console())
    from twisted.web.http_headers import Headers

    headers = dict(headers or {})
    producer = None
    if body is not None:
        import io

        from twisted.web.client import FileBodyProducer

        headers[b"Content-Type"] = b"application/json"
        producer = FileBodyProducer(io.BytesIO(json.dumps(body).encode("utf-8")))
    d = agent.request(method, b"http://console" + path, Headers({k: [v] for k, v in headers.items()}), producer)

    def answer(response):
        def parse(data):
            try:
                return response.code, json.loads(data)
            except ValueError:
                raise CommandError(f"the console answered HTTP {response.code} with something that is not JSON") from None

        return readBody(response).addCallback(parse)

    d.addCallback(answer)
    d.addTimeout(timeout, reactor)
    return d


def fetch_status(reactor, client_string: str, timeout: float = STATUS_TIMEOUT):
    """A Deferred of the node's C{/api/status} object."""

    def ok(result):
        code, status = result
        if code != 200:
            raise RuntimeError(f"the console answered HTTP {code}")
        return status

    return call_console(reactor, client_string, b"GET", b"/api/status", timeout).addCallback(ok)


def _seconds(value) -> str:
    return "?" if value is None else f"{value:g}s"


def _peer_line(peer: dict) -> str:
    age = peer.get("last_heartbeat_age")
    heard = "never heard" if age is None else f"last heartbeat {age:.1f}s ago"
    line = f"{peer.get('name') or '?'}, {'connected' if peer.get('connected') else 'not connected'}, {heard}"
    if peer.get("role"):
        # Not connected, the peer's last word is history, not how it stands (it may be gone).
        said = "it is" if peer.get("connected") else "last seen"
        line += f" ({said} {peer['role']}" + (f", epoch {peer['epoch']})" if peer.get("epoch") is not None else ")")
    return line


def _auth_line(auth: dict) -> str:
    if auth.get("mode") == "insecure":
        return "insecure: heartbeats are not signed (insecure = true)"
    ids = ", ".join(auth.get("key_ids") or []) or "none"
    source = f" from {auth['key_file']}" if auth.get("key_file") else ""
    return f"{auth.get('mode', '?')}, key ids {ids}{source}"


def _coordinator_line(coordinator: dict) -> str:
    endpoints = ", ".join(coordinator.get("endpoints") or []) or "?"
    line = f"{coordinator.get('kind', '?')} at {endpoints}, {'connected' if coordinator.get('connected') else 'NOT connected'}"
    if not coordinator.get("connected") and coordinator.get("last_error"):
        line += f" ({coordinator['last_error']})"
    live = coordinator.get("live")
    if live is None:
        return line + "; nobody holds the live role"
    epoch = coordinator.get("live_epoch")
    return line + f"; live: {live}" + ("" if epoch is None else f" (epoch {epoch})")


def _lease_line(coordinator: dict, settings: dict) -> str:
    ttl, left = coordinator.get("lease_ttl"), coordinator.get("lease_left")
    line = "TTL not granted yet" if ttl is None else f"TTL {ttl}s"
    line += ", none held by this node" if left is None else f", {left:.1f}s left"
    if settings.get("heartbeat_interval") is not None:
        line += f"; keepalive every {_seconds(settings['heartbeat_interval'])}"
    return line + f"; renewals {coordinator.get('renewals', 0)}, failed {coordinator.get('renewal_failures', 0)}"


def _members_table(status: dict) -> list:
    """A group's members, one line each: name, role, epoch, priority, since, console."""
    members = status.get("members") or {}
    if not members:
        return ["no member has registered yet"]
    header = ("MEMBER", "ROLE", "EPOCH", "PRIORITY", "SINCE", "CONSOLE")
    rows = []
    for name, entry in members.items():
        role = entry.get("role") or "?"
        if entry.get("may_campaign") is False:
            role += " (no campaign)"
        rows.append((
            name + (" *" if name == status.get("server") else ""), role,
            "" if entry.get("epoch") is None else str(entry["epoch"]), str(entry.get("priority", "")),
            entry.get("since") or "", entry.get("console") or "",
        ))
    widths = [max(len(row[i]) for row in [header] + rows) for i in range(len(header))]
    return ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header] + rows]


def format_status(status: dict) -> str:
    """A readable table of a status object (the API's extra fields are shown where present)."""
    coordinator = status.get("coordinator")
    lines = [
        ("server", status["server"]),
        ("role", f"{status['role']} since {status['since']}" + (f" ({status['cause']})" if status.get("cause") else "")),
        ("epoch", str(status["epoch"])),
    ]
    if coordinator:
        lines.append(("coordinator", _coordinator_line(coordinator)))
        lines.append(("lease", _lease_line(coordinator, status.get("settings") or {})))
    else:
        lines.append(("peer", _peer_line(status.get("peer") or {})))
    heartbeats = status.get("heartbeats")
    if heartbeats and not coordinator:
        lines.append((
            "heartbeats",
            f"sent {heartbeats.get('sent', 0)}, received {heartbeats.get('received', 0)},"
            f" rejected {heartbeats.get('rejected', 0)}; longest gap heard {_seconds(heartbeats.get('max_gap'))}",
        ))
    settings = status.get("settings") or {}
    if settings and not coordinator:
        lines.append((
            "threshold",
            f"{_seconds(settings.get('threshold'))}, heartbeat every {_seconds(settings.get('heartbeat_interval'))}",
        ))
    if status.get("auth") and not coordinator:  # a group's members send no heartbeats to sign
        lines.append(("auth", _auth_line(status["auth"])))
    config = status.get("config") or {}
    if config.get("source") == "local copy":
        lines.append((
            "config", f"RUNNING FROM THE LOCAL COPY {config.get('local_copy')} of {config.get('path')}, saved"
            f" {config.get('local_copy_saved')}: the share cannot be read: {config.get('last_error')}",
        ))
    elif config.get("last_error"):
        lines.append(("config", f"NOT RELOADED, running the last good one: {config['last_error']}"))
    if config.get("local_copy_error"):
        lines.append(("local copy", f"NOT KEPT: {config['local_copy_error']}"))
    width = max(len(k) for k, _ in lines)
    out = [f"{k.ljust(width)}  {v}" for k, v in lines]
    if coordinator:
        out.append("")
        out += _members_table(status)
    listeners = status.get("listeners") or {}
    if listeners:
        out.append("")
        name_width = max(len("LISTENER"), *(len(n) for n in listeners))
        since_width = max(len("SINCE"), *(len(entry.get("since", "")) for entry in listeners.values()))
        reasons = any(entry.get("reason") or entry.get("retry_in") is not None for entry in listeners.values())
        header = f"{'LISTENER'.ljust(name_width)}  {'STATE':9} {'SINCE'.ljust(since_width)}" + ("  REASON" if reasons else "")
        out.append(header.rstrip())
        for name, entry in listeners.items():
            reason = f"  {entry['reason']}" if entry.get("reason") else ""
            if entry.get("retry_in") is not None:
                reason += f" (automatic retry {entry.get('retries', 0) + 1} in {entry['retry_in']:.1f}s)"
            out.append(f"{name.ljust(name_width)}  {entry['state']:9} {entry.get('since', '').ljust(since_width)}{reason}".rstrip())
    else:
        out.append("")
        out.append("no listeners for this server")
    return "\n".join(out)


class SwitchoverOptions(StatusOptions):
    command = "switchover"
    synopsis = "Usage: iwsrv switchover [--config PATH] [--name NAME] [--to NAME] [--state-dir DIR] [--yes] [--json]"
    optFlags = [
        ["json", "j", "Print the result as JSON."],
        ["yes", "y", "Do not ask for confirmation."],
    ]
    optParameters = [
        ["state-dir", None, None,
         "The live node's state dir, where it keeps its console token. [default: the per-user one of its name]"],
        ["to", None, None,
         "The server to hand the live role to (a group on etcd: any member; a pair: its backup)."
         " [default: the backup; in a group, the next member by priority]"],
    ]

    longdesc = (
        "Hand the live role to the backup: the live node stops its listeners, then the backup"
        " starts its own. --name may name either node of the pair. In a group on etcd, --name"
        " may name any member, or be left out: the command finds the live member itself."
    )


class CommandError(Exception):
    """
    A CLI command cannot go on; the message is printed as it is, then each
    of C{notes} on a line of its own.
    """

    def __init__(self, message, code=1, notes=()):
        super().__init__(message)
        self.code = code
        self.notes = tuple(notes)


def _console_of(config, name, named=True):
    """
    The server C{name} and the client endpoint string of its console.

    @param named: the name was given (C{--name}); if not, it is the host
        name, and an error for a name with no section says so.
    """
    try:
        server = config.server(name)
    except ConfigError as e:
        unknown = not named and name not in (getattr(config, "servers", None) or {})
        raise CommandError(f"{e} {host_name_used(name)}" if unknown else str(e), 2) from None
    if server.console is None:
        raise CommandError(f"[server:{server.name}] has no console key in {config.path}; the API needs one", 2)
    try:
        return server, console_client_string(server.console)
    except ValueError as e:
        raise CommandError(str(e), 2) from None


def _local_copy(command, options, error):
    """
    The shared file cannot be read: the node's local copy of it (in its
    state dir, where this user may read it), to find the node's console, or
    None. Says on standard error that the copy is used.

    @return: C{(config, why_not)}: the copy's configuration, or None and
        what to add to the error (why no copy could be used, what to do).
    """
    from iwayfailover.config.lastgood import CopyRefused, find_copy
    from iwayfailover.state import default_state_dir
    from iwayfailover.status import iso

    folder = options.get("state-dir") or default_state_dir(options["name"])
    try:
        copy = find_copy(folder, options["config"])
        config = None if copy is None else parse_config(copy.text, options["config"])
    except (CopyRefused, ConfigError, OSError) as e:
        return None, f"; and the node's copy of it in {folder} cannot be used: {e}"
    if config is None:
        if options.get("config_from") == "default":
            # Most likely no file was meant to be read from there at all.
            return None, " (no --config given and IWAY_CONFIG is not set: pass --config PATH, or set IWAY_CONFIG=PATH)"
        if options.get("state-dir"):
            return None, f"; no copy of it in {folder} either"
        return None, (f"; the node's copy of it is not in {folder}: pass --state-dir DIR to use the copy in the"
                      " node's state dir")
    print(f"iwsrv {command}: {error}; using the node's local copy {copy.path} (saved {iso(copy.saved)})",
          file=sys.stderr)
    return config, ""


def _run(command, argv, options, prepare, read=None):
    """
    Parse, read the configuration (with C{read(options)}; by default the
    whole file, strictly), then C{prepare(options, config)}, which
    checks what it can without the network (raising L{CommandError}) and
    returns the work to run in a reactor: a function of the reactor that
    returns a Deferred of the text to print.
    """
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(usage_line(command, options, e), file=sys.stderr)
        return 2
    try:
        config = read(options) if read is not None else read_config(options["config"])
    except ConfigUnreadable as e:
        config, why_not = _local_copy(command, options, e)
        if config is None:
            print(f"iwsrv {command}: {e}{why_not}", file=sys.stderr)
            return 2
    except ConfigError as e:
        print(f"iwsrv {command}: {e}", file=sys.stderr)
        return 2

    try:
        work = prepare(options, config)
    except CommandError as e:
        print(f"iwsrv {command}: {e}", file=sys.stderr)
        return e.code

    from twisted.internet import defer, task

    outcome = {}

    def main(reactor):
        d = defer.maybeDeferred(work, reactor)
        # Both end here: an error is printed below as one line, never as a traceback.
        d.addCallbacks(lambda text: outcome.__setitem__("text", text), lambda f: outcome.__setitem__("error", f))
        return d

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    from twisted.internet import reactor

    if getattr(reactor, "_exitSignal", None) == signal.SIGINT:
        # Ctrl-C: the reactor stopped, which lost the connection; that loss is no answer to report.
        print(f"iwsrv {command}: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT
    failure = outcome.get("error")
    if failure is not None:
        if failure.check(CommandError):
            print(f"iwsrv {command}: {failure.value}", file=sys.stderr)
            for note in failure.value.notes:
                print(f"iwsrv {command}: {note}", file=sys.stderr)
            return failure.value.code
        print(f"iwsrv {command}: {failure.getErrorMessage() or failure.type.__name__}", file=sys.stderr)
        return 1
    print(outcome["text"])
    return 0


def console_address(console: str) -> str:
    """Where a console on the server endpoint string C{console} is reached from this host: C{127.0.0.1:8081}, a socket's path."""
    try:
        client = console_client_string(console)
    except ValueError:
        return console
    fields = dict(part.split("=", 1) for part in re.split(r"(?<!\\):", client)[1:] if "=" in part)
    if "path" in fields:
        return fields["path"]
    host = fields.get("host", "").replace("\\:", ":")
    return f"[{host}]:{fields.get('port')}" if ":" in host else f"{host}:{fields.get('port')}"


def _reach(server, request, timeout: float = STATUS_TIMEOUT):
    from twisted.internet import defer, error
    from twisted.web.client import ResponseFailed, ResponseNeverReceived

    def cannot(failure):
        reasons = [failure]
        if failure.check(ResponseNeverReceived, ResponseFailed):
            reasons = list(failure.value.reasons) or reasons  # the connection's own failures
        if any(r.check(defer.TimeoutError, defer.CancelledError) for r in reasons):
            raise CommandError(f"no answer from {server.name} at {server.console} in {timeout:g} s"
                               " (is it hung, or paused?)")
        if any(r.check(error.ConnectionRefusedError) for r in reasons):
            raise CommandError(f"cannot ask {server.name} on {server.console}: nothing listens on"
                               f" {console_address(server.console)} (connection refused): {server.name} is not"
                               " running, or its console is elsewhere")
        why = "; ".join(r.getErrorMessage() or r.type.__name__ for r in reasons)
        raise CommandError(f"cannot ask {server.name} on {server.console}: {why}")

    return request.addErrback(cannot)


class InvalidConfig:
    """
    What C{iwsrv status} needs of a shared file that does not parse as a
    whole: each server's name and console, read leniently from its raw
    C{[server:NAME]} section, and the file's error.
    """

    def __init__(self, path: str, error: ConfigError, consoles: dict):
        self.path = path
        self.error = error
        self._consoles = consoles

    def server(self, name: str):
        if name not in self._consoles:
            raise self.error  # not even its section can be read: the file's error is the answer
        from types import SimpleNamespace

        return SimpleNamespace(name=name, console=self._consoles[name])


def raw_consoles(path: str) -> dict:
    """
    The C{console} key of every C{[server:NAME]} section of the INI file at
    C{path} (None where there is none), read as leniently as can be: any
    other key or section may be wrong, even the file's syntax after them.
    """
    import configparser

    from iwayfailover.config import console_endpoint_string

    parser = configparser.ConfigParser(interpolation=None, inline_comment_prefixes=(";", "#"), strict=False,
                                       default_section="\x00no-default")
    parser.optionxform = str
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            parser.read_file(f, source=path)
    except (OSError, configparser.Error):
        pass  # the sections read before the error (a syntax error is raised at the end) are kept
    consoles = {}
    for section in parser.sections():
        kind, _, name = section.partition(":")
        if kind == "server" and name:
            value = (parser.get(section, "console", fallback="") or "").strip()
            consoles[name] = console_endpoint_string(value) if value else None
    return consoles


def read_for_status(options):
    """
    The shared file, or, when it does not parse, an L{InvalidConfig}: a
    status is asked of the running node, which keeps its last good
    configuration, so one wrong key must not hide it.
    """
    try:
        return read_config(options["config"])
    except ConfigError as e:
        consoles = raw_consoles(options["config"])
        if not consoles.get(options["name"]):
            raise
        return InvalidConfig(options["config"], e, consoles)


def status_main(argv) -> int:
    def prepare(options, config):
        server, client = _console_of(config, options["name"], options["named"])
        error = getattr(config, "error", None)
        note = None
        if error is not None:
            note = f"the shared file has an error (the nodes keep running their last good configuration): {error}"

        def work(reactor):
            def show(status):
                if options["json"]:
                    if note:
                        print(f"iwsrv status: {note}", file=sys.stderr)
                    return json.dumps(status, indent=2)
                return format_status(status) + (f"\n\n{note}" if note else "")

            def unasked(failure):
                if note and failure.check(CommandError):
                    # The node could not be asked; the file's error is news all the same.
                    raise CommandError(str(failure.value), failure.value.code, failure.value.notes + (note,))
                return failure

            return _reach(server, fetch_status(reactor, client)).addCallbacks(show, unasked)

        return work

    return _run("status", argv, StatusOptions(), prepare, read=read_for_status)


def ask_on_terminal(question: str) -> bool:
    """Ask a yes/no question on the terminal (on stderr, so that --json output stays clean)."""
    if not sys.stdin.isatty():
        raise CommandError("no terminal to confirm on; pass --yes to switch over without asking", 2)
    import signal

    sys.stderr.write(f"{question} [y/N] ")
    sys.stderr.flush()
    # The reactor's SIGINT handler would only stop the reactor once this read
    # ends; Ctrl-C at the question must answer it: no.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        answer = sys.stdin.readline()
    except KeyboardInterrupt:
        sys.stderr.write("\n")
        return False
    finally:
        signal.signal(signal.SIGINT, previous)
    return answer.strip().lower() in ("y", "yes")


def switchover(config, name, call, confirm, token=lambda server: None, to=None):
    """
    Find the live node of the pair C{name} belongs to (of the group, in a
    group on etcd), confirm, and ask it to hand over.

    @param name: the server asked first; in a group, None: every member's
        console in turn until one tells which member is live.
    @param to: the server to hand the role to (None: the backup, or the
        member the group picks).
    @param call: C{call(client_string, method, path, timeout, headers=None,
        body=None)}: a Deferred of C{(http_code, json_body)} from a console
        (L{call_console}); C{body} is given only with C{to}.
    @param confirm: C{confirm(question)}: True to go on.
    @param token: C{token(server)}: the live server's console token, which
        logs this command in (raising L{CommandError} when it cannot be read).
    @return: a Deferred of the live node's answer (C{from}, C{to}, C{epoch},
        C{gap_ms}), failing with L{CommandError} naming what went wrong.
    """
    from twisted.internet import defer

    def status_of(server, client):
        def ok(result):
            code, body = result
            if code != 200:
                raise RuntimeError(f"the console answered HTTP {code}: {body.get('error', '') if isinstance(body, dict) else ''}")
            return body

        return _reach(server, call(client, b"GET", b"/api/status", STATUS_TIMEOUT).addCallback(ok))

    @defer.inlineCallbacks
    def find_live_member():
        """The live member of a group and its status: asked of C{name} first, then of the member it says is live, then of each."""
        order = [name] if name is not None else []
        order += [n for n in sorted(config.servers) if n != name and config.servers[n].console is not None]
        tried, reasons = set(), []
        while order:
            candidate = order.pop(0)
            if candidate in tried:
                continue
            tried.add(candidate)
            try:
                server, client = _console_of(config, candidate)
                status = yield status_of(server, client)
            except CommandError as e:
                if candidate == name:
                    raise
                reasons.append(str(e))
                continue
            if status["role"] == "live":
                return server, client, status
            live = (status.get("coordinator") or {}).get("live")
            if live and live not in tried and live in config.servers:
                order.insert(0, live)
        why = "; ".join(reasons)
        raise CommandError("no member of the group is live: nothing to hand over" + (f" ({why})" if why else ""))

    @defer.inlineCallbacks
    def run_group():
        if to is not None and to not in config.servers:
            raise CommandError(
                f"--to {to}: no [server:{to}] section in {config.path}; the members are: " + ", ".join(sorted(config.servers)), 2,
            )
        server, client, status = yield find_live_member()
        if to == server.name:
            raise CommandError(f"{to} is the live member already: nothing to hand over")
        members = status.get("members") or {}
        others = [f"{n} ({entry.get('role', '?')})" for n, entry in members.items() if n != server.name]
        target = to or "the next member by priority"
        question = (
            f"{server.name} is live (epoch {status['epoch']}) in a group on etcd; the other members: {', '.join(others) or 'none'}.\n"
            f"Stop {server.name}'s listeners and hand the live role to {target}?"
        )
        answer = yield ask(server, client, question)
        return answer

    @defer.inlineCallbacks
    def ask(server, client, question):
        secret = token(server)
        if not confirm(question):
            raise CommandError("switchover not confirmed; nothing changed")
        headers = {b"Authorization": b"Bearer " + secret.encode("ascii")} if secret else {}
        request = (call(client, b"POST", b"/api/switchover", SWITCHOVER_TIMEOUT, headers) if to is None else
                   call(client, b"POST", b"/api/switchover", SWITCHOVER_TIMEOUT, headers, body={"to": to}))
        code, body = yield _reach(server, request, SWITCHOVER_TIMEOUT)
        if code != 200:
            why = body.get("error") if isinstance(body, dict) else None
            raise CommandError(f"{server.name} refused the switchover: {why or f'HTTP {code}'}")
        return body

    @defer.inlineCallbacks
    def run():
        if config.failover.group:
            answer = yield run_group()
            return answer
        server, client = _console_of(config, name)
        status = yield status_of(server, client)
        peer = status.get("peer") or {}
        if status["role"] == "backup" and peer.get("name"):
            asked = server.name
            server, client = _console_of(config, peer["name"])
            status = yield status_of(server, client)
            if status["role"] != "live":
                raise CommandError(
                    f"neither server is live ({asked} is backup, {server.name} is {status['role']}): nothing to hand over"
                )
        elif status["role"] != "live":
            raise CommandError(f"{server.name} is {status['role']}, not live: nothing to hand over")
        peer = status.get("peer") or {}
        backup = peer.get("name") or server.backup_location
        age = peer.get("last_heartbeat_age")
        heard = "never heard" if age is None else f"last heard {age:.1f}s ago"
        question = (
            f"{server.name} is live (epoch {status['epoch']}); its backup {backup} is"
            f" {'connected' if peer.get('connected') else 'NOT connected'}, {heard}.\n"
            f"Stop {server.name}'s listeners and hand the live role to {backup}?"
        )
        answer = yield ask(server, client, question)
        return answer

    return run()


def console_token(name: str, state_dir=None, command: str = "switchover") -> str:
    """
    The console token of the node C{name} on this host, from C{state_dir}
    or its default state dir.

    @raise CommandError: it cannot be read.
    """
    from iwayfailover.console.access import TOKEN_FILE, read_token
    from iwayfailover.state import default_state_dir

    folder = state_dir or default_state_dir(name)
    try:
        token = read_token(folder)
    except OSError as e:
        raise CommandError(
            f"cannot read {name}'s console token {folder}/{TOKEN_FILE} ({e.strerror or e}): run iwsrv {command} on"
            f" {name}'s host, as the user it runs as (or root), with --state-dir if it runs with one", 2,
        ) from None
    if not re.fullmatch(r"[0-9a-f]{64}", token):
        raise CommandError(f"{folder}/{TOKEN_FILE} does not hold a console token; restart {name} to write a new one", 2)
    return token


def format_switchover(body: dict) -> str:
    return (
        f"switched over from {body['from']} to {body['to']} (epoch {body['epoch']});"
        f" no listener served for {body['gap_ms']:.1f} ms"
    )


def switchover_main(argv, confirm=ask_on_terminal) -> int:
    """
    Ask the live node to hand over. C{--name} may name either node: asked
    of a backup, the command finds the live node from the backup's status.
    """

    def prepare(options, config):
        # In a group without --name, the live member is looked for on every member's console.
        name = options["name"]
        if config.failover.group and not options["named"]:
            own = config.servers.get(name)
            name = name if own is not None and own.console is not None else None
        if name is not None:
            _console_of(config, name, options["named"])  # a bad name or no console: say so before any network

        def work(reactor):
            def call(client, method, path, timeout, headers=None, body=None):
                return call_console(reactor, client, method, path, timeout, headers, body)

            d = switchover(
                config, name, call, (lambda question: True) if options["yes"] else confirm,
                lambda server: console_token(server.name, options["state-dir"]), to=options["to"],
            )
            return d.addCallback(lambda body: json.dumps(body, indent=2) if options["json"] else format_switchover(body))

        return work

    return _run("switchover", argv, SwitchoverOptions(), prepare)


class RestartListenerOptions(StatusOptions):
    command = "restart-listener"
    synopsis = "Usage: iwsrv restart-listener LISTENER [--config PATH] [--name NAME] [--state-dir DIR] [--json]"
    optFlags = [["json", "j", "Print the listener's status entry as JSON."]]
    optParameters = [
        ["state-dir", None, None,
         "The node's state dir, where it keeps its console token. [default: the per-user one of its name]"],
    ]

    longdesc = (
        "Try a FAILED listener of the node --name again, now: a live node starts it, a backup makes it"
        " WAITING. A live node also retries a FAILED listener by itself, with a growing pause."
    )

    def parseOptions(self, options=None):
        options = list(sys.argv[1:] if options is None else options)
        if options and not options[0].startswith("-"):
            options.append(options.pop(0))  # the listener first, as in the synopsis, then the options
        super().parseOptions(options)

    def parseArgs(self, *args):
        if not args:
            raise usage.UsageError("the listener's name is missing: iwsrv restart-listener [options] LISTENER")
        if len(args) > 1:
            raise usage.UsageError(f"unexpected argument {args[1]!r}: iwsrv restart-listener takes one listener")
        self["listener"] = args[0]


def restart_listener(config, name, listener, call, token=lambda server: None):
    """
    Ask the node C{name} to restart its FAILED listener C{listener}.

    @param call: C{call(client_string, method, path, timeout, headers)}: a
        Deferred of C{(http_code, json_body)} from a console (L{call_console}).
    @param token: C{token(server)}: the server's console token, which logs
        this command in (raising L{CommandError} when it cannot be read).
    @return: a Deferred of the listener's status entry once restarted
        (ACTIVE, STARTING or WAITING), failing with L{CommandError} when the
        node refused, could not be asked, or the listener is FAILED again.
    """
    from urllib.parse import quote

    from twisted.internet import defer

    @defer.inlineCallbacks
    def run():
        server, client = _console_of(config, name)
        secret = token(server)
        headers = {b"Authorization": b"Bearer " + secret.encode("ascii")} if secret else {}
        path = b"/api/restart-listener?listener=" + quote(listener, safe="").encode("ascii")
        code, body = yield _reach(server, call(client, b"POST", path, RESTART_TIMEOUT, headers), RESTART_TIMEOUT)
        if code != 200:
            why = body.get("error") if isinstance(body, dict) else None
            raise CommandError(f"{server.name} refused to restart listener {listener}: {why or f'HTTP {code}'}"
                               + _listener_meant(config, server.name, listener))
        if body.get("state") == "FAILED":
            raise CommandError(f"listener {listener} on {server.name} is FAILED again: {body.get('reason') or 'no reason given'}")
        return body

    return run()


def _listener_meant(config, name: str, listener: str) -> str:
    """For a listener the file does not give the server C{name}, C{"; did you mean web?"} (from the file), or ''."""
    import difflib

    listeners = config.listeners_for(name) if hasattr(config, "listeners_for") else {}
    if listener in listeners:
        return ""
    close = difflib.get_close_matches(listener, sorted(listeners), n=1)
    return f"; did you mean {close[0]}?" if close else ""


def format_restart(name: str, body: dict) -> str:
    return f"listener {body.get('listener', '?')} on {name} restarted: {body.get('state', '?')}"


def restart_listener_main(argv) -> int:
    """Ask a node to try one of its FAILED listeners again."""

    def prepare(options, config):
        # A bad name, no console, no token: say so before any network.
        server, _ = _console_of(config, options["name"], options["named"])
        secret = console_token(server.name, options["state-dir"], "restart-listener")

        def work(reactor):
            def call(client, method, path, timeout, headers=None):
                return call_console(reactor, client, method, path, timeout, headers)

            d = restart_listener(config, options["name"], options["listener"], call, lambda server: secret)
            return d.addCallback(
                lambda body: json.dumps(body, indent=2) if options["json"] else format_restart(server.name, body)
            )

        return work

    return _run("restart-listener", argv, RestartListenerOptions(), prepare)


class KeygenOptions(CommandOptions):
    command = "keygen"
    synopsis = "Usage: iwsrv keygen PATH"

    def parseArgs(self, *args):
        if len(args) != 1:
            raise usage.UsageError("the new key file's path is missing: iwsrv keygen PATH" if not args else
                                   f"unexpected argument {args[1]!r}: iwsrv keygen takes one path")
        self["path"] = args[0]


def keygen_main(argv) -> int:
    """Write a new key file for secret_file; never replaces one."""
    from iwayfailover import auth

    options = KeygenOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(usage_line("keygen", options, e), file=sys.stderr)
        return 2
    path = options["path"]
    try:
        auth.write_new_key_file(path)
    except FileExistsError:
        print(f"iwsrv keygen: {path} exists; not replacing a key (remove it first, or add a new key as a second line)",
              file=sys.stderr)
        return 1
    except OSError as e:
        print(f"iwsrv keygen: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    # In the file a relative path is read from the file's own folder, not from here: give the absolute one.
    where = os.path.abspath(path)
    print(f"wrote a new key to {path} (mode 0600); set secret_file = {where} in [failover] (a relative path there is"
          " read from the configuration file's folder) and give both nodes the file")
    return 0


class AdduserOptions(CommandOptions):
    command = "adduser"
    synopsis = "Usage: iwsrv adduser FILE USER [--password-stdin]"
    optFlags = [["password-stdin", None, "Read the password from the first line of standard input (no prompt)."]]

    def parseArgs(self, *args):
        if len(args) != 2:
            missing = "the users file and the user's name are missing" if not args else "the user's name is missing"
            raise usage.UsageError(
                f"unexpected argument {args[2]!r}: iwsrv adduser takes a file and a user" if len(args) > 2 else
                f"{missing}: iwsrv adduser FILE USER [--password-stdin]"
            )
        self["path"], self["user"] = args


def adduser_main(argv, stdin=None, getpass=None) -> int:
    """Add a console user to a users file (or give it a new password)."""
    from iwayfailover.console import users

    stdin = stdin or sys.stdin
    if getpass is None:
        from getpass import getpass
    options = AdduserOptions()
    # Options may come after FILE USER too (getopt stops at the first argument).
    argv = [a for a in argv if a.startswith("-")] + [a for a in argv if not a.startswith("-")]
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(usage_line("adduser", options, e), file=sys.stderr)
        return 2
    path, user = options["path"], options["user"]
    if not users.USER_PATTERN.match(user):
        print(f"iwsrv adduser: bad user name {user!r} (allowed: {users.USER_ALLOWED})", file=sys.stderr)
        return 2
    if options["password-stdin"]:
        password = stdin.readline().rstrip("\r\n")
    else:
        try:
            password = getpass(f"password for {user}: ")
            again = getpass(f"password for {user} again: ")
        except (EOFError, KeyboardInterrupt):
            print("\niwsrv adduser: no password given; nothing written", file=sys.stderr)
            return 1
        if password != again:
            print("iwsrv adduser: the two passwords differ; nothing written", file=sys.stderr)
            return 1
    try:
        new = users.add_user(path, user, password)
    except ValueError as e:
        print(f"iwsrv adduser: {e}; nothing written", file=sys.stderr)
        return 1
    except users.UsersFileError as e:
        print(f"iwsrv adduser: {e}; nothing written", file=sys.stderr)
        return 1
    except OSError as e:
        print(f"iwsrv adduser: cannot write {path}: {e.strerror or e}", file=sys.stderr)
        return 1
    print(f"{'added' if new else 'changed the password of'} {user} in {path} (mode 0600);"
          f" set console_users = {os.path.abspath(path)} in [failover] or the server's section (a relative path"
          " there is read from the configuration file's folder)")
    return 0


def run_node(argv) -> None:
    """Run a node in the foreground: C{twistd -n iway-failover ARGS}."""
    from twisted.scripts.twistd import run

    sys.argv = ["iwsrv", "--nodaemon", "--pidfile=", "iway-failover", *argv]
    run()


def main(argv=None) -> int:
    """iwsrv: never a traceback for a reader that went away (C{| head}) or for Ctrl-C."""
    try:
        return _main(argv)
    except BrokenPipeError:
        # The reader of the output has gone: say nothing more (the interpreter's
        # last flush would fail again), and end as a program killed by SIGPIPE.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 128 + signal.SIGPIPE
    except KeyboardInterrupt:
        print("iwsrv: interrupted", file=sys.stderr)
        return 128 + signal.SIGINT


def version_line() -> str:
    import twisted

    import iwayfailover

    return f"iwsrv (iwayfailover) {iwayfailover.__version__}, Twisted {twisted.__version__}"


def _main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv in (["--version"], ["version"]):
        print(version_line())
        return 0
    if argv and argv[0] == "status":
        return status_main(argv[1:])
    if argv and argv[0] == "switchover":
        return switchover_main(argv[1:])
    if argv and argv[0] == "restart-listener":
        return restart_listener_main(argv[1:])
    if argv and argv[0] == "keygen":
        return keygen_main(argv[1:])
    if argv and argv[0] == "adduser":
        return adduser_main(argv[1:])
    if argv and argv[0] in ("-h", "--help", "help"):
        print(help_text())
        return 0
    problem = node_usage_error(argv)
    if problem is not None:
        print(f"iwsrv: {problem} (`iwsrv --help` lists the commands and options)", file=sys.stderr)
        return 2
    run_node(argv)
    return 0


COMMANDS = ("status", "switchover", "restart-listener", "keygen", "adduser", "help", "version")


def help_text() -> str:
    """The module's usage lines, without the docstring markup."""
    return re.sub(r"[A-Z]\{([^}]*)\}", r"\1", __doc__.strip())


def node_usage_error(argv) -> "str | None":
    """
    What is wrong with the arguments of C{iwsrv [options]} (running a node),
    in one line, or None: checked here, before twistd, whose usage error is
    its whole help.
    """
    import difflib

    if argv and not argv[0].startswith("-"):
        # A command cut short (restart) is the one it begins; else the closest in spelling.
        close = [c for c in COMMANDS if c.startswith(argv[0])] or difflib.get_close_matches(argv[0], COMMANDS, n=1)
        hint = f"; did you mean `iwsrv {close[0]}`?" if close else ""
        return f"unknown command {argv[0]!r}{hint}"
    options = NodeOptions()
    try:
        options.parseOptions(argv)  # --help and --version print and exit here
    except usage.UsageError as e:
        return usage_problem(options, e)
    return None


if __name__ == "__main__":
    sys.exit(main())
