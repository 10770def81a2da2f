"""How a target runs, built from its spec: one Service for every kind of target.

A Service knows its target's command line, environment and config files (placeholders
expanded for where it runs), its ports, health check and TLS. chaoslab's built-ins
(chaoslab/targets/builtins.py) are data on this same path. Where it runs (a namespace and a
cgroup, or a container) and what starts it is the runtime's business.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from chaoslab.errors import PreflightError
from chaoslab.scenario.model import HealthSpec, TargetSpec
from chaoslab.targets import placeholders
from chaoslab.targets.builtins import BUILTINS, GENERATED, Builtin
from chaoslab.targets.certs import Certs


@dataclass(frozen=True)
class Peer:
    """A linked target as reached from the target being launched."""

    host: str
    ports: dict[str, int]
    ca: Path | None  # the CA its certificate is checked with; None: not checked
    verify: bool = True


@dataclass(frozen=True)
class Launch:
    """What a runtime tells a service about where it runs."""

    workdir: Path
    certs: Certs
    peers: dict[str, Peer] = field(default_factory=dict)


class Service:
    def __init__(self, spec: TargetSpec) -> None:
        self.spec = spec
        self.builtin: Builtin | None = BUILTINS.get(spec.service) if spec.kind == "service" else None

    @property
    def ports(self) -> dict[str, int]:
        return self.spec.port_map

    @property
    def health(self) -> HealthSpec:
        return self.spec.health

    @property
    def proxy(self) -> bool:
        return self.spec.proxy

    @property
    def control_ports(self) -> tuple[int, ...]:
        return self.spec.control_ports

    def port(self, protocol: str | None = None) -> int:
        return self.spec.port(protocol)

    def client_ca(self, certs: Certs) -> Path | None:
        """The CA the load and the health checks verify this target's certificate with."""
        if not self.spec.tls.verify:
            return None
        return Path(self.spec.tls.ca) if self.spec.tls.ca else certs.ca

    def peer(self, host: str, certs: Certs) -> Peer:
        """This target as another one reaches it at `host`."""
        return Peer(host, self.ports, self.client_ca(certs), self.spec.tls.verify)

    # -- what it runs ------------------------------------------------------------------

    def values(self, launch: Launch) -> dict[str, str]:
        """The placeholder values of this target where it is launched (files not yet)."""
        s = self.spec
        values = {
            "cert": str(launch.certs.cert),
            "key": str(launch.certs.key),
            "ca": str(launch.certs.ca),
            "workdir": str(launch.workdir),
            "name": s.name,
            **{f"ports.{p}": str(n) for p, n in s.ports},
        }
        for name, peer in launch.peers.items():
            values[f"targets.{name}.host"] = peer.host
            values |= {f"targets.{name}.ports.{p}": str(n) for p, n in peer.ports.items()}
        for text in (*s.argv, *(v for _, v in s.env)):
            for name in _names(text):
                if name.startswith("bin."):
                    values[name] = str(_builtin_binary(name.removeprefix("bin.")))
        return values

    def write_files(self, launch: Launch) -> dict[str, str]:
        """Expand (or generate) the target's config files into the work directory; returns
        their `files.NAME` placeholder values."""
        values = self.values(launch)
        out: dict[str, str] = {}
        for name, template in self.spec.files:
            if template == GENERATED:
                assert self.builtin is not None, "validated: only a built-in generates files"
                text, suffix = self.builtin.generate(self.spec, name, launch), ".json"
            else:
                text = placeholders.expand(Path(template).read_text(), values, strict=False)
                suffix = Path(template).suffix
            path = launch.workdir / f"{self.spec.name}-{name}{suffix}"
            path.write_text(text)
            out[f"files.{name}"] = str(path)
        return out

    def argv(self, launch: Launch) -> list[str]:
        """The command line with every placeholder expanded (config files written first)."""
        values = self.values(launch) | self.write_files(launch)
        return [placeholders.expand(a, values) for a in self.spec.argv]

    def env(self, launch: Launch) -> dict[str, str]:
        values = self.values(launch)
        return {k: placeholders.expand(v, values) for k, v in self.spec.env}

    def image_files(self) -> dict[str, Path]:
        """What a built-in's Docker image holds (absolute path in the image -> file here)."""
        if self.builtin is None:
            raise PreflightError(f"target {self.spec.name} is not one of chaoslab's services")
        return self.builtin.image_files()


def _names(text: str) -> list[str]:
    try:
        return placeholders.names(text)
    except placeholders.PlaceholderError:
        return []


def _builtin_binary(name: str) -> Path:
    builtin = BUILTINS.get(name)
    if builtin is None:
        raise PreflightError(
            f"{{bin.{name}}}: chaoslab has no service {name!r}", f"known: {', '.join(BUILTINS)}"
        )
    return builtin.binary()
