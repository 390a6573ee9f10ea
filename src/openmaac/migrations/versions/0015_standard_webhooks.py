"""webhooks: Standard Webhooks signatures as an option per endpoint (signature_scheme "maac",
the default and what every existing endpoint keeps, or "maac+standard"), with the endpoint's
"whsec_" secret and, for a day after a rotation, its previous one.

Revision ID: 0015
Revises: 0014
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmaac.db.base

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN in place, not batch mode: a batch rebuild of webhook_endpoints on SQLite would
    # drop the table and, with foreign keys on, its deliveries with it (ON DELETE CASCADE).
    op.add_column("webhook_endpoints", sa.Column("signature_scheme", sa.String(length=16), nullable=False,
                                                 server_default="maac"))
    op.add_column("webhook_endpoints", sa.Column("standard_secret", sa.String(length=128), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("standard_previous_secret", sa.String(length=128), nullable=True))
    op.add_column("webhook_endpoints", sa.Column("standard_previous_until", openmaac.db.base.UTCDateTime(),
                                                 nullable=True))


def downgrade() -> None:
    # DROP COLUMN in place as well (SQLite >= 3.35 drops a column without rebuilding the table)
    op.drop_column("webhook_endpoints", "standard_previous_until")
    op.drop_column("webhook_endpoints", "standard_previous_secret")
    op.drop_column("webhook_endpoints", "standard_secret")
    op.drop_column("webhook_endpoints", "signature_scheme")
