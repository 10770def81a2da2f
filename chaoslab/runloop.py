"""The run loop's two helpers: what it watches on every tick, and the faults of a phase.

`RunWatch.tick()` runs about five times a second while phases run: it feeds the dead man's
switch its heartbeat and asks whether the watchdog undid the faults, checks that the targets
are alive, samples the probes, checks the stop conditions and redraws the live view. A
condition that holds raises `Abort`.

`ActiveFaults` applies a phase's faults through the write-ahead journal (each entry carries
its deadline: the phase's scheduled end plus the switch's margin, which the watchdog enforces)
and reverts them: in reverse order at the end of a phase, all at once when the run aborts.
"""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable

from chaoslab.analysis.settle import Settler
from chaoslab.context import RunContext
from chaoslab.errors import TargetError
from chaoslab.faults import Fault
from chaoslab.live import LiveView
from chaoslab.probes import ProbeSet
from chaoslab.safety.stop import Abort, StopConditions
from chaoslab.safety.switch import Switch
from chaoslab.signals import SignalState
from chaoslab.targets.base import RunningTarget

TICK = 0.2
STEP_LEASE = 20.0  # seconds the heartbeat is kept for one apply or revert (plus a restart's health wait)
VERIFY_LEASE = 30.0  # a network fault's check takes several delayed handshakes


class RunWatch:
    def __init__(
        self,
        targets: dict[str, RunningTarget],
        probes: ProbeSet,
        stops: StopConditions,
        switch: Switch,
        done: Callable[[], tuple[int, float]] = lambda: (0, 0.0),
        say: Callable[[str], None] = lambda line: None,
        settler: Settler | None = None,
    ) -> None:
        self.targets = targets
        # the analysis filled as the run goes: told on every tick that passed its checks
        self.settler = settler
        self.probes = probes
        self.stops = stops
        self.switch = switch
        # the load's requests so far and the seconds they took: the probes' cost is policed against them
        self.done = done
        self.say = say

    def tick(self, live: LiveView | None = None) -> None:
        began = time.time()
        self.switch.beat()
        if (trip := self.switch.check()) is not None:
            raise Abort(trip)
        for t in self.targets.values():
            if not t.alive() and not t.down_expected:
                if (trip := self.stops.target_exited(t)) is not None:
                    raise Abort(trip)
                raise TargetError(
                    f"target {t.name} exited (code {t.proc.returncode if t.proc else '?'}) during the run",
                    "see its log in the run's work directory",
                )
        self.probes.sample()
        for line in self.probes.police(*self.done()):
            self.say(line)
        if (trip := self.stops.check(self.probes)) is not None:
            raise Abort(trip)
        if self.settler is not None:
            read = time.time()
            ongoing, ended = self.probes.stall_state()
            self.settler.advance(began, self.probes.samples, ongoing, ended, read)
        if live is not None:
            live.tick()

    def wait_until(self, deadline: float, live: LiveView | None = None) -> None:
        self.tick(live)
        while (left := deadline - time.time()) > 0:
            time.sleep(min(TICK, left))
            self.tick(live)


class ActiveFaults:
    """The faults of one phase that are applied, each with its journal entry."""

    def __init__(self, ctx: RunContext, signals: SignalState, switch: Switch) -> None:
        self.ctx = ctx
        self.signals = signals
        self.switch = switch
        self.items: list[tuple[Fault, int]] = []
        self._reverted: set[int] = set()

    @property
    def faults(self) -> list[Fault]:
        return [f for f, _ in self.items]

    def apply(self, fault: Fault, deadline: float) -> None:
        """Journal it (with the epoch time by which the watchdog undoes it whatever happens), then
        apply it; never without a live switch."""
        if (trip := self.switch.check()) is not None:
            raise Abort(trip)
        journal = self.ctx.journal
        seq = journal.intent(
            "fault",
            kind=fault.kind,
            target=fault.spec.target,
            deadline=round(deadline, 3),
            **fault.journal_record(),
        )
        self.items.append((fault, seq))
        with self.signals.shielding(), self.switch.busy(_lease(fault)):
            fault.apply(lambda seq=seq, **facts: journal.update(seq, **facts))
            journal.update(seq, applied=True)

    def extend(self, lease: float) -> None:
        """Move the deadline of every fault not reverted yet to the end of a step allowed `lease`
        seconds (a verification, a revert) plus the margin: the watchdog undoes a fault whose
        phase is over only once the step that ends it is late, not while it runs in its time
        (a network check of a 1 s delay takes several seconds past the phase's end)."""
        until = round(time.time() + lease + self.ctx.scenario.switch.margin, 3)
        for _, seq in self.items:
            if seq not in self._reverted:
                self.ctx.journal.update(seq, deadline=until)

    def revert_all(self, at_once: bool = False, since: float | None = None) -> dict[str, float]:
        """Revert every fault not reverted yet: newest first, or all at once in threads (an abort).
        Returns the seconds from `since` (monotonic; default: now) to each fault's revert."""
        todo = [(f, seq) for f, seq in reversed(self.items) if seq not in self._reverted]
        origin = since if since is not None else time.monotonic()
        took: dict[str, float] = {}
        errors: list[BaseException] = []
        lock = threading.Lock()

        def revert(fault: Fault, seq: int) -> None:
            try:
                fault.revert()
            except BaseException as exc:  # handed to the run loop's thread below
                errors.append(exc)
                return
            self.ctx.journal.undone(seq)
            with lock:
                self._reverted.add(seq)
                took[_name(fault, took)] = round(time.monotonic() - origin, 3)

        if not todo:
            return took
        lease = max(_lease(f) for f, _ in todo)
        self.extend(lease)
        with self.signals.shielding(), self.switch.busy(lease):
            if at_once and len(todo) > 1:
                _in_threads([functools.partial(revert, f, s) for f, s in todo])
            else:
                for fault, seq in todo:
                    revert(fault, seq)
        if errors:
            raise errors[0]
        return took


def _lease(fault: Fault) -> float:
    return STEP_LEASE + fault.target.service.health.timeout


def _name(fault: Fault, taken: dict[str, float]) -> str:
    name, n = fault.describe(), 2
    while name in taken:
        name, n = f"{fault.describe()} #{n}", n + 1
    return name


def _in_threads(calls: list[Callable[[], None]]) -> None:
    threads = [threading.Thread(target=c, name="revert", daemon=True) for c in calls]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
