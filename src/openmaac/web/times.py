"""Time rendering and parsing: stored in UTC, shown in the organisation's zone."""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

from openmaac.web.errors import field_errors

# What MAAC answers for a tag that never expires.
PERMANENT_EXPIRY = datetime(9999, 12, 31, 23, 59, 59)


@lru_cache(maxsize=64)
def zone(name: str) -> ZoneInfo:
    return ZoneInfo(name)


def render(value: datetime | None, tz: ZoneInfo) -> str | None:
    """ISO 8601 with the organisation's offset, e.g. ``2020-01-13T18:58:21.604283+08:00``."""
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(tz).isoformat()


def render_permanent(tz: ZoneInfo) -> str:
    """``9999-12-31T23:59:59+08:00``: the far-future expiry, in local wall time (no overflow)."""
    offset = datetime.now(tz).utcoffset() or timedelta(0)
    return PERMANENT_EXPIRY.replace(tzinfo=ZoneInfo("UTC")).isoformat().replace("+00:00", _offset(offset))


def _offset(delta: timedelta) -> str:
    minutes = int(delta.total_seconds() // 60)
    sign = "+" if minutes >= 0 else "-"
    minutes = abs(minutes)
    return f"{sign}{minutes // 60:02d}:{minutes % 60:02d}"


# Django REST framework's DateTimeField text for a value whose zone conversion overflows
# (e.g. 0001-01-01T00:00+08:00 is before year 1 in UTC); dates get the same words.
DATETIME_OUT_OF_RANGE = "Datetime value out of range."
DATE_OUT_OF_RANGE = "Date value out of range."
DATETIME_FORMAT_ERROR = ("Datetime has wrong format. Use one of these formats instead: "
                         "YYYY-MM-DDThh:mm[:ss[.uuuuuu]][+HH:MM|-HH:MM|Z].")
_ISO_DATETIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:?\d{2})?$")


def start_of_day(day: date, tz: ZoneInfo, *, field: str = "date") -> datetime:
    """The first instant of ``day`` in ``tz``, in UTC; a day whose start is not a UTC
    datetime (0001-01-01 east of UTC) is the field's 400, not an OverflowError."""
    try:
        return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)
    except OverflowError:
        raise field_errors({field: [DATE_OUT_OF_RANGE]}) from None


def end_of_day(day: date, tz: ZoneInfo, *, field: str = "date") -> datetime:
    """Exclusive end: the first instant of the next day (none after 9999-12-31: a 400)."""
    try:
        return datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
    except OverflowError:
        raise field_errors({field: [DATE_OUT_OF_RANGE]}) from None


def parse_datetime(value: str | None, tz: ZoneInfo) -> datetime | str:
    """A client datetime in the formats DRF accepts (no offset: the organisation's zone),
    as an aware datetime that converts to UTC, or the DRF error text for the field."""
    text = value or ""
    # a raw "+" in a query string arrives as a space: that is the format error, not a guess
    if not _ISO_DATETIME.match(text):
        return DATETIME_FORMAT_ERROR
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return DATETIME_FORMAT_ERROR
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=tz)
    try:
        parsed.astimezone(UTC)  # what the database column stores
    except OverflowError:
        return DATETIME_OUT_OF_RANGE
    return parsed
