"""gRPC methods and messages from a FileDescriptorSet, with no generated code.

Shared by the run (which checks every gRPC request before any load) and the Locust
processes (which build their requests the same way): a descriptor pool from the set's
files, a method looked up by `package.Service/Method`, a request message from JSON with
protobuf's `json_format.ParseDict`, and the reply's message class.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from google.protobuf import descriptor_pb2, descriptor_pool, json_format, message, message_factory
from google.protobuf.descriptor import Descriptor, MethodDescriptor


class SchemaError(Exception):
    """A method or a message does not fit the descriptors: the message says why, `key` which
    of the request's keys is wrong (method or message)."""

    def __init__(self, message: str, key: str = "method") -> None:
        super().__init__(message)
        self.key = key


def read_set(path: Path) -> descriptor_pb2.FileDescriptorSet:
    out = descriptor_pb2.FileDescriptorSet()
    out.ParseFromString(path.read_bytes())
    return out


def pool_of(files: descriptor_pb2.FileDescriptorSet) -> descriptor_pool.DescriptorPool:
    """A pool of every file of the set, each added after the files it imports."""
    pool = descriptor_pool.DescriptorPool()
    by_name = {f.name: f for f in files.file}
    added: set[str] = set()

    def add(name: str, trail: tuple[str, ...]) -> None:
        if name in added:
            return
        if name not in by_name:
            raise SchemaError(f"{trail[-1]} imports {name}, which the descriptors do not hold")
        if name in trail:
            raise SchemaError(f"{name} imports itself through {' -> '.join(trail)}")
        for dep in by_name[name].dependency:
            add(dep, (*trail, name))
        pool.Add(by_name[name])
        added.add(name)

    for name in by_name:
        add(name, ())
    return pool


def services(files: descriptor_pb2.FileDescriptorSet) -> list[str]:
    """The full names of the services the set defines."""
    return [f"{f.package}.{s.name}" if f.package else s.name for f in files.file for s in f.service]


def find_method(
    pool: descriptor_pool.DescriptorPool, method: str, offered: list[str] | None = None
) -> MethodDescriptor:
    """`package.Service/Method`; SchemaError naming what there is instead."""
    service_name, _, name = method.partition("/")
    try:
        service = pool.FindServiceByName(service_name)
    except KeyError:
        there = f"; services there: {', '.join(sorted(offered))}" if offered else ""
        raise SchemaError(f"no service {service_name}{there}") from None
    found: MethodDescriptor | None = service.methods_by_name.get(name)
    if found is None:
        names = ", ".join(m.name for m in service.methods)
        raise SchemaError(f"service {service_name} has no method {name}; its methods: {names}")
    return found


def message_class(desc: Descriptor) -> type[message.Message]:
    cls: type[message.Message] = message_factory.GetMessageClass(desc)
    return cls


def encode(method: MethodDescriptor, message_json: str) -> bytes:
    """The request message of `method`, from its JSON text, serialized."""
    msg = message_class(method.input_type)()
    try:
        json_format.ParseDict(json.loads(message_json), msg)
    except json_format.ParseError as exc:
        raise SchemaError(f"not a {method.input_type.full_name}: {exc}", "message") from None
    data: bytes = msg.SerializeToString()
    return data


@dataclass(frozen=True)
class Call:
    """A checked gRPC request, as the Locust processes receive it."""

    descriptors: str  # the FileDescriptorSet file
    method: str  # package.Service/Method
    streaming: bool  # a server stream (else unary)
    message: str  # JSON text
    replies: int  # a stream's expected replies (0: any)
    source: str = ""  # where the schema came from, for the run's messages

    def to_json(self) -> dict[str, object]:
        return {
            "descriptors": self.descriptors,
            "method": self.method,
            "streaming": self.streaming,
            "message": self.message,
            "replies": self.replies,
        }
