"""Path-tracking readers for validating YAML: every problem is collected, none raised early.

A `Fields` wraps one YAML mapping at a known path (`phases[1].faults[0]`). Reading a key
removes it; `finish()` reports whatever keys were left as unknown, with the closest known key
as a hint. Errors accumulate in a shared `Problems` list so a user sees all of them at once.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

from chaoslab.quote import show
from chaoslab.units import parse_bitrate, parse_duration, parse_rate

T = TypeVar("T")

# Identifiers used as names of targets, phases and requests; they end up in file names,
# network namespace names and reports, so keep them to a safe alphabet.
NAME_RE = re.compile(r"[a-z][a-z0-9_-]{0,23}\Z")
NAME_HINT = "use 1-24 lowercase letters, digits, '-' or '_', starting with a letter"
# Characters never allowed in any string field (they would be shell metacharacters if a
# value ever reached a shell; chaoslab uses argv lists, but a scenario should not carry them).
SHELL_META = re.compile(r"[;&|`$<>\\\n\r\"']")
# A key shown as is in a problem's path; any other is quoted and cut (it is user text).
QUOTED_KEY_CHARS = frozenset(" []'\".\\")
SEPARATORS = ("Zl", "Zp")  # U+2028, U+2029: line breaks to a terminal or a log
# Unknown keys beyond this many get no closest-key hint (each hint is a fuzzy match).
HINTED_KEYS = 20


@dataclass(frozen=True)
class Problem:
    path: str
    message: str
    hint: str = ""

    def render(self) -> str:
        text = f"{self.path}: {self.message}"
        return f"{text}\n    hint: {self.hint}" if self.hint else text


@dataclass
class Problems:
    items: list[Problem] = field(default_factory=list)

    def add(self, path: str, message: str, hint: str = "") -> None:
        self.items.append(Problem(path, message, hint))

    def __bool__(self) -> bool:
        return bool(self.items)

    def __iter__(self) -> Iterator[Problem]:
        return iter(self.items)


def join(path: str, key: str | int) -> str:
    if isinstance(key, int):
        return f"{path}[{key}]"
    if not (0 < len(key) <= 40 and key.isascii() and key.isprintable() and not QUOTED_KEY_CHARS & set(key)):
        return f"{path}[{show(key)}]"
    return f"{path}.{key}" if path else key


def control_characters(text: str) -> str:
    """The control, format and line-separator characters in `text`, shown (empty: none)."""
    bad = sorted(
        {c for c in text if unicodedata.category(c)[0] == "C" or unicodedata.category(c) in SEPARATORS}
    )
    return ", ".join(f"U+{ord(c):04X}" for c in bad[:5])


class Fields:
    """Reads typed values out of one mapping, recording problems under their YAML path."""

    def __init__(self, raw: object, path: str, problems: Problems) -> None:
        self.path = path
        self.problems = problems
        self.known: list[str] = []
        if isinstance(raw, dict):
            self.raw: dict[str, object] = {str(k): v for k, v in raw.items()}
            self.ok = True
        else:
            self.raw = {}
            self.ok = False
            problems.add(path or "<root>", f"expected a mapping, got {_kind(raw)}")

    def at(self, key: str) -> str:
        return join(self.path, key)

    def has(self, key: str) -> bool:
        return key in self.raw

    def _take(self, key: str, required: bool, nullable: bool = False) -> object | None:
        """The value of `key`, removed from the unread ones. A key given with no value (`key:`,
        `key: ~`) is a problem: the default would otherwise pass every check unseen."""
        self.known.append(key)
        if key not in self.raw:
            if required and self.ok:
                self.problems.add(self.at(key), "is required")
            return None
        value = self.raw.pop(key)
        if value is None and not nullable:
            self.problems.add(self.at(key), "has no value (null)", "give it a value, or remove the key")
        return value

    def get(
        self,
        key: str,
        conv: Callable[[object], T],
        default: T,
        *,
        required: bool = False,
        nullable: bool = False,
    ) -> T:
        """`conv(value)` of `key`; `nullable`: a null is handed to `conv` instead of refused."""
        present = key in self.raw
        value = self._take(key, required, nullable)
        if not present or (value is None and not nullable):
            return default
        try:
            return conv(value)
        except (ValueError, OverflowError) as exc:
            message = str(exc) if isinstance(exc, ValueError) else f"the number {show(value)} is too large"
            self.problems.add(self.at(key), message)
            return default

    def value(self, key: str) -> object | None:
        """The value as written (None when absent), for a key that takes more than one form."""
        return self._take(key, False)

    def string(self, key: str, default: str = "", *, required: bool = False) -> str:
        return self.get(key, _string, default, required=required)

    def name(self, key: str, default: str = "", *, required: bool = False) -> str:
        return self.get(key, _name, default, required=required)

    def duration(
        self,
        key: str,
        default: float = 0.0,
        *,
        required: bool = False,
        positive: bool = True,
        low: float = 0.0,
        high: float = 0.0,
    ) -> float:
        """A duration in seconds; `low` and `high` (when given) bound a value other than 0."""

        def conv(v: object) -> float:
            seconds = parse_duration(v)
            if positive and seconds <= 0:
                raise ValueError(f"must be greater than zero, got {show(v)}")
            if seconds < 0:
                raise ValueError(f"must not be negative, got {show(v)}")
            if seconds and low and seconds < low:
                raise ValueError(f"must be at least {_seconds(low)}, got {show(v)}")
            if high and seconds > high:
                raise ValueError(f"must be at most {_seconds(high)}, got {show(v)}")
            return seconds

        return self.get(key, conv, default, required=required)

    def rate(self, key: str, default: float = 0.0, *, required: bool = False) -> float:
        def conv(v: object) -> float:
            per_second = parse_rate(v)
            if per_second <= 0:
                raise ValueError(f"must be greater than zero, got {show(v)}")
            return per_second

        return self.get(key, conv, default, required=required)

    def flag(self, key: str, default: bool = False) -> bool:
        def conv(v: object) -> bool:
            if not isinstance(v, bool):
                raise ValueError(f"expected true or false, got {show(v)}")
            return v

        return self.get(key, conv, default)

    def percent(self, key: str) -> float:
        """A percentage, `10%` or `10` (0 when absent); must be in (0, 100]."""

        def conv(v: object) -> float:
            text = v.strip().removesuffix("%") if isinstance(v, str) else str(v)
            try:
                value = -1.0 if isinstance(v, bool) or not text.isascii() else float(text)
            except (ValueError, OverflowError):
                value = -1.0
            if not 0 < value <= 100:
                raise ValueError(f"must be a percentage above 0 and at most 100, e.g. '10%', got {show(v)}")
            return value

        return self.get(key, conv, 0.0)

    def bitrate(self, key: str) -> int:
        """Bits per second from `1mbit`, `500kbit`, `2gbit`, `100bit` (0 when absent)."""

        def conv(v: object) -> int:
            return parse_bitrate(v)

        return self.get(key, conv, 0)

    def integer(self, key: str, default: int, *, low: int, high: int, required: bool = False) -> int:
        def conv(v: object) -> int:
            if isinstance(v, bool) or not isinstance(v, int):
                raise ValueError(f"expected an integer, got {_kind(v)}")
            if not low <= v <= high:
                raise ValueError(f"must be between {low} and {high}, got {v}")
            return v

        return self.get(key, conv, default, required=required)

    def choice(self, key: str, choices: tuple[str, ...], default: str, *, required: bool = False) -> str:
        def conv(v: object) -> str:
            s = _string(v)
            if s not in choices:
                raise ValueError(f"must be one of {', '.join(choices)}, got {show(s)}")
            return s

        return self.get(key, conv, default, required=required)

    def mapping(self, key: str, *, required: bool = False) -> dict[str, object]:
        value = self._take(key, required)
        if value is None:
            return {}
        if not isinstance(value, dict):
            self.problems.add(self.at(key), f"expected a mapping, got {_kind(value)}")
            return {}
        return {str(k): v for k, v in value.items()}

    def sequence(self, key: str, *, required: bool = False) -> list[object]:
        value = self._take(key, required)
        if value is None:
            return []
        if not isinstance(value, list):
            self.problems.add(self.at(key), f"expected a list, got {_kind(value)}")
            return []
        return value

    def finish(self) -> None:
        known = f"known keys here: {', '.join(sorted(set(self.known)))}"
        for i, key in enumerate(self.raw):
            close = difflib.get_close_matches(key[:40], self.known, n=1) if i < HINTED_KEYS else []
            self.problems.add(self.at(key), "unknown key", f"did you mean '{close[0]}'?" if close else known)
        self.raw.clear()


def _seconds(value: float) -> str:
    if value >= 3600 and value % 3600 == 0:
        return f"{value / 3600:g}h"
    return f"{value:g}s" if value >= 1 else f"{value * 1000:g}ms"


def _kind(value: object) -> str:
    return "nothing" if value is None else type(value).__name__


def _string(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a string, got {_kind(value)}")
    if SHELL_META.search(value):
        raise ValueError(
            f"{show(value)} contains a character that is not allowed (; & | ` $ < > \\ quotes newline)"
        )
    if bad := control_characters(value):
        raise ValueError(f"{show(value)} contains control characters ({bad})")
    return value


def _name(value: object) -> str:
    s = _string(value)
    if not NAME_RE.match(s):
        raise ValueError(f"{show(s)} is not a valid name: {NAME_HINT}")
    return s
