"""Render a Report, or a comparison of two runs, to the terminal (rich); the files are written by
the writers (writers.py)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text

from chaoslab.report import words
from chaoslab.report.comparison import Change, Comparison
from chaoslab.report.model import ClientRow, Report
from chaoslab.scenario.model import Status

STYLE = {
    Status.ABSORBED: "green",
    Status.NO_CHANGE: "cyan",
    Status.INCONCLUSIVE: "yellow",
    Status.INVALID: "red",
}


LEFT = {"phase", "target", "layer", "cause", "fault", "value", "absorbed by", "expectations"}


def _table(title: str, columns: tuple[str, ...], rows: Sequence[tuple[str, ...]]) -> Table:
    t = Table(title=title, title_justify="left")
    for col in columns:
        t.add_column(col, justify="left" if col in LEFT else "right")
    for row in rows:
        t.add_row(*row)
    return t


def client_table(report: Report) -> Table:
    cols = (
        "phase",
        "requests",
        "errors",
        "rate/s",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9 ms",
        "max ms",
        "late",
        "sent late p50/p99 ms",
    )
    mix = len({c.name for c in report.requests}) > 1
    rows = []
    for c in report.client:
        rows.append(_client_cells(c.phase, c))
        if mix:
            rows.extend(
                _client_cells(f"  {n.name} ({n.protocol})", n)
                for n in report.requests
                if n.phase == c.phase and n.requests
            )
    return _table("client (from due time)", cols, rows)


def _client_cells(label: str, c: ClientRow) -> tuple[str, ...]:
    errors = str(c.errors)
    if c.errors_by_kind:
        errors += " (" + ", ".join(f"{k} {n}" for k, n in sorted(c.errors_by_kind.items())) + ")"
    return (
        label,
        str(c.requests),
        errors,
        f"{c.rate:.1f}",
        f"{c.p50_ms:.1f}",
        f"{c.p90_ms:.1f}",
        f"{c.p99_ms:.1f}",
        f"{c.p999_ms:.1f}",
        f"{c.max_ms:.1f}",
        str(c.late),
        f"{c.sent_p50_ms:.2f} / {c.sent_p99_ms:.2f}",
    )


METRIC_SHOWN_MS = 0.05  # a layer's metric is listed on the terminal from this per-request share on


def layer_table(report: Report) -> Table:
    cols = ("phase", "target", "layer", "count", "p50 ms", "p99 ms", "mean ms", "per-request ms")
    rows = [
        (
            r.phase,
            r.target,
            r.layer if not r.metric else f"  {r.metric}",
            str(r.count),
            f"{r.p50_ms:.3f}",
            f"{r.p99_ms:.3f}",
            f"{r.mean_ms:.3f}",
            f"{r.per_request_ms:.3f}",
        )
        for r in report.layers
        if not r.metric or r.per_request_ms >= METRIC_SHOWN_MS or r.metric.endswith("(count)")
    ]
    return _table("layers (per-request share = layer time / client requests)", cols, rows)


def added_table(report: Report) -> Table:
    cols = ("phase", "target", "layer", "added/request ms", "added p50 ms", "added p99 ms", "explained", "p")
    rows = [
        (
            v.phase,
            c.target,
            c.layer,
            f"{c.added_ms:+.2f}",
            f"{c.added_p50_ms:+.3f}",
            f"{c.added_p99_ms:+.3f}",
            f"{c.explained:.0%}",
            f"{c.p_value:.1g}" + ("" if c.significant else " (n.s.)"),
        )
        for v in report.verdicts
        for c in v.contributions
    ]
    return _table("added against baseline, per compared phase", cols, rows)


def causes_table(report: Report) -> Table:
    """Each compared phase's causes side by side: their added time, share and fault."""
    cols = ("phase", "cause", "added/request ms", "share", "fault")
    rows = [
        (v.phase, c.name, f"{c.added_ms:+.2f}", f"{c.share:.0%}", c.origin())
        for v in report.verdicts
        for c in v.causes
    ]
    return _table("causes (layers that hold no other cause's time), per compared phase", cols, rows)


def verdict_lines(report: Report) -> RenderableType:
    lines: list[RenderableType] = []
    if report.abort is not None:
        lines.append(Text(report.abort.sentence(), style="bold red"))
    for v in report.verdicts:
        lines.append(Text(v.sentence(), style=STYLE[v.status]))
    if not report.verdicts:
        none = "no verdicts: the run was aborted" if report.abort else "no fault phases: nothing to attribute"
        lines.append(Text(none))
    if report.baseline_drift:
        lines.append(Text(f"warning: {report.baseline_drift}", style="yellow"))
    lines.extend(Text(line) for line in words.worker_lines(report.generator))
    if report.generator is not None and report.generator.saturated:
        for reason in report.generator.reasons:
            lines.append(
                Text(f"load generator SATURATED: {reason}; latency figures are not trustworthy", style="red")
            )
    if observer := words.observer_summary(report):
        style = "red" if any(c.lost for c in report.observer) else None
        style = style or ("yellow" if any(c.over_budget for c in report.observer) else "")
        lines.append(Text(observer, style=style))
    for line in words.xds_lines(report.xds):
        lines.append(Text(line, style="red" if "NOT synced" in line else ""))
    baseline = report.phases[0].name if report.phases else ""
    starts = {p.name: p.start - p.settle_s for p in report.phases}
    for line in words.error_lines(report.errors, baseline, starts):
        lines.append(Text(line, style="yellow"))
    for e in report.expectations:
        mark = (e.outcome, {"held": "green", "FAILED": "red"}.get(e.outcome, "yellow"))
        lines.append(Text.assemble(f"expect {e.expectation}: ", mark, f" ({e.detail})"))
    return Group(*lines)


def sweep_tables(report: Report) -> list[RenderableType]:
    """Each sweep's curve as a table, and its sentence (absorbers, breaking point)."""
    out: list[RenderableType] = []
    for s in report.sweeps:
        out.append(
            _table(
                f"sweep {s.name}: {s.kind} {s.param} at {s.target}", words.SWEEP_COLUMNS, words.sweep_rows(s)
            )
        )
        out.append(Text(s.sentence(), style="yellow" if s.breaking_point else "green"))
    return out


def print_report(report: Report, console: Console, out_dir: Path | None) -> None:
    console.print(client_table(report))
    split = words.split_rows(report)
    if split:
        console.print(_table("client split (HTTP): mean ms a request", words.SPLIT_COLUMNS, split))
    console.print(layer_table(report))
    for part in sweep_tables(report):
        console.print(part)
    if report.verdicts:
        console.print(added_table(report))
    if any(v.causes for v in report.verdicts):
        console.print(causes_table(report))
    console.print(verdict_lines(report))
    if out_dir is not None:
        console.print(f"report: {out_dir / 'report.json'}")


CHANGE_STYLE = {Change.SAME: "cyan", Change.BETTER: "green", Change.WORSE: "red"}


def print_comparison(c: Comparison, console: Console) -> None:
    cols = ("phase", "target", "layer", "base ms/req", "ms/req", "change", "of client's")
    rows = [
        (
            p.phase,
            lc.target,
            lc.layer,
            f"{lc.base_ms:.3f}",
            f"{lc.current_ms:.3f}",
            f"{lc.change_ms:+.3f}",
            f"{lc.explained:.0%}",
        )
        for p in c.phases
        for lc in p.layers
        if abs(lc.change_ms) >= METRIC_SHOWN_MS
    ]
    console.print(_table(f"layers, {c.base.path} -> {c.current.path}", cols, rows))
    cols = ("phase", "metric", "base ms", "ms", "change", "p", "counted")
    rows = [
        (
            p.phase,
            m.metric,
            f"{m.base_ms:.2f}",
            f"{m.current_ms:.2f}",
            f"{m.change_ms:+.2f}",
            f"{m.p_value:.2g}",
            "yes" if m.counted else "no",
        )
        for p in c.phases
        for m in p.client
    ]
    console.print(_table(f"client, a change counts from {c.threshold.describe()}", cols, rows))
    for note in c.notes:
        console.print(Text(f"note: {note}", style="yellow"))
    for p in c.phases:
        console.print(Text(p.sentence(), style=CHANGE_STYLE[p.status]))
