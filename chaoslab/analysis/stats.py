"""Tests of a shift between two samples: Mann-Whitney U with tie correction (normal
approximation), robust to skew; the share of a sample beyond the other's tail; Welch's test of
the means."""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TypeVar

from chaoslab.hist import Histogram, bucket_bounds

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


def hist_shift_p(a: Histogram, b: Histogram) -> float:
    """p-value that b shifted from a: in its ranks (either way), in its tail alone or in its
    mean (higher), Bonferroni over the three tests; a bucket's events at its middle for the
    mean. 10% of requests slower by a 200 ms retransmission move no rank that matters; they put
    a tenth of the phase above the baseline's p99, and their 200 ms move the mean far more than
    its standard error."""

    def values(h: Histogram) -> dict[float, int]:
        return {sum(bucket_bounds(k, h.sub_bits)) / 2: c for k, c in h.buckets.items()}

    tests = (mann_whitney_hist(a.buckets, b.buckets), tail_shift_p(a.buckets, b.buckets))
    return min(1.0, 3 * min(*tests, mean_shift_p(values(a), values(b))))


MIN_MEAN_SAMPLE = 30  # per side: under it the mean's normal approximation is not trusted


def mean_shift_p(a: Mapping[float, int], b: Mapping[float, int]) -> float:
    """One-sided p-value that b's mean is higher than a's, from two histograms: value -> count.

    The per-request share that attribution reports is a mean, and a few events far out move
    it: the test of what is reported. One outlier alone does not (it raises the standard error
    as much as the mean). Latencies are skewed, and a small sample seldom holds the tail, so
    its variance comes out low: the standard error is the larger of Welch's and the pooled
    variance's (a phase drawn from its baseline's own lognormal, 30 baseline events against
    1,000, was "significant" 5.7% of the time with Welch's alone, never with both)."""
    n1, n2 = sum(a.values()), sum(b.values())
    if n1 < MIN_MEAN_SAMPLE or n2 < MIN_MEAN_SAMPLE:
        return 1.0

    def moments(h: Mapping[float, int], n: int) -> tuple[float, float]:
        mean = sum(v * c for v, c in h.items()) / n
        return mean, sum(c * (v - mean) ** 2 for v, c in h.items()) / (n - 1)

    (m1, v1), (m2, v2) = moments(a, n1), moments(b, n2)
    pooled = ((n1 - 1) * v1 + (n2 - 1) * v2) / (n1 + n2 - 2)
    se = math.sqrt(max(v1 / n1 + v2 / n2, pooled * (1 / n1 + 1 / n2)))
    if se == 0:
        return 1.0 if m2 <= m1 else 0.0
    return 0.5 * math.erfc((m2 - m1) / se / math.sqrt(2))


def tail_shift_p(base: Mapping[Value, int], cur: Mapping[Value, int], q: float = 0.99) -> float:
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
