"""
TLS and mutual-TLS pairs of real twistd processes on loopback: they fail
over like plain pairs, and a wrong certificate or host name is refused with
a log line that says so.
"""

import os
import time

from twisted.trial import unittest

from harness import Pair, accepts, temporary_directory, wait_for
from pki import Authority


class TLSPairTestCase(unittest.TestCase):
    threshold = 5.0

    def setUp(self):
        self.workdir = temporary_directory(self)
        self.pki = os.path.join(self.workdir, "pki")
        os.makedirs(self.pki)
        self.ca = Authority(self.pki)
        self.crt_a, self.key_a = self.ca.issue("serv_a", dns=("serv-a.example",), ips=("127.0.0.1",))
        self.crt_b, self.key_b = self.ca.issue("serv_b", dns=("serv-b.example",), ips=("127.0.0.1",))

    def make_pair(self, server_a, client_a, server_b, client_b):
        """A pair whose heartbeat ports and locations carry these TLS parameters."""
        self.pair = Pair(
            self.workdir, interval=0.5, threshold=self.threshold, own_listeners=True,
            tls={"serv_a": (server_a, client_a), "serv_b": (server_b, client_b)},
        )
        self.addCleanup(self.pair.stop)
        return self.pair

    def port(self, crt, key, mutual=False):
        return f"privateKey={key}:certKey={crt}" + (f":caCerts={self.ca.path}" if mutual else "")

    def location(self, trust=None, crt=None, key=None):
        text = f"trustRoots={trust or self.ca.path}"
        return text + (f":certificate={crt}:privateKey={key}" if crt else "")

    def logs(self):
        return self.pair.a.log_tail() + "\n" + self.pair.b.log_tail()

    def assertFailsOverOnKill(self):
        """serv_b hears serv_a over TLS; kill -9 of serv_a: serv_b serves well before the threshold."""
        self.pair.start_both()
        config = open(self.pair.config_path).read()
        self.assertIn("heartbeat_port = ssl:", config)
        self.assertIn("backup_location = tls:", config)
        killed = time.monotonic()
        self.pair.a.kill()
        wait_for(lambda: accepts(self.pair.ports["web_b"]), self.threshold + 5, "serv_b's listener\n" + self.logs(), poll=0.005)
        elapsed = time.monotonic() - killed
        status = self.pair.b.status()
        self.assertEqual(status["role"], "live")
        # The crash probe went over TLS (its own Location of Backup): no threshold wait.
        self.assertIn("serv_a is gone", status["cause"])
        self.assertLess(elapsed, self.threshold / 2)
        self.assertEqual(status["heartbeats"]["rejected"], 0)


class FailoverTests(TLSPairTestCase):
    def test_a_tls_pair_fails_over_on_kill_9(self):
        self.make_pair(
            self.port(self.crt_a, self.key_a), self.location(),
            self.port(self.crt_b, self.key_b), self.location(),
        )
        self.assertFailsOverOnKill()

    def test_a_mutual_tls_pair_fails_over_on_kill_9(self):
        self.make_pair(
            self.port(self.crt_a, self.key_a, mutual=True), self.location(crt=self.crt_a, key=self.key_a),
            self.port(self.crt_b, self.key_b, mutual=True), self.location(crt=self.crt_b, key=self.key_b),
        )
        self.assertFailsOverOnKill()


class RefusalTests(TLSPairTestCase):
    """serv_a live, serv_b backup with a long threshold; each misconfiguration is named in the logs."""

    threshold = 60.0

    def start_and_wait_for(self, node, words):
        self.pair.a.start()
        self.pair.a.wait_role("live", timeout=20)
        self.pair.b.start(backup=True)
        self.pair.b.wait_role("backup", timeout=20)
        wait_for(lambda: words in node.log_text(), 20, f"{words!r} in {node.name}'s log\n" + self.logs())
        self.assertEqual(self.pair.b.status()["heartbeats"]["received"], 0)

    def test_a_certificate_from_an_unknown_ca_is_refused(self):
        stranger = Authority(self.pki, name="stranger CA")
        self.make_pair(
            self.port(self.crt_a, self.key_a), self.location(trust=stranger.path),
            self.port(self.crt_b, self.key_b), self.location(),
        )
        self.start_and_wait_for(self.pair.a, "certificate verify failed")
        wait_for(lambda: self.pair.a.status()["heartbeats"]["rejected"] >= 1, 10, "serv_a to count the refusal")

    def test_a_certificate_for_another_host_is_refused(self):
        crt_b, key_b = self.ca.issue("serv_b_elsewhere", dns=("serv-b.example",), ips=("127.0.0.9",))
        self.make_pair(
            self.port(self.crt_a, self.key_a), self.location(),
            self.port(crt_b, key_b), self.location(),
        )
        self.start_and_wait_for(self.pair.a, "does not match the host name")

    def test_mutual_tls_refuses_a_node_without_a_client_certificate(self):
        self.make_pair(
            self.port(self.crt_a, self.key_a, mutual=True), self.location(),
            self.port(self.crt_b, self.key_b, mutual=True), self.location(),
        )
        self.start_and_wait_for(self.pair.b, "TLS handshake failed")
        wait_for(lambda: self.pair.b.status()["heartbeats"]["rejected"] >= 1, 10, "serv_b to count the refusal")
