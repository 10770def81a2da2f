"""A sweep's curve: per value of the swept parameter, what the client saw and which layer
absorbed it; the breaking point (the first value an expectation failed at) and where the
absorbing layer changed."""

from __future__ import annotations

from collections import Counter

from chaoslab.report.model import ErrorRow, Report, SweepRecord, SweepValue, Verdict
from chaoslab.scenario.model import Expectation, Status, SweepSpec

# Errors above the baseline's rate by this much are what a value's load met, whatever
# absorbed the rest: a timeout turning a delay into 504s, a breaker opening.
ERRORS_ABSORB = 0.01


def curves(
    sweeps: tuple[SweepSpec, ...], expect: tuple[Expectation, ...], report: Report
) -> list[SweepRecord]:
    return [curve(s, expect, report) for s in sweeps]


def curve(sweep: SweepSpec, expect: tuple[Expectation, ...], report: Report) -> SweepRecord:
    client = {c.phase: c for c in report.client}
    verdicts = {v.phase: v for v in report.verdicts}
    base = client.get(report.phases[0].name) if report.phases else None
    base_rate = base.errors / base.requests if base and base.requests else 0.0
    values: list[SweepValue] = []
    for point in sweep.points:
        row = client.get(point.phase)
        if row is None:  # not run: the run stopped before it
            continue
        rate = row.errors / row.requests if row.requests else 0.0
        verdict = verdicts.get(point.phase)
        results = [e for e in report.expectations if e.sweep == sweep.name and e.phase == point.phase]
        failed = [f"{e.expectation.split(': ', 1)[1]} ({e.detail})" for e in results if not e.held]
        values.append(
            SweepValue(
                point.value,
                point.x,
                point.phase,
                row.requests,
                round(rate, 6),
                row.p50_ms,
                row.p99_ms,
                str(verdict.status) if verdict else "",
                _absorber(verdict, rate - base_rate, row.errors_by_kind, report.errors, point.phase),
                (verdict.layer or "") if verdict and verdict.status is Status.ABSORBED else "",
                (verdict.target or "") if verdict and verdict.status is Status.ABSORBED else "",
                verdict.explained if verdict else 0.0,
                not failed,
                failed,
            )
        )
    broken = next((v for v in values if not v.held), None)
    through = next((e.through_text for e in expect if e.sweep == sweep.name and e.through_text), "")
    runs: list[list[str]] = []
    for v in values:
        if runs and runs[-1][0] == v.absorber:
            runs[-1][2] = v.value
        else:
            runs.append([v.absorber, v.value, v.value])
    return SweepRecord(
        sweep.name,
        sweep.kind,
        sweep.target,
        sweep.param,
        values,
        broken.value if broken else "",
        broken.failed[0] if broken else "",
        through,
        runs,
    )


def _absorber(
    verdict: Verdict | None, added_rate: float, kinds: dict[str, int], rows: list[ErrorRow], phase: str
) -> str:
    """Who took the value's fault: the errors when they rose, else the verdict's main cause."""
    if added_rate >= ERRORS_ABSORB:
        envoy = max((r for r in rows if r.phase == phase and r.errors), key=lambda r: r.errors, default=None)
        if envoy is not None:
            flag = Counter(envoy.flags).most_common(1)
            return f"errors at {envoy.target}" + (f" ({flag[0][0]})" if flag else "")
        kind = Counter(kinds).most_common(1)
        return "errors" + (f" ({kind[0][0]})" if kind else "")
    if verdict is None:
        return "no verdict"
    if verdict.status is Status.ABSORBED and verdict.layer:
        return f"{verdict.layer} at {verdict.target}"
    return str(verdict.status)
