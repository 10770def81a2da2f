"""The Docker runtime on a real engine: the layer matrix gives the same verdicts in containers
as on the local runtime; containers are labelled, published on 127.0.0.1 only and removed
with their network; a killed target is restarted; Docker missing is a clear preflight error
and `auto` falls back to the local runtime; images are built once; compose runs the stack."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
import yaml

from chaoslab import journal
from chaoslab.paths import DOCKER_SRC
from chaoslab.residue import leftovers
from chaoslab.targets import containers, images, stack
from chaoslab.targets.builtins import BUILTINS
from chaoslab.targets.cgroup import ROOT, membership
from tests.conftest import SCENARIOS, ScenarioRun, chaoslab, docker_listed
from tests.test_e2e import start_run, wait_for_fault
from tests.test_matrix import MATRIX

if TYPE_CHECKING:
    from docker.client import DockerClient

# scenario, compared phase, expected (status, layer, target): the layer matrix, the control
# and the mixed-protocol run (gRPC and HTTP through Envoy).
VERDICTS = [
    *((s, phase, ("absorbed", layer, target)) for s, phase, layer, target in MATRIX),
    ("short_control", "control", ("no-change", None, None)),
    ("mixed", "delay", ("absorbed", "network", "api")),
]


def run_without_docker(scenario: str, runtime: str, out: Path) -> subprocess.CompletedProcess[str]:
    """`chaoslab run` with the Docker client pointed at a socket where no engine answers."""
    env = {**os.environ, "DOCKER_HOST": "unix:///nonexistent/docker.sock"}
    path = str(SCENARIOS / f"{scenario}.yaml")
    return chaoslab("run", path, "--runtime", runtime, "--out", str(out), env=env)


def verdict(r: dict, phase: str) -> tuple[str, str | None, str | None]:
    [v] = [v for v in r["verdicts"] if v["phase"] == phase]
    return v["status"], v["layer"], v["target"]


@pytest.mark.parametrize(("scenario", "phase", "expected"), VERDICTS, ids=[v[0] for v in VERDICTS])
@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_same_verdict_as_on_the_local_runtime(
    scenario_run: Callable[..., ScenarioRun], scenario: str, phase: str, expected: tuple
) -> None:
    res = scenario_run(scenario, "docker")
    assert res.returncode in (0, 1), res.stderr[-3000:]
    r = res.report
    assert r["runtime"] == "docker"
    assert f"container chaoslab-{r['run_id'][:6]}-api" in res.stderr
    local = scenario_run(scenario)  # the same scenario on the local runtime (shared with the matrix)
    assert local.report["runtime"] == "local"
    assert verdict(r, phase) == verdict(local.report, phase) == expected
    assert all(f["observed"] for p in r["phases"] for f in p["faults"]), r["phases"]
    assert journal.pending(res.out / "journal.jsonl") == []
    assert docker_listed(res.out / "journal.jsonl") == []


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_containers_are_labelled_on_loopback_and_removed_on_sigterm(
    tmp_path: Path, docker_engine: DockerClient
) -> None:
    out = tmp_path / "out"
    p = start_run(out, SCENARIOS / "long_fault.yaml", "--runtime", "docker")
    fault = wait_for_fault(out, p)
    engine = docker_engine
    found, networks = containers.labelled(engine)
    assert {c.labels[containers.LABEL_TARGET] for c in found} == {"api", "edge"}
    [network] = networks
    network.reload()
    assert {v["Name"] for v in network.attrs["Containers"].values()} == {c.name for c in found}
    for c in found:
        c.reload()
        bindings = c.attrs["HostConfig"]["PortBindings"]
        assert bindings and all(b["HostIp"] == "127.0.0.1" for v in bindings.values() for b in v)
        assert list(c.attrs["NetworkSettings"]["Networks"]) == [network.name]
    api = next(c for c in found if c.labels[containers.LABEL_TARGET] == "api")
    assert api.attrs["State"]["Pid"] == fault["pid"]  # the fault acts on the container's process
    assert Path(f"/run/netns/{api.name}").exists()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=90)
    assert p.returncode == 130, err[-3000:]
    assert journal.pending(out / "journal.jsonl") == []
    assert docker_listed(out / "journal.jsonl") == []
    assert not Path(f"/proc/{fault['pid']}").exists()
    assert (out / "work" / "api.log").read_text().count("listening") >= 1  # the container's log is kept


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_killed_container_is_restarted_and_probes_follow(scenario_run: Callable[..., ScenarioRun]) -> None:
    res = scenario_run("kill", "docker")
    assert res.returncode in (0, 1), res.stderr[-3000:]
    r = res.report
    [f] = r["phases"][1]["faults"]
    assert f["observed"], f["detail"]
    # the engine reports 137 for SIGKILL; the runtime gives it as Popen would: -9
    assert f["measured"]["exit_code"] == -9 and f["measured"]["healthy_after_ms"] < 10_000
    assert "container restarted" in res.stderr
    c = {row["phase"]: row for row in r["client"] if not row["name"]}
    assert c["recovery"]["errors"] == 0 and c["recovery"]["requests"] > 100
    app = [x for x in r["layers"] if (x["phase"], x["layer"], x["target"]) == ("recovery", "app", "api")]
    assert app and app[0]["count"] > 100  # the uprobes were attached to the new process


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine")
def test_docker_missing_is_a_preflight_error_and_nothing_is_applied(tmp_path: Path) -> None:
    res = run_without_docker("short_entropy", "docker", tmp_path)
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Docker engine unix:///nonexistent/docker.sock is not reachable" in res.stderr
    assert "runtime: local" in res.stderr
    assert journal.pending(tmp_path / "journal.jsonl") == []
    assert leftovers() == []


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_auto_falls_back_to_the_local_runtime_with_a_notice(tmp_path: Path) -> None:
    res = run_without_docker("short_control", "auto", tmp_path)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "runtime auto: Docker is not available" in res.stderr
    assert "using the local runtime" in res.stderr
    assert json.loads((tmp_path / "report.json").read_text())["runtime"] == "local"


def test_auto_takes_docker_when_it_answers() -> None:
    plan = chaoslab("plan", str(SCENARIOS / "net_delay.yaml"), "--runtime", "auto")
    assert plan.returncode == 0, plan.stderr
    expected = "docker" if containers.unavailable() is None else "local"
    assert f"runtime {expected}" in plan.stdout
    if expected == "docker":  # the fault is planned on the container's eth0, towards the host
        assert "egress on eth0 (to host 10.233.1.1)" in plan.stdout


@pytest.mark.privileged
def test_images_are_built_once_labelled_and_reused(docker_engine: DockerClient) -> None:
    engine = docker_engine
    tags = images.ensure_all(engine)
    assert images.ensure_all(engine) == tags
    for tag in tags:
        image = engine.images.get(tag)
        name = tag.split("/")[1].split(":")[0]
        assert image.labels[images.LABEL] == name
        assert engine.images.get(f"chaoslab/{name}:latest").id == image.id
        assert image.attrs["Config"]["Entrypoint"] == [next(iter(BUILTINS[name].image_files()))]
    # Envoy's image carries the libraries its binary links against, FROM scratch
    envoy = BUILTINS["envoy"].image_files()
    assert any("libc.so" in dest for dest in envoy) and any("ld-linux" in dest for dest in envoy)


def test_image_digest_follows_content(tmp_path: Path) -> None:
    dockerfile, binary = tmp_path / "Dockerfile", tmp_path / "bin"
    dockerfile.write_text("FROM scratch\n")
    binary.write_bytes(b"one")
    first = images.digest(dockerfile, {"/bin": binary})
    assert images.digest(dockerfile, {"/bin": binary}) == first
    binary.write_bytes(b"two")
    assert images.digest(dockerfile, {"/bin": binary}) != first
    assert images.digest(dockerfile, {"/other": binary}) != images.digest(dockerfile, {"/bin": binary})


def test_cgroup_membership_on_both_layouts() -> None:
    v1 = "12:pids:/docker/abc\n4:cpu,cpuacct:/docker/abc\n6:freezer:/docker/abc\n1:name=systemd:/docker/abc\n"
    controllers = ("cpu", "cpuacct", "freezer", "pids")
    assert membership(v1 + "0::/\n", v2=False) == [ROOT / c / "docker/abc" for c in controllers]
    v2 = "0::/system.slice/docker-abc.scope\n"
    assert membership(v2, v2=True) == [ROOT / "system.slice/docker-abc.scope"]
    assert membership("1:name=systemd:/x\n", v2=False) == []


def test_compose_file_runs_the_services_as_the_runtime_does() -> None:
    compose = yaml.safe_load((DOCKER_SRC / "compose.yaml").read_text())
    api, edge = compose["services"]["api"], compose["services"]["edge"]
    assert api["command"] == stack.api_command()
    assert api["networks"]["chaoslab"]["ipv4_address"] == stack.API_IP
    assert edge["networks"]["chaoslab"]["ipv4_address"] == stack.EDGE_IP
    assert edge["command"][:2] == ["-c", "/stack/envoy.json"]
    for service in compose["services"].values():
        assert all(port.startswith("127.0.0.1:") for port in service["ports"])


@pytest.mark.privileged
@pytest.mark.usefixtures("docker_engine")
def test_compose_stack_answers_through_envoy() -> None:
    made = chaoslab("stack")
    assert made.returncode == 0, made.stderr
    compose = ["docker-compose", "-p", "chaoslabtest", "-f", str(DOCKER_SRC / "compose.yaml")]
    up = subprocess.run([*compose, "up", "-d"], capture_output=True, text=True, timeout=120)
    try:
        assert up.returncode == 0, up.stderr
        ctx = ssl.create_default_context(cafile=str(stack.STACK / "ca.pem"))
        deadline, body = time.monotonic() + 30, b""
        while time.monotonic() < deadline and not body:
            try:
                url = "https://127.0.0.1:10000/work?work=5"
                with urllib.request.urlopen(url, context=ctx, timeout=2) as r:
                    body = r.read()
            except OSError:
                time.sleep(0.2)
        assert body, "the compose stack did not answer through Envoy in 30s"
    finally:
        down = subprocess.run([*compose, "down"], capture_output=True, text=True, timeout=120)
    assert down.returncode == 0, down.stderr
    left = subprocess.run(["docker", "ps", "-a", "--format", "{{.Names}}"], capture_output=True, text=True)
    assert "chaoslabtest" not in left.stdout
