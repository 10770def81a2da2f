"""A tiny publish/subscribe bus so producers (load, faults, phases) and consumers (live view,
analysis) do not import each other."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

Handler = Callable[..., None]


class EventBus:
    def __init__(self) -> None:
        self._handlers: dict[str, list[Handler]] = defaultdict(list)

    def subscribe(self, name: str, handler: Handler) -> None:
        self._handlers[name].append(handler)

    def subscribed(self, name: str) -> bool:
        """Whether anyone listens (so a producer can skip building a costly payload)."""
        return bool(self._handlers.get(name))

    def fire(self, name: str, **payload: Any) -> None:
        for handler in list(self._handlers[name]):
            handler(**payload)
