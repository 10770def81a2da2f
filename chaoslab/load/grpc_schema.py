"""The schemas of the load's gRPC requests, made once per run before any load.

.proto files are compiled by protoc (grpcio-tools' `grpc_tools.protoc`) into a
FileDescriptorSet holding every import (`--include_imports`); a request whose target
declares no protos asks the server itself, by server reflection (grpc.reflection.v1, else
v1alpha), once per (protocol, target). Each set is written into the run's work directory,
and every gRPC request is checked against its set before any load: its method exists, is
unary or server-streaming, and its JSON message parses. The Locust processes read the same
files (chaoslab/load/protos.py) and never run protoc themselves.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_reflection.v1alpha import reflection_pb2 as rpb  # v1's messages are the same on the wire

from chaoslab import proc
from chaoslab.context import RunContext
from chaoslab.errors import LoadError
from chaoslab.load.protos import Call, SchemaError, encode, find_method, pool_of, services
from chaoslab.scenario.model import GrpcCall, RequestSpec

if TYPE_CHECKING:
    from chaoslab.targets.base import RunningTarget

REFLECTION_APIS = ("grpc.reflection.v1", "grpc.reflection.v1alpha")
REFLECTION_TIMEOUT = 10.0
MAX_ROUNDS = 32  # of reflection questions for imports (each round asks for all missing files)


@dataclass
class _Set:
    """One FileDescriptorSet: its file and the services the source offers."""

    path: Path
    files: descriptor_pb2.FileDescriptorSet
    offered: list[str]

    @functools.cached_property
    def pool(self) -> descriptor_pool.DescriptorPool:
        try:
            return pool_of(self.files)
        except (SchemaError, TypeError, KeyError) as exc:
            raise LoadError(f"the descriptors in {self.path.name} do not load: {exc}") from None


@dataclass
class GrpcSchemas:
    ctx: RunContext
    _compiled: dict[tuple[tuple[str, ...], tuple[str, ...]], _Set] = field(default_factory=dict)
    _reflected: dict[str, _Set] = field(default_factory=dict)  # by base (protocol:target)
    calls: dict[str, Call] = field(default_factory=dict)  # by request name, once checked

    @property
    def requests(self) -> list[tuple[RequestSpec, GrpcCall]]:
        return [(r, r.grpc) for r in self.ctx.scenario.load.requests if r.grpc is not None]

    def compile(self) -> None:
        """Compile every request's .proto files (each distinct list once) and check the
        requests that use them."""
        for req, call in self.requests:
            key = (call.protos, call.proto_path)
            if call.reflection or req.name in self.calls:
                continue
            if key not in self._compiled:
                out = self.ctx.work_dir / f"grpc-{len(self._compiled) + len(self._reflected)}.binpb"
                files = _protoc(call, out)
                self._compiled[key] = _Set(out, files, services(files))
            names = ", ".join(Path(p).name for p in call.protos)
            self._check(req, call, self._compiled[key], f"{names} ({call.protos_from})")

    def reflect(self, targets: dict[str, RunningTarget]) -> None:
        """Ask each target reached by a reflection request for its services' descriptors
        (once per protocol and target), and check those requests."""
        wanted: dict[str, tuple[RequestSpec, list[str]]] = {}
        for req, call in self.requests:
            if call.reflection:
                base = f"{req.protocol}:{req.target}"
                wanted.setdefault(base, (req, []))[1].append(call.service)
        for base, (req, names) in wanted.items():
            if base in self._reflected:
                continue
            out = self.ctx.work_dir / f"grpc-{len(self._compiled) + len(self._reflected)}.binpb"
            files, offered = _reflect(req, targets[req.target], sorted(set(names)))
            out.write_bytes(files.SerializeToString())
            self._reflected[base] = _Set(out, files, offered)
        for req, call in self.requests:
            if call.reflection and req.name not in self.calls:
                schema = self._reflected[f"{req.protocol}:{req.target}"]
                self._check(req, call, schema, f"server reflection of {req.protocol}:{req.target}")

    def _check(self, req: RequestSpec, call: GrpcCall, schema: _Set, source: str) -> None:
        """A request against its schema: LoadError (exit 3) naming its YAML path."""
        try:
            method = find_method(schema.pool, call.method, schema.offered)
            encode(method, call.message)
        except SchemaError as exc:
            raise LoadError(
                f"{call.where}.{exc.key}: {' '.join(str(exc).split())}; schema from {source}",
                "fix the request, or give the .proto files of the target's API under proto:",
            ) from None
        if method.client_streaming:
            raise LoadError(
                f"{call.where}.method: {call.method} is "
                + ("bidirectional" if method.server_streaming else "client")
                + " streaming: chaoslab's load calls unary and server-streaming methods only",
                "load a unary or server-streaming method of the API",
            )
        if call.replies and not method.server_streaming:
            raise LoadError(
                f"{call.where}.replies: {call.method} is unary: it has one reply",
                "remove 'replies', or call a server-streaming method",
            )
        self.calls[req.name] = Call(
            str(schema.path), call.method, method.server_streaming, call.message, call.replies, source
        )


def _protoc(call: GrpcCall, out: Path) -> descriptor_pb2.FileDescriptorSet:
    # The user's roots first: protoc names a file by the first root holding it, and imports
    # are resolved against every root; each file's own directory comes after them.
    roots = [*call.proto_path, *dict.fromkeys(str(Path(p).parent) for p in call.protos)]
    argv = [
        sys.executable,
        "-m",
        "grpc_tools.protoc",  # adds the well-known types' root (google/protobuf/*.proto)
        f"--descriptor_set_out={out}",
        "--include_imports",
        *(f"--proto_path={r}" for r in roots),
        *call.protos,
    ]
    res = proc.run(argv, check=False)
    if res.returncode != 0:
        err = "\n    ".join((res.stderr.strip() or res.stdout.strip() or "no output").splitlines()[:20])
        missing = "No module named grpc_tools" in err
        raise LoadError(
            f"{call.protos_from}: protoc could not compile {', '.join(Path(p).name for p in call.protos)} "
            f"(for {call.where}):\n    {err}",
            "install grpcio-tools (pip install -e .)"
            if missing
            else "fix the .proto file; imports are found in its directory and under proto_path:",
        )
    files = descriptor_pb2.FileDescriptorSet()
    files.ParseFromString(out.read_bytes())
    return files


def _reflect(
    req: RequestSpec, target: RunningTarget, names: list[str]
) -> tuple[descriptor_pb2.FileDescriptorSet, list[str]]:
    """The files defining `names` and everything they import, and the services offered."""
    import grpc

    call = req.grpc
    assert call is not None
    address = target.url_for(req.protocol)
    if req.protocol == "grpc":
        roots = target.ca.read_bytes() if target.ca is not None else None
        channel = grpc.secure_channel(address, grpc.ssl_channel_credentials(root_certificates=roots))
    else:
        channel = grpc.insecure_channel(address)
    try:
        for api in REFLECTION_APIS:
            ask = channel.stream_stream(
                f"/{api}.ServerReflection/ServerReflectionInfo",
                request_serializer=rpb.ServerReflectionRequest.SerializeToString,
                response_deserializer=rpb.ServerReflectionResponse.FromString,
            )
            try:
                return _fetch(ask, names)
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNIMPLEMENTED:
                    continue
                raise LoadError(
                    f"{call.where}: server reflection on target {req.target} ({address}) failed: "
                    f"{exc.code().name}: {exc.details() or ''}".rstrip(": "),
                    "check that the target serves gRPC on that port, or give proto: [FILE]",
                ) from None
        raise LoadError(
            f"{call.where}: target {req.target} ({address}) does not answer gRPC server reflection "
            f"({' or '.join(REFLECTION_APIS)})",
            "give the request the .proto files of its API (proto: [FILE]), or declare protos: on the target",
        )
    finally:
        channel.close()


Ask = Callable[..., Iterator[Any]]  # a ServerReflectionInfo stream: questions in, answers out


def _fetch(ask: Ask, names: list[str]) -> tuple[descriptor_pb2.FileDescriptorSet, list[str]]:
    """Ask in rounds: the services offered, the file of each wanted service, then the files
    they import that the answers did not already hold."""
    listed = _ask(ask, [rpb.ServerReflectionRequest(list_services="")])
    offered = [s.name for r in listed for s in r.list_services_response.service]
    files: dict[str, descriptor_pb2.FileDescriptorProto] = {}
    questions = [rpb.ServerReflectionRequest(file_containing_symbol=n) for n in names if n in offered]
    for _ in range(MAX_ROUNDS):
        if not questions:
            break
        for answer in _ask(ask, questions):
            for blob in answer.file_descriptor_response.file_descriptor_proto:
                fd = descriptor_pb2.FileDescriptorProto.FromString(blob)
                files.setdefault(fd.name, fd)
        missing = {dep for fd in files.values() for dep in fd.dependency} - set(files)
        questions = [rpb.ServerReflectionRequest(file_by_filename=name) for name in sorted(missing)]
    out = descriptor_pb2.FileDescriptorSet()
    out.file.extend(files.values())
    return out, offered


def _ask(ask: Ask, questions: list[Any]) -> list[Any]:
    """One reflection stream: every question sent, one answer read per question."""
    return list(ask(iter(questions), timeout=REFLECTION_TIMEOUT))
