"""Users' own targets: programs, images, attached processes, built-ins on the same path.

Validation first (no privileges: every bad input named by its YAML path), then real runs:
a Go HTTPS server this project did not write (go-httpbin, from the Go module proxy) as a
program and as an image, the cache stack (cache-api in front of Debian's redis-server,
behind Envoy), and a process started outside chaoslab, attached by its port.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaoslab.scenario import parse_scenario
from chaoslab.scenario.loader import ScenarioError
from tests.conftest import REPO, SCENARIOS, ScenarioRun, chaoslab, story

HTTPBIN = REPO / ".build" / "third-party" / "go-httpbin"
IMAGES = Path(__file__).resolve().parent / "images"


def problems(text: str, source: Path | None = None) -> list[str]:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(textwrap.dedent(text), source=source)
    return [p.render() for p in info.value.problems]


def scenario(targets: str, load: str = "{target: svc, path: /, rate: 5/s}", faults: str = "[]") -> str:
    block = textwrap.indent(textwrap.dedent(targets).strip(), "  ")
    return (
        f"name: t\ntargets:\n{block}\nload: {load}\nphases:\n  - {{name: baseline, duration: 5s}}\n"
        f"  - {{name: fault, duration: 5s, faults: {faults}}}\n"
    )


# -- validation ------------------------------------------------------------------------


def test_a_program_target_is_typed_with_its_placeholders_and_links(tmp_path: Path) -> None:
    exe = tmp_path / "server"
    exe.write_text("#!/bin/sh\n")
    exe.chmod(0o755)
    s = parse_scenario(
        scenario(
            """
            cache:
              program: [redis-server, --port, "{ports.tcp}"]
              ports: {tcp: 6379}
              health: {tcp: true}
            svc:
              program: [./server, --cert, "{cert}", --cache, "{targets.cache.host}:{targets.cache.ports.tcp}"]
              env: {MODE: fast, ADDR: "{targets.cache.host}"}
              ports: {https: 8443, grpc: 9443}
              health: {https: /ready, status: 204, timeout: 10s}
              links: [cache]
            """,
            "{target: svc, protocol: https, path: /, rate: 5/s}",
        ),
        source=tmp_path / "s.yaml",
    )
    svc = s.targets["svc"]
    assert svc.kind == "program" and svc.argv[0] == str(exe)
    assert svc.port_map == {"https": 8443, "grpc": 9443}
    assert (svc.health.protocol, svc.health.path, svc.health.status, svc.health.port) == (
        "https",
        "/ready",
        204,
        8443,
    )
    assert svc.links == ("cache",) and ("MODE", "fast") in svc.env
    assert s.targets["cache"].health.protocol == "tcp" and s.targets["cache"].health.port == 6379
    assert s.targets["cache"].argv[0] == shutil.which("redis-server")


@pytest.mark.parametrize(
    ("targets", "expected"),
    [
        ("svc: {program: [./nope], ports: {http: 80}}", "targets.svc.program[0]: "),
        ("svc: {program: [no-such-program-here], ports: {http: 80}}", "is not on PATH"),
        ("svc: {program: [/proc/version], ports: {http: 80}}", "/proc/version is not executable"),
        ("svc: {program: [redis-server, '{nope}'], ports: {http: 80}}", "unknown placeholder {nope}"),
        ("svc: {program: [redis-server, '{cert'], ports: {http: 80}}", "a lone '{'"),
        ("svc: {program: [redis-server, '{targets.x.host}'], ports: {http: 80}}", "unknown placeholder"),
        (
            "svc: {program: [redis-server], ports: {http: 80}, links: [ghost]}",
            "targets.svc.links[0]: unknown",
        ),
        ("svc: {program: [redis-server], ports: {smtp: 25}}", "targets.svc.ports.smtp: unknown protocol"),
        ("svc: {program: [redis-server], ports: {http: 99999}}", "expected a port between 1 and 65535"),
        ("svc: {program: [redis-server], ports: {http: 80}, health: {grpc: ''}}", "declares no grpc port"),
        ("svc: {program: [redis-server], ports: {http: 80}, health: {http: x}}", "must start with '/'"),
        ("svc: {program: [redis-server], image: x, ports: {http: 80}}", "more than one way"),
        ("svc: {ports: {http: 80}}", "does not say what it is"),
        ("svc: {attach: {pid: 1, port: 80}, ports: {http: 80}}", "targets.svc.attach: select it one way"),
        (
            "svc: {program: [redis-server], ports: {http: 80}, env: {1X: y}}",
            "not an environment variable name",
        ),
        ("svc: {program: [redis-server], ports: {http: 80}, tls: {ca: ./none.pem}}", "is not a file"),
        ("svc: {image: x, ports: {http: 80}}", "an image target runs on the Docker runtime"),
    ],
)
def test_bad_targets_are_named_by_their_yaml_path(targets: str, expected: str) -> None:
    found = problems(scenario(targets, "{target: svc, protocol: http, path: /, rate: 5/s}"))
    assert any(expected in p for p in found), found


def test_links_in_a_cycle_are_refused() -> None:
    found = problems(
        scenario(
            """
            a: {program: [redis-server], ports: {tcp: 1}, links: [b]}
            b: {program: [redis-server], ports: {tcp: 2}, links: [a]}
            svc: {program: [redis-server], ports: {http: 80}}
            """,
            "{target: svc, protocol: http, path: /, rate: 5/s}",
        )
    )
    assert any("in a cycle: a -> b -> a" in p or "in a cycle: b -> a -> b" in p for p in found), found


def test_a_load_on_a_protocol_the_target_does_not_declare() -> None:
    found = problems(
        scenario("svc: {program: [redis-server], ports: {tcp: 6379}}", "{target: svc, path: /, rate: 5/s}")
    )
    assert any(
        "load.protocol: target svc (program redis-server) declares no https port" in p for p in found
    ), found


@pytest.mark.parametrize(
    ("targets", "fault", "expected"),
    [
        (
            "svc: {service: envoy, upstream: api}\napi: {service: go-api}",
            "{kind: entropy, target: svc, delay: 1ms}",
            "envoy is not a Go program",
        ),
        (
            "svc: {program: [redis-server], ports: {https: 6379}}",
            "{kind: entropy, target: svc, delay: 1ms}",
            "is not a Go program",
        ),
        (
            "svc: {attach: {port: 9}, ports: {https: 9}}",
            "{kind: process, target: svc, action: kill}",
            "svc is attached: chaoslab neither starts nor stops it",
        ),
    ],
)
def test_faults_that_cannot_act_on_a_target_are_refused(targets: str, fault: str, expected: str) -> None:
    found = problems(
        scenario(targets.replace("\n ", "\n"), "{target: svc, path: /, rate: 5/s}", f"[{fault}]")
    )
    assert any(expected in p for p in found), found


def test_entropy_on_a_stripped_go_program_says_why(tmp_path: Path) -> None:
    exe = tmp_path / "stripped"
    src = REPO / "docker" / "go-api"
    env = {**os.environ, "CGO_ENABLED": "0", "PATH": os.environ["PATH"] + ":/usr/local/go/bin"}
    subprocess.run(
        ["go", "build", "-trimpath", "-ldflags=-s -w", "-o", str(exe), "."], cwd=src, env=env, check=True
    )
    found = problems(
        scenario(
            f"svc: {{program: [{exe}], ports: {{https: 8443}}}}",
            faults="[{kind: entropy, target: svc, delay: 1ms}]",
        )
    )
    assert any("is a stripped Go binary (no symbol table)" in p for p in found), found


# -- real runs -----------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_third_party_go_server_as_a_program(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("third_party")
    assert res.returncode == 0, story(res)
    v = {x["phase"]: x for x in res.report["verdicts"]}
    assert (v["starve"]["status"], v["starve"]["layer"], v["starve"]["target"]) == (
        "absorbed",
        "entropy",
        "svc",
    )
    assert (v["slow"]["status"], v["slow"]["layer"], v["slow"]["target"]) == ("absorbed", "network", "svc")
    assert "target svc: program go-httpbin" in res.stderr


@pytest.fixture(scope="module")
def httpbin_context(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A user's Dockerfile context: tests/images/go-httpbin with the binary set-up built."""
    ctx = tmp_path_factory.mktemp("go-httpbin-image")
    shutil.copy(IMAGES / "go-httpbin" / "Dockerfile", ctx / "Dockerfile")
    shutil.copy(HTTPBIN, ctx / "go-httpbin")
    return ctx


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_a_third_party_go_server_as_an_image(httpbin_context: Path, tmp_path: Path) -> None:
    text = (SCENARIOS / "third_party.yaml").read_text()
    text = text.replace("name: third-party", "name: third-party-image\nruntime: docker")
    text = text.replace(
        '    program: [../../.build/third-party/go-httpbin, -port, "{ports.https}",\n',
        f'    build: {httpbin_context}\n    command: [-port, "{{ports.https}}",\n',
    )
    path = tmp_path / "image.yaml"
    path.write_text(text)
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"), timeout=600)
    assert res.returncode == 0, story(res)
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    v = {x["phase"]: x for x in report["verdicts"]}
    assert (v["starve"]["status"], v["starve"]["layer"], v["starve"]["target"]) == (
        "absorbed",
        "entropy",
        "svc",
    )
    assert (v["slow"]["status"], v["slow"]["layer"], v["slow"]["target"]) == ("absorbed", "network", "svc")
    assert report["runtime"] == "docker"


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_the_cache_stack(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("cache_stack")
    assert res.returncode == 0, story(res)
    r = res.report
    v = {x["phase"]: x for x in r["verdicts"]}
    assert (v["slow-cache"]["layer"], v["slow-cache"]["target"]) == ("network", "app"), v["slow-cache"]
    assert (v["starved-cache"]["layer"], v["starved-cache"]["target"]) == ("cpu", "redis"), v["starved-cache"]
    # the delay is in app's calls to its dependency (its end of the connections it opened)
    out = {(x["phase"], x["target"], x["metric"]): x for x in r["layers"] if x["layer"] == "network"}
    added = (
        out[("slow-cache", "app", "to dependencies")]["per_request_ms"]
        - out[("baseline", "app", "to dependencies")]["per_request_ms"]
    )
    assert added > 15  # two round trips to Redis per request, 10 ms each way out
    # Redis, not a Go program, has an app layer from its socket syscalls
    app = [x for x in r["layers"] if x["layer"] == "app" and x["target"] == "redis" and x["metric"] == ""]
    assert app and all(x["count"] > 0 for x in app), app


@pytest.fixture
def outside_server(root: None, tmp_path: Path) -> Iterator[tuple[int, str]]:
    """go-httpbin started by the test, not by chaoslab, in a network namespace of the test's own
    with a veth to the host; yields (pid, address)."""
    ns, host_if, ns_if = "cltest-outside", "cltesth0", "cltestn0"
    host_ip, ns_ip = "10.238.7.1", "10.238.7.2"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", host_if, "type", "veth", "peer", "name", ns_if],
        ["ip", "link", "set", ns_if, "netns", ns],
        ["ip", "addr", "add", f"{host_ip}/30", "dev", host_if],
        ["ip", "link", "set", host_if, "up"],
        ["ip", "-n", ns, "addr", "add", f"{ns_ip}/30", "dev", ns_if],
        ["ip", "-n", ns, "link", "set", ns_if, "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    for argv in cmds:
        subprocess.run(argv, check=True, capture_output=True)
    log = (tmp_path / "outside.log").open("wb")
    p = subprocess.Popen(
        ["ip", "netns", "exec", ns, str(HTTPBIN), "-port", "18080", "-log-level", "WARN"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        for _ in range(100):
            if (
                subprocess.run(
                    ["curl", "-sf", f"http://{ns_ip}:18080/status/200"], capture_output=True
                ).returncode
                == 0
            ):
                break
            time.sleep(0.1)
        yield p.pid, ns_ip
    finally:
        os.killpg(p.pid, signal.SIGTERM)
        p.wait(timeout=10)
        log.close()
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", host_if], capture_output=True)


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_attach_by_port_to_a_process_started_outside(outside_server: tuple[int, str], tmp_path: Path) -> None:
    pid, ip = outside_server
    started = Path(f"/proc/{pid}/stat").read_text().split()[21]
    path = tmp_path / "attach.yaml"
    path.write_text(
        textwrap.dedent(
            """
            name: attach-port
            targets:
              svc: {attach: {port: 18080}, ports: {http: 18080}, health: {http: /status/200}}
            load: {protocol: http, target: svc, path: /get, rate: 30/s, concurrency: 16}
            phases:
              - {name: baseline, duration: 6s}
              - {name: slow-net, duration: 6s, faults: [{kind: network, target: svc, delay: 30ms}]}
              - {name: settle, duration: 3s}
              - name: slow-write
                duration: 6s
                faults: [{kind: syscall, target: svc, syscall: write, delay: 20ms}]
              - {name: recovery, duration: 3s}
            expect:
              - {phase: slow-net, absorbed_by: network, target: svc}
              - {phase: slow-write, absorbed_by: syscall, target: svc}
            """
        )
    )
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"), timeout=600)
    assert res.returncode == 0, story(res)
    assert f"attached to pid {pid}" in res.stderr and f"at {ip}" in res.stderr
    # it is as it was found: the same process, still running
    assert Path(f"/proc/{pid}/stat").read_text().split()[21] == started
    assert (
        subprocess.run(["curl", "-sf", f"http://{ip}:18080/status/200"], capture_output=True).returncode == 0
    )


@pytest.mark.privileged
def test_an_attach_selector_matching_nothing_stops_the_run_with_nothing_applied(
    root: None, clean_machine: None, tmp_path: Path
) -> None:
    path = tmp_path / "none.yaml"
    path.write_text(
        scenario(
            "svc: {attach: {port: 1}, ports: {http: 1}}", "{target: svc, protocol: http, path: /, rate: 5/s}"
        )
    )
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 3, res.stderr
    assert "0 processes match the process listening on port 1: none" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.privileged
def test_an_attach_selector_matching_several_lists_them_and_applies_nothing(
    root: None, clean_machine: None, tmp_path: Path
) -> None:
    twin = tmp_path / "chaoslab-twin"  # a name no other process here has
    shutil.copy("/bin/sleep", twin)
    twins = [subprocess.Popen([str(twin), "60"]) for _ in range(2)]
    try:
        path = tmp_path / "twins.yaml"
        path.write_text(
            scenario(
                "svc: {attach: {process: chaoslab-twin}, ports: {http: 1}}",
                "{target: svc, protocol: http, path: /, rate: 5/s}",
            )
        )
        res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
        assert res.returncode == 3, res.stderr
        assert "2 processes match" in res.stderr, res.stderr
        assert all(f"pid {t.pid}" in res.stderr for t in twins), res.stderr
        assert "Traceback" not in res.stderr
        assert all(t.poll() is None for t in twins)  # left as they were found
    finally:
        for t in twins:
            t.kill()
            t.wait()


@pytest.mark.privileged
def test_a_target_that_never_gets_healthy_shows_its_last_log_lines(
    root: None, clean_machine: None, tmp_path: Path
) -> None:
    path = tmp_path / "sick.yaml"
    path.write_text(
        scenario(
            """
            svc:
              program: [sh, -c, "echo starting on {ports.http}; echo no config found >&2; sleep 30"]
              ports: {http: 18081}
              health: {http: /ready, timeout: 2s}
            """,
            "{target: svc, protocol: http, path: /, rate: 5/s}",
        )
    )
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 3, res.stderr
    assert "did not become healthy in 2s" in res.stderr and "no config found" in res.stderr
    assert "Traceback" not in res.stderr


@pytest.mark.privileged
def test_probes_for_a_scenario_says_what_applies_per_target_and_why(root: None) -> None:
    res = chaoslab("probes", "--json", str(SCENARIOS / "cache_stack.yaml"))
    rows = {(r["target"], r["layer"]): r for r in json.loads(res.stdout)["targets"]}
    assert rows[("app", "tls")]["status"] == "yes" and "Go 1." in rows[("app", "tls")]["why"]
    assert rows[("redis", "tls")]["status"] == "-" and "not a Go program" in rows[("redis", "tls")]["why"]
    assert (
        rows[("redis", "app")]["status"] == "yes" and "not Go, not proxies" in rows[("redis", "app")]["why"]
    )
    assert rows[("edge", "proxy")]["status"] == "yes"


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_an_image_that_is_not_in_the_engine_stops_the_run_with_nothing_applied(tmp_path: Path) -> None:
    path = tmp_path / "absent.yaml"
    path.write_text(
        "runtime: docker\n"
        + scenario(
            "svc: {image: 'chaoslab-test/absent:never', ports: {http: 80}}",
            "{target: svc, protocol: http, path: /, rate: 5/s}",
        )
    )
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 3, res.stderr
    assert "target svc: image 'chaoslab-test/absent:never' is not in the local Docker engine" in res.stderr
    assert "Traceback" not in res.stderr


def test_a_users_envoy_bootstrap_is_a_template_with_the_same_placeholders(tmp_path: Path) -> None:
    from chaoslab.targets.certs import Certs
    from chaoslab.targets.services import Launch, Peer, Service

    template = tmp_path / "envoy.yaml"
    template.write_text(
        "static_resources:\n"
        "  clusters:\n"
        "  - name: app\n"
        "    load_assignment:\n"
        "      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address:\n"
        "        {address: '{targets.api.host}', port_value: {targets.api.ports.https}}}}}]}]\n"
        "    # a literal brace: {{not a placeholder}}\n"
    )
    s = parse_scenario(
        scenario(
            f"api: {{service: go-api}}\nsvc: {{service: envoy, upstream: api, bootstrap: {template}}}",
            "{target: svc, path: /, rate: 5/s}",
        )
    )
    certs = Certs(tmp_path / "ca.pem", tmp_path / "tls.pem", tmp_path / "tls.key")
    launch = Launch(tmp_path, certs, {"api": Peer("10.231.9.2", {"https": 8443}, certs.ca)})
    files = Service(s.targets["svc"]).write_files(launch)
    text = Path(files["files.bootstrap"]).read_text()
    assert "address: '10.231.9.2', port_value: 8443" in text
    assert "{not a placeholder}" in text
    template.write_text("admin: {address: '{targets.nope.host}'}\n")
    found = problems(
        scenario(
            f"api: {{service: go-api}}\nsvc: {{service: envoy, upstream: api, bootstrap: {template}}}",
            "{target: svc, path: /, rate: 5/s}",
        )
    )
    assert any("targets.svc.bootstrap" in p and "unknown placeholder {targets.nope.host}" in p for p in found)
