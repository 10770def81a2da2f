"""The life cycle every fault kind shares: preflight, apply, verify, revert.

`revert()` must be safe to call twice and after a failed `apply()`. Before `apply()` runs,
the run writes `journal_record()` to the write-ahead journal, so `recover()` can undo the
fault from that record alone after the run was killed.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from chaoslab.layers import Layer
from chaoslab.scenario.fields import Fields, Problems
from chaoslab.scenario.model import FaultSpec, TargetSpec

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget


@dataclass(frozen=True)
class Verification:
    """What a fault's own mechanism saw while the fault was active."""

    observed: bool
    detail: str
    mechanism: str
    # The measurements behind `observed`, by name (ms, counts), for the report.
    measured: dict[str, float] = field(default_factory=dict)


class Fault(ABC):
    kind: ClassVar[str]
    # The layer in which this fault's effect must show; if it does not, the phase is invalid.
    layer: ClassVar[Layer]

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        self.spec = spec
        self.target = target

    @classmethod
    @abstractmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        """Read this kind's parameters; problems go to `fields.problems`."""

    @classmethod
    def check(cls, spec: FaultSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        """Checks that need the rest of the scenario (other targets); problems go to `problems`."""
        return None

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        """What of its target this fault acts on alone, as nouns ('CPU limit'): a second fault of the
        same phase on the same target may not claim it, nor a narrower claim that starts with it."""
        return ()

    @abstractmethod
    def preflight(self) -> None:
        """Check tools, privileges and kernel features; raise PreflightError naming the fix."""

    @abstractmethod
    def plan(self) -> list[str]:
        """The commands and mechanism this fault would use, without running anything."""

    @abstractmethod
    def journal_record(self) -> dict[str, object]:
        """Everything `recover()` needs to undo the fault; written before `apply()`."""

    @abstractmethod
    def apply(self, note: Callable[..., None]) -> None:
        """Apply the fault; `note(**facts)` adds facts to its journal record (e.g. a helper's PID)."""

    @abstractmethod
    def verify(self) -> Verification: ...

    @abstractmethod
    def revert(self) -> None: ...

    @classmethod
    @abstractmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        """Undo what a killed run left, from its journal record; return what was done."""

    def locks(self) -> dict[str, str]:
        """What this fault acts on, as lock keys (key -> the thing in words): one run at a time may
        hold each (chaoslab/safety/locks.py). Every fault holds its target's process; a kind adds
        the cgroup or the network namespace it changes."""
        from chaoslab import proc

        t = self.target
        if t.container is not None:  # on a remote engine: its PID is the engine host's
            where = f"{t.container.engine.url}/{t.container.id}"
            return {f"container:{where}": f"target {t.name} (container {t.container.name} on the {t.remote})"}
        return {f"process:{t.pid}@{proc.start_time(t.pid)}": f"target {t.name} (pid {t.pid})"}

    def expected_layer(self) -> Layer:
        """The layer this fault's effect must show in (by default the kind's `layer`)."""
        return self.layer

    def expected_shift(self) -> float | None:
        """Seconds this fault should add to each event of its layer, when it can say."""
        return None

    def also_shows_in(self, targets: Mapping[str, TargetSpec]) -> tuple[tuple[Layer, str], ...]:
        """Other (layer, target) pairs where this fault's own effect shows, besides its
        expected layer at its target: a cause found there is this fault's, not a side effect."""
        return ()

    def unmeasurable(self) -> dict[tuple[Layer, str], str]:
        """(layer, target) -> why no probe can time this fault's effect there, though the layer
        is measured (the verdict is then inconclusive, with the reason, not invalid)."""
        return {}

    def takes_target_away(self) -> bool:
        """The fault takes its target off the request path for its phase (killed, kept down):
        its layer there has no events by design, and the verdict looks for what absorbed it."""
        return False

    def shows_as_time(self) -> bool:
        """The fault's effect is time added to its layer. Not for a fault whose effect is
        failed calls alone (a syscall errno): its receipt counts them, the client's errors show
        them, and no layer need slow down."""
        return True

    def params(self) -> dict[str, object]:
        """The fault's parameters as given, for the report."""
        skip = {"kind", "target", "path"}
        return {k: v for k, v in vars(self.spec).items() if k not in skip}

    def describe(self) -> str:
        return f"{self.kind} on {self.spec.target}"

    # The kind acts on a remote Docker engine's container through the engine's API alone (no
    # helper on the engine's host): the runtime lets it at such a target.
    through_engine = False
    # Otherwise the kind acts on such a container from chaoslab's helper on the engine's host
    # (chaoslab/agent.py): it needs nothing of the run's own machine.
    through_helper = True


def own_cgroup(target: RunningTarget, what: str) -> None:
    """A cgroup-wide fault (a CPU limit, a freeze) on an attached target only when its cgroup
    holds nothing but it: chaoslab limits or stops nothing it was not pointed at."""
    if not target.attached:
        return
    from chaoslab.errors import PreflightError
    from chaoslab.proc import descendants

    mine = {target.pid, *descendants(target.pid)}
    others = sorted(target.cgroup.pids() - mine)
    if others:
        dirs = ", ".join(str(d) for d in target.cgroup.dirs[:1])
        raise PreflightError(
            f"{what} on {target.name} acts on its cgroup ({dirs}), which holds {len(others)} other "
            f"processes too (pids {', '.join(map(str, others[:8]))}): chaoslab limits or stops nothing it "
            "was not pointed at",
            "run it in a cgroup of its own (a container, a systemd unit), or attach to its container",
        )
