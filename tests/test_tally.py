"""The client's tallies: a run's requests counted into phases, names and seconds as they come,
with the figures the analysis reads of them within the histograms' three significant digits."""

from __future__ import annotations

import math
import random
from collections import Counter

import pytest

from chaoslab.analysis.tally import RunTally, Tally
from chaoslab.hist import FineHistogram
from chaoslab.load.records import PARTS, SPLIT_PARTS, Request, quantile


def run_requests(seed: int = 3) -> list[Request]:
    """30 s at 100 requests/s over two names, a tenth of them failing, half timed in parts,
    some sent late."""
    rng = random.Random(seed)
    out = []
    for i in range(3000):
        due = 1000 + i / 100
        sent = due + (0.02 if i % 97 == 0 else 0.0002)
        end = sent + 0.004 * rng.lognormvariate(0, 0.4)
        split = SPLIT_PARTS.pack(0.0001, 0.0002, 0.0001, 0.001) if i % 2 else None
        error = "http-503" if i % 10 == 3 else ""
        out.append(Request(due, sent, end, 503 if error else 200, "ab"[i % 3 == 0], error, i % 5 != 0, split))
    return out


def test_a_phase_is_its_names_together_and_a_request_is_in_one_phase_by_due_time() -> None:
    reqs = run_requests()
    phases = [("baseline", 1000.0, 1010.0), ("fault", 1010.0, 1020.0), ("recovery", 1021.0, 1030.0)]
    run = RunTally(phases, 1000.0, ["a", "b"])
    for r in reversed(reqs):  # in any order: each request's groups are its own
        run.add(r)
    for phase, start, end in phases:
        mine = [r for r in reqs if start <= r.due < end]
        t = run.by_phase[phase]
        whole = Tally.of(mine)
        assert (t.requests, t.late, t.generator_late, t.split_requests) == (
            whole.requests,
            whole.late,
            whole.generator_late,
            whole.split_requests,
        )
        assert t.errors == whole.errors and t.latency.buckets == whole.latency.buckets
        assert t.sent.buckets == whole.sent.buckets and t.answer.buckets == whole.answer.buckets
        assert [h.buckets for h in t.parts] == [h.buckets for h in whole.parts]
        assert t.ok_s == pytest.approx(sum(r.latency for r in mine if r.ok), rel=1e-12)
        assert t.max_s == max(r.latency for r in mine if r.ok)
        for name in "ab":
            assert run.by_name[(phase, name)].requests == sum(1 for r in mine if r.name == name)
    # the gap between fault and recovery is in no phase, but in its second
    assert sum(t.requests for t in run.by_phase.values()) == 2900
    assert run.by_second[20].requests == 100 and sum(t.requests for t in run.by_second.values()) == 3000


def test_a_tally_holds_its_quantiles_to_three_significant_digits_and_its_mean_exactly() -> None:
    reqs = run_requests(5)
    t = Tally.of(reqs)
    ok = sorted(r.latency for r in reqs if r.ok)
    assert t.ok == len(ok) == 2700 and t.mean_s == pytest.approx(sum(ok) / len(ok), rel=1e-12)
    for q in (0.5, 0.9, 0.99, 0.999):
        # at the rank q * n, as HdrHistogram's: the value of that rank within its bucket (a
        # 1,024th of its power of two: three significant digits)
        exact = ok[max(0, math.ceil(q * len(ok)) - 1)]
        assert t.quantile_s(q) == pytest.approx(exact, rel=0.001), q
        # and the interpolated quantile of the sorted values within the same and a rank's step
        step = ok[min(len(ok) - 1, math.ceil(q * len(ok)))] - ok[max(0, math.ceil(q * len(ok)) - 2)]
        assert abs(t.quantile_s(q) - quantile(ok, q)) <= 0.001 * exact + step, q
    # the parts add up to the latency of each timed request: their means to the timed mean
    timed = [r for r in reqs if r.ok and r.split is not None]
    means = t.split_mean_s()
    assert list(means) == list(PARTS)
    assert sum(means.values()) == pytest.approx(sum(r.latency for r in timed) / len(timed), rel=1e-9)


def test_a_second_of_the_timeline_keeps_counts_and_latencies_only() -> None:
    run = RunTally([], 1000.0)
    run.add_all(run_requests())
    second = run.by_second[0]
    assert not second.detail and second.requests == 100 and second.latency.count == 90
    assert second.sent.count == 0 and second.split_requests == 0
    assert second.latency.sub_bits == 5  # a TimelineHistogram: what grows with a run's length is small
    # a request due before t0 is in no second
    early = RunTally([], 1015.0)
    early.add_all(run_requests())
    assert min(early.by_second) == 0 and sum(t.requests for t in early.by_second.values()) == 1500


def test_the_inlined_record_is_the_histograms_own() -> None:
    values = [0.0, 1e-9, 5e-7, 1.023e-6, 1.024e-6, 0.0037, 0.25, 12.5]
    t = Tally.of(Request(0.0, 0.0, v, 200, "a", "") for v in values)
    assert t.latency.buckets == FineHistogram.of(int(v * 1e9) for v in values).buckets


def test_the_baseline_count_takes_its_edge_bins_in_part() -> None:
    from chaoslab.load.runner import DUE_BIN, due_in

    dues = [1000 + i / 200 for i in range(2000)]  # 10 s at 200 requests/s
    bins: Counter[int] = Counter(int(d / DUE_BIN) for d in dues)
    for start, end in ((1000.0, 1010.0), (1001.03, 1004.57), (1002.5, 1002.55), (1011.0, 1012.0)):
        exact = sum(1 for d in dues if start <= d < end)
        assert due_in(bins, start, end) == pytest.approx(exact, abs=1.0), (start, end)
    assert due_in(bins, 1005.0, 1005.0) == 0.0
