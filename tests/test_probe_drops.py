"""A BPF map that fills loses events: the run counts them per probe and says so.

The histogram map of every probe is sized to 2 buckets on purpose (CHAOSLAB_BPF_MAP_ENTRIES,
read as the objects load), so any layer whose durations fall in more than two buckets has
records refused; the same run with the maps as built drops none.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, story

SCENARIO = """\
name: map-drops
targets:
  api: {service: go-api}
load: {protocol: http, target: api, path: "/work?work=5", rate: 40/s, concurrency: 8}
probes: [app, syscall]
phases:
  - {name: baseline, duration: 5s}
"""


def run(tmp_path: Path, name: str, env: dict[str, str]) -> tuple[subprocess.CompletedProcess[str], dict]:
    path = tmp_path / "drops.yaml"
    path.write_text(SCENARIO)
    out = tmp_path / name
    res = subprocess.run(
        [sys.executable, "-m", "chaoslab", "run", str(path), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, **env},
    )
    assert res.returncode == 0, story(res)
    return res, json.loads((out / "report.json").read_text())


@pytest.mark.privileged
@pytest.mark.e2e
def test_a_map_sized_too_small_reports_its_drops(root: None, tmp_path: Path) -> None:
    res, report = run(tmp_path, "small", {"CHAOSLAB_BPF_MAP_ENTRIES": "hist=2"})
    dropped = {c["layer"]: c["dropped"] for c in report["observer"]}
    assert set(dropped) == {"app", "syscall"}, dropped
    assert all(n > 0 for n in dropped.values()), dropped
    said = " ".join((res.stdout + res.stderr).split())  # the terminal wraps its lines
    assert "EVENTS DROPPED, a BPF map was full: app " in said, said[-3000:]
    summary = (tmp_path / "small" / "summary.md").read_text()
    assert "EVENTS DROPPED" in summary

    _, report = run(tmp_path, "as-built", {"CHAOSLAB_BPF_MAP_ENTRIES": ""})
    assert {c["layer"]: c["dropped"] for c in report["observer"]} == {"app": 0, "syscall": 0}


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.parametrize(
    ("value", "said", "hint"),
    [
        ("hist=lots", "'hist=lots' is not a map's name and its entries", "NAME=ENTRIES"),
        ("target_bits=8", "'target_bits' is not a map that can be sized", "name one of hist, starts"),
    ],
)
def test_a_bad_map_size_is_a_clear_error(
    root: None, tmp_path: Path, value: str, said: str, hint: str
) -> None:
    path = tmp_path / "drops.yaml"
    path.write_text(SCENARIO)
    res = subprocess.run(
        [sys.executable, "-m", "chaoslab", "run", str(path), "--out", str(tmp_path / "out")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
        env={**os.environ, "CHAOSLAB_BPF_MAP_ENTRIES": value},
    )
    assert res.returncode == 3, res.stdout[-2000:] + res.stderr[-2000:]
    assert f"CHAOSLAB_BPF_MAP_ENTRIES: {said}" in res.stderr
    assert hint in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "out" / "work" / "load.json").exists()  # no load was started
