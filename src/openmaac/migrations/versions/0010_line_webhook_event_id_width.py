"""line_webhook_events.webhook_event_id: 255 characters instead of 64, so that an id is stored
whole (it was cut to 64, and an event whose id shared that prefix was dropped as a redelivery).

Revision ID: 0010
Revises: 0009
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # SQLite does not enforce VARCHAR lengths: nothing to change there, and rebuilding a table
    # of every event ever received for a declaration would buy nothing
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("line_webhook_events", "webhook_event_id", type_=sa.String(255),
                        existing_type=sa.String(64), existing_nullable=False)


def downgrade() -> None:
    # ids longer than 64 characters cannot be kept by the former schema (cutting them could
    # make two rows one): those events are removed first
    events = sa.table("line_webhook_events", sa.column("webhook_event_id", sa.String))
    op.execute(events.delete().where(sa.func.length(events.c.webhook_event_id) > 64))
    if op.get_bind().dialect.name == "postgresql":
        op.alter_column("line_webhook_events", "webhook_event_id", type_=sa.String(64),
                        existing_type=sa.String(255), existing_nullable=False)
