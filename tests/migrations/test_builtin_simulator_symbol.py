"""Migration 0014: stored addresses of a local openmaac simulator become "the built-in simulator"
(NULL), resolved from the settings when a client is built; other addresses stay."""

from __future__ import annotations

import sqlalchemy as sa
from alembic import command

from openmaac import migrations
from openmaac.config import get_settings
from openmaac.db.engine import reset_database

LINE_URLS = {
    "http://127.0.0.1:8000/_simulators/line": None,
    "http://localhost:9123/_simulators/line/": None,
    "http://[::1]:8000/_simulators/line": None,
    f"{get_settings().public_base_url}/_simulators/line": None,  # this server's own address
    "https://api.line.me": "https://api.line.me",
    "http://127.0.0.1:8100": "http://127.0.0.1:8100",  # `openmaac simulate`: a simulator of its own
    "http://127.0.0.1:8000/_simulators/twilio": "http://127.0.0.1:8000/_simulators/twilio",
}


def test_local_simulator_addresses_become_the_builtin_symbol(migration_database_url: str) -> None:
    config = migrations.alembic_config(migration_database_url)
    command.upgrade(config, "0012")
    engine = sa.create_engine(migration_database_url)
    with engine.begin() as conn:
        for index, url in enumerate(LINE_URLS, start=1):
            conn.execute(sa.text("INSERT INTO organizations (id, name, timezone, region, created_at) "
                                 "VALUES (:id, :name, 'Asia/Taipei', 'TW', '2026-12-01 00:00:00')"),
                         {"id": index, "name": f"org{index}"})
            conn.execute(sa.text("INSERT INTO line_channels (id, organization_id, channel_id, channel_secret, "
                                 "access_token, api_base_url, created_at) VALUES (:id, :id, :cid, 's', :token, "
                                 ":url, '2026-12-01 00:00:00')"),
                         {"id": index, "cid": str(2_000_000_000 + index), "token": f"t{index}", "url": url})
        whatsapp = '{"base_url": "http://127.0.0.1:8000/_simulators/whatsapp", "phone_number_id": "1"}'
        for org, (provider, base_url, wa) in enumerate([
                ("twilio", "http://127.0.0.1:8000/_simulators/twilio", whatsapp),
                ("mitake", "https://smsapi.mitake.com.tw", '{"base_url": "https://graph.facebook.com"}'),
                ("mitake", "http://localhost:8000/_simulators/twilio", "{}")], start=1):
            conn.execute(sa.text("INSERT INTO sms_provider_configs (organization_id, provider, base_url, credentials, "
                                 "whatsapp, callback_timeout_minutes, retry_window_minutes, whatsapp_wait_minutes, "
                                 "updated_at) VALUES (:org, :provider, :url, '{}', :wa, 1440, 60, 60, "
                                 "'2026-12-01 00:00:00')"),
                         {"org": org, "provider": provider, "url": base_url, "wa": wa})
    engine.dispose()
    reset_database()

    command.upgrade(config, "head")

    engine = sa.create_engine(migration_database_url)
    with engine.connect() as conn:
        stored = dict(conn.execute(sa.text("SELECT id, api_base_url FROM line_channels ORDER BY id")).all())
        configs = conn.execute(sa.text(
            "SELECT base_url, whatsapp FROM sms_provider_configs ORDER BY organization_id")).all()
    engine.dispose()
    reset_database()
    assert [stored[index] for index in range(1, len(LINE_URLS) + 1)] == list(LINE_URLS.values())
    decoded = [(base, wa if isinstance(wa, dict) else __import__("json").loads(wa)) for base, wa in configs]
    assert decoded == [
        (None, {"phone_number_id": "1"}),
        ("https://smsapi.mitake.com.tw", {"base_url": "https://graph.facebook.com"}),
        ("http://localhost:8000/_simulators/twilio", {}),  # a Twilio simulator is not a Mitake gateway
    ]
