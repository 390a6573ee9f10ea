"""contact import tasks and segments

Revision ID: 0003
Revises: 0002
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import openmaac.db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")


def upgrade() -> None:
    op.create_table(
        "import_tasks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("import_key", sa.String(length=32), nullable=False),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("mismatch_csv", sa.LargeBinary(), nullable=True),
        sa.Column("started_at", openmaac.db.base.UTCDateTime(), nullable=True),
        sa.Column("finished_at", openmaac.db.base.UTCDateTime(), nullable=True),
        sa.Column("created_at", openmaac.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", openmaac.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_import_tasks_organization_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_import_tasks")),
    )
    with op.batch_alter_table("import_tasks", schema=None) as batch_op:
        batch_op.create_index("ix_import_tasks_org_status", ["organization_id", "status"], unique=False)

    op.create_table(
        "segments",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("segment_type", sa.Integer(), nullable=False),
        sa.Column("operator", sa.String(length=8), nullable=False),
        sa.Column("conditions", JSON, nullable=False),
        sa.Column("status", sa.Integer(), nullable=False),
        sa.Column("member_count", sa.Integer(), nullable=False),
        sa.Column("last_updated_time", openmaac.db.base.UTCDateTime(), nullable=True),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("file_report", JSON, nullable=True),
        sa.Column("created_at", openmaac.db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", openmaac.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                name=op.f("fk_segments_organization_id_organizations"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_segments")),
    )
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.create_index("ix_segments_org", ["organization_id"], unique=False)

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
    op.create_table(
        "segment_uploads",
        sa.Column("segment_id", BIG_ID, nullable=False),
        sa.Column("generation", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("report", JSON, nullable=False),
        sa.Column("created_at", openmaac.db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["segment_id"], ["segments.id"],
                                name=op.f("fk_segment_uploads_segment_id_segments"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("segment_id", name=op.f("pk_segment_uploads")),
    )


def downgrade() -> None:
    op.drop_table("segment_uploads")
    op.drop_table("segment_members")
    with op.batch_alter_table("segments", schema=None) as batch_op:
        batch_op.drop_index("ix_segments_org")
    op.drop_table("segments")
    with op.batch_alter_table("import_tasks", schema=None) as batch_op:
        batch_op.drop_index("ix_import_tasks_org_status")
    op.drop_table("import_tasks")
