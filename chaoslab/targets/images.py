"""The Docker runtime's images, built here from docker/<service>/Dockerfile (no registry).

Each image is FROM scratch with the files its service names (`Service.image_files`): the
static Go binary, or Envoy's binary with the shared libraries ldd finds. chaoslab assembles
the build context under .build/images/<service>/ and tags the image with a digest of the
Dockerfile and every file, `chaoslab/<service>:<digest>` (and `:latest` for compose). An
image whose tag exists is reused; older chaoslab images of the same service are removed.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoslab.errors import PreflightError
from chaoslab.paths import BUILD, DOCKER_SRC
from chaoslab.proc import run

if TYPE_CHECKING:
    from docker.client import DockerClient

    from chaoslab.scenario.model import TargetSpec
    from chaoslab.targets.builtins import Builtin

LABEL = "org.chaoslab.image"
LABEL_USER = "org.chaoslab.user-image"  # an image chaoslab built from a user's context
REPOSITORY = "chaoslab"


def shared_libraries(binary: Path) -> dict[str, Path]:
    """The libraries (and the loader) a dynamic binary needs, by absolute path: ldd's view."""
    res = run(["ldd", str(binary)], check=False)
    if "not a dynamic executable" in res.stdout + res.stderr:
        return {}
    out: dict[str, Path] = {}
    for line in res.stdout.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if path.startswith("/"):
            out[path] = Path(path).resolve()
    if not out:
        raise PreflightError(
            f"ldd found no libraries for {binary}:\n{res.stderr.strip()}", "apt-get install libc-bin"
        )
    return out


HASHES = BUILD / "images" / "hashes.json"  # file identity (device, inode, size, mtime) -> sha256


def file_hash(path: Path) -> str:
    """sha256 of a file, read again only when its identity changed (Envoy's binary is 110 MB,
    and every Docker run checks its images at preflight)."""
    st = path.stat()
    key = f"{path.resolve()}:{st.st_dev}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
    try:
        known = json.loads(HASHES.read_text())
    except (OSError, ValueError):
        known = {}
    if key not in known:
        h = hashlib.sha256()
        with path.open("rb") as fh:
            while chunk := fh.read(1 << 20):
                h.update(chunk)
        known = {k: v for k, v in known.items() if not k.startswith(f"{path.resolve()}:")}
        known[key] = h.hexdigest()
        HASHES.parent.mkdir(parents=True, exist_ok=True)
        tmp = HASHES.with_suffix(f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(HASHES)
    return str(known[key])


def digest(dockerfile: Path, files: dict[str, Path]) -> str:
    h = hashlib.sha256(dockerfile.read_bytes())
    for dest in sorted(files):
        h.update(dest.encode())
        h.update(file_hash(files[dest]).encode())
    return h.hexdigest()[:12]


def _context(name: str, dockerfile: Path, files: dict[str, Path]) -> Path:
    """The build context: the Dockerfile, `rootfs/` holding `files` at their paths in the image,
    and any file named `./NAME` at the context's top (an archive the Dockerfile ADDs)."""
    ctx = BUILD / "images" / name
    shutil.rmtree(ctx, ignore_errors=True)
    (ctx / "rootfs").mkdir(parents=True)
    shutil.copy2(dockerfile, ctx / "Dockerfile")
    for dest, src in files.items():
        out = ctx / dest if dest.startswith("./") else ctx / "rootfs" / dest.lstrip("/")
        out.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(src, out)  # same file system: no copy of a 100 MB binary
        except OSError:
            shutil.copy2(src, out)
    return ctx


def ensure(client: DockerClient, service: Builtin) -> str:
    """The tag of a built-in's image, built now if this exact content has no image yet."""
    return ensure_image(client, service.name, service.image_files())


def ensure_image(client: DockerClient, name: str, files: dict[str, Path]) -> str:
    """The tag of chaoslab's image `name` (docker/<name>/Dockerfile with `files`), built now if
    this exact content has no image yet in the engine."""
    import docker.errors

    dockerfile = DOCKER_SRC / name / "Dockerfile"
    tag = f"{REPOSITORY}/{name}:{digest(dockerfile, files)}"
    try:
        client.images.get(tag)
        return tag
    except docker.errors.ImageNotFound:
        pass
    ctx = _context(name, dockerfile, files)
    try:
        image = _build(client, str(ctx), tag, "Dockerfile", {LABEL: name})
    finally:
        shutil.rmtree(ctx, ignore_errors=True)
    image.tag(f"{REPOSITORY}/{name}", "latest")
    for old in client.images.list(filters={"label": f"{LABEL}={name}"}):
        if old.id != image.id:
            with contextlib.suppress(docker.errors.APIError):  # still used by a container
                client.images.remove(old.id)
    return tag


def _build(client: DockerClient, context: str, tag: str, dockerfile: str, labels: dict[str, str]) -> Any:
    import docker.errors

    try:
        image, _ = client.images.build(
            path=context, dockerfile=dockerfile, tag=tag, labels=labels, rm=True, forcerm=True
        )
    except docker.errors.BuildError as exc:
        log = "".join(str(x.get("stream", x.get("error", ""))) for x in exc.build_log)[-2000:]
        raise PreflightError(
            f"building image {tag} failed: {exc.msg}\n{log}", "see the build log above"
        ) from exc
    except docker.errors.APIError as exc:
        raise PreflightError(
            f"building image {tag} failed: {exc.explanation or exc}", "check the context"
        ) from exc
    return image


def ensure_user(client: DockerClient, spec: TargetSpec) -> str:
    """A user's image: the tag it names (it must be in the engine: no registry is pulled
    from), or one built now from its Dockerfile context (the engine's cache keeps it fast)."""
    import docker.errors

    assert spec.image is not None
    if spec.image.build:
        tag = spec.image.tag or f"chaoslab-user/{spec.name}:latest"
        _build(client, spec.image.build, tag, spec.image.dockerfile, {LABEL_USER: spec.name})
        return tag
    try:
        client.images.get(spec.image.tag)
    except docker.errors.ImageNotFound as exc:
        raise PreflightError(
            f"target {spec.name}: image {spec.image.tag!r} is not in the local Docker engine",
            "build or load it first (docker build / docker load), or give build: with its Dockerfile context",
        ) from exc
    return spec.image.tag


def ensure_all(client: DockerClient) -> list[str]:
    """Every built-in's image tag, each built only if missing."""
    from chaoslab.targets.builtins import BUILTINS

    return [ensure(client, BUILTINS[name]) for name in sorted(BUILTINS)]
