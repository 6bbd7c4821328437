"""
Each benchmark's quick mode runs from a fresh install and prints a
well-formed table. Their numbers are goals to measure, not to assert.
bench/false_takeover.py and bench/group_takeover.py are checked by their
table logic only: the first runs minutes of stress-ng as root (make bench
runs it).
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

    def false_takeover(self):
        """bench/false_takeover.py as a module (its table and numbers, nothing run)."""
        sys.path.insert(0, BENCH)
        try:
            import false_takeover
        finally:
            sys.path.remove(BENCH)
        return false_takeover

    def test_false_takeover_table_has_a_row_per_system_and_phase(self):
        """bench/false_takeover.py's table: per system and phase, takeovers, per minute, gap count, p50/p99/p99.9/max, CPU and RSS of both nodes (table logic only)."""
        import io

        false_takeover = self.false_takeover()
        gaps = [0.03] * 997 + [0.04, 0.05, 0.105]
        rows = [
            false_takeover.Row("idle", "iwayfailover", 0.15, 0.03, 60.0, 0, gaps, (3.2, 2.6), (68.3, 68.3)),
            false_takeover.Row("stress", "iwayfailover", 0.15, 0.03, 600.0, 2, gaps, (39.1, 2.1), (68.3, 68.4)),
            false_takeover.Row("stress", "keepalived", 0.15, 0.05, 600.0, 0, [0.05, 0.0502], (0.1, 0.1), (12.9, 13.1)),
            false_takeover.Row("loss", "keepalived", 0.9, 0.3, 30.0, 2, [], (0.0, 0.0), (13.1, 13.1)),
        ]
        out = io.StringIO()
        false_takeover.print_table(rows, out)
        row = (rf"^(idle|stress|loss)\s+(iwayfailover|keepalived)\s+{NUMBER}\s+{NUMBER}\s+[0-9]+\s+{NUMBER}\s+[0-9]+"
               rf"(\s+({NUMBER}|-)){{4}}\s+{NUMBER}/{NUMBER}\s+{NUMBER}/{NUMBER}$")
        self.assertTable(out.getvalue(), ["system", "false", "per min", "p99.9 ms", "CPU % a/b", "RSS MB a/b"], row, 4)
        lines = out.getvalue().splitlines()
        self.assertEqual(lines[3].split()[4:11], ["2", "0.20", "1000", "30.0", "30.0", "50.0", "105.0"])
        self.assertEqual(lines[5].split()[4:11], ["2", "4.00", "0", "-", "-", "-", "-"], "no gaps: no quantiles")

    def test_false_takeover_percentiles_are_nearest_rank_over_every_gap(self):
        """p50, p99 and p99.9 are the gaps at those ranks of all of them; one late gap in 1000 is the p99.9."""
        false_takeover = self.false_takeover()
        summary = false_takeover.gap_summary([0.001 * n for n in range(1, 1001)])
        self.assertEqual(summary["count"], 1000)
        self.assertAlmostEqual(summary["p50"], 0.5)
        self.assertAlmostEqual(summary["p99"], 0.990)
        self.assertAlmostEqual(summary["p999"], 0.999)
        self.assertAlmostEqual(summary["max"], 1.0)
        self.assertEqual(false_takeover.gap_summary([])["p999"], None)

    def test_false_takeover_advert_gaps_are_those_ending_in_the_phase(self):
        """keepalived's advert gaps in a phase: between successive receipts, the later one inside the phase."""
        false_takeover = self.false_takeover()
        stamps = [10.0, 10.05, 10.1, 10.3, 10.35]
        gaps = false_takeover.gaps_between(stamps, 10.05, 10.3)
        self.assertEqual([round(g, 3) for g in gaps], [0.05, 0.2])

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
