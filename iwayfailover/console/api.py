"""C{GET /api/status}: how the node stands, as JSON (CONTRACT section 4)."""

import json

from twisted.web.resource import Resource


class StatusResource(Resource):
    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_GET(self, request):
        request.setHeader(b"content-type", b"application/json")
        request.setHeader(b"cache-control", b"no-store")
        return json.dumps(self._node.status(), indent=2).encode("utf-8") + b"\n"
