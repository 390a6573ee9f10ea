"""Migration 0019: on PostgreSQL a call's recipient lists are compressed with lz4 (and back to
the server's default on downgrade); on SQLite it changes nothing."""

from __future__ import annotations

import json

import sqlalchemy as sa
from alembic import command

from openmaac import migrations

_METHODS = ("SELECT attname, attcompression FROM pg_attribute "
            "WHERE attrelid = 'direct_message_sends'::regclass AND attname IN ('recipient_ids', 'to')")


def test_call_lists_are_lz4_on_postgresql(migration_database_url: str) -> None:
    config = migrations.alembic_config(migration_database_url)
    command.upgrade(config, "0019")
    engine = sa.create_engine(migration_database_url)
    try:
        if engine.dialect.name != "postgresql":
            with engine.connect() as conn:  # nothing to compress: the table is there as before
                assert conn.execute(sa.text("SELECT count(*) FROM direct_message_sends")).scalar() == 0
            command.downgrade(config, "0018")
            return
        with engine.connect() as conn:
            assert dict(conn.execute(sa.text(_METHODS)).all()) == {"recipient_ids": "l", "to": "l"}
            # a big list really is stored with lz4
            conn.execute(sa.text(
                "INSERT INTO organizations (id, name, timezone, region, created_at) "
                "VALUES (1, 'o', 'Asia/Taipei', 'TW', now())"))
            conn.execute(sa.text(
                "INSERT INTO direct_messages (id, organization_id, category, status, tracked, recipient_rows, "
                "total_count, fail_count, created_at, updated_at) "
                "VALUES (1, 1, 'enhanced_multicast', 'pending', false, false, 500, 0, now(), now())"))
            conn.execute(sa.text(
                "INSERT INTO direct_message_sends (direct_message_id, organization_id, method, retry_key, "
                "recipient_ids, \"to\", messages, status, created_at) VALUES (1, 1, 'multicast', 'k', "
                "CAST(:refs AS jsonb), CAST(:to AS jsonb), '[]', 'pending', now())"),
                {"refs": json.dumps([[i, 10_000 + i] for i in range(500)]),
                 "to": json.dumps([f"U{i:032x}" for i in range(500)])})
            assert conn.execute(sa.text(
                "SELECT pg_column_compression(\"to\") FROM direct_message_sends")).scalar() == "lz4"
            conn.commit()
        command.downgrade(config, "0018")
        with engine.connect() as conn:
            assert dict(conn.execute(sa.text(_METHODS)).all()) == {"recipient_ids": "", "to": ""}
    finally:
        engine.dispose()
