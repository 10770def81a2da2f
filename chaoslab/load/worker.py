"""`chaoslab worker --master HOST:PORT`: a Locust worker with chaoslab's users, on a host of
its own, for the runs whose `load.remote` names that master.

It runs Locust's own worker process (`locust --worker`) with chaoslab's locustfile in its
`remote` role, which joins the run through the master's port (chaoslab/load/remote.py) and
takes its share of the load from there. One Locust worker serves one run; by default the
command starts the next one when a run is over, to serve the following run, until it is
interrupted. Nothing here needs root: a worker only sends requests.
"""

from __future__ import annotations

import ipaddress
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

from chaoslab.errors import ExitCode, UsageError
from chaoslab.paths import PACKAGE

PAUSE = 1.0  # seconds between two runs served (a master that has not quit yet refuses a join)


def parse_master(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        ipaddress.ip_address(host)
        ok = bool(sep) and port.isdigit() and 0 < int(port) < 65536
    except ValueError:
        ok = False
    if not ok:
        raise UsageError(
            f"--master {text!r}: give the address and port the run's Locust master listens on",
            "the scenario's load.remote.listen, e.g. --master 10.0.0.5:5557",
        )
    return host, int(port)


def argv(master: str) -> tuple[list[str], dict[str, str]]:
    host, port = parse_master(master)
    cmd = [sys.executable, "-m", "locust", "-f", str(PACKAGE / "load" / "locustfile.py"), "--worker"]
    cmd += ["--master-host", host, "--master-port", str(port), "--loglevel", "WARNING"]
    return cmd, {"CHAOSLAB_ROLE": "remote", "CHAOSLAB_MASTER": master}


def serve(master: str, once: bool, wait: float, say: Callable[[str], None]) -> int:
    cmd, env = argv(master)
    served = 0
    while True:
        say((f"served {served} run(s); " if served else "") + f"waiting for a run at {master}")
        child = subprocess.Popen(
            cmd, env={**os.environ, **env, "CHAOSLAB_JOIN_WAIT": str(wait)}, start_new_session=True
        )
        try:
            code = child.wait()
        except KeyboardInterrupt:
            return ExitCode.INTERRUPTED
        finally:
            _stop(child)
        if code != 0:
            say(f"the Locust worker exited with code {code}")
            return ExitCode.ENVIRONMENT
        served += 1
        if once:
            return ExitCode.OK
        time.sleep(PAUSE)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
