"""Helpers shared by tests (fixtures live in conftest.py)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable
from typing import Any

import httpx


def new_line_uid() -> str:
    return "U" + secrets.token_hex(16)


def seed_contacts(tenant: Any, count: int, **fields: Any) -> list[str]:
    """Insert contacts directly (fast, for volume); returns their line_uids in insertion order."""
    from openmaac.contacts.models import Contact  # noqa: I001
    from openmaac.db.base import utcnow
    from openmaac.db.engine import get_database

    now = utcnow()
    uids = [new_line_uid() for _ in range(count)]
    rows = [
        {"organization_id": tenant.id, "line_uid": uid, "status": "follow", "created_at": now,
         "updated_at": now, **fields}
        for uid in uids
    ]
    with get_database().write() as session:
        for chunk in range(0, len(rows), 5000):
            session.execute(Contact.__table__.insert(), rows[chunk : chunk + 5000])
    return uids


def wait_for(predicate: Callable[[], Any], timeout: float = 10.0, interval: float = 0.05) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


def line_signature(secret: str, body: bytes) -> str:
    return base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()


def post_line_events(client: httpx.Client, tenant: Any, events: list[dict[str, Any]],
                     secret: str | None = None) -> httpx.Response:
    """Deliver events to /line/webhook/{channel_id} signed as LINE signs them."""
    import json

    body = json.dumps({"destination": "Uxxxxxxxx", "events": events}).encode()
    signature = line_signature(secret or tenant.channel_secret, body)
    return client.post(
        f"/line/webhook/{tenant.channel_id}",
        content=body,
        headers={"X-Line-Signature": signature, "Content-Type": "application/json"},
    )


def follow_event(line_uid: str, *, timestamp_ms: int | None = None, event_id: str | None = None) -> dict[str, Any]:
    return {
        "type": "follow",
        "mode": "active",
        "timestamp": timestamp_ms or int(time.time() * 1000),
        "source": {"type": "user", "userId": line_uid},
        "webhookEventId": event_id or secrets.token_hex(13).upper(),
        "deliveryContext": {"isRedelivery": False},
        "replyToken": secrets.token_hex(16),
        "follow": {"isUnblocked": False},
    }


def unfollow_event(line_uid: str, *, timestamp_ms: int | None = None) -> dict[str, Any]:
    return {
        "type": "unfollow",
        "mode": "active",
        "timestamp": timestamp_ms or int(time.time() * 1000),
        "source": {"type": "user", "userId": line_uid},
        "webhookEventId": secrets.token_hex(13).upper(),
        "deliveryContext": {"isRedelivery": False},
    }
