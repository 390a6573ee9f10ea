"""access_tokens.last_used_at: when a token last authenticated a request (to the minute), shown
on the console's API token page.

Revision ID: 0017
Revises: 0016
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmaac.db.base

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # ADD COLUMN in place (a batch rebuild on SQLite is not needed for a nullable column).
    op.add_column("access_tokens", sa.Column("last_used_at", openmaac.db.base.UTCDateTime(), nullable=True))


def downgrade() -> None:
    op.drop_column("access_tokens", "last_used_at")
