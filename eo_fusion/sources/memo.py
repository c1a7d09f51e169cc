"""A small thread-safe memo of the last results of a pure function of grid keys.

Source windows and PROJ lattices are pure functions of (grid, grid) keys that every tile of a
run asks for again; they are cheap to keep and costly to recompute. The memo holds at most
``size`` results and forgets the oldest first. The value is computed outside the lock, so two
threads that miss at once may both compute it (the same value): no thread waits on another's
PROJ call.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

__all__ = ["Memo"]

V = TypeVar("V")


class Memo(Generic[V]):
    """At most ``size`` values by key, oldest forgotten first (see module doc)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._values: dict[Hashable, V] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, make: Callable[[], V]) -> V:
        """The value of ``key``, made by ``make()`` on a miss."""
        with self._lock:
            if key in self._values:
                return self._values[key]
        value = make()
        with self._lock:
            if len(self._values) >= self.size:
                del self._values[next(iter(self._values))]  # dicts keep insertion order
            self._values[key] = value
        return value

    def clear(self) -> None:
        with self._lock:
            self._values.clear()
