"""``Database.write_retrying``: a transaction PostgreSQL aborted to end a deadlock runs again."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import exc, text

from helpers import conflict, scratch_table
from openmaac.db.engine import Database


@pytest.fixture
def own(database: Any) -> Any:
    with scratch_table(database, "write_retrying_test", "id INTEGER PRIMARY KEY, n INTEGER",
                       "INSERT INTO write_retrying_test (id, n) VALUES (1, 0), (2, 0)") as db:
        yield db


def _values(db: Database) -> dict[int, int]:
    with db.read() as session:
        return {int(i): int(n) for i, n in session.execute(text("SELECT id, n FROM write_retrying_test"))}


def test_the_victim_of_a_real_deadlock_runs_again_and_both_writes_stay(own: Database) -> None:
    if own.is_sqlite:
        pytest.skip("SQLite has one writer at a time: no deadlock between two transactions")
    # The worker's transaction locks row 1, then waits for row 2, which the other holds; the
    # other then asks for row 1. The worker waited first, so PostgreSQL's deadlock check (after
    # deadlock_timeout) runs in its process and aborts it: the other commits, the worker runs
    # again and commits after it.
    other_holds_2, worker_waits = threading.Event(), threading.Event()
    attempts: list[int] = []

    def worker(session: Any) -> str:
        attempts.append(len(attempts) + 1)
        session.execute(text("UPDATE write_retrying_test SET n = n + 1 WHERE id = 1"))
        if len(attempts) == 1:
            assert other_holds_2.wait(30)
            worker_waits.set()
        session.execute(text("UPDATE write_retrying_test SET n = n + 1 WHERE id = 2"))
        return "recorded"

    def other() -> None:
        with own.write() as session:
            session.execute(text("UPDATE write_retrying_test SET n = n + 10 WHERE id = 2"))
            other_holds_2.set()
            assert worker_waits.wait(30)
            threading.Event().wait(0.2)  # the worker is now blocked on row 2
            session.execute(text("UPDATE write_retrying_test SET n = n + 10 WHERE id = 1"))

    thread = threading.Thread(target=other)
    thread.start()
    assert own.write_retrying(worker) == "recorded"
    thread.join(30)
    assert attempts == [1, 2]
    assert _values(own) == {1: 11, 2: 11}  # each transaction's writes once, none lost


def _failing(sqlstate: str, times: int, calls: list[int]) -> Any:
    def work(session: Any) -> int:
        calls.append(1)
        session.execute(text("UPDATE write_retrying_test SET n = n + 1 WHERE id = 1"))
        if len(calls) <= times:
            raise conflict(sqlstate)
        return len(calls)
    return work


def test_a_conflict_is_run_again_each_failed_attempt_rolled_back(own: Database) -> None:
    calls: list[int] = []
    assert own.write_retrying(_failing("40001", 2, calls)) == 3
    assert _values(own)[1] == 1  # only the attempt that committed wrote


def test_another_error_is_not_run_again_and_conflicts_stop_after_the_attempts(own: Database) -> None:
    calls: list[int] = []
    with pytest.raises(exc.OperationalError):
        own.write_retrying(_failing("23505", 1, calls))  # a unique violation: a fault, not a conflict
    assert len(calls) == 1
    calls.clear()
    with pytest.raises(exc.OperationalError):
        own.write_retrying(_failing("40P01", 10, calls), attempts=3)
    assert len(calls) == 3
    assert _values(own)[1] == 0
