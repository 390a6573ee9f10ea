"""``/healthz`` and ``/readyz``: ready on a healthy server; 503 naming the failing check when the
database is gone, its schema is behind this version's, or no worker has a fresh heartbeat."""

from __future__ import annotations

import subprocess
import sys
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update

from helpers import drop_postgres_database, wait_for
from openmaac.db.base import utcnow
from openmaac.jobs.heartbeat import STALE_AFTER_SECONDS
from openmaac.jobs.models import WorkerHeartbeat
from processes import Space, own_database, running


@pytest.fixture
def space(tmp_path: Path):
    with own_database(tmp_path / "data") as space:
        yield space


def _failing(response) -> list[str]:
    assert response.status_code == 503, response.text
    body = response.json()
    assert body["status"] == "not_ready"
    return body["failing"]


def _put_heartbeat(space: Space, *, age_seconds: float, state: str = "running", worker_id: str = "elsewhere:1:x") -> None:
    now = utcnow()
    with space.database.write() as session:
        session.execute(delete(WorkerHeartbeat).where(WorkerHeartbeat.worker_id == worker_id))
        session.add(WorkerHeartbeat(worker_id=worker_id, hostname="elsewhere", pid=1, kind="standalone",
                                    started_at=now - timedelta(days=3), beat_at=now - timedelta(seconds=age_seconds),
                                    state=state))


def test_ready_on_a_healthy_server(anon):
    response = anon.get("/readyz")
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["status"] == "ready"
    assert {name: check["status"] for name, check in body["checks"].items()} == \
        {"database": "ok", "migrations": "ok", "workers": "ok"}
    assert body["checks"]["workers"]["fresh"] >= 1
    assert anon.get("/healthz").json()["status"] == "ok"
    paths = anon.get("/openapi.json").json()["paths"]
    assert "/readyz" not in paths and "/healthz" not in paths


def test_not_ready_when_the_database_is_gone(space):
    with running(space, "serve") as server:
        server.wait_until_serving()
        assert server.readyz().status_code == 200
        if space.postgres_name:
            drop_postgres_database(space.postgres_name)  # WITH (FORCE): its connections are cut
        else:
            # the file replaced by one that is not a database (the server's open connections
            # would still read the removed one)
            database = space.data_dir / "openmaac.sqlite3"
            for suffix in ("", "-wal", "-shm"):
                Path(f"{database}{suffix}").unlink(missing_ok=True)
            database.write_bytes(b"not a database, " * 64)
        response = server.readyz()
        assert _failing(response) == ["database"]
        checks = response.json()["checks"]
        assert checks["migrations"]["status"] == checks["workers"]["status"] == "unknown"
        assert server.process.poll() is None  # /healthz's process is still up
        assert server.terminate() == 0


def test_not_ready_while_the_database_is_behind_this_version(space):
    from alembic.script import ScriptDirectory

    from openmaac.migrations import alembic_config

    script = ScriptDirectory.from_config(alembic_config(space.url))
    head = script.get_current_head()
    previous = script.get_revision(head).down_revision
    with running(space, "serve") as server:
        server.wait_until_serving()
        assert server.readyz().status_code == 200
        code = ("import sys; from alembic import command; from openmaac.migrations import alembic_config; "
                "command.downgrade(alembic_config(sys.argv[1]), '-1')")
        subprocess.run([sys.executable, "-c", code, space.url], env=space.env(), check=True, capture_output=True)
        response = server.readyz()
        assert "migrations" in _failing(response)
        migrations = response.json()["checks"]["migrations"]
        assert (migrations["revision"], migrations["expected"]) == (previous, head)
        assert "openmaac migrate" in migrations["detail"]
        subprocess.run([sys.executable, "-m", "openmaac.cli", "migrate"], env=space.env(), check=True,
                       capture_output=True)
        # ready again once the worker's next heartbeat lands in the re-created table
        wait_for(lambda: server.readyz().status_code == 200, timeout=30, interval=0.2)


def test_not_ready_without_a_fresh_worker_heartbeat(space):
    with running(space, "serve", "--no-worker") as server:
        server.wait_until_serving()
        response = server.readyz()
        assert _failing(response) == ["workers"]
        assert response.json()["checks"]["workers"]["fresh"] == 0
        _put_heartbeat(space, age_seconds=STALE_AFTER_SECONDS + 1)
        assert _failing(server.readyz()) == ["workers"]  # stale: that worker is gone
        _put_heartbeat(space, age_seconds=0, state="draining")
        assert _failing(server.readyz()) == ["workers"]  # on its way out: claims nothing
        _put_heartbeat(space, age_seconds=0)
        assert server.readyz().json() | {"checks": None} == {"status": "ready", "checks": None}
        assert server.terminate() == 0
    with space.database.write() as session:
        session.execute(delete(WorkerHeartbeat))
    with running(space, "serve", "--no-worker", OPENMAAC_READYZ_REQUIRE_WORKER="0") as server:
        server.wait_until_serving()
        response = server.readyz()
        assert response.status_code == 200, response.text
        assert response.json()["checks"]["workers"]["status"] == "skipped"


def test_a_standalone_worker_makes_a_server_without_worker_ready(space):
    with running(space, "serve", "--no-worker") as server:
        server.wait_until_serving()
        assert _failing(server.readyz()) == ["workers"]
        _put_heartbeat(space, age_seconds=2 * 86400, worker_id="died-long-ago:1:x")
        with running(space, "worker") as worker:
            wait_for(lambda: server.readyz().status_code == 200, timeout=60, interval=0.1)
            with space.database.read() as session:
                beats = list(session.scalars(select(WorkerHeartbeat)))
            # its own row, and the dead worker's day-old row deleted
            assert [(beat.kind, beat.state, beat.pid) for beat in beats] == \
                [("standalone", "running", worker.process.pid)]
            assert worker.terminate() == 0, worker.output()
        assert _failing(server.readyz()) == ["workers"]  # its row went with its clean stop
        assert server.terminate() == 0


def test_a_heartbeat_renewal_is_one_upsert(space):
    """The row is renewed in place (one per worker, whatever its age)."""
    from openmaac.jobs import heartbeat

    subprocess.run([sys.executable, "-m", "openmaac.cli", "migrate"], env=space.env(), check=True, capture_output=True)
    started = utcnow() - timedelta(minutes=5)
    for state in ("running", "running", "draining"):
        with space.database.write() as session:
            heartbeat.beat(session, worker_id="w:1:a", hostname="h", pid=1, kind="embedded", started_at=started,
                           state=state)
    with space.database.write() as session:
        session.execute(update(WorkerHeartbeat).values(beat_at=utcnow() - timedelta(days=2)))
        heartbeat.beat(session, worker_id="w:2:b", hostname="h", pid=2, kind="standalone", started_at=started,
                       state="running")
    with space.database.read() as session:
        rows = {row.worker_id: (row.state, row.started_at) for row in session.scalars(select(WorkerHeartbeat))}
        assert heartbeat.fresh_workers(session) == 1
    assert rows == {"w:1:a": ("draining", started), "w:2:b": ("running", started)}
    with space.database.write() as session:
        assert heartbeat.prune(session) == 1
