"""Effectively once: a LINE call whose outcome was never recorded (the process died after LINE
accepted it) is finished by the job with the SAME X-Line-Retry-Key, and LINE's 409 counts as
sent: the user gets the message once."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx

from conftest import SIMULATOR_URL
from helpers import create_template, inbox, simulated_friend, wait_for


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
