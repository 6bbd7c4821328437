"""
A group of members on a real etcd for end-to-end tests and benchmarks:
real twistd processes on 127.0.0.1, one shared configuration, each member
with a process channel that records when it starts and stops serving.

The record (C{serving.log}) is the truth the tests judge overlap by: each
member's channel appends C{NAME start TIME} when the member starts serving
and C{NAME stop TIME} when it is told to stop (SIGTERM), on the one wall
clock all processes of this host share. A member killed with SIGKILL takes
its channel with it (the kernel's parent-death signal), which writes
nothing: its stop is the time the test killed it.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid

from harness import Node, allocate_port, wait_for

RECORDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "recorder.py")

GROUP_CONFIG = """\
[failover]
coordinator = etcd
etcd_endpoints = {endpoints}
etcd_prefix = {prefix}
heartbeat_interval = {interval}
reload_interval = {reload_interval}
{failover_extra}
"""

MEMBER = """
[server:{name}]
threshold = {threshold}
priority = {priority}
console = {console}
"""

WEB = """
[listener:web_{name}]
plugin = web --listen tcp:{port}:interface=127.0.0.1 --path {www}
servers = {name}
"""

CHANNEL = """
[listener:serving_{name}]
command = {python} {recorder} {record} {name}
servers = {name}
stop_timeout = 2
"""


class Group:
    """Members named C{names} (the first has the highest priority) on the etcd at C{endpoints}."""

    def __init__(self, workdir, endpoints, names=("alpha", "beta", "gamma"), threshold=2, interval=0.25,
                 reload_interval=0.5, failover_extra="", netns=None, web=False):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.names = tuple(names)
        self.record = os.path.join(workdir, "serving.log")
        self.prefix = f"/iwayfailover-test/{uuid.uuid4().hex[:12]}"
        self.consoles = {name: allocate_port() for name in names}
        # With web: each member serves a web listener on a port of its own
        # (on one loopback host, two members cannot share one port).
        self.web = {name: allocate_port() for name in names} if web else {}
        self.www = os.path.join(workdir, "www")
        os.makedirs(self.www, exist_ok=True)
        with open(os.path.join(self.www, "index.html"), "w") as f:
            f.write("served by the live member\n")
        self.values = dict(endpoints=", ".join(endpoints), prefix=self.prefix, interval=interval,
                           reload_interval=reload_interval, failover_extra=failover_extra, threshold=threshold)
        self.config_path = os.path.join(workdir, "group.ini")
        self.write_config()
        netns = netns or {}
        self.nodes = {
            name: Node(workdir, self.config_path, name, self.console_endpoint(name), netns=netns.get(name))
            for name in names
        }
        self.killed = {}  # name -> [wall times it was killed with SIGKILL]

    def console_endpoint(self, name) -> str:
        """
        Member C{name}'s console as its configuration gives it (and the test
        reaches it): TCP on this host's loopback. A subclass whose members
        run in network namespaces gives C{unix:PATH} instead.
        """
        return f"tcp:{self.consoles[name]}:interface=127.0.0.1"

    def write_config(self, **changes):
        self.values.update(changes)
        text = GROUP_CONFIG.format(**self.values)
        for rank, name in enumerate(self.names):
            text += MEMBER.format(name=name, threshold=self.values["threshold"],
                                  priority=10 * (len(self.names) - rank), console=self.console_endpoint(name))
            text += CHANNEL.format(name=name, python=sys.executable, recorder=RECORDER, record=self.record)
            if name in self.web:
                text += WEB.format(name=name, port=self.web[name], www=self.www)
        temporary = self.config_path + ".tmp"
        with open(temporary, "w") as f:
            f.write(text)
        os.replace(temporary, self.config_path)

    def __getitem__(self, name) -> Node:
        return self.nodes[name]

    def start(self, name, backup=True):
        return self.nodes[name].start(backup=backup)

    def start_all(self, timeout=30.0):
        """The first member live, the others backups, every member registered with every other."""
        first, *rest = self.names
        self.start(first, backup=False)
        self.nodes[first].wait_role("live", timeout=timeout)
        for name in rest:
            self.start(name)
        for name in rest:
            self.nodes[name].wait_role("backup", timeout=timeout)
        def registered(name):
            members = (self.nodes[name].status() or {}).get("members", {})
            return set(members) == set(self.names) and all(m["role"] in ("live", "backup") for m in members.values())

        wait_for(lambda: all(registered(n) for n in self.names),
                 timeout, "every member to see the whole group registered\n" + self.log_tails())
        return self

    def kill(self, name):
        self.killed.setdefault(name, []).append(time.time())
        self.nodes[name].kill()

    def stop(self):
        for node in self.nodes.values():
            node.stop()

    def statuses(self):
        return {name: node.status(timeout=0.5) for name, node in self.nodes.items()}

    def live(self):
        """The members that say they are live right now."""
        return sorted(name for name, s in self.statuses().items() if s is not None and s["role"] == "live")

    def wait_live(self, timeout=15.0, exclude=()):
        """Wait until exactly one member (not in C{exclude}) says it is live; return its name."""
        found = wait_for(
            lambda: (lives := self.live()) and len(lives) == 1 and lives[0] not in exclude and lives[0],
            timeout, "exactly one live member\n" + self.log_tails(),
        )
        return found

    def log_tails(self, lines=25):
        return "\n".join(node.log_tail(lines) for node in self.nodes.values())

    # -- the serving record --

    def serving_events(self):
        """(time, name, "start" | "stop") in the order written, with kills as stops."""
        events = []
        try:
            with open(self.record) as f:
                for line in f:
                    parts = line.split()
                    if len(parts) == 3 and parts[1] in ("start", "stop"):
                        events.append((float(parts[2]), parts[0], parts[1]))
        except FileNotFoundError:
            pass
        for name, times in self.killed.items():
            events.extend((t, name, "stop") for t in times)
        return sorted(events)

    def intervals(self):
        """Each member's serving intervals [(start, stop or None)], from the record."""
        open_at, spans = {}, []
        for at, name, what in self.serving_events():
            if what == "start":
                open_at.setdefault(name, at)
            elif name in open_at:
                spans.append((name, open_at.pop(name), at))
        spans.extend((name, start, None) for name, start in open_at.items())
        return spans

    def overlap(self) -> float:
        """The longest time two members served at once, in seconds (0: never)."""
        spans = self.intervals()
        now = time.time()
        worst = 0.0
        for i, (a, a0, a1) in enumerate(spans):
            for b, b0, b1 in spans[i + 1:]:
                if a == b:
                    continue
                both = min(a1 or now, b1 or now) - max(a0, b0)
                worst = max(worst, both)
        return worst

    def started_after(self, moment):
        """The first (time, name) a member started serving after C{moment}."""
        for at, name, what in self.serving_events():
            if what == "start" and at > moment:
                return at, name
        return None


def status_json(node: Node):
    s = node.status()
    return json.dumps(s, indent=1) if s else "(no answer)"
