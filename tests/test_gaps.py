"""
Tests for L{iwayfailover.gaps}: the heartbeat gaps kept for people (the
histograms of C{/metrics}, C{/api/gaps} and the console's chart), and the
chart itself, read back as the SVG it is.
"""

import json
import math
import unittest
import xml.etree.ElementTree as ET
from types import SimpleNamespace

from treq.testing import StubTreq
from twisted.internet.address import IPv4Address
from twisted.internet.error import ConnectionDone
from twisted.python.failure import Failure
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from iwayfailover import wire
from iwayfailover.console import console_root
from iwayfailover.console.pages import ChartResource
from iwayfailover.gaps import GAP_BUCKETS, GapHistory, GapRecord, GapSnapshot, chart_svg, role_spans, summary
from iwayfailover.status import Transition
from test_console import ThroughInterface
from test_metrics import scrape, value
from test_node import NodeTestCase
from wirepeer import frame_bytes

SVG = "{http://www.w3.org/2000/svg}"
T0 = 1764064800.0


class Clocks:
    """A monotonic and a wall clock moved together."""

    def __init__(self):
        self.mono = 100.0
        self.wall = T0

    def advance(self, seconds):
        self.mono += seconds
        self.wall += seconds


class GapRecordTests(unittest.TestCase):
    def setUp(self):
        self.clocks = Clocks()
        self.record = GapRecord(lambda: self.clocks.mono, lambda: self.clocks.wall, window=60)

    def beats(self, *pauses):
        self.record.beat()
        for pause in pauses:
            self.clocks.advance(pause)
            self.record.beat()

    def test_each_heartbeat_after_the_first_ends_a_gap(self):
        """Beats 0.5 s, 0.7 s and 0.04 s apart: three gaps, their sum and the largest; the first beat ends none."""
        self.beats(0.5, 0.7, 0.04)
        snapshot = self.record.snapshot()
        self.assertEqual(snapshot.count, 3)
        self.assertAlmostEqual(snapshot.total, 1.24)
        self.assertAlmostEqual(snapshot.largest, 0.7)

    def test_the_histogram_is_cumulative_over_the_bounds(self):
        """0.04 s falls at 0.05, 0.5 at 0.5, 0.7 at 1: every bound counts the gaps at or below it; +Inf counts all."""
        self.beats(0.5, 0.7, 0.04)
        buckets = dict(self.record.snapshot().buckets)
        self.assertEqual(tuple(buckets), GAP_BUCKETS)
        self.assertEqual(buckets[0.025], 0)
        self.assertEqual(buckets[0.05], 1)
        self.assertEqual(buckets[0.25], 1)
        self.assertEqual(buckets[0.5], 2)
        self.assertEqual(buckets[1.0], 3)
        self.assertEqual(buckets[math.inf], 3)

    def test_forget_counts_no_gap_up_to_the_next_beat(self):
        """After forget (a change of role), the next beat ends no gap, however long the pause was."""
        self.beats(0.5)
        self.record.forget()
        self.clocks.advance(30)
        self.record.beat()
        snapshot = self.record.snapshot()
        self.assertEqual(snapshot.count, 1)
        self.assertAlmostEqual(snapshot.largest, 0.5)

    def test_each_second_keeps_its_largest_gap_and_its_heartbeats(self):
        """Three beats in one second and a late one in the next: per second, the largest gap and the count."""
        self.clocks.wall = T0 + 0.1
        self.beats(0.2, 0.3, 0.9)  # at T0 + .1, .3, .6; then T0 + 1.5
        recent = self.record.snapshot().recent
        self.assertEqual([s for s, _, _ in recent], [int(T0), int(T0) + 1])
        self.assertAlmostEqual(recent[0][1], 0.3)
        self.assertEqual(recent[0][2], 3)
        self.assertAlmostEqual(recent[1][1], 0.9)
        self.assertEqual(recent[1][2], 1)

    def test_seconds_older_than_the_window_are_dropped_and_the_histogram_keeps_them(self):
        """A beat 90 s later (window 60 s): the old second leaves the window; the histogram still counts its gap."""
        self.beats(0.5)
        self.clocks.advance(90)
        self.record.beat()
        snapshot = self.record.snapshot()
        self.assertEqual([s for s, _, _ in snapshot.recent], [int(T0) + 90])
        self.assertEqual(snapshot.count, 2)
        self.assertAlmostEqual(snapshot.largest, 90)

    def test_the_open_gap_is_the_silence_so_far_while_a_heartbeat_is_awaited(self):
        """Awaited: the time since the last beat; not awaited, or nothing heard yet: none."""
        self.assertIsNone(self.record.snapshot(awaiting=True).open_gap)
        self.beats(0.5)
        self.clocks.advance(1.25)
        self.assertAlmostEqual(self.record.snapshot(awaiting=True).open_gap, 1.25)
        self.assertIsNone(self.record.snapshot(awaiting=False).open_gap)
        self.assertAlmostEqual(self.record.snapshot(awaiting=True).recent_largest(), 1.25)

    def test_quantiles_are_the_windows_gaps_not_bucket_bounds(self):
        """98 gaps of 0.5007 s, one of 0.52 and one of 0.7: p50 0.5007 (not the bucket's 1.0), p99 0.52, p99.9 0.7."""
        self.beats(*([0.5007] * 98 + [0.52, 0.7]))
        p50, p99, p999 = self.record.snapshot().quantiles(0.5, 0.99, 0.999)
        self.assertAlmostEqual(p50, 0.5007)
        self.assertAlmostEqual(p99, 0.52)
        self.assertAlmostEqual(p999, 0.7)
        self.assertEqual(GapSnapshot().quantiles(0.5, 0.99), (None, None))

    def test_quantiles_count_only_the_gaps_of_the_window(self):
        """A 9 s gap, then 60 s of 0.5 s gaps (window 60 s): the 9 s gap has left the window's quantiles."""
        self.beats(9.0, *([0.5] * 120))
        snapshot = self.record.snapshot()
        self.assertAlmostEqual(snapshot.quantiles(1.0)[0], 0.5)
        self.assertAlmostEqual(snapshot.largest, 9.0)  # since the start, as the histogram


def transition(at, previous, role, epoch=1, cause="test"):
    return Transition(at, previous, role, epoch, cause)


class RoleSpanTests(unittest.TestCase):
    def test_no_transition_in_the_window_is_one_span_of_the_role_now(self):
        self.assertEqual(role_spans([], "backup", 0, 300), [(0, 300, "backup")])

    def test_a_transition_inside_splits_the_window_at_its_time(self):
        """Backup until 200, live since: the earlier role is the transition's previous one."""
        spans = role_spans([transition(200, "backup", "live")], "live", 0, 300)
        self.assertEqual(spans, [(0, 200, "backup"), (200, 300, "live")])

    def test_nothing_is_drawn_before_the_node_started(self):
        """The first transition kept is out of starting: the node started then; no span before it."""
        spans = role_spans([transition(100, "starting", "backup"), transition(200, "backup", "live")], "live", 0, 300)
        self.assertEqual(spans, [(100, 200, "backup"), (200, 300, "live")])

    def test_a_transition_before_the_window_gives_the_first_role(self):
        spans = role_spans([transition(-50, "starting", "backup"), transition(100, "backup", "live")], "live", 0, 300)
        self.assertEqual(spans, [(0, 100, "backup"), (100, 300, "live")])


def parse(svg):
    return ET.fromstring(svg)


class ChartTests(unittest.TestCase):
    """The chart, read back as SVG: what it draws is what the gaps say."""

    def history(self, heard=(), sent=(), open_gap=None, at=T0 + 300):
        return GapHistory(
            heard=GapSnapshot(recent=tuple(heard), open_gap=open_gap),
            sent=GapSnapshot(recent=tuple(sent)),
            at=at,
        )

    def test_it_is_well_formed_svg_with_a_summary_for_people_and_screen_readers(self):
        """The largest gap of the window and its share of the threshold: in the title, the label and the text."""
        heard = [(int(T0) + 10, 0.51, 2), (int(T0) + 11, 1.5, 1)]
        root = parse(chart_svg(self.history(heard), 2.0, 0.5, [], "backup"))
        self.assertEqual(root.tag, SVG + "svg")
        title = root.find(SVG + "title").text
        self.assertEqual(title, "Largest heartbeat gap in the last 5 min: heard 1.500 s (75% of the threshold 2 s).")
        self.assertEqual(root.get("aria-label"), title)
        self.assertEqual(root.find(f"{SVG}text[@class='summary']").text, title)

    def y_of_threshold(self, root):
        line = root.find(f"{SVG}line[@class='threshold']")
        self.assertEqual(line.get("y1"), line.get("y2"))
        return float(line.get("y1"))

    def strokes(self, root, name):
        path = root.find(f"{SVG}path[@class='gaps-{name}']")
        if path is None:
            return []
        return [segment for segment in path.get("d").split("M") if segment]

    def test_one_stroke_per_second_reaching_its_gap_against_the_threshold(self):
        """A gap of exactly the threshold reaches the threshold's line; half of it reaches half as high."""
        heard = [(int(T0) + 100, 2.0, 1), (int(T0) + 101, 1.0, 2)]
        root = parse(chart_svg(self.history(heard), 2.0, 0.5, [], "backup"))
        strokes = self.strokes(root, "heard")
        self.assertEqual(len(strokes), 2)
        (base, top_full), (_, top_half) = [
            (float(s.split(" ")[1].split("V")[0]), float(s.split("V")[1])) for s in strokes
        ]
        self.assertAlmostEqual(top_full, self.y_of_threshold(root), places=1)
        self.assertAlmostEqual(base - top_half, (base - top_full) / 2, places=1)
        self.assertEqual(self.strokes(root, "sent"), [])

    def test_sent_gaps_are_drawn_apart_from_heard_ones(self):
        root = parse(chart_svg(self.history(sent=[(int(T0) + 5, 0.2, 4)]), 1.0, 0.1, [], "live"))
        self.assertEqual(len(self.strokes(root, "sent")), 1)
        self.assertEqual(self.strokes(root, "heard"), [])
        # A gap sent is this node's own lateness, not measured against the threshold (the backup acts on gaps heard).
        self.assertEqual("Largest heartbeat gap in the last 5 min: sent 0.200 s.", root.find(SVG + "title").text)

    def test_seconds_outside_the_window_are_not_drawn_past_its_edges(self):
        """The x of every stroke stays within the plot, whatever the second."""
        heard = [(int(T0) - 500, 0.3, 1), (int(T0) + 299, 0.3, 1)]
        root = parse(chart_svg(self.history(heard), 1.0, 0.1, [], "backup"))
        frame = root.findall(SVG + "rect")[1]  # the plot's frame, after the background
        left, width = float(frame.get("x")), float(frame.get("width"))
        for segment in self.strokes(root, "heard"):
            x = float(segment.split(" ")[0])
            self.assertTrue(left <= x <= left + width, (x, left, width))

    def test_the_open_gap_is_drawn_only_past_the_interval(self):
        """Silent for 1.2 s (interval 0.5): an orange bar; silent for 0.2 s: none."""
        heard = [(int(T0) + 290, 0.5, 1)]
        long = parse(chart_svg(self.history(heard, open_gap=1.2), 2.0, 0.5, [], "backup"))
        short = parse(chart_svg(self.history(heard, open_gap=0.2), 2.0, 0.5, [], "backup"))
        self.assertIsNotNone(long.find(f"{SVG}line[@class='open-gap']"))
        self.assertIsNone(short.find(f"{SVG}line[@class='open-gap']"))

    def test_the_roles_band_and_a_mark_per_transition_in_the_window(self):
        """A takeover 100 s ago: a backup span, then a live one, and one transition mark titled with its cause."""
        transitions = [
            transition(T0 - 1000, "starting", "backup", 0, "started as backup"),
            transition(T0 + 200, "backup", "live", 1, "no heartbeat for 2 s"),
        ]
        root = parse(chart_svg(self.history(), 2.0, 0.5, transitions, "live"))
        spans = [r.get("data-role") for r in root.findall(f"{SVG}rect[@class='role-span']")]
        self.assertEqual(spans, ["backup", "live"])
        marks = root.findall(f"{SVG}line[@class='transition']")
        self.assertEqual(len(marks), 1)
        self.assertEqual(marks[0].find(SVG + "title").text, "backup to live, epoch 1: no heartbeat for 2 s")

    def test_text_from_the_node_is_escaped(self):
        """A cause with markup stays text: the SVG still parses and holds it literally."""
        transitions = [transition(T0 + 200, "backup", "live", 1, '<script>"&')]
        root = parse(chart_svg(self.history(), 2.0, 0.5, transitions, "live"))
        self.assertIn('<script>"&', root.find(f"{SVG}line[@class='transition']").find(SVG + "title").text)

    def test_the_scale_always_shows_the_threshold(self):
        """Gaps far below the threshold: the threshold's line is still inside the plot."""
        root = parse(chart_svg(self.history([(int(T0) + 5, 0.01, 1)]), 5.0, 0.5, [], "backup"))
        frame = root.findall(SVG + "rect")[1]
        top = float(frame.get("y"))
        self.assertGreater(self.y_of_threshold(root), top)

    def test_nothing_heard_or_sent_says_so(self):
        self.assertEqual(summary(self.history(), 2.0), "No heartbeat heard or sent in the last 5 minutes.")


class NodeGapTests(NodeTestCase):
    """A node's gaps, from heartbeats over in-memory transports, as /metrics, /api/gaps and the chart show them."""

    def heartbeats(self, node, pauses):
        protocol, _ = self.inbound(node)
        for seq, pause in enumerate(pauses, start=1):
            self.reactor.advance(pause)
            protocol.dataReceived(frame_bytes(protocol, wire.Kind.HEARTBEAT, "serv_a", wire.Role.LIVE, seq=seq))
        return protocol

    def test_a_backup_exports_the_gaps_it_hears_as_a_histogram(self):
        """Gaps 0.5, 0.5, 1.25: count 3, sum 2.25, two at or below 0.5, all three at or below 2."""
        node = self.make_node()
        self.heartbeats(node, (0.5, 0.5, 0.5, 1.25))
        samples = scrape(node)
        name = "iwayfailover_heartbeat_gap_seconds"
        self.assertEqual(value(samples, name + "_count"), 3)
        self.assertAlmostEqual(value(samples, name + "_sum"), 2.25)
        self.assertEqual(value(samples, name + "_bucket", le="0.5"), 2)
        self.assertEqual(value(samples, name + "_bucket", le="1.0"), 2)
        self.assertEqual(value(samples, name + "_bucket", le="2.0"), 3)
        self.assertEqual(value(samples, "iwayfailover_heartbeat_send_gap_seconds_count"), 0)
        self.assertEqual(value(samples, "iwayfailover_recent_max_heartbeat_gap_seconds"), 1.25)

    def test_a_live_node_exports_the_gaps_between_the_heartbeats_it_sends(self):
        """Live with an interval of 0.5 s: each heartbeat sent ends a gap of 0.5 s."""
        node = self.make_node(name="serv_a", backup=False)
        self.answering_backup(node)
        self.step(2.05)
        samples = scrape(node)
        name = "iwayfailover_heartbeat_send_gap_seconds"
        count = value(samples, name + "_count")
        self.assertGreaterEqual(count, 3)
        self.assertLess(abs(value(samples, name + "_sum") / count - 0.5), 0.05)  # the clock moves in steps of 0.05 s
        self.assertEqual(value(samples, "iwayfailover_heartbeat_gap_seconds_count"), 0)

    def test_the_time_without_a_link_is_no_send_gap(self):
        """A live node's link to its backup drops and comes back 3 s later: no gap of 3 s is counted as sent."""
        node = self.make_node(name="serv_a", backup=False)
        protocol, _ = self.answering_backup(node)
        self.step(1.05)
        protocol.connectionLost(Failure(ConnectionDone()))
        self.step(3.0)
        self.answering_backup(node)
        self.step(1.05)
        self.assertLess(node.status().heartbeats.gaps.sent.largest, 1.0)

    def get(self, node, path, client=None):
        """GET C{path} on the node's console, from this host (or from C{client})."""
        root = console_root(ThroughInterface(node))
        if client is not None:
            inner = root

            class From(Resource):
                def getChildWithDefault(self, child, request):
                    request.getClientAddress = lambda: client
                    return inner.getChildWithDefault(child, request)

            root = From()
        client = StubTreq(root)
        response = self.successResultOf(client.get("http://console" + path, allow_redirects=False))
        return response, self.successResultOf(client.content(response))

    def test_api_gaps_gives_the_seconds_and_the_open_gap(self):
        """GET /api/gaps from this host: the heard side's count, largest gap, quantiles and the silence now."""
        node = self.make_node()
        self.heartbeats(node, (0.5, 0.5, 1.25))
        self.reactor.advance(0.75)
        response, body = self.get(node, "/api/gaps")
        self.assertEqual(response.code, 200)
        gaps = json.loads(body)
        self.assertEqual(gaps["window"], 300)
        self.assertEqual(gaps["heard"]["count"], 2)
        self.assertEqual(gaps["heard"]["largest"], 1.25)
        self.assertEqual(gaps["heard"]["open_gap"], 0.75)
        self.assertEqual((gaps["heard"]["p50"], gaps["heard"]["p99"]), (0.5, 1.25))
        self.assertEqual(sum(n for _, _, n in gaps["heard"]["seconds"]), 3)
        self.assertEqual(gaps["sent"]["count"], 0)

    def test_the_chart_is_served_as_svg_from_the_node(self):
        """The chart's resource: an SVG (its content type said) with the node's threshold and one stroke per second heard."""
        node = self.make_node()
        self.heartbeats(node, (0.5, 1.0))
        request = DummyRequest([b""])
        body = ChartResource(SimpleNamespace(node=ThroughInterface(node))).render(request)
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"image/svg+xml; charset=utf-8"])
        root = parse(body)
        threshold = node.status().settings.threshold
        self.assertIn(f"threshold {threshold:g} s", "".join(root.itertext()))
        self.assertEqual(len(root.find(f"{SVG}path[@class='gaps-heard']").get("d").split("M")) - 1, 1)

    def test_the_chart_is_a_console_page_that_needs_a_login(self):
        """GET /charts/heartbeat.svg without a login, from this host or another: sent to log in, no SVG."""
        node = self.make_node()
        self.heartbeats(node, (0.5, 1.0))
        for client in (None, IPv4Address("TCP", "192.0.2.9", 40000)):
            response, body = self.get(node, "/charts/heartbeat.svg", client=client)
            self.assertEqual((response.code, response.headers.getRawHeaders(b"location")), (303, [b"/login"]))
            self.assertNotIn(b"<svg", body)

    def test_api_gaps_with_a_cursor_lists_the_new_gaps_and_refuses_a_bad_one(self):
        node = self.make_node()
        self.heartbeats(node, (0.5, 0.5, 1.25))
        response, body = self.get(node, "/api/gaps?heard_since=1")
        self.assertEqual(json.loads(body)["heard"]["new"], [1.25])
        response, body = self.get(node, "/api/gaps?heard_since=soon")
        self.assertEqual(response.code, 400)
        self.assertIn("heard_since must be a whole number", json.loads(body)["error"])

    def test_api_gaps_from_another_host_needs_a_login(self):
        """As /api/status: open to this host's clients only."""
        response, _ = self.get(self.make_node(), "/api/gaps", client=IPv4Address("TCP", "192.0.2.9", 40000))
        self.assertEqual(response.code, 401)


class CursorTests(unittest.TestCase):
    """Reading every gap, a window at a time: /api/gaps?heard_since=N."""

    def setUp(self):
        self.clocks = Clocks()
        self.record = GapRecord(lambda: self.clocks.mono, lambda: self.clocks.wall, window=60)
        self.record.beat()

    def beat(self, *pauses):
        for pause in pauses:
            self.clocks.advance(pause)
            self.record.beat()

    def read(self, since):
        return GapHistory(heard=self.record.snapshot(), at=self.clocks.wall).to_json(heard_since=since)["heard"]

    def test_a_reader_that_comes_back_with_the_count_misses_none(self):
        self.beat(0.5, 0.25)
        first = self.read(0)
        self.assertEqual((first["new"], first["missed"], first["count"]), ([0.5, 0.25], 0, 2))
        self.beat(0.75)
        second = self.read(first["count"])
        self.assertEqual((second["new"], second["missed"]), ([0.75], 0))
        self.assertEqual(self.read(second["count"])["new"], [])

    def test_gaps_that_left_the_window_unread_are_counted_as_missed(self):
        """Ten gaps, then 61 s: only the last gap is in the window; the nine before it were missed."""
        self.beat(*([0.5] * 9), 61.0)
        late = self.read(0)
        self.assertEqual((late["new"], late["missed"]), ([61.0], 9))

    def test_without_a_cursor_no_list(self):
        self.beat(0.5)
        self.assertNotIn("new", GapHistory(heard=self.record.snapshot()).to_json()["heard"])
