"""Events LINE sends to ``/line/webhook/{channel_id}``: follow, unfollow, messages, postbacks.

Every event is stored (once: LINE redelivers, so ``webhookEventId`` is de-duplicated) in the
same transaction as its effect on the contact. Events without the shapes LINE documents are
left out before anything is written (see ``events``). The LINE profile (display name) of a
new friend is fetched by a job afterwards, never inside the webhook request.
"""

from __future__ import annotations

import hashlib
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy.orm import Session

from openmaac.channels.line_client import LineClient
from openmaac.channels.service import channel_of, line_api_base_url
from openmaac.contacts import service as contacts
from openmaac.db.base import insert_ignoring_conflicts_in
from openmaac.db.driver import DriverStatement
from openmaac.db.engine import get_database
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, handler
from openmaac.line_inbound.events import AcceptedEvent
from openmaac.line_inbound.models import LineWebhookEvent

# built once (each event runs it; building it cost more than running it), on the driver's
# cursor (db/driver.py: a delivery webhook stores up to a hundred events)
_STORE = {postgres: DriverStatement(insert_ignoring_conflicts_in(postgres, LineWebhookEvent.__table__,
                                                                 ["organization_id", "webhook_event_id"]))
          for postgres in (False, True)}


def _event_id(accepted: AcceptedEvent) -> str:
    # the full id, never a prefix: two events sharing a prefix are two events
    event_id = accepted.event.webhookEventId
    if event_id is None:
        # Without an id we cannot de-duplicate; derive one from the content.
        event_id = "sha1:" + hashlib.sha1(json.dumps(accepted.raw, sort_keys=True).encode()).hexdigest()[:40]
    return event_id


def _store(session: Session, events: list[tuple[int, AcceptedEvent, datetime]]) -> list[bool]:
    """Insert each event ``(organization id, event, occurred at)`` unless it was seen before
    (one round trip on PostgreSQL, however many: a delivery webhook carries up to a hundred,
    and a group commit's batch holds several such requests). Whether each is new, in order."""
    received_at = datetime.now(UTC)
    conn = session.connection()
    counts = _STORE[conn.dialect.name == "postgresql"].execute_each(conn, [{
        "organization_id": organization_id, "webhook_event_id": _event_id(accepted),
        "event_type": accepted.event.type, "line_uid": accepted.event.user_id, "payload": accepted.raw,
        "occurred_at": occurred_at, "received_at": received_at} for organization_id, accepted, occurred_at in events])
    return [bool(count) for count in counts]


def _new_events(session: Session, requests: list[tuple[int, list[AcceptedEvent]]]
                ) -> list[list[tuple[AcceptedEvent, datetime]]]:
    """The events of webhook requests ``(organization id, events)`` stored, all by one statement
    (``_store``); each request's events not seen before, with when they occurred, in order."""
    timed = [(organization_id, [(accepted, datetime.fromtimestamp(accepted.event.timestamp / 1000, UTC))
                                for accepted in events]) for organization_id, events in requests]
    stored = iter(_store(session, [(organization_id, accepted, occurred_at)
                                   for organization_id, items in timed for accepted, occurred_at in items]))
    return [[item for item in items if next(stored)] for _organization_id, items in timed]


def _delivery(accepted: AcceptedEvent, occurred_at: datetime) -> tuple[str | None, datetime, str | None]:
    """A ``delivery`` event as ``record_pnp_deliveries`` takes it: (tag, occurred at, LINE user)."""
    assert accepted.event.delivery is not None
    return accepted.event.delivery.data, occurred_at, accepted.event.user_id


def handle_events(session: Session, organization_id: int, events: list[AcceptedEvent]) -> int:
    """Apply a webhook delivery's events (as ``accept_events`` let them through) for the
    channel's organisation. Returns how many were new."""
    deliveries: list[tuple[str | None, datetime, str | None]] = []
    new_events = _new_events(session, [(organization_id, events)])[0]
    for accepted, occurred_at in new_events:
        event = accepted.event
        user_id = event.user_id
        kind = event.type
        if kind == "delivery" and event.delivery is not None:
            # SMS+ (PNP): LINE's delivery completion event carries our X-Line-Delivery-Tag;
            # a request's deliveries are recorded together below (LINE batches them)
            deliveries.append(_delivery(accepted, occurred_at))
            continue
        if not user_id:
            continue
        if kind == "follow":
            contacts.record_follow(session, organization_id, user_id, occurred_at)
            enqueue(
                session,
                "contact.fetch_line_profile",
                {"organization_id": organization_id, "line_uid": user_id},
                organization_id=organization_id,
            )
        elif kind == "unfollow":
            contacts.record_unfollow(session, organization_id, user_id, occurred_at)
        elif kind == "message" and event.message is not None and "#join" in (event.message.text or ""):
            # SMS+ join link: the prefilled "#join <code>" text binds the phone number
            from openmaac.sms_plus.join_links import handle_join_text

            handle_join_text(session, organization_id, user_id, event.message.text or "")
        if kind in ("message", "postback"):
            # a tap on a message / postback action of a tracked direct message (event report)
            from openmaac.links.service import record_tap

            record_tap(session, organization_id, user_id, accepted.raw, occurred_at)
    if deliveries:
        from openmaac.sms_plus.engine import record_pnp_deliveries

        record_pnp_deliveries(session, organization_id, deliveries)
    return len(new_events)


def handle_delivery_requests(session: Session, requests: list[tuple[int, list[AcceptedEvent]]]) -> list[int]:
    """The webhook requests of a group commit's batch that carry only ``delivery`` events (LINE's
    PNP delivery reports: under load it sends many at once), each ``(organization id, its
    events)``, written as ``handle_events`` writes one: the events of all of them stored by one
    statement, then each organisation's new deliveries recorded together, its messages read and
    locked by one statement, in id order. Request by request, a statement each of both took most
    of the batch's round trips, each one a wait for the interpreter lock under load; and the
    locks of several requests, each in id order but not all in one, met a worker's in a
    deadlock. How many events of each request were new, in order."""
    new_events = _new_events(session, requests)
    deliveries: dict[int, list[tuple[str | None, datetime, str | None]]] = {}
    for (organization_id, _events), items in zip(requests, new_events, strict=True):
        for accepted, occurred_at in items:
            if accepted.event.type == "delivery" and accepted.event.delivery is not None:
                deliveries.setdefault(organization_id, []).append(_delivery(accepted, occurred_at))
    if deliveries:
        from openmaac.sms_plus.engine import record_pnp_deliveries

        for organization_id in sorted(deliveries):
            record_pnp_deliveries(session, organization_id, deliveries[organization_id])
    return [len(items) for items in new_events]


@handler("contact.fetch_line_profile")
def fetch_line_profile(payload: dict[str, Any], _context: JobContext) -> None:
    organization_id = int(payload["organization_id"])
    line_uid = str(payload["line_uid"])
    database = get_database()
    with database.read() as session:
        channel = channel_of(session, organization_id)
        if channel is None:
            return
        base_url, token = line_api_base_url(channel.api_base_url), channel.access_token
    with LineClient(base_url, token) as client:
        profile = client.get_profile(line_uid)  # errors raise: the job is retried with backoff
    if profile is None or not profile.get("displayName"):
        return
    with database.write() as session:
        contacts.set_line_display_name(session, organization_id, line_uid, str(profile["displayName"])[:255])
