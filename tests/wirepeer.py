"""
The far end of an authenticated heartbeat connection, played by a test:
it answers the hello of a protocol under test, seals the frames the test
sends and opens the ones the protocol wrote to its StringTransport.

The frames it sends announce the priority and threshold the far end would
have with test_node's CONFIG (priority 0, threshold 2 s) unless a test says
otherwise: a node under test must take them from the frame, not from its
own copy of the configuration.
"""

import struct

from iwayfailover import auth, wire
from iwayfailover.config import parse_config

KEY = b"k" * 40
RING = auth.KeyRing(keys=(KEY,), source="/share/failover.key")
FAR_NONCE = bytes(range(16))
PRIORITY = 0
"""The priority the far end announces by default (the configuration's default)."""
THRESHOLD_MS = 2000
"""The threshold the far end announces by default, in milliseconds (test_node's CONFIG says 2 s)."""


def prefixed(body):
    """A body behind its 4-byte big-endian length prefix."""
    return struct.pack("!I", len(body)) + body


def strings(data):
    """The length-prefixed strings in C{data}, in order (a cut-off last one is left out)."""
    out = []
    while len(data) >= 4:
        (length,) = struct.unpack("!I", data[:4])
        if len(data) < 4 + length:
            break
        out.append(data[4:4 + length])
        data = data[4 + length:]
    return out


def keyed(text, path="/share/iway.ini", ring=RING):
    """A parsed configuration with the test key ring, as load_checked_config gives it."""
    import dataclasses

    return dataclasses.replace(parse_config(text, path), keys=ring)


def greet(protocol, transport, far_is_client, ring=RING, nonce=FAR_NONCE):
    """
    Complete the handshake of C{protocol} (just connected on C{transport})
    as its far end; the transport is cleared and remembers the far end's
    session (C{transport.far}).
    """
    [their_hello] = strings(transport.value())
    their_nonce = auth.parse_hello(their_hello)
    transport.far = auth.Session(ring, far_is_client, nonce, their_nonce)
    transport.clear()
    protocol.dataReceived(prefixed(auth.hello(nonce)))
    return transport.far


def sealed(protocol, frame):
    """C{frame} as the far end of C{protocol}'s connection sends it."""
    return prefixed(protocol.transport.far.seal(wire.encode(frame)))


def peer_frame(kind, name, role, epoch=0, seq=1, flags=0, priority=PRIORITY, threshold=THRESHOLD_MS):
    """A frame as the far end makes it, announcing C{priority} and C{threshold} (milliseconds)."""
    return wire.Frame(
        kind=kind, name=name, role=role, epoch=epoch, seq=seq, flags=flags, priority=priority, threshold=threshold,
    )


def frame_bytes(protocol, kind, name, role, epoch=0, seq=1, flags=0, priority=PRIORITY, threshold=THRESHOLD_MS):
    """A frame of the far end of C{protocol}'s connection, sealed and prefixed, ready for dataReceived."""
    return sealed(protocol, peer_frame(kind, name, role, epoch, seq, flags, priority, threshold))


def frames_in(transport):
    """Every frame the protocol has written to C{transport} since it was last cleared, checked and decoded."""
    session = transport.far
    frames = []
    for body in strings(transport.value()):
        # The test may read the same bytes twice: open each by its own number.
        session.received = int.from_bytes(body[:auth.NUMBER_SIZE], "big") - 1
        frames.append(wire.decode(session.open(body)))
    return frames


def outranked(node, name, epoch=99, host="10.9.9.1"):
    """
    Make C{node} hear, on its heartbeat port, a live peer C{name} whose
    epoch outranks it: a live node yields. Returns the connection's transport.
    """
    from twisted.internet.address import IPv4Address
    from twisted.internet.testing import StringTransport

    address = IPv4Address("TCP", host, 40000)
    protocol = node.heartbeat_factory.buildProtocol(address)
    transport = StringTransport(peerAddress=address)
    protocol.makeConnection(transport)
    greet(protocol, transport, far_is_client=True)
    protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, name, wire.Role.LIVE, epoch=epoch))
    return transport
