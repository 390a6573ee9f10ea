"""Segments at scale: a covering index for tag segments, one member list per custom segment.

- contact_tags is indexed by (tag_id, contact_id, expired_at) instead of (tag_id, contact_id):
  segment queries walk one tag's links in contact_id order and test whether each is still
  active, reading the index alone. The old index is its prefix, so it goes.
- A custom segment's members become one row holding their contact ids (segment_member_lists)
  instead of a row per member (segment_members): writing 300,000 member rows, each with two
  foreign-key checks, took seconds on PostgreSQL. Existing lists are carried over.

See docs/benchmarks.md, import_segments.

Revision ID: 0007
Revises: 0008
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

revision = "0007"
down_revision = "0008"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tags_tag_contact_expiry", ["tag_id", "contact_id", "expired_at"],
                              unique=False)
        batch_op.drop_index("ix_contact_tags_tag_contact")

    op.create_table(
        "segment_member_lists",
        sa.Column("segment_id", BIG_ID, nullable=False),
        sa.Column("contact_ids", JSON, nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"],
                                name=op.f("fk_segment_member_lists_segment_id_segments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("segment_id", name=op.f("pk_segment_member_lists")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO segment_member_lists (segment_id, contact_ids) "
                   "SELECT segment_id, jsonb_agg(contact_id ORDER BY contact_id) FROM segment_members GROUP BY segment_id")
    else:
        op.execute("INSERT INTO segment_member_lists (segment_id, contact_ids) "
                   "SELECT segment_id, json_group_array(contact_id) FROM "
                   "(SELECT segment_id, contact_id FROM segment_members ORDER BY segment_id, contact_id) "
                   "GROUP BY segment_id")
    # (A built segment that matched nobody had no rows and has no list: both read as no members.)
    op.drop_table("segment_members")


def downgrade() -> None:
    op.create_table(
        "segment_members",
        sa.Column("segment_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"],
                                name=op.f("fk_segment_members_contact_id_contacts"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"],
                                name=op.f("fk_segment_members_segment_id_segments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("segment_id", "contact_id", name=op.f("pk_segment_members")),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute("INSERT INTO segment_members (segment_id, contact_id) "
                   "SELECT l.segment_id, j.id::bigint FROM segment_member_lists l "
                   "CROSS JOIN LATERAL jsonb_array_elements_text(l.contact_ids) AS j(id) "
                   "JOIN contacts c ON c.id = j.id::bigint")
    else:
        op.execute("INSERT INTO segment_members (segment_id, contact_id) "
                   "SELECT l.segment_id, j.value FROM segment_member_lists l, json_each(l.contact_ids) j "
                   "JOIN contacts c ON c.id = j.value")
    op.drop_table("segment_member_lists")

    with op.batch_alter_table("contact_tags", schema=None) as batch_op:
        batch_op.create_index("ix_contact_tags_tag_contact", ["tag_id", "contact_id"], unique=False)
        batch_op.drop_index("ix_contact_tags_tag_contact_expiry")
