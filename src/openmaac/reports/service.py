"""``event/{id}/report/``: opens, clicks, URLs and action taps of an event's direct messages.

Counts come from ``tracking_events`` within ``start_date``..``end_date`` (whole days in the
organisation's zone, both inclusive; either may be left out). ``opens`` counts opened
messages (the first time a recipient's client loaded one of its tracked images; reloads do
not count again); ``clicks`` every click; ``unique_clicks`` distinct contacts who clicked
(null when the event has no personalised links: enhanced multicast tracks per message).
Conversions (``adds_to_cart``, ``transactions``, ``transaction_revenue``) are the CDH
engagement events (``add_to_cart``, ``purchase``) credited to the event's tracked clicks
(``cdh.service.submit_event``), counted by the day they arrived.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import distinct, func, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.cdh.models import EngagementEvent
from openmaac.cdh.service import conversions
from openmaac.links.models import TrackedAction, TrackedLink, TrackingEvent
from openmaac.messaging.events import get_event
from openmaac.messaging.models import DirectMessage
from openmaac.web.errors import field_errors
from openmaac.web.times import end_of_day, start_of_day

DATE_FORMAT_ERROR = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
UTM = ("utm_campaign", "utm_source", "utm_medium", "utm_content")


def parse_dates(start_date: str | None, end_date: str | None) -> tuple[date | None, date | None]:
    errors: dict[str, list[str]] = {}
    parsed: dict[str, date | None] = {}
    for name, value in (("start_date", start_date), ("end_date", end_date)):
        if value is None or value == "":
            parsed[name] = None
            continue
        try:
            if len(value) != 10:
                raise ValueError(value)
            parsed[name] = date.fromisoformat(value)
        except ValueError:
            errors[name] = [DATE_FORMAT_ERROR]
    if errors:
        raise field_errors(errors)
    start, end = parsed["start_date"], parsed["end_date"]
    if start and end and end < start:
        raise field_errors({"end_date": ["end_date must not be earlier than start_date."]})
    return start, end


def _zero() -> dict[str, Any]:
    return {"adds_to_cart": 0, "transactions": 0, "transaction_revenue": 0.0}


def event_report(session: Session, org: OrgContext, event_id: int, start_date: str | None,
                 end_date: str | None) -> dict[str, Any]:
    start, end = parse_dates(start_date, end_date)
    window_start = start_of_day(start, org.tz, field="start_date") if start is not None else None
    window_end = end_of_day(end, org.tz, field="end_date") if end is not None else None
    event = get_event(session, org.id, event_id)
    window = [TrackingEvent.organization_id == org.id, TrackingEvent.event_id == event.id]
    if window_start is not None:
        window.append(TrackingEvent.occurred_at >= window_start)
    if window_end is not None:
        window.append(TrackingEvent.occurred_at < window_end)

    personalised = bool(session.scalar(
        select(func.count()).select_from(DirectMessage).where(
            DirectMessage.organization_id == org.id, DirectMessage.event_id == event.id,
            DirectMessage.tracked.is_(True), DirectMessage.category != "enhanced_multicast")
    ))
    opens = session.scalar(select(func.count(distinct(TrackingEvent.recipient_id))).where(
        *window, TrackingEvent.kind == "open")) or 0
    clicks = session.scalar(select(func.count()).select_from(TrackingEvent).where(
        *window, TrackingEvent.kind == "click")) or 0
    unique_clicks = session.scalar(select(func.count(distinct(TrackingEvent.line_uid))).where(
        *window, TrackingEvent.kind == "click", TrackingEvent.line_uid.is_not(None))) or 0

    # URLs: one row per destination (and UTM) across the event's messages
    link_rows = session.execute(
        select(TrackedLink.id, TrackedLink.url, *(getattr(TrackedLink, n) for n in UTM), DirectMessage.category)
        .join(DirectMessage, DirectMessage.id == TrackedLink.direct_message_id)
        .where(TrackedLink.organization_id == org.id, TrackedLink.event_id == event.id)
        .order_by(TrackedLink.id)
    ).all()
    per_link = dict(session.execute(
        select(TrackingEvent.tracked_link_id, func.count()).where(*window, TrackingEvent.kind == "click")
        .group_by(TrackingEvent.tracked_link_id)).all())
    users_per_link: dict[int, set[str]] = {}
    for link_id, line_uid in session.execute(
        select(TrackingEvent.tracked_link_id, TrackingEvent.line_uid).where(
            *window, TrackingEvent.kind == "click", TrackingEvent.line_uid.is_not(None)).distinct()
    ):
        users_per_link.setdefault(int(link_id or 0), set()).add(str(line_uid))
    urls: dict[tuple[Any, ...], dict[str, Any]] = {}
    url_users: dict[tuple[Any, ...], set[str]] = {}
    for link_id, url, campaign, source, medium, content, category in link_rows:
        key = (url, campaign, source, medium, content)
        row = urls.get(key)
        if row is None:
            row = urls[key] = {"id": link_id, "link": link_id, "url": url, "utm_campaign": campaign,
                               "utm_source": source, "utm_medium": medium, "utm_content": content, "clicks": 0,
                               "unique_clicks": None, **_zero(), "tags": []}
            url_users[key] = set()
        row["clicks"] += int(per_link.get(link_id) or 0)
        if category != "enhanced_multicast":
            url_users[key] |= users_per_link.get(link_id, set())
            row["unique_clicks"] = len(url_users[key])

    conversion_window = []
    if window_start is not None:
        conversion_window.append(EngagementEvent.occurred_at >= window_start)
    if window_end is not None:
        conversion_window.append(EngagementEvent.occurred_at < window_end)
    converted, converted_per_link = conversions(session, org.id, event.id, conversion_window)
    link_keys = {link_id: (url, campaign, source, medium, content)
                 for link_id, url, campaign, source, medium, content, _category in link_rows}
    for link_id, counts in converted_per_link.items():
        link_key = link_keys.get(link_id)
        if link_key is None:
            continue
        row = urls[link_key]
        row["adds_to_cart"] += counts["adds_to_cart"]
        row["transactions"] += counts["transactions"]
        row["transaction_revenue"] = round(row["transaction_revenue"] + counts["transaction_revenue"], 4)

    # message / postback actions: one row per keyword
    action_rows = session.execute(
        select(TrackedAction.id, TrackedAction.kind, TrackedAction.value, TrackedAction.keyword)
        .where(TrackedAction.organization_id == org.id, TrackedAction.event_id == event.id)
        .order_by(TrackedAction.id)
    ).all()
    per_action = dict(session.execute(
        select(TrackingEvent.tracked_action_id, func.count()).where(*window, TrackingEvent.kind == "tap")
        .group_by(TrackingEvent.tracked_action_id)).all())
    messages: dict[tuple[str, str], dict[str, Any]] = {}
    for action_id, kind, value, keyword in action_rows:
        row = messages.get((kind, value))
        if row is None:
            row = messages[(kind, value)] = {"id": action_id, "message": keyword, "clicks": 0, "tags": []}
        row["clicks"] += int(per_action.get(action_id) or 0)

    total = {"opens": int(opens), "clicks": int(clicks),
             "unique_clicks": int(unique_clicks) if personalised else None, **converted}
    return {"id": event.id, "report": {"total": total, "urls": list(urls.values()),
                                       "messages": list(messages.values())}}
