"""The node's console: the JSON API now, the administration pages later."""

from twisted.web.resource import Resource

from iwayfailover.console.api import StatusResource, SwitchoverResource


def console_root(node) -> Resource:
    """The resource tree served on a node's C{console} endpoint."""
    root = Resource()
    api = Resource()
    root.putChild(b"api", api)
    api.putChild(b"status", StatusResource(node))
    api.putChild(b"switchover", SwitchoverResource(node))
    return root
