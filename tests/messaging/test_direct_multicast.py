"""``direct_message/multicast/`` and ``enhanced_multicast/`` end to end against the LINE simulator."""

from __future__ import annotations

import httpx

from conftest import SIMULATOR_URL
from helpers import (
    create_event,
    create_template,
    inbox,
    new_line_uid,
    seed_contacts,
    simulated_friend,
    simulated_friends,
    wait_for,
)

TEXT = [{"type": "text", "text": "{{greeting}} {{contact.line_display_name}}!"}]


def sent(tenant, dm_id):
    def check():
        body = tenant.client.get(tenant.api(f"direct_message/{dm_id}/")).json()
        return body if body["status"] == "sent" else None

    return wait_for(check, timeout=60)


def line_calls(tenant, endpoint):
    return httpx.get(f"{SIMULATOR_URL}/_admin/requests",
                     params={"channel_id": tenant.channel_id, "endpoint": endpoint}).json()


def test_150_entries_three_bad_recipients_report_their_marks(tenant):
    friends = simulated_friends(tenant, 147)
    strangers = seed_contacts(tenant, 2)  # contacts LINE does not know: LINE refuses them
    unknown = new_line_uid()  # not a contact at all
    uids = friends[:40] + [strangers[0]] + friends[40:100] + [unknown] + friends[100:] + [strangers[1]]
    assert len(uids) == 150
    template = create_template(tenant, TEXT)
    data = [{"line_uid": uid, "greeting": f"Hello #{mark}"} for mark, uid in enumerate(uids)]
    response = tenant.client.post(tenant.api("direct_message/multicast/"), json={"template_id": template["id"],
                                                                                  "data": data})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "pending" and set(body) == {"id", "result"}
    record = sent(tenant, body["id"])
    assert record["category"] == "multicast" and record["event_id"] is None
    result = record["result"]
    assert result["total_count"] == 150 and result["fail_count"] == 3
    assert result["to"]["line_ids"] == uids
    failed = "{\"message\": \"Failed to send messages\"}"
    assert result["fail_info"] == [
        {"line_uid": strangers[0], "mark": 40, "response": failed},
        {"line_uid": unknown, "mark": 101, "response": "Contact not found"},
        {"line_uid": strangers[1], "mark": 149, "response": failed},
    ]
    # every good recipient got its own parameters and its own name
    for mark in (0, 41, 149 - 1):
        uid = uids[mark]
        [entry] = inbox(uid)
        assert entry["message"]["text"] == f"Hello #{mark} user{friends.index(uid)}!"


def test_identical_messages_are_grouped_into_one_multicast_call(tenant):
    friends = [simulated_friend(tenant) for _ in range(6)]
    template = create_template(tenant, [{"type": "text", "text": "Sale starts {{when}}"}])
    data = [{"line_uid": uid, "when": "tomorrow"} for uid in friends[:5]] + [{"line_uid": friends[5], "when": "now"}]
    dm_id = tenant.client.post(tenant.api("direct_message/multicast/"),
                               json={"template_id": template["id"], "data": data}).json()["id"]
    assert sent(tenant, dm_id)["result"]["fail_count"] == 0
    multicasts = line_calls(tenant, "multicast")
    assert [(m["status"], m["recipients"]) for m in multicasts] == [(200, 5)]
    assert [(p["status"], p["recipients"]) for p in line_calls(tenant, "push")] == [(200, 1)]
    assert inbox(friends[0])[0]["message"]["text"] == "Sale starts tomorrow"
    assert inbox(friends[5])[0]["message"]["text"] == "Sale starts now"


def test_a_multicast_refused_for_one_bad_id_is_resent_one_by_one(tenant):
    friends = [simulated_friend(tenant) for _ in range(3)]
    [stranger] = seed_contacts(tenant, 1)
    template = create_template(tenant, [{"type": "text", "text": "Same for all"}])
    data = [{"line_uid": uid} for uid in [*friends[:2], stranger, friends[2]]]
    dm_id = tenant.client.post(tenant.api("direct_message/multicast/"),
                               json={"template_id": template["id"], "data": data}).json()["id"]
    result = sent(tenant, dm_id)["result"]
    assert result["fail_count"] == 1 and [f["mark"] for f in result["fail_info"]] == [2]
    assert all(len(inbox(uid)) == 1 for uid in friends)


def test_multicast_validation(tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEXT)
    url = tenant.api("direct_message/multicast/")
    too_many = [{"line_uid": uid, "greeting": "x"}] * 151
    response = tenant.client.post(url, json={"template_id": template["id"], "data": too_many})
    assert response.status_code == 400
    assert response.json() == {"data": ["Ensure this field has no more than 150 elements."]}
    response = tenant.client.post(url, json={"template_id": template["id"], "data": []})
    assert response.json() == {"data": ["This list may not be empty."]}
    response = tenant.client.post(url, json={"template_id": template["id"],
                                             "data": [{"line_uid": uid, "greeting": "x"}, {"line_uid": uid}, {}]})
    assert response.status_code == 400
    assert response.json() == {"data": [{}, {"greeting": ["This field is required."]},
                                        {"line_uid": ["This field is required."],
                                         "greeting": ["This field is required."]}]}
    assert inbox(uid) == []


def test_enhanced_multicast_shares_data_and_renders_contact_placeholders_empty(tenant):
    friends = [simulated_friend(tenant, f"name{i}") for i in range(3)]
    [stranger] = seed_contacts(tenant, 1)
    template = create_template(tenant, TEXT)
    response = tenant.client.post(tenant.api("direct_message/enhanced_multicast/"), json={
        "template_id": template["id"], "line_uids": [friends[0], new_line_uid(), friends[1], friends[2]],
        "data": {"greeting": "Hey"}})
    assert response.status_code == 200, response.text
    record = sent(tenant, response.json()["id"])
    assert record["category"] == "enhanced_multicast"
    assert record["result"]["total_count"] == 4 and record["result"]["fail_count"] == 1
    assert [f["mark"] for f in record["result"]["fail_info"]] == [1]
    for uid in friends:
        assert inbox(uid)[0]["message"]["text"] == "Hey !"
    # one LINE multicast for everyone
    assert [(m["status"], m["recipients"]) for m in line_calls(tenant, "multicast")] == [(200, 3)]
    assert stranger  # a contact not addressed is not sent anything


def test_enhanced_multicast_validation(tenant):
    template = create_template(tenant, TEXT)
    url = tenant.api("direct_message/enhanced_multicast/")
    response = tenant.client.post(url, json={"template_id": template["id"], "line_uids": [new_line_uid()] * 501,
                                             "data": {"greeting": "x"}})
    assert response.json() == {"line_uids": ["Ensure this field has no more than 500 elements."]}
    response = tenant.client.post(url, json={"template_id": template["id"], "line_uids": [new_line_uid()],
                                             "data": {}})
    assert response.json() == {"data": {"greeting": ["This field is required."]}}
    response = tenant.client.post(url, json={"template_id": template["id"], "line_uids": [new_line_uid()]})
    assert response.json() == {"data": ["This field is required."]}
    event_elsewhere = 987654321
    response = tenant.client.post(url, json={"template_id": template["id"], "line_uids": [new_line_uid()],
                                             "data": {"greeting": "x"}, "event_id": event_elsewhere})
    assert response.json() == {"event_id": [f'Invalid pk "{event_elsewhere}" - object does not exist.']}
    assert create_event(tenant)
