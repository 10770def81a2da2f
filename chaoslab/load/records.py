"""Per-request records from the load generator, and their per-phase summary."""

from __future__ import annotations

from dataclasses import dataclass

from chaoslab.hist import Histogram


@dataclass(frozen=True, slots=True)
class Request:
    due: float  # epoch seconds the request was scheduled for
    sent: float
    end: float
    status: int
    name: str
    error: str

    @property
    def latency(self) -> float:
        """From due time to response: includes any time the generator sent it late."""
        return self.end - self.due

    @property
    def late(self) -> float:
        return self.sent - self.due

    @property
    def ok(self) -> bool:
        return not self.error


def parse_line(line: str) -> Request | None:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 6:
        return None
    try:
        return Request(float(parts[0]), float(parts[1]), float(parts[2]), int(parts[3]), parts[4], parts[5])
    except ValueError:
        return None


def quantile(sorted_values: list[float], q: float) -> float:
    """Exact quantile of sorted data (linear interpolation between closest ranks)."""
    if not sorted_values:
        return 0.0
    pos = q * (len(sorted_values) - 1)
    lo = int(pos)
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)


def latency_histogram(requests: list[Request]) -> Histogram:
    return Histogram.of(int(r.latency * 1e9) for r in requests if r.ok)
