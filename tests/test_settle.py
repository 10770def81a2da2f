"""The analysis filled while the run goes (analysis/settle.py) counts every request exactly where
the one pass over the records after the run counts it: phases, names, seconds, the request-seconds
in each phase's window and in every tick and frozen part of a tick that the stalls are weighed by.

A run is simulated as the run loop drives it: ticks five times a second, each publishing its
horizon after its checks; samples taken in the tick, then the freezes read (those in progress,
then those ended); the load's records arriving after each request ends, late and in batches;
phases that begin after their faults are applied, a gap between them, and an aborted one.
"""

from __future__ import annotations

import math
import random

import pytest

from chaoslab.analysis.attribution import InFlight, Stalls
from chaoslab.analysis.settle import Settler, differences
from chaoslab.analysis.tally import RunTally, Tally
from chaoslab.layers import Layer
from chaoslab.load.records import SPLIT_PARTS, Request
from chaoslab.probes.base import Stall

T0 = 1000.0
TICK = 0.2
NAMES = ["a", "b"]


def _requests(rng: random.Random, end: float) -> list[Request]:
    out = []
    due = T0 - 0.3
    while due < end + 1.0:
        due += rng.expovariate(150)
        sent = due + (0.03 if rng.random() < 0.01 else rng.random() * 0.0005)
        took = 0.004 * rng.lognormvariate(0, 0.8) + (rng.random() * 2.5 if rng.random() < 0.02 else 0)
        error = "timeout" if rng.random() < 0.05 else ""
        split = SPLIT_PARTS.pack(0.0001, 0.0002, 0.0001, 0.001) if rng.random() < 0.5 else None
        name = rng.choice([*NAMES, "other"])
        idle = rng.random() < 0.9
        out.append(Request(due, sent, sent + took, 0 if error else 200, name, error, idle, split))
    return out


def _simulate(seed: int, abort: bool) -> None:
    rng = random.Random(seed)
    # (name, scheduled start, duration, seconds its faults take to apply)
    plan = [("baseline", 0.0, 4.0, 0.0), ("fault", 4.0, 5.0, 0.35), ("recovery", 9.0, 4.0, 0.0)]
    last_end = T0 + 13.0
    reqs = _requests(rng, last_end)
    # freezes of two targets: (target, start, end or None: its target killed while frozen); some
    # shorter than a tick, and some that end between a tick's sample and its read of the freezes
    freezes: list[tuple[str, float, float | None]] = [("api", T0 + 8.5, None)]
    for target in ("api", "db"):
        at = T0 + rng.random()
        while at < last_end:
            took = rng.choice([0.004, 0.03, 0.3, 1.2]) * rng.random()
            if not (target == "api" and at < T0 + 8.6 and at + took > T0 + 8.4):
                freezes.append((target, at, at + took))
            at += took + rng.random() * 2
    order = sorted(reqs, key=lambda r: r.end + rng.random() * 0.4)  # as the tail threads read them
    settler = Settler(NAMES, T0)
    samples: list[tuple[float, object]] = []
    sent = 0
    windows: list[tuple[str, float, float]] = []
    settled = T0
    t = T0
    aborted_at = T0 + 10.77 if abort else None

    def deliver(upto: float) -> None:
        nonlocal sent
        while sent < len(order) and order[sent].end + 0.05 <= upto:
            n = rng.randint(1, 40)
            settler.add(order[sent : sent + n])
            sent += n

    def read(at: float, killed_after: float = T0 + 9.2) -> tuple[list, list]:
        ongoing = [
            (Layer.CPU, target, s)
            for target, s, e in freezes
            if s <= at and (e is None or e > at) and not (e is None and at > killed_after)
        ]
        ended = [
            (Layer.CPU, Stall(target, "frozen", s, e))
            for target, s, e in freezes
            if e is not None and e <= at
        ]
        return ongoing, ended

    def tick(now: float) -> None:
        deliver(now)
        samples.append((now + 0.01, {}))  # the probes sampled in the tick
        ongoing, ended = read(now + 0.04)  # then the freezes read
        settler.advance(now, samples, ongoing, ended, now + 0.04)

    for name, at, duration, apply_s in plan:
        start, end = T0 + at, T0 + at + duration
        while t < start:  # the wait for the phase's start, no phase open
            tick(t)
            t += min(TICK, start - t) + rng.random() * 0.004
        t += apply_s  # the faults being applied: no tick
        begin = max(start, settled, t if apply_s else 0.0)
        settler.open_phase(name, begin, end)
        stop = end
        while True:
            if aborted_at is not None and t >= aborted_at:
                deliver(t)  # the tick that trips publishes no horizon
                stop = max(begin, t + 0.0007)
                settler.close_phase(name, begin, stop)
                windows.append((name, begin, stop))
                break
            tick(t)
            if t >= end:
                settler.close_phase(name, begin, end)
                windows.append((name, begin, end))
                break
            t += min(TICK, end - t) + rng.random() * 0.004  # a sleep wakes a little late
        if stop != end:
            break
        t += 0.12  # the revert
        settled = t
    deliver(math.inf)
    _, ended = read(t + 1.0)
    settler.finish(samples, ended, t + 1.0)

    stalls = Stalls(ended, samples)
    spans = [(a, b) for _, a, b in windows]
    assert settler.complete(stalls, spans)
    # held back at most: the requests from just before the last phase's end on (the end of a
    # run, counted by finish), and those that take longer than a tick
    tail = sum(1 for r in reqs if r.end > windows[-1][2] - 2 * TICK or r.end - r.due > TICK)
    assert 0 < settler.held_most <= tail

    reference = RunTally(list(windows), T0, NAMES)
    flight = InFlight(spans, [span for a, b in spans for span in stalls.spans(a, b)])
    for r in rng.sample(reqs, len(reqs)):
        reference.add(r)
        flight.add(r)
    live = settler.tally
    assert live.phases == reference.phases
    assert set(live.by_name) == set(reference.by_name)
    for key, want in reference.by_name.items():
        _same(live.by_name[key], want)
    assert set(live.by_second) == set(reference.by_second)
    for sec, want in reference.by_second.items():
        _same(live.by_second[sec], want)
    assert settler.flight.window_s == pytest.approx(flight.window_s, rel=1e-9)
    needed = [span for a, b in spans for span in stalls.spans(a, b)]
    assert len(needed) > 40 and any(b - a < 0.1 for a, b in needed)  # ticks and frozen parts
    for a, b in needed:
        assert settler.flight.span_s(a, b) == pytest.approx(flight.span_s(a, b), rel=1e-9, abs=1e-12)
    # what CHAOSLAB_RECOUNT writes: nothing here, and a request counted once more is found
    assert differences((live, settler.flight), (reference, flight), needed) == []
    reference.add(reqs[len(reqs) // 2])
    assert differences((live, settler.flight), (reference, flight), needed)


def _same(got: Tally, want: Tally) -> None:
    assert (got.requests, got.late, got.generator_late, got.split_requests, got.errors) == (
        want.requests,
        want.late,
        want.generator_late,
        want.split_requests,
        want.errors,
    )
    assert got.latency.buckets == want.latency.buckets and got.max_s == want.max_s
    assert got.sent.buckets == want.sent.buckets and got.answer.buckets == want.answer.buckets
    assert got.ok_s == pytest.approx(want.ok_s, rel=1e-12)


@pytest.mark.parametrize("seed", range(1, 9))
def test_counted_as_the_run_goes_is_counted_as_after_it(seed: int) -> None:
    _simulate(seed, abort=False)


@pytest.mark.parametrize("seed", range(11, 15))
def test_an_aborted_phase_is_counted_as_after_the_run(seed: int) -> None:
    _simulate(seed, abort=True)


def test_a_span_the_live_reads_never_saw_sends_the_analysis_back_to_the_records() -> None:
    settler = Settler(NAMES, T0)
    samples: list[tuple[float, object]] = []
    settler.open_phase("baseline", T0, T0 + 2)
    for i in range(10):
        samples.append((T0 + i * TICK + 0.001, {}))
        settler.advance(T0 + i * TICK, samples, [], [], T0 + i * TICK + 0.002)
    settler.close_phase("baseline", T0, T0 + 2)
    settler.finish(samples, [], T0 + 3)
    # a freeze the probe's slots kept only at the end, never read in progress nor ended
    missed = Stalls([(Layer.CPU, Stall("api", "frozen", T0 + 0.5, T0 + 0.9))], samples)
    assert settler.complete(Stalls([], samples), [(T0, T0 + 2)])
    assert not settler.complete(missed, [(T0, T0 + 2)])
    assert not settler.complete(Stalls([], samples), [(T0, T0 + 2.5)])  # not the phases counted


def test_a_phase_aborted_before_it_opened_is_counted_whole() -> None:
    settler = Settler(NAMES, T0)
    settler.open_phase("baseline", T0, T0 + 1)
    settler.advance(T0 + 1, [], [], [], T0 + 1)
    settler.close_phase("baseline", T0, T0 + 1)
    settler.close_phase("fault", T0 + 1.2, T0 + 1.5)  # tripped while its faults were applied
    reqs = [Request(T0 + i / 100, T0 + i / 100, T0 + i / 100 + 0.01, 200, "a", "") for i in range(200)]
    settler.add(reqs)
    settler.finish([], [], T0 + 3)
    windows = [(T0, T0 + 1), (T0 + 1.2, T0 + 1.5)]
    assert settler.complete(Stalls([], []), windows)
    assert [t.requests for t in settler.tally.by_phase.values()] == [100, 30]
    assert settler.flight.window_s == pytest.approx([100 * 0.01, 30 * 0.01])
