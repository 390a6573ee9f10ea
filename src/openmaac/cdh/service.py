"""The CDH API's logic: members and custom fields, import/export tasks, engagement events
with click attribution, commerce records. Knows nothing of HTTP except ``APIError``.

Errors follow the CDH API's FastAPI shape: ``{"detail": "..."}``, and for a value the
request's schema cannot check (a custom field's type is the organisation's) 422 with
``{"detail": [{"loc", "msg", "type"}]}``.
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.cdh import clock
from openmaac.cdh.models import ChannelIdentity, CommerceRecord, CustomField, EngagementEvent
from openmaac.cdh.schemas import (
    PROFILE_COLUMNS,
    EngagementEventIn,
    RecordBase,
    TransactionParam,
    UpdateMember,
    dump_record,
    record_key,
)
from openmaac.contacts.models import Contact
from openmaac.contacts.service import apply_profile
from openmaac.db.base import insert_ignoring_conflicts, utcnow
from openmaac.db.locks import lock_for_update
from openmaac.links.models import TrackingEvent
from openmaac.web.errors import APIError
from openmaac.webhooks.events import emit

CUSTOM_TEXT_MAX = 255
CUSTOM_NUMBER_MAX = 2_147_483_647
CUSTOM_NUMBER_DIGITS = 15
# An add_to_cart or purchase is credited to a tracked click it names (utm_term "lm:<click id>")
# when it arrives within this time of the click.
ATTRIBUTION_WINDOW = timedelta(days=7)
CONVERSION_BEHAVIORS = ("add_to_cart", "purchase")


def detail(status_code: int, message: str) -> APIError:
    return APIError(status_code, {"detail": message})


def unprocessable(errors: list[tuple[list[Any], str]]) -> APIError:
    return APIError(422, {"detail": [{"type": "value_error", "loc": loc, "msg": msg} for loc, msg in errors]})


def iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


# -- custom fields ------------------------------------------------------------------------

def serialize_field(field: CustomField) -> dict[str, Any]:
    return {"id": field.id, "key": field.key, "name": field.name, "type": field.type, "active": field.active,
            "created_at": iso(field.created_at), "updated_at": iso(field.updated_at)}


def list_custom_fields(session: Session, org: OrgContext, active: bool | None) -> list[dict[str, Any]]:
    stmt = select(CustomField).where(CustomField.organization_id == org.id)
    if active is not None:
        stmt = stmt.where(CustomField.active.is_(active))
    return [serialize_field(f) for f in session.scalars(stmt.order_by(CustomField.id))]


def create_custom_field(session: Session, org: OrgContext, key: str, name: str, type_: str) -> dict[str, Any]:
    created = session.execute(insert_ignoring_conflicts(session, CustomField, ["organization_id", "key"]).values(
        organization_id=org.id, key=key, name=name, type=type_, active=True, created_at=utcnow(),
        updated_at=utcnow()).returning(CustomField.id)).first()
    if created is None:
        raise detail(409, f"Custom field {key} already exists")
    field = session.scalars(select(CustomField).where(CustomField.organization_id == org.id,
                                                      CustomField.key == key)).one()
    return serialize_field(field)


def update_custom_field(session: Session, org: OrgContext, field_id: int, changes: dict[str, Any]) -> dict[str, Any]:
    """Rename, archive (``active: false``) or restore a field; its type never changes."""
    field = session.scalar(select(CustomField).where(CustomField.id == field_id,
                                                     CustomField.organization_id == org.id).with_for_update())
    if field is None:
        raise detail(404, "Custom field not found")
    if changes.get("name") is not None:
        field.name = changes["name"]
    if changes.get("active") is not None:
        field.active = bool(changes["active"])
    field.updated_at = utcnow()
    session.flush()
    return serialize_field(field)


def custom_field_types(session: Session, organization_id: int) -> dict[str, tuple[str, bool]]:
    """{key: (type, active)} of the organisation's custom fields."""
    return {key: (type_, bool(active)) for key, type_, active in session.execute(
        select(CustomField.key, CustomField.type, CustomField.active)
        .where(CustomField.organization_id == organization_id))}


def custom_value_error(type_: str, value: Any) -> tuple[Any, str | None]:
    """(the value as stored, None) or (None, the message why it is refused)."""
    if value is None:
        return None, None
    if type_ == "text":
        if not isinstance(value, str):
            return None, "Input should be a valid string"
        if len(value) > CUSTOM_TEXT_MAX:
            return None, f"String should have at most {CUSTOM_TEXT_MAX} characters"
        try:
            value.encode()
        except UnicodeEncodeError:
            return None, "Input should be a valid string (no lone surrogates)"
        return value, None
    if type_ == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "Input should be a valid number"
        try:
            number = Decimal(str(value))
        except InvalidOperation:
            return None, "Input should be a valid number"
        if not number.is_finite() or abs(number) > CUSTOM_NUMBER_MAX:
            return None, f"Number should be within ±{CUSTOM_NUMBER_MAX}"
        digits = len(number.normalize().as_tuple().digits) if number else 1
        if digits > CUSTOM_NUMBER_DIGITS:
            return None, f"Number should have at most {CUSTOM_NUMBER_DIGITS} significant digits"
        return value, None
    if type_ == "date":
        if not isinstance(value, str) or len(value) != 10:
            return None, "Input should be a valid date in the format YYYY-MM-DD"
        try:
            return date.fromisoformat(value).isoformat(), None
        except ValueError:
            return None, "Input should be a valid date in the format YYYY-MM-DD"
    # datetime: ISO 8601 with a zone
    if not isinstance(value, str) or len(value) < 16:
        return None, "Input should be a valid datetime with timezone, e.g. 2025-12-31T23:59:59Z"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None, "Input should be a valid datetime with timezone, e.g. 2025-12-31T23:59:59Z"
    if parsed.tzinfo is None:
        return None, "Input should have timezone info"
    return value, None


def clean_custom_fields(types: dict[str, tuple[str, bool]], values: dict[str, Any],
                        loc: list[Any]) -> tuple[dict[str, Any], list[tuple[list[Any], str]]]:
    cleaned: dict[str, Any] = {}
    errors: list[tuple[list[Any], str]] = []
    for key, value in values.items():
        known = types.get(key)
        if known is None:
            errors.append(([*loc, key], f"Unknown custom field {key}"))
            continue
        type_, active = known
        if not active:
            errors.append(([*loc, key], f"Custom field {key} is archived"))
            continue
        stored, error = custom_value_error(type_, value)
        if error:
            errors.append(([*loc, key], error))
        else:
            cleaned[key] = stored
    return cleaned, errors


def apply_custom_fields(contact: Contact, cleaned: dict[str, Any]) -> list[str]:
    """Merge into the contact's values (null removes one); the keys that changed."""
    current = dict(contact.custom_fields or {})
    changed = []
    for key, value in cleaned.items():
        if current.get(key) == value and (value is not None or key not in current):
            continue
        if value is None:
            current.pop(key, None)
        else:
            current[key] = value
        changed.append(key)
    if changed:
        contact.custom_fields = current or None
    return changed


# -- members --------------------------------------------------------------------------------

def find_member(session: Session, org: OrgContext, channel_type: str, external_channel_id: str,
                external_member_id: str, unify: dict[str, Any] | None = None) -> Contact:
    """The contact of a channel-level member, locked for update.

    Known identity: its contact. LINE: the contact with that LINE user id (the identity is
    recorded); a LINE user openmaac never saw is 404. Another channel's new member joins the
    contact holding the customer_id or connect_id it is being given (the unify keys), or
    becomes a new contact.
    """
    identity = select(ChannelIdentity.contact_id).where(
        ChannelIdentity.organization_id == org.id, ChannelIdentity.channel_type == channel_type,
        ChannelIdentity.external_channel_id == external_channel_id,
        ChannelIdentity.external_member_id == external_member_id)
    contact_id = session.scalar(identity)
    if contact_id is None:
        # an identity not recorded yet: one request at a time records it; another that found
        # none waits here and then finds the first's (else each made a contact, PostgreSQL)
        lock_for_update(session, f"cdh_identity:{channel_type}:{external_channel_id}:{external_member_id}", org.id)
        contact_id = session.scalar(identity)
    if contact_id is not None:
        contact = session.scalar(select(Contact).where(Contact.id == contact_id).with_for_update())
        if contact is not None:
            return contact
    contact = None
    if channel_type == "line":
        contact = session.scalar(select(Contact).where(Contact.organization_id == org.id,
                                                       Contact.line_uid == external_member_id).with_for_update())
        if contact is None:
            raise detail(404, "Member not found")
    else:
        for key in ("customer_id", "connect_id"):
            value = (unify or {}).get(key)
            if value:
                # the newest holder; max() rather than ORDER BY id, which SQLite would answer by
                # walking the organisation's (organization_id, id) index
                newest = session.scalar(select(func.max(Contact.id)).where(Contact.organization_id == org.id,
                                                                           getattr(Contact, key) == value))
                contact = (session.scalar(select(Contact).where(Contact.id == newest).with_for_update())
                           if newest is not None else None)
                if contact is not None:
                    break
        if contact is None:
            now = utcnow()
            contact = Contact(organization_id=org.id, line_uid=None, status="follow", created_at=now, updated_at=now)
            session.add(contact)
            session.flush()
    session.execute(insert_ignoring_conflicts(
        session, ChannelIdentity, ["organization_id", "channel_type", "external_channel_id", "external_member_id"]
    ).values(organization_id=org.id, contact_id=contact.id, channel_type=channel_type,
             external_channel_id=external_channel_id, external_member_id=external_member_id, created_at=utcnow()))
    return contact


def update_member(session: Session, org: OrgContext, body: UpdateMember) -> dict[str, Any]:
    data = body.data
    profile = data.changes()
    types = custom_field_types(session, org.id) if data.custom_fields else {}
    custom, errors = clean_custom_fields(types, data.custom_fields or {}, ["body", "data", "custom_fields"])
    if errors:
        raise unprocessable(errors)
    contact = find_member(session, org, body.channel_type, body.external_channel_id, body.external_member_id,
                          unify=profile)
    updated = apply_member_changes(session, contact, profile, custom)
    session.flush()
    return {"updated_fields": updated}


def apply_member_changes(session: Session, contact: Contact, profile: dict[str, Any],
                         custom: dict[str, Any]) -> list[str]:
    """Write CDH-named profile fields and custom values; the names of the fields that changed.
    ``contact.profile.<field>.update`` fires once per changed profile field (apply_profile)."""
    by_column = {PROFILE_COLUMNS[name]: name for name in profile}
    changes = apply_profile(session, contact, {PROFILE_COLUMNS[name]: value for name, value in profile.items()})
    updated = [by_column[change.field] for change in changes]
    custom_changed = apply_custom_fields(contact, custom)
    if custom_changed and not changes:
        contact.updated_at = utcnow()
    return updated + custom_changed


# -- engagement events ----------------------------------------------------------------------

def submit_event(session: Session, org: OrgContext, body: EngagementEventIn) -> str:
    """Store the event; an add_to_cart or purchase naming a tracked click (``utm_term``
    ``lm:<click id>``) within ATTRIBUTION_WINDOW is credited to that click's message and link.
    A purchase repeating a transaction_id already credited is stored but not credited again."""
    now = clock.now()
    behavior = str(body.behavior.value if hasattr(body.behavior, "value") else body.behavior)
    params = body.params.model_dump(mode="json", exclude_unset=True)
    transaction_id = revenue = None
    if isinstance(body.params, TransactionParam):
        transaction_id, revenue = body.params.transaction_id, body.params.revenue
    click: Any = None
    if behavior in CONVERSION_BEHAVIORS and body.utm_term.startswith("lm:"):
        click_id = int(body.utm_term[3:])
        if click_id < 2**63:
            click = session.execute(_CLICK, {"click_id": click_id, "org_id": org.id,
                                             "since": now - ATTRIBUTION_WINDOW,
                                             "until": now + timedelta(minutes=5)}).first()
        if click is not None and transaction_id is not None:
            # one credit per transaction: a report of it from another request waits here until
            # that request's credit is committed, and so sees it
            lock_for_update(session, f"cdh_transaction:{transaction_id}", org.id)
        if click is not None and transaction_id is not None and session.scalar(
            select(EngagementEvent.id).where(EngagementEvent.organization_id == org.id,
                                             EngagementEvent.transaction_id == transaction_id,
                                             EngagementEvent.message_event_id.is_not(None)).limit(1)
        ) is not None:
            click = None
    event_id = str(uuid.uuid4())
    # one statement built once (its parameters bound per call): building it per event cost
    # about half of this function's time
    session.execute(_EVENT_INSERT, {
        "event_id": event_id, "organization_id": org.id, "behavior": behavior, "utm_campaign": body.utm_campaign,
        "utm_source": body.utm_source, "utm_medium": body.utm_medium, "utm_content": body.utm_content,
        "utm_term": body.utm_term, "language": body.language, "geography": body.geography, "params": params,
        "transaction_id": transaction_id, "revenue": revenue,
        "click_id": click.id if click is not None else None,
        "message_event_id": click.event_id if click is not None else None,
        "tracked_link_id": click.tracked_link_id if click is not None else None,
        "contact_line_uid": click.line_uid if click is not None else None, "occurred_at": now,
    })
    return event_id


_EVENT_INSERT = EngagementEvent.__table__.insert()
_CLICK = (select(TrackingEvent.id, TrackingEvent.event_id, TrackingEvent.tracked_link_id, TrackingEvent.line_uid)
          .where(TrackingEvent.id == bindparam("click_id"), TrackingEvent.organization_id == bindparam("org_id"),
                 TrackingEvent.kind == "click", TrackingEvent.occurred_at >= bindparam("since"),
                 TrackingEvent.occurred_at <= bindparam("until")))


def conversions(session: Session, organization_id: int, message_event_id: int, window: list[Any]
                ) -> tuple[dict[str, Any], dict[int, dict[str, Any]]]:
    """adds_to_cart / transactions / transaction_revenue of one MAAC event: in total and per
    tracked link. ``window``: conditions on EngagementEvent.occurred_at."""
    rows = session.execute(
        select(EngagementEvent.tracked_link_id, EngagementEvent.behavior, func.count(),
               func.coalesce(func.sum(EngagementEvent.revenue), 0))
        .where(EngagementEvent.organization_id == organization_id,
               EngagementEvent.message_event_id == message_event_id,
               EngagementEvent.behavior.in_(CONVERSION_BEHAVIORS), *window)
        .group_by(EngagementEvent.tracked_link_id, EngagementEvent.behavior)
    ).all()
    total = {"adds_to_cart": 0, "transactions": 0, "transaction_revenue": 0.0}
    per_link: dict[int, dict[str, Any]] = {}
    for link_id, behavior, count, revenue in rows:
        row = per_link.setdefault(int(link_id or 0), {"adds_to_cart": 0, "transactions": 0,
                                                      "transaction_revenue": 0.0})
        for target in (total, row):
            if behavior == "add_to_cart":
                target["adds_to_cart"] += int(count)
            else:
                target["transactions"] += int(count)
                target["transaction_revenue"] = round(target["transaction_revenue"] + float(revenue or 0), 4)
    return total, per_link


# -- commerce records -----------------------------------------------------------------------

def submit_record(session: Session, org: OrgContext, kind: str, record: RecordBase) -> str:
    """Upsert the record by its own id and announce ``<kind>.sync``. The same record sent
    again unchanged answers the event_id it got before and announces nothing."""
    key = record_key(kind, record)
    data = dump_record(record)
    existing = session.scalar(select(CommerceRecord).where(
        CommerceRecord.organization_id == org.id, CommerceRecord.kind == kind, CommerceRecord.record_key == key
    ).with_for_update())
    if existing is not None and existing.data == data:
        return existing.event_id
    event_id = str(uuid.uuid4())
    contact_id, line_uid = _record_contact(session, org, record)
    now = utcnow()
    if existing is None:
        inserted = session.execute(insert_ignoring_conflicts(
            session, CommerceRecord, ["organization_id", "kind", "record_key"]
        ).values(organization_id=org.id, kind=kind, record_key=key, event_id=event_id, contact_id=contact_id,
                 data=data, created_at=now, updated_at=now).returning(CommerceRecord.id)).first()
        if inserted is None:  # a concurrent first submission won: update it
            existing = session.scalar(select(CommerceRecord).where(
                CommerceRecord.organization_id == org.id, CommerceRecord.kind == kind,
                CommerceRecord.record_key == key).with_for_update())
    if existing is not None:
        existing.data = data
        existing.event_id = event_id
        existing.contact_id = contact_id
        existing.updated_at = now
    session.flush()
    emit(session, org.id, f"{kind}.sync", data, ordering_key=line_uid or _record_ordering_key(kind, key),
         event_id=event_id)
    return event_id


def _record_ordering_key(kind: str, key: str) -> str:
    """The ordering key of a record naming no contact: its own updates reach an endpoint in
    the order they were made (a contact's key, its LINE uid, orders all of the contact's events)."""
    return "record:" + hashlib.sha256(f"{kind}\x1f{key}".encode()).hexdigest()


def _record_contact(session: Session, org: OrgContext, record: RecordBase) -> tuple[int | None, str | None]:
    """The contact a record names by its channel-level member, when it names a known one."""
    if not (record.channel_type and record.external_channel_id and record.external_member_id):
        return None, None
    row = session.execute(
        select(Contact.id, Contact.line_uid).join(ChannelIdentity, ChannelIdentity.contact_id == Contact.id)
        .where(ChannelIdentity.organization_id == org.id, ChannelIdentity.channel_type == record.channel_type,
               ChannelIdentity.external_channel_id == record.external_channel_id,
               ChannelIdentity.external_member_id == record.external_member_id)
    ).first()
    if row is None and record.channel_type == "line":
        row = session.execute(select(Contact.id, Contact.line_uid).where(
            Contact.organization_id == org.id, Contact.line_uid == record.external_member_id)).first()
    return (int(row[0]), row[1]) if row is not None else (None, None)


__all__ = [
    "ATTRIBUTION_WINDOW", "apply_member_changes", "conversions", "create_custom_field", "list_custom_fields",
    "submit_event", "submit_record", "update_custom_field", "update_member",
]

