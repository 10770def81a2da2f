"""process: pause (freeze, then thaw) or kill a target.

pause freezes the target's cgroup (v2 cgroup.freeze, v1 freezer.state): every thread stops
at once, the kernel keeps answering TCP handshakes, nothing is served. Verified by the
freezer's own state and by the CPU time the target's threads used while frozen (none).
Revert thaws; `recover` thaws a cgroup a killed run left frozen. On a remote Docker engine
the engine freezes it (`docker pause`, the same freezer on its host), verified by the
engine's state and its CPU counter, thawed with `docker unpause`.

kill sends a signal (KILL by default) and waits for the process to exit. With
`restart: true` (the default) the runtime starts it again at once, like a supervisor or
an orchestrator would, and the fault measures how long it took to be healthy; with
`restart: false` the target stays down for the phase and is started again on revert. On a
remote engine the engine sends the signal (`docker kill --signal`) and starts it again.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from chaoslab import proc
from chaoslab.errors import FaultError, PreflightError
from chaoslab.faults.base import Fault, Verification, own_cgroup
from chaoslab.layers import Layer
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import FaultSpec, TargetSpec
from chaoslab.targets.cgroup import freezer_file, frozen_state, set_frozen

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

ACTIONS = ("pause", "kill")
SIGNALS = ("KILL", "TERM", "INT", "QUIT", "HUP", "ABRT", "SEGV")
FREEZE_TIMEOUT = 5.0
EXIT_TIMEOUT = 10.0


@dataclass(frozen=True)
class ProcessSpec(FaultSpec):
    action: str = "pause"
    signal: str = "KILL"
    restart: bool = True


class ProcessFault(Fault):
    kind = "process"
    layer = Layer.APP
    spec: ProcessSpec
    through_engine = True

    @classmethod
    def parse(cls, fields: Fields, kind: str, target: str) -> FaultSpec:
        action = fields.choice("action", ACTIONS, "", required=True)
        if action == "pause":
            for key in ("signal", "restart"):
                if fields.has(key):
                    fields.problems.add(fields.at(key), f"'{key}' belongs to action kill", "remove it")
        sig = fields.choice("signal", SIGNALS, "KILL")
        restart = fields.flag("restart", True)
        return ProcessSpec(
            kind=kind, target=target, path=fields.path, action=action, signal=sig, restart=restart
        )

    @classmethod
    def check(cls, spec: FaultSpec, targets: Mapping[str, TargetSpec], problems: Problems) -> None:
        assert isinstance(spec, ProcessSpec)
        if spec.action == "kill" and targets[spec.target].kind == "attach":
            problems.add(
                join(spec.path, "action"),
                f"{spec.target} is attached: chaoslab neither starts nor stops it, so it cannot kill it and "
                "start it again",
                "use action: pause, or let chaoslab start the target",
            )

    @classmethod
    def claims(cls, spec: FaultSpec) -> tuple[str, ...]:
        return ("process (a pause or a kill)",)

    def expected_layer(self) -> Layer:
        """A paused target cannot run at all: its cpu layer (frozen) holds the stall."""
        return Layer.CPU if self.spec.action == "pause" else Layer.APP

    def takes_target_away(self) -> bool:
        return self.spec.action == "kill" and not self.spec.restart

    def __init__(self, spec: FaultSpec, target: RunningTarget) -> None:
        super().__init__(spec, target)
        self.container = target.container  # on a remote engine: paused through its API
        self.freezer = Path() if self.container is not None else freezer_file(target.cgroup.dirs)
        self.applied = False
        self.cpu_at_freeze = 0
        self.killed: dict[str, float] = {}

    def locks(self) -> dict[str, str]:
        if self.spec.action != "pause" or self.container is not None:
            return super().locks()
        where = self.freezer.parent
        return super().locks() | {f"cgroup:{where}": f"the cgroup of {self.target.name} ({where})"}

    def preflight(self) -> None:
        if os.geteuid() != 0:
            raise PreflightError("process faults need root", "run chaoslab with sudo")
        if self.spec.action == "pause" and self.container is None and not self.freezer.exists():
            raise PreflightError(
                f"no freezer for {self.target.name}: {self.freezer} is missing",
                "cgroup v1: mount the freezer controller; v2: kernel 5.2 or newer",
            )
        if self.spec.action == "pause":
            own_cgroup(self.target, "a freeze")
        if self.spec.action == "kill" and self.target.restarter is None:
            raise PreflightError(
                f"{self.spec.path}: chaoslab did not start {self.target.name}, so it cannot start it again",
                "kill a target chaoslab starts (program, image, service), or pause this one",
            )

    def plan(self) -> list[str]:
        if self.spec.action == "pause" and self.container is not None:
            name = self.container.name
            return [
                f"mechanism: the engine's pause (its cgroup freezer), through the {self.target.remote}'s API",
                f"docker pause {name}",
                f"revert: docker unpause {name}",
            ]
        if self.spec.action == "pause":
            on, off = ("1", "0") if self.freezer.name == "cgroup.freeze" else ("FROZEN", "THAWED")
            return [
                "mechanism: cgroup freezer",
                f"echo {on} > {self.freezer}",
                f"revert: echo {off} > {self.freezer}",
            ]
        then = "the runtime starts it again at once" if self.spec.restart else "started again on revert"
        return [
            "mechanism: signal, then the runtime restarts the target",
            f"kill -{self.spec.signal} <pid of {self.target.name}>; {then}",
        ]

    def journal_record(self) -> dict[str, object]:
        if self.container is not None:
            return {"action": self.spec.action, "pid": self.target.pid, **self.container.record}
        return {"action": self.spec.action, "freezer": str(self.freezer), "pid": self.target.pid}

    def apply(self, note: Callable[..., None]) -> None:
        self.applied = True
        if self.spec.action == "pause":
            self._freeze()
        else:
            self._kill()

    def _freeze(self) -> None:
        if self.container is not None:
            self.container.pause(True, FREEZE_TIMEOUT)
            self.target.down_expected = True
            self.cpu_at_freeze = self.container.cpu_ns()
            return
        set_frozen(self.freezer, True)
        deadline = time.monotonic() + FREEZE_TIMEOUT
        while (state := frozen_state(self.freezer)) != "FROZEN":
            if time.monotonic() > deadline:
                raise FaultError(f"{self.target.name} did not freeze in {FREEZE_TIMEOUT:g}s (state {state})")
            time.sleep(0.01)
        self.target.down_expected = True
        self.cpu_at_freeze = proc.schedstat(self.target.cgroup.pids())[0]

    def _kill(self) -> None:
        t, old = self.target, self.target.proc
        if old is None:
            raise FaultError(f"{t.name} has no process to kill")
        t.down_expected = True
        t0 = time.monotonic()
        old.send_signal(getattr(signal, f"SIG{self.spec.signal}"))
        try:
            old.wait(timeout=EXIT_TIMEOUT)
        except subprocess.TimeoutExpired as exc:
            raise FaultError(
                f"{t.name} did not exit within {EXIT_TIMEOUT:g}s of SIG{self.spec.signal}"
            ) from exc
        self.killed = {
            "exit_code": float(old.returncode or 0),
            "exit_ms": round((time.monotonic() - t0) * 1000, 3),
        }
        if self.spec.restart:
            self.killed["healthy_after_ms"] = round(t.restart() * 1000, 3)
            self.killed["down_ms"] = round((time.monotonic() - t0) * 1000, 3)
            t.down_expected = False

    def verify(self) -> Verification:
        if self.spec.action == "pause" and self.container is not None:
            paused = self.container.paused()
            used = (self.container.cpu_ns() - self.cpu_at_freeze) / 1e6
            detail = (
                f"the engine says {'paused' if paused else 'running'}; it used {used:.3f} ms CPU while paused"
            )
            how = "the engine's pause (cgroup freezer on its host)"
            return Verification(paused and used < 1.0, detail, how, {"cpu_ms_while_paused": round(used, 3)})
        if self.spec.action == "pause":
            state = frozen_state(self.freezer)
            used = (proc.schedstat(self.target.cgroup.pids())[0] - self.cpu_at_freeze) / 1e6
            ok = state == "FROZEN" and used < 1.0
            detail = f"freezer {state}; the target's threads used {used:.3f} ms CPU while paused"
            return Verification(ok, detail, "cgroup freezer", {"cpu_ms_while_paused": round(used, 3)})
        k = self.killed
        ok = "exit_code" in k and (not self.spec.restart or self.target.alive())
        code, took = int(k.get("exit_code", 0)), k.get("exit_ms", 0)
        detail = f"SIG{self.spec.signal}: exited with {code} after {took:.0f} ms"
        if self.spec.restart:
            detail += f"; restarted, healthy after {k.get('healthy_after_ms', 0):.0f} ms"
        else:
            detail += "; kept down for the phase"
        return Verification(ok, detail, "signal + runtime restart", dict(k))

    def revert(self) -> None:
        if not self.applied:
            return
        if self.spec.action == "pause" and self.container is not None:
            self.container.pause(False, FREEZE_TIMEOUT)
        elif self.spec.action == "pause":
            if self.freezer.exists():
                set_frozen(self.freezer, False)
                deadline = time.monotonic() + FREEZE_TIMEOUT
                while frozen_state(self.freezer) != "THAWED":
                    if time.monotonic() > deadline:
                        raise FaultError(f"{self.target.name} did not thaw")
                    time.sleep(0.01)
        elif not self.target.alive():
            self.target.restart()
        self.target.down_expected = False
        self.applied = False

    @classmethod
    def recover(cls, record: Mapping[str, object]) -> list[str]:
        if record.get("engine"):
            return cls._recover_there(record)
        path = Path(str(record.get("freezer", "")))
        if record.get("action") != "pause" or not path.exists() or frozen_state(path) == "THAWED":
            return []
        set_frozen(path, False)
        return [f"thawed {path.parent}"]

    @classmethod
    def _recover_there(cls, record: Mapping[str, object]) -> list[str]:
        """A pause on a remote engine's container: unpaused through the engine."""
        import docker.errors

        from chaoslab.targets.containers import EngineContainer

        if record.get("action") != "pause":
            return []
        with EngineContainer.of_record(record) as c:
            name = record.get("container_name")
            try:
                if not c.paused():
                    return []
                c.pause(False, FREEZE_TIMEOUT)
            except docker.errors.NotFound:
                return []
            return [f"unpaused container {name} on the {c.engine}"]
