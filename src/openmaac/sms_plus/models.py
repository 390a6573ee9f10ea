"""SMS+ tables: scenarios (pnp settings), messages and their delivery state, SMS points,
the organisation's SMS/WhatsApp provider configuration, join links and manual uploads."""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow


class PnpSetting(Base):
    """An SMS+ scenario ("pnp setting"): which channels to try, their content, the fallback period."""

    __tablename__ = "pnp_settings"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    status: Mapped[str] = mapped_column(String(16), default="enable")  # enable | disable
    line_push_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    line_push_template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    pnp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    pnp_messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    pnp_approval_status: Mapped[str] = mapped_column(String(16), default="pending")  # pending|approved|rejected
    fallback_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    sms_text: Mapped[str] = mapped_column(Text, default="")
    fallback_period: Mapped[int] = mapped_column(Integer, default=1440)  # minutes
    whatsapp_enabled: Mapped[bool] = mapped_column(Boolean, default=False)
    whatsapp_template_name: Mapped[str | None] = mapped_column(String(512), nullable=True)
    whatsapp_language: Mapped[str | None] = mapped_column(String(32), nullable=True)
    parameters: Mapped[list[str]] = mapped_column(JSONType, default=list)
    sms_parameters: Mapped[list[str]] = mapped_column(JSONType, default=list)
    metric_all: Mapped[int] = mapped_column(Integer, default=0)
    metric_fail: Mapped[int] = mapped_column(Integer, default=0)
    metric_pnp: Mapped[int] = mapped_column(Integer, default=0)
    metric_sms: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PnpMessage(Base):
    """One SMS+ message: a phone number through LINE push / PNP / SMS (/ WhatsApp)."""

    __tablename__ = "pnp_messages"
    __table_args__ = (
        Index("ix_pnp_messages_org_setting_updated", "organization_id", "pnp_setting_id", "updated_at", "id"),
        # (organization_id, x): SQLite, without statistics, otherwise picks the (organization_id,
        # pnp_setting_id, ...) index for "organization_id = ? AND x = ?" and walks the organisation
        Index("ix_pnp_messages_org_sms_provider_id", "organization_id", "sms_provider_message_id"),
        Index("ix_pnp_messages_org_sms_reference", "organization_id", "sms_reference"),
        Index("ix_pnp_messages_org_whatsapp_id", "organization_id", "whatsapp_message_id"),
        UniqueConstraint("delivery_tag", name="uq_pnp_messages_delivery_tag"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    pnp_setting_id: Mapped[int] = mapped_column(ForeignKey("pnp_settings.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    customized_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    phone_number: Mapped[str] = mapped_column(String(80))  # as given: E.164 or SHA-256 hex
    phone_hash: Mapped[str] = mapped_column(String(64))
    hashed_input: Mapped[bool] = mapped_column(Boolean, default=False)
    upload_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)  # line_push / pnp / sms / whatsapp
    status: Mapped[str] = mapped_column(String(32))
    line_push_template_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    line_push_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    line_push_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    line_push_error_category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    line_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    pnp_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    pnp_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    delivery_tag: Mapped[str | None] = mapped_column(String(100), nullable=True)
    sms_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sms_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    sms_error_category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    sms_text: Mapped[str | None] = mapped_column(Text, nullable=True)
    sms_segments: Mapped[int] = mapped_column(Integer, default=0)
    points_held: Mapped[int] = mapped_column(Integer, default=0)  # reserved, not yet charged or released
    sms_provider: Mapped[str | None] = mapped_column(String(16), nullable=True)
    sms_provider_message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    sms_reference: Mapped[str | None] = mapped_column(String(64), nullable=True)
    sms_attempts: Mapped[int] = mapped_column(Integer, default=0)
    sms_retry_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    whatsapp_status: Mapped[str | None] = mapped_column(String(32), nullable=True)
    whatsapp_message_id: Mapped[str | None] = mapped_column(String(128), nullable=True)
    whatsapp_delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    whatsapp_error_category: Mapped[str | None] = mapped_column(String(32), nullable=True)
    # set while an SMS or WhatsApp send is under way (cleared with its outcome): found set by a later run,
    # the attempt died mid-call and its outcome must be looked up before sending again
    send_started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    fallback_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


@dataclass(slots=True)
class PnpMessageRow:
    """A ``pnp_messages`` row as plain attributes, in the table's column order, for the hot paths
    that read and write messages with prebuilt statements: building a (never attached)
    ``PnpMessage`` costs some 100 µs of SQLAlchemy's instrumentation, this a few. The state
    machine's readers (status events, ``nothing_left``, ``finish_many``...) take either."""

    id: int
    organization_id: int
    pnp_setting_id: int
    event_id: int | None
    customized_id: str | None
    phone_number: str
    phone_hash: str
    hashed_input: bool
    upload_id: int | None
    params: dict[str, Any]
    status: str
    line_push_template_id: int | None
    line_push_status: str | None
    line_push_delivered_at: datetime | None
    line_push_error_category: str | None
    line_uid: str | None
    pnp_status: str | None
    pnp_delivered_at: datetime | None
    delivery_tag: str | None
    sms_status: str | None
    sms_delivered_at: datetime | None
    sms_error_category: str | None
    sms_text: str | None
    sms_segments: int
    points_held: int
    sms_provider: str | None
    sms_provider_message_id: str | None
    sms_reference: str | None
    sms_attempts: int
    sms_retry_until: datetime | None
    whatsapp_status: str | None
    whatsapp_message_id: str | None
    whatsapp_delivered_at: datetime | None
    whatsapp_error_category: str | None
    send_started_at: datetime | None
    fallback_at: datetime | None
    finished: bool
    created_at: datetime
    updated_at: datetime


# a row read with every column of pnp_messages is built positionally: the fields must follow the table
assert [f.name for f in fields(PnpMessageRow)] == [c.name for c in PnpMessage.__table__.c], \
    "PnpMessageRow must list pnp_messages' columns in order"

AnyPnpMessage = PnpMessage | PnpMessageRow


class SmsPointBalance(Base):
    """An organisation's SMS points (one row per organisation; debited atomically)."""

    __tablename__ = "sms_point_balances"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    balance: Mapped[int] = mapped_column(Integer, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SmsPointEntry(Base):
    """The points ledger: top-ups, holds for an SMS, releases of unused holds."""

    __tablename__ = "sms_point_entries"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # topup | hold | release
    amount: Mapped[int] = mapped_column(Integer)  # signed change of the balance
    balance_after: Mapped[int] = mapped_column(Integer)
    pnp_message_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    note: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SmsProviderConfig(Base):
    """Which SMS gateway (and WhatsApp number) an organisation sends through."""

    __tablename__ = "sms_provider_configs"

    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), primary_key=True, autoincrement=False
    )
    provider: Mapped[str] = mapped_column(String(16), default="twilio")  # twilio | mitake
    base_url: Mapped[str | None] = mapped_column(String(512), nullable=True)  # None: built-in simulator
    credentials: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    whatsapp: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    callback_timeout_minutes: Mapped[int] = mapped_column(Integer, default=1440)
    retry_window_minutes: Mapped[int] = mapped_column(Integer, default=60)
    whatsapp_wait_minutes: Mapped[int] = mapped_column(Integer, default=60)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PnpJoinLink(Base):
    """A tracked join link put in one message's SMS/PNP text (``{{join_link}}``)."""

    __tablename__ = "pnp_join_links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    pnp_message_id: Mapped[int] = mapped_column(BigId)
    source: Mapped[str] = mapped_column(String(8))  # sms | pnp
    clicks: Mapped[int] = mapped_column(Integer, default=0)
    bound_line_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    bound_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PnpUpload(Base):
    """A manually uploaded recipient list (CSV/XLSX) for one scenario (the SMS+ help-center tutorial)."""

    __tablename__ = "pnp_uploads"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    pnp_setting_id: Mapped[int] = mapped_column(ForeignKey("pnp_settings.id", ondelete="CASCADE"))
    filename: Mapped[str] = mapped_column(String(255))
    columns: Mapped[list[str]] = mapped_column(JSONType, default=list)
    phone_column: Mapped[str] = mapped_column(String(255))
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    invalid_count: Mapped[int] = mapped_column(Integer, default=0)
    invalid_rows: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    preview: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    # storing (rows still going in: not found, not sendable) | uploaded | sending | sent
    status: Mapped[str] = mapped_column(String(16), default="uploaded")
    mapping: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    sent_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class PnpUploadRow(Base):
    """One valid recipient row of an upload (phone in E.164 and the row's values by column)."""

    __tablename__ = "pnp_upload_rows"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    upload_id: Mapped[int] = mapped_column(ForeignKey("pnp_uploads.id", ondelete="CASCADE"), index=True)
    row_number: Mapped[int] = mapped_column(Integer)
    phone_number: Mapped[str] = mapped_column(String(32))
    values: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
