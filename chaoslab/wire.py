"""Frozen dataclasses (a target's or a fault's spec, a verification) as JSON and back: what the
run and its helper on a remote engine's host send each other.

Only the shapes the scenario model uses: numbers, strings, bools, bytes, None, tuples (of
anything here), dicts of them, nested dataclasses and enums. A tuple goes over as a list and
comes back a tuple, a nested dataclass comes back as its class (its field's type says which).
"""

from __future__ import annotations

import base64
import dataclasses
import enum
import json
import types
import typing
from typing import Any


def message(line: str | bytes) -> dict[str, Any] | None:
    """One line of the helper's stream as its JSON object; None for anything else."""
    try:
        msg = json.loads(line)
    except ValueError:
        return None
    return msg if isinstance(msg, dict) else None


def dump(value: Any) -> Any:
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: dump(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, bytes):
        return {"__bytes__": base64.b64encode(value).decode()}
    if isinstance(value, tuple | list):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {str(k): dump(v) for k, v in value.items()}
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise TypeError(f"{type(value).__name__} does not go over the wire")


def load(cls: type[Any], data: Any) -> Any:
    """`data` (from `dump`) as an instance of the dataclass `cls`."""
    if not isinstance(data, dict):
        raise ValueError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
    hints = _hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{cls.__name__}: unknown fields {', '.join(sorted(unknown))}")
    return cls(**{k: _value(hints[k], v) for k, v in data.items()})


_HINTS: dict[type[Any], dict[str, Any]] = {}


def _hints(cls: type[Any]) -> dict[str, Any]:
    if cls not in _HINTS:
        _HINTS[cls] = typing.get_type_hints(cls)
    return _HINTS[cls]


def _value(hint: Any, data: Any) -> Any:
    if isinstance(data, dict) and set(data) == {"__bytes__"}:
        return base64.b64decode(data["__bytes__"])
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        if data is None:
            return None
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        hint = options[0] if len(options) == 1 else Any
        origin = typing.get_origin(hint)
    if dataclasses.is_dataclass(hint) and isinstance(hint, type):
        return load(hint, data)
    if isinstance(hint, type) and issubclass(hint, enum.Enum):
        return hint(data)
    if origin is tuple and isinstance(data, list):
        args = typing.get_args(hint)
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_value(args[0], v) for v in data)
        if args and len(args) == len(data):
            return tuple(_value(a, v) for a, v in zip(args, data, strict=True))
        return tuple(_value(Any, v) for v in data)
    if origin is dict and isinstance(data, dict):
        _, value_hint = typing.get_args(hint) or (Any, Any)
        return {k: _value(value_hint, v) for k, v in data.items()}
    if isinstance(data, list):  # a tuple under a hint that does not say (Any)
        return tuple(_value(Any, v) for v in data)
    return data
