"""Join links: ``{{join_link}}`` in a scenario's SMS text (or PNP content) becomes a tracked,
per-message link ``{public base URL}/sms_plus/j/{code}``.

Following it records a click and redirects to LINE's "message the Official Account" URL
(``https://line.me/R/oaMessage/{basicId}/?<text>``) with the prefilled text ``#join {code}``.
When the person sends that text (after adding the account as a friend), the LINE webhook
receiver hands it here: the phone number of the message is bound to the sender's contact
(``mobile``) and ``pnp.profile_updated`` is emitted with source ``sms`` (link from the SMS)
or ``pnp`` (link in the LINE notification message). PNP ``delivery`` events that name the
user bind the same way with source ``pnp``.
"""

from __future__ import annotations

import re
import secrets
from typing import Any
from urllib.parse import quote

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from openmaac.config import get_settings
from openmaac.contacts import service as contacts
from openmaac.contacts.models import Contact
from openmaac.db.base import utcnow
from openmaac.sms_plus.models import AnyPnpMessage, PnpJoinLink, PnpMessage, PnpSetting
from openmaac.webhooks.events import emit

CODE_LENGTH = 10
PATH = "/sms_plus/j/"
JOIN_TEXT = re.compile(r"#join\s+([A-Za-z0-9_-]{6,32})")


def link_length() -> int:
    return len(get_settings().public_base_url.rstrip("/")) + len(PATH) + CODE_LENGTH


def url_for(code: str) -> str:
    return get_settings().public_base_url.rstrip("/") + PATH + code


def links_for(session: Session, organization_id: int, message_id: int, source: str) -> str:
    """The message's join link for ``source`` (created once, the same on every retry)."""
    code = session.scalar(select(PnpJoinLink.code).where(PnpJoinLink.pnp_message_id == message_id,
                                                         PnpJoinLink.source == source))
    if code is None:
        code = secrets.token_urlsafe(8)[:CODE_LENGTH]
        session.add(PnpJoinLink(code=code, organization_id=organization_id, pnp_message_id=message_id,
                                source=source, clicks=0, created_at=utcnow()))
        session.flush()
    return url_for(code)


CODE = re.compile(r"[A-Za-z0-9_-]{1,32}")  # what codes are made of (token_urlsafe), and the column's width


def click(session: Session, code: str) -> PnpJoinLink | None:
    if not CODE.fullmatch(code):
        return None  # no link has such a code (and PostgreSQL refuses a NUL in a query)
    link = session.scalar(select(PnpJoinLink).where(PnpJoinLink.code == code))
    if link is None:
        return None
    session.execute(update(PnpJoinLink).where(PnpJoinLink.id == link.id).values(clicks=PnpJoinLink.clicks + 1))
    return link


def oa_message_url(basic_id: str, code: str) -> str:
    return f"https://line.me/R/oaMessage/{quote(basic_id, safe='@')}/?{quote('#join ' + code)}"


def bind_phone(session: Session, organization_id: int, setting: PnpSetting, message: AnyPnpMessage, line_uid: str,
               source: str, *, only_if_new: bool = False) -> bool:
    """Bind the message's phone number to the contact ``line_uid``; emit pnp.profile_updated.

    ``only_if_new``: do nothing when the contact already has this number (PNP deliveries)."""
    contact = session.scalar(select(Contact).where(Contact.organization_id == organization_id,
                                                   Contact.line_uid == line_uid))
    if contact is None:
        if only_if_new:
            return False  # a PNP reached someone who is not (yet) a friend: nothing to bind
        contact, _ = contacts.record_follow(session, organization_id, line_uid, utcnow())
    if not message.hashed_input and contact.mobile != message.phone_number:
        contacts.apply_profile(session, contact, {"mobile": message.phone_number})
    elif only_if_new:
        return False
    message.line_uid = line_uid
    emit(session, organization_id, "pnp.profile_updated", {
        "pnp_setting_id": setting.id,
        "pnp_setting_name": setting.name,
        "source": source,
        "phone_number": message.phone_number,
        "line_uid": line_uid,
        "customer_id": contact.customer_id,
    }, ordering_key=line_uid)
    session.flush()
    return True


def handle_join_text(session: Session, organization_id: int, line_uid: str, text: str) -> bool:
    """A text message from ``line_uid``: bind when it is a join link's prefilled text."""
    match = JOIN_TEXT.search(text or "")
    if match is None:
        return False
    # locked: a binding made meanwhile by the same link's text from someone else is seen
    link = session.scalar(select(PnpJoinLink).where(PnpJoinLink.code == match.group(1),
                                                    PnpJoinLink.organization_id == organization_id).with_for_update())
    if link is None or link.bound_line_uid is not None:
        return False
    message = session.get(PnpMessage, link.pnp_message_id)
    setting = session.get(PnpSetting, message.pnp_setting_id) if message else None
    if message is None or setting is None:
        return False
    link.bound_line_uid = line_uid
    link.bound_at = utcnow()
    bind_phone(session, organization_id, setting, message, line_uid, link.source)
    return True


def message_text(event: dict[str, Any]) -> str | None:
    body = event.get("message") or {}
    return body.get("text") if body.get("type") == "text" else None
