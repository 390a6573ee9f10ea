"""Transaction-scoped locks for check-then-insert rules (e.g. "at most 1,000 events").

SQLite needs none: every write transaction is ``BEGIN IMMEDIATE`` and so already exclusive.
PostgreSQL takes an advisory lock held until the transaction ends.
"""

from __future__ import annotations

import zlib

from sqlalchemy import text
from sqlalchemy.orm import Session


def lock_for_update(session: Session, name: str, key: int) -> None:
    if session.get_bind().dialect.name != "postgresql":
        return
    session.execute(
        text("SELECT pg_advisory_xact_lock(:a, :b)"),
        {"a": zlib.crc32(name.encode()) & 0x7FFFFFFF, "b": key & 0x7FFFFFFF},
    )
