"""chaoslab's helper on a remote Docker engine's host: the faults of the targets there, applied,
verified and reverted on that host, with the same code as on the run's own machine.

    python -m chaoslab.agent serve --within 5     (the helper container's main process)
    python -m chaoslab.agent undo KIND RECORD     (a one-shot container of `chaoslab recover`)

The run starts the helper container from chaoslab's own image (targets/hosthelper.py), with the
capabilities its work needs, in the host's PID and cgroup namespaces, so a target container's
process is seen here by the PID its engine gives, and its cgroup by the path its /proc entry
names. The run talks to it over the container's attached stream: one JSON command per line on
its stdin, one JSON reply per line on its stdout (`{"id": N, "ok": true, ...}`, or `"ok": false`
with the error's class, message and hint). Between commands the run sends `{"op": "beat"}` on
every tick of its run loop.

The helper's dead man's switch is the run's own (chaoslab/safety/watchdog.py), started here
on the helper's journal: every fault applied here is journaled here first, and the watchdog
undoes it when the run stops beating, when the stream closes without the run saying it ended
(the run died, or its host, or the network between), or when the container is stopped. The
helper then exits, and the engine removes its container.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import FrameType
from typing import Any

from chaoslab import wire
from chaoslab.errors import ChaoslabError, FaultError

JOURNAL = Path(os.environ.get("CHAOSLAB_HELPER_JOURNAL", "/var/lib/chaoslab-helper/journal.jsonl"))
DRAIN = 60.0  # seconds the command under way may take to finish once the stream closed
ARM_TIMEOUT = 60.0  # for the watchdog's Python to start and arm


class Agent:
    def __init__(self, within: float) -> None:
        from chaoslab.journal import Journal

        self.journal = Journal(JOURNAL, f"helper-{os.getpid()}")
        self._out = threading.Lock()
        self.faults: dict[int, Any] = {}  # the run's number for a fault -> (Fault, journal seq)
        self.probes: Any = None  # the ProbeSet at the targets here
        self.todo: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self.watchdog = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "chaoslab.safety.watchdog",
                "--journal",
                str(JOURNAL),
                "--within",
                f"{within:g}",
                "--chaoslab",
                str(os.getpid()),
                "--stay",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        self.armed = threading.Event()
        # The switch tripped, or the helper is shutting down: no fault is applied any more, and
        # one whose apply was under way is reverted as soon as it returns.
        self.stopping = threading.Event()
        self._shut = threading.RLock()  # a SIGTERM during a shutdown runs it again, harmlessly
        self.worker: threading.Thread | None = None
        threading.Thread(target=self._relay, name="watchdog", daemon=True).start()

    # -- the stream ----------------------------------------------------------------------------

    def send(self, message: Mapping[str, object]) -> None:
        with self._out, contextlib.suppress(OSError, ValueError):
            sys.stdout.write(json.dumps(message) + "\n")
            sys.stdout.flush()

    def _relay(self) -> None:
        """What the watchdog says (armed, tripped, reverted ...) goes to the run as events."""
        assert self.watchdog.stdout is not None
        for line in self.watchdog.stdout:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("event") == "armed":
                self.armed.set()
            elif isinstance(event, dict) and event.get("event") == "tripped":
                self.stopping.set()
            self.send({"watchdog": event})

    def _pulse(self, byte: bytes) -> None:
        assert self.watchdog.stdin is not None
        with contextlib.suppress(OSError, ValueError):
            self.watchdog.stdin.write(byte)
            self.watchdog.stdin.flush()

    def serve(self, stream: Any) -> int:
        """Read commands until the stream closes; a beat goes to the watchdog at once, every other
        command to the worker (one at a time, in order), so a long apply never holds the beats."""
        ensure_tracefs()  # the syscall fault and the tracepoint probes name their events there
        # ready only with the switch armed: no fault is applied here without it
        if not self.armed.wait(ARM_TIMEOUT) or self.watchdog.poll() is not None:
            self.send({"event": "failed", "why": "the helper's watchdog did not arm"})
            return self.shutdown()
        self.worker = threading.Thread(target=self._work, name="worker", daemon=True)
        self.worker.start()
        self.send({"event": "ready", "pid": os.getpid()})
        for line in stream:
            if (msg := wire.message(line)) is None:
                continue
            if msg.get("op") == "beat":
                self._pulse(b".")
            elif msg.get("op") == "end":
                self._pulse(b"E")
            else:
                self.todo.put(msg)
        # The stream closed: the run ended, died, or lost its way here.
        return self.shutdown()

    def shutdown(self) -> int:
        """In order: no new fault; the command under way finishes (a fault it applies is then
        reverted: one applied after the watchdog's undo would outlive the run); every fault
        still held is reverted here; then the watchdog's stdin closes, and without the run's end
        it undoes whatever is still journaled. It is never killed: the engine's stop timeout is
        the outer bound."""
        with self._shut:
            self.stopping.set()
            self.todo.put(None)
            if self.worker is not None:
                self.worker.join(DRAIN)
            if self.worker is None or not self.worker.is_alive():
                self.revert_held()
            assert self.watchdog.stdin is not None
            with contextlib.suppress(OSError):
                self.watchdog.stdin.close()
            self.watchdog.wait()
            return 0

    def revert_held(self) -> None:
        for n, (fault, seq) in list(self.faults.items()):
            if not seq:
                continue
            try:
                fault.revert()
            except Exception as exc:  # the watchdog's undo (from the journal) comes after
                sys.stderr.write(f"helper: reverting {fault.describe()} failed: {exc}\n")
                continue
            self.journal.undone(seq)
            self.faults[n] = (fault, 0)

    def _work(self) -> None:
        while (msg := self.todo.get()) is not None:
            try:
                reply = self.handle(msg)
            except ChaoslabError as exc:
                reply = {"ok": False, "error": type(exc).__name__, "message": exc.message, "hint": exc.hint}
            except Exception as exc:
                reply = {
                    "ok": False,
                    "error": "FaultError",
                    "message": f"{type(exc).__name__}: {exc}",
                    "hint": "",
                }
            else:
                reply = {"ok": True, **reply}
            self.send({"id": msg.get("id"), **reply})

    # -- the commands --------------------------------------------------------------------------

    def handle(self, msg: dict[str, Any]) -> dict[str, object]:
        op = msg.get("op")
        if op == "prepare":
            return self.prepare(msg)
        if op == "probes":
            return self.attach_probes(msg)
        if op == "snapshot":
            return {"snapshot": [] if self.probes is None else dump_snapshot(self.probes.snapshot())}
        if op == "targets":  # the run's targets here, each network namespace named (a link's peer)
            for t in msg["targets"]:
                view(t)
            return {}
        if op == "retarget":  # a target restarted: its probes follow its new process
            if self.probes is not None:
                self.probes.retarget(view(msg["target"]))
            return {}
        if op == "clock":
            return {"time": time.time()}
        if op == "stalls":
            return {} if self.probes is None else self.stalls()
        n = int(msg.get("fault", -1))
        if n not in self.faults:
            raise FaultError(f"the helper holds no fault {n}", "prepare it first")
        fault, seq = self.faults[n]
        if op == "apply":
            return self.apply(n, fault)
        if op == "verify":
            return {"verification": wire.dump(fault.verify())}
        if op == "revert":
            fault.revert()
            if seq:
                self.journal.undone(seq)
            self.faults[n] = (fault, 0)
            return {}
        raise FaultError(
            f"the helper does not know the command {op!r}", "use the same chaoslab on both sides"
        )

    def prepare(self, msg: dict[str, Any]) -> dict[str, object]:
        """The fault on the target as this host sees it, checked (its preflight) and held."""
        from chaoslab.faults import FAULT_KINDS

        kind = str(msg["kind"])
        cls = FAULT_KINDS[kind]
        spec = wire.load(typing.get_type_hints(cls)["spec"], msg["spec"])  # the kind's spec class
        target = view(msg["target"])
        fault = cls(spec, target)
        fault.preflight()
        self.faults[int(msg["fault"])] = (fault, 0)
        return {}

    def attach_probes(self, msg: dict[str, Any]) -> dict[str, object]:
        """The probes at the targets here, picked as on the run's machine from what the scenario
        wants measured (`choose.pick`), attached with the same code."""
        from chaoslab.layers import Layer
        from chaoslab.probes import PROBES, ProbeSet
        from chaoslab.probes.choose import pick

        targets = {t.name: t for t in (view(x) for x in msg["targets"])}
        wanted = {(Layer(layer), target): str(why) for layer, target, why in msg["wanted"]}
        listed = msg.get("listed")
        choice = pick(wanted, listed, targets, PROBES)
        self.probes = ProbeSet(PROBES, targets, choice.attach)
        lines = self.probes.attach(msg.get("required") or ())
        return {
            "lines": lines,
            "measured": [
                [str(p.layer), t, f"{p.layer}: {p.describe()}"]
                for p in self.probes.probes
                for t in p.index.values()
            ],
            "unmeasured": [
                [str(layer), t, why]
                for (layer, t), why in {**choice.left_out, **self.probes.unavailable}.items()
            ],
        }

    def stalls(self) -> dict[str, object]:
        """The stall layers' state: the stalls in progress, then those ended (in that order, as
        `ProbeSet.stall_state` reads them), and each target's stalled seconds so far."""
        ongoing, ended = self.probes.stall_state()
        stalled = [[str(p.layer), t, s] for p in self.probes.probes for t, s in p.stalled_seconds().items()]
        return {
            "ongoing": [[str(layer), t, start] for layer, t, start in ongoing],
            "stalls": [[str(layer), wire.dump(s)] for layer, s in ended],
            "stalled": stalled,
        }

    def apply(self, n: int, fault: Any) -> dict[str, object]:
        if self.stopping.is_set() or self.watchdog.poll() is not None:
            raise FaultError(
                f"{fault.describe()}: the helper's dead man's switch tripped or is gone: nothing is applied",
                "see the helper's log in the run's work directory",
            )
        record: dict[str, object] = {**fault.journal_record()}
        seq = self.journal.intent("fault", kind=fault.kind, target=fault.spec.target, **record)
        self.faults[n] = (fault, seq)

        def note(**facts: object) -> None:
            record.update(facts)
            self.journal.update(seq, **facts)

        fault.apply(note)
        self.journal.update(seq, applied=True)
        if self.stopping.is_set():  # the switch tripped while it was applied: undone at once
            fault.revert()
            self.journal.undone(seq)
            self.faults[n] = (fault, 0)
            raise FaultError(
                f"{fault.describe()}: the helper's dead man's switch tripped while it was applied: reverted",
                "see the helper's log in the run's work directory",
            )
        return {"record": record}


def view(data: Mapping[str, Any]) -> Any:
    """A target container as this host sees it (the run's `hosthelper.described`): its process
    by the PID its engine gives (checked to be that container's), its cgroup by the path /proc
    names, its links as the run laid them out on the engine's network."""
    from chaoslab.errors import TargetError
    from chaoslab.proc import run
    from chaoslab.scenario.model import TargetSpec
    from chaoslab.targets import netns
    from chaoslab.targets.base import RunningTarget, WatchedProcess
    from chaoslab.targets.cgroup import Cgroup, holds
    from chaoslab.targets.netns import Link
    from chaoslab.targets.services import Service

    pid, container, name = int(data["pid"]), str(data["container"]), str(data["name"])

    if not holds(container, pid):
        raise TargetError(
            f"container {name}: its engine gives pid {pid}, which is not that container on the helper's host",
            "the helper must run on the engine's own host (a forwarded engine socket cannot carry faults)",
        )
    # its network namespace by its container's name, as the run's machine names a local
    # engine's containers' (/run/netns here: the helper's own mount namespace)
    netns.delete(name)
    run(["ip", "netns", "attach", name, str(pid)])
    spec = wire.load(TargetSpec, data["spec"])
    return RunningTarget(
        spec,
        Service(spec),
        WatchedProcess(pid, name),
        str(data.get("ip") or ""),
        name,
        Cgroup.of_process(pid, name),
        {peer: wire.load(Link, link) for peer, link in (data.get("links") or {}).items()},
        in_container=True,
    )


def dump_snapshot(snap: Mapping[tuple[Any, str, str], Any]) -> list[object]:
    return [[str(layer), t, metric, h.to_json()] for (layer, t, metric), h in snap.items()]


def ensure_tracefs() -> None:
    """tracefs at /sys/kernel/tracing in the helper's mount namespace (the engine's sysfs for a
    container has the directory, not the mount): the tracepoint probes name their events there."""
    import ctypes

    tracing = Path("/sys/kernel/tracing")
    if (tracing / "events").exists() or not tracing.is_dir():
        return
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.mount(b"nodev", str(tracing).encode(), b"tracefs", 0, None) != 0:
        err = ctypes.get_errno()
        sys.stderr.write(f"helper: tracefs could not be mounted: {os.strerror(err)}\n")


def undo(kind: str, record: Mapping[str, object], netns_pids: Sequence[str] = ()) -> int:
    """One fault's undo, from the run's journal record of what the helper applied (the kind's
    own `recover`, as on the run's machine), with the run's containers' network namespaces
    named first (`NAME=PID`, as the helper named them); what it did goes to stdout, a line each."""
    from chaoslab.faults import FAULT_KINDS
    from chaoslab.proc import run
    from chaoslab.targets import netns

    for item in netns_pids:
        name, _, pid = item.partition("=")
        if name and pid.isdigit():
            netns.delete(name)
            run(["ip", "netns", "attach", name, pid], check=False)

    try:
        lines = FAULT_KINDS[kind].recover(record)
    except ChaoslabError as exc:
        print(f"could not undo the {kind} fault: {exc.message}")
        return 1
    for line in lines:
        print(line)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m chaoslab.agent")
    sub = ap.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve")
    serve.add_argument("--within", type=float, default=5.0)
    one = sub.add_parser("undo")
    one.add_argument("--netns", action="append", default=[], metavar="NAME=PID")
    one.add_argument("kind")
    one.add_argument("record")
    args = ap.parse_args(argv)
    if args.command == "undo":
        return undo(args.kind, json.loads(args.record), args.netns)
    agent = Agent(args.within)

    def on_term(signum: int, _frame: FrameType | None) -> None:
        # stopped (`docker stop`, `chaoslab recover`): the same ordered shutdown as a closed
        # stream, then out (the main thread may be blocked reading the stream)
        agent.shutdown()
        os._exit(0)

    signal.signal(signal.SIGTERM, on_term)
    signal.signal(signal.SIGINT, on_term)
    return agent.serve(sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
