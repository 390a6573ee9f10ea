"""LINE's per-channel, per-endpoint rate limits, shared by every process using the database.

LINE limits each channel separately per endpoint (push 2,000 requests/s, multicast 200/s, PNP
and the other endpoints 2,000/s; LINE Messaging API reference, rate limits) and answers 429 beyond, retries included.
Every worker process sending for a channel must therefore stay under the limit TOGETHER.

The limiter is a GCRA (generic cell rate algorithm, equivalent to a token bucket) whose only
state is one row per (channel, endpoint) in ``line_rate_buckets``: ``next_free``, the time
from which the next slot may be handed out.  Taking ``n`` slots is ONE atomic statement:

    UPDATE line_rate_buckets SET next_free = max(next_free, now - tolerance) + n / rate
    WHERE channel_id = :c AND endpoint = :e RETURNING next_free

so concurrent processes (PostgreSQL row lock; SQLite's single writer) get disjoint runs of
slots ``[start, start + n/rate)``, and each caller sleeps until its slot.  On PostgreSQL "now"
is the database server's clock, so several machines agree on time; on SQLite it is this
machine's clock (the only one that can share the file).

To keep the database out of the hot path a process leases slots in small batches (``batch``,
by default 25 ms worth: 50 push slots or 5 multicast slots) and hands them out locally;
slots it does not use in time are simply lost (the limit is only ever under-used).  A lease
whose next slot has fallen more than ``2 * tolerance`` behind the clock is dropped rather than
used late, so bursts stay within about ``3 * tolerance * rate`` requests above the steady rate
(300 for push; LINE measures per second).

Never call :func:`acquire` inside an open write transaction (it opens its own short one); a
caller that writes just before calling LINE uses :func:`prefetch` in that transaction instead,
so the lease costs no transaction of its own.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

from openmaac.db.driver import DriverStatement
from openmaac.db.engine import Database

# requests per second, per channel, per endpoint (LINE's published limits)
RATES: dict[str, float] = {
    "push": 2000.0,
    "multicast": 200.0,
    "pnp_push": 2000.0,
    "reply": 2000.0,
    "profile": 2000.0,
    "narrowcast": 60.0 / 3600.0,
    "broadcast": 60.0 / 3600.0,
}
DEFAULT_RATE = 2000.0
TOLERANCE = 0.05  # seconds of burst allowed above the steady rate (well inside LINE's window)
LEASE_SECONDS = 0.025  # how much time worth of slots a process takes from the database at once


@dataclass
class _Lease:
    next_slot: float = 0.0  # local time.time() of the next slot to hand out
    remaining: int = 0
    interval: float = 0.0


_leases: dict[tuple[int, str, str], _Lease] = {}
_locks: dict[tuple[int, str, str], threading.Lock] = {}
_registry_lock = threading.Lock()


def rate_of(endpoint: str) -> float:
    return RATES.get(endpoint, DEFAULT_RATE)


def _local(database: Database, channel_id: str, endpoint: str, rate: float | None,
           batch: int | None) -> tuple[float, int, threading.Lock, _Lease]:
    """This process's lease of the channel's endpoint: (slot interval, lease size, its lock, it)."""
    rate = float(rate or rate_of(endpoint))
    if batch is None:
        batch = max(1, int(rate * LEASE_SECONDS))
    key = (id(database), channel_id, endpoint)
    with _registry_lock:
        return 1.0 / rate, batch, _locks.setdefault(key, threading.Lock()), _leases.setdefault(key, _Lease())


def acquire(database: Database, channel_id: str, endpoint: str, cost: int = 1, *,
            rate: float | None = None, batch: int | None = None,
            sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until ``cost`` requests to ``endpoint`` of the channel fit under its rate.

    Returns the slot time (epoch seconds, this machine's clock) the caller was given.
    ``rate`` overrides LINE's published rate (requests/second) and ``batch`` the lease size.
    """
    if cost < 1:
        raise ValueError("cost must be at least 1")
    interval, batch, lock, lease = _local(database, channel_id, endpoint, rate, batch)
    with lock:
        now = time.time()
        # a fresh lease may start up to TOLERANCE in the past (GCRA burst), hence 2 x TOLERANCE
        if lease.remaining and (lease.interval != interval or lease.next_slot < now - 2 * TOLERANCE):
            lease.remaining = 0  # stale (or another rate): never use old slots late
        if lease.remaining < cost:
            taken = max(cost, batch)
            lease.next_slot = _lease(database, channel_id, endpoint, taken, interval)
            lease.remaining = taken
            lease.interval = interval
        slot = lease.next_slot
        lease.next_slot += cost * interval
        lease.remaining -= cost
    wait = slot - time.time()
    if wait > 0:
        sleep(wait)
    return slot


def limiter(database: Database, channel_id: str, *, rates: dict[str, float] | None = None,
            batch: int | None = None) -> Callable[[str, int], float]:
    """A ``limiter(endpoint, cost)`` for :class:`openmaac.channels.line_client.LineClient`."""

    def wait_for_slot(endpoint: str, cost: int = 1) -> float:
        rate = (rates or {}).get(endpoint)
        return acquire(database, channel_id, endpoint, cost, rate=rate, batch=batch)

    return wait_for_slot


# One statement takes the slots (creating the row on first use): a single round trip, and on
# SQLite a single statement inside whatever write transaction is open. On PostgreSQL the
# INSERT is also offered as a fragment, for a caller's data-modifying CTE (see lease_in_statement).
PG_TAKE = (
    "INSERT INTO line_rate_buckets (channel_id, endpoint, next_free) "
    "VALUES (:c, :e, EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol + :span) "
    "ON CONFLICT (channel_id, endpoint) DO UPDATE SET next_free = GREATEST(line_rate_buckets.next_free, "
    "EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol) + :span "
    "RETURNING next_free, EXTRACT(EPOCH FROM clock_timestamp())::float8 AS db_now")
_PG_TAKE_ROW = "VALUES (:c, :e, EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol + :span)"
assert _PG_TAKE_ROW in PG_TAKE


# The same for many channels at once (``:channels``, a text array of distinct ids, sorted so
# that concurrent statements lock their rows in one order): one row back per channel.
PG_TAKE_MANY = (
    "INSERT INTO line_rate_buckets (channel_id, endpoint, next_free) "
    "SELECT c, :e, EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol + :span "
    "FROM unnest(CAST(:channels AS text[])) AS c "
    "ON CONFLICT (channel_id, endpoint) DO UPDATE SET next_free = GREATEST(line_rate_buckets.next_free, "
    "EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol) + :span "
    "RETURNING channel_id, next_free, EXTRACT(EPOCH FROM clock_timestamp())::float8 AS db_now")


def pg_take_if(exists: str) -> str:
    """``PG_TAKE`` for a caller's data-modifying CTE that takes the slots only when the query
    ``exists`` finds a row (say, only when the caller's own insert happened): no row back otherwise."""
    return PG_TAKE.replace(_PG_TAKE_ROW, "SELECT CAST(:c AS text), CAST(:e AS text), "
                           f"EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol + :span WHERE EXISTS ({exists})")


_TAKE = {postgres: DriverStatement(statement) for postgres, statement in {
    True: text(PG_TAKE),
    False: text(
        "INSERT INTO line_rate_buckets (channel_id, endpoint, next_free) VALUES (:c, :e, :now - :tol + :span) "
        "ON CONFLICT (channel_id, endpoint) DO UPDATE SET next_free = MAX(next_free, :now - :tol) + :span "
        "RETURNING next_free, :now"),
}.items()}


def _first_slot(next_free: float, db_now: float, span: float, local_now: float) -> float:
    """The local time of the first of the slots a take of ``span`` seconds answered
    (``next_free`` after it, both in the database's clock)."""
    return next_free - span - db_now + local_now


def _take(conn: Any, postgres: bool, channel_id: str, endpoint: str, span: float) -> float:
    """Take ``span`` seconds of consecutive slots from the shared row in ``conn``'s
    transaction; the local time of the first."""
    local_now = time.time()
    row = _TAKE[postgres].execute(conn, {"c": channel_id, "e": endpoint, "span": span, "tol": TOLERANCE,
                                         "now": local_now}).one()
    if postgres:
        local_now = time.time()
    return _first_slot(float(row[0]), float(row[1]), span, local_now)


def _lease(database: Database, channel_id: str, endpoint: str, count: int, interval: float) -> float:
    """Take ``count`` consecutive slots in a short transaction of its own."""
    with database.write() as session:
        return _take(session.connection(), not database.is_sqlite, channel_id, endpoint, count * interval)


class StatementLease:
    """A batch of slots to take in the caller's own statement: ``params`` are the bind values
    of ``PG_TAKE`` (``:c``, ``:e``, ``:span``, ``:tol``); ``taken(next_free, db_now)`` hands
    the statement's answer back."""

    def __init__(self, channel_id: str, endpoint: str, span: float) -> None:
        self.params: dict[str, Any] = {"c": channel_id, "e": endpoint, "span": span, "tol": TOLERANCE}
        self.first_slot: float | None = None  # local time, once taken

    def taken(self, next_free: Any, db_now: Any) -> None:
        self.first_slot = _first_slot(float(next_free), float(db_now), self.params["span"], time.time())


@contextmanager
def lease_in_statement(database: Database, channel_id: str, endpoint: str, *, rate: float | None = None,
                       batch: int | None = None) -> Iterator[StatementLease | None]:
    """Make sure this process holds a fresh slot for ``endpoint`` of the channel: yields None
    when it does (or when another thread is leasing right now), else a :class:`StatementLease`
    whose slots the caller takes in a statement of its open write transaction (``PG_TAKE``, or
    ``prefetch``'s own) and reports with ``taken``.

    It never waits: the channel's local lease may be held by a thread in :func:`acquire`,
    waiting for the write lock (SQLite) or the bucket row (PostgreSQL) that the caller's
    transaction holds. A slot in the future is simply waited for by :func:`acquire`; if another
    thread takes the slot first, :func:`acquire` leases as usual. The slots are taken when the
    caller's transaction commits; should it roll back instead, this process may still use that
    one batch (``LEASE_SECONDS`` worth) which the row no longer shows: a burst within the
    limiter's tolerance, and only after a failed write."""
    interval, batch, lock, lease = _local(database, channel_id, endpoint, rate, batch)
    if not lock.acquire(blocking=False):
        yield None  # someone is leasing right now; acquire() will find or take a slot
        return
    try:
        now = time.time()
        if lease.remaining and lease.interval == interval and lease.next_slot >= now - TOLERANCE:
            yield None  # a fresh slot is here (with TOLERANCE to spare before acquire would drop it)
            return
        taking = StatementLease(channel_id, endpoint, batch * interval)
        yield taking
        if taking.first_slot is not None:
            lease.next_slot = taking.first_slot
            lease.remaining = batch
            lease.interval = interval
    finally:
        lock.release()


@contextmanager
def leases_in_statement(database: Database, channel_ids: Iterable[str],
                        endpoint: str) -> Iterator[tuple[dict[str, StatementLease], dict[str, Any]]]:
    """:func:`lease_in_statement` for many channels at once, for a caller's statement that takes
    them with ``PG_TAKE_MANY``: yields the leases to take by channel and the statement's bind
    values (``:channels``, ``:e``, ``:span``, ``:tol``); the caller hands each returned row to its
    channel's ``taken``. Never waits (as ``lease_in_statement``)."""
    with ExitStack() as stack:
        takings: dict[str, StatementLease] = {}
        for channel_id in sorted(set(channel_ids)):
            taking = stack.enter_context(lease_in_statement(database, channel_id, endpoint))
            if taking is not None:
                takings[channel_id] = taking
        span = next(iter(takings.values())).params["span"] if takings else 0.0
        yield takings, {"channels": list(takings), "e": endpoint, "span": span, "tol": TOLERANCE}


def prefetch(conn: Any, database: Database, channel_id: str, endpoint: str, *, rate: float | None = None,
             batch: int | None = None) -> None:
    """Make sure this process holds a fresh slot for ``endpoint`` of the channel, leasing a batch
    in the caller's open write transaction ``conn`` if it does not (one statement of its own;
    :func:`lease_in_statement` says when, and how the slots behave).

    A caller about to commit a write and then call LINE (a push) saves the lease its own
    transaction: :func:`acquire` then finds the slot locally."""
    with lease_in_statement(database, channel_id, endpoint, rate=rate, batch=batch) as taking:
        if taking is not None:
            taking.first_slot = _take(conn, not database.is_sqlite, channel_id, endpoint, taking.params["span"])
