"""Outgoing webhooks of direct messages (through the outbox of ``openmaac.webhooks``).

- ``message.first_open`` (MAAC style): the first open of a delivered message, only for
  messages sent with an ``event_id`` (MAAC OpenAPI v1.1.48): ``{"message_type": "openapi",
  "message_id": <event_id>, "line_uid", "customer_id"}``.
- ``message.send`` / ``message.open`` / ``message.click`` (CDH style): ``{"line_uid",
  "customer_id", "campaign_id" (the event id), "campaign_name" (its name), "campaign_type":
  "openapi_event", "direct_message_id"}``, plus ``"link"`` (the destination) for clicks.

All of them are written in the caller's transaction, with the change that caused them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from openmaac.contacts.models import Contact
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, MessageEvent
from openmaac.webhooks.events import Event, emit_many

CAMPAIGN_TYPE = "openapi_event"


def _event_name(session: Session, event_id: int | None) -> str | None:
    if event_id is None:
        return None
    cache: dict[int, str | None] = session.info.setdefault("message_event_names", {})
    if event_id not in cache:
        cache[event_id] = session.scalar(select(MessageEvent.name).where(MessageEvent.id == event_id))
    return cache[event_id]


def _customer_ids(session: Session, contact_ids: Iterable[int | None]) -> dict[int, str | None]:
    ids = sorted({cid for cid in contact_ids if cid is not None})
    if not ids:
        return {}
    rows = session.execute(select(Contact.id, Contact.customer_id).where(Contact.id.in_(ids)))
    return {int(i): c for i, c in rows}


def _cdh(dm: Any, event_name: str | None, line_uid: str | None, customer_id: str | None,
         **extra: Any) -> dict[str, Any]:
    return {"line_uid": line_uid, "customer_id": customer_id, "campaign_id": dm.event_id,
            "campaign_name": event_name, "campaign_type": CAMPAIGN_TYPE, "direct_message_id": dm.id, **extra}


def sent(session: Session, dm: Any, recipient_ids: list[int], at: datetime | None = None, *,
         contacts: Iterable[tuple[str, int | None]] | None = None) -> None:
    """``message.send`` for each recipient LINE accepted (``dm``: id, organization_id, event_id):
    the recipients by row id, and/or by ``contacts`` ``(line_uid, contact_id)`` (an iterable
    read only when the events are built).

    The events are built only when some endpoint of the organisation is subscribed: with
    none, this costs one (cached) query, not a read of the recipients."""
    if not recipient_ids and contacts is None:
        return

    def events() -> Iterator[Event]:
        name = _event_name(session, dm.event_id)
        for chunk in range(0, len(recipient_ids), 1000):
            rows = session.execute(
                select(DirectMessageRecipient.line_uid, Contact.customer_id)
                .outerjoin(Contact, Contact.id == DirectMessageRecipient.contact_id)
                .where(DirectMessageRecipient.id.in_(recipient_ids[chunk:chunk + 1000]))
                .order_by(DirectMessageRecipient.id)).all()
            for line_uid, customer_id in rows:
                yield Event("message.send", _cdh(dm, name, line_uid, customer_id), line_uid)
        pairs = list(contacts) if contacts is not None else []
        for chunk in range(0, len(pairs), 1000):
            part = pairs[chunk:chunk + 1000]
            customers = _customer_ids(session, (contact_id for _uid, contact_id in part))
            for line_uid, contact_id in part:
                yield Event("message.send", _cdh(dm, name, line_uid, customers.get(contact_id or 0)), line_uid)

    emit_many(session, dm.organization_id, events(), occurred_at=at)


def opened(session: Session, dm: DirectMessage, recipient: DirectMessageRecipient, at: datetime) -> None:
    """The first open of a delivered message: ``message.first_open`` (with an event) and ``message.open``."""
    name = _event_name(session, dm.event_id)
    customer_id = _customer_ids(session, [recipient.contact_id]).get(recipient.contact_id or 0)
    events = []
    if dm.event_id is not None:
        events.append(Event("message.first_open", {"message_type": "openapi", "message_id": dm.event_id,
                                                   "line_uid": recipient.line_uid, "customer_id": customer_id},
                            recipient.line_uid))
    events.append(Event("message.open", _cdh(dm, name, recipient.line_uid, customer_id), recipient.line_uid))
    emit_many(session, dm.organization_id, events, occurred_at=at)


def clicked(session: Session, dm: DirectMessage, recipient: DirectMessageRecipient, link: str,
            at: datetime) -> None:
    """``message.click`` for a personalised click (anonymous clicks are counted, not announced)."""
    name = _event_name(session, dm.event_id)
    customer_id = _customer_ids(session, [recipient.contact_id]).get(recipient.contact_id or 0)
    emit_many(session, dm.organization_id,
              [Event("message.click", _cdh(dm, name, recipient.line_uid, customer_id, link=link), recipient.line_uid)],
              occurred_at=at)
