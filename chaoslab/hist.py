"""The one histogram scheme used for every layer (see bpf/chaoslab.bpf.h).

Log-linear buckets over nanoseconds: values below 2^b ns have their own bucket, above
that each power of two is split into 2^b equal sub-buckets. Quantiles interpolate inside a
bucket, so their error is below a bucket's width (about half of it on average). The probes use
b = 3 (8 sub-buckets, within 12.5%: cheap to keep in a BPF map); the client's latencies use b = 10
(`FineHistogram`: 1024 sub-buckets, within 0.1% (a bucket), three significant digits like
HdrHistogram's default), since every request's exact time is known.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import ClassVar, Self

SUB_BITS = 3


def bucket_of(ns: int, sub_bits: int = SUB_BITS) -> int:
    sub = 1 << sub_bits
    if ns < sub:
        return max(ns, 0)
    e = ns.bit_length() - 1
    return ((e - sub_bits + 1) << sub_bits) | ((ns >> (e - sub_bits)) & (sub - 1))


def bucket_bounds(bucket: int, sub_bits: int = SUB_BITS) -> tuple[int, int]:
    """[low, high) of a bucket, in ns."""
    sub = 1 << sub_bits
    if bucket < sub:
        return bucket, bucket + 1
    e = (bucket >> sub_bits) + sub_bits - 1
    width = 1 << (e - sub_bits)
    low = (sub + (bucket & (sub - 1))) * width
    return low, low + width


@dataclass
class Histogram:
    buckets: dict[int, int] = field(default_factory=dict)
    sum_ns: int = 0
    sub_bits: ClassVar[int] = SUB_BITS

    @classmethod
    def of(cls, values_ns: Iterable[int]) -> Self:
        h = cls()
        for v in values_ns:
            h.record(v)
        return h

    def record(self, ns: int) -> None:
        b = bucket_of(ns, self.sub_bits)
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
                low, high = bucket_bounds(b, self.sub_bits)
                return low + (high - low) * ((rank - seen) / c)
            seen += c
        return float(bucket_bounds(max(self.buckets), self.sub_bits)[1])

    def __add__(self, other: Self) -> Self:
        out = dict(self.buckets)
        for b, c in other.buckets.items():
            out[b] = out.get(b, 0) + c
        return type(self)(out, self.sum_ns + other.sum_ns)

    def __sub__(self, other: Self) -> Self:
        """What was recorded between snapshot `other` and snapshot `self`."""
        out = {b: c - other.buckets.get(b, 0) for b, c in self.buckets.items()}
        return type(self)({b: c for b, c in out.items() if c > 0}, self.sum_ns - other.sum_ns)

    @classmethod
    def from_json(cls, data: object) -> Self:
        """The inverse of to_json; ValueError when `data` is not a histogram of this scheme."""
        if not isinstance(data, Mapping) or not isinstance(data.get("buckets"), Mapping):
            raise ValueError("not a histogram: expected an object with buckets")
        if data.get("sub_bits") != cls.sub_bits:
            raise ValueError(f"sub_bits {data.get('sub_bits')!r}, expected {cls.sub_bits}")
        sum_ns = data.get("sum_ns", 0)
        try:
            buckets = {int(b): int(c) for b, c in data["buckets"].items()}
        except (TypeError, ValueError):
            raise ValueError("buckets must map bucket numbers to counts") from None
        if not isinstance(sum_ns, int) or any(c < 0 for c in buckets.values()):
            raise ValueError("sum_ns must be an integer and counts non-negative")
        return cls(buckets, sum_ns)

    def to_json(self) -> Mapping[str, object]:
        return {
            "sub_bits": self.sub_bits,
            "buckets": {str(b): c for b, c in sorted(self.buckets.items())},
            "sum_ns": self.sum_ns,
        }


@dataclass
class FineHistogram(Histogram):
    """The client's latencies: 1024 sub-buckets per power of two (within 0.1%: a bucket)."""

    sub_bits: ClassVar[int] = 10


@dataclass
class TimelineHistogram(Histogram):
    """A second of the client's timeline: 32 sub-buckets per power of two (within 3%). A second
    at 1,500 requests/s fills about 150 buckets (5 KB) where a FineHistogram fills 1,100 (74 KB):
    the timeline is what grows with a run's length."""

    sub_bits: ClassVar[int] = 5
