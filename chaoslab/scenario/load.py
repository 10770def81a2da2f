"""The `load:` section of a scenario: model, request mix, stages and workers."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import LoadSpec, Model, RequestSpec, Stage, TargetSpec
from chaoslab.scenario.targets import check_url_path

PROTOCOLS = ("https", "http", "grpc")
RPCS = ("Do", "Stream")
MAX_RATE = 20_000.0
MIN_RATE = 0.1  # at least one request every 10 s
MAX_USERS = 5_000
MAX_WORKERS = 64
MAX_THINK = 300.0
MAX_REQUESTS = 64  # kinds of request in the mix
MAX_STAGES = 100
MAX_HEADERS = 64


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
    requests = _requests(f, protocol, target, targets, problems, base)
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


METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_BODY = 1 << 20
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")  # an RFC 9110 token


def _http_options(rf: Fields, base: Path) -> dict[str, Any]:
    """method, headers, body (inline, or `body_file`), and the expected status of an HTTP request."""
    method = rf.choice("method", METHODS, "GET")
    headers = []
    raw_headers = rf.mapping("headers")
    if len(raw_headers) > MAX_HEADERS:
        rf.problems.add(rf.at("headers"), f"at most {MAX_HEADERS} headers, got {len(raw_headers)}")
    for key, value in list(raw_headers.items())[:MAX_HEADERS]:
        where = join(rf.at("headers"), key)
        if not HEADER_NAME.match(key):
            rf.problems.add(where, "is not a header name", "letters, digits and !#$%&'*+.^_`|~-")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            rf.problems.add(where, f"expected text, got {type(value).__name__}")
        elif any((ord(c) < 32 and c != "\t") or ord(c) == 127 for c in str(value)) or len(str(value)) > 8192:
            rf.problems.add(where, "a header value has no control characters and at most 8192 characters")
        else:
            headers.append((key, str(value)))
    if rf.has("body") and rf.has("body_file"):
        rf.problems.add(rf.at("body"), "give either 'body' or 'body_file', not both")
    body = rf.get("body", _body, "")
    body_file = ""
    if rf.has("body_file"):
        path = (base / rf.string("body_file", required=True)).resolve()
        if not path.is_file():
            rf.problems.add(rf.at("body_file"), f"{path} is not a file")
        elif path.stat().st_size > MAX_BODY:
            rf.problems.add(rf.at("body_file"), f"{path} is over {MAX_BODY} bytes")
        body_file = str(path)
    status = rf.integer("status", 200, low=100, high=599)
    if (body or body_file) and method in ("GET", "HEAD"):
        rf.problems.add(
            rf.at("method"), f"a {method} request sends no body", "use method: POST (or PUT, PATCH)"
        )
    return {
        "method": method,
        "headers": tuple(headers),
        "body": body,
        "body_file": body_file,
        "status": status,
    }


def _body(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected text (a JSON body is written as a string), got {type(value).__name__}")
    if len(value.encode()) > MAX_BODY:
        raise ValueError(f"at most {MAX_BODY} bytes")
    return value


def _requests(
    f: Fields, protocol: str, target: str, targets: dict[str, TargetSpec], problems: Problems, base: Path
) -> tuple[RequestSpec, ...]:
    out: list[RequestSpec] = []
    if f.has("path") and f.has("requests"):
        problems.add(f.at("path"), "give either 'path' or 'requests', not both")
    given = f.has("path") or f.has("requests")
    path = f.get("path", _url_path, "")
    if path:
        out.append(RequestSpec("default", protocol, target, path=check_path(path, f.at("path"), problems)))
        _check_served(out[0], targets, f.at("protocol"), problems)
    items = f.sequence("requests")
    if len(items) > MAX_REQUESTS:
        problems.add(f.at("requests"), f"at most {MAX_REQUESTS} kinds of request, got {len(items)}")
    for i, item in enumerate(items[:MAX_REQUESTS]):
        rf = Fields(item, join(f.at("requests"), i), problems)
        name = rf.name("name", required=True)
        proto = rf.choice("protocol", PROTOCOLS, protocol)
        own_target = rf.has("target")
        to = rf.name("target", target)
        if own_target and to not in targets:
            problems.add(rf.at("target"), f"unknown target {show(to)}", known(targets))
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
            req_path = check_path(rf.get("path", _url_path, "", required=True), rf.at("path"), problems)
            req = RequestSpec(name, proto, to, path=req_path, weight=weight, **_http_options(rf, base))
        _check_served(req, targets, rf.at("protocol"), problems)
        rf.finish()
        out.append(req)
    if path and protocol == "grpc":
        problems.add(f.at("path"), "a gRPC load has no path", "give 'requests: [{name, rpc: Do}]'")
    if not out and f.ok:
        if protocol == "grpc":
            out.append(RequestSpec("default", protocol, target, rpc="Do"))
        elif not given:
            problems.add(f.at("path"), "is required", "give 'path: /work' or a 'requests:' list")
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        problems.add(f.at("requests"), "request names must be unique")
    return tuple(out)


def _check_served(req: RequestSpec, targets: dict[str, TargetSpec], where: str, problems: Problems) -> None:
    """A request's protocol must be one its target declares a port for."""
    target = targets.get(req.target)
    if target is not None and req.protocol not in target.port_map:
        problems.add(
            where,
            f"target {req.target} ({target.what}) declares no {req.protocol} port",
            "its ports: "
            + (", ".join(target.port_map) or "none")
            + "; declare it under ports: {PROTOCOL: PORT}",
        )


def known(targets: dict[str, TargetSpec]) -> str:
    return f"targets are: {', '.join(targets)}" if targets else "define it under 'targets:'"


# A request's path and query: URL characters only (RFC 3986), no spaces, quotes or control
# characters. It goes into an HTTP request line, never near a shell.
URL_PATH = re.compile(r"^[A-Za-z0-9\-._~!$&'()*+,;=:@%/?\[\]]*$")


def _url_path(value: object) -> str:
    if not isinstance(value, str):
        raise ValueError(f"expected a path, got {type(value).__name__}")
    if len(value) > 8192 or not URL_PATH.match(value):
        raise ValueError(
            f"{value[:80]!r} is not a URL path: use URL characters only (percent-encode spaces as %20)"
        )
    return value


def check_path(path: str, where: str, problems: Problems) -> str:
    if path:
        check_url_path(path, where, problems)
    return path
