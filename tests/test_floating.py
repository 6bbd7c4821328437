"""
The floating IP (issue 7, part 1), with its commands replaced by a recorder:
which commands run, in which order against the listeners, and what the
status shows when they fail. The real commands run in the namespace test
(test_namespace.py).
"""

import os

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.trial import unittest

from harness import temporary_directory
from iwayfailover import commands, floating
from iwayfailover.commands import Result
from iwayfailover.floating import FloatingAddress, has_net_admin
from iwayfailover.listeners import ACTIVE, FAILED, STOPPED, WAITING
from iwayfailover.core.events import BACKUP, LIVE
from iwayfailover import wire
from test_node import NodeTestCase
from wirepeer import frame_bytes, frames_in, outranked

FREE = "free"  # the duplicate address check hears nobody


class FakeCommands:
    """
    Stands in for L{commands.run}: notes each command line (and its
    environment), answers from C{self.answers} (a function of the argv, or a
    ready result), with defaults: ip succeeds, nobody answers arping -D.
    """

    def __init__(self, events=None):
        self.calls = []
        self.events = events if events is not None else []
        self.answers = {}
        self.held = {}

    def key(self, argv):
        if argv[0] == "ip":
            return f"ip addr {argv[argv.index('addr') + 1]}"
        if argv[0] == "arping":
            return "arping " + ("-D" if "-D" in argv else "-U")
        return argv[0]

    def __call__(self, reactor, argv, timeout, env=None, name=None, stdin=None, log_output=True, backstop=False):
        argv = tuple(argv)
        key = self.key(argv)
        self.calls.append((argv, env, timeout))
        self.events.append(key)
        if key in self.held:
            return self.held.pop(key)
        answer = self.answers.get(key)
        if callable(answer):
            answer = answer(argv)
        if answer is None:
            answer = Result(argv=argv, timed_out=True) if key == "arping -D" else Result(argv=argv, code=0)
        return defer.succeed(answer)

    def argvs(self, key=None):
        return [argv for argv, _, _ in self.calls if key is None or self.key(argv) == key]


def failed(output, code=2):
    return lambda argv: Result(argv=argv, code=code, output=output)


class FloatingAddressTests(unittest.TestCase):
    def make(self, address="10.0.0.100/24", interface="eth0"):
        self.clock = Clock()
        self.run = FakeCommands()
        return FloatingAddress(self.clock, address, interface, run=self.run, wall=lambda: 1764064800.0)

    def test_going_live_checks_adds_then_announces(self):
        """up(): duplicate check (arping -D), ip addr add on the interface, ACTIVE, then gratuitous ARP (arping -U)."""
        vip = self.make()
        d = vip.up()
        self.successResultOf(d)
        self.assertEqual(vip.state, ACTIVE)
        self.assertEqual(self.run.events, ["arping -D", "ip addr add", "arping -U"])
        self.assertEqual(self.run.argvs("ip addr add"), [("ip", "-4", "addr", "add", "10.0.0.100/24", "dev", "eth0")])
        self.assertEqual(self.run.argvs("arping -U"), [("arping", "-U", "-c", "1", "-I", "eth0", "10.0.0.100")])
        [(dad, _, window)] = [c for c in self.run.calls if self.run.key(c[0]) == "arping -D"]
        self.assertEqual(dad[-3:], ("-I", "eth0", "10.0.0.100"))
        self.assertEqual(window, floating.DAD_WINDOW)

    def test_announces_three_times_while_held(self):
        """One gratuitous ARP per arping run, ANNOUNCE_INTERVAL apart, three in all."""
        vip = self.make()
        vip.up()
        self.clock.pump([floating.ANNOUNCE_INTERVAL] * 5)
        self.assertEqual(self.run.events.count("arping -U"), floating.ANNOUNCE_COUNT)

    def test_announcing_stops_when_the_address_goes(self):
        """Once the address is let go of, no further announcement claims it."""
        vip = self.make()
        vip.up()
        vip.down()
        self.clock.pump([floating.ANNOUNCE_INTERVAL] * 5)
        self.assertEqual(self.run.events.count("arping -U"), 1)

    def test_name_is_shown_like_a_listener(self):
        """The floating IP shows as vip:ADDRESS/PREFIX, WAITING until it is held."""
        vip = self.make()
        self.assertEqual(vip.name, "vip:10.0.0.100/24")
        self.assertEqual(vip.status()["state"], WAITING)

    def test_an_address_already_there_is_fine(self):
        """ip's 'File exists' (left by a crash of this node) counts as added."""
        vip = self.make()
        self.run.answers["ip addr add"] = failed("RTNETLINK answers: File exists")
        vip.up()
        self.assertEqual(vip.state, ACTIVE)

    def test_no_privilege_is_failed_and_says_what_is_needed(self):
        """Without CAP_NET_ADMIN ip fails: FAILED, with the reason naming root or CAP_NET_ADMIN."""
        vip = self.make()
        self.run.answers["ip addr add"] = failed("RTNETLINK answers: Operation not permitted")
        vip.up()
        status = vip.status()
        self.assertEqual(status["state"], FAILED)
        self.assertIn("Operation not permitted", status["reason"])
        self.assertIn("needs root or CAP_NET_ADMIN", status["reason"])
        self.assertEqual(self.run.argvs("arping -U"), [])

    def test_a_missing_interface_is_failed_with_ips_reason(self):
        """An interface that does not exist: FAILED, ip's own words in the reason."""
        vip = self.make(interface="eth9")
        self.run.answers["ip addr add"] = failed('Cannot find device "eth9"', code=1)
        vip.up()
        self.assertEqual(vip.state, FAILED)
        self.assertIn('Cannot find device "eth9"', vip.reason)

    def test_ip_past_its_time_limit_is_failed(self):
        """An ip command that hangs is killed at its limit: FAILED, saying so."""
        vip = self.make()
        self.run.answers["ip addr add"] = lambda argv: Result(argv=argv, timed_out=True, signal=15)
        vip.up()
        self.assertEqual(vip.state, FAILED)
        self.assertIn("time limit", vip.reason)
        [(_, _, timeout)] = [c for c in self.run.calls if c[0][3] == "add"]
        self.assertEqual(timeout, floating.COMMAND_TIMEOUT)

    def test_missing_arping_is_a_warning_not_a_failure(self):
        """Without arping the address is still added (ACTIVE); the status carries a warning naming the package."""
        vip = self.make()
        missing = lambda argv: Result(argv=argv, error="arping: not found on PATH")
        self.run.answers["arping -D"] = missing
        self.run.answers["arping -U"] = missing
        vip.up()
        self.assertEqual(vip.state, ACTIVE)
        self.assertIn("iputils-arping", vip.status()["warning"])

    def test_waits_for_another_host_to_let_go(self):
        """While another host answers for the address, it is not added; once nobody answers, it is."""
        vip = self.make()
        replies = [Result(argv=(), code=1, output="Unicast reply from 10.0.0.100 [00:11:22:33:44:55]  0.5ms\nReceived 1 response(s)\n")] * 3
        self.run.answers["arping -D"] = lambda argv: replies.pop() if replies else Result(argv=argv, timed_out=True)
        d = vip.up()
        self.assertNoResult(d)
        self.assertEqual(self.run.argvs("ip addr add"), [])
        for _ in range(3):
            self.clock.advance(floating.DAD_RETRY)
        self.successResultOf(d)
        self.assertEqual(self.run.events.count("arping -D"), 4)
        self.assertEqual(vip.state, ACTIVE)

    def test_takes_the_address_anyway_after_the_limit(self):
        """A host that never lets go delays the address DAD_LIMIT at most."""
        vip = self.make()
        self.run.answers["arping -D"] = failed("Unicast reply from 10.0.0.100 [00:11:22:33:44:55]\nReceived 1 response(s)", 1)
        d = vip.up()
        self.clock.pump([floating.DAD_RETRY] * int(floating.DAD_LIMIT / floating.DAD_RETRY + 2))
        self.successResultOf(d)
        self.assertEqual(vip.state, ACTIVE)

    def test_yielding_removes_the_address(self):
        """down(): ip addr del; WAITING (STOPPED when the node stops)."""
        vip = self.make()
        vip.up()
        vip.down(WAITING)
        self.assertEqual(vip.state, WAITING)
        self.assertEqual(self.run.argvs("ip addr del"), [("ip", "-4", "addr", "del", "10.0.0.100/24", "dev", "eth0")])
        vip.up()
        vip.down(STOPPED)
        self.assertEqual(vip.state, STOPPED)

    def test_removing_an_absent_address_is_fine(self):
        """An address already gone is removed as far as anyone cares, whichever words ip uses for it."""
        for words in ("RTNETLINK answers: Cannot assign requested address", "Error: ipv4: Address not found."):
            vip = self.make()
            vip.up()
            self.run.answers["ip addr del"] = failed(words)
            vip.down()
            self.assertEqual(vip.state, WAITING, words)

    def test_a_failed_removal_is_failed(self):
        """ip addr del refused: FAILED with the reason."""
        vip = self.make()
        vip.up()
        self.run.answers["ip addr del"] = failed("RTNETLINK answers: Operation not permitted")
        vip.down()
        self.assertEqual(vip.state, FAILED)
        self.assertIn("needs root or CAP_NET_ADMIN", vip.reason)

    def test_operations_are_queued(self):
        """An add asked for while a removal runs waits for it: never both at once, always in order."""
        vip = self.make()
        vip.up()
        removal = self.run.held["ip addr del"] = defer.Deferred()
        vip.down()
        again = vip.up()
        self.assertEqual(self.run.events[-1], "ip addr del")
        self.assertNoResult(again)
        removal.callback(Result(argv=(), code=0))
        self.successResultOf(again)
        self.assertEqual(self.run.events[-4:], ["ip addr del", "arping -D", "ip addr add", "arping -U"])
        self.assertEqual(vip.state, ACTIVE)

    def test_a_removal_asked_for_during_the_check_stops_the_add(self):
        """Yielding while the duplicate check runs: the address is never added."""
        vip = self.make()
        check = self.run.held["arping -D"] = defer.Deferred()
        vip.up()
        vip.down()
        check.callback(Result(argv=(), timed_out=True))
        self.assertNotIn("ip addr add", self.run.events)
        self.assertEqual(vip.state, WAITING)

    def ipv6(self, ndisc_notify="0"):
        folder = temporary_directory(self)
        os.makedirs(os.path.join(folder, "net/ipv6/conf/eth0"))
        with open(os.path.join(folder, "net/ipv6/conf/eth0/ndisc_notify"), "w") as f:
            f.write(ndisc_notify + "\n")
        self.patch(FloatingAddress, "proc_sys", folder)
        vip = self.make("2001:db8::100/64")
        self.run.answers["ndisc6"] = failed("", 2)  # nobody answered
        return vip

    def test_ipv6(self):
        """IPv6: ndisc6 checks for another holder, ndisc_notify is set, ip -6 adds (the kernel's DAD and announcement), no arping."""
        vip = self.ipv6()
        vip.up()
        self.assertEqual(vip.state, ACTIVE)
        [ndisc] = self.run.argvs("ndisc6")
        self.assertEqual(ndisc[-2:], ("2001:db8::100", "eth0"))
        self.assertEqual(self.run.argvs("sysctl"), [("sysctl", "-w", "net.ipv6.conf.eth0.ndisc_notify=1")])
        self.assertEqual(self.run.argvs("ip addr add"), [("ip", "-6", "addr", "add", "2001:db8::100/64", "dev", "eth0")])
        self.assertEqual(self.run.events, ["ndisc6", "sysctl", "ip addr add", "ip addr show"])
        vip.down()
        self.assertEqual(self.run.argvs("ip addr del")[-1][:2], ("ip", "-6"))

    def test_ipv6_ndisc_notify_already_set_is_left_alone(self):
        """ndisc_notify already 1: no sysctl."""
        vip = self.ipv6("1")
        vip.up()
        self.assertEqual(self.run.argvs("sysctl"), [])

    def test_ipv6_waits_until_the_address_is_no_longer_tentative(self):
        """IPv6: ACTIVE only once the kernel's duplicate address detection is over (a tentative address cannot be bound)."""
        vip = self.ipv6("1")
        shows = [Result(argv=(), code=0, output="2: eth0    inet6 2001:db8::100/64 scope global tentative \\")] * 3
        self.run.answers["ip addr show"] = lambda argv: shows.pop() if shows else Result(argv=argv, code=0, output="inet6 2001:db8::100/64 scope global")
        d = vip.up()
        self.assertNoResult(d)
        self.assertEqual(vip.state, "STARTING")
        self.clock.pump([floating.DAD_RETRY] * 3)
        self.successResultOf(d)
        self.assertEqual(vip.state, ACTIVE)

    def test_ipv6_duplicate_found_by_the_kernel_is_failed(self):
        """IPv6: the kernel's DAD failed: FAILED, saying another host uses the address."""
        vip = self.ipv6("1")
        self.run.answers["ip addr show"] = lambda argv: Result(argv=argv, code=0, output="inet6 2001:db8::100/64 scope global tentative dadfailed")
        vip.up()
        self.assertEqual(vip.state, FAILED)
        self.assertIn("duplicate address detection failed", vip.reason)

    def test_no_address_configured_runs_nothing(self):
        """A node without a virtual_ip runs no command."""
        vip = self.make(None, None)
        self.successResultOf(vip.up())
        self.successResultOf(vip.down())
        self.assertEqual(self.run.calls, [])

    def test_a_changed_address_is_moved_while_held(self):
        """A reload that changes the address while live removes the old one and adds the new one."""
        vip = self.make()
        vip.up()
        vip.configure("10.0.0.101/24", "eth0")
        self.assertEqual(self.run.argvs("ip addr del")[-1][4], "10.0.0.100/24")
        self.assertEqual(self.run.argvs("ip addr add")[-1][4], "10.0.0.101/24")
        self.assertEqual((vip.name, vip.state), ("vip:10.0.0.101/24", ACTIVE))

    def test_privilege_is_read_from_the_effective_capabilities(self):
        """CAP_NET_ADMIN is bit 12 of CapEff."""
        folder = temporary_directory(self)
        for caps, expected in (("0000003fffffffff", True), ("0000000000000000", False), ("0000000000001000", True)):
            path = os.path.join(folder, "status")
            with open(path, "w") as f:
                f.write(f"Name:\tx\nCapEff:\t{caps}\n")
            self.assertEqual(has_net_admin(path), expected)
        self.assertIsNone(has_net_admin(os.path.join(folder, "missing")))


FLOATING_CONFIG = """
[failover]
heartbeat_interval = 0.5
virtual_ip = 10.0.0.100/24
interface = eth0
on_live = /usr/local/bin/notify live
on_backup = /usr/local/bin/notify backup
on_fault = /usr/local/bin/notify fault
hook_timeout = 7

[server:serv_a]
backup_location = 10.9.9.2:1200
heartbeat_port = 1200
threshold = 2

[server:serv_b]
backup_location = 10.9.9.1:1200
heartbeat_port = 1200
threshold = 2
interface = eth1

[listener:web]
plugin = fake --port 8080
"""


class RecordingService(Service):
    """A listener's service noting its start and stop in a shared list."""

    def __init__(self, spec, events):
        self.spec = spec
        self.events = events

    def startService(self):
        if "--fail" in self.spec.args:
            raise OSError("port 8443 is in use")
        super().startService()
        self.events.append(f"start {self.spec.name}")

    def stopService(self):
        super().stopService()
        self.events.append(f"stop {self.spec.name}")


class RecordingNodeTestCase(NodeTestCase):
    """A node whose outside commands and listeners note themselves, in order, in C{self.events}."""

    text = FLOATING_CONFIG

    def setUp(self):
        self.events = []
        self.run = FakeCommands(self.events)
        self.patch(commands, "run", self.run)

    def make_node(self, *args, **kwargs):
        kwargs.setdefault("build", lambda spec: RecordingService(spec, self.events))
        return super().make_node(*args, **kwargs)

    def hooks(self, name):
        return [env for argv, env, _ in self.run.calls if argv[0] == "/usr/local/bin/notify" and argv[1] == name]


class NodeFloatingTests(RecordingNodeTestCase):
    def test_a_backup_removes_an_address_left_by_a_crash(self):
        """Started as backup: ip addr del of the address (present or not), and the vip item WAITING."""
        node = self.make_node()
        self.assertEqual(self.run.argvs("ip addr del"), [("ip", "-4", "addr", "del", "10.0.0.100/24", "dev", "eth1")])
        self.assertEqual(node.status().to_json()["listeners"]["vip:10.0.0.100/24"]["state"], WAITING)

    def test_takeover_adds_the_address_before_the_listeners_start(self):
        """Taking over: the address is added, then the listeners start (a listener may bind it)."""
        node = self.make_node()
        self.events.clear()
        self.step(2.1)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(self.events[:2], ["arping -D", "ip addr add"])
        self.assertLess(self.events.index("ip addr add"), self.events.index("start web"))
        listeners = node.status().to_json()["listeners"]
        self.assertEqual(listeners["vip:10.0.0.100/24"]["state"], ACTIVE)
        self.assertEqual(listeners["web"]["state"], ACTIVE)

    def test_listeners_wait_for_the_address(self):
        """While ip addr add runs, no listener starts."""
        node = self.make_node()
        adding = self.run.held["ip addr add"] = defer.Deferred()
        self.step(2.1)
        self.assertEqual(node.machine.role, LIVE)
        self.assertNotIn("start web", self.events)
        adding.callback(Result(argv=(), code=0))
        self.assertIn("start web", self.events)

    def test_listeners_start_even_if_the_address_fails(self):
        """A failed address is FAILED with its reason; the listeners start all the same (they may bind every address)."""
        node = self.make_node()
        self.run.answers["ip addr add"] = failed("RTNETLINK answers: Operation not permitted")
        self.step(2.1)
        listeners = node.status().to_json()["listeners"]
        self.assertEqual(listeners["vip:10.0.0.100/24"]["state"], FAILED)
        self.assertIn("CAP_NET_ADMIN", listeners["vip:10.0.0.100/24"]["reason"])
        self.assertEqual(listeners["web"]["state"], ACTIVE)

    def test_shutting_down_stops_the_listeners_then_removes_the_address(self):
        """A live node stopping: listeners first, then the address, then it tells the backup."""
        node = self.make_node(name="serv_a", backup=False)
        self.assertEqual(node.machine.role, LIVE)
        self.events.clear()
        node.stopService()
        self.assertEqual(self.events[:2], ["stop web", "ip addr del"])
        self.assertEqual(node.status().to_json()["listeners"]["vip:10.0.0.100/24"]["state"], STOPPED)

    def test_yielding_stops_the_listeners_then_removes_the_address(self):
        """A live node that yields: listeners stop, then the address goes; WAITING again."""
        node = self.make_node()
        self.step(2.1)
        self.events.clear()
        outranked(node, "serv_a")
        self.assertEqual(self.events[:2], ["stop web", "ip addr del"])
        self.assertEqual(node.status().to_json()["listeners"]["vip:10.0.0.100/24"]["state"], WAITING)

    def test_a_switchover_removes_the_address_before_telling_the_backup(self):
        """Planned switchover: listeners stop, the address goes, and only then the backup is told to take over."""
        node = self.make_node(name="serv_a", backup=False)
        _, transport = self.answering_backup(node)
        removing = self.run.held["ip addr del"] = defer.Deferred()
        self.events.clear()
        d = node.switchover()
        self.assertEqual(self.events, ["stop web", "ip addr del"])
        self.assertEqual(frames_in(transport), [])  # not told yet: the address is still here
        removing.callback(Result(argv=(), code=0))
        [frame] = frames_in(transport)
        self.assertEqual(frame.kind, wire.Kind.STANDING_DOWN)
        node.stopService()
        self.failureResultOf(d)

    def test_the_live_node_that_stays_announces_again_when_another_yields(self):
        """Two live nodes meet: the one that stays announces its address again, once the other has let go of it."""
        node = self.make_node(name="serv_a", backup=False)
        protocol, _ = self.answering_backup(node)
        self.step(3)
        self.events.clear()
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.LIVE, epoch=1, seq=2))
        self.assertEqual(node.machine.role, LIVE)  # serv_a outranks serv_b (a higher epoch)
        self.step(3)
        self.assertEqual(self.events.count("arping -U"), 3)
        protocol.dataReceived(frame_bytes(protocol, wire.Kind.ANSWER, "serv_b", wire.Role.LIVE, epoch=1, seq=3))
        self.step(3)
        self.assertEqual(self.events.count("arping -U"), 3)  # once per meeting, not per frame

    def test_a_yield_during_the_add_never_starts_the_listeners(self):
        """Yielding while the address is being added: the listeners are not started afterwards."""
        node = self.make_node()
        adding = self.run.held["ip addr add"] = defer.Deferred()
        self.step(2.1)
        outranked(node, "serv_a")
        adding.callback(Result(argv=(), code=0))
        self.assertNotIn("start web", self.events)
        self.assertEqual(node.listeners.listeners["web"].state, WAITING)

    def test_a_reload_can_add_a_floating_ip(self):
        """A floating IP added by a reload on a live node is taken at once."""
        node = self.make_node(name="serv_a", backup=False, text=FLOATING_CONFIG.replace("virtual_ip", "# virtual_ip").replace("interface = eth", "# interface = eth"))
        self.assertEqual(self.run.argvs("ip addr add"), [])
        from wirepeer import keyed
        node.apply_config(keyed(FLOATING_CONFIG, "/share/iway.ini"))
        self.assertEqual(self.run.argvs("ip addr add"), [("ip", "-4", "addr", "add", "10.0.0.100/24", "dev", "eth0")])


class SlowStoppingService(RecordingService):
    """A listener whose stop takes until C{slow} fires (a process channel waiting out stop_timeout)."""

    slow = None

    def stopService(self):
        super().stopService()
        return self.slow


class ReviewFixTests(RecordingNodeTestCase):
    def test_a_yield_lets_go_of_the_address_without_waiting_for_a_slow_listener(self):
        """Yielding (or fencing): the address goes at once, beside a listener stop that takes long."""
        slow = defer.Deferred()

        def build(spec):
            service = SlowStoppingService(spec, self.events)
            service.slow = slow
            return service

        node = self.make_node(build=build)
        self.step(2.1)
        self.events.clear()
        before = len(self.hooks("backup"))
        outranked(node, "serv_a")
        self.assertEqual(self.events, ["stop web", "ip addr del"])
        self.assertEqual(node.status().to_json()["listeners"]["vip:10.0.0.100/24"]["state"], WAITING)
        self.assertEqual(len(self.hooks("backup")), before, "on_backup only once everything has let go")
        slow.callback(None)
        self.assertEqual(len(self.hooks("backup")), before + 1)

    def test_a_switchover_whose_address_cannot_be_removed_serves_again(self):
        """ip addr del fails during a switchover: the backup is never told, the node serves again, on_fault runs."""
        node = self.make_node(name="serv_a", backup=False)
        _, transport = self.answering_backup(node)
        self.run.answers["ip addr del"] = failed("RTNETLINK answers: Operation not permitted")
        d = node.switchover()
        self.assertEqual(frames_in(transport), [], "the backup must not be told while the address is here")
        failure = self.failureResultOf(d)
        self.assertIn("could not be removed", str(failure.value))
        self.assertEqual(node.machine.role, LIVE)
        self.assertTrue(any("vip:10.0.0.100/24 FAILED" in env["IWAY_CAUSE"] for env in self.hooks("fault")))

    def test_a_reload_moving_the_address_and_a_listener_starts_the_listener_once_the_address_is_there(self):
        """virtual_ip and a listener bound to it change together: the listener restarts only after the new address is added."""
        from wirepeer import keyed

        node = self.make_node(name="serv_a", backup=False)
        self.events.clear()
        adding = self.run.held["ip addr add"] = defer.Deferred()
        moved = FLOATING_CONFIG.replace("10.0.0.100/24", "10.0.0.101/24").replace("fake --port 8080", "fake --port 8081")
        node.apply_config(keyed(moved, "/share/iway.ini"))
        self.reactor.advance(1)
        self.assertIn("ip addr add", self.events)
        self.assertNotIn("start web", self.events, "the listener must wait for its address")
        adding.callback(Result(argv=(), code=0))
        self.step(1)
        self.assertIn("start web", self.events, self.events)
        self.assertLess(self.events.index("ip addr add"), self.events.index("start web"))

    def test_on_fault_for_a_listener_that_fails_later_while_live(self):
        """A channel FAILED long after going live (out of restarts): on_fault runs then, not only at going live."""
        node = self.make_node()
        self.step(2.1)
        self.assertEqual(self.hooks("fault"), [])
        node.listeners.listeners["web"]._set(FAILED, "exited with status 3 after 5 restarts")
        self.reactor.advance(0)
        [env] = self.hooks("fault")
        self.assertIn("web FAILED: exited with status 3 after 5 restarts", env["IWAY_CAUSE"])


class NodeHookTests(RecordingNodeTestCase):
    """The notify hooks, run by the node on each change of role, with their environment."""

    def test_on_backup_when_started_as_backup(self):
        """Started as backup: on_backup runs with IWAY_ROLE=backup, the epoch and the cause."""
        self.make_node()
        [env] = self.hooks("backup")
        self.assertEqual(env["IWAY_SERVER"], "serv_b")
        self.assertEqual(env["IWAY_ROLE"], BACKUP)
        self.assertEqual(env["IWAY_EPOCH"], "0")
        self.assertEqual(env["IWAY_CAUSE"], "started as backup")
        self.assertEqual(env["IWAY_EVENT"], "on_backup")

    def test_on_live_after_takeover(self):
        """Takeover: on_live runs once the address and listeners are up, with the new epoch and why it took over."""
        node = self.make_node()
        self.step(2.1)
        [env] = self.hooks("live")
        self.assertEqual((env["IWAY_SERVER"], env["IWAY_ROLE"], env["IWAY_EPOCH"]), ("serv_b", LIVE, "1"))
        self.assertIn("no live signal from serv_a", env["IWAY_CAUSE"])
        self.assertEqual(env["IWAY_CAUSE"], node.machine.cause)
        self.assertEqual(self.events[-1], "/usr/local/bin/notify")

    def test_on_backup_after_yielding_once_the_address_is_gone(self):
        """Yielding: on_backup runs after the listeners stopped and the address was removed."""
        node = self.make_node()
        self.step(2.1)
        self.events.clear()
        outranked(node, "serv_a")
        [_, env] = self.hooks("backup")
        self.assertEqual((env["IWAY_ROLE"], env["IWAY_EPOCH"]), (BACKUP, "1"))
        self.assertIn("serv_a is live too with epoch 99, which outranks this node", env["IWAY_CAUSE"])
        self.assertEqual(self.events, ["stop web", "ip addr del", "/usr/local/bin/notify"])

    def test_on_fault_when_the_address_fails(self):
        """The floating IP FAILED: on_fault runs, its cause naming the item and the reason."""
        self.make_node()
        self.run.answers["ip addr add"] = failed("RTNETLINK answers: Operation not permitted")
        self.step(2.1)
        [env] = self.hooks("fault")
        self.assertEqual(env["IWAY_ROLE"], LIVE)
        self.assertIn("vip:10.0.0.100/24 FAILED", env["IWAY_CAUSE"])
        self.assertIn("CAP_NET_ADMIN", env["IWAY_CAUSE"])

    def test_on_fault_when_a_listener_fails(self):
        """A listener FAILED on going live: on_fault, once, naming it."""
        node = self.make_node(text=FLOATING_CONFIG + "\n[listener:broken]\nplugin = fake --fail\n")
        self.step(2.1)
        [env] = self.hooks("fault")
        self.assertIn("broken FAILED: OSError: port 8443 is in use", env["IWAY_CAUSE"])
        node.serving.check_faults()
        self.assertEqual(len(self.hooks("fault")), 1)

    def test_on_fault_when_the_epoch_cannot_be_kept(self):
        """The node cannot keep its epoch: on_fault with the reason."""
        node = self.make_node()
        self.patch(node._epochs, "save", lambda epoch: (_ for _ in ()).throw(OSError(28, "No space left on device")))
        self.step(2.1)
        causes = [env["IWAY_CAUSE"] for env in self.hooks("fault")]
        self.assertTrue(any("could not keep epoch 1" in c and "No space left" in c for c in causes), causes)

    def test_hook_timeout_and_server_section_win(self):
        """Each hook gets hook_timeout as its time limit; a key in the server's section wins over [failover]'s."""
        self.make_node(text=FLOATING_CONFIG.replace("interface = eth1", "interface = eth1\non_backup = /usr/local/bin/notify backup-b"))
        [(argv, env, timeout)] = [c for c in self.run.calls if c[0][0] == "/usr/local/bin/notify"]
        self.assertEqual(argv, ("/usr/local/bin/notify", "backup-b"))
        self.assertEqual(timeout, 7.0)

    def test_hooks_run_one_at_a_time_in_order(self):
        """A hook still running holds the next one back: on_live does not overtake on_backup."""
        slow = self.run.held["/usr/local/bin/notify"] = defer.Deferred()
        node = self.make_node()
        self.assertEqual(len(self.hooks("backup")), 1)
        self.step(2.1)
        self.assertEqual(node.machine.role, LIVE)
        self.assertEqual(len(self.hooks("live")), 0)
        slow.callback(Result(argv=(), code=0))
        self.assertEqual(len(self.hooks("live")), 1)
