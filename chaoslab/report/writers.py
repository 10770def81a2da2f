"""The report's files, as a registry of writers fed by the model.

`chaoslab run` and `chaoslab report` write through the same registry. Every file is
rendered in memory first and then written next to its final name and renamed into place,
so a failure never leaves a half-written or partial set of files behind.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Generic, TypeVar

from chaoslab.errors import ReportError
from chaoslab.report import html, junit, markdown
from chaoslab.report.comparison import Comparison
from chaoslab.report.model import Report

D = TypeVar("D")


@dataclass(frozen=True)
class Writer(Generic[D]):
    name: str
    filename: str
    render: Callable[[D], str]
    description: str


def report_json(report: Report) -> str:
    return json.dumps(report.to_json(), indent=2, default=str) + "\n"


def comparison_json(comparison: Comparison) -> str:
    return json.dumps(comparison.to_json(), indent=2, default=str) + "\n"


REPORT_WRITERS: Mapping[str, Writer[Report]] = {
    w.name: w
    for w in (
        Writer("json", "report.json", report_json, "the report model (schema chaoslab.report/2)"),
        Writer("html", "report.html", html.render_report, "one self-contained page, charts as inline SVG"),
        Writer("junit", "junit.xml", junit.render, "a JUnit XML test suite for CI"),
        Writer("markdown", "summary.md", markdown.render, "a summary for a CI job page or a PR comment"),
    )
}

COMPARISON_WRITERS: Mapping[str, Writer[Comparison]] = {
    w.name: w
    for w in (
        Writer("json", "compare.json", comparison_json, "the comparison (schema chaoslab.compare/1)"),
        Writer("html", "compare.html", html.render_comparison, "the comparison as one self-contained page"),
    )
}


def write(doc: D, writers: Iterable[Writer[D]], out_dir: Path) -> list[Path]:
    """Render every file, then put them all in place; nothing is left behind on an error."""
    rendered = [(out_dir / w.filename, w.render(doc)) for w in writers]
    new: list[Path] = []  # files this call created (one it replaced is not removed on an error)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
        for path, text in rendered:
            tmp = path.with_name(f".{path.name}.tmp")
            existed = path.exists()
            try:
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)
            finally:
                tmp.unlink(missing_ok=True)
            if not existed:
                new.append(path)
    except OSError as exc:
        for path in new:
            with contextlib.suppress(OSError):
                path.unlink()
        raise ReportError(
            f"cannot write {exc.filename}: {exc.strerror}", "check the output directory"
        ) from None
    return [path for path, _ in rendered]


def choose(registry: Mapping[str, Writer[D]], names: Iterable[str]) -> list[Writer[D]]:
    chosen = []
    for name in names:
        if name not in registry:
            raise ReportError(f"unknown format {name!r}", f"formats: {', '.join(registry)}")
        chosen.append(registry[name])
    return chosen
