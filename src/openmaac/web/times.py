"""Time rendering and parsing: stored in UTC, shown in the organisation's zone."""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo

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


def start_of_day(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def end_of_day(day: date, tz: ZoneInfo) -> datetime:
    """Exclusive end: the first instant of the next day."""
    return datetime.combine(day + timedelta(days=1), time.min, tzinfo=tz).astimezone(UTC)
