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

import collections
import dataclasses
import select
import socket
import threading
import time
from typing import Callable, Dict, Optional, Tuple

from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from iwayfailover import steady, wire
from iwayfailover.pulse import MAX_PULSE, PulseBook, PulseDuplicate, PulseError, PulseKeys

MIN_PERIOD = 0.005
"""The shortest time between two pulses, in seconds."""
PULSES_PER_THRESHOLD = 12
"""Pulses sent within one threshold of the backup (at least; more where the heartbeat interval is shorter)."""


PULSE_SEQ = 1 << 63
"""The bit that marks a heartbeat number as the pulse thread's own: the answer echoes it, and the thread knows when it sent it."""
THREAD_STACK = 256 * 1024
"""The pulse thread's stack, in bytes (a thread's default is 8 MiB)."""
SENT_KEPT = 1024
UNANSWERED_AFTER = 10.0
"""Seconds of pulses without an answer before the live node says so."""
UNANSWERED_PULSES = 20
"""Pulses sent in that time, at least, for their silence to mean something."""
INBOX_KEPT = 1024
"""Answers and refusals the thread keeps for the reactor, at most (the newest)."""
READ_PER_TURN = 64
"""Datagrams the thread reads at one turn, at most."""
"""Pulses whose send time the thread remembers, to time the answers."""


def open_pulse(book: PulseBook, data: bytes):
    """
    The session keys and the frame of pulse C{data}, checked against C{book}.

    @raise PulseError: not a pulse the book takes (too long, a stranger's, forged, replayed; a
        L{PulseDuplicate} for a copy or a late one).
    @raise wire.FrameError: a pulse whose frame is not a frame.
    """
    keys, body = book.open(data)
    return keys, wire.decode(body)


def _show(target) -> str:
    if target is None:
        return "the backup"
    host, port = target
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def stamp_bound(peer_threshold: float) -> float:
    """
    How long after the reactor's last turn the pulse thread still pulses: half
    the backup's threshold. A reactor busy for longer is not alive: the pulses
    stop, and the backup hears the silence at most this much later than it
    would have without the thread (well within a threshold of the last turn
    plus one threshold).
    """
    return peer_threshold / 2


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
        self.duplicates = 0


class _ThreadOrigin:
    """Where an answer pulse came from, as the node sees it on the reactor: answers to it are not sent (an answer is not answered)."""

    connected = True

    def __init__(self, keys: PulseKeys, address, refused: Callable[[object, str], None]):
        self.keys = keys
        self.address = address
        self._refused = refused
        self.refused = False

    def send(self, frame: wire.Frame) -> None:
        pass

    def refuse(self, why: str) -> None:
        self.refused = True
        self._refused(self.address, why)


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
            keys, frame = open_pulse(self._book, data)
        except PulseDuplicate:
            self.counts.duplicates += 1  # the copy sent to the other address: taken already
            return
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
        self.second: Optional[str] = None  # this server's second_address

    def add(self, keys: PulseKeys) -> None:
        self.book.add(keys)

    def port_opened(self, tcp_port) -> None:
        """
        The heartbeat port listens at a new address: listen for pulses at the
        same one, and on the same number at this server's second address (if any).
        """
        address = tcp_port.getHost()
        host, number = getattr(address, "host", None), getattr(address, "port", None)
        if number is None:
            return  # not an IP port (a Unix socket): no pulses
        self._listen(host, number)
        if self.second is not None and host not in ("0.0.0.0", "::"):  # a wildcard port covers it already
            self._listen(self.second, number)

    def _listen(self, host, number) -> None:
        if (host, number) in self._ports:
            return
        try:
            # One protocol per UDP port: Twisted ties a protocol to one transport.
            protocol = _PulseProtocol(self.book, self._on_frame, self._on_refused, self.counts)
            self._ports[host, number] = self._reactor.listenUDP(number, protocol, interface=host)
        except Exception as e:  # CannotListenError, or anything else: pulses are a help, not a need
            what = ("is second_address an address of this host? pulses still come to its heartbeat port's address,"
                    " and heartbeats over TCP" if host == self.second else "heartbeats still come over TCP")
            self.log.warn("cannot listen for pulses on udp {host}:{port}: {why}; {what}", host=host, port=number,
                          why=e, what=what)
            return
        handle = getattr(self._ports[host, number], "getHandle", None)
        if handle is not None and isinstance(handle(), socket.socket):
            steady.mark_heartbeat_socket(handle())  # the answers: network control traffic
        self.log.info("listening for pulses on udp {host}:{port}", host=host, port=number)

    def port_closed(self, tcp_port) -> None:
        address = tcp_port.getHost()
        number = getattr(address, "port", None)
        port = self._ports.pop((getattr(address, "host", None), number), None)
        if port is not None:
            port.stopListening()
        if self.second is not None and not any(n == number and h != self.second for h, n in self._ports):
            port = self._ports.pop((self.second, number), None)  # no heartbeat port of that number is left
            if port is not None:
                port.stopListening()

    def stop(self) -> None:
        for port in self._ports.values():
            port.stopListening()
        self._ports.clear()

class PulseWork:
    """
    What the pulse thread does, without the thread or the clock: L{turn}
    sends a pulse when one is due, L{received} takes an answer. Shared with
    the reactor (under C{lock}): the keys and target, the frame to pulse
    (C{template}, refreshed with the reactor's stamp), and whether to pulse.

    A pulse carries a heartbeat number of its own (L{PULSE_SEQ} set), which
    the backup's answer echoes: the send time and the answer's arrival, both
    taken here, go to the node with the answer (L{iwayfailover.core.events.Heard.acked}),
    so that a reactor that was busy meanwhile still knows its backup heard it.
    """

    def __init__(self, sock, now, counts: Counts):
        self.sock = sock
        self.now = now
        self.counts = counts
        self.lock = threading.Lock()
        self.book = PulseBook()  # answers: the sessions of this node's connections
        self.keys: Optional[PulseKeys] = None
        self.target = None
        self.second = None  # (host, port): the backup's second address, the same port number; None: none
        self.template: Optional[bytes] = None  # the encoded frame as of the reactor's last stamp; None: send nothing
        self.beat = 0  # the heartbeat number the template repeats
        # What the thread read, for the reactor: ("answer", ...) or ("refused", ...); bounded, so that a
        # flood while the reactor is stuck costs no memory (a lost answer only makes silence look longer).
        self.inbox = collections.deque(maxlen=INBOX_KEPT)
        self.stamp = 0.0
        self.bound = 0.0
        self.period = 1.0
        self.pulsing = False
        self.due = 0.0
        self.number = 0
        self.sent_at: Dict[int, Tuple[float, int]] = {}  # pulse number -> (send time, heartbeat number it repeats)
        self.sent = 0

    def turn(self) -> float:
        """
        Read the answers waiting on the socket, then pulse if one is due and
        the reactor turned recently; return when the next pulse is due. (An
        answer is timed when read, at the turn after it came: at most a
        period late, which only makes the backup's silence look longer.)
        """
        self.read_answers()
        now = self.now()
        with self.lock:
            if not self.pulsing:
                return now + 3600.0
            if now < self.due:
                return self.due
            self.due = max(self.due + self.period, now)
            template, keys, target = self.template, self.keys, self.target
            if template is None or keys is None or target is None or now - self.stamp > self.bound:
                return self.due  # not live, no session yet, or the reactor has not turned for too long
            self.number += 1
            number = self.number
            self.sent_at[number] = (now, self.beat)
            self.sent_at.pop(number - SENT_KEPT, None)
            datagram = keys.seal(wire.with_seq(template, PULSE_SEQ | number))
            for address in (target, self.second):
                if address is None:
                    continue
                try:
                    self.sock.sendto(datagram, address)
                except OSError:
                    pass  # not sent now (no route, a full buffer): as good as lost
            self.sent += 1
            return self.due

    def read_answers(self) -> None:
        """The datagrams waiting on the socket, up to L{READ_PER_TURN} (it does not block: a flood cannot hold up a pulse)."""
        for _ in range(READ_PER_TURN):
            try:
                data, address = self.sock.recvfrom(MAX_PULSE + 1)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return  # an ICMP error reported on the socket (the backup's port closed): nothing to read
            self.received(data, address)

    def received(self, data: bytes, address) -> None:
        """An answer pulse (or anything else) read by the thread: checked, timed, and queued for the reactor."""
        now = self.now()
        try:
            with self.lock:
                keys, frame = open_pulse(self.book, data)
        except PulseDuplicate:
            self.counts.duplicates += 1
            return
        except (PulseError, wire.FrameError) as e:
            self.counts.rejected += 1
            self.inbox.append(("refused", address[0], f"pulse: {e}"))
            return
        acked = None
        if frame.seq & PULSE_SEQ:
            with self.lock:
                sent = self.sent_at.get(frame.seq & ~PULSE_SEQ)
            if sent is not None:
                acked = (sent[0], now)
                frame = dataclasses.replace(frame, seq=sent[1])
        self.inbox.append(("answer", keys, frame, address, acked))


class Pulser:
    """
    The live side: while the node is live, every L{pulse_period} seconds a
    heartbeat frame as a pulse to the backup's heartbeat port address (the
    address the heartbeat connection reached), sealed with the keys of the
    newest connection (kept after it drops: the backup keeps them too); the
    backup's answer pulses come back to C{on_frame(origin, frame, acked)}.

    The pulses are sent, and the answers read and timed, by a thread of its
    own (L{PulseWork}), so that a reactor turn taken by something else (a
    listener's request, a slow callback) does not delay them; it still needs
    the interpreter lock, which a long step in C on the reactor's thread
    (a collection, a page fault) holds: docs/design.md. The thread pulses
    while the reactor's stamp is younger than
    L{stamp_bound}. The node refreshes the stamp (L{tick}) from its stall
    watch, at least four times per bound; a reactor stuck for longer is not
    alive, and its pulses stop. What the thread read waits in its queue
    until the reactor takes it: at each tick, and before anything else is
    told to the decision core (L{drain}), so that a late timer's stall check
    already knows which pulses were answered meanwhile.

    @param frame: makes the frame to send now (the node's role and epoch as
        they are now, the heartbeat's latest number), or None when this node
        must not send one.
    """

    log = Logger()

    def __init__(self, reactor, frame: Callable[[], Optional[wire.Frame]], on_frame, on_refused,
                 peer_threshold: Callable[[], float], now=time.monotonic, sockets=None,
                 second_address: Callable[[], Optional[str]] = lambda: None):
        """
        @param sockets: None for the real thing (a UDP socket and a thread);
            for unit tests, a stand-in for C{socket.socket}: then the pulses
            go from the reactor's timers, on the reactor's clock C{now}.
        @param second_address: the backup's second address (its
            C{second_address}), where every pulse goes as well, or None.
        """
        self._second_address = second_address
        self._reactor = reactor
        self._frame = frame
        self._on_frame = on_frame
        self._on_refused = on_refused
        self._peer_threshold = peer_threshold
        self._now = now
        self._threaded = sockets is None
        self._sockets = socket.socket if sockets is None else sockets
        self._turn_call = None
        self._started = False
        self._draining = False
        self._window = None  # (work, since, pulses sent then, answers taken then): the unanswered check
        self.unanswered = False  # pulses have gone unanswered for UNANSWERED_AFTER seconds (said once)
        self.realtime = False  # the thread under SCHED_FIFO (realtime = true; checked at start: iwayfailover.tap)
        self.counts = Counts()
        self.work: Optional[PulseWork] = None
        self._family = None
        self._pending = None  # (keys, target) of the newest connection, until the backup answers on it
        self._thread: Optional[threading.Thread] = None
        self._waker = None
        self.period: Optional[Callable[[], float]] = None

    @property
    def sent(self) -> int:
        return self.work.sent if self.work is not None else 0

    @property
    def pulsing(self) -> bool:
        """Started (the node is live with pulses on): the stamp must be kept fresh."""
        return self._started and self.work is not None

    def session(self, keys: PulseKeys, target) -> None:
        """
        A new heartbeat connection to the backup, at C{target} (host, port):
        its keys are held for answers at once, and pulsed on once the backup
        is known to hold them too (L{confirm}); until then the pulses go on
        with the keys before, which the backup still holds. (Switching at
        once, a lossy link that delays the new connection's first heartbeat
        had every pulse refused meanwhile: bench/false_takeover.py --profile loss.)
        """
        work = self._open_socket(target)
        if work is None:
            return
        with work.lock:
            work.book.add(keys)
            self._pending = (keys, target)
            first = work.keys is None
        if first:
            self.confirm(keys)  # nothing to pulse on before: try these

    def confirm(self, keys: PulseKeys) -> None:
        """The backup answered on the connection of C{keys}: it holds them; pulse on them from now on."""
        work = self.work
        if work is not None and self._pending is not None and self._pending[0] is keys:
            target = self._pending[1]
            second = self._second_address()
            if second is not None and (":" in second) != (":" in target[0]):
                self.log.warn("the backup's second address {second} is not of the family of {host}, where its"
                              " heartbeat connection reached it: no pulses go there", second=second, host=target[0])
                second = None
            with work.lock:
                work.keys, work.target = self._pending
                work.second = None if second is None or second == target[0] else (second, target[1])
            self._pending = None

    def _open_socket(self, target) -> Optional[PulseWork]:
        family = socket.AF_INET6 if ":" in target[0] else socket.AF_INET  # the backup's family: IPv6 or IPv4
        if self.work is not None and self._family != family:
            started = self._started
            self.close()  # the backup moved to the other family
            self._started = started
        if self.work is None:
            try:
                sock = self._sockets(family, socket.SOCK_DGRAM)
                sock.bind(("::" if family == socket.AF_INET6 else "0.0.0.0", 0))
                sock.setblocking(False)  # the thread reads what waits, and never waits on it
            except OSError as e:
                self.log.warn("cannot open a UDP socket for pulses: {why}; heartbeats still go over TCP", why=e)
                return None
            self._family = family
            if self._threaded:
                steady.mark_heartbeat_socket(sock)
            self.work = PulseWork(sock, self._now, self.counts)
            if self._started:
                self.start(self.period)  # started before any connection reached the backup
        return self.work

    def start(self, period: Callable[[], float]) -> None:
        """Pulse from now on, C{period()} seconds apart (asked again at each tick: the peer's threshold may change)."""
        self.period = period
        self._started = True
        work = self.work
        if work is None:
            return  # no connection has reached the backup yet: its session() starts the pulses
        self.tick()
        with work.lock:
            work.pulsing = True
            work.due = self._now()
        if not self._threaded:
            if self._turn_call is not None and self._turn_call.active():
                self._turn_call.cancel()
            self._turn_on_reactor()
            return
        if self._thread is None or not self._thread.is_alive():
            for end in self._waker or ():
                end.close()  # a thread that ended (it failed): its waker goes with it
            self._waker = socket.socketpair()
            self._thread = threading.Thread(target=self._run, args=(work, self._waker[1]),
                                            name="iwayfailover pulses", daemon=True)
            size = threading.stack_size(THREAD_STACK)  # small: it is locked in RAM with lock_memory = true
            try:
                self._thread.start()
            finally:
                threading.stack_size(size)
        self._wake()

    def _turn_on_reactor(self) -> None:
        """Without a thread (unit tests): the pulse thread's turns on the reactor's timers."""
        work = self.work
        if work is None or not work.pulsing:
            return
        self._turn_call = self._reactor.callLater(max(0.0, work.turn() - self._now()), self._turn_on_reactor)

    def stop(self) -> None:
        """Pulse no more (the node is not live); the thread stays, idle, for the next start."""
        self._started = False
        if self._turn_call is not None and self._turn_call.active():
            self._turn_call.cancel()
        self._turn_call = None
        work = self.work
        if work is not None:
            with work.lock:  # no pulse leaves after this returns
                work.pulsing = False
                work.template = None

    def close(self) -> None:
        """Stop pulsing, end the thread and let go of the socket."""
        self.stop()
        work, self.work = self.work, None
        thread, self._thread = self._thread, None
        waker, self._waker = self._waker, None
        if thread is not None:
            try:
                waker[0].send(b"x")
            except OSError:
                pass
            thread.join(5.0)
        if waker is not None:
            for end in waker:
                end.close()
        if work is not None:
            work.sock.close()

    def _wake(self) -> None:
        if self._waker is not None:
            try:
                self._waker[0].send(b"w")
            except OSError:
                pass

    def tick(self) -> None:
        """
        The reactor turned (the node's stall watch calls this): take what the
        thread read, and, while pulsing, refresh the stamp and the frame it pulses.
        """
        self.drain()
        work = self.work
        if work is None or not self._started or self.period is None:
            return
        period, bound = self.period(), stamp_bound(self._peer_threshold())
        template, beat = self._template()
        self._check_answered(work)
        with work.lock:
            work.stamp = self._now()
            work.template, work.beat = template, beat
            work.period = period
            work.bound = bound

    def _template(self):
        """The frame to pulse now, encoded, and the heartbeat number it repeats: (None, 0) when none may go."""
        try:
            frame = self._frame()
            return (None, 0) if frame is None else (wire.encode(frame), frame.seq)
        except Exception:
            self.log.failure("making the pulses' frame failed; no pulse until it works")
            return None, 0

    def _check_answered(self, work: PulseWork) -> None:
        """
        Every L{UNANSWERED_AFTER} seconds: were pulses sent, and none
        answered? Said once (a firewall dropping UDP, most often), and again
        when answers come back; counted in the status either way.
        """
        now = self._now()
        if self._window is None or work is not self._window[0]:
            self._window = (work, now, work.sent, self.counts.received)
            return
        _, since, sent, answered = self._window
        if now - since < UNANSWERED_AFTER:
            return
        self._window = (work, now, work.sent, self.counts.received)
        if self.counts.received > answered:
            if self.unanswered:
                self.unanswered = False
                self.log.info("pulses to {target} are answered again", target=_show(work.target))
        elif work.sent - sent >= UNANSWERED_PULSES and not self.unanswered:
            self.unanswered = True
            self.log.warn(
                "{count} pulses sent to {target} in {seconds:g}s, none answered: is UDP to port {port} open from this"
                " host to the backup, and back? (the backup listens for pulses on its heartbeat port's number);"
                " heartbeats still go over the TCP connection",
                count=work.sent - sent, target=_show(work.target), seconds=now - since,
                port=work.target[1] if work.target else "?",
            )

    def tick_interval(self) -> Optional[float]:
        """How often L{tick} must come while pulsing (four times per bound), or None when not pulsing."""
        return stamp_bound(self._peer_threshold()) / 4 if self.pulsing else None

    def waiting(self) -> bool:
        """Has the thread read something the reactor has not taken yet?"""
        return self.work is not None and bool(self.work.inbox)

    def drain(self) -> None:
        """On the reactor: every answer and refusal the thread has read, in order (a drain within a drain returns)."""
        work = self.work
        if work is None or self._draining:
            return
        self._draining = True
        try:
            inbox = work.inbox
            while inbox:
                item = inbox.popleft()
                if item[0] == "answer":
                    self._answered(*item[1:])
                else:
                    self._on_refused(*item[1:])
        finally:
            self._draining = False

    def refresh(self) -> None:
        """The node's role or epoch changed: the frame the thread pulses follows at once (None: it pulses no more)."""
        work = self.work
        if work is None or not self._started:
            return
        template, beat = self._template()
        with work.lock:
            work.template, work.beat = template, beat

    def _run(self, work: PulseWork, waker) -> None:
        """The pulse thread: read the answers and pulse when due, until closed."""
        if self.realtime:
            why = steady.enter_realtime()
            if why is not None:
                self._reactor.callFromThread(self.log.error, "the pulse thread is not real-time: {why}", why=why)
        try:
            while self.work is work:
                wait = max(0.0, work.turn() - self._now())
                readable, _, _ = select.select([waker], [], [], wait)
                if readable:
                    waker.recv(64)
        except Exception:
            if self.work is work:
                failure = Failure()  # taken here, where the exception is
                self._reactor.callFromThread(self.log.failure, "the pulse thread failed; heartbeats still go over TCP",
                                             failure)

    def _answered(self, keys, frame, address, acked) -> None:
        origin = _ThreadOrigin(keys, address, self._refused)
        try:
            self._on_frame(origin, frame, acked)
        except Exception:
            self.log.failure("handling an answer pulse from {address} failed", address=address[0])
            return
        if not origin.refused:
            self.counts.received += 1

    def _refused(self, address, why: str) -> None:
        self.counts.rejected += 1
        self._on_refused(address[0], f"pulse: {why}")
