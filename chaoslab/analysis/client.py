"""The client's side of the report: per phase, per request name, per second, and whether
the load generator itself kept up.

Every figure comes from the requests' tallies (analysis/tally.py): quantiles from
FineHistograms (three significant digits, at the rank q * n, as HdrHistogram's), maxima and
means exact; the histograms saved with the report are the same FineHistograms, not Locust's
rounded buckets.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from chaoslab.analysis.tally import Tally
from chaoslab.hist import Histogram
from chaoslab.load.records import PARTS
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


def _q(h: Histogram, q: float) -> float:
    return _ms(h.quantile_ns(q) / 1e9)


def client_row(phase: str, t: Tally, duration: float, name: str = "", protocol: str = "") -> ClientRow:
    errors = sum(t.errors.values())
    return ClientRow(
        phase=phase,
        requests=t.requests,
        errors=errors,
        rate=round(t.requests / duration, 2) if duration > 0 else 0.0,
        p50_ms=_q(t.latency, 0.5),
        p90_ms=_q(t.latency, 0.9),
        p99_ms=_q(t.latency, 0.99),
        max_ms=_ms(t.max_s),
        late=t.late,
        errors_by_kind=dict(t.errors),
        p999_ms=_q(t.latency, 0.999),
        name=name,
        protocol=protocol,
        generator_late=t.generator_late,
        sent_p50_ms=_q(t.sent, 0.5),
        sent_p99_ms=_q(t.sent, 0.99),
        answer_p50_ms=_q(t.answer, 0.5),
        answer_p99_ms=_q(t.answer, 0.99),
        split_requests=t.split_requests,
        split_ms={k: round(v * 1000, 4) for k, v in t.split_mean_s().items()},
        split_p50_ms={k: _q(h, 0.5) for k, h in zip(PARTS, t.parts, strict=True)} if t.split_requests else {},
        split_p99_ms={k: _q(h, 0.99) for k, h in zip(PARTS, t.parts, strict=True)}
        if t.split_requests
        else {},
    )


def by_name(
    phase: str, tallies: Mapping[tuple[str, str], Tally], duration: float, protocols: Mapping[str, str]
) -> list[ClientRow]:
    """The phase's rows per request name: the load's mix in order, then any other name."""
    names = list(protocols) + sorted({n for p, n in tallies if p == phase} - set(protocols))
    return [
        client_row(phase, tallies.get((phase, name), Tally()), duration, name, protocols.get(name, ""))
        for name in names
    ]


def seconds(
    by_second: Mapping[int, Tally], t0: float, phases: Sequence[tuple[str, float, float]]
) -> tuple[list[SecondRow], list[Mapping[str, object]]]:
    """Per second from t0 (by due time): a row and the second's latency histogram."""
    rows: list[SecondRow] = []
    hists: list[Mapping[str, object]] = []
    for sec in sorted(by_second):
        t = by_second[sec]
        at = t0 + sec
        rows.append(second_row(sec, t, next((name for name, start, end in phases if start <= at < end), "")))
        hists.append({"second": sec, **t.latency.to_json()})
    return rows, hists


def second_row(sec: int, t: Tally, phase: str) -> SecondRow:
    return SecondRow(
        second=sec,
        phase=phase,
        requests=t.requests,
        errors=sum(t.errors.values()),
        late=t.late,
        p50_ms=_q(t.latency, 0.5),
        p99_ms=_q(t.latency, 0.99),
        max_ms=_ms(t.max_s),
    )


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
