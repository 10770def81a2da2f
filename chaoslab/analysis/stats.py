"""A rank test robust to skew: Mann-Whitney U with tie correction (normal approximation)."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TypeVar

Value = TypeVar("Value", int, float)
MAX_SAMPLE = 4000  # per side; ranks of larger samples are estimated from an even subsample


def _subsample(xs: Sequence[float], seed: int) -> list[float]:
    if len(xs) <= MAX_SAMPLE:
        return list(xs)
    return random.Random(seed).sample(list(xs), MAX_SAMPLE)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that a and b come from the same distribution (1.0 when too few)."""
    return mann_whitney_hist(Counter(_subsample(a, 1)), Counter(_subsample(b, 2)))


def mann_whitney_hist(a: Mapping[Value, int], b: Mapping[Value, int]) -> float:
    """The same test on two histograms (value or bucket -> count): equal keys are ties.

    Exact for bucketed data, in one pass over the distinct values, whatever the counts.
    """
    n1, n2 = sum(a.values()), sum(b.values())
    if n1 < 5 or n2 < 5:
        return 1.0
    u1 = 0.0
    ties = 0.0
    below = 0
    for value in sorted(set(a) | set(b)):
        ca, cb = a.get(value, 0), b.get(value, 0)
        t = ca + cb
        # each of the t tied values has the mean rank below + (t + 1) / 2
        u1 += ca * (below + (t + 1) / 2)
        ties += t**3 - t
        below += t
    u1 -= n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u1 - n1 * n2 / 2) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def tail_shift_p(base: Mapping[int, int], cur: Mapping[int, int], q: float = 0.99) -> float:
    """One-sided p-value that more of `cur`'s events lie above `base`'s q-quantile bucket.

    A rank test misses a change confined to a minority of events (e.g. one syscall of many
    delayed 30 ms): the ranks of the rest do not move. This compares the share of events
    above the baseline's tail with a two-proportion z-test. Histograms: bucket -> count.
    """
    n1, n2 = sum(base.values()), sum(cur.values())
    if n1 < 5 or n2 < 5:
        return 1.0
    seen, threshold = 0, max(base)
    for bucket in sorted(base):
        seen += base[bucket]
        if seen >= q * n1:
            threshold = bucket
            break
    k1 = sum(c for b, c in base.items() if b > threshold)
    k2 = sum(c for b, c in cur.items() if b > threshold)
    pooled = (k1 + k2) / (n1 + n2)
    if pooled in (0.0, 1.0):
        return 1.0
    z = (k2 / n2 - k1 / n1) / math.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    return 0.5 * math.erfc(z / math.sqrt(2))
