"""Prebuilt statements run on the database driver's own cursor, for the hottest paths.

SQLAlchemy's ``Connection.execute`` costs 20–80 µs of Python per statement on top of the
database's own work (building the execution context, constructing the parameters from the
compiled statement's binds, wrapping the cursor in a ``Result``, row processors). A push makes
about ten statements, so on SQLite that machinery is a large share of its CPU. A
:class:`DriverStatement` compiles a Core statement once per dialect (and per set of
parameter names) into the driver's SQL string, the order of its parameters and the type
conversions of its binds and result columns, and then executes it straight on the cursor of
the SQLAlchemy connection it is given: inside that connection's transaction, with the same
SQL and the same conversions (JSON, UTC datetimes) SQLAlchemy would apply.

Only plain statements qualify: no expanding ``IN`` parameters and no literal-rendered
parameters (the statement must compile to one SQL string), and an INSERT or UPDATE must be
given every column that has a Python-side default (SQLAlchemy computes those per
execution); :class:`DriverStatement` refuses others when compiled. Everything else keeps
using ``Connection.execute``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from sqlalchemy import exc
from sqlalchemy.engine import Connection, Dialect
from sqlalchemy.sql import ClauseElement

_T = TypeVar("_T")


def run_on_driver(conn: Connection, sql: str, arguments: Sequence[Any] | dict[str, Any], *,
                  many: bool = False) -> tuple[list[tuple[Any, ...]], int]:
    """Execute ``sql`` on ``conn``'s driver cursor: ``(rows, rowcount)``; ``many``: ``arguments``
    is a list of parameter sets, run as the driver's ``executemany`` (no rows; the rows changed
    by all of them). Errors as ``_on_cursor`` raises them."""
    return _on_cursor(conn, sql, arguments, _execute_many if many else _execute_one)


def rowcounts_on_driver(conn: Connection, sql: str, arguments: Sequence[Any]) -> list[int]:
    """Execute ``sql`` once per parameter set of ``arguments`` on ``conn``'s driver cursor: the
    rows each changed, in order (psycopg: one pipelined ``executemany`` reading each set's
    result; SQLite, in this process: one execute per set). Errors as ``_on_cursor`` raises them."""
    return _on_cursor(conn, sql, arguments,
                      _rowcounts_pipelined if conn.dialect.name == "postgresql" else _rowcounts_one_by_one)


def _on_cursor(conn: Connection, sql: str, arguments: Any, work: Callable[[Any, str, Any], _T]) -> _T:
    """``work(cursor, sql, arguments)`` on a cursor of ``conn``'s driver connection, closed
    afterwards. A driver error is raised as SQLAlchemy's wrapper (``OperationalError``,
    ``IntegrityError``... with the driver's as ``orig``), exactly as ``Connection.execute``
    raises it, and a lost connection is invalidated so the pool does not hand it out again."""
    dialect = conn.dialect
    driver = conn.connection.dbapi_connection
    cursor = driver.cursor()  # type: ignore[union-attr]
    try:
        return work(cursor, sql, arguments)
    except dialect.loaded_dbapi.Error as error:
        lost = dialect.is_disconnect(error, driver, cursor)
        if lost:
            conn.invalidate(error)
        raise exc.DBAPIError.instance(sql, arguments, error, dialect.loaded_dbapi.Error,
                                      connection_invalidated=lost, dialect=dialect) from error
    finally:
        try:
            cursor.close()
        except dialect.loaded_dbapi.Error:
            pass  # a cursor of a lost connection


def _execute_one(cursor: Any, sql: str, arguments: Any) -> tuple[list[tuple[Any, ...]], int]:
    cursor.execute(sql, arguments)
    rows: list[tuple[Any, ...]] = list(cursor.fetchall()) if _has_rows(cursor) else []
    return rows, cursor.rowcount


def _execute_many(cursor: Any, sql: str, arguments: Any) -> tuple[list[tuple[Any, ...]], int]:
    cursor.executemany(sql, arguments)
    return [], cursor.rowcount


def _rowcounts_pipelined(cursor: Any, sql: str, arguments: Any) -> list[int]:
    cursor.executemany(sql, arguments, returning=True)  # a result per set, read with nextset()
    counts = [cursor.rowcount]
    while cursor.nextset():
        counts.append(cursor.rowcount)
    return counts


def _rowcounts_one_by_one(cursor: Any, sql: str, arguments: Any) -> list[int]:
    counts: list[int] = []
    for one in arguments:
        cursor.execute(sql, one)
        counts.append(cursor.rowcount)
    return counts


_NO_ROWNUMBER = object()


def _has_rows(cursor: Any) -> bool:
    """Whether the statement just run produced a result to fetch. psycopg builds a ``Column``
    object per result column for every read of ``description`` (a share of a push's CPU for a
    row of forty columns); its ``rownumber`` tells the same for free. sqlite3 has none."""
    rownumber = getattr(cursor, "rownumber", _NO_ROWNUMBER)
    if rownumber is _NO_ROWNUMBER:
        return cursor.description is not None
    return rownumber is not None


@dataclass(frozen=True)
class _Compiled:
    sql: str
    positional: bool
    names: tuple[str, ...]  # the parameters, in the driver's order
    defaults: dict[str, Any]  # values bound in the statement itself (e.g. LIMIT 1)
    binds: tuple[tuple[str, Callable[[Any], Any]], ...]  # (name, conversion) of binds that convert
    results: tuple[Callable[[Any], Any] | None, ...] | None  # per result column, or None: raw


@dataclass
class DriverResult:
    """The rows (converted as SQLAlchemy would) and the driver's row count."""

    rows: list[tuple[Any, ...]]
    rowcount: int

    def first(self) -> tuple[Any, ...] | None:
        return self.rows[0] if self.rows else None

    def scalar(self) -> Any:
        return self.rows[0][0] if self.rows else None

    def scalar_one(self) -> Any:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0][0]

    def one(self) -> tuple[Any, ...]:
        if len(self.rows) != 1:
            raise LookupError(f"expected one row, got {len(self.rows)}")
        return self.rows[0]


class DriverStatement:
    """A Core statement compiled once per dialect, executed on the driver's cursor."""

    def __init__(self, statement: ClauseElement) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, frozenset[str]], _Compiled] = {}
        self._lock = threading.Lock()

    def _compile(self, dialect: Dialect, keys: frozenset[str]) -> _Compiled:
        column_keys = sorted(keys) if getattr(self.statement, "is_dml", False) else None
        compiled: Any = self.statement.compile(dialect=dialect, column_keys=column_keys)
        if compiled.literal_execute_params or compiled.post_compile_params:
            raise ValueError("DriverStatement: the statement needs per-execution rendering")
        defaulted = [column.name for column in (*compiled.insert_prefetch, *compiled.update_prefetch)]
        if defaulted:  # SQLAlchemy computes these per execution; the caller must give them
            raise ValueError(f"DriverStatement: give a value for {', '.join(defaulted)} (Python-side defaults)")
        names_by_bind = compiled.bind_names
        defaults: dict[str, Any] = {}
        binds: list[tuple[str, Callable[[Any], Any]]] = []
        converted: set[str] = set()  # a name bound twice (sent_at = updated_at = :now) converts once
        for bind, name in names_by_bind.items():
            if bind.expanding:
                raise ValueError("DriverStatement: expanding IN parameters are not supported")
            if not bind.required and name not in keys:
                defaults[name] = bind.effective_value
            processor = bind.type._cached_bind_processor(dialect)
            if processor is not None and name not in converted:
                converted.add(name)
                binds.append((name, processor))
        positional = bool(dialect.positional)
        names = tuple(compiled.positiontup) if positional else tuple(dict.fromkeys(names_by_bind.values()))
        results: tuple[Callable[[Any], Any] | None, ...] | None = None
        if compiled._result_columns:
            results = tuple(column.type._cached_result_processor(dialect, None)
                            for column in compiled._result_columns)
            if not any(results):
                results = None
        return _Compiled(compiled.string, positional, names, defaults, tuple(binds), results)

    def compiled_for(self, dialect: Dialect, params: Mapping[str, Any]) -> _Compiled:
        key = (dialect.name, frozenset(params))
        found = self._compiled.get(key)
        if found is None:
            with self._lock:
                found = self._compiled.get(key)
                if found is None:
                    found = self._compiled[key] = self._compile(dialect, key[1])
        return found

    @staticmethod
    def _arguments(compiled: _Compiled, params: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        values = {**compiled.defaults, **params} if compiled.defaults else dict(params)
        for name, convert in compiled.binds:  # None too: JSON's None is written as 'null'
            values[name] = convert(values.get(name))
        return (tuple(values[name] for name in compiled.names) if compiled.positional
                else {name: values[name] for name in compiled.names})

    def execute(self, conn: Connection, params: Mapping[str, Any]) -> DriverResult:
        """Run on ``conn``'s driver connection (in its transaction, if one is open)."""
        compiled = self.compiled_for(conn.dialect, params)
        rows, rowcount = run_on_driver(conn, compiled.sql, self._arguments(compiled, params))
        if compiled.results is not None and rows:
            processors = compiled.results
            rows = [tuple(convert(value) if convert is not None else value
                          for convert, value in zip(processors, row, strict=True)) for row in rows]
        return DriverResult(rows, rowcount)

    def execute_many(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> int:
        """Run once per parameter set (all with the same names), as the driver's ``executemany``
        (SQLite: one prepared statement; psycopg: pipelined): the rows changed in all. Rows a
        statement returns are not read."""
        if not params:
            return 0
        if len(params) == 1:  # psycopg's pipeline costs more than one plain execute
            return self.execute(conn, params[0]).rowcount
        compiled = self.compiled_for(conn.dialect, params[0])
        return run_on_driver(conn, compiled.sql, [self._arguments(compiled, each) for each in params], many=True)[1]

    def execute_each(self, conn: Connection, params: Sequence[Mapping[str, Any]]) -> list[int]:
        """Run once per parameter set (all with the same names) in one go: on PostgreSQL one
        pipelined round trip; the rows each set changed, in order (an INSERT ... ON CONFLICT DO
        NOTHING: 1 for a row written, 0 for one already there)."""
        if len(params) <= 1:
            return [self.execute(conn, one).rowcount for one in params]
        compiled = self.compiled_for(conn.dialect, params[0])
        return rowcounts_on_driver(conn, compiled.sql, [self._arguments(compiled, one) for one in params])
