"""The live view while a run goes: phase, elapsed, request rate, p50/p99, active faults.

On a terminal it redraws one line in place (rich Live); elsewhere (CI logs) it prints a
line every few seconds. It also keeps the run's progress (`RunProgress`: per second and per
phase, from the requests as they stream in) and, when something subscribed to the
`progress` event (the live page of `run --serve`), hands it a partial report about once a
second from the run loop.
"""

from __future__ import annotations

import math
import threading
import time
from collections import deque

from rich.console import Console
from rich.live import Live
from rich.text import Text

from chaoslab.analysis.client import client_row, second_row
from chaoslab.analysis.tally import Tally
from chaoslab.context import RunContext
from chaoslab.load.records import Request, quantile
from chaoslab.load.runner import LoadRunner
from chaoslab.report.model import (
    AbortRecord,
    FaultRecord,
    LiveStatus,
    PhaseRecord,
    Report,
    SecondRow,
)
from chaoslab.scenario.model import FaultSpec, PhaseSpec

WINDOW = 3.0
PLAIN_EVERY = 5.0
PUBLISH_EVERY = 1.0  # seconds between two progress snapshots


class RunProgress:
    """The run so far, binned by due time: fed by the load's tail threads, read by the run loop.

    Quantiles come from histograms (within 0.1%), as the final report's do."""

    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.t0 = 0.0
        self.probes: list[str] = []
        self.seconds: dict[int, Tally] = {}
        self.phases: dict[str, Tally] = {}
        self.done: dict[str, PhaseRecord] = {}
        self.current: PhaseSpec | None = None
        self.active: list[str] = []
        self.abort = ""  # the condition that tripped, in words
        self._lock = threading.Lock()
        self._spans: list[tuple[PhaseSpec, float, float]] = []
        self._rows: dict[int, SecondRow] = {}  # the seconds' rows drawn so far

    def begin(self, t0: float, probes: list[str]) -> None:
        self.t0, self.probes = t0, probes
        offset = 0.0
        for spec in self.ctx.scenario.phases:
            self._spans.append((spec, t0 + offset, t0 + offset + spec.duration))
            offset += spec.duration

    def add(self, batch: list[Request]) -> None:
        if not self._spans or not self.ctx.events.subscribed("progress"):
            return  # no live page reads the progress: nothing to keep
        with self._lock:
            rows = self._rows
            for r in batch:
                if r.due < self.t0:
                    continue
                sec = math.floor(r.due - self.t0)
                if sec not in self.seconds:
                    self.seconds[sec] = Tally.second()
                self.seconds[sec].add(r)
                if sec in rows:  # a late request for a second already drawn
                    del rows[sec]
                spec = next((s for s, a, b in self._spans if a <= r.due < b), None)
                if spec is not None:
                    self.phases.setdefault(spec.name, Tally(detail=False)).add(r)

    def snapshot(self, now: float) -> tuple[Report, LiveStatus]:
        """A partial report (phases planned and done, client rows and seconds so far; no
        layers or verdicts yet) and the live status line."""
        phases = [  # a finished phase as the run recorded it, with its faults' receipts
            self.done.get(spec.name)
            or PhaseRecord(name=spec.name, start=start, end=end, faults=[_planned(f) for f in spec.faults])
            for spec, start, end in self._spans
        ]
        with self._lock:
            client = [
                client_row(spec.name, self.phases[spec.name], min(now, end) - start)
                for spec, start, end in self._spans
                if spec.name in self.phases and start <= now
            ]
            timeline = []  # whole seconds only: the current one is still filling
            for sec, t in sorted(self.seconds.items()):
                if self.t0 + sec + 1 > now:
                    continue
                row = self._rows.get(sec)
                if row is None:  # each second's row is made once (again if a late request came)
                    row = self._rows[sec] = second_row(sec, t, self._phase_at(self.t0 + sec))
                timeline.append(row)
            hists = {name: t.latency.to_json() for name, t in self.phases.items()}
        report = Report(
            scenario=self.ctx.scenario.name,
            run_id=self.ctx.run_id,
            runtime=self.ctx.scenario.runtime,
            started=self.t0,
            probes=self.probes,
            phases=phases,
            client=client,
            layers=[],
            verdicts=[],
            expectations=[],
            timeline=timeline,
            histograms={"phases": hists},
        )
        cur = self.current
        span = next(((a, b) for s, a, b in self._spans if s is cur), (now, now))
        status = LiveStatus(
            now=now,
            phase=cur.name if cur else "starting",
            elapsed=max(0.0, min(now, span[1]) - span[0]),
            duration=cur.duration if cur else 0.0,
            faults=list(self.active),
            final=False,
            abort=self.abort,
        )
        return report, status

    def _phase_at(self, t: float) -> str:
        return next((s.name for s, a, b in self._spans if a <= t < b), "")


def _planned(spec: FaultSpec) -> FaultRecord:
    """A fault whose phase has not ended, as the scenario gives it: no receipt yet."""
    params = {k: v for k, v in vars(spec).items() if k not in {"kind", "target", "path"}}
    return FaultRecord(spec.kind, spec.target, params, "", False, "the receipt comes when the phase ends")


class LiveView:
    def __init__(self, ctx: RunContext, load: LoadRunner, console: Console | None = None) -> None:
        self.console = console or Console(stderr=True)
        # the last WINDOW seconds of requests: extended by the load's tail threads while the
        # run loop (or rich's refresh thread) renders them, so both hold the lock
        self.recent: deque[Request] = deque()
        self._recent_lock = threading.Lock()
        self.name = ""
        self.start = 0.0
        self.duration = 0.0
        self.faults: list[str] = []
        self._last_plain = 0.0
        self._last_publish = 0.0
        self._live: Live | None = None
        self.ctx = ctx
        self.progress = RunProgress(ctx)
        ctx.events.subscribe("requests", self._on_requests)

    def _on_requests(self, batch: list[Request]) -> None:
        horizon = time.time() - WINDOW
        with self._recent_lock:
            self.recent.extend(batch)
            while self.recent and self.recent[0].end < horizon:  # rendered or not, the window's only
                self.recent.popleft()
        self.progress.add(batch)

    def begin(self, t0: float, probes: list[str]) -> None:
        """The load's t0 is known: requests are binned from here on."""
        self.progress.begin(t0, probes)

    def phase(self, name: str, start: float, duration: float, faults: list[str]) -> None:
        self.name, self.start, self.duration, self.faults = name, start, duration, faults
        self.progress.current = next((p for p in self.ctx.scenario.phases if p.name == name), None)
        self.progress.active = faults
        if self.console.is_terminal and self._live is None:
            self._live = Live(self.render(), console=self.console, refresh_per_second=4, transient=True)
            self._live.start()
        self.tick(force=True)

    def render(self) -> Text:
        now = time.time()
        with self._recent_lock:
            while self.recent and self.recent[0].end < now - WINDOW:
                self.recent.popleft()
            recent = list(self.recent)
        lat = sorted(r.latency for r in recent if r.ok)
        errors = sum(1 for r in recent if not r.ok)
        elapsed = max(0.0, now - self.start)
        return Text(
            f"{self.name:<12} {elapsed:5.1f}/{self.duration:.0f}s  {len(recent) / WINDOW:6.1f} req/s  "
            f"p50 {quantile(lat, 0.5) * 1000:7.1f}ms  p99 {quantile(lat, 0.99) * 1000:7.1f}ms  "
            f"errors {errors:<4d} faults: {', '.join(self.faults) or 'none'}"
        )

    def phase_done(self, record: PhaseRecord) -> None:
        """A phase ended: its faults' receipts (what their mechanisms measured) are known."""
        self.progress.done[record.name] = record
        self.progress.active = []
        self.publish(force=True)

    def aborted(self, record: AbortRecord) -> None:
        """A stop condition or the switch tripped: said at once, on the terminal and the page."""
        self.progress.abort = record.sentence()
        self.progress.active = []
        self.faults = []
        self.name = f"ABORTED ({record.condition})"
        self.console.print(Text(record.sentence(), style="bold red"), highlight=False)
        self.tick(force=True)

    def publish(self, force: bool = False) -> None:
        """Hand the progress to the `progress` subscribers, about once a second."""
        now = time.time()
        if not self.ctx.events.subscribed("progress") or (
            not force and now - self._last_publish < PUBLISH_EVERY
        ):
            return
        self._last_publish = now
        report, status = self.progress.snapshot(now)
        self.ctx.events.fire("progress", report=report, status=status)

    def tick(self, force: bool = False) -> None:
        self.publish(force)
        if self._live is not None:
            self._live.update(self.render())
        elif force or time.monotonic() - self._last_plain >= PLAIN_EVERY:
            self._last_plain = time.monotonic()
            self.console.print(self.render(), highlight=False)

    def close(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
