"""Targets on a remote Docker engine, reached the way one is (`engine: tcp://HOST:2375`).

No second machine exists here: the remote engine is a dockerd of its own (data root, exec root,
socket, cgroup parent) in a network namespace with its own veth link and address, its API
reached over TCP on that address, its containers' ports published there (tests/farhost.py).
chaoslab treats it as any engine not behind a unix socket: it never touches its containers'
processes, namespaces or cgroups from this machine, only the engine's API and the published
ports. The faults the engine's API does (pause, kill, a CPU limit) go through it; the others, and
every probe, run inside chaoslab's helper container on the engine's host (chaoslab/agent.py),
with the same code as on this machine.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chaoslab import journal
from chaoslab.residue import leftovers
from chaoslab.targets import containers, engines
from tests.conftest import REPO, SCENARIOS, ScenarioRun, chaoslab
from tests.farhost import FarHost, engine_there, far_host
from tests.test_bad_input import unwrap
from tests.test_e2e import start_run, wait_for_fault

if TYPE_CHECKING:
    from docker.client import DockerClient

pytestmark = [pytest.mark.privileged]


@pytest.fixture(scope="module")
def far() -> Iterator[FarHost]:
    with far_host() as host:
        yield host


@pytest.fixture(scope="module")
def far_engine(far: FarHost) -> Iterator[str]:
    """The far host's engine, for the module (its images are built there once, by the first run)."""
    root = Path(f"/var/tmp/chaoslab-far-engine-{far.ns}")
    try:
        with engine_there(far, root) as url:
            yield url
    finally:
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def far_client(far_engine: str) -> Iterator[DockerClient]:
    with containers.connected(engines.Engine(far_engine, far_engine)) as c:
        yield c


def on_engine(scenario: Path, url: str, out: Path) -> Path:
    """The scenario, set to run its containers on the engine at `url`."""
    text = scenario.read_text()
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{scenario.stem}-remote.yaml"
    path.write_text(f"runtime: docker\nengine: {url}\n" + text)
    return path


def nothing_left(out: Path, far_client: DockerClient) -> None:
    """The run's journal has nothing pending; neither the far engine nor this machine holds
    anything of chaoslab's."""
    assert journal.pending(out / "journal.jsonl") == []
    assert of_chaoslab(far_client) == [] and leftovers() == []


def of_chaoslab(engine: DockerClient) -> list[str]:
    found, networks = containers.labelled(engine)
    return [c.name for c in found] + [n.name for n in networks]


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine", "docker_engine")
def test_a_scenario_on_the_remote_engine_reaches_the_local_engines_verdict(
    tmp_path: Path,
    far: FarHost,
    far_engine: str,
    far_client: DockerClient,
    docker_engine: DockerClient,
    scenario_run: Callable[..., ScenarioRun],
) -> None:
    out = tmp_path / "out"
    path = on_engine(SCENARIOS / "short_control.yaml", far_engine, tmp_path)
    path.write_text(path.read_text() + "probes: {required: [proxy, network]}\n")
    res = chaoslab("run", str(path), "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    r = json.loads((out / "report.json").read_text())
    assert r["runtime"] == "docker" and r["engine"] == f"Docker engine {far_engine}"
    # the targets ran there, published on its address, and the load reached them there
    assert f"targets on the remote Docker engine {far_engine}, published on {far.there}" in res.stderr
    assert f"8443->{far.there}:" in res.stderr and f"10443->{far.there}:" in res.stderr
    rows = {row["phase"]: row for row in r["client"] if not row["name"]}
    assert rows["control"]["requests"] > 300 and rows["control"]["errors"] == 0
    # the same verdict as on the local engine (the shared run of the Docker matrix)
    local = scenario_run("short_control", "docker").report
    assert (
        [(v["phase"], v["status"]) for v in r["verdicts"]]
        == [(v["phase"], v["status"]) for v in local["verdicts"]]
        == [("control", "no-change")]
    )
    assert all(e["held"] for e in r["expectations"])
    # the probes attached on the engine's host, from chaoslab's helper there, and measured there
    there = [p for p in r["probes"] if p.endswith(f"(on {far.there})")]
    assert {p.split(":")[0] for p in there} >= {"proxy", "network", "syscall", "cpu"}, r["probes"]
    measured = {
        (x["layer"], x["target"]) for x in r["layers"] if x["phase"] == "control" and x["count"] > 100
    }
    assert {("proxy", "edge"), ("network", "api"), ("network", "edge")} <= measured, measured
    # what the containers wrote in the work directory came back: Envoy's access log, its log
    log = out / "work" / "envoy-edge-access.jsonl"
    assert log.exists() and len(log.read_text().splitlines()) >= rows["control"]["requests"]
    assert "listening" in (out / "work" / "api.log").read_text()
    # nothing of the run is left on either engine, nor journaled as pending; the engine is known
    assert of_chaoslab(far_client) == [] and of_chaoslab(docker_engine) == []
    assert journal.pending(out / "journal.jsonl") == []
    assert far_engine in engines.used()
    entries = [json.loads(line) for line in (out / "journal.jsonl").read_text().splitlines()]
    assert {e["data"].get("engine") for e in entries if e.get("kind") in ("container", "docker_network")} == {
        far_engine
    }
    assert not any(e.get("kind") == "netns" for e in entries)  # nothing of it in this host's namespaces


def long_fault_there(out: Path, fault: str, url: str) -> tuple[subprocess.Popen[str], dict, int]:
    """long_fault.yaml with `fault` for its long phase, run on the engine at `url` until the
    fault is applied: (the run, the fault's journal record, its watchdog's PID)."""
    scenario = out.parent / "long_fault_there.yaml"
    scenario.write_text(
        (SCENARIOS / "long_fault.yaml").read_text().replace("{kind: entropy, target: api, delay: 3ms}", fault)
    )
    p = start_run(out, on_engine(scenario, url, out.parent))
    record = wait_for_fault(out, p)
    [watchdog] = [i.watchdog_pid for i in journal.live_runs() if i.pid == p.pid]
    return p, record, watchdog


def started_there(out: Path, path: Path, far_client: DockerClient) -> tuple[subprocess.Popen[str], int]:
    """The run, once its containers on the far engine serve the load: (it, its watchdog's PID)."""
    p = start_run(out, path)
    deadline = time.monotonic() + 120
    while len(containers.labelled(far_client)[0]) < 3 or not (out / "work" / "load-t0").exists():
        assert p.poll() is None and time.monotonic() < deadline, p.communicate()[1][-3000:]
        time.sleep(0.2)
    time.sleep(2)
    for c in containers.labelled(far_client)[0]:  # published on the engine host's address alone
        if c.name.endswith("-helper"):  # chaoslab's helper: the host's network, no port
            assert (
                c.attrs["HostConfig"]["NetworkMode"] == "host" and not c.attrs["HostConfig"]["PortBindings"]
            )
            continue
        bindings = c.attrs["HostConfig"]["PortBindings"]
        assert bindings and {b["HostIp"] for v in bindings.values() for b in v} == {
            far_client.api.base_url.split("//")[1].split(":")[0]
        }
    [info] = [i for i in journal.live_runs() if i.pid == p.pid]
    assert info.watchdog_pid > 0
    return p, info.watchdog_pid


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_killed_run_s_watchdog_removes_its_containers_from_the_remote_engine(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    out = tmp_path / "out"
    p, watchdog = started_there(
        out, on_engine(SCENARIOS / "short_control.yaml", far_engine, tmp_path), far_client
    )
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while (of_chaoslab(far_client) or Path(f"/proc/{watchdog}").exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not Path(f"/proc/{watchdog}").exists(), "the watchdog outlived its run"
    assert of_chaoslab(far_client) == []  # the dead man's switch reached the engine in the journal
    assert journal.pending(out / "journal.jsonl") == []
    assert leftovers() == []


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_containers_left_there_are_named_by_the_residue_check_and_removed_by_recover(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    """chaoslab and its watchdog both killed (a machine that lost power keeps the remote
    engine's containers): the residue check names them there, `recover` removes them."""
    out = tmp_path / "out"
    path = on_engine(SCENARIOS / "short_control.yaml", far_engine, tmp_path)
    p, watchdog = started_there(out, path, far_client)
    os.kill(watchdog, signal.SIGKILL)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    # chaoslab's helper there exits by itself once the stream closes (it held no fault)
    deadline = time.monotonic() + 30
    while any(c.name.endswith("-helper") for c in containers.labelled(far_client)[0]):
        assert time.monotonic() < deadline, "the helper outlived its run"
        time.sleep(0.2)
    left = leftovers()
    on = f"on the Docker engine {far_engine}"
    assert len([x for x in left if x.startswith("container ") and on in x]) == 2, left
    assert [x for x in left if x.startswith("Docker network ") and on in x], left
    res = chaoslab("recover", timeout=120)
    assert res.returncode == 0, res.stderr[-3000:]
    said = res.stdout + res.stderr
    assert "removed container chaoslab-" in said and on in said, said
    assert of_chaoslab(far_client) == [] and leftovers() == []


@pytest.mark.usefixtures("clean_machine")
@pytest.mark.parametrize("runtime", ["docker", "auto"])
def test_an_engine_that_does_not_answer_is_named_and_nothing_is_applied(
    tmp_path: Path, far: FarHost, runtime: str
) -> None:
    """`runtime: auto` with a named engine is that engine or nothing: never the targets run
    here instead, unannounced."""
    url = f"tcp://{far.there}:2999"  # the far host runs nothing there
    path = on_engine(SCENARIOS / "short_control.yaml", url, tmp_path)
    path.write_text(path.read_text().replace("runtime: docker", f"runtime: {runtime}"))
    t0 = time.monotonic()
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"), timeout=120)
    assert res.returncode == 3, res.stderr[-3000:]
    assert "Traceback" not in res.stderr
    assert f"Docker engine {url} is not reachable: Connection refused" in res.stderr, res.stderr[-2000:]
    assert far.there in res.stderr and time.monotonic() - t0 < 60
    assert url not in engines.used()  # nothing was put there: recover has nothing to look for
    assert journal.pending(tmp_path / "out" / "journal.jsonl") == []
    assert leftovers() == []


@pytest.mark.usefixtures("clean_machine")
def test_an_image_that_cannot_be_built_there_is_named_with_the_engine(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    context = tmp_path / "broken"
    context.mkdir()
    (context / "Dockerfile").write_text("FROM scratch\nCOPY missing-file /\n")
    scenario = tmp_path / "broken.yaml"
    scenario.write_text(
        (SCENARIOS / "short_control.yaml")
        .read_text()
        .replace("api: {service: go-api}", f"api: {{build: {context}, ports: {{https: 8443}}}}")
    )
    path = on_engine(scenario, far_engine, tmp_path)
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"), timeout=300)
    assert res.returncode == 3, res.stderr[-3000:]
    assert f"on the Docker engine {far_engine}: building image" in res.stderr, res.stderr[-2000:]
    assert "missing-file" in res.stderr and "Traceback" not in res.stderr
    assert of_chaoslab(far_client) == [] and leftovers() == []


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
@pytest.mark.parametrize("peer", ["host", "edge"])
def test_a_network_fault_there_shapes_the_link_on_the_engine_s_host(
    tmp_path: Path, far_engine: str, far_client: DockerClient, peer: str
) -> None:
    """A 20 ms delay on api's link, from chaoslab's helper on the engine's host. To the host:
    the load reaches api through a published port, its source address kept, so the host's side
    is every address off the run's network: the client pays it, and the network layer (which
    times a turn on one kernel) cannot, which the verdict says. To edge, on the same host: the
    helper's network probe times it, and the verdict finds it."""
    out = tmp_path / "out"
    scenario = tmp_path / f"net_{peer}.yaml"
    text = (SCENARIOS / "short_entropy.yaml").read_text().split("expect:")[0]
    fault = f"{{kind: network, target: api, peer: {peer}, delay: 20ms}}"
    if peer == "host":  # the load straight at api, one faulted turn a request on kept connections
        text = text.replace("target: edge, path", "target: api, path")
    scenario.write_text(text.replace("{kind: entropy, target: api, delay: 3ms}", fault))
    res = chaoslab("run", str(on_engine(scenario, far_engine, tmp_path)), "--out", str(out), timeout=600)
    assert res.returncode in (0, 1), res.stderr[-4000:]
    r = json.loads((out / "report.json").read_text())
    [f] = r["phases"][1]["faults"]
    assert f["observed"] and "median 20." in f["detail"].split("->")[-1], f
    rows = {row["phase"]: row for row in r["client"] if not row["name"]}
    assert rows["starve"]["p50_ms"] - rows["baseline"]["p50_ms"] > 15, rows
    assert rows["recovery"]["p50_ms"] - rows["baseline"]["p50_ms"] < 3, rows
    [v] = r["verdicts"]
    if peer == "host":
        assert (v["status"], v["layer"], v["target"]) == ("inconclusive", "network", "api"), v
        assert "the load's side of api, on the remote Docker engine" in v["reason"]
    else:
        assert v["status"] == "absorbed" and v["layer"] == "network", v
    nothing_left(out, far_client)


@pytest.mark.usefixtures("clean_machine")
def test_attaching_to_a_container_of_a_remote_default_engine_is_refused(
    tmp_path: Path, far_engine: str
) -> None:
    """DOCKER_HOST at a remote engine: its containers' PIDs are not this machine's, and attach
    acts on a process here; refused, naming the engine, nothing applied."""
    scenario = tmp_path / "attach.yaml"
    scenario.write_text(
        "name: attach-far\n"
        "targets:\n"
        "  svc: {attach: {container: some-service}, ports: {http: 8080}}\n"
        "load: {protocol: http, target: svc, path: /, rate: 5/s}\n"
        "phases:\n  - {name: baseline, duration: 2s}\n"
    )
    env = {**os.environ, "DOCKER_HOST": far_engine}
    res = chaoslab("run", str(scenario), "--out", str(tmp_path / "out"), timeout=120, env=env)
    said = unwrap(res.stderr)
    assert res.returncode == 3 and "Traceback" not in said, said[-3000:]
    assert f"attach: a container is looked up on the Docker engine {far_engine}, which is remote" in said, (
        said
    )
    assert leftovers() == []


def test_a_docker_context_names_the_engine_with_its_address(far_engine: str, tmp_path: Path) -> None:
    """`engine: NAME` is read from the Docker context store, as `docker --context NAME` does."""
    home = tmp_path / "home"
    env = {**os.environ, "HOME": str(home)}
    made = subprocess.run(
        ["docker", "context", "create", "far-test", "--docker", f"host={far_engine}"],
        env=env,
        capture_output=True,
        text=True,
    )
    assert made.returncode == 0, made.stderr
    probe = (
        "from chaoslab.targets import engines, containers\n"
        "e = engines.resolve('far-test')\n"
        "print(e.url, e.remote, e.host)\n"
        "with containers.connected(e) as c: print(c.version()['Version'])\n"
        "import os; os.environ['DOCKER_CONTEXT'] = 'far-test'\n"
        "print(engines.resolve().url)\n"
        "try: engines.resolve('no-such-context')\n"
        "except Exception as exc: print(type(exc).__name__, exc.message)\n"
    )
    res = subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True, text=True, cwd=REPO)
    assert res.returncode == 0, res.stderr
    url_line, version, current, missing = res.stdout.splitlines()
    assert url_line == f"{far_engine} True {far_engine.split('//')[1].split(':')[0]}"
    assert version
    assert current == far_engine  # DOCKER_CONTEXT is taken as the docker command takes it
    assert missing.startswith("PreflightError engine: Docker context 'no-such-context' cannot be read")


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
@pytest.mark.parametrize("action", ["pause", "kill"])
def test_a_process_fault_there_acts_through_the_engine_and_is_reverted(
    tmp_path: Path,
    far_engine: str,
    far_client: DockerClient,
    action: str,
    scenario_run: Callable[..., ScenarioRun],
) -> None:
    """Pause (the engine's freezer) and kill (the engine's signal, then the runtime's restart
    through it), as Pumba does them: verified by what the engine reports, undone at the end."""
    out = tmp_path / "out"
    res = chaoslab(
        "run", str(on_engine(SCENARIOS / f"{action}.yaml", far_engine, tmp_path)), "--out", str(out)
    )
    assert res.returncode in (0, 1), res.stderr[-4000:]
    r = json.loads((out / "report.json").read_text())
    [f] = r["phases"][1]["faults"]
    assert f["observed"], f["detail"]
    rows = {row["phase"]: row for row in r["client"] if not row["name"]}
    [v] = r["verdicts"]
    # as on a local engine: a 2 s freeze is absorbed by cpu at api (the helper's cpu probe saw
    # the stall). A kill with a 50 ms restart is judged on the app layer at api on both engines;
    # whether it adds a significant time there is borderline (the local engine's own runs have
    # come out absorbed and invalid), so the status is not compared
    if action == "pause":
        assert (v["status"], v["layer"], v["target"]) == ("absorbed", "cpu", "api"), v
    else:
        [here] = scenario_run("kill", "docker").report["verdicts"]
        assert (v["layer"], v["target"]) == (here["layer"], here["target"]) == ("app", "api"), (v, here)
        assert v["status"] in ("absorbed", "invalid") and here["status"] in ("absorbed", "invalid"), (v, here)
        # the helper's probes followed the restarted process there
        app = [x for x in r["layers"] if (x["phase"], x["layer"], x["target"]) == ("recovery", "app", "api")]
        assert app and app[0]["count"] > 100
    if action == "pause":
        assert "the engine says paused" in f["detail"] and f["measured"]["cpu_ms_while_paused"] < 1.0
        # the load waited out the freeze: the paused phase's p99 holds most of its 2 s
        assert rows["paused"]["p99_ms"] > 1000 and rows["baseline"]["p99_ms"] < 100
    else:
        # the engine reports 137 for SIGKILL; the runtime gives it as Popen would: -9
        assert f["measured"]["exit_code"] == -9 and f["measured"]["healthy_after_ms"] < 10_000
        assert "container restarted" in res.stderr
    assert rows["recovery"]["errors"] == 0 and rows["recovery"]["requests"] > 100
    nothing_left(out, far_client)


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_pause_there_outliving_its_run_is_undone_by_the_watchdog_through_the_engine(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    out = tmp_path / "out"
    p, fault, watchdog = long_fault_there(out, "{kind: process, target: api, action: pause}", far_engine)
    assert fault["action"] == "pause" and fault["engine"] == far_engine
    api = far_client.api.inspect_container(fault["container"])
    assert api["State"]["Paused"]
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    deadline = time.monotonic() + 30
    while (of_chaoslab(far_client) or Path(f"/proc/{watchdog}").exists()) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert of_chaoslab(far_client) == []  # unpaused, then removed with the rest of the run
    # the engine's own account: the watchdog unpaused it (a removal alone kills it paused)
    events = far_client.api.events(
        since=int(time.time()) - 120,
        until=int(time.time()),
        decode=True,
        filters={"container": fault["container"]},
    )
    assert [e["Action"] for e in events if e["Action"] in ("pause", "unpause", "destroy")] == [
        "pause",
        "unpause",
        "destroy",
    ]
    assert journal.pending(out / "journal.jsonl") == []
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    [seq] = [x["seq"] for x in lines if x.get("op") == "intent" and x.get("kind") == "fault"]
    assert any(x.get("op") == "undone" and x["seq"] == seq for x in lines)


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_cpu_limit_there_is_the_engine_s_and_its_throttling_is_read_back(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    out = tmp_path / "out"
    res = chaoslab(
        "run", str(on_engine(SCENARIOS / "cpu_limit.yaml", far_engine, tmp_path)), "--out", str(out)
    )
    assert res.returncode in (0, 1), res.stderr[-4000:]
    r = json.loads((out / "report.json").read_text())
    [f] = r["phases"][1]["faults"]
    assert f["observed"] and f["mechanism"].startswith("the engine's CPU limit"), f
    m = f["measured"]
    # 0.1 CPU of a 0.1 s period: the container ran out of its 10 ms in most periods of the phase
    assert m["nr_throttled"] >= 0.5 * m["nr_periods"] > 10 and m["cpu_ms"] < 0.2 * 8000, m
    rows = {row["phase"]: row for row in r["client"] if not row["name"]}
    assert rows["starved"]["p50_ms"] > 2 * rows["baseline"]["p50_ms"]
    assert rows["recovery"]["p50_ms"] < 2 * rows["baseline"]["p50_ms"]  # the limit was put back
    # the helper's cpu probe on the engine's host saw the throttling: absorbed there, as here
    [v] = r["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "cpu", "api"), v
    nothing_left(out, far_client)


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_cpu_limit_left_there_by_a_dead_run_is_put_back_by_recover(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    """chaoslab and its watchdog killed with the limit on: it stays (a fault the engine's API
    does is the run's own, not the helper's: only this machine's watchdog or `recover` reverts
    it), the residue check names the containers, `recover` puts the engine's own limit back
    before it removes them."""
    out = tmp_path / "out"
    p, fault, watchdog = long_fault_there(out, "{kind: cpu, target: api, cpus: 0.1}", far_engine)
    assert (fault["engine"], fault["quota_us"], fault["period_us"]) == (far_engine, 0, 0)  # none before
    os.kill(watchdog, signal.SIGKILL)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    host_config = far_client.api.inspect_container(fault["container"])["HostConfig"]
    assert (host_config["CpuQuota"], host_config["CpuPeriod"]) == (10_000, 100_000)
    assert any(x.startswith("container ") and far_engine in x for x in leftovers())
    res = chaoslab("recover", timeout=120)
    said = res.stdout + res.stderr
    assert res.returncode == 0, said[-3000:]
    assert (
        f"restored the CPU limit of container {fault['container_name']} on the Docker engine {far_engine}"
        in said
    )
    assert of_chaoslab(far_client) == [] and leftovers() == []


def byte_at(pid: int, addr: int) -> int:
    """A byte of a process's memory: the far host's kernel is this one, so the test reads what
    the helper changed there (chaoslab never does: it goes through the helper)."""
    with Path(f"/proc/{pid}/mem").open("rb") as mem:
        mem.seek(addr)
        return mem.read(1)[0]


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_an_entropy_fault_there_runs_inside_the_helper_and_reaches_the_local_verdict(
    tmp_path: Path, far_engine: str, far_client: DockerClient, scenario_run: Callable[..., ScenarioRun]
) -> None:
    """The fault's own code, in chaoslab's helper on the engine's host, on the target as that host
    sees it: applied, verified and reverted there, as on a local engine."""
    out = tmp_path / "out"
    path = on_engine(SCENARIOS / "short_entropy.yaml", far_engine, tmp_path)
    res = chaoslab("run", str(path), "--out", str(out), timeout=600)
    assert res.returncode == 0, res.stderr[-4000:]
    said = unwrap(res.stderr)
    assert f"chaoslab's helper on the Docker engine {far_engine}: container chaoslab-" in said, said
    r = json.loads((out / "report.json").read_text())
    [f] = r["phases"][1]["faults"]
    assert f["observed"] and "randomness reads held 3ms" in f["detail"], f
    assert f["mechanism"].endswith("on the engine's host") and int(f["detail"].split()[0]) > 100
    rows = {row["phase"]: row for row in r["client"] if not row["name"]}
    # about five held reads of 3 ms per handshake: +15 ms at p50, gone once reverted
    assert rows["starve"]["p50_ms"] - rows["baseline"]["p50_ms"] > 8, rows
    assert rows["recovery"]["p50_ms"] - rows["baseline"]["p50_ms"] < 3, rows
    # the same verdict as the shared run on this machine: the helper's probes measured entropy at
    # api there, and the expectation (absorbed by entropy at api) held
    [v] = r["verdicts"]
    [here] = scenario_run("short_entropy").report["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == (here["status"], here["layer"], here["target"])
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "entropy", "api"), v
    assert v["explained"] > 0.8 and all(e["held"] for e in r["expectations"])
    # the run's journal holds what the helper did there, as that host numbers it
    lines = [json.loads(x) for x in (out / "journal.jsonl").read_text().splitlines()]
    [intent] = [x for x in lines if x.get("op") == "intent" and x.get("kind") == "fault"]
    assert intent["data"]["through_helper"] and intent["data"]["engine"] == far_engine
    [there] = [x["data"]["applied_there"] for x in lines if "applied_there" in x.get("data", {})]
    assert there["pid"] > 0 and there["addr"] > 0 and there["orig_byte"] != 0xCC
    nothing_left(out, far_client)


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_killed_run_s_fault_there_is_undone_by_the_helper_alone(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    """chaoslab and its own watchdog SIGKILLed while the entropy fault holds the far target (its
    host lost power, say): the helper's switch hears the stream close and undoes the fault by
    itself; the helper's container goes; `recover` then finds no fault left there."""
    out = tmp_path / "out"
    p, fault, watchdog = long_fault_there(out, "{kind: entropy, target: api, delay: 3ms}", far_engine)
    assert fault["through_helper"] and fault["engine"] == far_engine
    there = fault["applied_there"]
    assert byte_at(there["pid"], there["addr"]) == 0xCC  # the breakpoint is in place
    [helper] = [c for c in containers.labelled(far_client)[0] if c.name.endswith("-helper")]
    os.kill(watchdog, signal.SIGKILL)
    p.send_signal(signal.SIGKILL)
    p.communicate(timeout=30)
    t0 = time.monotonic()
    while byte_at(there["pid"], there["addr"]) == 0xCC and time.monotonic() - t0 < 10:
        time.sleep(0.05)
    undone_after = time.monotonic() - t0
    assert byte_at(there["pid"], there["addr"]) == there["orig_byte"], "the helper did not undo the fault"
    assert undone_after < 6  # the stream's close, not the heartbeat's timeout, told it
    while helper.name in [c.name for c in containers.labelled(far_client)[0]] and time.monotonic() - t0 < 30:
        time.sleep(0.2)
    assert helper.name not in [c.name for c in containers.labelled(far_client)[0]]
    # the run's own journal still says the fault is pending: only recover marks it
    assert [e.kind for e in journal.pending(out / "journal.jsonl")].count("fault") == 1
    res = chaoslab("recover", timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    said = res.stdout + res.stderr
    assert "restored the instruction" not in said, said  # nothing was left to undo there
    assert "removed container chaoslab-" in said and f"on the Docker engine {far_engine}" in said
    assert (
        byte_at(there["pid"], there["addr"]) == there["orig_byte"]
        if Path(f"/proc/{there['pid']}").exists()
        else True
    )
    nothing_left(out, far_client)


@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_syscall_fault_there_is_absorbed_by_the_syscall_layer_there(
    tmp_path: Path, far_engine: str, far_client: DockerClient
) -> None:
    """A 30 ms hold of api's writes, from chaoslab's helper (its BPF selector and ptrace
    injector on the engine's host), timed by the helper's syscall probe: absorbed by syscall
    at api, as on a local engine (the helper knows the syscalls by name: its waits are left
    out of the layer)."""
    out = tmp_path / "out"
    res = chaoslab(
        "run", str(on_engine(SCENARIOS / "syscall_write.yaml", far_engine, tmp_path)), "--out", str(out)
    )
    assert res.returncode in (0, 1), res.stderr[-4000:]
    r = json.loads((out / "report.json").read_text())
    [f] = r["phases"][1]["faults"]
    assert f["observed"] and "write calls held 30 ms" in f["detail"], f
    [v] = r["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "syscall", "api"), v
    named = {x["metric"] for x in r["layers"] if x["layer"] == "syscall" and x["metric"]}
    assert {"write", "futex"} <= named and not any(m.startswith("syscall ") for m in named), named
    nothing_left(out, far_client)
