"""``direct_message/push/`` end to end against the LINE simulator (real HTTP both ways)."""

from __future__ import annotations

import httpx
import pytest

from conftest import SIMULATOR_URL
from helpers import create_event, create_template, inbox, seed_contacts, simulated_friend

TEXT = [{"type": "text", "text": "Hi {{contact.line_display_name}}, your {{item}} is waiting"}]


@pytest.fixture
def faults():
    yield lambda **fault: httpx.post(f"{SIMULATOR_URL}/_admin/faults", json=fault, timeout=10).raise_for_status()
    httpx.delete(f"{SIMULATOR_URL}/_admin/faults", timeout=10)


def push(tenant, **body):
    return tenant.client.post(tenant.api("direct_message/push/"), json=body)


def status(tenant, dm_id):
    response = tenant.client.get(tenant.api(f"direct_message/{dm_id}/"))
    assert response.status_code == 200, response.text
    return response.json()


def test_push_renders_sends_and_records(tenant):
    uid = simulated_friend(tenant, "小明")
    template = create_template(tenant, TEXT)
    event_id = create_event(tenant, "cart retarget")
    response = push(tenant, template_id=template["id"], event_id=event_id, data={"line_uid": uid, "item": "cart"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["result"] == "success" and body["event_id"] == event_id and body["event"] == "cart retarget"
    received = inbox(uid, tenant.channel_id)
    assert [m["message"] for m in received] == [{"type": "text", "text": "Hi 小明, your cart is waiting"}]
    record = status(tenant, body["id"])
    assert record["category"] == "push" and record["status"] == "sent" and record["event_id"] == event_id
    result = record["result"]
    assert result["to"] == {"line_ids": [uid]} and result["total_count"] == 1 and result["fail_count"] == 0
    assert result["fail_info"] == [] and result["sent_time"].endswith("+08:00")


def test_push_timeout_answers_timeout(tenant, faults, monkeypatch):
    monkeypatch.setenv("OPENMAAC_LINE_TIMEOUT", "0.5")
    monkeypatch.setenv("OPENMAAC_LINE_MAX_ATTEMPTS", "2")
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEXT)
    faults(kind="timeout", endpoint="push", channel_id=tenant.channel_id, count=2, seconds=2)
    response = push(tenant, template_id=template["id"], data={"line_uid": uid, "item": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == "timeout"
    record = status(tenant, response.json()["id"])
    assert record["status"] == "sent"
    assert record["result"]["fail_count"] == 1
    assert record["result"]["fail_info"] == [{"line_uid": uid, "mark": 0, "response": "timeout"}]
    assert inbox(uid) == []


def test_push_line_400_surfaces_lines_error_object(tenant):
    # a contact openmaac knows but LINE does not: LINE answers 400 "Failed to send messages"
    [uid] = seed_contacts(tenant, 1)
    template = create_template(tenant, TEXT)
    response = push(tenant, template_id=template["id"], data={"line_uid": uid, "item": "x"})
    assert response.status_code == 200, response.text
    assert response.json()["result"] == {"message": "Failed to send messages"}
    record = status(tenant, response.json()["id"])
    assert record["result"]["fail_info"] == [
        {"line_uid": uid, "mark": 0, "response": '{"message": "Failed to send messages"}'}]


def test_push_invalid_rendered_message_gets_lines_validation_error(tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, [{"type": "text", "text": "{{body}}"}])
    response = push(tenant, template_id=template["id"], data={"line_uid": uid, "body": "x" * 5001})
    assert response.status_code == 200, response.text
    result = response.json()["result"]
    assert isinstance(result, dict) and result["message"].startswith("The request body has")
    assert any(d["property"].startswith("messages[0]") for d in result["details"])


def test_lost_answer_is_retried_with_the_same_key_and_delivered_once(tenant, faults):
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEXT)
    faults(kind="500_after_accept", endpoint="push", channel_id=tenant.channel_id, count=1)
    response = push(tenant, template_id=template["id"], data={"line_uid": uid, "item": "x"})
    assert response.json()["result"] == "success"
    assert len(inbox(uid)) == 1
    log = httpx.get(f"{SIMULATOR_URL}/_admin/requests", params={"channel_id": tenant.channel_id,
                                                                 "endpoint": "push"}).json()
    # accepted (logged 200) but answered 500; the retry with the same key gets 409 = done
    statuses = [r["status"] for r in log]
    assert 500 in statuses and statuses[-1] == 409
    assert len({r["retry_key"] for r in log}) == 1


def test_push_validation_errors(tenant, make_tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEXT)
    other = make_tenant()
    foreign_template = create_template(other, TEXT)
    foreign_event = create_event(other)
    tid = template["id"]

    def error(**body):
        response = push(tenant, **body)
        assert response.status_code == 400, response.text
        return response.json()

    assert error(data={"line_uid": uid, "item": "x"}) == {"template_id": ["This field is required."]}
    assert error(template_id=tid) == {"data": ["This field is required."]}
    assert error(template_id=foreign_template["id"], data={"line_uid": uid, "item": "x"}) == {
        "template_id": [f'Invalid pk "{foreign_template["id"]}" - object does not exist.']}
    assert error(template_id=tid, event_id=foreign_event, data={"line_uid": uid, "item": "x"}) == {
        "event_id": [f'Invalid pk "{foreign_event}" - object does not exist.']}
    assert error(template_id=tid, data={"line_uid": uid}) == {"data": {"item": ["This field is required."]}}
    assert error(template_id=tid, data={"item": "x"}) == {"data": {"line_uid": ["This field is required."]}}
    unknown = "U" + "0" * 32
    assert error(template_id=tid, data={"line_uid": unknown, "item": "x"}) == {
        "data": {"line_uid": ["Contact not found."]}}
    image = create_template(tenant, [{"type": "image", "originalContentUrl": "{{img}}",
                                      "previewImageUrl": "{{img}}"}])
    assert error(template_id=image["id"], data={"line_uid": uid, "img": "https://cdn.example.com/a.gif"}) == {
        "data": {"img": ["The image URL must end with an image file extension (.jpg, .jpeg or .png)."]}}
    ok = push(tenant, template_id=image["id"], data={"line_uid": uid, "img": "https://cdn.example.com/a.PNG?v=2"})
    assert ok.status_code == 200 and ok.json()["result"] == "success"
    # nothing was recorded or sent for the refused requests
    assert len(inbox(uid)) == 1


def test_status_of_another_organisation_is_404(tenant, make_tenant):
    uid = simulated_friend(tenant)
    template = create_template(tenant, TEXT)
    dm_id = push(tenant, template_id=template["id"], data={"line_uid": uid, "item": "x"}).json()["id"]
    other = make_tenant()
    assert other.client.get(other.api(f"direct_message/{dm_id}/")).status_code == 404
    assert tenant.client.get(tenant.api("direct_message/999999999/")).json() == {"detail": "Not found."}
