from __future__ import annotations

from datetime import datetime

from sqlalchemy import Float, ForeignKey, String
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, UTCDateTime, utcnow


class LineChannel(Base):
    """The LINE Messaging API channel of an organisation's Official Account."""

    __tablename__ = "line_channels"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(
        ForeignKey("organizations.id", ondelete="CASCADE"), unique=True
    )
    channel_id: Mapped[str] = mapped_column(String(64), unique=True)
    channel_secret: Mapped[str] = mapped_column(String(128))
    access_token: Mapped[str] = mapped_column(String(512))
    # NULL: the LINE simulator this server hosts, wherever it runs (channels.service.line_api_base_url)
    api_base_url: Mapped[str | None] = mapped_column(String(512), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class LineRateBucket(Base):
    """The shared rate limiter of one LINE channel and endpoint (see channels/line_rate.py).

    ``next_free`` is the GCRA "theoretical arrival time" in epoch seconds: the moment from
    which the next slot may be handed out.  Every process sending for the channel moves it
    forward in one atomic UPDATE ... RETURNING, so they share the limit.
    """

    __tablename__ = "line_rate_buckets"

    channel_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    endpoint: Mapped[str] = mapped_column(String(32), primary_key=True)
    next_free: Mapped[float] = mapped_column(Float, default=0.0)
