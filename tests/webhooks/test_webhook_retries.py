"""The long retry schedule after MAAC's 1 s, 2 s, 4 s, and endpoint health.

Time is moved forward by rewriting stored due times (``webhook_clock``), never by waiting.
"""

from __future__ import annotations

import json
import time
from datetime import datetime, timedelta

import pytest
from webhook_clock import backdate_failures, make_retries_due
from webhook_receiver import Receiver, deliveries

from helpers import wait_for
from openmaac.webhooks.schedule import DISABLE_AFTER, MAX_ATTEMPTS, RETRY_DELAYS


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def add_webhook(tenant, url: str) -> dict:
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": ["message.first_open"]})
    assert response.status_code == 201, response.text
    return response.json()


def endpoint(tenant, webhook_id: int) -> dict:
    response = tenant.client.get(tenant.api(f"webhook/{webhook_id}/"))
    assert response.status_code == 200, response.text
    return response.json()


def emit(database, tenant, n: int, contact: str | None = None) -> int:
    from openmaac.webhooks.events import emit as emit_event

    with database.write() as session:
        return emit_event(session, tenant.id, "message.first_open", {"n": n, "line_uid": contact},
                          ordering_key=contact)


def dispatcher_job(database, webhook_id: int):
    from sqlalchemy import select

    from openmaac.jobs.models import Job
    from openmaac.webhooks.service import dispatch_key

    with database.read() as session:
        return session.scalar(select(Job.id).where(Job.unique_key == dispatch_key(webhook_id)))


def numbers(requests) -> list[int]:
    return [json.loads(r.body)["data"]["n"] for r in requests]


def waiting_long(row: dict) -> bool:
    """Pending, its fast retries spent, its next attempt minutes away."""
    return row["status"] == "pending" and row["attempts"] == 4 and row["next_attempt_at"] is not None and \
        datetime.fromisoformat(row["next_attempt_at"]) - datetime.fromisoformat(row["last_attempt_at"]) \
        == timedelta(seconds=RETRY_DELAYS[3])


def test_schedule_keeps_maacs_retries_then_goes_on_for_about_three_days():
    assert RETRY_DELAYS[:3] == (1.0, 2.0, 4.0)
    assert RETRY_DELAYS[3:] == (300.0, 1800.0, 7200.0, 18000.0) + (36000.0,) * 6
    assert MAX_ATTEMPTS == 14
    assert timedelta(days=2.5) < timedelta(seconds=sum(RETRY_DELAYS)) < timedelta(days=3)
    assert DISABLE_AFTER == timedelta(days=5)


def test_receiver_down_22_seconds_gets_every_event_without_replay(tenant, database):
    receiver = Receiver()
    receiver.reserve_port()  # nothing listens: connections are refused
    created = add_webhook(tenant, receiver.url)
    started = time.monotonic()
    for n in range(300):  # 300 events over ~20 s, for 30 contacts
        emit(database, tenant, n, f"U{n % 30}")
        time.sleep(max(0.0, started + n * 20 / 300 - time.monotonic()))
    time.sleep(max(0.0, started + 22 - time.monotonic()))
    receiver.start()
    try:
        # The first events have spent MAAC's three retries (1 s, 2 s, 4 s) and wait 5 minutes:
        # they used to fail here, for good, until someone replayed them.
        def settled() -> list[dict] | None:
            rows = deliveries(tenant, created["id"])
            done = all(r["status"] == "succeeded" or waiting_long(r) for r in rows)
            return rows if done else None
        rows = wait_for(settled, timeout=60, interval=0.2)
        assert len(rows) == 300 and not deliveries(tenant, created["id"], "failed")
        late = [r for r in rows if r["status"] == "pending"]
        assert len(late) >= 30  # at least every contact's first event
        assert all(r["last_error"].startswith("ClientConnectorError") for r in late)

        assert make_retries_due(database, created["id"]) == len(late)  # five minutes later
        wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 300, timeout=60, interval=0.2)
        keys = [r.key for r in receiver.successful()]
        assert len(keys) == len(set(keys)) == 300
        assert sorted(numbers(receiver.successful())) == list(range(300))
    finally:
        receiver.stop()


def test_deliveries_show_attempts_and_next_attempt_along_the_whole_schedule(tenant, receiver, database):
    receiver.default_status = 503
    created = add_webhook(tenant, receiver.url)
    emit(database, tenant, 1, "A")
    for attempts in range(4, MAX_ATTEMPTS):
        [row] = wait_for(lambda n=attempts: [r for r in deliveries(tenant, created["id"])
                                             if r["attempts"] == n and r["next_attempt_at"]], timeout=30)
        assert row["status"] == "pending" and row["max_attempts"] == MAX_ATTEMPTS
        wait = datetime.fromisoformat(row["next_attempt_at"]) - datetime.fromisoformat(row["last_attempt_at"])
        assert wait == timedelta(seconds=RETRY_DELAYS[attempts - 1])
        assert len(receiver.requests) == attempts  # nothing is sent before its time
        assert make_retries_due(database, created["id"]) == 1
    [row] = wait_for(lambda: deliveries(tenant, created["id"], "failed"), timeout=30)
    assert (row["attempts"], row["next_attempt_at"], row["last_status_code"]) == (MAX_ATTEMPTS, None, 503)
    assert len(receiver.requests) == MAX_ATTEMPTS and len({r.key for r in receiver.requests}) == 1


def test_a_delivery_waiting_long_does_not_hold_back_later_events(tenant, receiver, database):
    """Order per contact holds within MAAC's fast retries; an event that needs the long
    schedule steps aside so its contact's later events are not held for hours."""
    created = add_webhook(tenant, receiver.url)
    receiver.statuses = [503, 503, 503, 503]  # the first event's four fast attempts
    emit(database, tenant, 0, "A")
    wait_for(lambda: waiting_long(deliveries(tenant, created["id"])[0]), timeout=30)
    emit(database, tenant, 1, "A")
    emit(database, tenant, 2, "B")
    emit(database, tenant, 3)
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 3, timeout=30)
    assert sorted(numbers(receiver.successful())) == [1, 2, 3]
    [late] = deliveries(tenant, created["id"], "pending")
    make_retries_due(database, created["id"])
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 4, timeout=30)
    assert numbers(receiver.successful())[-1] == 0 and receiver.successful()[-1].key == late["idempotency_key"]


def test_replay_sends_waiting_deliveries_now(tenant, receiver, database):
    receiver.statuses = [503, 503, 503, 503]
    created = add_webhook(tenant, receiver.url)
    emit(database, tenant, 0, "A")
    wait_for(lambda: waiting_long(deliveries(tenant, created["id"])[0]), timeout=30)
    response = tenant.client.post(tenant.api(f"webhook/{created['id']}/replay/"), json={})
    assert response.status_code == 200 and response.json() == {"replayed": 1}
    [row] = wait_for(lambda: deliveries(tenant, created["id"], "succeeded"), timeout=30)
    assert row["attempts"] == 1 and len(receiver.successful()) == 1


def test_endpoint_failing_for_five_days_is_deactivated_then_a_successful_test_resumes_it(tenant, receiver,
                                                                                          database):
    receiver.default_status = 500
    created = add_webhook(tenant, receiver.url)
    assert endpoint(tenant, created["id"])["failing_since"] is None
    emit(database, tenant, 0, "A")
    failing = wait_for(lambda: endpoint(tenant, created["id"])["failing_since"], timeout=30)

    # Failing for a little less than the threshold: still active, still failing since then.
    backdate_failures(database, created["id"], DISABLE_AFTER - timedelta(hours=1))
    emit(database, tenant, 1, "B")
    wait_for(lambda: any(r["attempts"] >= 2 for r in deliveries(tenant, created["id"]) if "B" in r["body"]),
             timeout=30)
    shown = endpoint(tenant, created["id"])
    assert shown["is_active"] is True and shown["failing_since"] < failing

    # Past the threshold: the next failed attempt deactivates it, with a reason.
    backdate_failures(database, created["id"], timedelta(hours=2))
    make_retries_due(database, created["id"])
    shown = wait_for(lambda: not endpoint(tenant, created["id"])["is_active"] and endpoint(tenant, created["id"]),
                     timeout=30)
    assert shown["disabled_at"] is not None
    assert shown["disabled_reason"].startswith("deactivated by openmaac: every delivery attempt failed for 5 days")
    assert "HTTP 500" in shown["disabled_reason"]
    sent = len(receiver.requests)
    queued = deliveries(tenant, created["id"], "pending")
    assert len(queued) == 2  # kept, not failed
    assert emit(database, tenant, 2, "C") == 0  # nothing new is queued for it
    make_retries_due(database, created["id"])  # wakes its dispatcher, which stops without sending
    wait_for(lambda: dispatcher_job(database, created["id"]) is None, timeout=30)
    assert len(receiver.requests) == sent

    # The receiver works again; a successful test resumes the endpoint and its queue.
    receiver.default_status = 200
    response = tenant.client.post(tenant.api(f"webhook/{created['id']}/test/"))
    assert response.status_code == 200 and response.json()["status"] == "succeeded"
    shown = endpoint(tenant, created["id"])
    assert (shown["is_active"], shown["failing_since"], shown["disabled_at"], shown["disabled_reason"]) == (
        True, None, None, None)
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 3, timeout=30)  # the test and both
    assert sorted(numbers(r for r in receiver.successful() if "webhook.test" not in r.body.decode())) == [0, 1]


def test_patch_reactivates_a_deactivated_endpoint_but_a_test_does_not_resume_a_paused_one(tenant, receiver,
                                                                                           database):
    receiver.default_status = 500
    created = add_webhook(tenant, receiver.url)
    emit(database, tenant, 0, "A")
    wait_for(lambda: endpoint(tenant, created["id"])["failing_since"], timeout=30)
    backdate_failures(database, created["id"], DISABLE_AFTER + timedelta(minutes=1))
    make_retries_due(database, created["id"])
    wait_for(lambda: not endpoint(tenant, created["id"])["is_active"], timeout=30)

    receiver.default_status = 200
    response = tenant.client.patch(tenant.api(f"webhook/{created['id']}/"), json={"is_active": True})
    assert response.status_code == 200
    assert (response.json()["is_active"], response.json()["failing_since"], response.json()["disabled_reason"]) == (
        True, None, None)
    wait_for(lambda: deliveries(tenant, created["id"], "succeeded"), timeout=30)  # due at once, not in hours

    # Paused on request: disabled_at, no reason; a successful test leaves it paused.
    response = tenant.client.patch(tenant.api(f"webhook/{created['id']}/"), json={"is_active": False})
    assert response.json()["disabled_at"] is not None and response.json()["disabled_reason"] is None
    assert tenant.client.post(tenant.api(f"webhook/{created['id']}/test/")).json()["status"] == "succeeded"
    assert endpoint(tenant, created["id"])["is_active"] is False


def test_a_success_clears_failing_since(tenant, receiver, database):
    receiver.statuses = [503, 503, 503, 503]
    created = add_webhook(tenant, receiver.url)
    emit(database, tenant, 0, "A")
    wait_for(lambda: waiting_long(deliveries(tenant, created["id"])[0]), timeout=30)
    failing = endpoint(tenant, created["id"])["failing_since"]
    # the first failed attempt, made after the event was queued (times compared as times: the
    # two may fall in different seconds)
    queued = datetime.fromisoformat(deliveries(tenant, created["id"])[0]["created_at"])
    assert failing is not None and queued <= datetime.fromisoformat(failing) < queued + timedelta(seconds=30)
    make_retries_due(database, created["id"])
    wait_for(lambda: deliveries(tenant, created["id"], "succeeded"), timeout=30)
    assert endpoint(tenant, created["id"])["failing_since"] is None
