"""Worker heartbeats: each running worker renews one row of ``worker_heartbeats`` every
``BEAT_SECONDS`` and deletes it when it stops cleanly. ``/readyz`` counts the fresh rows to tell
whether anyone is running jobs; a worker that died leaves a row that goes stale, and workers
delete rows stale for ``PRUNE_AFTER`` at start and every hour.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from datetime import datetime, timedelta
from typing import Any, cast

from sqlalchemy import Connection, Table, delete, func, select
from sqlalchemy.orm import Session

from openmaac.db.base import utcnow
from openmaac.db.engine import Database
from openmaac.jobs.models import WorkerHeartbeat

log = logging.getLogger("openmaac.worker")

BEAT_SECONDS = 5.0
# A heartbeat older than this means its worker is gone (or stuck): three beats missed.
STALE_AFTER_SECONDS = 3 * BEAT_SECONDS
PRUNE_AFTER = timedelta(days=1)
PRUNE_EVERY_SECONDS = 3600.0

RUNNING = "running"
DRAINING = "draining"


def _table() -> Table:
    return cast(Table, WorkerHeartbeat.__table__)


def _upsert(session: Session) -> Any:
    from sqlalchemy.dialects import postgresql, sqlite

    dialect = postgresql if session.get_bind().dialect.name == "postgresql" else sqlite
    return dialect.insert(_table())


def beat(session: Session, *, worker_id: str, hostname: str, pid: int, kind: str, started_at: datetime,
         state: str) -> None:
    """Insert or renew ``worker_id``'s row: one statement."""
    now = utcnow()
    statement = _upsert(session).values(worker_id=worker_id, hostname=hostname, pid=pid, kind=kind,
                                        started_at=started_at, beat_at=now, state=state)
    session.execute(statement.on_conflict_do_update(index_elements=["worker_id"],
                                                    set_={"beat_at": now, "state": state}))


def remove(session: Session, worker_id: str) -> None:
    session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))


def prune(session: Session, older_than: timedelta = PRUNE_AFTER) -> int:
    """Delete the rows of workers that stopped beating ``older_than`` ago (they died)."""
    result = session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.beat_at < utcnow() - older_than))
    return int(result.rowcount)  # type: ignore[attr-defined]


def fresh_workers(session: Session | Connection, within_seconds: float = STALE_AFTER_SECONDS) -> int:
    """How many workers claiming jobs (not draining) beat within the last ``within_seconds``."""
    cutoff = utcnow() - timedelta(seconds=within_seconds)
    return int(session.scalar(select(func.count()).select_from(WorkerHeartbeat)
                              .where(WorkerHeartbeat.state == RUNNING, WorkerHeartbeat.beat_at > cutoff)) or 0)


class Heartbeat:
    """Keeps one worker's row fresh from its own thread (a daemon: it never holds the process up).

    Each beat is one short write transaction. A failed beat is logged and tried again at the
    next; ``/readyz`` turns unready only after three beats in a row were missed."""

    def __init__(self, database: Database, worker_id: str, kind: str) -> None:
        self.database = database
        self.worker_id = worker_id
        self.kind = kind
        self.hostname = socket.gethostname()
        self.pid = os.getpid()
        self.started_at = utcnow()
        self.state = RUNNING
        self._stop = threading.Event()
        self._now = threading.Event()  # beat at once (the state changed)
        self._thread: threading.Thread | None = None
        self._failing = False
        self._pruned_at: float | None = None

    def start(self) -> None:
        # The first beat before the worker claims anything: ready as soon as the worker runs.
        self._beat()
        self._thread = threading.Thread(target=self._run, name="openmaac-heartbeat", daemon=True)
        self._thread.start()

    def draining(self) -> None:
        """The worker stopped claiming jobs: say so at once. Only sets flags (safe in a signal handler)."""
        self.state = DRAINING
        self._now.set()

    def stop(self, timeout: float = 5.0) -> None:
        """Stop beating and delete the row (a clean stop leaves nothing to go stale)."""
        self._stop.set()
        self._now.set()
        if self._thread is not None:
            self._thread.join(timeout)  # a beat under way must not re-insert the row after the delete
        try:
            with self.database.write() as session:
                remove(session, self.worker_id)
        except Exception:
            log.warning("could not delete the heartbeat of worker %s (it goes stale)", self.worker_id,
                        exc_info=True)

    def _run(self) -> None:
        while True:
            self._now.wait(BEAT_SECONDS)
            self._now.clear()
            if self._stop.is_set():
                return
            self._beat()

    def _beat(self) -> None:
        pruning = self._pruned_at is None or time.monotonic() - self._pruned_at >= PRUNE_EVERY_SECONDS
        try:
            with self.database.write() as session:
                pruned = prune(session) if pruning else 0
                beat(session, worker_id=self.worker_id, hostname=self.hostname, pid=self.pid, kind=self.kind,
                     started_at=self.started_at, state=self.state)
            if pruning:
                self._pruned_at = time.monotonic()
            if pruned:
                log.info("deleted %s heartbeat(s) of workers gone for over %s", pruned, PRUNE_AFTER)
        except Exception:
            if not self._failing:  # once per outage, not every beat
                log.warning("worker %s could not write its heartbeat", self.worker_id, exc_info=True)
            self._failing = True
            return
        if self._failing:
            log.warning("worker %s writes its heartbeat again", self.worker_id)
        self._failing = False
