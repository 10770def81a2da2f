"""Files for docker/compose.yaml, the stack run by hand: images, certificates, Envoy's config.

`chaoslab stack` builds (or reuses) the images and writes .build/stack/: a CA and leaf for
the compose network's fixed addresses and 127.0.0.1, and Envoy's bootstrap pointing at the
Go service. The compose file mounts that directory at /stack in both containers.
"""

from __future__ import annotations

import json
from pathlib import Path

from chaoslab.paths import BUILD
from chaoslab.targets import certs, containers, envoy_config, images
from chaoslab.targets.builtins import GoApi
from chaoslab.targets.certs import Certs
from chaoslab.targets.services import Launch, Service

STACK = BUILD / "stack"
MOUNT = Path("/stack")  # where compose.yaml mounts STACK
API_IP, EDGE_IP = "10.234.0.2", "10.234.0.3"  # the compose network's fixed addresses


def inside() -> Certs:
    """The certificates as the containers see them."""
    return Certs(MOUNT / "ca.pem", MOUNT / "tls.pem", MOUNT / "tls.key")


def api_command() -> list[str]:
    """The Go service's arguments in compose.yaml (its image's ENTRYPOINT is the binary)."""
    api = Service(GoApi().parse_default("api"))
    return api.argv(Launch(MOUNT, inside()))[1:]


def write(directory: Path = STACK) -> list[str]:
    """Build the images and write the stack's files; returns what was done, line by line."""
    with containers.connected() as engine:
        done = [f"image {tag}" for tag in images.ensure_all(engine)]
    certs.make(directory, ["127.0.0.1", API_IP, EDGE_IP])
    config = envoy_config.bootstrap(inside(), API_IP, dict(GoApi.PORTS), 1, inside().ca)
    (directory / "envoy.json").write_text(json.dumps(config, indent=1))
    return [*done, f"wrote {directory}/{{ca.pem,tls.pem,tls.key,envoy.json}}"]
