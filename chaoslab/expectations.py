"""Check a scenario's `expect:` list against a finished report."""

from __future__ import annotations

from collections.abc import Iterable

from chaoslab.report.model import Cause, ExpectationResult, Report, XdsVersion
from chaoslab.scenario.model import Expectation, Status


def check(e: Expectation, report: Report) -> ExpectationResult:
    phase = next((p for p in report.phases if p.name == e.phase), None)
    if report.abort is not None and (phase is None or phase.aborted):
        why = "was aborted" if phase is not None else "did not run: the run was aborted before it"
        return ExpectationResult(
            e.describe(),
            e.path,
            False,
            f"the phase {why} ({report.abort.condition})",
            e.binding,
            e.sweep,
            e.phase,
        )
    failures: list[str] = []
    seen: list[str] = []
    verdict = next((v for v in report.verdicts if v.phase == e.phase), None)
    client = next((c for c in report.client if c.phase == e.phase), None)
    if e.absorbed_by or e.status or e.causes or e.cause:
        if verdict is None:
            failures.append("the phase has no verdict (it has no faults)")
        else:
            seen.append(
                f"status {verdict.status}"
                + (f", layer {verdict.layer} at {verdict.target}" if verdict.layer else "")
            )
            if verdict.causes and (e.causes or e.cause or len(verdict.causes) > 1):
                seen.append("causes " + ", ".join(f"{c.name} {c.share:.0%}" for c in verdict.causes))
            if verdict.status is Status.INVALID:
                failures.append(f"the phase is INVALID: {verdict.reason}")
            if e.status and verdict.status is not e.status:
                failures.append(f"status is {verdict.status}, expected {e.status}")
            if e.absorbed_by:
                if verdict.status is not Status.ABSORBED or verdict.layer != e.absorbed_by:
                    failures.append(f"not absorbed by {e.absorbed_by}")
                elif e.target and verdict.target != e.target:
                    failures.append(f"absorbed at {verdict.target}, expected {e.target}")
            if e.causes:
                if verdict.status is not Status.ABSORBED:
                    failures.append(f"not absorbed (status {verdict.status})")
                for ref in e.causes:
                    if not any(ref.fits(c.layer, c.target) for c in verdict.causes):
                        failures.append(f"{ref.describe()} is not a cause")
            if e.cause is not None and verdict.status is not Status.INVALID:
                failures += _share(e, verdict.causes, seen)
    if client is not None:
        if e.client_p50_below is not None:
            seen.append(f"p50 {client.p50_ms:.1f}ms")
            if client.p50_ms >= e.client_p50_below * 1000:
                failures.append(
                    f"client p50 {client.p50_ms:.1f}ms is not below {e.client_p50_below * 1000:g}ms"
                )
        if e.client_p99_below is not None:
            seen.append(f"p99 {client.p99_ms:.1f}ms")
            if client.p99_ms >= e.client_p99_below * 1000:
                failures.append(
                    f"client p99 {client.p99_ms:.1f}ms is not below {e.client_p99_below * 1000:g}ms"
                )
        if e.error_rate_below is not None:
            rate = client.errors / client.requests if client.requests else 1.0
            seen.append(f"error rate {rate:.2%}")
            if rate >= e.error_rate_below:
                failures.append(f"error rate {rate:.2%} is not below {e.error_rate_below:.2%}")
    elif any(x is not None for x in (e.client_p50_below, e.client_p99_below, e.error_rate_below)):
        failures.append("no client data for the phase")
    if e.xds_sync_below is not None:
        failures += _xds_sync(e.xds_sync_below, [v for v in report.xds if v.phase == e.phase], seen)
    detail = "; ".join(failures) if failures else ", ".join(seen)
    return ExpectationResult(e.describe(), e.path, not failures, detail, e.binding, e.sweep, e.phase)


def _xds_sync(limit: float, rows: list[XdsVersion], seen: list[str]) -> list[str]:
    """Every config version of the phase synced (ACKed by its Envoy) within `limit` seconds."""
    if not rows:
        return ["no config version was set in the phase"]
    rows = [v for v in rows if not v.superseded]
    if not rows:
        return ["no config version of the phase reached its Envoy"]
    unsynced = [v for v in rows if v.sync_ms is None]
    times = [v.sync_ms for v in rows if v.sync_ms is not None]
    if times:
        seen.append(f"xds sync max {max(times):.1f}ms over {len(times)} versions")
    out = [f"version {v.version} to {v.node} ({v.why}) was not synced" for v in unsynced]
    slow = [v for v in rows if v.sync_ms is not None and v.sync_ms >= limit * 1000]
    out += [f"version {v.version} to {v.node} ({v.why}) took {v.sync_ms:.1f}ms" for v in slow]
    return out


def _share(e: Expectation, causes: list[Cause], seen: list[str]) -> list[str]:
    """A cause's share (the causes it fits, together) against the expectation's bounds."""
    assert e.cause is not None
    fitting = [c for c in causes if e.cause.fits(c.layer, c.target)]
    if not fitting and e.share_at_least is not None:
        return [f"{e.cause.describe()} is not a cause"]
    share = sum(c.share for c in fitting)
    seen.append(f"{e.cause.describe()} explains {share:.0%}")
    out = []
    if e.share_at_least is not None and share < e.share_at_least:
        out.append(f"{e.cause.describe()} explains {share:.0%}, not at least {e.share_at_least:.0%}")
    if e.share_below is not None and share >= e.share_below:
        out.append(f"{e.cause.describe()} explains {share:.0%}, not below {e.share_below:.0%}")
    return out


def check_all(expect: Iterable[Expectation], report: Report) -> list[ExpectationResult]:
    return [check(e, report) for e in expect]
