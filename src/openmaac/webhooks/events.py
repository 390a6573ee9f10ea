"""Domain events that become outgoing webhooks (the outbox's entry points).

Services call these inside their own transaction, so an event row exists exactly when the
change that caused it committed. Every feature may also call ``emit`` directly:

    from openmaac.webhooks.events import emit
    emit(session, organization_id, "message.first_open", {...}, ordering_key=line_uid)

(see docs/api.md, "Outgoing webhooks", for the contract).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy.orm import Session

from openmaac.webhooks.service import Event, emit, emit_many
from openmaac.webhooks.topics import profile_topic

__all__ = ["Event", "contact_profile_updated", "contact_tag_added", "contact_tag_removed", "emit", "emit_many"]


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def profile_event(*, line_uid: str | None, customer_id: str | None, field: str, old: Any, new: Any) -> Event:
    """``contact.profile.<field>.update``; MAAC's ``email``/``mobile`` are CDH's
    ``display_email``/``display_mobile``. ``customer_id`` is the contact's value after the change."""
    data = {"line_uid": line_uid, "customer_id": customer_id, "old_value": _json_value(old),
            "new_value": _json_value(new)}
    return Event(profile_topic(field), data, line_uid)


def contact_profile_updated(session: Session, organization_id: int, *, line_uid: str | None,
                            customer_id: str | None, field: str, old: Any, new: Any) -> None:
    """``contact.profile.<field>.update`` (CDH style)."""
    emit_many(session, organization_id,
              [profile_event(line_uid=line_uid, customer_id=customer_id, field=field, old=old, new=new)])


def tag_event(topic: str, *, line_uid: str | None, customer_id: str | None, tag_id: int, tag_name: str) -> Event:
    return Event(topic, {"line_uid": line_uid, "customer_id": customer_id, "tag_id": tag_id, "tag_name": tag_name},
                 line_uid)


def contact_tag_added(session: Session, organization_id: int, *, line_uid: str | None,
                      customer_id: str | None, tag_id: int, tag_name: str) -> None:
    """``contact.tag.add`` (CDH style). Fires even when the contact already had the tag (CDH OpenAPI 2.0.1)."""
    emit_many(session, organization_id, [tag_event("contact.tag.add", line_uid=line_uid, customer_id=customer_id,
                                                   tag_id=tag_id, tag_name=tag_name)])


def contact_tag_removed(session: Session, organization_id: int, *, line_uid: str | None,
                        customer_id: str | None, tag_id: int, tag_name: str) -> None:
    """``contact.tag.remove`` (CDH style)."""
    emit_many(session, organization_id, [tag_event("contact.tag.remove", line_uid=line_uid,
                                                   customer_id=customer_id, tag_id=tag_id, tag_name=tag_name)])
