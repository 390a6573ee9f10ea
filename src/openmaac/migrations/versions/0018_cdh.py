"""cdh: the CDH API's keys, channel identities, custom fields, tasks, engagement events and
commerce records; the CDH-only profile fields on contacts.

Revision ID: 0018
Revises: 0015
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import openmaac.db.base

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
TIME = openmaac.db.base.UTCDateTime

CONTACT_COLUMNS = (
    ("connect_id", 255), ("full_name", 255), ("region", 255), ("city", 255), ("address", 500),
    ("company", 255), ("member_level", 255), ("account_manager", 255),
)


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                   name=op.f(f"fk_{table}_organization_id_organizations"), ondelete="CASCADE")


def upgrade() -> None:
    # ADD COLUMN in place (no batch rebuild of contacts: its tags and recipients cascade)
    for name, length in CONTACT_COLUMNS:
        op.add_column("contacts", sa.Column(name, sa.String(length=length), nullable=True))
    op.add_column("contacts", sa.Column("custom_fields", JSON, nullable=True))
    op.create_index("ix_contacts_org_connect_id", "contacts", ["organization_id", "connect_id"], unique=False)

    op.create_table(
        "cdh_api_keys",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("prefix", sa.String(length=16), nullable=False),
        sa.Column("label", sa.String(length=255), nullable=True),
        sa.Column("created_at", TIME(), nullable=False),
        sa.Column("revoked_at", TIME(), nullable=True),
        _org_fk("cdh_api_keys"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_cdh_api_keys_key_hash")),
    )
    op.create_index(op.f("ix_cdh_api_keys_organization_id"), "cdh_api_keys", ["organization_id"], unique=False)

    op.create_table(
        "cdh_channel_identities",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=False),
        sa.Column("channel_type", sa.String(length=16), nullable=False),
        sa.Column("external_channel_id", sa.String(length=128), nullable=False),
        sa.Column("external_member_id", sa.String(length=128), nullable=False),
        sa.Column("created_at", TIME(), nullable=False),
        _org_fk("cdh_channel_identities"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"],
                                name=op.f("fk_cdh_channel_identities_contact_id_contacts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_channel_identities")),
        sa.UniqueConstraint("organization_id", "channel_type", "external_channel_id", "external_member_id",
                            name="uq_cdh_channel_identities_member"),
    )
    op.create_index("ix_cdh_channel_identities_contact", "cdh_channel_identities", ["contact_id"], unique=False)

    op.create_table(
        "cdh_custom_fields",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("key", sa.String(length=128), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("active", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIME(), nullable=False),
        sa.Column("updated_at", TIME(), nullable=False),
        _org_fk("cdh_custom_fields"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_custom_fields")),
        sa.UniqueConstraint("organization_id", "key", name="uq_cdh_custom_fields_org_key"),
    )

    op.create_table(
        "cdh_tasks",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("import_key", sa.String(length=32), nullable=True),
        sa.Column("row_count", sa.Integer(), nullable=False),
        sa.Column("payload", sa.LargeBinary(), nullable=True),
        sa.Column("file", sa.LargeBinary(), nullable=True),
        sa.Column("result", JSON, nullable=True),
        sa.Column("deadline", TIME(), nullable=False),
        sa.Column("expires_at", TIME(), nullable=True),
        sa.Column("created_at", TIME(), nullable=False),
        sa.Column("updated_at", TIME(), nullable=False),
        _org_fk("cdh_tasks"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_tasks")),
    )
    op.create_index("ix_cdh_tasks_org_category_status", "cdh_tasks", ["organization_id", "category", "status"],
                    unique=False)

    op.create_table(
        "cdh_engagement_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("behavior", sa.String(length=256), nullable=False),
        sa.Column("utm_campaign", sa.String(length=256), nullable=True),
        sa.Column("utm_source", sa.String(length=256), nullable=True),
        sa.Column("utm_medium", sa.String(length=256), nullable=True),
        sa.Column("utm_content", sa.String(length=256), nullable=True),
        sa.Column("utm_term", sa.String(length=256), nullable=False),
        sa.Column("language", sa.Text(), nullable=True),
        sa.Column("geography", sa.Text(), nullable=True),
        sa.Column("params", JSON, nullable=False),
        sa.Column("transaction_id", sa.String(length=256), nullable=True),
        sa.Column("revenue", sa.Numeric(precision=20, scale=4, asdecimal=False), nullable=True),
        sa.Column("click_id", BIG_ID, nullable=True),
        sa.Column("message_event_id", BIG_ID, nullable=True),
        sa.Column("tracked_link_id", BIG_ID, nullable=True),
        sa.Column("contact_line_uid", sa.String(length=64), nullable=True),
        sa.Column("occurred_at", TIME(), nullable=False),
        _org_fk("cdh_engagement_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_engagement_events")),
        sa.UniqueConstraint("event_id", name=op.f("uq_cdh_engagement_events_event_id")),
    )
    op.create_index("ix_cdh_engagement_events_org_event", "cdh_engagement_events",
                    ["organization_id", "message_event_id", "behavior"], unique=False)
    op.create_index("ix_cdh_engagement_events_org_tx", "cdh_engagement_events",
                    ["organization_id", "transaction_id"], unique=False)
    # the behaviour downloads read one organisation's day of events
    op.create_index("ix_cdh_engagement_events_org_occurred", "cdh_engagement_events",
                    ["organization_id", "occurred_at"], unique=False)

    op.create_table(
        "cdh_commerce_records",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("record_key", sa.String(length=512), nullable=False),
        sa.Column("event_id", sa.String(length=36), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column("data", JSON, nullable=False),
        sa.Column("created_at", TIME(), nullable=False),
        sa.Column("updated_at", TIME(), nullable=False),
        _org_fk("cdh_commerce_records"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cdh_commerce_records")),
        sa.UniqueConstraint("organization_id", "kind", "record_key", name="uq_cdh_commerce_records_key"),
    )


def downgrade() -> None:
    op.drop_table("cdh_commerce_records")
    op.drop_index("ix_cdh_engagement_events_org_occurred", table_name="cdh_engagement_events")
    op.drop_index("ix_cdh_engagement_events_org_tx", table_name="cdh_engagement_events")
    op.drop_index("ix_cdh_engagement_events_org_event", table_name="cdh_engagement_events")
    op.drop_table("cdh_engagement_events")
    op.drop_index("ix_cdh_tasks_org_category_status", table_name="cdh_tasks")
    op.drop_table("cdh_tasks")
    op.drop_table("cdh_custom_fields")
    op.drop_index("ix_cdh_channel_identities_contact", table_name="cdh_channel_identities")
    op.drop_table("cdh_channel_identities")
    op.drop_index(op.f("ix_cdh_api_keys_organization_id"), table_name="cdh_api_keys")
    op.drop_table("cdh_api_keys")
    op.drop_index("ix_contacts_org_connect_id", table_name="contacts")
    op.drop_column("contacts", "custom_fields")
    for name, _length in reversed(CONTACT_COLUMNS):
        op.drop_column("contacts", name)
