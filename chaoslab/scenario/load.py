"""The `load:` section of a scenario: model, request mix, stages and workers."""

from __future__ import annotations

from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import LoadSpec, Model, RequestSpec, Stage, TargetSpec

PROTOCOLS = ("https", "http", "grpc")
RPCS = ("Do", "Stream")
MAX_RATE = 20_000.0
MAX_USERS = 5_000
MAX_WORKERS = 64


def parse_load(top: Fields, targets: dict[str, TargetSpec], problems: Problems) -> LoadSpec | None:
    f = Fields(top.mapping("load", required=True), "load", problems)
    protocol = f.choice("protocol", PROTOCOLS, "https")
    target = f.name("target", required=True)
    if target and target not in targets:
        problems.add(f.at("target"), f"unknown target {target!r}", known(targets))
    if f.has("rate") and f.has("users"):
        problems.add(f.at("users"), "give 'rate' (open model) or 'users' (closed model), not both")
    default_model = Model.CLOSED if f.has("users") else Model.OPEN
    model = Model(f.choice("model", tuple(Model), default_model))
    workers = f.integer("workers", 1, low=1, high=MAX_WORKERS)
    timeout = f.duration("timeout", 10.0)
    if timeout > 300:
        problems.add(f.at("timeout"), f"at most 300s, got {timeout:g}s")
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
        think = f.duration("think", 0.0, positive=False)
        for key in ("rate", "concurrency"):
            if f.has(key):
                problems.add(f.at(key), "is for the open model", "remove it, or use 'rate:' without 'users:'")
                f.get(key, str, "")
        rate, concurrency = 0.0, users
    stages = _stages(f, model, problems)
    requests = _requests(f, protocol, target, targets, problems)
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
    )


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


def _stages(f: Fields, model: Model, problems: Problems) -> tuple[Stage, ...]:
    key = "rate" if model is Model.OPEN else "users"
    other = "users" if model is Model.OPEN else "rate"
    out = []
    for i, item in enumerate(f.sequence("stages")):
        sf = Fields(item, join(f.at("stages"), i), problems)
        duration = sf.duration("duration", required=True)
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


def _requests(
    f: Fields, protocol: str, target: str, targets: dict[str, TargetSpec], problems: Problems
) -> tuple[RequestSpec, ...]:
    from chaoslab.targets.services import SERVICES

    out: list[RequestSpec] = []
    if f.has("path") and f.has("requests"):
        problems.add(f.at("path"), "give either 'path' or 'requests', not both")
    path = f.string("path")
    if path:
        out.append(RequestSpec("default", protocol, target, path=check_path(path, f.at("path"), problems)))
    for i, item in enumerate(f.sequence("requests")):
        rf = Fields(item, join(f.at("requests"), i), problems)
        name = rf.name("name", required=True)
        proto = rf.choice("protocol", PROTOCOLS, protocol)
        own_target = rf.has("target")
        to = rf.name("target", target)
        if own_target and to not in targets:
            problems.add(rf.at("target"), f"unknown target {to!r}", known(targets))
        weight = rf.integer("weight", 1, low=1, high=1000)
        if proto == "grpc":
            if rf.has("path"):
                problems.add(rf.at("path"), "a gRPC request has no path", "give 'rpc: Do' or 'rpc: Stream'")
                rf.get("path", str, "")
            rpc = rf.choice("rpc", RPCS, "Do")
            work = rf.integer("work", 20, low=0, high=1_000_000)
            messages = rf.integer("messages", 10 if rpc == "Stream" else 1, low=1, high=10_000)
            if rpc == "Do" and messages != 1:
                problems.add(rf.at("messages"), "only a Stream call has several replies", "use 'rpc: Stream'")
            req = RequestSpec(name, proto, to, rpc=rpc, work=work, messages=messages, weight=weight)
        else:
            for key in ("rpc", "work", "messages"):
                if rf.has(key):
                    problems.add(rf.at(key), f"is for gRPC requests, this one is {proto}", "use 'path:'")
                    rf.get(key, str, "")
            req_path = check_path(rf.string("path", required=True), rf.at("path"), problems)
            req = RequestSpec(name, proto, to, path=req_path, weight=weight)
        if to in targets and proto not in SERVICES[targets[to].service].ports:
            problems.add(
                rf.at("protocol"),
                f"target {to} ({targets[to].service}) does not serve {proto}",
                "it serves: " + ", ".join(SERVICES[targets[to].service].ports),
            )
        rf.finish()
        out.append(req)
    if path and protocol == "grpc":
        problems.add(f.at("path"), "a gRPC load has no path", "give 'requests: [{name, rpc: Do}]'")
    if not out and f.ok:
        if protocol == "grpc":
            out.append(RequestSpec("default", protocol, target, rpc="Do"))
        else:
            problems.add(f.at("path"), "is required", "give 'path: /work' or a 'requests:' list")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        problems.add(f.at("requests"), "request names must be unique")
    return tuple(out)


def known(targets: dict[str, TargetSpec]) -> str:
    return f"targets are: {', '.join(targets)}" if targets else "define it under 'targets:'"


def check_path(path: str, where: str, problems: Problems) -> str:
    if path and not path.startswith("/"):
        problems.add(where, f"{path!r} must start with '/'", "e.g. '/work'")
    return path
