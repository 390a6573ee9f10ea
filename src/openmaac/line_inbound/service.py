"""Events LINE sends to ``/line/webhook/{channel_id}``: follow, unfollow, messages, postbacks.

Every event is stored (once: LINE redelivers, so ``webhookEventId`` is de-duplicated) in the
same transaction as its effect on the contact. The LINE profile (display name) of a new
friend is fetched by a job afterwards, never inside the webhook request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from openmaac.channels.line_client import LineClient
from openmaac.channels.models import LineChannel
from openmaac.channels.service import channel_of
from openmaac.contacts import service as contacts
from openmaac.db.engine import get_database
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, handler
from openmaac.line_inbound.models import LineWebhookEvent

RECORDED_TYPES = {"follow", "unfollow", "message", "postback", "delivery", "join", "leave", "accountLink",
                  "beacon", "things", "memberJoined", "memberLeft", "unsend", "videoPlayComplete"}


def _occurred_at(event: dict[str, Any]) -> datetime:
    timestamp = event.get("timestamp")
    if isinstance(timestamp, int | float):
        return datetime.fromtimestamp(timestamp / 1000, UTC)
    return datetime.now(UTC)


def _store(session: Session, organization_id: int, event: dict[str, Any], occurred_at: datetime) -> bool:
    """Insert the event unless it was seen before. Returns True when it is new."""
    event_id = str(event.get("webhookEventId") or "")
    if not event_id:
        # Without an id we cannot de-duplicate; derive one from the content.
        import hashlib
        import json

        event_id = "sha1:" + hashlib.sha1(json.dumps(event, sort_keys=True).encode()).hexdigest()[:40]
    insert = pg_insert if session.get_bind().dialect.name == "postgresql" else sqlite_insert
    statement = (
        insert(LineWebhookEvent)
        .values(
            organization_id=organization_id,
            webhook_event_id=event_id[:64],
            event_type=str(event.get("type", "unknown"))[:32],
            line_uid=(event.get("source") or {}).get("userId"),
            payload=event,
            occurred_at=occurred_at,
            received_at=datetime.now(UTC),
        )
        .on_conflict_do_nothing(index_elements=["organization_id", "webhook_event_id"])
    )
    return bool(session.execute(statement).rowcount)  # type: ignore[attr-defined]


def handle_events(session: Session, channel: LineChannel, events: list[dict[str, Any]]) -> int:
    """Apply a webhook delivery's events. Returns how many were new."""
    new = 0
    deliveries: list[tuple[str | None, datetime, str | None]] = []
    for event in events:
        if not isinstance(event, dict):
            continue
        occurred_at = _occurred_at(event)
        if not _store(session, channel.organization_id, event, occurred_at):
            continue
        new += 1
        user_id = (event.get("source") or {}).get("userId")
        kind = event.get("type")
        if kind == "delivery":
            # SMS+ (PNP): LINE's delivery completion event carries our X-Line-Delivery-Tag;
            # a request's deliveries are recorded together below (LINE batches them)
            deliveries.append(((event.get("delivery") or {}).get("data"), occurred_at, user_id))
            continue
        if not user_id:
            continue
        if kind == "follow":
            contacts.record_follow(session, channel.organization_id, user_id, occurred_at)
            enqueue(
                session,
                "contact.fetch_line_profile",
                {"organization_id": channel.organization_id, "line_uid": user_id},
                organization_id=channel.organization_id,
            )
        elif kind == "unfollow":
            contacts.record_unfollow(session, channel.organization_id, user_id, occurred_at)
        elif kind == "message" and "#join" in str((event.get("message") or {}).get("text") or ""):
            # SMS+ join link: the prefilled "#join <code>" text binds the phone number
            from openmaac.sms_plus.join_links import handle_join_text

            handle_join_text(session, channel.organization_id, user_id, str(event["message"]["text"]))
        if kind in ("message", "postback"):
            # a tap on a message / postback action of a tracked direct message (event report)
            from openmaac.links.service import record_tap

            record_tap(session, channel.organization_id, user_id, event, occurred_at)
    if deliveries:
        from openmaac.sms_plus.engine import record_pnp_deliveries

        record_pnp_deliveries(session, channel.organization_id, deliveries)
    return new


@handler("contact.fetch_line_profile")
def fetch_line_profile(payload: dict[str, Any], _context: JobContext) -> None:
    organization_id = int(payload["organization_id"])
    line_uid = str(payload["line_uid"])
    database = get_database()
    with database.read() as session:
        channel = channel_of(session, organization_id)
        if channel is None:
            return
        base_url, token = channel.api_base_url, channel.access_token
    with LineClient(base_url, token) as client:
        profile = client.get_profile(line_uid)  # errors raise: the job is retried with backoff
    if profile is None or not profile.get("displayName"):
        return
    with database.write() as session:
        contacts.set_line_display_name(session, organization_id, line_uid, str(profile["displayName"])[:255])
