"""Error attribution: where the client's errors came from, from what Envoy itself logs.

An envoy target with a generated bootstrap logs each request as a JSON line (its access log:
status, response flags, upstream host, tries). Per phase and Envoy this counts the requests,
the errors (5xx, or no response), each response flag (why Envoy answered as it did: UO its
circuit breaker overflowed, UT the route's timeout, URX retries exhausted, UH no healthy
upstream...), how fast the flagged requests failed, and the requests that took more than
one try: a retry that absorbed a fault shows as tries, not as errors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

from chaoslab.analysis.xds import read_json_lines
from chaoslab.load.records import quantile
from chaoslab.report.model import ErrorRow, PhaseRecord

MAX_LINES = 2_000_000


def read_log(path: Path) -> list[dict[str, object]]:
    """The requests an Envoy logged (none when it logged nothing: a user's own bootstrap)."""
    return read_json_lines(path, MAX_LINES)


def _number(value: object) -> float | None:
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def rows(target: str, log: Iterable[dict[str, object]], phases: Sequence[PhaseRecord]) -> list[ErrorRow]:
    """One row per phase of what this Envoy answered."""
    by_phase: dict[str, list[dict[str, object]]] = {p.name: [] for p in phases}
    for r in log:
        start = _number(r.get("start"))
        if start is None:
            continue
        for p in phases:
            if p.start <= start < p.end:
                by_phase[p.name].append(r)
                break
    out = []
    for p in phases:
        reqs = by_phase[p.name]
        flags: dict[str, int] = {}
        flagged_ms: list[float] = []
        errors = retried = retried_ok = 0
        failed: list[float] = []
        for r in reqs:
            code = _number(r.get("code")) or 0
            bad = code >= 500 or code == 0
            if bad:
                errors += 1
                failed.append(_number(r.get("start")) or 0.0)
            attempts = _number(r.get("attempts")) or 1
            if attempts > 1:
                retried += 1
                retried_ok += not bad
            raw = str(r.get("flags", "-"))
            if raw not in ("-", "", "None"):
                for flag in raw.split(","):
                    flags[flag] = flags.get(flag, 0) + 1
                ms = _number(r.get("ms"))
                if ms is not None:
                    flagged_ms.append(ms)
        flagged_ms.sort()
        out.append(
            ErrorRow(
                phase=p.name,
                target=target,
                requests=len(reqs),
                errors=errors,
                flags=dict(sorted(flags.items(), key=lambda kv: -kv[1])),
                retried=retried,
                retried_ok=retried_ok,
                flagged_p50_ms=round(quantile(flagged_ms, 0.5), 3) if flagged_ms else None,
                first_error=round(min(failed), 3) if failed else None,
                last_error=round(max(failed), 3) if failed else None,
            )
        )
    return out
