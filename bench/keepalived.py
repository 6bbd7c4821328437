#!/usr/bin/env python3
"""
iwayfailover side by side with keepalived, in the same run on the same machine.

keepalived (Debian's package) runs in two network namespaces joined by a
veth pair, unicast VRRPv3 at the same advert interval as our heartbeat
interval; its notify_master script starts a listener (an HTTP server) and
its notify_backup script stops it. The same faults as bench/takeover.py:
kill -9 of every keepalived process in the master's namespace, a clean
stop (SIGTERM), and SIGSTOP. Timing is the same: from the fault to the
first connection accepted on the backup's listener, polled from inside the
backup's namespace. No address outside the namespaces is used.

    python bench/keepalived.py            # 20 trials per fault at interval 1 s
    python bench/keepalived.py --quick    # 1 trial per fault

Needs root and keepalived (`apt-get install keepalived`; `make bench` does it).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import takeover  # noqa: E402
from harness import wait_for  # noqa: E402

LISTENER_PORT = 8080
ADDRESSES = {"a": "10.232.1.1", "b": "10.232.1.2"}
VIP = "10.232.1.100"

CONFIG = """\
global_defs {{
    router_id {name}
    vrrp_version 3
    script_user root
    max_auto_priority -1
}}

vrrp_instance bench {{
    state {state}
    interface {interface}
    virtual_router_id 51
    priority {priority}
    advert_int {advert}
    unicast_src_ip {me}
    unicast_peer {{
        {peer}
    }}
    virtual_ipaddress {{
        {vip}/24
    }}
    notify_master "{workdir}/notify.sh {name} master"
    notify_backup "{workdir}/notify.sh {name} backup"
    notify_fault "{workdir}/notify.sh {name} fault"
}}
"""

# The listener keepalived starts on becoming master, stops otherwise; the
# state is written to a file the benchmark reads.
NOTIFY = """#!/bin/sh
dir=$(dirname "$0")
echo "$2" > "$dir/$1.state"
if [ "$2" = master ]; then
    {python} -m http.server {port} --bind 127.0.0.1 --directory "$dir" >/dev/null 2>&1 &
    echo $! > "$dir/$1.listener"
else
    [ -f "$dir/$1.listener" ] && kill "$(cat "$dir/$1.listener")" 2>/dev/null
    rm -f "$dir/$1.listener"
fi
"""

POLLER = """
import socket, sys, time
port, deadline = int(sys.argv[1]), time.monotonic() + float(sys.argv[2])
print("ready", flush=True)
while time.monotonic() < deadline:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
        print(repr(time.monotonic()), flush=True)
        break
    except OSError:
        time.sleep(0.0005)
"""


def become_subreaper():
    """Orphans (keepalived's VRRP child, once its parent is killed) become ours to reap, not zombies."""
    PR_SET_CHILD_SUBREAPER = 36
    try:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def reap_orphans():
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def run(argv, **kwargs):
    return subprocess.run(argv, check=True, capture_output=True, timeout=30, **kwargs)


class KeepalivedPair:
    """Two keepalived instances, a (MASTER) and b (BACKUP), each in a namespace of its own."""

    def __init__(self, workdir: str, advert: float):
        tag = os.getpid() % 100000
        self.workdir = workdir
        self.ns = {"a": f"ikb{tag}a", "b": f"ikb{tag}b"}
        self.interfaces = {"a": f"ikb{tag}va", "b": f"ikb{tag}vb"}
        self.advert = advert
        self.processes = {}
        self.made = []

    def make(self):
        for host, ns in self.ns.items():
            run(["ip", "netns", "add", ns])
            self.made.append(ns)
            run(["ip", "netns", "exec", ns, "ip", "link", "set", "lo", "up"])
        run(["ip", "link", "add", self.interfaces["a"], "netns", self.ns["a"], "type", "veth",
             "peer", "name", self.interfaces["b"], "netns", self.ns["b"]])
        for host in ("a", "b"):
            run(["ip", "netns", "exec", self.ns[host], "ip", "addr", "add", f"{ADDRESSES[host]}/24", "dev", self.interfaces[host]])
            run(["ip", "netns", "exec", self.ns[host], "ip", "link", "set", self.interfaces[host], "up"])
        notify = os.path.join(self.workdir, "notify.sh")
        with open(notify, "w") as f:
            f.write(NOTIFY.format(python=sys.executable, port=LISTENER_PORT))
        os.chmod(notify, 0o755)
        for host, state, priority in (("a", "MASTER", 150), ("b", "BACKUP", 100)):
            peer = "b" if host == "a" else "a"
            with open(os.path.join(self.workdir, f"{host}.conf"), "w") as f:
                f.write(CONFIG.format(
                    name=host, state=state, priority=priority, interface=self.interfaces[host], advert=self.advert,
                    me=ADDRESSES[host], peer=ADDRESSES[peer], vip=VIP, workdir=self.workdir,
                ))

    def start(self, host: str):
        conf = os.path.join(self.workdir, f"{host}.conf")
        self.processes[host] = subprocess.Popen(
            ["ip", "netns", "exec", self.ns[host], "keepalived", "--dont-fork", "--log-console", "--vrrp",
             f"--use-file={conf}", f"--pid={self.workdir}/{host}.pid", f"--vrrp_pid={self.workdir}/{host}.vrrp.pid"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )

    def state(self, host: str):
        try:
            with open(os.path.join(self.workdir, f"{host}.state")) as f:
                return f.read().strip()
        except OSError:
            return None

    def pids(self, host: str, every: bool = False):
        """Every keepalived process in the namespace of C{host} (C{every}: every process there)."""
        result = subprocess.run(["ip", "netns", "pids", self.ns[host]], capture_output=True, text=True, timeout=30)
        pids = []
        for pid in result.stdout.split():
            try:
                with open(f"/proc/{pid}/comm") as f:
                    if every or f.read().strip() == "keepalived":
                        pids.append(int(pid))
            except OSError:
                pass
        return pids

    def remove(self):
        for host in self.ns:
            # Every process in the namespace: keepalived, and each listener its notify script
            # started (a pair that flapped started several; the pid file names only the last).
            for pid in self.pids(host, every=True) if host in self.ns and self.ns[host] in self.made else []:
                try:
                    os.kill(pid, signal.SIGCONT)
                    os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass
        for process in self.processes.values():
            try:
                process.kill()
                process.wait(timeout=10)
            except OSError:
                pass
        for name in ("a.listener", "b.listener"):
            path = os.path.join(self.workdir, name)
            if os.path.exists(path):
                try:
                    with open(path) as f:
                        os.kill(int(f.read()), signal.SIGKILL)
                except (OSError, ValueError):
                    pass
        for ns in self.made:
            subprocess.run(["ip", "netns", "del", ns], capture_output=True, timeout=30)
        reap_orphans()


def keepalived_trial(fault: str, advert: float) -> float:
    workdir = tempfile.mkdtemp(prefix="iwayfailover-keepalived-")
    pair = KeepalivedPair(workdir, advert)
    poller = None
    try:
        pair.make()
        pair.start("a")
        wait_for(lambda: pair.state("a") == "master", 30, "keepalived a to become master")
        pair.start("b")
        wait_for(lambda: pair.state("b") == "backup", 30, "keepalived b to become backup")
        threading.Event().wait(3 * advert)  # b hears a steady stream of adverts
        poller = subprocess.Popen(
            ["ip", "netns", "exec", pair.ns["b"], sys.executable, "-c", POLLER, str(LISTENER_PORT), "30"],
            stdout=subprocess.PIPE, text=True,
        )
        assert poller.stdout.readline().strip() == "ready"
        start = time.monotonic()
        for pid in pair.pids("a"):
            os.kill(pid, takeover.FAULTS[fault])
        line = poller.stdout.readline().strip()
        if not line:
            raise TimeoutError(f"keepalived b never served after {fault}")
        return float(line) - start
    finally:
        if poller is not None:
            poller.kill()
            poller.wait(timeout=10)
        pair.remove()
        shutil.rmtree(workdir, ignore_errors=True)


def ours(fault: str, interval: float) -> float:
    workdir = tempfile.mkdtemp(prefix="iwayfailover-bench-")
    try:
        return takeover.trial(workdir, fault, interval, 3 * interval)[0]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.strip().splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="1 trial per fault")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--interval", type=float, default=1.0, help="advert interval = heartbeat interval (s)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("bench/keepalived.py needs root (network namespaces)", file=sys.stderr)
        return 2
    if not shutil.which("keepalived"):
        print("bench/keepalived.py needs keepalived: apt-get install keepalived (make bench installs it)", file=sys.stderr)
        return 2
    become_subreaper()
    trials = 1 if args.quick else args.trials
    interval = args.interval
    print(f"iwayfailover vs keepalived: fault to first connection accepted on the backup's listener,"
          f" interval {interval:g} s (our threshold {3 * interval:g} s), {trials} trials (ms)")
    header = f"{'fault':9} {'ours p50':>9} {'p95':>8} {'keepalived p50':>15} {'p95':>8} {'ratio p50':>9}"
    print(header)
    print("-" * len(header))
    for fault in takeover.FAULTS:
        mine = [ours(fault, interval) for _ in range(trials)]
        theirs = [keepalived_trial(fault, interval) for _ in range(trials)]
        p50, p95 = takeover.percentile(mine, .5), takeover.percentile(mine, .95)
        k50, k95 = takeover.percentile(theirs, .5), takeover.percentile(theirs, .95)
        print(f"{fault:9} {p50 * 1000:9.1f} {p95 * 1000:8.1f} {k50 * 1000:15.1f} {k95 * 1000:8.1f} {k50 / p50:8.1f}x")
    print("ratio: keepalived's p50 over ours (higher is better for iwayfailover)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
