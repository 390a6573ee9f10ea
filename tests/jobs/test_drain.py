"""SIGTERM drains ``openmaac worker`` and ``openmaac serve`` (its embedded worker): no job is
claimed after the signal, the jobs running finish, those still running at the drain deadline
are released (claimable at once, the attempt not counted), and the process exits 0.

Real processes on a database of their own; the job (``tests/jobs/gated_job.py``) runs until the
test creates its "go" file, so whether it is in flight at the signal never depends on timing."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from helpers import wait_for
from openmaac.jobs.models import Job, WorkerHeartbeat
from openmaac.jobs.queue import claim, enqueue
from processes import Process, Space, own_database, running

COMMANDS = ["worker", "serve"]


@pytest.fixture
def space(tmp_path: Path):
    with own_database(tmp_path / "data") as space:
        yield space


def _start(space: Space, command: str, drain_seconds: str) -> Process:
    process = Process(space, command, OPENMAAC_DRAIN_SECONDS=drain_seconds)
    if command == "serve":
        process.wait_until_serving()
    else:  # the worker beats before it claims anything
        wait_for(lambda: _heartbeats(space) or process.process.poll() is not None, timeout=60, interval=0.1)
        assert process.process.poll() is None, process.output()
    return process


def _heartbeats(space: Space) -> list[WorkerHeartbeat]:
    try:
        with space.database.read() as session:
            return list(session.scalars(select(WorkerHeartbeat)))
    except Exception:  # the process has not created the tables yet
        return []


def _enqueue_gated(space: Space, marker: Path, **options: int) -> int:
    with space.database.write() as session:
        enqueue(session, "test.gated", {"marker": str(marker)}, **options)
    with space.database.read() as session:
        return max(session.scalars(select(Job.id).where(Job.kind == "test.gated")))


def _job(space: Space, job_id: int) -> Job | None:
    with space.database.read() as session:
        return session.get(Job, job_id)


def _signal_and_wait_for_draining(process: Process, space: Space) -> None:
    process.process.terminate()
    wait_for(lambda: [beat.state for beat in _heartbeats(space)] == ["draining"], timeout=30)


@pytest.mark.parametrize("command", COMMANDS)
def test_sigterm_lets_the_running_job_finish_claims_nothing_more_and_exits_0(space, tmp_path, command):
    process = _start(space, command, drain_seconds="120")
    try:
        first = _enqueue_gated(space, tmp_path / "first")
        wait_for(lambda: (tmp_path / "first.started").exists(), timeout=30)
        _signal_and_wait_for_draining(process, space)
        # claiming stopped with the signal: a job due now waits for another worker
        later = _enqueue_gated(space, tmp_path / "later")
        (tmp_path / "first.go").touch()
        (tmp_path / "later.go").touch()
        assert process.wait() == 0, process.output()
        assert (tmp_path / "first.done").read_text() == "1"
        assert _job(space, first) is None  # completed
        waiting = _job(space, later)
        assert waiting is not None
        assert (waiting.status, waiting.attempts, waiting.locked_by) == ("ready", 0, None)
        assert not (tmp_path / "later.started").exists()
        assert _heartbeats(space) == []  # a clean stop deletes its heartbeat
        assert "Traceback" not in process.output()
    finally:
        process.kill()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_job_running_at_the_drain_deadline_is_released_and_the_process_exits_0(space, tmp_path, command):
    process = _start(space, command, drain_seconds="1")
    try:
        job_id = _enqueue_gated(space, tmp_path / "long", max_attempts=1)
        wait_for(lambda: (tmp_path / "long.started").exists(), timeout=30)
        process.process.terminate()
        assert process.wait() == 0, process.output()  # without waiting for the job
        assert not (tmp_path / "long.done").exists()
        released = _job(space, job_id)
        assert released is not None
        # ready again with its lease cleared, and the interrupted attempt not counted
        assert (released.status, released.attempts, released.locked_by, released.locked_until) == \
            ("ready", 0, None, None)
        with space.database.write() as session:  # another worker claims it at once
            claimed = claim(session, "another-worker", 10, 60)
        assert [(job.id, job.attempts, job.max_attempts) for job in claimed] == [(job_id, 1, 1)]
        assert _heartbeats(space) == []
        assert "Traceback" not in process.output()
    finally:
        (tmp_path / "long.go").touch()
        process.kill()


def test_the_released_job_runs_to_its_end_on_the_next_worker(space, tmp_path):
    with running(space, "worker", OPENMAAC_DRAIN_SECONDS="0") as first:
        wait_for(lambda: _heartbeats(space), timeout=60, interval=0.1)
        job_id = _enqueue_gated(space, tmp_path / "handover", max_attempts=1)
        wait_for(lambda: (tmp_path / "handover.started").exists(), timeout=30)
        (tmp_path / "handover.started").unlink()
        assert first.terminate() == 0, first.output()
    with running(space, "worker") as second:
        wait_for(lambda: (tmp_path / "handover.started").exists(), timeout=30)
        (tmp_path / "handover.go").touch()
        wait_for(lambda: _job(space, job_id) is None, timeout=30)
        assert (tmp_path / "handover.done").read_text() == "1"  # its first counted attempt
        assert second.terminate() == 0, second.output()


@pytest.mark.parametrize("command", COMMANDS)
def test_a_second_sigterm_cuts_the_drain_short(space, tmp_path, command):
    process = _start(space, command, drain_seconds="600")
    try:
        job_id = _enqueue_gated(space, tmp_path / "cut", max_attempts=1)
        wait_for(lambda: (tmp_path / "cut.started").exists(), timeout=30)
        _signal_and_wait_for_draining(process, space)
        process.process.terminate()  # the operator insists (a second Ctrl-C)
        assert process.wait() == 0, process.output()
        released = _job(space, job_id)
        assert released is not None and (released.status, released.attempts) == ("ready", 0)
    finally:
        (tmp_path / "cut.go").touch()
        process.kill()
