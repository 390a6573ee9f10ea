"""Enqueue and claim durable jobs.

``enqueue`` takes the caller's session so the job commits (or not) together with the data
it serves. Claiming is one ``UPDATE ... RETURNING``; on PostgreSQL the candidate rows are
chosen with ``FOR UPDATE SKIP LOCKED`` so any number of workers on any number of machines
never claim the same job; on SQLite the single writer lock gives the same guarantee.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, and_, bindparam, case, delete, or_, select, update
from sqlalchemy.orm import Session

from openmaac.db.base import UTCDateTime, insert_ignoring_conflicts, utcnow
from openmaac.db.driver import DriverStatement
from openmaac.jobs.models import Job


def _insert_ignoring_duplicates(session: Session) -> Any:
    return insert_ignoring_conflicts(session, Job, ["unique_key"])


def enqueue(
    session: Session,
    kind: str,
    payload: dict[str, Any] | None = None,
    *,
    organization_id: int | None = None,
    run_at: datetime | None = None,
    priority: int = 100,
    max_attempts: int = 10,
    unique_key: str | None = None,
) -> None:
    """Add a job in the caller's transaction.

    With ``unique_key``, a job already waiting under that key wins and nothing is added
    (an ``INSERT ... ON CONFLICT DO NOTHING``, so racing processes cannot both add one).
    """
    values = {
        "kind": kind,
        "payload": payload or {},
        "organization_id": organization_id,
        "run_at": run_at or utcnow(),
        "priority": priority,
        "max_attempts": max_attempts,
        "unique_key": unique_key,
        "status": "ready",
        "attempts": 0,
        "created_at": utcnow(),
    }
    statement = _insert_ignoring_duplicates(session) if unique_key is not None else _jobs_table().insert()
    session.execute(statement.values(**values))
    session.info["jobs_enqueued"] = True


def _jobs_table() -> Table:
    return cast(Table, Job.__table__)


# The worker looks for due jobs at least this often without being woken (seconds).
IDLE_POLL_SECONDS = 0.5

# RETURNING makes SQLAlchemy send the rows as ONE multi-row INSERT ("insertmanyvalues")
# rather than an executemany (on PostgreSQL a pipelined statement per row)
_INSERT_MANY = Job.__table__.insert().returning(Job.__table__.c.id)


def enqueue_many(session: Session, rows: list[dict[str, Any]]) -> None:
    """Bulk enqueue, in one multi-row INSERT: each row has kind, payload and optionally
    organization_id, run_at, priority, max_attempts and a NEW unique_key (no conflict is
    handled). The embedded worker is woken at commit only when a job is due before it would
    look anyway (it looks at least every ``IDLE_POLL_SECONDS``): a wake-up costs it a claiming
    transaction, and jobs due minutes later (an SMS+ push's safety net and fallback timer)
    need none."""
    if not rows:
        return
    now = utcnow()
    values = [{
        "kind": row["kind"],
        "payload": row.get("payload") or {},
        "organization_id": row.get("organization_id"),
        "run_at": row.get("run_at") or now,
        "priority": row.get("priority", 100),
        "max_attempts": row.get("max_attempts", 10),
        "unique_key": row.get("unique_key"),
        "status": "ready",
        "attempts": 0,
        "created_at": now,
    } for row in rows]
    if any(value["run_at"] <= now + timedelta(seconds=IDLE_POLL_SECONDS) for value in values):
        session.info["jobs_enqueued"] = True
    session.connection().execute(_INSERT_MANY, values)


@dataclass(frozen=True)
class ClaimedJob:
    id: int
    kind: str
    payload: dict[str, Any]
    organization_id: int | None
    attempts: int
    max_attempts: int


def _claim_statement(postgres: bool, kinds: tuple[str, ...] = ()) -> Any:
    """The claim; each kind of ``kinds`` gets its lease from the parameter ``until_<i>`` (a
    lease of its own, see ``claim``), every other kind ``until``."""
    job = _jobs_table().c
    now = bindparam("now", type_=UTCDateTime())
    candidates = (select(job.id).where(or_(and_(job.status == "ready", job.run_at <= now),
                                           and_(job.status == "running", job.locked_until < now)))
                  .order_by(job.priority, job.run_at, job.id).limit(bindparam("lim")))
    until: Any = bindparam("until", type_=UTCDateTime())
    if kinds:
        until = case(*[(job.kind == kind, bindparam(f"until_{i}", type_=UTCDateTime()))
                       for i, kind in enumerate(kinds)], else_=until)
    if postgres:
        # The ids picked (and locked) once, in a MATERIALIZED CTE, then updated. Written as
        # ``WHERE id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` the planner may run the
        # subquery more than once (a nested loop rescans it, skipping the rows its own first run
        # locked), and the UPDATE then claims more than n jobs: more than the worker has free
        # slots for.
        picked = candidates.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
        claimed: Any = update(_jobs_table()).where(job.id == picked.c.id)
    else:
        claimed = update(_jobs_table()).where(job.id.in_(candidates.scalar_subquery()))
    return (claimed
            .values(status="running", locked_by=bindparam("worker"), locked_until=until,
                    attempts=job.attempts + 1)
            .returning(job.id, job.kind, job.payload, job.organization_id, job.attempts, job.max_attempts))


# Built once with bound parameters (the worker runs them for every job: building the
# expressions each time cost more than running them), per dialect and set of kinds with a
# lease of their own (fixed once the domains are loaded).
# Run on the driver's cursor (db/driver.py).
_CLAIM: dict[tuple[bool, tuple[str, ...]], DriverStatement] = {}
_RENEW = (update(_jobs_table()).where(_jobs_table().c.id.in_(bindparam("ids", expanding=True)),
                                      _jobs_table().c.status == "running",
                                      _jobs_table().c.locked_by == bindparam("worker"))
          .values(locked_until=bindparam("until", type_=UTCDateTime())))
_COMPLETE = delete(_jobs_table()).where(_jobs_table().c.id == bindparam("job"),
                                        _jobs_table().c.locked_by == bindparam("worker"))

# run on the driver's cursor (db/driver.py): a job's end, as frequent as its claim
_COMPLETE_DRIVER = DriverStatement(_COMPLETE)


def claim(session: Session | Connection, worker_id: str, limit: int, lease_seconds: float,
          leases: Mapping[str, float] | None = None) -> list[ClaimedJob]:
    """Claim up to ``limit`` due jobs for ``worker_id``, leased for ``lease_seconds``, or for
    ``leases[kind]`` seconds for a kind listed there: one statement (in the session's write
    transaction, or, given a PostgreSQL connection in autocommit, a transaction by itself)."""
    now = utcnow()
    conn = session.connection() if isinstance(session, Session) else session
    kinds = tuple(sorted(leases)) if leases else ()
    key = (conn.dialect.name == "postgresql", kinds)
    statement = _CLAIM.get(key)
    if statement is None:
        statement = _CLAIM[key] = DriverStatement(_claim_statement(*key))
    params: dict[str, Any] = {"now": now, "lim": limit, "worker": worker_id,
                              "until": now + timedelta(seconds=lease_seconds)}
    for i, kind in enumerate(kinds):
        params[f"until_{i}"] = now + timedelta(seconds=leases[kind])  # type: ignore[index]
    rows = statement.execute(conn, params).rows
    return sorted((ClaimedJob(*row) for row in rows), key=lambda job: job.id)


def _set_leases(session: Session, statement: Any, leases: dict[int, float], **params: Any) -> None:
    """Run ``statement`` once per lease length for the jobs given that length (seconds from now)."""
    now = utcnow()
    by_lease: dict[float, list[int]] = {}
    for job_id, seconds in leases.items():
        by_lease.setdefault(seconds, []).append(job_id)
    conn = session.connection()
    for seconds, ids in by_lease.items():
        conn.execute(statement, {"ids": ids, "until": now + timedelta(seconds=seconds), **params})


def renew_leases(session: Session, worker_id: str, leases: dict[int, float]) -> None:
    """Extend the leases of jobs ``worker_id`` still holds to ``leases[job_id]`` seconds from now
    (a job another worker took over after its lease passed is left alone)."""
    _set_leases(session, _RENEW, leases, worker=worker_id)


def complete(session: Session, job_id: int, worker_id: str) -> None:
    _COMPLETE_DRIVER.execute(session.connection(), {"job": job_id, "worker": worker_id})


def reschedule(session: Session, job_id: int, worker_id: str, delay: float, error: str | None,
               count_attempt: bool = True) -> None:
    values: dict[str, Any] = {
        "status": "ready",
        "run_at": utcnow() + timedelta(seconds=delay),
        "locked_by": None,
        "locked_until": None,
        "last_error": error,
    }
    if not count_attempt:
        values["attempts"] = Job.attempts - 1
    session.execute(update(Job).where(Job.id == job_id, Job.locked_by == worker_id).values(**values))


def fail(session: Session, job_id: int, worker_id: str, error: str) -> bool:
    """Mark the job failed for good. False when ``worker_id`` no longer holds it (another
    worker took it over after its lease passed): that worker decides its outcome."""
    result = session.execute(
        update(Job)
        .where(Job.id == job_id, Job.locked_by == worker_id)
        .values(status="failed", locked_by=None, locked_until=None, last_error=error)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


def next_run_at(session: Session) -> datetime | None:
    """When the earliest ready job is due (lets an idle worker sleep exactly that long)."""
    return session.scalar(select(Job.run_at).where(Job.status == "ready").order_by(Job.run_at).limit(1))


def release(session: Session, worker_id: str, job_ids: list[int] | None = None) -> list[int]:
    """Hand back the jobs ``worker_id`` still runs (it is stopping and cannot wait for them), or
    only ``job_ids`` of them (claimed but not to be run): ready again at once, their lease
    cleared and the attempt not counted, so another worker claims them right away as if this
    run never happened (handlers are idempotent). Answers the ids handed back."""
    mine = [Job.locked_by == worker_id, Job.status == "running"]
    if job_ids is not None:
        mine.append(Job.id.in_(job_ids))
    rows = session.execute(
        update(Job)
        .where(*mine)
        .values(status="ready", locked_by=None, locked_until=None, attempts=Job.attempts - 1)
        .returning(Job.id)
    ).scalars().all()
    return sorted(rows)
