"""The node's console: the JSON API now, the administration pages later."""

from twisted.web.resource import Resource
from twisted.web.server import Site

from iwayfailover.console.api import StatusResource, SwitchoverResource
from iwayfailover.console.metrics import MetricsResource


def console_root(node) -> Resource:
    """The resource tree served on a node's C{console} endpoint."""
    root = Resource()
    api = Resource()
    root.putChild(b"api", api)
    api.putChild(b"status", StatusResource(node))
    api.putChild(b"switchover", SwitchoverResource(node))
    root.putChild(b"metrics", MetricsResource(node))
    return root


class ConsoleSite(Site):
    """
    The console's site. Status polls come every few seconds from monitoring;
    they are not access-logged (actions are logged by the node itself).
    """

    noisy = False

    def log(self, request):
        pass
