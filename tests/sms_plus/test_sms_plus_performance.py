"""SMS+ list performance (the console's SMS+ list): every message counts on the organisation's
local day it was triggered, daylight-saving changes included, on SQLite (offsets computed
in Python) and PostgreSQL (its time-zone database); the low-balance threshold."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from typing import Any

from openmaac.auth.service import OrgContext

SCENARIO = {"name": "reminder", "pnp_enabled": False, "pnp_messages": [], "fallback_enabled": True,
            "sms_text": "hi", "fallback_period": 1}


def _scenario(tenant: Any) -> int:
    response = tenant.client.post(tenant.api("pnp/setting/"), json=SCENARIO)
    assert response.status_code == 201, response.text
    return int(response.json()["id"])


def _insert(database: Any, tenant: Any, setting_id: int, created: list[datetime], **fields: Any) -> None:
    from openmaac.sms_plus.models import PnpMessage

    with database.write() as session:
        for at in created:
            session.add(PnpMessage(
                organization_id=tenant.id, pnp_setting_id=setting_id, phone_number="+15550000000",
                phone_hash="0" * 64, hashed_input=False, params={}, status="sms_delivered",
                sms_status="sms_delivered", sms_segments=0, points_held=0, sms_attempts=0, finished=True,
                created_at=at, updated_at=at, **fields))


def test_days_follow_the_organisations_zone_across_a_daylight_saving_change(tenant: Any, database: Any) -> None:
    from openmaac.sms_plus import performance

    setting_id = _scenario(tenant)
    # New York moves from UTC-5 to UTC-4 at 2026-03-08 07:00 UTC
    _insert(database, tenant, setting_id, [
        datetime(2026, 3, 8, 4, 30, tzinfo=UTC),  # 3/7 23:30 EST
        datetime(2026, 3, 8, 6, 30, tzinfo=UTC),  # 3/8 01:30 EST
        datetime(2026, 3, 9, 4, 30, tzinfo=UTC),  # 3/9 00:30 EDT (3/8 23:30 at the winter offset)
        datetime(2026, 3, 11, 4, 30, tzinfo=UTC),  # 3/11 00:30 EDT: after the range
    ])
    org = OrgContext(id=tenant.id, name=tenant.name, timezone="America/New_York", region="US")
    with database.read() as session:
        result = performance.list_performance(session, org, date(2026, 3, 6), date(2026, 3, 10))
    assert [(day.isoformat(), counts.triggers, counts.sms_delivered) for day, counts in result.days] == [
        ("2026-03-06", 0, 0), ("2026-03-07", 1, 1), ("2026-03-08", 1, 1), ("2026-03-09", 1, 1), ("2026-03-10", 0, 0)]
    assert [(s.id, s.counts.triggers) for s in result.scenarios] == [(setting_id, 3)]

    taipei = OrgContext(id=tenant.id, name=tenant.name, timezone="Asia/Taipei", region="TW")
    with database.read() as session:
        result = performance.list_performance(session, taipei, date(2026, 3, 8), date(2026, 3, 11))
    # the same instants in Taipei (UTC+8): 3/8 12:30, 3/8 14:30, 3/9 12:30, 3/11 12:30
    assert [counts.triggers for _day, counts in result.days] == [2, 1, 0, 1]


def test_offset_changes_are_located_to_the_second() -> None:
    from zoneinfo import ZoneInfo

    from openmaac.sms_plus.performance import _offset_changes

    zone = ZoneInfo("America/New_York")
    changes = _offset_changes(zone, datetime(2026, 3, 1, 5, tzinfo=UTC), datetime(2026, 11, 30, 5, tzinfo=UTC))
    assert changes == [(datetime(2026, 3, 1, 5, tzinfo=UTC), timedelta(hours=-5)),
                       (datetime(2026, 3, 8, 7, tzinfo=UTC), timedelta(hours=-4)),
                       (datetime(2026, 11, 1, 6, tzinfo=UTC), timedelta(hours=-5))]
    assert _offset_changes(ZoneInfo("Asia/Taipei"), datetime(2026, 1, 1, tzinfo=UTC),
                           datetime(2027, 1, 1, tzinfo=UTC)) == [(datetime(2026, 1, 1, tzinfo=UTC), timedelta(hours=8))]


def test_the_balance_is_low_below_a_weeks_use_or_1000_points(tenant: Any, database: Any) -> None:
    from openmaac.sms_plus import performance, points

    with database.write() as session:
        points.top_up(session, tenant.id, 5000)
    with database.read() as session:
        status = performance.balance_status(session, tenant.id)
    assert (status.balance, status.used_recently, status.threshold, status.low) == (5000, 0, 1000, False)
    with database.write() as session:
        assert points.hold(session, tenant.id, 3000)
        points.release_many(session, tenant.id, [(None, 500)])
    with database.read() as session:
        status = performance.balance_status(session, tenant.id)
    # 2,500 used this week: 2,500 left is below a week's use
    assert (status.balance, status.used_recently, status.threshold, status.low) == (2500, 2500, 2500, False)
    with database.write() as session:
        assert points.hold(session, tenant.id, 1)
    with database.read() as session:
        status = performance.balance_status(session, tenant.id)
    assert (status.balance, status.threshold, status.low) == (2499, 2501, True)
    with database.read() as session:  # a week later the holds no longer count: the floor applies
        later = performance.balance_status(session, tenant.id, now=datetime.now(UTC) + timedelta(days=8))
    assert (later.threshold, later.low) == (1000, False)


def test_parse_range_defaults_and_limits() -> None:
    from zoneinfo import ZoneInfo

    import pytest

    from openmaac.sms_plus.performance import RangeError, parse_range

    zone = ZoneInfo("Asia/Taipei")
    today = date(2026, 8, 10)
    assert parse_range(None, None, zone, today) == (date(2026, 8, 4), today)
    assert parse_range("2026-01-01", "2026-12-31", zone, today) == (date(2026, 1, 1), date(2026, 12, 31))
    for start, end in (("2026-08-05", "2026-08-01"), ("2025-01-01", "2026-08-01"), ("08/01/2026", None)):
        with pytest.raises(RangeError):
            parse_range(start, end, zone, today)
