from __future__ import annotations

import random

import pytest

from chaoslab.analysis.attribution import FaultCheck, InFlight, PhaseData, Stalls, drift
from chaoslab.analysis.attribution import verdict as verdict_of
from chaoslab.analysis.stats import mann_whitney_hist, mann_whitney_p
from chaoslab.analysis.tally import Tally
from chaoslab.hist import Histogram, bucket_of
from chaoslab.layers import Layer
from chaoslab.load.records import Request
from chaoslab.probes.base import LAYER, Stall
from chaoslab.probes.set import Snapshot
from chaoslab.scenario.model import Status


def requests(latencies: list[float], start: float = 1000.0) -> list[Request]:
    return [
        Request(start + i * 0.02, start + i * 0.02, start + i * 0.02 + lat, 200, "work", "")
        for i, lat in enumerate(latencies)
    ]


def in_window(reqs: list[Request], start: float, end: float) -> float:
    flight = InFlight([(start, end)])
    flight.add_all(reqs)
    return flight.window_s[0]


def in_flight(stalls: Stalls, reqs: list[Request], start: float, end: float) -> InFlight:
    flight = InFlight([(start, end)], stalls.spans(start, end))
    flight.add_all(reqs)
    return flight


def tally(latencies: list[float]) -> Tally:
    return Tally.of(requests(latencies))


def lat(rng: random.Random, n: int, median: float) -> list[float]:
    return [median * rng.lognormvariate(0, 0.25) for _ in range(n)]


def snapshot(n: int, entropy_each: float, reads: int, tls_extra: float, proxy_extra: float) -> Snapshot:
    e = Histogram.of([int(entropy_each * 1e9)] * (n * reads))
    t = Histogram.of([int((entropy_each * reads + tls_extra) * 1e9)] * n)
    p = Histogram.of([int((entropy_each * reads + tls_extra + proxy_extra) * 1e9)] * n)
    return {(Layer.ENTROPY, "api", LAYER): e, (Layer.TLS, "api", LAYER): t, (Layer.PROXY, "edge", LAYER): p}


def verdict(
    name: str, base: list[Request], base_snap: Snapshot, reqs: list[Request], snap: Snapshot, checks: list
):  # type: ignore[no-untyped-def]
    return verdict_of(
        PhaseData("baseline", Tally.of(base), base_snap), PhaseData(name, Tally.of(reqs), snap), checks
    )


def test_mann_whitney_separates_shifted_samples_only() -> None:
    rng = random.Random(1)
    a, b = lat(rng, 400, 0.004), lat(rng, 400, 0.004)
    assert mann_whitney_p(a, b) > 0.01
    assert mann_whitney_p(a, [x + 0.003 for x in lat(rng, 400, 0.004)]) < 1e-6
    assert mann_whitney_p([1.0] * 3, [2.0] * 3) == 1.0  # too few to decide


def test_entropy_fault_is_attributed_to_the_deepest_explaining_layer() -> None:
    rng = random.Random(2)
    base = requests(lat(rng, 400, 0.004))
    fault = requests([x + 0.012 for x in lat(rng, 400, 0.004)])
    v = verdict(
        "starve",
        base,
        snapshot(400, 20e-6, 4, 0.001, 0.002),
        fault,
        snapshot(400, 3e-3, 4, 0.001, 0.002),
        [FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held")],
    )
    assert v.status is Status.ABSORBED
    assert (v.layer, v.target) == ("entropy", "api")
    assert v.added_ms == pytest.approx(11.92, abs=0.05)
    assert v.explained == pytest.approx(1.0, abs=0.1)
    assert [c.layer for c in v.contributions] == ["entropy", "tls", "proxy"]
    assert "absorbed by entropy at api (inside tls at api, proxy at edge), 100% explained" in v.sentence()


def test_outer_layer_wins_when_inner_layers_do_not_explain() -> None:
    rng = random.Random(3)
    base = requests(lat(rng, 400, 0.004))
    fault = requests([x + 0.010 for x in lat(rng, 400, 0.004)])
    v = verdict(
        "slow", base, snapshot(400, 20e-6, 4, 0.001, 0.002), fault, snapshot(400, 20e-6, 4, 0.001, 0.012), []
    )
    assert v.status is Status.ABSORBED
    assert v.layer == "proxy"


def test_unchanged_phase_is_no_change() -> None:
    rng = random.Random(4)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    v = verdict("control", requests(lat(rng, 400, 0.004)), snap, requests(lat(rng, 400, 0.004)), snap, [])
    assert v.status is Status.NO_CHANGE
    assert v.layer is None


def test_fault_whose_layer_shows_nothing_is_invalid() -> None:
    rng = random.Random(5)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    base = requests(lat(rng, 400, 0.004))
    slow = requests([x + 0.01 for x in lat(rng, 400, 0.004)])
    v = verdict("starve", base, snap, slow, snap, [FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held")])
    assert v.status is Status.INVALID
    assert "rose by 0.00 ms per event, expected about 3.00 ms" in v.reason
    v2 = verdict("starve", base, snap, slow, snap, [FaultCheck(Layer.ENTROPY, "api", None, False, "0 of 0")])
    assert v2.status is Status.INVALID
    assert "mechanism saw no effect" in v2.reason


def test_slowdown_no_layer_explains_is_inconclusive() -> None:
    rng = random.Random(6)
    snap = snapshot(400, 20e-6, 4, 0.001, 0.002)
    v = verdict(
        "x",
        requests(lat(rng, 400, 0.004)),
        snap,
        requests([x + 0.02 for x in lat(rng, 400, 0.004)]),
        snap,
        [],
    )
    assert v.status is Status.INCONCLUSIVE


def test_drift_between_baseline_and_recovery_is_reported() -> None:
    rng = random.Random(8)
    assert drift(tally(lat(rng, 300, 0.004)), tally(lat(rng, 300, 0.004)), "baseline", "recovery") is None
    text = drift(tally(lat(rng, 300, 0.004)), tally(lat(rng, 300, 0.009)), "baseline", "recovery")
    assert text is not None and "the baseline drifted" in text


def test_histogram_rank_test_equals_the_sample_test_on_bucketed_values() -> None:
    rng = random.Random(9)
    a = [int(x * 1e9) for x in lat(rng, 300, 0.004)]
    b = [int(x * 1e9) for x in lat(rng, 200, 0.0045)]
    bucketed = [[bucket_of(v) for v in xs] for xs in (a, b)]
    ha, hb = Histogram.of(a), Histogram.of(b)
    assert mann_whitney_hist(ha.buckets, hb.buckets) == pytest.approx(mann_whitney_p(*bucketed), rel=1e-9)
    assert mann_whitney_hist({1: 3}, {2: 3}) == 1.0  # too few to decide


def test_a_freeze_is_weighed_by_the_requests_it_held() -> None:
    # 10 requests in flight from t=0 to t=2; the target froze from 0.5 to 1.5 s
    reqs = [Request(0.0, 0.0, 2.0, 200, "work", "") for _ in range(10)]
    samples = [(t / 10, {}) for t in range(21)]  # ticks of 0.1 s
    stalls = Stalls([(Layer.CPU, Stall("api", "frozen", 0.5, 1.5))], samples)
    held = stalls.held(in_flight(stalls, reqs, 0.0, 2.0), 0.0, 2.0)[(Layer.CPU, "api")]
    assert len(held) == 20
    assert sum(held) == pytest.approx(10.0)  # 10 requests x 1 s each
    assert held[0] == 0.0 and held[10] == pytest.approx(1.0)


def test_a_starved_target_is_weighed_by_the_requests_in_flight() -> None:
    reqs = [Request(0.0, 0.0, 1.0, 200, "work", "") for _ in range(4)]
    # the target was starved for 0.05 s in each 0.1 s tick
    samples = [(t / 10, {(Layer.CPU, "api"): t * 0.05}) for t in range(11)]
    stalls = Stalls([], samples)
    held = stalls.held(in_flight(stalls, reqs, 0.0, 1.0), 0.0, 1.0)[(Layer.CPU, "api")]
    assert sum(held) == pytest.approx(4 * 0.5)  # 4 requests in flight, starved half of the time


def test_pause_is_absorbed_by_cpu_through_its_stall() -> None:
    rng = random.Random(10)
    base_reqs = requests(lat(rng, 200, 0.004))
    slow = requests([x + 0.5 for x in lat(rng, 200, 0.004)])
    base = PhaseData("baseline", Tally.of(base_reqs), {}, {(Layer.CPU, "api"): [0.0001] * 20})
    cur = PhaseData("paused", Tally.of(slow), {}, {(Layer.CPU, "api"): [200 * 0.5 / 20] * 20})
    v = verdict_of(base, cur, [FaultCheck(Layer.CPU, "api", None, True, "frozen")])
    assert v.status is Status.ABSORBED, v.reason
    assert (v.layer, v.target) == ("cpu", "api")
    assert v.explained == pytest.approx(1.0, abs=0.05)  # each of the 200 requests held 0.5 s
    idle = PhaseData("paused", Tally.of(slow), {}, {(Layer.CPU, "api"): [0.0001] * 20})
    v2 = verdict_of(base, idle, [FaultCheck(Layer.CPU, "api", None, True, "frozen")])
    assert v2.status is Status.INVALID
    assert "no significant added time" in v2.reason


def test_the_client_time_in_a_window_counts_every_request_in_flight_there_from_its_due_time() -> None:
    reqs = [  # by due time
        Request(999.5, 999.6, 1000.5, 200, "work", ""),  # due before, ends inside: 0.5 s
        Request(1000.2, 1000.2, 1000.4, 200, "work", ""),  # inside: 0.2 s
        Request(1000.3, 1000.3, 1000.9, 0, "work", "timeout"),  # failed: not in the client's mean
        Request(1000.8, 1000.8, 1002.0, 200, "work", ""),  # ends after: 0.2 s
        Request(1001.5, 1001.5, 1001.6, 200, "work", ""),  # due after: nothing
    ]
    assert in_window(reqs, 1000.0, 1001.0) == pytest.approx(0.9)
    # in any order, with every other window counted in the same pass
    flight = InFlight([(999.0, 1000.0), (1000.0, 1001.0), (1001.0, 1002.0)])
    flight.add_all(reversed(reqs))
    assert flight.window_s == pytest.approx([0.5, 0.9, 1.0 + 0.1])


def test_a_backlog_draining_after_the_phase_is_carried_and_the_shares_are_of_the_rest() -> None:
    # an overloaded target: 500 requests due over 10 s, each waiting 4 ms longer than the one
    # before; the last sixth end after the phase, as its backlog drains
    base = [
        Request(990 + i * 0.02, 990 + i * 0.02, 990 + i * 0.02 + 0.004, 200, "work", "") for i in range(500)
    ]
    slow = [
        Request(1000 + i * 0.02, 1000 + i * 0.02, 1000 + i * 0.02 + 0.004 + 0.004 * i, 200, "work", "")
        for i in range(500)
    ]
    base_s, slow_s = in_window(base, 990, 1000), in_window(slow, 1000, 1010)
    # by hand: request i ends at 1000.004 + 0.024 i, after 1010 from i = 417 on, where the window
    # holds only 10 - 0.02 i of it
    assert base_s == pytest.approx(500 * 0.004)
    inside = sum(0.004 + 0.004 * i for i in range(417)) + sum(10 - 0.02 * i for i in range(417, 500))
    assert slow_s == pytest.approx(inside)
    # the cpu layer holds all the client's added time inside the window (a stall, weighed by
    # every request in flight), none after it: the window's end is where its figures stop
    held = slow_s - base_s
    ticks = {(Layer.CPU, "api"): [held / 50] * 50}
    quiet = {(Layer.CPU, "api"): [1e-6] * 50}
    check = [FaultCheck(Layer.CPU, "api", None, True, "limited")]
    v = verdict_of(
        PhaseData("baseline", Tally.of(base), {}, quiet, base_s),
        PhaseData("limited", Tally.of(slow), {}, ticks, slow_s),
        check,
    )
    assert v.status is Status.ABSORBED, v.reason
    assert v.explained == pytest.approx(1.0, abs=0.01)
    mean_added = sum(r.latency for r in slow) / 500 - 0.004
    assert v.client_added_mean_ms == pytest.approx(mean_added * 1000, abs=0.01)
    assert v.in_phase_ms == pytest.approx(held / 500 * 1000, abs=0.01)
    assert v.carried_ms == pytest.approx((mean_added - held / 500) * 1000, abs=0.01)
    assert 0.15 < v.carried_ms / v.client_added_mean_ms < 0.2
    assert (
        f"of {v.in_phase_ms:+.1f} ms in the phase; {v.carried_ms:+.1f} ms after the phase's end"
        in v.sentence()
    )
    # measured against the whole mean, the same cause would explain only the window's part
    whole = verdict_of(
        PhaseData("baseline", Tally.of(base), {}, quiet),
        PhaseData("limited", Tally.of(slow), {}, ticks),
        check,
    )
    assert whole.carried_ms == 0.0 and whole.carried_words() == ""
    assert whole.explained == pytest.approx(1 - v.carried_ms / v.client_added_mean_ms, abs=0.01)


def test_a_slow_minority_of_events_is_significant_through_the_tail() -> None:
    from chaoslab.analysis.stats import tail_shift_p

    rng = random.Random(11)
    base = Histogram.of(int(x * 1e9) for x in lat(rng, 1000, 20e-6))
    same = Histogram.of(int(x * 1e9) for x in lat(rng, 2000, 20e-6))
    # 15% of the events held 30 ms: too few to move the ranks much, all beyond the tail
    slow = Histogram.of([int(x * 1e9) for x in lat(rng, 1700, 20e-6)] + [30_000_000] * 300)
    assert tail_shift_p(base.buckets, slow.buckets) < 1e-20
    assert tail_shift_p(base.buckets, same.buckets) > 0.001
    assert tail_shift_p({1: 3}, {2: 3}) == 1.0


def test_a_change_in_the_tail_alone_is_a_change_of_the_phase() -> None:
    # packet loss: one request in ten waits for a 200 ms retransmission, the rest as before
    from chaoslab.analysis.stats import hist_shift_p

    rng = random.Random(12)
    base = lat(rng, 300, 0.002)
    lossy = [x + (0.2 if i % 10 == 0 else 0.0) for i, x in enumerate(lat(rng, 300, 0.002))]
    assert mann_whitney_p(base, lossy) > 0.001  # the ranks barely move
    assert hist_shift_p(tally(base).latency, tally(lossy).latency) < 1e-6
    assert hist_shift_p(tally(base).latency, tally(lat(rng, 300, 0.002)).latency) > 0.001

    def net(values: list[float]) -> Snapshot:
        return {(Layer.NETWORK, "api", LAYER): Histogram.of(int(x * 1e9) for x in values)}

    quiet = [30e-6] * 300
    held = [30e-6 + (0.2 if i % 10 == 0 else 0.0) for i in range(300)]
    v = verdict("lossy", requests(base), net(quiet), requests(lossy), net(held), [])
    assert v.status is Status.ABSORBED, v.reason
    assert (v.layer, v.target) == ("network", "api")
    assert v.client_added_p50_ms < 1.0 and v.client_added_mean_ms == pytest.approx(20.0, abs=2.0)


def test_a_few_events_far_out_move_the_mean_and_one_alone_does_not() -> None:
    from chaoslab.analysis.stats import hist_shift_p, mean_shift_p, tail_shift_p

    rng = random.Random(13)
    # a noisy baseline: its p99 at a few ms, so 3% of events at 200 ms are a weak tail signal
    noisy = [int(x * 1e9) for x in lat(rng, 470, 30e-6)] + [1_000_000 * (1 + i) for i in range(10)]
    base = Histogram.of(noisy)
    lossy = Histogram.of([int(x * 1e9) for x in lat(rng, 616, 30e-6)] + [200_000_000] * 20)
    assert tail_shift_p(base.buckets, lossy.buckets) > 0.001
    assert hist_shift_p(base, lossy) < 0.001  # P_SIGNIFICANT
    one = Histogram.of([int(x * 1e9) for x in lat(rng, 635, 30e-6)] + [1_000_000_000])
    assert hist_shift_p(base, one) > 0.001
    assert mean_shift_p({1.0: 29}, {2.0: 29}) == 1.0  # too few for the normal approximation
    assert mean_shift_p({1.0: 30}, {1.0: 40}) == 1.0 and mean_shift_p({1.0: 30}, {2.0: 40}) == 0.0


def test_a_layer_that_appears_is_significant_by_its_count() -> None:
    from chaoslab.analysis.attribution import appeared_p

    # 102 reclaims in 318 requests, none in the baseline's 240: no chance under one rate
    assert appeared_p(102, 240, 318) < 1e-20
    # two events in a phase as long as the baseline: a coin flipped twice
    assert appeared_p(2, 300, 300) == pytest.approx(0.25)
    assert appeared_p(5, 0, 300) == 1.0  # no baseline requests: nothing to compare
    assert appeared_p(3, 100, 0) == 1.0  # no requests in the phase: nothing it could explain
