"""Load a saved report.json back into the model.

The model's dataclasses are the schema: every field is decoded by its declared type, a
field with a default may be missing (older reports of the same schema lack the newer
fields), a field the model does not know is left out, and the first mismatch is reported
with its path in the document (`verdicts[0].status: 'absorbd' is not one of absorbed, no-change, ...`).

A report of schema version 1 (before verdicts had causes) is read as version 2: an absorbed
verdict's layer and target become its one cause, tied to the phase's faults that declared them.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from chaoslab.errors import ReportError
from chaoslab.report.model import SCHEMA, SCHEMA_V1, Cause, CauseKind, FaultRef, Report
from chaoslab.scenario.model import Status

REPORT_FILE = "report.json"
T = TypeVar("T")


def report_path(path: Path) -> Path:
    """A run's directory (or its report.json) to the report file."""
    return path / REPORT_FILE if path.is_dir() else path


def read_report(path: Path) -> Report:
    """The report of a run directory or a report.json; ReportError (exit 2) when it cannot be read."""
    file = report_path(path)
    if not path.exists():
        raise ReportError(f"{path}: no such file or directory", "give the --out directory of a run")
    if not file.is_file():
        raise ReportError(
            f"{path}: no {REPORT_FILE} here",
            "give the --out directory of a finished run (it holds report.json)",
        )
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except UnicodeDecodeError as exc:
        raise ReportError(f"{file}: not UTF-8 text ({exc.reason})", "is this a report.json?") from None
    except json.JSONDecodeError as exc:
        at = f"line {exc.lineno} column {exc.colno}"
        # an unterminated string runs to the end of the file: the file was cut there too
        truncated = exc.pos >= len(exc.doc.rstrip()) or exc.msg.startswith("Unterminated string")
        raise ReportError(
            f"{file}: not valid JSON ({exc.msg} at {at})",
            "the file ends early: was the run killed while writing it?"
            if truncated
            else "is this a report.json?",
        ) from None
    return decode_report(data, str(file))


def decode_report(data: object, where: str = "report") -> Report:
    if not isinstance(data, dict):
        raise ReportError(f"{where}: a report is a JSON object, found {_kind(data)}")
    schema = data.get("schema")
    if schema not in (SCHEMA, SCHEMA_V1):
        raise ReportError(
            f"{where}: report schema {schema!r} is not supported",
            f"this chaoslab reads {SCHEMA} and {SCHEMA_V1}; render it with the chaoslab that wrote it",
        )
    try:
        report = decode(Report, {k: v for k, v in data.items() if k != "passed"}, "")
    except _Mismatch as exc:
        raise ReportError(
            f"{where}: {exc.path or 'report'}: {exc.problem}", "is this file edited by hand?"
        ) from None
    return upgrade_v1(report) if schema == SCHEMA_V1 else report


def upgrade_v1(report: Report) -> Report:
    """A version 1 report as version 2: each absorbed verdict's layer and target, its one cause."""
    verdicts = []
    for v in report.verdicts:
        if v.status is Status.ABSORBED and v.layer and v.target and not v.causes:
            phase = next((p for p in report.phases if p.name == v.phase), None)
            faults = phase.faults if phase else []
            refs = []
            for f in faults:
                ref = FaultRef(f.kind, f.layer, f.target)
                if (f.layer, f.target) == (v.layer, v.target) and ref not in refs:
                    refs.append(ref)
            kind = CauseKind.FAULT if refs else CauseKind.SIDE_EFFECT if faults else CauseKind.OUTSIDE
            share = round(v.added_ms / v.client_added_mean_ms, 3) if v.client_added_mean_ms > 0 else 0.0
            v = dataclasses.replace(v, causes=[Cause(v.layer, v.target, v.added_ms, share, kind, refs)])
        verdicts.append(v)
    report.verdicts = verdicts
    report.schema = SCHEMA
    return report


class _Mismatch(Exception):
    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


def decode(tp: type[T], value: object, path: str) -> T:
    """`value` (parsed JSON) as an instance of the dataclass `tp`."""
    return typing.cast(T, _decode(tp, value, path))


def _decode(tp: Any, value: object, path: str) -> object:
    origin = typing.get_origin(tp)
    if origin in (types.UnionType, typing.Union):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _decode(inner, value, path)
    if dataclasses.is_dataclass(tp):
        return _dataclass(tp, value, path)
    if origin is list:
        if not isinstance(value, list):
            raise _Mismatch(path, f"expected a list, found {_kind(value)}")
        (item,) = typing.get_args(tp)
        return [_decode(item, v, f"{path}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise _Mismatch(path, f"expected an object, found {_kind(value)}")
        _, item = typing.get_args(tp)
        return {k: _decode(item, v, f"{path}.{k}") for k, v in value.items()}
    if tp is object:
        return value
    if isinstance(tp, type) and issubclass(tp, Enum):
        try:
            return tp(value)
        except ValueError:
            allowed = ", ".join(str(m.value) for m in tp)
            raise _Mismatch(path, f"{value!r} is not one of {allowed}") from None
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise _Mismatch(path, f"expected a number, found {_kind(value)}")
        return float(value)
    if tp in (int, str, bool):
        if type(value) is not tp:
            raise _Mismatch(path, f"expected {tp.__name__}, found {_kind(value)}")
        return value
    raise _Mismatch(path, f"cannot decode type {tp!r}")  # a model field of a type this reader lacks


def _dataclass(tp: Any, value: object, path: str) -> object:
    if not isinstance(value, dict):
        raise _Mismatch(path, f"expected an object, found {_kind(value)}")
    hints = typing.get_type_hints(tp)
    kwargs: dict[str, object] = {}
    for f in dataclasses.fields(tp):  # fields it does not know (a later writer's) are left out
        sub = f"{path}.{f.name}" if path else f.name
        if f.name in value:
            kwargs[f.name] = _decode(hints[f.name], value[f.name], sub)
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise _Mismatch(sub, "missing")
    return tp(**kwargs)


def _kind(value: object) -> str:
    return {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}.get(
        type(value), "a number"
    )
