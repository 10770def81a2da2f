"""The client's side of the report: per phase, per request name, per second, and whether
the load generator itself kept up.

Quantiles are exact (every request's times are known); the histograms saved with the
report are FineHistograms (three significant digits), not Locust's rounded buckets.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence

from chaoslab.load.records import PARTS, Request, latency_histogram, quantile
from chaoslab.report.model import ClientRow, GeneratorRecord, SecondRow, WorkerRow

# A Locust process at this share of a core is saturated: its Python code (every user's, on one
# gevent loop) shares one interpreter lock, so it cannot use a second core.
SATURATED_CPU = 0.9
SATURATED_LATE = 0.05  # ... as is one that sent this share of a phase's requests late while idle
# (a few late wake-ups of a busy virtual machine are counted per row as generator_late, but do
# not fail the run: 6 of 400 late sends at 0.15 cores did, on this kind of machine)
MIN_LATE = 5


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 3)


def client_row(
    phase: str, reqs: Sequence[Request], duration: float, name: str = "", protocol: str = ""
) -> ClientRow:
    lat = sorted(r.latency for r in reqs if r.ok)
    errors = Counter(r.error for r in reqs if not r.ok)
    sent = sorted(max(r.late, 0.0) for r in reqs if r.idle)
    answer = sorted(r.end - r.sent for r in reqs if r.ok)
    parts = [p for p in (r.parts() for r in reqs if r.ok) if p is not None]
    by_part = [sorted(column) for column in zip(*parts, strict=True)] if parts else []
    return ClientRow(
        phase=phase,
        requests=len(reqs),
        errors=sum(errors.values()),
        rate=round(len(reqs) / duration, 2) if duration > 0 else 0.0,
        p50_ms=_ms(quantile(lat, 0.5)),
        p90_ms=_ms(quantile(lat, 0.9)),
        p99_ms=_ms(quantile(lat, 0.99)),
        max_ms=_ms(lat[-1] if lat else 0.0),
        late=sum(1 for r in reqs if r.is_late),
        errors_by_kind=dict(errors),
        p999_ms=_ms(quantile(lat, 0.999)),
        name=name,
        protocol=protocol,
        generator_late=sum(1 for r in reqs if r.generator_late),
        sent_p50_ms=_ms(quantile(sent, 0.5)),
        sent_p99_ms=_ms(quantile(sent, 0.99)),
        answer_p50_ms=_ms(quantile(answer, 0.5)),
        answer_p99_ms=_ms(quantile(answer, 0.99)),
        split_requests=len(parts),
        split_ms={k: round(math.fsum(v) / len(v) * 1000, 4) for k, v in zip(PARTS, by_part, strict=False)},
        split_p50_ms={k: _ms(quantile(v, 0.5)) for k, v in zip(PARTS, by_part, strict=False)},
        split_p99_ms={k: _ms(quantile(v, 0.99)) for k, v in zip(PARTS, by_part, strict=False)},
    )


def by_name(
    phase: str, reqs: Sequence[Request], duration: float, protocols: Mapping[str, str]
) -> list[ClientRow]:
    groups: dict[str, list[Request]] = {name: [] for name in protocols}
    for r in reqs:
        groups.setdefault(r.name, []).append(r)
    return [client_row(phase, g, duration, name, protocols.get(name, "")) for name, g in groups.items()]


def seconds(
    records: Sequence[Request], t0: float, phases: Sequence[tuple[str, float, float]]
) -> tuple[list[SecondRow], list[Mapping[str, object]]]:
    """Per second from t0 (by due time): a row and the second's latency histogram."""
    groups: dict[int, list[Request]] = defaultdict(list)
    for r in records:
        if r.due >= t0:
            groups[math.floor(r.due - t0)].append(r)
    rows: list[SecondRow] = []
    hists: list[Mapping[str, object]] = []
    for sec in sorted(groups):
        reqs = groups[sec]
        lat = sorted(r.latency for r in reqs if r.ok)
        at = t0 + sec
        phase = next((name for name, start, end in phases if start <= at < end), "")
        rows.append(
            SecondRow(
                second=sec,
                phase=phase,
                requests=len(reqs),
                errors=sum(1 for r in reqs if not r.ok),
                late=sum(1 for r in reqs if r.is_late),
                p50_ms=_ms(quantile(lat, 0.5)),
                p99_ms=_ms(quantile(lat, 0.99)),
                max_ms=_ms(lat[-1] if lat else 0.0),
            )
        )
        hists.append({"second": sec, **latency_histogram(reqs).to_json()})
    return rows, hists


def generator(
    model: str,
    workers: int,
    rows: Sequence[ClientRow],
    cpu: Mapping[str, tuple[float, float | None]],
    per_worker: Sequence[WorkerRow] = (),
) -> GeneratorRecord:
    """cpu: per phase, the busiest Locust process's cores, and the time its threads waited for
    a CPU while runnable, in cores (None where not known)."""
    reasons = []
    for phase, (cores, wait) in cpu.items():
        if cores >= SATURATED_CPU:
            reasons.append(
                f"a Locust process used {cores:.2f} cores in phase {phase} "
                f"(one Python interpreter; saturated from {SATURATED_CPU})"
            )
        elif wait is not None and cores + wait >= SATURATED_CPU:
            reasons.append(
                f"a Locust process used {cores:.2f} cores in phase {phase} and its threads waited "
                f"{wait:.2f} cores' worth for a CPU the machine's other processes held: it could not "
                f"run when it had to (saturated from {SATURATED_CPU} cores used and waited)"
            )
    for row in rows:
        if row.generator_late >= max(MIN_LATE, SATURATED_LATE * row.requests):
            reasons.append(
                f"{row.generator_late} of {row.requests} requests in phase {row.phase} were sent late "
                "by a user that was free: the generator could not keep to the schedule"
            )
    for w in per_worker:
        if w.late >= max(MIN_LATE, SATURATED_LATE * w.requests):
            reasons.append(
                f"worker {w.index} ({w.host}) sent {w.late} of its {w.requests} requests late while free: "
                "it could not keep to its part of the schedule"
            )
    busiest = {p: round(c, 3) for p, (c, _) in cpu.items()}
    waited = {p: round(w, 3) for p, (_, w) in cpu.items() if w is not None}
    return GeneratorRecord(model, workers, busiest, bool(reasons), reasons, list(per_worker), waited)
