"""UTCDateTime's SQLite bind: the same text SQLAlchemy's own conversion writes."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import sqlite

from openmaac.db.base import UTCDateTime

_SQLITE = sqlite.dialect()
_BIND = UTCDateTime()._cached_bind_processor(_SQLITE)
_RESULT = UTCDateTime()._cached_result_processor(_SQLITE, None)
# SQLAlchemy's way: the type's own conversion to naive UTC, then DATETIME's formatting
_SQLALCHEMY = sqlite.DATETIME().bind_processor(_SQLITE)


def _by_sqlalchemy(value: datetime) -> str:
    return _SQLALCHEMY(UTCDateTime().process_bind_param(value, _SQLITE))


@given(st.datetimes(min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30),
                    timezones=st.sampled_from([UTC, timezone(timedelta(hours=8)), timezone(timedelta(hours=-5, minutes=-30))])))
def test_sqlite_bind_writes_sqlalchemys_text(value: datetime) -> None:
    assert _BIND(value) == _by_sqlalchemy(value)
    assert _RESULT(_BIND(value)) == value  # and reads back as the same instant


def test_sqlite_bind_pads_and_keeps_zero_microseconds() -> None:
    assert _BIND(datetime(5, 3, 4, 1, 2, 3, tzinfo=UTC)) == "0005-03-04 01:02:03.000000"
    assert _BIND(None) is None


def test_sqlite_bind_refuses_a_naive_datetime() -> None:
    with pytest.raises(ValueError, match="naive"):
        _BIND(datetime(2026, 1, 1))
