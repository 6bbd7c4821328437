"""
Pulses on the network (L{iwayfailover.pulse} is their codec): a live node
sends its heartbeat as sealed datagrams beside the heartbeat connection, to
the port number its backup's heartbeat port listens on, and the backup
answers each one the same way.

A pulse proves what a heartbeat frame on its connection proves, and
reaches the node the same way: L{PulseReceiver} and L{Pulser} hand each
frame to the node's handler as if a connection had carried it, with a
L{PulseOrigin} to answer on (by pulse) or to refuse (by ignoring it). The
decision core does not know which way a frame came.

Why: a heartbeat connection holds every frame behind a lost segment until
it is sent again (with timeouts that double), and is redialled after it
drops. A pulse stands alone, keeps its session's keys across a redial, and
is sent more often than the heartbeat (L{pulse_period}), so that on a lossy
link the backup still hears the live node within its threshold.
"""

from __future__ import annotations

from typing import Callable, Optional

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger

from iwayfailover import wire
from iwayfailover.pulse import MAX_PULSE, PulseBook, PulseError, PulseKeys

MIN_PERIOD = 0.005
"""The shortest time between two pulses, in seconds."""
PULSES_PER_THRESHOLD = 12
"""Pulses sent within one threshold of the backup (at least; more where the heartbeat interval is shorter)."""


def pulse_period(interval: float, peer_threshold: float) -> float:
    """
    Seconds between pulses: the heartbeat interval, or less so that at
    least L{PULSES_PER_THRESHOLD} fall in the backup's threshold. At 30%
    loss each way twelve in a row are all lost about once in two million
    tries (eight: once in 15,000, which a 10-minute run at 30% loss showed
    to be too often: bench/false_takeover.py --profile loss).
    """
    return max(MIN_PERIOD, min(interval, peer_threshold / PULSES_PER_THRESHOLD))


class PulseOrigin:
    """
    Where a pulse came from, standing in for a heartbeat connection: the
    node answers on it (L{send}: an answer pulse, sealed with the same
    session's keys, to the address the pulse came from) or refuses it
    (L{refuse}: the pulse is dropped and the refusal reported).
    """

    connected = True

    def __init__(self, port, keys: PulseKeys, address, refused: Callable[[object, str], None]):
        self.transport = port
        self.keys = keys
        self.address = address
        self._refused = refused
        self.refused = False

    def send(self, frame: wire.Frame) -> None:
        try:
            self.transport.write(self.keys.seal(wire.encode(frame)), self.address)
        except OSError:
            pass  # a datagram that cannot be sent now is as good as lost; the next one may go

    def refuse(self, why: str) -> None:
        self.refused = True
        self._refused(self.address, why)


class Counts:
    """Pulses accepted and refused, over every UDP port of one side."""

    def __init__(self):
        self.received = 0
        self.rejected = 0


class _PulseProtocol(DatagramProtocol):
    """Datagrams in on one UDP port: checked against the book, decoded, and handed on with their origin."""

    log = Logger()

    def __init__(self, book: PulseBook, on_frame, on_refused, counts: Counts):
        self._book = book
        self._on_frame = on_frame
        self._on_refused = on_refused
        self.counts = counts

    def datagramReceived(self, data, address):
        try:
            if len(data) > MAX_PULSE:
                raise PulseError(f"datagram of {len(data)} bytes is over the limit of {MAX_PULSE}")
            keys, body = self._book.open(data)
            frame = wire.decode(body)
        except (PulseError, wire.FrameError) as e:
            self._refuse(address, str(e))
            return
        origin = PulseOrigin(self.transport, keys, address, self._refuse)
        try:
            self._on_frame(origin, frame)
        except Exception:
            self.log.failure("handling a pulse from {address} failed", address=address[0])
            return
        if not origin.refused:
            self.counts.received += 1  # taken: one the node refused counts as rejected only

    def _refuse(self, address, why: str) -> None:
        self.counts.rejected += 1
        self._on_refused(address[0], f"pulse: {why}")


class PulseReceiver:
    """
    The backup side: UDP on every address the heartbeat port listens on
    (it follows the port's moves: L{port_opened}, L{port_closed}), pulses
    checked against the sessions of the heartbeat connections made to this
    node (L{add}), and each frame handed to C{on_frame(origin, frame)}.
    """

    log = Logger()

    def __init__(self, reactor, on_frame, on_refused):
        self._reactor = reactor
        self.book = PulseBook()
        self.counts = Counts()
        self._on_frame = on_frame
        self._on_refused = on_refused
        self._ports = {}  # (host, port) -> listening UDP port

    def add(self, keys: PulseKeys) -> None:
        self.book.add(keys)

    def port_opened(self, tcp_port) -> None:
        """The heartbeat port listens at a new address: listen for pulses at the same one."""
        address = tcp_port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        if number is None or (host, number) in self._ports:
            return  # not an IP port (a Unix socket): no pulses
        try:
            # One protocol per UDP port: Twisted ties a protocol to one transport.
            protocol = _PulseProtocol(self.book, self._on_frame, self._on_refused, self.counts)
            self._ports[host, number] = self._reactor.listenUDP(number, protocol, interface=host)
        except Exception as e:  # CannotListenError, or anything else: pulses are a help, not a need
            self.log.warn("cannot listen for pulses on udp {host}:{port}: {why}; heartbeats still come over TCP",
                          host=host, port=number, why=e)
            return
        self.log.info("listening for pulses on udp {host}:{port}", host=host, port=number)

    def port_closed(self, tcp_port) -> None:
        address = tcp_port.getHost()
        port = self._ports.pop((getattr(address, "host", None), getattr(address, "port", None)), None)
        if port is not None:
            port.stopListening()

    def stop(self) -> None:
        for port in self._ports.values():
            port.stopListening()
        self._ports.clear()

class Pulser:
    """
    The live side: while the node is live, every L{pulse_period} seconds a
    heartbeat frame as a pulse to the backup's heartbeat port address (the
    address the heartbeat connection reached), sealed with the keys of the
    newest connection (kept after it drops: the backup keeps them too); the
    backup's answer pulses come back to C{on_frame(origin, frame)}.

    @param frame: makes the frame to send now (the node's role and epoch as
        they are now, the heartbeat's latest number), or None when this node
        must not send one.
    """

    log = Logger()

    def __init__(self, reactor, frame: Callable[[], Optional[wire.Frame]], on_frame, on_refused):
        self._reactor = reactor
        self._frame = frame
        self.book = PulseBook()
        self.counts = Counts()
        self.protocol = _PulseProtocol(self.book, on_frame, on_refused, self.counts)
        self._port = None
        self._family = ""
        self._pending = None  # (keys, target) of the newest connection, until the backup answers on it
        self._keys: Optional[PulseKeys] = None
        self._target = None
        self._call = None
        self.period: Optional[Callable[[], float]] = None
        self.sent = 0

    def session(self, keys: PulseKeys, target) -> None:
        """
        A new heartbeat connection to the backup, at C{target} (host, port):
        its keys are held for answers at once, and pulsed on once the backup
        is known to hold them too (L{confirm}); until then the pulses go on
        with the keys before, which the backup still holds. (Switching at
        once, a lossy link that delays the new connection's first heartbeat
        had every pulse refused meanwhile: bench/false_takeover.py --profile loss.)
        """
        self.book.add(keys)
        self._pending = (keys, target)
        if self._keys is None:
            self.confirm(keys)  # nothing to pulse on before: try these
        self._open_port(target)

    def confirm(self, keys: PulseKeys) -> None:
        """The backup answered on the connection of C{keys}: it holds them; pulse on them from now on."""
        if self._pending is not None and self._pending[0] is keys:
            self._keys, self._target = self._pending
            self._pending = None

    def _open_port(self, target) -> None:
        family = "::" if ":" in target[0] else ""  # the backup's address family: IPv6 or IPv4
        if self._port is not None and self._family != family:
            self._port.stopListening()  # the backup moved to the other family
            self._port = None
        if self._port is None:
            try:
                self._port = self._reactor.listenUDP(0, self.protocol, interface=family)
                self._family = family
            except Exception as e:
                self.log.warn("cannot open a UDP port for pulses: {why}; heartbeats still go over TCP", why=e)

    def start(self, period: Callable[[], float]) -> None:
        """Pulse from now on, C{period()} seconds apart (asked again for each pulse: the peer's threshold may change)."""
        self.stop()
        self.period = period
        self._call = self._reactor.callLater(period(), self._pulse)

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def close(self) -> None:
        """Stop pulsing and let go of the UDP port."""
        self.stop()
        port, self._port = self._port, None
        if port is not None:
            port.stopListening()

    def _pulse(self) -> None:
        self._call = self._reactor.callLater(self.period(), self._pulse)
        self.send_now()

    def send_now(self) -> None:
        """A pulse now, if there is a session to seal it with and the node may send one. Never raises."""
        try:
            if self._keys is None or self._port is None:
                return
            frame = self._frame()
            if frame is None:
                return
            self._port.write(self._keys.seal(wire.encode(frame)), self._target)
            self.sent += 1
        except OSError:
            pass  # not sent now (no route, a full buffer): as good as lost
        except Exception:
            self.log.failure("sending a pulse failed")
