"""report.html, compare.html and the live page in a real browser (headless Chromium over the
DevTools protocol): no console error, no request beyond the page's own, every chart drawn,
the verdict as report.json says it. Screenshots are kept in reports/test-artifacts/."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from chaoslab.analysis.compare import DEFAULT_THRESHOLD, compare
from chaoslab.report.reader import read_report
from chaoslab.report.writers import COMPARISON_WRITERS, REPORT_WRITERS, write
from tests.browser import Page, chromium
from tests.conftest import REPO, SCENARIOS, ScenarioRun, chaoslab

DATA = Path(__file__).resolve().parent / "data"
ARTIFACTS = REPO / "reports" / "test-artifacts"

CHARTS_DRAWN = """
Array.from(document.querySelectorAll('svg[data-chart]')).map(function (svg) {
  var box = svg.getBoundingClientRect();
  var paths = Array.from(svg.querySelectorAll('path'));
  return {
    chart: svg.dataset.chart, width: box.width, height: box.height, paths: paths.length,
    empty: paths.filter(function (p) {
      return !p.getAttribute('d') || p.getBBox().width + p.getBBox().height === 0;
    }).map(function (p) { return p.getAttribute('class'); }),
    bars: Array.from(svg.querySelectorAll('rect:not(.hover)')).filter(function (r) {
      return r.getBBox().width > 0; }).length,
  };
})
"""

VERDICTS = """
Array.from(document.querySelectorAll('.card[data-phase]')).map(function (c) {
  return {phase: c.dataset.phase, status: c.dataset.status,
          text: c.querySelector('.verdict-text').textContent,
          explained: (c.querySelector('.explained b') || {}).textContent || ''};
})
"""


def check_page(page: Page, report: dict, origin: str) -> None:
    assert page.console_errors() == []
    assert all(url.startswith(origin) for url in page.requests()), page.requests()
    charts = page.js(CHARTS_DRAWN)
    names = [c["chart"] for c in charts]
    for chart in ("timeline", "attribution", "distributions", "percentiles"):
        assert chart in names, names
    for c in charts:
        assert c["width"] > 300 and c["height"] > 50, c
        assert c["paths"] + c["bars"] > 0 and c["empty"] == [], c
    timeline = next(c for c in charts if c["chart"] == "timeline")
    assert timeline["paths"] >= 4  # p50, p99, max, the rate
    check_verdicts(page, report)


def check_verdicts(page: Page, report: dict) -> None:
    shown = page.js(VERDICTS)
    assert len(shown) == len(report["verdicts"])
    for card, v in zip(shown, report["verdicts"], strict=True):
        assert (card["phase"], card["status"]) == (v["phase"], v["status"])
        if v["status"] == "absorbed":
            faults = [c for c in v.get("causes", []) if c["kind"] == "fault"] or v.get("causes", [])
            names = [f"{c['layer']} at {c['target']}" for c in faults]
            if len(names) < 2:
                names = [f"{v['layer']} at {v['target']}"]
            assert card["text"] == f"{v['phase']}: absorbed by {' and '.join(names)}"
            assert card["explained"] == f"{v['explained']:.0%}"
        elif v["status"] == "no-change":
            assert card["text"] == f"{v['phase']}: no significant change"


def open_report(tmp_path: Path, report_json: Path, shot: str) -> None:
    report = read_report(report_json)
    write(report, [REPORT_WRITERS["html"]], tmp_path)
    url = (tmp_path / "report.html").as_uri()
    with chromium() as page:
        page.goto(url)
        check_page(page, json.loads(report_json.read_text()), url)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(ARTIFACTS / shot)


def test_report_html_in_chromium(tmp_path: Path) -> None:
    open_report(tmp_path, DATA / "report_entropy.json", "fixture-short-entropy.png")


def test_control_report_html_in_chromium(tmp_path: Path) -> None:
    open_report(tmp_path, DATA / "report_control.json", "fixture-short-control.png")


def test_compare_html_in_chromium(tmp_path: Path) -> None:
    c = compare(
        read_report(DATA / "report_control.json"),
        read_report(DATA / "report_entropy.json"),
        DEFAULT_THRESHOLD,
        "control",
        "entropy",
    )
    write(c, COMPARISON_WRITERS.values(), tmp_path)
    url = (tmp_path / "compare.html").as_uri()
    with chromium() as page:
        page.goto(url)
        assert page.console_errors() == []
        assert page.requests() == [url]
        cards = page.js(VERDICTS)
        assert [(x["phase"], x["status"]) for x in cards] == [("baseline", "same"), ("starve", "worse")]
        assert cards[1]["text"] == "starve (against control): worse, entropy at api"
        assert all(c["empty"] == [] for c in page.js(CHARTS_DRAWN))


# ---------------------------------------------------------------- real runs (root, BPF, namespaces)


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_a_real_run_writes_every_file_and_its_page_reads_in_chromium(
    scenario_run: Callable[[str], ScenarioRun],
) -> None:
    import xmlschema

    res = scenario_run("short_entropy")
    assert res.returncode == 0, res.stderr[-3000:]
    for name in ("report.json", "report.html", "junit.xml", "summary.md"):
        assert (res.out / name).is_file(), name
    assert (res.out / "report.html").stat().st_size < 5_000_000
    xmlschema.XMLSchema(DATA / "junit.xsd").validate(str(res.out / "junit.xml"))
    assert "absorbed** by entropy at api" in (res.out / "summary.md").read_text()
    url = (res.out / "report.html").as_uri()
    with chromium() as page:
        page.goto(url)
        check_page(page, res.report, url)
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(ARTIFACTS / "short-entropy.png")


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_compare_real_runs(scenario_run: Callable[[str], ScenarioRun], tmp_path: Path) -> None:
    entropy, control = scenario_run("short_entropy"), scenario_run("short_control")
    assert entropy.returncode == 0 and control.returncode == 0, control.stderr[-3000:]
    res = chaoslab("compare", str(control.out), str(entropy.out), "--out", str(tmp_path / "worse"))
    assert res.returncode == 1, res.stdout + res.stderr
    assert "phase starve (against control): worse, entropy at api" in res.stdout
    assert json.loads((tmp_path / "worse" / "compare.json").read_text())["worse"] is True
    res = chaoslab("compare", str(entropy.out), str(entropy.out), "--out", str(tmp_path / "same"))
    assert res.returncode == 0, res.stdout + res.stderr
    assert re.findall(r"phase (\w+): (\w+)", res.stdout) == [
        ("baseline", "same"),
        ("starve", "same"),
        ("recovery", "same"),
    ]


@pytest.mark.privileged
@pytest.mark.e2e
@pytest.mark.usefixtures("clean_machine")
def test_live_page_during_a_run(tmp_path: Path) -> None:
    err = tmp_path / "stderr.txt"
    out = tmp_path / "run"
    with err.open("w") as fh:
        p = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaoslab",
                "run",
                str(SCENARIOS / "short_entropy.yaml"),
                "--out",
                str(out),
                "--serve",
                ":0",
            ],
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=fh,
            text=True,
        )
    try:
        url = None
        deadline = time.monotonic() + 60
        while url is None and time.monotonic() < deadline:
            assert p.poll() is None, err.read_text()[-3000:]
            m = re.search(r"live page: (http://127\.0\.0\.1:\d+/)", err.read_text())
            url = m.group(1) if m else None
            time.sleep(0.2)
        assert url, err.read_text()[-3000:]
        with chromium() as page:
            page.goto(url)
            # during the fault phase: the phase, its active fault, the timeline so far
            page.wait_for(
                "(document.getElementById('live-phase') || {}).textContent === 'starve' && "
                "document.getElementById('live-faults').textContent.includes('entropy on api') && "
                "!!document.querySelector('svg[data-chart=timeline] path.s-p50') && "
                "document.getElementById('client-table').textContent.includes('starve')",
                timeout=90,
            )
            assert page.js("document.querySelector('main').dataset.final") == "0"
            client = page.js("document.getElementById('client-table').textContent")
            assert "baseline" in client  # a finished phase's figures
            assert page.js("document.querySelector('table.receipts').textContent").endswith(
                "active nowthe receipt comes when the phase ends"
            )
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(ARTIFACTS / "live-short-entropy.png")
            # after the run: the final report with its verdict, and the page stops polling
            page.wait_for("document.querySelector('main').dataset.final === '1'", timeout=120)
            p.wait(timeout=60)
            assert p.returncode == 0, err.read_text()[-3000:]
            report = json.loads((out / "report.json").read_text())
            check_verdicts(page, report)
            # The run adds and removes network interfaces (its targets' veth pairs), and
            # Chromium aborts what is in flight when the host's network changes. The page
            # must take that as a hiccup: try again, and still end on the final report.
            changed = "net::ERR_NETWORK_CHANGED"
            failed = page.failed_loads()
            assert all(u == url + "fragment" and e == changed for u, e in failed), failed
            assert [e for e in page.console_errors() if not e.endswith(changed)] == []
            assert all(u.startswith(url) for u in page.requests()), page.requests()
            polls = [u for u in page.requests() if u.endswith("/fragment")]
            assert len(polls) >= 2, page.requests()  # it polled: the starve phase, then the final page
            page.pump(3)  # three of its poll intervals: the final page polls no more
            assert [u for u in page.requests() if u.endswith("/fragment")] == polls
    finally:
        if p.poll() is None:
            p.terminate()
            p.wait(timeout=60)
