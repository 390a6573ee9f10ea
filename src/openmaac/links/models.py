from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow


class TrackedLink(Base):
    """A URL of a tracked direct message (a row of the event report's ``urls``).

    ``url`` is the destination as rendered (before UTM); the UTM values are those applied
    when the message was sent (the organisation's tracking setting at that moment).
    """

    __tablename__ = "tracked_links"
    __table_args__ = (Index("ix_tracked_links_org_event", "organization_id", "event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"), index=True)
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    url: Mapped[str] = mapped_column(Text)
    utm_campaign: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(255), nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrackedAction(Base):
    """A message or postback action of a tracked direct message (a row of ``messages``)."""

    __tablename__ = "tracked_actions"
    __table_args__ = (Index("ix_tracked_actions_message_value", "direct_message_id", "kind", "value"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    kind: Mapped[str] = mapped_column(String(16))  # message | postback
    value: Mapped[str] = mapped_column(String(512))  # the text sent, or the postback data
    keyword: Mapped[str] = mapped_column(String(512))  # what the report shows
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class ShortLink(Base):
    """A code served by openmaac: ``click`` (``/r/{code}``) or ``open`` (``/o/{code}/{n}.png``).

    A click code belongs to one tracked link and, when personalised, one recipient. An open
    code belongs to one recipient and lists the original image URLs of its message.
    """

    __tablename__ = "short_links"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    code: Mapped[str] = mapped_column(String(16), unique=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # click | open
    tracked_link_id: Mapped[int | None] = mapped_column(
        ForeignKey("tracked_links.id", ondelete="CASCADE"), nullable=True
    )
    recipient_id: Mapped[int | None] = mapped_column(
        ForeignKey("direct_message_recipients.id", ondelete="CASCADE"), nullable=True
    )
    targets: Mapped[list[str] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrackingEvent(Base):
    """One open, click or tap, kept for reports (counted by date in the organisation's zone)."""

    __tablename__ = "tracking_events"
    __table_args__ = (
        Index("ix_tracking_events_org_event_kind", "organization_id", "event_id", "kind", "occurred_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    event_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"), index=True)
    recipient_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    line_uid: Mapped[str | None] = mapped_column(String(64), nullable=True)
    kind: Mapped[str] = mapped_column(String(8))  # open | click | tap
    tracked_link_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    tracked_action_id: Mapped[int | None] = mapped_column(BigId, nullable=True)
    occurred_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class TrackingSetting(Base):
    """The organisation's tracked-link settings (openmaac extension ``tracking_setting/``)."""

    __tablename__ = "tracking_settings"

    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"),
                                                 primary_key=True)
    utm_campaign: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_source: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_medium: Mapped[str | None] = mapped_column(String(255), nullable=True)
    utm_content: Mapped[str | None] = mapped_column(String(255), nullable=True)
    append_clid: Mapped[bool] = mapped_column(Boolean, default=False)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


__all__ = ["ShortLink", "TrackedAction", "TrackedLink", "TrackingEvent", "TrackingSetting"]
