"""A fault at a target on a remote Docker engine, carried out by chaoslab's helper on that
engine's host (chaoslab/agent.py): the same kind's code, run there on the target as that host
sees it. The run's side holds the fault as the kind does (its layer, expected shift, report
parameters) and forwards its life cycle: preflight, apply, verify, revert.

The run's journal entry names the helper, and gets what the helper journaled of the fault there
(`applied_there`: its PIDs, addresses, original values as that host has them). After a killed
run, `recover` stops the helper (its watchdog undoes what it holds) and runs the kind's own undo
on that host from that record (targets/hosthelper.py).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from chaoslab import wire
from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults.base import Fault, Verification
from chaoslab.layers import Layer
from chaoslab.scenario.fields import Fields
from chaoslab.scenario.model import FaultSpec, TargetSpec

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

PREPARE_TIMEOUT = 60.0  # a preflight there (a Go binary's symbols read, a tool checked)
STEP_TIMEOUT = 120.0  # an apply, a verification or a revert there
_numbers = itertools.count(1)


class FarFault(Fault):
    kind = "far"
    layer = Layer.APP

    def __init__(self, inner: Fault) -> None:
        super().__init__(inner.spec, inner.target)
        self.inner = inner
        self.kind = inner.kind  # type: ignore[misc]
        self.layer = inner.layer  # type: ignore[misc]
        self.number = next(_numbers)

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        raise NotImplementedError("a far fault is made from its kind's, never parsed")

    @property
    def _helper(self) -> Any:
        helper = self.target.helper
        if helper is None:
            raise PreflightError(
                f"{self.spec.path}: the {self.kind} fault at {self.target.name} needs chaoslab's helper on "
                f"the {self.target.remote}, which this run did not start",
                "report this: the Docker runtime starts it for every fault at a remote engine's target",
            )
        return helper

    def preflight(self) -> None:
        from chaoslab.targets.hosthelper import described

        self._helper.call(
            "prepare",
            PREPARE_TIMEOUT,
            fault=self.number,
            kind=self.kind,
            spec=wire.dump(self.spec),
            target=described(self.target),
        )

    def plan(self) -> list[str]:
        return [f"inside chaoslab's helper on the {self.target.remote}: {line}" for line in self.inner.plan()]

    def journal_record(self) -> dict[str, object]:
        return {"through_helper": True, **self._helper.record}

    def apply(self, note: Callable[..., None]) -> None:
        reply = self._helper.call("apply", STEP_TIMEOUT, fault=self.number)
        note(applied_there=reply.get("record") or {})

    def verify(self) -> Verification:
        reply = self._helper.call("verify", STEP_TIMEOUT, fault=self.number)
        try:
            v = wire.load(Verification, reply.get("verification"))
        except (TypeError, ValueError) as exc:
            raise FaultError(
                f"{self.describe()}: the helper's verification cannot be read: {exc}",
                "use one chaoslab on both sides",
            ) from exc
        return Verification(v.observed, v.detail, f"{v.mechanism}, on the engine's host", v.measured)

    def revert(self) -> None:
        self._helper.call("revert", STEP_TIMEOUT, fault=self.number)

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        from chaoslab.targets import hosthelper

        return hosthelper.recover(str(record.get("kind")), record)

    # -- what the kind says of itself ----------------------------------------------------------

    def expected_layer(self) -> Layer:
        return self.inner.expected_layer()

    def expected_shift(self) -> float | None:
        return self.inner.expected_shift()

    def also_shows_in(self, targets: Mapping[str, TargetSpec]) -> tuple[tuple[Layer, str], ...]:
        return self.inner.also_shows_in(targets)

    def takes_target_away(self) -> bool:
        return self.inner.takes_target_away()

    def unmeasurable(self) -> dict[tuple[Layer, str], str]:
        return self.inner.unmeasurable()

    def shows_as_time(self) -> bool:
        return self.inner.shows_as_time()

    def params(self) -> dict[str, object]:
        return self.inner.params()

    def describe(self) -> str:
        return self.inner.describe()


def make_fault(inner: Fault) -> Fault:
    """The fault as the run holds it: through the helper when its target is on a remote engine
    and the engine's own API does not do it."""
    t: RunningTarget = inner.target
    if t.remote and not inner.through_engine:
        return FarFault(inner)
    return inner
