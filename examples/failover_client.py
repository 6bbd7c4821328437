"""
A client that keeps one connection to whichever node of a failover pair is
live, and reconnects through a failover when that node goes.

    python examples/failover_client.py iam1:8080 iam2:8080 --timeout 2
    python examples/failover_client.py 'failover:iam1\\:8080:iam2\\:8080:timeout=2'

It holds its connection with Twisted's ClientService, which reconnects
(after 0.2 s, then backing off up to 5 s) whenever the connection is lost.
Each connection is made by a failover endpoint: the live node's address
first, then the backup's, each try at most --timeout seconds. Over the
connection it asks the channel (an HTTP server, such as the pair's
`twistd web` listener) `HEAD /` every --every seconds and prints the answer:

    connected to 127.0.0.1:8080
    127.0.0.1:8080 answered HTTP/1.1 200 OK
    lost the connection to 127.0.0.1:8080: Connection to the other side was lost in a non-clean fashion.
    could not connect to 127.0.0.1:8080 (Connection was refused by other side: 111: Connection refused.); trying 127.0.0.1:8090
    connected to 127.0.0.1:8090
    127.0.0.1:8090 answered HTTP/1.1 200 OK

Ctrl-C ends it.
"""

import argparse
import sys

from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer, task
from twisted.internet.endpoints import clientFromString
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import formatEvent, globalLogBeginner

from iwayfailover.client import failover_string


def say(text):
    print(text, flush=True)


class Asker(Protocol):
    """Asks HEAD / every `every` seconds on one keep-alive connection and prints each status line."""

    every = 1.0

    def connectionMade(self):
        peer = self.transport.getPeer()
        self.name = f"{peer.host}:{peer.port}"
        self.buffer = b""
        say(f"connected to {self.name}")
        self.asking = task.LoopingCall(self.ask)
        self.asking.start(self.every)

    def ask(self):
        self.transport.write(b"HEAD / HTTP/1.1\r\nHost: failover-client\r\n\r\n")

    def dataReceived(self, data):
        self.buffer += data
        while b"\r\n\r\n" in self.buffer:
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            status = head.split(b"\r\n", 1)[0].decode("latin-1")
            say(f"{self.name} answered {status}")

    def connectionLost(self, reason):
        if self.asking.running:
            self.asking.stop()
        say(f"lost the connection to {self.name}: {reason.getErrorMessage()}")


def show_failover(event):
    """Print what the failover endpoint logs (each address it gives up on); nothing else."""
    if event.get("log_namespace") == "iwayfailover.client":
        say(formatEvent(event))


def main(reactor, argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("addresses", nargs="+", help="host:port of each node, the usual live first; or one failover: string")
    parser.add_argument("--timeout", type=float, default=2.0, help="seconds each try may take (default 2)")
    parser.add_argument("--sticky", action="store_true", help="start each reconnect at the address that last worked")
    parser.add_argument("--every", type=float, default=1.0, help="seconds between requests (default 1)")
    options = parser.parse_args(argv)
    if len(options.addresses) == 1 and options.addresses[0].startswith("failover:"):
        description = options.addresses[0]
    else:
        description = failover_string(options.addresses, timeout=options.timeout, sticky=options.sticky)
    globalLogBeginner.beginLoggingTo([show_failover], redirectStandardIO=False)
    endpoint = clientFromString(reactor, description)
    say(f"connecting through {endpoint!r}")
    Asker.every = options.every
    service = ClientService(
        endpoint, Factory.forProtocol(Asker), retryPolicy=backoffPolicy(initialDelay=0.2, maxDelay=5.0, factor=2.0)
    )
    service.startService()
    reactor.addSystemEventTrigger("before", "shutdown", service.stopService)
    return defer.Deferred()  # run until Ctrl-C or SIGTERM


if __name__ == "__main__":
    task.react(main, (sys.argv[1:],))
