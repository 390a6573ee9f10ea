"""SMS+ scenarios, messages, points, provider configuration, join links and manual uploads

Revision ID: 0005
Revises: 0004
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy import Text  # noqa: F401
from sqlalchemy.dialects import postgresql  # noqa: F401

import openmaac.db.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('pnp_settings',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('line_push_enabled', sa.Boolean(), nullable=False),
    sa.Column('line_push_template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('pnp_enabled', sa.Boolean(), nullable=False),
    sa.Column('pnp_messages', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('pnp_approval_status', sa.String(length=16), nullable=False),
    sa.Column('fallback_enabled', sa.Boolean(), nullable=False),
    sa.Column('sms_text', sa.Text(), nullable=False),
    sa.Column('fallback_period', sa.Integer(), nullable=False),
    sa.Column('whatsapp_enabled', sa.Boolean(), nullable=False),
    sa.Column('whatsapp_template_name', sa.String(length=512), nullable=True),
    sa.Column('whatsapp_language', sa.String(length=32), nullable=True),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('sms_parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('metric_all', sa.Integer(), nullable=False),
    sa.Column('metric_fail', sa.Integer(), nullable=False),
    sa.Column('metric_pnp', sa.Integer(), nullable=False),
    sa.Column('metric_sms', sa.Integer(), nullable=False),
    sa.Column('created_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_pnp_settings_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnp_settings'))
    )
    op.create_index(op.f('ix_pnp_settings_organization_id'), 'pnp_settings', ['organization_id'], unique=False)
    op.create_table('pnp_messages',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('pnp_setting_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('event_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('customized_id', sa.String(length=255), nullable=True),
    sa.Column('phone_number', sa.String(length=80), nullable=False),
    sa.Column('phone_hash', sa.String(length=64), nullable=False),
    sa.Column('hashed_input', sa.Boolean(), nullable=False),
    sa.Column('upload_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('params', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=32), nullable=False),
    sa.Column('line_push_template_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('line_push_status', sa.String(length=32), nullable=True),
    sa.Column('line_push_delivered_at', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('line_push_error_category', sa.String(length=32), nullable=True),
    sa.Column('line_uid', sa.String(length=64), nullable=True),
    sa.Column('pnp_status', sa.String(length=32), nullable=True),
    sa.Column('pnp_delivered_at', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('delivery_tag', sa.String(length=100), nullable=True),
    sa.Column('sms_status', sa.String(length=32), nullable=True),
    sa.Column('sms_delivered_at', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('sms_error_category', sa.String(length=32), nullable=True),
    sa.Column('sms_text', sa.Text(), nullable=True),
    sa.Column('sms_segments', sa.Integer(), nullable=False),
    sa.Column('points_held', sa.Integer(), nullable=False),
    sa.Column('sms_provider', sa.String(length=16), nullable=True),
    sa.Column('sms_provider_message_id', sa.String(length=128), nullable=True),
    sa.Column('sms_reference', sa.String(length=64), nullable=True),
    sa.Column('sms_attempts', sa.Integer(), nullable=False),
    sa.Column('sms_retry_until', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('whatsapp_status', sa.String(length=32), nullable=True),
    sa.Column('whatsapp_message_id', sa.String(length=128), nullable=True),
    sa.Column('fallback_at', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('finished', sa.Boolean(), nullable=False),
    sa.Column('created_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_pnp_messages_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pnp_setting_id'], ['pnp_settings.id'], name=op.f('fk_pnp_messages_pnp_setting_id_pnp_settings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnp_messages')),
    sa.UniqueConstraint('delivery_tag', name='uq_pnp_messages_delivery_tag')
    )
    op.create_index('ix_pnp_messages_org_setting_updated', 'pnp_messages', ['organization_id', 'pnp_setting_id', 'updated_at', 'id'], unique=False)
    op.create_index('ix_pnp_messages_sms_provider_id', 'pnp_messages', ['sms_provider_message_id'], unique=False)
    op.create_table('sms_point_balances',
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('balance', sa.Integer(), nullable=False),
    sa.Column('updated_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_sms_point_balances_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organization_id', name=op.f('pk_sms_point_balances'))
    )
    op.create_table('sms_point_entries',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('amount', sa.Integer(), nullable=False),
    sa.Column('balance_after', sa.Integer(), nullable=False),
    sa.Column('pnp_message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('note', sa.String(length=255), nullable=True),
    sa.Column('created_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_sms_point_entries_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_point_entries'))
    )
    op.create_index(op.f('ix_sms_point_entries_organization_id'), 'sms_point_entries', ['organization_id'], unique=False)
    op.create_table('sms_provider_configs',
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=False, nullable=False),
    sa.Column('provider', sa.String(length=16), nullable=False),
    sa.Column('base_url', sa.String(length=512), nullable=True),
    sa.Column('credentials', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('whatsapp', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('callback_timeout_minutes', sa.Integer(), nullable=False),
    sa.Column('retry_window_minutes', sa.Integer(), nullable=False),
    sa.Column('updated_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_sms_provider_configs_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('organization_id', name=op.f('pk_sms_provider_configs'))
    )
    op.create_table('pnp_join_links',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('code', sa.String(length=32), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('pnp_message_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('source', sa.String(length=8), nullable=False),
    sa.Column('clicks', sa.Integer(), nullable=False),
    sa.Column('bound_line_uid', sa.String(length=64), nullable=True),
    sa.Column('bound_at', openmaac.db.base.UTCDateTime(), nullable=True),
    sa.Column('created_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_pnp_join_links_organization_id_organizations'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnp_join_links')),
    sa.UniqueConstraint('code', name=op.f('uq_pnp_join_links_code'))
    )
    op.create_index(op.f('ix_pnp_join_links_organization_id'), 'pnp_join_links', ['organization_id'], unique=False)
    op.create_table('pnp_uploads',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('organization_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('pnp_setting_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('filename', sa.String(length=255), nullable=False),
    sa.Column('columns', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('phone_column', sa.String(length=255), nullable=False),
    sa.Column('row_count', sa.Integer(), nullable=False),
    sa.Column('invalid_count', sa.Integer(), nullable=False),
    sa.Column('invalid_rows', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('preview', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('mapping', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.Column('sent_count', sa.Integer(), nullable=False),
    sa.Column('created_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.Column('updated_at', openmaac.db.base.UTCDateTime(), nullable=False),
    sa.ForeignKeyConstraint(['organization_id'], ['organizations.id'], name=op.f('fk_pnp_uploads_organization_id_organizations'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['pnp_setting_id'], ['pnp_settings.id'], name=op.f('fk_pnp_uploads_pnp_setting_id_pnp_settings'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnp_uploads'))
    )
    op.create_index(op.f('ix_pnp_uploads_organization_id'), 'pnp_uploads', ['organization_id'], unique=False)
    op.create_table('pnp_upload_rows',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('upload_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('phone_number', sa.String(length=32), nullable=False),
    sa.Column('values', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['upload_id'], ['pnp_uploads.id'], name=op.f('fk_pnp_upload_rows_upload_id_pnp_uploads'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_pnp_upload_rows'))
    )
    op.create_index(op.f('ix_pnp_upload_rows_upload_id'), 'pnp_upload_rows', ['upload_id'], unique=False)


def downgrade() -> None:
    op.drop_table('pnp_upload_rows')
    op.drop_table('pnp_uploads')
    op.drop_table('pnp_join_links')
    op.drop_table('sms_provider_configs')
    op.drop_table('sms_point_entries')
    op.drop_table('sms_point_balances')
    op.drop_table('pnp_messages')
    op.drop_table('pnp_settings')
