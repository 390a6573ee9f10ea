"""Outgoing webhooks end to end: real receivers on loopback, real API calls causing events."""

from __future__ import annotations

import hashlib
import hmac
import json
import time

import pytest
from webhook_clock import make_retries_due
from webhook_receiver import Receiver, deliveries

from helpers import new_line_uid, seed_contacts, wait_for
from openmaac.webhooks import verify
from openmaac.webhooks.schedule import MAX_ATTEMPTS


def spec_snippet_verify(share_secret: str, header_signature: str, body: str) -> None:
    """MAAC OpenAPI v1.1.48's reference implementation, verbatim in substance."""
    signature = hmac.new(
        share_secret.encode("utf-8"), body.encode("utf-8"), hashlib.sha256
    ).hexdigest()
    assert hmac.compare_digest(signature, header_signature)


@pytest.fixture
def receiver():
    with Receiver() as r:
        yield r


def add_webhook(tenant, url: str, topics: list[str], style: str = "maac", **extra) -> dict:
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": topics, "style": style, **extra})
    assert response.status_code == 201, response.text
    return response.json()


def make_tag(tenant, name: str) -> int:
    response = tenant.client.post(tenant.api("tag/"), json={"name": name})
    assert response.status_code == 201, response.text
    return response.json()["id"]


# -- management API ----------------------------------------------------------------------------

def test_create_list_reveal_rotate_patch_delete(tenant, make_tenant, receiver):
    created = add_webhook(tenant, receiver.url, ["contact.tag.add", "message.first_open"], "cdh",
                          headers={"x-api-key": "k1"})
    assert set(created) >= {"id", "secret", "url", "topics", "style", "headers", "is_active", "created_at"}
    assert len(created["secret"]) == 64 and created["style"] == "cdh" and created["headers"] == {"x-api-key": "k1"}
    webhook_id = created["id"]

    listed = tenant.client.get(tenant.api("webhook/")).json()
    assert [w["id"] for w in listed["results"]] == [webhook_id] and listed["next"] is None
    detail = tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).json()
    assert "secret" not in detail and detail["topics"] == ["contact.tag.add", "message.first_open"]

    revealed = tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()
    assert revealed == {"id": webhook_id, "secret": created["secret"], "standard_secret": None}
    rotated = tenant.client.post(tenant.api(f"webhook/{webhook_id}/secret/")).json()
    assert rotated["secret"] != created["secret"]
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/secret/")).json()["secret"] == rotated["secret"]

    patched = tenant.client.patch(tenant.api(f"webhook/{webhook_id}/"), json={"topics": ["contact.tag.remove"],
                                                                             "style": "maac", "is_active": False})
    assert patched.status_code == 200, patched.text
    assert patched.json()["topics"] == ["contact.tag.remove"] and patched.json()["is_active"] is False
    assert patched.json()["headers"] == {"x-api-key": "k1"}

    other = make_tenant()
    for method, path in (("get", f"webhook/{webhook_id}/"), ("get", f"webhook/{webhook_id}/secret/"),
                         ("post", f"webhook/{webhook_id}/secret/"), ("delete", f"webhook/{webhook_id}/"),
                         ("get", f"webhook/{webhook_id}/deliveries/"), ("post", f"webhook/{webhook_id}/test/")):
        response = getattr(other.client, method)(other.api(path))
        assert response.status_code == 404 and response.json() == {"detail": "Not found."}, (method, path)
    assert other.client.get(other.api("webhook/")).json()["results"] == []

    assert tenant.client.delete(tenant.api(f"webhook/{webhook_id}/")).status_code == 204
    assert tenant.client.get(tenant.api(f"webhook/{webhook_id}/")).status_code == 404


def test_validation_errors(tenant, receiver):
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url, "topics": ["nope.topic"]})
    assert response.status_code == 400
    assert response.json() == {"topics": {"0": ['"nope.topic" is not a valid choice.']}}
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url, "topics": ["contact.tag.add"],
                                                               "style": "xml"})
    assert response.status_code == 400 and response.json() == {"style": ['"xml" is not a valid choice.']}
    response = tenant.client.post(tenant.api("webhook/"), json={"topics": ["contact.tag.add"]})
    assert response.status_code == 400 and response.json() == {"url": ["This field is required."]}
    response = tenant.client.post(tenant.api("webhook/"), json={"url": "ftp://127.0.0.1/x", "topics": ["contact.tag.add"]})
    assert response.status_code == 400 and response.json() == {"url": ["Enter a valid URL."]}
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url, "topics": ["contact.tag.add"],
                                                               "headers": {"CrescLab-Signature": "forged"}})
    assert response.status_code == 400 and "CrescLab-Signature" in response.json()["headers"]


@pytest.mark.parametrize("url", [
    "http://10.0.0.8/hook", "http://192.168.1.20:8080/hook", "http://172.16.5.4/hook",
    "http://169.254.169.254/latest/meta-data/", "http://127.0.0.2:9/hook", "http://[::1]:9/hook",
    "http://0.0.0.0:9/hook", "http://[::ffff:10.0.0.1]/hook", "http://100.64.0.1/hook",
])
def test_ssrf_refused_at_registration(tenant, url):
    response = tenant.client.post(tenant.api("webhook/"), json={"url": url, "topics": ["contact.tag.add"]})
    assert response.status_code == 400, response.text
    assert "not allowed" in response.json()["url"][0]


def test_ssrf_refused_at_delivery_time(tenant, receiver, database):
    """An endpoint whose address became private (DNS change, edited row) is refused when sending."""
    from openmaac.webhooks.models import WebhookEndpoint

    created = add_webhook(tenant, receiver.url, ["contact.tag.add"])
    with database.write() as session:
        session.get(WebhookEndpoint, created["id"]).url = f"http://127.0.0.2:{receiver.port}/hook"
    uid = seed_contacts(tenant, 1)[0]
    tag_id = make_tag(tenant, "ssrf")
    assert tenant.client.post(tenant.api("taglinemember/"), json={"tag_id": tag_id, "line_uid": uid}).status_code == 201
    failed = wait_for(lambda: deliveries(tenant, created["id"], "failed"), timeout=20)
    assert failed[0]["attempts"] == 1 and failed[0]["last_error"].startswith("refused:")
    assert receiver.requests == []


# -- the events this issue emits, signed and byte-exact --------------------------------------------

def test_tag_add_and_remove_cdh_signed_and_verifiable(tenant, receiver):
    created = add_webhook(tenant, receiver.url, ["contact.tag.add", "contact.tag.remove"], "cdh")
    uid = seed_contacts(tenant, 1, customer_id="C-1")[0]
    tag_id = make_tag(tenant, "VIP 會員")
    assert tenant.client.post(tenant.api("taglinemember/"), json={"tag_id": tag_id, "line_uid": uid}).status_code == 201
    response = tenant.client.request("DELETE", tenant.api("taglinemember/"), json={"tag_id": tag_id, "line_uid": uid})
    assert response.status_code == 204
    wait_for(lambda: len(receiver.successful()) == 2, timeout=20)

    first, second = receiver.requests
    for request in (first, second):
        assert request.headers["content-type"] == "application/json; charset=utf-8"
        assert request.headers["user-agent"].startswith("openmaac-webhook/")
        assert len(request.key) == 32
        text = request.body.decode("utf-8")
        spec_snippet_verify(created["secret"], request.headers["cresclab-signature"], text)
        assert verify(created["secret"], request.body, request.headers["cresclab-signature"])
        assert not verify("wrong secret", request.body, request.headers["cresclab-signature"])
        # Byte format of the spec's samples: default json.dumps separators, \uXXXX escapes.
        assert json.dumps(json.loads(text)) == text
        assert "\\u6703\\u54e1" in text and "會" not in text
    add = json.loads(first.body)
    assert list(add) == ["event", "timestamp", "source", "data"]
    assert add["event"] == "contact.tag.add" and add["source"] == "maac"
    assert add["timestamp"].endswith("+00:00")
    assert add["data"] == {"line_uid": uid, "customer_id": "C-1", "tag_id": tag_id, "tag_name": "VIP 會員"}
    remove = json.loads(second.body)
    assert remove["event"] == "contact.tag.remove" and remove["data"] == add["data"]
    assert first.key != second.key

    log = wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 2 and deliveries(tenant, created["id"]))
    assert {d["idempotency_key"] for d in log} == {first.key, second.key}
    assert log[0]["body"] == second.body.decode()


def test_profile_update_events_from_patch_member(tenant, receiver):
    add_webhook(tenant, receiver.url, ["contact.profile.display_name.update", "contact.profile.display_email.update",
                                       "contact.profile.customer_id.update"], "cdh")
    uid, other = seed_contacts(tenant, 2)
    assert tenant.client.patch(tenant.api(f"member/{other}/"), json={"customer_id": "X9"}).status_code == 200
    response = tenant.client.patch(tenant.api(f"member/{uid}/"), json={"display_name": "Alan", "email": "a@example.com",
                                                                       "gender": "male", "customer_id": "X9"})
    assert response.status_code == 200
    wait_for(lambda: len(receiver.successful()) == 5, timeout=20)
    bodies = [json.loads(r.body) for r in receiver.requests]
    got = {(b["event"], b["data"]["line_uid"]): b["data"] for b in bodies}
    customer_id_events = [b["data"] for b in bodies if b["event"] == "contact.profile.customer_id.update"]
    # X9 is bound to `other`, then moves to `uid`: `other` loses it, `uid` gains it.
    assert {"line_uid": other, "customer_id": "X9", "old_value": None, "new_value": "X9"} in customer_id_events
    assert {"line_uid": other, "customer_id": None, "old_value": "X9", "new_value": None} in customer_id_events
    assert {"line_uid": uid, "customer_id": "X9", "old_value": None, "new_value": "X9"} in customer_id_events
    assert len(customer_id_events) == 3
    assert got[("contact.profile.display_name.update", uid)] == {"line_uid": uid, "customer_id": "X9",
                                                                 "old_value": None, "new_value": "Alan"}
    assert got[("contact.profile.display_email.update", uid)]["new_value"] == "a@example.com"
    # gender was not subscribed: nothing sent for it.
    assert not any(b["event"] == "contact.profile.gender.update" for b in bodies)


def test_maac_style_emit_api_and_custom_headers(tenant, receiver, database):
    from openmaac.webhooks.events import emit

    created = add_webhook(tenant, receiver.url, ["message.first_open"], "maac", headers={"x-api-key": "s3cr3t"})
    uid = new_line_uid()
    data = {"message_type": "openapi", "message_id": 999, "line_uid": uid, "customer_id": "xxx"}
    with database.write() as session:
        assert emit(session, tenant.id, "message.first_open", data, ordering_key=uid) == 1
        assert emit(session, tenant.id, "contact.tag.add", {"x": 1}) == 0  # not subscribed
    wait_for(lambda: receiver.successful(), timeout=20)
    request = receiver.requests[0]
    body = json.loads(request.body)
    assert list(body) == ["timestamp", "topic", "data"]
    assert body["topic"] == "message.first_open" and body["data"] == data
    assert body["timestamp"].endswith("+08:00") and "." in body["timestamp"]
    assert request.headers["x-api-key"] == "s3cr3t"
    spec_snippet_verify(created["secret"], request.headers["cresclab-signature"], request.body.decode())


def test_cdh_sync_events_carry_event_id(tenant, receiver, database):
    from openmaac.webhooks.events import emit

    add_webhook(tenant, receiver.url, ["order.sync"], "cdh")
    with database.write() as session:
        emit(session, tenant.id, "order.sync", {"order_id": "O-1"}, event_id="a1b2c3d4-e5f6-7890-abcd-ef1234567890")
    wait_for(lambda: receiver.successful(), timeout=20)
    body = json.loads(receiver.requests[0].body)
    assert list(body) == ["event", "timestamp", "source", "event_id", "data"]
    assert body["event_id"] == "a1b2c3d4-e5f6-7890-abcd-ef1234567890"


def test_rollback_emits_nothing(tenant, receiver, database):
    from openmaac.webhooks.events import emit

    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    with pytest.raises(RuntimeError), database.write() as session:
        emit(session, tenant.id, "message.first_open", {"n": 1})
        raise RuntimeError("the change failed")
    assert deliveries(tenant, created["id"]) == []


def test_send_test_event(tenant, receiver):
    created = add_webhook(tenant, receiver.url, ["contact.tag.add"], "cdh")
    response = tenant.client.post(tenant.api(f"webhook/{created['id']}/test/"))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["status"] == "succeeded" and result["last_status_code"] == 200 and result["topic"] == "webhook.test"
    request = receiver.requests[0]
    assert json.loads(request.body)["event"] == "webhook.test"
    spec_snippet_verify(created["secret"], request.headers["cresclab-signature"], request.body.decode())
    assert request.key == result["idempotency_key"]
    receiver.default_status = 500
    failed = tenant.client.post(tenant.api(f"webhook/{created['id']}/test/")).json()
    assert failed["status"] == "failed" and failed["last_status_code"] == 500 and len(receiver.requests) == 2


# -- retries, failure, replay, order --------------------------------------------------------------

def _emit_one(database, tenant, topic="message.first_open", key=None, n=0):
    from openmaac.webhooks.events import emit

    with database.write() as session:
        emit(session, tenant.id, topic, {"n": n, "line_uid": key}, ordering_key=key)


def test_retry_schedule_1_2_4_seconds_same_key(tenant, receiver, database):
    receiver.statuses = [503, 429, 408, 200]
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    _emit_one(database, tenant)
    wait_for(lambda: receiver.successful(), timeout=30)
    arrivals = [r.at for r in receiver.requests]
    assert len(arrivals) == 4
    assert len({r.key for r in receiver.requests}) == 1
    assert len({r.body for r in receiver.requests}) == 1
    gaps = [b - a for a, b in zip(arrivals, arrivals[1:], strict=False)]
    for gap, expected in zip(gaps, (1.0, 2.0, 4.0), strict=True):
        assert expected - 0.05 <= gap <= expected + 1.5, gaps
    # the receiver has answered 200; the dispatcher records it just after (wait for that)
    [log] = wait_for(lambda: [d for d in deliveries(tenant, created["id"]) if d["status"] not in ("pending", "waiting")], timeout=30)
    assert log["status"] == "succeeded" and log["attempts"] == 4 and log["last_status_code"] == 200
    assert log["next_attempt_at"] is None and log["max_attempts"] == MAX_ATTEMPTS


def test_exhausted_retries_fail_then_replay(tenant, receiver, database):
    receiver.default_status = 500
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    _emit_one(database, tenant)
    # The whole schedule (about 3 days), its waits made due as soon as they start.
    failed = wait_for(lambda: make_retries_due(database, created["id"]) >= 0 and
                      deliveries(tenant, created["id"], "failed"), timeout=60)
    assert failed[0]["attempts"] == MAX_ATTEMPTS and failed[0]["last_status_code"] == 500
    assert failed[0]["last_error"].startswith("HTTP 500") and failed[0]["next_attempt_at"] is None
    assert len(receiver.requests) == MAX_ATTEMPTS
    key = receiver.requests[0].key

    receiver.default_status = 200
    response = tenant.client.post(tenant.api(f"webhook/{created['id']}/replay/"), json={})
    assert response.status_code == 200 and response.json() == {"replayed": 1}
    wait_for(lambda: receiver.successful(), timeout=20)
    assert receiver.successful()[0].key == key
    wait_for(lambda: deliveries(tenant, created["id"], "succeeded"), timeout=10)
    assert deliveries(tenant, created["id"], "failed") == []


def test_non_retryable_answers_fail_at_once(tenant, receiver, database):
    receiver.statuses = [400, 302]
    receiver.redirect_to = f"http://127.0.0.1:{receiver.port}/elsewhere"
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    _emit_one(database, tenant, n=1)
    _emit_one(database, tenant, n=2)
    failed = wait_for(lambda: len(deliveries(tenant, created["id"], "failed")) == 2 and
                      deliveries(tenant, created["id"], "failed"), timeout=20)
    assert sorted(d["last_status_code"] for d in failed) == [302, 400]
    assert all(d["attempts"] == 1 for d in failed)
    assert [r.path for r in receiver.requests] == ["/hook", "/hook"]  # the redirect was not followed


def test_receiver_down_then_up_delivers_everything(tenant, database):
    receiver = Receiver()
    receiver.reserve_port()  # nothing listens yet: connections are refused
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    for n in range(20):
        _emit_one(database, tenant, key=f"U{n % 4}", n=n)
    wait_for(lambda: any(d["attempts"] >= 1 for d in deliveries(tenant, created["id"])), timeout=20)
    time.sleep(1.0)
    receiver.start()
    try:
        wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 20, timeout=40)
        keys = [r.key for r in receiver.successful()]
        assert len(keys) == len(set(keys)) == 20
        # Per contact, events arrive in the order they were emitted.
        for contact in range(4):
            ns = [json.loads(r.body)["data"]["n"] for r in receiver.successful()
                  if json.loads(r.body)["data"]["line_uid"] == f"U{contact}"]
            assert ns == sorted(ns) and len(ns) == 5
    finally:
        receiver.stop()


def test_order_per_contact_kept_across_a_retry(tenant, receiver, database):
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    receiver.statuses = [503]  # the very first request (contact A's first event) fails once
    for n in range(6):
        _emit_one(database, tenant, key="A", n=n)
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 6, timeout=30)
    ns = [json.loads(r.body)["data"]["n"] for r in receiver.successful()]
    assert ns == [0, 1, 2, 3, 4, 5]


def test_concurrency_cap_per_endpoint(tenant, receiver, database):
    from openmaac.webhooks.delivery import MAX_IN_FLIGHT
    from openmaac.webhooks.events import Event, emit_many

    receiver.delay = 0.3
    created = add_webhook(tenant, receiver.url, ["message.first_open"])
    with database.write() as session:
        emit_many(session, tenant.id, [Event("message.first_open", {"n": n}, f"U{n}") for n in range(60)])
    wait_for(lambda: len(deliveries(tenant, created["id"], "succeeded")) == 60, timeout=60)
    assert 1 < receiver.max_in_flight <= MAX_IN_FLIGHT


def test_slow_endpoint_does_not_hold_up_another(tenant, database):
    with Receiver(delay=3.0) as slow, Receiver() as fast:
        add_webhook(tenant, slow.url, ["message.first_open"])
        created_fast = add_webhook(tenant, fast.url, ["message.first_open"])
        _emit_one(database, tenant, n=1)
        wait_for(lambda: deliveries(tenant, created_fast["id"], "succeeded"), timeout=20)
        assert fast.successful() and not slow.successful()
        wait_for(lambda: slow.successful(), timeout=20)
