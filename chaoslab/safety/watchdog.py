"""The dead man's switch: a process of its own that undoes a run's faults when the run stops
making progress, whatever the cause (chaoslab killed, stopped with SIGSTOP or Ctrl-Z, hung,
starved on an overloaded machine).

    python -m chaoslab.safety.watchdog --journal OUT/journal.jsonl --within 5

chaoslab starts it at the beginning of a run, in a session of its own (out of chaoslab's
process group and terminal: a Ctrl-Z or a signal to the group does not reach it), and it moves
itself to the root cgroup of every hierarchy (out of chaoslab's: freezing or killing that cgroup
leaves it running). chaoslab's run loop feeds it a heartbeat through a pipe (its stdin): a byte
on every tick. The journal is the single source of truth: the watchdog reads the run's pending
fault entries from it, and undoes them with the same per-kind undo as `chaoslab recover`.

It trips when, with a fault applied:
- no heartbeat came for `within - 1` seconds (one second of the bound is left for the undo);
- a fault is still applied `margin` seconds after its phase's scheduled end (its journal entry's
  `deadline`), even while heartbeats come: a late run loop does not keep a fault on;
- the pipe closes without chaoslab saying it ended (chaoslab died): then, after the faults, it
  undoes everything else the journal holds (processes, cgroups, namespaces, containers), drops
  the run's index entry and locks, and exits.

Having tripped, it undoes every fault, marks each undone in the journal, tells chaoslab what it
did on its stdout (JSON lines, read when chaoslab runs again), keeps undoing any fault that is
applied after that, and exits when chaoslab ends the run (or dies). It never outlives the run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from chaoslab.journal import Entry, pending

UNDO_ALLOWANCE = 1.0  # seconds of the bound left for undoing the faults
POLL = 0.1
HEARTBEAT, END = b".", b"E"


def emit(event: str, **data: object) -> None:
    """One JSON line to chaoslab (it reads them between ticks); a gone reader is ignored."""
    try:
        sys.stdout.write(json.dumps({"event": event, **data}) + "\n")
        sys.stdout.flush()
    except (BrokenPipeError, OSError):
        pass


def log(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} watchdog {os.getpid()}: {message}\n")
    sys.stderr.flush()


def describe(e: Entry) -> str:
    return f"{e.data.get('kind', 'fault')} on {e.data.get('target', '?')}"


class Watchdog:
    def __init__(self, path: Path, within: float, chaoslab: int) -> None:
        self.path = path
        self.silence = max(0.5, within - UNDO_ALLOWANCE)
        self.chaoslab = chaoslab
        self.last_beat = time.monotonic()
        self.tripped = False
        self.ended = False
        self.terminate = ""
        self._stamp: tuple[int, int] | None = None
        self._faults: list[Entry] = []

    def faults(self) -> list[Entry]:
        """The journal's fault entries not undone, read again whenever the file changed."""
        try:
            st = os.stat(self.path)
        except OSError:
            return []
        stamp = (st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            self._stamp = stamp
            self._faults = [e for e in pending(self.path) if e.kind == "fault"]
        return self._faults

    def run(self, heartbeat: int) -> int:
        # The undo's code is loaded before the watch begins: a stuck machine is when the switch
        # trips, and importing every fault's module then would eat the bound's undo allowance.
        import chaoslab.recover  # noqa: F401

        emit("armed", pid=os.getpid(), silence_s=self.silence)
        log(f"armed for pid {self.chaoslab}: faults undone after {self.silence:g} s without a heartbeat")
        while True:
            ready, _, _ = select.select([heartbeat], [], [], POLL)
            if ready:
                try:
                    data = os.read(heartbeat, 65536)
                except OSError:
                    data = b""
                if not data:  # chaoslab closed the pipe, or died
                    return self.finish()
                self.ended = self.ended or END in data
                self.last_beat = time.monotonic()
            faults = self.faults()
            if self.terminate:  # told to stop: the faults go with it, chaoslab's targets stay
                self.trip("terminated", self.terminate, faults)
                return 0
            if self.tripped:
                if faults:  # applied after the trip (chaoslab was mid-apply): undone at once
                    self.undo(faults)
                continue
            if not faults:
                continue
            silent = time.monotonic() - self.last_beat
            if silent >= self.silence:
                self.trip(
                    "switch",
                    f"no heartbeat from chaoslab (pid {self.chaoslab}) for {silent:.1f} s: it is stopped, "
                    "hung or starved",
                    faults,
                    since=self.last_beat,
                )
                continue
            now = time.time()
            late = [e for e in faults if _deadline(e) and now > _deadline(e)]
            if late:
                over = now - _deadline(late[0])
                self.trip(
                    "deadline",
                    f"{describe(late[0])} was still applied past its phase's end and margin "
                    f"(by {over:.1f} s): the run loop is late",
                    faults,
                    since=time.monotonic() - over,
                )

    def trip(self, condition: str, reason: str, faults: list[Entry], since: float | None = None) -> None:
        """Undo every fault now; `since` (monotonic) is what the revert time is counted from."""
        start = time.monotonic()
        origin = since if since is not None else start
        self.tripped = True
        log(f"tripped ({condition}): {reason}")
        emit("tripped", condition=condition, reason=reason, at=time.time())
        reverts = self.undo(faults, origin)
        emit(
            "done",
            condition=condition,
            revert_s=round(max(reverts.values(), default=time.monotonic() - origin), 3),
            trip_to_revert_s=round(time.monotonic() - start, 3),
            reverts=reverts,
        )

    def undo(self, faults: list[Entry], origin: float | None = None) -> dict[str, float]:
        """Undo the journal's pending faults, newest first; seconds from `origin` to each one."""
        from chaoslab.recover import undo_entries

        origin = origin if origin is not None else time.monotonic()
        reverts: dict[str, float] = {}
        for u in undo_entries(self.path, kinds={"fault"}):
            after = round(time.monotonic() - origin, 3)
            what = describe(u.entry)
            if u.error:
                log(f"could not undo {what}: {u.error}")
                emit("failed", fault=what, seq=u.entry.seq, error=u.error)
            else:
                reverts[what] = after
                log(f"undid {what} ({'; '.join(u.lines) or 'nothing was left'}) {after:.3f} s after")
                emit("reverted", fault=what, seq=u.entry.seq, after_s=after, lines=u.lines)
        self._stamp = None
        return reverts

    def finish(self) -> int:
        """The pipe closed. After an end of the run: nothing left to do. Without one, chaoslab
        died: every fault, then everything else of the run, is undone."""
        faults = self.faults()
        if self.ended and not faults:
            log("the run ended: exiting")
            return 0
        if not self.tripped:
            self.trip("exit", f"chaoslab (pid {self.chaoslab}) is gone without ending its run", faults)
        elif faults:
            self.undo(faults)
        if not self.ended:
            self.clean_up()
        return 0

    def clean_up(self) -> None:
        """The whole run, as `chaoslab recover --force` on its journal: every entry undone, the
        run's index entry dropped and its locks released."""
        from chaoslab.recover import recover_all

        for line in recover_all([self.path], force=True):
            log(line)
        log("chaoslab died: the run is undone")


def _deadline(e: Entry) -> float:
    value = e.data.get("deadline")
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def leave_cgroups() -> list[str]:
    """Move this process to the root cgroup of every hierarchy it belongs to (out of chaoslab's);
    best effort: what could not be moved is returned for the log."""
    mounts: list[tuple[str, set[str]]] = []  # (mount point, super options) of hierarchy roots
    for line in Path("/proc/self/mountinfo").read_text().splitlines():
        left, _, right = line.partition(" - ")
        fields, rest = left.split(), right.split()
        if len(fields) < 5 or len(rest) < 3 or rest[0] not in ("cgroup", "cgroup2") or fields[3] != "/":
            continue
        options = set(rest[2].split(",")) if rest[0] == "cgroup" else {"cgroup2"}
        mounts.append((fields[4], options))
    failed = []
    for line in Path("/proc/self/cgroup").read_text().splitlines():
        _, controllers, rel = line.split(":", 2)
        if rel == "/":
            continue
        wanted = set(controllers.split(",")) if controllers else {"cgroup2"}
        root = next((m for m, opts in mounts if wanted <= opts), None)
        try:
            if root is None:
                raise OSError("no root mounted")
            Path(root, "cgroup.procs").write_text(f"{os.getpid()}\n")
        except OSError as exc:
            failed.append(f"{controllers or 'cgroup2'}:{rel} ({exc})")
    return failed


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaoslab.safety.watchdog")
    ap.add_argument("--journal", type=Path, required=True)
    ap.add_argument("--within", type=float, default=5.0)
    ap.add_argument("--chaoslab", type=int, default=os.getppid())
    # in chaoslab's helper container on a remote engine's host: it stays in the container's
    # cgroup, so it never outlives the container
    ap.add_argument("--stay", action="store_true")
    args = ap.parse_args(argv)
    for failed in [] if args.stay else leave_cgroups():
        log(f"stays in cgroup {failed}")
    with contextlib.suppress(OSError):
        Path("/proc/self/oom_score_adj").write_text("-1000\n")  # the last process to be killed
    dog = Watchdog(args.journal, args.within, args.chaoslab)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        dog.terminate = f"the watchdog received {signal.Signals(signum).name}"

    signal.signal(signal.SIGTERM, on_term)
    for sig in (signal.SIGINT, signal.SIGHUP, signal.SIGTSTP, signal.SIGTTIN, signal.SIGTTOU):
        signal.signal(sig, signal.SIG_IGN)
    signal.signal(signal.SIGPIPE, signal.SIG_IGN)
    return dog.run(sys.stdin.fileno())


if __name__ == "__main__":
    sys.exit(main())
