"""The live page without a run: the progress model fed with requests, the server's snapshots,
several clients at once, addresses and a busy port."""

from __future__ import annotations

import concurrent.futures
import io
import socket
import threading
import time
import types
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from rich.console import Console

from chaoslab.errors import UsageError
from chaoslab.events import EventBus
from chaoslab.live import LiveView, RunProgress
from chaoslab.load.records import Request
from chaoslab.report.model import LiveStatus
from chaoslab.report.reader import read_report
from chaoslab.report.serve import Address, LivePage, parse_address
from chaoslab.scenario import load_scenario
from tests.conftest import SCENARIOS

DATA = Path(__file__).resolve().parent / "data"


def progress(page: bool = True) -> RunProgress:
    """A run's progress, with a live page following it (or none)."""
    events = EventBus()
    if page:
        events.subscribe("progress", lambda **_: None)
    ctx = types.SimpleNamespace(
        scenario=load_scenario(SCENARIOS / "short_entropy.yaml"), run_id="r" * 32, events=events
    )
    return RunProgress(ctx)  # type: ignore[arg-type]


def test_progress_bins_requests_by_due_time_into_seconds_and_phases() -> None:
    p = progress()
    t0 = 1000.0
    p.begin(t0, ["entropy: uprobes"])
    reqs = [Request(t0 + i / 40, t0 + i / 40, t0 + i / 40 + 0.005, 200, "default", "") for i in range(400)]
    reqs.append(Request(t0 + 9.0, t0 + 9.0, t0 + 9.5, 0, "default", "ConnectionRefusedError"))
    p.add(reqs)
    p.current = p.ctx.scenario.phases[1]
    p.active = ["entropy on api"]
    report, status = p.snapshot(now=t0 + 9.6)
    assert [c.phase for c in report.client] == ["baseline", "starve"]
    base, starve = report.client
    assert (base.requests, base.errors) == (320, 0)
    assert base.p50_ms == pytest.approx(5.0, rel=0.01) and base.rate == pytest.approx(40.0)
    assert (starve.requests, starve.errors, starve.errors_by_kind) == (81, 1, {"ConnectionRefusedError": 1})
    assert [r.second for r in report.timeline] == list(range(9))  # whole seconds only, 9.6 s in
    assert report.timeline[0].requests == 40 and report.timeline[0].phase == "baseline"
    assert [p.name for p in report.phases] == ["baseline", "starve", "recovery"]  # planned ones too
    assert report.phases[1].faults[0].kind == "entropy" and not report.phases[1].faults[0].mechanism
    assert (status.phase, status.faults, status.final) == ("starve", ["entropy on api"], False)
    assert status.elapsed == pytest.approx(1.6)
    # a second's row is drawn once, and again when a late request comes for it
    p.add([Request(t0 + 0.5, t0 + 0.5, t0 + 9.7, 200, "default", "")])
    again, _ = p.snapshot(now=t0 + 9.8)
    assert again.timeline[0].requests == 41 and again.timeline[0].max_ms == pytest.approx(9200, rel=0.01)
    assert again.timeline[1] is report.timeline[1]


def test_with_no_live_page_the_progress_keeps_nothing() -> None:
    p = progress(page=False)
    p.begin(1000.0, [])
    p.add([Request(1000 + i / 40, 1000 + i / 40, 1000.01 + i / 40, 200, "default", "") for i in range(400)])
    assert p.seconds == {} and p.phases == {}


def test_the_live_line_renders_while_the_tail_threads_add_requests() -> None:
    """The line's window of recent requests grows in the load's tail threads as the run loop
    renders it: at thousands of requests a second an unguarded render saw the deque change
    under it (RuntimeError: deque mutated during iteration) and ended the run."""
    ctx = types.SimpleNamespace(
        scenario=load_scenario(SCENARIOS / "short_entropy.yaml"),
        run_id="r" * 32,
        events=EventBus(),
    )
    view = LiveView(ctx, None, Console(file=io.StringIO()))  # type: ignore[arg-type]
    view.phase("baseline", time.time(), 10.0, [])
    stop = threading.Event()
    added = [0]

    def tail() -> None:  # as the tail threads do: batches of a few hundred, as fast as they come
        for _ in range(2000):
            if stop.is_set():
                return
            now = time.time()
            view._on_requests([Request(now, now, now + 0.001, 200, "default", "") for _ in range(200)])
            added[0] += 1

    threads = [threading.Thread(target=tail) for _ in range(2)]
    for t in threads:
        t.start()
    seen = []
    try:
        for _ in range(200):
            view.render()  # raised RuntimeError before the window had its lock
            seen.append(added[0])
    finally:
        stop.set()
        for t in threads:
            t.join()
    # the batches came in between renders, not all before or after them
    assert len(set(seen)) > 1, seen[:5]
    assert "req/s" in str(view.render())


def get(url: str) -> tuple[int, dict[str, str], bytes]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), b""


def test_the_server_sends_the_newest_snapshot_to_several_clients_at_once() -> None:
    page = LivePage(Address("127.0.0.1", 0), "short-entropy")
    try:
        assert page.loopback and page.url.startswith("http://127.0.0.1:")
        status, headers, body = get(page.url)
        assert status == 200 and b"The run is starting" in body and headers["X-Chaoslab-Seq"] == "0"
        report = read_report(DATA / "report_entropy.json")
        live = LiveStatus(report.started + 12, "starve", 4.0, 10.0, ["entropy on api"], final=False)
        page._on_progress(report, live)
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(get, [page.url + "fragment"] * 24))
        assert {(s, h["X-Chaoslab-Seq"], h["X-Chaoslab-Final"]) for s, h, _ in answers} == {(200, "1", "0")}
        assert all(b'id="live-phase">starve<' in b for _, _, b in answers)
        _, _, body = get(page.url)
        assert b"<script>" in body and b'data-seq="1"' in body  # the page polls
        page.finish(report)
        status, headers, body = get(page.url + "fragment")
        assert headers["X-Chaoslab-Final"] == "1" and b"starve: absorbed by entropy at api" in body
        assert get(page.url + "report.json")[0] == 404
        assert "2 snapshots rendered" in page.stats()
    finally:
        page.close()


def test_a_snapshot_that_fails_to_render_keeps_the_last_one_and_the_run_going() -> None:
    page = LivePage(Address("127.0.0.1", 0), "x")
    try:
        page._on_progress(None, None)  # type: ignore[arg-type]
        assert page.snapshot.seq == 0 and "failed to render (AttributeError" in page.stats()
    finally:
        page.close()


def test_a_busy_port_is_a_usage_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1:{port}") as err:
            LivePage(Address("127.0.0.1", port), "x")
        assert err.value.exit_code == 2


@pytest.mark.parametrize(
    ("text", "address"),
    [
        ("", Address("127.0.0.1", 8716)),
        ("127.0.0.1:8716", Address("127.0.0.1", 8716)),
        (":0", Address("127.0.0.1", 0)),
        ("9000", Address("127.0.0.1", 9000)),
        ("localhost", Address("127.0.0.1", 8716)),
        ("0.0.0.0:8080", Address("0.0.0.0", 8080)),
        ("[::1]:9000", Address("::1", 9000)),
        ("::1", Address("::1", 8716)),
    ],
)
def test_serve_addresses(text: str, address: Address) -> None:
    assert parse_address(text) == address


@pytest.mark.parametrize("text", ["example.com:80", ":http", "127.0.0.1:70000"])
def test_bad_serve_addresses(text: str) -> None:
    with pytest.raises(UsageError):
        parse_address(text)


def test_only_loopback_by_default() -> None:
    assert parse_address("").loopback and parse_address("[::1]:1").loopback
    assert not parse_address("0.0.0.0:1").loopback
