"""The registry of webhook topic handlers: topic -> function(event) that applies the payload."""
from __future__ import annotations

from typing import Callable

_HANDLERS: dict[str, Callable] = {}


def handles(*topics: str):
    """Decorator registering a function as the handler of one or more topics."""
    def register(func: Callable) -> Callable:
        for topic in topics:
            _HANDLERS[topic] = func
        return func
    return register


def handler_for(topic: str) -> Callable | None:
    """The handler registered for a topic, or None."""
    return _HANDLERS.get(topic)
