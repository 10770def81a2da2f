"""`chaoslab worker --master HOST:PORT`: a Locust worker with chaoslab's users, on a host of
its own, for the runs whose `load.remote` names that master.

It runs Locust's own worker process (`locust --worker`) with chaoslab's locustfile in its
`remote` role, which joins the run through the master's port (chaoslab/load/remote.py) and
takes its share of the load from there. One Locust worker serves one run; by default the
command starts the next one when a run is over, to serve the following run, until it is
interrupted. Nothing here needs root: a worker only sends requests.
"""

from __future__ import annotations

import ctypes
import ipaddress
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

from chaoslab.errors import ExitCode, UsageError
from chaoslab.paths import PACKAGE

PAUSE = 1.0  # seconds between two runs served (a master that has not quit yet refuses a join)
PR_SET_PDEATHSIG = 1
# the Locust worker's exit codes when it found no run, or the run had no place left
# (chaoslab/load/remote.py NO_RUN, REFUSED: that module runs only inside Locust)
NO_RUN, REFUSED = 10, 11


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
    cmd += ["--exit-code-on-error", "0"]  # a request that failed is a record, not the worker's failure
    return cmd, {"CHAOSLAB_ROLE": "remote", "CHAOSLAB_MASTER": master}


class Stopped(Exception):
    """SIGTERM or SIGHUP: stop the Locust worker and leave."""


def _stopped(signum: int, _frame: object) -> None:
    raise Stopped(signal.Signals(signum).name)


def serve(master: str, once: bool, wait: float, say: Callable[[str], None]) -> int:
    """Serve runs (one with `once`), each in a Locust worker process that dies with this one.
    A run that refused this worker (every place taken) is not an error: the next is waited for.
    Exit codes: 0 served, 3 the Locust worker failed or no run came in `wait` (with `once`),
    130 interrupted."""
    cmd, env = argv(master)
    served = 0
    previous = {s: signal.signal(s, _stopped) for s in (signal.SIGTERM, signal.SIGHUP)}
    try:
        while True:
            say((f"served {served} run(s); " if served else "") + f"waiting for a run at {master}")
            with tempfile.TemporaryDirectory(prefix="chaoslab-worker-") as work:
                extra = {"CHAOSLAB_JOIN_WAIT": str(wait), "CHAOSLAB_WORKER_DIR": work}
                code = _one(cmd, {**os.environ, **env, **extra})
            if code == 0:
                served += 1
                if once:
                    return ExitCode.OK
            elif code == REFUSED:
                say("that run had no place left for this worker")
            elif code == NO_RUN and not once:
                continue
            elif code == NO_RUN:
                return ExitCode.ENVIRONMENT  # the Locust worker said why
            else:
                say(f"the Locust worker exited with code {code}")
                return ExitCode.ENVIRONMENT
            time.sleep(PAUSE)
    except KeyboardInterrupt:
        return ExitCode.INTERRUPTED
    except Stopped as why:
        say(f"stopped by {why}")
        return ExitCode.INTERRUPTED
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _one(cmd: list[str], env: dict[str, str]) -> int:
    child = subprocess.Popen(cmd, env=env, start_new_session=True, preexec_fn=_die_with_parent)
    try:
        return child.wait()
    finally:
        _stop(child)


def _die_with_parent() -> None:
    """In the child: SIGTERM when this process dies, however it dies (PR_SET_PDEATHSIG)."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _stop(child: subprocess.Popen[bytes]) -> None:
    if child.poll() is None:
        os.killpg(child.pid, signal.SIGTERM)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
            child.wait()
