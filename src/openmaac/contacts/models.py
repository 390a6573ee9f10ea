from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow

CONTACT_STATUSES = ("follow", "auth", "unfollow")
GENDERS = ("male", "female", "unknown")
# CDH OpenAPI 2.0.1 adds "other"; MAAC's member view shows it as stored
CDH_GENDERS = ("male", "female", "unknown", "other")
# LINE user ids are 33 characters ("U" + 32 hex digits); the column allows some room
LINE_UID_MAX_LENGTH = 64


class Contact(Base):
    """A person known to an organisation, usually a LINE friend of its Official Account."""

    __tablename__ = "contacts"
    __table_args__ = (
        UniqueConstraint("organization_id", "line_uid", name="uq_contacts_org_line_uid"),
        Index("ix_contacts_org_id", "organization_id", "id"),
        Index("ix_contacts_org_customer_id", "organization_id", "customer_id"),
        Index("ix_contacts_org_email", "organization_id", "email"),
        Index("ix_contacts_org_mobile", "organization_id", "mobile"),
        Index("ix_contacts_org_updated_at", "organization_id", "updated_at"),
        Index("ix_contacts_org_connect_id", "organization_id", "connect_id"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    line_uid: Mapped[str | None] = mapped_column(String(LINE_UID_MAX_LENGTH), nullable=True)
    line_display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    display_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    email: Mapped[str | None] = mapped_column(String(320), nullable=True)
    mobile: Mapped[str | None] = mapped_column(String(32), nullable=True)
    customer_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    gender: Mapped[str | None] = mapped_column(String(16), nullable=True)
    birthday: Mapped[date | None] = mapped_column(Date, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="follow")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    followed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    blocked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # The profile fields only the CDH API (CDH OpenAPI 2.0.1) reads and writes
    connect_id: Mapped[str | None] = mapped_column(String(255), nullable=True)
    full_name: Mapped[str | None] = mapped_column(String(255), nullable=True)
    region: Mapped[str | None] = mapped_column(String(255), nullable=True)
    city: Mapped[str | None] = mapped_column(String(255), nullable=True)
    address: Mapped[str | None] = mapped_column(String(500), nullable=True)
    company: Mapped[str | None] = mapped_column(String(255), nullable=True)
    member_level: Mapped[str | None] = mapped_column(String(255), nullable=True)
    account_manager: Mapped[str | None] = mapped_column(String(255), nullable=True)
    # {"cl_custom_<key>": value}: values of the organisation's custom fields (cdh_custom_fields)
    custom_fields: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
