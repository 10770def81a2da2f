"""The `load:` section of a scenario: model, stages and workers; its request mix is
`chaoslab/scenario/requests.py`."""

from __future__ import annotations

import ipaddress
import os
from pathlib import Path

from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import LoadSpec, Model, RemoteSpec, Stage, TargetSpec
from chaoslab.scenario.requests import PROTOCOLS, known, parse_requests

MAX_RATE = 20_000.0
MIN_RATE = 0.1  # at least one request every 10 s
MAX_USERS = 5_000
MAX_WORKERS = 64
MAX_THINK = 300.0
MAX_STAGES = 100


def parse_load(
    top: Fields, targets: dict[str, TargetSpec], problems: Problems, base: Path = Path(".")
) -> LoadSpec | None:
    f = Fields(top.mapping("load", required=True), "load", problems)
    protocol = f.choice("protocol", PROTOCOLS, "https")
    target = f.name("target", required=True)
    if target and target not in targets:
        problems.add(f.at("target"), f"unknown target {show(target)}", known(targets))
    if f.has("rate") and f.has("users"):
        problems.add(f.at("users"), "give 'rate' (open model) or 'users' (closed model), not both")
    default_model = Model.CLOSED if f.has("users") else Model.OPEN
    model = Model(f.choice("model", tuple(Model), default_model))
    workers = f.integer("workers", 1, low=1, high=MAX_WORKERS)
    cores = os.cpu_count() or 1
    if workers > cores:
        problems.add(
            f.at("workers"),
            f"this machine has {cores} cores: {workers} Locust workers would share them",
            f"use workers: {cores} or fewer here; a worker per core is Locust's ceiling",
        )
    timeout = f.duration("timeout", 10.0, low=0.01, high=300.0)
    if model is Model.OPEN:
        rate = f.rate("rate", required=True)
        _rate_cap(rate, f.at("rate"), problems)
        concurrency = f.integer("concurrency", 64, low=1, high=MAX_USERS)
        if concurrency < workers:
            problems.add(
                f.at("concurrency"), f"must be at least workers ({workers}): each worker needs a user"
            )
        for key in ("users", "spawn_rate", "think"):
            if f.has(key):
                problems.add(
                    f.at(key), "is for the closed model", "remove it, or use 'users:' without 'rate:'"
                )
                f.get(key, str, "")
        users, spawn_rate, think = 0, 0.0, 0.0
    else:
        users = f.integer("users", 0, low=1, high=MAX_USERS, required=True)
        spawn_rate = f.rate("spawn_rate", float(max(users, 1)))
        _rate_cap(spawn_rate, f.at("spawn_rate"), problems)
        think = f.duration("think", 0.0, positive=False, high=MAX_THINK)
        for key in ("rate", "concurrency"):
            if f.has(key):
                problems.add(f.at(key), "is for the open model", "remove it, or use 'rate:' without 'users:'")
                f.get(key, str, "")
        rate, concurrency = 0.0, users
    stages = _stages(f, model, problems)
    remote = _remote(f, problems)
    if remote and model is Model.OPEN and concurrency < workers + remote.workers:
        problems.add(
            f.at("concurrency"),
            f"must be at least the workers, local and remote ({workers + remote.workers}): each needs a user",
        )
    requests = parse_requests(f, protocol, target, targets, problems, base)
    f.finish()
    if not f.ok:
        return None
    return LoadSpec(
        target,
        protocol,
        model,
        requests,
        rate=rate,
        concurrency=concurrency,
        users=users,
        spawn_rate=spawn_rate,
        think=think,
        stages=stages,
        workers=workers,
        timeout=timeout,
        remote=remote,
    )


def _remote(f: Fields, problems: Problems) -> RemoteSpec | None:
    """`remote: {workers: N, listen: HOST:PORT, wait: 60s}`: Locust workers on other hosts."""
    if not f.has("remote"):
        return None
    r = Fields(f.mapping("remote", required=True), f.at("remote"), problems)
    workers = r.integer("workers", 0, low=1, high=MAX_WORKERS, required=True)
    listen = r.string("listen", required=True)
    wait = r.duration("wait", 60.0, high=3600.0)
    r.finish()
    host, port = _host_port(listen)
    if listen and host is None:
        problems.add(
            r.at("listen"),
            f"{show(listen)} is not an address and port",
            "the address of this host that the workers reach, with a port: 10.0.0.5:5557, [fd00::5]:5557",
        )
    elif host is not None and ipaddress.ip_address(host).is_unspecified:
        problems.add(
            r.at("listen"),
            f"{show(listen)} listens on every interface",
            "give the one address the workers reach",
        )
    if not r.ok or host is None or workers < 1:
        return None
    return RemoteSpec(workers, host, port, wait)


def _host_port(text: str) -> tuple[str | None, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]") if host.startswith("[") and host.endswith("]") else host
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        return None, 0
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return None, 0
    return host, int(port)


def check_stages(load: LoadSpec, duration: float, problems: Problems) -> None:
    """Stages must fit in the scenario: they ramp the load across its phases."""
    total = sum(s.duration for s in load.stages)
    if total > duration + 1e-9:
        problems.add(
            "load.stages",
            f"the stages last {total:g}s but the phases only {duration:g}s",
            "shorten the stages; after the last stage the load holds its value",
        )


def _rate_cap(rate: float, path: str, problems: Problems) -> None:
    if rate > MAX_RATE:
        problems.add(path, f"at most {MAX_RATE:g}/s is allowed, got {rate:g}/s")
    elif 0 < rate < MIN_RATE:
        problems.add(path, f"at least {MIN_RATE:g}/s (one request every 10 s), got {rate:g}/s")


def _stages(f: Fields, model: Model, problems: Problems) -> tuple[Stage, ...]:
    key = "rate" if model is Model.OPEN else "users"
    other = "users" if model is Model.OPEN else "rate"
    out = []
    items = f.sequence("stages")
    if len(items) > MAX_STAGES:
        problems.add(f.at("stages"), f"at most {MAX_STAGES} stages, got {len(items)}")
    for i, item in enumerate(items[:MAX_STAGES]):
        sf = Fields(item, join(f.at("stages"), i), problems)
        duration = sf.duration("duration", required=True, low=0.1)
        if sf.has(other):
            problems.add(sf.at(other), f"the {model} model's stages ramp '{key}'", f"use '{key}:'")
            sf.get(other, str, "")
        if model is Model.OPEN:
            value = sf.rate("rate", required=True)
            _rate_cap(value, sf.at("rate"), problems)
        else:
            value = float(sf.integer("users", 0, low=0, high=MAX_USERS, required=True))
        sf.finish()
        out.append(Stage(duration, value))
    return tuple(out)
