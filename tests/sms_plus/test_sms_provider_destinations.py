"""The SMS and WhatsApp gateway URLs an organisation sets go through the outbound guard: refused
at ``PUT pnp/sms_provider/`` when they lead to a private, loopback or link-local address, and
checked again at every connection (a name that resolves to loopback by then is not reached);
the built-in simulators (no URL stored) keep working without any allow list."""

from __future__ import annotations

import dataclasses
import os
import secrets
from typing import Any

import httpx
import pytest

from helpers import behind_a_lock, wait_for

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"

SMS_TEXT = "Order {{order_number}} arrives"


@pytest.fixture
def no_allow_list(monkeypatch: pytest.MonkeyPatch) -> None:
    """The operator allows nothing (the harness otherwise allows 127.0.0.1 and localhost)."""
    from openmaac.channels import destinations
    from openmaac.config import get_settings

    settings = dataclasses.replace(get_settings(), outbound_allow_hosts=())
    monkeypatch.setattr(destinations, "get_settings", lambda: settings)


def provider(tenant: Any) -> dict[str, Any]:
    response = tenant.client.get(tenant.api("pnp/sms_provider/"))
    assert response.status_code == 200, response.text
    return dict(response.json())


def sms_only_push(tenant: Any, phone: str) -> tuple[int, int]:
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "guard", "pnp_enabled": False, "pnp_messages": [], "fallback_enabled": True,
        "sms_text": SMS_TEXT, "fallback_period": 1})
    assert setting.status_code == 201, setting.text
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 5}).status_code == 200
    response = tenant.client.post(tenant.api("pnp/message/push/"), json={
        "pnp_setting_id": setting.json()["id"],
        "data": {"phone_number": phone, "pnp": {}, "sms": {"order_number": "AJ1"}}})
    assert response.status_code == 200, response.text
    return int(setting.json()["id"]), int(response.json()["id"])


def final_record(tenant: Any, setting_id: int, message_id: int) -> dict[str, Any]:
    query = (f"pnp_setting_id={setting_id}&updated_at_min=2000-01-01T00:00:00%2B08:00"
             "&updated_at_max=2999-01-01T00:00:00%2B08:00")

    def final() -> dict[str, Any] | None:
        rows = tenant.client.get(tenant.api("pnp/message/") + "?" + query).json()["results"]
        row = next(row for row in rows if row["pnp_message_id"] == message_id)
        return row if row["status"] not in ("sms_preparing", "sms_accepted", "sms_sending") else None

    return dict(wait_for(final, timeout=30, interval=0.1))


def sent_by_simulator(base_url: str, name: str, to: str) -> int:
    response = httpx.get(f"{base_url}/_simulators/{name}/_admin/messages", params={"to": to})
    response.raise_for_status()
    return int(response.json()["count"])


REFUSED = [
    "http://127.0.0.1:9/", "http://localhost:9/", "http://127.0.0.2/", "http://169.254.169.254/latest/",
    "http://10.0.0.8/", "http://[::1]/", "http://[::127.0.0.1]/", "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::a9fe:a9fe]/", "http://[64:ff9b:1::808:808]/", "http://[2002:7f00:1::1]/",
    "http://[2002:a9fe:a9fe::1]/", "http://[fe80::1]/",
]


@pytest.mark.parametrize("url", REFUSED)
def test_private_base_url_refused_at_put(tenant: Any, no_allow_list: None, url: str) -> None:
    before = provider(tenant)
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "mitake", "base_url": url, "credentials": {"username": "u", "password": "secret"}})
    assert response.status_code == 400, response.text
    [message] = response.json()["base_url"]
    assert message.startswith("This URL is not allowed: ") and "OPENMAAC_OUTBOUND_ALLOW_HOSTS" in message
    assert provider(tenant) == before  # nothing stored


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/", "http://169.254.169.254/", "http://[::127.0.0.1]/",
                                 "http://[64:ff9b::a9fe:a9fe]/", "http://[2002:7f00:1::1]/"])
def test_private_whatsapp_base_url_refused_at_put(tenant: Any, no_allow_list: None, url: str) -> None:
    before = provider(tenant)
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "whatsapp": {"base_url": url, "access_token": "t", "phone_number_id": "1"}})
    assert response.status_code == 400, response.text
    [message] = response.json()["whatsapp"]["base_url"]
    assert message.startswith("This URL is not allowed: ")
    assert provider(tenant) == before


def test_public_and_builtin_urls_are_accepted(tenant: Any, no_allow_list: None) -> None:
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "base_url": "https://8.8.8.8/", "whatsapp": {"base_url": "https://[2606:4700::1111]"},
        "credentials": {"account_sid": "AC" + "1" * 32, "auth_token": "x", "from_number": "+15005550006"}})
    assert response.status_code == 200, response.text
    assert response.json()["base_url"] == "https://8.8.8.8/"
    assert response.json()["whatsapp"]["base_url"] == "https://[2606:4700::1111]"
    # what GET shows for the built-in simulator can be PUT back (it stores "the built-in one")
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "base_url": ""})
    shown = response.json()
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "base_url": shown["base_url"], "whatsapp": {"base_url": shown["whatsapp"]["base_url"]}})
    assert response.status_code == 200, response.text
    from openmaac.db.engine import get_database
    from openmaac.sms_plus.models import SmsProviderConfig

    with get_database().read() as session:
        row = session.get(SmsProviderConfig, tenant.id)
        assert row is not None and row.base_url is None and "base_url" not in row.whatsapp


def test_a_name_resolving_to_loopback_at_send_time_is_not_reached(tenant: Any, base_url: str, no_allow_list: None,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Saved while ``localhost`` looked public (a DNS answer that changed, or rebinding): the
    send resolves it again, refuses 127.0.0.1, and the Twilio simulator behind it (which would
    record the credentials and the text) hears nothing."""
    from openmaac.channels import destinations

    real_resolve = destinations.resolve
    monkeypatch.setattr(destinations, "resolve",
                        lambda host, port: ["8.8.8.8"] if host == "localhost" else real_resolve(host, port))
    port = httpx.URL(base_url).port
    response = tenant.client.put(tenant.api("pnp/sms_provider/"), json={
        "provider": "twilio", "base_url": f"http://localhost:{port}/_simulators/twilio",
        "credentials": {"account_sid": "AC" + "1" * 32, "auth_token": "x", "from_number": "+15005550006"}})
    assert response.status_code == 200, response.text
    monkeypatch.setattr(destinations, "resolve", real_resolve)  # now the true answer: 127.0.0.1

    phone = "+886912" + str(secrets.randbelow(10**6)).zfill(6)  # unique: the simulator is shared by the suite
    setting_id, message_id = sms_only_push(tenant, phone)
    record = final_record(tenant, setting_id, message_id)
    assert record["status"] == "sms_failed", record  # a refused destination is not retried
    assert sent_by_simulator(base_url, "twilio", phone) == 0


@pytest.mark.parametrize("name", ["twilio", "mitake"])
def test_builtin_simulators_deliver_without_an_allow_list(tenant: Any, base_url: str, no_allow_list: None,
                                                          name: str) -> None:
    if name == "mitake":
        assert tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "mitake"}).status_code == 200
    phone = "+886912000092" if name == "twilio" else "+886912000093"
    setting_id, message_id = sms_only_push(tenant, phone)
    assert final_record(tenant, setting_id, message_id)["status"] == "sms_delivered"
    to = phone if name == "twilio" else "0" + phone[4:]
    assert sent_by_simulator(base_url, name, to) == 1


def test_the_first_provider_settings_saved_by_two_requests_at_once(tenant: Any, database: Any) -> None:
    """The organisation's first SMS provider settings, saved by two requests at once: the one
    that waited for the other's transaction replaces what the other saved (PostgreSQL: both
    found none, and the second's insert of the same row answered 500)."""

    from sqlalchemy import insert

    from openmaac.sms_plus.models import SmsProviderConfig

    answers: list[httpx.Response] = []

    def save() -> None:
        with httpx.Client(base_url=str(tenant.client.base_url), headers=dict(tenant.client.headers),
                          timeout=60) as client:
            answers.append(client.put(tenant.api("pnp/sms_provider/"), json={
                "provider": "twilio", "whatsapp_wait_minutes": 30}))

    def hold(session: Any) -> None:  # the other request's first settings, not committed yet
        session.execute(insert(SmsProviderConfig).values(organization_id=tenant.id, provider="mitake",
                                                         whatsapp_wait_minutes=50))

    behind_a_lock(database, hold, save)
    [answer] = answers
    assert answer.status_code == 200, answer.text
    assert (answer.json()["provider"], answer.json()["whatsapp_wait_minutes"]) == ("twilio", 30)
