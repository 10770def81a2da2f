"""Config changes on a running mesh: what an xDS control plane serves, changed during a phase.

A change (`changes:` in a phase) gives some clusters new endpoints or the route new weights.
For every Envoy that takes its config from that control plane, its resources are written
again for its own view of the endpoints (the same generator as at launch) and handed to the
control plane (PUT /resources on its control port, control traffic), which sets a new
version for that Envoy; the xds layer times it from there. At the end of the phase, on every
exit path, the control plane is handed the config the scenario declared.
"""

from __future__ import annotations

import http.client
import json
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from chaoslab.report.model import ChangeRecord
from chaoslab.scenario.model import ChangeSpec, MeshSpec
from chaoslab.targets.base import RunningTarget
from chaoslab.targets.builtins import BUILTINS

PUT_TIMEOUT = 5.0
# control traffic goes straight to the target, never through a proxy from the environment
DIRECT = urllib.request.build_opener(urllib.request.ProxyHandler({}))


class MeshError(Exception):
    pass


@dataclass
class Meshes:
    """The running control planes and what each serves now."""

    targets: Mapping[str, RunningTarget]
    now: dict[str, MeshSpec] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.now = {n: t.spec.mesh for n, t in self.targets.items() if t.spec.mesh is not None}

    def envoys(self, control: str) -> list[RunningTarget]:
        return [t for t in self.targets.values() if t.spec.xds == control]

    def apply(self, change: ChangeSpec, phase_start: float) -> ChangeRecord:
        """Make the change; its record says which version each Envoy was given."""
        mesh = change.apply(self.now[change.target])
        record = ChangeRecord(
            at=round(time.time() - phase_start, 3), target=change.target, what=change.describe()
        )
        # what it serves now, before any Envoy is told: a change that reached only some of them
        # is undone at the end like one that reached all
        self.now[change.target] = mesh
        try:
            record.versions = self._push(change.target, mesh, f"change: {change.describe()}")
        except MeshError as exc:
            record.error = str(exc)
        return record

    def calls(self, control: str) -> int:
        """How many PUTs a change at this control plane makes (one per Envoy)."""
        return max(1, len(self.envoys(control)))

    def restore(self) -> list[str]:
        """Hand every control plane whose config a change moved the scenario's own; what failed."""
        failed = []
        for name, mesh in list(self.now.items()):
            declared = self.targets[name].spec.mesh
            if declared is None or mesh == declared:
                continue
            try:
                self._push(name, declared, "restore: the scenario's config")
                self.now[name] = declared
            except MeshError as exc:
                failed.append(f"{name}: {exc}")
        return failed

    def _push(self, control: str, mesh: MeshSpec, why: str) -> dict[str, str]:
        t = self.targets[control]
        if not t.alive():
            raise MeshError(f"{control} is not running: nothing to change")
        envoy = BUILTINS["envoy"]
        out: dict[str, str] = {}
        for e in self.envoys(control):
            assert e.launch is not None, "a started envoy knows where it was launched"
            body = envoy.generate(replace(e.spec, mesh=mesh), "resources", e.launch).encode()
            query = urllib.parse.urlencode({"node": e.name, "why": why})
            url = f"http://{t.ip}:{t.reach(t.spec.control_ports[0])}/resources?{query}"
            req = urllib.request.Request(url, data=body, method="PUT")
            try:
                with DIRECT.open(req, timeout=PUT_TIMEOUT) as resp:
                    answer = json.loads(resp.read(65536))
            except urllib.error.HTTPError as exc:
                detail = exc.read(2000).decode(errors="replace").strip()
                raise MeshError(f"{control} refused the config for {e.name}: {detail}") from exc
            except (OSError, ValueError, http.client.HTTPException) as exc:
                raise MeshError(f"{control} did not take the config for {e.name}: {exc}") from exc
            out[e.name] = str(answer.get("version", "")) if isinstance(answer, dict) else ""
        return out
