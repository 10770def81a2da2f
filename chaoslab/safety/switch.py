"""chaoslab's side of the dead man's switch: starts the watchdog (chaoslab/safety/watchdog.py),
feeds it a heartbeat from the run loop, and reads what it did.

The heartbeat is a byte written to a pipe on every tick of the run loop (`beat`). Steps that
are known to take longer than a tick without ticking (applying a fault, verifying one, a revert)
run under a lease (`busy(seconds)`): a thread beats for them, for at most that long, so a step
that hangs still stops the heartbeat once its lease is over. A stopped chaoslab stops every
thread, the lease's too.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from chaoslab.context import RunContext
from chaoslab.errors import PreflightError
from chaoslab.safety.stop import Trip

ARM_TIMEOUT = 60.0  # the watchdog's Python start, on a slow or emulated machine
DONE_TIMEOUT = 60.0  # for the watchdog to finish undoing once it tripped
LEASE_BEAT = 0.5


@dataclass
class _Seen:
    """What the watchdog said so far."""

    armed: bool = False
    trip: dict[str, object] | None = None
    done: dict[str, object] | None = None
    reverted: list[dict[str, object]] = field(default_factory=list)


class Switch:
    def __init__(self, ctx: RunContext) -> None:
        self.ctx = ctx
        self.spec = ctx.scenario.switch
        self.proc: subprocess.Popen[bytes] | None = None
        self._beat_fd = -1
        self._buf = b""
        self._seen = _Seen()
        self._lock = threading.Lock()
        self.gone = False
        self.listeners: list[Callable[[], None]] = []

    # -- life cycle ----------------------------------------------------------------------------

    def start(self) -> None:
        read_end, self._beat_fd = os.pipe()
        fcntl.fcntl(self._beat_fd, fcntl.F_SETFL, fcntl.fcntl(self._beat_fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        argv = [
            sys.executable,
            "-m",
            "chaoslab.safety.watchdog",
            "--journal",
            str(self.ctx.journal.path.resolve()),
            "--within",
            f"{self.spec.within:g}",
            "--chaoslab",
            str(os.getpid()),
        ]
        with (self.ctx.out_dir / "watchdog.log").open("ab") as log:
            self.proc = subprocess.Popen(
                argv, stdin=read_end, stdout=subprocess.PIPE, stderr=log, start_new_session=True
            )
        os.close(read_end)
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        fcntl.fcntl(fd, fcntl.F_SETFL, fcntl.fcntl(fd, fcntl.F_GETFL) | os.O_NONBLOCK)
        deadline = time.monotonic() + ARM_TIMEOUT
        while not self._seen.armed:
            self._read()
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise PreflightError(
                    "the watchdog of the dead man's switch did not start",
                    f"see {self.ctx.out_dir / 'watchdog.log'}",
                )
            time.sleep(0.02)
        self.ctx.journal.set_watchdog(self.proc.pid)
        self.ctx.say(
            f"dead man's switch: watchdog pid {self.proc.pid}; every fault is undone within "
            f"{self.spec.within:g} s of a stall, and {self.spec.margin:g} s after its phase's end"
        )

    def close(self) -> None:
        """Tell the watchdog the run is over (after every revert), and wait for it to exit."""
        if self.proc is None:
            return
        with contextlib.suppress(OSError):
            os.write(self._beat_fd, b"E")
        with contextlib.suppress(OSError):
            os.close(self._beat_fd)
        self._beat_fd = -1
        try:
            self.proc.wait(timeout=DONE_TIMEOUT)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._read()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self.proc = None

    # -- the heartbeat -------------------------------------------------------------------------

    def beat(self) -> None:
        for also in self.listeners:
            also()
        if self._beat_fd < 0:
            return
        with contextlib.suppress(BlockingIOError, BrokenPipeError, OSError):
            os.write(self._beat_fd, b".")

    def also(self, beat: Callable[[], None]) -> None:
        """Beat another switch with this one (a helper's on a remote engine's host): it hears
        the run exactly when this one does. `beat` must not block."""
        self.listeners.append(beat)

    @contextlib.contextmanager
    def busy(self, seconds: float) -> Iterator[None]:
        """Beat for a step that does not tick, for at most `seconds`."""
        done = threading.Event()
        until = time.monotonic() + seconds

        def lease() -> None:
            while not done.wait(LEASE_BEAT) and time.monotonic() < until:
                self.beat()

        self.beat()
        t = threading.Thread(target=lease, name="switch-lease", daemon=True)
        t.start()
        try:
            yield
        finally:
            done.set()
            t.join()
            self.beat()

    # -- what the watchdog did -----------------------------------------------------------------

    def _read(self) -> None:
        if self.proc is None or self.proc.stdout is None:
            return
        with self._lock:
            try:
                chunk = os.read(self.proc.stdout.fileno(), 65536)
            except (BlockingIOError, OSError):
                chunk = b""
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for line in lines:
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                kind = event.get("event") if isinstance(event, dict) else None
                if kind == "armed":
                    self._seen.armed = True
                elif kind == "tripped":
                    self._seen.trip = event
                elif kind == "done":
                    self._seen.done = event
                elif kind == "reverted":
                    self._seen.reverted.append(event)

    def check(self) -> Trip | None:
        """A Trip when the watchdog undid the faults (or is gone), once it has finished."""
        if self.proc is None:
            return None
        self._read()
        if self._seen.trip is None and self.proc.poll() is None:
            return None
        if self._seen.trip is not None and self._seen.done is None:
            self._wait_done()
        return self._trip()

    def _wait_done(self) -> None:
        deadline = time.monotonic() + DONE_TIMEOUT
        while self._seen.done is None and time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                self._read()
                break
            time.sleep(0.02)
            self._read()

    def _trip(self) -> Trip:
        trip, done = self._seen.trip, self._seen.done or {}
        now, mono = time.time(), time.monotonic()
        if trip is None:  # the watchdog exited without a word (killed)
            self.gone = True
            code = self.proc.returncode if self.proc is not None else None
            return Trip(
                "switch",
                f"the watchdog of the dead man's switch exited (code {code}): no fault may stay without it",
                now,
                mono,
            )
        at = trip.get("at")
        revert = done.get("revert_s")
        undo = done.get("trip_to_revert_s")
        reverts = done.get("reverts")
        return Trip(
            str(trip.get("condition", "switch")),
            str(trip.get("reason", "")),
            float(at) if isinstance(at, int | float) else now,
            mono,
            by="watchdog",
            revert_s=float(revert) if isinstance(revert, int | float) else None,
            reverts={str(k): float(v) for k, v in reverts.items()} if isinstance(reverts, dict) else {},
            undo_s=float(undo) if isinstance(undo, int | float) else None,
        )
