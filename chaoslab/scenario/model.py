"""The typed scenario: what the YAML says once it has been validated."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path


class Status(StrEnum):
    """The outcome of one fault phase."""

    ABSORBED = "absorbed"
    NO_CHANGE = "no-change"
    INCONCLUSIVE = "inconclusive"
    INVALID = "invalid"


@dataclass(frozen=True)
class TargetSpec:
    name: str
    service: str
    upstream: str | None = None
    # Requests an upstream connection carries before it is closed (1: a fresh TLS
    # handshake at the upstream for every request).
    requests_per_connection: int = 1


@dataclass(frozen=True)
class RequestSpec:
    name: str
    path: str
    weight: int = 1


@dataclass(frozen=True)
class LoadSpec:
    protocol: str
    target: str
    rate: float  # arrivals per second (open model)
    concurrency: int  # most requests in flight at once
    requests: tuple[RequestSpec, ...]
    timeout: float = 10.0  # a request not answered in this time counts as an error


@dataclass(frozen=True)
class FaultSpec:
    """Common part of every fault; each fault kind subclasses it with its own parameters."""

    kind: str
    target: str
    path: str  # YAML path of this fault, for messages


@dataclass(frozen=True)
class PhaseSpec:
    name: str
    duration: float
    faults: tuple[FaultSpec, ...] = ()
    # Compare this phase against the baseline and give it a verdict (fault phases always
    # are; a fault-free phase with `compare: true` is a control).
    compare: bool = False


@dataclass(frozen=True)
class Expectation:
    phase: str
    path: str
    absorbed_by: str | None = None
    target: str | None = None
    status: Status | None = None
    client_p50_below: float | None = None
    client_p99_below: float | None = None
    error_rate_below: float | None = None

    def describe(self) -> str:
        parts = []
        if self.absorbed_by:
            parts.append(f"absorbed by {self.absorbed_by}" + (f" at {self.target}" if self.target else ""))
        if self.status:
            parts.append(f"status {self.status}")
        if self.client_p50_below is not None:
            parts.append(f"client p50 < {self.client_p50_below * 1000:g}ms")
        if self.client_p99_below is not None:
            parts.append(f"client p99 < {self.client_p99_below * 1000:g}ms")
        if self.error_rate_below is not None:
            parts.append(f"error rate < {self.error_rate_below:.1%}")
        return f"{self.phase}: " + ", ".join(parts)


@dataclass(frozen=True)
class Scenario:
    name: str
    description: str
    runtime: str
    targets: Mapping[str, TargetSpec]
    load: LoadSpec
    phases: tuple[PhaseSpec, ...]
    expect: tuple[Expectation, ...] = ()
    source: Path | None = field(default=None, compare=False)

    @property
    def duration(self) -> float:
        return sum(p.duration for p in self.phases)

    @property
    def compared_phases(self) -> tuple[PhaseSpec, ...]:
        return tuple(p for p in self.phases[1:] if p.compare)
