"""SMS+ WhatsApp step (delivered time, error category, wait) and the in-flight send marker

Revision ID: 0008
Revises: 0006
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import openmaac.db.base

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("pnp_messages", schema=None) as batch_op:
        batch_op.add_column(sa.Column("whatsapp_delivered_at", openmaac.db.base.UTCDateTime(), nullable=True))
        batch_op.add_column(sa.Column("whatsapp_error_category", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("send_started_at", openmaac.db.base.UTCDateTime(), nullable=True))
        # provider reports are matched by (organization, provider id / our reference / wamid);
        # composite, or SQLite walks the organisation's messages through its other index
        batch_op.drop_index("ix_pnp_messages_sms_provider_id")
        batch_op.create_index("ix_pnp_messages_org_sms_provider_id", ["organization_id", "sms_provider_message_id"],
                              unique=False)
        batch_op.create_index("ix_pnp_messages_org_sms_reference", ["organization_id", "sms_reference"], unique=False)
        batch_op.create_index("ix_pnp_messages_org_whatsapp_id", ["organization_id", "whatsapp_message_id"],
                              unique=False)
    with op.batch_alter_table("sms_provider_configs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("whatsapp_wait_minutes", sa.Integer(), nullable=False,
                                      server_default="60"))


def downgrade() -> None:
    with op.batch_alter_table("sms_provider_configs", schema=None) as batch_op:
        batch_op.drop_column("whatsapp_wait_minutes")
    with op.batch_alter_table("pnp_messages", schema=None) as batch_op:
        batch_op.drop_index("ix_pnp_messages_org_whatsapp_id")
        batch_op.drop_index("ix_pnp_messages_org_sms_reference")
        batch_op.drop_index("ix_pnp_messages_org_sms_provider_id")
        batch_op.create_index("ix_pnp_messages_sms_provider_id", ["sms_provider_message_id"], unique=False)
        batch_op.drop_column("send_started_at")
        batch_op.drop_column("whatsapp_error_category")
        batch_op.drop_column("whatsapp_delivered_at")
