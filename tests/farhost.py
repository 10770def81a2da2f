"""A second host built from what this kernel offers, for the tests and benches of remote workers.

A network namespace of its own with a veth link to the host and its own addresses
(10.250.N.0/30): what runs in it reaches the host, and the host reaches it, only over that
link, as a machine on the same switch would. Its clock is the host's.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from chaoslab import build


@dataclass
class FarHost:
    ns: str
    here: str  # the host's end of the link
    there: str  # the namespace's address

    def run(self, argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` on the far host, its output in `log`."""
        with log.open("wb") as out:
            return subprocess.Popen(
                ["ip", "netns", "exec", self.ns, *argv],
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
            )


@contextmanager
def far_host() -> Iterator[FarHost]:
    """The namespace and its link, removed on the way out (root only)."""
    n = 1 + os.getpid() % 250
    ns, here_if = f"clfar{os.getpid()}", f"clfh{os.getpid()}"
    here, there = f"10.250.{n}.1", f"10.250.{n}.2"
    cmds = [
        ["ip", "netns", "add", ns],
        ["ip", "link", "add", here_if, "type", "veth", "peer", "name", "eth0", "netns", ns],
        ["ip", "addr", "add", f"{here}/30", "dev", here_if],
        ["ip", "link", "set", here_if, "up"],
        ["ip", "-n", ns, "addr", "add", f"{there}/30", "dev", "eth0"],
        ["ip", "-n", ns, "link", "set", "eth0", "up"],
        ["ip", "-n", ns, "link", "set", "lo", "up"],
    ]
    try:
        for cmd in cmds:
            subprocess.run(cmd, check=True, capture_output=True)
        yield FarHost(ns, here, there)
    finally:
        subprocess.run(["ip", "netns", "del", ns], capture_output=True)
        subprocess.run(["ip", "link", "del", here_if], capture_output=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def service_there(far: FarHost, tmp_path: Path) -> tuple[subprocess.Popen[bytes], int]:
    """The Go service, started inside the far host's namespace: (process, http port)."""
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    argv = ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes"]
    argv += ["-keyout", str(key), "-out", str(cert), "-days", "1", "-subj", "/CN=localhost"]
    subprocess.run(argv, check=True, capture_output=True)
    http = free_port()
    svc = far.run(
        [
            str(build.go_service("go-api")),
            "-addr",
            f"{far.there}:{free_port()}",
            "-http-addr",
            f"{far.there}:{http}",
            "-cert",
            str(cert),
            "-key",
            str(key),
        ],
        tmp_path / "go-api.log",
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection((far.there, http), timeout=1).close()
            return svc, http
        except OSError:
            time.sleep(0.05)
    svc.kill()
    raise AssertionError("go-api did not start in the far namespace")


ENGINE_PORT = 2375


@contextmanager
def engine_there(far: FarHost, root: Path, timeout: float = 60.0) -> Iterator[str]:
    """A Docker engine of its own on the far host, standing in for a remote one: its own data
    root, exec root and sockets under `root`, its API on the far host's address over TCP (the
    way a remote engine is reached), its containers in the far host's network namespace and
    under a cgroup parent of their own. Yields its URL once it answers (within `timeout`
    seconds: an emulated guest takes minutes); stopped and struck off chaoslab's list of engines
    on the way out."""
    from chaoslab.targets import engines

    root.mkdir(parents=True, exist_ok=True)
    url = f"tcp://{far.there}:{ENGINE_PORT}"
    # nsenter --net, not `ip netns exec`: the latter mounts a /sys of its own, hiding the cgroups
    argv = ["nsenter", f"--net=/run/netns/{far.ns}", "dockerd", "--data-root", str(root / "data")]
    argv += ["--exec-root", str(root / "exec"), "--pidfile", str(root / "dockerd.pid")]
    argv += ["-H", f"unix://{root / 'docker.sock'}", "-H", url, "--tls=false"]
    parent = f"far-engine-{far.ns}"
    argv += ["--cgroup-parent", f"/{parent}", "--bip", "10.252.0.1/24"]
    with (root / "dockerd.log").open("wb") as log:
        daemon = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + timeout
        while _down(url):
            if daemon.poll() is not None or time.monotonic() > deadline:
                tail = (root / "dockerd.log").read_text()[-2000:]
                raise AssertionError(f"the far host's dockerd did not start: {tail}")
            time.sleep(0.2)
        yield url
    finally:
        daemon.terminate()
        try:
            daemon.wait(30)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait(10)
        engines.forget(url, busy=lambda: False)  # its engine is gone, and with it all it held
        for hierarchy in Path("/sys/fs/cgroup").glob(f"*/{parent}"):  # v1: one per controller
            for d in sorted((p for p in hierarchy.rglob("*") if p.is_dir()), key=lambda p: -len(p.parts)):
                d.rmdir()
            hierarchy.rmdir()


def _down(url: str) -> bool:
    from chaoslab.errors import PreflightError
    from chaoslab.targets import engines

    try:
        engines.client(engines.Engine(url, url)).close()
    except PreflightError:
        return True
    return False


def main(argv: list[str] | None = None) -> int:
    """python -m tests.farhost SCENARIO OUT: the scenario run with its targets on a second Docker
    engine stood up here (the main job's remote-engine run); its exit code is chaoslab's."""
    import argparse
    import shutil
    import sys
    import tempfile

    ap = argparse.ArgumentParser(prog="python -m tests.farhost")
    ap.add_argument("scenario", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    with far_host() as far, tempfile.TemporaryDirectory(prefix="chaoslab-far-") as tmp:
        root = Path(f"/var/tmp/chaoslab-far-engine-{far.ns}")
        try:
            with engine_there(far, root) as url:
                scenario = Path(tmp) / args.scenario.name
                scenario.write_text(f"runtime: docker\nengine: {url}\n" + args.scenario.read_text())
                print(f"targets on the Docker engine {url}, in network namespace {far.ns}", flush=True)
                return subprocess.run(
                    [sys.executable, "-m", "chaoslab", "run", str(scenario), "--out", str(args.out)]
                ).returncode
        finally:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
