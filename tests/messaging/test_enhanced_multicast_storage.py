"""Enhanced multicast keeps a row per recipient only when something looks a recipient up later:
a tracked message with message / postback actions (a tap is attributed to the latest such
message sent to the user). Otherwise its LINE call rows are the recipients' record; both ways the
status answer, the counts and the taps must be what they were."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select

from conftest import SIMULATOR_URL
from helpers import create_event, create_template, new_line_uid, simulated_friend, wait_for

TAPPABLE = [{"type": "template", "altText": "sale",
             "template": {"type": "buttons", "text": "Sale {{when}}",
                          "actions": [{"type": "postback", "label": "Later", "data": "sale=later",
                                       "displayText": "Remind me later"},
                                      {"type": "uri", "label": "Shop", "uri": "https://shop.example.com/"}]}}]


def sent(tenant, dm_id):
    def check():
        body = tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()
        return body if body["status"] == "sent" else None

    return wait_for(check, timeout=60)


def recipient_rows(database, dm_id):
    from openmaac.messaging.models import DirectMessageRecipient

    with database.read() as session:
        return session.scalar(select(func.count()).select_from(DirectMessageRecipient)
                              .where(DirectMessageRecipient.direct_message_id == dm_id))


def test_tracked_enhanced_multicast_with_actions_attributes_taps(tenant, database):
    alice, bob = simulated_friend(tenant), simulated_friend(tenant)
    unknown = new_line_uid()
    event_id = create_event(tenant, "sale")
    template = create_template(tenant, TAPPABLE)
    dm_id = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "event_id": event_id, "line_uids": [alice, unknown, bob],
        "data": {"when": "now"}}).json()["id"]
    result = sent(tenant, dm_id)["result"]
    assert result["to"]["line_ids"] == [alice, unknown, bob]
    assert (result["total_count"], result["fail_count"]) == (3, 1)
    assert result["fail_info"] == [{"line_uid": unknown, "mark": 1, "response": "Contact not found"}]
    assert recipient_rows(database, dm_id) == 3  # looked up by taps
    for uid in (alice, bob, alice):
        response = httpx.post(f"{SIMULATOR_URL}/_admin/users/{uid}/postback",
                              json={"channel_id": tenant.channel_id, "data": "sale=later"}, timeout=30)
        assert response.status_code == 200, response.text

    def taps():
        report = tenant.client.get(tenant.api(f"event/{event_id}/report/")).json()["report"]
        rows = {row["message"]: row["clicks"] for row in report["messages"]}
        return rows if rows.get("Remind me later") == 3 else None

    assert wait_for(taps, timeout=30) == {"Remind me later": 3}


def test_untracked_enhanced_multicast_is_recorded_by_its_calls(tenant, database):
    friends = [simulated_friend(tenant) for _ in range(3)]
    unknown = new_line_uid()
    template = create_template(tenant, TAPPABLE)
    uids = [friends[0], unknown, friends[1], friends[2]]
    dm_id = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "line_uids": uids, "data": {"when": "now"}}).json()["id"]
    body = sent(tenant, dm_id)
    assert body["category"] == "enhanced_multicast" and body["event_id"] is None
    result = body["result"]
    assert result["to"]["line_ids"] == uids
    assert (result["total_count"], result["fail_count"]) == (4, 1)
    assert result["fail_info"] == [{"line_uid": unknown, "mark": 1, "response": "Contact not found"}]
    assert recipient_rows(database, dm_id) == 1  # the one that is no contact


def test_concurrent_enhanced_multicasts_each_keep_their_own_message(tenant, database):
    """Requests accepted at the same time are written together (one transaction on SQLite):
    each still answers its own message, with its own recipients, sent once."""
    from concurrent.futures import ThreadPoolExecutor

    friends = [simulated_friend(tenant) for _ in range(4)]
    template = create_template(tenant, [{"type": "text", "text": "Sale {{when}}"}])
    requests = [[friends[i % 4], new_line_uid(), friends[(i + 1) % 4]] for i in range(12)]

    def post(uids):
        response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
            "template_id": template["id"], "line_uids": uids, "data": {"when": "now"}})
        assert response.status_code == 200, response.text
        return response.json()["id"]

    with ThreadPoolExecutor(max_workers=12) as pool:
        ids = list(pool.map(post, requests))
    assert len(set(ids)) == 12
    for dm_id, uids in zip(ids, requests, strict=True):
        result = sent(tenant, dm_id)["result"]
        assert result["to"]["line_ids"] == uids
        assert (result["total_count"], result["fail_count"]) == (3, 1)
        assert result["fail_info"] == [{"line_uid": uids[1], "mark": 1, "response": "Contact not found"}]
    for friend in friends:  # each friend is in 6 of the requests
        inbox = httpx.get(f"{SIMULATOR_URL}/_admin/users/{friend}/messages",
                          params={"channel_id": tenant.channel_id}, timeout=30).json()
        assert len(inbox) == 6


def test_enhanced_multicast_to_contacts_only_is_accepted_with_its_call(tenant, database):
    """Every uid a contact (a uid twice included): accepted with its one LINE call listing each
    entry in request order (on PostgreSQL in one statement), sent once per entry."""
    friends = [simulated_friend(tenant) for _ in range(3)]
    template = create_template(tenant, [{"type": "text", "text": "Sale {{when}}"}])
    uids = [friends[1], friends[0], friends[2], friends[1]]
    dm_id = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "line_uids": uids, "data": {"when": "now"}}).json()["id"]
    body = sent(tenant, dm_id)
    assert body["category"] == "enhanced_multicast"
    assert body["result"]["to"]["line_ids"] == uids
    assert (body["result"]["total_count"], body["result"]["fail_count"], body["result"]["fail_info"]) == (4, 0, [])
    assert recipient_rows(database, dm_id) == 0
    assert [len(httpx.get(f"{SIMULATOR_URL}/_admin/users/{uid}/messages",
                          params={"channel_id": tenant.channel_id}, timeout=30).json()) for uid in friends] == [1, 2, 1]
    with database.read() as session:
        from openmaac.messaging.models import DirectMessage, DirectMessageSend

        dm = session.get(DirectMessage, dm_id)
        assert dm is not None and dm.params == {"when": "now"} and dm.template_id == template["id"]
        calls = session.execute(select(DirectMessageSend.method, DirectMessageSend.to, DirectMessageSend.recipient_ids)
                                .where(DirectMessageSend.direct_message_id == dm_id)).all()
    contacts = {uid: ref[1] for uid, ref in zip(calls[0][1], calls[0][2], strict=True)}
    assert calls == [("multicast", uids, [[mark, contacts[uid]] for mark, uid in enumerate(uids)])]
