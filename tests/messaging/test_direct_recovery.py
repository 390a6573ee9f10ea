"""Effectively once: a LINE call whose outcome was never recorded (the process died after LINE
accepted it) is finished by the job with the SAME X-Line-Retry-Key, and LINE's 409 counts as
sent: the user gets the message once."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta

import httpx
import pytest

from conftest import SIMULATOR_URL
from helpers import (
    CallbackReceiver,
    ServedApp,
    create_event,
    create_template,
    inbox,
    simulated_friend,
    wait_for,
)


def test_crashed_push_is_finished_with_its_stored_retry_key(tenant, database):
    from openmaac.db.base import utcnow
    from openmaac.jobs.queue import enqueue
    from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, DirectMessageSend

    uid = simulated_friend(tenant)
    template = create_template(tenant, [{"type": "text", "text": "hello"}])
    retry_key = str(uuid.uuid4())
    messages = [{"type": "text", "text": "hello"}]
    # LINE accepted the call ...
    accepted = httpx.post(f"{SIMULATOR_URL}/v2/bot/message/push", json={"to": uid, "messages": messages},
                          headers={"Authorization": f"Bearer {tenant.access_token}", "X-Line-Retry-Key": retry_key})
    assert accepted.status_code == 200
    # ... but the process died before recording it: the rows written before the call remain,
    # with the send's lease expired, and the recovery job is due
    now = utcnow()
    with database.write() as session:
        dm = DirectMessage(organization_id=tenant.id, category="push", template_id=template["id"], status="sending",
                           tracked=False, total_count=1, fail_count=0, created_at=now, updated_at=now)
        session.add(dm)
        session.flush()
        recipient = DirectMessageRecipient(direct_message_id=dm.id, organization_id=tenant.id, mark=0, line_uid=uid,
                                           status="pending")
        session.add(recipient)
        session.flush()
        session.add(DirectMessageSend(direct_message_id=dm.id, organization_id=tenant.id, method="push",
                                      retry_key=retry_key, recipient_ids=[recipient.id], to=[uid], messages=messages,
                                      status="pending", locked_until=now - timedelta(seconds=1), created_at=now))
        enqueue(session, "direct_message.send", {"id": dm.id}, organization_id=tenant.id)
        dm_id = dm.id
    record = wait_for(lambda: (b := tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json())["status"] == "sent"
                      and b, timeout=30)
    assert record["result"]["fail_count"] == 0 and record["result"]["fail_info"] == []
    assert len(inbox(uid)) == 1
    log = httpx.get(f"{SIMULATOR_URL}/_admin/requests", params={"channel_id": tenant.channel_id,
                                                                 "endpoint": "push"}).json()
    assert [r["status"] for r in log if r["retry_key"] == retry_key] == [200, 409]


@pytest.fixture
def cdh_hook(tenant):
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    response = tenant.client.post(tenant.api("webhook/"), json={"url": served.url + "/cdh", "topics": ["message.send"],
                                                                  "style": "cdh"})
    assert response.status_code == 201, response.text
    yield receiver
    served.stop()


def _sent_events(receiver):
    return [json.loads(r["body"]) for r in receiver.at("/cdh")]


@pytest.mark.parametrize("tracked", [False, True], ids=["untracked", "tracked"])
def test_a_push_accepted_then_never_called_is_sent_by_its_recovery_job(tenant, database, monkeypatch, cdh_hook,
                                                                         tracked):
    """What the push writes before calling LINE, alone (the process died right after the
    commit): the recovery job sends it once, the status reads as the push's, and the CDH
    ``message.send`` carries the contact's customer id. An untracked push keeps no recipient
    row (its call row lists the recipient); a tracked one does."""
    from sqlalchemy import select, update

    from openmaac.auth.service import OrgContext
    from openmaac.contacts.models import Contact
    from openmaac.messaging import sending
    from openmaac.messaging.models import DirectMessageRecipient

    uid = simulated_friend(tenant)
    with database.write() as session:
        session.execute(update(Contact).where(Contact.organization_id == tenant.id, Contact.line_uid == uid)
                        .values(customer_id="C-42"))
        contact_id = session.scalar(select(Contact.id).where(Contact.organization_id == tenant.id,
                                                             Contact.line_uid == uid))
    template = create_template(tenant, [{"type": "text", "text": "hello"}])
    event_id = create_event(tenant, "recovered") if tracked else None
    monkeypatch.setattr(sending, "send_lease", lambda: timedelta(seconds=-2))  # already lapsed: the job is due
    org = OrgContext(id=tenant.id, name="t", timezone="Asia/Taipei", region="tw")
    with database.write() as session:
        dm, _send_id, retry_key, _refs, _messages = sending._accept_push(
            session, org, template["id"], event_id, uid, contact_id, {}, [{"type": "text", "text": "hello"}], None)
    with database.read() as session:
        rows = session.scalars(select(DirectMessageRecipient.id)
                               .where(DirectMessageRecipient.direct_message_id == dm.id)).all()
    assert len(rows) == (1 if tracked else 0)

    record = wait_for(lambda: (b := tenant.client.get(tenant.api(f"direct_message/{dm.id}/")).json())["status"] == "sent"
                      and b, timeout=30)
    assert record["category"] == "push" and record["event_id"] == event_id
    assert record["result"]["to"] == {"line_ids": [uid]}
    assert record["result"]["total_count"] == 1 and record["result"]["fail_count"] == 0
    assert record["result"]["fail_info"] == []
    assert len(inbox(uid)) == 1
    log = httpx.get(f"{SIMULATOR_URL}/_admin/requests", params={"channel_id": tenant.channel_id,
                                                                 "endpoint": "push"}).json()
    assert [r["status"] for r in log if r["retry_key"] == retry_key] == [200]
    wait_for(lambda: _sent_events(cdh_hook), timeout=30)
    [event] = _sent_events(cdh_hook)
    assert event["event"] == "message.send"
    assert event["data"]["line_uid"] == uid and event["data"]["customer_id"] == "C-42"
    assert event["data"]["direct_message_id"] == dm.id and event["data"]["campaign_id"] == event_id


def test_an_answered_push_announces_its_send_with_the_customer_id(tenant, database, cdh_hook):
    from sqlalchemy import update

    from openmaac.contacts.models import Contact

    uid = simulated_friend(tenant)
    with database.write() as session:
        session.execute(update(Contact).where(Contact.organization_id == tenant.id, Contact.line_uid == uid)
                        .values(customer_id="C-7"))
    template = create_template(tenant, [{"type": "text", "text": "hello"}])
    response = tenant.client.post(tenant.api("direct_message/push/"),
                                  json={"template_id": template["id"], "data": {"line_uid": uid}})
    assert response.status_code == 200 and response.json()["result"] == "success", response.text
    wait_for(lambda: _sent_events(cdh_hook), timeout=30)
    [event] = _sent_events(cdh_hook)
    assert event["data"]["line_uid"] == uid and event["data"]["customer_id"] == "C-7"
    assert event["data"]["direct_message_id"] == response.json()["id"] and event["data"]["campaign_id"] is None


def test_an_answered_push_is_queued_for_each_active_subscribed_endpoint_in_its_style(tenant, database):
    """The push's recording reads the organisation's webhook targets (on PostgreSQL inside its
    recording statement): every active endpoint subscribed to ``message.send`` gets the event,
    a paused one does not, and a MAAC-style body carries the organisation's own offset."""
    from sqlalchemy import select, update

    from openmaac.auth.models import Organization
    from openmaac.webhooks.models import WebhookDelivery

    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    try:
        with database.write() as session:
            session.execute(update(Organization).where(Organization.id == tenant.id).values(timezone="Asia/Tokyo"))
        endpoints = {}
        for name, style in (("cdh", "cdh"), ("maac", "maac"), ("paused", "cdh")):
            response = tenant.client.post(tenant.api("webhook/"), json={
                "url": f"{served.url}/{name}", "topics": ["message.send"], "style": style})
            assert response.status_code == 201, response.text
            endpoints[name] = response.json()["id"]
        paused = tenant.client.patch(tenant.api(f"webhook/{endpoints['paused']}/"), json={"is_active": False})
        assert paused.status_code == 200, paused.text
        uid = simulated_friend(tenant)
        template = create_template(tenant, [{"type": "text", "text": "hello"}])
        response = tenant.client.post(tenant.api("direct_message/push/"),
                                      json={"template_id": template["id"], "data": {"line_uid": uid}})
        assert response.status_code == 200 and response.json()["result"] == "success", response.text
        with database.read() as session:
            queued = {endpoint_id: body for endpoint_id, body in session.execute(
                select(WebhookDelivery.endpoint_id, WebhookDelivery.body)
                .where(WebhookDelivery.organization_id == tenant.id, WebhookDelivery.topic == "message.send"))}
        assert set(queued) == {endpoints["cdh"], endpoints["maac"]}
        maac, cdh = json.loads(queued[endpoints["maac"]]), json.loads(queued[endpoints["cdh"]])
        assert maac["timestamp"].endswith("+09:00") and cdh["timestamp"].endswith("+00:00")
        assert maac["data"]["line_uid"] == uid == cdh["data"]["line_uid"]
        assert maac["data"]["direct_message_id"] == response.json()["id"]
    finally:
        served.stop()


def test_the_push_sweep_queues_only_pushes_whose_lease_lapsed_and_one_sweep_covers_many(tenant, database,
                                                                                      monkeypatch):
    """A push writes no recovery job of its own: the pushes accepted in the same few seconds
    (with the same lease) share one sweep job, which queues the send job of each push whose
    call is still pending after its lease, once, and leaves the pushes still in flight alone."""
    from sqlalchemy import delete, func, select

    from openmaac.auth.service import OrgContext
    from openmaac.contacts.models import Contact
    from openmaac.db.base import utcnow
    from openmaac.jobs.models import Job
    from openmaac.messaging import sending
    from openmaac.messaging.models import DirectMessage

    uid = simulated_friend(tenant)
    with database.read() as session:
        contact_id = session.scalar(select(Contact.id).where(Contact.organization_id == tenant.id,
                                                             Contact.line_uid == uid))
    template = create_template(tenant, [{"type": "text", "text": "hello"}])
    org = OrgContext(id=tenant.id, name="t", timezone="Asia/Taipei", region="tw")
    lease = timedelta(seconds=3600 + uuid.uuid4().int % 1000)  # a sweep key of this test's own

    def accept(lease_now):
        monkeypatch.setattr(sending, "send_lease", lambda: lease_now)
        with database.write() as session:
            dm, *_rest = sending._accept_push(session, org, template["id"], None, uid, contact_id, {},
                                               [{"type": "text", "text": "hello"}], None)
        return dm.id

    def keys(*dm_ids):
        with database.read() as session:
            return set(session.scalars(select(Job.unique_key).where(
                Job.unique_key.in_([f"{sending.JOB_KIND}:{dm_id}" for dm_id in dm_ids]))))

    while utcnow().timestamp() % sending.SWEEP_BUCKET_SECONDS > sending.SWEEP_BUCKET_SECONDS - 1.5:
        threading.Event().wait(0.1)  # the three pushes below in one span
    in_flight = [accept(lease) for _ in range(3)]
    sweep_key = sending.sweep_params(utcnow(), lease)["sweep_key"]
    with database.read() as session:
        sweeps = session.scalars(select(Job).where(Job.unique_key == sweep_key)).all()
        assert len(sweeps) == 1 and sweeps[0].kind == sending.SWEEP_KIND
        assert sweeps[0].run_at > utcnow() + lease  # due after the lease of the span's last push
        assert session.scalar(select(func.count()).select_from(Job).where(
            Job.unique_key.in_([f"{sending.JOB_KIND}:{dm_id}" for dm_id in in_flight]))) == 0
    lapsed = accept(timedelta(seconds=-2))
    sending.sweep_lapsed_pushes({}, None)  # type: ignore[arg-type]
    sending.sweep_lapsed_pushes({}, None)  # type: ignore[arg-type]  # again: nothing more queued
    assert keys(*in_flight) == set()  # still in flight: left alone
    record = wait_for(lambda: (b := tenant.client.get(tenant.api(f"direct_message/{lapsed}/")).json())["status"]
                      == "sent" and b, timeout=30)
    assert record["result"]["total_count"] == 1 and record["result"]["fail_count"] == 0
    assert len(inbox(uid)) == 1  # sent once, by the send job the sweep queued
    with database.write() as session:  # the pushes left in flight go, with their sweep
        session.execute(delete(Job).where(Job.unique_key == sweep_key))
        session.execute(delete(DirectMessage).where(DirectMessage.id.in_(in_flight)))
