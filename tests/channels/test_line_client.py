"""The LINE client against the LINE simulator, over real HTTP: errors, retries with the same
retry key, 409 after a crash, 429 backoff, timeouts, PNP, and the shared rate limiter.

The simulator runs alone in a uvicorn thread (as ``openmaac simulate`` runs it); the rate
limiter tests use the test database (SQLite or PostgreSQL) through independent ``Database``
objects, threads and child processes.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from helpers import wait_for
from openmaac.channels import line_rate
from openmaac.channels.line_client import LineAPIError, LineClient, LineTimeout, new_retry_key
from openmaac.db.engine import Database
from openmaac.simulators.line.app import create_app

HTTP = httpx.Client(timeout=30)  # one client: building one per call costs ~0.1 s (TLS context)


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def simulator() -> Iterator[str]:
    port = _free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10)
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


class Channel:
    def __init__(self, simulator: str) -> None:
        self.sim = simulator
        self.channel_id = str(secrets.randbelow(10**9) + 10**9)
        self.access_token = secrets.token_urlsafe(32)
        response = HTTP.post(f"{simulator}/_admin/channels", json={
            "channel_id": self.channel_id, "channel_secret": secrets.token_hex(16),
            "access_token": self.access_token})
        assert response.status_code == 200
        self.sleeps: list[float] = []

    def client(self, **options: Any) -> LineClient:
        options.setdefault("sleep", self.sleeps.append)  # backoff recorded, not waited
        return LineClient(self.sim, self.access_token, **options)

    def friend(self, phone: str | None = None) -> str:
        user = HTTP.post(f"{self.sim}/_admin/users", json={"phone": phone}).json()["user_id"]
        HTTP.post(f"{self.sim}/_admin/users/{user}/follow", json={"channel_id": self.channel_id})
        return str(user)

    def block(self, user_id: str) -> None:
        HTTP.post(f"{self.sim}/_admin/users/{user_id}/block", json={"channel_id": self.channel_id})

    def inbox(self, user_id: str) -> list[dict[str, Any]]:
        return list(HTTP.get(f"{self.sim}/_admin/users/{user_id}/messages",
                              params={"channel_id": self.channel_id}).json())

    def requests(self) -> list[dict[str, Any]]:
        return list(HTTP.get(f"{self.sim}/_admin/requests", params={"channel_id": self.channel_id}).json())

    def fault(self, kind: str, **fields: Any) -> None:
        response = HTTP.post(f"{self.sim}/_admin/faults", json={"kind": kind, "channel_id": self.channel_id,
                                                                 **fields})
        assert response.status_code == 201

    def limits(self, **fields: Any) -> None:
        assert HTTP.post(f"{self.sim}/_admin/channels/{self.channel_id}/limits", json=fields).status_code == 200


@pytest.fixture
def channel(simulator: str) -> Channel:
    return Channel(simulator)


TEXT = [{"type": "text", "text": "哈囉 hello"}]


def test_push_answers_line_body_and_delivers_once(channel: Channel) -> None:
    user = channel.friend()
    key = new_retry_key()
    with channel.client() as client:
        result = client.push(user, TEXT, retry_key=key)
    assert len(result["sentMessages"]) == 1 and result["sentMessages"][0]["id"].isdigit()
    inbox = channel.inbox(user)
    assert [e["message"] for e in inbox] == TEXT
    assert inbox[0]["retry_key"] == key and inbox[0]["message_id"] == result["sentMessages"][0]["id"]
    assert [(r["status"], r["retry_key"]) for r in channel.requests()] == [(200, key)]


def test_unknown_user_is_400_failed_to_send_and_not_retried(channel: Channel) -> None:
    with channel.client() as client, pytest.raises(LineAPIError) as caught:
        client.push("U" + secrets.token_hex(16), TEXT, retry_key=new_retry_key())
    assert caught.value.status_code == 400
    assert caught.value.body == {"message": "Failed to send messages"}
    assert caught.value.message == "Failed to send messages" and caught.value.request_id
    assert len(channel.requests()) == 1 and channel.sleeps == []


def test_invalid_message_is_400_with_details_and_not_retried(channel: Channel) -> None:
    user = channel.friend()
    with channel.client() as client, pytest.raises(LineAPIError) as caught:
        client.push(user, [{"type": "text", "text": "x" * 5001}], retry_key=new_retry_key())
    assert caught.value.status_code == 400
    assert caught.value.body == {"message": "The request body has 1 error(s)", "details": [
        {"message": "Length must be between 0 and 5000", "property": "messages[0].text"}]}
    assert len(channel.requests()) == 1 and channel.inbox(user) == []


def test_bad_token_is_401_and_not_retried(channel: Channel) -> None:
    with LineClient(channel.sim, "nope", sleep=channel.sleeps.append) as client, \
            pytest.raises(LineAPIError) as caught:
        client.push(channel.friend(), TEXT, retry_key=new_retry_key())
    assert caught.value.status_code == 401 and caught.value.message.startswith("Authentication failed")
    assert channel.sleeps == []


def test_client_refuses_what_line_would_refuse_before_calling(channel: Channel) -> None:
    user = channel.friend()
    with channel.client() as client:
        with pytest.raises(ValueError):
            client.push(user, TEXT, retry_key="not-a-uuid")
        with pytest.raises(ValueError):
            client.push(user, TEXT * 6, retry_key=new_retry_key())
        with pytest.raises(ValueError):
            client.multicast([user] * 501, TEXT, retry_key=new_retry_key())
        with pytest.raises(ValueError):
            client.pnp_push("+886912345678", TEXT, delivery_tag="short")
    assert channel.requests() == []


def test_500_is_retried_with_the_same_key(channel: Channel) -> None:
    user = channel.friend()
    channel.fault("500", endpoint="push", count=2)
    key = new_retry_key()
    with channel.client() as client:
        result = client.push(user, TEXT, retry_key=key)
    assert [(r["status"], r["retry_key"]) for r in channel.requests()] == [(500, key), (500, key), (200, key)]
    assert len(channel.sleeps) == 2 and channel.sleeps[0] < channel.sleeps[1] * 2
    assert [e["message_id"] for e in channel.inbox(user)] == [result["sentMessages"][0]["id"]]


def test_500_after_acceptance_then_409_is_success_and_single_delivery(channel: Channel) -> None:
    user = channel.friend()
    channel.fault("500_after_accept", endpoint="push")
    key = new_retry_key()
    with channel.client() as client:
        result = client.push(user, TEXT, retry_key=key)
    statuses = [(r["status"], r["accepted"]) for r in channel.requests()]
    assert statuses == [(500, True), (409, False)]
    inbox = channel.inbox(user)
    assert len(inbox) == 1
    # the 409 repeats the sentMessages of the accepted request
    assert result["sentMessages"][0]["id"] == inbox[0]["message_id"]


def test_retry_after_a_crash_with_the_stored_key_never_double_sends(channel: Channel) -> None:
    """Process A sent (LINE accepted) and died before recording it; process B retries the key."""
    friends = [channel.friend() for _ in range(3)]
    push_key, multicast_key = new_retry_key(), new_retry_key()
    with channel.client() as first:
        first.push(friends[0], TEXT, retry_key=push_key)
        first.multicast(friends, TEXT, retry_key=multicast_key)
    with channel.client() as after_restart:
        again = after_restart.push(friends[0], TEXT, retry_key=push_key)
        assert after_restart.multicast(friends, TEXT, retry_key=multicast_key) is None
    assert len(again["sentMessages"]) == 1
    assert [len(channel.inbox(u)) for u in friends] == [2, 1, 1]
    assert [r["status"] for r in channel.requests()] == [200, 200, 409, 409]


def test_409_exposes_accepted_request_id_on_the_wire(channel: Channel) -> None:
    user = channel.friend()
    key = new_retry_key()
    headers = {"Authorization": f"Bearer {channel.access_token}", "X-Line-Retry-Key": key}
    first = HTTP.post(f"{channel.sim}/v2/bot/message/push", json={"to": user, "messages": TEXT}, headers=headers)
    second = HTTP.post(f"{channel.sim}/v2/bot/message/push", json={"to": user, "messages": TEXT}, headers=headers)
    assert first.status_code == 200 and second.status_code == 409
    assert second.headers["x-line-accepted-request-id"] == first.headers["x-line-request-id"]
    assert second.json() == {"message": "The retry key is already accepted",
                             "sentMessages": first.json()["sentMessages"]}


def test_429_backs_off_and_succeeds(channel: Channel) -> None:
    user = channel.friend()
    channel.fault("rate_limit", endpoint="push", count=2)
    key = new_retry_key()
    with channel.client(backoff=0.5) as client:
        client.push(user, TEXT, retry_key=key)
    assert [r["status"] for r in channel.requests()] == [429, 429, 200]
    assert {r["retry_key"] for r in channel.requests()} == {key}
    first, second = channel.sleeps
    assert 0.25 <= first <= 0.5 and 0.5 <= second <= 1.0  # exponential, with jitter


def test_monthly_limit_is_raised_after_backoff(channel: Channel) -> None:
    user = channel.friend()
    channel.limits(monthly_quota=0)
    with channel.client(max_attempts=3) as client, pytest.raises(LineAPIError) as caught:
        client.push(user, TEXT, retry_key=new_retry_key())
    assert caught.value.status_code == 429 and caught.value.is_quota_exceeded
    assert caught.value.message == "You have reached your monthly limit."
    assert len(channel.requests()) == 3 and len(channel.sleeps) == 2 and channel.inbox(user) == []


def test_rate_limit_body_is_lines(channel: Channel) -> None:
    channel.limits(push={"rate": 0.001, "burst": 1})
    user = channel.friend()
    with channel.client(max_attempts=1) as client:
        client.push(user, TEXT, retry_key=new_retry_key())
        with pytest.raises(LineAPIError) as caught:
            client.push(user, TEXT, retry_key=new_retry_key())
    assert caught.value.is_rate_limited
    assert caught.value.body == {"message": "The API rate limit has been exceeded. Try again later."}


def test_persistent_500_raises_after_max_attempts(channel: Channel) -> None:
    channel.fault("500", endpoint="push", count=10)
    with channel.client(max_attempts=3) as client, pytest.raises(LineAPIError) as caught:
        client.push(channel.friend(), TEXT, retry_key=new_retry_key())
    assert caught.value.status_code == 500 and len(channel.requests()) == 3


def test_timeouts_are_retried_with_the_same_key_then_raise(channel: Channel) -> None:
    user = channel.friend()
    channel.fault("timeout", endpoint="push", count=2, seconds=3)
    with channel.client(timeout=0.3, max_attempts=2) as client, pytest.raises(LineTimeout) as caught:
        client.push(user, TEXT, retry_key=new_retry_key())
    assert caught.value.connect_failed is False
    assert channel.inbox(user) == []


def test_timeout_after_acceptance_is_recovered_by_the_409(channel: Channel) -> None:
    user = channel.friend()
    channel.fault("timeout_after_accept", endpoint="push", seconds=3)
    key = new_retry_key()
    with channel.client(timeout=0.5) as client:
        result = client.push(user, TEXT, retry_key=key)
    inbox = channel.inbox(user)
    assert len(inbox) == 1 and result["sentMessages"][0]["id"] == inbox[0]["message_id"]
    wait_for(lambda: len(channel.requests()) == 2, timeout=10)
    assert sorted(r["status"] for r in channel.requests()) == [200, 409]


def test_unreachable_line_raises_line_timeout() -> None:
    with LineClient(f"http://127.0.0.1:{_free_port()}", "t", max_attempts=2, sleep=lambda _s: None) as client, \
            pytest.raises(LineTimeout) as caught:
        client.push("U" + "0" * 32, TEXT, retry_key=new_retry_key())
    assert caught.value.connect_failed is True


def test_blocked_user_answers_200_and_receives_nothing(channel: Channel) -> None:
    user = channel.friend()
    channel.block(user)
    with channel.client() as client:
        result = client.push(user, TEXT, retry_key=new_retry_key())
    assert len(result["sentMessages"]) == 1
    assert channel.inbox(user) == []
    assert [(r["status"], r["delivered"]) for r in channel.requests()] == [(200, 0)]


def test_multicast_delivers_to_friends_only(channel: Channel) -> None:
    friends = [channel.friend() for _ in range(3)]
    channel.block(friends[2])
    messages = TEXT + [{"type": "sticker", "packageId": "446", "stickerId": "1988"}]
    with channel.client() as client:
        assert client.multicast(friends, messages, retry_key=new_retry_key()) is None
    assert [len(channel.inbox(u)) for u in friends] == [2, 2, 0]
    with channel.client() as client, pytest.raises(LineAPIError) as caught:
        client.multicast([friends[0], "U" + secrets.token_hex(16)], TEXT, retry_key=new_retry_key())
    assert caught.value.status_code == 400 and caught.value.message == "Failed to send messages"


def test_multicast_of_500_is_one_request(channel: Channel) -> None:
    friends = [channel.friend() for _ in range(500)]
    with channel.client() as client:
        client.multicast(friends, TEXT, retry_key=new_retry_key())
    assert [(r["recipients"], r["delivered"]) for r in channel.requests()] == [(500, 500)]


def test_pnp_push_delivers_and_422_is_raised(channel: Channel) -> None:
    import hashlib

    user = channel.friend(phone="+886912000111")
    with channel.client() as client:
        client.pnp_push("+886912000111", TEXT, delivery_tag="order-0001-abcdefgh")
        client.pnp_push(hashlib.sha256(b"+886912000111").hexdigest(), TEXT)
        with pytest.raises(LineAPIError) as caught:
            client.pnp_push("+886900000999", TEXT)
    assert caught.value.status_code == 422
    inbox = channel.inbox(user)
    assert [(e["endpoint"], e["delivery_tag"]) for e in inbox] == [("pnp", "order-0001-abcdefgh"), ("pnp", None)]


def test_pnp_is_not_retried_on_500_without_a_retry_key(channel: Channel) -> None:
    channel.friend(phone="+886912000222")
    channel.fault("500", endpoint="pnp", count=1)
    with channel.client() as client, pytest.raises(LineAPIError) as caught:
        client.pnp_push("+886912000222", TEXT)
    assert caught.value.status_code == 500 and len(channel.requests()) == 1
    channel.fault("rate_limit", endpoint="pnp", count=1)
    with channel.client() as client:
        client.pnp_push("+886912000222", TEXT)  # 429 is safe to retry
    assert [r["status"] for r in channel.requests()] == [500, 429, 200]


# ------------------------------------------------------------------------------------------------
# the shared rate limiter
# ------------------------------------------------------------------------------------------------


def _max_in_window(slots: list[float], window: float) -> int:
    slots = sorted(slots)
    best, start = 0, 0
    for end, value in enumerate(slots):
        while value - slots[start] >= window:
            start += 1
        best = max(best, end - start + 1)
    return best


def test_limiter_shares_the_rate_between_independent_database_connections(database: Any) -> None:
    """Two threads, each with its own Database (own engine and connections) as two workers."""
    channel_id = f"rate-{secrets.token_hex(4)}"
    rate, per_worker = 100.0, 60
    slots: list[float] = []
    lock = threading.Lock()

    def worker() -> None:
        own = Database(database.url)
        try:
            for _ in range(per_worker):
                slot = line_rate.acquire(own, channel_id, "push", rate=rate, batch=5)
                with lock:
                    slots.append(slot)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(slots) == 2 * per_worker
    # slots handed out are spaced by 1/rate overall: at most rate*0.2 + the burst tolerance
    # (rate * TOLERANCE) in any 0.2 s; two unshared limiters would give about twice that
    allowed = int(rate * 0.2 + rate * line_rate.TOLERANCE) + 1
    assert _max_in_window(slots, 0.2) <= allowed


CHILD = """
import json, sys
from openmaac.channels import line_rate
from openmaac.db.engine import Database
db = Database(sys.argv[1])
print(json.dumps([line_rate.acquire(db, sys.argv[2], "multicast", rate=50.0, batch=2) for _ in range(30)]))
"""


def test_limiter_holds_across_processes(database: Any) -> None:
    channel_id = f"rate-{secrets.token_hex(4)}"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2] / "src")}
    children = [subprocess.Popen([sys.executable, "-c", CHILD, database.url, channel_id], env=env,
                                 stdout=subprocess.PIPE, text=True) for _ in range(2)]
    slots: list[float] = []
    for child in children:
        out, _ = child.communicate(timeout=120)
        assert child.returncode == 0
        slots += json.loads(out)
    assert len(slots) == 60
    assert _max_in_window(slots, 0.2) <= int(50 * 0.2 + 50 * line_rate.TOLERANCE) + 1


def test_clients_sharing_a_limiter_stay_under_the_simulators_limit(channel: Channel, database: Any) -> None:
    """Two workers (own Database each) push as fast as they can; LINE never answers 429."""
    channel.limits(push={"rate": 50, "burst": 8})
    user = channel.friend()
    errors: list[Exception] = []

    def worker() -> None:
        own = Database(database.url)
        limiter = line_rate.limiter(own, channel.channel_id, rates={"push": 40.0})
        try:
            with channel.client(limiter=limiter, max_attempts=1) as client:
                for _ in range(25):
                    client.push(user, TEXT, retry_key=new_retry_key())
        except Exception as exc:  # noqa: BLE001
            errors.append(exc)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    assert [r["status"] for r in channel.requests()] == [200] * 50
    assert len(channel.inbox(user)) == 50


def test_a_slot_prefetched_in_a_write_needs_no_lease_transaction_of_its_own(database: Any, monkeypatch: Any) -> None:
    """A push leases its rate slot inside the write it makes anyway; acquiring it afterwards
    opens no transaction (the lease used to cost one per push on a quiet channel)."""
    channel_id = f"rate-{secrets.token_hex(4)}"
    own = Database(database.url)
    try:
        with own.write() as session:
            line_rate.prefetch(session.connection(), own, channel_id, "push", rate=100.0, batch=5)

        def no_transaction(*_args: Any) -> float:
            raise AssertionError("acquire leased in a transaction of its own")

        monkeypatch.setattr(line_rate, "_lease", no_transaction)
        slot = line_rate.acquire(own, channel_id, "push", rate=100.0, batch=5)
        assert abs(slot - time.time()) < 1.0
    finally:
        own.dispose()


def test_slots_taken_in_the_callers_own_statement_serve_acquire(database: Any, monkeypatch: Any) -> None:
    """A PostgreSQL push takes its batch of slots in its accepting statement (``PG_TAKE`` as a
    CTE): once it reports the row's answer, acquire needs no lease of its own."""
    if database.is_sqlite:
        pytest.skip("PostgreSQL: the slots ride in the caller's data-modifying CTE")
    from sqlalchemy import text

    channel_id = f"rate-{secrets.token_hex(4)}"
    own = Database(database.url)
    try:
        with own.write() as session, line_rate.lease_in_statement(own, channel_id, "push", rate=100.0,
                                                                   batch=5) as taking:
            assert taking is not None
            row = session.execute(text(f"WITH rate AS ({line_rate.PG_TAKE}) SELECT next_free, db_now FROM rate"),
                                  taking.params).one()
            taking.taken(row[0], row[1])

        def no_transaction(*_args: Any) -> float:
            raise AssertionError("acquire leased in a transaction of its own")

        monkeypatch.setattr(line_rate, "_lease", no_transaction)
        slots = [line_rate.acquire(own, channel_id, "push", rate=100.0, batch=5) for _ in range(5)]
        assert all(abs(slot - time.time()) < 1.0 for slot in slots)
        assert [round(b - a, 3) for a, b in zip(slots, slots[1:], strict=False)] == [0.01] * 4  # 100/s apart
    finally:
        own.dispose()


def test_prefetched_and_leased_slots_share_the_rate(database: Any) -> None:
    """One worker prefetches in its writes, another leases plainly: together within the rate."""
    channel_id = f"rate-{secrets.token_hex(4)}"
    rate, per_worker = 100.0, 60
    slots: list[float] = []
    lock = threading.Lock()

    def worker(prefetching: bool) -> None:
        own = Database(database.url)
        try:
            for _ in range(per_worker):
                if prefetching:
                    with own.write() as session:
                        line_rate.prefetch(session.connection(), own, channel_id, "push", rate=rate, batch=5)
                slot = line_rate.acquire(own, channel_id, "push", rate=rate, batch=5)
                with lock:
                    slots.append(slot)
        finally:
            own.dispose()

    threads = [threading.Thread(target=worker, args=(flag,)) for flag in (True, False)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(slots) == 2 * per_worker
    assert _max_in_window(slots, 0.2) <= int(rate * 0.2 + rate * line_rate.TOLERANCE) + 1


def test_prefetch_never_waits_for_a_lease_held_by_a_caller_waiting_for_the_database(database: Any) -> None:
    """A push prefetches its slot inside its write; another thread may hold the channel's
    lease while it waits for that very write (SQLite's write lock, PostgreSQL's bucket row).
    Prefetch must then step aside, not wait: waiting was a deadlock."""
    channel_id = f"rate-{secrets.token_hex(4)}"
    own = Database(database.url)
    line_rate.acquire(own, channel_id, "push", rate=100.0, batch=5)  # the lease exists
    lock = line_rate._locks[(id(own), channel_id, "push")]
    finished = threading.Event()

    def prefetch_in_a_write() -> None:
        with own.write() as session:
            line_rate.prefetch(session.connection(), own, channel_id, "push", rate=100.0, batch=5)
        finished.set()

    try:
        with lock:  # as a thread inside acquire() would hold it
            thread = threading.Thread(target=prefetch_in_a_write, daemon=True)
            thread.start()
            assert finished.wait(10), "prefetch waited for the lease"
        thread.join(10)
    finally:
        own.dispose()


def test_leases_for_many_channels_are_taken_by_one_statement(database: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """``leases_in_statement``: the channels this process holds no fresh slot for are leased by
    the caller's one ``PG_TAKE_MANY`` statement; a channel with a fresh lease is left out, and
    the slots taken are handed out by ``acquire`` with no lease of its own."""
    if database.is_sqlite:
        pytest.skip("PostgreSQL only: the statement takes the slots of an array of channels")
    from sqlalchemy import text

    fresh, stale, other = (f"many-{name}-{secrets.token_hex(4)}" for name in ("fresh", "stale", "other"))
    # a lease of its own, fresh for a while: the second (a first one on an idle bucket starts
    # TOLERANCE in the past, which lease_in_statement already counts as stale)
    line_rate.acquire(database, fresh, "push", cost=50)
    line_rate.acquire(database, fresh, "push")
    with database.write() as session:
        conn = session.connection()
        with line_rate.leases_in_statement(database, [stale, fresh, other, stale], "push") as (takings, params):
            assert sorted(takings) == sorted([stale, other]) and params["channels"] == sorted([stale, other])
            rows = conn.execute(text(line_rate.PG_TAKE_MANY), params).all()
            assert sorted(row[0] for row in rows) == sorted([stale, other])
            for channel_id, next_free, db_now in rows:
                takings[channel_id].taken(next_free, db_now)

    def no_lease(*_args: Any, **_kwargs: Any) -> float:
        raise AssertionError("acquire leased again")

    monkeypatch.setattr(line_rate, "_lease", no_lease)
    for channel_id in (stale, other, fresh):
        assert line_rate.acquire(database, channel_id, "push") <= time.time() + 0.05
