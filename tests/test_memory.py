"""The memory fault and the memory layer: a cgroup's memory limit lowered under a load whose
page cache no longer fits, verified by the cgroup's counters, written back byte for byte;
its reclaim time measured per request in the threads that pay it."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from chaoslab.faults.memory import MemoryFault, MemorySpec
from chaoslab.scenario import parse_scenario
from chaoslab.targets import cgroup
from chaoslab.units import format_size, parse_size
from tests.conftest import chaoslab, story
from tests.test_targets import problems

ONE = """
name: m
targets:
  api: {service: go-api}
load: {protocol: https, target: api, path: /, rate: 10/s}
phases:
  - {name: baseline, duration: 5s}
  - {name: squeezed, duration: 5s, faults: [FAULT]}
"""


def fault(text: str) -> MemorySpec:
    spec = parse_scenario(ONE.replace("FAULT", text)).phases[1].faults[0]
    assert isinstance(spec, MemorySpec)
    return spec


def test_sizes_are_binary_as_cgroups_take_them() -> None:
    assert parse_size("64MiB") == parse_size("64m") == parse_size("64 Mi") == 64 << 20
    assert parse_size("1.5g") == 3 << 29 and parse_size("512k") == 512 << 10 and parse_size("100b") == 100
    for bad in ("64", "lots", "-1MiB", 64, "1TB"):
        with pytest.raises(ValueError, match="is not a size"):
            parse_size(bad)
    assert format_size(40 << 20) == "40 MiB" and format_size(1536) == "1.5 KiB"


def test_a_limit_is_a_size_or_a_share_of_the_usage() -> None:
    assert fault("{kind: memory, target: api, limit: 48MiB}").limit == 48 << 20
    spec = fault("{kind: memory, target: api, limit: 60%, over: 10s}")
    assert (spec.limit, spec.share, spec.over) == (0, 0.6, 10.0)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("{kind: memory, target: api}", "phases[1].faults[0].limit: is required"),
        ("{kind: memory, target: api, limit: 1MiB}", "phases[1].faults[0].limit: at least 4 MiB, got '1MiB'"),
        (
            "{kind: memory, target: api, limit: 100%}",
            "phases[1].faults[0].limit: a share of the usage is above",
        ),
        ("{kind: memory, target: api, limit: lots}", "phases[1].faults[0].limit: 'lots' is not a size"),
        ("{kind: memory, target: api, limit: 64MiB, over: -1s}", "phases[1].faults[0].over:"),
        ("{kind: memory, target: api, limit: 64MiB, swap: 0}", "phases[1].faults[0].swap: unknown key"),
    ],
)
def test_bad_memory_faults_are_named_by_their_path(text: str, expected: str) -> None:
    found = problems(ONE.replace("FAULT", text))
    assert any(expected in p for p in found), found


def test_two_memory_limits_on_one_target_in_a_phase_are_refused() -> None:
    two = "{kind: memory, target: api, limit: 64MiB}, {kind: memory, target: api, limit: 32MiB}"
    found = problems(ONE.replace("FAULT", two))
    assert any("memory limit of api is already faulted" in p for p in found), found


@pytest.mark.parametrize("layout", ["v1", "v2"])
def test_the_counters_read_on_either_layout(tmp_path: Path, layout: str) -> None:
    """The files as the kernel writes them (v1: failcnt, memory.stat's rss/cache/pgpgout; v2:
    memory.events, memory.stat's anon/file/pgsteal, memory.pressure)."""
    if layout == "v1":
        (tmp_path / "memory.failcnt").write_text("17\n")
        (tmp_path / "memory.stat").write_text(
            "cache 4096\nrss 8192\npgpgout 40\npgmajfault 3\ntotal_rss 8192\n"
        )
        (tmp_path / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 1\n")
        expected = {"limit_hits": 17, "oom_kills": 1, "reclaimed": 40, "anon": 8192, "file": 4096}
    else:
        (tmp_path / "memory.events").write_text("low 0\nhigh 0\nmax 17\noom 1\noom_kill 1\n")
        (tmp_path / "memory.stat").write_text("anon 8192\nfile 4096\npgsteal 40\npgmajfault 3\n")
        (tmp_path / "memory.pressure").write_text(
            "some avg10=0.00 avg60=0.00 avg300=0.00 total=1234\n"
            "full avg10=0.00 avg60=0.00 avg300=0.00 total=9\n"
        )
        expected = {
            "limit_hits": 17,
            "oom_kills": 1,
            "reclaimed": 40,
            "anon": 8192,
            "file": 4096,
            "stall_us": 1234,
        }
    assert cgroup.memory_counters(tmp_path) == expected | {"major_faults": 3}


def test_recover_writes_the_journaled_limit_back(tmp_path: Path) -> None:
    (tmp_path / "memory.max").write_text("41943040\n")
    done = MemoryFault.recover({"dir": str(tmp_path), "previous": "max"})
    assert done == [f"restored the memory limit max on {tmp_path}"]
    assert (tmp_path / "memory.max").read_text() == "max\n"
    assert MemoryFault.recover({"dir": str(tmp_path), "previous": "max"}) == []  # nothing left to undo


# -- on this machine's cgroups ---------------------------------------------------------------------

PRESET = 900 << 20  # the limit the service's own cgroup has, as a container's would

ATTACHED = """\
name: memory-attached
targets:
  api: {{attach: {{pid: {pid}}}, ports: {{http: {port}}}, health: {{http: /healthz}}}}
load:
  {{protocol: http, target: api, path: "/work?work=20&read=128&alloc=262144", rate: 40/s, concurrency: 32}}
phases:
  - {{name: baseline, duration: 6s}}
  - {{name: squeezed, duration: 8s, faults: [{{kind: memory, target: api, limit: 40MiB}}]}}
  - {{name: recovery, duration: 4s}}
expect:
  - {{phase: squeezed, absorbed_by: [{{layer: memory, target: api}}, {{layer: syscall, target: api}}]}}
"""


@pytest.fixture
def own_cgroup(root: None) -> Iterator[Callable[[int], Path]]:
    """A cgroup of the test's own (every controller chaoslab uses, v1 or v2) with a memory limit
    set; yields a function that moves a process into it and returns its memory directory."""
    made: list[Path] = []
    name = f"cltest-mem-{os.getpid()}"

    def enter(pid: int) -> Path:
        dirs = cgroup.Cgroup.create(name).dirs
        made.extend(dirs)
        for d in dirs:
            (d / "cgroup.procs").write_text(f"{pid}\n")
        mem = cgroup.memory_dir(dirs)
        cgroup.write_memory_limit(mem, str(PRESET))
        return mem

    yield enter
    if made:  # what is left inside is stopped, then the directories go
        cgroup.Cgroup(name, tuple(made)).remove()


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_memory_limit_under_page_cache_reads_shows_as_memory_and_is_written_back_exactly(
    tmp_path: Path,
    go_api: Callable[[], tuple[int, int]],
    own_cgroup: Callable[[int], Path],
) -> None:
    pid, port = go_api()
    mem = own_cgroup(pid)
    before = cgroup.read_memory_limit(mem)
    assert int(before) == PRESET
    scenario = tmp_path / "memory.yaml"
    scenario.write_text(ATTACHED.format(pid=pid, port=port))
    out = tmp_path / "run"
    res = chaoslab("run", str(scenario), "--out", str(out))
    # the limit the service's cgroup had is back, byte for byte
    assert cgroup.read_memory_limit(mem) == before
    assert res.returncode == 0, story(res)
    import json

    r = json.loads((out / "report.json").read_text())
    [f] = next(p for p in r["phases"] if p["name"] == "squeezed")["faults"]
    assert f["kind"] == "memory" and f["observed"], f
    m = f["measured"]
    assert m["limit_bytes"] == 40 << 20 and m["usage_at_apply_bytes"] > 64 << 20, m
    assert m["limit_hits"] > 100 and m["usage_bytes"] <= 40 << 20, m
    [v] = r["verdicts"]
    assert v["status"] == "absorbed", v["reason"]
    # both causes are the memory fault's: the reclaim, and the evicted pages read again
    causes = {(c["layer"], c["target"]): c for c in v["causes"]}
    for key in (("memory", "api"), ("syscall", "api")):
        assert causes[key]["added_ms"] > 0 and causes[key]["faults"][0]["kind"] == "memory", v["causes"]
    rows = {
        (x["phase"], x["metric"]): x for x in r["layers"] if x["layer"] == "memory" and x["target"] == "api"
    }
    assert rows[("squeezed", "memcg reclaim")]["count"] > 100
    assert rows.get(("baseline", "memcg reclaim"), {"count": 0})["count"] < 10
    assert subprocess.run(["kill", "-0", str(pid)]).returncode == 0  # the service lived through it


def until(check: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def test_a_gradual_limit_steps_down_and_never_undoes_a_restore(tmp_path: Path) -> None:
    """The stepper on a cgroup's files (v1 names): it steps from the usage to the goal, and when
    someone else writes the limit (the watchdog or `recover` putting the previous one back),
    it stops there instead of writing over them."""
    from types import SimpleNamespace

    from chaoslab.faults.memory import PAGE, STEP

    files = {"memory.limit_in_bytes": "9223372036854771712", "memory.usage_in_bytes": str(100 << 20)}
    files |= {"memory.failcnt": "0", "memory.stat": "rss 1\ncache 1\npgpgout 0\npgmajfault 0\n"}
    for name, text in files.items():
        (tmp_path / name).write_text(text + "\n")
    spec = fault("{kind: memory, target: api, limit: 40MiB, over: 2s}")
    target = SimpleNamespace(name="api", cgroup=SimpleNamespace(dirs=(tmp_path,)))
    f = MemoryFault(spec, target)  # type: ignore[arg-type]
    f._dir = tmp_path  # the fake cgroup's memory directory
    f.previous = "9223372036854771712"
    limit = tmp_path / "memory.limit_in_bytes"
    f.apply(lambda **_: None)
    assert int(limit.read_text()) == 100 << 20  # from the usage
    assert until(lambda: int(limit.read_text()) < 100 << 20)
    stepped = int(limit.read_text())
    assert 40 << 20 < stepped < 100 << 20 and stepped % PAGE == 0
    with f._lock:  # between two steps, as the watchdog's write would land
        limit.write_text(f.previous + "\n")  # restored from outside
    assert until(lambda: f.stopped != "")
    assert f.stopped == "the limit was changed from outside"
    time.sleep(STEP * 2)
    assert limit.read_text().strip() == f.previous  # left alone
    f.revert()
    assert limit.read_text().strip() == f.previous


def test_a_gradual_limit_reaches_its_goal(tmp_path: Path) -> None:
    from types import SimpleNamespace

    for name, text in {
        "memory.limit_in_bytes": "max",
        "memory.usage_in_bytes": str(50 << 20),
        "memory.failcnt": "0",
        "memory.stat": "rss 1\n",
    }.items():
        (tmp_path / name).write_text(text + "\n")
    spec = fault("{kind: memory, target: api, limit: 60%, over: 0.6s}")
    f = MemoryFault(spec, SimpleNamespace(name="api", cgroup=SimpleNamespace(dirs=(tmp_path,))))  # type: ignore[arg-type]
    f._dir, f.previous = tmp_path, "max"
    f.apply(lambda **_: None)
    assert until(lambda: f._stepper is not None and not f._stepper.is_alive())
    assert int((tmp_path / "memory.limit_in_bytes").read_text()) == f.goal == (30 << 20)
    assert "limit 30 MiB" in f.verify().detail
    f.revert()
    assert (tmp_path / "memory.limit_in_bytes").read_text() == "max\n"
