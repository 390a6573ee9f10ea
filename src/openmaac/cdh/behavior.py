"""MAAC OpenAPI "Contact Tracking" (``/openapi/v1/behavior/download/{date}/{kind}/``): one
day's website behaviour of the contacts who arrived through a tracked link, as CSV.

The source is the CDH engagement events (``POST /cdh/v1/engagement/event``). An event belongs
to a contact when its ``utm_term`` is ``lm:<click id>`` of a tracked click of the same
organisation that knows its contact (``line_uid``) and it arrived within ATTRIBUTION_WINDOW
of the click; ``add_to_cart`` and ``purchase`` use the attribution stored when they arrived
(so they agree with the event report). The utm columns are the clicked link's. One row per
event (product: per event and item); ``time`` and ``ingestion_timestamp`` are both the
moment the event arrived, since engagement events carry no time of their own.
"""

from __future__ import annotations

import codecs
import csv
import io
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import BigInteger, and_, case, cast, func, select

from openmaac.cdh.models import EngagementEvent
from openmaac.cdh.service import ATTRIBUTION_WINDOW, CONVERSION_BEHAVIORS
from openmaac.db.engine import get_database
from openmaac.links.models import TrackedLink, TrackingEvent
from openmaac.web.errors import field_errors
from openmaac.web.times import end_of_day, render, start_of_day

DATE_FORMAT_ERROR = "Date has wrong format. Use one of these formats instead: YYYY-MM-DD."
STREAM_BATCH = 1000
# a click may be recorded a moment after the site already reported the landing
CLOCK_SKEW = timedelta(minutes=5)
# "lm:" and at most 18 digits: every such number fits a BIGINT, so the cast never fails
MAX_CLICK_TERM = 21

LEADING = ("line_uid", "utm_campaign", "utm_source", "utm_medium", "utm_content", "time")
COLUMNS: dict[str, tuple[str, ...]] = {
    "pageview": (*LEADING, "page_path", "page_title", "page_views", "views_per_session", "entrances",
                 "avg_time_on_page", "exits", "ingestion_timestamp"),
    "product": (*LEADING, "product_name", "product_sku", "adds_to_cart", "removes_from_cart", "item_revenue",
                "item_quantity", "checkouts", "list_clicks", "list_views", "ingestion_timestamp"),
    "transaction": (*LEADING, "transactions", "revenue", "ingestion_timestamp"),
}
# the product metric each behaviour counts (GA4's event names for list views and clicks)
PRODUCT_COUNTERS = {"add_to_cart": "adds_to_cart", "remove_from_cart": "removes_from_cart",
                    "begin_checkout": "checkouts", "select_item": "list_clicks", "view_item_list": "list_views",
                    "purchase": None}
BEHAVIORS: dict[str, tuple[str, ...]] = {
    "pageview": ("page_view",), "product": tuple(PRODUCT_COUNTERS), "transaction": ("purchase",)}


def parse_day(value: str) -> date:
    try:
        if len(value) != 10:
            raise ValueError(value)
        return date.fromisoformat(value)
    except ValueError:
        raise field_errors({"date": [DATE_FORMAT_ERROR]}) from None


def day_window(value: str, tz: ZoneInfo) -> tuple[datetime, datetime]:
    """The day's first instant and the next day's, in UTC; a malformed date is a 400."""
    day = parse_day(value)
    return start_of_day(day, tz), end_of_day(day, tz)


def _click_id() -> Any:
    term = EngagementEvent.utm_term
    return case(
        (EngagementEvent.behavior.in_(CONVERSION_BEHAVIORS), EngagementEvent.click_id),
        (and_(term.like("lm:%"), func.length(term) <= MAX_CLICK_TERM), cast(func.substr(term, 4), BigInteger)),
        else_=None,
    )


def _query(organization_id: int, kind: str, start: datetime, end: datetime) -> Any:
    click_id = _click_id()
    return (
        select(EngagementEvent.behavior, EngagementEvent.params, EngagementEvent.revenue,
               EngagementEvent.occurred_at, TrackingEvent.line_uid, TrackingEvent.occurred_at,
               TrackedLink.utm_campaign, TrackedLink.utm_source, TrackedLink.utm_medium, TrackedLink.utm_content)
        .join(TrackingEvent, and_(TrackingEvent.id == click_id, TrackingEvent.organization_id == organization_id,
                                  TrackingEvent.kind == "click", TrackingEvent.line_uid.is_not(None)))
        .outerjoin(TrackedLink, TrackedLink.id == TrackingEvent.tracked_link_id)
        .where(EngagementEvent.organization_id == organization_id, EngagementEvent.behavior.in_(BEHAVIORS[kind]),
               EngagementEvent.occurred_at >= start, EngagementEvent.occurred_at < end)
        .order_by(EngagementEvent.occurred_at, EngagementEvent.id)
    )


def _utc(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value


def _number(value: Any) -> str:
    try:
        number = round(float(value), 4)
    except (TypeError, ValueError):
        return "0"
    return str(int(number)) if number.is_integer() else str(number)


def _text(value: Any) -> str:
    return "" if value is None else str(value)


def _items(params: Any) -> list[dict[str, Any]]:
    items = params.get("items") if isinstance(params, dict) else None
    return [item for item in items if isinstance(item, dict)] if isinstance(items, list) else []


def rows(kind: str, behavior: str, params: Any, revenue: Any) -> Iterator[list[str]]:
    """The metric columns of one event's rows (between ``time`` and ``ingestion_timestamp``)."""
    if kind == "pageview":
        page = params if isinstance(params, dict) else {}
        # sessions, entrances, exits and time on page need a session model the events lack
        yield [_text(page.get("page_path")), _text(page.get("page_title")), "1", "0", "0", "0", "0"]
    elif kind == "transaction":
        yield ["1", _number(revenue)]
    else:
        counter = PRODUCT_COUNTERS[behavior]
        for item in _items(params):
            metrics = dict.fromkeys(COLUMNS["product"][8:-1], "0")
            if counter is not None:
                metrics[counter] = "1"
            else:  # purchase: units and revenue of the item
                quantity = item.get("quantity", 1)
                metrics["item_quantity"] = _number(quantity)
                try:
                    metrics["item_revenue"] = _number(float(item.get("price") or 0) * float(quantity or 0))
                except (TypeError, ValueError):
                    pass
            yield [_text(item.get("item_name")), _text(item.get("item_id")), *metrics.values()]


def behavior_csv(organization_id: int, tz: ZoneInfo, kind: str, start: datetime, end: datetime) -> Iterator[bytes]:
    """The CSV (UTF-8 with BOM, as every CSV openmaac writes), streamed from one query."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(COLUMNS[kind])
    yield codecs.BOM_UTF8 + buffer.getvalue().encode()
    with get_database().read() as session:
        result = session.execute(_query(organization_id, kind, start, end).execution_options(
            stream_results=True, yield_per=STREAM_BATCH))
        for batch in result.partitions(STREAM_BATCH):
            buffer.seek(0)
            buffer.truncate()
            for behavior, params, revenue, arrived, line_uid, clicked, *utm in batch:
                arrived, clicked = _utc(arrived), _utc(clicked)
                if behavior not in CONVERSION_BEHAVIORS and not (
                        clicked - CLOCK_SKEW <= arrived <= clicked + ATTRIBUTION_WINDOW):
                    continue
                at = render(arrived, tz)
                for metrics in rows(kind, behavior, params, revenue):
                    writer.writerow([line_uid, *(_text(u) for u in utm), at, *metrics, at])
            if buffer.tell():
                yield buffer.getvalue().encode()


def filename(day: str, kind: str) -> str:
    return f"{day}_{kind}.csv"
