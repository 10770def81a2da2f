"""Two runs compared, as data: built by chaoslab/analysis/compare.py, rendered by the writers.

Schema `chaoslab.compare/1` (documented in reports/README.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from enum import StrEnum

SCHEMA = "chaoslab.compare/1"


class Change(StrEnum):
    SAME = "same"
    BETTER = "better"
    WORSE = "worse"


@dataclass(frozen=True)
class Threshold:
    """A change counts from max(ms, fraction x the base run's value) on, and only when significant."""

    ms: float
    fraction: float

    def floor_ms(self, base_ms: float) -> float:
        return max(self.ms, self.fraction * base_ms)

    def describe(self) -> str:
        return f"max({self.ms:g} ms, {self.fraction:.0%} of the base run's value)"


@dataclass(frozen=True)
class RunRef:
    path: str
    scenario: str
    run_id: str
    started: float


@dataclass(frozen=True)
class MetricChange:
    """The client's p50 or p99 in one phase, base run against current run."""

    metric: str  # p50, p99
    base_ms: float
    current_ms: float
    change_ms: float
    p_value: float  # p50: Mann-Whitney on the two histograms; p99: the share beyond the base's p99
    significant: bool
    counted: bool  # significant and beyond the threshold


@dataclass(frozen=True)
class LayerChange:
    """One layer at one target in one phase: its time per client request in both runs."""

    layer: str
    target: str
    base_ms: float
    current_ms: float
    change_ms: float
    explained: float  # change_ms / the client's change in mean latency
    # the change in the layer's added time against each run's own baseline (compared phases only)
    added_change_ms: float | None = None


@dataclass(frozen=True)
class PhaseComparison:
    phase: str  # the current run's phase
    base_phase: str  # the base run's phase it is compared with (same name, else the same position)
    status: Change
    layer: str | None  # the layer whose change explains the client's, if one does
    target: str | None
    reason: str
    base_requests: int
    current_requests: int
    client_mean_change_ms: float
    client: list[MetricChange]
    layers: list[LayerChange]

    def sentence(self) -> str:
        against = f" (against {self.base_phase})" if self.base_phase != self.phase else ""
        where = f", {self.layer} at {self.target}" if self.layer else ""
        changes = ", ".join(
            f"{m.metric} {m.change_ms:+.1f} ms" + ("" if m.significant else " (n.s.)") for m in self.client
        )
        return f"phase {self.phase}{against}: {self.status}{where}: client {changes}; {self.reason}"


@dataclass
class Comparison:
    base: RunRef
    current: RunRef
    threshold: Threshold
    phases: list[PhaseComparison]
    notes: list[str] = field(default_factory=list)
    schema: str = SCHEMA

    @property
    def worse(self) -> bool:
        return any(p.status is Change.WORSE for p in self.phases)

    def to_json(self) -> dict[str, object]:
        data = asdict(self)
        data["worse"] = self.worse
        return data
