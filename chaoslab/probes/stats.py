"""The kernel's BPF run-time statistics, on only part of the time.

While they are on, every BPF program run on the machine reads the clock twice more to add
its time to the program's counters: about 80 ns a run under this machine's hypervisor, as
much as the syscall probe's own program on a syscall of a process that is no target. Left
on for a whole run they would double what the tracepoint probes cost every process. So the
probes sample them: on for WINDOW seconds at the start of every PERIOD (10% of the time),
and the probes' cost is scaled from the windows to the whole run (`chaoslab.probes.set`).
The first window opens FIRST seconds after sampling starts, not at once: a probe's first
runs create its map entries, a one-time cost that a window would multiply by the period.

A fault that reads its own programs' time per call (the syscall fault's selector) holds
them on while it is applied: a ratio needs no scaling, and its phase is short. Listeners are
told at each edge (on, off) so that they can count what happened while the counters ran.
One gate per process: the kernel's switch is one for the whole machine.

Each flip of that switch is a static key: the kernel live-patches its text and syncs every
CPU. Cheap on hardware, but an emulated machine (QEMU's TCG, the kernel lane) races on
patched text: there CHAOSLAB_BPF_STATS=always keeps them on for as long as probes are
attached, one flip each way, and every figure stays exact (scaled by 1).
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable

from chaoslab.probes.libbpf import enable_stats

WINDOW = 0.5  # seconds on ...
PERIOD = 5.0  # ... at the start of every PERIOD seconds while sampling
FIRST = 1.0  # seconds from the start of sampling to the first window
ALWAYS = os.environ.get("CHAOSLAB_BPF_STATS", "sampled") == "always"  # one window, the whole time


class StatsGate:
    def __init__(
        self, window: float = WINDOW, period: float = PERIOD, first: float = FIRST, always: bool = ALWAYS
    ) -> None:
        self.window, self.period, self.first, self.always = window, period, first, always
        self._lock = threading.RLock()
        self._fd: int | None = None
        self._holds = 0
        self._samplers = 0
        self._listeners: list[Callable[[bool], None]] = []
        self._thread: threading.Thread | None = None
        self._wake = threading.Event()
        self._window_until = 0.0  # monotonic end of the open window
        self._next_window = 0.0  # monotonic start of the next one
        self.error: str | None = None  # why sampling stopped (the kernel refused), if it did

    @property
    def on(self) -> bool:
        return self._fd is not None

    def hold(self) -> None:
        """Statistics on until `release`: raises PreflightError where the kernel has none."""
        with self._lock:
            self._holds += 1
            try:
                self._apply()
            except BaseException:
                self._holds -= 1
                raise

    def release(self) -> None:
        with self._lock:
            self._holds = max(0, self._holds - 1)
            self._apply()
        self._wake.set()  # the sampler's thread waits for the window's end again

    def sample(self) -> None:
        """Statistics on in windows until `unsample`, the first one `first` seconds from now.
        Raises PreflightError where the kernel has none."""
        with self._lock:
            if self._fd is None:
                os.close(enable_stats())  # the kernel has them: else the error is raised here
            if self._samplers == 0 and self.always:
                self._window_until = self._next_window = math.inf
            elif self._samplers == 0:  # a fresh start: no window before `first`
                self._window_until = 0.0
                self._next_window = time.monotonic() + self.first
            self._samplers += 1
            try:
                self._apply()  # on at once where always
            except BaseException:
                self._samplers -= 1
                raise
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="bpf-stats", daemon=True)
                self._thread.start()

    def unsample(self) -> None:
        with self._lock:
            self._samplers = max(0, self._samplers - 1)
            self._apply()
        self._wake.set()

    def listen(self, edge: Callable[[bool], None]) -> None:
        """`edge(on)` is called, under the gate's lock, right after the statistics go on and
        right before they go off."""
        with self._lock:
            self._listeners.append(edge)

    def unlisten(self, edge: Callable[[bool], None]) -> None:
        with self._lock:
            if edge in self._listeners:
                self._listeners.remove(edge)

    def _apply(self) -> None:
        want = self._holds > 0 or (self._samplers > 0 and time.monotonic() < self._window_until)
        if want and self._fd is None:
            self._fd = enable_stats()
            self._tell(True)
        elif not want and self._fd is not None:
            try:
                self._tell(False)
            finally:
                os.close(self._fd)  # whatever a listener did: never left on
                self._fd = None

    def _tell(self, on: bool) -> None:
        for edge in list(self._listeners):
            try:
                edge(on)
            except Exception as exc:  # a listener's failure costs its figures, not the gate
                self.error = f"a listener failed at an edge: {exc}"

    def _run(self) -> None:
        while True:
            with self._lock:
                if self._samplers == 0:
                    self._thread = None
                    self._apply()  # off, unless a hold keeps them on
                    return
                now = time.monotonic()
                if now >= self._next_window:
                    self._window_until = now + self.window
                    self._next_window = now + self.period
                try:
                    self._apply()
                except Exception as exc:  # the kernel refused after all: stop sampling
                    self.error = str(getattr(exc, "message", exc))
                    self._samplers = 0
                    continue
                ends = [self._next_window] + ([self._window_until] if self._window_until > now else [])
                wait = min(ends) - now
            self._wake.wait(min(max(0.01, wait), 60.0))
            self._wake.clear()


STATS = StatsGate()
