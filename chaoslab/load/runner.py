"""Runs Locust headless as a child process (it monkey-patches its whole process at import,
so it never runs inside the orchestrator) and tails its per-request records."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import TargetError
from chaoslab.load.records import Request, parse_line
from chaoslab.paths import PACKAGE

READY_TIMEOUT = 60.0
LATE_TOLERANCE = 0.010  # a request sent this much after its due time counts as late


@dataclass
class LoadRunner:
    ctx: RunContext
    url: str
    records: list[Request] = field(default_factory=list)
    t0: float | None = None
    _proc: subprocess.Popen[bytes] | None = None
    _seq: int = 0
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    @property
    def path(self) -> Path:
        return self.ctx.work_dir / "requests.tsv"

    def argv(self, warmup: float) -> list[str]:
        load = self.ctx.scenario.load
        duration = self.ctx.scenario.duration
        config = {
            "rate": load.rate,
            "duration": duration,
            "concurrency": load.concurrency,
            "timeout": load.timeout,
            "max_requests": int(load.rate * duration) + 1,
            "requests": [{"name": r.name, "path": r.path, "weight": r.weight} for r in load.requests],
            "records": str(self.path),
        }
        cfg = self.ctx.work_dir / "load.json"
        cfg.write_text(json.dumps(config, indent=1))
        run_time = int(warmup + duration + 15)
        return [
            sys.executable,
            "-m",
            "locust",
            "-f",
            str(PACKAGE / "load" / "locustfile.py"),
            "--headless",
            "--users",
            str(load.concurrency),
            "--spawn-rate",
            str(max(load.concurrency, 1)),
            "--run-time",
            f"{run_time}s",
            "--stop-timeout",
            "5",
            "--host",
            self.url,
            "--loglevel",
            "WARNING",
            "--only-summary",
            "--exit-code-on-error",
            "0",
        ]

    def start(self) -> float:
        """Start Locust and return t0, the epoch time of the first scheduled arrival."""
        self.path.write_text("")
        env = {**os.environ, "CHAOSLAB_LOAD_CONFIG": str(self.ctx.work_dir / "load.json")}
        argv = self.argv(warmup=READY_TIMEOUT)
        self._seq = self.ctx.journal.intent("process", target="load", argv=argv[:4])
        p = proc.start(argv, self.ctx.work_dir / "locust.log", env=env)
        self.ctx.journal.update(self._seq, pid=p.pid, start_time=proc.start_time(p.pid))
        self._proc = p
        deadline = time.monotonic() + READY_TIMEOUT
        while time.monotonic() < deadline:
            first = self.path.read_text().split("\n", 1)[0]
            if first.startswith("start\t"):
                self.t0 = float(first.split("\t")[1])
                break
            if p.poll() is not None:
                raise TargetError(
                    f"Locust exited with code {p.returncode} before starting",
                    f"see {self.ctx.work_dir / 'locust.log'}",
                )
            time.sleep(0.05)
        else:
            raise TargetError(
                "Locust did not connect to the target in time", f"see {self.ctx.work_dir / 'locust.log'}"
            )
        self._thread = threading.Thread(target=self._tail, name="load-tail", daemon=True)
        self._thread.start()
        return self.t0

    def _tail(self) -> None:
        with self.path.open() as fh:
            fh.readline()  # the start line
            buf = ""
            while True:
                chunk = fh.read()
                if chunk:
                    buf += chunk
                    lines = buf.split("\n")
                    buf = lines.pop()
                    batch = [r for r in map(parse_line, lines) if r is not None]
                    self.records.extend(batch)
                    self.ctx.events.fire("requests", batch=batch)
                elif self._stop.is_set():
                    return
                else:
                    time.sleep(0.1)

    def stop(self) -> None:
        if self._proc is not None:
            proc.stop(self._proc, wait=10)
            self.ctx.journal.undone(self._seq)
            self._proc = None
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def late_count(self) -> int:
        return sum(1 for r in self.records if r.late > LATE_TOLERANCE)
