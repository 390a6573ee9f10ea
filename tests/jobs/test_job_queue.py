"""The durable job table, driven by the server's embedded worker."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from sqlalchemy import select, update

from helpers import wait_for, worker_held
from openmaac.jobs.models import Job
from openmaac.jobs.queue import claim, enqueue
from openmaac.jobs.registry import JobContext, PermanentFailure, RetryLater, handler

CALLS: dict[str, list[int]] = {}
_lock = threading.Lock()


def _record(key: str, attempt: int) -> None:
    with _lock:
        CALLS.setdefault(key, []).append(attempt)


@handler("test.record")
def _record_handler(payload, context: JobContext) -> None:
    _record(payload["key"], context.attempt)


@handler("test.flaky")
def _flaky_handler(payload, context: JobContext) -> None:
    _record(payload["key"], context.attempt)
    if context.attempt < 2:
        raise RuntimeError("transient")


@handler("test.retry_later")
def _retry_later_handler(payload, context: JobContext) -> None:
    _record(payload["key"], context.attempt)
    if len(CALLS[payload["key"]]) < 3:
        raise RetryLater(0.05)

GAVE_UP: dict[str, tuple[int, str]] = {}


def _note_give_up(session, payload, context: JobContext, error: str) -> None:
    GAVE_UP[payload["key"]] = (context.attempt, error)
    # written in the transaction that marks the job failed: it commits with it
    enqueue(session, "test.record", {"key": f"{payload['key']}:given-up"})


def _give_up_raises(session, payload, context: JobContext, error: str) -> None:
    raise RuntimeError("the domain could not finalise")


@handler("test.always_fails", on_give_up=_note_give_up)
def _always_fails(payload, context: JobContext) -> None:
    _record(payload["key"], context.attempt)
    if payload.get("permanent"):
        raise PermanentFailure("bad data")
    raise RuntimeError("still broken")


@handler("test.give_up_raises", on_give_up=_give_up_raises)
def _fails_and_give_up_raises(payload, context: JobContext) -> None:
    raise RuntimeError("broken")


def test_enqueued_job_runs_once(database, server):
    with database.write() as session:
        enqueue(session, "test.record", {"key": "once"})
    wait_for(lambda: CALLS.get("once"))
    assert CALLS["once"] == [1]


def test_rolled_back_enqueue_never_runs(database, server):
    try:
        with database.write() as session:
            enqueue(session, "test.record", {"key": "rolled-back"})
            raise RuntimeError("abort the transaction")
    except RuntimeError:
        pass
    with database.write() as session:
        enqueue(session, "test.record", {"key": "marker"})
    wait_for(lambda: CALLS.get("marker"))
    assert "rolled-back" not in CALLS


def test_failure_is_retried_with_backoff(database, server):
    with database.write() as session:
        enqueue(session, "test.flaky", {"key": "flaky"})
    wait_for(lambda: len(CALLS.get("flaky", [])) >= 2, timeout=10)
    assert CALLS["flaky"] == [1, 2]


def test_retry_later_does_not_use_up_attempts(database, server):
    with database.write() as session:
        enqueue(session, "test.retry_later", {"key": "later"}, max_attempts=1)
    wait_for(lambda: len(CALLS.get("later", [])) >= 3, timeout=10)
    assert CALLS["later"] == [1, 1, 1]


def test_future_job_waits_for_run_at(database, server):
    run_at = datetime.now(UTC) + timedelta(seconds=1.0)
    with database.write() as session:
        enqueue(session, "test.record", {"key": "timer"}, run_at=run_at)
    wait_for(lambda: CALLS.get("timer"), timeout=10)
    assert datetime.now(UTC) >= run_at


def test_expired_lease_is_reclaimed(database, server):
    """A job left 'running' by a dead worker runs again once its lease has passed."""
    with database.write() as session:
        enqueue(session, "test.record", {"key": "orphan"}, run_at=datetime.now(UTC) + timedelta(days=1))
    with database.write() as session:
        session.execute(
            update(Job)
            .where(Job.kind == "test.record", Job.status == "ready", Job.run_at > datetime.now(UTC))
            .values(status="running", locked_by="dead-worker", locked_until=datetime.now(UTC) - timedelta(seconds=1))
        )
    wait_for(lambda: CALLS.get("orphan"), timeout=10)


def test_unique_key_deduplicates(database, server):
    far = datetime.now(UTC) + timedelta(days=2)
    with database.write() as session:
        enqueue(session, "test.record", {"key": "u"}, unique_key="test-unique", run_at=far)
        enqueue(session, "test.record", {"key": "u"}, unique_key="test-unique", run_at=far)
    with database.write() as session:
        enqueue(session, "test.record", {"key": "u"}, unique_key="test-unique", run_at=far)
    with database.read() as session:
        rows = session.scalars(select(Job).where(Job.unique_key == "test-unique")).all()
    assert len(rows) == 1


def test_two_claimers_never_share_a_job(database, server):
    """Concurrent claims (the PostgreSQL path uses SKIP LOCKED) hand out disjoint jobs."""
    far_kind = "test.unhandled_claim"
    with database.write() as session:
        for i in range(200):
            enqueue(session, far_kind, {"i": i}, run_at=datetime.now(UTC) - timedelta(seconds=1), priority=1)
    got: list[list[int]] = [[], [], [], []]

    def claimer(n: int) -> None:
        for _ in range(20):
            with database.write() as session:
                jobs = claim(session, f"claimer-{n}", 10, 60)
            got[n].extend(job.id for job in jobs if job.kind == far_kind)

    threads = [threading.Thread(target=claimer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [job_id for ids in got for job_id in ids]
    assert len(everything) == len(set(everything))


def test_a_kind_with_a_lease_of_its_own_is_claimed_with_it(database, server):
    """One claim gives each kind its lease: the listed kind its own, any other the default."""
    past = datetime.now(UTC) - timedelta(seconds=1)
    with database.write() as session:  # enqueued and claimed in one transaction: no worker sees them
        enqueue(session, "test.unhandled_short", {}, run_at=past, priority=-1)
        enqueue(session, "test.unhandled_default", {}, run_at=past, priority=-1)
        before = datetime.now(UTC)
        jobs = claim(session, "lease-claimer", 2, 60, {"test.unhandled_short": 5.0, "test.other": 1.0})
        after = datetime.now(UTC)
        leases = dict(session.execute(select(Job.kind, Job.locked_until).where(Job.id.in_([j.id for j in jobs]))).all())
    assert sorted(leases) == ["test.unhandled_default", "test.unhandled_short"]
    assert before + timedelta(seconds=5) <= leases["test.unhandled_short"] <= after + timedelta(seconds=5)
    assert before + timedelta(seconds=60) <= leases["test.unhandled_default"] <= after + timedelta(seconds=60)


def _job_row(database, kind, key):
    with database.read() as session:
        return next(job for job in session.scalars(select(Job).where(Job.kind == kind)) if job.payload["key"] == key)


def test_exhausted_job_runs_its_give_up_handler_in_the_failing_transaction(database, server):
    with database.write() as session:
        enqueue(session, "test.always_fails", {"key": "exhausted"}, max_attempts=2)
    wait_for(lambda: CALLS.get("exhausted:given-up"), timeout=10)
    assert CALLS["exhausted"] == [1, 2]
    assert GAVE_UP["exhausted"][0] == 2 and "still broken" in GAVE_UP["exhausted"][1]
    job = _job_row(database, "test.always_fails", "exhausted")
    assert (job.status, job.attempts, job.locked_by) == ("failed", 2, None)


def test_permanent_failure_gives_up_without_retrying(database, server):
    with database.write() as session:
        enqueue(session, "test.always_fails", {"key": "permanent", "permanent": True}, max_attempts=5)
    wait_for(lambda: CALLS.get("permanent:given-up"), timeout=10)
    assert CALLS["permanent"] == [1]
    assert "bad data" in GAVE_UP["permanent"][1]


def test_a_job_claimed_past_its_attempts_is_given_up_without_running(database, server):
    """Each earlier attempt died with its worker (the lease passed, no outcome recorded)."""
    with database.write() as session:
        enqueue(session, "test.always_fails", {"key": "abandoned"}, max_attempts=3,
                run_at=datetime.now(UTC) + timedelta(days=1))
        session.execute(update(Job).where(Job.kind == "test.always_fails", Job.status == "ready",
                                          Job.run_at > datetime.now(UTC))
                        .values(status="running", attempts=3, locked_by="dead-worker",
                                locked_until=datetime.now(UTC) - timedelta(seconds=1)))
    wait_for(lambda: CALLS.get("abandoned:given-up"), timeout=10)
    assert "abandoned" not in CALLS
    assert GAVE_UP["abandoned"][1].startswith("abandoned: 3 attempts ended without an outcome")


def test_a_give_up_handler_that_raises_still_fails_the_job(database, server):
    with database.write() as session:
        enqueue(session, "test.give_up_raises", {"key": "raising"}, max_attempts=1)
    job = wait_for(lambda: (row := _job_row(database, "test.give_up_raises", "raising")).status == "failed" and row,
                   timeout=10)
    assert job.last_error.endswith("(and its on_give_up failed)")


BATCHES: list[list[str]] = []


def _run_batched(items: list[tuple[dict, JobContext]]) -> list[BaseException | None]:
    BATCHES.append([payload["key"] for payload, _context in items])
    outcomes: list[BaseException | None] = []
    for payload, context in items:
        _record(payload["key"], context.attempt)
        outcomes.append(RuntimeError("transient") if payload.get("fail") and context.attempt < 2 else None)
    return outcomes


@handler("test.batched", batch=_run_batched)
def _batched_alone(payload, context: JobContext) -> None:
    _record(f"alone:{payload['key']}", context.attempt)


def _batch_breaks(items: list[tuple[dict, JobContext]]) -> list[BaseException | None]:
    raise RuntimeError("the batch broke")


@handler("test.batch_breaks", batch=_batch_breaks)
def _breaking_batch_alone(payload, context: JobContext) -> None:
    _record(payload["key"], context.attempt)


def test_jobs_claimed_together_run_as_one_batch_and_are_settled_each(database, server):
    """A kind with a batch handler gets the jobs one claim took in one call; each job's outcome
    is then recorded on its own: the successes are gone, the failure is retried (alone: the
    single handler)."""
    with database.write() as session:  # one commit: one claim takes all three
        for key in ("batch-1", "batch-2", "batch-3"):
            enqueue(session, "test.batched", {"key": key, "fail": key == "batch-3"})
    wait_for(lambda: CALLS.get("alone:batch-3"), timeout=10)
    assert ["batch-1", "batch-2", "batch-3"] in BATCHES
    assert CALLS["batch-1"] == CALLS["batch-2"] == CALLS["batch-3"] == [1]
    assert CALLS["alone:batch-3"] == [2]
    wait_for(lambda: not _jobs_of(database, "test.batched"))


def test_a_failing_batch_runs_its_jobs_one_by_one(database, server):
    with database.write() as session:
        for key in ("broken-batch-1", "broken-batch-2"):
            enqueue(session, "test.batch_breaks", {"key": key})
    wait_for(lambda: CALLS.get("broken-batch-1") and CALLS.get("broken-batch-2"), timeout=10)
    assert CALLS["broken-batch-1"] == CALLS["broken-batch-2"] == [1]
    wait_for(lambda: not _jobs_of(database, "test.batch_breaks"))


def _jobs_of(database, kind: str) -> list[Job]:
    with database.read() as session:
        return list(session.scalars(select(Job).where(Job.kind == kind)))


def test_a_claim_answering_more_than_asked_runs_only_the_free_slots_worth(database, server, monkeypatch):
    """A worker runs at most as many jobs as it has free slots, whatever a claim answers (on
    PostgreSQL, ``id IN (SELECT ... LIMIT n FOR UPDATE SKIP LOCKED)`` can update more than n
    rows): the rest go back ready, their attempt not counted, and every slot comes back once."""
    from openmaac.jobs import queue
    from openmaac.jobs.worker import Worker

    past = datetime.now(UTC) - timedelta(seconds=1)
    keys = [f"overclaim-{i}" for i in range(5)]
    worker = Worker(database, concurrency=2)
    with worker_held(server):  # the server's own worker takes none of them
        with database.write() as session:
            for key in keys:
                enqueue(session, "test.record", {"key": key}, run_at=past, priority=-100)
        real_claim = queue.claim
        with monkeypatch.context() as patch:
            patch.setattr(queue, "claim", lambda handle, worker_id, limit, *args: real_claim(
                handle, worker_id, limit + 3, *args))
            assert worker.run_once() == 2
        wait_for(lambda: not worker._in_flight, timeout=10)
        ran = [key for key in keys if CALLS.get(key)]
        assert len(ran) == 2 and all(CALLS[key] == [1] for key in ran)
        with database.read() as session:
            left = session.execute(select(Job.status, Job.attempts, Job.locked_by).where(
                Job.kind == "test.record", Job.priority == -100)).all()
        assert sorted(left) == [("ready", 0, None)] * 3
        assert worker._slots._value == 2  # type: ignore[attr-defined]
    worker._pool.shutdown()
    wait_for(lambda: all(CALLS.get(key) for key in keys), timeout=10)  # the server's worker runs the rest
