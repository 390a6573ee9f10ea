"""Send jobs claimed together run as one batch (``sending.run_direct_messages``): on PostgreSQL
their messages start in one statement and record in one per organisation, on SQLite message by
message. Either way each message must end as it would alone: every recipient delivered once,
LINE's refusals and failures reported per mark, ``message.send`` announced for the accepted
recipients only, the jobs ended, and a run of the same jobs again sends nothing more.

The test runs the batch handler itself on jobs it holds, so the batch is exactly the one it
builds (the embedded worker is kept from claiming them meanwhile)."""

from __future__ import annotations

import json
from datetime import timedelta

import httpx
import pytest
from sqlalchemy import select, update

from conftest import SIMULATOR_URL
from helpers import (
    CallbackReceiver,
    ServedApp,
    create_template,
    inbox,
    new_line_uid,
    seed_contacts,
    simulated_friend,
    wait_for,
    worker_held,
)

TEST_WORKER = "test-send-batches"


def _take_jobs(database, dm_ids: list[int]):
    """The send jobs of ``dm_ids``, claimed by this test (running, leased to TEST_WORKER)."""
    from openmaac.db.base import utcnow
    from openmaac.jobs.models import Job
    from openmaac.jobs.registry import JobContext

    keys = [f"direct_message.send:{dm_id}" for dm_id in dm_ids]
    with database.write() as session:
        session.execute(update(Job).where(Job.unique_key.in_(keys)).values(
            status="running", locked_by=TEST_WORKER, locked_until=utcnow() + timedelta(seconds=60),
            attempts=Job.attempts + 1))
        jobs = {key: (job_id, org, attempts) for job_id, key, org, attempts in session.execute(
            select(Job.id, Job.unique_key, Job.organization_id, Job.attempts).where(Job.unique_key.in_(keys)))}
    missing = [dm_id for dm_id, key in zip(dm_ids, keys, strict=True) if key not in jobs]
    if missing:  # (seen once in a full PostgreSQL run: what became of them, for the next look)
        from openmaac.messaging.models import DirectMessage

        with database.read() as session:
            states = session.execute(select(DirectMessage.id, DirectMessage.status, DirectMessage.updated_at)
                                     .where(DirectMessage.id.in_(missing))).all()
        pytest.fail(f"send jobs of {missing} gone before the test took them: messages {states}")
    items = []
    for dm_id, key in zip(dm_ids, keys, strict=True):
        job_id, org, attempts = jobs[key]
        items.append(({"id": dm_id}, JobContext(job_id=job_id, kind="direct_message.send", organization_id=org,
                                                attempt=attempts, worker_id=TEST_WORKER)))
    return items


def _status(tenant, dm_id):
    return tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()


def _line_calls(tenant):
    return httpx.get(f"{SIMULATOR_URL}/_admin/requests", params={"channel_id": tenant.channel_id}).json()


def test_send_jobs_of_one_batch_end_as_each_would_alone(server, database, make_tenant):
    from openmaac.jobs.models import Job
    from openmaac.messaging.sending import run_direct_messages

    shop, other = make_tenant(), make_tenant()
    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    try:
        hook = shop.client.post(shop.api("webhook/"), json={"url": served.url + "/cdh", "topics": ["message.send"],
                                                          "style": "cdh"})
        assert hook.status_code == 201, hook.text
        friends = [simulated_friend(shop) for _ in range(5)]
        strangers = seed_contacts(shop, 1)  # a contact LINE never heard of: LINE refuses the multicast
        unknown = new_line_uid()
        others = [simulated_friend(other) for _ in range(3)]
        template = create_template(shop, [{"type": "text", "text": "Sale {{when}}"}])
        other_template = create_template(other, [{"type": "text", "text": "Hi {{when}}"}])

        def enhanced(tenant, template_id, uids):
            response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
                "template_id": template_id, "line_uids": uids, "data": {"when": "now"}})
            assert response.status_code == 200, response.text
            return response.json()["id"]

        with worker_held(server):
            accepted = enhanced(shop, template["id"], [friends[0], unknown, friends[1]])
            split = enhanced(shop, template["id"], [friends[2], strangers[0], friends[3]])
            failing = enhanced(other, other_template["id"], others[:2])
            multicast = other.client.post(other.api("direct_message/multicast/"), json={
                "template_id": other_template["id"], "data": [{"line_uid": others[2], "when": "later"}]})
            assert multicast.status_code == 200, multicast.text
            planned = multicast.json()["id"]
            items = _take_jobs(database, [accepted, split, failing, planned])
        httpx.post(f"{SIMULATOR_URL}/_admin/faults", json={"kind": "quota", "endpoint": "multicast",
                                                            "channel_id": other.channel_id, "count": 10},
                   ).raise_for_status()
        try:
            assert run_direct_messages(items) == [None, None, None, None]
        finally:
            httpx.delete(f"{SIMULATOR_URL}/_admin/faults", params={"channel_id": other.channel_id})

        result = _status(shop, accepted)
        assert result["status"] == "sent"
        assert (result["result"]["total_count"], result["result"]["fail_count"]) == (3, 1)
        assert result["result"]["fail_info"] == [{"line_uid": unknown, "mark": 1, "response": "Contact not found"}]
        result = _status(shop, split)
        assert result["status"] == "sent"
        assert (result["result"]["total_count"], result["result"]["fail_count"]) == (3, 1)
        assert result["result"]["fail_info"] == [
            {"line_uid": strangers[0], "mark": 1, "response": '{"message": "Failed to send messages"}'}]
        result = _status(other, failing)
        assert result["status"] == "sent"
        assert (result["result"]["total_count"], result["result"]["fail_count"]) == (2, 2)
        assert {f["response"] for f in result["result"]["fail_info"]} == {
            '{"message": "You have reached your monthly limit."}'}
        assert _status(other, planned)["status"] == "sent"
        for uid in friends[:4]:
            assert [m["message"]["text"] for m in inbox(uid)] == ["Sale now"]
        assert inbox(friends[4]) == [] and inbox(others[0]) == [] and inbox(others[1]) == []
        assert [m["message"]["text"] for m in inbox(others[2])] == ["Hi later"]
        with database.read() as session:
            assert session.scalars(select(Job.id).where(Job.id.in_([c.job_id for _p, c in items]))).all() == []
        assert all(context.completed for _payload, context in items)

        # the shop's accepted recipients are announced, once each
        wait_for(lambda: len(receiver.at("/cdh")) >= 4, timeout=30)
        announced = sorted((json.loads(r["body"])["data"]["line_uid"], json.loads(r["body"])["data"]["direct_message_id"])
                           for r in receiver.at("/cdh"))
        assert announced == sorted([(friends[0], accepted), (friends[1], accepted),
                                    (friends[2], split), (friends[3], split)])

        # the same jobs run again (a retry after a lost answer): nothing more is sent or recorded
        calls = (len(_line_calls(shop)), len(_line_calls(other)))
        assert run_direct_messages(items) == [None, None, None, None]
        assert (len(_line_calls(shop)), len(_line_calls(other))) == calls
        assert (_status(shop, accepted)["result"]["fail_count"], _status(other, failing)["result"]["fail_count"]) \
            == (1, 2)
        assert [m["message"]["text"] for m in inbox(friends[0])] == ["Sale now"]
        assert len(receiver.at("/cdh")) == 4
    finally:
        served.stop()
