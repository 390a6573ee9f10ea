"""Driver statements write and read exactly what SQLAlchemy's own execution does."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import bindparam, delete, insert, select, update

from openmaac.db.base import utcnow
from openmaac.db.driver import DriverStatement
from openmaac.jobs.models import Job

_J = Job.__table__
_INSERT = DriverStatement(insert(_J).returning(_J.c.id))
_READ = DriverStatement(select(_J.c.id, _J.c.payload, _J.c.run_at, _J.c.last_error)
                        .where(_J.c.unique_key == bindparam("key")).limit(1))
# one parameter bound twice (converted once)
_RESCHEDULE = DriverStatement(update(_J).where(_J.c.unique_key == bindparam("key"), _J.c.status == "ready")
                              .values(run_at=bindparam("at", type_=_J.c.run_at.type),
                                      locked_until=bindparam("at", type_=_J.c.locked_until.type)))
_DROP = DriverStatement(delete(_J).where(_J.c.unique_key == bindparam("key")))


def _row(key: str, payload: Any) -> dict[str, Any]:
    # due tomorrow: the session server's embedded worker claims any due job, and would fail
    # these (no handler) between the test's statements
    return {"kind": "test.driver", "payload": payload, "run_at": utcnow() + timedelta(days=1), "priority": 0,
            "max_attempts": 1,
            "unique_key": key, "status": "ready", "attempts": 0, "created_at": utcnow(), "last_error": None}


@pytest.mark.parametrize("payload", [{"big": 2**70, "text": "王小明 🎉", "nested": [None, True, 1.5]}, None, [1, "a"]])
def test_a_driver_insert_reads_back_as_sqlalchemy_writes_it(database: Any, payload: Any) -> None:
    mine, theirs = f"driver:{time.time_ns()}:a", f"driver:{time.time_ns()}:b"
    row = _row(mine, payload)
    with database.write() as session:
        conn = session.connection()
        new_id = _INSERT.execute(conn, row).scalar_one()
        other_id = conn.execute(insert(_J).returning(_J.c.id), {**row, "unique_key": theirs}).scalar_one()
    assert isinstance(new_id, int) and new_id != other_id
    with database.lookup() as conn:
        by_driver = _READ.execute(conn, {"key": mine}).one()
        by_sqlalchemy = conn.execute(_READ.statement, {"key": theirs}).one()
    assert by_driver[1:] == tuple(by_sqlalchemy)[1:]
    assert by_driver[1] == payload
    assert by_driver[2] == row["run_at"] and by_driver[2].tzinfo is not None  # aware UTC, as written
    with database.write() as session:
        assert _DROP.execute(session.connection(), {"key": mine}).rowcount == 1
        session.execute(_DROP.statement, {"key": theirs})


def test_updates_count_rows_and_run_inside_the_callers_transaction(database: Any) -> None:
    key = f"driver:{time.time_ns()}"
    with database.write() as session:
        _INSERT.execute(session.connection(), _row(key, {"n": 1}))
    later = utcnow() + timedelta(hours=1)
    with pytest.raises(RuntimeError), database.write() as session:
        assert _RESCHEDULE.execute(session.connection(), {"key": key, "at": later}).rowcount == 1
        raise RuntimeError("roll back")
    with database.lookup() as conn:  # the rolled-back transaction took the driver's update with it
        assert _READ.execute(conn, {"key": key}).one()[2] != later
    with database.write() as session:
        assert _RESCHEDULE.execute(session.connection(), {"key": key, "at": later}).rowcount == 1
        assert _RESCHEDULE.execute(session.connection(), {"key": "nothing", "at": later}).rowcount == 0
    with database.lookup() as conn:
        assert _READ.execute(conn, {"key": key}).one()[2] == later
        assert _READ.execute(conn, {"key": "nothing"}).first() is None
    with database.write() as session:
        _DROP.execute(session.connection(), {"key": key})


def test_statements_that_need_rendering_per_execution_are_refused(database: Any) -> None:
    expanding = DriverStatement(select(_J.c.id).where(_J.c.id.in_(bindparam("ids", expanding=True))))
    with database.lookup() as conn, pytest.raises(ValueError, match="per-execution rendering"):
        expanding.execute(conn, {"ids": [1, 2]})


def test_an_insert_missing_a_python_side_default_is_refused_rather_than_written_null(database: Any) -> None:
    row = _row(f"driver:{time.time_ns()}", {})
    del row["created_at"]  # SQLAlchemy would call utcnow(); the driver statement cannot
    with pytest.raises(ValueError, match="created_at"), database.write() as session:
        _INSERT.execute(session.connection(), row)


def test_a_driver_error_is_raised_as_sqlalchemy_raises_it_and_rolls_back(database: Any) -> None:
    """Callers catch SQLAlchemy's wrappers (an SMS+ push answers 503 on ``DBAPIError``)."""
    from sqlalchemy.exc import IntegrityError

    key = f"driver:{time.time_ns()}"
    with pytest.raises(IntegrityError), database.write() as session:
        _INSERT.execute(session.connection(), _row(key, {"first": True}))
        _INSERT.execute(session.connection(), _row(key, {"again": True}))  # the unique key, twice
    with database.lookup() as conn:
        assert _READ.execute(conn, {"key": key}).first() is None


def test_a_locked_sqlite_database_refuses_a_write_as_sqlalchemy_operational_error(database: Any,
                                                                                   monkeypatch: Any) -> None:
    """BEGIN IMMEDIATE runs on the driver too: a write lock held elsewhere past the busy
    timeout is SQLAlchemy's OperationalError, as before."""
    import sqlite3

    from sqlalchemy.exc import OperationalError

    from openmaac.db import engine as engine_module
    from openmaac.db.engine import Database

    if not database.is_sqlite:
        pytest.skip("SQLite's single writer")
    monkeypatch.setattr(engine_module, "SQLITE_BUSY_TIMEOUT_MS", 100)
    own = Database(database.url)
    holder = sqlite3.connect(database.url.split("///", 1)[-1], isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")
        with pytest.raises(OperationalError, match="locked"), own.write() as session:
            session.connection()
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        own.dispose()


def test_execute_many_runs_each_parameter_set_in_the_callers_transaction(database: Any) -> None:
    keys = [f"driver:{time.time_ns()}:{n}" for n in range(3)]
    with database.write() as session:
        for key in keys:
            _INSERT.execute(session.connection(), _row(key, {"n": key}))
    later = utcnow() + timedelta(hours=2)
    with pytest.raises(RuntimeError), database.write() as session:
        assert _RESCHEDULE.execute_many(session.connection(), [{"key": key, "at": later} for key in keys]) == 3
        raise RuntimeError("roll back")
    with database.lookup() as conn:
        assert all(_READ.execute(conn, {"key": key}).one()[2] != later for key in keys)
    with database.write() as session:
        params = [{"key": key, "at": later} for key in keys[:2]] + [{"key": "nothing", "at": later}]
        assert _RESCHEDULE.execute_many(session.connection(), params) == 2
        assert _RESCHEDULE.execute_many(session.connection(), []) == 0
    with database.lookup() as conn:
        assert [_READ.execute(conn, {"key": key}).one()[2] == later for key in keys] == [True, True, False]
    with database.write() as session:
        _DROP.execute_many(session.connection(), [{"key": key} for key in keys])
    with database.lookup() as conn:
        assert all(_READ.execute(conn, {"key": key}).first() is None for key in keys)


def test_execute_each_answers_the_rows_each_parameter_set_changed_in_order(database: Any) -> None:
    """One call (one round trip on PostgreSQL) for several sets: an INSERT that skips what is
    already there answers 1 for each row written and 0 for each skipped, a repeat within the
    call included, and runs in the caller's transaction."""
    from openmaac.db.base import insert_ignoring_conflicts_in

    store = {postgres: DriverStatement(insert_ignoring_conflicts_in(postgres, _J, ["unique_key"]))
             for postgres in (False, True)}
    stamp = time.time_ns()
    old, first, second = f"driver:{stamp}:old", f"driver:{stamp}:first", f"driver:{stamp}:second"
    with database.write() as session:
        _INSERT.execute(session.connection(), _row(old, None))
    with pytest.raises(RuntimeError), database.write() as session:
        conn = session.connection()
        rows = [_row(key, {"key": key}) for key in (first, old, first, second)]
        assert store[conn.dialect.name == "postgresql"].execute_each(conn, rows) == [1, 0, 0, 1]
        raise RuntimeError("roll back")
    with database.write() as session:
        conn = session.connection()
        statement = store[conn.dialect.name == "postgresql"]
        assert _READ.execute(conn, {"key": first}).first() is None  # rolled back with the transaction
        assert statement.execute_each(conn, [_row(second, None)]) == [1]
        assert statement.execute_each(conn, []) == []
        _DROP.execute_many(conn, [{"key": key} for key in (old, second)])
