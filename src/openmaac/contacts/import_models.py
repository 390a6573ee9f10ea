"""Bulk contact import tasks (``POST /openapi/v1/member/import/``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ForeignKey, Index, Integer, LargeBinary, String
from sqlalchemy.orm import Mapped, deferred, mapped_column

from openmaac.db.base import Base, BigId, JSONType, UTCDateTime, utcnow

IMPORT_STATUSES = ("pending", "processing", "done")


class ImportTask(Base):
    """One import request: its rows (zlib-compressed JSON until processed) and its result.

    status: pending -> processing -> done (the result says success or failure).
    """

    __tablename__ = "import_tasks"
    __table_args__ = (Index("ix_import_tasks_org_status", "organization_id", "status"),)

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    organization_id: Mapped[int] = mapped_column(ForeignKey("organizations.id", ondelete="CASCADE"))
    status: Mapped[str] = mapped_column(String(16), default="pending")
    import_key: Mapped[str] = mapped_column(String(32))
    row_count: Mapped[int] = mapped_column(Integer, default=0)
    payload: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONType, nullable=True)
    mismatch_csv: Mapped[bytes | None] = deferred(mapped_column(LargeBinary, nullable=True))
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
