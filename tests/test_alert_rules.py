"""
The Prometheus alert rules in conf/prometheus: `promtool check rules`, and
`promtool test rules` on series as pairs and groups export them (Debian's
prometheus package, installed by make test): each rule fires on what it is
about, and a group's backups (no heartbeat series) fire none of a pair's
heartbeat rules.
"""

import os
import shutil
import subprocess
import tempfile

from twisted.trial import unittest

RULES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "conf", "prometheus",
                     "iwayfailover.rules.yml")

TESTS = """\
rule_files: [{rules}]
evaluation_interval: 5s
tests:
  # A pair with both nodes live, then a pair with none.
  - interval: 5s
    input_series:
      - series: 'iwayfailover_role{{job="pair1", instance="serv_a", role="live"}}'
        values: '1x20'
      - series: 'iwayfailover_role{{job="pair1", instance="serv_b", role="live"}}'
        values: '1x20'
      - series: 'iwayfailover_role{{job="pair2", instance="serv_c", role="live"}}'
        values: '0x20'
      - series: 'iwayfailover_role{{job="pair2", instance="serv_d", role="live"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 30s
        alertname: IwayBothLive
        exp_alerts:
          - exp_labels: {{job: pair1, severity: critical}}
            exp_annotations: {{summary: "more than one iwayfailover node is live in pair1"}}
      - eval_time: 30s
        alertname: IwayNoLiveNode
        exp_alerts:
          - exp_labels: {{job: pair2, severity: critical}}
            exp_annotations: {{summary: "no iwayfailover node is live: nothing serves the listeners"}}
  # A pair's backup that has heard nothing for long, and a gap near its threshold.
  - interval: 5s
    input_series:
      - series: 'iwayfailover_role{{job="pair1", instance="serv_b", role="backup"}}'
        values: '1x20'
      - series: 'iwayfailover_last_heartbeat_age_seconds{{job="pair1", instance="serv_b"}}'
        values: '0+5x20'
      - series: 'iwayfailover_heartbeat_interval_seconds{{job="pair1", instance="serv_b"}}'
        values: '1x20'
      - series: 'iwayfailover_recent_max_heartbeat_gap_seconds{{job="pair1", instance="serv_b"}}'
        values: '2.7x15 0.4x10'
      - series: 'iwayfailover_threshold_seconds{{job="pair1", instance="serv_b"}}'
        values: '3x20'
    alert_rule_test:
      - eval_time: 60s
        alertname: IwayBackupHearsNothing
        exp_alerts:
          - exp_labels: {{job: pair1, instance: serv_b, severity: warning}}
            exp_annotations: {{summary: "backup serv_b has heard no live node for two heartbeat intervals"}}
      - eval_time: 60s
        alertname: IwayHeartbeatGapNearThreshold
        exp_alerts:
          - exp_labels: {{job: pair1, instance: serv_b, severity: warning}}
            exp_annotations: {{summary: "serv_b heard a heartbeat gap near its threshold"}}
      # Five minutes later the gap has left the node's window: the alert resolves by itself.
      - eval_time: 100s
        alertname: IwayHeartbeatGapNearThreshold
        exp_alerts: []
  # A healthy group of three: one live, two backups, no heartbeat series: nothing fires.
  - interval: 5s
    input_series:
      - series: 'iwayfailover_role{{job="group1", instance="alpha", role="live"}}'
        values: '1x20'
      - series: 'iwayfailover_role{{job="group1", instance="beta", role="backup"}}'
        values: '1x20'
      - series: 'iwayfailover_role{{job="group1", instance="gamma", role="backup"}}'
        values: '1x20'
      - series: 'iwayfailover_coordinator_connected{{job="group1", instance="beta"}}'
        values: '1x20'
      - series: 'iwayfailover_group_members{{job="group1", instance="beta", role="absent"}}'
        values: '0x20'
    alert_rule_test:
      - eval_time: 90s
        alertname: IwayBackupHearsNothing
        exp_alerts: []
      - eval_time: 90s
        alertname: IwayNoLiveNode
        exp_alerts: []
      - eval_time: 90s
        alertname: IwayStoreUnreachable
        exp_alerts: []
      - eval_time: 90s
        alertname: IwayMemberAbsent
        exp_alerts: []
  # A group member that cannot reach etcd, and one that sees a member absent.
  - interval: 5s
    input_series:
      - series: 'iwayfailover_coordinator_connected{{job="group1", instance="beta"}}'
        values: '0x20'
      - series: 'iwayfailover_group_members{{job="group1", instance="gamma", role="absent"}}'
        values: '1x20'
      - series: 'iwayfailover_group_members{{job="group1", instance="beta", role="absent"}}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 90s
        alertname: IwayStoreUnreachable
        exp_alerts:
          - exp_labels: {{job: group1, instance: beta, severity: critical}}
            exp_annotations: {{summary: "beta cannot reach etcd"}}
      - eval_time: 90s
        alertname: IwayMemberAbsent
        exp_alerts:
          - exp_labels: {{job: group1, severity: warning}}
            exp_annotations: {{summary: "1 member(s) of group group1 absent (not running, or cut off from etcd)"}}
"""


class AlertRuleTests(unittest.TestCase):
    def setUp(self):
        if shutil.which("promtool") is None:
            raise unittest.SkipTest("promtool is not installed (Debian package prometheus: make system-packages)")
        self.folder = tempfile.mkdtemp(prefix="iwayfailover-rules-")
        self.addCleanup(shutil.rmtree, self.folder, True)

    def promtool(self, *argv):
        done = subprocess.run(["promtool", *argv], capture_output=True, text=True, timeout=60)
        return done.returncode, done.stdout + done.stderr

    def test_the_rules_file_is_valid(self):
        code, said = self.promtool("check", "rules", RULES)
        self.assertEqual(code, 0, said)
        self.assertIn("SUCCESS", said)

    def test_each_rule_fires_on_what_it_is_about_and_a_group_fires_no_pair_rule(self):
        path = os.path.join(self.folder, "tests.yml")
        with open(path, "w") as f:
            f.write(TESTS.format(rules=RULES))
        code, said = self.promtool("test", "rules", path)
        self.assertEqual(code, 0, said)
        self.assertIn("SUCCESS", said)
