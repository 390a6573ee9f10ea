"""Twilio's ``sent`` report about a send this process knows (under way or accepted) is answered
without the database, but still only when its signature verifies, and a configuration saved since
is used at once: a report signed with the replaced auth token is refused."""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import httpx

from helpers import wait_for
from openmaac.channels.sms.base import DeliveryReport, DeliveryStatus
from openmaac.channels.sms.twilio import twilio_signature
from openmaac.sms_plus import engine
from openmaac.sms_plus.providers import simulator_accounts

os.environ["OPENMAAC_SMS_PLUS_MINUTE_SECONDS"] = "0.05"


def test_the_memo_knows_a_send_under_way_only_within_the_grace_and_an_accepted_one_for_good() -> None:
    memo = engine.SendMemo()
    sent = DeliveryReport(provider_message_id="SM1", status=DeliveryStatus.SENT, raw_status="sent",
                          reference="pnp1r1")
    assert not memo.sent_changes_nothing(1, sent)  # not known here: the database decides
    memo.under_way(1, ["pnp1r1"], time.monotonic() - engine.SEND_GRACE_SECONDS - 1)
    assert not memo.sent_changes_nothing(1, sent)  # marked too long ago: its process may have died mid-send
    memo.under_way(1, ["pnp1r1"], time.monotonic())
    assert memo.sent_changes_nothing(1, sent)
    assert not memo.sent_changes_nothing(2, sent)  # another organisation's reference
    assert not memo.sent_changes_nothing(1, dataclasses.replace(sent, status=DeliveryStatus.DELIVERED))
    memo.forget(1, ["pnp1r1"])  # an answer other than acceptance is being recorded
    assert not memo.sent_changes_nothing(1, sent)
    memo.accepted(1, ["pnp1r1"])
    assert memo.sent_changes_nothing(1, sent)
    memo.MAX_ENTRIES = 2
    memo.accepted(1, ["pnp2r1", "pnp3r1"])
    assert not memo.sent_changes_nothing(1, sent)  # the oldest went first


def test_a_known_sent_report_is_still_verified_with_the_configuration_saved_last(
        tenant: Any, anon: httpx.Client, base_url: str) -> None:
    setting = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "memo", "pnp_enabled": False, "pnp_messages": [], "fallback_enabled": True, "sms_text": "hello",
        "fallback_period": 1})
    assert setting.status_code == 201, setting.text
    assert tenant.client.post(tenant.api("pnp/points/"), json={"amount": 5}).status_code == 200
    phones = ["+886915100001", "+886915100002"]  # two: one fallback timer for both (the batch path)
    response = tenant.client.post(tenant.api("pnp/message/multicast/"), json={
        "pnp_setting_id": setting.json()["id"], "data": [{"phone_number": p, "pnp": {}, "sms": {}} for p in phones]})
    assert response.status_code == 200, response.text
    message_id = int(response.json()[0]["id"])

    def delivered() -> dict[str, Any] | None:
        rows = tenant.client.get(tenant.api("pnp/message/") + f"?pnp_setting_id={setting.json()['id']}"
                                 "&updated_at_min=2000-01-01T00:00:00&updated_at_max=2999-01-01T00:00:00").json()
        found = {r["pnp_message_id"]: r for r in rows["results"]}
        return found if all(r["status"] == "sms_delivered" for r in found.values()) and len(found) == 2 else None

    wait_for(delivered, timeout=30, interval=0.1)
    reference = f"pnp{message_id}r1"
    assert engine.send_memo.sent_changes_nothing(tenant.id, DeliveryReport(
        provider_message_id="", status=DeliveryStatus.SENT, raw_status="sent", reference=reference))
    sid = httpx.get(f"{base_url}/_simulators/twilio/_admin/messages", params={"to": phones[0]}).json()["results"][0]["id"]
    path = f"/sms_plus/callbacks/twilio/{tenant.id}?omref={reference}"
    form = {"AccountSid": "AC" + "0" * 31 + "1", "MessageSid": sid, "MessageStatus": "sent", "To": phones[0]}

    def report(token: str) -> httpx.Response:
        return anon.post(path, data=form, headers={
            "X-Twilio-Signature": twilio_signature(token, base_url + path, sorted(form.items()))})

    demo_token = simulator_accounts()["twilio"]["auth_token"]
    assert report(demo_token).status_code == 200
    assert report("not-the-token").status_code == 403
    # the organisation sets an auth token of its own: the demo token's signature is refused at once
    assert tenant.client.put(tenant.api("pnp/sms_provider/"), json={"provider": "twilio", "credentials": {
        "account_sid": "AC" + "0" * 31 + "1", "auth_token": "a-token-of-its-own", "from_number": "+15005550006"},
    }).status_code == 200
    assert report(demo_token).status_code == 403
    assert report("a-token-of-its-own").status_code == 200
    assert delivered() is not None  # none of these reports changed anything
