"""Group commit: the short writes of many request threads in one transaction.

A hot path that ends in a small write per request (recording LINE's answer to a push) pays
a whole transaction for a few statements: on SQLite the process's write lock, ``BEGIN
IMMEDIATE`` and the commit; on PostgreSQL two more round trips. With group commit each
thread hands its write (a function of the session) to :meth:`GroupCommit.run` and waits; the
first to arrive leads: it takes every write waiting at that moment and runs them in ONE
transaction, and the others find theirs done. Under load batches form by themselves (the
writes arriving while one batch commits make the next); a lone request is a batch of one
and waits for nobody.

Each caller still returns only after its own write is committed, so what it answers is
durable, exactly as with its own transaction. Should a batch fail, it is rolled back and each
write is retried in a transaction of its own, so one bad write fails only its caller.
Writes must therefore be safe to run again after a rollback (plain statements are).

A write may also be one item of a set (:meth:`GroupCommit.run_batched`): every item of the
same ``write_many`` waiting in a batch is handed to it at once, so a write that is one
round trip per request becomes one round trip per batch (a set-based statement over arrays).
On PostgreSQL that more than halved the database's own work per push; the requests per second
moved by a few points only, as the server's interpreter lock, not the batch's round trips, is
what the request threads mostly wait for (docs/benchmarks.md, 2026-12-05).

How the waiting threads learn that their write is done differs by database. On SQLite they
queue on the leader's lock and pass it in turn (``serve``'s CPU is the wall there); on
PostgreSQL, where the lane's round trips are the wall, the leader releases each write of its
batch by a lock of its own and hands the lead straight to the oldest write still waiting
(``_wait_handed``; docs/decisions.md, 2026-12-05).

A group may end each batch with ``on_batch_end(session)``, in the batch's transaction after its
writes (and after each write retried alone): work the writes leave for the batch as a whole,
e.g. in ``session.info``, done once. ``autoflush=False`` runs the writes under the session's
``no_autoflush`` (ORM objects the writes change are flushed once, at the batch's end).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy.orm import Session

from openmaac.db.engine import Database

log = logging.getLogger("openmaac.db")

R = TypeVar("R")
T = TypeVar("T")
WriteMany = Callable[[Session, list[T]], list[R]]


@dataclass
class _Write(Generic[R]):
    work: Callable[[Session], R] | None  # None: an item of ``many``
    many: WriteMany[Any, R] | None = None
    item: Any = None
    done: bool = False
    result: Any = None
    error: BaseException | None = None
    # held while the write waits (hand-over mode): released when it is done, or when its
    # thread is to lead the next batch
    waiting: threading.Lock | None = None


class GroupCommit:
    """Batches writes against one database (one instance per database and purpose)."""

    def __init__(self, database: Database, *, on_batch_end: Callable[[Session], None] | None = None,
                 autoflush: bool = True, hand_over: bool | None = None) -> None:
        self.database = database
        self.on_batch_end = on_batch_end
        self.autoflush = autoflush
        self._pending: list[_Write[Any]] = []
        self._pending_lock = threading.Lock()
        self._leader = threading.Lock()
        # the leader hands over to the oldest waiting write's thread (``_wait_handed``): by default
        # on PostgreSQL
        self.hand_over = not database.is_sqlite if hand_over is None else hand_over
        self._leading = False
        self.batches = 0  # transactions run (for tests and curiosity)

    @property
    def leading(self) -> bool:
        """Whether a batch is being written (or handed over) now."""
        return self._leading if self.hand_over else self._leader.locked()

    def run(self, work: Callable[[Session], R]) -> R:
        return self._wait(_Write(work))

    def run_batched(self, write_many: WriteMany[T, R], item: T) -> R:
        """Write ``item`` as one of a set: ``write_many(session, items)`` answers one result per
        item, in order. Every item of the same ``write_many`` in a batch goes to one call of it,
        in their order of arrival, where the first of them stands among the batch's writes;
        retried alone (after a failed batch) as ``write_many(session, [item])``. Each result goes
        back as it is: a refusal answered as a value leaves the other items' writes to commit,
        where one raised fails the batch (then each item is retried alone)."""
        return self._wait(_Write(None, write_many, item))

    def _wait(self, write: _Write[R]) -> R:
        if self.hand_over:
            self._wait_handed(write)
        else:
            with self._pending_lock:
                self._pending.append(write)
            with self._leader:
                if not write.done:
                    with self._pending_lock:
                        batch, self._pending = self._pending, []
                    self._commit(batch)
        if write.error is not None:
            raise write.error
        return write.result  # type: ignore[no-any-return]

    def _wait_handed(self, write: _Write[Any]) -> None:
        """Wait for ``write`` on PostgreSQL, where the leader's round trips are the queue.

        Queued on the leader's lock, the threads of a committed batch wake one after another,
        each to find its write done and wake the next; the next leader waits behind them all.
        ``py-spy dump`` of an SMS+ push run found no batch being written in about half of the
        snapshots while 30 request threads waited. Here each waiting write holds a lock of its
        own: the leader releases those of its batch (they return, side by side) and hands the
        lead straight to the oldest write still waiting, which takes every write pending by then.
        (On SQLite, where `serve`'s CPU is the wall, the woken threads' contention for the
        interpreter lock cost more than the queue: docs/benchmarks.md, 2026-12-05.)"""
        with self._pending_lock:
            self._pending.append(write)
            lead = not self._leading
            if lead:
                self._leading = True
            else:
                write.waiting = threading.Lock()
                write.waiting.acquire()
        if not lead:
            assert write.waiting is not None
            write.waiting.acquire()  # released by a leader: done, or this thread leads
            if write.done:
                return
        # this thread leads
        with self._pending_lock:
            batch, self._pending = self._pending, []
        try:
            self._commit(batch)
        finally:
            for other in batch:
                if other is not write and other.waiting is not None:
                    other.waiting.release()
            with self._pending_lock:
                following = self._pending[0] if self._pending else None
                if following is None:
                    self._leading = False
            if following is not None:
                # queued while a batch was led, so it holds a lock of its own; not done: its
                # thread leads next
                assert following.waiting is not None
                following.waiting.release()

    def _commit(self, batch: list[_Write[Any]]) -> None:
        self.batches += 1
        if len(batch) > 1:
            try:
                with self.database.write() as session:
                    results = self._run(session, batch)
            except Exception as error:  # noqa: BLE001 - retried one by one below, each failing alone
                # each write's own error still reaches its caller; this says that batching failed
                # (a bad write, or PostgreSQL ending a deadlock), so each costs a transaction
                log.warning("group commit: a batch of %s writes failed (%s: %s); each is written alone",
                            len(batch), type(error).__name__, (str(error).splitlines() or [""])[0])
            except BaseException as error:  # an interrupt: every waiting caller hears of it
                for write in batch:
                    write.error, write.done = error, True
                raise
            else:
                for write, result in zip(batch, results, strict=True):
                    write.result, write.done = result, True
                return
        for write in batch:
            try:
                with self.database.write() as session:
                    write.result = self._run(session, [write])[0]
            except BaseException as error:  # noqa: BLE001 - handed to the thread that owns it
                write.error = error
            write.done = True

    def _run(self, session: Session, writes: list[_Write[Any]]) -> list[Any]:
        """The writes, then the batch's end, in ``session``'s transaction."""
        if self.autoflush:
            results = _run_writes(session, writes)
        else:
            with session.no_autoflush:
                results = _run_writes(session, writes)
        if self.on_batch_end is not None:
            self.on_batch_end(session)
        return results


def _run_writes(session: Session, writes: list[_Write[Any]]) -> list[Any]:
    """Each write's result, in order: a plain write run alone; the items of one ``write_many``
    run together where the first of them stands."""
    results: list[Any] = [None] * len(writes)
    sets: dict[Any, list[int]] = {}
    for index, write in enumerate(writes):
        if write.many is not None:
            sets.setdefault(write.many, []).append(index)
    for index, write in enumerate(writes):
        if write.work is not None:
            results[index] = write.work(session)
            continue
        positions = sets.get(write.many)
        if positions is None or positions[0] != index:
            continue  # already written with the first of its set
        assert write.many is not None
        answers = write.many(session, [writes[position].item for position in positions])
        if len(answers) != len(positions):
            raise RuntimeError(f"{write.many!r} answered {len(answers)} results for {len(positions)} items")
        for position, answer in zip(positions, answers, strict=True):
            results[position] = answer
    return results


# The short writes request threads make on the hot sending paths (a push's acceptance and its
# recorded answer, an SMS+ push's, LINE's PNP delivery webhooks) share ONE group per database.
# As a group each, their leaders took turns at the database (on SQLite, at its one write lock),
# each turn with a smaller batch and more threads put to sleep and woken: on PostgreSQL the push
# benchmark spent 3.42 instead of 2.99 ms of server CPU per push that way, 0.20 ms of the
# difference in the kernel (docs/decisions.md, 2026-12-04).
REQUEST_WRITES = "request writes"

_instances: dict[tuple[int, str], GroupCommit] = {}
_instances_lock = threading.Lock()


def group_commit(database: Database, purpose: str, *, on_batch_end: Callable[[Session], None] | None = None,
                 autoflush: bool = True) -> GroupCommit:
    """The process's group commit for ``purpose`` on ``database`` (the options apply when it is
    first made: one purpose, one way of batching)."""
    key = (id(database), purpose)
    with _instances_lock:
        instance = _instances.get(key)
        if instance is None or instance.database is not database:
            instance = _instances[key] = GroupCommit(database, on_batch_end=on_batch_end, autoflush=autoflush)
        return instance
