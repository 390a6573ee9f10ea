"""POST /line/webhook/{channel_id}: signature, follow, unfollow, stored events."""

from __future__ import annotations

import time

from sqlalchemy import func, select

from helpers import follow_event, new_line_uid, post_line_events, unfollow_event


def _member(tenant, uid):
    results = tenant.client.get("/openapi/v1/member/", params={"line_uid": uid}).json()["results"]
    return results[0] if results else None


def test_bad_signature_is_401_and_stores_nothing(tenant, anon, database):
    from openmaac.line_inbound.models import LineWebhookEvent

    uid = new_line_uid()
    response = post_line_events(anon, tenant, [follow_event(uid)], secret="not-the-secret")
    assert response.status_code == 401
    body = b'{"events": []}'
    response = anon.post(f"/line/webhook/{tenant.channel_id}", content=body)
    assert response.status_code == 401
    assert _member(tenant, uid) is None
    with database.read() as session:
        stored = session.scalar(select(func.count()).select_from(LineWebhookEvent)
                                .where(LineWebhookEvent.organization_id == tenant.id))
    assert stored == 0


def test_unknown_channel_is_404(anon, tenant):
    response = anon.post("/line/webhook/0000000", content=b"{}", headers={"X-Line-Signature": "x"})
    assert response.status_code == 404


def test_follow_unfollow_refollow(tenant, anon):
    uid = new_line_uid()
    followed_ms = int(time.time() * 1000) - 5000
    assert post_line_events(anon, tenant, [follow_event(uid, timestamp_ms=followed_ms)]).status_code == 200
    member = _member(tenant, uid)
    assert member["status"] == "follow" and member["blocked_at"] is None
    blocked_ms = followed_ms + 1000
    assert post_line_events(anon, tenant, [unfollow_event(uid, timestamp_ms=blocked_ms)]).status_code == 200
    member = _member(tenant, uid)
    assert member["status"] == "unfollow"
    assert member["blocked_at"] is not None and member["blocked_at"].endswith("+08:00")
    assert post_line_events(anon, tenant, [follow_event(uid)]).status_code == 200
    member = _member(tenant, uid)
    assert member["status"] == "follow" and member["blocked_at"] is None
    assert len(tenant.client.get("/openapi/v1/member/").json()["results"]) == 1


def test_redelivered_event_is_stored_once(tenant, anon, database):
    from openmaac.line_inbound.models import LineWebhookEvent

    uid = new_line_uid()
    event = follow_event(uid, event_id="01FZ74A0TDDPYRVKNK77XKC3ZR")
    message = {"type": "message", "mode": "active", "timestamp": int(time.time() * 1000),
               "source": {"type": "user", "userId": uid}, "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZS",
               "deliveryContext": {"isRedelivery": False}, "replyToken": "r",
               "message": {"id": "1", "type": "text", "text": "hi", "quoteToken": "q"}}
    postback = {"type": "postback", "mode": "active", "timestamp": int(time.time() * 1000),
                "source": {"type": "user", "userId": uid}, "webhookEventId": "01FZ74A0TDDPYRVKNK77XKC3ZT",
                "deliveryContext": {"isRedelivery": False}, "replyToken": "r",
                "postback": {"data": "action=buy&itemid=111"}}
    assert post_line_events(anon, tenant, [event, message, postback]).status_code == 200
    assert post_line_events(anon, tenant, [event, event]).status_code == 200  # again, twice in one request
    with database.read() as session:
        rows = session.execute(select(LineWebhookEvent.event_type).where(
            LineWebhookEvent.organization_id == tenant.id).order_by(LineWebhookEvent.id)).scalars().all()
    assert rows == ["follow", "message", "postback"]


def test_empty_events_verification_request(tenant, anon):
    # The LINE console's "Verify" button sends an empty, signed event list.
    assert post_line_events(anon, tenant, []).status_code == 200
