"""Small phrases every writer shares: a fault in words, times, a run's span."""

from __future__ import annotations

import time
from collections.abc import Sequence

from chaoslab.load.records import PARTS
from chaoslab.report.model import ErrorRow, FaultRecord, GeneratorRecord, Report, SweepRecord, XdsVersion

SECONDS_PARAMS = {"delay", "jitter", "period"}  # fault parameters given in seconds


def param(name: str, value: object) -> str:
    if name in SECONDS_PARAMS and isinstance(value, int | float) and not isinstance(value, bool):
        return f"{name} {duration(float(value))}"
    if isinstance(value, list | tuple):
        return f"{name} {','.join(map(str, value))}"
    return f"{name} {value}"


def fault_label(f: FaultRecord) -> str:
    """`entropy on api (delay 3ms)`: parameters left at zero, empty or false are left out."""
    shown = [param(k, v) for k, v in f.params.items() if v not in (0, 0.0, "", False, None, [], ())]
    return f"{f.kind} on {f.target}" + (f" ({', '.join(shown)})" if shown else "")


def duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def utc(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(epoch))


def iso(epoch: float) -> str:
    """ISO 8601 without a zone (UTC), as JUnit's timestamp attribute wants it."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def span(report: Report) -> float:
    """The run's length in seconds, first phase start to last phase end."""
    if not report.phases:
        return 0.0
    return report.phases[-1].end - report.phases[0].start


def outcome(report: Report) -> str:
    if report.abort is not None:
        return "ABORTED"
    return "passed" if report.passed else "FAILED"


def generator_summary(g: GeneratorRecord | None, late: int) -> str:
    if g is None:
        return "load generator: not recorded"
    cpu = max(g.cpu_by_phase.values(), default=0.0)
    state = "SATURATED: " + "; ".join(g.reasons) if g.saturated else "kept up"
    workers = f"{g.workers} worker" + ("s" if g.workers != 1 else "")
    sends = f"{late} late send" + ("s" if late != 1 else "")
    return f"{g.model} model, {workers}, busiest process {cpu:.2f} cores, {sends}: {state}"


def worker_lines(g: GeneratorRecord | None) -> list[str]:
    """A line per worker, when the load had more than one: its host, part and clock offset."""
    out = []
    for w in g.per_worker if g is not None else []:
        where = f"from {w.host}, clock offset {w.offset_ms:+.2f} ms (round trip {w.rtt_ms:.2f} ms)"
        line = (
            f"worker {w.index} {where if w.remote else 'here'}: {w.requests} requests ({w.share:.0%}), "
            f"{w.rate:.1f}/s, {w.late} sent late while free"
        )
        if w.dropped_at is not None:
            line += f"; DROPPED OUT {w.dropped_at:.1f} s into the load" + (
                f": {w.lost} of its arrivals never sent (lost)" if w.lost else ""
            )
        out.append(line)
    return out


def ms(value: float, signed: bool = False) -> str:
    """Milliseconds with a precision that fits their size."""
    digits = 3 if abs(value) < 1 else 1 if abs(value) < 100 else 0
    return f"{value:+.{digits}f} ms" if signed else f"{value:.{digits}f} ms"


def observer_summary(report: Report) -> str:
    """The probes' own cost per request, in one line ("" when no probe reported a cost)."""
    if not report.observer:
        return ""
    parts = [f"{c.layer} {c.per_request_us:.1f} µs" for c in report.observer]
    total = sum(c.per_request_us for c in report.observer)
    share = sum(c.latency_share for c in report.observer)
    over = [c.layer for c in report.observer if c.over_budget]
    lost = [c.layer for c in report.observer if c.lost]
    text = (
        f"probes' own cost per request {total:.1f} µs, {share:.1%} of the requests' time "
        f"({', '.join(parts)}; budget {report.observer_budget:.0%} a probe"
    )
    if report.trap_us:
        text += f", a uprobe hit timed at {report.trap_us:.1f} µs, {report.trap_emulated_us:.1f} µs emulated)"
    else:
        text += ")"
    if over:
        text += f"; over budget: {', '.join(over)}"
    if lost:
        text += f"; detached by the kill switch, lost: {', '.join(lost)}"
    dropped = [f"{c.layer} {c.dropped}" for c in report.observer if c.dropped]
    if dropped:
        text += (
            f"; EVENTS DROPPED, a BPF map was full: {', '.join(dropped)} "
            "(missing from those layers' figures; CHAOSLAB_BPF_MAP_ENTRIES sizes the maps)"
        )
    return text


def xds_lines(rows: Sequence[XdsVersion]) -> list[str]:
    """One line per control plane and node: its versions, their sync times, what was not synced."""
    lines = []
    for control, node in dict.fromkeys((v.control, v.node) for v in rows):
        mine = [v for v in rows if (v.control, v.node) == (control, node)]
        # a version set before the first phase waits for its Envoy to start: not a sync time
        synced = sorted(v.sync_ms for v in mine if v.sync_ms is not None and v.phase)
        text = f"xds {control} -> {node}: {len(mine)} versions"
        if synced:
            mean = sum(synced) / len(synced)
            text += f", snapshot to ACK in the phases mean {mean:.1f} ms, max {synced[-1]:.1f} ms"
        # the versions set in the phases, and any that did not reach its Envoy
        later = [v for v in mine if v.phase or (v.sync_ms is None and not v.superseded)]
        text += "".join(
            f"; v{v.version} ({v.why}{', ' + v.phase if v.phase else ''}): "
            + (
                f"{v.sync_ms:.1f} ms"
                if v.sync_ms is not None
                else "replaced by the next before it was sent"
                if v.superseded
                else "NOT synced" + _nack(v)
            )
            + (
                f", slowed by the {v.slowed_by}, against {v.typical_ms:.1f} ms untouched"
                if v.slowed_by
                else ""
            )
            + window(v)
            for v in later[:6]
        )
        if len(later) > 6:
            text += f"; {len(later) - 6} more"
        lines.append(text)
    return lines


def window(v: XdsVersion) -> str:
    """The requests the version had not reached yet, as the Envoy's access log tells."""
    out = ""
    if v.stale_requests:
        out += (
            f", {v.stale_requests} requests after it still went to {', '.join(v.removed)}"
            f" ({v.stale_errors} failed), the last {v.stale_until_ms:.1f} ms after the snapshot"
        )
    if v.first_use_ms is not None:
        out += f", first request to {', '.join(v.added)} {v.first_use_ms:.1f} ms after the snapshot"
    return out


def _nack(v: XdsVersion) -> str:
    errors = [a.error for a in v.acks if a.error]
    return f" (NACK: {errors[0][:120]})" if errors else ""


# Envoy's response flags, in words
FLAG_WORDS = {
    "UH": "no healthy upstream",
    "UF": "upstream connection failure",
    "UO": "circuit breaker overflow",
    "NR": "no route",
    "URX": "retries exhausted",
    "UT": "upstream timeout",
    "UC": "upstream connection terminated",
    "UR": "upstream reset",
    "LR": "local reset",
    "DC": "downstream closed",
    "RL": "rate limited",
    "SI": "stream idle timeout",
    "DT": "request duration timeout",
}


# What Envoy did, for the flag most of its errors carry
FLAG_DEEDS = {
    "UO": "the circuit breaker at {target} failed them fast instead of queueing them",
    "UT": "the timeouts at {target} cut them (the route's, or each try's)",
    "URX": "the retries at {target} ran out",
    "UH": "{target} had no healthy upstream",
    "UF": "{target} could not connect upstream",
}


def error_lines(rows: Sequence[ErrorRow], baseline: str, starts: dict[str, float] | None = None) -> list[str]:
    """Per phase and Envoy whose errors or retries moved from the baseline's: how many, which
    of Envoy's response flags they carry, how fast they failed, and the retries."""
    base = {r.target: r for r in rows if r.phase == baseline}
    lines = []
    for r in rows:
        b = base.get(r.target)
        if r.phase == baseline or b is None or not r.requests:
            continue
        share, b_share = r.errors / r.requests, (b.errors / b.requests if b.requests else 0.0)
        tried, b_tried = r.retried / r.requests, (b.retried / b.requests if b.requests else 0.0)
        if abs(share - b_share) < 0.005 and r.retried <= b.retried and not r.flags:
            continue
        text = f"errors at {r.target} in {r.phase}: {r.errors} of {r.requests}"
        text += f" ({share:.1%}, baseline {b_share:.1%})"
        start = (starts or {}).get(r.phase)
        if start is not None and r.first_error is not None and r.last_error is not None:
            text += f", from {r.first_error - start:.2f} s to {r.last_error - start:.2f} s into the phase"
        if r.flags:
            named = ", ".join(
                f"{f} ({FLAG_WORDS.get(f, 'see Envoy')}) {n}" for f, n in list(r.flags.items())[:4]
            )
            text += f"; Envoy's flags: {named}"
            if r.flagged_p50_ms is not None:
                took = f"{r.flagged_p50_ms:g} ms" if r.flagged_p50_ms >= 1 else "under 1 ms"
                text += f", answered in {took} (median)"
            main = next(iter(r.flags))
            if main in FLAG_DEEDS:
                text += f": {FLAG_DEEDS[main].format(target=r.target)}"
        if r.retried or b.retried:
            text += f"; retried {r.retried} ({tried:.1%}, baseline {b_tried:.1%})"
            if r.retried_ok:
                text += f", {r.retried_ok} of them then succeeded: the retries absorbed those"
        lines.append(text)
    return lines


def sweep_rows(record: SweepRecord) -> list[tuple[str, ...]]:
    """A sweep's values as table rows: value, p50, p99, errors, absorber, explained, expectations."""
    rows: list[tuple[str, ...]] = []
    for v in record.values:
        mark = "held" if v.held else ("BREAKS" if v.value == record.breaking_point else "failed")
        rows.append(
            (
                v.value,
                *((f"{v.p50_ms:.1f}", f"{v.p99_ms:.1f}") if v.error_rate < 1 else ("–", "–")),
                f"{v.error_rate:.2%}",
                v.absorber,
                f"{v.explained:.0%}" if v.layer else "",
                mark,
            )
        )
    return rows


SWEEP_COLUMNS = ("value", "p50 ms", "p99 ms", "errors", "absorbed by", "explained", "expectations")


PART_NAMES = {k: "TLS" if k == "tls" else k for k in PARTS}
SPLIT_COLUMNS = (
    "phase", "requests", "late", "connect", "TLS", "send", "wait", "receive", "total", "against the baseline"
)  # fmt: skip


def split_rows(report: Report) -> list[tuple[str, ...]]:
    """The client split per phase (HTTP): each part's mean ms a request, and where a phase's
    added time went against the baseline (the first phase)."""
    timed = [c for c in report.client if c.split_ms]
    if not timed:
        return []
    first = report.phases[0].name if report.phases else ""
    base = next((c for c in report.client if c.phase == first and c.split_ms), None)
    rows = []
    for c in timed:
        change = c.split_change(base) if base is not None and c is not base else None
        against = f"{change[0]:+.2f} ms, {change[2]:.0%} in {PART_NAMES[change[1]]}" if change else ""
        parts = [f"{c.split_ms[k]:.2f}" for k in PARTS]
        total = f"{sum(c.split_ms.values()):.2f}"
        rows.append((c.phase, str(c.split_requests), *parts, total, against))
    return rows
