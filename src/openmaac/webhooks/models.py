from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow

STYLES = ("maac", "cdh", "raw")
# "maac": CrescLab-Signature only (MAAC OpenAPI v1.1.48); "maac+standard": the Standard Webhooks
# headers (webhook-id, webhook-timestamp, webhook-signature) as well, on every delivery.
SIGNATURE_SCHEMES = ("maac", "maac+standard")
# "waiting": pending, but waiting in the long part of the retry schedule (minutes to hours).
# Shown as "pending" by the API; kept apart so that the dispatcher's in-order scan of pending
# rows never has to read past them, and so that they do not hold back later events of their
# contact (see docs/webhooks.md, "Retries").
DELIVERY_STATUSES = ("pending", "waiting", "succeeded", "failed")


class WebhookEndpoint(Base):
    """Where an organisation wants its events POSTed, and how (style, secret, headers)."""

    __tablename__ = "webhook_endpoints"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    url: Mapped[str] = mapped_column(String(2048))
    topics: Mapped[list[str]] = mapped_column(JSONType, default=list)
    style: Mapped[str] = mapped_column(String(8), default="maac")
    headers: Mapped[dict[str, str]] = mapped_column(JSONType, default=dict)
    secret: Mapped[str] = mapped_column(String(128))
    signature_scheme: Mapped[str] = mapped_column(String(16), default="maac", server_default="maac")
    # Standard Webhooks: "whsec_" + base64 key, set while signature_scheme is "maac+standard".
    # After a rotation the previous key keeps signing too (a second signature) until
    # standard_previous_until, so receivers can switch keys without losing a delivery.
    standard_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    standard_previous_secret: Mapped[str | None] = mapped_column(String(128), nullable=True)
    standard_previous_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    is_active: Mapped[bool] = mapped_column(Boolean, default=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # Health: the first failed attempt since the last successful one (None: healthy). An
    # endpoint failing for DISABLE_AFTER is deactivated with disabled_at and a reason.
    failing_since: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    disabled_reason: Mapped[str | None] = mapped_column(String(600), nullable=True)


class WebhookDelivery(Base):
    """One event for one endpoint: the outbox row, written with the change that caused it.

    The body is rendered once, at that moment, so every attempt sends the same bytes under
    the same ``CrescLab-Idempotency-Key``. status: pending -> succeeded | failed, with
    pending <-> waiting while in the long part of the retry schedule. A pending row with
    ``locked_until`` in the future is being sent; a lapsed lock is claimable again.
    """

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        UniqueConstraint("endpoint_id", "idempotency_key", name="uq_webhook_deliveries_endpoint_key"),
        Index("ix_webhook_deliveries_endpoint_status", "endpoint_id", "status", "id"),
        Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
        Index("ix_webhook_deliveries_endpoint_status_next", "endpoint_id", "status", "next_attempt_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    endpoint_id: Mapped[int] = mapped_column(ForeignKey("webhook_endpoints.id", ondelete="CASCADE"))
    topic: Mapped[str] = mapped_column(String(128))
    idempotency_key: Mapped[str] = mapped_column(String(64))
    ordering_key: Mapped[str | None] = mapped_column(String(128), nullable=True)
    body: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=14)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    last_attempt_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)

    def as_row(self) -> dict[str, Any]:  # pragma: no cover - debugging aid
        return {c.name: getattr(self, c.name) for c in self.__table__.columns}
