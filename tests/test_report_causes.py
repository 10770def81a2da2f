"""A verdict's causes in every writer: the terminal's causes table and sentence, report.html's
card (the causes side by side, the meter split between them) and attribution chart, junit.xml's
figures, summary.md's cell; and report.json of schema 2 read back as written."""

from __future__ import annotations

import dataclasses
import io
import json
import re
from pathlib import Path

import xmlschema
from rich.console import Console

from chaoslab.report import html, junit, markdown
from chaoslab.report.model import Cause, CauseKind, FaultRecord, FaultRef, Report
from chaoslab.report.reader import decode_report, read_report
from chaoslab.report.render import print_report
from chaoslab.report.writers import report_json
from chaoslab.scenario.model import Status

DATA = Path(__file__).resolve().parent / "data"
SCHEMA = xmlschema.XMLSchema(DATA / "junit.xsd")

NET = FaultRef("network", "network", "edge")
ENTROPY = FaultRef("entropy", "entropy", "api")


def two_faults() -> Report:
    """The entropy fixture's run with a second fault in its phase: network at edge, and CPU
    contention at Envoy as a side effect."""
    report = read_report(DATA / "report_entropy.json")
    phase = report.phases[1]
    receipt = FaultRecord("network", "edge", {"delay": 0.015}, "nfqdelay", True, "delayed", {}, "network")
    report.phases[1] = dataclasses.replace(phase, faults=[*phase.faults, receipt])
    [v] = report.verdicts
    causes = [
        Cause("network", "edge", 15.3, 0.539, CauseKind.FAULT, [NET]),
        Cause("entropy", "api", 12.8, 0.451, CauseKind.FAULT, [ENTROPY]),
        Cause("cpu", "edge", 1.6, 0.056, CauseKind.SIDE_EFFECT),
    ]
    report.verdicts = [
        dataclasses.replace(
            v,
            layer="network",
            target="edge",
            added_ms=15.3,
            explained=1.0,
            client_added_mean_ms=28.4,
            client_added_p50_ms=28.0,
            unexplained_ms=0.0,
            causes=causes,
        )
    ]
    return report


def test_the_terminal_lists_the_causes_side_by_side() -> None:
    console = Console(file=io.StringIO(), width=200, record=True)
    print_report(two_faults(), console, None)
    text = console.export_text()
    assert "causes (layers that hold no other cause's time), per compared phase" in text
    rows = [" ".join(line.replace("│", " ").split()) for line in text.splitlines()]
    assert "starve network at edge +15.30 54% network fault on edge" in rows
    assert "starve entropy at api +12.80 45% entropy fault on api" in rows
    assert "starve cpu at edge +1.60 6% side effect" in rows
    sentence = (
        "phase starve: client p50 +28.0 ms, absorbed by 2 causes: network at edge +15.3 ms (54%), "
        "entropy at api +12.8 ms (45%); 100% explained; side effect: cpu at edge +1.6 ms (6%)"
    )
    assert sentence in " ".join(text.split())


def test_report_html_shows_the_causes_and_splits_the_meter_and_the_client_bar() -> None:
    page = html.render_report(two_faults())
    assert "starve: absorbed by network at edge and entropy at api" in page
    card = re.search(r'<div class="card absorbed".*?</div></div>', page, re.S)
    assert card is not None
    segments = re.findall(r'<i class="c-(\w+)" style="width:(\d+)%"', card.group(0))
    assert segments == [("network", "54"), ("entropy", "45"), ("cpu", "1")]  # filled, no more
    boxes = re.findall(r'<div class="cause ([a-z-]+)" data-cause="([^"]+)">.*?<small>([^<]+)</small>', page)
    assert boxes == [
        ("fault", "network at edge", "network fault on edge"),
        ("fault", "entropy at api", "entropy fault on api"),
        ("side-effect", "cpu at edge", "side effect"),
    ]
    assert "(+29.7 of +28.4 ms per request in the phase; 0.0 ms unexplained)" in page
    chart = re.search(r'<svg[^>]*data-chart="attribution".*?</svg>', page, re.S)
    assert chart is not None
    parts = re.findall(r'class="bar-(\w+) bar part"><title>([^<]+)</title>', chart.group(0))
    assert [layer for layer, _ in parts] == ["network", "entropy", "cpu"]
    assert parts[0][1] == "network at edge: +15.30 ms per request, 54% (network fault on edge)"
    assert 'class="marker"' not in chart.group(0)  # one marker per single cause only
    assert "<td>network fault on edge</td>" in page  # the table of every layer names its causes


def test_a_single_cause_page_is_as_before() -> None:
    page = html.render_report(read_report(DATA / "report_entropy.json"))
    assert "starve: absorbed by entropy at api</div>" in page
    assert '<div class="causes">' not in page
    assert 'class="marker"' in page


def test_junit_and_summary_give_the_causes() -> None:
    text = junit.render(two_faults())
    SCHEMA.validate(text)
    [suite] = SCHEMA.to_dict(text)["testsuite"]
    out = suite["testcase"][1]["system-out"][0]
    assert (
        "causes: network at edge +15.3 ms (54%, network fault on edge), entropy at api +12.8 ms "
        "(45%, entropy fault on api), cpu at edge +1.6 ms (6%, side effect)"
    ) in out
    md = markdown.render(two_faults())
    assert (
        "**absorbed** by network at edge 54% + entropy at api 45%, 100% explained; side effect cpu at edge 6%"
    ) in md


def test_an_invalid_phase_lists_the_causes_its_fault_missed() -> None:
    report = two_faults()
    report.verdicts = [
        dataclasses.replace(
            report.verdicts[0],
            status=Status.INVALID,
            reason="the entropy fault on api matches no cause",
            causes=report.verdicts[0].causes[:1],
        )
    ]
    page = html.render_report(report)
    assert 'data-cause="network at edge"' in page and "starve: INVALID" in page
    assert "causes: network at edge" in junit.render(report)


def test_a_schema_2_report_reads_back_as_written() -> None:
    report = two_faults()
    data = json.loads(report_json(report))
    assert data["schema"] == "chaoslab.report/2"
    assert data["verdicts"][0]["causes"][2] == {
        "layer": "cpu",
        "target": "edge",
        "added_ms": 1.6,
        "share": 0.056,
        "kind": "side-effect",
        "faults": [],
    }
    again = decode_report(data)
    assert again.verdicts == report.verdicts
    assert json.loads(report_json(again)) == data
