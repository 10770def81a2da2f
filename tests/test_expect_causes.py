"""Expectations over several causes: `absorbed_by` as a list of layers (with targets), and a
cause's share; their YAML, their errors with their paths, and their checks against a verdict."""

from __future__ import annotations

import pytest

from chaoslab.expectations import check
from chaoslab.report.model import Cause, CauseKind, FaultRef, Report, Verdict
from chaoslab.scenario import ScenarioError, Status, parse_scenario
from chaoslab.scenario.loader import load_scenario
from chaoslab.scenario.model import CauseRef, Expectation
from tests.conftest import REPO

SCENARIO = """
name: t
targets:
  api: {service: go-api}
  edge: {service: envoy, upstream: api, requests_per_connection: 1}
load: {protocol: https, target: edge, path: /work, rate: 40/s, concurrency: 16}
phases:
  - {name: baseline, duration: 8s}
  - name: both
    duration: 10s
    faults:
      - {kind: entropy, target: api, delay: 3ms}
      - {kind: network, target: edge, delay: 15ms, local_port: 10000}
expect:
"""


def expect(*lines: str) -> tuple[Expectation, ...]:
    return parse_scenario(SCENARIO + "".join(f"  - {line}\n" for line in lines)).expect


def problems(*lines: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        expect(*lines)
    return [p.render() for p in info.value.problems]


def test_absorbed_by_names_several_layers_with_their_targets() -> None:
    [e, f, g] = expect(
        "{phase: both, absorbed_by: [{layer: entropy, target: api}, {layer: network, target: edge}]}",
        "{phase: both, absorbed_by: [entropy, {layer: network}]}",
        "{phase: both, absorbed_by: entropy, target: api}",  # the single form stays
    )
    assert e.causes == (CauseRef("entropy", "api"), CauseRef("network", "edge")) and e.absorbed_by is None
    assert e.describe() == "both: absorbed by entropy at api and network at edge"
    assert f.causes == (CauseRef("entropy"), CauseRef("network"))
    assert (g.absorbed_by, g.target, g.causes) == ("entropy", "api", ())


def test_a_causes_share() -> None:
    [e, f] = expect(
        "{phase: both, cause: {layer: entropy, target: api}, share_at_least: 0.4}",
        "{phase: both, cause: network, share_at_least: 0.3, share_below: 0.7}",
    )
    assert (e.cause, e.share_at_least, e.share_below) == (CauseRef("entropy", "api"), 0.4, None)
    assert e.describe() == "both: entropy at api explains >= 40%"
    assert f.describe() == "both: network explains >= 30%, network explains < 70%"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (
            "{phase: both, absorbed_by: [{layer: entropy, target: api}, {layer: kernel, target: edge}]}",
            "expect[0].absorbed_by[1].layer: must be one of proxy, network, app, tls, gc, gosched, entropy, "
            "syscall, cpu, memory, got 'kernel'",
        ),
        (
            "{phase: both, absorbed_by: [{layer: entropy, target: db}]}",
            "expect[0].absorbed_by[0].target: unknown target 'db'",
        ),
        ("{phase: both, absorbed_by: [{target: api}]}", "expect[0].absorbed_by[0].layer: is required"),
        (
            "{phase: both, absorbed_by: [{layer: entropy, targt: api}]}",
            "expect[0].absorbed_by[0].targt: unknown key\n    hint: did you mean 'target'?",
        ),
        ("{phase: both, absorbed_by: [entropy, 3]}", "expect[0].absorbed_by[1]: expected a layer or {layer:"),
        ("{phase: both, absorbed_by: []}", "expect[0].absorbed_by: an empty list names no cause"),
        (
            "{phase: both, absorbed_by: [entropy, entropy]}",
            "expect[0].absorbed_by[1]: entropy is named twice",
        ),
        ("{phase: both, absorbed_by: {layer: entropy}}", "expect[0].absorbed_by: expected a layer or a list"),
        (
            "{phase: both, absorbed_by: [entropy], target: api}",
            "expect[0].target: 'target' qualifies a single 'absorbed_by'; a list names each layer's target",
        ),
        ("{phase: both, cause: {layer: entropy}}", "expect[0].cause: a cause is named for its share"),
        ("{phase: both, share_at_least: 0.4}", "expect[0].share_at_least: a share is a cause's share"),
        (
            "{phase: both, cause: entropy, share_at_least: 1.5}",
            "expect[0].share_at_least: must be between 0 and 1, got 1.5",
        ),
        (
            "{phase: both, cause: entropy, share_at_least: 0.6, share_below: 0.4}",
            "expect[0].share_below: no share is at least 0.6 and below 0.4",
        ),
        (
            "{phase: both, cause: {layer: entropy, target: ghost}, share_below: 0.5}",
            "expect[0].cause.target: unknown target 'ghost'",
        ),
        ("{phase: both, cause: [entropy], share_below: 0.5}", "expect[0].cause: expected a layer or {layer:"),
    ],
)
def test_bad_expectations_name_their_path(line: str, message: str) -> None:
    found = problems(line)
    assert any(p.startswith(message) for p in found), found


def verdict(status: Status = Status.ABSORBED) -> Verdict:
    causes = [
        Cause("network", "edge", 15.3, 0.54, CauseKind.FAULT, [FaultRef("network", "network", "edge")]),
        Cause("entropy", "api", 12.8, 0.45, CauseKind.FAULT, [FaultRef("entropy", "entropy", "api")]),
        Cause("cpu", "edge", 1.6, 0.06, CauseKind.SIDE_EFFECT),
    ]
    return Verdict("both", status, "network", "edge", 15.3, 1.0, 28.0, 28.4, 0.0, 1e-90, "", [], causes)


def report(v: Verdict) -> Report:
    return Report("t", "run", "local", 0.0, [], [], [], [], [v], [])


def test_absorbed_by_several_holds_when_each_is_a_cause() -> None:
    held = check(
        Expectation("both", "expect[0]", causes=(CauseRef("entropy", "api"), CauseRef("network"))),
        report(verdict()),
    )
    assert held.held, held.detail
    assert "causes network at edge 54%, entropy at api 45%, cpu at edge 6%" in held.detail
    failed = check(
        Expectation("both", "expect[0]", causes=(CauseRef("entropy", "api"), CauseRef("syscall", "edge"))),
        report(verdict()),
    )
    assert not failed.held and failed.detail == "syscall at edge is not a cause"
    # an entropy cause at another target is not the one named
    assert not check(Expectation("both", "e", causes=(CauseRef("entropy", "edge"),)), report(verdict())).held
    inconclusive = check(
        Expectation("both", "e", causes=(CauseRef("entropy"),)), report(verdict(Status.INCONCLUSIVE))
    )
    assert not inconclusive.held and "not absorbed (status inconclusive)" in inconclusive.detail


def test_a_share_expectation_checks_the_causes_share() -> None:
    def run(ref: CauseRef, low: float | None = None, high: float | None = None) -> tuple[bool, str]:
        r = check(
            Expectation("both", "e", cause=ref, share_at_least=low, share_below=high), report(verdict())
        )
        return r.held, r.detail

    assert run(CauseRef("entropy", "api"), low=0.4)[0]
    held, detail = run(CauseRef("entropy", "api"), low=0.5)
    assert not held and detail == "entropy at api explains 45%, not at least 50%"
    held, detail = run(CauseRef("cpu"), high=0.05)
    assert not held and detail == "cpu explains 6%, not below 5%"  # a side effect has a share too
    held, detail = run(CauseRef("gc", "api"), low=0.1)
    assert not held and detail == "gc at api is not a cause"
    # a layer that is no cause explains nothing: below any bound, at least none
    held, detail = run(CauseRef("gc", "api"), high=0.1)
    assert held and detail.endswith("gc at api explains 0%"), detail
    invalid = check(
        Expectation("both", "e", cause=CauseRef("entropy"), share_at_least=0.1),
        report(verdict(Status.INVALID)),
    )
    assert not invalid.held and invalid.detail.startswith("the phase is INVALID")


@pytest.mark.parametrize(
    "path",
    [
        "scenarios/two_faults.yaml",
        "tests/scenarios/two_faults.yaml",
        "tests/scenarios/three_faults.yaml",
        "tests/scenarios/edge_listener.yaml",
    ],
)
def test_the_scenarios_with_several_faults_are_valid(path: str) -> None:
    s = load_scenario(REPO / path)
    assert any(len(p.faults) > 1 for p in s.phases) or s.name == "edge-listener"
    assert all(e.describe() for e in s.expect)


def test_a_share_on_a_phase_without_a_verdict_can_never_hold() -> None:
    [message] = problems("{phase: baseline, cause: {layer: entropy, target: api}, share_at_least: 0.4}")
    assert message.startswith("expect[0].cause: phase baseline gets no verdict (it is the baseline)"), message
    [message] = problems("{phase: baseline, absorbed_by: [entropy]}")
    assert message.startswith("expect[0].absorbed_by: phase baseline gets no verdict"), message
