"""
C{iwsrv}: the node in the foreground, and questions to a running node.

    iwsrv [-b] [--config PATH] [--name NAME] [--state-dir DIR]   run a node (twistd -n iway-failover)
    iwsrv status [--config PATH] [--name NAME] [--json]          ask a running node how it stands
    iwsrv switchover [--config PATH] [--name NAME] [--json]      hand the live role to the backup
    iwsrv keygen PATH                                            write a new heartbeat key (mode 0600)
    iwsrv adduser FILE USER [--password-stdin]                   add a console user (asks the password twice)
"""

from __future__ import annotations

import json
import re
import sys

from twisted.python import usage

from iwayfailover.config import ConfigError, endpoint_interface, endpoint_port, read_config, server_endpoint_string
from iwayfailover.tap import default_config, default_name

STATUS_TIMEOUT = 5.0


class StatusOptions(usage.Options):
    synopsis = "[--config PATH] [--name NAME] [--json]"
    optFlags = [["json", "j", "Print the status object as JSON."]]
    optParameters = [
        ["config", "c", None, "The shared configuration. [default: $IWAY_CONFIG or /etc/iwayfailover/iwayfailover.ini]"],
        ["name", None, None, "The server to ask. [default: the host name]"],
    ]

    def postOptions(self):
        self["config"] = self["config"] or default_config()
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


def call_console(reactor, client_string: str, method: bytes, path: bytes, timeout: float = STATUS_TIMEOUT):
    """A Deferred of C{(http_code, json_body)} from a node's console."""
    from twisted.internet.endpoints import clientFromString
    from twisted.web.client import Agent, readBody
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer

    @implementer(IAgentEndpointFactory)
    class Console:
        def endpointForURI(self, uri):
            return clientFromString(reactor, client_string)

    agent = Agent.usingEndpointFactory(reactor, Console())
    d = agent.request(method, b"http://console" + path)

    def body(response):
        return readBody(response).addCallback(lambda data: (response.code, json.loads(data)))

    d.addCallback(body)
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


def format_status(status: dict) -> str:
    """A readable table of a status object."""
    peer = status.get("peer") or {}
    age = peer.get("last_heartbeat_age")
    heard = "never heard" if age is None else f"last heartbeat {age:.1f}s ago"
    lines = [
        ("server", status["server"]),
        ("role", f"{status['role']} since {status['since']}" + (f" ({status['cause']})" if status.get("cause") else "")),
        ("epoch", str(status["epoch"])),
        ("peer", f"{peer.get('name') or '?'}, {'connected' if peer.get('connected') else 'not connected'}, {heard}"),
    ]
    settings = status.get("settings") or {}
    if settings:
        lines.append(("threshold", f"{settings.get('threshold'):g}s, heartbeat every {settings.get('heartbeat_interval'):g}s"))
    width = max(len(k) for k, _ in lines)
    out = [f"{k.ljust(width)}  {v}" for k, v in lines]
    listeners = status.get("listeners") or {}
    if listeners:
        out.append("")
        name_width = max(len("LISTENER"), *(len(n) for n in listeners))
        out.append(f"{'LISTENER'.ljust(name_width)}  {'STATE':9} SINCE")
        for name, entry in listeners.items():
            reason = f"  {entry['reason']}" if entry.get("reason") else ""
            out.append(f"{name.ljust(name_width)}  {entry['state']:9} {entry.get('since', '')}{reason}")
    return "\n".join(out)


class SwitchoverOptions(StatusOptions):
    synopsis = "[--config PATH] [--name NAME] [--json]"
    optFlags = [["json", "j", "Print the result as JSON."]]


class CommandError(Exception):
    """A CLI command cannot go on; the message is printed as it is."""

    def __init__(self, message, code=1):
        super().__init__(message)
        self.code = code


def _console_of(config, name):
    try:
        server = config.server(name)
    except ConfigError as e:
        raise CommandError(str(e), 2) from None
    if server.console is None:
        raise CommandError(f"[server:{server.name}] has no console key in {config.path}; the API needs one", 2)
    try:
        return server, console_client_string(server.console)
    except ValueError as e:
        raise CommandError(str(e), 2) from None


def _run(command, argv, options, prepare):
    """
    Parse, read the configuration, then C{prepare(options, config)}, which
    checks what it can without the network (raising L{CommandError}) and
    returns the work to run in a reactor: a function of the reactor that
    returns a Deferred of the text to print.
    """
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"iwsrv {command}: {e}", file=sys.stderr)
        return 2
    try:
        config = read_config(options["config"])
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
        d.addCallbacks(lambda text: outcome.setdefault("text", text), lambda f: outcome.setdefault("error", f))
        return d

    try:
        task.react(main)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    failure = outcome.get("error")
    if failure is not None:
        if failure.check(CommandError):
            print(f"iwsrv {command}: {failure.value}", file=sys.stderr)
            return failure.value.code
        print(f"iwsrv {command}: {failure.getErrorMessage() or failure.type.__name__}", file=sys.stderr)
        return 1
    print(outcome["text"])
    return 0


def _reach(server, request):
    def cannot(failure):
        why = failure.getErrorMessage() or failure.type.__name__
        raise CommandError(f"cannot ask {server.name} on {server.console}: {why}")

    return request.addErrback(cannot)


def status_main(argv) -> int:
    def prepare(options, config):
        server, client = _console_of(config, options["name"])

        def work(reactor):
            d = _reach(server, fetch_status(reactor, client))
            return d.addCallback(lambda status: json.dumps(status, indent=2) if options["json"] else format_status(status))

        return work

    return _run("status", argv, StatusOptions(), prepare)


def switchover_main(argv) -> int:
    """
    Ask the live node to hand over. C{--name} may name either node: asked
    of a backup, the command finds the live node from the backup's status.
    """

    def prepare(options, config):
        from twisted.internet import defer

        first = _console_of(config, options["name"])

        @defer.inlineCallbacks
        def work(reactor):
            server, client = first
            status = yield _reach(server, fetch_status(reactor, client))
            if status["role"] == "backup" and (status.get("peer") or {}).get("name"):
                server, client = _console_of(config, status["peer"]["name"])
            code, body = yield _reach(server, call_console(reactor, client, b"POST", b"/api/switchover", timeout=60))
            if code != 200:
                raise CommandError(f"{server.name} refused the switchover: {body.get('error', code)}")
            if options["json"]:
                return json.dumps(body, indent=2)
            return (
                f"switched over from {body['from']} to {body['to']} (epoch {body['epoch']});"
                f" no listener served for {body['gap_ms']:.1f} ms"
            )

        return work

    return _run("switchover", argv, SwitchoverOptions(), prepare)


class KeygenOptions(usage.Options):
    synopsis = "PATH"

    def parseArgs(self, path):
        self["path"] = path


def keygen_main(argv) -> int:
    """Write a new key file for secret_file; never replaces one."""
    from iwayfailover import auth

    options = KeygenOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"iwsrv keygen: {e} (usage: iwsrv keygen PATH)", file=sys.stderr)
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
    print(f"wrote a new key to {path} (mode 0600); set secret_file = {path} in [failover] and give both nodes the file")
    return 0


class AdduserOptions(usage.Options):
    synopsis = "FILE USER [--password-stdin]"
    optFlags = [["password-stdin", None, "Read the password from the first line of standard input (no prompt)."]]

    def parseArgs(self, path, user):
        self["path"] = path
        self["user"] = user


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
        print(f"iwsrv adduser: {e} (usage: iwsrv adduser FILE USER [--password-stdin])", file=sys.stderr)
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
          f" set console_users = {path} in [failover] or the server's section")
    return 0


def run_node(argv) -> None:
    """Run a node in the foreground: C{twistd -n iway-failover ARGS}."""
    from twisted.scripts.twistd import run

    sys.argv = ["iwsrv", "--nodaemon", "--pidfile=", "iway-failover", *argv]
    run()


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "status":
        return status_main(argv[1:])
    if argv and argv[0] == "switchover":
        return switchover_main(argv[1:])
    if argv and argv[0] == "keygen":
        return keygen_main(argv[1:])
    if argv and argv[0] == "adduser":
        return adduser_main(argv[1:])
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    run_node(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
