from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow
from openmaac.line_inbound.events import WEBHOOK_EVENT_ID_MAX_LENGTH


class LineWebhookEvent(Base):
    """Every event LINE delivered to us, kept for later processing and reports.

    ``webhook_event_id`` is unique per organisation: LINE redelivers events, and a
    redelivery must not be counted twice. It is stored whole (LINE sends 26-character ULIDs;
    longer ids, up to ``WEBHOOK_EVENT_ID_MAX_LENGTH``, are kept as they are, never cut to a
    prefix that another event could share).
    """

    __tablename__ = "line_webhook_events"
    __table_args__ = (
        UniqueConstraint("organization_id", "webhook_event_id", name="uq_line_webhook_events_org_event"),
        Index("ix_line_webhook_events_org_type", "organization_id", "event_type"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    webhook_event_id: Mapped[str] = mapped_column(String(WEBHOOK_EVENT_ID_MAX_LENGTH))
    event_type: Mapped[str] = mapped_column(String(32))
    line_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONType)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime)
    received_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
