from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from chaoslab.faults.entropy import EntropySpec
from chaoslab.scenario import ScenarioError, Status, parse_scenario
from tests.conftest import REPO, chaoslab

GOOD = """
name: t
targets:
  api: {service: go-api}
  edge: {service: envoy, upstream: api, requests_per_connection: 4}
load: {protocol: https, target: edge, path: /work, rate: 200/s, concurrency: 10}
phases:
  - {name: baseline, duration: 20s}
  - {name: starve, duration: 30s, faults: [{kind: entropy, target: api, delay: 40ms}]}
  - {name: recovery, duration: 20s}
expect:
  - {phase: starve, absorbed_by: entropy, target: api}
  - {phase: recovery, client_p99_below: 50ms}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(textwrap.dedent(text))
    return [p.render() for p in info.value.problems]


def test_good_scenario_is_typed() -> None:
    s = parse_scenario(GOOD)
    assert s.targets["edge"].upstream == "api"
    assert s.targets["edge"].requests_per_connection == 4
    assert s.load.rate == 200.0
    assert s.duration == 70.0
    fault = s.phases[1].faults[0]
    assert isinstance(fault, EntropySpec)
    assert fault.delay == pytest.approx(0.040)
    assert fault.path == "phases[1].faults[0]"
    assert [p.name for p in s.compared_phases] == ["starve"]
    assert s.expect[0].absorbed_by == "entropy"
    assert s.expect[1].client_p99_below == pytest.approx(0.05)


def test_every_problem_is_reported_at_once_with_its_path() -> None:
    found = problems(
        """
        name: bad
        targets:
          api: {service: go-api, colour: blue}
          edge: {service: envoy, upstream: nope}
        load: {protocol: https, target: edge, path: /work, rate: 10/s}
        phases:
          - {name: baseline, duration: -5s}
          - {name: starve, duration: 10s, faults: [{kind: entropy, target: ghost, delay: 0ms}]}
        """
    )
    assert found == [
        "targets.api.colour: unknown key\n    hint: known keys here: service",
        "targets.edge.upstream: unknown target 'nope'\n    hint: targets are: api, edge",
        "phases[0].duration: must be greater than zero, got '-5s'",
        "phases[1].faults[0].target: unknown target 'ghost'\n    hint: targets are: api, edge",
        "phases[1].faults[0].delay: must be greater than zero, got '0ms'",
    ]


def test_bad_target_name_is_reported_at_its_own_path() -> None:
    found = problems(GOOD.replace("api: {service: go-api}", "Api!: {service: go-api}"))
    assert (
        "targets.Api!: 'Api!' is not a valid target name\n    hint: use 1-24 lowercase letters, digits, "
        "'-' or '_', starting with a letter" in found
    )


def test_unknown_key_suggests_the_closest() -> None:
    found = problems(GOOD.replace("rate: 200/s", "rat: 200/s"))
    assert "load.rat: unknown key\n    hint: did you mean 'rate'?" in found
    assert "load.rate: is required" in found


def test_shell_metacharacters_are_refused() -> None:
    found = problems(GOOD.replace("upstream: api", "upstream: 'api;rm'"))
    assert any(
        f.startswith("targets.edge.upstream: 'api;rm' contains a character that is not allowed")
        for f in found
    )


def test_a_request_path_takes_url_characters_and_nothing_else() -> None:
    assert parse_scenario(GOOD.replace("path: /work", "path: '/item?id=1&f=2;x=%20'")).load.requests[0].path
    found = problems(GOOD.replace("path: /work", "path: '/work rm -rf /'"))
    assert any(f.startswith("load.path: '/work rm -rf /' is not a URL path") for f in found), found


def test_baseline_cannot_carry_faults() -> None:
    text = GOOD.replace(
        "{name: baseline, duration: 20s}",
        "{name: baseline, duration: 20s, faults: [{kind: entropy, target: api, delay: 1ms}]}",
    )
    assert any(f.startswith("phases[0]: the first phase is the baseline") for f in problems(text))


def test_expectations_are_checked_against_phases_and_layers() -> None:
    found = problems(
        GOOD.replace(
            "{phase: starve, absorbed_by: entropy, target: api}", "{phase: strave, absorbed_by: kernel}"
        )
    )
    assert (
        "expect[0].phase: unknown phase 'strave'\n    hint: phases are: baseline, starve, recovery" in found
    )
    assert any(
        f.startswith("expect[0].absorbed_by: must be one of proxy, network, app, tls, gc, gosched, entropy")
        for f in found
    )


def test_unknown_fault_kind_and_service() -> None:
    found = problems(
        GOOD.replace("kind: entropy", "kind: meteor").replace("service: go-api", "service: cobol")
    )
    assert any(f.startswith("phases[1].faults[0].kind: must be one of entropy") for f in found)
    assert any(f.startswith("targets.api.service: must be one of go-api, envoy") for f in found)


def test_control_phase() -> None:
    s = parse_scenario(GOOD.replace("faults: [{kind: entropy, target: api, delay: 40ms}]", "compare: true"))
    assert [p.name for p in s.compared_phases] == ["starve"]
    assert s.phases[1].faults == ()


def test_expect_status_value() -> None:
    s = parse_scenario(
        GOOD.replace("client_p99_below: 50ms", "status: no-change").replace(
            "{name: recovery, duration: 20s}", "{name: recovery, duration: 20s, compare: true}"
        )
    )
    assert s.expect[1].status is Status.NO_CHANGE


def test_runtime_choice() -> None:
    assert parse_scenario(GOOD).runtime == "local"
    assert parse_scenario("runtime: docker\n" + GOOD).runtime == "docker"
    assert parse_scenario("runtime: auto\n" + GOOD).runtime == "auto"
    [found] = problems("runtime: kubernetes\n" + GOOD)
    assert found.startswith("runtime: ") and "docker" in found and "local" in found


def test_invalid_yaml_names_the_line() -> None:
    found = problems("name: x\ntargets: {api: {service: go-api}\n")
    assert found[0].startswith("line 3, column 1: not valid YAML")


def test_validate_command_exit_codes(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(GOOD.replace("20s", "-20s"))
    res = chaoslab("validate", str(bad))
    assert res.returncode == 2
    assert "2 problems, nothing was started" in res.stderr
    assert "phases[0].duration: must be greater than zero, got '-20s'" in res.stderr
    ok = chaoslab("validate", str(REPO / "scenarios" / "tls_entropy.yaml"))
    assert ok.returncode == 0, ok.stderr
    assert "valid: 2 targets, 3 phases (1 faults)" in ok.stdout


def fault_problems(fault: str) -> list[str]:
    return problems(GOOD.replace("{kind: entropy, target: api, delay: 40ms}", fault))


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        ("{kind: network, target: api, delay: -5ms}", "phases[1].faults[0].delay: must not be negative"),
        ("{kind: network, target: api, loss: 120%}", "phases[1].faults[0].loss: must be a percentage"),
        ("{kind: network, target: api, rate: fast}", "phases[1].faults[0].rate: 'fast' is not a bit rate"),
        ("{kind: network, target: api}", "phases[1].faults[0]: a network fault needs an effect"),
        ("{kind: network, target: api, jitter: 5ms}", "phases[1].faults[0].jitter: jitter varies a delay"),
        ("{kind: network, target: api, blackhole: true, loss: 5%}", "blackhole acts on every packet"),
        (
            "{kind: network, target: api, delay: 1ms, peer: db}",
            "phases[1].faults[0].peer: api has no link to 'db'",
        ),
        (
            "{kind: network, target: api, delay: 1ms, local_port: 9999}",
            "api (go-api) does not listen on 9999",
        ),
        ("{kind: network, target: edge, delay: 1ms, local_port: 9901}", "9901 is a control port"),
        ("{kind: network, target: api, delay: 1ms, remote_port: 70000}", "must be between 1 and 65535"),
        ("{kind: network, target: api, delay: 1ms, direction: sideways}", "phases[1].faults[0].direction"),
        ("{kind: network, target: api, delay: 1ms, packets: fin}", "faults[0].packets: must be one of"),
        ("{kind: network, target: api, rate: 1mbit, packets: syn}", "faults[0].packets: a connection's"),
        ("{kind: cpu, target: api, cpus: 0}", "phases[1].faults[0].cpus: expected a number of CPUs"),
        ("{kind: cpu, target: api}", "phases[1].faults[0].cpus: is required"),
        ("{kind: syscall, target: api, syscall: wrte, delay: 1ms}", "unknown syscall 'wrte'"),
        ("{kind: syscall, target: api, syscall: write, errno: EWHAT}", "unknown errno 'EWHAT'"),
        ("{kind: syscall, target: api, syscall: write}", "needs 'delay' or 'errno'"),
        ("{kind: syscall, target: api, syscall: write, delay: 1ms, probability: 2}", "probability"),
        ("{kind: process, target: api, action: explode}", "phases[1].faults[0].action"),
        ("{kind: process, target: api, action: pause, signal: KILL}", "'signal' belongs to action kill"),
        ("{kind: network, target: api, delay: '1ms;reboot'}", "phases[1].faults[0].delay"),
        ("{kind: network, target: db, delay: 1ms}", "phases[1].faults[0].target: unknown target 'db'"),
    ],
)
def test_bad_fault_values_name_their_path(fault: str, expected: str) -> None:
    found = fault_problems(fault)
    assert any(expected in p for p in found), found


def test_wrte_suggests_write() -> None:
    [p] = fault_problems("{kind: syscall, target: api, syscall: wrte, delay: 1ms}")
    assert "did you mean 'write'" in p


def plan(tmp_path: Path, faults: str) -> str:
    """What `chaoslab plan` prints for GOOD with `faults` in its fault phase."""
    s = tmp_path / "s.yaml"
    s.write_text(GOOD.replace("{kind: entropy, target: api, delay: 40ms}", faults))
    res = chaoslab("plan", str(s))
    assert res.returncode == 0, res.stderr
    return res.stdout


def test_plan_prints_commands_and_applies_nothing(tmp_path: Path) -> None:
    out = plan(
        tmp_path,
        "{kind: network, target: api, delay: 40ms, peer: edge}, {kind: cpu, target: edge, cpus: 0.5}",
    )
    assert "network on api (phases[1].faults[0])" in out
    assert "mechanism:" in out and "revert:" in out
    assert ("netem" in out) or ("NFQUEUE" in out and "nfqdelay" in out)
    assert "cpu.cfs_quota_us" in out or "cpu.max" in out
    assert not list(Path("/run/netns").glob("chaoslab-RUNID-*")) if Path("/run/netns").exists() else True


def test_plan_of_a_syn_only_fault_matches_the_syn_flag(tmp_path: Path) -> None:
    out = plan(tmp_path, "{kind: network, target: api, delay: 5ms, packets: syn}")
    assert "(SYN packets only)" in out
    rules = [line for line in out.splitlines() if "chaoslab:seen" in line or "chaoslab:delay" in line]
    if "NFQUEUE" in out:
        assert len(rules) == 2 and all("-p tcp --tcp-flags SYN SYN" in r for r in rules), rules
    else:  # netem: the u32 filter on the TCP flags byte
        assert "match u8 0x02 0x02 at 33" in out, out


def test_plan_on_a_remote_engine_names_it_and_the_faults_it_takes(tmp_path: Path) -> None:
    """`chaoslab plan` connects to nothing: a remote engine's faults are planned as its API does
    them, the helper's said to be planned there at run time."""
    faults = (
        "{kind: cpu, target: api, cpus: 0.5}, {kind: process, target: edge, action: pause}, "
        "{kind: network, target: api, delay: 5ms}, {kind: memory, target: edge, limit: 256MiB}"
    )
    s = tmp_path / "s.yaml"
    text = GOOD.replace("{kind: entropy, target: api, delay: 40ms}", faults)
    s.write_text("runtime: docker\nengine: tcp://192.0.2.7:2375\n" + text)
    res = chaoslab("plan", str(s), timeout=60)
    assert res.returncode == 0, res.stderr
    out = res.stdout.replace("\n", " ")
    assert "runtime docker on the remote Docker engine tcp://192.0.2.7:2375" in out
    assert "docker update --cpu-period 100000 --cpu-quota 50000 chaoslab-RUNID-api" in out
    assert "docker pause chaoslab-RUNID-edge" in out and "revert: docker unpause chaoslab-RUNID-edge" in out
    assert (
        "network on api (phases[1].faults[2]): applied inside chaoslab's helper on the engine's host, "
        "planned there at run time, as api runs on the remote" in out
    )
    assert (
        "memory on edge (phases[1].faults[3]): applied inside chaoslab's helper on the engine's host, "
        "planned there at run time, as edge runs on the remote" in out
    )
    assert "/sys/fs/cgroup" not in out and "nsenter" not in out and "iptables" not in out
