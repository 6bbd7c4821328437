"""
C{iwsrv}: the node in the foreground, and questions to a running node.

    iwsrv [-b] [--config PATH] [--name NAME] [--state-dir DIR]   run a node (twistd -n iway-failover)
    iwsrv status [--config PATH] [--name NAME] [--json]          ask a running node how it stands
"""

from __future__ import annotations

import json
import re
import sys

from twisted.python import usage

from iwayfailover.config import ConfigError, read_config
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
    parts = re.split(r"(?<!\\):", console)
    kind, rest = parts[0], parts[1:]
    if kind in ("tcp", "tcp6") or kind.isdigit():
        if kind.isdigit():
            kind, rest = "tcp", parts
        port = next((p for p in rest if "=" not in p), None) or next(
            (p.split("=", 1)[1] for p in rest if p.startswith("port=")), None
        )
        interface = next((p.split("=", 1)[1] for p in rest if p.startswith("interface=")), "")
        if interface in ("", "::", r"\:\:") and kind == "tcp6":
            interface = r"\:\:1"
        elif interface in ("", "0.0.0.0"):
            interface = "127.0.0.1"
        return f"{kind}:host={interface}:port={port}"
    if kind == "unix":
        for part in rest:
            if part.startswith("address=") or "=" not in part:
                return "unix:path=" + part.split("=", 1)[-1] if part.startswith("address=") else "unix:path=" + part
    raise ValueError(f"iwsrv status cannot reach a console on {console!r} (tcp, tcp6 and unix are supported)")


def fetch_status(reactor, client_string: str, timeout: float = STATUS_TIMEOUT):
    """A Deferred of the node's C{/api/status} object."""
    from twisted.internet.endpoints import clientFromString
    from twisted.web.client import Agent, readBody
    from twisted.web.iweb import IAgentEndpointFactory
    from zope.interface import implementer

    @implementer(IAgentEndpointFactory)
    class Console:
        def endpointForURI(self, uri):
            return clientFromString(reactor, client_string)

    agent = Agent.usingEndpointFactory(reactor, Console())
    d = agent.request(b"GET", b"http://console/api/status")

    def body(response):
        if response.code != 200:
            raise RuntimeError(f"the console answered HTTP {response.code}")
        return readBody(response)

    d.addCallback(body)
    d.addCallback(lambda data: json.loads(data))
    d.addTimeout(timeout, reactor)
    return d


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


def status_main(argv) -> int:
    options = StatusOptions()
    try:
        options.parseOptions(argv)
    except usage.UsageError as e:
        print(f"iwsrv status: {e}", file=sys.stderr)
        return 2
    try:
        config = read_config(options["config"])
        server = config.server(options["name"])
    except ConfigError as e:
        print(f"iwsrv status: {e}", file=sys.stderr)
        return 2
    if server.console is None:
        print(f"iwsrv status: [server:{server.name}] has no console key in {config.path}; the status API needs one", file=sys.stderr)
        return 2
    try:
        client_string = console_client_string(server.console)
    except ValueError as e:
        print(f"iwsrv status: {e}", file=sys.stderr)
        return 2

    from twisted.internet import task

    result = {}

    def ask(reactor):
        d = fetch_status(reactor, client_string)

        def got(status):
            result["status"] = status

        def failed(failure):
            result["error"] = failure.getErrorMessage() or failure.type.__name__

        return d.addCallbacks(got, failed)

    try:
        task.react(ask)
    except SystemExit as e:
        if e.code not in (0, None):
            raise
    if "error" in result:
        print(f"iwsrv status: cannot ask {server.name} on {server.console}: {result['error']}", file=sys.stderr)
        return 1
    if options["json"]:
        print(json.dumps(result["status"], indent=2))
    else:
        print(format_status(result["status"]))
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
    if argv and argv[0] in ("-h", "--help", "help"):
        print(__doc__.strip())
        return 0
    run_node(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())
