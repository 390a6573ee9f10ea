"""A small time-limited memory of successful credential look-ups, shared by the API tokens
and the CDH keys: a revocation clears it, and any other change applies within ``ttl``."""

from __future__ import annotations

import threading
import time
from typing import Generic, TypeVar

Value = TypeVar("Value")


class TTLCache(Generic[Value]):
    """Entries keyed by a credential's digest, each forgotten ``ttl`` seconds after it was put.
    Bounded: past ``max_entries`` the whole memory is dropped (they are re-learnt in one query)."""

    def __init__(self, ttl: float = 2.0, max_entries: int = 10_000) -> None:
        self.ttl = ttl
        self.max_entries = max_entries
        self._entries: dict[str, tuple[float, Value]] = {}
        self._lock = threading.Lock()

    def get(self, key: str) -> Value | None:
        with self._lock:
            entry = self._entries.get(key)
        if entry and entry[0] > time.monotonic():
            return entry[1]
        return None

    def put(self, key: str, value: Value) -> None:
        with self._lock:
            if len(self._entries) > self.max_entries:
                self._entries.clear()
            self._entries[key] = (time.monotonic() + self.ttl, value)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
