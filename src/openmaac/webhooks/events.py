"""Domain events that become outgoing webhooks (the outbox's entry points).

Services call these inside their own transaction, so an event row exists exactly when the
change that caused it committed. (Implementation: the outgoing-webhooks issue.)
"""

from __future__ import annotations

from typing import Any

from sqlalchemy.orm import Session


def contact_profile_updated(session: Session, organization_id: int, *, line_uid: str | None,
                            customer_id: str | None, field: str, old: Any, new: Any) -> None:
    """``contact.profile.<field>.update`` (CDH style)."""


def contact_tag_added(session: Session, organization_id: int, *, line_uid: str | None,
                      customer_id: str | None, tag_id: int, tag_name: str) -> None:
    """``contact.tag.add`` (CDH style)."""


def contact_tag_removed(session: Session, organization_id: int, *, line_uid: str | None,
                        customer_id: str | None, tag_id: int, tag_name: str) -> None:
    """``contact.tag.remove`` (CDH style)."""
