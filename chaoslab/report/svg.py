"""The report's charts, drawn here as SVG text: no JavaScript library, nothing to fetch.

Every chart is a function of the report model returning one `<svg>` element (inline in
HTML5, so without a namespace URL). Colours come from CSS classes the page defines. Each
drawn series is a `<path>` whose `d` holds its points; hovering a second or a bar shows its
numbers through SVG `<title>` elements.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from html import escape

from chaoslab.hist import FineHistogram, bucket_bounds
from chaoslab.layers import DEPTH, Layer
from chaoslab.report import words
from chaoslab.report.comparison import PhaseComparison
from chaoslab.report.model import (
    Cause,
    Contribution,
    LayerRow,
    Report,
    SecondRow,
    SweepRecord,
    SweepValue,
    Verdict,
)
from chaoslab.scenario.model import Status

WIDTH = 960
FONT = 12


def _f(x: float) -> str:
    return f"{x:.1f}".rstrip("0").rstrip(".")


class Svg:
    def __init__(self, width: float, height: float, chart: str, label: str) -> None:
        self.width, self.height = width, height
        self.parts: list[str] = []
        self.chart, self.label = chart, label

    def add(self, part: str) -> None:
        self.parts.append(part)

    def path(self, d: str, cls: str, title: str = "") -> None:
        t = f"<title>{escape(title)}</title>" if title else ""
        self.add(f'<path class="{cls}" d="{d}">{t}</path>' if t else f'<path class="{cls}" d="{d}"/>')

    def rect(self, x: float, y: float, w: float, h: float, cls: str, title: str = "") -> None:
        attrs = f'x="{_f(x)}" y="{_f(y)}" width="{_f(max(w, 0.0))}" height="{_f(max(h, 0.0))}" class="{cls}"'
        self.add(f"<rect {attrs}><title>{escape(title)}</title></rect>" if title else f"<rect {attrs}/>")

    def line(self, x1: float, y1: float, x2: float, y2: float, cls: str) -> None:
        self.add(f'<line x1="{_f(x1)}" y1="{_f(y1)}" x2="{_f(x2)}" y2="{_f(y2)}" class="{cls}"/>')

    def text(self, x: float, y: float, text: str, cls: str = "", anchor: str = "start") -> None:
        a = "" if anchor == "start" else f' text-anchor="{anchor}"'
        c = f' class="{cls}"' if cls else ""
        self.add(f'<text x="{_f(x)}" y="{_f(y)}"{a}{c}>{escape(text)}</text>')

    def render(self) -> str:
        return (
            f'<svg viewBox="0 0 {_f(self.width)} {_f(self.height)}" width="{_f(self.width)}" '
            f'data-chart="{self.chart}" role="img" aria-label="{escape(self.label)}">'
            + "".join(self.parts)
            + "</svg>"
        )


@dataclass(frozen=True)
class LogScale:
    """ms on a log axis, with bounds rounded out to the 1-2-5 series."""

    lo: float
    hi: float
    a: float  # pixel of lo
    b: float  # pixel of hi

    @classmethod
    def over(cls, values: Iterable[float], a: float, b: float) -> LogScale:
        vs = [v for v in values if v > 0]
        lo, hi = (min(vs), max(vs)) if vs else (1.0, 10.0)
        lo, hi = _nice_down(lo), _nice_up(max(hi, lo * 1.01))
        return cls(lo, hi, a, b)

    def __call__(self, v: float) -> float:
        v = min(max(v, self.lo), self.hi)
        return self.a + (self.b - self.a) * math.log(v / self.lo) / math.log(self.hi / self.lo)

    def ticks(self) -> list[float]:
        out = []
        e = math.floor(math.log10(self.lo))
        while 10**e <= self.hi * 1.0001:
            for m in (1, 2, 5):
                v = m * 10.0**e
                if self.lo * 0.9999 <= v <= self.hi * 1.0001:
                    out.append(v)
            e += 1
        if len(out) > 8:  # only the powers of ten on a wide axis
            out = [v for v in out if math.isclose(math.log10(v), round(math.log10(v)))]
        return out


def _nice_down(v: float) -> float:
    e = math.floor(math.log10(v))
    return max(m * 10.0**e for m in (1, 2, 5) if m * 10.0**e <= v * 1.0001)


def _nice_up(v: float) -> float:
    e = math.floor(math.log10(v))
    return min(m * 10.0**e for m in (1, 2, 5, 10) if m * 10.0**e >= v * 0.9999)


def _nice_linear(v: float) -> float:
    return _nice_up(v) if v > 0 else 1.0


def tick_label(v: float) -> str:
    if v >= 1000:
        return f"{v / 1000:g} s"
    return f"{v:g} ms" if v >= 1 else f"{v * 1000:g} µs"


# ---------------------------------------------------------------- the client timeline


def timeline(report: Report, live_until: float | None = None) -> str:
    """p50, p99 and max per second on a log axis, with errors, late sends and the rate below;
    every phase shaded and labelled (fault phases with their faults)."""
    rows = report.timeline
    t0 = report.phases[0].start if report.phases else report.started
    total = max(words.span(report), max((r.second + 1 for r in rows), default=1))
    left, right, top, mid, bottom = 64.0, WIDTH - 16.0, 44.0, 240.0, 340.0
    svg = Svg(WIDTH, bottom + 42, "timeline", "client latency per second, with the phases")

    def x(sec: float) -> float:
        return left + (right - left) * sec / total

    for i, phase in enumerate(report.phases):
        a, b = x(phase.start - t0), x(min(phase.end - t0, total))
        cls = "band-fault" if phase.faults else ("band-base" if i == 0 else "band")
        faults = ", ".join(words.fault_label(f) for f in phase.faults)
        svg.rect(a, top - 30, b - a, bottom - top + 30, cls, f"{phase.name}: {faults or 'no faults'}")
        svg.line(a, top - 30, a, bottom, "edge")
        svg.text(a + 4, top - 17, phase.name, "band-name")
        if faults:
            svg.text(a + 4, top - 4, _fit(faults, b - a - 8), "band-fault-label")
    if live_until is not None:
        now = x(min(live_until - t0, total))
        svg.line(now, top - 30, now, bottom, "now")

    ys = LogScale.over([v for r in rows for v in (r.p50_ms, r.p99_ms, r.max_ms)], mid, top)
    for v in ys.ticks():
        svg.line(left, ys(v), right, ys(v), "grid")
        svg.text(left - 6, ys(v) + 4, tick_label(v), "tick", "end")
    for cls, metric in (("s-max", "max_ms"), ("s-p99", "p99_ms"), ("s-p50", "p50_ms")):
        values = [float(getattr(r, metric)) for r in rows]
        svg.path(
            _series(
                [(x(r.second + 0.5), ys(v) if v > 0 else None) for r, v in zip(rows, values, strict=True)]
            ),
            cls,
        )

    # errors, late sends and the rate, per second, on a linear axis below
    peak = _nice_linear(max((r.requests for r in rows), default=1))
    strip_top = mid + 28

    def yr(v: float) -> float:
        return bottom - (bottom - strip_top) * v / peak

    svg.line(left, bottom, right, bottom, "axis")
    svg.text(left - 6, strip_top + 4, f"{peak:g}/s", "tick", "end")
    svg.text(left - 6, bottom, "0", "tick", "end")
    w = max(1.0, (right - left) / total * 0.8)
    errors = "".join(_bar(x(r.second + 0.1), yr(r.errors), w, bottom) for r in rows if r.errors)
    late = "".join(_bar(x(r.second + 0.1), yr(r.late), w, bottom) for r in rows if r.late)
    if late:
        svg.path(late, "s-late")
    if errors:
        svg.path(errors, "s-errors")
    svg.path(_series([(x(r.second + 0.5), yr(r.requests)) for r in rows]), "s-rate")
    for r in rows:  # hover: one second's numbers
        svg.rect(x(r.second), top, x(r.second + 1) - x(r.second), bottom - top, "hover", _second_title(r))
    for sec in _time_ticks(total):
        svg.text(x(sec), bottom + 16, f"{sec:g}s", "tick", "middle")
    legend = [("s-p50", "p50"), ("s-p99", "p99"), ("s-max", "max"), ("s-rate", "requests/s")]
    _legend(svg, [*legend, ("s-errors", "errors/s"), ("s-late", "late sends/s")], right, bottom + 35)
    return svg.render()


def _legend(svg: Svg, keys: list[tuple[str, str]], right: float, y: float) -> None:
    """Line keys (series class, name), right-aligned at `right`, on the line `y`."""
    lx = right
    for cls, name in reversed(keys):
        lx -= 8 + 7.2 * len(name) + 18
        svg.line(lx, y, lx + 14, y, f"{cls} key")
        svg.text(lx + 18, y + 4, name, "legend")


def _second_title(r: SecondRow) -> str:
    return (
        f"{r.second}s ({r.phase}): {r.requests} requests, p50 {r.p50_ms:.1f} ms, p99 {r.p99_ms:.1f} ms, "
        f"max {r.max_ms:.1f} ms, {r.errors} errors, {r.late} late"
    )


def _series(points: Sequence[tuple[float, float | None]]) -> str:
    """A polyline through the points; None breaks it (a second without a successful request)."""
    out, pen = [], False
    for px, py in points:
        if py is None:
            pen = False
            continue
        out.append(f"{'L' if pen else 'M'}{_f(px)} {_f(py)}")
        pen = True
    if len(out) == 1:  # a single point: a short dash so it is visible
        out.append("h2")
    return "".join(out)


def _bar(x0: float, y: float, w: float, base: float) -> str:
    return f"M{_f(x0)} {_f(base)}V{_f(y)}h{_f(w)}V{_f(base)}Z"


def _time_ticks(total: float) -> list[float]:
    step = next(s for s in (1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 1800, 3600, 1e9) if total / s <= 12)
    return [i * step for i in range(int(total // step) + 1)]


def _fit(text: str, width: float) -> str:
    chars = max(4, int(width / 6.2))
    return text if len(text) <= chars else text[: chars - 1] + "…"


# ---------------------------------------------------------------- where the added time went

ANYWHERE = {Layer.CPU, Layer.SYSCALL, Layer.MEMORY}  # layers that can sit under any other: drawn apart
WIRE = {Layer.NETWORK}  # holds no other layer: beside the nesting, as the verdict's causes see it
# indent of each nested layer: client > proxy > app > tls > entropy and gc
LEVEL = {
    d: i for i, d in enumerate(sorted({DEPTH[layer] for layer in Layer if layer not in ANYWHERE | WIRE}))
}
SHOWN = 0.02  # a layer is drawn from this share of the client's added time on (the rest are listed)


def shown_contributions(v: Verdict, declared: Iterable[tuple[str, str]]) -> list[Contribution]:
    """The layers worth a bar, outermost first: the causes, the faults' declared layers, the
    verdict's, and those explaining >= 2%."""
    keep = {(v.layer, v.target), *declared, *((c.layer, c.target) for c in v.causes)}
    picked = [
        c
        for c in v.contributions
        if (c.layer, c.target) in keep or (c.significant and abs(c.explained) >= SHOWN)
    ]
    return sorted(picked, key=lambda c: (DEPTH[Layer(c.layer)], c.target, c.layer))


def attribution(v: Verdict, declared: Sequence[tuple[str, str]]) -> str:
    """The client's added time per request on top, and under it every layer that holds a part,
    indented by depth (client > proxy > app > tls > entropy), then the wire (network, which holds
    no other layer and sits beside them) and cpu and syscall (which can sit under any of them)
    apart below, all on one scale: a deeper bar is a part of the bars above it. The client's bar is split
    into the parts the verdict's causes hold, side by side, and the unexplained remainder."""
    rows = shown_contributions(v, declared)
    nested = [c for c in rows if Layer(c.layer) not in ANYWHERE | WIRE]
    wire = [c for c in rows if Layer(c.layer) in WIRE]
    anywhere = [c for c in rows if Layer(c.layer) in ANYWHERE]
    captions = {
        id(group[0]): caption
        for group, caption in (
            (wire, "beside them, the wire (it holds no other layer):"),
            (anywhere, "under any of the layers above (cpu, syscall):"),
        )
        if group
    }
    client = v.client_added_in_phase_ms  # what the causes' parts are of
    scale_max = max([client, *(c.added_ms for c in rows), 0.5]) * 1.05
    left, right, row_h = 200.0, WIDTH - 170.0, 26.0
    height = 30 + row_h * (len(rows) + 1) + 22 * len(captions) + 24
    svg = Svg(WIDTH, height, "attribution", f"where the added time went in {v.phase}")

    def x(ms: float) -> float:
        return left + (right - left) * max(ms, 0.0) / scale_max

    y = 24.0
    # the causes' parts, side by side; together they may add more than the client (a stall
    # weighed by every request in flight overlaps the others): they fill the client's bar and no more
    parts: list[tuple[Cause, float]] = []
    if v.status is Status.ABSORBED:
        room = client
        for cause in v.causes:
            part = min(max(cause.added_ms, 0.0), room)
            room -= part
            if part > 0:
                parts.append((cause, part))
    explained_ms = sum(part for _, part in parts)
    causes = {(c.layer, c.target) for c in v.causes} if v.status is Status.ABSORBED else set()
    svg.text(12, y + 17, "client", "row-label")
    if explained_ms > 0:
        at = 0.0
        for cause, part in parts:
            title = (
                f"{cause.name}: {cause.added_ms:+.2f} ms per request, {cause.share:.0%} ({cause.origin()})"
            )
            svg.rect(x(at), y + 4, x(at + part) - x(at), row_h - 8, f"bar-{cause.layer} bar part", title)
            at += part
        rest = max(0.0, client - explained_ms)
        svg.rect(
            x(explained_ms),
            y + 4,
            x(client) - x(explained_ms),
            row_h - 8,
            "bar-unexplained",
            f"unexplained {rest:.2f} ms per request",
        )
        where = " in the phase" if v.carried_words() else ""
        svg.text(x(client) + 6, y + 17, f"{client:+.1f} ms{where} · {v.explained:.0%} explained", "value")
    else:
        title = f"client added {client:.2f} ms per request"
        svg.rect(left, y + 4, max(x(client) - left, 1.0), row_h - 8, "bar-client bar", title)
        svg.text(max(x(client), left) + 6, y + 17, f"{client:+.1f} ms ({v.status})", "value")
    for c in nested + wire + anywhere:
        y += row_h
        if id(c) in captions:
            svg.text(12, y + 14, captions[id(c)], "tick")
            y += 22
        depth = LEVEL[DEPTH[Layer(c.layer)]] if c in nested else 1
        name = f"{c.layer} at {c.target}"
        indent = 12 + 14 * depth
        svg.path(f"M{_f(indent - 9)} {_f(y + 2)}V{_f(y + 13)}h6", "nest")
        svg.text(indent, y + 17, name, "row-label")
        is_cause = (c.layer, c.target) in causes
        cls = f"bar-{c.layer} bar" + (" verdict" if is_cause else "") + ("" if c.significant else " ns")
        title = (
            f"{name}: {c.added_ms:+.3f} ms per request, {c.explained:.0%} of the client's, p={c.p_value:.2g}"
            + ("" if c.significant else " (not significant)")
            + (" (a cause)" if is_cause else "")
        )
        svg.rect(left, y + 4, max(x(c.added_ms) - left, 1.0), row_h - 8, cls, title)
        note = "" if c.significant else " n.s."
        svg.text(
            max(x(c.added_ms), left) + 6, y + 17, f"{c.added_ms:+.1f} ms · {c.explained:.0%}{note}", "value"
        )
    if len(parts) == 1:  # the one cause's added time, down through the rows
        svg.line(x(parts[0][0].added_ms), 24, x(parts[0][0].added_ms), y + row_h, "marker")
    hidden = len(v.contributions) - len(rows)
    svg.text(
        left,
        height - 6,
        f"one scale: 0 to {scale_max:.1f} ms per request"
        + (f"; {hidden} more layers each under {SHOWN:.0%} (table below)" if hidden else ""),
        "tick",
    )
    return svg.render()


# ---------------------------------------------------------------- per-layer distributions


def distributions(report: Report, phase: str, client_hists: dict[str, FineHistogram]) -> str:
    """Each layer at each target: p50 to p99 (ticks at p50, p90, p99, a dot at the mean) in the
    baseline (grey) against the phase (colour), on one log axis; the client first."""
    base = report.phases[0].name
    pairs: list[
        tuple[str, tuple[float, float, float, float] | None, tuple[float, float, float, float] | None]
    ]
    pairs = [("client", _client_q(report, base, client_hists), _client_q(report, phase, client_hists))]
    rows: dict[tuple[str, str], dict[str, LayerRow]] = {}
    for r in report.layers:
        if not r.metric and r.count and r.phase in (base, phase):
            rows.setdefault((r.layer, r.target), {})[r.phase] = r
    for (layer, target), by in sorted(rows.items(), key=lambda kv: (DEPTH[Layer(kv[0][0])], kv[0][1])):
        pairs.append((f"{layer} at {target}", _layer_q(by.get(base)), _layer_q(by.get(phase))))
    scale = LogScale.over([v for _, b, c in pairs for q in (b, c) if q for v in q[:3]], 200.0, WIDTH - 200.0)
    row_h = 30.0
    height = 34 + row_h * len(pairs) + 10
    svg = Svg(WIDTH, height, "distributions", f"per-layer latency, {base} against {phase}")
    for v in scale.ticks():
        svg.line(scale(v), 22, scale(v), height - 8, "grid")
        svg.text(scale(v), 16, tick_label(v), "tick", "middle")
    y = 26.0
    for name, b, c in pairs:
        svg.text(190, y + 18, name, "row-label", "end")
        for q, dy, cls, which in ((b, 8, "q-base", base), (c, 20, "q-phase", phase)):
            if q is None:
                continue
            p50, p90, p99, mean = q
            title = f"{name} in {which}: p50 {p50:.3f} ms, p90 {p90:.3f}, p99 {p99:.3f}, mean {mean:.3f}"
            d = (
                f"M{_f(scale(p50))} {_f(y + dy)}H{_f(max(scale(p99), scale(p50) + 1))}"
                f"M{_f(scale(p50))} {_f(y + dy - 4)}v8M{_f(scale(p90))} {_f(y + dy - 3)}v6"
                f"M{_f(scale(p99))} {_f(y + dy - 4)}v8"
            )
            svg.path(d, cls, title)
            svg.add(f'<circle cx="{_f(scale(mean))}" cy="{_f(y + dy)}" r="2.6" class="{cls}-mean"/>')
        if b and c:
            svg.text(WIDTH - 190, y + 18, f"p50 {words.ms(b[0])} → {words.ms(c[0])}", "value")
        y += row_h
    return svg.render()


def _layer_q(r: LayerRow | None) -> tuple[float, float, float, float] | None:
    return (r.p50_ms, r.p90_ms, r.p99_ms, r.mean_ms) if r is not None else None


def _client_q(
    report: Report, phase: str, hists: dict[str, FineHistogram]
) -> tuple[float, float, float, float] | None:
    row = next((c for c in report.client if c.phase == phase), None)
    h = hists.get(phase)
    if row is None or not row.requests:
        return None
    mean = h.mean_ns / 1e6 if h is not None and h.count else row.p50_ms
    return (row.p50_ms, row.p90_ms, row.p99_ms, mean)


# ---------------------------------------------------------------- client percentiles

SPECTRUM = (0.0, 0.5, 0.9, 0.99, 0.999, 0.9999)


def percentiles(report: Report, hists: dict[str, FineHistogram]) -> str:
    """Each phase's client latency by percentile (HdrHistogram's plot): the x axis stretches the
    tail (50%, 90%, 99%, 99.9%), the y axis is latency on a log scale."""
    left, right, top, bottom = 64.0, WIDTH - 170.0, 14.0, 250.0
    svg = Svg(WIDTH, bottom + 30, "percentiles", "client latency by percentile, per phase")
    curves = {
        p.name: _spectrum(hists[p.name]) for p in report.phases if p.name in hists and hists[p.name].count
    }
    xmax = math.log10(1 / (1 - SPECTRUM[-1]))
    ys = LogScale.over([ms for pts in curves.values() for _, ms in pts], bottom, top)

    def x(q: float) -> float:
        return left + (right - left) * min(math.log10(1 / max(1 - q, 1e-9)), xmax) / xmax

    for v in ys.ticks():
        svg.line(left, ys(v), right, ys(v), "grid")
        svg.text(left - 6, ys(v) + 4, tick_label(v), "tick", "end")
    for q in SPECTRUM[1:]:
        svg.line(x(q), top, x(q), bottom, "grid")
        svg.text(x(q), bottom + 16, f"{q * 100:g}%", "tick", "middle")
    svg.text(left, bottom + 16, "0%", "tick", "middle")
    fault_phases = {p.name for p in report.phases if p.faults}
    for i, (name, pts) in enumerate(curves.items()):
        cls = "pc-base" if i == 0 else "pc-fault" if name in fault_phases else f"pc-other pc-{i % 4}"
        svg.path(_series([(x(q), ys(ms)) for q, ms in pts]), cls, name)
        svg.line(right + 14, top + 8 + 18 * i, right + 34, top + 8 + 18 * i, f"{cls} key")
        svg.text(right + 40, top + 12 + 18 * i, name, "legend")
    return svg.render()


def _spectrum(h: FineHistogram, points: int = 160) -> list[tuple[float, float]]:
    """(quantile, ms) along the histogram, at most `points` of them, ending at the max."""
    n = h.count
    out: list[tuple[float, float]] = []
    seen = 0
    xmax = math.log10(1 / (1 - SPECTRUM[-1]))
    last_x = -1.0
    for b in sorted(h.buckets):
        seen += h.buckets[b]
        q = seen / n
        xq = math.log10(1 / max(1 - q, 1e-9))
        if xq - last_x >= xmax / points or seen == n:
            out.append((min(q, 0.99999), bucket_bounds(b, h.sub_bits)[1] / 1e6))
            last_x = xq
    return out


# ---------------------------------------------------------------- a comparison's changes


def comparison_bars(p: PhaseComparison) -> str:
    """The client's change in mean latency and every layer's change in time per request, as
    bars either side of zero on one scale (right: the current run is slower)."""
    rows = [("client (mean)", p.client_mean_change_ms, "bar-client bar")]
    rows += [
        (f"{lc.layer} at {lc.target}", lc.change_ms, f"bar-{lc.layer} bar")
        for lc in p.layers
        if abs(lc.change_ms) >= 0.01 or (lc.layer, lc.target) == (p.layer, p.target)
    ]
    extent = max([abs(v) for _, v, _ in rows] + [0.5]) * 1.1
    row_h = 22.0
    height = 20 + row_h * len(rows) + 20
    label_w, left, right = 190.0, 200.0, WIDTH - 120.0
    zero = (left + right) / 2
    svg = Svg(WIDTH, height, "comparison", f"changes in {p.phase}")

    def x(v: float) -> float:
        return zero + (right - zero) * v / extent

    svg.line(zero, 10, zero, height - 16, "axis")
    y = 14.0
    for name, value, cls in rows:
        svg.text(label_w, y + 14, name, "row-label", "end")
        a, b = sorted((zero, x(value)))
        svg.rect(a, y + 3, max(b - a, 1.0), row_h - 6, cls, f"{name}: {value:+.3f} ms")
        svg.text(max(x(value), zero) + 6, y + 14, f"{value:+.2f} ms", "value")
        y += row_h
    svg.text(left, height - 4, f"faster ← base → slower (±{extent:.1f} ms)", "tick")
    return svg.render()


# ---------------------------------------------------------------- a sweep's curve


def sweep(record: SweepRecord) -> str:
    """Client p50 and p99 per value of a sweep on a log axis, the error rate below, the
    absorbing layer of each run of values along the top and the breaking point marked."""
    values = record.values
    left, right, top, mid, bottom = 64.0, WIDTH - 16.0, 48.0, 230.0, 300.0
    svg = Svg(WIDTH, bottom + 46, "sweep", f"sweep {record.name}: client latency and errors per value")
    n = max(len(values), 1)

    def x(i: float) -> float:
        return left + (right - left) * (i + 0.5) / n

    at = {v.value: i for i, v in enumerate(values)}
    for k, (who, first, last) in enumerate(record.absorbers):
        a, b = x(at[first] - 0.5), x(at[last] + 0.5)
        svg.rect(a, top - 36, b - a, bottom - top + 36, "band" if k % 2 else "band-base", who)
        svg.line(a, top - 36, a, bottom, "edge")
        svg.text(a + 4, top - 22, _fit(who, b - a - 8), "band-name")
    if record.breaking_point in at:
        bx = x(at[record.breaking_point] - 0.5)
        svg.line(bx, top - 10, bx, bottom, "now")
        svg.text(
            bx + 4, top - 4, _fit(f"breaks at {record.breaking_point}", right - bx - 8), "band-fault-label"
        )
    ys = LogScale.over([m for v in values for m in (v.p50_ms, v.p99_ms)], mid, top)
    for t in ys.ticks():
        svg.line(left, ys(t), right, ys(t), "grid")
        svg.text(left - 6, ys(t) + 4, tick_label(t), "tick", "end")
    for cls, metric in (("s-p99", "p99_ms"), ("s-p50", "p50_ms")):
        svg.path(
            _series(
                [
                    (x(i), ys(getattr(v, metric)) if getattr(v, metric) > 0 else None)
                    for i, v in enumerate(values)
                ]
            ),
            cls,
        )
    peak = max(max((v.error_rate for v in values), default=0.0), 0.01)
    strip_top = mid + 24

    def ye(r: float) -> float:
        return bottom - (bottom - strip_top) * r / peak

    svg.line(left, bottom, right, bottom, "axis")
    svg.text(left - 6, strip_top + 4, f"{peak:.0%}", "tick", "end")
    svg.text(left - 6, bottom, "0", "tick", "end")
    w = (right - left) / n * 0.5
    bars = "".join(
        _bar(x(i) - w / 2, ye(v.error_rate), w, bottom) for i, v in enumerate(values) if v.error_rate
    )
    if bars:
        svg.path(bars, "s-errors")
    for i, v in enumerate(values):
        svg.rect(x(i - 0.5), top, x(i + 0.5) - x(i - 0.5), bottom - top, "hover", _value_title(v))
        svg.text(x(i), bottom + 16, v.value, "tick", "middle")
    svg.text(left, bottom + 38, f"{record.kind} {record.param} at {record.target}", "legend")
    _legend(svg, [("s-p50", "p50"), ("s-p99", "p99"), ("s-errors", "error rate")], right, bottom + 35)
    return svg.render()


def _value_title(v: SweepValue) -> str:
    held = "every expectation held" if v.held else "FAILED: " + "; ".join(v.failed)
    explained = f", {v.explained:.0%} explained" if v.layer else ""
    return (
        f"{v.value}: p50 {v.p50_ms:.1f} ms, p99 {v.p99_ms:.1f} ms, errors {v.error_rate:.2%} of "
        f"{v.requests}; {v.absorber}{explained}; {held}"
    )
