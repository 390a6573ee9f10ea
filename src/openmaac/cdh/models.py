"""CDH tables: API keys, channel identities, custom fields, tasks, engagement events and
commerce records. The profile itself lives on ``contacts`` (one person, one row)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, deferred, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow

CHANNEL_TYPES = ("line", "fb", "ig", "whatsapp", "email", "wccs", "others")
CUSTOM_FIELD_TYPES = ("text", "number", "date", "datetime")
TASK_CATEGORIES = ("import_member", "export_member")
TASK_STATUSES = ("pending", "processing", "success", "failed")
RECORD_KINDS = ("coupon", "order", "order_fulfillment", "membership", "point", "reservation")


class CdhApiKey(Base):
    """A CDH API key (header ``apikey``). Only its SHA-256 is stored; the key is shown once."""

    __tablename__ = "cdh_api_keys"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class ChannelIdentity(Base):
    """One channel-level member (a LINE user, a Messenger user ...) of a contact."""

    __tablename__ = "cdh_channel_identities"
    __table_args__ = (
        UniqueConstraint("organization_id", "channel_type", "external_channel_id", "external_member_id",
                         name="uq_cdh_channel_identities_member"),
        Index("ix_cdh_channel_identities_contact", "contact_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"))
    channel_type: Mapped[str] = mapped_column(String(16))
    external_channel_id: Mapped[str] = mapped_column(String(128))
    external_member_id: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CustomField(Base):
    """An organisation's custom profile field ``cl_custom_*``; archived ones keep their values."""

    __tablename__ = "cdh_custom_fields"
    __table_args__ = (UniqueConstraint("organization_id", "key", name="uq_cdh_custom_fields_org_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(128))
    name: Mapped[str] = mapped_column(String(255))
    type: Mapped[str] = mapped_column(String(16))
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CdhTask(Base):
    """An import or export task (``GET /cdh/v1/task/{id}``).

    ``payload``: the import's rows (zlib JSON) until processed; ``file``: the export's CSV
    (zlib) until it expires.
    """

    __tablename__ = "cdh_tasks"
    __table_args__ = (Index("ix_cdh_tasks_org_category_status", "organization_id", "category", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(32))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    import_key: Mapped[str | None] = mapped_column(String(32), nullable=True)
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    file: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    deadline: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class EngagementEvent(Base):
    """One submitted engagement event; ``click_id`` etc. set when attributed to a tracked click."""

    __tablename__ = "cdh_engagement_events"
    __table_args__ = (
        Index("ix_cdh_engagement_events_org_event", "organization_id", "message_event_id", "behavior"),
        Index("ix_cdh_engagement_events_org_tx", "organization_id", "transaction_id"),
        # the behaviour downloads (cdh/behavior.py) read one organisation's day of events
        Index("ix_cdh_engagement_events_org_occurred", "organization_id", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    event_id: Mapped[str] = mapped_column(String(36), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    behavior: Mapped[str] = mapped_column(String(256))
    utm_campaign: Mapped[str | None] = mapped_column(String(256), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(256), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(256), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(256), nullable=True)
    utm_term: Mapped[str] = mapped_column(String(256))
    language: Mapped[str | None] = mapped_column(Text, nullable=True)
    geography: Mapped[str | None] = mapped_column(Text, nullable=True)
    params: Mapped[dict[str, Any]] = mapped_column(JSONType)
    transaction_id: Mapped[str | None] = mapped_column(String(256), nullable=True)
    revenue: Mapped[float | None] = mapped_column(Numeric(20, 4, asdecimal=False), nullable=True)
    click_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    message_event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    tracked_link_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    contact_line_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class CommerceRecord(Base):
    """The latest version of one coupon, order, fulfilment, membership, point balance or
    reservation, keyed by the record's own id (``record_key``)."""

    __tablename__ = "cdh_commerce_records"
    __table_args__ = (UniqueConstraint("organization_id", "kind", "record_key", name="uq_cdh_commerce_records_key"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(32))
    record_key: Mapped[str] = mapped_column(String(512))
    event_id: Mapped[str] = mapped_column(String(36))
    contact_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    data: Mapped[dict[str, Any]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = ["CdhApiKey", "CdhTask", "ChannelIdentity", "CommerceRecord", "CustomField", "EngagementEvent"]
