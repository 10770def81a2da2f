from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from chaoslab import build
from tests.farhost import free_port

if TYPE_CHECKING:
    from docker.client import DockerClient

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"


def chaoslab(*args: str, timeout: float = 300, **kw: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "chaoslab", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        **kw,
    )  # type: ignore[call-overload]


@dataclass(frozen=True)
class ScenarioRun:
    returncode: int
    stdout: str
    stderr: str
    out: Path
    recount: dict | None = None  # CHAOSLAB_RECOUNT's file, when the run wrote one

    @property
    def report(self) -> dict:
        return json.loads((self.out / "report.json").read_text())


def story(res: ScenarioRun | subprocess.CompletedProcess[str]) -> str:
    """What a failing run's assertion should show first: each phase's end (what its faults
    did), the client's and the causes' tables, each verdict and expectation, then the end of
    stderr."""
    keep, tables = ("phase ", "expect ", "warning"), ("causes", "client (")
    lines, table = [], False
    for line in res.stdout.splitlines():
        table = line.startswith(tables) or (table and line[:1] != "" and line[:1] in "┏┃┡│└")
        if table or line.startswith(keep) or (line.startswith("probe ") and " costs " in line):
            lines.append(line)
    return "\n".join(lines) + "\n--- stderr ---\n" + res.stderr[-3000:]


_runs: dict[tuple[str, str], ScenarioRun] = {}


def run_scenario(name: str, base: Path, runtime: str = "") -> ScenarioRun:
    """Run tests/scenarios/<name>.yaml, or for `scenarios/<name>` the short variant of the shipped
    scenarios/<name>.yaml (tests/library.py), once per test session and runtime (default: the
    scenario's own); later callers get the same run."""
    if (name, runtime) not in _runs:
        out = base / f"{name.replace('/', '-')}-{runtime or 'default'}"
        path = SCENARIOS / f"{name}.yaml"
        if name.startswith("scenarios/"):
            from tests.library import short_variant

            base.mkdir(parents=True, exist_ok=True)
            path = base / f"{name.replace('/', '-')}.yaml"
            path.write_text(short_variant(REPO / f"{name}.yaml"))
        args = ("--runtime", runtime) if runtime else ()
        # every shared run also counts its requests after the run, to check the counts made as it
        # went (chaoslab/analysis/settle.py): any difference fails the tests that read the run
        base.mkdir(parents=True, exist_ok=True)
        recount = base / f"{name.replace('/', '-')}-{runtime or 'default'}.recount.json"
        res = chaoslab(
            "run", str(path), *args, "--out", str(out), env={**os.environ, "CHAOSLAB_RECOUNT": str(recount)}
        )
        found = json.loads(recount.read_text()) if recount.exists() else None
        _runs[(name, runtime)] = ScenarioRun(res.returncode, res.stdout, res.stderr, out, found)
    run = _runs[(name, runtime)]
    found = run.recount
    assert found is None or (found["complete"] and not found["differences"]), (
        f"the counts made as the run went differ from a recount after it: {found}"
    )
    return _runs[(name, runtime)]


@pytest.fixture
def scenario_run(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., ScenarioRun]:
    base = tmp_path_factory.getbasetemp() / "scenario-runs"
    return lambda name, runtime="": run_scenario(name, base, runtime)


@pytest.fixture
def library_run(scenario_run: Callable[..., ScenarioRun]) -> Callable[[str], ScenarioRun]:
    """The short variant of scenarios/<name>.yaml, run once per session (shared with the tests
    that name it `scenarios/<name>`)."""
    return lambda name: scenario_run(f"scenarios/{name}")


@pytest.fixture
def root() -> None:
    if os.geteuid() != 0:
        pytest.fail("privileged tests need root: run them as root (CI does)")


def docker_listed(journal_path: Path) -> list[str]:
    """What `docker ps -a` and `docker network ls` show of the run of a journal (its network's
    name, chaoslab-<short id>, starts every name of the run)."""
    lines = [json.loads(line) for line in journal_path.read_text().splitlines()]
    [network] = [e["data"]["name"] for e in lines if e.get("kind") == "docker_network"]
    out = []
    ps = ["docker", "ps", "-a", "--format", "{{.Names}}"]
    for argv in (ps, ["docker", "network", "ls", "--format", "{{.Name}}"]):
        res = subprocess.run(argv, capture_output=True, text=True, check=True)
        out += [name for name in res.stdout.split() if name.startswith(network)]
    return out


@pytest.fixture
def docker_engine(root: None) -> Iterator[DockerClient]:
    """A client of a Docker engine that answers (the set-up script installs and starts one)."""
    from chaoslab.targets.containers import reachable, unavailable

    why = unavailable()
    if why is not None:
        pytest.fail(f"the Docker runtime's tests need a Docker engine: {why} (run scripts/setup.sh)")
    with reachable() as engine:
        assert engine is not None, "the Docker engine stopped answering"
        yield engine


@pytest.fixture(scope="session")
def settled() -> None:
    """Once, before the first end-to-end test: the machine's dirty pages written out. Set-up
    leaves hundreds of MB of them (a new virtual environment, builds), and their writeback
    slows the first runs' phases, whose latencies the tests compare."""
    os.sync()


@pytest.fixture
def clean_machine(root: None, settled: None) -> Iterator[None]:
    """Nothing of chaoslab's on the machine before the test, and nothing left after it.

    What a live run holds is not a leftover: on a shared machine another run may be going on
    (and a test's own runs are over when it checks). Leftovers are cleaned with a plain
    `recover`, which leaves live runs alone."""
    from chaoslab.residue import leftovers

    assert leftovers() == [], "the machine carried chaoslab state before the test"
    yield
    left = leftovers()
    if left:
        chaoslab("recover")
    assert left == [], f"left behind: {left}"


@pytest.fixture
def go_api(tmp_path: Path) -> Iterator[Callable[[], tuple[int, int]]]:
    """Start Go services in the host's namespace, as a user's own running service: (pid, http port)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    argv += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(argv, check=True, capture_output=True)
    started: list[subprocess.Popen[bytes]] = []

    def start() -> tuple[int, int]:
        http = free_port()
        argv = [str(build.go_service("go-api")), "-addr", f"127.0.0.1:{free_port()}"]
        argv += ["-http-addr", f"127.0.0.1:{http}", "-cert", str(cert), "-key", str(key)]
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        started.append(p)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", http), timeout=1).close()
                return p.pid, http
            except OSError:
                time.sleep(0.05)
        raise AssertionError("go-api did not start")

    yield start
    for p in started:
        p.terminate()
        p.wait(timeout=10)


# The kernel lane's resumption (scripts/kernel_lane.py): a guest whose emulated kernel crashed
# boots again and runs only the tests that had not passed. A test is written down once its
# teardown passed too (its checks of what it left behind), a failure in its own file, each
# at once, with fsync, since the guest may die at the next instruction; the lane fails on
# any failure written down, whatever boot it was in.
LANE_PASSED = os.environ.get("CHAOSLAB_LANE_PASSED", "")
_lane_failed: set[str] = set()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    path = Path(LANE_PASSED) if LANE_PASSED else None
    if path is None or not path.exists():
        return
    passed = set(path.read_text().split())
    done = [item for item in items if item.nodeid in passed]
    if done:
        items[:] = [item for item in items if item.nodeid not in passed]
        config.hook.pytest_deselected(items=done)


def _lane_note(path: str, nodeid: str) -> None:
    with open(path, "a") as fh:
        fh.write(nodeid + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if not LANE_PASSED:
        return
    if report.failed:
        if report.nodeid not in _lane_failed:
            _lane_failed.add(report.nodeid)
            _lane_note(str(Path(LANE_PASSED).with_name("failed.txt")), report.nodeid)
    elif report.when == "teardown" and report.nodeid not in _lane_failed:
        _lane_note(LANE_PASSED, report.nodeid)
