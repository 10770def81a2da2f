"""Durations and rates with units: `250ms`, `30s`, `2m`, `200/s`, `600/m`."""

from __future__ import annotations

import re

from chaoslab.quote import show

# ASCII digits only (\d alone also takes other scripts' digits, such as full-width ones)
_DURATION = re.compile(r"\s*(-?\d{1,15}(?:\.\d{1,15})?)\s*(us|µs|ms|s|m|h)\s*\Z", re.ASCII)
_DURATION_SCALE = {"us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_RATE = re.compile(r"\s*(-?\d{1,15}(?:\.\d{1,15})?)\s*/\s*(s|m|h)\s*\Z", re.ASCII)
_RATE_SCALE = {"s": 1.0, "m": 1 / 60, "h": 1 / 3600}


def parse_duration(text: object) -> float:
    """Seconds from a string such as `250ms`; raises ValueError with the accepted forms."""
    if not isinstance(text, str):
        raise ValueError(f"expected a duration string such as '250ms' or '30s', got {show(text)}")
    m = _DURATION.match(text)
    if not m:
        raise ValueError(
            f"{show(text)} is not a duration: use a number and a unit (us, ms, s, m, h), e.g. '250ms'"
        )
    return float(m.group(1)) * _DURATION_SCALE[m.group(2)]


_BITRATE = re.compile(r"\s*(\d{1,15}(?:\.\d{1,15})?)\s*(bit|kbit|mbit|gbit)\s*\Z", re.ASCII)
MAX_BITRATE = 10_000_000_000  # tc's shaping is exact up to here (above, tbf's burst overflows)
_BITRATE_SCALE = {"bit": 1, "kbit": 1_000, "mbit": 1_000_000, "gbit": 1_000_000_000}


def parse_bitrate(text: object) -> int:
    """Bits per second from `1mbit` (tc's units); from 8 bit/s to 10 gbit/s."""
    m = _BITRATE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"{show(text)} is not a bit rate: use a number and bit, kbit, mbit or gbit, e.g. '1mbit'"
        )
    bits = int(float(m.group(1)) * _BITRATE_SCALE[m.group(2)])
    if bits < 8:
        raise ValueError(f"must be at least 8bit, got {show(text)}")
    if bits > MAX_BITRATE:
        raise ValueError(f"must be at most 10gbit, got {show(text)}")
    return bits


_SIZE = re.compile(
    r"\s*(\d{1,15}(?:\.\d{1,15})?)\s*(b|k|kb|ki|kib|m|mb|mi|mib|g|gb|gi|gib)\s*\Z", re.ASCII | re.I
)
_SIZE_SCALE = {"b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30}


def parse_size(text: object) -> int:
    """Bytes from `64MiB`, `512k`, `2g` (every multiple binary, as cgroups and Docker take them)."""
    m = _SIZE.match(text) if isinstance(text, str) else None
    if not m:
        raise ValueError(
            f"{show(text)} is not a size: use a number and a unit (B, KiB, MiB, GiB), e.g. '64MiB'"
        )
    return int(float(m.group(1)) * _SIZE_SCALE[m.group(2)[0].lower()])


def format_size(n: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if abs(n) >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def parse_rate(text: object) -> float:
    """Events per second from a string such as `200/s`."""
    if not isinstance(text, str):
        raise ValueError(f"expected a rate string such as '200/s', got {show(text)}")
    m = _RATE.match(text)
    if not m:
        raise ValueError(f"{show(text)} is not a rate: use a number, '/' and a unit (s, m, h), e.g. '200/s'")
    return float(m.group(1)) * _RATE_SCALE[m.group(2)]


def format_ms(seconds: float) -> str:
    ms = seconds * 1000
    return f"{ms:.0f}ms" if abs(ms) >= 10 else f"{ms:.1f}ms"
