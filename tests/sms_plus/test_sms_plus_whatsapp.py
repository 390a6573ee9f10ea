"""SMS+ WhatsApp step over real HTTP against the WhatsApp Cloud API simulator: after LINE
(push / PNP) did not deliver within fallback_period, the scenario's WhatsApp template goes out;
its status webhooks (signed X-Hub-Signature-256, carrying our reference) move the message;
WhatsApp not delivered (rejected, a failed status, or no delivery within the WhatsApp wait)
goes on to SMS when the scenario has it. See docs/api.md "WhatsApp step"."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from helpers import CallbackReceiver, ServedApp, behind_a_lock, wait_for

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

PNP_CONTENT = [{"type": "text", "text": "Order {{order_number}} arrived"}]
SMS_TEXT = "Order {{order_number}} arrived"
WHATSAPP = {"template_name": "deliver_confirmation", "language": "en_US",
            "template_data": {"header": {"parameters": [{"type": "text", "text": "全家金林門市"}]},
                              "body": {"parameters": ["AJ1234567"]}}}
SPEC_FIELDS = ["pnp_setting_id", "pnp_setting_name", "pnp_message_id", "event_id", "customized_id", "phone_number",
               "status", "line_push_template_id", "line_push_status", "line_push_delivered_at",
               "line_push_error_category", "pnp_status", "pnp_delivered_at", "sms_status", "sms_delivered_at",
               "sms_error_category"]
WHATSAPP_FIELDS = ["whatsapp_status", "whatsapp_delivered_at", "whatsapp_error_category"]


def sim(base_url: str, name: str) -> str:
    return f"{base_url}/_simulators/{name}"


@pytest.fixture(scope="module")
def receiver() -> Any:
    rec = CallbackReceiver()
    served = ServedApp(rec.app)
    rec.url = served.url  # type: ignore[attr-defined]
    yield rec
    served.stop()


@pytest.fixture
def whatsapp_sim(base_url: str) -> Any:
    yield sim(base_url, "whatsapp")
    httpx.delete(sim(base_url, "whatsapp") + "/_admin/faults").raise_for_status()
    httpx.post(sim(base_url, "whatsapp") + "/_admin/config", json={"templates": []}).raise_for_status()


def scenario(tenant: Any, *, points: int = 10, **fields: Any) -> dict[str, Any]:
    body = {"name": "到貨通知", "pnp_enabled": False, "pnp_messages": [], "fallback_enabled": True,
            "sms_text": SMS_TEXT, "fallback_period": 1, "whatsapp_enabled": True,
            "whatsapp_template_name": "deliver_confirmation", "whatsapp_language": "en_US", **fields}
    response = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert response.status_code == 201, response.text
    if points:
        assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": points}).status_code == 200
    return dict(response.json())


def push(tenant: Any, setting_id: int, phone: str, **data: Any) -> dict[str, Any]:
    entry = {"phone_number": phone, "pnp": {"order_number": "A1"}, "sms": {"order_number": "A1"},
             "whatsapp": WHATSAPP, "customized_id": "AJ1234567890", **data}
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={"pnp_setting_id": setting_id, "data": entry})
    assert response.status_code == 200, response.text
    return dict(response.json())


def row(tenant: Any, setting_id: int, message_id: int) -> dict[str, Any]:
    rows = tenant.client.get(tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}"
                             "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00").json()
    return next(r for r in rows["results"] if r["pnp_message_id"] == message_id)


def wait_status(tenant: Any, setting_id: int, message_id: int, status: str) -> dict[str, Any]:
    try:
        return wait_for(lambda: (lambda r: r if r["status"] == status else None)(row(tenant, setting_id, message_id)),
                        timeout=30, interval=0.1)
    except AssertionError:
        raise AssertionError(f"status stayed {row(tenant, setting_id, message_id)}") from None


def subscribe(tenant: Any, receiver: Any) -> str:
    path = f"/wa-{tenant.id}"
    response = tenant.client.post(tenant.api("webhook/"), json={"url": receiver.url + path,
                                                                "topics": ["pnp.status_updated"], "style": "maac"})
    assert response.status_code == 201, response.text
    return path


def accepted_without_status_webhooks(tenant: Any, whatsapp_sim: str, phone: str) -> tuple[dict[str, Any], int]:
    """A message whose WhatsApp send was accepted and about which no status webhook comes (the
    simulator sends none to this number; WhatsApp's wait is 40,000 API minutes): the test sends
    its statuses. Returns the scenario and the message's id."""
    httpx.post(whatsapp_sim + "/_admin/faults", json={"no_callback_numbers": [phone]}).raise_for_status()
    tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "whatsapp_wait_minutes": 40000})
    setting = scenario(tenant)
    message_id = int(push(tenant, setting["id"], phone)["id"])
    wait_status(tenant, setting["id"], message_id, "whatsapp_accepted")
    return setting, message_id


def statuses(receiver: Any, path: str) -> list[dict[str, Any]]:
    """The status events received, each once: a delivery retried after a slow answer (webhooks
    are at least once; receivers drop repeats) arrives again with the same body."""
    bodies = list(dict.fromkeys(r["body"] for r in receiver.at(path)))
    return [json.loads(body)["data"] for body in bodies]


def sms_sent(base_url: str, phone: str) -> int:
    return int(httpx.get(sim(base_url, "twilio") + "/_admin/messages", params={"to": phone}).json()["count"])


def wa_sent(base_url: str, phone: str) -> list[dict[str, Any]]:
    return list(httpx.get(sim(base_url, "whatsapp") + "/_admin/messages", params={"to": phone}).json()["results"])


def metric(tenant: Any, setting_id: int) -> dict[str, int]:
    return dict(tenant.client.get(tenant.api(f"pnp/setting/{setting_id}/")).json()["metric"])


def balance(tenant: Any) -> int:
    return int(tenant.client.get(tenant.api("pnp/points/")).json()["balance"])


def test_pnp_not_delivered_then_whatsapp_delivered_and_no_sms(tenant: Any, base_url: str, receiver: Any,
                                                             whatsapp_sim: str) -> None:
    """PNP to a number LINE cannot reach; at fallback_period WhatsApp goes out and is delivered:
    the SMS never goes and its points come back."""
    path = subscribe(tenant, receiver)
    setting = scenario(tenant, pnp_enabled=True, pnp_messages=PNP_CONTENT, pnp_approval_status="approved",
                       fallback_period=2)
    phone = "+886914000001"
    message_id = push(tenant, setting["id"], phone)["id"]
    record = wait_status(tenant, setting["id"], message_id, "whatsapp_delivered")
    assert record["pnp_status"] in ("pnp_failed", "pnp_undeliverable")
    assert record["whatsapp_status"] == "whatsapp_delivered" and record["whatsapp_error_category"] is None
    assert record["whatsapp_delivered_at"].endswith("+08:00")
    assert record["sms_status"] is None
    [sent] = wa_sent(base_url, phone)
    assert sent["template"] == "deliver_confirmation" and sent["language"] == "en_US"
    assert sent["reference"] == f"pnp{message_id}wa"
    assert sent["components"] == [
        {"type": "header", "parameters": [{"type": "text", "text": "全家金林門市"}]},
        {"type": "body", "parameters": [{"type": "text", "text": "AJ1234567"}]}]
    assert [c["response_status"] for c in sent["callbacks"] if "response_status" in c][:2] == [200, 200]
    assert sms_sent(base_url, phone) == 0
    assert balance(tenant) == 10  # the SMS hold was released
    assert metric(tenant, setting["id"]) == {"all": 1, "fail": 0, "pnp": 0, "sms": 0}
    wait_for(lambda: any(d["status"] == "whatsapp_delivered" for d in statuses(receiver, path)))
    seen = [d["status"] for d in statuses(receiver, path)]
    assert seen[0] == "pnp_preparing" and seen[-3:] == ["whatsapp_preparing", "whatsapp_accepted",
                                                         "whatsapp_delivered"]
    last = statuses(receiver, path)[-1]
    assert list(last) == SPEC_FIELDS + WHATSAPP_FIELDS
    assert last["whatsapp_delivered_at"] == record["whatsapp_delivered_at"]
    assert last["whatsapp_status"] == "whatsapp_delivered" and last["whatsapp_error_category"] is None
    assert last["pnp_status"] == record["pnp_status"] and last["sms_status"] is None


def test_whatsapp_failed_status_goes_on_to_sms(tenant: Any, base_url: str, whatsapp_sim: str) -> None:
    phone = "+886914000002"
    httpx.post(whatsapp_sim + "/_admin/faults", json={"invalid_numbers": [phone]}).raise_for_status()
    setting = scenario(tenant)
    message_id = push(tenant, setting["id"], phone)["id"]
    record = wait_status(tenant, setting["id"], message_id, "sms_delivered")
    assert (record["whatsapp_status"], record["whatsapp_error_category"]) == ("whatsapp_undeliverable",
                                                                             "invalid_phone_number")
    assert len(wa_sent(base_url, phone)) == 1 and sms_sent(base_url, phone) == 1
    assert balance(tenant) == 9
    assert metric(tenant, setting["id"]) == {"all": 1, "fail": 0, "pnp": 0, "sms": 1}


def test_whatsapp_rejected_at_send_is_failed_then_sms(tenant: Any, base_url: str, whatsapp_sim: str) -> None:
    # the simulator knows only this template: ours does not exist (132001)
    httpx.post(whatsapp_sim + "/_admin/config",
               json={"templates": [{"name": "other", "language": "en_US", "body_parameters": 1}]}).raise_for_status()
    phone = "+886914000003"
    setting = scenario(tenant)
    message_id = push(tenant, setting["id"], phone)["id"]
    record = wait_status(tenant, setting["id"], message_id, "sms_delivered")
    assert (record["whatsapp_status"], record["whatsapp_error_category"]) == ("whatsapp_failed", "template_error")
    assert wa_sent(base_url, phone) == [] and sms_sent(base_url, phone) == 1


def test_no_whatsapp_delivery_within_the_wait_times_out_to_sms(tenant: Any, base_url: str,
                                                              whatsapp_sim: str) -> None:
    phone = "+886914000004"
    httpx.post(whatsapp_sim + "/_admin/faults", json={"no_callback_numbers": [phone]}).raise_for_status()
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio",
                                                                        "whatsapp_wait_minutes": 10})
    assert response.status_code == 200 and response.json()["whatsapp_wait_minutes"] == 10
    setting = scenario(tenant)
    message_id = push(tenant, setting["id"], phone)["id"]
    record = wait_status(tenant, setting["id"], message_id, "sms_delivered")
    assert (record["whatsapp_status"], record["whatsapp_error_category"]) == ("whatsapp_undeliverable",
                                                                             "callback_timeout")
    assert len(wa_sent(base_url, phone)) == 1 and sms_sent(base_url, phone) == 1


def test_whatsapp_only_scenario_blocked_ends_failed(tenant: Any, base_url: str, whatsapp_sim: str) -> None:
    phone = "+886914000005"
    httpx.post(whatsapp_sim + "/_admin/faults", json={"blocked_numbers": [phone]}).raise_for_status()
    setting = scenario(tenant, fallback_enabled=False, sms_text="", points=0)
    # no whatsapp object in the request: the scenario's template and language, no parameters
    message_id = push(tenant, setting["id"], phone, whatsapp=None)["id"]
    record = wait_status(tenant, setting["id"], message_id, "whatsapp_undeliverable")
    assert record["whatsapp_error_category"] == "blocked" and record["sms_status"] is None
    [sent] = wa_sent(base_url, phone)
    assert sent["template"] == "deliver_confirmation" and sent["components"] == []
    wait_for(lambda: metric(tenant, setting["id"])["fail"] == 1)
    assert metric(tenant, setting["id"]) == {"all": 1, "fail": 1, "pnp": 0, "sms": 0}


def test_whatsapp_webhook_with_a_bad_signature_changes_nothing(tenant: Any, base_url: str, anon: httpx.Client,
                                                               whatsapp_sim: str) -> None:
    phone = "+886914000006"
    setting, message_id = accepted_without_status_webhooks(tenant, whatsapp_sim, phone)
    [sent] = wa_sent(base_url, phone)
    document = {"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{"field": "messages", "value": {
        "messaging_product": "whatsapp", "metadata": {"phone_number_id": "106540352242922"},
        "statuses": [{"id": sent["id"], "status": "delivered", "timestamp": "1700000000", "recipient_id": "886914000006",
                      "biz_opaque_callback_data": f"pnp{message_id}wa"}]}}]}]}
    body = json.dumps(document).encode()
    forged = anon.post("/sms_plus/callbacks/whatsapp", content=body,
                       headers={"Content-Type": "application/json", "X-Hub-Signature-256": "sha256=" + "0" * 64})
    assert forged.status_code == 403
    assert row(tenant, setting["id"], message_id)["status"] == "whatsapp_accepted"
    # the same document signed with the app secret is applied
    from openmaac.channels.whatsapp import hub_signature
    from openmaac.sms_plus.providers import simulator_accounts

    signed = anon.post(f"/sms_plus/callbacks/whatsapp/{tenant.id}", content=body,
                       headers={"Content-Type": "application/json",
                                "X-Hub-Signature-256": hub_signature(simulator_accounts()["whatsapp"]["app_secret"], body)})
    assert signed.status_code == 200
    assert row(tenant, setting["id"], message_id)["status"] == "whatsapp_delivered"
    assert sms_sent(base_url, phone) == 0
    # Meta's subscription handshake on the organisation's URL
    tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio",
                                                             "whatsapp": {"verify_token": "v-123"}})
    url = f"/sms_plus/callbacks/whatsapp/{tenant.id}"
    ok = anon.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "v-123", "hub.challenge": "42"})
    assert (ok.status_code, ok.text) == (200, "42")
    assert anon.get(url, params={"hub.mode": "subscribe", "hub.verify_token": "x", "hub.challenge": "42"}
                    ).status_code == 403


def test_hashed_number_skips_whatsapp_and_scenarios_without_it_keep_the_spec_fields(tenant: Any) -> None:
    import hashlib

    setting = scenario(tenant, pnp_enabled=True, pnp_messages=PNP_CONTENT, pnp_approval_status="approved",
                       fallback_enabled=False, sms_text="")
    digest = hashlib.sha256(b"+886914000007").hexdigest()
    message_id = push(tenant, setting["id"], digest)["id"]
    record = wait_for(lambda: (lambda r: r if r["status"] in ("pnp_failed", "pnp_undeliverable") else None)(
        row(tenant, setting["id"], message_id)), timeout=30, interval=0.1)
    assert record["whatsapp_status"] is None  # WhatsApp needs the number itself
    plain = scenario(tenant, whatsapp_enabled=False, points=0)
    other = push(tenant, plain["id"], "+886914000008")["id"]
    assert "whatsapp_status" not in row(tenant, plain["id"], other)


def test_media_and_location_parameters_become_cloud_api_components(tenant: Any, base_url: str,
                                                                   whatsapp_sim: str) -> None:
    setting = scenario(tenant, fallback_enabled=False, sms_text="", points=0)
    phone = "+886914000009"
    template = {"template_name": "deliver_confirmation", "language": "zh_TW", "template_data": {
        "header": {"parameters": [{"type": "image", "media_url": "http://maac.io/x.jpg"}]},
        "body": {"parameters": ["AJ1234567", {"type": "text", "text": "全家"}]}}}
    message_id = push(tenant, setting["id"], phone, whatsapp=template)["id"]
    wait_status(tenant, setting["id"], message_id, "whatsapp_delivered")
    [sent] = wa_sent(base_url, phone)
    assert sent["language"] == "zh_TW"
    assert sent["components"] == [
        {"type": "header", "parameters": [{"type": "image", "image": {"link": "http://maac.io/x.jpg"}}]},
        {"type": "body", "parameters": [{"type": "text", "text": "AJ1234567"}, {"type": "text", "text": "全家"}]}]
    phone = "+886914000010"
    template["template_data"] = {"header": {"parameters": [
        {"type": "document", "media_id": "4490709327384033", "filename": "invoice.pdf"}]}}
    message_id = push(tenant, setting["id"], phone, whatsapp=template)["id"]
    wait_status(tenant, setting["id"], message_id, "whatsapp_delivered")
    [sent] = wa_sent(base_url, phone)
    assert sent["components"] == [{"type": "header", "parameters": [
        {"type": "document", "document": {"id": "4490709327384033", "filename": "invoice.pdf"}}]}]
    phone = "+886914000011"
    template["template_data"] = {"header": {"parameters": [
        {"type": "location", "latitude": "25.03", "longitude": "121.56", "name": "101", "address": "Taipei"}]}}
    message_id = push(tenant, setting["id"], phone, whatsapp=template)["id"]
    wait_status(tenant, setting["id"], message_id, "whatsapp_delivered")
    [sent] = wa_sent(base_url, phone)
    assert sent["components"] == [{"type": "header", "parameters": [{"type": "location", "location": {
        "latitude": "25.03", "longitude": "121.56", "name": "101", "address": "Taipei"}}]}]


def test_a_whatsapp_status_waiting_for_the_message_lock_sees_what_the_holder_committed(
        tenant: Any, base_url: str, whatsapp_sim: str) -> None:
    """A status that arrives while another transaction changes the message (the send's answer,
    another status) applies to the message as that transaction left it: a delivery recorded
    meanwhile is not recorded (nor announced) a second time."""
    from datetime import UTC, datetime

    from sqlalchemy import update

    from openmaac.channels.sms.base import DeliveryReport, DeliveryStatus
    from openmaac.db.engine import get_database
    from openmaac.sms_plus import engine
    from openmaac.sms_plus.models import PnpMessage

    phone = "+886914000010"
    setting, message_id = accepted_without_status_webhooks(tenant, whatsapp_sim, phone)
    report = DeliveryReport(provider_message_id="", status=DeliveryStatus.DELIVERED, raw_status="delivered",
                            reference=f"pnp{message_id}wa")
    database = get_database()
    applied: list[bool] = []
    def hold(session: Any) -> None:  # the holder: records a delivery, keeps the row locked until commit
        session.execute(update(PnpMessage).where(PnpMessage.id == message_id).values(
            status="whatsapp_delivered", whatsapp_status="whatsapp_delivered",
            whatsapp_delivered_at=datetime(2001, 2, 3, 4, 5, 6, tzinfo=UTC)))

    behind_a_lock(database, hold, lambda: applied.append(engine.apply_whatsapp_report(tenant.id, report)))
    assert applied == [True]
    record = row(tenant, setting["id"], message_id)
    assert record["whatsapp_delivered_at"] == "2001-02-03T12:05:06+08:00"  # the holder's, not overwritten
