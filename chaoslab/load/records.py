"""Per-request records from the load generator, and their per-phase summary."""

from __future__ import annotations

from dataclasses import dataclass

from chaoslab.hist import FineHistogram

LATE_TOLERANCE = 0.010  # a request sent this much after its due time counts as late


@dataclass(frozen=True, slots=True)
class Request:
    due: float  # epoch seconds the request was scheduled for
    sent: float
    end: float
    status: int
    name: str
    error: str
    # The user was waiting for the due time (open model), so a late send is the
    # generator's own delay, not every user being busy with a slow target.
    idle: bool = True

    @property
    def latency(self) -> float:
        """From due time to response: includes any time the generator sent it late."""
        return self.end - self.due

    @property
    def late(self) -> float:
        return self.sent - self.due

    @property
    def is_late(self) -> bool:
        return self.late > LATE_TOLERANCE

    @property
    def generator_late(self) -> bool:
        return self.idle and self.is_late

    @property
    def ok(self) -> bool:
        return not self.error


def parse_line(line: str) -> Request | None:
    parts = line.rstrip("\n").split("\t")
    if len(parts) != 7:
        return None
    try:
        return Request(
            float(parts[0]),
            float(parts[1]),
            float(parts[2]),
            int(parts[3]),
            parts[4],
            parts[5],
            parts[6] == "1",
        )
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


def latency_histogram(requests: list[Request]) -> FineHistogram:
    return FineHistogram.of(int(r.latency * 1e9) for r in requests if r.ok)
