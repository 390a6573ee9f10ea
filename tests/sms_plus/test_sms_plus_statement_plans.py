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


def test_postgresql_updates_a_sets_messages_by_their_ids_not_by_scanning_the_table(tenant: Any,
                                                                                   database: Any) -> None:
    """PostgreSQL counts the rows of a JSON or unnested list as a hundred: joined only to them, the
    messages a delivery webhook or a batch of PNP answers updates were read by scanning the whole
    table, with statistics, up to some ten thousand messages. Each statement names the ids again."""
    from sqlalchemy import text

    from openmaac.sms_plus import push

    if database.is_sqlite:
        pytest.skip("PostgreSQL's planner")
    created = tenant.client.post(tenant.api("pnp/setting/"), json={
        "name": "plans", "pnp_enabled": True, "pnp_messages": [{"type": "text", "text": "hi"}],
        "pnp_approval_status": "approved", "fallback_enabled": False})
    assert created.status_code == 201, created.text
    with database.write() as session:
        session.execute(text(
            "INSERT INTO pnp_messages (organization_id, pnp_setting_id, phone_number, phone_hash, hashed_input, params,"
            " status, sms_segments, points_held, sms_attempts, finished, created_at, updated_at, delivery_tag)"
            " SELECT :org, :setting, '+886900000000', 'h', false, '{}', 'pnp_accepted', 1, 0, 0, true, now(), now(),"
            " 'plans-' || :org || '-' || g FROM generate_series(1, 5000) g"), {"org": tenant.id, "setting": created.json()["id"]})
        session.execute(text("ANALYZE pnp_messages"))
    try:
        plans = {}
        with database.lookup() as conn:
            for name, statement, params in [
                    ("deliveries", engine._PG_DELIVERIES, {
                        "org": tenant.id, "now": engine.utcnow(), "released": 0, "entries": "[]", "keys": "[]",
                        "ids": [1, 2], "rows": json.dumps([{"id": 1, "status": "pnp_delivered"}, {"id": 2}])}),
                    ("answers", push._PG_ANSWERS, {"ids": [1, 2], "statuses": ["pnp_accepted"] * 2, "keys": ["a"],
                                                   "b_now": engine.utcnow()})]:
                compiled = statement.compiled_for(conn.dialect, params)
                plans[name] = "\n".join(row[0] for row in conn.exec_driver_sql(
                    "EXPLAIN " + compiled.sql, statement._arguments(compiled, params)))
        for name, plan in plans.items():
            assert "Seq Scan on pnp_messages" not in plan, f"{name}:\n{plan}"
            assert "pk_pnp_messages" in plan, f"{name}:\n{plan}"
    finally:
        with database.write() as session:
            session.execute(text("DELETE FROM pnp_messages WHERE organization_id = :org AND delivery_tag LIKE 'plans-%'"),
                            {"org": tenant.id})
