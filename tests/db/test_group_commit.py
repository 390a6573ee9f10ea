"""Group commit: many threads' writes in one transaction, each answered after its commit."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from helpers import scratch_table
from openmaac.db.engine import Database
from openmaac.db.group_commit import GroupCommit


@pytest.fixture
def own(database: Any) -> Any:
    with scratch_table(database, "group_commit_test", "n INTEGER NOT NULL") as db:
        yield db


@pytest.fixture(params=[False, True], ids=["queue on the leader's lock", "lead handed over"])
def hand_over(request: Any) -> bool:
    """Both ways of waiting, on either database (each is the default of one)."""
    return bool(request.param)


def _insert(n: int) -> Any:
    def work(session: Any) -> int:
        session.execute(text("INSERT INTO group_commit_test (n) VALUES (:n)"), {"n": n})
        return n * 10
    return work


def _count(db: Database) -> int:
    with db.read() as session:
        return int(session.execute(text("SELECT count(*) FROM group_commit_test")).scalar_one())


def test_writes_waiting_while_a_batch_commits_go_together_in_the_next(own: Any, hand_over: bool) -> None:
    group = GroupCommit(own, hand_over=hand_over)
    first_running, others_waiting = threading.Event(), threading.Event()
    results: dict[int, Any] = {}

    def slow_first(session: Any) -> int:
        first_running.set()
        assert others_waiting.wait(30)  # hold the first batch until the others are queued
        return _insert(0)(session)

    def call(n: int) -> None:
        results[n] = group.run(slow_first if n == 0 else _insert(n))

    leader = threading.Thread(target=call, args=(0,))
    leader.start()
    assert first_running.wait(30)
    followers = [threading.Thread(target=call, args=(n,)) for n in range(1, 9)]
    for thread in followers:
        thread.start()
    while len(group._pending) < 8:  # every follower has queued its write
        threading.Event().wait(0.01)
    others_waiting.set()
    for thread in [leader, *followers]:
        thread.join(30)
    assert results == {n: n * 10 for n in range(9)}
    assert group.batches == 2  # the first alone, then the eight together
    assert _count(own) == 9


def test_a_failing_write_fails_only_its_caller(own: Any, hand_over: bool, caplog: pytest.LogCaptureFixture) -> None:
    group = GroupCommit(own, hand_over=hand_over)
    gate = threading.Event()
    outcomes: dict[int, Any] = {}

    def bad(session: Any) -> None:
        session.execute(text("INSERT INTO group_commit_test (n) VALUES (NULL)"))  # NOT NULL

    def first(session: Any) -> int:
        assert gate.wait(30)
        return _insert(0)(session)

    def call(n: int, work: Any) -> None:
        try:
            outcomes[n] = group.run(work)
        except Exception as error:  # noqa: BLE001
            outcomes[n] = error

    threads = [threading.Thread(target=call, args=(0, first))]
    threads[0].start()
    while not group.leading:
        threading.Event().wait(0.01)
    threads += [threading.Thread(target=call, args=(1, _insert(1))), threading.Thread(target=call, args=(2, bad)),
                threading.Thread(target=call, args=(3, _insert(3)))]
    for thread in threads[1:]:
        thread.start()
    while len(group._pending) < 3:
        threading.Event().wait(0.01)
    gate.set()
    for thread in threads:
        thread.join(30)
    assert outcomes[0] == 0 and outcomes[1] == 10 and outcomes[3] == 30
    assert isinstance(outcomes[2], Exception)
    assert _count(own) == 3  # the batch was rolled back and the good writes made one by one
    # the operator hears that the batch failed (each caller hears only of its own write)
    assert [r.getMessage() for r in caplog.records if r.name == "openmaac.db"][0].startswith(
        "group commit: a batch of 3 writes failed (IntegrityError: ")


def test_the_batch_end_runs_once_per_transaction_after_its_writes(own: Any, hand_over: bool) -> None:
    ends: list[list[int]] = []

    def noted(n: int) -> Any:
        def work(session: Any) -> int:
            session.info.setdefault("noted", []).append(n)
            return _insert(n)(session)
        return work

    def end(session: Any) -> None:
        noted_here = session.info.pop("noted", [])
        ends.append(noted_here)
        session.execute(text("INSERT INTO group_commit_test (n) VALUES (:n)"), {"n": 100 + len(noted_here)})

    def bad(session: Any) -> None:
        session.info.setdefault("noted", []).append(-1)
        session.execute(text("INSERT INTO group_commit_test (n) VALUES (NULL)"))  # NOT NULL

    group = GroupCommit(own, on_batch_end=end, autoflush=False, hand_over=hand_over)
    from openmaac.db.group_commit import _Write

    together = [_Write(noted(1)), _Write(noted(2))]
    group._commit(together)
    assert [w.result for w in together] == [10, 20] and ends == [[1, 2]]
    failing = [_Write(noted(3)), _Write(bad), _Write(noted(4))]
    group._commit(failing)  # rolled back, then each alone with its own batch end
    assert ends[1:] == [[3], [4]]  # a failed write never reaches its batch's end
    assert failing[0].result == 30 and failing[2].result == 40 and isinstance(failing[1].error, Exception)
    with own.read() as session:
        rows = sorted(int(n) for n in session.execute(text("SELECT n FROM group_commit_test")).scalars())
    assert rows == [1, 2, 3, 4, 101, 101, 102]


def test_many_threads_each_get_their_own_answer_and_nothing_is_left_waiting(own: Any, hand_over: bool) -> None:
    group = GroupCommit(own, hand_over=hand_over)
    answers: dict[int, list[int]] = {}

    def caller(t: int) -> None:
        answers[t] = [group.run(_insert(t * 100 + i)) for i in range(25)]

    threads = [threading.Thread(target=caller, args=(t,)) for t in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)  # every waiter was woken
    assert answers == {t: [(t * 100 + i) * 10 for i in range(25)] for t in range(12)}
    assert _count(own) == 300
    assert group.batches < 300 and not group.leading and not group._pending  # batched; nobody leads


def _insert_many(calls: list[list[int]]) -> Any:
    """A ``write_many``: one multi-row INSERT for all its items; notes each call's items."""
    def write_many(session: Any, items: list[int]) -> list[int]:
        calls.append(list(items))
        values = ", ".join(f"(:n{i})" for i in range(len(items)))
        session.execute(text(f"INSERT INTO group_commit_test (n) VALUES {values}"),
                        {f"n{i}": n for i, n in enumerate(items)})
        return [n * 100 for n in items]
    return write_many


def _rows(db: Database) -> list[int]:
    with db.read() as session:
        return [int(n) for n in session.execute(text("SELECT n FROM group_commit_test ORDER BY n")).scalars()]


def test_the_items_of_a_set_are_written_in_one_call_where_the_first_stands(own: Any, hand_over: bool) -> None:
    from openmaac.db.group_commit import _Write

    calls: list[list[int]] = []
    other_calls: list[list[int]] = []
    many, other = _insert_many(calls), _insert_many(other_calls)
    order: list[str] = []

    def plain(n: int) -> Any:
        def work(session: Any) -> int:
            order.append(f"plain {n}:{len(calls)}")  # how many set calls had run before it
            return _insert(n)(session)
        return work

    group = GroupCommit(own, hand_over=hand_over)
    batch = [_Write(plain(1)), _Write(None, many, 2), _Write(plain(3)), _Write(None, other, 5),
             _Write(None, many, 4), _Write(None, other, 6)]
    group._commit(batch)
    assert calls == [[2, 4]] and other_calls == [[5, 6]]  # each set once, its items in arrival order
    assert order == ["plain 1:0", "plain 3:1"]  # the set ran where its first item stood
    assert [write.result for write in batch] == [10, 200, 30, 500, 400, 600]
    assert all(write.done and write.error is None for write in batch)
    assert group.batches == 1 and _rows(own) == [1, 2, 3, 4, 5, 6]


def test_a_failing_set_is_retried_item_by_item_and_fails_only_its_bad_item(own: Any, hand_over: bool) -> None:
    from openmaac.db.group_commit import _Write

    calls: list[list[int]] = []
    many = _insert_many(calls)

    def failing_on_minus_one(session: Any, items: list[int]) -> list[int]:
        if -1 in items:
            raise ValueError("no negative items")
        return many(session, items)

    group = GroupCommit(own, hand_over=hand_over)
    batch = [_Write(None, failing_on_minus_one, 1), _Write(_insert(2)), _Write(None, failing_on_minus_one, -1),
             _Write(None, failing_on_minus_one, 3)]
    group._commit(batch)
    assert calls == [[1], [3]]  # the batch failed whole; then each item alone, the bad one failing
    assert [write.result for write in batch] == [100, 20, None, 300]
    assert isinstance(batch[2].error, ValueError) and batch[0].error is None and batch[3].error is None
    assert _rows(own) == [1, 2, 3]


def test_a_set_answering_the_wrong_number_of_results_fails_its_items(own: Any, hand_over: bool) -> None:
    from openmaac.db.group_commit import _Write

    def short(session: Any, items: list[int]) -> list[int]:
        _insert_many([])(session, items)
        return items[:1]

    group = GroupCommit(own, hand_over=hand_over)
    batch = [_Write(None, short, 1), _Write(None, short, 2)]
    group._commit(batch)  # the batch fails; alone, each answers its one result
    assert [write.result for write in batch] == [1, 2] and _rows(own) == [1, 2]


def test_threads_writing_items_of_one_set_each_get_their_own_answer(own: Any, hand_over: bool) -> None:
    calls: list[list[int]] = []
    many = _insert_many(calls)
    group = GroupCommit(own, hand_over=hand_over)
    answers: dict[int, int] = {}

    def call(n: int) -> None:
        answers[n] = group.run_batched(many, n)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(1, 41)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == {n: n * 100 for n in range(1, 41)}
    assert sorted(n for call_items in calls for n in call_items) == list(range(1, 41))  # each item once
    assert len(calls) == group.batches and _rows(own) == list(range(1, 41))
