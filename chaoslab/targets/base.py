"""A target as it runs: the process, where it can be reached, its namespace and cgroup."""

from __future__ import annotations

import functools
import os
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

from chaoslab import proc
from chaoslab.gobinary import GoBinary, go_binary
from chaoslab.scenario.model import TargetSpec
from chaoslab.targets.cgroup import Cgroup
from chaoslab.targets.netns import Link
from chaoslab.targets.services import Launch, Service

if TYPE_CHECKING:
    from chaoslab.targets.containers import EngineContainer
    from chaoslab.targets.hosthelper import HostHelper

# The peer name of a target's link to the host, where chaoslab and the load generator run.
HOST = "host"


class TargetProcess(Protocol):
    """A target's main process, as the runtime holds it: a Popen, or a container's process."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def send_signal(self, sig: int) -> None: ...

    def wait(self, timeout: float | None = None) -> int: ...


class WatchedProcess:
    """A process chaoslab did not fork itself (a container's, an attached one), held like a
    Popen: known by its PID and start time, so a reused PID is never taken for it."""

    def __init__(self, pid: int, label: str) -> None:
        self._pid = pid
        self._label = label
        self.start_time = proc.start_time(pid)
        self.returncode: int | None = None

    @property
    def pid(self) -> int:
        return self._pid

    def exit_code(self) -> int:
        """Its exit code, once it is gone."""
        return -1

    def poll(self) -> int | None:
        if self.returncode is None and proc.start_time(self._pid) != self.start_time:
            self.returncode = self.exit_code()
        return self.returncode

    def send_signal(self, sig: int) -> None:
        os.kill(self._pid, sig)

    def wait(self, timeout: float | None = None) -> int:
        deadline = time.monotonic() + (timeout if timeout is not None else 1e9)
        while (code := self.poll()) is None:
            if time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(self._label, timeout or 0)
            time.sleep(0.02)
        return code


@dataclass
class RunningTarget:
    spec: TargetSpec
    service: Service
    proc: TargetProcess | None  # None: only planned (`chaoslab plan`)
    ip: str  # where the host reaches it
    netns: str
    cgroup: Cgroup
    links: dict[str, Link] = field(default_factory=dict)  # peer target name (or HOST) -> link
    # Starts the target again after it exited (the runtime's supervisor), waiting until healthy.
    restarter: Callable[[RunningTarget], float] | None = None
    # Set while a fault keeps the target down on purpose, so the run does not call it a crash.
    down_expected: bool = False
    binary: Path | None = None  # the executable, when there is no process to ask
    # The target runs in a container: its files are seen from here through /proc/<pid>/root.
    in_container: bool = False
    # The target was running before the run and goes on after it: chaoslab never stops it.
    attached: bool = False
    # The CA the load and health checks verify its certificate with (None: not verified).
    ca: Path | None = None
    # Where it was launched (its linked targets as it reaches them): what its config files
    # were written for, and are written for again when a run changes them.
    launch: Launch | None = None
    # On a remote Docker engine (its description; "" on this machine): reached only through the
    # engine's API and the ports it publishes on its host (`published`: port -> host port).
    remote: str = ""
    published: dict[int, int] = field(default_factory=dict)
    container: EngineContainer | None = None  # on a remote engine: what its API does to it
    helper: HostHelper | None = None  # on a remote engine: chaoslab's helper on its host

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def pid(self) -> int:
        return self.proc.pid if self.proc else 0

    @property
    def port(self) -> int:
        return self.service.port()

    @functools.cached_property
    def go(self) -> GoBinary | None:
        """What its executable is, when it is a Go program (None for any other, or when its
        executable cannot be known yet: an image's, before its container runs)."""
        if (self.proc is None and self.binary is None) or self.remote:
            return None
        return go_binary(self.exe)

    @property
    def url(self) -> str:
        return self.url_for("https")

    def reach(self, port: int) -> int:
        """The port where this host reaches the target's `port` (another when it is published)."""
        return self.published.get(port, port)

    def url_for(self, protocol: str) -> str:
        """Where the load reaches this target with `protocol` (http and https: a URL; gRPC and
        tcp: host:port)."""
        port = self.reach(self.service.port(protocol))
        host = f"[{self.ip}]" if ":" in self.ip else self.ip
        return f"{protocol}://{host}:{port}" if protocol in ("http", "https") else f"{host}:{port}"

    @property
    def exe(self) -> Path:
        if self.proc is None and self.binary is not None:
            return self.binary
        if self.in_container:
            # The link's text names the file as seen from another mount namespace (the
            # container's, or an outer root when chaoslab runs in a chroot or a container of
            # its own); the magic link itself opens and uprobes the right file anywhere.
            return Path(f"/proc/{self.pid}/exe")
        return Path(f"/proc/{self.pid}/exe").resolve()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def restart(self) -> float:
        """Start the target again; returns the seconds until it was healthy."""
        if self.restarter is None:
            raise RuntimeError(f"the runtime of {self.name} cannot restart it")
        return self.restarter(self)
