"""Job kinds and their handlers.

Domains register their handlers here (``@handler("tag.expire")``); the jobs package never
imports a domain. A handler receives the job's payload and a ``JobContext`` and must be
idempotent: a job whose worker died is run again when its lease expires.

A job that fails for good (its attempts used up, or ``PermanentFailure`` raised) is marked
``failed``; a kind registered with ``on_give_up`` is told in that same transaction, so the
domain can put its own state in a final state (an import task ``done`` with the reason)
instead of leaving it waiting for a job that will never run again.
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

    def completed_by_caller(self) -> None:
        """The caller deleted this job in its own write transaction, as ``complete_in`` does
        (``DELETE ... WHERE id = job AND locked_by = worker``), e.g. in one statement for many
        jobs: the same promise, the handler returns once that commits."""
        self._completed.append(True)

    @property
    def completed(self) -> bool:
        return bool(self._completed)


Handler = Callable[[dict[str, Any], JobContext], None]
# batch(items) runs several claimed jobs of its kind together (``(payload, context)`` each) and
# answers one outcome per item, in order: None when it succeeded (completed in its last
# transaction through ``context.complete_in``, or left for the worker to complete), else the
# exception the single handler would have raised for it (RetryLater, PermanentFailure, an
# error). Should it raise itself, the worker runs each job through the single handler instead,
# which must therefore pick up whatever the batch left half done (handlers are idempotent).
BatchHandler = Callable[[list[tuple[dict[str, Any], JobContext]]], list[BaseException | None]]
# on_give_up(session, payload, context, error): runs in the write transaction that marks the
# job failed (``error`` is the job's last error, for logs: it may hold internal details).
GiveUpHandler = Callable[[Any, dict[str, Any], JobContext, str], None]

_handlers: dict[str, Handler] = {}
_give_up: dict[str, GiveUpHandler] = {}


class RetryLater(Exception):
    """Raise from a handler to run the job again after ``delay`` seconds, without counting a failure."""

    def __init__(self, delay: float, reason: str = "") -> None:
        super().__init__(reason or f"retry in {delay}s")
        self.delay = delay


class PermanentFailure(Exception):
    """Raise from a handler when running the job again cannot succeed (its data is at fault):
    the job fails at once, without its remaining attempts, and ``on_give_up`` runs."""


_leases: dict[str, float] = {}
_renewed: set[str] = set()
_batches: dict[str, tuple[BatchHandler, int]] = {}


def handler(kind: str, *, lease_seconds: float | None = None, renew_lease: bool = False,
            on_give_up: GiveUpHandler | None = None, batch: BatchHandler | None = None,
            batch_size: int = 4) -> Callable[[Handler], Handler]:
    """Register ``fn`` for ``kind``.

    ``lease_seconds``: claim its jobs with this (shorter) lease than the worker's default, so a
    dead worker's job is taken over sooner; the handler must then keep its lease alive, by
    itself or with ``renew_lease=True`` (the worker renews it every third of the lease while
    the handler runs). ``on_give_up``: see the module's docstring. ``batch``: runs the jobs of
    ``kind`` one claim took together (see ``BatchHandler``), ``batch_size`` at most per call (the
    calls of one claim run side by side, so one batch's transactions overlap another's
    waits); the worker still settles each job on its own (retry, give up, complete).
    """
    if renew_lease and lease_seconds is None:
        raise ValueError("renew_lease needs lease_seconds")

    def register(fn: Handler) -> Handler:
        _handlers[kind] = fn
        if lease_seconds is not None:
            _leases[kind] = lease_seconds
        if renew_lease:
            _renewed.add(kind)
        if on_give_up is not None:
            _give_up[kind] = on_give_up
        if batch is not None:
            _batches[kind] = (batch, max(1, batch_size))
        return fn

    return register


def lease_of(kind: str) -> float | None:
    """The lease ``kind`` asked for at registration, if any."""
    return _leases.get(kind)


def leases() -> dict[str, float]:
    """The kinds that asked for a lease of their own, with it."""
    return dict(_leases)


def renews_lease(kind: str) -> bool:
    """Whether the worker keeps ``kind``'s lease alive while its handler runs."""
    return kind in _renewed


def batch_handler(kind: str) -> BatchHandler | None:
    found = _batches.get(kind)
    return found[0] if found is not None else None


def batch_size(kind: str) -> int:
    """At most how many jobs of ``kind`` one call of its batch handler takes (1: none)."""
    found = _batches.get(kind)
    return found[1] if found is not None else 1


def give_up_handler(kind: str) -> GiveUpHandler | None:
    return _give_up.get(kind)


def get_handler(kind: str) -> Handler | None:
    return _handlers.get(kind)


def registered_kinds() -> list[str]:
    return sorted(_handlers)
