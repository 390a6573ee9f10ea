"""SMS+ over real HTTP: scenarios, push/multicast validation and texts, points, hashed numbers,
the status query, and the SMS paths through the Twilio / Mitake simulators."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

import httpx
import pytest

from helpers import CallbackReceiver, ServedApp, behind_a_lock, wait_for

# one API "minute" of fallback_period / retry window / callback timeout = 0.05 s here
os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Order {{order_number}} arrives {{arrival_date}}: {{order_url}}"}]
SMS_TEXT = "Order {{order_number}} arrives {{arrival_date}}"
PHONE = "+886912345678"


def sim(base_url: str, name: str) -> str:
    return f"{base_url}/_simulators/{name}"


def create_setting(tenant: Any, **fields: Any) -> dict[str, Any]:
    body = {"name": "到貨通知", "pnp_enabled": True, "pnp_messages": PNP_CONTENT, "pnp_approval_status": "approved",
            "fallback_enabled": True, "sms_text": SMS_TEXT, "fallback_period": 1, **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    return response.json()


def top_up(tenant: Any, amount: int) -> int:
    response = tenant.client.post(tenant.api("pnp/points/"), json={"amount": amount})
    assert response.status_code == 200, response.text
    return int(response.json()["balance"])


def balance(tenant: Any) -> int:
    return int(tenant.client.get(tenant.api("pnp/points/")).json()["balance"])


def push_body(setting_id: int, phone: str = PHONE, **data: Any) -> dict[str, Any]:
    entry = {"phone_number": phone,
             "pnp": {"order_number": "AJ1234567", "arrival_date": "2020/7/30", "order_url": "http://x.io/o"},
             "sms": {"order_number": "AJ1234567", "arrival_date": "2020/7/30"}, "customized_id": "AJ1234567890",
             **data}
    return {"pnp_setting_id": setting_id, "data": entry}


def records(tenant: Any, setting_id: int, **params: Any) -> httpx.Response:
    query = {"pnp_setting_id": setting_id, "updated_at_min": "2000-01-01T00:00:00%2B08:00",
             "updated_at_max": "2999-01-01T00:00:00%2B08:00", **params}
    text = "&".join(f"{key}={value}" for key, value in query.items())
    return tenant.client.get(tenant.api("pnp/message/") + "?" + text)


def record_of(tenant: Any, setting_id: int, message_id: int) -> dict[str, Any]:
    rows = records(tenant, setting_id).json()["results"]
    return next(row for row in rows if row["pnp_message_id"] == message_id)


def wait_status(tenant: Any, setting_id: int, message_id: int, status: str, timeout: float = 20) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        row = record_of(tenant, setting_id, message_id)
        return row if row["status"] == status else None

    try:
        return wait_for(check, timeout=timeout, interval=0.1)
    except AssertionError:
        raise AssertionError(f"status stayed {record_of(tenant, setting_id, message_id)}") from None


@pytest.fixture(scope="module")
def receiver() -> Any:
    rec = CallbackReceiver()
    served = ServedApp(rec.app)
    rec.url = served.url  # type: ignore[attr-defined]
    yield rec
    served.stop()


def subscribe(tenant: Any, receiver: Any, style: str, topics: list[str]) -> str:
    path = f"/hook-{tenant.id}-{style}"
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url + path, "topics": topics,
                                                                "style": style})
    assert response.status_code == 201, response.text
    return path


# --- scenarios ------------------------------------------------------------------------------------

def test_scenarios_list_and_detail_have_the_spec_shape(tenant: Any) -> None:
    created = create_setting(tenant, fallback_period=1440)
    assert created["parameters"] == ["order_number", "arrival_date", "order_url"]
    assert created["sms_parameters"] == ["order_number", "arrival_date"]
    listing = tenant.client.get(tenant.api("pnp/setting/"))
    assert listing.status_code == 200
    assert listing.json() == {"results": [{
        "id": created["id"], "name": "到貨通知", "status": "enable", "line_push_enabled": False, "pnp_enabled": True,
        "fallback_enabled": True, "fallback_period": 1440, "parameters": ["order_number", "arrival_date", "order_url"],
        "sms_parameters": ["order_number", "arrival_date"]}], "next": None}
    detail = tenant.client.get(tenant.api(f"pnp/setting/{created['id']}/")).json()
    assert detail["metric"] == {"all": 0, "fail": 0, "pnp": 0, "sms": 0}
    assert set(detail) == {"id", "name", "status", "line_push_enabled", "pnp_enabled", "fallback_enabled",
                           "fallback_period", "parameters", "sms_parameters", "metric"}
    # editing the PNP content needs LINE's approval again
    edited = tenant.client.patch(tenant.api(f"pnp/setting/{created['id']}/"),
                                 json={"pnp_messages": [{"type": "text", "text": "Hi {{name}}"}]}).json()
    assert edited["pnp_approval_status"] == "pending" and edited["parameters"] == ["name"]
    bad = tenant.client.post(tenant.api("pnp/setting/"), json={"name": "x", "pnp_enabled": True})
    assert bad.status_code == 400 and "pnp_messages" in bad.json()


def test_other_organisations_scenarios_are_walls(tenant: Any, make_tenant: Any) -> None:
    setting = create_setting(tenant)
    other = make_tenant()
    assert other.client.get(other.api(f"pnp/setting/{setting['id']}/")).status_code == 404
    response = other.client.post(other.api("pnp/message/push/"), json=push_body(setting["id"]))
    assert (response.status_code, response.text) == (400, "pnp setting not found")
    assert records(other, setting["id"]).json() == {"detail": "pnp_setting_id not found"}


def test_bad_token_answers_403_text_plain_and_json_on_the_status_query(anon: httpx.Client) -> None:
    headers = {"Authorization": "Bearer nope"}
    for method, path in (("GET", "pnp/setting/"), ("POST", "pnp/message/push/"), ("POST", "pnp/message/multicast/")):
        response = anon.request(method, f"/openapi/v1/{path}", headers=headers, json={})
        assert response.status_code == 403
        assert response.headers["content-type"].startswith("text/plain")
        assert response.text == "You do not have permission to perform this action"
    response = anon.get("/openapi/v1/pnp/message/", headers=headers)
    assert response.status_code == 403
    assert response.json() == {"detail": "You do not have permission to perform this action."}


# --- validation texts ----------------------------------------------------------------------------

def test_push_validation_texts(tenant: Any) -> None:
    setting = create_setting(tenant)
    top_up(tenant, 100)
    sid = setting["id"]

    def post(body: Any) -> tuple[int, str]:
        response = tenant.client.post(tenant.api("pnp/message/push/"), json=body)
        if response.status_code == 400:
            assert response.headers["content-type"].startswith("text/plain")
        return response.status_code, response.text

    assert post({"data": {}}) == (400, "pnp_setting_id field is required")
    assert post({"pnp_setting_id": 999999999, "data": {}}) == (400, "pnp setting not found")
    assert post({"pnp_setting_id": "abc", "data": {}}) == (400, "pnp setting not found")
    assert post({"pnp_setting_id": sid}) == (400, "data field is required")
    assert post({"pnp_setting_id": sid, "data": {"pnp": {}}}) == (400, "phone_number field is required")
    for bad in ("0912345678", "+886-912-345-678", "886912345678", "abc", "+0912345678"):
        assert post(push_body(sid, bad)) == (400, "this value does not match the required pattern")
    body = push_body(sid)
    del body["data"]["pnp"]
    assert post(body) == (400, "pnp field is required")
    body = push_body(sid)
    del body["data"]["sms"]
    assert post(body) == (400, "sms field is required")
    body = push_body(sid)
    del body["data"]["pnp"]["order_url"]
    assert post(body) == (400, "order_url field is required")
    body = push_body(sid)
    del body["data"]["sms"]["arrival_date"]
    assert post(body) == (400, "arrival_date field is required")
    body = push_body(sid, whatsapp={"template_name": "t", "language": "en_US"})
    assert post(body) == (400, "template_data field is required")
    # a hash only when SMS is off
    digest = hashlib.sha256(PHONE.encode()).hexdigest()
    assert post(push_body(sid, digest)) == (400, "this value does not match the required pattern")
    # unapproved PNP content cannot send
    tenant.client.patch(tenant.api(f"pnp/setting/{sid}/"), json={"pnp_approval_status": "pending"})
    assert post(push_body(sid)) == (400, "pnp content is not approved by LINE")
    # a disabled scenario is not found
    tenant.client.patch(tenant.api(f"pnp/setting/{sid}/"), json={"status": "disable",
                                                                 "pnp_approval_status": "approved"})
    assert post(push_body(sid)) == (400, "pnp setting not found")


def test_multicast_limits_and_pending_results(tenant: Any) -> None:
    setting = create_setting(tenant, fallback_period=40000)
    top_up(tenant, 1000)
    entry = push_body(setting["id"])["data"]
    too_many = tenant.client.post(tenant.api("pnp/message/multicast/"),
                                  json={"pnp_setting_id": setting["id"], "data": [entry] * 151})
    assert too_many.status_code == 400
    empty = tenant.client.post(tenant.api("pnp/message/multicast/"), json={"pnp_setting_id": setting["id"],
                                                                          "data": []})
    assert (empty.status_code, empty.text) == (400, "data field is required")
    bad_one = tenant.client.post(tenant.api("pnp/message/multicast/"),
                                 json={"pnp_setting_id": setting["id"], "data": [entry, {**entry, "phone_number": "x"}]})
    assert (bad_one.status_code, bad_one.text) == (400, "this value does not match the required pattern")
    assert records(tenant, setting["id"]).json()["results"] == []  # nothing of a rejected request is kept
    ok = tenant.client.post(tenant.api("pnp/message/multicast/"),
                            json={"pnp_setting_id": setting["id"], "data": [entry] * 150})
    assert ok.status_code == 200
    results = ok.json()
    assert len(results) == 150 and all(item["result"] == "pending" for item in results)
    assert len({item["id"] for item in results}) == 150


# --- points ------------------------------------------------------------------------------------------

def test_points_are_held_per_segment_and_short_balance_answers_400(tenant: Any) -> None:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[],
                             sms_text="{{body}}", fallback_period=1)
    sid = setting["id"]

    def push(text: str) -> httpx.Response:
        body = {"pnp_setting_id": sid, "data": {"phone_number": PHONE, "pnp": {}, "sms": {"body": text}}}
        return tenant.client.post(tenant.api("pnp/message/push/"), json=body)

    response = push("hello")
    assert (response.status_code, response.text) == (400, "your SMS points are insufficient, please recharge before sending")
    assert top_up(tenant, 5) == 5
    assert push("a" * 161).status_code == 200  # GSM-7: 2 segments (153 per part)
    assert balance(tenant) == 3
    assert push("中" * 71).status_code == 200  # UCS-2: 2 segments (67 per part)
    assert balance(tenant) == 1
    response = push("中" * 71)
    assert (response.status_code, response.text) == (400, "your SMS points are insufficient, please recharge before sending")
    assert push("中" * 70).status_code == 200  # one UCS-2 segment
    assert balance(tenant) == 0


def test_a_multicast_short_of_points_answers_400_and_keeps_nothing(tenant: Any, database: Any) -> None:
    """The points are held after the messages are written (the balance row stays locked only
    until the commit): a refusal must roll all of it back, messages, jobs and events alike."""
    from sqlalchemy import func, select

    from openmaac.jobs.models import Job
    from openmaac.sms_plus.models import PnpMessage

    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[], sms_text="{{body}}", fallback_period=40000)
    entries = [{"phone_number": f"+88691299{index:04d}", "pnp": {}, "sms": {"body": "hi"}} for index in range(3)]
    assert top_up(tenant, 2) == 2

    def counts() -> tuple[int, int]:
        with database.read() as session:
            messages = session.scalar(select(func.count()).select_from(PnpMessage)
                                      .where(PnpMessage.pnp_setting_id == setting["id"]))
            jobs = session.scalar(select(func.count()).select_from(Job)
                                  .where(Job.organization_id == tenant.id))
        return int(messages or 0), int(jobs or 0)

    before = counts()
    short = tenant.client.post(tenant.api("pnp/message/multicast/"),
                               json={"pnp_setting_id": setting["id"], "data": entries})
    assert (short.status_code, short.text) == (400, "your SMS points are insufficient, please recharge before sending")
    assert counts() == before and before[0] == 0
    assert balance(tenant) == 2
    assert records(tenant, setting["id"]).json()["results"] == []
    assert top_up(tenant, 1) == 3
    sent = tenant.client.post(tenant.api("pnp/message/multicast/"),
                              json={"pnp_setting_id": setting["id"], "data": entries})
    assert sent.status_code == 200, sent.text
    assert len(sent.json()) == 3 and balance(tenant) == 0
    assert counts()[0] == 3


def test_points_add_cli(tenant: Any) -> None:
    from typer.testing import CliRunner

    from openmaac.cli import app

    result = CliRunner().invoke(app, ["points", "add", "25", "--org", tenant.name])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip().splitlines()[-1] == "25"
    assert balance(tenant) == 25
    assert CliRunner().invoke(app, ["points", "add", "5", "--org", "no-such-org-xyz"]).exit_code == 1


# --- status query ------------------------------------------------------------------------------------

def test_status_query_validation(tenant: Any) -> None:
    setting = create_setting(tenant)
    response = tenant.client.get(tenant.api("pnp/message/") + "?updated_at_min=2022-10-13&updated_at_max=2022-10-14T00:00")
    assert response.status_code == 400
    assert response.json() == {
        "updated_at_min": ["Datetime has wrong format. Use one of these formats instead: "
                           "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z]."],
        "pnp_setting_id": ["This field is required."],
    }
    # an unencoded "+" arrives as a space: 400
    raw = (f"?pnp_setting_id={setting['id']}&updated_at_min=2022-10-13T16:03:15.248652+08:00"
           "&updated_at_max=2022-10-18T16:03:15%2B08:00")
    response = tenant.client.get(tenant.api("pnp/message/") + raw)
    assert response.status_code == 400 and list(response.json()) == ["updated_at_min"]
    missing = tenant.client.get(tenant.api("pnp/message/"), params={"pnp_setting_id": setting["id"]})
    assert missing.json() == {"updated_at_min": ["This field is required."],
                              "updated_at_max": ["This field is required."]}
    response = records(tenant, 987654321)
    assert (response.status_code, response.json()) == (404, {"detail": "pnp_setting_id not found"})
    assert records(tenant, setting["id"]).json() == {"next": None, "results": []}


def test_status_query_pages_newest_update_first_and_filters(tenant: Any) -> None:
    from datetime import UTC, datetime, timedelta

    from sqlalchemy import update

    from openmaac.db.engine import get_database
    from openmaac.sms_plus.models import PnpMessage

    setting = create_setting(tenant, fallback_period=40000)
    top_up(tenant, 1000)
    entry = push_body(setting["id"])["data"]
    ids = [item["id"] for item in tenant.client.post(tenant.api("pnp/message/multicast/"), json={
        "pnp_setting_id": setting["id"], "data": [{**entry, "customized_id": f"c{i}"} for i in range(150)]}).json()]
    for batch in (150, 10):
        ids += [item["id"] for item in tenant.client.post(tenant.api("pnp/message/multicast/"), json={
            "pnp_setting_id": setting["id"], "data": [{**entry, "customized_id": f"d{i}"} for i in range(batch)]
        }).json()]
    def settled() -> bool:  # every PNP step done (the status query shows only 300 of them)
        from sqlalchemy import func, select

        with get_database().read() as session:
            return not session.scalar(select(func.count()).where(PnpMessage.id.in_(ids),
                                                                 PnpMessage.pnp_status == "pnp_preparing"))

    wait_for(settled, timeout=180, interval=0.5)
    base = datetime(2030, 1, 1, 4, 0, 0, tzinfo=UTC)  # 12:00 in Taipei
    with get_database().write() as session:  # spread updated_at so the order is checkable
        for index, message_id in enumerate(ids):
            session.execute(update(PnpMessage).where(PnpMessage.id == message_id)
                            .values(updated_at=base + timedelta(seconds=index)))
    first = records(tenant, setting["id"], updated_at_min="2030-01-01T00:00:00",
                    updated_at_max="2030-01-02T00:00:00").json()
    assert len(first["results"]) == 300 and first["next"]
    assert [row["pnp_message_id"] for row in first["results"]] == list(reversed(ids))[:300]
    assert first["results"][0]["updated_at"].endswith("+08:00")
    second = records(tenant, setting["id"], updated_at_min="2030-01-01T00:00:00",
                     updated_at_max="2030-01-02T00:00:00", start=first["next"]).json()
    assert [row["pnp_message_id"] for row in second["results"]] == list(reversed(ids))[300:]
    assert second["next"] is None
    one = records(tenant, setting["id"], customized_id="c7").json()["results"]
    assert [row["pnp_message_id"] for row in one] == [ids[7]]
    narrow = records(tenant, setting["id"], updated_at_min="2030-01-01T04:00:05Z",
                     updated_at_max="2030-01-01T04:00:06Z").json()["results"]
    assert [row["pnp_message_id"] for row in narrow] == [ids[6], ids[5]]


# --- SMS paths ------------------------------------------------------------------------------------

SPEC_FIELDS = ["pnp_setting_id", "pnp_setting_name", "pnp_message_id", "event_id", "customized_id", "phone_number",
               "status", "line_push_template_id", "line_push_status", "line_push_delivered_at",
               "line_push_error_category", "pnp_status", "pnp_delivered_at", "sms_status", "sms_delivered_at",
               "sms_error_category"]


def test_sms_only_push_is_delivered_through_twilio_with_webhooks(tenant: Any, receiver: Any, base_url: str) -> None:
    maac = subscribe(tenant, receiver, "maac", ["pnp.status_updated"])
    cdh = subscribe(tenant, receiver, "cdh", ["sms_plus.status.update"])
    event = tenant.client.post(tenant.api("event/"), json={"name": "orders"}).json()
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[], fallback_period=1)
    top_up(tenant, 3)
    body = push_body(setting["id"], "+886912000001")
    body["event_id"] = event["id"]
    response = tenant.client.post(tenant.api("pnp/message/push/"), json=body)
    assert response.status_code == 200, response.text
    message_id = response.json()["id"]
    assert response.json()["result"] == "success"
    row = wait_status(tenant, setting["id"], message_id, "sms_delivered")
    assert row["sms_status"] == "sms_delivered" and row["sms_delivered_at"].endswith("+08:00")
    assert row["pnp_status"] is None and row["event_id"] == event["id"] and row["customized_id"] == "AJ1234567890"
    sent = httpx.get(sim(base_url, "twilio") + "/_admin/messages", params={"to": "+886912000001"}).json()
    assert sent["count"] == 1 and sent["results"][0]["text"] == "Order AJ1234567 arrives 2020/7/30"
    assert balance(tenant) == 2  # one segment charged
    metric = tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).json()["metric"]
    assert metric == {"all": 1, "fail": 0, "pnp": 0, "sms": 1}

    def statuses(path: str, key: str) -> list[str]:
        return [json.loads(r["body"])["data"]["status"] for r in receiver.at(path)
                if json.loads(r["body"])[key] in ("pnp.status_updated", "sms_plus.status.update")]

    wait_for(lambda: "sms_delivered" in statuses(maac, "topic") and "sms_delivered" in statuses(cdh, "event"))
    assert statuses(maac, "topic") == ["sms_preparing", "sms_accepted", "sms_delivered"]
    assert statuses(cdh, "event") == ["sms_preparing", "sms_accepted", "sms_delivered"]
    last = json.loads(receiver.at(maac)[-1]["body"])
    assert list(last) == ["timestamp", "topic", "data"] and last["topic"] == "pnp.status_updated"
    assert list(last["data"]) == SPEC_FIELDS
    assert last["data"] == {
        "pnp_setting_id": setting["id"], "pnp_setting_name": "到貨通知", "pnp_message_id": message_id,
        "event_id": event["id"], "customized_id": "AJ1234567890", "phone_number": "+886912000001",
        "status": "sms_delivered", "line_push_template_id": None, "line_push_status": None,
        "line_push_delivered_at": None, "line_push_error_category": None, "pnp_status": None,
        "pnp_delivered_at": None, "sms_status": "sms_delivered", "sms_delivered_at": row["sms_delivered_at"],
        "sms_error_category": None}
    cdh_last = json.loads(receiver.at(cdh)[-1]["body"])
    assert cdh_last["event"] == "sms_plus.status.update" and cdh_last["source"] == "maac"
    assert cdh_last["data"] == last["data"]


def set_faults(base_url: str, name: str, **faults: Any) -> None:
    httpx.post(sim(base_url, name) + "/_admin/faults", json=faults).raise_for_status()


def sms_push(tenant: Any, phone: str, **setting_fields: Any) -> tuple[int, int]:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[], fallback_period=1, **setting_fields)
    top_up(tenant, 10)
    response = tenant.client.post(tenant.api("pnp/message/push/"), json=push_body(setting["id"], phone))
    assert response.status_code == 200, response.text
    return setting["id"], response.json()["id"]


@pytest.mark.parametrize("fault,expected,category", [
    ({"invalid_numbers": ["+886912000011"]}, "sms_failed", "invalid_phone_number"),
    ({"blocked_numbers": ["+886912000011"]}, "sms_blocked", None),
    ({"sensitive_words": ["AJ1234567"]}, "sms_undeliverable", "sensitive_words"),
])
def test_sms_failures_by_category_twilio(tenant: Any, base_url: str, fault: dict[str, Any], expected: str,
                                         category: str | None) -> None:
    set_faults(base_url, "twilio", **fault)
    try:
        setting_id, message_id = sms_push(tenant, "+886912000011")
        row = wait_status(tenant, setting_id, message_id, expected)
        assert row["sms_error_category"] == category
        metric = tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/")).json()["metric"]
        assert metric["fail"] == 1
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")


def test_sms_temporary_error_is_retried_then_delivered_and_then_fails_when_window_closes(
        tenant: Any, base_url: str) -> None:
    set_faults(base_url, "twilio", temporary_errors=[{"count": 2, "to": "+886912000021", "stage": "send"}])
    try:
        setting_id, message_id = sms_push(tenant, "+886912000021")
        wait_status(tenant, setting_id, message_id, "sms_delivered")
        sent = httpx.get(sim(base_url, "twilio") + "/_admin/messages", params={"to": "+886912000021"}).json()
        assert sent["count"] == 1
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")
    # a window of 0 minutes: the first temporary error is final
    tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "retry_window_minutes": 0})
    set_faults(base_url, "twilio", temporary_errors=[{"count": 5, "to": "+886912000022", "stage": "send"}])
    try:
        setting_id, message_id = sms_push(tenant, "+886912000022")
        row = wait_status(tenant, setting_id, message_id, "sms_failed")
        assert row["sms_error_category"] == "others"
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")


def test_sms_callback_timeout_when_the_provider_never_reports(tenant: Any, base_url: str) -> None:
    tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "callback_timeout_minutes": 20})
    set_faults(base_url, "twilio", no_callback_numbers=["+886912000031"])
    try:
        setting_id, message_id = sms_push(tenant, "+886912000031")
        row = wait_status(tenant, setting_id, message_id, "sms_callback_timeout")
        assert row["sms_status"] == "sms_callback_timeout"
    finally:
        httpx.delete(sim(base_url, "twilio") + "/_admin/faults")


def test_mitake_provider_delivers_and_reports(tenant: Any, base_url: str) -> None:
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "mitake"})
    assert response.status_code == 200, response.text
    assert response.json()["credentials"]["password"] == "********"
    setting_id, message_id = sms_push(tenant, "+886912000041")
    wait_status(tenant, setting_id, message_id, "sms_delivered")
    sent = httpx.get(sim(base_url, "mitake") + "/_admin/messages", params={"to": "0912000041"}).json()
    assert sent["count"] == 1
    assert sent["results"][0]["callbacks"][-1]["ack_ok"] is True
    set_faults(base_url, "mitake", blocked_numbers=["+886912000042"])
    try:
        setting_id, message_id = sms_push(tenant, "+886912000042")
        wait_status(tenant, setting_id, message_id, "sms_blocked")
    finally:
        httpx.delete(sim(base_url, "mitake") + "/_admin/faults")


def test_pnp_failure_falls_back_to_sms_after_the_fallback_period(tenant: Any, base_url: str) -> None:
    """PNP to a number LINE cannot match: pnp_failed, then SMS after fallback_period."""
    setting = create_setting(tenant, fallback_period=2)
    top_up(tenant, 10)
    response = tenant.client.post(tenant.api("pnp/message/push/"), json=push_body(setting["id"], "+886912000051"))
    assert response.status_code == 200
    assert response.json()["result"] in ("failed to send messages", "success")
    row = wait_status(tenant, setting["id"], response.json()["id"], "sms_delivered")
    assert row["pnp_status"] in ("pnp_failed", "pnp_undeliverable")
    metric = tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).json()["metric"]
    assert metric == {"all": 1, "fail": 0, "pnp": 0, "sms": 1}


def test_hashed_number_without_sms_ends_without_points(tenant: Any) -> None:
    setting = create_setting(tenant, fallback_enabled=False, sms_text="", fallback_period=1)
    digest = hashlib.sha256(b"+886912000061").hexdigest()
    response = tenant.client.post(tenant.api("pnp/message/push/"), json=push_body(setting["id"], digest))
    assert response.status_code == 200, response.text
    message_id = response.json()["id"]

    def final() -> dict[str, Any] | None:
        row = record_of(tenant, setting["id"], message_id)
        return row if row["status"] in ("pnp_failed", "pnp_undeliverable", "pnp_delivered") else None

    row = wait_for(final, timeout=20, interval=0.1)
    assert row["phone_number"] == digest and row["sms_status"] is None
    assert balance(tenant) == 0


# --- manual upload ---------------------------------------------------------------------------------

def test_manual_upload_preview_mapping_send_and_delete(tenant: Any, base_url: str) -> None:
    setting = create_setting(tenant, pnp_enabled=False, pnp_messages=[], fallback_period=1)
    url = tenant.api(f"pnp/setting/{setting['id']}/upload/")
    csv_text = ("手機,訂單,日期\n0912000071,A1,2020/7/30\n+886912000072,A2,2020/7/31\nnot-a-number,A3,x\n"
                "0912000073,A4,2020/8/1\n")
    no_phone = tenant.client.post(url, files={"file": ("list.csv", b"name,order\nx,1\n", "text/csv")})
    assert no_phone.status_code == 400 and "file" in no_phone.json()
    too_big = tenant.client.post(url, files={"file": ("big.csv", b"phone\n" + b"0" * (25 * 1024 * 1024), "text/csv")})
    assert too_big.status_code == 400 and too_big.json() == {"file": ["The file is larger than 25 MB."]}
    uploaded = tenant.client.post(url, files={"file": ("list.csv", csv_text.encode(), "text/csv")})
    assert uploaded.status_code == 201, uploaded.text
    body = uploaded.json()
    assert body["imported_rows"] == 3 and body["invalid_count"] == 1
    assert body["invalid_rows"] == [{"row": 4, "phone_number": "not-a-number"}]
    assert body["columns"] == ["手機", "訂單", "日期"] and body["phone_column"] == "手機"
    assert body["preview"] == [{"手機": "0912000071", "訂單": "A1", "日期": "2020/7/30"},
                               {"手機": "+886912000072", "訂單": "A2", "日期": "2020/7/31"}]
    send_url = tenant.api(f"pnp/upload/{body['id']}/send/")
    unmapped = tenant.client.post(send_url, json={"mapping": {"sms": {"order_number": "訂單"}}})
    assert unmapped.status_code == 400 and "arrival_date" in unmapped.json()["mapping"]["sms"]
    mapping = {"mapping": {"sms": {"order_number": "訂單", "arrival_date": "日期"}}}
    short = tenant.client.post(send_url, json=mapping)
    assert (short.status_code, short.text) == (400, "your SMS points are insufficient, please recharge before sending")
    top_up(tenant, 3)
    sent = tenant.client.post(send_url, json=mapping)
    assert sent.status_code == 200 and sent.json()["sent"] == 3
    wait_for(lambda: len([r for r in records(tenant, setting["id"]).json()["results"]
                          if r["status"] == "sms_delivered"]) == 3, timeout=30, interval=0.2)
    texts = httpx.get(sim(base_url, "twilio") + "/_admin/messages", params={"to": "+886912000072"}).json()
    assert texts["results"][-1]["text"] == "Order A2 arrives 2020/7/31"
    assert tenant.client.post(send_url, json=mapping).status_code == 400  # already sent
    assert tenant.client.delete(tenant.api(f"pnp/upload/{body['id']}/")).status_code == 204
    assert tenant.client.get(tenant.api(f"pnp/upload/{body['id']}/")).status_code == 404


def test_an_edit_waiting_for_the_scenario_lock_is_checked_against_the_edit_made_meanwhile(
        tenant: Any, database: Any) -> None:
    """Two edits of one scenario at once, each valid alone (one turns PNP off, the other SMS):
    the one that waited for the other's transaction is checked against the scenario as that
    left it, and refused, rather than leaving a scenario with no channel (PostgreSQL)."""

    from sqlalchemy import update

    from openmaac.sms_plus.models import PnpSetting

    setting = create_setting(tenant)  # PNP and the SMS fallback
    answers: list[httpx.Response] = []

    def turn_sms_off() -> None:
        with httpx.Client(base_url=str(tenant.client.base_url), headers=dict(tenant.client.headers),
                          timeout=60) as client:
            answers.append(client.patch(tenant.api(f"pnp/setting/{setting['id']}/"), json={"fallback_enabled": False}))

    def hold(session: Any) -> None:  # the edit that turns PNP off, its row locked until commit
        session.execute(update(PnpSetting).where(PnpSetting.id == setting["id"]).values(pnp_enabled=False))

    behind_a_lock(database, hold, turn_sms_off)
    [answer] = answers
    assert answer.status_code == 400, answer.text
    assert "non_field_errors" in answer.json()
    stored = tenant.client.get(tenant.api(f"pnp/setting/{setting['id']}/")).json()
    assert (stored["pnp_enabled"], stored["fallback_enabled"]) == (False, True)
