"""summary.md: the verdicts, the expectations and a per-phase table, for a CI job summary or a
pull-request comment (GitHub-flavoured Markdown, no HTML)."""

from __future__ import annotations

from chaoslab.report import words
from chaoslab.report.model import Report, Verdict
from chaoslab.scenario.model import Status

MARK = {True: "✅", False: "❌"}
STATUS_MARK = {
    Status.ABSORBED: "✅",
    Status.NO_CHANGE: "✅",
    Status.INCONCLUSIVE: "⚠️",
    Status.INVALID: "❌",
}


def render(report: Report) -> str:
    verdicts = {v.phase: v for v in report.verdicts}
    late = sum(c.late for c in report.client)
    lines = [
        f"### chaoslab `{report.scenario}`: {MARK[report.passed]} {words.outcome(report)}",
        "",
        f"Run `{report.run_id[:8]}` on the {report.runtime} runtime"
        f"{' on the ' + report.engine if report.engine else ''}, {words.utc(report.started)}, "
        f"{words.span(report):.0f} s.",
        "",
        *([f"**{report.abort.sentence()}**", ""] if report.abort else []),
        "| phase | faults | requests | errors | p50 ms | p99 ms | max ms | verdict |",
        "|---|---|--:|--:|--:|--:|--:|---|",
    ]
    for phase in report.phases:
        c = next((c for c in report.client if c.phase == phase.name), None)
        faults = ", ".join(words.fault_label(f) for f in phase.faults) or "–"
        v = verdicts.get(phase.name)
        verdict = _verdict_cell(v) if v else ("baseline" if phase is report.phases[0] else "–")
        if phase.aborted:
            verdict = "**aborted**"
        nums = (
            [str(c.requests), str(c.errors), f"{c.p50_ms:.1f}", f"{c.p99_ms:.1f}", f"{c.max_ms:.1f}"]
            if c
            else ["", "", "", "", ""]
        )
        lines.append("| " + " | ".join(_cell(x) for x in [phase.name, faults, *nums, verdict]) + " |")
    split = words.split_rows(report)
    if split:
        lines += ["", "**Client split (HTTP)**: mean ms a request", ""]
        lines += ["| " + " | ".join(words.SPLIT_COLUMNS) + " |", "|---" + "|--:" * 8 + "|---|"]
        lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in split]
    lines += ["", "**Verdicts**", ""]
    lines += [f"- {STATUS_MARK[v.status]} {v.sentence()}" for v in report.verdicts] or [
        "- no compared phases: nothing to attribute"
    ]
    if report.baseline_drift:
        lines.append(f"- ⚠️ {report.baseline_drift}")
    for sw in report.sweeps:
        lines += ["", f"**Sweep {sw.name}**: {sw.sentence()}", ""]
        lines += ["| " + " | ".join(words.SWEEP_COLUMNS) + " |", "|---|--:|--:|--:|---|--:|---|"]
        lines += ["| " + " | ".join(_cell(x) for x in row) + " |" for row in words.sweep_rows(sw)]
    if report.expectations:
        lines += ["", "**Expectations**", ""]
        lines += [
            f"- {MARK[e.held or not e.required]} `{e.expectation}`: {e.outcome} ({e.detail})"
            for e in report.expectations
        ]
    saturated = report.generator is not None and report.generator.saturated
    lines += [
        "",
        f"**Load generator** {MARK[not saturated]} {words.generator_summary(report.generator, late)}",
        "",
        *(f"- {line}" for line in words.worker_lines(report.generator)),
        *([""] if words.worker_lines(report.generator) else []),
        f"**Probes** {', '.join(p.split(':', 1)[0] for p in report.probes) or 'none'}",
        "",
        *([f"**Observer cost** {words.observer_summary(report)}", ""] if report.observer else []),
        *(f"**xDS** {line}\n" for line in words.xds_lines(report.xds)),
        *(
            f"**Errors** {line}\n"
            for line in words.error_lines(
                report.errors,
                report.phases[0].name if report.phases else "",
                {p.name: p.start - p.settle_s for p in report.phases},
            )
        ),
    ]
    return "\n".join(lines)


def _verdict_cell(v: Verdict) -> str:
    text = _verdict_text(v)
    return f"{text}; Go runtime: {', '.join(v.runtime)}" if v.runtime else text


def _verdict_text(v: Verdict) -> str:
    if v.status is Status.ABSORBED:
        primary = v.primary_causes
        if len(primary) > 1:
            by = " + ".join(f"{c.name} {c.share:.0%}" for c in primary)
        else:
            by = f"{v.layer} at {v.target}"
        others = [c for c in v.causes if c not in primary and (c.layer, c.target) != (v.layer, v.target)]
        side = "; side effect " + ", ".join(f"{c.name} {c.share:.0%}" for c in others) if others else ""
        return f"**absorbed** by {by}, {v.explained:.0%} explained{side}"
    return f"**{v.status}**" + (f": {v.reason}" if v.status is not Status.NO_CHANGE else "")


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")
