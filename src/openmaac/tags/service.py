"""Tags and tagging, with expiry ``available_days`` after a tag is put on a contact."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.contacts.models import Contact
from openmaac.db.base import insert_ignoring_conflicts, utcnow
from openmaac.db.engine import get_database
from openmaac.db.locks import lock_for_update
from openmaac.jobs.queue import enqueue
from openmaac.jobs.registry import JobContext, handler
from openmaac.tags.models import ContactTag, Tag
from openmaac.web.errors import field_errors, not_found
from openmaac.web.pagination import paginate_by_id
from openmaac.web.times import render, render_permanent
from openmaac.webhooks.events import contact_tag_added, emit_many, tag_event
from openmaac.webhooks.service import subscribed

EXPIRY_SWEEP_BATCH = 5_000
# available_days at most this: a tagging's expiry (now + available_days) must stay a date that
# Python (year 9999) and both databases can hold, whenever a contact is tagged. 1,000,000 days
# (about 2,738 years) from any date before the year 7000 does.
MAX_AVAILABLE_DAYS = 1_000_000


def serialize_tag(tag: Tag) -> dict[str, Any]:
    return {"id": tag.id, "name": tag.name, "available_days": tag.available_days}


def list_tags(session: Session, org: OrgContext, name: str | None, start: str | None) -> dict[str, Any]:
    stmt = select(Tag).where(Tag.organization_id == org.id)
    if name:
        stmt = stmt.where(Tag.name == name)
    page = paginate_by_id(session, stmt, Tag.id, scope=f"tag:{org.id}", start=start)
    return {"results": [serialize_tag(tag) for tag in page.rows], "next": page.next}


def get_tag(session: Session, org_id: int, tag_id: int) -> Tag:
    tag = session.scalar(select(Tag).where(Tag.organization_id == org_id, Tag.id == tag_id))
    if tag is None:
        raise not_found()
    return tag


def create_tag(session: Session, org: OrgContext, name: str, available_days: int | None) -> dict[str, Any]:
    name = name.strip()
    if not name:
        raise field_errors({"name": ["This field may not be blank."]})
    if available_days is not None and not 1 <= available_days <= MAX_AVAILABLE_DAYS:
        bound = (f"Ensure this value is less than or equal to {MAX_AVAILABLE_DAYS}." if available_days > 1
                 else "Ensure this value is greater than or equal to 1.")
        raise field_errors({"available_days": [bound]})
    lock_for_update(session, "tags", org.id)
    if session.scalar(select(Tag.id).where(Tag.organization_id == org.id, Tag.name == name)) is not None:
        raise field_errors({"name": ["tag with this name already exists."]})
    tag = Tag(organization_id=org.id, name=name, available_days=available_days, created_at=utcnow())
    session.add(tag)
    session.flush()
    return serialize_tag(tag)


def get_or_create_tags(session: Session, organization_id: int, names: list[str]) -> dict[str, Tag]:
    """Tags by name, creating the missing ones (permanent) — used by imports."""
    wanted = sorted({n.strip() for n in names if n and n.strip()})
    found = {
        tag.name: tag
        for tag in session.scalars(select(Tag).where(Tag.organization_id == organization_id, Tag.name.in_(wanted)))
    }
    for name in wanted:
        if name not in found:
            tag = Tag(organization_id=organization_id, name=name, available_days=None, created_at=utcnow())
            session.add(tag)
            found[name] = tag
    session.flush()
    return found


def schedule_expiry_sweep(session: Session, organization_id: int, expired_at: datetime) -> None:
    """One durable sweep per organisation per minute of expiries (not one job per link)."""
    minute = expired_at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    enqueue(
        session,
        "tag.expire_sweep",
        {"organization_id": organization_id},
        organization_id=organization_id,
        run_at=minute,
        unique_key=f"tag.expire_sweep:{organization_id}:{minute.isoformat()}",
    )


def tag_contact(session: Session, organization_id: int, tag: Tag, contact_id: int,
                now: datetime | None = None) -> ContactTag:
    """Put ``tag`` on a contact (again): the expiry restarts, the first-tagged time stays."""
    now = now or utcnow()
    expired_at = now + timedelta(days=tag.available_days) if tag.available_days else None
    # Created by INSERT … ON CONFLICT DO NOTHING, not "select, then add": two requests tagging
    # the same contact at once both found no row and the second insert failed (PostgreSQL).
    created = session.execute(
        insert_ignoring_conflicts(session, ContactTag, ["contact_id", "tag_id"]).values(
            contact_id=contact_id, tag_id=tag.id, organization_id=organization_id,
            tagged_at=now, created_at=now, expired_at=expired_at)).rowcount  # type: ignore[attr-defined]
    link = session.get(ContactTag, (contact_id, tag.id), with_for_update=True, populate_existing=True)
    assert link is not None
    if not created:
        if link.expired_at is not None and link.expired_at <= now:
            link.tagged_at = now  # it had lapsed: this is a new tagging
        link.created_at = now
        link.expired_at = expired_at
    if expired_at is not None:
        schedule_expiry_sweep(session, organization_id, expired_at)
    session.flush()
    # contact.tag.add fires on every tagging, even of a contact that already had the tag (CDH OpenAPI 2.0.1).
    if subscribed(session, organization_id, "contact.tag.add"):
        who = session.execute(select(Contact.line_uid, Contact.customer_id).where(Contact.id == contact_id)).first()
        if who is not None:
            contact_tag_added(session, organization_id, line_uid=who[0], customer_id=who[1], tag_id=tag.id,
                              tag_name=tag.name)
    return link


def _contact_id(session: Session, org_id: int, line_uid: str) -> int:
    contact_id = session.scalar(
        select(Contact.id).where(Contact.organization_id == org_id, Contact.line_uid == line_uid)
    )
    if contact_id is None:
        raise not_found()
    return contact_id


def add_tag_to_member(session: Session, org: OrgContext, tag_id: int, line_uid: str) -> dict[str, Any]:
    tag = get_tag(session, org.id, tag_id)
    contact_id = _contact_id(session, org.id, line_uid)
    link = tag_contact(session, org.id, tag, contact_id)
    return {
        "tag_id": tag.id,
        "line_uid": line_uid,
        "created_at": render(link.created_at, org.tz),
        "expired_at": render(link.expired_at, org.tz) if link.expired_at else render_permanent(org.tz),
    }


def remove_tag_from_members(session: Session, org: OrgContext, tag_id: int, line_uid: str | None) -> int:
    """Remove a tag from one contact, or from every contact when no line_uid is given."""
    tag = get_tag(session, org.id, tag_id)
    stmt = delete(ContactTag).where(ContactTag.organization_id == org.id, ContactTag.tag_id == tag.id)
    contact_id = _contact_id(session, org.id, line_uid) if line_uid is not None else None
    if contact_id is not None:
        stmt = stmt.where(ContactTag.contact_id == contact_id)
    if subscribed(session, org.id, "contact.tag.remove"):
        _emit_tag_removed(session, org.id, tag, contact_id)
    return int(session.execute(stmt).rowcount or 0)  # type: ignore[attr-defined]


def _emit_tag_removed(session: Session, organization_id: int, tag: Tag, contact_id: int | None) -> None:
    """contact.tag.remove for every contact that visibly had the tag (lapsed links do not fire)."""
    from openmaac.contacts.service import active_tag_condition

    stmt = (
        select(Contact.line_uid, Contact.customer_id)
        .join(ContactTag, ContactTag.contact_id == Contact.id)
        .where(ContactTag.organization_id == organization_id, ContactTag.tag_id == tag.id, active_tag_condition())
        .order_by(Contact.id)
        # locked: a removal committed meanwhile by another request is not announced again
        .with_for_update(of=ContactTag)
    )
    if contact_id is not None:
        stmt = stmt.where(ContactTag.contact_id == contact_id)
    for chunk in session.execute(stmt.execution_options(yield_per=5000)).partitions():
        emit_many(session, organization_id, [
            tag_event("contact.tag.remove", line_uid=uid, customer_id=cid, tag_id=tag.id, tag_name=tag.name)
            for uid, cid in chunk
        ])


def sweep_expired(session: Session, organization_id: int, now: datetime, limit: int) -> int:
    """Delete up to ``limit`` lapsed tag links of one organisation. Returns how many."""
    keys = session.execute(
        select(ContactTag.contact_id, ContactTag.tag_id)
        .where(
            ContactTag.organization_id == organization_id,
            ContactTag.expired_at.is_not(None),
            ContactTag.expired_at <= now,
        )
        .limit(limit)
    ).all()
    if not keys:
        return 0
    for contact_id, tag_id in keys:
        session.execute(
            delete(ContactTag).where(
                ContactTag.contact_id == contact_id,
                ContactTag.tag_id == tag_id,
                ContactTag.expired_at <= now,
            )
        )
    return len(keys)


@handler("tag.expire_sweep")
def run_expiry_sweep(payload: dict[str, Any], _context: JobContext) -> None:
    organization_id = int(payload["organization_id"])
    database = get_database()
    while True:
        with database.write() as session:
            removed = sweep_expired(session, organization_id, utcnow(), EXPIRY_SWEEP_BATCH)
        if removed < EXPIRY_SWEEP_BATCH:
            return


def count_active_links(session: Session, organization_id: int) -> int:
    from openmaac.contacts.service import active_tag_condition

    return int(
        session.scalar(
            select(func.count()).select_from(ContactTag).where(
                ContactTag.organization_id == organization_id, active_tag_condition()
            )
        )
        or 0
    )
