"""Tracked links, open images and taps: creating them for a send, recording what users do.

A tracked direct message (one sent with an ``event_id``) has every click target replaced by
``{public base}/r/{code}`` and, when personalised (push, multicast), every image replaced by
``{public base}/o/{code}/{n}.{ext}``: the LINE client loading that image is the open (as an
e-mail open pixel). ``/r/`` records the click and redirects to the destination with the UTM
parameters of the organisation's tracking setting (and ``clid`` when switched on); ``/o/``
records the first open of the message and redirects to the original image.
"""

from __future__ import annotations

import secrets
import string
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from sqlalchemy import insert, select, update
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.config import get_settings
from openmaac.db.base import insert_ignoring_conflicts, utcnow
from openmaac.links import rewrite
from openmaac.links.models import ShortLink, TrackedAction, TrackedLink, TrackingEvent, TrackingSetting
from openmaac.messaging import notify
from openmaac.messaging.models import DirectMessage, DirectMessageRecipient

CODE_ALPHABET = string.ascii_letters + string.digits
CODE_LENGTH = 10
UTM_FIELDS = ("utm_campaign", "utm_source", "utm_medium", "utm_content")
# a tap is attributed to the latest tracked message with that action sent to the user within this window
TAP_WINDOW_DAYS = 30


def new_code() -> str:
    return "".join(secrets.choice(CODE_ALPHABET) for _ in range(CODE_LENGTH))


def public_base() -> str:
    return get_settings().public_base_url.rstrip("/")


# -- the organisation's tracking setting (extension) --------------------------------------------

def serialize_setting(setting: TrackingSetting | None) -> dict[str, Any]:
    body: dict[str, Any] = {name: (getattr(setting, name) if setting else None) for name in UTM_FIELDS}
    body["append_clid"] = bool(setting.append_clid) if setting else False
    return body


def get_setting(session: Session, organization_id: int) -> TrackingSetting | None:
    return session.get(TrackingSetting, organization_id)


def update_setting(session: Session, org: OrgContext, changes: dict[str, Any]) -> dict[str, Any]:
    # created if missing by INSERT ... ON CONFLICT DO NOTHING, then locked: two first saves at
    # once both found none and the second insert failed (PostgreSQL)
    session.execute(insert_ignoring_conflicts(session, TrackingSetting, ["organization_id"]).values(
        organization_id=org.id, append_clid=False, updated_at=utcnow()))
    setting = session.get(TrackingSetting, org.id, with_for_update=True)
    assert setting is not None
    for name in UTM_FIELDS:
        if name in changes:
            value = changes[name]
            setting.__setattr__(name, (value.strip() or None) if isinstance(value, str) else None)
    if changes.get("append_clid") is not None:
        setting.append_clid = bool(changes["append_clid"])
    setting.updated_at = utcnow()
    session.flush()
    return serialize_setting(setting)


# -- creating the tracking of one direct message ----------------------------------------------

@dataclass
class Tracker:
    """Creates the tracked links, codes and actions of one direct message (planning transaction)."""

    session: Session
    dm: DirectMessage
    setting: TrackingSetting | None
    base: str = field(default_factory=public_base)
    links: dict[str, int] = field(default_factory=dict)
    actions: dict[tuple[str, str], int] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    anonymous: dict[int, str] = field(default_factory=dict)

    def link_id(self, url: str) -> int:
        link_id = self.links.get(url)
        if link_id is None:
            link = TrackedLink(organization_id=self.dm.organization_id, direct_message_id=self.dm.id,
                               event_id=self.dm.event_id, url=url, created_at=utcnow(),
                               **{name: getattr(self.setting, name) if self.setting else None for name in UTM_FIELDS})
            self.session.add(link)
            self.session.flush()
            link_id = self.links[url] = link.id
        return link_id

    def _code(self, kind: str, *, link_id: int | None, recipient_id: int | None,
              targets: list[str] | None = None) -> str:
        code = new_code()
        self.rows.append({"code": code, "organization_id": self.dm.organization_id,
                          "direct_message_id": self.dm.id, "kind": kind, "tracked_link_id": link_id,
                          "recipient_id": recipient_id, "targets": targets, "created_at": utcnow()})
        return code

    def click_url(self, url: str, recipient_id: int | None) -> str:
        link_id = self.link_id(url)
        if recipient_id is None:  # per-message link (enhanced multicast): one code per URL
            code = self.anonymous.get(link_id)
            if code is None:
                code = self.anonymous[link_id] = self._code("click", link_id=link_id, recipient_id=None)
        else:
            code = self._code("click", link_id=link_id, recipient_id=recipient_id)
        return f"{self.base}/r/{code}"

    def track(self, messages: list[dict[str, Any]], recipient_id: int | None) -> list[dict[str, Any]]:
        """``messages`` with their links (and, for a recipient, images) tracked; records actions."""
        for action in rewrite.actions(messages):
            key = (action.kind, action.value[:512])
            if key not in self.actions:
                row = TrackedAction(organization_id=self.dm.organization_id, direct_message_id=self.dm.id,
                                    event_id=self.dm.event_id, kind=action.kind, value=action.value[:512],
                                    keyword=action.keyword[:512], created_at=utcnow())
                self.session.add(row)
                self.session.flush()
                self.actions[key] = row.id
        open_code: list[str] = []
        targets: list[str] = []

        def image(index: int, url: str, imagemap: bool) -> str:
            if not open_code:
                open_code.append(self._code("open", link_id=None, recipient_id=recipient_id, targets=targets))
            targets.append(url)
            if imagemap:
                return f"{self.base}/o/{open_code[0]}/{index}"
            return f"{self.base}/o/{open_code[0]}/{index}{rewrite.image_extension(url) or '.png'}"

        return rewrite.rewrite(messages, click=lambda url: self.click_url(url, recipient_id),
                               image=image if recipient_id is not None else None)

    def save(self) -> None:
        for chunk in range(0, len(self.rows), 2000):
            self.session.execute(insert(ShortLink), self.rows[chunk:chunk + 2000])
        self.rows = []


# -- what users do ------------------------------------------------------------------------------

def _with_query(url: str, extra: dict[str, str]) -> str:
    """``url`` with ``extra`` query parameters added, keeping any the URL already sets."""
    if not extra:
        return url
    parts = urlsplit(url)
    present = {key for key, _ in parse_qsl(parts.query, keep_blank_values=True)}
    added = {key: value for key, value in extra.items() if key not in present}
    if not added:
        return url
    query = parts.query + ("&" if parts.query else "") + urlencode(added)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def destination(link: TrackedLink, contact_id: int | None, append_clid: bool, click_id: int | None = None) -> str:
    extra = {name: value for name in UTM_FIELDS if (value := getattr(link, name))}
    if click_id is not None:
        # names this click (CDH OpenAPI 2.0.1's utm_term "lm:<id>"): the brand's site sends it
        # back with its engagement events, which credits their conversions to the click
        extra["utm_term"] = f"lm:{click_id}"
    if append_clid and contact_id is not None:
        extra["clid"] = str(contact_id)
    return _with_query(link.url, extra)


def record_click(database: Any, code: str) -> str | None:
    """Record a click on ``/r/{code}``; the URL to redirect to, or None for an unknown code."""
    with database.read() as session:
        row = session.execute(
            select(ShortLink, TrackedLink).join(TrackedLink, TrackedLink.id == ShortLink.tracked_link_id)
            .where(ShortLink.code == code, ShortLink.kind == "click")
        ).first()
        if row is None:
            return None
        short, link = row
        setting = get_setting(session, short.organization_id)
    at = utcnow()
    with database.write() as session:
        dm = session.get(DirectMessage, short.direct_message_id)
        if dm is None:
            return None
        recipient = session.get(DirectMessageRecipient, short.recipient_id) if short.recipient_id else None
        click_id = session.execute(insert(TrackingEvent).values(
            organization_id=short.organization_id, event_id=dm.event_id, direct_message_id=dm.id,
            recipient_id=recipient.id if recipient else None, line_uid=recipient.line_uid if recipient else None,
            kind="click", tracked_link_id=link.id, tracked_action_id=None, occurred_at=at,
        ).returning(TrackingEvent.id)).scalar_one()
        if recipient is not None:
            notify.clicked(session, dm, recipient, link.url, at)
        contact_id = recipient.contact_id if recipient else None
    return destination(link, contact_id, bool(setting and setting.append_clid), click_id)


def record_open(database: Any, code: str, index: int) -> str | None:
    """Record the open of the message behind ``/o/{code}/{index}``; the original image URL."""
    with database.read() as session:
        short = session.scalar(select(ShortLink).where(ShortLink.code == code, ShortLink.kind == "open"))
        if short is None or short.recipient_id is None:
            return None
        targets = list(short.targets or [])
        if not 0 <= index < len(targets):
            return None
        opened_before = session.scalar(
            select(DirectMessageRecipient.opened_at).where(DirectMessageRecipient.id == short.recipient_id)
        )
    if opened_before is None:
        at = utcnow()
        with database.write() as session:
            first = session.execute(
                update(DirectMessageRecipient)
                .where(DirectMessageRecipient.id == short.recipient_id, DirectMessageRecipient.opened_at.is_(None))
                .values(opened_at=at)
            ).rowcount  # type: ignore[attr-defined]
            if first:
                dm = session.get(DirectMessage, short.direct_message_id)
                recipient = session.get(DirectMessageRecipient, short.recipient_id)
                if dm is not None and recipient is not None:
                    session.execute(insert(TrackingEvent).values(
                        organization_id=dm.organization_id, event_id=dm.event_id, direct_message_id=dm.id,
                        recipient_id=recipient.id, line_uid=recipient.line_uid, kind="open", tracked_link_id=None,
                        tracked_action_id=None, occurred_at=at,
                    ))
                    notify.opened(session, dm, recipient, at)
    return targets[index]


def record_tap(session: Session, organization_id: int, line_uid: str, event: dict[str, Any],
               occurred_at: datetime) -> bool:
    """A LINE ``message`` (text) or ``postback`` event that is a tap on an action of a tracked
    message sent to this user: count it for the report's ``messages``. In the caller's
    transaction (the LINE webhook's). Returns True when it was attributed."""
    kind = event.get("type")
    if kind == "message":
        message = event.get("message") or {}
        if message.get("type") != "text" or not isinstance(message.get("text"), str):
            return False
        action_kind, value = "message", message["text"]
    elif kind == "postback":
        data = (event.get("postback") or {}).get("data")
        if not isinstance(data, str):
            return False
        action_kind, value = "postback", data
    else:
        return False
    from datetime import timedelta

    since = occurred_at - timedelta(days=TAP_WINDOW_DAYS)
    row = session.execute(
        select(TrackedAction.id, TrackedAction.direct_message_id, TrackedAction.event_id,
               DirectMessageRecipient.id)
        .join(DirectMessageRecipient, DirectMessageRecipient.direct_message_id == TrackedAction.direct_message_id)
        .where(
            DirectMessageRecipient.organization_id == organization_id,
            DirectMessageRecipient.line_uid == line_uid,
            DirectMessageRecipient.status == "sent",
            DirectMessageRecipient.sent_at >= since,
            TrackedAction.kind == action_kind,
            TrackedAction.value == value[:512],
        )
        .order_by(DirectMessageRecipient.sent_at.desc(), DirectMessageRecipient.id.desc())
        .limit(1)
    ).first()
    if row is None:
        return False
    action_id, dm_id, event_id, recipient_id = row
    session.execute(insert(TrackingEvent).values(
        organization_id=organization_id, event_id=event_id, direct_message_id=dm_id, recipient_id=recipient_id,
        line_uid=line_uid, kind="tap", tracked_link_id=None, tracked_action_id=action_id, occurred_at=occurred_at,
    ))
    return True
