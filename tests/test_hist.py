from __future__ import annotations

import random

import pytest

from chaoslab.hist import Histogram, bucket_bounds, bucket_of


def test_every_value_falls_inside_its_bucket() -> None:
    rng = random.Random(7)
    values = list(range(0, 300)) + [rng.randrange(1, 1 << 40) for _ in range(5000)]
    for v in values:
        low, high = bucket_bounds(bucket_of(v))
        assert low <= v < high, v


def test_buckets_are_contiguous_and_at_most_an_eighth_wide() -> None:
    prev_high = 0
    for b in range(0, 8 * 40):
        low, high = bucket_bounds(b)
        assert low == prev_high
        assert (high - low) <= max(1, low / 8)
        prev_high = high


def test_quantiles_are_within_a_bucket() -> None:
    rng = random.Random(3)
    values = sorted(int(rng.lognormvariate(14, 1)) for _ in range(20000))
    h = Histogram.of(values)
    for q in (0.5, 0.9, 0.99):
        exact = values[int(q * len(values)) - 1]
        assert h.quantile_ns(q) == pytest.approx(exact, rel=0.0625)
    assert h.count == 20000
    assert h.mean_ns == pytest.approx(sum(values) / len(values))


def test_difference_of_snapshots_is_what_happened_between() -> None:
    first = Histogram.of([1000, 2000, 3000])
    later = Histogram.of([1000, 2000, 3000, 40_000, 40_000])
    between = later - first
    assert between.count == 2
    assert between.sum_ns == 80_000
    assert between.quantile_ns(0.5) == pytest.approx(40_000, rel=0.0625)
