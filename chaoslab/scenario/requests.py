"""The load's request mix: each protocol family reads its own kind of request.

- HTTP (`https`, `http`): path, method, headers, body (or `body_file`) and the status that
  counts as success;
- gRPC (`grpc` over TLS, `grpc-plain` in the clear): a method and its message as JSON, the
  schema from `proto:` files, the target's declared protos, or server reflection;
  `rpc: Do|Stream` with `work`/`messages` is the shorthand for chaoslab's go-api Work API;
- tcp: bytes sent (`send`, or `send_hex`), a reply read until `expect` is in it, `read`
  bytes have come or the server closes, on a kept or a new connection.

A key of another family is reported with the protocol it belongs to.
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from chaoslab.quote import show
from chaoslab.scenario.fields import Fields, Problems, join
from chaoslab.scenario.model import GrpcCall, RequestSpec, TargetSpec, TcpExchange

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")
MAX_BODY = 1 << 20
HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}\Z")  # an RFC 9110 token
MAX_HEADERS = 64
MAX_REQUESTS = 64  # kinds of request in the mix

# chaoslab's go-api: the Work API behind the shorthand `rpc: Do|Stream`
WORK_SERVICE = "chaoslab.work.v1.Work"
RPCS = ("Do", "Stream")
IDENT = r"[A-Za-z_][A-Za-z0-9_]*"
GRPC_METHOD = re.compile(rf"^(?:{IDENT}\.)*{IDENT}/{IDENT}$")  # package.Service/Method
METHOD_HINT = "package.Service/Method, e.g. method: chaoslab.work.v1.Work/Do"
MAX_MESSAGE = 1 << 20  # the message's JSON text
MAX_REPLIES = 1_000_000
MAX_READ = 16 << 20
CONNECTIONS = ("keep", "new")


@dataclass(frozen=True)
class Mix:
    """What every request of the mix is read against."""

    targets: dict[str, TargetSpec]
    base: Path  # the scenario's directory: relative paths are from there
    problems: Problems


class Family(ABC):
    """The requests of some protocols: the keys they take, and how they are read."""

    label: ClassVar[str]
    protocols: ClassVar[tuple[str, ...]]
    keys: ClassVar[tuple[str, ...]]
    hint: ClassVar[str]  # what to write instead, for a request of another family

    @abstractmethod
    def read(self, rf: Fields, protocol: str, target: str, mix: Mix) -> dict[str, Any]:
        """The RequestSpec fields of one request of this family."""


class Http(Family):
    label = "HTTP"
    protocols = ("https", "http")
    keys = ("path", "method", "headers", "body", "body_file", "status")
    hint = "use 'path:'"

    def read(self, rf: Fields, protocol: str, target: str, mix: Mix) -> dict[str, Any]:
        path = check_path(rf.get("path", _url_path, "", required=True), rf.at("path"), mix.problems)
        raw_method = rf.raw.get("method")
        if isinstance(raw_method, str) and "/" in raw_method:
            rf.get("method", str, "")
            mix.problems.add(
                rf.at("method"),
                f"{raw_method!r} is a gRPC method, but this request is {protocol}",
                "add protocol: grpc (or grpc-plain)",
            )
        return {"path": path, **_http_options(rf, mix.base)}


class Grpc(Family):
    label = "gRPC"
    protocols = ("grpc", "grpc-plain")
    keys = ("method", "message", "proto", "proto_path", "reflection", "replies", "rpc", "work", "messages")
    hint = "use 'method:' and 'message:'"

    def read(self, rf: Fields, protocol: str, target: str, mix: Mix) -> dict[str, Any]:
        p = mix.problems
        source = self.schema(rf, target, mix)
        if rf.has("method") and rf.has("rpc"):
            p.add(rf.at("rpc"), "give either 'rpc' (chaoslab's go-api) or 'method', not both")
            rf.get("rpc", str, "")
        if rf.has("method"):
            for key in ("work", "messages"):
                if rf.has(key):
                    p.add(
                        rf.at(key),
                        "belongs to the go-api shorthand 'rpc:'",
                        f"put it in the message: message: {{{key}: ...}}",
                    )
                    rf.get(key, str, "")
            method = rf.get("method", _grpc_method, "", required=True)
            message = rf.get("message", _json_message, "{}")
            replies = rf.integer("replies", 0, low=1, high=MAX_REPLIES)
        elif any(rf.has(k) for k in ("rpc", "work", "messages")) or _is_work_api(source.protos):
            method, message, replies = self._shorthand(rf, p)
        else:
            p.add(rf.at("method"), "is required", f"{METHOD_HINT} (rpc: Do|Stream is chaoslab's go-api's)")
            for key in ("message", "replies"):
                rf.get(key, str, "")
            return {}
        return {"grpc": GrpcCall(method, message, replies=replies, where=rf.path, **source.fields())}

    @staticmethod
    def _shorthand(rf: Fields, p: Problems) -> tuple[str, str, int]:
        """`rpc: Do|Stream`, `work`, `messages`: chaoslab's go-api Work API."""
        rpc = rf.choice("rpc", RPCS, "Do")
        work = rf.integer("work", 20, low=0, high=1_000_000)
        messages = rf.integer("messages", 10 if rpc == "Stream" else 1, low=1, high=10_000)
        if rpc == "Do" and messages != 1:
            p.add(rf.at("messages"), "only a Stream call has several replies", "use 'rpc: Stream'")
        for key in ("message", "replies"):
            if rf.has(key):
                p.add(
                    rf.at(key),
                    "the shorthand 'rpc:' builds its message from 'work' and 'messages'",
                    f"use method: {WORK_SERVICE}/{rpc} with message: {{work: 20}}",
                )
                rf.get(key, str, "")
        if rpc == "Stream":
            return f"{WORK_SERVICE}/Stream", json.dumps({"work": work, "messages": messages}), messages
        return f"{WORK_SERVICE}/Do", json.dumps({"work": work}), 0

    @staticmethod
    def schema(rf: Fields, target: str, mix: Mix) -> _Schema:
        """Where the method's descriptors come from: the request's `proto:` files, `reflection:
        true`, the target's declared protos (a proxy's: its upstream's), else reflection."""
        p = mix.problems
        files = tuple(paths(rf, "proto", mix.base, directory=False))
        roots = tuple(paths(rf, "proto_path", mix.base, directory=True))
        reflection = rf.flag("reflection")
        if files and reflection:
            p.add(rf.at("reflection"), "give either 'proto' files or 'reflection: true', not both")
        if roots and not files:
            p.add(rf.at("proto_path"), "is for the imports of the files under 'proto:'", "give proto: [FILE]")
        if files:
            return _Schema(files, roots, False, rf.at("proto"))
        if reflection:
            return _Schema((), (), True, "")
        return Grpc.schema_of(target, mix)

    @staticmethod
    def schema_of(target: str, mix: Mix) -> _Schema:
        """The target's declared protos (a proxy's: its upstream's), else reflection."""
        t = mix.targets.get(target)
        if t is not None and not t.protos and t.upstream in mix.targets:
            t = mix.targets[t.upstream]
        if t is not None and t.protos:
            return _Schema(t.protos, t.proto_path, False, f"targets.{t.name}.protos")
        return _Schema((), (), True, "")


@dataclass(frozen=True)
class _Schema:
    protos: tuple[str, ...]
    proto_path: tuple[str, ...]
    reflection: bool
    protos_from: str

    def fields(self) -> dict[str, Any]:
        return {
            "protos": self.protos,
            "proto_path": self.proto_path,
            "reflection": self.reflection,
            "protos_from": self.protos_from,
        }


def _is_work_api(protos: tuple[str, ...]) -> bool:
    """The protos are the go-api's own: a request naming no method calls its Do."""
    from chaoslab.targets.builtins import GoApi

    return protos == GoApi.PROTOS


class Tcp(Family):
    label = "tcp"
    protocols = ("tcp",)
    keys = ("send", "send_hex", "expect", "expect_hex", "read", "connection")
    hint = "use 'send:'"

    def read(self, rf: Fields, protocol: str, target: str, mix: Mix) -> dict[str, Any]:
        p = mix.problems
        if rf.has("send") == rf.has("send_hex"):
            p.add(
                rf.at("send"),
                "give either 'send' or 'send_hex', not both" if rf.has("send") else "is required",
                'e.g. send: "PING\\r\\n" (YAML\'s double quotes read the escapes) or send_hex: 50494e470d0a',
            )
        send = rf.get("send", _text_bytes, b"")
        send = rf.get("send_hex", _hex_bytes, b"") or send
        if rf.has("expect") and rf.has("expect_hex"):
            p.add(rf.at("expect"), "give either 'expect' or 'expect_hex', not both")
        expect = rf.get("expect", _text_bytes, b"")
        expect = rf.get("expect_hex", _hex_bytes, b"") or expect
        read = rf.integer("read", 0, low=1, high=MAX_READ)
        explicit = rf.has("connection")
        keep = rf.choice("connection", CONNECTIONS, "keep") == "keep"
        if keep and not expect and not read and rf.ok:
            p.add(
                rf.at("connection") if explicit else rf.path,
                "on a kept connection a reply ends when 'expect' is in it or after 'read' bytes",
                "give expect: or read:, or connection: new (the reply then ends when the server closes)",
            )
        if expect and read and len(expect) > read:
            p.add(rf.at("read"), f"is shorter than 'expect' ({len(expect)} bytes)")
        return {"tcp": TcpExchange(send, expect, read, keep)}


FAMILIES: tuple[Family, ...] = (Http(), Grpc(), Tcp())
BY_PROTOCOL = {protocol: family for family in FAMILIES for protocol in family.protocols}
PROTOCOLS = tuple(BY_PROTOCOL)


def parse_requests(
    f: Fields, protocol: str, target: str, targets: dict[str, TargetSpec], problems: Problems, base: Path
) -> tuple[RequestSpec, ...]:
    """The `path:` of a one-request HTTP load, or the `requests:` list."""
    mix = Mix(targets, base, problems)
    out: list[RequestSpec] = []
    if f.has("path") and f.has("requests"):
        problems.add(f.at("path"), "give either 'path' or 'requests', not both")
    path = f.get("path", _url_path, "")
    if path and protocol not in Http.protocols:
        problems.add(
            f.at("path"),
            f"a {protocol} load has no path",
            "give 'requests: [{name, rpc: Do}]'"
            if protocol in Grpc.protocols
            else "give 'requests: [{name, send: ..., expect: ...}]'",
        )
    elif path:
        out.append(RequestSpec("default", protocol, target, path=check_path(path, f.at("path"), problems)))
        _check_served(out[0], targets, f.at("protocol"), problems)
    items = f.sequence("requests")
    if len(items) > MAX_REQUESTS:
        problems.add(f.at("requests"), f"at most {MAX_REQUESTS} kinds of request, got {len(items)}")
    for i, item in enumerate(items[:MAX_REQUESTS]):
        rf = Fields(item, join(f.at("requests"), i), problems)
        req = _request(rf, protocol, target, mix)
        rf.finish()
        if req is not None:
            out.append(req)
    if not out and f.ok and not f.has("requests") and not path:
        if protocol in Grpc.protocols and _is_work_api(Grpc.schema_of(target, mix).protos):
            fields = Grpc().read(Fields({}, f.path, problems), protocol, target, mix)
            out.append(RequestSpec("default", protocol, target, **fields))
            _check_served(out[0], targets, f.at("protocol"), problems)
        elif protocol in Grpc.protocols:
            problems.add(
                f.at("requests"),
                "is required",
                "e.g. requests: [{name: call, method: pkg.Service/Get, message: {}}]",
            )
        else:
            problems.add(
                f.at("path") if protocol in Http.protocols else f.at("requests"),
                "is required",
                "give 'path: /work' or a 'requests:' list"
                if protocol in Http.protocols
                else "give a 'requests:' list: [{name, send: ..., expect: ...}]",
            )
    names = [r.name for r in out]
    if len(set(names)) != len(names):
        problems.add(f.at("requests"), "request names must be unique")
    return tuple(out)


def _request(rf: Fields, protocol: str, target: str, mix: Mix) -> RequestSpec | None:
    p = mix.problems
    name = rf.name("name", required=True)
    proto = rf.choice("protocol", PROTOCOLS, protocol)
    own_target = rf.has("target")
    to = rf.name("target", target)
    if own_target and to not in mix.targets:
        p.add(rf.at("target"), f"unknown target {show(to)}", known(mix.targets))
    weight = rf.integer("weight", 1, low=1, high=1000)
    family = BY_PROTOCOL.get(proto, Http())
    for other in FAMILIES:
        for key in other.keys:
            if other is not family and key not in family.keys and rf.has(key):
                p.add(
                    rf.at(key),
                    f"is for {other.label} requests, this one is {proto}",
                    f"add protocol: {' or '.join(other.protocols)}, or remove it ({family.hint})",
                )
                rf.get(key, str, "")
    fields = family.read(rf, proto, to, mix)
    req = RequestSpec(name, proto, to, weight=weight, **fields)
    _check_served(req, mix.targets, rf.at("protocol"), p)
    return req


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


def _grpc_method(value: object) -> str:
    if not isinstance(value, str) or not GRPC_METHOD.match(value):
        shown = repr(value) if isinstance(value, str) else f"a {type(value).__name__}"
        raise ValueError(f"{shown} is not a gRPC method name ({METHOD_HINT})")
    return value


def _json_message(value: object) -> str:
    """The request message as JSON text: a mapping of JSON values (protobuf's JSON mapping)."""
    if not isinstance(value, dict):
        kind = "nothing" if value is None else type(value).__name__
        raise ValueError(f"expected a mapping (the request message's fields), got {kind}")
    bad = _not_json(value, "")
    if bad:
        raise ValueError(bad)
    text = json.dumps(value, separators=(",", ":"))
    if len(text) > MAX_MESSAGE:
        raise ValueError(f"at most {MAX_MESSAGE} bytes of JSON")
    return text


def _not_json(value: object, where: str) -> str:
    """Why a YAML value is not a JSON value ('' when it is one)."""
    at = f" at {where}" if where else ""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                return f"keys are field names, got {key!r}{at}"
            bad = _not_json(item, f"{where}.{key}" if where else key)
            if bad:
                return bad
        return ""
    if isinstance(value, list):
        return next((b for i, item in enumerate(value) if (b := _not_json(item, f"{where}[{i}]"))), "")
    if isinstance(value, float) and not math.isfinite(value):
        return f"{value!r}{at} is not a JSON number: write it as a string ('NaN', 'Infinity')"
    if value is None or isinstance(value, str | int | float | bool):
        return ""
    return f"a {type(value).__name__}{at} has no JSON form: write it as a string"


def paths(rf: Fields, key: str, base: Path, *, directory: bool) -> list[str]:
    """A file or a list of files (or directories), relative to the scenario's directory."""
    raw = rf.raw.get(key)
    items = rf.sequence(key) if isinstance(raw, list) else ([rf.string(key)] if rf.has(key) else [])
    out = []
    for i, item in enumerate(items):
        where = join(rf.at(key), i) if isinstance(raw, list) else rf.at(key)
        if not isinstance(item, str) or not item:
            rf.problems.add(where, f"expected a path, got {'nothing' if item is None else repr(item)}")
            continue
        path = (base / item).resolve()
        if directory and not path.is_dir():
            rf.problems.add(where, f"{path} is not a directory")
        elif not directory and not path.is_file():
            rf.problems.add(where, f"{path} is not a file", "paths are relative to the scenario file")
        else:
            out.append(str(path))
    if isinstance(raw, list) and not items:
        rf.problems.add(rf.at(key), "is empty")
    return out


def _text_bytes(value: object) -> bytes:
    """Text sent as UTF-8 (YAML's double-quoted strings read escapes such as \\r\\n and \\x00)."""
    if not isinstance(value, str) or not value:
        raise ValueError(f"expected text, got {'nothing' if value is None else repr(value)}")
    data = value.encode()
    if len(data) > MAX_BODY:
        raise ValueError(f"at most {MAX_BODY} bytes")
    return data


def _hex_bytes(value: object) -> bytes:
    try:
        data = bytes.fromhex(value) if isinstance(value, str) else b""
    except ValueError:
        data = b""
    if not data:
        raise ValueError(f"expected hex digits, e.g. 50494e470d0a, got {value!r}")
    if len(data) > MAX_BODY:
        raise ValueError(f"at most {MAX_BODY} bytes")
    return data


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


def check_url_path(path: str, where: str, problems: Problems, example: str = "e.g. '/work'") -> None:
    """An HTTP request path: starts with '/', URL characters only (RFC 3986: percent-encode the
    rest), at most 8192 characters. Request paths and health-check paths alike."""
    if not path.startswith("/"):
        problems.add(where, f"{show(path)} must start with '/'", example)
    elif len(path) > 8192 or not URL_PATH.match(path):
        problems.add(
            where,
            f"{show(path)} is not a request path: URL characters only, at most 8192 characters",
            "percent-encode other characters (a space is %20)",
        )
