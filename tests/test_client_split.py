"""The client split: a request's time from due to answered, in parts that add up (late, connect,
TLS handshake, send, wait for the response's head, receive), and where a fault's added time went."""

from __future__ import annotations

import math
import subprocess
import sys
from collections.abc import Callable

import pytest

from chaoslab.analysis import client
from chaoslab.analysis.tally import Tally
from chaoslab.load.records import PARTS, REQUEST, SPLIT, RecordStream
from tests.conftest import REPO, ScenarioRun, story


def test_a_split_entry_times_the_request_after_it_and_its_parts_add_up() -> None:
    data = SPLIT.pack(3, 0.001, 0.002, 0.0005, 0.010)
    data += REQUEST.pack(0, 100.0, 100.0004, 100.0144, 200, 0, 0, 1)
    data += REQUEST.pack(0, 101.0, 101.0, 101.002, 200, 0, 0, 1)  # not timed in parts (gRPC, TCP)
    stream = RecordStream(["a"])
    # fed a byte at a time: an entry cut short waits for the rest, the split with it
    got = [r for i in range(len(data)) for r in stream.feed(data[i : i + 1])]
    timed, untimed = got
    parts = timed.parts()
    assert parts is not None and untimed.parts() is None
    late, connect, tls, send, wait, receive = parts
    assert late == pytest.approx(0.0004) and connect == pytest.approx(0.001) and tls == pytest.approx(0.002)
    assert (send, wait) == (pytest.approx(0.0005), pytest.approx(0.010))
    assert receive == pytest.approx(0.0144 - 0.0004 - 0.0135, abs=1e-6)
    assert math.fsum(parts) == pytest.approx(timed.latency, abs=1e-9)
    row = client.client_row("p", Tally.of(got), 1.0)
    assert row.split_requests == 1 and list(row.split_ms) == list(PARTS)
    assert sum(row.split_ms.values()) == pytest.approx(timed.latency * 1000, abs=1e-3)
    assert row.sent_p50_ms == pytest.approx(0.0)  # over both, 0.4 ms and 0: the first of two (q * n)


def _mean_latency_ms(res: ScenarioRun, phase: str) -> float:
    """The phase's mean latency over its answered requests: its histogram's sum and count."""
    hist = res.report["histograms"]["phases"][phase]
    return hist["sum_ns"] / sum(hist["buckets"].values()) / 1e6


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_an_entropy_fault_lands_in_the_tls_handshake_and_a_syn_delay_in_connect(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("split_tls")
    assert res.returncode == 0, story(res)
    rows = {c["phase"]: client.ClientRow(**c) for c in res.report["client"] if not c["name"]}
    for phase, row in rows.items():
        # every answered request was timed in parts, each on a new connection (Connection: close)
        assert row.split_requests == row.requests - row.errors > 50, row
        split = row.split_ms
        assert split["connect"] > 0 and split["tls"] > 0, split
        # the parts' means add up to the mean latency, within their rounding
        assert sum(split.values()) == pytest.approx(_mean_latency_ms(res, phase), abs=0.001), split
    base, starve = rows["baseline"], rows["starve"]
    change = starve.split_change(base)
    assert change is not None
    added, part, share = change
    # a 10 ms hold on each of the handshake's reads of randomness: all of it in the handshake
    assert part == "tls" and share > 0.9 and added > 10, (added, part, share)
    assert starve.split_ms["wait"] - base.split_ms["wait"] < 0.1 * added
    assert "% in TLS" in " ".join(res.stdout.split())
    # 20 ms on each of the service's SYN-ACKs, nothing on the rest of its packets: all of it
    # in connect, none in the handshake's or the request's round trips
    change = rows["syn"].split_change(base)
    assert change is not None
    added, part, share = change
    assert part == "connect" and share > 0.9 and added == pytest.approx(20, rel=0.25), change
    for other in ("tls", "wait"):
        assert rows["syn"].split_ms[other] - base.split_ms[other] < 0.1 * added, rows["syn"].split_ms
    [net] = [f for p in res.report["phases"] if p["name"] == "syn" for f in p["faults"]]
    assert net["observed"] and "SYN packets only" in net["mechanism"], net


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_network_delay_on_kept_connections_lands_in_wait(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    res = scenario_run("net_delay")  # the run test_faults reads
    assert res.returncode == 0, story(res)
    rows = {c["phase"]: client.ClientRow(**c) for c in res.report["client"] if not c["name"]}
    for row in rows.values():
        # connections are opened before the load and kept: no connect or handshake on the clock
        assert row.split_ms["connect"] == row.split_ms["tls"] == 0, row.split_ms
    change = rows["slow"].split_change(rows["baseline"])
    assert change is not None
    added, part, share = change
    assert part == "wait" and share > 0.8 and added == pytest.approx(40, rel=0.25), change


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_the_peer_bench_puts_both_tools_on_the_delay_alike() -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "bench" / "peer_latency.py"), "--seconds", "4", "--rate", "30"],
        capture_output=True, text=True, timeout=300, cwd=REPO,
    )  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]  # the bench's own table
    rows = {}
    for line in res.stdout.splitlines():
        words = line.split()
        if words and words[0] in ("baseline", "delay", "recovery"):
            rows[words[0]] = [float(w) for w in words[1:] if w != "/"]
    assert list(rows) == ["baseline", "delay", "recovery"], res.stdout
    # columns: ours p50/p99 from due, from sent, late p50/p99, the peer's p50/p99, ratios
    ours_sent_p50, peer_p50 = rows["delay"][2], rows["delay"][6]
    # under a 30 ms delay both tools pay it: from their sends, the same latency within the jitter
    assert 0.8 < ours_sent_p50 / peer_p50 < 1.25, res.stdout
    assert peer_p50 > 20 and rows["baseline"][6] < 10, res.stdout
    assert "vegeta's errors in the phases: 0" in res.stdout


def test_where_the_added_time_went_is_a_share_of_what_moved_with_it() -> None:
    def row(**split: float) -> client.ClientRow:
        parts = dict.fromkeys(PARTS, 0.0) | split
        return client.ClientRow("p", 1, 0, 1.0, 1, 1, 1, 1, 0, split_requests=1, split_ms=parts)

    base = row(late=1.0, wait=1.0)
    assert row(late=1.0, wait=31.0).split_change(base) == (30.0, "wait", 1.0)
    # the wait grew 2 ms while the lateness fell 1.5: all of the growth is the wait's, not 400%
    added, part, share = row(late=-0.5, wait=3.0).split_change(base) or (0.0, "", 0.0)
    assert (added, part, share) == (pytest.approx(0.5), "wait", 1.0)
    assert row(late=1.0, wait=0.5, tls=1.5).split_change(base) == (1.0, "tls", 1.0)
    assert base.split_change(client.ClientRow("p", 1, 0, 1.0, 1, 1, 1, 1, 0)) is None
