"""The load engine: its schedule and records (unit), and on real targets through the CLI a
mixed HTTP/HTTPS/gRPC run, a 1 s freeze under the open model, a closed-model ramp over two
workers, and throughput that scales with a second worker."""

from __future__ import annotations

import ast
import itertools
import json
import math
import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab.analysis import client
from chaoslab.analysis.tally import RunTally, Tally
from chaoslab.hist import FineHistogram
from chaoslab.load.records import (
    READY,
    REQUEST,
    RecordStream,
    RecordWriter,
    Request,
    error_entry,
    quantile,
    read_records,
)
from chaoslab.load.schedule import Profile
from chaoslab.scenario import ScenarioError, parse_scenario
from tests.conftest import REPO, ScenarioRun, story

# --- the schedule -------------------------------------------------------------------------


def test_constant_rate_arrivals_are_exact() -> None:
    due = list(itertools.islice(Profile(40).arrivals(), 401))
    assert due[0] == 0.0 and due[1] == pytest.approx(0.025) and due[400] == pytest.approx(10.0)


def test_a_ramp_follows_the_integral_of_the_rate() -> None:
    # 0 -> 100/s over 10 s is 500 arrivals, packed towards the end: half of them after t = 7.07 s
    due = list(itertools.takewhile(lambda t: t < 10, Profile(0, [(10, 100)]).arrivals()))
    assert len(due) == 500
    assert due[250] == pytest.approx(10 * math.sqrt(0.5), abs=0.01)
    assert all(b > a for a, b in itertools.pairwise(due))
    # after the last stage the rate holds
    held = list(itertools.takewhile(lambda t: t < 11, Profile(0, [(10, 100)]).arrivals()))
    assert len(held) == 600


def test_a_ramp_to_zero_stops_arrivals() -> None:
    due = list(itertools.takewhile(lambda t: t < 60, Profile(100, [(5, 100), (5, 0)]).arrivals()))
    assert len(due) == 750 and due[-1] < 10


def test_workers_split_one_schedule_without_overlap() -> None:
    whole = list(itertools.takewhile(lambda t: t < 10, Profile(10, [(10, 90)]).arrivals()))
    parts = [
        list(itertools.takewhile(lambda t: t < 10, Profile(10, [(10, 90)]).arrivals(i, 3))) for i in range(3)
    ]
    assert sorted(itertools.chain(*parts)) == whole


def test_profile_value_ramps_then_holds() -> None:
    p = Profile(2, [(4, 10), (2, 10)])
    assert [p.value_at(t) for t in (0, 2, 4, 5, 100)] == [2, 6, 10, 10, 10]


# --- records and the client's summary ----------------------------------------------------


def test_records_tell_a_busy_target_from_a_slow_generator() -> None:
    busy, slow = RecordStream(["page"]).feed(
        REQUEST.pack(0, 10.0, 10.5, 10.6, 200, 0, 0, False)
        + REQUEST.pack(0, 10.0, 10.5, 10.6, 200, 0, 0, True)
    )
    assert busy.latency == pytest.approx(0.6) and busy.late == pytest.approx(0.5)
    assert busy.is_late and not busy.generator_late
    assert slow.generator_late


def test_records_stream_keeps_every_bit_and_waits_for_cut_entries() -> None:
    t = 1796213713.9765113  # finer than a microsecond: the double is kept as the clock gave it
    data = (
        READY
        + READY
        + REQUEST.pack(0, t, t + 1e-6, t + 0.25, 200, 1, 0, True)
        + error_entry("http-503")
        + REQUEST.pack(0, t, t, t + 0.5, 503, 0, 1, False)
        + error_entry("ConnectionRefusedError")
        + REQUEST.pack(0, t, t, t, 0, 1, 2, True)
    )
    stream = RecordStream(["a", "b"])
    got = []
    for i in range(0, len(data), 7):  # in pieces that cut entries anywhere
        got += stream.feed(data[i : i + 7])
    assert stream.ready == 2
    assert got == [
        Request(t, t + 1e-6, t + 0.25, 200, "b", "", True),
        Request(t, t, t + 0.5, 503, "a", "http-503", False),
        Request(t, t, t, 0, "b", "ConnectionRefusedError", True),
    ]
    with pytest.raises(ValueError, match="not a records file"):
        RecordStream(["a"]).feed(b"ready\n")


def test_records_are_written_deflated_and_read_as_flushed(tmp_path: Path) -> None:
    import gzip

    t = 1796213713.9765113
    entries = [REQUEST.pack(0, t + i, t + i, t + i + 0.01 * (i % 7), 200, i % 2, 0, 1) for i in range(3000)]
    path = tmp_path / "requests-0.bin"
    writer = RecordWriter(str(path))
    writer.write(READY)
    for e in entries[:2000]:
        writer.write(e)
    writer.flush()
    flushed = path.read_bytes()
    assert flushed.startswith(b"\x1f\x8b") and len(flushed) < len(READY + b"".join(entries[:2000])) / 2
    for e in entries[2000:]:
        writer.write(e)
    # a process killed here: what it flushed reads, in pieces cut anywhere, the rest is lost
    stream, got = RecordStream(["a", "b"]), []
    for i in range(0, len(flushed), 5):
        got += stream.feed(flushed[i : i + 5])
    assert stream.ready == 1 and len(got) == 2000
    assert got[1999] == Request(t + 1999, t + 1999, t + 1999 + 0.01 * (1999 % 7), 200, "b", "", True)
    writer.finish()
    assert len(read_records(path, ["a", "b"])) == 3000
    assert gzip.decompress(path.read_bytes()) == READY + b"".join(entries)  # zcat reads it
    # a request recorded after the finish starts a second member, as does a second process
    # appending to the same file: every member reads
    writer.write(entries[0])
    writer.close()
    second = RecordWriter(str(path))
    second.write(entries[1])
    second.close()
    assert len(read_records(path, ["a", "b"])) == 3002
    assert gzip.decompress(path.read_bytes()) == READY + b"".join(entries) + entries[0] + entries[1]
    # entries as they are, unpacked: read as before
    raw = tmp_path / "raw.bin"
    raw.write_bytes(b"".join(entries[:10]))
    assert len(read_records(raw, ["a", "b"])) == 10
    ready = RecordStream(["a"])
    ready.feed(READY)  # one byte is enough to tell
    assert ready.ready == 1


def test_generator_is_flagged_for_cpu_or_idle_late_sends() -> None:
    reqs = [
        Request(i * 0.01, i * 0.01 + (0.02 if i < 10 else 0), i * 0.01 + 0.03, 200, "a", "", True)
        for i in range(100)
    ]
    row = client.client_row("p", Tally.of(reqs), 1.0)
    assert row.generator_late == 10 and row.late == 10
    flagged = client.generator("open", 1, [row], {"p": (0.2, 0.3)})
    assert flagged.saturated and "sent late" in flagged.reasons[0]
    on_time = [client.client_row("p", Tally.of(reqs[10:]), 1.0)]
    busy_cpu = client.generator("open", 1, on_time, {"p": (0.95, None)})
    assert busy_cpu.saturated and "0.95 cores" in busy_cpu.reasons[0]
    # below 0.9 cores, but its threads waited for a CPU the targets held: it could not run more
    starved = client.generator("closed", 1, on_time, {"p": (0.78, 0.3)})
    assert (
        starved.saturated and "used 0.78 cores in phase p and its threads waited 0.30" in starved.reasons[0]
    )
    assert starved.wait_by_phase == {"p": 0.3} and starved.cpu_by_phase == {"p": 0.78}
    fine = client.generator("open", 1, on_time, {"p": (0.5, 0.2)})
    assert not fine.saturated and fine.reasons == []
    unknown = client.generator("open", 1, on_time, {"p": (0.5, None)})
    assert not unknown.saturated and unknown.wait_by_phase == {}


def test_client_row_has_three_significant_digits_and_errors_by_kind() -> None:
    reqs = [Request(0, 0, (i + 1) / 1000, 200, "a", "") for i in range(1000)]
    reqs += [Request(0, 0, 1, 0, "a", "grpc-UNAVAILABLE"), Request(0, 0, 1, 503, "a", "http-503")]
    row = client.client_row("p", Tally.of(reqs), 2.0)
    # the quantiles at HdrHistogram's rank (q * n: the 500th of 1,000 values), to three
    # significant digits; the maximum exact
    for got, value in ((row.p50_ms, 500), (row.p99_ms, 990), (row.p999_ms, 999)):
        assert got == pytest.approx(value, rel=0.001), (got, value)
    assert row.max_ms == 1000.0
    assert row.errors_by_kind == {"grpc-UNAVAILABLE": 1, "http-503": 1} and row.rate == 501.0
    assert row.requests == 1002 and row.errors == 2


def test_fine_histogram_keeps_three_significant_digits() -> None:
    values = [int(v * 1e6) for v in range(1, 20001)]  # 1 ms .. 20 s
    h = FineHistogram.of(values)
    exact = sorted(values)
    for q in (0.5, 0.9, 0.99, 0.999):
        assert h.quantile_ns(q) == pytest.approx(quantile(exact, q), rel=0.001)
    assert h.to_json()["sub_bits"] == 10


def test_timeline_groups_by_second_of_due_time() -> None:
    reqs = [Request(100 + i * 0.1, 100 + i * 0.1, 100 + i * 0.1 + 0.002, 200, "a", "") for i in range(30)]
    run = RunTally([], 100.0)
    run.add_all(reqs)
    rows, hists = client.seconds(run.by_second, 100.0, [("a", 100.0, 102.0), ("b", 102.0, 103.0)])
    assert [(r.second, r.phase, r.requests) for r in rows] == [(0, "a", 10), (1, "a", 10), (2, "b", 10)]
    assert len(hists) == 3 and {h["sub_bits"] for h in hists} == {5}


# --- the load section's validation --------------------------------------------------------

BASE = """
name: s
targets:
  api: {service: go-api}
  edge: {service: envoy, upstream: api}
phases:
  - {name: baseline, duration: 5s}
"""


def problems(load: str, extra: str = "") -> str:
    with pytest.raises(ScenarioError) as info:
        parse_scenario(BASE + load + extra)
    return str(info.value)


@pytest.mark.parametrize(
    ("load", "expected"),
    [
        (
            "load: {target: api, path: /w, rate: 10/s, users: 5}",
            "load.users: give 'rate' (open model) or 'users'",
        ),
        ("load: {target: api, path: /w, rate: 10/s, think: 1s}", "load.think: is for the closed model"),
        (
            "load: {target: api, path: /w, users: 4, concurrency: 8}",
            "load.concurrency: is for the open model",
        ),
        (
            "load: {target: api, path: /w, rate: 10/s, concurrency: 1, workers: 2}",
            "load.concurrency: must be at least",
        ),
        ("load: {target: api, path: /w, rate: 10/s, workers: 0}", "load.workers"),
        (
            "load: {target: api, rate: 10/s, requests: [{name: a, protocol: grpc, path: /w}]}",
            "load.requests[0].path: is for HTTP requests, this one is grpc",
        ),
        (
            "load: {target: api, rate: 10/s, requests: [{name: a, protocol: grpc, rpc: Get}]}",
            "load.requests[0].rpc",
        ),
        (
            "load: {target: api, rate: 10/s, requests: [{name: a, protocol: grpc, rpc: Do, messages: 3}]}",
            "load.requests[0].messages: only a Stream call has several replies",
        ),
        (
            "load: {target: api, rate: 10/s, requests: [{name: a, path: /w, work: 3}]}",
            "load.requests[0].work: is for gRPC requests",
        ),
        (
            "load: {target: api, rate: 10/s, requests: [{name: a, path: /w, target: db}]}",
            "load.requests[0].target: unknown target 'db'",
        ),
        (
            "load: {target: api, path: /w, rate: 10/s, stages: [{duration: 9s, rate: 20/s}]}",
            "load.stages: the stages last 9s but the phases only 5s",
        ),
        (
            "load: {target: api, path: /w, rate: 10/s, stages: [{duration: 2s, users: 20}]}",
            "load.stages[0].users: the open model's stages ramp 'rate'",
        ),
        (
            "load: {target: api, path: /w, users: 2, stages: [{duration: 2s}]}",
            "load.stages[0].users: is required",
        ),
    ],
)
def test_bad_load_is_reported_with_its_path(load: str, expected: str) -> None:
    assert expected in problems(load)


def test_probes_must_name_probed_layers() -> None:
    found = problems("load: {target: api, path: /w, rate: 10/s}\n", "probes: [cpu, disk]\n")
    assert "probes[1]: 'disk' is not a probed layer" in found


def test_a_full_mix_parses() -> None:
    s = parse_scenario(
        BASE
        + """
load:
  target: edge
  rate: 10/s
  stages: [{duration: 2s, rate: 50/s}, {duration: 3s, rate: 50/s}]
  workers: 2
  requests:
    - {name: page, path: /work, weight: 3}
    - {name: plain, protocol: http, path: /work}
    - {name: call, protocol: grpc, target: api}
    - {name: feed, protocol: grpc, rpc: Stream, work: 5}
probes: [network, cpu]
"""
    )
    load = s.load
    assert (load.model, load.workers, load.peak) == ("open", 2, 50.0)
    calls = [
        (r.name, r.protocol, r.target, r.grpc.method if r.grpc else "", r.grpc.replies if r.grpc else 0)
        for r in load.requests
    ]
    assert calls == [
        ("page", "https", "edge", "", 0),
        ("plain", "http", "edge", "", 0),
        ("call", "grpc", "api", "chaoslab.work.v1.Work/Do", 0),
        ("feed", "grpc", "edge", "chaoslab.work.v1.Work/Stream", 10),
    ]
    # the shorthand is the go-api's Work API, described by its .proto (through Envoy: its upstream's)
    call, feed = load.requests[2].grpc, load.requests[3].grpc
    assert call is not None and feed is not None
    assert (call.message, feed.message) == ('{"work": 20}', '{"work": 5, "messages": 10}')
    assert call.protos == feed.protos == (str(REPO / "docker" / "go-api" / "work.proto"),)
    assert (call.protos_from, feed.protos_from) == ("targets.api.protos", "targets.api.protos")
    assert s.probes == ("network", "cpu")


# --- on real targets -----------------------------------------------------------------------


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_http_https_and_grpc_in_one_mix(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("mixed")
    assert res.returncode == 0, story(res)
    r = res.report
    rows = {(c["phase"], c["name"]): c for c in r["requests"]}
    names = {"page": "https", "plain": "http", "unary": "grpc", "stream": "grpc", "direct": "grpc"}
    for phase in ("baseline", "delay"):
        for name, protocol in names.items():
            row = rows[(phase, name)]
            assert row["protocol"] == protocol
            assert row["requests"] >= 20 and row["errors"] == 0, row
    # the delay is on the Go service's link to Envoy: what goes through Envoy pays it, the
    # gRPC calls straight at the Go service do not
    for name in ("page", "plain", "unary", "stream"):
        assert rows[("delay", name)]["p50_ms"] - rows[("baseline", name)]["p50_ms"] > 15, name
    assert rows[("delay", "direct")]["p50_ms"] - rows[("baseline", "direct")]["p50_ms"] < 5
    [v] = r["verdicts"]
    assert (v["status"], v["layer"], v["target"]) == ("absorbed", "network", "api"), v["reason"]
    # gRPC calls are app time too (grpc-go's handler), beside net/http's
    app = {row["metric"] for row in r["layers"] if row["layer"] == "app" and row["count"]}
    assert {"http", "grpc"} <= app
    for name in names:
        assert f"{name} ({names[name]})" in res.stdout


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_open_model_shows_a_one_second_freeze_in_p99_and_counts_late_requests(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("freeze")
    assert res.returncode in (0, 1), res.stderr[-3000:]
    r = res.report
    rows = {c["phase"]: c for c in r["client"]}
    frozen = rows["frozen"]
    # 200/s into a 1 s freeze: requests due at t wait 1 - t, so the phase's latencies are
    # spread over (0, 1 s]: p50 about 500 ms, p99 about 990 ms, max about 1 s. The phase is
    # measured once the freeze is in place (a few ms after its scheduled start).
    [phase] = [p for p in r["phases"] if p["name"] == "frozen"]
    assert 0 <= phase["settle_s"] < 0.1
    # every 5 ms due in the window is counted: one arrival either way at each edge (the window's
    # bounds are kept to the millisecond, the schedule's arrivals are not)
    assert abs(frozen["requests"] - 200 * (phase["end"] - phase["start"])) <= 2
    assert frozen["p50_ms"] > 400
    assert frozen["p99_ms"] > 0.9 * 990
    assert 950 < frozen["max_ms"] < 1500
    # 32 users can hold 32 requests; the other ~168 are sent late, and counted
    assert frozen["late"] >= 140
    # ... because every user was busy, not because the generator was slow
    assert frozen["generator_late"] <= 5
    assert not r["generator"]["saturated"], r["generator"]
    # at rest, a stall of the machine may make a few sends late, never 5% of them (the rule the
    # report's saturation check applies)
    base = rows["baseline"]
    assert base["late"] <= max(5, 0.05 * base["requests"]) and base["p99_ms"] < 100, base
    # what a generator that measured from the send would have recorded (coordinated omission)
    sent = sorted(
        q.end - q.sent
        for q in read_records(res.out / "work" / "requests-0.bin")
        if r["phases"][1]["start"] <= q.due < r["phases"][1]["end"]
    )
    assert quantile(sent, 0.5) * 1000 < 0.5 * frozen["p50_ms"]


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_closed_model_ramps_users_over_two_workers(scenario_run: Callable[[str], ScenarioRun]) -> None:
    res = scenario_run("closed_ramp")
    assert res.returncode == 0, story(res)
    r = res.report
    assert (r["generator"]["model"], r["generator"]["workers"]) == ("closed", 2)
    per_second = [t["requests"] for t in r["timeline"]]
    # 2 users thinking 100 ms: about 20/s; 10 users: about 100/s
    assert per_second[0] < 40 and per_second[-2] > 70, per_second
    rows = {c["phase"]: c for c in r["client"]}
    assert rows["hold"]["rate"] > 1.5 * rows["ramp"]["rate"]
    assert rows["ramp"]["late"] == 0 and rows["hold"]["errors"] == 0
    for worker in (0, 1):  # both workers sent requests
        assert len(read_records(res.out / "work" / f"requests-{worker}.bin")) > 50


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_two_workers_reach_a_higher_rate_than_one(scenario_run: Callable[[str], ScenarioRun]) -> None:
    one, two = scenario_run("streams_1worker"), scenario_run("streams_2workers")
    rate = {}
    for res in (one, two):
        assert res.returncode in (0, 1), res.stderr[-3000:]
        [row] = res.report["client"]
        assert row["errors"] == 0
        rate[res.report["generator"]["workers"]] = row["rate"]
    assert rate[2] > 1.3 * rate[1], rate
    # one worker is the bottleneck, and the report says so
    g1 = one.report["generator"]
    assert g1["saturated"] and one.returncode == 1, g1
    assert "load generator SATURATED" in one.stdout


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine")
def test_load_rate_benchmark_prints_its_ratios() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "load_rate.py"), "--workers", "1", "--rounds", "1",
         "--seconds", "2"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ratios = r"chaoslab/locust ([\d.]+) \(per round: median ([\d.]+)\), chaoslab/wrk ([\d.]+)"
    m = re.search(ratios, res.stdout)
    assert m is not None, res.stdout
    assert 0 < float(m.group(3)) < float(m.group(1))  # wrk is the ceiling
    assert float(m.group(2)) > 0


@pytest.mark.privileged
@pytest.mark.usefixtures("clean_machine")
def test_open_model_stall_benchmark_prints_recorded_against_implied() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "open_model_stall.py"), "--rate", "100", "--freeze", "0.5"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    ratios = dict(re.findall(r"^(p50|p99|max)\s+recorded .* ratio ([\d.]+)   \|", res.stdout, re.M))
    assert set(ratios) == {"p50", "p99", "max"}, res.stdout
    assert all(0.8 < float(r) < 1.2 for r in ratios.values()), res.stdout


WIRES = """
import chaoslab.load.locustfile as L
for r in L.MIX:
    w = r.wire
    print(repr((w.key, w.server_name, w.data)))
"""


SEND = """
import socket
import gevent
from gevent import socket as gsocket
import chaoslab.load.locustfile as L
for size in (100, 4 << 20):  # one send takes it all; many sends, the buffer full between them
    a, b = gsocket.socketpair()
    a.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    data = (bytes(range(256)) * (size // 256 + 1))[:size]
    got = bytearray()
    def read():
        while len(got) < len(data):
            chunk = b.recv(65536)
            if not chunk:
                break
            got.extend(chunk)
    reader = gevent.spawn(read)
    L._send(a, data)
    reader.join(timeout=30)
    print(len(data), bytes(got) == data)
"""


def test_a_request_is_sent_whole_in_one_send_or_many(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, "-c", SEND], capture_output=True, text=True, env=_wires_env(tmp_path), cwd=REPO
    )
    assert res.returncode == 0, res.stderr
    assert res.stdout.split() == ["100", "True", str(4 << 20), "True"]


def _wires_env(tmp_path: Path) -> dict[str, str]:
    def request(name: str, base: str, path: str, method: str = "GET", headers: dict | None = None,
                body: str = "") -> dict:  # fmt: skip
        return {"name": name, "protocol": base.split(":")[0], "base": base, "weight": 1, "path": path,
                "method": method, "headers": headers or {}, "body": body, "status": 200}  # fmt: skip

    config = {
        "model": "open", "start": 1, "stages": [], "duration": 1, "think": 0, "spawn_rate": 1,
        "timeout": 5, "workers": 1, "local_workers": 1, "max_requests": 1, "split": True,
        "urls": {"https:api": "https://10.1.1.2:8443", "http:v6": "http://[::1]:8080",
                 "https:named": "https://api.example:443"},
        "host": "https://10.1.1.2:8443", "records": str(tmp_path / "r-{worker}.bin"),
        "go": str(tmp_path / "go"), "ca": {}, "warmup": {},
        "requests": [
            request("get", "https:api", "/work?x=1&y=2"),
            request("post", "http:v6", "/p", "POST", {"host": "example.org", "X-A": "1"}, "h\u00e9"),
            request("named", "https:named", "", "DELETE"),
        ],
    }  # fmt: skip
    path = tmp_path / "load.json"
    path.write_text(json.dumps(config))
    return {**os.environ, "CHAOSLAB_LOAD_CONFIG": str(path), "CHAOSLAB_ROLE": "master"}


def test_an_http_request_is_built_once_as_the_bytes_it_is_sent_as(tmp_path: Path) -> None:
    env = _wires_env(tmp_path)
    res = subprocess.run([sys.executable, "-c", WIRES], capture_output=True, text=True, env=env, cwd=REPO)
    assert res.returncode == 0, res.stderr
    get, post, named = (ast.literal_eval(line) for line in res.stdout.splitlines())
    assert get == (
        ("10.1.1.2", 8443, True),
        None,  # no SNI for an address
        b"GET /work?x=1&y=2 HTTP/1.1\r\nHost: 10.1.1.2:8443\r\nUser-Agent: chaoslab\r\n\r\n",
    )
    # the scenario's own Host wins, whatever its case; a body has its length in bytes
    assert post == (
        ("::1", 8080, False),
        None,
        b"POST /p HTTP/1.1\r\nhost: example.org\r\nUser-Agent: chaoslab\r\nX-A: 1\r\n"
        b"Content-Length: 3\r\n\r\nh\xc3\xa9",
    )
    assert named == (
        ("api.example", 443, True),
        "api.example",
        b"DELETE / HTTP/1.1\r\nHost: api.example:443\r\nUser-Agent: chaoslab\r\n\r\n",
    )
