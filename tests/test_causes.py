"""Verdicts with several causes, on synthetic phases: the nesting of layers across targets, the
causes a phase has, the fault each one is or that it is a side effect, and the phase that is
invalid because a fault matches no cause."""

from __future__ import annotations

import random

import pytest

from chaoslab.analysis.attribution import FaultCheck, PhaseData
from chaoslab.analysis.attribution import verdict as verdict_of
from chaoslab.analysis.causes import Nesting, Node
from chaoslab.analysis.tally import Tally
from chaoslab.hist import Histogram
from chaoslab.layers import Layer
from chaoslab.probes.base import LAYER
from chaoslab.probes.set import Snapshot
from chaoslab.report.model import CauseKind, FaultRef, Verdict
from chaoslab.scenario.model import Status
from tests.test_analysis import lat, requests

N = 400
CALLS = {"edge": ["api"], "api": []}  # Envoy in front of the Go service
ENTROPY = FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held", "entropy")
NET_EDGE = FaultCheck(Layer.NETWORK, "edge", None, True, "delayed", "network")


def stack(
    entropy_each: float = 20e-6,
    edge_net: float = 50e-6,
    proxy_extra: float = 0.0,
    api_net: float = 50e-6,
    reads: int = 4,
) -> Snapshot:
    """Envoy (edge) in front of a Go service (api) with a TLS handshake per request: entropy
    inside tls at api, inside the proxy's upstream time; edge's network time to the client
    outside all of them."""
    entropy = entropy_each * reads
    tls = entropy + 0.001
    proxy = tls + api_net + 0.001 + proxy_extra
    return {
        (Layer.ENTROPY, "api", LAYER): Histogram.of([int(entropy_each * 1e9)] * (N * reads)),
        (Layer.TLS, "api", LAYER): Histogram.of([int(tls * 1e9)] * N),
        (Layer.NETWORK, "api", LAYER): Histogram.of([int(api_net * 1e9)] * N),
        (Layer.PROXY, "edge", LAYER): Histogram.of([int(proxy * 1e9)] * N),
        (Layer.NETWORK, "edge", LAYER): Histogram.of([int(edge_net * 1e9)] * N),
    }


def phase(
    name: str,
    added: float,
    snap: Snapshot,
    seed: int,
    stalls: dict[tuple[Layer, str], list[float]] | None = None,
) -> PhaseData:
    rng = random.Random(seed)
    return PhaseData(name, Tally.of(requests([x + added for x in lat(rng, N, 0.004)])), snap, stalls or {})


BASE = phase("baseline", 0.0, stack(), 1)


def judge(cur: PhaseData, checks: list[FaultCheck], base: PhaseData = BASE) -> Verdict:
    return verdict_of(base, cur, checks, calls=CALLS)


def test_nesting_is_per_target_and_follows_the_calls() -> None:
    n = Nesting(CALLS)
    entropy, tls, app = Node(Layer.ENTROPY, "api"), Node(Layer.TLS, "api"), Node(Layer.APP, "api")
    proxy, edge_net = Node(Layer.PROXY, "edge"), Node(Layer.NETWORK, "edge")
    assert n.holds(tls, entropy) and n.holds(app, tls) and n.holds(proxy, entropy)
    assert not n.holds(entropy, tls) and not n.holds(Node(Layer.CLIENT, ""), Node(Layer.CLIENT, ""))
    # the wire to the client sits beside the service, not around it; nor is it in the proxy
    assert not n.holds(edge_net, entropy) and not n.holds(entropy, edge_net)
    assert not n.holds(proxy, edge_net)
    # ... but the proxy's calls to its upstream are inside its own time, and the upstream's
    # handshake waits for them (the caller's half of the round trips)
    edge_calls = Node(Layer.NETWORK, "edge", dependency=True)
    assert n.holds(proxy, edge_calls) and n.holds(tls, edge_calls)
    assert n.holds(tls, Node(Layer.NETWORK, "api"))  # its own half
    assert n.holds(proxy, Node(Layer.NETWORK, "api")) and n.holds(proxy, Node(Layer.CPU, "api"))
    # a thread starved inside a read of randomness; no syscall sits in one
    assert n.holds(entropy, Node(Layer.CPU, "api")) and not n.holds(entropy, Node(Layer.SYSCALL, "api"))
    assert n.holds(app, Node(Layer.SYSCALL, "api")) and not n.holds(app, Node(Layer.CPU, "edge"))
    # the service does not call Envoy: none of Envoy's layers is inside the service's
    assert not n.holds(app, Node(Layer.PROXY, "edge")) and not n.holds(app, edge_calls)


def test_two_faults_on_different_targets_are_two_causes_each_the_fault_it_is() -> None:
    # entropy 3 ms x 4 reads at api (+12 ms) and 15 ms on Envoy's listener (+15 ms)
    cur = phase("both", 0.027, stack(entropy_each=0.003, edge_net=0.015), 2)
    v = judge(cur, [ENTROPY, NET_EDGE])
    assert v.status is Status.ABSORBED, v.reason
    by = {(c.layer, c.target): c for c in v.causes}
    assert set(by) == {("entropy", "api"), ("network", "edge")}
    assert by[("entropy", "api")].faults == [FaultRef("entropy", "entropy", "api")]
    assert by[("network", "edge")].faults == [FaultRef("network", "network", "edge")]
    assert all(c.kind is CauseKind.FAULT for c in v.causes)
    assert by[("entropy", "api")].added_ms == pytest.approx(11.92, abs=0.05)
    assert by[("network", "edge")].added_ms == pytest.approx(14.95, abs=0.05)
    assert sum(c.share for c in v.causes) == pytest.approx(1.0, abs=0.1)
    assert v.explained == pytest.approx(1.0, abs=0.1) and v.unexplained_ms < 2
    # the main cause is the one a single-cause verdict would name: the deepest layer that
    # explains half on its own (network at edge, 55%); entropy's 44% is no longer unexplained
    assert (v.layer, v.target) == ("network", "edge") and v.causes[0].name == "network at edge"
    assert (
        "absorbed by 2 causes: network at edge +14.9 ms (55%), entropy at api +11.9 ms (44%)" in v.sentence()
    )


def test_a_single_fault_keeps_its_one_cause() -> None:
    cur = phase("starve", 0.012, stack(entropy_each=0.003), 3)
    v = judge(cur, [ENTROPY])
    assert (v.status, v.layer, v.target) == (Status.ABSORBED, "entropy", "api")
    [cause] = v.causes
    assert (cause.name, cause.kind, cause.added_ms) == ("entropy at api", CauseKind.FAULT, v.added_ms)
    assert cause.share == pytest.approx(v.explained, abs=0.002)
    inside = "absorbed by entropy at api (inside tls at api, proxy at edge)"
    assert f"{inside}, {v.explained:.0%} explained (+11.9 ms per request)" in v.sentence()


def test_cpu_contention_at_envoy_is_a_side_effect_never_the_faults() -> None:
    # the service got slow; Envoy, starved of CPU meanwhile, held its requests 3 ms more each
    ticks = 40
    base = phase("baseline", 0.0, stack(), 1, {(Layer.CPU, "edge"): [0.0001] * ticks})
    cur = phase(
        "starve", 0.015, stack(entropy_each=0.003), 4, {(Layer.CPU, "edge"): [N * 0.003 / ticks] * ticks}
    )
    v = judge(cur, [ENTROPY], base)
    assert (v.status, v.layer, v.target) == (Status.ABSORBED, "entropy", "api")
    by = {c.name: c for c in v.causes}
    assert by["cpu at edge"].kind is CauseKind.SIDE_EFFECT and by["cpu at edge"].faults == []
    assert by["entropy at api"].faults == [ENTROPY.ref]
    assert by["entropy at api"].share == pytest.approx(11.92 / (v.client_added_mean_ms), abs=0.01)
    assert v.causes[0].name == "entropy at api"  # the fault's cause first, the side effect listed after
    assert "; side effect: cpu at edge +3.0 ms (" in v.sentence()


def test_cpu_starved_inside_the_faults_own_layer_is_part_of_its_cause() -> None:
    ticks = 40
    base = phase("baseline", 0.0, stack(), 1, {(Layer.CPU, "api"): [0.0001] * ticks})
    cur = phase(
        "starve", 0.012, stack(entropy_each=0.003), 5, {(Layer.CPU, "api"): [N * 0.002 / ticks] * ticks}
    )
    v = judge(cur, [ENTROPY], base)
    assert [c.name for c in v.causes] == ["entropy at api"]


def test_goroutines_waiting_behind_held_reads_are_the_entropy_faults_own_effect() -> None:
    # a closed-model load: reads held 3 ms keep their threads' Ps, and the other requests'
    # goroutines wait runnable for a P (gosched at api), beside the reads, not inside them
    n = Nesting(CALLS)
    gosched = Node(Layer.GOSCHED, "api")
    assert n.holds(Node(Layer.APP, "api"), gosched) and n.holds(Node(Layer.TLS, "api"), gosched)
    assert n.holds(Node(Layer.PROXY, "edge"), gosched) and n.holds(gosched, Node(Layer.CPU, "api"))
    entropy = Node(Layer.ENTROPY, "api")
    assert not n.holds(entropy, gosched) and not n.holds(gosched, entropy)

    def snap(wait: float) -> Snapshot:
        s = stack(entropy_each=0.003 if wait else 20e-6, proxy_extra=wait)
        s[(Layer.GOSCHED, "api", LAYER)] = Histogram.of([int((20e-6 + wait / 4) * 1e9)] * (N * 4))
        return s

    base = phase("baseline", 0.0, snap(0.0), 1)
    cur = phase("starve", 0.052, snap(0.040), 8)
    entropy = FaultCheck(Layer.ENTROPY, "api", 0.003, True, "held", "entropy", also=((Layer.GOSCHED, "api"),))
    v = judge(cur, [entropy], base)
    by = {c.name: c for c in v.causes}
    assert set(by) == {"gosched at api", "entropy at api"}, v.causes
    assert all(c.faults == [entropy.ref] for c in v.causes)
    # the scheduler holds most of the added time: it, not the reads, absorbed the fault
    assert (v.status, v.layer, v.target) == (Status.ABSORBED, "gosched", "api")
    assert by["gosched at api"].added_ms == pytest.approx(40.0, abs=0.1)
    # without the scheduler named as the fault's effect, the same wait is a side effect
    v = judge(cur, [ENTROPY], base)
    assert {c.name: c.kind for c in v.causes}["gosched at api"] is CauseKind.SIDE_EFFECT


def test_a_network_fault_on_a_link_owns_the_far_ends_network_time() -> None:
    # a delay on the service's packets to Envoy: its answers (network at api), and Envoy's
    # connects to it, whose SYN-ACK it delays (network at edge, on Envoy's calls to its upstream)
    def snap(delay: float) -> Snapshot:
        s = stack(api_net=0.00005 + 2 * delay, proxy_extra=delay)
        s[(Layer.NETWORK, "edge", "connect to dependencies")] = Histogram.of(
            [int((0.0001 + delay) * 1e9)] * N
        )
        s[(Layer.NETWORK, "edge", LAYER)] = Histogram.of(
            [int(50e-6 * 1e9)] * N + [int((0.0001 + delay) * 1e9)] * N
        )
        return s

    base = phase("baseline", 0.0, snap(0.0), 1)
    cur = phase("link", 0.030, snap(0.010), 6)
    link = FaultCheck(Layer.NETWORK, "api", None, True, "delayed", "network", ((Layer.NETWORK, "edge"),))
    v = judge(cur, [link], base)
    assert (v.status, v.layer, v.target) == (Status.ABSORBED, "network", "api"), v.reason
    by = {c.name: c for c in v.causes}
    assert set(by) == {"network at api", "network at edge"}
    assert all(c.faults == [link.ref] for c in v.causes)
    # without the far end named, the same time is a side effect of the fault
    alone = FaultCheck(Layer.NETWORK, "api", None, True, "delayed", "network")
    v2 = judge(cur, [alone], base)
    assert {c.name: c.kind for c in v2.causes}["network at edge"] is CauseKind.SIDE_EFFECT


def test_time_an_outer_layer_adds_beyond_the_faults_is_a_cause_of_its_own() -> None:
    # Envoy adds 20 ms of its own (queueing) on top of the entropy delay it waits for
    cur = phase("starve", 0.032, stack(entropy_each=0.003, proxy_extra=0.020), 7)
    v = judge(cur, [ENTROPY])
    by = {c.name: c for c in v.causes}
    assert by["entropy at api"].added_ms == pytest.approx(11.92, abs=0.05)
    assert by["proxy at edge"].kind is CauseKind.SIDE_EFFECT
    assert by["proxy at edge"].added_ms == pytest.approx(20.0, abs=0.2)  # its own part only
    assert v.unexplained_ms < 2


def test_a_fault_with_no_cause_of_its_own_makes_the_phase_invalid() -> None:
    # the randomness reads were held (three of them, too few to be significant) and Envoy
    # slowed down by 20 ms on its own: the fault is seen by its mechanism but explains nothing
    snap = stack(proxy_extra=0.020)
    snap[(Layer.ENTROPY, "api", LAYER)] = Histogram.of([int(0.003 * 1e9)] * 3)
    v = judge(phase("starve", 0.020, snap, 8), [ENTROPY])
    assert v.status is Status.INVALID
    assert "the entropy fault on api matches no cause" in v.reason
    assert [c.name for c in v.causes] == ["proxy at edge"]


def test_a_control_that_changed_names_an_outside_change() -> None:
    cur = phase("control", 0.015, stack(edge_net=0.015), 9)
    v = judge(cur, [])
    assert (v.status, v.layer, v.target) == (Status.ABSORBED, "network", "edge")
    [cause] = v.causes
    assert cause.kind is CauseKind.OUTSIDE and cause.origin() == "outside change"


def test_causes_under_half_are_listed_in_an_inconclusive_verdict() -> None:
    cur = phase("slow", 0.030, stack(edge_net=0.009), 10)
    v = judge(cur, [])
    assert v.status is Status.INCONCLUSIVE
    assert [c.name for c in v.causes] == ["network at edge"]
    assert "explain 30% of it, under half" in v.reason


def test_without_the_calls_a_proxy_is_taken_to_call_every_other_target() -> None:
    cur = phase("both", 0.027, stack(entropy_each=0.003, edge_net=0.015), 2)
    v = verdict_of(BASE, cur, [ENTROPY, NET_EDGE])
    assert {c.name for c in v.causes} == {"entropy at api", "network at edge"}
