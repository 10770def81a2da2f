"""report.html and compare.html: one self-contained page each.

Styles are inlined, charts are SVG drawn in Python (chaoslab/report/svg.py), and the report's
JSON is embedded in the page (`<script type="application/json" id="report-data">`), so
the file opens offline and nothing is fetched. The live page (`run --serve`) is the same page
with a status line and a small script that swaps in a new snapshot every second.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Sequence
from html import escape
from importlib import resources

from chaoslab.analysis.attribution import EXPLAINS
from chaoslab.hist import FineHistogram
from chaoslab.report import svg, words
from chaoslab.report.comparison import Change, Comparison
from chaoslab.report.model import Cause, ClientRow, LiveStatus, Report, Verdict
from chaoslab.scenario.model import Status


@functools.cache
def asset(name: str) -> str:
    """A file of chaoslab/report/assets, inlined into the pages."""
    return (resources.files("chaoslab.report") / "assets" / name).read_text(encoding="utf-8")


def page(title: str, body: str, data: object | None = None, script: str = "", seq: int = 0) -> str:
    embedded = ""
    if data is not None:  # `<` escaped so that no `</script>` can end the block early
        text = json.dumps(data, separators=(",", ":"), default=str).replace("<", "\\u003c")
        embedded = f'<script type="application/json" id="report-data">{text}</script>'
    code = f"<script>{script}</script>" if script else ""
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width,initial-scale=1">'
        '<link rel="icon" href="data:,">'  # no favicon request
        f"<title>{escape(title)}</title><style>{asset('report.css')}</style></head>"
        f'<body data-seq="{seq}">{body}{embedded}{code}</body></html>\n'
    )


def render_report(report: Report) -> str:
    return page(f"chaoslab {report.scenario}: {words.outcome(report)}", report_main(report), report.to_json())


def live_page(report: Report, status: LiveStatus, seq: int, main: str) -> str:
    """The live page around `main` (report_main of the same report and status)."""
    title = f"chaoslab {report.scenario}: " + (words.outcome(report) if status.final else "live")
    data = report.to_json() if status.final else None
    return page(title, main, data, script="" if status.final else asset("live.js"), seq=seq)


def report_main(report: Report, live: LiveStatus | None = None) -> str:
    """The page's content, `<main id="report">`: what the live page swaps in."""
    hists = _client_histograms(report)
    verdicts = {v.phase: v for v in report.verdicts}
    final = live is None or live.final
    if final:
        pill = f'<span class="pill {"passed" if report.passed else "failed"}">{words.outcome(report)}</span>'
    else:
        pill = '<span class="pill live">live</span>'
    late = sum(c.late for c in report.client)
    out = [
        f'<main id="report" data-final="{int(final)}">',
        f"<h1>chaoslab · {escape(report.scenario)} {pill}</h1>",
        f'<p class="sub">run {escape(report.run_id[:12])} · {escape(report.runtime)} runtime'
        f"{escape(' on the ' + report.engine if report.engine else '')} · "
        f"{words.utc(report.started)} · {words.span(report):.0f} s · "
        f"{sum(c.requests for c in report.client)} requests</p>",
    ]
    if live is not None:
        out.append(_live_status(live))
    if report.abort is not None and (live is None or live.final):
        out.append(f'<p class="warn abort" id="abort">{escape(report.abort.sentence())}</p>')
    out.append("<h2>Verdict</h2>")
    if report.verdicts:
        out += [_verdict_card(report, v) for v in report.verdicts]
    elif not final:
        out.append(
            '<p class="sub">Verdicts come when the run ends; each phase\'s client figures appear below '
            "as it finishes.</p>"
        )
    else:
        out.append("<p>No compared phases: nothing to attribute.</p>")
    out += _warnings(report)
    if report.expectations:
        out.append('<ul class="expect" id="expectations">')
        for e in report.expectations:
            mark = {
                "held": '<span class="held">✔ held</span>',
                "FAILED": '<span class="failed">✘ FAILED</span>',
            }.get(e.outcome, '<span class="broke">▲ broke (past the sweep\'s "through")</span>')
            out.append(f"<li>{mark} <b>{escape(e.expectation)}</b>: {escape(e.detail)}</li>")
        out.append("</ul>")

    for sw in report.sweeps:
        out.append(f'<h2 id="sweep-{escape(sw.name)}">Sweep: {escape(sw.name)}</h2>')
        out.append(f'<p class="sub">{escape(sw.sentence())}</p>')
        out.append(svg.sweep(sw))
        out.append(
            _table(
                words.SWEEP_COLUMNS, [[escape(x) for x in row] for row in words.sweep_rows(sw)], 1, "sweep"
            )
        )

    out.append("<h2>Client latency over time</h2>")
    if report.timeline:
        out.append(svg.timeline(report, live.now if live and not live.final else None))
    else:
        out.append('<p class="sub">No requests yet.</p>')

    for v in report.verdicts:
        phase = next((p for p in report.phases if p.name == v.phase), None)
        declared = [(f.layer, f.target) for f in phase.faults] if phase else []
        out.append(f"<h2>Where the added time went: {escape(v.phase)}</h2>")
        out.append(
            f'<p class="sub">Added time per request against {escape(report.phases[0].name)}, '
            "layers nested as "
            "the verdict nests them; a deeper bar is part of the bars above it.</p>"
        )
        out.append(svg.attribution(v, declared))
        out.append(
            f"<h3>Latency per layer: {escape(report.phases[0].name)} (grey) against "
            f"{escape(v.phase)} (orange)</h3>"
        )
        out.append(
            '<p class="sub">Per event of each layer: p50 to p99, ticks at p50, p90, p99, '
            "a dot at the mean.</p>"
        )
        out.append(svg.distributions(report, v.phase, hists))
        out.append(_contribution_table(v))

    if any(p.faults for p in report.phases):
        out.append("<h2>Fault receipts</h2>")
        out.append('<p class="sub">What each fault\'s own mechanism measured while it was active.</p>')
        out.append(_receipts(report, live))

    if hists:
        out.append("<h2>Client latency by percentile</h2>")
        out.append(svg.percentiles(report, hists))
    out.append("<h2>Client, per phase</h2>")
    out.append(_client_table(report, verdicts))
    split = words.split_rows(report)
    if split:
        out.append("<h3>Client split (HTTP): mean ms a request</h3>")
        out.append(
            _table(words.SPLIT_COLUMNS, [[escape(x) for x in row] for row in split], 1, ident="split-table")
        )

    out.append("<h2>Load generator and probes</h2>")
    out.append(_generator(report, late, live))

    if report.layers:
        out.append("<details><summary>Every layer and metric, per phase</summary>")
        out.append(_layer_table(report))
        out.append("</details>")
    out.append("</main>")
    return "\n".join(out)


def _live_status(live: LiveStatus) -> str:
    if live.final:
        return f'<div class="status" id="live-status">Run finished. {escape(live.note)}</div>'
    faults = ", ".join(live.faults) or "none"
    return (
        f'<div class="status" id="live-status">Now: phase <b id="live-phase">{escape(live.phase)}</b> '
        f'{live.elapsed:.0f}/{live.duration:.0f} s · active faults: <b id="live-faults">{escape(faults)}</b>'
        + (f" · {escape(live.note)}" if live.note else "")
        + (f'<br><b class="failed" id="live-abort">{escape(live.abort)}</b>' if live.abort else "")
        + "</div>"
    )


def _verdict_card(report: Report, v: Verdict) -> str:
    primary = v.primary_causes
    if v.status is Status.ABSORBED:
        names = [c.name for c in primary] if len(primary) > 1 else [f"{v.layer} at {v.target}"]
        head = f"{v.phase}: absorbed by {' and '.join(names)}"
        added = v.added_ms if len(v.causes) <= 1 else sum(c.added_ms for c in v.causes)
        segments = "".join(
            f'<i class="c-{escape(c.layer)}" style="width:{w * 100:.0f}%" title="{escape(c.name)} '
            f'{c.share:.0%}"></i>'
            for c, w in _meter(v)
        )
        carried = f"; {v.carried_words()}" if v.carried_words() else ""
        meter = (
            f'<div class="explained"><span class="meter">{segments}</span>'
            f"<span><b>{v.explained:.0%}</b> of the client's added time explained "
            f"({added:+.1f} of {v.client_added_in_phase_ms:+.1f} ms per request in the phase; "
            f"{v.unexplained_ms:.1f} ms unexplained{carried})</span></div>"
        )
    elif v.status is Status.NO_CHANGE:
        head, meter = f"{v.phase}: no significant change", ""
    else:
        head, meter = f"{v.phase}: {v.status.upper()}", ""
    outer = [
        f"{c.layer} at {c.target}"
        for c in v.contributions
        if c.explained >= EXPLAINS and (c.layer, c.target) != (v.layer, v.target)
    ]
    single = v.status is Status.ABSORBED and len(primary) <= 1
    inside = f"Inside {', '.join(outer)}. " if outer and single else ""
    runtime = f" Go runtime: {', '.join(v.runtime)}." if v.runtime else ""
    client = (  # a no-change reason gives these figures itself
        ""
        if v.status is Status.NO_CHANGE
        else f"Client p50 {v.client_added_p50_ms:+.1f} ms, mean {v.client_added_mean_ms:+.1f} ms "
        f"(p={v.p_value:.2g}). "
    )
    return (
        f'<div class="card {v.status}" data-phase="{escape(v.phase)}" data-status="{v.status}">'
        f'<div class="head verdict-text">{escape(head)}</div>{meter}{_causes(v)}'
        f'<div class="why">{escape(inside + client + v.reason[:1].upper() + v.reason[1:])}.'
        f"{escape(runtime)}</div>"
        f'<div class="sentence" hidden>{escape(v.sentence())}</div></div>'
    )


def _meter(v: Verdict) -> list[tuple[Cause, float]]:
    """Each cause's part of the explained meter, side by side, filling it and no more."""
    out, room = [], 1.0
    for c in v.causes:
        w = min(max(c.share, 0.0), room)
        room -= w
        if w > 0:
            out.append((c, w))
    return out


def _causes(v: Verdict) -> str:
    """The causes side by side, when there are several (or some of a verdict that is not absorbed)."""
    if len(v.causes) < 2 and (v.status is Status.ABSORBED or not v.causes):
        return ""
    boxes = "".join(
        f'<div class="cause {c.kind}" data-cause="{escape(c.name)}">'
        f'<b class="c-{escape(c.layer)}">{escape(c.name)}</b>'
        f"<span>{c.added_ms:+.1f} ms per request · <b>{c.share:.0%}</b></span>"
        f"<small>{escape(c.origin())}</small></div>"
        for c in v.causes
    )
    return f'<div class="causes">{boxes}</div>'


def _warnings(report: Report) -> list[str]:
    out = []
    if report.baseline_drift:
        out.append(f'<p class="warn">⚠ {escape(report.baseline_drift)}</p>')
    if report.generator is not None and report.generator.saturated:
        for reason in report.generator.reasons:
            out.append(
                f'<p class="bad">✘ load generator SATURATED: {escape(reason)}; latency figures are '
                "not trustworthy</p>"
            )
    return out


def _table(
    head: Sequence[str], rows: Iterable[Sequence[str]], left: int = 1, cls: str = "", ident: str = ""
) -> str:
    def cell(i: int, text: str, tag: str) -> str:
        c = ' class="l"' if i < left else ""
        return f"<{tag}{c}>{text}</{tag}>"

    c = (f' class="{cls}"' if cls else "") + (f' id="{ident}"' if ident else "")
    out = [f"<table{c}><tr>" + "".join(cell(i, escape(h), "th") for i, h in enumerate(head)) + "</tr>"]
    for row in rows:
        out.append("<tr>" + "".join(cell(i, x, "td") for i, x in enumerate(row)) + "</tr>")
    return "".join(out) + "</table>"


def _contribution_table(v: Verdict) -> str:
    causes = {(c.layer, c.target): c for c in v.causes}
    rows = [
        (
            escape(c.layer),
            escape(c.target),
            f"{c.added_ms:+.3f}",
            f"{c.added_p50_ms:+.3f}",
            f"{c.added_p99_ms:+.3f}",
            f"{c.explained:.0%}",
            f"{c.p_value:.2g}" + ("" if c.significant else " (n.s.)"),
            escape(causes[(c.layer, c.target)].origin()) if (c.layer, c.target) in causes else "",
        )
        for c in v.contributions
    ]
    head = ("layer", "target", "added ms/request", "added p50 ms", "added p99 ms", "explained", "p", "cause")
    return "<details><summary>Every layer's added time</summary>" + _table(head, rows, 2) + "</details>"


def _receipts(report: Report, live: LiveStatus | None) -> str:
    rows = []
    for p in report.phases:
        for f in p.faults:
            measured = ", ".join(f"{k} {v:g}" for k, v in f.measured.items())
            if not f.mechanism:  # a live page's fault not verified yet: no receipt so far
                now = live is not None and not live.final and live.phase == p.name
                mark = "active now" if now else "to come"
            elif f.observed:
                mark = '<span class="held">✔ seen</span>'
            else:
                mark = '<span class="failed">✘ not seen</span>'
            rows.append(
                (
                    escape(p.name),
                    escape(words.fault_label(f)),
                    escape(f.layer),
                    f'<span class="wrap">{escape(f.mechanism)}</span>',
                    mark,
                    f"{escape(f.detail)}" + (f"<br><small>{escape(measured)}</small>" if measured else ""),
                )
            )
    head = ("phase", "fault", "layer", "mechanism", "effect", "its own measurement")
    html = _table(head, rows, 6, "receipts")
    return html.replace('<td class="l"><span class="wrap">', '<td class="wrap"><span>')


def _client_table(report: Report, verdicts: dict[str, Verdict]) -> str:
    mix = len({c.name for c in report.requests}) > 1
    rows = []

    def cells(label: str, c: ClientRow) -> tuple[str, ...]:
        errors = str(c.errors)
        if c.errors_by_kind:
            errors += " (" + ", ".join(f"{k} {n}" for k, n in sorted(c.errors_by_kind.items())) + ")"
        return (
            label,
            str(c.requests),
            f"{c.rate:.1f}",
            escape(errors),
            f"{c.p50_ms:.1f}",
            f"{c.p90_ms:.1f}",
            f"{c.p99_ms:.1f}",
            f"{c.p999_ms:.1f}",
            f"{c.max_ms:.1f}",
            str(c.late),
            f"{c.sent_p50_ms:.2f} / {c.sent_p99_ms:.2f}",
        )

    for c in report.client:
        v = verdicts.get(c.phase)
        status = f' <small class="{v.status}">{escape(str(v.status))}</small>' if v else ""
        rows.append(cells(f"{escape(c.phase)}{status}", c))
        if mix:
            rows.extend(
                cells(f"&nbsp;&nbsp;{escape(n.name)} ({escape(n.protocol)})", n)
                for n in report.requests
                if n.phase == c.phase and n.requests
            )
    head = (
        "phase",
        "requests",
        "rate/s",
        "errors",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "late",
        "sent late p50/p99 ms",
    )
    return _table(head, rows, ident="client-table")


def _generator(report: Report, late: int, live: LiveStatus | None) -> str:
    g = report.generator
    out = ['<div class="kv">']
    if g is not None:
        state = '<span class="bad">SATURATED</span>' if g.saturated else '<span class="held">kept up</span>'
        out.append(
            f"<b>load generator</b><span>{state}: {escape(g.model)} model, {g.workers} worker"
            f"{'s' if g.workers != 1 else ''}</span>"
        )
        for c in report.client:
            cpu, wait = g.cpu_by_phase.get(c.phase), g.wait_by_phase.get(c.phase)
            cpu_text = f"{cpu:.2f} cores" if cpu is not None else "CPU not sampled"
            if wait is not None:
                cpu_text += f" (and {wait:.2f} waiting for a CPU)"
            out.append(
                f"<b>{escape(c.phase)}</b><span>{c.rate:.1f} requests/s, {c.late} late sends "
                f"({c.generator_late} by the generator itself), busiest Locust process {cpu_text}</span>"
            )
        for w, line in zip(g.per_worker, words.worker_lines(g), strict=True):
            out.append(f"<b>worker {w.index}</b><span>{escape(line)}</span>")
        for reason in g.reasons:
            out.append(f'<b class="bad">why</b><span>{escape(reason)}</span>')
    elif live is not None and not live.final:
        out.append(
            "<b>load generator</b><span>its CPU comes when the run ends; rate and late sends so far "
            "are in the client table</span>"
        )
    else:
        out.append(f"<b>load generator</b><span>not recorded ({late} late sends)</span>")
    out.append(
        "<b>probes attached</b><span>"
        + ("<br>".join(escape(p) for p in report.probes) if report.probes else "none (a load-only run)")
        + "</span>"
    )
    if report.left_out:
        out.append(
            "<b>not attached</b><span>"
            + "<br>".join(escape(f"{u.layer} at {u.target}: {u.reason}") for u in report.left_out)
            + "</span>"
        )
    out.append("</div>")
    out.append(_observer_table(report))
    out.append(_xds_table(report))
    out.append(_errors_table(report))
    return "".join(out)


def _errors_table(report: Report) -> str:
    """What each Envoy answered per phase: errors, its response flags, retries."""
    if not report.errors:
        return ""
    rows = [
        (
            escape(r.phase),
            escape(r.target),
            str(r.requests),
            f"{r.errors} ({r.errors / r.requests:.1%})" if r.requests else "0",
            escape(", ".join(f"{f} {n}" for f, n in r.flags.items()) or "-"),
            f"{r.flagged_p50_ms:g}" if r.flagged_p50_ms is not None else "-",
            str(r.retried),
        )
        for r in report.errors
    ]
    head = ("phase", "Envoy", "requests", "errors", "response flags", "flagged p50 ms", "retried")
    baseline = report.phases[0].name if report.phases else ""
    starts = {p.name: p.start - p.settle_s for p in report.phases}
    said = "<br>".join(escape(line) for line in words.error_lines(report.errors, baseline, starts))
    return (
        "<h3>Where the errors came from</h3><p>From each Envoy's access log: UO its circuit breaker "
        "overflowed, UT the route's timeout, URX retries exhausted, UH no healthy upstream, UF a failed "
        f"upstream connection.</p><p>{said}</p>" + _table(head, rows, 2, "receipts")
    )


def _xds_table(report: Report) -> str:
    """Each config version of each control plane, to each Envoy: snapshot to ACK."""
    if not report.xds:
        return ""
    rows = []
    for v in report.xds:
        acks = ", ".join(
            f"{a.type} {a.ack_ms:.2f} ms" if a.ack_ms is not None else f"{a.type} NACK: {a.error[:200]}"
            for a in v.acks
        )
        synced = f"{v.sync_ms:.2f}" if v.sync_ms is not None else '<span class="bad">not synced</span>'
        rows.append(
            (
                escape(f"{v.control} -> {v.node}"),
                escape(v.version),
                escape(v.phase or "-"),
                escape(v.why + (f"; slowed by the {v.slowed_by}" if v.slowed_by else "") + words.window(v)),
                escape(", ".join(v.changed)),
                synced,
                escape(acks),
            )
        )
    head = ("control plane -> Envoy", "version", "phase", "why", "changed", "sync ms", "ACK per type")
    return (
        "<h3>xDS: config versions</h3><p>"
        + "<br>".join(escape(line) for line in words.xds_lines(report.xds))
        + "</p><p>Sync: from the control plane's snapshot to the Envoy's ACK of the last type the "
        "version changed.</p>" + _table(head, rows, 5, "receipts")
    )


def _observer_table(report: Report) -> str:
    """What each probe cost the targets (the act of measuring), against the run's budget."""
    if not report.observer:
        return ""
    rows = []
    for c in report.observer:
        status = f"DETACHED: {c.lost}" if c.lost else "over budget" if c.over_budget else "within"
        cls = "bad" if c.lost or c.over_budget else "held"
        rows.append(
            (
                escape(c.layer),
                escape(c.why),
                str(c.events),
                f"{c.bpf_ms:.1f}",
                str(c.traps),
                escape(", ".join(f"{t} {ms:.1f} ms" for t, ms in c.paid_ms.items())),
                f"{c.per_request_us:.1f}",
                f"{c.latency_share:.1%}",
                f'<span class="{cls}">{escape(status)}</span>',
            )
        )
    head = ("probe", "why attached", "runs", "BPF ms", "traps", "paid by", "µs/request", "of time", "budget")
    return (
        f"<h3>The probes' own cost</h3><p>{escape(words.observer_summary(report))}. BPF run time from the "
        "kernel's statistics, a uprobe hit's trap timed at start-up (stepped out of line: a RET; emulated: "
        "the Go probes' entries); each target pays in proportion to the runs that concerned it.</p>"
        + _table(head, rows, 2, "receipts")
    )


def _layer_table(report: Report) -> str:
    rows = [
        (
            escape(r.phase),
            escape(r.target),
            escape(r.layer if not r.metric else f"  {r.metric}"),
            str(r.count),
            f"{r.p50_ms:.3f}",
            f"{r.p90_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{r.per_request_ms:.3f}",
        )
        for r in report.layers
    ]
    head = ("phase", "target", "layer", "events", "p50 ms", "p90 ms", "p99 ms", "mean ms", "ms/request")
    return _table(head, rows, 3)


def _client_histograms(report: Report) -> dict[str, FineHistogram]:
    phases = report.histograms.get("phases", {})
    out = {}
    if isinstance(phases, dict):
        for name, data in phases.items():
            try:
                out[str(name)] = FineHistogram.from_json(data)
            except ValueError:
                continue  # an unreadable histogram: the charts that need it are left out
    return out


# ---------------------------------------------------------------- the comparison page


CARD = {Change.WORSE: "invalid", Change.BETTER: "absorbed", Change.SAME: "no-change"}  # the cards' colours


def render_comparison(c: Comparison) -> str:
    head = "worse" if c.worse else "no phase worse"
    out = [
        '<main id="report">',
        f"<h1>chaoslab compare · {escape(c.current.scenario)} "
        f'<span class="pill {"failed" if c.worse else "passed"}">{head}</span></h1>',
        f'<p class="sub">base {escape(c.base.path)} ({escape(c.base.scenario)}, '
        f"run {escape(c.base.run_id[:8])}, {words.utc(c.base.started)}) against {escape(c.current.path)} "
        f"({escape(c.current.scenario)}, run "
        f"{escape(c.current.run_id[:8])}, {words.utc(c.current.started)}). A change counts when significant "
        f"(p &lt; 0.001) and beyond {escape(c.threshold.describe())}.</p>",
    ]
    out += [f'<p class="warn">{escape(n)}</p>' for n in c.notes]
    out.append("<h2>Per phase</h2>")
    for p in c.phases:
        out.append(
            f'<div class="card {CARD[p.status]}" '
            f'data-phase="{escape(p.phase)}" data-status="{p.status}">'
            f'<div class="head verdict-text">{escape(p.phase)}'
            + (f" (against {escape(p.base_phase)})" if p.base_phase != p.phase else "")
            + f': <span class="{p.status}">{p.status}</span>'
            + (f", {escape(p.layer)} at {escape(p.target or '')}" if p.layer else "")
            + f'</div><div class="why">{escape(p.reason)}</div>'
        )
        rows = [
            (
                m.metric,
                f"{m.base_ms:.2f}",
                f"{m.current_ms:.2f}",
                f"{m.change_ms:+.2f}",
                f"{m.p_value:.2g}",
                "yes" if m.counted else "no",
            )
            for m in p.client
        ]
        out.append(_table(("client", "base ms", "current ms", "change ms", "p", "counted"), rows))
        out.append(svg.comparison_bars(p))
        lrows = [
            (
                escape(lc.layer),
                escape(lc.target),
                f"{lc.base_ms:.3f}",
                f"{lc.current_ms:.3f}",
                f"{lc.change_ms:+.3f}",
                f"{lc.explained:.0%}",
                "" if lc.added_change_ms is None else f"{lc.added_change_ms:+.3f}",
            )
            for lc in p.layers
        ]
        head_row = (
            "layer",
            "target",
            "base ms/req",
            "current ms/req",
            "change",
            "of client's",
            "added-time change",
        )
        out.append(
            "<details><summary>Every layer, both runs</summary>" + _table(head_row, lrows, 2) + "</details>"
        )
        out.append("</div>")
    out.append("</main>")
    return page(f"chaoslab compare: {head}", "\n".join(out), c.to_json())
