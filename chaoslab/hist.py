"""The one histogram scheme used for every layer (see bpf/chaoslab.bpf.h).

Log-linear buckets over nanoseconds: values below 8 ns have their own bucket, above that
each power of two is split into 8 equal sub-buckets. Quantiles interpolate inside a bucket,
so their error is below half a bucket width (under 6.25%).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

SUB_BITS = 3
SUB = 1 << SUB_BITS


def bucket_of(ns: int) -> int:
    if ns < SUB:
        return max(ns, 0)
    e = ns.bit_length() - 1
    return ((e - SUB_BITS + 1) << SUB_BITS) | ((ns >> (e - SUB_BITS)) & (SUB - 1))


def bucket_bounds(bucket: int) -> tuple[int, int]:
    """[low, high) of a bucket, in ns."""
    if bucket < SUB:
        return bucket, bucket + 1
    e = (bucket >> SUB_BITS) + SUB_BITS - 1
    width = 1 << (e - SUB_BITS)
    low = (SUB + (bucket & (SUB - 1))) * width
    return low, low + width


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    sum_ns: int = 0

    @classmethod
    def of(cls, values_ns: Iterable[int]) -> Histogram:
        h = cls()
        for v in values_ns:
            h.record(v)
        return h

    def record(self, ns: int) -> None:
        b = bucket_of(ns)
        self.buckets[b] = self.buckets.get(b, 0) + 1
        self.sum_ns += ns

    @property
    def count(self) -> int:
        return sum(self.buckets.values())

    @property
    def mean_ns(self) -> float:
        n = self.count
        return self.sum_ns / n if n else 0.0

    def quantile_ns(self, q: float) -> float:
        n = self.count
        if n == 0:
            return 0.0
        rank = q * n
        seen = 0
        for b in sorted(self.buckets):
            c = self.buckets[b]
            if seen + c >= rank:
                low, high = bucket_bounds(b)
                return low + (high - low) * ((rank - seen) / c)
            seen += c
        return float(bucket_bounds(max(self.buckets))[1])

    def __add__(self, other: Histogram) -> Histogram:
        out = dict(self.buckets)
        for b, c in other.buckets.items():
            out[b] = out.get(b, 0) + c
        return Histogram(out, self.sum_ns + other.sum_ns)

    def __sub__(self, other: Histogram) -> Histogram:
        """What was recorded between snapshot `other` and snapshot `self`."""
        out = {b: c - other.buckets.get(b, 0) for b, c in self.buckets.items()}
        return Histogram({b: c for b, c in out.items() if c > 0}, self.sum_ns - other.sum_ns)

    def to_json(self) -> Mapping[str, object]:
        return {"buckets": {str(b): c for b, c in sorted(self.buckets.items())}, "sum_ns": self.sum_ns}
