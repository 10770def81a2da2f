"""Sweeps: a fault run over a list or a range of one parameter's values, the curve they give
and the breaking point. The scenario-level tests read the YAML; the e2e test runs a delay
sweep behind an Envoy whose route timeout turns the largest delay into errors."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab.report.reader import read_report
from chaoslab.report.render import sweep_tables
from chaoslab.report.writers import REPORT_WRITERS, write
from chaoslab.scenario import parse_scenario
from tests.conftest import SCENARIOS, ScenarioRun, chaoslab, story
from tests.test_targets import problems

SWEPT = """
name: s
targets:
  api: {service: go-api}
load: {protocol: https, target: api, path: /, rate: 10/s}
phases:
  - {name: baseline, duration: 5s}
  - name: delay
    duration: 4s
    faults: [{kind: network, target: api, delay: 1ms}]
    sweep: SWEEP
  - {name: recovery, duration: 3s}
expect:
  - {phase: delay, client_p99_below: 30ms, through: 8ms}
"""


def swept(sweep: str, fault: str = "{kind: network, target: api, delay: 1ms}") -> str:
    return SWEPT.replace("SWEEP", sweep).replace("{kind: network, target: api, delay: 1ms}", fault)


def test_a_range_by_a_factor_becomes_one_phase_per_value_with_rests_between() -> None:
    s = parse_scenario(swept("{param: delay, range: {from: 1ms, to: 16ms, factor: 2}, rest: 2s}"))
    names = [p.name for p in s.phases]
    assert names == [
        "baseline",
        "delay@1ms",
        "delay@1ms-rest",
        "delay@2ms",
        "delay@2ms-rest",
        "delay@4ms",
        "delay@4ms-rest",
        "delay@8ms",
        "delay@8ms-rest",
        "delay@16ms",
        "recovery",
    ]
    [sweep] = s.sweeps
    assert [p.x for p in sweep.points] == [0.001, 0.002, 0.004, 0.008, 0.016]
    assert [p.faults[0].delay for p in s.phases if p.faults] == [0.001, 0.002, 0.004, 0.008, 0.016]  # type: ignore[attr-defined]
    assert all(not p.faults and not p.compare for p in s.phases if p.name.endswith("-rest"))
    assert sweep.total == 5 * 4 + 4 * 2 and s.duration == 5 + 28 + 3
    assert "over 5 values (1ms, 2ms, 4ms, 8ms, 16ms), 4s each + 2s rest between = 28s" in sweep.describe()
    # the expectation is checked at every value; it must hold through 8 ms, past it a failure
    # only marks the breaking point
    assert [(e.phase, e.binding) for e in s.expect] == [
        ("delay@1ms", True),
        ("delay@2ms", True),
        ("delay@4ms", True),
        ("delay@8ms", True),
        ("delay@16ms", False),
    ]


@pytest.mark.parametrize(
    ("sweep", "fault", "values", "xs"),
    [
        ("{param: loss, range: {from: 2.5%, to: 20%, step: 2.5%}}", "{kind: network, target: api, loss: 1%}",
         ["2.5%", "5%", "7.5%", "10%", "12.5%", "15%", "17.5%", "20%"],
         [2.5, 5, 7.5, 10, 12.5, 15, 17.5, 20]),
        # cpus going down by a step: 1.0 to 0.2 (0.1 + 0.2 style sums are rounded)
        ("{param: cpus, range: {from: 1.0, to: 0.2, step: 0.2}}", "{kind: cpu, target: api, cpus: 0.5}",
         ["1", "0.8", "0.6", "0.4", "0.2"], [1.0, 0.8, 0.6, 0.4, 0.2]),
        ("{param: cpus, range: {from: 1, to: 0.1, factor: 0.5}}", "{kind: cpu, target: api, cpus: 0.5}",
         ["1", "0.5", "0.25", "0.125"], [1.0, 0.5, 0.25, 0.125]),
        ("{param: delay, values: [5ms, 1ms, 0.02s]}",
         "{kind: syscall, target: api, syscall: write, delay: 1ms}",
         ["5ms", "1ms", "0.02s"], [0.005, 0.001, 0.02]),
    ],
)  # fmt: skip
def test_ranges_and_lists_of_values(sweep: str, fault: str, values: list[str], xs: list[float]) -> None:
    s = parse_scenario(swept(sweep, fault).replace(", through: 8ms", ""))
    [spec] = s.sweeps
    assert [p.value for p in spec.points] == values
    assert [p.x for p in spec.points] == pytest.approx(xs)


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("{param: dely, values: [1ms]}",
         "phases[1].sweep.param: the fault phases[1].faults[0] sets no 'dely' to sweep"),
        ("{param: direction, values: [1ms]}",
         "phases[1].sweep.param: the fault phases[1].faults[0] sets no 'direction' to sweep"),
        ("{param: delay, values: []}", "phases[1].sweep.values: is empty"),
        ("{param: delay, values: [1ms, fast]}", "phases[1].sweep.values[1]: 'fast' is not a number"),
        ("{param: delay, values: [1ms, 2s, 1ms]}", "phases[1].sweep.values[2]: 1ms is the value 1ms again"),
        ("{param: delay, range: {from: 64ms, to: 1ms, factor: 2}}",
         "phases[1].sweep.range: the range from 64ms to 1ms by a factor of 2 is empty"),
        ("{param: delay, range: {from: 1ms, to: 5000ms, step: 1ms}}",
         "phases[1].sweep.range: the range has 5000 values, at most 50"),
        ("{param: delay, range: {from: 1ms, to: 4ms}}",
         "phases[1].sweep.range: a range goes by a step or by a factor"),
        ("{param: delay, range: {from: 1ms, to: 4, step: 1ms}}", "phases[1].sweep.range.to: is in no unit"),
        ("{param: delay, values: [1ms], range: {from: 1ms, to: 2ms, step: 1ms}}",
         "phases[1].sweep: a sweep takes its values from 'values' or from 'range', not both"),
        ("{param: delay, range: {from: 1ms, to: 64ms, factor: 2}, rest: 10m}",
         "phases[1].sweep: the sweep would run 3628s (7 values of 4s, 6 rests of 600s), over its cap"),
        ("{param: delay, values: [1ms, 2ms], max_duration: 5s}",
         "phases[1].sweep: the sweep would run 8s (2 values of 4s), over its cap of 5s"),
        ("{param: delay, values: [1ms], fault: 3}",
         "phases[1].sweep.fault: the phase has no fault phases[1].faults[3]"),
        ("{param: delay, values: [1ms], step: 2}", "phases[1].sweep.step: unknown key"),
        ("[delay]", "phases[1].sweep: expected a mapping"),
        ("{values: [1ms]}", "phases[1].sweep.param: is required"),
    ],
)  # fmt: skip
def test_bad_sweeps_are_named_by_their_path(sweep: str, expected: str) -> None:
    found = problems(swept(sweep))
    assert any(expected in p for p in found), found


def test_a_value_the_fault_refuses_is_named_at_its_place_in_the_sweep() -> None:
    found = problems(
        swept("{param: loss, values: [5%, 150%, 50%]}", "{kind: network, target: api, loss: 1%}").replace(
            ", through: 8ms", ""
        )
    )
    assert len(found) == 1 and found[0].startswith("phases[1].sweep.values[1]: 150%: "), found
    # the fault's other problems are said once, not once per value
    found = problems(swept("{param: delay, values: [1ms, 2ms]}", "{kind: network, target: nope, delay: 1ms}"))
    assert sum("unknown target 'nope'" in p for p in found) == 1, found


def test_through_belongs_to_a_sweep_and_takes_one_of_its_values() -> None:
    text = swept("{param: delay, values: [1ms, 2ms]}")
    found = problems(text.replace("through: 8ms", "through: lots"))
    assert any(p.startswith("expect[0].through: 'lots' is not one of the sweep's values") for p in found), (
        found
    )
    # a value the sweep does not run would make every value binding, or none
    found = problems(text.replace("through: 8ms", "through: 1.5ms"))
    assert any("'1.5ms' is not one of the sweep's values" in p and "1ms, 2ms" in p for p in found), found
    found = problems(text.replace("{phase: delay,", "{phase: recovery,"))
    assert any(p.startswith("expect[0].through: 'through' is for an expectation on a sweep") for p in found)
    found = problems(text.replace("{phase: delay,", "{phase: dlay,"))
    assert any("unknown phase 'dlay'" in p and "delay (a sweep)" in p for p in found), found


def test_the_cli_refuses_a_bad_sweep_with_exit_2_and_runs_nothing(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(swept("{param: delay, range: {from: 1ms, to: 64ms, factor: 0.5}}"))
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 2, res.stderr
    assert "phases[1].sweep.range: the range from 1ms to 64ms by a factor of 0.5 is empty" in res.stderr
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists()
    ok = tmp_path / "ok.yaml"
    ok.write_text(swept("{param: delay, range: {from: 1ms, to: 8ms, factor: 2}, rest: 1s}"))
    res = chaoslab("validate", str(ok))
    assert res.returncode == 0, res.stderr
    assert "sweep delay: network delay at api over 4 values (1ms, 2ms, 4ms, 8ms), 4s each" in res.stdout


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_delay_sweep_draws_the_curve_and_finds_the_breaking_point(
    scenario_run: Callable[[str], ScenarioRun], tmp_path: Path
) -> None:
    res = scenario_run("sweep_timeout")
    # the expectation holds through 8 ms: its failures past it mark the breaking point only
    assert res.returncode == 0, story(res)
    r = res.report
    [sweep] = r["sweeps"]
    values = sweep["values"]
    assert [v["value"] for v in values] == ["1ms", "2ms", "4ms", "8ms", "16ms", "32ms", "64ms"]
    # From 64 ms the route's 50 ms timeout answers every request with a 504, and from 32 ms
    # when one request there passes 50 ms: Envoy resets the upstream connection of a request it
    # timed out, and every request after it pays the delayed handshake too (twice the delay),
    # times out and resets again. Either way the absorber changes to the timeout's errors.
    timed_out = [v["value"] for v in values if v["error_rate"] > 0.9]
    assert timed_out in (["32ms", "64ms"], ["64ms"]), [(v["value"], v["error_rate"]) for v in values]
    first = timed_out[0]
    # below it the client pays the delay once per request: a monotone curve, network at api the
    # absorber at every value the verdict can tell from noise
    answered = values[: len(values) - len(timed_out)]
    p50 = [v["p50_ms"] for v in answered]
    assert p50 == sorted(p50), p50
    assert p50[-1] - p50[0] > 12
    for v in answered:
        assert v["error_rate"] == 0, v
        if v["status"] == "absorbed":
            assert (v["layer"], v["target"]) == ("network", "api"), v
            assert v["explained"] >= 0.8, v
        else:  # too small to tell from the baseline's noise: only the first values
            assert v["status"] == "no-change" and v["x"] <= 0.002, v
    assert [v["status"] for v in answered[3:]] == ["absorbed"] * len(answered[3:])
    # 30 ms at p99 breaks at 32 ms (the client pays 32 ms and more, or its requests time out)
    assert sweep["breaking_point"] == "32ms", sweep
    assert sweep["through"] == "8ms", sweep
    for v in values[len(answered) :]:
        assert v["absorber"] == "errors at edge (UT)", v
    assert sweep["absorbers"][-2:] == [
        ["network at api", sweep["absorbers"][-2][1], answered[-1]["value"]],
        ["errors at edge (UT)", first, "64ms"],
    ]
    # every answer reached the access log, the last phase's too
    rows = {(e["phase"]): e for e in r["errors"]}
    client = {c["phase"]: c for c in r["client"] if not c["name"]}
    # (Envoy logs a request by when it started, the client by when it was due: one at a phase's
    # edge can fall on either side)
    assert abs(rows["delay@64ms"]["requests"] - client["delay@64ms"]["requests"]) <= 2
    assert abs(rows["recovery"]["requests"] - client["recovery"]["requests"]) <= 2
    results = [e for e in r["expectations"] if e["sweep"] == "delay"]
    assert [e["required"] for e in results] == [True] * 4 + [False] * 3
    assert [e["held"] for e in results] == [True] * 5 + [False] * 2
    assert f"from {first}: errors at edge (UT)" in res.stdout and "breaks at 32ms" in res.stdout
    # the curve survives the report's JSON, and every writer draws it
    report = read_report(res.out)
    assert report.sweeps[0].breaking_point == "32ms" and len(sweep_tables(report)) == 2
    files = write(report, REPORT_WRITERS.values(), tmp_path)
    html = next(f for f in files if f.suffix == ".html").read_text()
    assert 'data-chart="sweep"' in html and "breaks at 32ms" in html and "▲ broke" in html
    md = next(f for f in files if f.suffix == ".md").read_text()
    assert "**Sweep delay**" in md and "| 64ms |" in md
    assert json.loads((res.out / "report.json").read_text())["passed"] is True


def test_the_shipped_sweep_is_valid_and_its_short_variant_sweeps_the_same_fault() -> None:
    from chaoslab.scenario import load_scenario

    full = load_scenario(Path(__file__).resolve().parent.parent / "scenarios" / "breaking_point.yaml")
    short = load_scenario(SCENARIOS / "sweep_timeout.yaml")
    [a], [b] = full.sweeps, short.sweeps
    assert (a.kind, a.target, a.param) == (b.kind, b.target, b.param)
    assert len(a.points) >= 5 and a.duration > b.duration


def test_through_binds_the_values_up_to_its_place_in_the_sweep() -> None:
    # a list in any order: the values before `through` and `through` itself bind
    s = parse_scenario(swept("{param: delay, values: [8ms, 64ms, 1ms]}"))
    assert [(e.phase, e.binding) for e in s.expect] == [
        ("delay@8ms", True),
        ("delay@64ms", False),
        ("delay@1ms", False),
    ]
    # a sweep going down (cpus from 1 to 0.2): through 0.6 binds 1, 0.8 and 0.6
    s = parse_scenario(
        swept(
            "{param: cpus, range: {from: 1.0, to: 0.2, step: 0.2}}", "{kind: cpu, target: api, cpus: 0.5}"
        ).replace("through: 8ms", "through: 0.6")
    )
    assert [e.binding for e in s.expect] == [True, True, True, False, False]


def test_computed_values_are_written_plainly() -> None:
    s = parse_scenario(
        swept(
            "{param: limit, range: {from: 16777216B, to: 67108864B, factor: 2}}",
            "{kind: memory, target: api, limit: 64MiB}",
        ).replace(", through: 8ms", "")
    )
    assert [p.value for p in s.sweeps[0].points] == ["16777216B", "33554432B", "67108864B"]
    s = parse_scenario(
        swept("{param: delay, range: {from: 1.5ms, to: 1.500003ms, step: 0.000001ms}}").replace(
            ", through: 8ms", ""
        )
    )
    assert [p.value for p in s.sweeps[0].points] == ["1.5ms", "1.500001ms", "1.500002ms", "1.500003ms"]


def test_a_memory_limit_swept_as_shares_of_the_usage() -> None:
    s = parse_scenario(
        swept("{param: limit, values: [80%, 60%, 40%]}", "{kind: memory, target: api, limit: 64MiB}").replace(
            ", through: 8ms", ""
        )
    )
    assert [p.x for p in s.sweeps[0].points] == [80, 60, 40]
    found = problems(
        swept("{param: limit, values: [64MiB, 60%]}", "{kind: memory, target: api, limit: 64MiB}").replace(
            ", through: 8ms", ""
        )
    )
    assert any("phases[1].sweep.values: mixes shares (%) with other values" in p for p in found), found


def test_sweep_names_are_phase_names() -> None:
    two = swept("{param: delay, values: [1ms, 2ms]}").replace(
        "  - {name: recovery, duration: 3s}",
        "  - {name: delay, duration: 4s, faults: [{kind: network, target: api, delay: 1ms}],\n"
        "     sweep: {param: delay, values: [3ms]}}",
    )
    assert any("phase name 'delay' is used more than once" in p for p in problems(two))
    plain = swept("{param: delay, values: [1ms, 2ms]}").replace("{name: recovery,", "{name: delay,")
    assert any("phase name 'delay' is used more than once" in p for p in problems(plain))


def test_other_problems_do_not_hide_a_sweeps_own() -> None:
    text = swept("{param: delay, range: {from: 1ms, to: 4ms, step: 0ms}}").replace(
        "{name: baseline, duration: 5s}", "{name: baseline, duration: 5s, bogus: 1}"
    )
    found = problems(text)
    assert any(p.startswith("phases[0].bogus: unknown key") for p in found), found
    assert any(p.startswith("phases[1].sweep.range.step: must be above 0") for p in found), found
    assert not any("'through' is for an expectation on a sweep" in p for p in found), found


def test_a_range_too_large_for_floats_is_refused_not_a_crash() -> None:
    for rng in ("{from: -1e300, to: 1e300, step: 1}", "{from: 0ms, to: 1ms, step: 1e-300ms}"):
        found = problems(swept(f"{{param: delay, range: {rng}}}").replace(", through: 8ms", ""))
        assert any("phases[1].sweep.range: the range has too many values" in p for p in found), found
