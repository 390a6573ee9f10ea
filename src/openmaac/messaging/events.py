"""Message events: the keys sends are tracked and reported under."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.db.base import utcnow
from openmaac.db.locks import lock_for_update
from openmaac.messaging.models import MessageEvent
from openmaac.web.errors import APIError, not_found
from openmaac.web.pagination import paginate_by_id
from openmaac.web.times import render

MAX_EVENTS = 1_000
LIMIT_MESSAGE = "The number of events has reached the limit"


def serialize(event: MessageEvent, org: OrgContext) -> dict[str, Any]:
    # "archived" is deprecated in MAAC and always false.
    return {"id": event.id, "archived": False, "name": event.name, "created_at": render(event.created_at, org.tz)}


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def list_events(session: Session, org: OrgContext, name: str | None, start: str | None) -> dict[str, Any]:
    stmt = select(MessageEvent).where(MessageEvent.organization_id == org.id)
    if name:
        stmt = stmt.where(MessageEvent.name.ilike(f"%{_escape_like(name)}%", escape="\\"))
    page = paginate_by_id(session, stmt, MessageEvent.id, scope=f"event:{org.id}", start=start)
    return {"results": [serialize(e, org) for e in page.rows], "next": page.next}


def get_event(session: Session, org_id: int, event_id: int) -> MessageEvent:
    event = session.scalar(
        select(MessageEvent).where(MessageEvent.organization_id == org_id, MessageEvent.id == event_id)
    )
    if event is None:
        raise not_found()
    return event


def create_event(session: Session, org: OrgContext, name: str) -> dict[str, Any]:
    lock_for_update(session, "message_events", org.id)
    count = session.scalar(select(func.count()).select_from(MessageEvent).where(MessageEvent.organization_id == org.id))
    if (count or 0) >= MAX_EVENTS:
        raise APIError(400, {"detail": LIMIT_MESSAGE})
    event = MessageEvent(organization_id=org.id, name=name, created_at=utcnow())
    session.add(event)
    session.flush()
    return {"id": event.id, "name": event.name}
