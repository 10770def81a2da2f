"""The write-ahead journal: what a run is about to change, written before it changes it.

Each line is one JSON record. An `intent` record is written and fsync'ed before an action
(a namespace created, a process started, a fault applied); an `undone` record after its
undo. `chaoslab recover` replays the intents of a dead run that have no `undone`, newest
first. An index entry under /run/chaoslab/runs points recover at journals of live runs,
and is removed when a run ends cleanly; it names the run's chaoslab process and its
watchdog, so a run counts as live while either is.

Two processes write a run's journal: chaoslab, and its watchdog when it undoes faults for a
stalled or dead chaoslab (`append`). Every record is one `write` to a file opened for
appending, so their lines never interleave.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from chaoslab import proc

STATE_DIR = Path(os.environ.get("CHAOSLAB_STATE_DIR", "/run/chaoslab"))
INDEX_DIR = STATE_DIR / "runs"


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str  # netns | cgroup | process | fault | file
    data: dict[str, object]


@dataclass(frozen=True)
class RunInfo:
    """A run's index entry: whose it is, where its journal and report go, its watchdog."""

    run_id: str
    pid: int
    journal: Path
    pid_start: int | None = None
    out_dir: str = ""
    watchdog_pid: int = 0
    watchdog_start: int | None = None

    @classmethod
    def of(cls, data: dict[str, object]) -> RunInfo:
        def num(key: str) -> int | None:
            v = data.get(key)
            return v if isinstance(v, int) and not isinstance(v, bool) else None

        return cls(
            str(data.get("run_id", "")),
            num("pid") or 0,
            Path(str(data.get("journal", ""))),
            num("pid_start"),
            str(data.get("out_dir", "")),
            num("watchdog_pid") or 0,
            num("watchdog_start"),
        )

    def chaoslab_alive(self) -> bool:
        return _same_process(self.pid, self.pid_start)

    def watchdog_alive(self) -> bool:
        return bool(self.watchdog_pid) and _same_process(self.watchdog_pid, self.watchdog_start)

    def alive(self) -> bool:
        """The run goes on while its chaoslab (even a stopped one) or its watchdog lives."""
        return self.chaoslab_alive() or self.watchdog_alive()

    def describe(self) -> str:
        who = f"chaoslab pid {self.pid}"
        if self.watchdog_pid:
            who += f", watchdog pid {self.watchdog_pid}"
        return f"run {self.run_id[:12]} ({who}, report directory {self.out_dir or self.journal.parent})"


def _same_process(pid: int, started: int | None) -> bool:
    """`pid` runs and is the process that started at `started` (any process with it when unknown).
    A zombie does not run: a killed watchdog whose parent died waits for init to reap it."""
    if pid <= 0:
        return False
    now = proc.start_time(pid)
    return now is not None and (started is None or now == started) and not proc.exited(pid)


class Journal:
    def __init__(self, path: Path, run_id: str, out_dir: Path | None = None) -> None:
        self.path = path
        self.run_id = run_id
        self._seq = 0
        self._lock = threading.Lock()  # faults reverted at once write from several threads
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        INDEX_DIR.mkdir(parents=True, exist_ok=True)
        self._index = INDEX_DIR / f"{run_id}.json"
        self.info = RunInfo(
            run_id,
            os.getpid(),
            path.resolve(),
            proc.start_time(os.getpid()),
            str((out_dir or path.parent).resolve()),
        )
        self._write_index()

    def _write_index(self) -> None:
        i = self.info
        data = {
            "run_id": i.run_id,
            "pid": i.pid,
            "pid_start": i.pid_start,
            "journal": str(i.journal),
            "out_dir": i.out_dir,
            "watchdog_pid": i.watchdog_pid,
            "watchdog_start": i.watchdog_start,
        }
        tmp = self._index.with_suffix(".tmp")
        tmp.write_text(json.dumps(data))
        tmp.rename(self._index)

    def set_watchdog(self, pid: int) -> None:
        """Name the run's watchdog in its index entry: the run is live while it is."""
        self.info = RunInfo(
            self.info.run_id,
            self.info.pid,
            self.info.journal,
            self.info.pid_start,
            self.info.out_dir,
            pid,
            proc.start_time(pid),
        )
        self._write_index()

    def _write(self, record: dict[str, object]) -> None:
        record["time"] = round(time.time(), 6)
        with self._lock:
            self._fh.write(json.dumps(record, sort_keys=True) + "\n")
            self._fh.flush()
            os.fsync(self._fh.fileno())

    def intent(self, kind: str, /, **data: object) -> int:
        """Record an action about to happen; returns its sequence number for `undone`."""
        self._seq += 1
        self._write({"seq": self._seq, "op": "intent", "kind": kind, "data": data})
        return self._seq

    def update(self, seq: int, **data: object) -> None:
        """Add facts learnt after the action started (a PID, an original value)."""
        self._write({"seq": seq, "op": "update", "data": data})

    def undone(self, seq: int) -> None:
        self._write({"seq": seq, "op": "undone"})

    def close(self, clean: bool) -> None:
        if not self._fh.closed:
            self._write({"seq": 0, "op": "end", "clean": clean})
            self._fh.close()
        if clean:
            self._index.unlink(missing_ok=True)


def pending(path: Path) -> list[Entry]:
    """Intents of a journal that were not undone, newest first."""
    entries: dict[int, Entry] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rec = json.loads(line)
        except json.JSONDecodeError:
            continue  # a torn last line of a killed run
        seq, op = int(rec.get("seq", 0)), rec.get("op")
        if op == "intent":
            entries[seq] = Entry(seq, str(rec["kind"]), dict(rec.get("data", {})))
        elif op == "update" and seq in entries:
            entries[seq].data.update(rec.get("data", {}))
        elif op == "undone":
            entries.pop(seq, None)
    return [entries[s] for s in sorted(entries, reverse=True)]


def append(path: Path, record: dict[str, object]) -> None:
    """Add one record to a journal another process writes too (the watchdog's `undone`)."""
    record["time"] = round(time.time(), 6)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CLOEXEC)
    try:
        os.write(fd, (json.dumps(record, sort_keys=True) + "\n").encode())
        os.fsync(fd)
    finally:
        os.close(fd)


def indexed_runs() -> Iterator[tuple[Path, RunInfo]]:
    if not INDEX_DIR.is_dir():
        return
    for p in sorted(INDEX_DIR.glob("*.json")):
        try:
            data = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
        if isinstance(data, dict):
            yield p, RunInfo.of(data)


def live_runs() -> list[RunInfo]:
    """Runs whose chaoslab or watchdog is alive: nobody else may touch what they hold."""
    return [info for _, info in indexed_runs() if info.alive()]
