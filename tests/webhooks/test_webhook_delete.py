"""What happens to queued deliveries when an endpoint is deleted, or paused instead.

Chosen behaviour (docs/webhooks.md, "Removing or pausing an endpoint"): ``DELETE webhook/{id}/``
drops the endpoint's queued deliveries and its delivery log; nothing more is sent to it.
``PATCH {"is_active": false}`` is the way to stop sending without losing what is queued:
the queued deliveries wait and go out, same body and key, once the endpoint is active again.
"""

from __future__ import annotations

import json

import pytest
from sqlalchemy import func, select
from webhook_receiver import Receiver, deliveries

from helpers import wait_for


def add_webhook(tenant, url: str, topics: list[str]) -> dict:
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": topics, "style": "maac"})
    assert response.status_code == 201, response.text
    return response.json()


def emit_events(database, tenant, count: int, first: int = 0) -> None:
    from openmaac.webhooks.events import emit

    with database.write() as session:
        for n in range(first, first + count):
            emit(session, tenant.id, "message.first_open", {"n": n, "line_uid": f"U{n}"}, ordering_key=f"U{n}")


def dispatcher_job(database, webhook_id: int):
    from openmaac.jobs.models import Job
    from openmaac.webhooks.service import dispatch_key

    with database.read() as session:
        return session.scalar(select(Job.id).where(Job.unique_key == dispatch_key(webhook_id)))


def rows_of(database, webhook_id: int) -> int:
    from openmaac.webhooks.models import WebhookDelivery

    with database.read() as session:
        return int(session.scalar(select(func.count()).where(WebhookDelivery.endpoint_id == webhook_id)))


@pytest.fixture
def down_receiver():
    """A receiver whose port is reserved but not listening yet: connections are refused."""
    receiver = Receiver()
    receiver.reserve_port()
    yield receiver
    receiver.stop()


def test_delete_drops_queued_deliveries_and_sends_nothing_more(tenant, database, down_receiver):
    with Receiver() as other:
        gone = add_webhook(tenant, down_receiver.url, ["message.first_open"])
        keep = add_webhook(tenant, other.url, ["message.first_open"])
        emit_events(database, tenant, 3)
        # Each of gone's deliveries has failed twice (connection refused) and waits 2 s for its
        # third attempt: the delete lands while none of them is being sent.
        wait_for(lambda: [d["attempts"] for d in deliveries(tenant, gone["id"])] == [2, 2, 2], timeout=30)
        assert tenant.client.delete(tenant.api(f"webhook/{gone['id']}/")).status_code == 204
        down_receiver.start()  # the address answers 200 from now on

        assert rows_of(database, gone["id"]) == 0
        response = tenant.client.get(tenant.api(f"webhook/{gone['id']}/deliveries/"))
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}
        assert tenant.client.post(tenant.api(f"webhook/{gone['id']}/replay/"), json={}).status_code == 404
        # Its dispatcher wakes for the retry that was due, finds no endpoint, and stops for good.
        wait_for(lambda: dispatcher_job(database, gone["id"]) is None, timeout=30)
        assert down_receiver.requests == []
        # New events go to the remaining endpoint only.
        emit_events(database, tenant, 1, first=3)
        assert rows_of(database, gone["id"]) == 0

        # The other endpoint of the organisation lost nothing.
        wait_for(lambda: len(deliveries(tenant, keep["id"], "succeeded")) == 4, timeout=30)
        assert sorted(json.loads(r.body)["data"]["n"] for r in other.successful()) == [0, 1, 2, 3]
    assert down_receiver.requests == []


def test_pause_keeps_queued_deliveries_until_reactivated(tenant, database, down_receiver):
    paused = add_webhook(tenant, down_receiver.url, ["message.first_open"])
    emit_events(database, tenant, 2)
    wait_for(lambda: all(d["attempts"] >= 1 for d in deliveries(tenant, paused["id"])), timeout=30)
    response = tenant.client.patch(tenant.api(f"webhook/{paused['id']}/"), json={"is_active": False})
    assert response.status_code == 200 and response.json()["is_active"] is False
    # The dispatcher stops; the queued deliveries stay pending, untouched.
    wait_for(lambda: dispatcher_job(database, paused["id"]) is None, timeout=30)
    queued = deliveries(tenant, paused["id"])
    assert [d["status"] for d in queued] == ["pending", "pending"]
    # Events while paused are not queued for it.
    emit_events(database, tenant, 1, first=2)
    assert len(deliveries(tenant, paused["id"])) == 2

    down_receiver.start()
    response = tenant.client.patch(tenant.api(f"webhook/{paused['id']}/"), json={"is_active": True})
    assert response.status_code == 200
    wait_for(lambda: len(deliveries(tenant, paused["id"], "succeeded")) == 2, timeout=30)
    assert sorted(json.loads(r.body)["data"]["n"] for r in down_receiver.successful()) == [0, 1]
    assert {r.key for r in down_receiver.successful()} == {d["idempotency_key"] for d in queued}
