"""
The node's JSON API: C{GET /api/status} (CONTRACT section 4),
C{POST /api/switchover} (a planned switchover) and
C{POST /api/restart-listener} (try a FAILED listener again). Each asks the
node only what L{iwayfailover.status.INodeControl} offers.
"""

import ipaddress
import json

from twisted.internet.address import UNIXAddress
from twisted.logger import Logger
from twisted.web.resource import Resource
from twisted.web.server import NOT_DONE_YET

from iwayfailover.config import NAME_ALLOWED, NAME_PATTERN
from iwayfailover.status import ListenerRestartRefused, SwitchoverRefused

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
        return _json(request, 200, self._node.status().to_json())


class GapsResource(Resource):
    """C{GET /api/gaps}: the heartbeat gaps of the last minutes, heard and sent (L{iwayfailover.gaps.GapHistory})."""

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_GET(self, request):
        cursors = {}
        for name in ("heard_since", "sent_since"):
            raw = request.args.get(name.encode())
            if raw:
                try:
                    cursors[name] = int(raw[0])
                except ValueError:
                    return _json(request, 400, {"error": f"{name} must be a whole number, the count of a side's gaps"})
        return _json(request, 200, self._node.status().heartbeats.gaps.to_json(**cursors))


class BadRequest(Exception):
    """A request's body or fields cannot be used; the message says why."""


def switchover_target(request):
    """
    The C{to} of a switchover request: a form field or query argument, or
    C{{"to": NAME}} in a JSON body (C{content-type: application/json}); None
    when not given.

    @raise BadRequest: a JSON body that is not an object, or a C{to} that is
        not a member's name.
    """
    to = None
    content_type = (request.getHeader(b"content-type") or b"").split(b";")[0].strip().lower()
    if content_type == b"application/json":
        request.content.seek(0)
        try:
            body = json.loads(request.content.read() or b"{}")
        except ValueError as e:
            raise BadRequest(f"the body is not JSON ({e})") from None
        if not isinstance(body, dict):
            raise BadRequest('the body is not a JSON object such as {"to": "beta"}')
        to = body.get("to")
    elif b"to" in request.args:
        to = request.args[b"to"][0].decode("utf-8", "replace").strip()
    if to is None or to == "":
        return None
    if not isinstance(to, str) or not NAME_PATTERN.match(to):
        raise BadRequest(f"to = {to!r} is not a server's name ({NAME_ALLOWED})")
    return to


class SwitchoverResource(Resource):
    """
    C{POST /api/switchover}: hand the live role to the backup (in a group,
    to the member named by an optional C{to}: a form field, or
    C{{"to": NAME}} as a JSON body). Answers 200
    with C{from}, C{to}, C{epoch} and C{gap_ms} once the backup confirms, 409
    when a switchover cannot be made now (with the reason), 400 for a C{to}
    that is no server's name. The console's
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
        if not from_this_host(request):
            return _json(request, 403, {"error": "a switchover may only be asked for from this host"})
        try:
            to = switchover_target(request)
        except BadRequest as e:
            return _json(request, 400, {"error": str(e)})
        finished = []
        request.notifyFinish().addBoth(finished.append)
        d = self._node.switchover() if to is None else self._node.switchover(to=to)

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


class RestartListenerResource(Resource):
    """
    C{POST /api/restart-listener} with C{listener=NAME} (in the query string
    or a form body): try one FAILED listener again (started on a live node,
    made WAITING on a backup). Answers 200 once that is done with the
    listener's status entry and its C{listener} name (its C{state} may be
    FAILED again, with the C{reason}); 409 when it cannot be restarted (no
    such listener, or it is not FAILED), with the reason; 400 without a
    name. Guarded like C{/api/switchover}: C{iwsrv restart-listener} (the
    console token) or a login session with its CSRF token, from this host.
    """

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self._node = node

    def render_POST(self, request):
        if not from_this_host(request):
            return _json(request, 403, {"error": "a listener may only be restarted through the API from this host"})
        name = (request.args.get(b"listener") or [b""])[0].decode("utf-8", "replace").strip()
        if not name:
            return _json(request, 400, {"error": "no listener named: give listener=NAME"})
        try:
            d = self._node.restart_listener(name)
        except ListenerRestartRefused as e:
            return _json(request, 409, {"error": str(e)})
        log.info("API: listener {listener} restart asked for from {client}", listener=name,
                 client=str(request.getClientAddress()))
        finished = []
        request.notifyFinish().addBoth(finished.append)

        def done(_):
            channel = self._node.status().listeners.get(name)
            entry = {"state": "gone"} if channel is None else channel.to_json()
            entry["listener"] = name
            return 200, entry

        def broken(failure):
            log.failure("restarting listener {listener} failed", failure, listener=name)
            return 500, {"error": failure.getErrorMessage() or failure.type.__name__}

        def respond(outcome):
            code, body = outcome
            if not finished:
                request.write(_json(request, code, body))
                request.finish()

        d.addCallback(done).addErrback(broken).addCallback(respond)
        return NOT_DONE_YET
