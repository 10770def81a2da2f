"""The live view while a run goes: phase, elapsed, request rate, p50/p99, active faults.

On a terminal it redraws one line in place (rich Live); elsewhere (CI logs) it prints a
line every few seconds.
"""

from __future__ import annotations

import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.text import Text

from chaoslab.context import RunContext
from chaoslab.load.records import Request, quantile
from chaoslab.load.runner import LoadRunner

WINDOW = 3.0
PLAIN_EVERY = 5.0


class LiveView:
    def __init__(self, ctx: RunContext, load: LoadRunner, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        self.recent: deque[Request] = deque()
        self.name = ""
        self.start = 0.0
        self.duration = 0.0
        self.faults: list[str] = []
        self._last_plain = 0.0
        self._live: Live | None = None
        ctx.events.subscribe("requests", self._on_requests)

    def _on_requests(self, batch: list[Request]) -> None:
        self.recent.extend(batch)

    def phase(self, name: str, start: float, duration: float, faults: list[str]) -> None:
        self.name, self.start, self.duration, self.faults = name, start, duration, faults
        if self.console.is_terminal and self._live is None:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self.tick(force=True)

    def render(self) -> Text:
        now = time.time()
        while self.recent and self.recent[0].end < now - WINDOW:
            self.recent.popleft()
        lat = sorted(r.latency for r in self.recent if r.ok)
        errors = sum(1 for r in self.recent if not r.ok)
        elapsed = max(0.0, now - self.start)
        return Text(
            f"{self.name:<12} {elapsed:5.1f}/{self.duration:.0f}s  {len(self.recent) / WINDOW:6.1f} req/s  "
            f"p50 {quantile(lat, 0.5) * 1000:7.1f}ms  p99 {quantile(lat, 0.99) * 1000:7.1f}ms  "
            f"errors {errors:<4d} faults: {', '.join(self.faults) or 'none'}"
        )

    def tick(self, force: bool = False) -> None:
        if self._live is not None:
            self._live.update(self.render())
        elif force or time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.monotonic()
            self.console.print(self.render(), highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
