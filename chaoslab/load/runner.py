"""Runs Locust as child processes and tails their per-request records.

Locust monkey-patches its whole process at import, so it never runs inside the
orchestrator. With `workers: 1` it is one headless process; with more, Locust's own
master and worker processes (the master spreads the users, each worker writes its own
records). Every process is journaled and stopped on every exit path.
"""

from __future__ import annotations

import contextlib
import ipaddress
import itertools
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import PreflightError, TargetError
from chaoslab.load.grpc_schema import GrpcSchemas
from chaoslab.load.records import RecordStream, Request
from chaoslab.load.schedule import Profile
from chaoslab.paths import PACKAGE
from chaoslab.report.model import WorkerRow
from chaoslab.scenario.load import MAX_RATE
from chaoslab.scenario.model import LoadSpec, Model, RequestSpec
from chaoslab.targets.base import RunningTarget

READY_TIMEOUT = 60.0  # for every user to connect, from the first ready one
STARTUP_TIMEOUT = 300.0  # for Locust to start and its first user to connect
CPU_SAMPLE = 0.5  # seconds between samples of the generator's CPU time
# seconds for the remote workers to answer their requests in flight and send their last records
# (each waits 5 s at most for those in flight)
FINISH_TIMEOUT = 10.0
READ_CHUNK = 1 << 14  # bytes of a records file read at a time for the analysis (about 1,000 requests)
DUE_BIN = 0.1  # seconds: the bins of due times the baseline's request count comes from (10 a second)
# A worker silent this long before the load's end (or its timeout, if longer) dropped out of the run.
DROP_GAP = 3.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def base_of(protocol: str, target: str) -> str:
    return f"{protocol}:{target}"


def due_in(bins: Mapping[int, int], start: float, end: float) -> float:
    """Requests due in [start, end), of counts by due time in DUE_BIN bins: a bin at an edge
    counts for the share of it inside, as if its requests were due evenly across it."""
    lo, hi = start / DUE_BIN, end / DUE_BIN
    total = 0.0
    for b, c in bins.items():
        share = min(b + 1, hi) - max(b, lo)
        if share > 0:
            total += c * share
    return total


@dataclass
class LoadRunner:
    ctx: RunContext
    targets: dict[str, RunningTarget]
    t0: float | None = None
    # the requests recorded so far (their records stay in the workers' files: read_records), and
    # the seconds they took, from their due times
    done: int = 0
    done_s: float = 0.0
    # (epoch s, pid, CPU seconds used so far) for each Locust process
    # (time, pid, the process's CPU seconds, its threads' seconds runnable but waiting for a CPU:
    # None where the kernel has no schedstat)
    cpu: list[tuple[float, int, float, float | None]] = field(default_factory=list)
    # The gRPC schemas, when the run compiled the .proto files before starting the targets
    schemas: GrpcSchemas | None = None
    grpc: GrpcSchemas = field(init=False)
    _prepared: bool = False
    _procs: list[tuple[subprocess.Popen[bytes], int]] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)
    # requests recorded by each worker (its index), and the remote workers that joined
    per_worker: dict[int, int] = field(default_factory=dict)
    late: dict[int, int] = field(default_factory=dict)  # of those, sent late by a free user
    last_due: dict[int, float] = field(default_factory=dict)  # each worker's last request's due time
    joined: list[dict[str, object]] = field(default_factory=list)
    # requests by due time in DUE_BIN bins, until count_due is first asked (the baseline's count)
    _due_bins: Counter[int] | None = field(default_factory=Counter)
    _counting: threading.Lock = field(default_factory=threading.Lock)

    def __post_init__(self) -> None:
        self.grpc = self.schemas or GrpcSchemas(self.ctx)

    @property
    def spec(self) -> LoadSpec:
        return self.ctx.scenario.load

    def records_path(self, worker: int) -> Path:
        return self.ctx.work_dir / f"requests-{worker}.bin"

    @property
    def go_path(self) -> Path:
        return self.ctx.work_dir / "load-t0"

    @property
    def finish_path(self) -> Path:
        """Written when the run ends: the master then has every remote worker send what it has."""
        return self.ctx.work_dir / "load-finish"

    @property
    def workers_log(self) -> Path:
        """Where the master writes each remote worker that joins (chaoslab/load/remote.py)."""
        return self.ctx.work_dir / "workers.jsonl"

    def preflight(self) -> None:
        cores = os.cpu_count() or 1
        if self.spec.workers > cores:
            raise PreflightError(
                f"load.workers is {self.spec.workers} but this machine has {cores} cores",
                f"use workers: {cores} or fewer here; a worker per core is Locust's ceiling",
            )
        remote = self.spec.remote
        if remote is not None:
            for name in sorted({r.target for r in self.spec.requests}):
                target = self.targets[name]
                ip = target.ip
                if ipaddress.ip_address(ip.strip("[]")).is_loopback:
                    raise PreflightError(
                        f"load.remote: the load's target {name} is at {ip}, which the remote workers' "
                        "hosts cannot reach",
                        f"give {name} an address they reach (attach: address:, or a container "
                        "routed to them)",
                    )
                if target.netns and not target.attached and not target.in_container:
                    # the local runtime links each namespace to this host alone: a /30 with no
                    # route beyond it, and no forwarding (chaoslab/targets/netns.py)
                    raise PreflightError(
                        f"load.remote: the load's target {name} runs in a network namespace of this "
                        f"run, at {ip}, which only this host reaches",
                        f"run {name} where the workers' hosts reach it and attach to it "
                        f"(targets.{name}.attach), or leave load.remote out",
                    )
            family = socket.AF_INET6 if ":" in remote.host else socket.AF_INET
            with socket.socket(family) as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    s.bind((remote.host, remote.port))
                except OSError as exc:
                    raise PreflightError(
                        f"load.remote.listen: the run's Locust master cannot listen at {remote.listen}: "
                        f"{exc.strerror}",
                        "give an address of this host that the workers' hosts reach, and a free port",
                    ) from None
        self.prepare()

    def prepare(self) -> None:
        """The gRPC requests' schemas: .proto files compiled (unless the run already did),
        reflection asked, every method and message checked; LoadError (exit 3) before any load."""
        if self._prepared:
            return
        self.grpc.compile()
        self.grpc.reflect(self.targets)
        for name, call in self.grpc.calls.items():
            kind = "server stream" if call.streaming else "unary"
            self.ctx.say(f"request {name}: gRPC {call.method}, {kind}, from {call.source}")
        self._prepared = True

    def config(self) -> dict[str, object]:
        load = self.spec
        duration = self.ctx.scenario.duration
        urls = {
            base_of(r.protocol, r.target): self.targets[r.target].url_for(r.protocol) for r in load.requests
        }
        # Per (protocol, target): the CA its certificate is checked with (None: not checked),
        # and a path to open an HTTP connection with (its health path, or the first request's).
        tls: dict[str, str | None] = {}
        warmup: dict[str, str] = {}
        for r in load.requests:
            base, t = base_of(r.protocol, r.target), self.targets[r.target]
            tls[base] = str(t.ca) if t.ca is not None else None
            health = t.service.health
            same = health.protocol == r.protocol and health.port == t.service.port(r.protocol)
            warmup.setdefault(base, health.path if same else r.path)
        http = [u for u in urls.values() if u.startswith("http")]
        return {
            "model": str(load.model),
            "start": load.rate if load.model is Model.OPEN else float(load.users),
            "stages": [[s.duration, s.value] for s in load.stages],
            "duration": duration,
            "think": load.think,
            "spawn_rate": load.spawn_rate,
            "timeout": load.timeout,
            "workers": load.all_workers,
            "local_workers": load.workers,
            "workers_log": str(self.workers_log),
            "finish": str(self.finish_path),
            # Each worker stops after this many requests, whatever happens to the clock.
            "max_requests": int(MAX_RATE * duration / load.all_workers) + 1,
            "urls": urls,
            "host": http[0] if http else "https://127.0.0.1",
            "requests": [self._request(r) for r in load.requests],
            "records": str(self.ctx.work_dir / "requests-{worker}.bin"),
            "split": True,  # the records carry HTTP's client split (records.SPLIT entries)
            "go": str(self.go_path),
            "ca": tls,
            "warmup": warmup,
        }

    def _request(self, r: RequestSpec) -> dict[str, object]:
        """One request of the mix as the Locust processes read it."""
        out: dict[str, object] = {
            "name": r.name,
            "protocol": r.protocol,
            "base": base_of(r.protocol, r.target),
            "weight": r.weight,
        }
        if r.grpc is not None:
            out["grpc"] = self.grpc.calls[r.name].to_json()
        elif r.tcp is not None:
            t = r.tcp
            out["tcp"] = {"send": t.send.hex(), "expect": t.expect.hex(), "read": t.read, "keep": t.keep}
        else:
            out |= {
                "path": r.path,
                "method": r.method,
                "headers": dict(r.headers),
                "body": Path(r.body_file).read_text() if r.body_file else r.body,
                "status": r.status,
            }
        return out

    def argvs(self) -> list[tuple[str, list[str], dict[str, str]]]:
        """(role, argv, extra environment) of every Locust process to start."""
        load = self.spec
        users = load.concurrency if load.model is Model.OPEN else load.users
        users = max(users, load.all_workers)
        run_time = int(READY_TIMEOUT + self.ctx.scenario.duration + 15)
        base = [sys.executable, "-m", "locust", "-f", str(PACKAGE / "load" / "locustfile.py")]
        common = [
            "--loglevel",
            "WARNING",
            "--only-summary",
            "--exit-code-on-error",
            "0",
            "--stop-timeout",
            "5",
        ]
        headless = [
            "--headless",
            "--users",
            str(users),
            "--spawn-rate",
            str(load.spawn_rate if load.model is Model.CLOSED else users),
            "--run-time",
            f"{run_time}s",
        ]
        if load.all_workers == 1:
            return [("local", [*base, *headless, *common], {"CHAOSLAB_ROLE": "local"})]
        remote = load.remote
        host = remote.host if remote else "127.0.0.1"
        port = remote.port if remote else _free_port()
        out = [
            (
                "master",
                [
                    *base,
                    *headless,
                    *common,
                    "--master",
                    "--master-bind-host",
                    host,
                    "--master-bind-port",
                    str(port),
                    "--expect-workers",
                    str(load.all_workers),
                ],
                {"CHAOSLAB_ROLE": "master"},
            )
        ]
        for i in range(load.workers):
            argv = [*base, *common, "--worker", "--master-host", host, "--master-port", str(port)]
            out.append((f"worker-{i}", argv, {"CHAOSLAB_ROLE": "worker", "CHAOSLAB_WORKER": str(i)}))
        return out

    def start(self) -> float:
        """Start Locust, wait until its users are connected, and return t0: the epoch time
        of the first scheduled arrival (open) or of the users' first requests (closed)."""
        self.prepare()
        cfg = self.ctx.work_dir / "load.json"
        cfg.write_text(json.dumps(self.config(), indent=1))
        for i in range(self.spec.all_workers):
            self.records_path(i).write_bytes(b"")
        self.go_path.unlink(missing_ok=True)
        self.finish_path.unlink(missing_ok=True)
        self.workers_log.write_text("")
        for role, argv, extra in self.argvs():
            env = {**os.environ, "CHAOSLAB_LOAD_CONFIG": str(cfg), **extra}
            seq = self.ctx.journal.intent("process", target=f"load-{role}", argv=argv[:4])
            p = proc.start(argv, self.ctx.work_dir / f"locust-{role}.log", env=env)
            self.ctx.journal.update(seq, pid=p.pid, start_time=proc.start_time(p.pid))
            self._procs.append((p, seq))
        load = self.spec
        if load.remote is not None:
            self._wait_for_remote()
        # Open: every user connected. Closed: a user per worker (the rest spawn at spawn_rate).
        needed = load.concurrency if load.model is Model.OPEN else load.all_workers
        # Locust's own start (imports, gevent) can take tens of seconds on a slow or emulated
        # machine: the users' connections are timed from the first user that is ready.
        deadline = time.monotonic() + STARTUP_TIMEOUT
        first = False
        while (ready := self._ready()) < needed:
            if ready and not first:
                first, deadline = True, time.monotonic() + READY_TIMEOUT
            for p, _ in self._procs:
                if p.poll() is not None:
                    raise TargetError(
                        f"Locust exited with code {p.returncode} before starting",
                        f"see the locust-*.log files in {self.ctx.work_dir}",
                    )
            if time.monotonic() > deadline:
                raise TargetError(
                    f"Locust connected {ready} of {needed} users to the targets in "
                    f"{READY_TIMEOUT if first else STARTUP_TIMEOUT:.0f}s",
                    f"see the locust-*.log files in {self.ctx.work_dir}",
                )
            time.sleep(0.05)
        self.t0 = time.time() + 0.5
        tmp = self.go_path.with_suffix(".tmp")
        tmp.write_text(f"{self.t0:.6f}")
        tmp.rename(self.go_path)
        for i in range(load.all_workers):
            self._spawn(self._tail, f"load-tail-{i}", i)
        self._spawn(self._sample_cpu, "load-cpu")
        return self.t0

    def _wait_for_remote(self) -> None:
        """Until every remote worker has joined the master (`remote.wait` at most); TargetError
        (exit 3) naming the address and those that joined."""
        remote = self.spec.remote
        assert remote is not None
        deadline = time.monotonic() + remote.wait
        while True:
            self.joined = [e for e in _log(self.workers_log) if "joined" in e]
            if len(self.joined) >= remote.workers:
                for w in self.joined:
                    offset, rtt = float(str(w["offset"])) * 1000, float(str(w["rtt"])) * 1000
                    self.ctx.say(
                        f"remote worker {w['index']} joined from {w['host']}: clock offset "
                        f"{offset:+.2f} ms, round trip {rtt:.2f} ms"
                    )
                return
            for p, _ in self._procs:
                if p.poll() is not None:
                    raise TargetError(
                        f"Locust exited with code {p.returncode} while waiting for the remote workers",
                        f"see the locust-*.log files in {self.ctx.work_dir}",
                    )
            if time.monotonic() > deadline:
                names = ", ".join(f"{w['host']}" for w in self.joined) or "none"
                raise TargetError(
                    f"{len(self.joined)} of {remote.workers} remote workers joined the run's Locust master "
                    f"at {remote.listen} in {remote.wait:g}s (joined: {names})",
                    f"start `chaoslab worker --master {remote.listen}` on each worker host, and let them "
                    f"reach this host at {remote.listen} (TCP)",
                )
            time.sleep(0.1)

    def _finish_remote(self) -> None:
        """Have every remote worker that joined send what it has left, and wait until the master
        has written it (FINISH_TIMEOUT at most); say which did not."""
        self.finish_path.write_text("")
        expected = {int(str(w["index"])) for w in self.joined}
        deadline = time.monotonic() + FINISH_TIMEOUT
        done: set[int] = set()
        while time.monotonic() < deadline:
            done = {int(str(e["index"])) for e in _log(self.workers_log) if "finished" in e}
            if expected <= done:
                break
            time.sleep(0.05)
        for i in sorted(expected - done):
            self.ctx.say(f"remote worker {i} did not send its last records in {FINISH_TIMEOUT:g}s")
        for e in _log(self.workers_log):
            if "gap" in e:
                self.ctx.say(
                    f"remote worker {e['index']}: {e['gap']} bytes of its records never reached the master"
                )

    def workers(self, seconds: float, end: float) -> list[WorkerRow]:
        """Each worker's part of the load: requests, rate over `seconds`, share; for a remote
        one its host, clock offset and round trip to the master; for one whose requests stopped
        before `end` (epoch s, the load's last phase's end), when, and (open model) how many of
        its arrivals it did not send."""
        total = sum(self.per_worker.values())
        remote = {int(str(w["index"])): w for w in self.joined}
        out = []
        for i in range(self.spec.all_workers):
            n, w = self.per_worker.get(i, 0), remote.get(i)
            out.append(
                WorkerRow(
                    index=i,
                    host=str(w["host"]) if w else "local",
                    remote=w is not None,
                    requests=n,
                    late=self.late.get(i, 0),
                    rate=round(n / seconds, 2) if seconds > 0 else 0.0,
                    share=round(n / total, 4) if total else 0.0,
                    offset_ms=round(float(str(w["offset"])) * 1000, 3) if w else 0.0,
                    rtt_ms=round(float(str(w["rtt"])) * 1000, 3) if w else 0.0,
                    **self._dropped(i, n, end),
                )
            )
        return out

    def _dropped(self, worker: int, sent: int, end: float) -> dict[str, Any]:
        """`dropped_at` (seconds from t0) and `lost` of a worker that went silent before `end`:
        nothing recorded for longer than any of its requests can take (the load's timeout, a
        user's think time, DROP_GAP at least) while it had requests due (open model: its own
        arrivals, as sparse as a low rate makes them); nothing for one that went on to the end."""
        if self.t0 is None:
            return {}
        load = self.spec
        last = self.last_due.get(worker, self.t0) - self.t0
        quiet_from = end - self.t0 - max(DROP_GAP, load.timeout + load.think)
        if last >= quiet_from:
            return {}
        lost = 0
        if load.model is Model.OPEN:
            profile = Profile(load.rate, [(st.duration, st.value) for st in load.stages])
            horizon = min(end - self.t0, self.ctx.scenario.duration)
            due = list(itertools.takewhile(lambda t: t < horizon, profile.arrivals(worker, load.all_workers)))
            if not any(last < t < quiet_from for t in due):
                return {}  # nothing of its own was due while it was silent
            lost = max(0, len(due) - sent)
        return {"dropped_at": round(last, 3), "lost": lost}

    def _spawn(self, fn: Callable[..., None], name: str, *args: object) -> None:
        t = threading.Thread(target=fn, args=args, name=name, daemon=True)
        t.start()
        self._threads.append(t)

    @property
    def names(self) -> list[str]:
        """The load's mix in order: a record names its request by its index here."""
        return [r.name for r in self.spec.requests]

    def read_records(self) -> Iterator[list[Request]]:
        """Every request the run recorded, worker by worker, a chunk of its file at a time: the
        analysis's one pass over them, in a memory that does not grow with the run."""
        for i in range(self.spec.all_workers):
            stream = RecordStream(self.names)
            with contextlib.suppress(FileNotFoundError), self.records_path(i).open("rb") as fh:
                while chunk := fh.read(READ_CHUNK):
                    yield stream.feed(chunk)

    def count_due(self, start: float, end: float) -> float:
        """The requests recorded so far that were due in [start, end) (due_in); asked once, for
        the baseline, after which the bins are no longer kept."""
        with self._counting:
            bins, self._due_bins = self._due_bins, None
        return due_in(bins or {}, start, end)

    def _ready(self) -> int:
        ready = 0
        for i in range(self.spec.all_workers):
            stream = RecordStream(self.names)
            stream.feed(self.records_path(i).read_bytes())
            ready += stream.ready
        return ready

    def _tail(self, worker: int) -> None:
        stream = RecordStream(self.names)
        self.per_worker[worker] = self.late[worker] = 0
        with self.records_path(worker).open("rb") as fh:
            while True:
                chunk = fh.read()
                if chunk:
                    batch = stream.feed(chunk)
                    took = sum(r.end - r.due for r in batch)
                    with self._counting:  # one tail thread per worker
                        self.done += len(batch)
                        self.done_s += took
                        if self._due_bins is not None:
                            self._due_bins.update(int(r.due / DUE_BIN) for r in batch)
                    self.per_worker[worker] += len(batch)
                    self.late[worker] += sum(1 for r in batch if r.generator_late)
                    if batch:
                        self.last_due[worker] = max(self.last_due.get(worker, 0.0), *(r.due for r in batch))
                    self.ctx.events.fire("requests", batch=batch)
                elif self._stop.is_set():
                    return
                else:
                    time.sleep(0.1)

    def _sample_cpu(self) -> None:
        while not self._stop.wait(CPU_SAMPLE):
            now = time.time()
            for p, _ in self._procs:
                used = _cpu_seconds(p.pid)
                if used is not None:
                    self.cpu.append((now, p.pid, used, _cpu_wait_seconds(p.pid)))

    def generator_cpu(self, start: float, end: float) -> tuple[float, float | None]:
        """The busiest Locust process between start and end: its CPU use in cores, and the time
        its threads waited for a CPU while runnable, in cores (None when the kernel does not say).

        Its Python code (the gevent loop with every user, grpcio's callbacks) shares one
        interpreter lock, so near one core the process is at its limit, even when grpcio's
        native threads take it a little above one core. On a machine whose cores the targets
        keep busy, it reaches its limit below one core: each hand-over of the interpreter lock
        then waits for a CPU, and so does each wake-up of the loop.
        """
        busiest: tuple[float, float | None] = (0.0, None)
        for pid in {s[1] for s in self.cpu}:
            samples = [s for s in self.cpu if s[1] == pid and start <= s[0] <= end]
            if len(samples) < 2 or samples[-1][0] <= samples[0][0]:
                continue
            (t0, _, c0, w0), (t1, _, c1, w1) = samples[0], samples[-1]
            cores = (c1 - c0) / (t1 - t0)
            # (a thread that ended took its wait with it: never below 0)
            wait = max(w1 - w0, 0.0) / (t1 - t0) if w0 is not None and w1 is not None else None
            if cores + (wait or 0.0) >= busiest[0] + (busiest[1] or 0.0):
                busiest = (cores, wait)
        return busiest

    def stop(self) -> None:
        if self.spec.remote is not None and self._procs and self.t0 is not None:
            self._finish_remote()
        for p, seq in reversed(self._procs):
            proc.stop(p, wait=10)
            self.ctx.journal.undone(seq)
        self._procs = []
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)


def _log(log: Path) -> list[dict[str, object]]:
    """What the master wrote of the remote workers: a line each as one joins, finishes, or has
    a gap in the records it sent."""
    out = []
    try:
        lines = log.read_text().splitlines()
    except OSError:
        return []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue  # a line still being written
    return out


def _cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (all its threads)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _cpu_wait_seconds(pid: int) -> float | None:
    """Seconds the process's threads spent runnable, waiting for a CPU (schedstat, summed over
    its threads; CONFIG_SCHED_INFO, which Debian, Ubuntu and RHEL kernels have). None when the
    kernel has no schedstat."""
    if not os.path.exists(f"/proc/{pid}/schedstat"):
        return None
    return proc.schedstat([pid])[1] / 1e9


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
