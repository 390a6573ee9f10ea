from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import Date, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, UTCDateTime, utcnow

CONTACT_STATUSES = ("follow", "auth", "unfollow")
GENDERS = ("male", "female", "unknown")
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
