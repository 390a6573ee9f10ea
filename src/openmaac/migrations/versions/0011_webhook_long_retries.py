"""webhooks: a long retry schedule (deliveries waiting minutes to hours: status "waiting",
found through an index on their due time) and endpoint health (failing_since, disabled_at,
disabled_reason). Queued deliveries get the new attempt budget (14 instead of 4).

Revision ID: 0011
Revises: 0010
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmaac.db.base

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None

OLD_MAX_ATTEMPTS = 4
NEW_MAX_ATTEMPTS = 14


def upgrade() -> None:
    # ADD COLUMN in place, not batch mode: a batch rebuild of webhook_endpoints on SQLite would
    # drop the table and, with foreign keys on, its deliveries with it (ON DELETE CASCADE).
    op.add_column("webhook_endpoints", sa.Column("failing_since", openmaac.db.base.UTCDateTime(), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("disabled_at", openmaac.db.base.UTCDateTime(), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("disabled_reason", sa.String(length=600), nullable=True))
    op.create_index("ix_webhook_deliveries_endpoint_status_next", "webhook_deliveries",
                    ["endpoint_id", "status", "next_attempt_at"], unique=False)
    deliveries = sa.table("webhook_deliveries", sa.column("status", sa.String),
                          sa.column("max_attempts", sa.Integer))
    op.execute(deliveries.update().where(deliveries.c.status == "pending",
                                         deliveries.c.max_attempts == OLD_MAX_ATTEMPTS)
               .values(max_attempts=NEW_MAX_ATTEMPTS))


def downgrade() -> None:
    deliveries = sa.table("webhook_deliveries", sa.column("status", sa.String),
                          sa.column("max_attempts", sa.Integer), sa.column("attempts", sa.Integer))
    # The former code knows only "pending" and at most 4 attempts: a waiting delivery is due
    # again, and a queued delivery past its 4th attempt gets exactly one more.
    op.execute(deliveries.update().where(deliveries.c.status == "waiting").values(status="pending"))
    op.execute(deliveries.update().where(deliveries.c.status == "pending",
                                         deliveries.c.max_attempts == NEW_MAX_ATTEMPTS)
               .values(max_attempts=sa.case((deliveries.c.attempts >= OLD_MAX_ATTEMPTS, deliveries.c.attempts + 1),
                                            else_=OLD_MAX_ATTEMPTS)))
    op.drop_index("ix_webhook_deliveries_endpoint_status_next", table_name="webhook_deliveries")
    # DROP COLUMN in place as well (SQLite >= 3.35 drops a column without rebuilding the table)
    op.drop_column("webhook_endpoints", "disabled_reason")
    op.drop_column("webhook_endpoints", "disabled_at")
    op.drop_column("webhook_endpoints", "failing_since")
