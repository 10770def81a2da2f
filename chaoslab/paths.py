"""Where chaoslab finds its sources and puts what it builds."""

from __future__ import annotations

import os
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
REPO = PACKAGE.parent
BPF_SRC = REPO / "bpf"
DOCKER_SRC = REPO / "docker"
BUILD = Path(os.environ.get("CHAOSLAB_BUILD_DIR", REPO / ".build"))
