"""The report's files, rendered from a saved report.json (tests/data/report_entropy.json: a real
short_entropy run, trimmed; report_control.json: a real short_control run): the writers'
registry, report.html's self-containment, junit.xml against the JUnit schema, summary.md, the
reader's errors and `chaoslab report` / `chaoslab compare` on bad input."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path

import pytest
import xmlschema

from chaoslab.analysis.compare import DEFAULT_THRESHOLD, compare, pair_phases, parse_threshold
from chaoslab.errors import ReportError, UsageError
from chaoslab.report import html, junit, markdown
from chaoslab.report.comparison import Change, Threshold
from chaoslab.report.model import CauseKind, ExpectationResult, FaultRef, GeneratorRecord, Report
from chaoslab.report.reader import decode_report, read_report
from chaoslab.report.writers import COMPARISON_WRITERS, REPORT_WRITERS, write
from chaoslab.scenario.model import Status
from tests.conftest import chaoslab

DATA = Path(__file__).resolve().parent / "data"
ENTROPY = DATA / "report_entropy.json"
CONTROL = DATA / "report_control.json"
SCHEMA = xmlschema.XMLSchema(DATA / "junit.xsd")


def entropy() -> Report:
    return read_report(ENTROPY)


def test_a_version_1_report_reads_as_version_2_with_its_layer_as_its_one_cause() -> None:
    data = json.loads(ENTROPY.read_text())
    assert data["schema"] == "chaoslab.report/1"
    report = read_report(ENTROPY)
    assert report.schema == "chaoslab.report/2"
    [v] = report.verdicts
    assert v.status is Status.ABSORBED
    [cause] = v.causes
    assert (cause.name, cause.kind, cause.added_ms) == ("entropy at api", CauseKind.FAULT, v.added_ms)
    assert cause.faults == [FaultRef("entropy", "entropy", "api")]
    assert cause.share == pytest.approx(v.explained, abs=0.002)
    # nothing else changes: the version 1 document plus the causes, and the later fields (what
    # measuring cost) at their defaults
    data["schema"] = "chaoslab.report/2"
    data["verdicts"][0]["causes"] = [dataclasses.asdict(cause)]
    data.update(observer=[], observer_budget=0.0, trap_us=0.0, trap_emulated_us=0.0, left_out=[])
    data.update(xds=[], errors=[], sweeps=[], engine="")
    for phase in data["phases"]:
        phase.update(changes=[], gomaxprocs={})
    data["verdicts"][0].update(runtime=[], in_phase_ms=None, carried_ms=0.0)
    if data.get("generator"):
        data["generator"].update(per_worker=[], wait_by_phase={})
    for e in data["expectations"]:
        e.update(required=True, sweep="", phase="")
    later = dict.fromkeys(("sent_p50_ms", "sent_p99_ms", "answer_p50_ms", "answer_p99_ms"), 0.0)
    for row in data["client"] + data["requests"]:
        row.update(later, split_requests=0, split_ms={}, split_p50_ms={}, split_p99_ms={})
    assert json.loads(json.dumps(report.to_json(), default=str)) == data


def test_an_older_report_without_the_later_fields_still_reads() -> None:
    data = json.loads(ENTROPY.read_text())
    for key in ("requests", "timeline", "generator", "histograms"):
        del data[key]
    report = decode_report(data)
    assert report.timeline == [] and report.generator is None
    assert "absorbed by entropy at api" in html.render_report(report)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (
            lambda d: d.update(schema="chaoslab.report/9"),
            "report schema 'chaoslab.report/9' is not supported",
        ),
        (lambda d: d["verdicts"][0].update(status="absorbd"), "verdicts[0].status: 'absorbd' is not one of"),
        (
            lambda d: d["client"][1].update(p50_ms="fast"),
            "client[1].p50_ms: expected a number, found a string",
        ),
        (lambda d: d.pop("phases"), "phases: missing"),
    ],
)
def test_a_malformed_report_names_what_is_wrong_and_where(edit: object, message: str) -> None:
    data = json.loads(ENTROPY.read_text())
    edit(data)  # type: ignore[operator]
    with pytest.raises(ReportError, match=re.escape(message)) as err:
        decode_report(data)
    assert err.value.exit_code == 2


def test_the_writers_form_a_registry_fed_by_the_model(tmp_path: Path) -> None:
    assert set(REPORT_WRITERS) == {"json", "html", "junit", "markdown"}
    assert set(COMPARISON_WRITERS) == {"json", "html"}
    paths = write(entropy(), REPORT_WRITERS.values(), tmp_path)
    assert sorted(p.name for p in paths) == ["junit.xml", "report.html", "report.json", "summary.md"]
    written = json.loads((tmp_path / "report.json").read_text())
    assert written == json.loads(json.dumps(entropy().to_json(), default=str))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in paths)  # no temporary files


def test_report_html_is_self_contained_small_and_says_the_verdict() -> None:
    report = entropy()
    start = time.perf_counter()
    page = html.render_report(report)
    took = time.perf_counter() - start
    assert took < 1.0, took
    assert len(page.encode()) < 5_000_000
    # nothing to fetch: no URL at all, no external script, style, image or font
    assert not re.search(r"https?://|//[a-z0-9.-]+\.[a-z]{2,}/", page)
    assert not re.search(r"<(script|link|img|iframe)[^>]+(src|href)=", page.replace('href="data:,"', ""))
    assert "@import" not in page and "url(" not in page
    # the report's data rides along
    embedded = re.search(r'<script type="application/json" id="report-data">(.*?)</script>', page)
    assert embedded is not None
    assert json.loads(embedded.group(1)) == json.loads(json.dumps(report.to_json(), default=str))
    [v] = report.verdicts
    assert "starve: absorbed by entropy at api" in page
    assert f"<b>{v.explained:.0%}</b> of the client" in page
    for chart in ("timeline", "attribution", "distributions", "percentiles"):
        assert f'data-chart="{chart}"' in page
    assert "1483 of 1483 randomness reads held 3ms" in page  # the fault's receipt
    assert "ptrace breakpoint on crypto/internal/sysrand.Read" in page  # its mechanism
    assert "busiest Locust process" in page and "probes attached" in page


def test_every_chart_path_has_points() -> None:
    page = html.render_report(entropy())
    paths = re.findall(r'<path class="([^"]+)" d="([^"]*)"', page)
    assert paths
    for cls, d in paths:
        assert re.match(r"M[\d.]+ [\d.]+", d), (cls, d[:40])
    for series in ("s-p50", "s-p99", "s-max", "s-rate"):
        [d] = [d for cls, d in paths if cls == series]
        assert d.count("L") >= 20, series  # one point per second of the 24 s run


def test_html_escapes_what_comes_from_the_run() -> None:
    report = entropy()
    report.expectations = [
        ExpectationResult("starve: <script>alert(1)</script>", "expect[0]", False, "x & y")
    ]
    page = html.render_report(report)
    assert "<script>alert(1)" not in page and "&lt;script&gt;alert(1)" in page


def test_junit_validates_and_counts_the_expectations_and_phases() -> None:
    text = junit.render(entropy())
    SCHEMA.validate(text)
    doc = SCHEMA.to_dict(text)
    [suite] = doc["testsuite"]
    assert (suite["@name"], suite["@tests"], suite["@failures"], suite["@errors"]) == (
        "chaoslab.short-entropy",
        "2",
        "0",
        "0",
    )
    names = [c["@name"] for c in suite["testcase"]]
    assert names == ["expect starve: absorbed by entropy at api", "phase starve"]
    assert "91% explained" in suite["testcase"][1]["system-out"][0]


def test_a_failing_expectation_is_a_failed_testcase_with_the_measured_values() -> None:
    report = entropy()
    report.expectations = [
        ExpectationResult(
            "starve: client p99 < 20ms", "expect[1]", False, "client p99 34.5ms is not below 20ms"
        )
    ]
    text = junit.render(report)
    SCHEMA.validate(text)
    [suite] = SCHEMA.to_dict(text)["testsuite"]
    assert suite["@failures"] == "1"
    [failure] = suite["testcase"][0]["failure"]
    assert failure["@type"] == "expectation"
    assert "client p99 34.5ms is not below 20ms" in failure["@message"]


def test_an_invalid_phase_and_a_saturated_generator_fail_their_testcases() -> None:
    report = entropy()
    report.verdicts = [
        dataclasses.replace(report.verdicts[0], status=Status.INVALID, reason="the probe saw nothing")
    ]
    [suite] = SCHEMA.to_dict(junit.render(report))["testsuite"]
    [failure] = suite["testcase"][1]["failure"]
    assert failure["@type"] == "invalid" and "the probe saw nothing" in failure["@message"]
    assert "client added p50 +14.5 ms" in failure["@message"]

    report = entropy()
    report.generator = GeneratorRecord(
        "open", 1, {"starve": 0.95}, True, ["a Locust process used 0.95 cores"]
    )
    [suite] = SCHEMA.to_dict(junit.render(report))["testsuite"]
    [failure] = suite["testcase"][1]["failure"]
    assert failure["@type"] == "saturated" and "0.95 cores" in failure["@message"]
    assert not report.passed and suite["@failures"] == "1"


def test_summary_md_has_the_verdict_expectations_and_a_phase_table() -> None:
    text = markdown.render(entropy())
    assert text.startswith("### chaoslab `short-entropy`: ✅ passed")
    assert "| phase | faults | requests | errors | p50 ms | p99 ms | max ms | verdict |" in text
    assert re.search(r"\| starve \| entropy on api \(delay 3ms, every 1\) \| 400 \| 0 \| [\d.]+ \|", text)
    assert "**absorbed** by entropy at api, 91% explained" in text
    assert "- ✅ `starve: absorbed by entropy at api`: held" in text
    assert "<" not in text  # no HTML: it renders the same in every Markdown viewer


def test_compare_pairs_phases_by_name_then_by_position() -> None:
    assert pair_phases(["baseline", "control"], ["baseline", "starve", "recovery"]) == (
        [("baseline", "baseline"), ("control", "starve")],
        ["recovery"],
    )
    assert pair_phases(["a", "b"], ["b", "a"]) == ([("b", "b"), ("a", "a")], [])


def test_compare_the_entropy_run_against_the_control_run_is_worse_at_entropy() -> None:
    c = compare(read_report(CONTROL), entropy(), DEFAULT_THRESHOLD, "control", "entropy")
    by_phase = {p.phase: p for p in c.phases}
    assert by_phase["baseline"].status is Change.SAME
    starve = by_phase["starve"]
    assert (starve.status, starve.layer, starve.target, starve.base_phase) == (
        Change.WORSE,
        "entropy",
        "api",
        "control",
    )
    assert "worse, entropy at api" in starve.sentence()
    p50 = next(m for m in starve.client if m.metric == "p50")
    assert p50.counted and p50.change_ms > 10 and p50.p_value < 1e-10
    assert c.worse
    # the other way round, the starved run is the base: better
    back = compare(entropy(), read_report(CONTROL), DEFAULT_THRESHOLD, "entropy", "control")
    assert {p.phase: p.status for p in back.phases}["control"] is Change.BETTER


def test_compare_a_run_with_itself_is_the_same() -> None:
    c = compare(entropy(), entropy(), DEFAULT_THRESHOLD, "a", "a")
    assert [p.status for p in c.phases] == [Change.SAME] * 3
    assert not c.worse and c.notes == []


def test_a_threshold_above_the_change_makes_it_the_same() -> None:
    c = compare(read_report(CONTROL), entropy(), Threshold(ms=50, fraction=0), "control", "entropy")
    assert {p.phase: p.status for p in c.phases}["starve"] is Change.SAME


def test_threshold_parsing() -> None:
    assert parse_threshold([]) == DEFAULT_THRESHOLD
    assert parse_threshold(["5ms"]) == Threshold(5, 0)
    assert parse_threshold(["10%"]) == Threshold(0, 0.1)
    assert parse_threshold(["5ms,10%"]) == parse_threshold(["5ms", "10%"]) == Threshold(5, 0.1)
    with pytest.raises(UsageError, match="--threshold 'fast'"):
        parse_threshold(["fast"])


def test_comparison_files(tmp_path: Path) -> None:
    c = compare(read_report(CONTROL), entropy(), DEFAULT_THRESHOLD, "control", "entropy")
    write(c, COMPARISON_WRITERS.values(), tmp_path)
    data = json.loads((tmp_path / "compare.json").read_text())
    assert data["schema"] == "chaoslab.compare/1" and data["worse"] is True
    page = (tmp_path / "compare.html").read_text()
    assert 'data-chart="comparison"' in page and not re.search(r"https?://", page)


# ---------------------------------------------------------------- the commands, on bad input


def test_report_command_writes_the_files_again(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(ENTROPY.read_text())
    res = chaoslab("report", str(tmp_path))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "junit.xml",
        "report.html",
        "report.json",
        "summary.md",
    ]
    SCHEMA.validate(str(tmp_path / "junit.xml"))


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "no report.json here"),
        (
            '{"schema": "chaoslab.report/0", "scenario": "x"}',
            "report schema 'chaoslab.report/0' is not supported",
        ),
        (ENTROPY.read_text()[:5000], "not valid JSON"),
        ("", "not valid JSON"),
        ("[1, 2]", "a report is a JSON object, found a list"),
    ],
)
def test_report_command_on_bad_input_exits_2_and_writes_nothing(
    tmp_path: Path, content: str | None, message: str
) -> None:
    if content is not None:
        (tmp_path / "report.json").write_text(content)
    before = sorted(tmp_path.iterdir())
    res = chaoslab("report", str(tmp_path))
    assert res.returncode == 2, res.stderr
    assert message in " ".join(res.stderr.split())  # a long temporary path wraps the line at 132 columns
    assert "Traceback" not in res.stderr
    assert sorted(tmp_path.iterdir()) == before


def test_report_command_says_when_the_file_ends_early(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(ENTROPY.read_text()[:5000])
    res = chaoslab("report", str(tmp_path))
    assert "the file ends early" in res.stderr


def test_report_command_on_a_missing_directory(tmp_path: Path) -> None:
    res = chaoslab("report", str(tmp_path / "nope"))
    assert res.returncode == 2 and "no such file or directory" in res.stderr
    assert not (tmp_path / "nope").exists()


def test_report_command_unknown_format(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(ENTROPY.read_text())
    res = chaoslab("report", str(tmp_path), "--format", "pdf")
    assert res.returncode == 2 and "unknown format 'pdf'" in res.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["report.json"]


def test_compare_command_exit_codes(tmp_path: Path) -> None:
    base, cur = tmp_path / "control", tmp_path / "entropy"
    for d, src in ((base, CONTROL), (cur, ENTROPY)):
        d.mkdir()
        (d / "report.json").write_text(src.read_text())
    res = chaoslab("compare", str(base), str(cur), "--out", str(tmp_path / "cmp"))
    assert res.returncode == 1, res.stderr
    assert "worse, entropy at api" in res.stdout
    assert sorted(p.name for p in (tmp_path / "cmp").iterdir()) == ["compare.html", "compare.json"]
    res = chaoslab("compare", str(cur), str(cur), "--out", str(tmp_path / "same"))
    assert res.returncode == 0, res.stderr
    assert "phase starve: same" in res.stdout
    res = chaoslab("compare", str(base), str(cur), "--threshold", "100ms", "--out", str(tmp_path / "t"))
    assert res.returncode == 0, res.stdout
    res = chaoslab("compare", str(base), str(tmp_path / "missing"), "--out", str(tmp_path / "m"))
    assert res.returncode == 2 and not (tmp_path / "m").exists()


def test_summary_md_golden() -> None:
    """The whole text for the fixture: a change to it is a change to review (regenerate with
    markdown.render(read_report(tests/data/report_entropy.json)))."""
    assert markdown.render(entropy()) == (DATA / "summary_entropy.md").read_text()


@pytest.mark.parametrize(
    ("status", "shown"),
    [
        (Status.INVALID, "starve: INVALID"),
        (Status.INCONCLUSIVE, "starve: INCONCLUSIVE"),
        (Status.NO_CHANGE, "starve: no significant change"),
    ],
)
def test_report_html_for_every_status(status: Status, shown: str) -> None:
    report = entropy()
    report.verdicts = [dataclasses.replace(report.verdicts[0], status=status, reason="the probe saw nothing")]
    page = html.render_report(report)
    assert f'data-status="{status}"' in page and shown in page and "The probe saw nothing." in page
    assert 'data-chart="attribution"' in page


def test_report_html_says_a_saturated_generator_and_a_drift() -> None:
    report = entropy()
    report.generator = GeneratorRecord(
        "open", 1, {"starve": 0.95}, True, ["a Locust process used 0.95 cores"]
    )
    report.baseline_drift = "recovery p50 differs from baseline by +3.0 ms: the baseline drifted"
    page = html.render_report(report)
    assert "load generator SATURATED: a Locust process used 0.95 cores" in page
    assert "the baseline drifted" in page and '<span class="pill failed">FAILED</span>' in page


def test_report_html_without_compared_phases() -> None:
    report = entropy()
    report.verdicts, report.layers = [], []
    page = html.render_report(report)
    assert "No compared phases: nothing to attribute." in page and 'data-chart="timeline"' in page


def test_report_command_takes_the_file_itself(tmp_path: Path) -> None:
    (tmp_path / "report.json").write_text(ENTROPY.read_text())
    res = chaoslab("report", str(tmp_path / "report.json"), "--format", "markdown")
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.json", "summary.md"]
