"""The worker loop: claim due jobs, run their handlers in a thread pool, record the outcome.

``openmaac serve`` runs one embedded ``Worker`` in a background thread; ``openmaac worker``
runs one in the foreground. Any number may share a PostgreSQL database.

Stopping drains: the worker claims nothing more at once (``stop_claiming``, called from the
SIGTERM handler), lets the jobs it runs finish until ``OPENMAAC_DRAIN_SECONDS`` after that, and
releases those still running at the deadline (ready again, attempt not counted) so another
worker takes them over at once; their handler threads are daemons the process exits without.
"""

from __future__ import annotations

import functools
import logging
import os
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from concurrent.futures import wait as wait_for_futures
from datetime import timedelta
from queue import SimpleQueue
from typing import Any

from openmaac.db.base import utcnow
from openmaac.db.engine import Database
from openmaac.jobs import queue
from openmaac.jobs.heartbeat import Heartbeat
from openmaac.jobs.registry import (
    JobContext,
    PermanentFailure,
    RetryLater,
    batch_handler,
    batch_size,
    get_handler,
    give_up_handler,
    lease_of,
    leases,
    renews_lease,
)
from openmaac.telemetry.context import job_context
from openmaac.telemetry.metrics import observe_job, timed_job

log = logging.getLogger("openmaac.worker")

LEASE_SECONDS = 60.0
IDLE_POLL_SECONDS = queue.IDLE_POLL_SECONDS
# After a wake-up (a commit that enqueued jobs, a job done), wait this long before claiming, so
# the jobs of requests committing at about the same time are claimed by one transaction rather
# than one claim each.
WAKE_LINGER_SECONDS = 0.005
# At the drain deadline, how long to wait for the write that releases the unfinished jobs (a
# handler's transaction may hold the database); past it the process exits anyway and the jobs'
# leases pass instead.
RELEASE_WAIT_SECONDS = 5.0


def backoff_seconds(attempt: int) -> float:
    return float(min(2 ** max(attempt - 1, 0), 300))


class _LeaseKeeper:
    """Renews the leases of one worker's running jobs whose kind registered ``renew_lease``,
    every third of the lease, from its own thread (a handler busy in a long transaction could
    not). Such a kind can take a short lease: if the process dies, the renewals stop and
    another worker (or the restarted process) takes the job over within that lease."""

    def __init__(self, database: Database, worker_id: str) -> None:
        self.database = database
        self.worker_id = worker_id
        self._jobs: dict[int, float] = {}  # job id -> lease seconds
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None

    def add(self, job_id: int, lease_seconds: float) -> None:
        with self._lock:
            self._jobs[job_id] = lease_seconds
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="openmaac-lease-keeper", daemon=True)
                self._thread.start()

    def remove(self, job_id: int) -> None:
        with self._lock:
            self._jobs.pop(job_id, None)

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._jobs:
                    self._thread = None  # under the lock: add() starts a new thread from now on
                    return
                interval = min(self._jobs.values()) / 3
            time.sleep(interval)
            with self._lock:
                jobs = dict(self._jobs)
            if not jobs:
                continue
            try:
                with self.database.write() as session:
                    queue.renew_leases(session, self.worker_id, jobs)
            except Exception:  # a database hiccup: the next beat tries again, well within the lease
                log.warning("could not renew job leases", exc_info=True)


class _HandlerThreads:
    """Runs submitted calls on up to ``size`` daemon threads (a ThreadPoolExecutor's threads are
    joined at interpreter exit: a handler still running at the drain deadline, its job released,
    would keep the process from exiting)."""

    def __init__(self, size: int, name: str) -> None:
        self._size = size
        self._name = name
        self._calls: SimpleQueue[tuple[Future[None], Callable[[], None]] | None] = SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def submit(self, fn: Callable[..., None], *args: Any) -> Future[None]:
        future: Future[None] = Future()
        self._calls.put((future, functools.partial(fn, *args)))
        with self._lock:
            # the worker's slots bound the calls under way to ``size``: one thread for each
            if len(self._threads) < self._size:
                thread = threading.Thread(target=self._run, name=f"{self._name}_{len(self._threads)}", daemon=True)
                self._threads.append(thread)
                thread.start()
        return future

    def shutdown(self) -> None:
        """Let the threads end once they finish their call (without waiting for them)."""
        with self._lock:
            for _ in self._threads:
                self._calls.put(None)
            self._threads = []

    def _run(self) -> None:
        while (item := self._calls.get()) is not None:
            future, call = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                call()
            except BaseException as exc:
                future.set_exception(exc)
            else:
                future.set_result(None)


class Worker:
    def __init__(self, database: Database, concurrency: int = 8, poll_interval: float = IDLE_POLL_SECONDS,
                 kinds: list[str] | None = None, kind: str = "embedded") -> None:
        self.database = database
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._pool = _HandlerThreads(concurrency, "openmaac-job")
        self._slots = threading.Semaphore(concurrency)
        self._thread: threading.Thread | None = None
        self._in_flight: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._saturated = False  # the last claim filled every free slot: more may be due
        self._lease_keeper = _LeaseKeeper(database, self.worker_id)
        self._heartbeat = Heartbeat(database, self.worker_id, kind)  # kind: embedded | standalone
        self._claiming_stopped_at: float | None = None  # time.monotonic() when the drain began
        self._cut_short = threading.Event()  # a second stop_claiming(): release at once

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self.database.on_commit(self.wake)
        self._heartbeat.start()
        self._thread = threading.Thread(target=self.run_forever, name="openmaac-worker", daemon=True)
        self._thread.start()

    def wake(self) -> None:
        self._wake.set()

    def stop_claiming(self) -> None:
        """Claim no more jobs, from now on (SIGTERM, Ctrl-C): the start of the drain. A second call
        (a second signal) cuts the drain short: the running jobs are released at once. Only sets
        flags, so a signal handler may call it."""
        if self._claiming_stopped_at is not None:
            self._cut_short.set()
            return
        self._begin_drain()

    def _begin_drain(self) -> None:
        if self._claiming_stopped_at is None:
            self._claiming_stopped_at = time.monotonic()
        self._stop.set()
        self._wake.set()
        self._heartbeat.draining()

    def stop(self, drain_seconds: float | None = None) -> list[int]:
        """Drain and stop: claim nothing more, let the running jobs finish until ``drain_seconds``
        (default ``OPENMAAC_DRAIN_SECONDS``) after claiming stopped, then release those still
        running so another worker claims them at once. Returns the ids of the released jobs."""
        if drain_seconds is None:
            from openmaac.config import get_settings

            drain_seconds = get_settings().drain_seconds
        self._begin_drain()
        assert self._claiming_stopped_at is not None
        deadline = self._claiming_stopped_at + max(drain_seconds, 0.0)
        if self._thread is not None:
            self._thread.join(max(deadline - time.monotonic(), IDLE_POLL_SECONDS))  # a claim under way ends
        with self._lock:
            in_flight = set(self._in_flight)
        if in_flight:
            log.info("worker %s draining: waiting for %s running job(s)", self.worker_id, len(in_flight))
        unfinished = in_flight
        while unfinished and not self._cut_short.is_set() and (remaining := deadline - time.monotonic()) > 0:
            _done, unfinished = wait_for_futures(unfinished, timeout=min(remaining, 0.1))
        released: list[int] = []
        if unfinished:
            released = self._release_unfinished()
        self._pool.shutdown()
        self._heartbeat.stop()
        log.info("worker %s stopped", self.worker_id)
        return released

    def _release_unfinished(self) -> list[int]:
        """Release the jobs this worker still holds, waiting at most ``RELEASE_WAIT_SECONDS`` for
        the database (from a daemon thread: a handler's transaction may hold the write lock)."""
        released: list[int] = []
        done = threading.Event()

        def release() -> None:
            try:
                with self.database.write() as session:
                    released.extend(queue.release(session, self.worker_id))
                done.set()
            except Exception:
                log.warning("worker %s: could not release its running jobs", self.worker_id, exc_info=True)

        thread = threading.Thread(target=release, name="openmaac-release", daemon=True)
        thread.start()
        thread.join(RELEASE_WAIT_SECONDS)
        if not done.is_set():
            log.warning("worker %s stops with jobs running that it could not release; they run again once "
                        "their lease passes", self.worker_id)
            return []
        log.warning("worker %s stops before %s running job(s) finished; released to other workers: %s",
                    self.worker_id, len(released), released)
        return list(released)

    # -- loop ------------------------------------------------------------------------
    def run_forever(self) -> None:
        log.info("worker %s started", self.worker_id)
        while not self._stop.is_set():
            try:
                claimed = self.run_once()
            except Exception:  # a database hiccup must not kill the worker
                log.exception("worker loop error")
                claimed = 0
            if claimed == 0 or not self._saturated:
                # the claim took every due job it had room for: nothing is due until a wake-up
                # or the next job's time
                if self._wake.wait(self._idle_wait()) and not self._stop.is_set():
                    self._stop.wait(WAKE_LINGER_SECONDS)
                self._wake.clear()

    def _idle_wait(self) -> float:
        try:
            with self.database.read() as session:
                due = queue.next_run_at(session)
        except Exception:
            return self.poll_interval
        if due is None:
            return self.poll_interval
        return max(0.0, min(self.poll_interval, (due - utcnow()).total_seconds()))

    def run_once(self) -> int:
        """Claim as many jobs as there are free slots and start them. Returns how many."""
        free = 0
        while self._slots.acquire(blocking=False):
            free += 1
        if free == 0:
            # All slots busy: wait for one to free up rather than spinning.
            if self._slots.acquire(timeout=self.poll_interval):
                self._slots.release()
            return 0
        try:
            # SQLite: in a write transaction (stop_claiming() is checked under its lock, so once it
            # returned no claim starts). PostgreSQL: the claim is one statement, atomic by itself,
            # run in autocommit on a look-up connection, without BEGIN and COMMIT round trips.
            claiming = self.database.write() if self.database.is_sqlite else self.database.lookup()
            with claiming as handle:
                # each kind with a lease of its own gets it in the claim itself
                jobs = [] if self._stop.is_set() else queue.claim(handle, self.worker_id, free, LEASE_SECONDS,
                                                                  leases())
        except Exception:
            for _ in range(free):
                self._slots.release()
            raise
        if len(jobs) > free:
            # More than asked for (the claim's LIMIT is meant to prevent it): running them would
            # exceed the concurrency, and each would give back a slot it never took
            extra = [job.id for job in jobs[free:]]
            log.warning("worker %s: a claim for %s job(s) answered %s; handing back %s", self.worker_id, free,
                        len(jobs), extra)
            jobs = jobs[:free]
            try:
                with self.database.write() as session:
                    queue.release(session, self.worker_id, extra)
            except Exception:  # their lease passes and another claim takes them
                log.warning("worker %s: could not hand back %s", self.worker_id, extra, exc_info=True)
        self._saturated = len(jobs) == free
        for _ in range(free - len(jobs)):
            self._slots.release()
        batches: dict[str, list[queue.ClaimedJob]] = {}
        for job in jobs:
            if batch_handler(job.kind) is not None and job.attempts <= job.max_attempts:
                batches.setdefault(job.kind, []).append(job)
                continue
            # each job in a context of its own: its log lines carry its kind and id; timed for /metrics
            self._track(self._pool.submit(job_context(job.kind, job.id, job.organization_id).run, timed_job,
                                          job.kind, self._execute, job), 1)
        chunks = [(kind, group[i:i + batch_size(kind)]) for kind, group in batches.items()
                  for i in range(0, len(group), batch_size(kind))]
        for kind, batch in chunks:
            first = batch[0]
            if len(batch) == 1:
                self._track(self._pool.submit(job_context(kind, first.id, first.organization_id).run, timed_job, kind,
                                              self._execute, first), 1)
            else:  # one handler thread for the jobs of the kind claimed together (their slots with it)
                self._track(self._pool.submit(job_context(kind, first.id, first.organization_id).run,
                                              self._execute_batch, batch), len(batch))
        return len(jobs)

    def _track(self, future: Future[None], slots: int) -> None:
        with self._lock:
            self._in_flight.add(future)
        future.add_done_callback(functools.partial(self._done, slots=slots))

    def _done(self, future: Future[None], slots: int = 1) -> None:
        with self._lock:
            self._in_flight.discard(future)
        for _ in range(slots):
            self._slots.release()
        self._wake.set()

    def _execute(self, job: queue.ClaimedJob) -> str:
        """Run one claimed job and record its end; answers the outcome the metrics count."""
        handler = get_handler(job.kind)
        if handler is None:
            with self.database.write() as session:
                queue.fail(session, job.id, self.worker_id, f"no handler registered for {job.kind!r}")
            return "failed"
        context = JobContext(job_id=job.id, kind=job.kind, organization_id=job.organization_id,
                             attempt=job.attempts, worker_id=self.worker_id)
        if job.attempts > job.max_attempts:
            # Claimed once more than allowed: the earlier attempts never reported an outcome (each
            # worker died with the job, or the job outran its lease). Running it again would only
            # repeat that, and the job would never end.
            self._give_up(job, context, f"abandoned: {job.attempts - 1} attempts ended without an outcome "
                                        "(the worker stopped or the lease passed)")
            return "abandoned"
        renewed = self._keep_lease(job)
        error: BaseException | None = None
        try:
            handler(job.payload, context)
        except Exception as exc:
            error = exc
        finally:
            if renewed:
                self._lease_keeper.remove(job.id)
        return self._settle(job, context, error)

    def _keep_lease(self, job: queue.ClaimedJob) -> bool:
        """Have the lease keeper renew the job's lease while it runs, if its kind asks for it."""
        lease = lease_of(job.kind)
        if lease is None or not renews_lease(job.kind):
            return False
        self._lease_keeper.add(job.id, lease)
        return True

    def _settle(self, job: queue.ClaimedJob, context: JobContext, error: BaseException | None) -> str:
        """Record how the job's run ended (``error``: what its handler raised); answers the
        outcome the metrics count."""
        if isinstance(error, RetryLater):
            with self.database.write() as session:
                queue.reschedule(session, job.id, self.worker_id, error.delay, str(error), count_attempt=False)
            return "deferred"
        if error is not None:
            text = "".join(traceback.format_exception_only(error)).strip()
            log.warning("job %s (%s) attempt %s failed: %s", job.id, job.kind, job.attempts, text)
            if isinstance(error, PermanentFailure) or job.attempts >= job.max_attempts:
                self._give_up(job, context, text)
                return "failed" if isinstance(error, PermanentFailure) else "given_up"
            with self.database.write() as session:
                queue.reschedule(session, job.id, self.worker_id, backoff_seconds(job.attempts), text)
            return "retry"
        if context.completed:  # deleted in the handler's last transaction
            return "success"
        with self.database.write() as session:
            queue.complete(session, job.id, self.worker_id)
        return "success"

    def _execute_batch(self, jobs: list[queue.ClaimedJob]) -> None:
        """Run jobs of one kind claimed together through its batch handler, then settle each on
        its own. Should the batch handler fail as a whole, each job runs alone instead."""
        run_batch = batch_handler(jobs[0].kind)
        assert run_batch is not None
        contexts = [JobContext(job_id=job.id, kind=job.kind, organization_id=job.organization_id,
                               attempt=job.attempts, worker_id=self.worker_id) for job in jobs]
        renewed = [job.id for job in jobs if self._keep_lease(job)]
        started = time.perf_counter()
        try:
            errors: list[BaseException | None] | None = run_batch(
                [(job.payload, context) for job, context in zip(jobs, contexts, strict=True)])
        except Exception:
            log.warning("batch of %s %s jobs failed; running them one by one", len(jobs), jobs[0].kind,
                        exc_info=True)
            errors = None
        finally:
            for job_id in renewed:
                self._lease_keeper.remove(job_id)
        if errors is None:
            for job in jobs:
                job_context(job.kind, job.id, job.organization_id).run(timed_job, job.kind, self._execute, job)
            return
        seconds = time.perf_counter() - started
        for job, context, error in zip(jobs, contexts, errors, strict=True):
            observe_job(job.kind, job_context(job.kind, job.id, job.organization_id).run(
                self._settle, job, context, error), seconds)

    def _give_up(self, job: queue.ClaimedJob, context: JobContext, error: str) -> None:
        """Mark the job failed and, in the same transaction, let its kind's ``on_give_up`` put the
        domain's state in a final state. Should that raise, the job is still marked failed."""
        on_give_up = give_up_handler(job.kind)
        log.warning("job %s (%s) gave up after %s attempts: %s", job.id, job.kind, job.attempts, error)
        try:
            with self.database.write() as session:
                if queue.fail(session, job.id, self.worker_id, error) and on_give_up is not None:
                    on_give_up(session, job.payload, context, error)
        except Exception:
            log.exception("job %s (%s): on_give_up failed", job.id, job.kind)
            with self.database.write() as session:
                queue.fail(session, job.id, self.worker_id, f"{error} (and its on_give_up failed)")

    def drain(self, timeout: float = 30.0) -> None:
        """Run until no job is due (used by the CLI and tests)."""
        deadline = utcnow() + timedelta(seconds=timeout)
        while utcnow() < deadline:
            claimed = self.run_once()
            with self._lock:
                busy = bool(self._in_flight)
            if claimed == 0 and not busy:
                return
            if claimed == 0:
                self._wake.wait(0.05)
                self._wake.clear()
