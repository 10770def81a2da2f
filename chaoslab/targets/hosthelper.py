"""chaoslab's helper on a remote Docker engine's host, as the run holds it: its image, its
container, the stream the run talks to it over, and the undo of what it applied after a killed
run (chaoslab/agent.py is the other side).

The helper container runs chaoslab's own image (docker/helper: this machine's Python, chaoslab's
package, its native injectors and BPF objects, on an empty image): with the capabilities its
work needs (CAPABILITIES), in the host's PID, cgroup and network namespaces, with the host's
cgroup tree. The run attaches to its stdin and stdout before starting it: commands go one JSON
line each, replies and the helper's watchdog's events come back on its stdout. The engine
removes the container when the helper exits, which it does only after its watchdog undid
whatever it still held.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import shutil
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from chaoslab import build, errors, wire
from chaoslab.errors import ChaoslabError, FaultError, PreflightError, TargetError
from chaoslab.paths import BPF_SRC, BUILD, PACKAGE
from chaoslab.targets import engines, images
from chaoslab.targets.engines import Engine

if TYPE_CHECKING:
    from docker.client import DockerClient

    from chaoslab.targets.base import RunningTarget

ROLE = "helper"  # the org.chaoslab.target label of a helper container
READY_TIMEOUT = 60.0  # for the helper's Python to start and its watchdog to arm
# for a stopped helper to finish: the command under way (agent.DRAIN), its reverts, then its
# watchdog's undo of what is left (another DRAIN at most), and a margin; then the engine kills it
STOP_TIMEOUT = 150.0
BEAT_EVERY = 0.25  # seconds between beats sent to the helper, at most
SEND_TIMEOUT = 30.0  # for a line to go down the stream
CARRIED_SETTINGS = ("CHAOSLAB_BPF_MAP_ENTRIES", "CHAOSLAB_BPF_STATS")
APP = Path("/opt/chaoslab")
PYTHON = Path("/usr/local")


# -- the image -----------------------------------------------------------------------------------


def _python_archive() -> Path:
    """This machine's Python interpreter at /usr/local in an archive the Dockerfile ADDs: the
    binary, the standard library (without its tests), and every shared library the binary and
    its extension modules load, at the paths ldd gives (with the loader's cache). Made once per
    interpreter."""
    base = Path(sys.base_prefix)
    ver = f"python{sys.version_info.major}.{sys.version_info.minor}"
    exe = Path(sys.executable).resolve()
    key = f"{exe}:{exe.stat().st_mtime_ns}:{sys.version}"
    out = BUILD / "images" / f"helper-{ver}-{abs(hash(key)) & 0xFFFFFFFF:08x}.tar"
    marker = out.with_suffix(".key")
    if out.exists() and marker.exists() and marker.read_text() == key:
        return out
    stdlib = base / "lib" / ver
    skip = {"test", "site-packages", "idlelib", "tkinter", "turtledemo", "ensurepip", "lib2to3", "pydoc_data"}
    libbpf = _libbpf()  # loaded by name (ctypes), found through the loader's cache
    libs: dict[str, Path] = {str(libbpf): libbpf.resolve()} if libbpf.exists() else {}
    for binary in [exe, *(stdlib / "lib-dynload").glob("*.so"), libbpf]:
        if binary.exists():
            with contextlib.suppress(PreflightError):  # an extension module that needs no library
                libs.update(images.shared_libraries(binary))
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(f".{os.getpid()}.tmp")
    with tarfile.open(tmp, "w") as tar:
        for d in ("tmp", "var/lib", "run"):
            info = tarfile.TarInfo(d)
            info.type, info.mode = tarfile.DIRTYPE, 0o1777 if d == "tmp" else 0o755
            tar.addfile(info)
        tar.add(exe, f"{PYTHON.relative_to('/')}/bin/python3")
        for f in sorted(stdlib.rglob("*")):
            rel = f.relative_to(stdlib)
            if rel.parts[0] in skip or rel.parts[0].startswith("config-") or not f.is_file():
                continue
            if f.suffix == ".pyc" and ".opt-" in f.name:
                continue
            tar.add(f, f"{PYTHON.relative_to('/')}/lib/{ver}/{rel}", recursive=False)
        for named, real in sorted(libs.items()):
            tar.add(real, named.lstrip("/"), recursive=False)
        if Path("/etc/ld.so.cache").exists():
            tar.add("/etc/ld.so.cache", "etc/ld.so.cache")
    tmp.replace(out)
    marker.write_text(key)
    return out


def _libbpf() -> Path:
    import ctypes.util

    name = ctypes.util.find_library("bpf") or "libbpf.so.1"
    for d in ("/usr/lib/x86_64-linux-gnu", "/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib"):
        if (Path(d) / name).exists():
            return Path(d) / name
    return Path("/nonexistent")


# The programs the faults run there (the package that has each), and the files they load at
# run time (iptables' extensions, tc's delay distributions).
TOOLS = {
    "objdump": "apt-get install binutils",
    "ip": "apt-get install iproute2",
    "tc": "apt-get install iproute2",
    "iptables": "apt-get install iptables",
    "iptables-restore": "apt-get install iptables",
    "iptables-save": "apt-get install iptables",
    "nsenter": "apt-get install util-linux",
    "unshare": "apt-get install util-linux",
}
PLUGINS = (
    "/usr/lib/x86_64-linux-gnu/xtables",
    "/usr/lib/x86_64-linux-gnu/tc",
    "/usr/lib/xtables",
    "/usr/lib/tc",
)


def image_files() -> dict[str, Path]:
    """What the helper image holds besides the Python archive: chaoslab's package (its sources,
    the native injectors' C files whose builds are checked against them), PyYAML's pure-Python
    modules, the native injectors and the BPF objects, built here first."""
    import yaml

    files: dict[str, Path] = {"./python.tar": _python_archive()}
    for f in sorted(PACKAGE.rglob("*")):
        if (
            f.is_file()
            and "__pycache__" not in f.parts
            and f.suffix in (".py", ".c", ".h", ".json", ".proto")
        ):
            files[str(APP / "chaoslab" / f.relative_to(PACKAGE))] = f
    for f in sorted(Path(yaml.__file__).parent.glob("*.py")):
        files[str(APP / "yaml" / f.name)] = f
    for f in sorted(BPF_SRC.glob("*.bpf.[ch]")):
        files[str(APP / "bpf" / f.name)] = f
    for name in ("uinject", "nfqdelay"):
        out = build.native(name)
        files[str(APP / "build" / "bin" / name)] = out
        for named, real in images.shared_libraries(out).items():
            files.setdefault(named, real)
    for tool in TOOLS:  # at /usr/bin, on the image's PATH
        found = shutil.which(tool)
        if found is None:
            raise PreflightError(f"{tool} is missing (chaoslab's helper image holds it)", TOOLS[tool])
        files[f"/usr/bin/{tool}"] = Path(found).resolve()
        for named, real in images.shared_libraries(Path(found)).items():
            files.setdefault(named, real)
    from chaoslab.probes.syscalls import UNISTD  # the syscall layer's names for its numbers

    if UNISTD.exists():
        files[str(UNISTD)] = UNISTD
    for d in PLUGINS:  # at the same paths: the tools look for them there
        for f in sorted(Path(d).glob("*")) if Path(d).is_dir() else []:
            files.setdefault(str(f), f.resolve())
            if f.suffix == ".so":
                for named, real in images.shared_libraries(f).items():
                    files.setdefault(named, real)
    for src in sorted(BPF_SRC.glob("*.bpf.c")):
        obj = build.bpf_object(src.name.removesuffix(".bpf.c"))
        files[str(APP / "build" / "bpf" / obj.name)] = obj
    return files


def ensure_image(docker: DockerClient) -> str:
    return images.ensure_image(docker, ROLE, image_files())


# -- the container and its stream ----------------------------------------------------------------


# What the helper does there needs these, not all of them (`privileged` asks for every one the
# engine knows, and fails where the engine's own bounding set lacks one): ptrace (the entropy
# and syscall injectors), the cgroup files, namespaces, BPF and perf events (SYS_ADMIN: an engine
# that does not know CAP_BPF refuses it by name), signals and the network's tools.
CAPABILITIES = [
    "SYS_ADMIN",
    "SYS_PTRACE",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "KILL",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
]


def host_config(api: Any, auto_remove: bool) -> Any:
    return api.create_host_config(
        cap_add=CAPABILITIES,
        # no seccomp filter, AppArmor profile or SELinux label of the engine's: they refuse
        # ptrace and bpf calls the capabilities allow
        security_opt=["seccomp=unconfined", "apparmor=unconfined", "label=disable"],
        pid_mode="host",
        cgroupns="host",
        # the host's network namespace: a network fault shapes the host's end of a link too
        network_mode="host",
        binds={"/sys/fs/cgroup": {"bind": "/sys/fs/cgroup", "mode": "rw"}},
        auto_remove=auto_remove,
    )


class HostHelper:
    """The helper container on one remote engine, and the stream to it."""

    def __init__(
        self, engine: Engine, docker: DockerClient, name: str, log: Path, say: Callable[[str], None]
    ) -> None:
        self.engine = engine
        self.docker = docker
        self.name = name
        self.image = ""
        self.id = ""
        self._log = log
        self._say = say
        self._sock: Any = None
        self._send = threading.Lock()
        self._replies: dict[int, dict[str, Any]] = {}
        self._arrived = threading.Condition()
        self._ids = itertools.count(1)
        self._ready = False
        self._gone = ""
        self._beat_due = threading.Event()
        self._closing = threading.Event()
        self.events: list[dict[str, Any]] = []  # what its watchdog said (tripped, reverted ...)
        self.offset = 0.0  # its host's clock less this one's, seconds

    @property
    def record(self) -> dict[str, object]:
        """What the journal keeps of it: enough for `recover` to stop it and undo there."""
        return {
            "engine": self.engine.url,
            "engine_name": self.engine.name,
            "helper": self.name,
            "helper_image": self.image,
        }

    def start(self, labels: Mapping[str, str], within: float) -> None:
        api = self.docker.api
        created = api.create_container(
            self.image,
            command=["serve", "--within", f"{within:g}"],
            # the run's settings of the probes it carries there (a map's size, the BPF
            # statistics' mode) are the helper's too
            environment={k: v for k, v in os.environ.items() if k in CARRIED_SETTINGS} or None,
            name=self.name,
            labels={**labels},
            stdin_open=True,  # not detached: StdinOnce, its stdin closes with this stream
            tty=False,
            host_config=host_config(api, auto_remove=True),
        )
        self.id = created["Id"]
        # attached before it starts: nothing it says is lost, and its stdin is this stream's
        self._sock = api.attach_socket(self.id, params={"stdin": 1, "stdout": 1, "stderr": 1, "stream": 1})
        api.start(self.id)
        threading.Thread(target=self._read, name="helper-read", daemon=True).start()
        threading.Thread(target=self._beats, name="helper-beat", daemon=True).start()
        deadline = time.monotonic() + READY_TIMEOUT
        with self._arrived:
            while not self._ready and not self._gone:
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self._arrived.wait(left)
        if not self._ready:
            raise TargetError(
                f"chaoslab's helper {self.name} on the {self.engine} did not start"
                + (f": {self._gone}" if self._gone else f" within {READY_TIMEOUT:g}s"),
                f"see {self._log}",
            )
        self.offset = self._clock()

    def _clock(self) -> float:
        """The engine host's clock less this one's, in seconds: the best of a few round trips,
        each read at its middle (as NTP does). The stalls its probes time are moved by it."""
        best = (float("inf"), 0.0)
        for _ in range(5):
            sent = time.time()
            there = float(self.call("clock", 10.0)["time"])
            back = time.time()
            best = min(best, (back - sent, there - (sent + back) / 2))
        return best[1]

    def _raw(self) -> Any:
        return getattr(self._sock, "_sock", self._sock)

    def _read(self) -> None:
        from docker.utils.socket import frames_iter

        buf = b""
        try:
            with self._log.open("ab") as log:
                for stream, data in frames_iter(self._sock, tty=False):
                    if stream != 1:
                        log.write(data)
                        log.flush()
                        continue
                    buf += data
                    while b"\n" in buf:
                        line, buf = buf.split(b"\n", 1)
                        self._take(line)
        except (OSError, ValueError) as exc:
            self._gone = str(exc)
        with self._arrived:
            self._gone = self._gone or "its stream closed"
            self._arrived.notify_all()

    def _take(self, line: bytes) -> None:
        if (msg := wire.message(line)) is None:
            return
        with self._arrived:
            if msg.get("event") == "ready":
                self._ready = True
            elif msg.get("event") == "failed":
                self._gone = str(msg.get("why") or "it failed")
            elif isinstance(msg.get("watchdog"), dict):
                event = msg["watchdog"]
                self.events.append(event)
                if event.get("event") in ("tripped", "reverted", "failed"):
                    self._say(f"helper on {self.engine.host}: watchdog {_words(event)}")
            elif isinstance(msg.get("id"), int):
                self._replies[msg["id"]] = msg
            self._arrived.notify_all()

    def _write(self, msg: Mapping[str, object], wait: float = SEND_TIMEOUT) -> None:
        """One line down the stream; an OSError when it cannot go within `wait` seconds (a
        stalled connection: the helper's switch trips on the missing beats)."""
        data = (json.dumps(msg) + "\n").encode()
        if not self._send.acquire(timeout=wait):
            raise OSError("the stream to the helper is stalled")
        try:
            self._raw().sendall(data)
        finally:
            self._send.release()

    def beat(self) -> None:
        """The run is alive: a beat goes to the helper (from a thread of its own, at most every
        BEAT_EVERY seconds), so a stalled engine connection never holds the run loop."""
        self._beat_due.set()

    def _beats(self) -> None:
        while not self._closing.is_set():
            if self._beat_due.wait(1.0):
                self._beat_due.clear()
                try:
                    self._write({"op": "beat"})
                except OSError:
                    return
                time.sleep(BEAT_EVERY)

    def call(self, op: str, timeout: float, **data: object) -> dict[str, Any]:
        """One command, and its reply; the helper's error comes back as the same kind of error."""
        n = next(self._ids)
        try:
            self._write({"id": n, "op": op, **data})
        except OSError as exc:
            raise TargetError(
                f"chaoslab's helper on the {self.engine} cannot be reached: {exc}",
                "its watchdog undoes what it applied; run `chaoslab recover` once the engine answers",
            ) from exc
        deadline = time.monotonic() + timeout
        with self._arrived:
            while n not in self._replies:
                left = deadline - time.monotonic()
                if self._gone or left <= 0:
                    why = self._gone or f"no answer within {timeout:g}s"
                    raise TargetError(
                        f"chaoslab's helper on the {self.engine} did not answer {op}: {why}",
                        "its watchdog undoes what it applied; run `chaoslab recover` once the engine answers",
                    )
                self._arrived.wait(min(left, 0.5))
            reply = self._replies.pop(n)
        if not reply.get("ok"):
            cls = getattr(errors, str(reply.get("error")), FaultError)
            if not (isinstance(cls, type) and issubclass(cls, ChaoslabError)):
                cls = FaultError
            raise cls(
                f"on the {self.engine.host} helper: {reply.get('message')}", str(reply.get("hint") or "")
            )
        return reply

    def close(self) -> None:
        """The run ended: its end goes to the helper, the stream closes, and the helper exits
        (the engine removes its container)."""
        self._closing.set()
        if self._sock is None:
            return
        with contextlib.suppress(OSError):
            self._write({"op": "end"}, wait=5.0)
        with contextlib.suppress(OSError):  # closed whatever happened: the helper then exits
            self._raw().shutdown(2)
        with contextlib.suppress(OSError):
            self._sock.close()


def _words(event: Mapping[str, Any]) -> str:
    what = str(event.get("event"))
    if what == "tripped":
        return f"tripped ({event.get('condition')}): {event.get('reason')}"
    if what == "reverted":
        return f"undid {event.get('fault')} {float(event.get('after_s') or 0):.3f} s after"
    return f"could not undo {event.get('fault')}: {event.get('error')}"


def described(t: RunningTarget) -> dict[str, object]:
    """A remote target as the helper needs it (`agent.view`): its spec, the PID its engine
    gives, its container, and its links on the run's network there."""
    assert t.container is not None
    return {
        "spec": wire.dump(t.spec),
        "pid": t.pid,
        "container": t.container.id,
        "name": t.container.name,
        "links": {peer: wire.dump(link) for peer, link in t.links.items()},
    }


# -- after a killed run --------------------------------------------------------------------------


def recover(kind: str, record: Mapping[str, object]) -> list[str]:
    """Undo a fault a helper applied, from the run's journal record: the helper is stopped if it
    still runs (its watchdog undoes what it holds before it exits), then the kind's own undo runs
    on the engine's host in a one-shot helper container, from what the helper said it did. A
    TargetError when the engine does not answer: the record stays pending."""
    from chaoslab.targets.containers import reachable

    engine = engines.reopen(str(record.get("engine", "")), str(record.get("engine_name") or ""))
    name, image = str(record.get("helper", "")), str(record.get("helper_image", ""))
    what = f"{kind} fault on {record.get('target', '?')}"
    with reachable(engine) as client:
        if client is None:
            raise TargetError(
                f"{what}, applied by chaoslab's helper on the {engine}: the engine is not reachable",
                "start it, or reach it from here, then run `chaoslab recover` again",
            )
        lines = stop(client, name, engine)
        inner = record.get("applied_there")
        if isinstance(inner, Mapping):
            lines += _undo_there(client, image, kind, inner, engine, name.removesuffix(ROLE))
    return lines


def stop(client: DockerClient, name: str, engine: Engine) -> list[str]:
    """Stop a helper container (SIGTERM: its watchdog undoes what it holds, then it exits) and
    remove it."""
    from docker.errors import APIError, NotFound

    try:
        c = client.containers.get(name)
        c.stop(timeout=int(STOP_TIMEOUT))  # the engine kills it only after that
    except NotFound:
        return []
    except APIError as exc:  # never removed by force while it may be undoing: kept pending
        raise TargetError(
            f"chaoslab's helper {name} on the {engine} could not be stopped: {exc.explanation or exc}",
            "see the engine's log; run `chaoslab recover` again",
        ) from exc
    with contextlib.suppress(NotFound, APIError):  # --rm: the engine may have removed it already
        c.remove()
    return [f"stopped chaoslab's helper {name} on the {engine} (its watchdog undid what it held)"]


def _undo_there(
    client: DockerClient, image: str, kind: str, inner: Mapping[str, object], engine: Engine, prefix: str
) -> list[str]:
    """The kind's own undo in a one-shot helper container, with the network namespace of each
    of the run's containers still there named as the helper named it (a network fault's record
    names its chain's and its trees' namespaces)."""
    import docker.errors

    api = client.api
    named = []
    for c in client.containers.list(filters={"name": prefix}):
        pid = int((c.attrs.get("State") or {}).get("Pid") or 0)
        if c.name.startswith(prefix) and pid > 0:
            named += ["--netns", f"{c.name}={pid}"]
    argv = ["undo", *named, kind, json.dumps(dict(inner))]
    try:
        c = api.create_container(image, command=argv, host_config=host_config(api, auto_remove=False))
    except docker.errors.ImageNotFound:
        raise TargetError(
            f"the {kind} fault's undo on the {engine}: chaoslab's helper image {image} is gone from it",
            "run the same chaoslab once against that engine (it builds the image), then `chaoslab recover`",
        ) from None
    try:
        api.start(c["Id"])
        code = api.wait(c["Id"], timeout=STOP_TIMEOUT).get("StatusCode", 1)
        said = bytes(api.logs(c["Id"], stdout=True, stderr=True)).decode(errors="replace").splitlines()
    finally:
        with contextlib.suppress(docker.errors.APIError):
            api.remove_container(c["Id"], force=True)
    if code != 0:
        raise FaultError(
            f"the {kind} fault's undo on the {engine} failed: {' '.join(said)[-500:]}", "see above"
        )
    return [f"{line} (on the {engine})" for line in said if line.strip()]
