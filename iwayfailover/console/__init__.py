"""
The node's console: the administration pages, the JSON API, and the guard
in front of both (see L{iwayfailover.console.access}). It sees a node only
through L{iwayfailover.status.INodeControl}.
"""

import time

from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from iwayfailover.console.access import GuardedRoot
from iwayfailover.console.api import GapsResource, RestartListenerResource, StatusResource, SwitchoverResource
from iwayfailover.console.metrics import MetricsResource
from iwayfailover.console.pages import Console, add_pages
from iwayfailover.status import INodeControl


class _MonotonicClock:
    seconds = staticmethod(time.monotonic)


def _login_thread(reactor):
    """
    A runner on the console's own thread (started at the first login,
    stopped at shutdown) for password hashes: a flood of logins must not
    take the reactor's shared pool, which the config poller needs.
    """
    from twisted.internet import threads
    from twisted.python.threadpool import ThreadPool

    pool = ThreadPool(0, 1, name="iwayfailover-console-logins")

    def run(f, *args):
        if not pool.started:
            pool.start()
            reactor.addSystemEventTrigger("during", "shutdown", pool.stop)
        return threads.deferToThreadPool(reactor, pool, f, *args)

    return run


def console_root(node, clock=None, run=None, events=None, api_token=None, reactor=None) -> Resource:
    """
    The resource tree served on a node's C{console} endpoint.

    @param node: the node, as an L{INodeControl}: all the console asks of it.
    @param clock: for session idle times and login limits; default:
        C{reactor}, or the monotonic clock without one.
    @param run: runs blocking work (file I/O, password hashes) off the
        reactor thread; default: C{reactor}'s thread pool for file I/O, and
        a thread of the console's own for password hashes (without a
        reactor that has a thread pool: at once, in the caller's thread).
    @param events: the node's L{iwayfailover.events.RecentEvents}, for the Log page.
    @param api_token: the console token that logs C{iwsrv switchover} and
        C{iwsrv restart-listener} in
        (see L{iwayfailover.console.access.write_token}); None: no token.
    @param reactor: the node's reactor.
    @raise TypeError: C{node} does not provide L{INodeControl}.
    """
    node = INodeControl(node)
    if clock is None:
        clock = reactor if reactor is not None else _MonotonicClock()
    hash_run = None
    if run is None:
        if reactor is not None and hasattr(reactor, "getThreadPool"):
            from twisted.internet import threads

            def run(f, *args):
                return threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *args)

            hash_run = _login_thread(reactor)
        else:
            from twisted.internet import defer

            def run(f, *args):
                return defer.maybeDeferred(f, *args)

    console = Console(node, clock, run, events, hash_run=hash_run)
    if hasattr(clock, "callLater"):
        console.watch_users(clock)
    root = GuardedRoot(console.sessions, api_token)
    root.console = console
    add_pages(root, console)
    api = Resource()
    root.putChild(b"api", api)
    api.putChild(b"status", StatusResource(node))
    api.putChild(b"gaps", GapsResource(node))
    api.putChild(b"switchover", SwitchoverResource(node))
    api.putChild(b"restart-listener", RestartListenerResource(node))
    # The guard decides who may read it (this host's clients, or a login).
    root.putChild(b"metrics", MetricsResource(node))
    return root


MAX_BODY = 64 * 1024
"""Bytes a request body to the console may have; a bigger one is answered 413, unread."""


class ConsoleRequest(Request):
    """A request whose body is kept up to L{MAX_BODY} bytes; past that it is dropped and answered 413."""

    too_large = False

    def gotLength(self, length):
        if length is not None and length > MAX_BODY:
            self.too_large = True
            length = 0
        super().gotLength(length)

    def handleContentChunk(self, data):
        if self.too_large:
            return
        if self.content.tell() + len(data) > MAX_BODY:  # chunked, or more than it said
            self.too_large = True
            self.content.seek(0)
            self.content.truncate()
            return
        super().handleContentChunk(data)

    def process(self):
        if not self.too_large:
            return super().process()
        from iwayfailover.console.access import security_headers

        self.site = self.channel.site
        security_headers(self)
        self.setResponseCode(413)
        self.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.setHeader(b"connection", b"close")
        self.write(f"refused: the request body is larger than {MAX_BODY // 1024} KiB\n".encode("ascii"))
        self.finish()


class ConsoleSite(Site):
    """
    The console's site. Status polls come every few seconds from monitoring;
    they are not access-logged (actions are logged by the node itself).
    Request bodies are capped at L{MAX_BODY} bytes.
    """

    noisy = False
    requestFactory = ConsoleRequest

    def log(self, request):
        pass
