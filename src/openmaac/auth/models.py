from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, UTCDateTime, utcnow


class Organization(Base):
    """A tenant: one brand with one LINE Official Account."""

    __tablename__ = "organizations"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), unique=True)
    timezone: Mapped[str] = mapped_column(String(64), default="Asia/Taipei")
    region: Mapped[str] = mapped_column(String(8), default="TW")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class AccessToken(Base):
    """An OpenAPI bearer token. Only its SHA-256 is stored; the token is shown once."""

    __tablename__ = "access_tokens"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    prefix: Mapped[str] = mapped_column(String(16))
    label: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    # When the token last authenticated a request, to the minute (see auth.service._LastUse).
    last_used_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
