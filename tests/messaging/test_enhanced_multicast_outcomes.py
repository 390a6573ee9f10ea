"""Enhanced multicast: the recipients' records are written with their outcome (not before), so
the status answer must still list every recipient in request order, with the failures' marks,
whether LINE accepted the multicast, refused one of its ids (then each goes by push), or the
recipient was no contact at all."""

from __future__ import annotations

import httpx

from conftest import SIMULATOR_URL
from helpers import create_template, inbox, new_line_uid, seed_contacts, simulated_friend, wait_for


def sent(tenant, dm_id):
    def check():
        body = tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()
        return body if body["status"] == "sent" else None

    return wait_for(check, timeout=60)


def test_enhanced_multicast_with_ids_line_refuses_reports_each_mark(tenant):
    friends = [simulated_friend(tenant) for _ in range(4)]
    strangers = seed_contacts(tenant, 2)  # contacts LINE never heard of: LINE refuses the multicast
    unknown = new_line_uid()  # not a contact
    uids = [friends[0], strangers[0], friends[1], unknown, friends[2], strangers[1], friends[3]]
    template = create_template(tenant, [{"type": "text", "text": "Flash sale {{when}}"}])
    response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "line_uids": uids, "data": {"when": "now"}})
    assert response.status_code == 200, response.text
    result = sent(tenant, response.json()["id"])["result"]
    assert result["to"]["line_ids"] == uids
    assert result["total_count"] == 7 and result["fail_count"] == 3
    refused = '{"message": "Failed to send messages"}'
    assert result["fail_info"] == [
        {"line_uid": strangers[0], "mark": 1, "response": refused},
        {"line_uid": unknown, "mark": 3, "response": "Contact not found"},
        {"line_uid": strangers[1], "mark": 5, "response": refused},
    ]
    assert all([m["message"]["text"] for m in inbox(uid)] == ["Flash sale now"] for uid in friends)
    calls = httpx.get(f"{SIMULATOR_URL}/_admin/requests", params={"channel_id": tenant.channel_id}).json()
    # the refused multicast, then one push per recipient (in any order: they go concurrently)
    assert sorted((c["endpoint"], c["status"]) for c in calls) == sorted(
        [("multicast", 400)] + [("push", 200)] * 4 + [("push", 400)] * 2)


def test_enhanced_multicast_failed_call_fails_every_recipient_with_lines_answer(tenant):
    friends = [simulated_friend(tenant) for _ in range(3)]
    template = create_template(tenant, [{"type": "text", "text": "Hi"}])
    httpx.post(f"{SIMULATOR_URL}/_admin/faults", json={"kind": "quota", "endpoint": "multicast",
                                                        "channel_id": tenant.channel_id, "count": 10}).raise_for_status()
    try:
        response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
            "template_id": template["id"], "line_uids": friends, "data": {}})
        result = sent(tenant, response.json()["id"])["result"]
    finally:
        httpx.delete(f"{SIMULATOR_URL}/_admin/faults", params={"channel_id": tenant.channel_id})
    assert result["to"]["line_ids"] == friends and result["fail_count"] == 3
    assert {f["mark"] for f in result["fail_info"]} == {0, 1, 2}
    assert {f["response"] for f in result["fail_info"]} == {'{"message": "You have reached your monthly limit."}'}
    assert all(inbox(uid) == [] for uid in friends)


def test_enhanced_multicast_announces_message_send_per_recipient(tenant):
    import json

    from helpers import CallbackReceiver, ServedApp, create_event

    receiver = CallbackReceiver()
    served = ServedApp(receiver.app)
    try:
        response = tenant.client.post(tenant.api("webhook/"), json={
            "url": served.url + "/cdh", "topics": ["message.send"], "style": "cdh"})
        assert response.status_code == 201, response.text
        friends = [simulated_friend(tenant) for _ in range(2)]
        customer = tenant.client.patch(tenant.api(f"member/{friends[0]}/"), json={"customer_id": "C-1"})
        assert customer.status_code == 200, customer.text
        event_id = create_event(tenant, "flash")
        template = create_template(tenant, [{"type": "text", "text": "Hi"}])
        dm_id = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
            "template_id": template["id"], "event_id": event_id, "line_uids": [*friends, new_line_uid()],
            "data": {}}).json()["id"]
        sent(tenant, dm_id)
        wait_for(lambda: len(receiver.at("/cdh")) >= 2, timeout=30)
        data = sorted((json.loads(r["body"])["data"] for r in receiver.at("/cdh")), key=lambda d: d["line_uid"])
        assert [(d["line_uid"], d["customer_id"], d["campaign_id"], d["direct_message_id"]) for d in data] == sorted(
            [(friends[0], "C-1", event_id, dm_id), (friends[1], None, event_id, dm_id)])
    finally:
        served.stop()
