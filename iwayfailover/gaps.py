"""
The gaps between heartbeats, kept for people to look at: how close did the
pair come to a takeover? One L{GapRecord} per direction (heard from the live
node while a backup, sent to the backup while live) keeps a histogram since
the node started (C{/metrics}) and the largest gap of each second of the last
minutes (the console's chart, C{/api/gaps}). L{GapSnapshot} is what the
status carries; L{chart_svg} draws it against the threshold, with the node's
roles over the same minutes.

Measuring only: the decision core never reads these.
"""

from __future__ import annotations

import bisect
import collections
import math
from dataclasses import dataclass, field
from typing import Callable, Optional, Sequence, Tuple

GAP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.15, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, math.inf)
"""The upper bounds, in seconds, of the gap histograms: fine around the short
thresholds (0.15 s, 0.3 s), coarse up to the long ones."""

WINDOW = 300
"""Seconds of per-second maxima kept for the chart: the last five minutes."""

MAX_GAPS = 20000
"""Gaps kept for the window's quantiles: five minutes of heartbeats 15 ms apart (about 0.5 MB at most)."""


@dataclass(frozen=True)
class GapSnapshot:
    """
    One direction's gaps at one moment.

    @ivar buckets: C{(upper bound, cumulative count)} for every bound of L{GAP_BUCKETS}.
    @ivar recent: C{(second, largest gap, heartbeats)} for each Unix second of
        the window in which a heartbeat came, oldest first.
    @ivar gaps: every gap that ended in the window, oldest first (for its
        quantiles: the histogram's are only as fine as its buckets).
    @ivar open_gap: seconds since the last heartbeat, while one is awaited
        (the gap still growing); None when none is awaited.
    """

    buckets: Tuple[Tuple[float, int], ...] = tuple((bound, 0) for bound in GAP_BUCKETS)
    count: int = 0
    total: float = 0.0
    largest: float = 0.0
    recent: Tuple[Tuple[int, float, int], ...] = ()
    gaps: Tuple[float, ...] = ()
    open_gap: Optional[float] = None

    def recent_largest(self) -> float:
        """The largest gap of the window (the open one included)."""
        return max([g for _, g, _ in self.recent] + [self.open_gap or 0.0])

    def recent_count(self) -> int:
        return sum(n for _, _, n in self.recent)

    def quantiles(self, *qs: float) -> Tuple[Optional[float], ...]:
        """The gaps of the window at quantiles C{qs} (nearest rank), each None when the window holds no gap."""
        if not self.gaps:
            return tuple(None for _ in qs)
        ordered = sorted(self.gaps)
        return tuple(ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))] for q in qs)


class GapRecord:
    """
    The gaps between successive heartbeats of one direction.

    L{beat} at each heartbeat; L{forget} when the next heartbeat does not
    follow the last one (the node changed role, or the link is new), so that
    the time between is not counted as a gap.

    @param now: the monotonic clock gaps are measured on.
    @param wall: the wall clock the chart's seconds are read from.
    """

    def __init__(self, now: Callable[[], float], wall: Callable[[], float], window: int = WINDOW):
        self._now = now
        self._wall = wall
        self._window = window
        self._counts = [0] * len(GAP_BUCKETS)
        self.count = 0
        self.total = 0.0
        self.largest = 0.0
        self._last: Optional[float] = None
        self._seconds: collections.deque = collections.deque()  # [second, largest, heartbeats]
        # The window's gaps and when each ended, side by side: a snapshot copies the values at C speed
        # (node.status() is read several times for each console page).
        self._gap_values: collections.deque = collections.deque(maxlen=MAX_GAPS)
        self._gap_times: collections.deque = collections.deque(maxlen=MAX_GAPS)

    def beat(self) -> Optional[float]:
        """A heartbeat now: record the gap since the previous one; return it (None for the first)."""
        now = self._now()
        last, self._last = self._last, now
        second = int(self._wall())
        seconds = self._seconds
        if seconds and seconds[-1][0] == second:
            entry = seconds[-1]
        else:
            entry = [second, 0.0, 0]
            seconds.append(entry)
            while seconds and seconds[0][0] <= second - self._window:
                seconds.popleft()
        entry[2] += 1
        if last is None:
            return None
        gap = max(0.0, now - last)
        self._counts[bisect.bisect_left(GAP_BUCKETS, gap)] += 1
        self.count += 1
        self.total += gap
        self.largest = max(self.largest, gap)
        entry[1] = max(entry[1], gap)
        self._gap_values.append(gap)
        self._gap_times.append(now)
        self._trim(now)
        return gap

    def _trim(self, now: float) -> None:
        """Let go of the gaps that ended before the window."""
        times, values = self._gap_times, self._gap_values
        while times and times[0] <= now - self._window:
            times.popleft()
            values.popleft()

    def forget(self) -> None:
        """The next heartbeat starts afresh: no gap is counted up to it."""
        self._last = None

    def snapshot(self, awaiting: bool = False) -> GapSnapshot:
        """
        How the gaps stand now.

        @param awaiting: is a heartbeat awaited now (a backup hearing a live
            node, a live node sending)? Then the time since the last one is
            the open gap.
        """
        cutoff = int(self._wall()) - self._window
        cumulative, buckets = 0, []
        for bound, n in zip(GAP_BUCKETS, self._counts):
            cumulative += n
            buckets.append((bound, cumulative))
        self._trim(self._now())
        return GapSnapshot(
            buckets=tuple(buckets), count=self.count, total=self.total, largest=self.largest,
            recent=tuple((s, g, n) for s, g, n in self._seconds if s > cutoff),
            gaps=tuple(self._gap_values),
            open_gap=max(0.0, self._now() - self._last) if awaiting and self._last is not None else None,
        )


@dataclass(frozen=True)
class GapHistory:
    """Both directions' gaps, as the status carries them: heard (as a backup) and sent (as live)."""

    heard: GapSnapshot = field(default_factory=GapSnapshot)
    sent: GapSnapshot = field(default_factory=GapSnapshot)
    at: float = 0.0
    """The Unix time of the snapshots."""
    window: int = WINDOW

    def to_json(self, heard_since: Optional[int] = None, sent_since: Optional[int] = None) -> dict:
        """
        C{GET /api/gaps}: every second of the window with a heartbeat, and
        the quantiles of the window's gaps. With C{heard_since} (or
        C{sent_since}) N, that side also lists C{new}: every gap after the
        Nth since the start that is still in the window, in order (a reader
        that comes back with C{since} = C{count} misses none, as long as it
        comes back within the window), and C{missed}: how many after the Nth
        have left the window unread.
        """

        def side(snapshot: GapSnapshot, since: Optional[int]) -> dict:
            p50, p99, p999 = (None if q is None else round(q, 4) for q in snapshot.quantiles(0.5, 0.99, 0.999))
            entry = {
                "count": snapshot.count,
                "largest": round(snapshot.largest, 4),
                "p50": p50, "p99": p99, "p999": p999,
                "open_gap": None if snapshot.open_gap is None else round(snapshot.open_gap, 4),
                "seconds": [[s, round(g, 4), n] for s, g, n in snapshot.recent],
            }
            if since is not None:
                first = snapshot.count - len(snapshot.gaps)  # the number of the gap before the window's first
                since = max(0, min(since, snapshot.count))
                entry["new"] = [round(g, 5) for g in snapshot.gaps[max(0, since - first):]]
                entry["missed"] = max(0, first - since)
            return entry

        return {
            "at": round(self.at, 3), "window": self.window,
            "heard": side(self.heard, heard_since), "sent": side(self.sent, sent_since),
        }


# -- the chart --

ROLE_COLOURS = {
    "live": "#2e7d32", "backup": "#607d8b", "starting": "#9e9e9e", "handing_over": "#ef6c00",
    "stopping": "#ef6c00", "fenced": "#c62828", "stopped": "#424242",
}
HEARD, SENT, OPEN, THRESHOLD = "#1565c0", "#8d6e63", "#ef6c00", "#c62828"


def _nice_top(value: float) -> float:
    """The smallest of 1, 2, 2.5, 5 x 10^k at or above C{value}."""
    if value <= 0:
        return 1.0
    exponent = math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        top = step * 10 ** exponent
        if top >= value - 1e-12:
            return top
    return 10 ** (exponent + 1)  # pragma: no cover


def _fmt(seconds: float) -> str:
    if seconds >= 1 or seconds == 0:
        return f"{round(seconds, 6):g} s"
    return f"{round(seconds * 1000, 3):g} ms"


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")


def role_spans(transitions: Sequence, role: str, start: float, end: float) -> list:
    """
    The node's roles over C{[start, end]}: C{(from, to, role)} spans, from
    its transitions (oldest first, each with C{at}, C{previous}, C{role}) and
    its role now. Before the oldest transition kept, its C{previous} role.
    """
    inside = [t for t in transitions if start < t.at <= end]
    before = [t for t in transitions if t.at <= start]
    if before:
        first = before[-1].role
    elif inside:
        # A first transition out of starting is the node's start: nothing ran before it.
        first = None if inside[0].previous in (None, "starting") else inside[0].previous
    else:
        first = role
    spans, at, current = [], start, first
    for t in inside:
        if t.at > at and current is not None:
            spans.append((at, t.at, current))
        at, current = t.at, t.role
    spans.append((at, end, current))
    return spans


def chart_svg(history: GapHistory, threshold: float, interval: float, transitions: Sequence, role: str,
              width: int = 760, height: int = 260) -> str:
    """
    An SVG picture of the last L{WINDOW} seconds up to the snapshots' time:
    the largest heartbeat gap of each second, heard (blue) and sent (brown),
    the open gap (orange), the threshold (red, dashed) and the interval, over
    a band of the node's roles with a mark at each transition.
    """
    window, at = history.window, history.at
    left, right, top, bottom = 56, 12, 46, 34
    plot_w, plot_h = width - left - right, height - top - bottom
    start = at - window
    largest = max(history.heard.recent_largest(), history.sent.recent_largest())
    need = max(threshold * 1.15, largest * 1.05, interval * 2)
    step = _nice_top(need / 4)  # four or five round ticks
    ticks = math.ceil(need / step - 1e-9)
    y_top = ticks * step

    def x(t: float) -> float:
        return left + max(0.0, min(1.0, (t - start) / window)) * plot_w

    def y(gap: float) -> float:
        return top + plot_h - min(gap, y_top) / y_top * plot_h

    parts = []
    add = parts.append
    text = summary(history, threshold)
    add(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'role="img" aria-label="{_esc(text)}" font-family="sans-serif" font-size="11">')
    add(f"<title>{_esc(text)}</title>")
    add(f'<rect x="0" y="0" width="{width}" height="{height}" fill="#ffffff"/>')
    # The roles' band, with a mark and a tooltip at each transition.
    add(f'<text class="summary" x="{left}" y="13" fill="#212121" font-size="12">{_esc(text)}</text>')
    band_y, band_h = 24, 10
    for begin, end, span_role in role_spans(transitions, role, start, at):
        colour = ROLE_COLOURS.get(span_role, "#9e9e9e")
        add(f'<rect class="role-span" data-role="{_esc(span_role)}" x="{x(begin):.1f}" y="{band_y}" '
            f'width="{max(0.5, x(end) - x(begin)):.1f}" height="{band_h}" fill="{colour}">'
            f"<title>{_esc(span_role)}</title></rect>")
    for t in transitions:
        if start < t.at <= at:
            tip = f"{t.previous or '?'} to {t.role}, epoch {t.epoch}" + (f": {t.cause}" if t.cause else "")
            add(f'<line class="transition" x1="{x(t.at):.1f}" x2="{x(t.at):.1f}" y1="{band_y - 4}" y2="{top + plot_h}" '
                f'stroke="#424242" stroke-width="1" stroke-dasharray="2 2"><title>{_esc(tip)}</title></line>')
    add(f'<text x="{left - 4}" y="{band_y + 9}" text-anchor="end" fill="#424242">role</text>')
    # Axes and grid.
    add(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#bdbdbd"/>')
    for i in range(ticks + 1):
        value = step * i
        add(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(value):.1f}" y2="{y(value):.1f}" stroke="#eeeeee"/>')
        add(f'<text x="{left - 4}" y="{y(value) + 4:.1f}" text-anchor="end" fill="#616161">{_fmt(value)}</text>')
    for minutes in range(window // 60 + 1):
        t = at - minutes * 60
        label = "now" if minutes == 0 else f"-{minutes} min"
        add(f'<text x="{x(t):.1f}" y="{top + plot_h + 14}" text-anchor="middle" fill="#616161">{label}</text>')
    # The gaps: one vertical stroke per second, each at its largest gap.
    for colour, snapshot, name in ((SENT, history.sent, "sent"), (HEARD, history.heard, "heard")):
        strokes = " ".join(f"M{x(s + 0.5):.1f} {y(0):.1f}V{y(g):.1f}" for s, g, _ in snapshot.recent if g > 0)
        if strokes:
            add(f'<path class="gaps-{name}" d="{strokes}" stroke="{colour}" stroke-width="2" fill="none"/>')
    for snapshot in (history.heard, history.sent):
        if snapshot.open_gap is not None and snapshot.open_gap > interval:
            add(f'<line class="open-gap" x1="{x(at) - 2:.1f}" x2="{x(at) - 2:.1f}" y1="{y(0):.1f}" '
                f'y2="{y(snapshot.open_gap):.1f}" stroke="{OPEN}" stroke-width="4">'
                f"<title>silent for {snapshot.open_gap:.3f} s now</title></line>")
    # The threshold and the interval.
    add(f'<line class="threshold" x1="{left}" x2="{left + plot_w}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
        f'stroke="{THRESHOLD}" stroke-width="1.5" stroke-dasharray="6 4"/>')
    add(f'<text x="{left + plot_w - 4}" y="{y(threshold) - 4:.1f}" text-anchor="end" fill="{THRESHOLD}">'
        f"threshold {_fmt(threshold)}</text>")
    if interval > 0:
        add(f'<line x1="{left}" x2="{left + plot_w}" y1="{y(interval):.1f}" y2="{y(interval):.1f}" '
            f'stroke="#9e9e9e" stroke-dasharray="1 3"/>')
        add(f'<text x="{left + 4}" y="{y(interval) - 4:.1f}" fill="#757575">interval {_fmt(interval)}</text>')
    # The legend.
    legend_y = height - 6
    add(f'<rect x="{left}" y="{legend_y - 8}" width="10" height="8" fill="{HEARD}"/>'
        f'<text x="{left + 14}" y="{legend_y}" fill="#424242">largest gap heard each second (as backup)</text>')
    add(f'<rect x="{left + 290}" y="{legend_y - 8}" width="10" height="8" fill="{SENT}"/>'
        f'<text x="{left + 304}" y="{legend_y}" fill="#424242">sent (as live)</text>')
    add(f'<rect x="{left + 400}" y="{legend_y - 8}" width="10" height="8" fill="{OPEN}"/>'
        f'<text x="{left + 414}" y="{legend_y}" fill="#424242">silent now</text>')
    add("</svg>")
    return "".join(parts)


def summary(history: GapHistory, threshold: float) -> str:
    """One sentence for the chart's title and the page: the largest gap of the window against the threshold."""
    minutes = history.window // 60
    said = []
    for side, snapshot in (("heard", history.heard), ("sent", history.sent)):
        if snapshot.recent_count():
            largest = snapshot.recent_largest()
            # Only a gap heard is measured against the threshold: it is what a backup acts on.
            share = f" ({largest / threshold:.0%} of the threshold {_fmt(threshold)})" if side == "heard" and threshold > 0 else ""
            said.append(f"{side} {largest:.3f} s{share}")
    if not said:
        return f"No heartbeat heard or sent in the last {minutes} minutes."
    return f"Largest heartbeat gap in the last {minutes} min: " + "; ".join(said) + "."

