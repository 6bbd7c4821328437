"""
Which node served a web answer: with C{served_by = true} in a
C{[listener:NAME]} whose plugin serves a twisted.web C{Site} (twistd's
C{web} plugin, for one), every answer of that channel carries the header
C{X-Served-By: serv_a (live, epoch 3)}, read at the moment of the request,
so that a client, a load balancer's health check or the page itself (the
example site in conf/www fetches it) can tell which node of the pair
served it.

Only public parts of Twisted are used: a listener's service tree holds
L{StreamServerEndpointService}s whose C{factory} is the C{Site}, and the
site's C{resource} is replaced by a L{ServedBy} that sets the header, then
walks the original tree with L{getChildForRequest} as the site would.
"""

from __future__ import annotations

from typing import Callable

from twisted.application.internet import StreamServerEndpointService
from twisted.application.service import IService, IServiceCollection
from twisted.logger import Logger
from twisted.web.resource import Resource, getChildForRequest
from twisted.web.server import Site

from iwayfailover.config import ListenerSettings

HEADER = b"X-Served-By"

log = Logger()


class ServedBy(Resource):
    """
    A site's root: sets L{HEADER} to C{who()} on every request, then lets
    the wrapped root's tree answer it.
    """

    isLeaf = True  # it walks the wrapped tree itself, in render

    def __init__(self, wrapped: Resource, who: Callable[[], str]):
        super().__init__()
        self.wrapped = wrapped
        self._who = who

    def render(self, request):
        request.setHeader(HEADER, self._who().encode("utf-8", "replace"))
        return getChildForRequest(self.wrapped, request).render(request)


def sites(top: IService):
    """Every twisted.web L{Site} served by an endpoint service in the tree below C{top}."""
    pending = [top]
    while pending:
        current = pending.pop()
        if isinstance(current, StreamServerEndpointService) and isinstance(current.factory, Site):
            yield current.factory
        if IServiceCollection.providedBy(current):
            pending.extend(current)


def builder(build: Callable[[ListenerSettings], IService], who: Callable[[], str]):
    """
    A listener builder: C{build}, and for a listener with C{served_by = true}
    the header set on every site its service serves.
    """

    def build_served(spec: ListenerSettings) -> IService:
        service = build(spec)
        if getattr(spec, "served_by", False):
            found = list(sites(service))
            for site in found:
                if not isinstance(site.resource, ServedBy):
                    site.resource = ServedBy(site.resource, who)
            if not found:
                log.warn("listener {listener}: served_by = true, but its plugin serves no twisted.web site;"
                         " no X-Served-By header", listener=spec.name)
        return service

    return build_served
