"""Job kinds and their handlers.

Domains register their handlers here (``@handler("tag.expire")``); the jobs package never
imports a domain. A handler receives the job's payload and a ``JobContext`` and must be
idempotent: a job whose worker died is run again when its lease expires.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class JobContext:
    job_id: int
    kind: str
    organization_id: int | None
    attempt: int
    worker_id: str | None = None
    _completed: list[bool] = field(default_factory=list, repr=False, compare=False)

    def complete_in(self, session: Any) -> None:
        """Delete this job in the caller's write transaction, the handler's last one (it must
        return once that commits): the job ends atomically with its work, and the worker has no
        transaction of its own left to make. A job whose lease another worker took is not deleted."""
        from openmaac.jobs.queue import complete

        if self.worker_id is not None:
            complete(session, self.job_id, self.worker_id)
            self._completed.append(True)

    @property
    def completed(self) -> bool:
        return bool(self._completed)


Handler = Callable[[dict[str, Any], JobContext], None]

_handlers: dict[str, Handler] = {}


class RetryLater(Exception):
    """Raise from a handler to run the job again after ``delay`` seconds, without counting a failure."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay


_leases: dict[str, float] = {}


def handler(kind: str, *, lease_seconds: float | None = None) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``kind``. ``lease_seconds``: claim its jobs with this (shorter) lease
    than the worker's default, for handlers that renew their own lease while they run, so a
    dead worker's job is taken over sooner."""
    def register(fn: Handler) -> Handler:
        _handlers[kind] = fn
        if lease_seconds is not None:
            _leases[kind] = lease_seconds
        return fn

    return register


def lease_of(kind: str) -> float | None:
    """The lease ``kind`` asked for at registration, if any."""
    return _leases.get(kind)


def get_handler(kind: str) -> Handler | None:
    return _handlers.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_handlers)
