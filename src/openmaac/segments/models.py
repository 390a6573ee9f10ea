from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, deferred, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow

SEGMENT_TYPE_TAGS = 1
SEGMENT_TYPE_CUSTOM = 2
STATUS_PENDING = 1
STATUS_READY = 2


class Segment(Base):
    """An audience. Type 1 is a saved tag query (evaluated live); type 2 a stored id list.

    ``generation`` grows with every change that needs a (re)build, so a build job started
    for an older version of the segment knows to do nothing.
    """

    __tablename__ = "segments"
    __table_args__ = (Index("ix_segments_org", "organization_id"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text, nullable=True)
    segment_type: Mapped[int] = mapped_column(Integer)
    operator: Mapped[str] = mapped_column(String(8), default="AND")
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSONType, default=list)
    status: Mapped[int] = mapped_column(Integer, default=STATUS_PENDING)
    member_count: Mapped[int] = mapped_column(Integer, default=-1)
    last_updated_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    generation: Mapped[int] = mapped_column(Integer, default=1)
    file_report: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)


class SegmentMemberList(Base):
    """The contacts a custom segment's uploaded ids matched when it was built: their ids in
    ascending order, one JSON array per segment. (One row per member, with its two foreign-key
    checks, cost seconds per 300,000 on PostgreSQL; see docs/benchmarks.md, import_segments.)
    Contacts deleted since simply drop out when the list is read, joined to contacts."""

    __tablename__ = "segment_member_lists"

    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    contact_ids: Mapped[list[int]] = deferred(mapped_column(JSONType, nullable=False))


class SegmentUpload(Base):
    """An uploaded id list waiting for its build job (zlib-compressed, newline-separated)."""

    __tablename__ = "segment_uploads"

    segment_id: Mapped[int] = mapped_column(ForeignKey("segments.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer)
    data: Mapped[bytes] = deferred(mapped_column(LargeBinary, nullable=False))
    report: Mapped[dict[str, Any]] = mapped_column(JSONType, default=dict)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
