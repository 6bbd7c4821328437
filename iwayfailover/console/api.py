"""
The node's JSON API: C{GET /api/status} (CONTRACT section 4) and
C{POST /api/switchover} (a planned switchover).
"""

import ipaddress
import json

from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

log = Logger()


def _json(request, code, value):
    request.setResponseCode(code)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(value, indent=2).encode("utf-8") + b"\n"


def _ip(address):
    try:
        ip = ipaddress.ip_address(getattr(address, "host", "") or "")
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped  # 127.0.0.1 on a dual-stack port
    return ip


def from_this_host(request) -> bool:
    """
    Did the request come from this host: over loopback, a Unix socket, or
    from the very address the console is bound to (a console on
    C{tcp:8081:interface=192.0.2.2} sees C{iwsrv status} come from 192.0.2.2)?
    """
    address = request.getClientAddress()
    if isinstance(address, UNIXAddress):
        return True
    ip = _ip(address)
    if ip is None:
        return False
    if ip.is_loopback:
        return True
    try:
        own = _ip(request.getHost())
    except Exception:
        return False
    return own is not None and not own.is_unspecified and ip == own


class StatusResource(Resource):
    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_GET(self, request):
        return _json(request, 200, self._node.status())


class SwitchoverResource(Resource):
    """
    C{POST /api/switchover}: hand the live role to the backup. Answers 200
    with C{from}, C{to}, C{epoch} and C{gap_ms} once the backup confirms, 409
    when a switchover cannot be made now (with the reason). The console's
    guard lets through only C{iwsrv switchover} (the console token) or a
    login session with its CSRF token; of those, a client not on this host
    gets 403 all the same (a browser switches over with the Status page's
    form).
    """

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_POST(self, request):
        from iwayfailover.node import SwitchoverRefused

        if not from_this_host(request):
            return _json(request, 403, {"error": "a switchover may only be asked for from this host"})
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self._node.switchover()

        def done(result):
            body = {"from": result["from"], "to": result["to"], "epoch": result["epoch"], "gap_ms": round(result["gap"] * 1000, 3)}
            return 200, body

        def refused(failure):
            if failure.check(SwitchoverRefused):
                return 409, {"error": failure.getErrorMessage()}
            log.failure("switchover failed", failure)
            return 500, {"error": failure.getErrorMessage()}

        def respond(outcome):
            code, body = outcome
            if not finished:
                request.write(_json(request, code, body))
                request.finish()

        def broken(failure):  # the switchover's answer could not be read
            log.failure("switchover answer failed", failure)
            return 500, {"error": failure.getErrorMessage() or failure.type.__name__}

        d.addCallbacks(done, refused).addErrback(broken).addCallback(respond)
        return NOT_DONE_YET
