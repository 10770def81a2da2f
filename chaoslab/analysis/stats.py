"""A rank test robust to skew: Mann-Whitney U with tie correction (normal approximation)."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence

MAX_SAMPLE = 4000  # per side; ranks of larger samples are estimated from an even subsample


def _subsample(xs: Sequence[float], seed: int) -> list[float]:
    if len(xs) <= MAX_SAMPLE:
        return list(xs)
    return random.Random(seed).sample(list(xs), MAX_SAMPLE)


def mann_whitney_p(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value that a and b come from the same distribution (1.0 when too few)."""
    a, b = _subsample(a, 1), _subsample(b, 2)
    n1, n2 = len(a), len(b)
    if n1 < 5 or n2 < 5:
        return 1.0
    pooled = sorted([(x, 0) for x in a] + [(x, 1) for x in b])
    ranks = [0.0] * len(pooled)
    ties = 0.0
    i = 0
    while i < len(pooled):
        j = i
        while j + 1 < len(pooled) and pooled[j + 1][0] == pooled[i][0]:
            j += 1
        rank = (i + j) / 2 + 1
        for k in range(i, j + 1):
            ranks[k] = rank
        t = j - i + 1
        ties += t**3 - t
        i = j + 1
    r1 = sum(r for r, (_, side) in zip(ranks, pooled, strict=True) if side == 0)
    u1 = r1 - n1 * (n1 + 1) / 2
    n = n1 + n2
    var = n1 * n2 / 12 * ((n + 1) - ties / (n * (n - 1)))
    if var <= 0:
        return 1.0
    z = (u1 - n1 * n2 / 2) / math.sqrt(var)
    return math.erfc(abs(z) / math.sqrt(2))


def mann_whitney_hist(a: Mapping[int, int], b: Mapping[int, int]) -> float:
    """The same test on two histograms (bucket -> count): values in one bucket are ties.

    Exact for bucketed data, in one pass over the buckets, whatever the event counts.
    """
    n1, n2 = sum(a.values()), sum(b.values())
    if n1 < 5 or n2 < 5:
        return 1.0
    u1 = 0.0
    ties = 0.0
    below = 0
    for bucket in sorted(set(a) | set(b)):
        ca, cb = a.get(bucket, 0), b.get(bucket, 0)
        t = ca + cb
        # ranks below + (t + 1) / 2 for each of the t tied values
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
