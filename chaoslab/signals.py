"""SIGINT/SIGTERM handling that can stop a run but can never skip its revert.

The first signal raises `Interrupted` in the main thread. Once the run is unwinding
(`shield()`), further signals are only counted: a second Ctrl-C must not abort a revert.
The previous handlers are restored on exit.
"""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType

from chaoslab.errors import Interrupted


@dataclass
class SignalState:
    shielded: bool = False
    received: int = 0
    deferred: str = ""

    def shield(self) -> None:
        self.shielded = True

    @contextmanager
    def shielding(self) -> Iterator[None]:
        """Run a critical section (a revert) that a signal must not cut short; a signal that
        arrives inside it is raised once the section is done."""
        was = self.shielded
        self.shielded = True
        try:
            yield
        finally:
            self.shielded = was
            if not was and self.deferred:
                name, self.deferred = self.deferred, ""
                self.shielded = True
                raise Interrupted(f"interrupted by {name}: faults reverted, targets stopped")


@contextmanager
def exit_signals(say: object = print) -> Iterator[SignalState]:
    state = SignalState()

    def handler(signum: int, _frame: FrameType | None) -> None:
        state.received += 1
        name = signal.Signals(signum).name
        if state.shielded:
            state.deferred = state.deferred or name
            if callable(say):
                say(f"{name} received: reverting faults and stopping targets first, please wait")
            return
        state.shield()
        raise Interrupted(f"interrupted by {name}: faults reverted, targets stopped")

    previous = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        yield state
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
