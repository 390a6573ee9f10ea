"""``direct_message/*``: validating and recording direct messages, and their status.

Validation (400, DRF shapes): the template and the event must exist in the organisation
(``{"template_id": ["Invalid pk \\"9\\" - object does not exist."]}``), every template
parameter must be supplied (``{"data": {"name": ["This field is required."]}}``; for
multicast the DRF list shape ``{"data": [{}, {"name": [...]}]}``), an image URL a parameter
fills must end in ``.jpg``/``.jpeg``/``.png``, and the recipient limits hold (150 / 500).
A push to a line_uid that is not a contact answers 400; in a multicast such an entry is
accepted and reported in ``fail_info`` ("Contact not found") so the others still go out.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson
from sqlalchemy import Connection, and_, bindparam, func, select
from sqlalchemy.orm import Session

from openmaac.auth.models import Organization
from openmaac.auth.service import OrgContext
from openmaac.common.validation import char_field
from openmaac.contacts.models import LINE_UID_MAX_LENGTH, Contact
from openmaac.links import rewrite
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient, MessageEvent
from openmaac.templates.models import MessageTemplate
from openmaac.templates.service import PLACEHOLDER
from openmaac.web.errors import field_errors, not_found
from openmaac.web.times import render as render_time

MULTICAST_MAX = 150
ENHANCED_MULTICAST_MAX = 500
CONTACT_NOT_FOUND = "Contact not found"
IMAGE_EXTENSION_ERROR = "The image URL must end with an image file extension (.jpg, .jpeg or .png)."


def pk_error(value: Any) -> list[str]:
    return [f'Invalid pk "{value}" - object does not exist.']


@dataclass(frozen=True)
class TemplateRow:
    """What sending reads of a template (a plain row: no ORM object per request)."""

    id: int
    messages: list[dict[str, Any]]
    parameters: list[str]


def _template_and_event_statement() -> Any:
    org, template, event = Organization.__table__, MessageTemplate.__table__, MessageEvent.__table__
    return (select(template.c.id, template.c.messages, template.c.parameters, event.c.id, event.c.name)
            .select_from(org.outerjoin(template, and_(template.c.organization_id == org.c.id,
                                                      template.c.id == bindparam("template")))
                         .outerjoin(event, and_(event.c.organization_id == org.c.id, event.c.id == bindparam("event"))))
            .where(org.c.id == bindparam("org")))


# the template and the event of a send (a missing one comes back as NULLs); the push extends it
TEMPLATE_AND_EVENT = _template_and_event_statement()


def template_and_event(conn: Connection, org_id: int, template_id: int,
                       event_id: int | None) -> tuple[TemplateRow, tuple[int, str] | None]:
    """The template and the event (``(id, name)``) of a send, in one statement; 400 in DRF's
    words for a template or event the organisation does not have."""
    row = conn.execute(TEMPLATE_AND_EVENT, {"org": org_id, "template": template_id, "event": event_id}).first()
    return template_and_event_of(row, template_id, event_id)


def template_and_event_of(row: Any, template_id: int, event_id: int | None) -> tuple[TemplateRow, tuple[int, str] | None]:
    """The template and event of a row of ``TEMPLATE_AND_EVENT`` (or a statement extending it:
    its first five columns), or the 400 for the one missing."""
    if row is None or row[0] is None:
        raise field_errors({"template_id": pk_error(template_id)})
    if event_id is not None and row[3] is None:
        raise field_errors({"event_id": pk_error(event_id)})
    event = (int(row[3]), str(row[4])) if row[3] is not None else None
    return TemplateRow(int(row[0]), list(row[1]), list(row[2] or [])), event


def contact_fields(contact: Contact | None) -> dict[str, Any] | None:
    """The ``{{contact.*}}`` placeholder values of a contact (None: no contact)."""
    if contact is None:
        return None
    return contact_fields_of([getattr(contact, name) for name in CONTACT_FIELDS])


@dataclass(frozen=True)
class ImageSlot:
    path: rewrite.Path
    params: tuple[str, ...]


def image_slots(template: MessageTemplate | TemplateRow) -> list[ImageSlot]:
    """The template's image URL fields that parameters fill (checked after rendering)."""
    slots = []
    for field in rewrite.image_fields(template.messages, templated=True):
        if field.imagemap:
            continue  # LINE appends the width to an imagemap base URL; it has no extension
        value = rewrite.get(template.messages, field.path)
        names = tuple(m.group(1) for m in PLACEHOLDER.finditer(value) if not m.group(1).startswith("contact."))
        if names:
            slots.append(ImageSlot(field.path, names))
    return slots


def clean_params(template: MessageTemplate | TemplateRow, data: dict[str, Any]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """The template's parameters from ``data`` as strings, and the field errors."""
    params: dict[str, str] = {}
    errors: dict[str, list[str]] = {}
    for name in template.parameters:
        if name not in data:
            errors[name] = ["This field is required."]
            continue
        value = data[name]
        if value is None:
            errors[name] = ["This field may not be null."]
        elif isinstance(value, bool) or isinstance(value, dict | list):
            errors[name] = ["Not a valid string."]
        else:
            params[name] = str(value)
    return params, errors


def check_images(slots: list[ImageSlot], rendered: list[dict[str, Any]]) -> dict[str, list[str]]:
    errors: dict[str, list[str]] = {}
    for slot in slots:
        try:
            url = rewrite.get(rendered, slot.path)
        except (KeyError, IndexError, TypeError):
            continue
        if not isinstance(url, str) or rewrite.image_extension(url) is None:
            for name in slot.params:
                errors[name] = [IMAGE_EXTENSION_ERROR]
    return errors


# the recipients' line_uid column (a LINE user id is 33 characters)


def line_uid_of(data: dict[str, Any], errors: dict[str, list[str]]) -> str | None:
    if "line_uid" not in data:
        errors["line_uid"] = ["This field is required."]
        return None
    value = data["line_uid"]
    if value is None:
        errors["line_uid"] = ["This field may not be null."]
        return None
    if not isinstance(value, str):
        errors["line_uid"] = ["Not a valid string."]
        return None
    cleaned, problems = char_field(value, max_length=LINE_UID_MAX_LENGTH)
    if problems:
        errors["line_uid"] = problems
        return None
    return cleaned


def contacts_by_uid(session: Session, org_id: int, uids: list[str]) -> dict[str, Contact]:
    found: dict[str, Contact] = {}
    unique = sorted(set(uids))
    for chunk in range(0, len(unique), 500):
        rows = session.scalars(select(Contact).where(Contact.organization_id == org_id,
                                                     Contact.line_uid.in_(unique[chunk:chunk + 500])))
        for contact in rows:
            found[str(contact.line_uid)] = contact
    return found


CONTACT_FIELDS = ("line_uid", "line_display_name", "display_name", "customer_id", "email", "mobile", "gender",
                  "birthday")


def contact_fields_of(values: Any) -> dict[str, Any]:
    """``contact_fields`` from the ``CONTACT_FIELDS`` columns of a row, in that order."""
    fields = dict(zip(CONTACT_FIELDS, values, strict=True))
    if fields["birthday"] is not None:
        fields["birthday"] = fields["birthday"].isoformat()
    return fields


def contact_ids_by_uid(session: Session | Connection, org_id: int, uids: list[str]) -> dict[str, int]:
    """``{line_uid: contact id}`` for the uids that are contacts of the organisation (read
    through the driver: for 500 uids SQLAlchemy's expanding IN cost more than the query)."""
    conn = session.connection() if isinstance(session, Session) else session
    postgres = conn.dialect.name == "postgresql"
    # the driver's own cursor: SQLAlchemy's result rows cost more than the 500 index seeks
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    found: dict[str, int] = {}
    unique = sorted(set(uids))
    try:
        for chunk in range(0, len(unique), 500):
            part = unique[chunk:chunk + 500]
            if postgres:  # one array, not 500 placeholders; sent as JSON text (psycopg's list
                # adapter walked the 500 values in Python: a fifth of the request's CPU)
                cursor.execute("SELECT line_uid, id FROM contacts WHERE organization_id = %s "
                               "AND line_uid = ANY(ARRAY(SELECT json_array_elements_text(%s::json)))",
                               (org_id, orjson.dumps(part).decode()))
            else:  # one JSON text walked in order, each uid one index seek (~20% less than a 500-value IN)
                cursor.execute("SELECT c.line_uid, c.id FROM json_each(?) AS j CROSS JOIN contacts AS c "
                               "ON c.organization_id = ? AND c.line_uid = j.value",
                               (orjson.dumps(part).decode(), org_id))
            found.update(cursor.fetchall())
    finally:
        cursor.close()
    return found



# An enhanced multicast's LINE call lists built by the database: ``[mark, contact id]`` of each
# uid that is a contact, in the order of the uids, its uids, and how many there are, as JSON text
# (500 entries otherwise cost a dict, two lists of pairs and their encoding in Python).
_LISTED_SQLITE = ("SELECT json_group_array(json_array(j.key, c.id)), json_group_array(j.value), count(*) "
                  "FROM json_each(?) AS j CROSS JOIN contacts AS c ON c.organization_id = ? AND c.line_uid = j.value")
_LISTED_POSTGRES = ("SELECT json_agg(json_build_array(j.ord - 1, c.id) ORDER BY j.ord)::text, "
                    "json_agg(j.value ORDER BY j.ord)::text, count(*) "
                    "FROM json_array_elements_text(%s::json) WITH ORDINALITY AS j(value, ord) "
                    "JOIN contacts AS c ON c.organization_id = %s AND c.line_uid = j.value")


def listed_contacts(conn: Connection, org_id: int, uids: list[str]) -> tuple[str, str] | None:
    """``(references, to)`` as JSON text when EVERY uid is a contact of the organisation (the
    usual case): ``references[i]`` is ``[mark, contact id]`` of the uid ``to[i]`` (its index in
    ``uids``). None when some uid is not (the caller looks them up one by one)."""
    postgres = conn.dialect.name == "postgresql"
    cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
    try:
        cursor.execute(_LISTED_POSTGRES if postgres else _LISTED_SQLITE, (orjson.dumps(uids).decode(), org_id))
        refs, to, count = cursor.fetchone()
    finally:
        cursor.close()
    if count != len(uids) or not count:
        return None
    return refs, to


# -- status -------------------------------------------------------------------------------------

def get_direct_message(session: Session, org_id: int, dm_id: int) -> DirectMessage:
    dm = session.scalar(select(DirectMessage).where(DirectMessage.organization_id == org_id,
                                                    DirectMessage.id == dm_id))
    if dm is None:
        raise not_found()
    return dm


def serialize(session: Session, dm: DirectMessage, org: OrgContext) -> dict[str, Any]:
    """``GET direct_message/{id}/``: ``result`` only once the message is ``sent`` (else null)."""
    body: dict[str, Any] = {"id": dm.id, "category": dm.category, "status": dm.status, "event_id": dm.event_id,
                            "result": None}
    if dm.status != "sent":
        return body
    rows: list[Any] = list(session.execute(
        select(DirectMessageRecipient.mark, DirectMessageRecipient.line_uid, DirectMessageRecipient.status,
               DirectMessageRecipient.response)
        .where(DirectMessageRecipient.direct_message_id == dm.id).order_by(DirectMessageRecipient.mark)
    ).all())
    if not dm.recipient_rows:
        # only the entries that were no contact have rows; the LINE call rows list the others
        from openmaac.messaging.sending import listed_recipients

        rows = sorted(rows + listed_recipients(session, dm.id), key=lambda row: row[0])
    fail_info = [{"line_uid": uid, "mark": mark, "response": response or "error"}
                 for mark, uid, status, response in rows if status == "failed"]
    body["result"] = {
        "sent_time": render_time(dm.sent_at, org.tz),
        "to": {"line_ids": [uid for _mark, uid, _status, _response in rows]},
        "total_count": dm.total_count,
        "fail_count": dm.fail_count,
        "fail_info": fail_info,
    }
    return body


def counts(session: Session | Connection, dm_id: int) -> tuple[int, int]:
    rows = dict(session.execute(
        select(DirectMessageRecipient.status, func.count()).where(DirectMessageRecipient.direct_message_id == dm_id)
        .group_by(DirectMessageRecipient.status)
    ).all())
    total = sum(int(n) for n in rows.values())
    return total, int(rows.get("failed", 0))

