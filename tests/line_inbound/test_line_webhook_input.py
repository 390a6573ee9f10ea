"""POST /line/webhook/{channel_id} with what LINE never sends: malformed signatures, events of
odd shapes (skipped and logged, the rest of the delivery stored), long webhookEventIds."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import pytest
from sqlalchemy import select

from helpers import follow_event, line_signature, new_line_uid, post_line_events


def _stored(database: Any, tenant: Any) -> list[tuple[str, str]]:
    from openmaac.line_inbound.models import LineWebhookEvent

    with database.read() as session:
        rows = session.execute(select(LineWebhookEvent.webhook_event_id, LineWebhookEvent.event_type)
                               .where(LineWebhookEvent.organization_id == tenant.id)
                               .order_by(LineWebhookEvent.id)).all()
    return [(row[0], row[1]) for row in rows]


def _member(tenant: Any, uid: str) -> dict[str, Any] | None:
    response = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    return results[0] if results else None


@pytest.mark.parametrize("signature", ["é".encode(), b"\xff\xfe", "ü".encode() * 22, "!!not base64!!", "="])
def test_a_malformed_signature_is_answered_as_a_wrong_one(tenant: Any, anon: Any, database: Any,
                                                          signature: Any) -> None:
    body = json.dumps({"destination": "U" + "0" * 32, "events": [follow_event(new_line_uid())]}).encode()
    response = anon.post(f"/line/webhook/{tenant.channel_id}", content=body,
                         headers={"X-Line-Signature": signature, "Content-Type": "application/json"})
    assert (response.status_code, response.json()) == (401, {"detail": "Invalid signature."})
    assert _stored(database, tenant) == []


def test_a_channel_id_no_channel_can_have_is_404(anon: Any) -> None:
    for channel_id in ("12%0034", "1" * 65):
        response = anon.post(f"/line/webhook/{channel_id}", content=b"{}", headers={"X-Line-Signature": "x"})
        assert (response.status_code, response.json()) == (404, {"detail": "Not found."})


def test_events_that_are_not_a_list_are_400(tenant: Any, anon: Any) -> None:
    body = b'{"destination": "U0", "events": {"type": "follow"}}'
    response = anon.post(f"/line/webhook/{tenant.channel_id}", content=body,
                         headers={"X-Line-Signature": line_signature(tenant.channel_secret, body)})
    assert response.status_code == 400
    assert response.json() == {"events": ['Expected a list of items but got type "dict".']}


def test_odd_events_are_skipped_and_logged_and_the_rest_of_the_delivery_stored(
        tenant: Any, anon: Any, database: Any, caplog: pytest.LogCaptureFixture) -> None:
    first, last, in_group = new_line_uid(), new_line_uid(), new_line_uid()
    now = int(time.time() * 1000)

    def odd(event_id: str, **changes: Any) -> dict[str, Any]:
        event = follow_event(new_line_uid(), event_id=event_id)
        event.update(changes)
        return event

    text = {"id": "1", "type": "text", "text": "hi", "quoteToken": "q"}
    long_uid = "U" + "a" * 9_999
    odd_events = [
        odd("01ODD0SOURCE0000000000000A", source="x"),
        odd("01ODD0MESSAGE000000000000A", type="message", message=[]),
        odd("01ODD0MESSAGE000000000000B", type="message", message={"id": "2", "type": "text"}),
        odd("01ODD0POSTBACK00000000000A", type="postback", postback={"data": 5}),
        odd("01ODD0TIMESTAMP0000000000A", timestamp=1e20),
        odd("01ODD0TIMESTAMP0000000000B", timestamp=10**20),
        odd("01ODD0TIMESTAMP0000000000C", timestamp=-1),
        odd("01ODD0TIMESTAMP0000000000D", timestamp="1650591346705"),
        odd("01ODD0TYPE000000000000000A", type=["follow"]),
        odd("01ODD0USER000000000000000A", source={"type": "user", "userId": long_uid}),
        odd("01ODD0USER000000000000000B", source={"type": "user", "userId": "U" + "A" * 32}),
        odd("01ODD0NUL0000000000000000A", type="message", message={**text, "text": "a\x00b"}),
        odd("01ODD0NUL0000000000000000B", extra={"key\x00": 1}),
        odd("01ODD0ID00000000000000000A" + "X" * 300),
        odd({"not": "a string"}),  # type: ignore[arg-type]
        ["not", "an", "event"],
    ]
    group_message = {"type": "message", "mode": "active", "timestamp": now, "webhookEventId": "01GROUPMESSAGE000000000000",
                     "deliveryContext": {"isRedelivery": False}, "replyToken": "r", "message": text,
                     "source": {"type": "group", "groupId": "C" + "1" * 32, "userId": in_group}}
    events = [follow_event(first, event_id="01GOOD0FIRST0000000000000A"), *odd_events, group_message,
              follow_event(last, event_id="01GOOD0LAST00000000000000A")]
    with caplog.at_level(logging.WARNING, logger="openmaac.line_inbound"):
        response = post_line_events(anon, tenant, events)
    assert (response.status_code, response.json()) == (200, {})
    assert _stored(database, tenant) == [("01GOOD0FIRST0000000000000A", "follow"),
                                         ("01GROUPMESSAGE000000000000", "message"),
                                         ("01GOOD0LAST00000000000000A", "follow")]
    assert _member(tenant, first)["status"] == "follow"  # type: ignore[index]
    assert _member(tenant, last)["status"] == "follow"  # type: ignore[index]
    members = tenant.client.get("/openapi/v1/member/").json()["results"]
    assert sorted(m["line_uid"] for m in members) == sorted([first, last])
    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == len(odd_events)
    for event_id in ("01ODD0SOURCE0000000000000A", "01ODD0MESSAGE000000000000A", "01ODD0TIMESTAMP0000000000A",
                     "01ODD0USER000000000000000A", "01ODD0NUL0000000000000000A"):
        assert any(event_id in message for message in skipped), event_id
    assert any("NUL" in message for message in skipped)


def test_a_delivery_of_only_odd_events_is_200_and_stores_nothing(tenant: Any, anon: Any, database: Any) -> None:
    event = follow_event(new_line_uid())
    event["source"] = []
    assert post_line_events(anon, tenant, [event, 7, None]).status_code == 200
    assert _stored(database, tenant) == []


def test_long_webhook_event_ids_are_stored_whole(tenant: Any, anon: Any, database: Any) -> None:
    prefix = "01" + "H" * 62
    ids = [prefix + "A", prefix + "B", "01" + "Z" * 253]
    events = [follow_event(new_line_uid(), event_id=event_id) for event_id in ids]
    assert post_line_events(anon, tenant, events).status_code == 200
    assert post_line_events(anon, tenant, events[:1]).status_code == 200  # a redelivery: once
    assert _stored(database, tenant) == [(event_id, "follow") for event_id in ids]
