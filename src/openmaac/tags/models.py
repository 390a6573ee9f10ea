from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, UTCDateTime, utcnow


class Tag(Base):
    __tablename__ = "tags"
    __table_args__ = (UniqueConstraint("organization_id", "name", name="uq_tags_org_name"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    available_days: Mapped[int | None] = mapped_column(Integer, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ContactTag(Base):
    """A tag on a contact. ``expired_at`` NULL means permanent.

    Reads treat a row whose ``expired_at`` has passed as gone, so expiry is exact even
    before the expiry job deletes the row and emits its events.
    """

    __tablename__ = "contact_tags"
    __table_args__ = (
        # Covering for segment queries: one tag's active links in contact_id order (migration 0007).
        Index("ix_contact_tags_tag_contact_expiry", "tag_id", "contact_id", "expired_at"),
        Index("ix_contact_tags_expired_at", "expired_at"),
    )

    contact_id: Mapped[int] = mapped_column(ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True)
    tag_id: Mapped[int] = mapped_column(ForeignKey("tags.id", ondelete="CASCADE"), primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    tagged_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
