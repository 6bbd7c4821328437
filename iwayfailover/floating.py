"""
The floating IP: an address (C{virtual_ip}) on an interface (C{interface})
that only the live node holds, so that clients knowing one address reach
whichever node is live.

It behaves like a listener and shows as one in the status
(C{"vip:10.0.0.100/24"}): WAITING on a backup, ACTIVE on the live node,
FAILED with the reason when a command failed. Every change is made by
outside commands run through L{iwayfailover.commands.run}, never blocking
the reactor, each with a time limit:

  - going live: a duplicate address check (C{arping -D}, or C{ndisc6} for
    IPv6) until no other host answers for the address (the old live node may
    still be letting go of it), then C{ip addr add}, then an announcement so
    that neighbours update their caches at once: gratuitous ARP
    (C{arping -U}); for IPv6 the kernel's own unsolicited neighbour
    advertisement at the end of its duplicate address detection (the node
    sets C{net.ipv6.conf.IFACE.ndisc_notify = 1} for it, and waits for the
    address to stop being tentative before the listeners start).
  - yielding or stopping: C{ip addr del}.

A node killed with SIGKILL cannot remove its address, so while it holds the
address a small guardian process (C{sh}, blocked reading a pipe only the
node holds) waits for the node to end; when the pipe closes, whatever the
cause, it removes the address.

Operations are queued: an address being added is added before it is removed
again, and never both at once.
"""

from __future__ import annotations

import ipaddress
import os
import shlex
import time
from typing import Optional

from twisted.internet import defer, protocol
from twisted.internet.interfaces import IReactorProcess
from twisted.logger import Logger

from iwayfailover import commands
from iwayfailover.channel import ADDRESS_PREFIX, ACTIVE, FAILED, STARTING, STOPPED, STOPPING, WAITING, notify_failed

COMMAND_TIMEOUT = 5.0
"""Seconds an C{ip} command may take."""

DAD_WINDOW = 0.2
"""Seconds the duplicate address check waits for another host to answer for the address."""

DAD_LIMIT = 5.0
"""Seconds the new live node waits for another host to let go of the address before it takes it all the same."""

DAD_RETRY = 0.1

ANNOUNCE_COUNT = 3
"""Gratuitous ARP packets sent on going live."""

ANNOUNCE_INTERVAL = 1.0
"""Seconds between the end of one gratuitous ARP run and the next."""

NEEDS_PRIVILEGE = "needs root or CAP_NET_ADMIN"
_CAP_NET_ADMIN = 12

log = Logger()


def has_net_admin(status_path: str = "/proc/self/status") -> Optional[bool]:
    """Does this process hold CAP_NET_ADMIN (root has it)? None when it cannot tell."""
    try:
        with open(status_path) as f:
            for line in f:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) & (1 << _CAP_NET_ADMIN))
    except (OSError, ValueError, IndexError):
        return None
    return None


def _why(result: commands.Result) -> str:
    """A failed command, in one line, with the fix when the cause is a missing privilege."""
    text = result.last_line or result.describe()
    if result.error is not None:
        return result.describe()
    if "Operation not permitted" in result.output or "Permission denied" in result.output:
        return f"{text}: {NEEDS_PRIVILEGE}"
    if result.timed_out:
        return f"{result.describe()} ({COMMAND_TIMEOUT:g}s)"
    return f"{text} ({result.describe()})"


class _Guardian(protocol.ProcessProtocol):
    """The process that removes the address if the node ends without doing it."""

    def __init__(self):
        self.ended = defer.Deferred()

    def outReceived(self, data):
        pass

    errReceived = outReceived

    def processEnded(self, reason):
        self.ended.callback(None)


class FloatingAddress:
    """
    One floating address and its state, listener-like.

    @param address: C{"10.0.0.100/24"} or C{"2001:db8::100/64"}, or None
        when this node has no floating IP (every operation then does nothing).
    @param interface: the interface to put it on.
    @param run: L{commands.run}, or a stand-in.
    """

    on_failed = None
    """Called (with no argument) each time the address becomes FAILED."""

    proc_sys = "/proc/sys"

    def __init__(self, reactor, address: Optional[str] = None, interface: Optional[str] = None,
                 run=commands.run, wall=time.time, spawn_guardian=True):
        self._reactor = reactor
        self._run = run
        self._wall = wall
        self._spawn_guardian = spawn_guardian
        self.address: Optional[str] = None
        self.interface: Optional[str] = None
        self.state = WAITING
        self.since = wall()
        self.reason: Optional[str] = None
        self.warning: Optional[str] = None
        self._queue: defer.Deferred = defer.succeed(None)
        self._guardian = None
        self._wanted = False
        self._announcement = None
        self._announce_call = None
        self.configure(address, interface)

    # -- settings --

    @property
    def configured(self) -> bool:
        return self.address is not None

    @property
    def name(self) -> str:
        return f"{ADDRESS_PREFIX}{self.address}"

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.address).ip)

    @property
    def version(self) -> int:
        return ipaddress.ip_interface(self.address).version

    def configure(self, address: Optional[str], interface: Optional[str]) -> defer.Deferred:
        """
        Follow a (new) configuration. A changed address held now is removed
        and the new one added in its place.
        """
        if (address, interface) == (self.address, self.interface):
            return defer.succeed(None)
        wanted = self._wanted
        if wanted and self.configured:
            self.down(WAITING)
        settled = self._enqueue(lambda: self._set_settings(address, interface))
        if wanted and address is not None:
            return self.up()
        return settled

    def _set_settings(self, address, interface):
        old = self.name if self.configured else None
        self.address, self.interface = address, interface
        if address is not None:
            self.state, self.reason, self.since = WAITING, None, self._wall()
            log.info("floating IP {address} on {interface}{was}", address=address, interface=interface,
                     was=f" (was {old})" if old else "")
            if has_net_admin() is False:
                self.warning = (
                    f"this process has neither root nor CAP_NET_ADMIN: it cannot add {address} to {interface}"
                )
                log.warn("{problem}; run the node as root or give it CAP_NET_ADMIN", problem=self.warning)

    # -- the queue --

    def _enqueue(self, work) -> defer.Deferred:
        """Run C{work} once everything queued before it is done; the Deferred fires after it, never failing."""
        def step(_):
            d = defer.maybeDeferred(work)
            d.addErrback(lambda f: log.failure("floating IP: unexpected error", f))
            return d

        # addBoth: whatever became of the work before, this work runs.
        self._queue.addBoth(step)
        waiter = defer.Deferred()
        self._queue.addBoth(lambda result: (waiter.callback(None), None)[1])
        return waiter

    def _set(self, state, reason=None):
        previous, self.state, self.reason, self.since = self.state, state, reason, self._wall()
        if state == FAILED:
            log.error("{name} {previous} -> FAILED: {reason}", name=self.name, previous=previous, reason=reason)
            notify_failed(self)
        else:
            log.info("{name} {previous} -> {state}", name=self.name, previous=previous, state=state)

    # -- going live --

    def up(self) -> defer.Deferred:
        """Hold the address: check that nobody else does, add it, announce it. Fires when ACTIVE or FAILED."""
        self._wanted = True
        return self._enqueue(self._up)

    @defer.inlineCallbacks
    def _up(self):
        if not self.configured or not self._wanted:
            return
        self._set(STARTING)
        yield self._wait_until_free()
        if not self._wanted:
            return
        family = "-6" if self.version == 6 else "-4"
        if self.version == 6:
            yield self._ipv6_notify()
        argv = ["ip", family, "addr", "add", self.address, "dev", self.interface]
        result = yield self._run(self._reactor, argv, COMMAND_TIMEOUT, name="ip addr add", log_output=False)
        if not result.ok and "File exists" not in result.output:
            self._set(FAILED, f"ip addr add {self.address} dev {self.interface}: {_why(result)}")
            return
        if not result.ok:
            log.info("{address} was on {interface} already (left by an earlier run?)", address=self.address,
                     interface=self.interface)
        self._start_guardian()
        if self.version == 6:
            problem = yield self._ipv6_settled()
            if problem is not None:
                self._set(FAILED, problem)
                return
        self._set(ACTIVE)
        self._announce()

    @defer.inlineCallbacks
    def _wait_until_free(self):
        """Wait (at most DAD_LIMIT) until no other host answers for the address."""
        started = self._reactor.seconds()
        while True:
            answered = yield self._answered()
            if not answered:
                return
            waited = self._reactor.seconds() - started
            if waited >= DAD_LIMIT:
                log.warn(
                    "another host still answers for {address} ({who}) after {waited:.1f}s: taking the address all the same",
                    address=self.ip, who=answered, waited=waited,
                )
                return
            if waited == 0:
                log.info("another host answers for {address} ({who}): waiting for it to let go", address=self.ip, who=answered)
            pause = defer.Deferred()
            self._reactor.callLater(DAD_RETRY, pause.callback, None)
            yield pause

    @defer.inlineCallbacks
    def _answered(self):
        """Who else answers for the address (a text), or None; None too when it cannot be checked."""
        if self.version == 4:
            argv = ["arping", "-D", "-c", "1", "-w", "1", "-I", self.interface, self.ip]
        else:
            argv = ["ndisc6", "-1", "-q", "-r", "1", "-w", str(int(DAD_WINDOW * 1000)), self.ip, self.interface]
        result = yield self._run(self._reactor, argv, DAD_WINDOW + (0 if self.version == 4 else 1), name=argv[0],
                                 log_output=False)
        if result.error is not None:
            self._warn_once(f"duplicate address check skipped: {result.describe()} (install {_PACKAGE[argv[0]]})")
            return None
        if self.version == 4:
            # Killed at the end of its window, or exit 0: no answer. Exit 1 with a reply: someone holds it.
            if "Unicast reply from" in result.output or "Received 1 response" in result.output:
                return next((l for l in result.output.splitlines() if "reply from" in l), "a reply").strip()
            if not result.ok and not result.timed_out:
                self._warn_once(f"duplicate address check failed: {_why(result)}")
            return None
        return result.output.strip() or "a reply" if result.ok else None

    @defer.inlineCallbacks
    def _ipv6_notify(self):
        """
        IPv6: the kernel itself sends the unsolicited neighbour advertisement
        once its duplicate address detection of a new address is over, if
        net.ipv6.conf.IFACE.ndisc_notify is 1: set it when it is not.
        """
        key = f"net.ipv6.conf.{self.interface}.ndisc_notify"
        try:
            with open(os.path.join(self.proc_sys, "net/ipv6/conf", self.interface, "ndisc_notify")) as f:
                if f.read().strip() != "0":
                    return
        except OSError:
            return  # no such interface (yet): ip addr add will say so
        result = yield self._run(self._reactor, ["sysctl", "-w", f"{key}=1"], COMMAND_TIMEOUT, name="sysctl", log_output=False)
        if result.ok:
            log.info("set {key} = 1, so that the kernel announces {address} (unsolicited neighbour advertisement)",
                     key=key, address=self.ip)
        else:
            self._warn_once(f"could not set {key} = 1 ({_why(result)}): neighbours learn of {self.ip} only when their caches expire")

    @defer.inlineCallbacks
    def _ipv6_settled(self):
        """
        Wait (COMMAND_TIMEOUT at most) for the kernel's duplicate address
        detection: a tentative address cannot be bound yet. None once it is
        usable (and announced), else why not.
        """
        started = self._reactor.seconds()
        argv = ["ip", "-6", "-o", "addr", "show", "dev", self.interface, "to", f"{self.ip}/128"]
        while True:
            result = yield self._run(self._reactor, argv, COMMAND_TIMEOUT, name="ip addr show", log_output=False)
            if not result.ok:
                return f"ip addr show dev {self.interface}: {_why(result)}"
            if "dadfailed" in result.output:
                return f"the kernel found {self.ip} in use by another host on {self.interface} (duplicate address detection failed)"
            if "tentative" not in result.output:
                log.info("announced {address} on {interface} (the kernel's unsolicited neighbour advertisement)",
                         address=self.ip, interface=self.interface)
                return None
            if self._reactor.seconds() - started >= COMMAND_TIMEOUT:
                return f"{self.ip} still tentative after {COMMAND_TIMEOUT:g}s (duplicate address detection)"
            pause = defer.Deferred()
            self._reactor.callLater(DAD_RETRY, pause.callback, None)
            yield pause

    def _announce(self):
        """Tell the neighbours that the address is here now; not waited for, a failure is only a warning."""
        if self.version == 6:
            return  # the kernel did, at the end of its duplicate address detection (see _ipv6_notify)
        self._announcement = object()
        self._send_announcement(self._announcement, 1)

    def _send_announcement(self, token, number):
        """
        One gratuitous ARP packet per arping run, ANNOUNCE_INTERVAL apart, for
        as long as the address is held: a node killed outright stops
        announcing at once, where one long arping run would go on claiming
        the address for the node that has died.
        """
        self._announce_call = None
        if token is not self._announcement or self.state != ACTIVE:
            return
        argv = ["arping", "-U", "-c", "1", "-I", self.interface, self.ip]
        d = self._run(self._reactor, argv, 1 + COMMAND_TIMEOUT, name="arping", log_output=False)

        def done(result):
            if result.ok:
                if number == 1:
                    log.info("announced {address} on {interface} (gratuitous ARP)", address=self.ip, interface=self.interface)
            elif result.error is not None:
                self._warn_once(f"cannot announce {self.ip}: {result.describe()} (install iputils-arping)")
                return
            else:
                self._warn_once(f"announcing {self.ip} failed: {_why(result)}")
            if number < ANNOUNCE_COUNT and token is self._announcement:
                self._announce_call = self._reactor.callLater(ANNOUNCE_INTERVAL, self._send_announcement, token, number + 1)

        d.addCallback(done)

    def announce_again(self) -> None:
        """Announce the address anew (another node that claimed it is letting go); nothing unless ACTIVE (and IPv4)."""
        if self.configured and self.state == ACTIVE and self.version == 4:
            self._stop_announcing()
            self._announce()

    def _stop_announcing(self):
        self._announcement = None
        if self._announce_call is not None and self._announce_call.active():
            self._announce_call.cancel()
        self._announce_call = None

    def _warn_once(self, text):
        if self.warning != text:
            self.warning = text
            log.warn("{name}: {problem}", name=self.name, problem=text)

    # -- the guardian --

    def _start_guardian(self):
        if not self._spawn_guardian or self._guardian is not None or not IReactorProcess.providedBy(self._reactor):
            return
        ip = commands.which("ip", os.environ.get("PATH", os.defpath) + os.pathsep + commands.SYSTEM_PATH) or "ip"
        delete = shlex.join([ip, "-6" if self.version == 6 else "-4", "addr", "del", self.address, "dev", self.interface])
        # Signals that end the node (Ctrl-C on its terminal) must not end the
        # guardian before the node has removed the address itself.
        script = f"trap '' INT TERM HUP; cat >/dev/null; exec {delete} >/dev/null 2>&1"
        guardian = _Guardian()
        # A session of its own, where setsid(1) is found: a kill of the node's
        # whole process group (kill -9 -PGID) does not take the guardian along.
        setsid = commands.which("setsid", os.environ.get("PATH", os.defpath) + os.pathsep + commands.SYSTEM_PATH)
        argv = ([setsid] if setsid else []) + ["/bin/sh", "-c", script]
        try:
            self._reactor.spawnProcess(guardian, argv[0], argv, env=dict(os.environ))
        except Exception as e:
            log.warn("no guardian for {address}: {why}; a node killed outright would leave it behind",
                     address=self.address, why=e)
            return
        self._guardian = guardian

    def _stop_guardian(self) -> defer.Deferred:
        guardian, self._guardian = self._guardian, None
        if guardian is None or guardian.ended.called:
            return defer.succeed(None)
        ended = guardian.ended
        try:
            guardian.transport.closeStdin()
        except Exception:
            pass
        timer = self._reactor.callLater(COMMAND_TIMEOUT, self._kill, guardian)
        ended.addCallback(lambda _: timer.active() and timer.cancel())
        return ended

    @staticmethod
    def _kill(guardian):
        try:
            guardian.transport.signalProcess("KILL")
        except Exception:
            pass

    # -- yielding, stopping --

    def down(self, final: str = WAITING) -> defer.Deferred:
        """Let go of the address (an absent one is fine). Fires when C{final} or FAILED."""
        self._wanted = False
        return self._enqueue(lambda: self._down(final))

    @defer.inlineCallbacks
    def _down(self, final):
        if not self.configured:
            return
        held = self.state not in (WAITING, STOPPED, FAILED) or self._guardian is not None
        self._stop_announcing()
        if held:
            self._set(STOPPING)
        yield self._stop_guardian()
        family = "-6" if self.version == 6 else "-4"
        argv = ["ip", family, "addr", "del", self.address, "dev", self.interface]
        result = yield self._run(self._reactor, argv, COMMAND_TIMEOUT, name="ip addr del", log_output=False)
        absent = any(text in result.output.lower() for text in _ABSENT)
        if result.ok and not held:
            log.warn("removed {address} from {interface}, left there by an earlier run", address=self.address,
                     interface=self.interface)
        if result.ok or absent:
            if self.state != final and not (final == WAITING and self.state == FAILED):
                self._set(final)
        elif "Cannot find device" in result.output and not held:
            # Nothing to remove from an interface that is not there; going live will say so.
            if self.state != final:
                self._set(final)
        else:
            self._set(FAILED, f"ip addr del {self.address} dev {self.interface}: {_why(result)}")

    # -- status --

    def status(self) -> dict:
        result = {"state": self.state, "since": self.since}
        if self.reason:
            result["reason"] = self.reason
        if self.warning:
            result["warning"] = self.warning
        return result


# What ip says about an address that is not there (older and newer kernels).
_ABSENT = ("cannot assign requested address", "address not found")

_PACKAGE = {"arping": "iputils-arping", "ndisc6": "ndisc6"}
