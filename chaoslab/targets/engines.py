"""Which Docker engine a run's containers run on, and every engine chaoslab has used here.

A scenario's `engine:` names it the usual ways: a URL (`unix:///var/run/docker.sock`,
`tcp://HOST:2375`, `ssh://user@HOST`) or the name of a Docker context (`docker context ls`).
Without it, DOCKER_HOST, then the local socket, as the docker command does. TLS for a
`tcp://` engine comes from the context, or from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH.

An engine reached through a unix socket is local: its containers' processes, namespaces and
cgroups are this machine's, and faults and probes reach them directly. Any other is remote,
even when it happens to run on this machine: chaoslab reaches its containers only through the
engine's API and their published ports on the engine's host.

Every engine a run is about to use is written to /var/lib/chaoslab/engines.json first (it
outlives a reboot, as a remote engine's containers do), so that `chaoslab recover` and the
residue check look for leftovers on each of them; the journal records each container's and
network's engine, by URL and by the name it was given (a context's TLS is read from it again).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import re
import socket
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from chaoslab.errors import PreflightError

if TYPE_CHECKING:
    from docker.client import DockerClient

LOCAL = "unix:///var/run/docker.sock"
SCHEMES = ("unix", "tcp", "ssh", "http", "https")
CONTEXT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.+-]*$")
KNOWN = Path(os.environ.get("CHAOSLAB_ENGINES", "/var/lib/chaoslab/engines.json"))
TIMEOUT = 60  # an API call (a build's upload takes a while)
ANSWER_TIMEOUT = 10  # the first answer: an engine that does not answer is told in seconds


@dataclass(frozen=True)
class Engine:
    name: str  # as the user gave it ("" for the default), for messages
    url: str  # what the SDK connects to
    tls: object | None = None  # a docker.tls.TLSConfig, from a context

    @property
    def remote(self) -> bool:
        return not self.url.startswith("unix://")

    @property
    def host(self) -> str:
        """The engine's host, where its containers' published ports are reached ("" for a
        local engine: its containers are reached on their own addresses)."""
        return urlsplit(self.url).hostname or "" if self.remote else ""

    def __str__(self) -> str:
        if self.name and self.name != self.url:
            return f"Docker engine {self.name} ({self.url})"
        return f"Docker engine {self.url}"


def problem(value: str) -> str | None:
    """What is wrong with an `engine:` value, or None (the scenario's check: no network)."""
    if "://" in value:
        try:
            parts = urlsplit(value)
        except ValueError as exc:  # an unclosed [IPv6 address
            return f"the engine URL cannot be read: {exc}"
        if parts.scheme not in SCHEMES:
            return f"the engine URL's scheme {parts.scheme!r} is not one of {', '.join(SCHEMES)}"
        if parts.scheme == "unix":
            return None if parts.path else "a unix:// engine URL needs the socket's path"
        try:
            port = parts.port
        except ValueError:
            port = -1
        if port is not None and not 1 <= port <= 65535:
            return "the engine URL's port is not a number from 1 to 65535"
        if not parts.hostname:
            return "the engine URL names no host"
        if parts.scheme != "ssh" and port is None:
            return f"a {parts.scheme}:// engine URL needs the port (2375, or 2376 with TLS)"
        return None
    if not CONTEXT_NAME.match(value):
        return "neither a URL (unix://, tcp://, ssh://) nor a Docker context's name"
    return None


def resolve(name: str = "") -> Engine:
    """The engine `name` stands for: a URL, a Docker context, or "" (DOCKER_HOST, then the
    local socket)."""
    if not name:
        # the docker command's order: DOCKER_HOST, DOCKER_CONTEXT, the config's current context
        url = os.environ.get("DOCKER_HOST", "")
        current = "" if url else os.environ.get("DOCKER_CONTEXT") or _current_context()
        if current and current != "default":
            return _context(current)
        return Engine("", url or LOCAL, tls_for(url or LOCAL))
    if "://" in name:
        return Engine(name, name, tls_for(name))
    if name == "default":
        return resolve()
    return _context(name)


def _config_dir() -> Path:
    return Path(os.environ.get("DOCKER_CONFIG") or Path.home() / ".docker")


def _current_context() -> str:
    try:
        return str(json.loads((_config_dir() / "config.json").read_text()).get("currentContext") or "")
    except (OSError, ValueError, AttributeError):
        return ""


def _context(name: str) -> Engine:
    """A Docker context, read from the CLI's store (DOCKER_CONFIG, else ~/.docker): its
    meta.json gives the engine's URL, its tls directory the client's certificates."""
    store = _config_dir() / "contexts"
    key = hashlib.sha256(name.encode()).hexdigest()
    meta = store / "meta" / key / "meta.json"
    try:
        endpoint = json.loads(meta.read_text())["Endpoints"]["docker"]
        url = str(endpoint["Host"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        why = "no such context" if isinstance(exc, FileNotFoundError) else f"{meta} is not a context's: {exc}"
        raise PreflightError(
            f"engine: Docker context {name!r} cannot be read: {why}",
            "name a context that `docker context ls` shows, or give the engine's URL (tcp://HOST:2375)",
        ) from None
    tls_dir = store / "tls" / key / "docker"
    tls = None
    if tls_dir.is_dir():
        from docker.tls import TLSConfig

        ca, cert, key_file = (tls_dir / f for f in ("ca.pem", "cert.pem", "key.pem"))
        tls = TLSConfig(
            client_cert=(str(cert), str(key_file)) if cert.exists() and key_file.exists() else None,
            ca_cert=str(ca) if ca.exists() else None,
            verify=not endpoint.get("SkipTLSVerify", False),
        )
    return Engine(name, url, tls)


def tls_for(url: str) -> object | None:
    if not url.startswith(("tcp://", "https://")) or not os.environ.get("DOCKER_TLS_VERIFY"):
        return None
    from docker.utils import kwargs_from_env

    tls: object | None = kwargs_from_env().get("tls")
    return tls


def client(engine: Engine, timeout: float = TIMEOUT) -> DockerClient:
    """A client of a running engine, or a PreflightError that names it and says what to do."""
    try:
        from docker.client import DockerClient
    except ImportError as exc:
        raise PreflightError(
            "the Docker runtime needs the Docker SDK for Python",
            "pip install docker (the set-up script does)",
        ) from exc
    if engine.remote:
        hint = (
            f"start it, or check that this machine reaches {engine.host or engine.url} and the port is open"
        )
    else:
        hint = (
            "install Docker (apt-get install docker.io) and start it (`dockerd &`, the set-up script "
            "does), or use runtime: local"
        )
    if engine.url.startswith("unix://"):
        # asked first, and closed: the SDK leaves its socket open when nothing listens
        try:
            with socket.socket(socket.AF_UNIX) as s:
                s.settimeout(10)
                s.connect(engine.url.removeprefix("unix://"))
        except OSError as exc:
            raise PreflightError(f"{engine} is not reachable: {exc.strerror or exc}", hint) from exc
    try:  # the SDK asks the API's version at once, within the timeout given here
        c = DockerClient(
            base_url=engine.url, tls=engine.tls or False, timeout=ANSWER_TIMEOUT, use_ssh_client=True
        )
    except Exception as exc:  # the SDK's errors, requests' and paramiko's alike
        raise PreflightError(f"{engine} is not reachable: {why(exc)}", hint) from exc
    try:
        c.ping()
        c.api.timeout = timeout
    except Exception as exc:  # the SDK's errors, requests' and paramiko's alike
        c.close()
        raise PreflightError(f"{engine} is not reachable: {why(exc)}", hint) from exc
    return c


def why(exc: BaseException) -> str:
    text = str(exc)
    for marker in ("Connection refused", "timed out", "No route to host", "Name or service not known"):
        if marker in text:
            return marker
    return text.splitlines()[0][:300] if text else type(exc).__name__


@contextlib.contextmanager
def _listing() -> Iterator[dict[str, str]]:
    """The list of engines, read and written under a lock (runs start, recover sweeps)."""
    KNOWN.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(KNOWN.with_suffix(".lock"), os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        known = used()
        before = dict(known)
        yield known
        if known != before:
            tmp = KNOWN.with_suffix(f".{os.getpid()}.tmp")
            tmp.write_text(json.dumps(known, indent=1))
            tmp.replace(KNOWN)
    finally:
        os.close(fd)


def remember(engine: Engine) -> None:
    """Write a remote engine down before a run puts anything on it (the local engine needs no
    entry: recover and the residue check always look at it). A list that cannot be written is
    a PreflightError: a run there would leave what no recover could find."""
    if not engine.remote:
        return
    try:
        with _listing() as known:
            known[engine.url] = engine.name
    except OSError as exc:
        raise PreflightError(
            f"the list of engines chaoslab used cannot be written ({KNOWN}): {exc.strerror or exc}",
            "make /var/lib/chaoslab writable, or point CHAOSLAB_ENGINES at a file that outlives a reboot",
        ) from None


def forget(url: str, busy: Callable[[], bool]) -> bool:
    """Strike an engine off the list (it holds nothing of chaoslab's), unless `busy()` says a
    live run may be about to put something there; under the list's lock."""
    with _listing() as known:
        if url not in known or busy():
            return False
        del known[url]
    return True


def used() -> dict[str, str]:
    """Every engine a run here has used (URL -> the name it was given)."""
    try:
        known = json.loads(KNOWN.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in known.items()} if isinstance(known, dict) else {}


def reopen(url: str, name: str = "") -> Engine:
    """An engine a run used, at the URL it used (a context may point elsewhere since), with
    the TLS its name gives (a context's certificates, else the environment's)."""
    tls = tls_for(url)
    if name and "://" not in name and name != "default":
        with contextlib.suppress(PreflightError):
            tls = _context(name).tls or tls
    return Engine(name, url, tls)


def every() -> list[Engine]:
    """The default engine and every one a run here has used (recover and the residue check)."""
    try:
        out = [resolve()]
    except PreflightError:  # a DOCKER_CONTEXT that cannot be read: the local socket still can
        out = [Engine("", LOCAL)]
    out += [reopen(url, name) for url, name in used().items() if url != out[0].url]
    return out


@contextlib.contextmanager
def reachable(engine: Engine) -> Iterator[DockerClient | None]:
    """A client when the engine answers, None otherwise; closed on leaving."""
    try:
        c = client(engine)
    except PreflightError:
        yield None
        return
    with contextlib.closing(c):
        yield c
