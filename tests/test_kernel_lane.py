"""The kernel matrix lane: run inside Debian's kernels under QEMU by scripts/kernel_lane.py.

These tests carry the marker `kernel_lane` and are left out of the main run (pyproject's
addopts); `python3 scripts/kernel_lane.py test 6.1` boots the guest and runs them there,
where the kernel differs from this machine's: kprobes and fentry instead of the newest raw
tracepoints, sch_netem, cgroup v2 with no controller enabled below the root. What each test
verified is written to reports/kernel-lane/<kernel>/results.json, from which the README's
table of supported kernels is made (`scripts/kernel_lane.py table`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoslab.faults.net.tc import ShapingTree
from chaoslab.faults.network import SYN_U32
from chaoslab.targets import netns
from tests.conftest import REPO, chaoslab

pytestmark = [pytest.mark.kernel_lane, pytest.mark.privileged, pytest.mark.e2e]

LANE = Path(__file__).resolve().parent / "lane"
KERNEL = os.uname().release
RESULTS = REPO / "reports" / "kernel-lane" / KERNEL
CGROUP_ROOT = Path("/sys/fs/cgroup")
MODPROBE = Path("/proc/sys/kernel/modprobe")


def record(key: str, value: object) -> None:
    """Add what a test verified to this kernel's results (read by `kernel_lane.py table`)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "results.json"
    data = json.loads(path.read_text()) if path.exists() else {"kernel": KERNEL}
    data[key] = value
    # whole or not at all: the guest may die at any instruction, and the next boot reads it
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, path)


def run(name: str, *args: str) -> tuple[subprocess.CompletedProcess[str], dict]:
    out = RESULTS / "runs" / name
    shutil.rmtree(out, ignore_errors=True)  # an earlier boot's, if it crashed in this run
    res = chaoslab("run", *args, "--out", str(out), timeout=900)
    report = json.loads((out / "report.json").read_text()) if (out / "report.json").exists() else {}
    return res, report


def verdicts(report: dict) -> dict[str, dict]:
    return {
        v["phase"]: {k: v[k] for k in ("status", "layer", "target", "explained", "client_added_mean_ms")}
        | {"causes": [(c["layer"], c["target"]) for c in v["causes"]]}
        for v in report.get("verdicts", [])
    }


def mechanisms(report: dict) -> dict[str, str]:
    """fault kind -> the mechanism it used, and probed layer -> its mechanism, from a report."""
    out = {f"fault {f['kind']}": f["mechanism"] for p in report["phases"] for f in p["faults"]}
    out |= {f"layer {line.split(':', 1)[0]}": line.split(":", 1)[1].strip() for line in report["probes"]}
    return out


@pytest.fixture(scope="module")
def in_guest() -> None:
    if not os.environ.get("CHAOSLAB_KERNEL_LANE"):
        pytest.fail("the kernel lane's tests run inside its guest: python3 scripts/kernel_lane.py test 6.1")


@pytest.fixture
def modprobe_disabled() -> Iterator[None]:
    """Module autoloading off (the kernel's modprobe helper set to /bin/false), veth unloaded."""
    saved = MODPROBE.read_text().strip()
    if Path("/sys/module/veth").exists():
        subprocess.run(["rmmod", "veth"], check=True, capture_output=True, text=True)
    MODPROBE.write_text("/bin/false\n")
    try:
        yield
    finally:
        MODPROBE.write_text(saved + "\n")


def test_a_missing_module_is_a_one_line_error_with_its_fix(
    in_guest: None, modprobe_disabled: None, clean_machine: None
) -> None:
    out = RESULTS / "runs" / "no-veth"
    shutil.rmtree(out, ignore_errors=True)
    res = chaoslab("run", str(LANE / "faults.yaml"), "--out", str(out), timeout=300)
    assert res.returncode == 3, res.stderr[-2000:]
    assert "Traceback" not in res.stderr
    [error] = [line for line in res.stderr.splitlines() if line.startswith("error:")]
    assert "type veth" in error and "failed" in error, error
    hint = res.stderr.split(error, 1)[1].strip().splitlines()[0]
    assert hint.startswith("hint:") and "modprobe veth" in hint, res.stderr[-1000:]
    record("missing_module", {"exit": res.returncode, "error": error, "hint": hint})


def test_probes_says_every_layer_attaches_here(in_guest: None) -> None:
    res = chaoslab("probes", "--json")
    data = json.loads(res.stdout)
    layers = {row["layer"]: row for row in data["layers"]}
    assert res.returncode == 0 and all(row["attaches"] for row in layers.values()), res.stdout
    record("probes", {name: {"ways": row["ways"], "detail": row["detail"]} for name, row in layers.items()})


def test_tls_entropy_with_the_default_probes_is_absorbed_by_entropy(
    in_guest: None, clean_machine: None
) -> None:
    res, report = run("entropy", str(LANE / "entropy.yaml"))
    assert res.returncode in (0, 1), res.stderr[-3000:]  # 1: an emulated generator may run late
    v = verdicts(report)
    record("entropy", {"verdicts": v, "mechanisms": mechanisms(report), "unmeasured": report["unmeasured"]})
    assert report["unmeasured"] == []
    assert (v["starve"]["status"], v["starve"]["layer"], v["starve"]["target"]) == (
        "absorbed",
        "entropy",
        "api",
    )
    _attached_as_probes_said(report)


def _attached_as_probes_said(report: dict) -> None:
    """What `chaoslab probes` said attaches did attach in the run, the same way."""
    said = json.loads((RESULTS / "results.json").read_text())["probes"]
    attached = {line.split(":", 1)[0]: line for line in report["probes"]}
    for layer, row in said.items():
        if layer == "client" or layer not in attached:
            continue  # a layer that applies to none of this run's targets
        for hook, way in row["ways"].items():
            assert f"{hook}: {way}" in attached[layer], (layer, attached[layer])


@pytest.mark.parametrize("runtime", ["local", "docker"])
def test_kernel_faults_on_cgroup_v2(in_guest: None, clean_machine: None, runtime: str) -> None:
    """netem delay, a syscall delay, a CPU limit and a freeze, each absorbed by its layer; the
    cgroup v2 root is left as it was (its cpu controller was not enabled for children)."""
    assert (CGROUP_ROOT / "cgroup.controllers").exists(), "the lane's guest runs cgroup v2"
    before = (CGROUP_ROOT / "cgroup.subtree_control").read_text()
    if runtime == "local":
        assert "cpu" not in before.split(), "the cpu controller must start disabled below the root"
    res, report = run(f"faults-{runtime}", str(LANE / "faults.yaml"), "--runtime", runtime)
    assert res.returncode in (0, 1), res.stderr[-3000:]
    v = verdicts(report)
    faults = {f["kind"]: f for p in report["phases"] for f in p["faults"]}
    record(
        f"faults-{runtime}",
        {
            "verdicts": v,
            "mechanisms": mechanisms(report),
            "settle_s": {p["name"]: p["settle_s"] for p in report["phases"]},
            "subtree_control": [before.strip(), (CGROUP_ROOT / "cgroup.subtree_control").read_text().strip()],
        },
    )
    assert "netem" in faults["network"]["mechanism"], faults["network"]["mechanism"]
    expected = {"net-delay": "network", "slow-write": "syscall", "cpu-limit": "cpu", "paused": "cpu"}
    # What the fault does, not its timings: its own layer at api is a cause of its phase, the
    # main one when the phase is absorbed. An emulated guest can slow everything around a
    # fault (a 150 ms write hold once took the client's p50 from 154 ms to 2.7 s, 6% of it in
    # the held writes): then the phase is inconclusive, with the fault's layer among its causes.
    for phase, layer in expected.items():
        got = v[phase]
        assert (layer, "api") in got["causes"], (phase, got)
        assert (got["status"], got["layer"], got["target"]) == ("absorbed", layer, "api") or (
            got["status"] == "inconclusive"
        ), (phase, got)
    assert all(f["observed"] for f in faults.values()), faults
    journal = (RESULTS / "runs" / f"faults-{runtime}" / "journal.jsonl").read_text()
    if runtime == "local":  # chaoslab enabled cpu for its cgroups, and restored the root after
        assert '"cgroup_controllers"' in journal
        assert (CGROUP_ROOT / "cgroup.subtree_control").read_text() == before
    else:  # the engine enables what its containers need by itself: chaoslab changes nothing there
        assert '"cgroup_controllers"' not in journal
    assert not [d for d in CGROUP_ROOT.iterdir() if d.name.startswith("chaoslab-")]


@contextlib.contextmanager
def engine_over_tcp() -> Iterator[str]:
    """The guest's own Docker engine reached over TCP on 127.0.0.1 (a forwarder to its socket):
    to chaoslab an engine not behind a unix socket is remote, so the run goes through chaoslab's
    helper there, as on another host. (A second dockerd takes a quarter of an hour to start in
    an emulated guest; this machine's tests stand one up: tests/test_remote_engine.py.)"""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def pipe(a: socket.socket, b: socket.socket, done: threading.Event) -> None:
        with contextlib.suppress(OSError):
            while data := a.recv(65536):
                b.sendall(data)
        with contextlib.suppress(OSError):
            b.shutdown(socket.SHUT_WR)
        if done.is_set():  # the second direction to end closes both
            a.close()
            b.close()
        done.set()

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                conn, _ = listener.accept()
                engine = socket.socket(socket.AF_UNIX)
                engine.connect("/var/run/docker.sock")
                done = threading.Event()
                for a, b in ((conn, engine), (engine, conn)):
                    threading.Thread(target=pipe, args=(a, b, done), daemon=True).start()

    threading.Thread(target=serve, daemon=True).start()
    try:
        yield f"tcp://127.0.0.1:{port}"
    finally:
        listener.close()


@pytest.mark.skipif(
    not os.environ.get("CHAOSLAB_LANE_REMOTE"),
    reason="about 6 minutes of emulation a kernel, more than CI's lane budget has left: run it with "
    "CHAOSLAB_LANE_REMOTE=1 python3 scripts/kernel_lane.py test 6.12 -- -k remote_engine",
)
def test_kernel_faults_on_a_remote_engine(
    in_guest: None, clean_machine: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same faults with api on an engine reached as a remote one: the network and syscall
    faults and every probe from chaoslab's helper container, on this kernel's cgroup v2 and
    netem (a remote target's host side: the gateway and every address off the run's network,
    the network itself unshaped at a later tc priority); the CPU limit and the freeze through
    the engine's API. Each fault observed, and its layer at api a cause of its phase."""
    from chaoslab.targets import engines

    # the guest's /var/lib is the host's, read-only: the list of engines used goes to a file of its own
    monkeypatch.setenv("CHAOSLAB_ENGINES", str(tmp_path / "engines.json"))
    monkeypatch.setattr(engines, "KNOWN", tmp_path / "engines.json")
    with engine_over_tcp() as url:
        scenario = tmp_path / "faults-remote.yaml"
        scenario.write_text(f"runtime: docker\nengine: {url}\n" + (LANE / "faults.yaml").read_text())
        res, report = run("faults-remote", str(scenario))
    assert res.returncode in (0, 1), res.stderr[-3000:]
    v = verdicts(report)
    faults = {f["kind"]: f for p in report["phases"] for f in p["faults"]}
    record("faults-remote", {"verdicts": v, "mechanisms": mechanisms(report)})
    assert "chaoslab's helper on the Docker engine" in res.stderr
    assert "netem" in faults["network"]["mechanism"] and "engine's host" in faults["network"]["mechanism"]
    assert all(f["observed"] for f in faults.values()), faults
    for phase, layer in {"slow-write": "syscall", "cpu-limit": "cpu", "paused": "cpu"}.items():
        assert (layer, "api") in v[phase]["causes"], (phase, v[phase])
    # the network layer is not timed between the load and a remote engine's target: said why
    [net] = [x for x in report["verdicts"] if x["phase"] == "net-delay"]
    assert net["status"] == "inconclusive" and "on one kernel" in net["reason"], net
    assert not [d for d in CGROUP_ROOT.iterdir() if d.name.startswith("chaoslab-")]


ECHO = """
import socket, sys, threading
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], 9000))
s.listen(64)
def serve(c):
    while d := c.recv(64):
        c.sendall(d)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
"""


def test_netem_behind_the_syn_match_delays_connects_not_kept_connections(in_guest: None) -> None:
    """`packets: syn` with sch_netem: the u32 match on the TCP flags byte sends only the SYN-ACKs
    to the netem class, so new connections' connects pay the delay and a kept connection's round
    trips do not. Two namespaces and their veth, made as a run makes its targets' links."""
    a, b = netns.peer_link("lane-a", "lane-b", "v", netns.free_subnet_index(), 0)

    def times() -> tuple[float, float]:
        """Median ms of 5 connects, and of 5 round trips on one kept connection, from lane-a."""

        def there() -> tuple[float, float]:
            connects, trips = [], []
            for _ in range(5):
                t = time.perf_counter()
                socket.create_connection((b.local_ip, 9000), timeout=5).close()
                connects.append(time.perf_counter() - t)
            with socket.create_connection((b.local_ip, 9000), timeout=5) as c:
                c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                for _ in range(5):
                    t = time.perf_counter()
                    c.sendall(b"x")
                    c.recv(64)
                    trips.append(time.perf_counter() - t)
            return statistics.median(connects) * 1000, statistics.median(trips) * 1000

        return netns.call_in("lane-a", there)

    tree = ShapingTree(
        "lane-b",
        b.local_if,
        ("netem", "limit", "100000", "delay", "100000us"),
        (),
        (("match", "ip", "dst", f"{a.local_ip}/32", "match", "ip", "protocol", "6", "0xff", *SYN_U32),),
    )
    echo = None
    try:
        netns.create("lane-a")
        netns.create("lane-b")
        netns.create_peer_link("lane-a", a)
        echo = subprocess.Popen([*netns.enter_argv("lane-b"), sys.executable, "-c", ECHO, b.local_ip])
        deadline = time.monotonic() + 30
        while True:  # the echo server is up when a connect gets through
            try:
                before = times()
                break
            except OSError:
                assert time.monotonic() < deadline, "the echo server did not start"
                time.sleep(0.2)
        tree.create()
        during = times()
        stats = tree.leaf_stats()
        tree.remove()
        after = times()
    finally:
        if echo is not None:
            echo.kill()
            echo.wait()
        netns.delete("lane-a")
        netns.delete("lane-b")
    record("netem-syn", {"before_ms": before, "during_ms": during, "after_ms": after, "leaf": stats})
    assert during[0] - before[0] > 90, (before, during)  # each connect waits for its SYN-ACK
    assert during[1] < 50 and after[0] < 50, (before, during, after)  # kept traffic, and reverted
    assert 5 <= stats.get("packets", 0) <= 8, stats  # the SYN-ACKs (and maybe a retransmitted one)
