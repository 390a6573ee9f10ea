"""The database layer: JSON columns written by orjson, lookups, and PostgreSQL's idle-connection ping."""

from __future__ import annotations

import time
from typing import Any

import pytest
from sqlalchemy import text

from openmaac.db import engine as engine_module
from openmaac.db.base import utcnow
from openmaac.db.engine import Database


def test_json_columns_keep_what_orjson_cannot_write_and_read_back_exactly(database: Any) -> None:
    """Written by orjson (fast), an integer beyond 64 bits falls back to ``json`` and comes
    back as the same integer; text outside ASCII and nesting survive."""
    from openmaac.jobs.models import Job

    table = Job.__table__
    payloads = [{"big": 2**70, "list": [1, 2, 3]}, {"name": "王小明 🎉", "nested": {"a": [None, True, 1.5]}}]
    own = Database(database.url)
    try:
        ids = []
        with own.write() as session:
            for index, payload in enumerate(payloads):
                ids.append(session.execute(table.insert().returning(table.c.id), {
                    "kind": "test.json", "payload": payload, "run_at": utcnow(), "priority": 0,
                    "max_attempts": 1, "unique_key": f"test.json:{time.time_ns()}:{index}", "status": "done",
                    "attempts": 0, "created_at": utcnow()}).scalar_one())
        with own.read() as session:
            back = [session.execute(table.select().where(table.c.id == i)).one().payload for i in ids]
        assert back == payloads
    finally:
        own.dispose()


def test_lookup_reads_committed_rows(database: Any) -> None:
    with database.lookup() as conn:
        assert conn.execute(text("SELECT 1")).scalar() == 1


def test_a_postgresql_connection_closed_while_idle_is_replaced_before_use(database: Any,
                                                                         monkeypatch: Any) -> None:
    """Connections are no longer pinged on every checkout; one idle past IDLE_PING_SECONDS is,
    so a connection the server closed meanwhile (restart, idle timeout) never fails a request."""
    if database.is_sqlite:
        pytest.skip("PostgreSQL only: SQLite has no server to close connections")
    monkeypatch.setattr(engine_module, "IDLE_PING_SECONDS", 0.2)
    own = Database(database.url)
    try:
        with own.read() as session:
            pid = session.execute(text("SELECT pg_backend_pid()")).scalar()
        with database.write() as session:  # another pool kills the idle connection
            session.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        time.sleep(0.5)
        with own.read() as session:
            assert session.execute(text("SELECT pg_backend_pid()")).scalar() != pid
    finally:
        own.dispose()
