"""Index contact_tags by (tag_id, contact_id, expired_at) instead of (tag_id, contact_id).

Segment queries walk one tag's links in contact_id order and test whether each link is still
active; with expired_at in the index they read the index alone, never the table (see
docs/benchmarks.md, import_segments). The old index is its prefix, so it goes.

Revision ID: 0007
Revises: 0008
"""
from __future__ import annotations

from alembic import op

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tags_tag_contact_expiry", ["tag_id", "contact_id", "expired_at"],
                              unique=False)
        batch_op.drop_index("ix_contact_tags_tag_contact")


def downgrade() -> None:
    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tags_tag_contact", ["tag_id", "contact_id"], unique=False)
        batch_op.drop_index("ix_contact_tags_tag_contact_expiry")
