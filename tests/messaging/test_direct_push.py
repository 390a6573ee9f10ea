"""``direct_message/push/`` end to end against the LINE simulator (real HTTP both ways)."""

from __future__ import annotations

import json

import httpx
import pytest

from conftest import SIMULATOR_URL
from helpers import (
    CallbackReceiver,
    ServedApp,
    create_event,
    create_template,
    inbox,
    seed_contacts,
    sets_noted,
    simulated_friend,
    simulated_friends,
    wait_for,
)

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


def test_pushes_accepted_and_recorded_together_each_get_their_own_message(tenant, make_tenant, faults, database,
                                                                           monkeypatch):
    """Concurrent untracked pushes of two organisations: on PostgreSQL their acceptances and
    answers are written as sets of a group-commit batch (one statement each); every push still
    gets its own message, call, answer and record, and no recovery job is left behind."""
    from concurrent.futures import ThreadPoolExecutor

    from sqlalchemy import func, select

    from openmaac.jobs.models import Job
    from openmaac.messaging import sending

    other = make_tenant()
    friends = {t.id: simulated_friends(t, 6) for t in (tenant, other)}
    receiver = CallbackReceiver()  # the first organisation announces its sends (message.send)
    served = ServedApp(receiver.app)
    hooked = tenant.client.post(tenant.api("webhook/"), json={"url": served.url + "/cdh", "topics": ["message.send"],
                                                                "style": "cdh"})
    assert hooked.status_code == 201, hooked.text
    templates = {t.id: create_template(tenant if t is tenant else other, TEXT)["id"] for t in (tenant, other)}
    monkeypatch.setenv("OPENMAAC_LINE_MAX_ATTEMPTS", "1")  # a 429 is answered, not retried
    faults(kind="quota", endpoint="push", channel_id=other.channel_id, count=2)  # two of its pushes refused
    sizes: dict[str, list[int]] = {"accept": [], "record": []}
    monkeypatch.setattr(sending, "_accept_pushes_pg", sets_noted(sizes["accept"], sending._accept_pushes_pg))
    monkeypatch.setattr(sending, "_record_pushes_pg", sets_noted(sizes["record"], sending._record_pushes_pg))
    jobs = [(t, uid, f"item {i}") for t in (tenant, other) for i, uid in enumerate(friends[t.id])]

    def send(job):
        t, uid, item = job
        return push(t, template_id=templates[t.id], data={"line_uid": uid, "item": item})

    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        answers = list(pool.map(send, jobs))
    assert all(answer.status_code == 200 for answer in answers), [a.text for a in answers]
    bodies = [answer.json() for answer in answers]
    assert len({body["id"] for body in bodies}) == len(jobs)
    refused = [body["result"] for body in bodies if body["result"] != "success"]
    assert len(refused) == 2 and all(isinstance(result, dict) for result in refused), refused
    for (t, uid, item), body in zip(jobs, bodies, strict=True):
        record = status(t, body["id"])
        assert record["status"] == "sent" and record["result"]["to"] == {"line_ids": [uid]}
        assert record["result"]["fail_count"] == (0 if body["result"] == "success" else 1)
        delivered = [m["message"]["text"] for m in inbox(uid, t.channel_id)]
        assert delivered == ([f"Hi user{friends[t.id].index(uid)}, your {item} is waiting"]
                             if body["result"] == "success" else [])
    with database.read() as session:
        left = session.scalar(select(func.count()).select_from(Job).where(
            Job.unique_key.in_([f"{sending.JOB_KIND}:{body['id']}" for body in bodies])))
    assert left == 0  # a push writes no recovery job (the sweep of its moment covers it)
    announced = wait_for(lambda: len(receiver.at("/cdh")) >= 6 and receiver.at("/cdh"), timeout=30)
    assert sorted(json.loads(r["body"])["data"]["direct_message_id"] for r in announced) == sorted(
        body["id"] for (t, _uid, _item), body in zip(jobs, bodies, strict=True) if t is tenant)
    served.stop()
    if database.is_sqlite:
        assert sizes == {"accept": [], "record": []}  # SQLite writes one push at a time
    else:
        assert sum(sizes["accept"]) == sum(sizes["record"]) == len(jobs)
        assert max(sizes["accept"]) > 1 and max(sizes["record"]) > 1
