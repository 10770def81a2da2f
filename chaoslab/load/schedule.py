"""The load's profile over the run: a start value ramped through stages (k6-style).

A stage ramps linearly from the value before it to its own over its duration; after the
last stage the value holds. For the open model the value is an arrival rate and the
schedule is exact: the k-th arrival is due when the integral of the rate reaches k, so
arrivals follow the ramp with no rounding drift. With several workers, worker i of n
takes arrivals i, i+n, i+2n, ...: together they keep the one schedule.

Pure and dependency-free: the Locust child imports it too.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence


class Profile:
    def __init__(self, start: float, stages: Sequence[tuple[float, float]] = ()) -> None:
        # Segments (begin, duration, value at begin, value at end), the last one open-ended.
        self.segments: list[tuple[float, float, float, float]] = []
        t, value = 0.0, start
        for duration, target in stages:
            self.segments.append((t, duration, value, target))
            t, value = t + duration, target
        self.segments.append((t, math.inf, value, value))

    def value_at(self, t: float) -> float:
        for begin, duration, v0, v1 in self.segments:
            if t < begin + duration:
                x = max(t - begin, 0.0)
                return v0 + (v1 - v0) * (x / duration if duration > 0 and math.isfinite(duration) else 0.0)
        return self.segments[-1][3]

    def arrivals(self, start: int = 0, step: int = 1) -> Iterator[float]:
        """Due times (seconds from t0) of arrivals start, start+step, ...: ever increasing."""
        k = float(start)
        done = 0.0  # arrivals before the current segment
        for begin, duration, v0, v1 in self.segments:
            slope = (v1 - v0) / duration if math.isfinite(duration) and duration > 0 else 0.0
            in_segment = (v0 + v1) / 2 * duration if math.isfinite(duration) else math.inf
            while k < done + in_segment:
                yield begin + _solve(v0, slope, k - done)
                k += step
            done += in_segment


def _solve(rate: float, slope: float, n: float) -> float:
    """x >= 0 with rate*x + slope*x^2/2 = n."""
    if abs(slope) < 1e-12:
        return n / rate if rate > 0 else math.inf
    disc = rate * rate + 2 * slope * n
    return (-rate + math.sqrt(max(disc, 0.0))) / slope
