"""``/healthz`` (the process answers) and ``/readyz`` (it can do its work: the database answers,
its schema is this version's, and some worker runs jobs), and ``serve``: uvicorn whose SIGTERM
also stops the embedded worker claiming jobs at once. See docs/health.md.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

from fastapi import APIRouter
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.pool import NullPool

from openmaac import __version__
from openmaac.config import Settings
from openmaac.web.responses import OrjsonResponse

log = logging.getLogger("openmaac.health")

# /readyz answers within about this long whatever the database does.
CHECK_TIMEOUT_SECONDS = 2.0
# Checks still waiting on a database that does not answer: beyond this many, /readyz fails at
# once instead of starting another thread that would wait too.
MAX_WAITING_CHECKS = 4

_waiting = threading.BoundedSemaphore(MAX_WAITING_CHECKS)


@lru_cache(maxsize=8)
def _probe_engine(url: str) -> Engine:
    """An engine for the checks alone, apart from the pools requests use.

    SQLite: a new read-only connection per check, opened by path. A pooled connection keeps the
    file it opened, even removed or replaced, and would go on answering; a read-only open never
    creates a missing file. PostgreSQL: one pooled connection, tested before use, a new one
    connecting within the timeout."""
    if url.startswith("sqlite"):
        uri = Path(url.split("///", 1)[-1]).resolve().as_uri() + "?mode=ro"

        def connect() -> sqlite3.Connection:
            return sqlite3.connect(uri, uri=True, timeout=CHECK_TIMEOUT_SECONDS, check_same_thread=False)

        return create_engine("sqlite://", creator=connect, poolclass=NullPool)
    return create_engine(url, pool_size=1, max_overflow=1, pool_timeout=CHECK_TIMEOUT_SECONDS,
                         pool_pre_ping=True, connect_args={"connect_timeout": int(CHECK_TIMEOUT_SECONDS)})


@lru_cache(maxsize=8)
def _shipped_heads(url: str) -> frozenset[str]:
    """The newest migration revision(s) of this package."""
    from alembic.script import ScriptDirectory

    from openmaac.migrations import alembic_config

    return frozenset(ScriptDirectory.from_config(alembic_config(url)).get_heads())


def _ok(**extra: Any) -> dict[str, Any]:
    return {"status": "ok", **extra}


def _failing(detail: str, **extra: Any) -> dict[str, Any]:
    return {"status": "failing", "detail": detail, **extra}


def _database_checks(url: str, require_worker: bool) -> dict[str, dict[str, Any]]:
    """All checks on one connection: reachable, schema current, a worker's fresh heartbeat."""
    from openmaac.jobs.heartbeat import STALE_AFTER_SECONDS, fresh_workers

    checks: dict[str, dict[str, Any]] = {}
    with _probe_engine(url).connect() as connection:
        # SQLite answers SELECT 1 without reading the file: read its header instead
        connection.execute(text("PRAGMA schema_version" if connection.dialect.name == "sqlite" else "SELECT 1"))
        checks["database"] = _ok()
        heads = _shipped_heads(url)
        try:
            revisions = frozenset(connection.execute(text("SELECT version_num FROM alembic_version")).scalars())
        except DBAPIError as exc:  # no such table: never migrated
            if exc.connection_invalidated:  # the database went away meanwhile
                raise
            connection.rollback()  # PostgreSQL refuses the next query in a failed transaction
            revisions = frozenset()
        if revisions == heads:
            checks["migrations"] = _ok(revision=",".join(sorted(heads)))
        else:
            checks["migrations"] = _failing(
                f"the database is at revision {','.join(sorted(revisions)) or 'none'}, this version needs "
                f"{','.join(sorted(heads))} (run `openmaac migrate`)",
                revision=",".join(sorted(revisions)) or None, expected=",".join(sorted(heads)))
        if not require_worker:
            checks["workers"] = {"status": "skipped", "detail": "OPENMAAC_READYZ_REQUIRE_WORKER=0"}
        else:
            try:
                fresh = fresh_workers(connection)
            except Exception:
                log.debug("readyz: could not read worker heartbeats", exc_info=True)
                checks["workers"] = _failing("worker heartbeats could not be read")
            else:
                checks["workers"] = _ok(fresh=fresh) if fresh else _failing(
                    f"no worker has sent a heartbeat in the last {STALE_AFTER_SECONDS:g} s: nothing runs jobs "
                    "(start `openmaac worker`, or serve without --no-worker)", fresh=0)
    return checks


def _within(seconds: float, call: Callable[[], dict[str, dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """``call()`` on a daemon thread, given up after ``seconds`` (a database that does not answer
    must not hold the probe, nor the process at exit)."""
    if not _waiting.acquire(blocking=False):
        raise TimeoutError("earlier checks are still waiting for the database")
    outcome: dict[str, Any] = {}

    def run() -> None:
        try:
            outcome["checks"] = call()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            _waiting.release()

    thread = threading.Thread(target=run, name="openmaac-readyz", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if "error" in outcome:
        raise outcome["error"]
    checks: dict[str, dict[str, Any]] = outcome["checks"]
    return checks


_last_failing: set[str] = set()


def readiness(settings: Settings) -> tuple[bool, dict[str, dict[str, Any]]]:
    try:
        checks = _within(CHECK_TIMEOUT_SECONDS,
                         lambda: _database_checks(settings.database_url, settings.readyz_require_worker))
    except Exception as exc:
        detail = str(exc) if isinstance(exc, TimeoutError) else f"unreachable ({type(exc).__name__})"
        if "database" not in _last_failing:
            log.warning("readyz: the database is unreachable: %s", exc)
        unknown = {"status": "unknown", "detail": "the database is unreachable"}
        checks = {"database": _failing(detail), "migrations": dict(unknown),
                  "workers": dict(unknown) if settings.readyz_require_worker
                  else {"status": "skipped", "detail": "OPENMAAC_READYZ_REQUIRE_WORKER=0"}}
    failing = {name for name, check in checks.items() if check["status"] == "failing"}
    for name in failing - _last_failing:
        if name != "database":
            log.warning("readyz: %s check failing: %s", name, checks[name]["detail"])
    _last_failing.clear()
    _last_failing.update(failing)
    return not failing, checks


def health_router(settings: Settings) -> APIRouter:
    router = APIRouter()

    @router.get("/healthz", include_in_schema=False)
    def healthz() -> Any:
        """The process answers HTTP (a liveness probe: it checks nothing else)."""
        return {"status": "ok", "version": __version__}

    @router.get("/readyz", include_in_schema=False)
    def readyz() -> Any:
        ready, checks = readiness(settings)
        if ready:
            return {"status": "ready", "checks": checks}
        failing = sorted(name for name, check in checks.items() if check["status"] == "failing")
        return OrjsonResponse({"status": "not_ready", "failing": failing, "checks": checks}, status_code=503)

    return router


def serve(sockets: list[Any], app: Any, **uvicorn_options: Any) -> None:
    """``uvicorn.run(app, ...)``, except that SIGTERM (or SIGINT) also stops the app's embedded
    worker claiming jobs at once. uvicorn then stops accepting connections, finishes the requests
    under way (``timeout_graceful_shutdown``) and runs the lifespan's shutdown, which drains the
    worker (jobs/worker.py) within ``OPENMAAC_DRAIN_SECONDS`` of the signal."""
    import sys

    import uvicorn

    class DrainingServer(uvicorn.Server):
        def handle_exit(self, sig: int, frame: Any) -> None:
            super().handle_exit(sig, frame)
            worker = getattr(app.state, "worker", None)
            if worker is not None:
                worker.stop_claiming()

    server = DrainingServer(uvicorn.Config(app, **uvicorn_options))
    from openmaac.common.collector import settle_after_start

    settle_after_start()
    server.run(sockets=sockets)  # bound by the caller, so a busy port fails before any banner
    if not server.started:
        sys.exit(1)
