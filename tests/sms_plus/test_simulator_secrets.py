"""The built-in simulators' demo accounts carry secrets derived from the server secret, not the
constants in the simulators' source: a delivery report signed with those public constants for an
organisation on the built-in simulators is refused and changes nothing. The demo credentials
fill in only what goes to the built-in simulators; a gateway of the organisation's own gets
exactly the credentials it stored."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from helpers import wait_for
from openmaac.channels.sms.twilio import twilio_signature
from openmaac.channels.whatsapp import hub_signature
from openmaac.sms_plus.providers import simulator_accounts

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

# what the simulators' source holds as their standalone defaults
PUBLIC_TWILIO_TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC_WHATSAPP_APP_SECRET = "simulator-app-secret"
WHATSAPP = {"template_name": "deliver_confirmation", "language": "en_US", "template_data": {}}


def sim(base_url: str, name: str) -> str:
    return f"{base_url}/_simulators/{name}"


@pytest.fixture
def clean_faults(base_url: str) -> Iterator[None]:
    """The faults a test sets on the built-in simulators (shared by every test) are lifted."""
    yield
    for name in ("twilio", "whatsapp"):
        httpx.delete(sim(base_url, name) + "/_admin/faults").raise_for_status()


def push(tenant: Any, phone: str, *, whatsapp: bool = False) -> tuple[int, int]:
    body: dict[str, Any] = {"name": "secrets", "pnp_enabled": False, "pnp_messages": [], "fallback_enabled": True,
                            "sms_text": "hello", "fallback_period": 1}
    if whatsapp:
        body.update(whatsapp_enabled=True, whatsapp_template_name="deliver_confirmation",
                    whatsapp_language="en_US")
    setting = tenant.client.post(tenant.api("pnp/setting/"), json=body)
    assert setting.status_code == 201, setting.text
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 5}).status_code == 200
    data: dict[str, Any] = {"phone_number": phone, "pnp": {}, "sms": {}}
    if whatsapp:
        data["whatsapp"] = WHATSAPP
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={"pnp_setting_id": setting.json()["id"],
                                                                         "data": data})
    assert response.status_code == 200, response.text
    return int(setting.json()["id"]), int(response.json()["id"])


def record(tenant: Any, setting_id: int, message_id: int) -> dict[str, Any]:
    rows = tenant.client.get(tenant.api("pnp/message/") + f"?pnp_setting_id={setting_id}"
                             "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00").json()
    return dict(next(r for r in rows["results"] if r["pnp_message_id"] == message_id))


def wait_status(tenant: Any, setting_id: int, message_id: int, status: str) -> dict[str, Any]:
    return dict(wait_for(lambda: (lambda r: r if r["status"] == status else None)(
        record(tenant, setting_id, message_id)), timeout=30, interval=0.1))


def sent(base_url: str, name: str, phone: str) -> list[dict[str, Any]]:
    response = httpx.get(sim(base_url, name) + "/_admin/messages", params={"to": phone})
    response.raise_for_status()
    return list(response.json()["results"])


def test_a_twilio_report_signed_with_the_public_token_is_refused(tenant: Any, anon: httpx.Client, base_url: str,
                                                                 clean_faults: None) -> None:
    phone = "+886915000001"
    httpx.post(sim(base_url, "twilio") + "/_admin/faults", json={"no_callback_numbers": [phone]}).raise_for_status()
    setting_id, message_id = push(tenant, phone)
    wait_status(tenant, setting_id, message_id, "sms_accepted")
    [message] = sent(base_url, "twilio", phone)
    path = f"/sms_plus/callbacks/twilio/{tenant.id}?omref=pnp{message_id}r1"
    form = {"AccountSid": "AC" + "0" * 31 + "1", "MessageSid": message["id"], "MessageStatus": "delivered",
            "To": phone}

    def report(token: str) -> httpx.Response:
        signature = twilio_signature(token, base_url + path, sorted(form.items()))
        return anon.post(path, data=form, headers={"X-Twilio-Signature": signature})

    forged = report(PUBLIC_TWILIO_TOKEN)
    assert (forged.status_code, forged.text) == (403, "invalid X-Twilio-Signature")
    assert record(tenant, setting_id, message_id)["status"] == "sms_accepted"
    # the same report signed with this server's demo token is the simulator's own
    assert report(simulator_accounts()["twilio"]["auth_token"]).status_code == 200
    assert record(tenant, setting_id, message_id)["status"] == "sms_delivered"


def test_a_whatsapp_status_signed_with_the_public_app_secret_is_refused(tenant: Any, anon: httpx.Client,
                                                                        base_url: str,
                                                                        clean_faults: None) -> None:
    phone = "+886915000002"
    httpx.post(sim(base_url, "whatsapp") + "/_admin/faults", json={"no_callback_numbers": [phone]}).raise_for_status()
    assert tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "whatsapp_wait_minutes": 40000}).status_code == 200
    setting_id, message_id = push(tenant, phone, whatsapp=True)
    wait_status(tenant, setting_id, message_id, "whatsapp_accepted")
    [message] = sent(base_url, "whatsapp", phone)
    body = json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"phone_number_id": "106540352242922"},
                                       "statuses": [{"id": message["id"], "status": "delivered",
                                                     "timestamp": "1700000000", "recipient_id": phone[1:],
                                                     "biz_opaque_callback_data": f"pnp{message_id}wa"}]}}]}]}).encode()

    def status(path: str, secret: str) -> httpx.Response:
        return anon.post(path, content=body, headers={"Content-Type": "application/json",
                                                      "X-Hub-Signature-256": hub_signature(secret, body)})

    for path in ("/sms_plus/callbacks/whatsapp", f"/sms_plus/callbacks/whatsapp/{tenant.id}"):
        forged = status(path, PUBLIC_WHATSAPP_APP_SECRET)
        assert (forged.status_code, forged.text) == (403, "invalid X-Hub-Signature-256")
    assert record(tenant, setting_id, message_id)["status"] == "whatsapp_accepted"
    assert status("/sms_plus/callbacks/whatsapp", simulator_accounts()["whatsapp"]["app_secret"]).status_code == 200
    assert record(tenant, setting_id, message_id)["status"] == "whatsapp_delivered"


def test_an_own_gateway_gets_no_demo_credentials(tenant: Any, base_url: str) -> None:
    """A gateway URL without credentials: nothing of the demo accounts is filled in, so the
    send fails as a configuration error and the gateway hears nothing."""
    port = httpx.URL(base_url).port
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "base_url": f"http://localhost:{port}/_simulators/twilio",
        "whatsapp": {"base_url": f"http://localhost:{port}/_simulators/whatsapp"}})
    assert response.status_code == 200, response.text
    assert response.json()["credentials"] == {}
    assert set(response.json()["whatsapp"]) == {"base_url"}
    phone = "+886915000003"
    setting_id, message_id = push(tenant, phone)
    failed = wait_status(tenant, setting_id, message_id, "sms_failed")
    assert failed["sms_error_category"] == "others"
    assert sent(base_url, "twilio", phone) == []
    # on the built-in simulator again, the demo account sends
    assert tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio"}).status_code == 200
    phone = "+886915000004"
    setting_id, message_id = push(tenant, phone)
    wait_status(tenant, setting_id, message_id, "sms_delivered")
    assert len(sent(base_url, "twilio", phone)) == 1
