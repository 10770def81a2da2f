"""A run's memory, and the work left at its end, do not grow with its length: the requests are
counted into the analysis as they come (analysis/settle.py), never all kept."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chaoslab.live import WINDOW
from chaoslab.load.records import read_records
from chaoslab.load.runner import READ_CHUNK
from tests.conftest import chaoslab, story

SCENARIO = """\
name: held-requests
targets:
  api: {{service: go-api}}
load: {{protocol: http, target: api, path: /healthz, rate: {rate}/s, concurrency: 32}}
phases:
  - {{name: first, duration: {half}s}}
  - {{name: second, duration: {half}s}}
"""
RATE = 300


def held(tmp: Path, seconds: int) -> tuple[int, int, dict, dict]:
    """The largest number of requests alive in the run's process, the requests it recorded,
    its report, and what its live counts held back (CHAOSLAB_RECOUNT)."""
    path = tmp / f"held-{seconds}.yaml"
    path.write_text(SCENARIO.format(rate=RATE, half=seconds // 2))
    out, counts, recount = tmp / f"out-{seconds}", tmp / f"count-{seconds}.json", tmp / f"re-{seconds}.json"
    env = {**os.environ, "CHAOSLAB_COUNT_REQUESTS": str(counts), "CHAOSLAB_RECOUNT": str(recount)}
    res = chaoslab("run", str(path), "--out", str(out), env=env)
    assert res.returncode == 0, story(res)
    report = json.loads((out / "report.json").read_text())
    recorded = sum(len(read_records(f)) for f in (out / "work").glob("requests-*.bin"))
    samples = json.loads(counts.read_text())
    assert len(samples["samples"]) >= seconds, samples  # counted all along, the analysis too
    return samples["max"], recorded, report, json.loads(recount.read_text())


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_the_requests_alive_in_a_run_do_not_grow_with_its_length(tmp_path: Path) -> None:
    short_max, short_n, short, short_live = held(tmp_path, 8)
    long_max, long_n, long, long_live = held(tmp_path, 32)
    assert long_n > 3.5 * short_n > 3.5 * 0.9 * 8 * RATE, (short_n, long_n)
    # what a run holds at once does not depend on its length: the live line's last seconds, the
    # tail's batches, and the analysis's chunk of a records file (8 bytes a request or more
    # deflated); a run that kept them all counts long_n at its end
    bound = 1.5 * WINDOW * RATE + READ_CHUNK / 8
    assert short_max <= bound and long_max <= bound, (short_max, long_max, bound)
    assert bound < long_n / 2, (bound, long_n)
    # with the probes on, and every request in the report: read back from the files
    assert long["probes"] and long["layers"], long["probes"]
    for report, n in ((short, short_n), (long, long_n)):
        rows = [c for c in report["client"] if not c["name"]]
        in_phases = sum(c["requests"] for c in rows)
        assert 0.95 * n <= in_phases <= n, (in_phases, n)  # a few fall between phases
        # the timeline counts from t0 (a worker's first due time can round a hair before it)
        timeline = sum(s["requests"] for s in report["timeline"])
        assert n - 3 <= timeline <= n, (timeline, n)
    # counted as they came: exactly as a pass after the run counts them; held back at most a
    # few ticks' worth (the slowest requests, and those after the last phase, which the run's
    # end counts), at either length: the end's work does not grow with the run
    for live in (short_live, long_live):
        assert live["complete"] and not live["differences"], live
        assert live["at_end"] <= live["held_most"] <= WINDOW * RATE, (short_live, long_live)
