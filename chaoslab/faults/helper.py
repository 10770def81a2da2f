"""A native fault helper (uinject, nfqdelay) run as a child that speaks JSON lines.

Every helper prints `{"event": "ready", ...}` once it is in place, `stats` lines while it
runs and `exit` when it has undone its work. It reverts itself on SIGTERM, and through
PR_SET_PDEATHSIG when chaoslab dies. `recover` stops a leftover helper by PID and start time.
"""

from __future__ import annotations

import json
import signal
import subprocess
import threading
from collections.abc import Callable, Mapping

from chaoslab import proc
from chaoslab.errors import FaultError

READY_TIMEOUT = 10.0
STOP_TIMEOUT = 8.0


class Helper:
    def __init__(self, name: str, argv: list[str]) -> None:
        self.name = name
        self.argv = argv
        self.proc: subprocess.Popen[str] | None = None
        self.ready: dict[str, object] = {}
        self.stats: dict[str, object] = {}
        self.exit: dict[str, object] = {}
        self._ready = threading.Event()
        self._reader: threading.Thread | None = None

    def start(self, note: Callable[..., None], what: str) -> None:
        """Start and wait until it is in place; `note` journals its PID before it can act."""
        p = subprocess.Popen(
            self.argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.proc = p
        note(**{f"{self.name}_pid": p.pid, f"{self.name}_start": proc.start_time(p.pid)})
        self._reader = threading.Thread(target=self._read, args=(p,), name=self.name, daemon=True)
        self._reader.start()
        if not self._ready.wait(READY_TIMEOUT):
            err = p.stderr.read() if p.poll() is not None and p.stderr else ""
            self.stop()
            raise FaultError(f"{self.name} did not start {what}: {err.strip() or 'timeout'}")

    def _read(self, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            try:
                event = json.loads(line)
            except json.JSONDecodeError:
                continue
            kind = event.get("event")
            if kind == "ready":
                self.ready = event
                self._ready.set()
            elif kind == "stats":
                self.stats = event
            elif kind == "exit":
                self.exit = self.stats = event

    def latest(self, key: str) -> int:
        value = self.stats.get(key, 0)
        return int(value) if isinstance(value, int | float) else 0

    def stop(self) -> None:
        """SIGTERM (the helper reverts), then SIGKILL if it hangs; safe to call twice."""
        p, self.proc = self.proc, None
        if p is None:
            return
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self._reader is not None:
            self._reader.join(timeout=2)
        for pipe in (p.stdout, p.stderr):
            if pipe is not None:
                pipe.close()

    @staticmethod
    def recover(name: str, record: Mapping[str, object]) -> list[str]:
        pid, start = record.get(f"{name}_pid"), record.get(f"{name}_start")
        if isinstance(pid, int) and proc.kill_if_same(pid, start if isinstance(start, int) else None, wait=8):
            return [f"stopped {name} {pid}"]
        return []
