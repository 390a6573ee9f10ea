"""SMS+ list performance and the points balance as the console's SMS+ list shows them.

Performance, per scenario and per day of a chosen range: total triggers (messages created),
delivered by LINE (a LINE push or a LINE notification message delivered) and forwarded SMS
delivered. Every message counts on the day it was *triggered* (created), in the
organisation's time zone, whatever day its LINE or SMS delivery happened: a message triggered
on 8/3 whose SMS went out on 8/4 counts on 8/3. One grouped query over the messages gives
every (day, scenario) cell; the numbers are live (no hourly snapshot).

The balance is "low" below ``max(LOW_BALANCE_FLOOR, the points used in the last
USAGE_WINDOW_DAYS days)``: a week's worth of sending should still fit.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import case, func, literal_column, or_, select
from sqlalchemy.orm import Session

from openmaac.auth.service import OrgContext
from openmaac.db.base import utcnow
from openmaac.sms_plus import points
from openmaac.sms_plus import service as svc
from openmaac.sms_plus.models import PnpMessage, PnpSetting, SmsPointEntry

MAX_RANGE_DAYS = 366
DEFAULT_RANGE_DAYS = 7
LOW_BALANCE_FLOOR = 1000
USAGE_WINDOW_DAYS = 7


@dataclass
class Counts:
    triggers: int = 0
    line_delivered: int = 0
    sms_delivered: int = 0

    def add(self, other: Counts) -> None:
        self.triggers += other.triggers
        self.line_delivered += other.line_delivered
        self.sms_delivered += other.sms_delivered


@dataclass
class ScenarioPerformance:
    id: int
    name: str
    status: str
    channels: list[str]
    counts: Counts


@dataclass
class Performance:
    start: date
    end: date
    scenario_id: int | None
    days: list[tuple[date, Counts]]  # every day of the range, zeros included
    scenarios: list[ScenarioPerformance]  # every scenario, its totals over the range
    totals: Counts = field(default_factory=Counts)

    def chart_data(self) -> dict[str, Any]:
        return {"labels": [day.isoformat() for day, _ in self.days],
                "triggers": [c.triggers for _, c in self.days],
                "line_delivered": [c.line_delivered for _, c in self.days],
                "sms_delivered": [c.sms_delivered for _, c in self.days]}


class RangeError(ValueError):
    """A time range the list cannot show (message in English, for the form)."""


def parse_range(raw_start: str | None, raw_end: str | None, tz: ZoneInfo, today: date | None = None
                ) -> tuple[date, date]:
    """``start``/``end`` (YYYY-MM-DD, both included) of the list's time range; the last
    DEFAULT_RANGE_DAYS days by default; at most MAX_RANGE_DAYS days."""
    today = today or datetime.now(tz).date()
    try:
        end = date.fromisoformat(raw_end) if raw_end else today
        start = date.fromisoformat(raw_start) if raw_start else end - timedelta(days=DEFAULT_RANGE_DAYS - 1)
    except ValueError:
        raise RangeError("Enter dates as YYYY-MM-DD.") from None
    if start > end:
        raise RangeError("The start date must not be after the end date.")
    if (end - start).days + 1 > MAX_RANGE_DAYS:
        raise RangeError(f"Choose a range of at most {MAX_RANGE_DAYS} days.")
    return start, end


def _utc_start_of(day: date, tz: ZoneInfo) -> datetime:
    return datetime.combine(day, time.min, tzinfo=tz).astimezone(UTC)


def _offset_changes(tz: ZoneInfo, lo: datetime, hi: datetime) -> list[tuple[datetime, timedelta]]:
    """The UTC offsets in force from ``lo`` to ``hi``: ``[(from_utc, offset), ...]``, the first
    from ``lo``; a change (daylight saving) found between two midnights is located to the second."""

    def offset(at: datetime) -> timedelta:
        value = at.astimezone(tz).utcoffset()
        return value if value is not None else timedelta(0)

    changes = [(lo, offset(lo))]
    cursor = lo
    while cursor < hi:
        step = min(cursor + timedelta(days=1), hi)
        if offset(step) != changes[-1][1]:
            before, after = cursor, step  # offset(before) is the old one, offset(after) the new one
            while (after - before) > timedelta(seconds=1):
                middle = before + (after - before) / 2
                if offset(middle) == changes[-1][1]:
                    before = middle
                else:
                    after = middle
            changes.append((after.replace(microsecond=0), offset(after)))
        cursor = step
    return changes


def local_day(session: Session, column: Any, tz: ZoneInfo, lo: datetime, hi: datetime) -> Any:
    """SQL for the organisation's calendar day of a UTC timestamp ``column`` (between ``lo`` and
    ``hi``): PostgreSQL converts with its time-zone database; SQLite, which has none, adds the
    offset in force (a CASE over the range's daylight-saving changes, usually none)."""
    if session.get_bind().dialect.name == "postgresql":
        return func.date(func.timezone(tz.key, column))
    changes = _offset_changes(tz, lo, hi)

    def modifier(delta: timedelta) -> str:
        return f"{int(delta.total_seconds()) // 60:+d} minutes"

    if len(changes) == 1:
        return func.date(column, modifier(changes[0][1]))
    whens = [(column < changes[i + 1][0], modifier(changes[i][1])) for i in range(len(changes) - 1)]
    return func.date(column, case(*whens, else_=modifier(changes[-1][1])))


def _as_date(value: Any) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value)[:10])


def channels_of(setting: PnpSetting) -> list[str]:
    names = [("line_push_enabled", "LINE push"), ("pnp_enabled", "LINE notification"),
             ("whatsapp_enabled", "WhatsApp"), ("fallback_enabled", "SMS")]
    return [label for attribute, label in names if getattr(setting, attribute)]


def list_performance(session: Session, org: OrgContext, start: date, end: date,
                     scenario_id: int | None = None) -> Performance:
    """Every scenario of the organisation with its counts over ``start``..``end`` (local days,
    both included), and the counts per day (of one scenario, or all): two queries whatever
    the number of scenarios and days."""
    tz = org.tz
    lo, hi = _utc_start_of(start, tz), _utc_start_of(end + timedelta(days=1), tz)
    day = local_day(session, PnpMessage.created_at, tz, lo, hi).label("local_day")
    line = or_(PnpMessage.line_push_status == svc.LINE_PUSH_DELIVERED, PnpMessage.pnp_status == svc.PNP_DELIVERED)
    rows = session.execute(
        select(day, PnpMessage.pnp_setting_id, func.count(),
               func.coalesce(func.sum(case((line, 1), else_=0)), 0),
               func.coalesce(func.sum(case((PnpMessage.sms_status == svc.SMS_DELIVERED, 1), else_=0)), 0))
        .where(PnpMessage.organization_id == org.id, PnpMessage.created_at >= lo, PnpMessage.created_at < hi)
        # by the label: the day expression carries bound parameters, repeated it would not match
        .group_by(literal_column("local_day"), PnpMessage.pnp_setting_id)).all()
    per_day: dict[date, Counts] = {}
    per_scenario: dict[int, Counts] = {}
    for raw_day, setting_id, triggers, line_count, sms_count in rows:
        counts = Counts(int(triggers), int(line_count), int(sms_count))
        per_scenario.setdefault(setting_id, Counts()).add(counts)
        if scenario_id is None or setting_id == scenario_id:
            per_day.setdefault(_as_date(raw_day), Counts()).add(counts)
    settings = session.scalars(select(PnpSetting).where(PnpSetting.organization_id == org.id)
                               .order_by(PnpSetting.id)).all()
    scenarios = [ScenarioPerformance(id=s.id, name=s.name, status=s.status, channels=channels_of(s),
                                     counts=per_scenario.get(s.id, Counts())) for s in settings]
    days = [(start + timedelta(days=i), per_day.get(start + timedelta(days=i), Counts()))
            for i in range((end - start).days + 1)]
    totals = Counts()
    for _day, counts in days:
        totals.add(counts)
    return Performance(start=start, end=end, scenario_id=scenario_id, days=days, scenarios=scenarios, totals=totals)


@dataclass
class BalanceStatus:
    balance: int
    used_recently: int  # points charged over the last USAGE_WINDOW_DAYS days (holds less releases)
    threshold: int

    @property
    def low(self) -> bool:
        return self.balance < self.threshold


def balance_status(session: Session, organization_id: int, now: datetime | None = None) -> BalanceStatus:
    since = (now or utcnow()) - timedelta(days=USAGE_WINDOW_DAYS)
    net = session.scalar(select(func.coalesce(func.sum(SmsPointEntry.amount), 0)).where(
        SmsPointEntry.organization_id == organization_id, SmsPointEntry.kind.in_(("hold", "release")),
        SmsPointEntry.created_at >= since))
    used = max(-int(net or 0), 0)
    return BalanceStatus(balance=points.balance(session, organization_id), used_recently=used,
                         threshold=max(LOW_BALANCE_FLOOR, used))
