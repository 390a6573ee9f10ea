"""The SMS providers' callbacks and the WhatsApp status webhook with what no provider sends:
organisation ids beyond a BIGINT, malformed signatures and bodies, ids no database can look up.
Each answers a 4xx (text/plain), never a 500, and a caller without the secret cannot tell a
message that exists from one that does not."""

from __future__ import annotations

import json
import os
from typing import Any

import httpx
import pytest

from openmaac.sms_plus.providers import simulator_accounts

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

BIG_IDS = [2**63, 10**30]


def _sms_message(tenant: Any) -> int:
    """An SMS+ message of ``tenant`` (SMS only, through the Twilio simulator)."""
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "n", "fallback_enabled": True, "sms_text": "hello", "fallback_period": 1}).json()
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 5}).status_code == 200
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": setting["id"], "data": {"phone_number": "+886912000091", "pnp": {}, "sms": {}}})
    assert response.status_code == 200, response.text
    return int(response.json()["id"])


def _status_document(reference: str, wamid: str = "wamid.HBgLODg2OTE0MDAwMDA2FQIAERgSQ0Y") -> bytes:
    return json.dumps({"object": "whatsapp_business_account", "entry": [{"id": "1", "changes": [{
        "field": "messages", "value": {"messaging_product": "whatsapp",
                                       "metadata": {"phone_number_id": "106540352242922"},
                                       "statuses": [{"id": wamid, "status": "delivered", "timestamp": "1700000000",
                                                     "recipient_id": "886914000006",
                                                     "biz_opaque_callback_data": reference}]}}]}]}).encode()


def _wa_post(anon: httpx.Client, path: str, body: bytes, signature: Any = "sha256=" + "0" * 64) -> httpx.Response:
    return anon.post(path, content=body, headers={"Content-Type": "application/json",
                                                  "X-Hub-Signature-256": signature})


@pytest.mark.parametrize("organization_id", BIG_IDS)
def test_organisation_ids_beyond_a_bigint_are_unknown_callbacks(anon: httpx.Client, organization_id: int) -> None:
    twilio = anon.post(f"/sms_plus/callbacks/twilio/{organization_id}",
                       data={"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"})
    mitake = anon.get(f"/sms_plus/callbacks/mitake/{organization_id}", params={"msgid": "1", "StatusFlag": "4"})
    for response in (twilio, mitake):
        assert (response.status_code, response.text) == (404, "unknown callback")
        assert response.headers["content-type"].startswith("text/plain")
    whatsapp = _wa_post(anon, f"/sms_plus/callbacks/whatsapp/{organization_id}", _status_document("pnp1wa"))
    assert (whatsapp.status_code, whatsapp.text) == (403, "invalid X-Hub-Signature-256")
    handshake = anon.get(f"/sms_plus/callbacks/whatsapp/{organization_id}",
                         params={"hub.mode": "subscribe", "hub.verify_token": "v", "hub.challenge": "7"})
    assert (handshake.status_code, handshake.text) == (403, "verify token mismatch")


def test_malformed_signatures_are_wrong_signatures(tenant: Any, anon: httpx.Client) -> None:
    path = f"/sms_plus/callbacks/twilio/{tenant.id}"
    form = {"MessageSid": "SM" + "0" * 32, "MessageStatus": "delivered"}
    for signature in ("é".encode(), b"\xff"):
        response = anon.post(path, data=form, headers={"X-Twilio-Signature": signature})
        assert (response.status_code, response.text) == (403, "invalid X-Twilio-Signature")
    not_utf8 = anon.post(path, content=b"MessageSid=\xff&MessageStatus=delivered",
                         headers={"Content-Type": "application/x-www-form-urlencoded", "X-Twilio-Signature": "x"})
    assert (not_utf8.status_code, not_utf8.text) == (403, "invalid X-Twilio-Signature")
    assert tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "mitake", "whatsapp": {"verify_token": "v-1"}}).status_code == 200
    mitake = anon.get(f"/sms_plus/callbacks/mitake/{tenant.id}",
                      params={"omref": "r", "omsig": "ü" * 32, "msgid": "1", "StatusFlag": "4"})
    assert (mitake.status_code, mitake.text) == (403, "invalid callback token")
    whatsapp = _wa_post(anon, f"/sms_plus/callbacks/whatsapp/{tenant.id}", b"{}", "sha256=é".encode())
    assert (whatsapp.status_code, whatsapp.text) == (403, "invalid X-Hub-Signature-256")
    handshake = anon.get(f"/sms_plus/callbacks/whatsapp/{tenant.id}",
                         params={"hub.mode": "subscribe", "hub.verify_token": "v-ü", "hub.challenge": "7"})
    assert (handshake.status_code, handshake.text) == (403, "verify token mismatch")


@pytest.mark.parametrize("body", [
    b"[]", b'"x"', b'{"entry": 1}', b'{"entry": [1]}', b'{"entry": [{"changes": "x"}]}',
    b'{"entry": [{"changes": [{"value": []}]}]}', b'{"entry": [{"changes": [{"value": {"statuses": [1]}}]}]}',
    b'{"entry": [{"changes": [{"value": {"statuses": [{"id": {"a": 1}}]}}]}]}',
    b'{"entry": [{"changes": [{"value": {"statuses": [{"id": "a\\u0000b"}]}}]}]}',
    b'{"entry": [{"changes": [{"value": {"statuses": [{"biz_opaque_callback_data": ["pnp1wa"]}]}}]}]}',
    b"not json",
])
def test_malformed_whatsapp_bodies_are_400(anon: httpx.Client, body: bytes) -> None:
    response = _wa_post(anon, "/sms_plus/callbacks/whatsapp", body)
    assert response.status_code == 400, response.text
    assert response.headers["content-type"].startswith("text/plain")


def test_an_unknown_message_and_a_wrong_signature_are_answered_alike(tenant: Any, anon: httpx.Client) -> None:
    from openmaac.channels.whatsapp import hub_signature

    message_id = _sms_message(tenant)
    known, unknown, beyond = (_status_document(f"pnp{message_id}wa"), _status_document(f"pnp{message_id + 10**6}wa"),
                              _status_document(f"pnp{2**63}wa", wamid="wamid.unknown"))
    answers = {(r.status_code, r.text) for r in (
        _wa_post(anon, "/sms_plus/callbacks/whatsapp", known),
        _wa_post(anon, "/sms_plus/callbacks/whatsapp", unknown),
        _wa_post(anon, "/sms_plus/callbacks/whatsapp", beyond),
        _wa_post(anon, f"/sms_plus/callbacks/whatsapp/{tenant.id}", known),
        _wa_post(anon, f"/sms_plus/callbacks/whatsapp/{tenant.id}", unknown),
    )}
    assert answers == {(403, "invalid X-Hub-Signature-256")}
    # signed with the organisation's app secret, on its own URL, an unknown message is ignored
    signed = _wa_post(anon, f"/sms_plus/callbacks/whatsapp/{tenant.id}", unknown,
                      hub_signature(simulator_accounts()["whatsapp"]["app_secret"], unknown))
    assert (signed.status_code, signed.text) == (200, "OK")


def test_an_authenticated_report_with_ids_no_database_takes_is_400(tenant: Any, anon: httpx.Client,
                                                                  base_url: str) -> None:
    from openmaac.channels.sms.twilio import twilio_signature

    path = f"/sms_plus/callbacks/twilio/{tenant.id}"

    def signed(form: dict[str, str]) -> httpx.Response:
        pairs = sorted(form.items())
        return anon.post(path, data=form, headers={"X-Twilio-Signature": twilio_signature(
            simulator_accounts()["twilio"]["auth_token"], base_url + path, pairs)})

    for sid in ("SM\x00" + "0" * 31, "SM" + "0" * 200):
        response = signed({"MessageSid": sid, "MessageStatus": "delivered"})
        assert (response.status_code, response.text) == (400, "not a delivery report")
    # an authenticated report about a message openmaac does not know is acknowledged
    unknown = signed({"MessageSid": "SM" + "1" * 32, "MessageStatus": "delivered"})
    assert unknown.status_code == 200


def test_a_join_link_code_no_link_can_have_is_404(anon: httpx.Client) -> None:
    for code in ("ab%00cd", "x" * 33, "%C3%A9"):
        response = anon.get(f"/sms_plus/j/{code}", follow_redirects=False)
        assert (response.status_code, response.json()) == (404, {"detail": "Not found."})
