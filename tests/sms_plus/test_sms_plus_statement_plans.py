"""The prebuilt statements of SMS+'s hot paths are planned by the indexes meant for them.

SQLite keeps no statistics: given ``organization_id = ? AND delivery_tag IN (...)`` it walked
the organisation's messages by the (organization_id, ...) index, a scan per LINE delivery
webhook that grows with every campaign. These check the plans SQLite chose."""

from __future__ import annotations

import json
from typing import Any

import pytest

from openmaac.sms_plus import engine


def _sqlite_plan(database: Any, statement: Any, params: dict[str, Any]) -> str:
    if not database.is_sqlite:
        pytest.skip("SQLite's planner, without statistics (PostgreSQL plans by its statistics)")
    with database.lookup() as conn:
        compiled = statement.compiled_for(conn.dialect, params)
        return "\n".join(str(row) for row in conn.exec_driver_sql(
            "EXPLAIN QUERY PLAN " + compiled.sql, statement._arguments(compiled, params)))


def test_delivery_tags_are_looked_up_by_their_unique_index(database: Any) -> None:
    plan = _sqlite_plan(database, engine._BY_TAGS, {"org": 1, "tags": json.dumps(["openmaac-pnp-a", "b"])})
    assert "delivery_tag=?" in plan and "organization_id=?" not in plan, plan


def test_messages_by_id_and_waiting_timers_by_key_use_their_indexes(database: Any) -> None:
    assert "PRIMARY KEY" in _sqlite_plan(database, engine._BY_IDS[(False, False)], {"ids": json.dumps([1, 2])})
    assert "unique_key=?" in _sqlite_plan(database, engine._DELETE_READY_BY_ONE_KEY, {"key": "a"})
