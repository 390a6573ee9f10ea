"""Declarative base and the column types every domain shares."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import DeclarativeBase
from sqlalchemy.types import TypeDecorator

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

# SQLite only makes INTEGER PRIMARY KEY an alias of the rowid; BIGINT keys elsewhere.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def insert_ignoring_conflicts(session: Any, table: Any, index_elements: list[str]) -> Any:
    """``INSERT … ON CONFLICT (index_elements) DO NOTHING`` in the session's dialect: the way to
    create a row that a concurrent transaction may be creating too (its ``rowcount`` tells
    whether this one did)."""
    return insert_ignoring_conflicts_in(session.get_bind().dialect.name == "postgresql", table, index_elements)


def insert_ignoring_conflicts_in(postgres: bool, table: Any, index_elements: list[str]) -> Any:
    """:func:`insert_ignoring_conflicts` for a dialect named in advance (to prebuild it once)."""
    dialect = postgresql if postgres else sqlite
    return dialect.insert(table).on_conflict_do_nothing(index_elements=index_elements)


def utcnow() -> datetime:
    return datetime.now(UTC)


def _as_utc(value: datetime) -> datetime:
    """An aware datetime in UTC; a naive one is refused (its zone would be a guess)."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to UTCDateTime")
    return value.astimezone(UTC)


def _sqlite_utc_text(value: datetime | None) -> str | None:
    """A UTC datetime bound for SQLite: exactly the text of ``sqlite.DATETIME``'s storage format."""
    if value is None:
        return None
    if value.tzinfo is not UTC:
        value = _as_utc(value)
    return value.replace(tzinfo=None).isoformat(" ", "microseconds")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, on every backend.

    PostgreSQL stores ``timestamptz``; SQLite stores naive UTC text that sorts correctly.
    """

    impl = DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Any) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.TIMESTAMP(timezone=True))
        return dialect.type_descriptor(sqlite.DATETIME())

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        value = _as_utc(value)
        return value if dialect.name == "postgresql" else value.replace(tzinfo=None)

    def bind_processor(self, dialect: Any) -> Any:
        # SQLite: the naive UTC text SQLAlchemy's DATETIME writes ("YYYY-MM-DD HH:MM:SS.ffffff"),
        # made by ``isoformat`` in one step instead of this type's conversion and then
        # SQLAlchemy's formatting from a dict of the value's fields (1.4 µs a value instead of
        # 2.4; a hot path binds a dozen per request: docs/benchmarks.md, 2026-12-05)
        if dialect.name == "sqlite":
            return _sqlite_utc_text
        return super().bind_processor(dialect)

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)


JSONType = JSON().with_variant(postgresql.JSONB(), "postgresql")


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    # Every model maps one table: say so, so Model.__table__.insert() type-checks.
    __table__: ClassVar[Table]  # type: ignore[misc]
