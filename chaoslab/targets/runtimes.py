"""Where a run's targets run: `local` (namespaces and cgroups), `docker`, or `auto`.

`auto` takes Docker when an engine answers and falls back to the local runtime with a
notice saying why; `--runtime` on the command line overrides the scenario's `runtime:`.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Protocol

from chaoslab.context import RunContext
from chaoslab.errors import PreflightError
from chaoslab.scenario.model import Scenario
from chaoslab.targets import containers, engines, local
from chaoslab.targets.base import RunningTarget


class Runtime(Protocol):
    name: str

    @property
    def where(self) -> str:
        """Where its targets run when not on this machine ("Docker engine tcp://..."), else ""."""
        ...

    def preflight(self) -> None: ...

    def start(self, stack: ExitStack) -> dict[str, RunningTarget]: ...


def resolve(name: str, say: Callable[[str], None] | None = None, engine: str = "") -> str:
    """The runtime `name` stands for here (`auto`: docker if the engine answers, else local)."""
    if name != "auto":
        return name
    if engine:  # named: it must answer (exit 3), never a quiet run of the targets here instead
        return "docker"
    try:
        why = containers.unavailable(engines.resolve(engine))
    except PreflightError as exc:
        why = exc.message
    if why is None:
        return "docker"
    if say is not None:
        say(f"runtime auto: Docker is not available ({why.splitlines()[0]}); using the local runtime")
    return "local"


def runtime_for(ctx: RunContext) -> Runtime:
    name = resolve(ctx.scenario.runtime, ctx.say, ctx.scenario.engine)
    return containers.DockerRuntime(ctx) if name == "docker" else local.LocalRuntime(ctx)


def plan_targets(scenario: Scenario, work_dir: Path) -> tuple[str, dict[str, RunningTarget]]:
    name = resolve(scenario.runtime, engine=scenario.engine)
    planner = containers.plan_targets if name == "docker" else local.plan_targets
    return name, planner(scenario, work_dir)
