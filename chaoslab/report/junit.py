"""junit.xml: the run as one test suite for CI systems (the Ant/Jenkins JUnit XML format).

One testcase per expectation and one per compared phase. A phase fails when it is
`invalid` or when the load generator was saturated (its latency figures are then wrong).
A run stopped by a stop condition or the dead man's switch has a failed `abort` case.
A failure's message carries the measured values; a passing case carries them in
system-out. The file validates against tests/data/junit-10.xsd.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from chaoslab.report import words
from chaoslab.report.model import Report, Verdict
from chaoslab.scenario.model import Status


def render(report: Report) -> str:
    suite_name = f"chaoslab.{report.scenario}"
    durations = {p.name: p.end - p.start for p in report.phases}
    cases: list[ET.Element] = []
    saturated = report.generator is not None and report.generator.saturated

    for e in report.expectations:
        phase = e.expectation.split(":", 1)[0]
        case = _case(f"expect {e.expectation}", f"{suite_name}.expect", durations.get(phase, 0.0))
        if e.held:
            _out(case, f"held: {e.detail} ({e.path})")
        elif not e.required:
            _out(case, f"broke, past the sweep's 'through' (not a failure): {e.detail} ({e.path})")
        else:
            _failure(case, f"{e.detail} ({e.path})", "expectation")
        cases.append(case)

    for v in report.verdicts:
        case = _case(f"phase {v.phase}", f"{suite_name}.phases", durations.get(v.phase, 0.0))
        facts = _phase_facts(report, v)
        if v.status is Status.INVALID:
            _failure(case, f"{v.sentence()}; {facts}", "invalid")
        elif saturated and report.generator is not None:
            _failure(case, "load generator saturated: " + "; ".join(report.generator.reasons), "saturated")
        else:
            _out(case, f"{v.sentence()}\n{facts}")
        cases.append(case)

    if report.abort is not None:
        a = report.abort
        case = _case(f"abort: {a.condition}", f"{suite_name}.abort", durations.get(a.phase, 0.0))
        _failure(case, a.sentence(), "aborted")
        cases.append(case)

    if saturated and not report.verdicts and report.generator is not None:
        case = _case("load generator", f"{suite_name}.load", words.span(report))
        _failure(case, "; ".join(report.generator.reasons), "saturated")
        cases.append(case)

    failures = sum(1 for c in cases if c.find("failure") is not None)
    suites = ET.Element("testsuites", name="chaoslab", tests=str(len(cases)), failures=str(failures))
    suites.set("errors", "0")
    suites.set("time", f"{words.span(report):.3f}")
    suite = ET.SubElement(
        suites,
        "testsuite",
        name=suite_name,
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped="0",
        time=f"{words.span(report):.3f}",
        timestamp=words.iso(report.started),
    )
    props = ET.SubElement(suite, "properties")
    for name, value in (
        ("run_id", report.run_id),
        ("runtime", report.runtime),
        *((("engine", report.engine),) if report.engine else ()),
        ("schema", report.schema),
        ("passed", str(report.passed).lower()),
    ):
        ET.SubElement(props, "property", name=name, value=value)
    suite.extend(cases)
    ET.indent(suites)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suites, encoding="unicode") + "\n"


def _case(name: str, classname: str, seconds: float) -> ET.Element:
    return ET.Element("testcase", name=name, classname=classname, time=f"{seconds:.3f}")


def _failure(case: ET.Element, message: str, kind: str) -> None:
    el = ET.SubElement(case, "failure", message=message, type=kind)
    el.text = message


def _out(case: ET.Element, text: str) -> None:
    ET.SubElement(case, "system-out").text = text


def _phase_facts(report: Report, v: Verdict) -> str:
    """The measured values behind a phase's verdict, in one line."""
    parts = [
        f"status {v.status}",
        f"client added p50 {words.ms(v.client_added_p50_ms, True)}",
        f"added mean {words.ms(v.client_added_mean_ms, True)}",
        f"p={v.p_value:.2g}",
    ]
    if v.layer:
        parts.append(f"{v.layer} at {v.target or '?'} {words.ms(v.added_ms, True)} per request")
        parts.append(f"{v.explained:.0%} explained, unexplained {words.ms(v.unexplained_ms)}")
    if len(v.causes) > 1 or (v.causes and v.status is not Status.ABSORBED):
        parts.append(
            "causes: "
            + ", ".join(
                f"{c.name} {words.ms(c.added_ms, True)} ({c.share:.0%}, {c.origin()})" for c in v.causes
            )
        )
    client = next((c for c in report.client if c.phase == v.phase), None)
    if client is not None:
        parts.append(
            f"{client.requests} requests, {client.errors} errors, p50 {words.ms(client.p50_ms)}, "
            f"p99 {words.ms(client.p99_ms)}"
        )
    phase = next((p for p in report.phases if p.name == v.phase), None)
    for f in phase.faults if phase else []:
        parts.append(f"{words.fault_label(f)}: {f.detail}")
    return "; ".join(parts)
