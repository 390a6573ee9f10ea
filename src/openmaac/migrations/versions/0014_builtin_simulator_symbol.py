"""The built-in simulators are named, not addressed: ``line_channels.api_base_url`` may be NULL,
meaning "the LINE simulator this server hosts", resolved from the operator's settings
(``OPENMAAC_PUBLIC_BASE_URL``) each time a client is built, as an SMS gateway's empty
``base_url`` already meant "the built-in simulator".

A stored URL of a simulator hosted by openmaac on this machine (``http://127.0.0.1:<port>/
_simulators/line``, ``localhost`` or ``[::1]``, or this server's own public address) becomes
NULL: it was written by whichever process created the organisation, with that process's port,
and led nowhere once the server ran on another one. The same for the SMS gateways' and
WhatsApp's stored base URLs that point at a local openmaac simulator.

Revision ID: 0014
Revises: 0013
"""
from __future__ import annotations

import re
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

# a copy: a migration must not change with the code
_LOCAL_SIMULATOR = re.compile(
    r"^https?://(?:127\.0\.0\.1|localhost|\[::1\])(?::\d+)?/_simulators/(?P<name>[a-z]+)/?$", re.IGNORECASE)


def _own_simulator(name: str) -> str | None:
    try:
        from openmaac.config import get_settings

        return get_settings().public_base_url.rstrip("/") + f"/_simulators/{name}"
    except Exception:  # settings unreadable (a bare Alembic run): loopback URLs only
        return None


def _builtin(url: Any, name: str) -> bool:
    if not isinstance(url, str):
        return False
    cleaned = url.strip().rstrip("/")
    match = _LOCAL_SIMULATOR.match(cleaned)
    return (match is not None and match.group("name").lower() == name) or cleaned == _own_simulator(name)


def upgrade() -> None:
    with op.batch_alter_table("line_channels") as batch_op:
        batch_op.alter_column("api_base_url", existing_type=sa.String(512), nullable=True)
    bind = op.get_bind()
    channels = sa.table("line_channels", sa.column("id", sa.BigInteger), sa.column("api_base_url", sa.String))
    for row_id, url in bind.execute(sa.select(channels.c.id, channels.c.api_base_url)).all():
        if _builtin(url, "line"):
            bind.execute(channels.update().where(channels.c.id == row_id).values(api_base_url=None))
    configs = sa.table("sms_provider_configs", sa.column("organization_id", sa.BigInteger),
                       sa.column("provider", sa.String), sa.column("base_url", sa.String),
                       sa.column("whatsapp", sa.JSON().with_variant(postgresql.JSONB(), "postgresql")))
    for org_id, provider, base_url, whatsapp in bind.execute(
            sa.select(configs.c.organization_id, configs.c.provider, configs.c.base_url, configs.c.whatsapp)).all():
        changes: dict[str, Any] = {}
        if _builtin(base_url, str(provider)):
            changes["base_url"] = None
        if isinstance(whatsapp, dict) and _builtin(whatsapp.get("base_url"), "whatsapp"):
            changes["whatsapp"] = {k: v for k, v in whatsapp.items() if k != "base_url"}
        if changes:
            bind.execute(configs.update().where(configs.c.organization_id == org_id).values(**changes))


def downgrade() -> None:
    # the former schema needs an address: this server's simulator as the settings give it now
    channels = sa.table("line_channels", sa.column("api_base_url", sa.String))
    address = _own_simulator("line") or "http://127.0.0.1:8000/_simulators/line"
    op.execute(channels.update().where(channels.c.api_base_url.is_(None)).values(api_base_url=address))
    with op.batch_alter_table("line_channels") as batch_op:
        batch_op.alter_column("api_base_url", existing_type=sa.String(512), nullable=False)
