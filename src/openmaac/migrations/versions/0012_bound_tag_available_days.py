"""tags.available_days: at most 1,000,000 (tags/service.py, MAX_AVAILABLE_DAYS). A tag saved
with more before the bound existed could not be put on anyone (its expiry overflowed a date,
failing every import and tagging that used it); it gets the bound, which is as good as never
expiring and now fits every date.

Revision ID: 0012
Revises: 0011
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

MAX_AVAILABLE_DAYS = 1_000_000  # a copy: a migration must not change with the code


def upgrade() -> None:
    tags = sa.table("tags", sa.column("available_days", sa.Integer))
    op.execute(tags.update().where(tags.c.available_days > MAX_AVAILABLE_DAYS)
               .values(available_days=MAX_AVAILABLE_DAYS))


def downgrade() -> None:
    pass  # the former values were unusable; nothing to restore
