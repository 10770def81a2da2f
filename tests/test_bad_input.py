"""Scenario files as a new user writes them, and as a fuzz of `validate` wrote them: every class of
defect the fuzz found is a clean, path-named rejection (exit 2), quickly, never a traceback, a hang
or an accepted value that goes wrong later."""

from __future__ import annotations

import os
import random
import re
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from chaoslab import cli, journal
from chaoslab.errors import ExitCode
from chaoslab.scenario import ScenarioError, parse_scenario
from tests.conftest import REPO, SCENARIOS, chaoslab

BASE = """\
name: t
targets:
  api: {service: go-api}
  edge: {service: envoy, upstream: api}
load: {protocol: https, target: edge, path: /work, rate: 10/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: slow, duration: 5s, faults: [{kind: cpu, target: api, cpus: 0.5}]}
  - {name: recovery, duration: 5s}
"""


def problems(text: str) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(textwrap.dedent(text))
    return [p.render() for p in info.value.problems]


def one(text: str) -> str:
    found = problems(text)
    assert len(found) == 1, found
    return found[0]


def run_cli(*args: str) -> tuple[int, str, str]:
    """Exit code, stdout and stderr with the console's line wrapping undone."""
    res = chaoslab(*args, timeout=30)
    assert "Traceback" not in res.stderr, res.stderr[-2000:]
    return res.returncode, res.stdout, unwrap(res.stderr)


def unwrap(text: str) -> str:
    return re.sub(r" ?\n(?!  )", " ", text)


# -- tracebacks instead of errors ---------------------------------------------------------------


def test_a_file_that_is_not_utf8_is_named_with_its_byte(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes(BASE.replace("name: t", "name: caf\xe9").encode("latin-1"))
    code, _, err = run_cli("validate", str(bad))
    assert code == ExitCode.BAD_INPUT
    assert "is not UTF-8 text (byte 0xe9 at offset 9)" in err


@pytest.mark.parametrize("depth", [40, 5000])
def test_deep_nesting_is_refused(depth: int) -> None:
    found = one(f"name: {'[' * depth}1{']' * depth}\n")
    assert "nested more than 32 levels deep" in found or "maximum nesting depth" in found


@pytest.mark.parametrize("text", ["[/x]", "[green]x[/green]", "[bold red]boom"])
def test_user_text_is_never_read_as_markup(tmp_path: Path, text: str) -> None:
    """An unknown key and the file's own path carry the text: it is printed as written."""
    folder = tmp_path / text.replace("/", "_")
    folder.mkdir()
    bad = folder / "s.yaml"
    bad.write_text(BASE.replace("api: {service: go-api}", f"api: {{service: go-api, '{text}': 1}}"))
    code, _, err = run_cli("validate", str(bad))
    assert code == ExitCode.BAD_INPUT
    assert f"targets.api['{text}']: unknown key" in err
    assert str(bad) in err


@pytest.mark.parametrize(
    "edit",
    [
        ("rate: 10/s", "rate: " + "9" * 400),
        ("cpus: 0.5", "cpus: " + "9" * 400),
        ("cpus: 0.5", "cpus: 1.0e+400"),
        ("cpus: 0.5", "cpus: .inf"),
        ("duration: 5s}\n  - {name: slow", "duration: " + "9" * 400 + "s}\n  - {name: slow"),
        ("cpus: 0.5", "cpus: 0.5, period: '" + "9" * 40 + "ms'"),
    ],
)
def test_huge_numbers_are_refused(edit: tuple[str, str]) -> None:
    found = problems(BASE.replace(*edit))
    assert found and all("Traceback" not in f for f in found)
    assert any(re.search(r"digits|not a number|not a duration|too large|at most", f) for f in found), found


def test_dev_zero_and_a_fifo_without_writer_are_refused_at_once(tmp_path: Path) -> None:
    fifo = tmp_path / "pipe.yaml"
    os.mkfifo(fifo)
    start = time.monotonic()
    for path, what in (
        (Path("/dev/zero"), "a character device"),
        (fifo, "a FIFO"),
        (tmp_path, "a directory"),
    ):
        code, _, err = run_cli("validate", str(path))
        assert code == ExitCode.BAD_INPUT and what in err, err
    assert time.monotonic() - start < 20


def test_a_file_over_the_size_cap_is_refused(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    big.write_text(BASE + "description: '" + "x" * (1 << 20) + "'\n")
    code, _, err = run_cli("validate", str(big))
    assert code == ExitCode.BAD_INPUT and "a scenario is at most 1048576 bytes" in err


# -- hangs ----------------------------------------------------------------------------------------


def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels + 1):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 9) + "]")
    return "\n".join(lines) + "\n"


@pytest.mark.parametrize("where", ["name", "load.path", "phases[0].duration"])
def test_an_alias_bomb_is_refused_without_expanding_it(where: str) -> None:
    text = alias_bomb() + BASE
    text = {
        "name": text.replace("name: t", "name: *a9"),
        "load.path": text.replace("path: /work", "path: *a9"),
        "phases[0].duration": text.replace(
            "duration: 5s}\n  - {name: slow", "duration: *a9}\n  - {name: slow"
        ),
    }[where]
    start = time.monotonic()
    found = problems(text)
    assert time.monotonic() - start < 2
    assert any("expand to more than 100000 values" in f for f in found)
    assert sum(len(f) for f in found) < 2000


def test_a_small_alias_value_is_shown_cut_short() -> None:
    first = "duration: 5s}\n  - {name: slow"
    text = "big: &b [" + ", ".join(["xxxxxxxxxx"] * 200) + "]\n"
    found = problems(text + BASE.replace(first, first.replace("5s", "*b")))
    [duration] = [f for f in found if f.startswith("phases[0].duration")]
    assert len(duration) < 200 and "..." in duration


def test_tens_of_thousands_of_unknown_keys_are_reported_quickly(tmp_path: Path) -> None:
    keys = "".join(f"k{i}x: 1\n" for i in range(30_000))
    many = tmp_path / "many.yaml"
    many.write_text(BASE + keys)
    assert many.stat().st_size < 1 << 20
    start = time.monotonic()
    code, _, err = run_cli("validate", str(many))
    assert code == ExitCode.BAD_INPUT
    assert time.monotonic() - start < 15
    assert "30000 problems" in err and "... and 29900 more (the first 100 are shown)" in err
    assert len(err) < 20_000


# -- accepted by validate, refused later -----------------------------------------------------------


def test_link_cycles_are_refused_with_their_path() -> None:
    links = one(
        BASE.replace(
            "api: {service: go-api}",
            "api: {program: [/bin/sleep, '60'], ports: {http: 8080}, links: [db]}\n"
            "  db: {program: [/bin/sleep, '60'], ports: {http: 8081}, links: [api]}",
        ).replace("edge: {service: envoy, upstream: api}", "edge: {service: envoy, upstream: db}")
    )
    assert "targets depend on each other in a cycle: api -> db -> api" in links
    envoys = problems(
        BASE.replace(
            "edge: {service: envoy, upstream: api}",
            "edge: {service: envoy, upstream: mid}\n  mid: {service: envoy, upstream: edge}",
        )
    )
    assert any(
        "in a cycle: edge -> mid -> edge" in f or "in a cycle: mid -> edge -> mid" in f for f in envoys
    )


# -- accepted but wrong ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("edit", "path"),
    [
        (("duration: 5s}\n  - {name: slow", "duration: ~}\n  - {name: slow"), "phases[0].duration"),
        (("cpus: 0.5", "cpus: ~"), "phases[1].faults[0].cpus"),
        (("cpus: 0.5", "cpus: "), "phases[1].faults[0].cpus"),
        (
            ("kind: cpu, target: api, cpus: 0.5", "kind: network, target: api, delay: ~"),
            "phases[1].faults[0].delay",
        ),
        (
            ("kind: cpu, target: api, cpus: 0.5", "kind: process, target: api, action: ~"),
            "phases[1].faults[0].action",
        ),
        (("api: {service: go-api}", "api: {service: ~}"), "targets.api.service"),
        (("target: api, cpus", "target: ~, cpus"), "phases[1].faults[0].target"),
        (("upstream: api", "upstream: ~"), "targets.edge.upstream"),
        (("rate: 10/s", "rate: ~"), "load.rate"),
        (("name: t", "name: ~"), "name"),
    ],
)
def test_a_key_with_a_null_value_is_an_error(edit: tuple[str, str], path: str) -> None:
    found = problems(BASE.replace(*edit))
    assert f"{path}: has no value (null)\n    hint: give it a value, or remove the key" in found, found


def test_null_values_no_longer_reach_plan(tmp_path: Path) -> None:
    for edit in (("target: api, cpus", "target: ~, cpus"), ("upstream: api", "upstream: ~")):
        s = tmp_path / "s.yaml"
        s.write_text(BASE.replace(*edit))
        code, _, err = run_cli("plan", str(s))
        assert code == ExitCode.BAD_INPUT and "has no value (null)" in err


@pytest.mark.parametrize(
    ("text", "line"),
    [
        (BASE.replace("rate: 10/s}", "rate: 10/s, rate: 20/s}"), 5),
        (BASE.replace("phases:", "name: other\nphases:"), 6),
        (BASE + "targets: {}\n", 10),
    ],
)
def test_duplicate_keys_are_refused(text: str, line: int) -> None:
    found = problems(text)
    assert any(f.startswith(f"line {line}, ") and "is given twice" in f for f in found), found


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("api: {service", '"api\\n": {service'), "is not a valid target name"),
        (("name: baseline", 'name: "baseline\\n"'), "phases[0].name"),
        (("path: /work", 'path: "/work\\t"'), "load.path"),
        (("path: /work", 'path: "/wo\\0rk"'), "load.path"),
        (("path: /work", 'path: "/work\\e[31m"'), "load.path"),
        (("path: /work", 'path: "/work\\u2028"'), "load.path"),
        (("path: /work", 'path: "/work now"'), "is not a URL path"),
        (("path: /work", 'path: "/wörk"'), "is not a URL path"),
        (
            ("name: t", 'name: t\ndescription: "fine\\n\\ttext \\e[2J"'),
            "description: contains control characters",
        ),
    ],
)
def test_control_characters_and_newlines_in_names_and_paths(edit: tuple[str, str], expected: str) -> None:
    found = problems(BASE.replace(*edit))
    assert any(expected in f for f in found), found


def test_a_description_may_have_lines_and_tabs() -> None:
    parse_scenario(BASE.replace("name: t", 'name: t\ndescription: "two\\n\\tlines"'))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (("duration: 5s}\n  - {name: slow", "duration: 5us}\n  - {name: slow"), "must be at least 100ms"),
        (
            ("rate: 10/s}", "users: 5, think: 99999999h}"),
            "load.think: must be at most 300s",
        ),
        (("rate: 10/s}", "rate: 0.0001/s}"), "load.rate: at least 0.1/s"),
        (("rate: 10/s}", "rate: 10/s, timeout: 1us}"), "load.timeout: must be at least 10ms"),
        (("cpus: 0.5", "cpus: 1000"), "a limit of 1000 takes nothing away"),
        (
            ("kind: cpu, target: api, cpus: 0.5", "kind: network, target: api, rate: 1000000gbit"),
            "at most 10gbit",
        ),
        (("rate: 10/s}", "rate: 10/s, workers: 64, concurrency: 64}"), "load.workers: this machine has"),
    ],
)
def test_values_are_bounded(edit: tuple[str, str], expected: str) -> None:
    found = problems(BASE.replace(*edit))
    assert any(expected in f for f in found), found


def test_more_targets_than_the_run_network_holds() -> None:
    targets = "".join(f"  t{i}: {{service: go-api}}\n" for i in range(72))
    text = BASE.replace("targets:\n", "targets:\n" + targets)
    assert any(f.startswith("targets: at most 64 targets, got 74") for f in problems(text))


@pytest.mark.parametrize(
    "edit",
    [
        ("duration: 5s}\n  - {name: slow", "duration: ５s}\n  - {name: slow"),
        ("rate: 10/s", "rate: １０/s"),
        ("kind: cpu, target: api, cpus: 0.5", "kind: network, target: api, loss: '１０%'"),
        ("kind: cpu, target: api, cpus: 0.5", "kind: network, target: api, rate: １mbit"),
    ],
)
def test_full_width_digits_are_not_numbers(edit: tuple[str, str]) -> None:
    assert problems(BASE.replace(*edit))


@pytest.mark.parametrize(
    ("faults", "expected"),
    [
        (
            "{kind: cpu, target: api, cpus: 0.5}, {kind: cpu, target: api, cpus: 0.2}",
            "phases[1].faults[1]: the CPU limit of api is already faulted in this phase by phases[1]",
        ),
        (
            "{kind: process, target: api, action: pause}, {kind: process, target: api, action: kill}",
            "phases[1].faults[1]: the process (a pause or a kill) of api is already faulted",
        ),
        (
            "{kind: entropy, target: api, delay: 1ms}, "
            "{kind: syscall, target: api, syscall: write, delay: 1ms}",
            "phases[1].faults[1]: the tracer (ptrace, as the entropy and syscall faults use) of api",
        ),
        (
            "{kind: network, target: api, delay: 10ms}, {kind: network, target: api, peer: host, loss: 5%}",
            "phases[1].faults[1]: the egress traffic to host of api is already faulted",
        ),
    ],
)
def test_two_faults_on_one_thing_of_a_target_in_one_phase(faults: str, expected: str) -> None:
    found = problems(BASE.replace("{kind: cpu, target: api, cpus: 0.5}", faults))
    assert any(f.startswith(expected) for f in found), found


def test_faults_on_different_things_may_share_a_phase() -> None:
    parse_scenario(
        BASE.replace(
            "{kind: cpu, target: api, cpus: 0.5}",
            "{kind: cpu, target: api, cpus: 0.5}, {kind: cpu, target: edge, cpus: 0.5}, "
            "{kind: network, target: api, direction: ingress, delay: 5ms}, "
            "{kind: network, target: api, direction: egress, loss: 5%}",
        )
    )


@pytest.mark.parametrize(
    ("expect", "expected"),
    [
        ("{phase: baseline, absorbed_by: cpu}", "expect[0].absorbed_by: phase baseline gets no verdict"),
        ("{phase: recovery, status: absorbed}", "expect[0].status: phase recovery gets no verdict"),
        ("{phase: slow, absorbed_by: client}", "expect[0].absorbed_by: must be one of proxy"),
    ],
)
def test_expectations_that_can_never_hold(expect: str, expected: str) -> None:
    found = problems(BASE + f"expect: [{expect}]\n")
    assert any(f.startswith(expected) for f in found), found


# -- exit codes -------------------------------------------------------------------------------------


def test_an_internal_error_has_its_own_exit_code_and_no_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chaoslab.scenario import loader

    def boom(path: Path) -> None:
        raise KeyError("surprise")

    monkeypatch.setattr(loader, "load_scenario", boom)
    monkeypatch.setattr("chaoslab.scenario.load_scenario", boom)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cli.main(["validate", "whatever.yaml"]) == ExitCode.INTERNAL == 4
    err = unwrap(capsys.readouterr().err)
    assert "Traceback" not in err
    first, hint = err.strip().splitlines()
    assert first == "internal error: KeyError: 'surprise'"
    assert hint.startswith("  hint: this is a bug in chaoslab") and "please report it" in hint
    [saved] = tmp_path.glob("chaoslab-traceback-*.txt")
    assert "Traceback" in saved.read_text() and str(saved) in hint


def test_an_internal_error_during_a_run_keeps_its_traceback_in_the_run_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from chaoslab import orchestrator

    def boom(*_: object, **__: object) -> None:
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(journal, "INDEX_DIR", tmp_path / "runs")
    monkeypatch.setattr(orchestrator, "execute", boom)
    scenario = tmp_path / "s.yaml"
    scenario.write_text(BASE)
    out = tmp_path / "out"
    assert cli.main(["run", str(scenario), "--out", str(out)]) == ExitCode.INTERNAL
    err = capsys.readouterr().err
    assert "Traceback" not in err and "internal error: ZeroDivisionError: division by zero" in err
    assert "ZeroDivisionError" in (out / "traceback.txt").read_text()
    assert str(out / "traceback.txt") in err


# -- a fuzz of validate and plan -------------------------------------------------------------------

NASTY: list[object] = [
    None,
    "",
    0,
    -1,
    True,
    1e308,
    float("nan"),
    "9" * 30,
    "１０ms",
    "[/x]",
    "\x1b[31m",
    "a\nb",
    "x" * 5000,
    [],
    {},
    [[[]]],
    {"k": None},
    "10ms",
    "5s",
    "10/s",
    "1mbit",
    "50%",
    0.5,
    "api",
    "edge",
    "host",
    "/work",
]


def mutate(rng: random.Random, node: object) -> object:
    """`node` with one value somewhere replaced, a key removed or a key added."""
    if isinstance(node, dict) and node:
        key = rng.choice(list(node))
        roll = rng.random()
        out = dict(node)
        if roll < 0.15:
            del out[key]
        elif roll < 0.25:
            out[rng.choice(["extra", "kind", "target", "delay", "cpus", "peer", "action"])] = rng.choice(
                NASTY
            )
        elif roll < 0.55 or not isinstance(node[key], dict | list):
            out[key] = rng.choice(NASTY)
        else:
            out[key] = mutate(rng, node[key])
        return out
    if isinstance(node, list) and node:
        i = rng.randrange(len(node))
        out_list = list(node)
        out_list[i] = mutate(rng, node[i]) if rng.random() < 0.7 else rng.choice(NASTY)
        return out_list
    return rng.choice(NASTY)


FUZZ_BASE = yaml.safe_load(
    BASE.replace(
        "{kind: cpu, target: api, cpus: 0.5}",
        "{kind: cpu, target: api, cpus: 0.5}, {kind: network, target: edge, delay: 10ms, peer: api}, "
        "{kind: syscall, target: edge, syscall: write, delay: 1ms}",
    )
    + "expect: [{phase: slow, absorbed_by: cpu, target: api}, {phase: recovery, client_p99_below: 50ms}]\n"
)


FUZZ_BASES = [FUZZ_BASE] + [
    yaml.safe_load(p.read_text())
    for p in sorted([*(REPO / "scenarios").glob("*.yaml"), *SCENARIOS.glob("*.yaml")])
]


@pytest.mark.parametrize("seed", range(16))
def test_fuzzed_scenarios_are_accepted_or_refused_never_crash(
    seed: int, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Validate and plan, in process, on mutations of chaoslab's own scenarios: exit 0 or 2 (plan:
    or 3), a message for every refusal, no traceback, and every file done quickly."""
    rng = random.Random(seed)
    path = tmp_path / "fuzz.yaml"
    seen = {0: 0, 2: 0}
    for _ in range(60):
        doc = FUZZ_BASES[seed % len(FUZZ_BASES)]
        for _ in range(rng.randint(1, 3)):
            doc = mutate(rng, doc)
        path.write_text(yaml.safe_dump(doc, allow_unicode=True, width=sys.maxsize))
        for command in ("validate", "plan"):
            start = time.monotonic()
            code = cli.main([command, str(path)])
            err = capsys.readouterr().err
            assert code in (0, 2, 3), f"{command} exit {code}: {err}\n{path.read_text()}"
            assert "Traceback" not in err and time.monotonic() - start < 5
            if command == "validate":
                seen[code] += 1
                assert code == 0 or "problem" in err
            if code == 2:
                break
    assert seen[2] > 0


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("ftp://h:1", "scheme 'ftp' is not one of"),
        ("tcp://host", "needs the port"),
        ("tcp://:2375", "names no host"),
        ("tcp://h:99999", "port is not a number"),
        ("tcp://h:0", "port is not a number"),
        ("'tcp://[::1:2375'", "the engine URL cannot be read"),
        ("unix://", "needs the socket's path"),
        ("'no such/context'", "neither a URL"),
        ("''", "it is empty"),
    ],
)
def test_a_bad_engine_is_refused_with_the_forms_it_takes(value: str, expected: str) -> None:
    found = one(BASE.replace("targets:", f"runtime: docker\nengine: {value}\ntargets:"))
    assert found.startswith("engine:") and expected in found, found
    assert "tcp://HOST:2375" in found  # the fix: the forms an engine is given in


def test_an_engine_on_the_local_runtime_is_refused() -> None:
    found = one(BASE.replace("targets:", "engine: tcp://10.0.0.5:2375\ntargets:"))
    assert found.startswith("engine:") and "use runtime: docker" in found, found


@pytest.mark.parametrize(
    "value", ["tcp://10.0.0.5:2375", "ssh://ops@build-7", "unix:///run/d.sock", "staging"]
)
def test_an_engine_is_a_url_or_a_context_name(value: str) -> None:
    assert (
        parse_scenario(BASE.replace("targets:", f"runtime: docker\nengine: {value}\ntargets:")).engine
        == value
    )


def test_labels_of_another_machine_are_never_judged_dead_here(monkeypatch: pytest.MonkeyPatch) -> None:
    """A remote engine is shared: what another machine's chaoslab made is its to judge. On this
    machine a label's owner, by PID and start time, is dead once that process is gone (also
    after a reboot, when the start time no longer matches)."""
    from chaoslab import proc
    from chaoslab.targets import containers as c

    me = f"{os.getpid()}@{proc.start_time(os.getpid())}"
    gone = f"{os.getpid()}@{proc.start_time(os.getpid()) - 1}"  # this PID, an earlier process
    here, elsewhere = c.machine_id(), "0" * 32
    assert here and here != elsewhere
    assert c.live({c.LABEL_RUN: "r", c.LABEL_OWNER: me, c.LABEL_HOST: here}, set())
    assert not c.live({c.LABEL_RUN: "r", c.LABEL_OWNER: gone, c.LABEL_HOST: here}, set())
    assert c.live({c.LABEL_RUN: "r", c.LABEL_OWNER: gone, c.LABEL_HOST: elsewhere}, set())
    assert c.live({c.LABEL_RUN: "r", c.LABEL_OWNER: gone, c.LABEL_HOST: here}, {"r"})
    assert not c.live({c.LABEL_RUN: "r", c.LABEL_OWNER: gone}, set())  # labels of before this field


def test_the_list_of_engines_keeps_one_a_live_run_may_use(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from chaoslab.targets import engines

    monkeypatch.setattr(engines, "KNOWN", tmp_path / "engines.json")
    a, b = engines.Engine("far", "tcp://192.0.2.1:2375"), engines.Engine("", "ssh://ops@192.0.2.2")
    engines.remember(a)
    engines.remember(b)
    engines.remember(engines.Engine("", engines.LOCAL))  # always looked at: not listed
    assert engines.used() == {"tcp://192.0.2.1:2375": "far", "ssh://ops@192.0.2.2": ""}
    assert not engines.forget(a.url, busy=lambda: True) and a.url in engines.used()
    assert engines.forget(a.url, busy=lambda: False) and engines.used() == {b.url: ""}
    assert not engines.forget(a.url, busy=lambda: False)  # not there: nothing to do
    listed = [e.url for e in engines.every()]
    assert listed[1:] == [b.url] and listed[0] != b.url


def test_an_engine_whose_container_pid_is_not_that_container_here_is_refused() -> None:
    """A unix-socket engine on another kernel (a forwarded socket, a VM) gives PIDs of that
    kernel: one that is not the container's process here is refused, never faulted."""
    from chaoslab.errors import TargetError
    from chaoslab.targets import containers, engines

    engine = engines.Engine("", "unix:///var/run/forwarded.sock")
    with pytest.raises(TargetError) as info:
        containers.here(engine, "f" * 64, os.getpid(), "chaoslab-x-api")
    assert "is not it on this machine" in info.value.message and "tcp://HOST:2375" in info.value.hint


def test_a_list_of_engines_that_cannot_be_written_stops_a_remote_run_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read-only /var/lib (a guest, an image): the local engine needs no entry and runs; a
    remote one is refused before anything is put on it, with the fix."""
    from chaoslab.errors import PreflightError
    from chaoslab.targets import engines

    (tmp_path / "ro").write_text("a file, not a directory")
    monkeypatch.setattr(engines, "KNOWN", tmp_path / "ro" / "engines.json")
    engines.remember(engines.Engine("", engines.LOCAL))
    with pytest.raises(PreflightError) as info:
        engines.remember(engines.Engine("", "tcp://192.0.2.1:2375"))
    assert "cannot be written" in info.value.message and "CHAOSLAB_ENGINES" in info.value.hint
