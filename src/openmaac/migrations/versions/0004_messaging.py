"""LINE messaging (direct messages and their LINE calls), tracking links and reports

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import openmaac.db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), "postgresql")
UTC = openmaac.db.base.UTCDateTime


def _org_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["organization_id"], ["organizations.id"],
                                   name=op.f(f"fk_{table}_organization_id_organizations"), ondelete="CASCADE")


def _dm_fk(table: str) -> sa.ForeignKeyConstraint:
    return sa.ForeignKeyConstraint(["direct_message_id"], ["direct_messages.id"],
                                   name=op.f(f"fk_{table}_direct_message_id_direct_messages"), ondelete="CASCADE")


def upgrade() -> None:
    # --- messaging: direct messages, LINE calls, tracking, reports ----
    op.create_table(
        "direct_messages",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("category", sa.String(length=32), nullable=False),
        sa.Column("template_id", BIG_ID, nullable=True),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("tracked", sa.Boolean(), nullable=False),
        sa.Column("params", JSON, nullable=True),
        sa.Column("total_count", sa.Integer(), nullable=False),
        sa.Column("fail_count", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
        sa.Column("sent_at", UTC(), nullable=True),
        _org_fk("direct_messages"),
        sa.ForeignKeyConstraint(["template_id"], ["message_templates.id"],
                                name=op.f("fk_direct_messages_template_id_message_templates"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["event_id"], ["message_events.id"],
                                name=op.f("fk_direct_messages_event_id_message_events"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_direct_messages")),
    )
    with op.batch_alter_table("direct_messages", schema=None) as batch_op:
        batch_op.create_index("ix_direct_messages_org_event", ["organization_id", "event_id"], unique=False)

    op.create_table(
        "direct_message_recipients",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("mark", sa.Integer(), nullable=False),
        sa.Column("line_uid", sa.String(length=64), nullable=False),
        sa.Column("contact_id", BIG_ID, nullable=True),
        sa.Column("params", JSON, nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("response", sa.Text(), nullable=True),
        sa.Column("sent_at", UTC(), nullable=True),
        sa.Column("opened_at", UTC(), nullable=True),
        _dm_fk("direct_message_recipients"),
        _org_fk("direct_message_recipients"),
        sa.ForeignKeyConstraint(["contact_id"], ["contacts.id"],
                                name=op.f("fk_direct_message_recipients_contact_id_contacts"), ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_direct_message_recipients")),
        sa.UniqueConstraint("direct_message_id", "mark", name="uq_direct_message_recipients_mark"),
    )
    with op.batch_alter_table("direct_message_recipients", schema=None) as batch_op:
        batch_op.create_index("ix_direct_message_recipients_org_line_uid", ["organization_id", "line_uid"],
                              unique=False)

    op.create_table(
        "direct_message_sends",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("method", sa.String(length=16), nullable=False),
        sa.Column("retry_key", sa.String(length=36), nullable=False),
        sa.Column("recipient_ids", JSON, nullable=False),
        sa.Column("to", JSON, nullable=False),
        sa.Column("messages", JSON, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=True),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("response_body", JSON, nullable=True),
        sa.Column("locked_until", UTC(), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        sa.Column("completed_at", UTC(), nullable=True),
        _dm_fk("direct_message_sends"),
        _org_fk("direct_message_sends"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_direct_message_sends")),
        sa.UniqueConstraint("retry_key", name=op.f("uq_direct_message_sends_retry_key")),
    )
    with op.batch_alter_table("direct_message_sends", schema=None) as batch_op:
        batch_op.create_index("ix_direct_message_sends_message_status", ["direct_message_id", "status"],
                              unique=False)

    op.create_table(
        "tracked_links",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=True),
        sa.Column("utm_source", sa.String(length=255), nullable=True),
        sa.Column("utm_medium", sa.String(length=255), nullable=True),
        sa.Column("utm_content", sa.String(length=255), nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        _dm_fk("tracked_links"),
        _org_fk("tracked_links"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_links")),
    )
    with op.batch_alter_table("tracked_links", schema=None) as batch_op:
        batch_op.create_index("ix_tracked_links_org_event", ["organization_id", "event_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_tracked_links_direct_message_id"), ["direct_message_id"], unique=False)

    op.create_table(
        "tracked_actions",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("value", sa.String(length=512), nullable=False),
        sa.Column("keyword", sa.String(length=512), nullable=False),
        sa.Column("created_at", UTC(), nullable=False),
        _dm_fk("tracked_actions"),
        _org_fk("tracked_actions"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracked_actions")),
    )
    with op.batch_alter_table("tracked_actions", schema=None) as batch_op:
        batch_op.create_index("ix_tracked_actions_message_value", ["direct_message_id", "kind", "value"],
                              unique=False)

    op.create_table(
        "short_links",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("code", sa.String(length=16), nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("tracked_link_id", BIG_ID, nullable=True),
        sa.Column("recipient_id", BIG_ID, nullable=True),
        sa.Column("targets", JSON, nullable=True),
        sa.Column("created_at", UTC(), nullable=False),
        _dm_fk("short_links"),
        _org_fk("short_links"),
        sa.ForeignKeyConstraint(["tracked_link_id"], ["tracked_links.id"],
                                name=op.f("fk_short_links_tracked_link_id_tracked_links"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["recipient_id"], ["direct_message_recipients.id"],
                                name=op.f("fk_short_links_recipient_id_direct_message_recipients"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_short_links")),
        sa.UniqueConstraint("code", name=op.f("uq_short_links_code")),
    )
    with op.batch_alter_table("short_links", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_short_links_direct_message_id"), ["direct_message_id"], unique=False)

    op.create_table(
        "tracking_events",
        sa.Column("id", BIG_ID, nullable=False),
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("event_id", BIG_ID, nullable=True),
        sa.Column("direct_message_id", BIG_ID, nullable=False),
        sa.Column("recipient_id", BIG_ID, nullable=True),
        sa.Column("line_uid", sa.String(length=64), nullable=True),
        sa.Column("kind", sa.String(length=8), nullable=False),
        sa.Column("tracked_link_id", BIG_ID, nullable=True),
        sa.Column("tracked_action_id", BIG_ID, nullable=True),
        sa.Column("occurred_at", UTC(), nullable=False),
        _dm_fk("tracking_events"),
        _org_fk("tracking_events"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tracking_events")),
    )
    with op.batch_alter_table("tracking_events", schema=None) as batch_op:
        batch_op.create_index("ix_tracking_events_org_event_kind",
                              ["organization_id", "event_id", "kind", "occurred_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_tracking_events_direct_message_id"), ["direct_message_id"],
                              unique=False)

    op.create_table(
        "tracking_settings",
        sa.Column("organization_id", BIG_ID, nullable=False),
        sa.Column("utm_campaign", sa.String(length=255), nullable=True),
        sa.Column("utm_source", sa.String(length=255), nullable=True),
        sa.Column("utm_medium", sa.String(length=255), nullable=True),
        sa.Column("utm_content", sa.String(length=255), nullable=True),
        sa.Column("append_clid", sa.Boolean(), nullable=False),
        sa.Column("updated_at", UTC(), nullable=False),
        _org_fk("tracking_settings"),
        sa.PrimaryKeyConstraint("organization_id", name=op.f("pk_tracking_settings")),
    )
    # --- end messaging -------------------------------------------------------------------

    # --- line upstream: the shared LINE rate limiter --------------
    # channels/models.py LineRateBucket; one GCRA row per (LINE channel, endpoint), see
    # channels/line_rate.py.  Keep this block at the END of upgrade().
    import sqlalchemy as _sa
    from alembic import op as _op

    _op.create_table(
        "line_rate_buckets",
        _sa.Column("channel_id", _sa.String(length=64), nullable=False),
        _sa.Column("endpoint", _sa.String(length=32), nullable=False),
        _sa.Column("next_free", _sa.Float(), nullable=False),
        _sa.PrimaryKeyConstraint("channel_id", "endpoint", name=_op.f("pk_line_rate_buckets")),
    )
    # --- end line-upstream ---------------------------------------------------------------


def downgrade() -> None:
    # --- line-upstream: the shared LINE rate limiter (keep FIRST in downgrade()) ----------
    from alembic import op as _op

    _op.drop_table("line_rate_buckets")
    # --- end line-upstream ---------------------------------------------------------------

    # --- messaging ------------------------------------------------------------------------
    for table in ("tracking_settings", "tracking_events", "short_links", "tracked_actions", "tracked_links",
                  "direct_message_sends", "direct_message_recipients", "direct_messages"):
        op.drop_table(table)
