from __future__ import annotations

import pytest

from chaoslab.units import parse_duration, parse_rate


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("250ms", 0.25), ("30s", 30.0), ("2m", 120.0), ("1.5s", 1.5), ("500us", 0.0005), ("1h", 3600)],
)
def test_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["30", "fast", "10 parsecs", "ms", ""])
def test_bad_durations_name_the_accepted_form(text: str) -> None:
    with pytest.raises(ValueError, match="use a number and a unit"):
        parse_duration(text)


def test_duration_must_be_text() -> None:
    with pytest.raises(ValueError, match="expected a duration string"):
        parse_duration(30)


@pytest.mark.parametrize(("text", "per_second"), [("200/s", 200.0), ("600/m", 10.0), ("3600/h", 1.0)])
def test_rates(text: str, per_second: float) -> None:
    assert parse_rate(text) == pytest.approx(per_second)


@pytest.mark.parametrize("text", ["200", "200/day", "/s"])
def test_bad_rates(text: str) -> None:
    with pytest.raises(ValueError, match="is not a rate"):
        parse_rate(text)
