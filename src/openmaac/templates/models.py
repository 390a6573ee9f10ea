from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow


class MessageTemplate(Base):
    """1-5 LINE message objects with ``{{param}}`` and ``{{contact.*}}`` placeholders."""

    __tablename__ = "message_templates"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    parameters: Mapped[list[str]] = mapped_column(JSONType)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
