"""Locust workers on other hosts (`load.remote`, `chaoslab worker`).

No second machine exists here, so the tests build one from what this kernel offers: a network
namespace of their own with a veth link to the host and its own addresses (10.250.N.0/30),
holding the workers that join the run over that link, and the target they load: the run's
own worker reaches it over the same link. Its clock is the host's; a host whose clock is off
is played by CHAOSLAB_CLOCK_SKEW, which adds seconds to every clock reading of that worker.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaoslab.load.records import read_records
from tests import farhost
from tests.conftest import chaoslab, free_port, story
from tests.farhost import FarHost, service_there
from tests.test_targets import problems

REPO = Path(__file__).resolve().parent.parent
CHAOSLAB = [sys.executable, "-m", "chaoslab"]

BASE = """
name: r
targets:
  api: {service: go-api}
load: {target: api, path: /, rate: 10/s, concurrency: 4, REMOTE}
phases: [{name: b, duration: 5s}]
"""


@pytest.mark.parametrize(
    ("remote", "expected"),
    [
        ("remote: {workers: 2}", "load.remote.listen: is required"),
        (
            "remote: {workers: 0, listen: '10.0.0.5:5557'}",
            "load.remote.workers: must be between 1 and 64, got 0",
        ),
        (
            "remote: {workers: 1, listen: 'far-host:5557'}",
            "load.remote.listen: 'far-host:5557' is not an address",
        ),
        (
            "remote: {workers: 1, listen: '10.0.0.5'}",
            "load.remote.listen: '10.0.0.5' is not an address and port",
        ),
        (
            "remote: {workers: 1, listen: '0.0.0.0:5557'}",
            "load.remote.listen: '0.0.0.0:5557' listens on every",
        ),
        ("remote: {workers: 1, listen: '10.0.0.5:5557', hosts: 3}", "load.remote.hosts: unknown key"),
        ("remote: {workers: 4, listen: '10.0.0.5:5557'}", "load.concurrency: must be at least the workers"),
    ],
)
def test_bad_remote_settings_are_named_by_their_path(remote: str, expected: str) -> None:
    found = problems(BASE.replace("REMOTE", remote))
    assert any(p.startswith(expected) for p in found), found


def test_a_worker_needs_an_address_and_port_to_join() -> None:
    res = subprocess.run(
        [*CHAOSLAB, "worker", "--master", "far-host"], capture_output=True, text=True, timeout=60
    )
    assert res.returncode == 2, res.stderr
    assert "--master 'far-host': give the address and port" in res.stderr


@pytest.fixture
def far_host(root: None) -> Iterator[FarHost]:
    with farhost.far_host() as far:
        yield far


def scenario(pid: int, port: int, listen: str, workers: int = 2, wait: str = "60s", **load: str) -> str:
    """A run of the Go service at `pid` (attached) with `workers` remote workers that join at
    `listen`; by default a syscall delay between a baseline and a recovery, loaded at 60/s."""
    rate, concurrency, timeout = (
        load.get("rate", "60/s"),
        load.get("concurrency", "6"),
        load.get("timeout", "10s"),
    )
    phases = load.get(
        "phases",
        """
  - {name: baseline, duration: 5s}
  - {name: slow-write, duration: 6s, faults: [{kind: syscall, target: api, syscall: write, delay: 20ms}]}
  - {name: recovery, duration: 3s}
expect:
  - {phase: slow-write, absorbed_by: syscall, target: api}""",
    )
    return f"""\
name: remote-workers
targets:
  api: {{attach: {{pid: {pid}}}, ports: {{http: {port}}}, health: {{http: /healthz}}}}
load:
  protocol: http
  target: api
  path: "/work?work=20"
  rate: {rate}
  concurrency: {concurrency}
  timeout: {timeout}
  remote: {{workers: {workers}, listen: "{listen}", wait: {wait}}}
phases:{phases}
"""


@pytest.mark.privileged
def test_remote_workers_share_the_load_on_the_runs_clock(far_host: FarHost, tmp_path: Path) -> None:
    svc, http = service_there(far_host, tmp_path)
    listen = f"{far_host.here}:{free_port()}"
    worker = [*CHAOSLAB, "worker", "--master", listen, "--once", "--wait", "120"]
    logs = [tmp_path / "worker-1.log", tmp_path / "worker-2.log"]
    workers = [
        far_host.run(worker, logs[0]),
        far_host.run(worker, logs[1], {"CHAOSLAB_CLOCK_SKEW": "5"}),  # a host whose clock is 5 s ahead
    ]
    try:
        path = tmp_path / "remote.yaml"
        path.write_text(scenario(svc.pid, http, listen))
        res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
        assert res.returncode == 0, story(res)
        codes = [w.wait(timeout=60) for w in workers]
        assert codes == [0, 0], [log.read_text()[-2000:] for log in logs]
    finally:
        for w in [*workers, svc]:
            w.kill()
            w.wait()
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    rows = report["generator"]["per_worker"]
    assert [(r["index"], r["remote"]) for r in rows] == [(0, False), (1, True), (2, True)]
    # the schedule is split three ways: arrivals i, i+3, ... go to worker i
    total = sum(r["requests"] for r in rows)
    assert total >= 0.9 * 60 * 14, total
    assert all(abs(r["share"] - 1 / 3) < 0.02 for r in rows), rows
    # the offsets measured as they joined: the same clock, and one 5 s ahead
    offsets = sorted(r["offset_ms"] for r in rows if r["remote"])
    assert abs(offsets[0]) < 20 and abs(offsets[1] - 5000) < 20, offsets
    assert all(0 < r["rtt_ms"] < 50 for r in rows if r["remote"])
    # ... and corrected: the skewed worker's requests are in their phases at the schedule's rate,
    # with latencies of the same size as everybody's (uncorrected, they would be 5 s off)
    for c in report["client"]:
        span = next(p for p in report["phases"] if p["name"] == c["phase"])
        expected = 60 * (span["end"] - span["start"])
        assert abs(c["requests"] - expected) <= 0.05 * expected + 3, (c, expected)
        assert c["p99_ms"] < 1000, c
    [v] = report["verdicts"]
    assert (v["layer"], v["target"]) == ("syscall", "api"), v["reason"]
    said = res.stdout + res.stderr
    assert said.count("joined from") == 2, said[-3000:]
    assert re.search(r"worker \d from \S+, clock offset \+(4999|5000)\.\d\d ms", said), said[-3000:]


@pytest.mark.privileged
def test_a_worker_that_never_joins_is_named_and_nothing_is_left(far_host: FarHost, tmp_path: Path) -> None:
    svc, http = service_there(far_host, tmp_path)
    listen = f"{far_host.here}:{free_port()}"
    path = tmp_path / "alone.yaml"
    path.write_text(scenario(svc.pid, http, listen, workers=1, wait="3s"))
    try:
        res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    finally:
        svc.kill()
        svc.wait()
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    assert (
        f"0 of 1 remote workers joined the run's Locust master at {listen} in 3s (joined: none)" in res.stderr
    )
    assert f"chaoslab worker --master {listen}" in res.stderr
    port = listen.rsplit(":", 1)[1]
    left = subprocess.run(["pgrep", "-f", f"master-bind-port {port}"], capture_output=True)
    assert left.returncode == 1, left.stdout  # no Locust master of the run is left
    with socket.socket() as s:  # its port is free again
        s.bind((far_host.here, int(port)))


@pytest.mark.privileged
def test_a_target_the_remote_workers_cannot_reach_is_refused_before_anything_starts(
    go_api: Callable[[], tuple[int, int]], tmp_path: Path
) -> None:
    pid, port = go_api()  # on 127.0.0.1: this host's loopback, no other host's
    path = tmp_path / "loopback.yaml"
    path.write_text(scenario(pid, port, f"127.0.0.1:{free_port()}"))
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    assert (
        "load.remote: the load's target api is at 127.0.0.1, which the remote workers' hosts cannot reach"
        in (res.stderr)
    )
    assert not (tmp_path / "out" / "work" / "load.json").exists()  # no Locust was started


@pytest.mark.privileged
def test_a_target_in_the_runs_own_namespace_is_refused_for_remote_workers(root: None, tmp_path: Path) -> None:
    path = tmp_path / "own-netns.yaml"
    path.write_text(BASE.replace("REMOTE", f"remote: {{workers: 1, listen: '127.0.0.1:{free_port()}'}}"))
    res = chaoslab("run", str(path), "--out", str(tmp_path / "out"))
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    assert re.search(
        r"load.remote: the load's target api runs in a network namespace of this run, at 10\.231\.\d+\.\d+, "
        "which only this host reaches",
        res.stderr,
    ), res.stderr
    assert "attach to it (targets.api.attach), or leave load.remote out" in res.stderr
    assert not (tmp_path / "out" / "work" / "load.json").exists()  # no Locust was started


@pytest.mark.privileged
def test_a_worker_that_drops_out_is_reported_with_what_it_never_sent(
    far_host: FarHost, tmp_path: Path
) -> None:
    svc, http = service_there(far_host, tmp_path)
    listen = f"{far_host.here}:{free_port()}"
    worker = far_host.run([*CHAOSLAB, "worker", "--master", listen, "--once"], tmp_path / "worker.log")
    out = tmp_path / "out"
    path = tmp_path / "drop.yaml"
    # a timeout of 2 s: a worker silent for longer than that (3 s at least) has dropped out
    phases = "\n  - {name: baseline, duration: 12s}"
    path.write_text(
        scenario(svc.pid, http, listen, workers=1, rate="40/s", concurrency="4", timeout="2s", phases=phases)
    )
    with (tmp_path / "run.log").open("wb") as log:
        run = subprocess.Popen(
            [*CHAOSLAB, "run", str(path), "--out", str(out)], stdout=log, stderr=log, cwd=REPO
        )
    try:
        records = out / "work" / "requests-1.bin"  # the remote worker's, as the master writes them
        deadline = time.monotonic() + 120
        while not (records.exists() and len(read_records(records)) > 40):
            assert time.monotonic() < deadline and run.poll() is None, (tmp_path / "run.log").read_text()[
                -3000:
            ]
            time.sleep(0.2)
        time.sleep(3)
        found = subprocess.run(["pgrep", "-f", "locust .*--worker"], capture_output=True, text=True)
        here = os.readlink("/proc/self/ns/net")
        pids = [p for p in found.stdout.split() if os.readlink(f"/proc/{p}/ns/net") != here]
        assert len(pids) == 1, found.stdout  # the far host's Locust worker
        os.kill(int(pids[0]), 9)  # the worker host is gone
        assert run.wait(timeout=120) == 0, (tmp_path / "run.log").read_text()[-3000:]
        assert worker.wait(timeout=30) == 3  # `chaoslab worker` says its Locust worker died
    finally:
        for p in (run, worker, svc):
            p.kill()
            p.wait()
    rows = json.loads((out / "report.json").read_text())["generator"]["per_worker"]
    local, remote = rows
    assert local["dropped_at"] is None and local["lost"] == 0
    # it sent its half of 40/s until it died, a few seconds in; the rest of its half is lost
    assert remote["dropped_at"] is not None and 2 < remote["dropped_at"] < 10, remote
    expected_lost = 20 * (12 - remote["dropped_at"])
    assert abs(remote["lost"] - expected_lost) <= 0.1 * expected_lost + 3, remote
    assert remote["requests"] + remote["lost"] == pytest.approx(local["requests"], abs=8)
    said = (tmp_path / "run.log").read_text()
    assert "DROPPED OUT" in said and f"{remote['lost']} of its arrivals never sent (lost)" in said
