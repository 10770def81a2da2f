"""The write-ahead journal: what a run is about to change, written before it changes it.

Each line is one JSON record. An `intent` record is written and fsync'ed before an action
(a namespace created, a process started, a fault applied); an `undone` record after its
undo. `chaoslab recover` replays the intents of a dead run that have no `undone`, newest
first. An index entry under /run/chaoslab/runs points recover at journals of live runs,
and is removed when a run ends cleanly.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

INDEX_DIR = Path(os.environ.get("CHAOSLAB_STATE_DIR", "/run/chaoslab")) / "runs"


@dataclass(frozen=True)
class Entry:
    seq: int
    kind: str  # netns | cgroup | process | fault | file
    data: dict[str, object]


class Journal:
    def __init__(self, path: Path, run_id: str) -> None:
        self.path = path
        self.run_id = run_id
        self._seq = 0
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = path.open("a", encoding="utf-8")
        INDEX_DIR.mkdir(parents=True, exist_ok=True)
        self._index = INDEX_DIR / f"{run_id}.json"
        self._index.write_text(
            json.dumps({"run_id": run_id, "pid": os.getpid(), "journal": str(path.resolve())})
        )

    def _write(self, record: dict[str, object]) -> None:
        record["time"] = round(time.time(), 6)
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


def indexed_runs() -> Iterator[tuple[Path, dict[str, object]]]:
    if not INDEX_DIR.is_dir():
        return
    for p in sorted(INDEX_DIR.glob("*.json")):
        try:
            yield p, json.loads(p.read_text())
        except (OSError, json.JSONDecodeError):
            continue
