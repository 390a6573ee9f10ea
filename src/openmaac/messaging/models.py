from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Boolean, ForeignKey, Index, Integer, String, Text, UniqueConstraint, text, true
from sqlalchemy.orm import Mapped, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow


class MessageEvent(Base):
    """A message event: the key under which sends are tracked and reported."""

    __tablename__ = "message_events"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


# -- direct messages (``direct_message/*``) -------------------------------------------------

DIRECT_CATEGORIES = ("push", "multicast", "enhanced_multicast")
DIRECT_STATUSES = ("pending", "sending", "sent")


class DirectMessage(Base):
    """One accepted ``direct_message/push|multicast|enhanced_multicast/`` request.

    ``tracked`` is true when an ``event_id`` was given: its links and images were rewritten
    for click and open tracking (per recipient, except enhanced multicast: per message).
    """

    __tablename__ = "direct_messages"
    __table_args__ = (Index("ix_direct_messages_org_event", "organization_id", "event_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    category: Mapped[str] = mapped_column(String(32))
    template_id: Mapped[int | None] = mapped_column(
        ForeignKey("message_templates.id", ondelete="SET NULL"), nullable=True
    )
    event_id: Mapped[int | None] = mapped_column(ForeignKey("message_events.id", ondelete="SET NULL"), nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    tracked: Mapped[bool] = mapped_column(Boolean, default=False)
    # enhanced multicast: the one parameter set shared by every recipient
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    # True: every recipient has a ``direct_message_recipients`` row. False (an enhanced
    # multicast that nothing looks up per recipient later): the LINE call rows list the
    # recipients (``to``, ``[mark, contact_id]`` pairs) and carry their outcome; only the
    # entries that are no contact have rows (see messaging/sending.py)
    recipient_rows: Mapped[bool] = mapped_column(Boolean, default=True, server_default=true())
    total_count: Mapped[int] = mapped_column(Integer, default=0)
    fail_count: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DirectMessageRecipient(Base):
    """One entry of a direct message: ``mark`` is its index in the request."""

    __tablename__ = "direct_message_recipients"
    __table_args__ = (
        UniqueConstraint("direct_message_id", "mark", name="uq_direct_message_recipients_mark"),
        Index("ix_direct_message_recipients_org_line_uid", "organization_id", "line_uid"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"))
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    mark: Mapped[int] = mapped_column(Integer)
    line_uid: Mapped[str] = mapped_column(String(64))
    contact_id: Mapped[int | None] = mapped_column(ForeignKey("contacts.id", ondelete="SET NULL"), nullable=True)
    # push / multicast: this recipient's parameters
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | sent | failed
    response: Mapped[str | None] = mapped_column(Text, nullable=True)
    sent_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    opened_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)


class DirectMessageSend(Base):
    """One call to LINE (push or multicast) of a direct message, written BEFORE the call.

    ``retry_key`` is the call's ``X-Line-Retry-Key``: every attempt of this call, including
    one made after a crash, reuses it, so LINE executes it at most once (409 = done before).
    """

    __tablename__ = "direct_message_sends"
    __table_args__ = (
        Index("ix_direct_message_sends_message_status", "direct_message_id", "status"),
        # the push sweep's look-up of calls whose caller died (messaging/sending.py): only the
        # pushes in flight are in it
        Index("ix_direct_message_sends_pending_pushes", "locked_until",
              postgresql_where=text("status = 'pending' AND method = 'push'"),
              sqlite_where=text("status = 'pending' AND method = 'push'")),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    direct_message_id: Mapped[int] = mapped_column(ForeignKey("direct_messages.id", ondelete="CASCADE"))
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    method: Mapped[str] = mapped_column(String(16))  # push | multicast
    retry_key: Mapped[str] = mapped_column(String(36), unique=True)
    # per entry of ``to``: its recipient row id, or (enhanced multicast) ``[mark, contact_id]``,
    # the recipient row then being written with the call's outcome (see messaging/sending.py)
    recipient_ids: Mapped[list[Any]] = mapped_column(JSONType)
    to: Mapped[list[str]] = mapped_column(JSONType)
    messages: Mapped[list[dict[str, Any]]] = mapped_column(JSONType)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | done
    outcome: Mapped[str | None] = mapped_column(String(16), nullable=True)  # success | timeout | error | rejected
    status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    response_body: Mapped[Any] = mapped_column(JSONType, nullable=True)
    locked_until: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    completed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
