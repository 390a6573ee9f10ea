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

Never call :func:`acquire` inside an open write transaction (it opens its own short one).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import text

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


def acquire(database: Database, channel_id: str, endpoint: str, cost: int = 1, *,
            rate: float | None = None, batch: int | None = None,
            sleep: Callable[[float], None] = time.sleep) -> float:
    """Block until ``cost`` requests to ``endpoint`` of the channel fit under its rate.

    Returns the slot time (epoch seconds, this machine's clock) the caller was given.
    ``rate`` overrides LINE's published rate (requests/second) and ``batch`` the lease size.
    """
    if cost < 1:
        raise ValueError("cost must be at least 1")
    rate = float(rate or rate_of(endpoint))
    interval = 1.0 / rate
    if batch is None:
        batch = max(1, int(rate * LEASE_SECONDS))
    key = (id(database), channel_id, endpoint)
    with _registry_lock:
        lock = _locks.setdefault(key, threading.Lock())
        lease = _leases.setdefault(key, _Lease())
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


def _lease(database: Database, channel_id: str, endpoint: str, count: int, interval: float) -> float:
    """Take ``count`` consecutive slots from the shared row; the local time of the first."""
    span = count * interval
    postgres = not database.is_sqlite
    with database.write() as session:
        params: dict[str, Any] = {"c": channel_id, "e": endpoint, "span": span, "tol": TOLERANCE}
        if postgres:
            session.execute(text(
                "INSERT INTO line_rate_buckets (channel_id, endpoint, next_free) VALUES (:c, :e, 0) "
                "ON CONFLICT DO NOTHING"), params)
            row = session.execute(text(
                "UPDATE line_rate_buckets SET next_free = GREATEST(next_free, "
                "EXTRACT(EPOCH FROM clock_timestamp())::float8 - :tol) + :span "
                "WHERE channel_id = :c AND endpoint = :e "
                "RETURNING next_free, EXTRACT(EPOCH FROM clock_timestamp())::float8"), params).one()
            local_now = time.time()
        else:
            local_now = params["now"] = time.time()
            session.execute(text(
                "INSERT INTO line_rate_buckets (channel_id, endpoint, next_free) VALUES (:c, :e, 0) "
                "ON CONFLICT DO NOTHING"), params)
            row = session.execute(text(
                "UPDATE line_rate_buckets SET next_free = MAX(next_free, :now - :tol) + :span "
                "WHERE channel_id = :c AND endpoint = :e RETURNING next_free, :now"), params).one()
    next_free, db_now = float(row[0]), float(row[1])
    start = next_free - span  # in the database's clock
    return start - db_now + local_now
