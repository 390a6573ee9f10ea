"""Job kinds and their handlers.

Domains register their handlers here (``@handler("tag.expire")``); the jobs package never
imports a domain. A handler receives the job's payload and a ``JobContext`` and must be
idempotent: a job whose worker died is run again when its lease expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class JobContext:
    job_id: int
    kind: str
    organization_id: int | None
    attempt: int


Handler = Callable[[dict[str, Any], JobContext], None]

_handlers: dict[str, Handler] = {}


class RetryLater(Exception):
    """Raise from a handler to run the job again after ``delay`` seconds, without counting a failure."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay


def handler(kind: str) -> Callable[[Handler], Handler]:
    def register(fn: Handler) -> Handler:
        _handlers[kind] = fn
        return fn

    return register


def get_handler(kind: str) -> Handler | None:
    return _handlers.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_handlers)
