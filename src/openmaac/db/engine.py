"""Engines and sessions for SQLite (embedded default) and PostgreSQL (scale-out).

SQLite allows one writer at a time. Writes go through ``Database.write()``, which takes a
process-wide lock and opens ``BEGIN IMMEDIATE`` so a transaction never has to upgrade a read
lock (the source of instant ``database is locked`` errors in WAL mode); other processes
sharing the file wait on the busy timeout. Reads use ``Database.read()`` on their own
connections and never block the writer under WAL.
"""

from __future__ import annotations

import json
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import orjson
from sqlalchemy import Connection, Engine, create_engine, event, exc
from sqlalchemy.orm import Session, sessionmaker

from openmaac.config import get_settings
from openmaac.db.driver import run_on_driver

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Page cache per connection, in KiB. Each pooled connection keeps its cache filled, so this is
# paid once per connection in the server's memory; the OS page cache holds the file anyway.
# 16 MiB measured as fast as 64 MiB for bulk imports and segment queries over 1,000,000
# contacts (docs/benchmarks.md, import_segments) at a quarter of the memory.
SQLITE_CACHE_KIB = 16_384
# A transaction PostgreSQL chose to abort to end a deadlock (40P01), or could not serialise
# (40001), did nothing: run again, it succeeds once the other transaction is through
CONFLICT_SQLSTATES = frozenset({"40P01", "40001"})
CONFLICT_ATTEMPTS = 5

R = TypeVar("R")


def json_dumps(value: Any) -> str:
    """JSON columns written by orjson (several times faster than ``json.dumps`` for a 500-id
    list); what orjson refuses (an integer beyond 64 bits) falls back to ``json``."""
    try:
        return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(value)


# reading stays ``json.loads``: orjson turns an integer beyond 64 bits into a float
JSON_OPTIONS: dict[str, Any] = {"json_serializer": json_dumps}


def _sqlite_engine(url: str, begin_statement: str, pool_size: int, temp_store: str = "MEMORY") -> Engine:
    engine = create_engine(
        url,
        connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        pool_size=pool_size,
        max_overflow=pool_size * 2,
        pool_pre_ping=False,
        **JSON_OPTIONS,
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Take transaction control away from pysqlite so BEGIN is ours.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA cache_size=-{SQLITE_CACHE_KIB}")
        cursor.execute(f"PRAGMA temp_store={temp_store}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        # straight on the driver: every transaction begins here, and SQLAlchemy's execution
        # machinery (exec_driver_sql) cost more than SQLite's own BEGIN
        run_on_driver(conn, begin_statement, ())

    return engine


# A pooled PostgreSQL connection idle longer than this is pinged before use (a server restart or
# an idle timeout may have closed it). Pinging EVERY checkout (``pool_pre_ping``) cost a round
# trip per transaction, several per API request; a connection reused within seconds is alive,
# and should one still fail mid-use SQLAlchemy invalidates the pool on the disconnect error.
IDLE_PING_SECONDS = 5.0


def postgres_pool_size() -> int:
    """Connections each process keeps open to PostgreSQL (``OPENMAAC_DB_POOL_SIZE``, default 20;
    up to as many again overflow under bursts). Below the request threads' concurrency the
    overflow connections were opened and closed per request (a connect costs ~5 ms of CPU)."""
    return max(1, int(os.environ.get("OPENMAAC_DB_POOL_SIZE", "20")))


def _postgres_engine(url: str) -> Engine:
    size = postgres_pool_size()
    engine = create_engine(url, pool_size=size, max_overflow=size, pool_pre_ping=False, **JSON_OPTIONS)

    @event.listens_for(engine, "checkin")
    def _idle_from(_dbapi_connection: Any, record: Any) -> None:
        record.info["idle_since"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _ping_if_idle(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("idle_since")
        if since is None or time.monotonic() - since < IDLE_PING_SECONDS:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except Exception as error:  # the pool retries the checkout on a fresh connection
            raise exc.DisconnectionError() from error

    return engine


class Database:
    """One per process and database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.is_sqlite = url.startswith("sqlite")
        if self.is_sqlite:
            path = url.split("///", 1)[-1]
            if path and path != ":memory:":
                from pathlib import Path

                Path(path).parent.mkdir(parents=True, exist_ok=True)
            # Writers run the bulk jobs (imports, segment builds): their big sorts and temporary
            # B-trees go to SQLite's temporary files (the OS page cache, as fast here) rather than
            # the heap, where the freed memory stayed in the process (+50 MB per 300,000-id build).
            self.write_engine = _sqlite_engine(url, "BEGIN IMMEDIATE", pool_size=2, temp_store="FILE")
            self.read_engine = _sqlite_engine(url, "BEGIN", pool_size=8)
        else:
            engine = _postgres_engine(url)
            self.write_engine = engine
            self.read_engine = engine
        # Hot-path lookups of independent rows: on PostgreSQL in autocommit (no BEGIN and
        # ROLLBACK round trips around a single SELECT); each statement sees committed data.
        self._lookup_engine = (self.read_engine if self.is_sqlite
                               else self.read_engine.execution_options(isolation_level="AUTOCOMMIT"))
        self._write_lock = threading.RLock() if self.is_sqlite else None
        self._writer = sessionmaker(self.write_engine, expire_on_commit=False)
        self._reader = sessionmaker(self.read_engine, expire_on_commit=False)
        self._after_commit_hooks: list[Any] = []

    @property
    def dialect(self) -> str:
        return self.write_engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction that commits on success and rolls back on error."""
        lock = self._write_lock
        if lock is not None:
            lock.acquire()
        try:
            with self._writer() as session, session.begin():
                yield session
                enqueued = bool(session.info.get("jobs_enqueued"))
        finally:
            if lock is not None:
                lock.release()
        if enqueued:
            for hook in list(self._after_commit_hooks):
                hook()

    def write_retrying(self, work: Callable[[Session], R], *, attempts: int = CONFLICT_ATTEMPTS) -> R:
        """``work(session)`` in one :meth:`write` transaction, run again (in a new one) when
        PostgreSQL aborted it to end a deadlock or a serialisation conflict, up to ``attempts``
        times. For the transactions that record what already happened upstream (a worker's
        record of a chunk of LINE calls or SMS sends), which must not be lost to a conflict, and
        a worker's marks before its calls, which a conflict would otherwise fail the job for:
        ``work`` must read what it changes afresh each time and have no other side effect.

        Such a conflict is not a fault: a group commit's transaction locks the messages of
        several webhook requests, each request's in id order but not all of them in one order,
        so a worker locking a chunk of the same messages can meet it the other way round."""
        for attempt in range(1, attempts + 1):
            try:
                with self.write() as session:
                    return work(session)
            except exc.DBAPIError as error:
                if attempt == attempts or getattr(error.orig, "sqlstate", None) not in CONFLICT_SQLSTATES:
                    raise
            time.sleep(random.uniform(0.0, 0.02 * attempt))  # the other transaction ends meanwhile
        raise AssertionError("unreachable")

    @contextmanager
    def read(self) -> Iterator[Session]:
        # Closing (not rolling back) ends the read transaction without expiring the loaded
        # objects, so callers may use them after the block.
        with self._reader() as session:
            yield session

    @contextmanager
    def lookup(self) -> Iterator[Connection]:
        """A Core connection for a few independent reads on a hot path (no ORM session, and on
        PostgreSQL no transaction: each statement reads what is committed at its start). Not
        for streamed results or reads that must agree with each other: use :meth:`read`. On
        PostgreSQL a hot path may also run ONE self-contained writing statement here (it commits
        alone; then call :meth:`committed_jobs` if it enqueued jobs)."""
        with self._lookup_engine.connect() as conn:
            yield conn

    def committed_jobs(self) -> None:
        """Run the ``on_commit`` hooks for jobs a caller committed outside :meth:`write` (a
        single self-committing statement, e.g. on a :meth:`lookup` connection)."""
        for hook in list(self._after_commit_hooks):
            hook()

    def on_commit(self, hook: Any) -> None:
        """Run ``hook()`` after a committed write that enqueued jobs (wakes the embedded worker)."""
        self._after_commit_hooks.append(hook)

    def dispose(self) -> None:
        self.write_engine.dispose()
        if self.read_engine is not self.write_engine:
            self.read_engine.dispose()


_databases: dict[str, Database] = {}
_lock = threading.Lock()


def get_database(url: str | None = None) -> Database:
    url = url or get_settings().database_url
    with _lock:
        database = _databases.get(url)
        if database is None:
            database = _databases[url] = Database(url)
        return database


def reset_database() -> None:
    with _lock:
        for database in _databases.values():
            database.dispose()
        _databases.clear()
