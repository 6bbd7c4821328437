"""
End-to-end: C{GET /metrics} of a real pair of twistd processes on
127.0.0.1, scraped the way Prometheus does, over HTTP.
"""

import urllib.request

from prometheus_client.parser import text_string_to_metric_families
from twisted.trial import unittest

from harness import Pair, temporary_directory, wait_for


def metrics(node):
    """The node's /metrics as C{(sample name, labels)} to value, or None if it does not answer."""
    port = int(node.console.split(":")[1])
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
            content_type = response.headers["content-type"]
            text = response.read().decode("utf-8")
    except OSError:
        return None
    assert content_type.startswith("text/plain; version=0.0.4"), content_type
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def role_of(samples, server):
    return [dict(labels)["role"] for (name, labels), v in samples.items()
            if name == "iwayfailover_role" and dict(labels)["server"] == server and v == 1]


class MetricsEndToEndTests(unittest.TestCase):
    def setUp(self):
        self.pair = Pair(temporary_directory(self), interval=0.2, threshold=1.0)
        self.addCleanup(self.pair.stop)

    def test_a_running_pair_shows_roles_heartbeats_and_a_takeover(self):
        """Live and backup show their roles; the backup counts heartbeats; after kill -9 it shows live, a higher epoch, one takeover."""
        self.pair.start_both()
        live, backup = metrics(self.pair.a), metrics(self.pair.b)
        self.assertEqual(role_of(live, "serv_a"), ["live"])
        self.assertEqual(role_of(backup, "serv_b"), ["backup"])
        self.assertGreaterEqual(live[("iwayfailover_heartbeats_sent_total", ())], 2)
        self.assertGreaterEqual(backup[("iwayfailover_heartbeats_received_total", ())], 2)
        self.assertLess(backup[("iwayfailover_last_heartbeat_age_seconds", ())], 1.0)
        self.assertEqual(backup[("iwayfailover_listener_state", (("listener", "web"), ("state", "WAITING")))], 1)
        epoch = backup[("iwayfailover_epoch", ())]

        self.pair.a.kill()

        after = wait_for(
            lambda: (m := metrics(self.pair.b)) is not None and role_of(m, "serv_b") == ["live"]
            and m[("iwayfailover_listener_state", (("listener", "web"), ("state", "ACTIVE")))] == 1 and m,
            10, "serv_b's /metrics to show it live with web ACTIVE\n" + self.pair.b.log_tail(),
        )
        self.assertGreater(after[("iwayfailover_epoch", ())], epoch)
        takeovers = {dict(labels)["cause"]: v for (name, labels), v in after.items() if name == "iwayfailover_takeovers_total"}
        self.assertEqual(sum(takeovers.values()), 1)
