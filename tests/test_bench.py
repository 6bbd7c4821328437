"""
Each benchmark's quick mode runs from a fresh install and prints a
well-formed table. Their numbers are goals to measure, not to assert.
"""

import os
import re
import shutil
import subprocess
import sys

from twisted.trial import unittest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bench")
NUMBER = r"[0-9]+(?:\.[0-9]+)?"


def run_quick(script):
    result = subprocess.run(
        [sys.executable, os.path.join(BENCH, script), "--quick"], capture_output=True, text=True, timeout=240
    )
    return result


class BenchTests(unittest.TestCase):
    def assertTable(self, output, header_words, row_pattern, rows):
        """A header holding C{header_words}, a rule of dashes under it, and C{rows} rows matching C{row_pattern}."""
        lines = output.splitlines()
        header = next((i for i, line in enumerate(lines) if all(w in line for w in header_words)), None)
        self.assertIsNotNone(header, f"no header with {header_words} in:\n{output}")
        self.assertRegex(lines[header + 1], r"^-+$")
        matching = [line for line in lines[header + 2:] if re.match(row_pattern, line)]
        self.assertEqual(len(matching), rows, output)

    def test_takeover_quick_mode_prints_a_row_per_fault(self):
        """bench/takeover.py --quick: one row for each of kill -9, SIGTERM and SIGSTOP, with p50, p95 and max."""
        result = run_quick("takeover.py")
        self.assertEqual(result.returncode, 0, result.stderr)
        row = rf"^(kill -9|SIGTERM|SIGSTOP)\s+{NUMBER}\s+{NUMBER}\s+3\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}"
        self.assertTable(result.stdout, ["fault", "p50", "p95", "max"], row, 3)
        [silent] = [line for line in result.stdout.splitlines() if line.startswith("SIGSTOP")]
        self.assertEqual(len(silent.split()), 10, "SIGSTOP's row also has the excess over the threshold: p50, p95, max")

    def test_false_takeover_quick_mode_prints_its_counts(self):
        """bench/false_takeover.py --quick: one row with seconds, requests, heartbeats, takeovers and the largest gap."""
        result = run_quick("false_takeover.py")
        self.assertEqual(result.returncode, 0, result.stderr)
        row = rf"^\s*10\s+[0-9]+\s+[0-9]+\s+[0-9]+\s+{NUMBER}\s+\S+/\S+$"
        self.assertTable(result.stdout, ["seconds", "takeovers", "max gap ms"], row, 1)

    def test_cost_quick_mode_prints_both_tables(self):
        """bench/cost.py --quick: CPU and RSS for both nodes at both intervals, and takeover times for 1, 10, 100 listeners."""
        result = run_quick("cost.py")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTable(result.stdout, ["interval", "node", "CPU %", "RSS MB"], rf"^\s*(1|0\.1)\s+(live|backup)\s+{NUMBER}\s+{NUMBER}$", 4)
        self.assertTable(result.stdout, ["listeners", "p50", "max"], rf"^\s*(1|10|100)\s+{NUMBER}\s+{NUMBER}$", 3)

    def test_keepalived_quick_mode_prints_both_side_by_side(self):
        """bench/keepalived.py --quick: for each fault, our p50/p95, keepalived's, and the ratio."""
        if os.geteuid() != 0:
            raise unittest.SkipTest("keepalived runs in network namespaces, which need root (CI runs as root)")
        if not shutil.which("keepalived"):
            raise unittest.SkipTest("keepalived is not installed (make test installs it as root with apt-get)")
        result = run_quick("keepalived.py")
        self.assertEqual(result.returncode, 0, result.stderr)
        row = rf"^(kill -9|SIGTERM|SIGSTOP)\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}x$"
        self.assertTable(result.stdout, ["fault", "ours p50", "keepalived p50", "ratio"], row, 3)

    def test_group_takeover_table_has_a_group_and_a_pair_row_per_fault(self):
        """bench/group_takeover.py's table: for kill -9 and SIGTERM, a group row and a pair row, in ms (table logic only)."""
        import io

        sys.path.insert(0, BENCH)
        try:
            import group_takeover
        finally:
            sys.path.remove(BENCH)
        out = io.StringIO()
        group_takeover.print_table([
            ("group (etcd)", "kill -9", "TTL 2s, keepalive 0.25s", [1.95, 2.0, 1.99]),
            ("pair", "kill -9", "threshold 0.3s, interval 0.1s", [0.01, 0.012, 0.011]),
            ("group (etcd)", "SIGTERM", "TTL 2s, keepalive 0.25s", [0.03]),
            ("pair", "SIGTERM", "threshold 0.3s, interval 0.1s", [0.007]),
        ], out)
        row = rf"^(group \(etcd\)|pair)\s+(kill -9|SIGTERM)\s+.+?\s+[13]\s+{NUMBER}\s+{NUMBER}\s+{NUMBER}$"
        self.assertTable(out.getvalue(), ["fault", "p50", "p95", "max"], row, 4)
        self.assertIn("2000.0", out.getvalue())
